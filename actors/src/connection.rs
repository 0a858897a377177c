//! Opening connections: the one read-write connection of a writer, and the
//! read-only connections of the read pool, with the pragmas resilite relies on.
//!
//! Internal: `pub` only for the `resilite` facade (startup checks, the
//! runtime's journal reads, the CLI). [`DbOptions`] and [`Synchronous`]
//! are re-exported at the crate root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorClass, Result};

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

/// Open an existing database read-write, creating nothing and changing no
/// setting of the file (the CLI's maintenance verbs), hardened like every
/// connection resilite opens.
pub fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    crate::gate::harden(&conn)?;
    conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
    Ok(conn)
}

fn create_parent_dir(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            let detail = format!("creating directory {}: {e}", dir.display());
            let err = match explain_open_failure(path) {
                Some(explained) => with_detail(explained, detail),
                None => {
                    let mut err = Error::from(e);
                    err.detail = detail;
                    err
                }
            };
            err.during("create directory", dir)
        }),
        _ => Ok(()),
    }
}

/// Classify an error of opening `path`; when the path itself is the
/// problem (a directory, a parent that is a file, a read-only directory),
/// the error says so instead of SQLite's "unable to open database file",
/// which it would report as transient.
fn with_path(e: rusqlite::Error, path: &Path) -> Error {
    let path_related = matches!(
        e.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::PermissionDenied
                | rusqlite::ErrorCode::SystemIoFailure
        )
    );
    let mut err = Error::from(e).during("open", path);
    err.detail = format!("{}: {}", path.display(), err.detail);
    if path_related {
        if let Some(explained) = explain_open_failure(path) {
            return with_detail(explained, err.detail).during("open", path);
        }
    }
    err
}

/// `explained`, with the technical detail of the failure it explains first.
fn with_detail(mut explained: Error, detail: String) -> Error {
    explained.detail = format!("{detail} ({})", explained.detail);
    explained
}

/// What keeps `path` from being opened read-write as a database file, by
/// looking at the path and its directories: it is a directory; a parent
/// is a file, not a directory; it or its directory is read-only. `None`
/// when nothing is wrong with the path itself (then the failure is
/// SQLite's own: busy, locked, damaged...). Call it after an open failed,
/// or before, to refuse a path with a precise message.
pub fn explain_open_failure(path: &Path) -> Option<Error> {
    use std::io::ErrorKind;
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Some(Error::new(
            ErrorClass::BadInput,
            format!(
                "{shown} is a directory, not a database file; set the path to a file (e.g. {})",
                path.join("app.db").display()
            ),
            format!("{shown}: is a directory"),
        )),
        Ok(meta) if !meta.is_file() => Some(Error::new(
            ErrorClass::BadInput,
            format!("{shown} is not a regular file; set the path to a database file"),
            format!("{shown}: file type {:?}", meta.file_type()),
        )),
        Ok(_) => {
            if let Err(errno) = writable(path, false) {
                return Some(Error::new(
                    ErrorClass::Permission,
                    format!(
                        "{shown} cannot be opened for writing: the file is read-only ({}); fix its permissions",
                        describe(errno)
                    ),
                    format!("access({shown}, R_OK|W_OK): {errno}"),
                ));
            }
            let dir = directory_of(path);
            if let Err(errno) = writable(&dir, true) {
                return Some(Error::new(
                    ErrorClass::Permission,
                    format!(
                        "{shown} cannot be written: directory {} is read-only ({}), and SQLite creates its -wal and -shm (or -journal) files beside the database; fix the directory's permissions",
                        dir.display(),
                        describe(errno)
                    ),
                    format!("access({}, W_OK|X_OK): {errno}", dir.display()),
                ));
            }
            None
        }
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            // Walk up to the nearest ancestor that exists.
            let mut ancestor = directory_of(path);
            loop {
                match std::fs::metadata(&ancestor) {
                    Ok(meta) if meta.is_dir() => {
                        return writable(&ancestor, true).err().map(|errno| {
                            Error::new(
                                ErrorClass::Permission,
                                format!(
                                    "{shown} cannot be created: directory {} is read-only ({}); fix its permissions or choose another path",
                                    ancestor.display(),
                                    describe(errno)
                                ),
                                format!("access({}, W_OK|X_OK): {errno}", ancestor.display()),
                            )
                        });
                    }
                    Ok(_) => {
                        return Some(Error::new(
                            ErrorClass::BadInput,
                            format!(
                                "{shown} cannot be created: a parent, {}, is a file, not a directory; choose another path",
                                ancestor.display()
                            ),
                            format!("{}: not a directory", ancestor.display()),
                        ))
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                        match ancestor.parent() {
                            Some(up) => ancestor = directory_of_dir(up),
                            None => return None,
                        }
                    }
                    Err(e) => return Some(unreachable_path(path, &ancestor, e)),
                }
            }
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            Some(unreachable_path(path, &directory_of(path), e))
        }
        Err(_) => None,
    }
}

fn unreachable_path(path: &Path, dir: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorClass::Permission,
        format!(
            "{} cannot be reached: {} is not accessible ({e}); fix the permissions of the directories on the way",
            path.display(),
            dir.display()
        ),
        format!("stat {}: {e}", dir.display()),
    )
}

/// The directory `path` is in; `.` for a bare file name.
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) => directory_of_dir(dir),
        None => PathBuf::from("/"),
    }
}

fn directory_of_dir(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    }
}

/// `access(2)` for writing (and searching a directory, or reading a file).
/// Unlike the mode bits, it answers for root too: an immutable file or a
/// read-only filesystem refuses root as well.
fn writable(path: &Path, dir: bool) -> std::result::Result<(), nix::errno::Errno> {
    use nix::unistd::{access, AccessFlags};
    let flags = if dir {
        AccessFlags::W_OK | AccessFlags::X_OK
    } else {
        AccessFlags::R_OK | AccessFlags::W_OK
    };
    access(path, flags)
}

fn describe(errno: nix::errno::Errno) -> &'static str {
    match errno {
        nix::errno::Errno::EROFS => "read-only filesystem",
        nix::errno::Errno::EPERM => "operation not permitted: immutable? see lsattr",
        _ => "permission denied",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_failures_name_the_path_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "x").unwrap();

        let err = open_read_write(&DbOptions::new(dir.path())).unwrap_err();
        assert_eq!(err.class, ErrorClass::BadInput, "{err}");
        assert!(err.message.contains("is a directory"), "{err}");
        // What resilite was doing, and on which file, are fields.
        assert_eq!(err.op.as_deref(), Some("open"));
        assert_eq!(err.path.as_deref(), Some(dir.path()));

        for db in [file.join("app.db"), file.join("sub").join("app.db")] {
            let err = open_read_write(&DbOptions::new(&db)).unwrap_err();
            assert_eq!(err.class, ErrorClass::BadInput, "{err}");
            assert!(
                err.message.contains(&format!(
                    "a parent, {}, is a file, not a directory",
                    file.display()
                )),
                "{err}"
            );
        }

        // Nothing wrong with a path that can be created.
        assert!(explain_open_failure(&dir.path().join("new").join("app.db")).is_none());
        let db = dir.path().join("app.db");
        drop(open_read_write(&DbOptions::new(&db)).unwrap());
        assert!(explain_open_failure(&db).is_none());
    }
}
