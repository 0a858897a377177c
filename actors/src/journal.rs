//! The journal: resilite's own SQLite file, beside the application database.
//! It is written by a second WriterActor (so it gets the same group commit,
//! retries and supervision) and keeps what explains the runtime's life: for
//! the actor restart log, the health history and the maintenance log. It is separate from the application database
//! so that damage to one never takes the recovery data with it.
//!
//! The schema is migrated with `PRAGMA user_version` when the journal writer
//! opens its connection ([`migrate`] is its init hook).

use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::connection::{open_read_write, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::value::{Statement, Value};

/// Journal schema, one entry per version, each a list of SQL scripts run in
/// order. A table whose definition changes is rebuilt by a later entry
/// (which recreates it as its module defines it now), never edited in place.
const MIGRATIONS: &[&[&str]] = &[
    &["CREATE TABLE actor_restarts (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        restarts_in_window INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('restarted', 'escalated'))
    );"],
    &["CREATE TABLE health_history (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        at TEXT NOT NULL,
        status TEXT NOT NULL,
        rule TEXT NOT NULL,
        integrity TEXT NOT NULL,
        full_integrity_check INTEGER NOT NULL,
        db_bytes INTEGER NOT NULL,
        wal_bytes INTEGER NOT NULL,
        shm_bytes INTEGER NOT NULL,
        page_count INTEGER NOT NULL,
        page_size INTEGER NOT NULL,
        freelist_count INTEGER NOT NULL,
        utilization_pct REAL NOT NULL,
        disk_free_bytes INTEGER NOT NULL,
        disk_free_pct REAL NOT NULL,
        read_probe_ms REAL NOT NULL,
        write_probe_ms REAL,
        foreign_key_violations INTEGER NOT NULL,
        actors_failed INTEGER NOT NULL,
        actor_restarts INTEGER NOT NULL,
        recommendations TEXT NOT NULL
    );
    CREATE INDEX health_history_at ON health_history (at_ms);
    CREATE TABLE maintenance_runs (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        at TEXT NOT NULL,
        task TEXT NOT NULL,
        mode TEXT,
        trigger TEXT NOT NULL,
        duration_ms REAL,
        bytes_before INTEGER,
        bytes_after INTEGER,
        bytes_reclaimed INTEGER,
        outcome TEXT NOT NULL CHECK (outcome IN ('done', 'busy', 'failed')),
        detail TEXT
    );
    CREATE INDEX maintenance_runs_at ON maintenance_runs (at_ms);"],
    &[crate::retry_queue::SCHEMA],
    &[crate::circuit_breaker::SCHEMA],
    // The queue's checks without `IN (...)` lists, which SQLite evaluated
    // through a temporary b-tree on every insert and update.
    &[
        "DROP INDEX retry_queue_due; DROP INDEX retry_queue_ordering;
         ALTER TABLE retry_queue RENAME TO retry_queue_old;",
        crate::retry_queue::SCHEMA,
        "INSERT INTO retry_queue SELECT * FROM retry_queue_old; DROP TABLE retry_queue_old;",
    ],
];

/// Bring the journal schema up to date (idempotent). A journal newer than
/// this binary's migrations is refused; a damaged one is named as the
/// journal, with what to do.
pub fn migrate(conn: &Connection) -> Result<()> {
    let path = Path::new(conn.path().unwrap_or("the journal")).to_path_buf();
    let applied = check_version(conn, &path)?;
    for (i, scripts) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn
            .unchecked_transaction()
            .map_err(|e| explain_error(&path, e.into()))?;
        for sql in *scripts {
            tx.execute_batch(sql)
                .map_err(|e| explain_error(&path, e.into()))?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(|e| explain_error(&path, e.into()))?;
        tx.commit().map_err(|e| explain_error(&path, e.into()))?;
    }
    Ok(())
}

/// The journal schema version this binary writes.
pub fn current_version() -> usize {
    MIGRATIONS.len()
}

/// Open the journal at `opts` read-write, as its writer will, and check
/// that it is a journal this binary can use: an SQLite file (a damaged one
/// is named as the journal, with what to do) at a version no newer than
/// [`current_version`]. Creates the file when it does not exist.
pub fn check(opts: &DbOptions) -> Result<()> {
    let conn = open_read_write(opts).map_err(|e| explain_error(&opts.path, e))?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| explain_error(&opts.path, e.into()))?;
    check_version(&conn, &opts.path).map(|_| ())
}

/// The journal's schema version; an error when it is newer than this
/// binary's migrations (its tables may have changed in ways this binary
/// does not know).
pub fn check_version(conn: &Connection, path: &Path) -> Result<usize> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| explain_error(path, e.into()))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Error::new(
            ErrorClass::BadInput,
            format!(
                "journal {} is at version {version}, newer than this resilite ({}): use a newer resilite (it was written by one), or set database.journal_path to another file",
                path.display(),
                MIGRATIONS.len()
            ),
            format!("PRAGMA user_version = {version}"),
        ));
    }
    Ok(version)
}

/// An error met on the journal file, named as the journal: a damaged
/// journal is not the application database, and is dealt with differently.
pub fn explain_error(path: &Path, err: Error) -> Error {
    if err.class != ErrorClass::Corruption {
        return err;
    }
    let shown = path.display();
    Error::new(
        ErrorClass::Corruption,
        format!(
            "the journal {shown} is damaged or is not a resilite journal (the application database is not affected): \
             move it aside (e.g. `mv {shown} {shown}.damaged`, with its -wal and -shm files) and start again; \
             resilite then creates a new, empty journal, and the retry queue and dead-letter queue kept in the old one are lost \
             (keep the moved file to recover them by hand)"
        ),
        err.detail,
    )
}

/// What the supervisor did about a failed actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartOutcome {
    /// A new instance was started.
    Restarted,
    /// The restart limit was reached; the failure was escalated.
    Escalated,
}

impl RestartOutcome {
    fn as_str(self) -> &'static str {
        match self {
            RestartOutcome::Restarted => "restarted",
            RestartOutcome::Escalated => "escalated",
        }
    }
}

/// One row of the restart log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// When (UTC, RFC 3339).
    pub at: String,
    /// Which actor failed.
    pub actor: String,
    /// Why it failed.
    pub reason: String,
    /// Failures within the restart window, this one included.
    pub restarts_in_window: u32,
    /// What the supervisor did.
    pub outcome: RestartOutcome,
}

/// The statement that records a restart (sent to the journal writer).
pub fn record_restart(
    actor: &str,
    reason: &str,
    restarts_in_window: u32,
    outcome: RestartOutcome,
) -> Statement {
    Statement::new(
        "INSERT INTO actor_restarts (actor, reason, restarts_in_window, outcome) VALUES (?1, ?2, ?3, ?4)",
        [
            Value::from(actor),
            Value::from(reason),
            Value::Integer(restarts_in_window.into()),
            Value::from(outcome.as_str()),
        ],
    )
}

/// The restart log, oldest first.
pub fn restarts(conn: &Connection) -> Result<Vec<RestartRecord>> {
    let mut stmt = conn.prepare(
        "SELECT at, actor, reason, restarts_in_window, outcome FROM actor_restarts ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RestartRecord {
            at: r.get(0)?,
            actor: r.get(1)?,
            reason: r.get(2)?,
            restarts_in_window: r.get(3)?,
            outcome: if r.get::<_, String>(4)? == "escalated" {
                RestartOutcome::Escalated
            } else {
                RestartOutcome::Restarted
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal of the version before the queue's checks were rewritten,
    /// holding one queued entry, is rebuilt with its rows and checks kept.
    #[test]
    fn migrating_rebuilds_the_queue_table_keeping_its_entries() {
        let conn = Connection::open_in_memory().unwrap();
        let old_queue = crate::retry_queue::SCHEMA
            .replace(
                "status = 'queued' OR status = 'retrying' OR status = 'succeeded' OR status = 'dead'",
                "status IN ('queued', 'retrying', 'succeeded', 'dead')",
            )
            .replace(
                "resolution = 'requeued' OR resolution = 'discarded' OR resolution = 'fixed'",
                "resolution IN ('requeued', 'discarded', 'fixed')",
            );
        assert_ne!(old_queue, crate::retry_queue::SCHEMA);
        for sql in [
            MIGRATIONS[0][0],
            MIGRATIONS[1][0],
            old_queue.as_str(),
            MIGRATIONS[3][0],
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 4;
             INSERT INTO retry_queue (kind, payload, priority, max_attempts, next_retry_at_ms, status, created_at_ms, updated_at_ms)
             VALUES ('webhook', '{\"n\":1}', 3, 10, 0, 'queued', 0, 0);",
        )
        .unwrap();

        migrate(&conn).unwrap();

        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'retry_queue'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!sql.contains(" IN ("), "{sql}");
        let kept: (String, i64) = conn
            .query_row(
                "SELECT kind, priority FROM retry_queue WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(kept, ("webhook".to_string(), 3));
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'retry_queue'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 2);
        let bad = conn.execute("UPDATE retry_queue SET status = 'lost' WHERE id = 1", []);
        assert!(bad.is_err(), "the status check must still hold");
        // A second run changes nothing.
        migrate(&conn).unwrap();
    }

    #[test]
    fn a_journal_newer_than_the_migrations_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        let newer = MIGRATIONS.len() + 3;
        conn.execute_batch(&format!("PRAGMA user_version = {newer}"))
            .unwrap();
        let err = migrate(&conn).unwrap_err();
        assert_eq!(err.class, ErrorClass::BadInput);
        assert!(
            err.message.contains(&format!(
                "is at version {newer}, newer than this resilite ({})",
                MIGRATIONS.len()
            )) && err.message.contains("use a newer resilite"),
            "{err}"
        );
        // Nothing was created in it.
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }
}
