//! Opening connections: the one read-write connection of a writer, and the
//! read-only connections of the read pool, with the pragmas resilite relies on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default time SQLite waits on a lock before reporting BUSY.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRAGMA synchronous`: how hard COMMIT waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// No fsync: fast, but an OS crash or power loss can lose commits.
    Off,
    /// In WAL mode, fsync at checkpoints only: a power loss can lose the
    /// last commits, never corrupt the file.
    Normal,
    /// fsync the WAL at every commit: an acknowledged commit survives power loss.
    #[default]
    Full,
    /// Like FULL, and also syncs the directory after deleting the journal.
    Extra,
}

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// How to open a database file.
#[derive(Debug, Clone, PartialEq)]
pub struct DbOptions {
    /// The database file.
    pub path: PathBuf,
    /// `PRAGMA synchronous` of the read-write connection.
    pub synchronous: Synchronous,
    /// `PRAGMA busy_timeout`.
    pub busy_timeout: Duration,
    /// Use write-ahead logging (readers never wait for the writer).
    pub wal: bool,
}

impl DbOptions {
    /// Options with resilite's defaults for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DbOptions {
            path: path.into(),
            synchronous: Synchronous::Full,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            wal: true,
        }
    }
}

/// Open the read-write connection, creating the file and its directory.
pub fn open_read_write(opts: &DbOptions) -> Result<Connection> {
    create_parent_dir(&opts.path)?;
    let conn = Connection::open(&opts.path).map_err(|e| with_path(e, &opts.path))?;
    crate::gate::harden(&conn).map_err(|e| with_path(e, &opts.path))?;
    conn.busy_timeout(opts.busy_timeout)
        .map_err(|e| with_path(e, &opts.path))?;
    let mode = if opts.wal { "WAL" } else { "DELETE" };
    let applied: String = conn
        .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
        .map_err(|e| with_path(e, &opts.path))?;
    if !applied.eq_ignore_ascii_case(mode) {
        return Err(Error::new(
            crate::ErrorClass::Permission,
            format!(
                "could not switch {} to journal_mode={mode}",
                opts.path.display()
            ),
            format!("SQLite kept journal_mode={applied}"),
        ));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous={}; PRAGMA foreign_keys=ON;",
        opts.synchronous.pragma_value()
    ))
    .map_err(|e| with_path(e, &opts.path))?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// Run `f` on a new read-only connection to `db`, on tokio's blocking pool.
pub async fn read_blocking<T: Send + 'static>(
    db: &DbOptions,
    f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
) -> Result<T> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || open_read_only(&db).and_then(|c| f(&c)))
        .await
        .map_err(|e| Error::classed(crate::ErrorClass::Internal, e.to_string()))?
}

/// Open a read-only connection to an existing database.
pub fn open_read_only(opts: &DbOptions) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn =
        Connection::open_with_flags(&opts.path, flags).map_err(|e| with_path(e, &opts.path))?;
    crate::gate::harden(&conn).map_err(|e| with_path(e, &opts.path))?;
    conn.busy_timeout(opts.busy_timeout)
        .map_err(|e| with_path(e, &opts.path))?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

fn create_parent_dir(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            let mut err = Error::from(e);
            err.detail = format!("creating directory {}: {}", dir.display(), err.detail);
            err
        }),
        _ => Ok(()),
    }
}

fn with_path(e: rusqlite::Error, path: &Path) -> Error {
    let mut err = Error::from(e);
    err.detail = format!("{}: {}", path.display(), err.detail);
    err
}
