//! The migration history: table `_resilite_migrations` in the
//! **application database** itself, beside `PRAGMA user_version`, so that
//! every copy of the database (a backup, a restored file) says which
//! migrations it holds.
//!
//! One row per event, never updated: an `apply` or a `rollback` (a success
//! committed in the same transaction as the migration; a failure recorded
//! after the migration was rolled back, in a transaction of its own), or a
//! `repair` (a person accepted that an applied migration's up script
//! changed: the new checksum, and the one it replaces in
//! `previous_checksum`), or a `baseline` (a person adopted a database whose
//! schema already held the migration: recorded as applied, never run).
//! What is applied now is the fold of these rows (see `status`).
//!
//! ```sql
//! SELECT version, name, action, success, applied_at, error
//!   FROM _resilite_migrations ORDER BY id;
//! ```

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The history table's name.
pub const HISTORY_TABLE: &str = "_resilite_migrations";

const CREATE: &str = "CREATE TABLE IF NOT EXISTS _resilite_migrations (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('apply', 'rollback', 'repair', 'baseline')),
    success INTEGER NOT NULL CHECK (success IN (0, 1)),
    checksum TEXT,
    previous_checksum TEXT,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    duration_ms INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    failed_statement TEXT,
    down_sql TEXT,
    size_before INTEGER,
    size_after INTEGER,
    backup TEXT
)";

/// What a history row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HistoryAction {
    /// The up script ran (`success`), or failed and was rolled back.
    #[default]
    Apply,
    /// The down script ran (`migrate --to N`), or failed and was rolled back.
    Rollback,
    /// A person accepted a changed (or removed) up script of an applied
    /// migration: its new checksum is recorded (`migrate repair`).
    Repair,
    /// A person adopted a database whose schema already held the
    /// migration: it counts as applied with this checksum, never having
    /// run (`migrate baseline`).
    Baseline,
}

impl HistoryAction {
    fn as_str(self) -> &'static str {
        match self {
            HistoryAction::Apply => "apply",
            HistoryAction::Rollback => "rollback",
            HistoryAction::Repair => "repair",
            HistoryAction::Baseline => "baseline",
        }
    }

    fn parse(s: &str) -> HistoryAction {
        match s {
            "rollback" => HistoryAction::Rollback,
            "repair" => HistoryAction::Repair,
            "baseline" => HistoryAction::Baseline,
            _ => HistoryAction::Apply,
        }
    }
}

/// One row of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Its place in the history (rows are never updated or deleted).
    pub id: i64,
    /// The migration's version.
    pub version: u32,
    /// The migration's name.
    pub name: String,
    /// What happened.
    pub action: HistoryAction,
    /// Whether it succeeded.
    pub success: bool,
    /// The checksum of the up script: as applied (apply, rollback), or the
    /// one accepted (repair; `None`: the file was accepted as removed).
    pub checksum: Option<String>,
    /// A repair: the checksum it replaced.
    pub previous_checksum: Option<String>,
    /// When it happened (UTC, ISO 8601).
    pub applied_at: String,
    /// How long the script ran, in milliseconds.
    pub duration_ms: i64,
    /// A failure: SQLite's error, or why it was refused.
    pub error: Option<String>,
    /// A failure: the statement that failed.
    pub failed_statement: Option<String>,
    /// An apply: the down script known then (used by a rollback when the
    /// migration is no longer in the source).
    pub down_sql: Option<String>,
    /// The database's size before (page_count x page_size), in bytes.
    pub size_before: Option<i64>,
    /// The database's size after, in bytes (as the transaction saw it).
    pub size_after: Option<i64>,
    /// The `pre-migration` backup taken before the run, by name.
    pub backup: Option<String>,
}

/// A row to add (`id` and `applied_at` are given by the database).
#[derive(Debug, Clone, Default)]
pub(crate) struct NewEntry<'a> {
    pub version: u32,
    pub name: &'a str,
    pub action: HistoryAction,
    pub success: bool,
    pub checksum: Option<&'a str>,
    pub previous_checksum: Option<&'a str>,
    pub duration_ms: i64,
    pub error: Option<&'a str>,
    pub failed_statement: Option<&'a str>,
    pub down_sql: Option<&'a str>,
    pub size_before: Option<i64>,
    pub size_after: Option<i64>,
    pub backup: Option<&'a str>,
}

/// Create the table if it does not exist (inside the caller's transaction).
pub(crate) fn ensure(conn: &Connection) -> Result<()> {
    conn.execute_batch(CREATE)?;
    Ok(())
}

/// Add `entry` (inside the caller's transaction; the table exists).
pub(crate) fn insert(conn: &Connection, entry: &NewEntry<'_>) -> Result<()> {
    conn.execute(
        "INSERT INTO _resilite_migrations (version, name, action, success, checksum, previous_checksum, duration_ms, error, failed_statement, down_sql, size_before, size_after, backup)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        rusqlite::params![
            entry.version,
            entry.name,
            entry.action.as_str(),
            entry.success,
            entry.checksum,
            entry.previous_checksum,
            entry.duration_ms,
            entry.error,
            entry.failed_statement,
            entry.down_sql,
            entry.size_before,
            entry.size_after,
            entry.backup,
        ],
    )?;
    Ok(())
}

/// Every row, oldest first; none when the table does not exist.
pub fn read(conn: &Connection) -> Result<Vec<HistoryEntry>> {
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [HISTORY_TABLE],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT id, version, name, action, success, checksum, previous_checksum, applied_at, duration_ms, error, failed_statement, down_sql, size_before, size_after, backup
         FROM _resilite_migrations ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(HistoryEntry {
            id: r.get(0)?,
            version: r.get(1)?,
            name: r.get(2)?,
            action: HistoryAction::parse(&r.get::<_, String>(3)?),
            success: r.get(4)?,
            checksum: r.get(5)?,
            previous_checksum: r.get(6)?,
            applied_at: r.get(7)?,
            duration_ms: r.get(8)?,
            error: r.get(9)?,
            failed_statement: r.get(10)?,
            down_sql: r.get(11)?,
            size_before: r.get(12)?,
            size_after: r.get(13)?,
            backup: r.get(14)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
