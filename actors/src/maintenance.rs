//! Routine maintenance of a database file: WAL checkpoints, VACUUM and
//! `PRAGMA optimize`, each measured (duration, bytes before and after).
//!
//! In a runtime these run on the writer's connection thread
//! ([`crate::WriterMsg::Maintain`]) so they never race a write; the
//! `resilite checkpoint` and `vacuum` commands run them on their own
//! connection.
//!
//! Internal: the functions are `pub` only for the `resilite` facade (the
//! CLI verbs, the runtime's clock); the values ([`Maintenance`],
//! [`CheckpointMode`], [`MaintenanceRun`], [`CheckpointOutcome`]) are
//! re-exported from `resilite::`.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `PRAGMA wal_checkpoint` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointMode {
    /// Checkpoint what can be done without waiting.
    #[default]
    Passive,
    /// Wait for readers, checkpoint everything.
    Full,
    /// Like FULL, then make the next writer restart the WAL from the start.
    Restart,
    /// Like RESTART, and truncate the WAL file to zero bytes.
    Truncate,
}

impl CheckpointMode {
    /// The mode as `PRAGMA wal_checkpoint` spells it, lowercase.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "passive",
            CheckpointMode::Full => "full",
            CheckpointMode::Restart => "restart",
            CheckpointMode::Truncate => "truncate",
        }
    }
}

/// What a checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointOutcome {
    /// True when a reader or writer kept the checkpoint from finishing.
    pub busy: bool,
    /// Frames in the WAL (-1 when the database is not in WAL mode).
    pub wal_frames: i64,
    /// Frames moved back into the database.
    pub checkpointed_frames: i64,
}

/// A maintenance task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Maintenance {
    /// Move the WAL back into the database file.
    Checkpoint(CheckpointMode),
    /// Rebuild the file to reclaim free pages, then truncate the WAL.
    Vacuum,
    /// `PRAGMA optimize`: refresh the query planner's statistics.
    Optimize,
}

impl Maintenance {
    /// The task name: checkpoint, vacuum or optimize.
    pub fn name(self) -> &'static str {
        match self {
            Maintenance::Checkpoint(_) => "checkpoint",
            Maintenance::Vacuum => "vacuum",
            Maintenance::Optimize => "optimize",
        }
    }
}

/// What one maintenance run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceRun {
    /// The task.
    pub task: Maintenance,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// Database + WAL bytes before.
    pub bytes_before: u64,
    /// Database + WAL bytes after.
    pub bytes_after: u64,
    /// The checkpoint's outcome (for checkpoints and vacuums in WAL mode).
    pub checkpoint: Option<CheckpointOutcome>,
}

impl MaintenanceRun {
    /// Bytes the run gave back to the filesystem.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// Run `task` on `conn`, the read-write connection to the database at `path`.
pub fn run(conn: &Connection, path: &Path, task: Maintenance) -> Result<MaintenanceRun> {
    measured(conn, path, task).map_err(|e| e.during(task.name(), path))
}

fn measured(conn: &Connection, path: &Path, task: Maintenance) -> Result<MaintenanceRun> {
    let started_at_ms = now_ms();
    let started = Instant::now();
    let bytes_before = db_and_wal_bytes(path);
    let checkpoint_outcome = match task {
        Maintenance::Checkpoint(mode) => Some(checkpoint(conn, mode)?),
        Maintenance::Vacuum => {
            conn.execute_batch("VACUUM")?;
            // In WAL mode VACUUM writes the new pages to the WAL; the file
            // only shrinks once they are checkpointed.
            Some(checkpoint(conn, CheckpointMode::Truncate)?)
        }
        Maintenance::Optimize => {
            conn.execute_batch("PRAGMA optimize")?;
            None
        }
    };
    Ok(MaintenanceRun {
        task,
        started_at_ms,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        bytes_before,
        bytes_after: db_and_wal_bytes(path),
        checkpoint: checkpoint_outcome,
    })
}

/// Run `PRAGMA wal_checkpoint(mode)` on `conn`.
pub fn checkpoint(conn: &Connection, mode: CheckpointMode) -> Result<CheckpointOutcome> {
    conn.query_row(
        &format!("PRAGMA wal_checkpoint({})", mode.as_str()),
        [],
        |r| {
            Ok(CheckpointOutcome {
                busy: r.get::<_, i64>(0)? != 0,
                wal_frames: r.get(1)?,
                checkpointed_frames: r.get(2)?,
            })
        },
    )
    .map_err(Error::from)
}

/// Bytes of the database file and its WAL.
pub fn db_and_wal_bytes(path: &Path) -> u64 {
    file_len(path) + file_len(&sibling(path, "-wal"))
}

/// The length of `path`, 0 when it does not exist.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `path` with `suffix` appended (`app.db` → `app.db-wal`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
