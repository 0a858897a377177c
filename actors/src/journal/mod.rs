//! The journal: resilite's own SQLite file, beside the application database.
//! It is written by a second WriterActor (so it gets the same group commit,
//! retries and supervision) and keeps what explains the runtime's life: for
//! the actor restart log, the health history and the maintenance log. It is separate from the application database
//! so that damage to one never takes the recovery data with it.
//!
//! The schema is migrated with `PRAGMA user_version` when the journal writer
//! opens its connection ([`migrate`] is its init hook).
//!
//! This module alone holds the journal's SQL, a file per table family:
//! `migrations` (the schema, version by version, frozen as shipped),
//! [`restarts`](mod@restarts) (the supervisor's restart log), [`queue`] (the retry queue and
//! dead-letter queue), [`breakers`] (circuit breaker state and transitions) and
//! [`health`] (health history and the maintenance log), [`backups`]
//! (the backup catalog), [`op_log`] (the operation log) and
//! [`recoveries`] (the recovery log), [`findings`] (schema findings, the
//! fix log and the rows dedupe removed), [`events`] (events with
//! explanations), [`errors`] (the deduplicated error log) and
//! [`slow_queries`] (the slow-query log), [`archives`] (the archive
//! catalog), [`audit`](mod@audit) (the operation audit) and
//! [`resources`] (resource samples).
//!
//! Internal: this module is `pub` only for the `resilite` facade (the
//! supervisor's restart log, the runtime's queue reads, the `dlq` verb of
//! the CLI) and this crate's tests; it is not part of `resilite::`.

pub mod archives;
pub mod audit;
pub mod backups;
pub mod breakers;
pub mod errors;
pub mod events;
pub mod findings;
pub mod health;
mod migrations;
pub mod op_log;
pub mod queue;
pub mod recoveries;
pub mod resources;
pub mod restarts;
pub mod slow_queries;

pub use restarts::{record_restart, restarts, RestartOutcome, RestartRecord};

use migrations::MIGRATIONS;

use std::path::Path;

use rusqlite::Connection;

use crate::connection::{open_read_write, DbOptions};
use crate::error::{Error, ErrorClass, Result};

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

/// The journal's pruning pass (`[audit] retention`), in one batch: what
/// is older than `cutoff_ms` in events, the error log (signatures seen
/// `keep_frequent_errors` times or more stay), slow queries, the catalog
/// rows of deleted archive files, the operation audit, resource samples,
/// breaker transitions, actor restarts, resolved schema findings, the fix
/// log, removed rows and recovery attempts. The health history and the
/// queue's succeeded entries have retentions of their own.
pub fn prune_statements(cutoff_ms: i64, keep_frequent_errors: u64) -> Vec<crate::value::Statement> {
    let mut all = vec![
        events::prune_statement(cutoff_ms),
        errors::prune_statement(cutoff_ms, keep_frequent_errors),
        slow_queries::prune_statement(cutoff_ms),
        archives::prune_statement(cutoff_ms),
        audit::prune_statement(cutoff_ms),
        resources::prune_statement(cutoff_ms),
        breakers::prune_statement(cutoff_ms),
        restarts::prune_statement(cutoff_ms),
        recoveries::prune_statement(cutoff_ms),
    ];
    all.extend(findings::prune_statements(cutoff_ms));
    all
}

/// `at` as RFC 3339 text, computed by SQLite from `at_ms` (?1).
pub(crate) const AT_TEXT: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch')";

/// Whether the journal has table `name` (one from before a table's version
/// has not, and reads of it find nothing).
pub fn has_table(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// An error met on the journal file, named as the journal: a damaged
/// journal is not the application database, and is dealt with differently.
pub fn explain_error(path: &Path, err: Error) -> Error {
    let err = err.during("open journal", path);
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
    .during("open journal", path)
}

/// A journal writer on a file in `dir`, for tests: its actor, its slot
/// (both ends) and its file.
#[cfg(test)]
pub(crate) async fn test_writer(
    dir: &tempfile::TempDir,
) -> (
    ractor::ActorRef<crate::writer::WriterMsg>,
    tokio::sync::watch::Sender<crate::slot::WriterSlot>,
    tokio::sync::watch::Receiver<crate::slot::WriterSlot>,
    crate::connection::DbOptions,
) {
    use crate::writer::{WriterActor, WriterConfig, WriterMsg};
    use ractor::Actor;
    let db = crate::connection::DbOptions::new(dir.path().join("journal.db"));
    let mut config = WriterConfig::new(db.clone());
    config.init = Some(migrate);
    config.name = "journal-writer";
    let (writer, _) = Actor::spawn(None, WriterActor, config).await.unwrap();
    let handle = ractor::call!(writer, WriterMsg::Handle).unwrap();
    let (slot, journal) =
        tokio::sync::watch::channel(crate::slot::Slot::Running(crate::slot::RunningWriter {
            actor: writer.clone(),
            handle,
        }));
    (writer, slot, journal, db)
}

/// A journal in memory at the current version, for tests.
#[cfg(test)]
pub(crate) fn in_memory() -> Connection {
    let conn = Connection::open_in_memory().expect("an in-memory database");
    migrate(&conn).expect("a fresh journal migrates");
    conn
}

/// Run `f` in one transaction taken with `BEGIN IMMEDIATE` (a busy
/// database is met at the start, where the connection's busy timeout waits
/// for it): committed when `f` succeeds, rolled back when anything fails.
/// For the journal, and for resilite's own writes to the application
/// database (the migration history's repairs and baselines).
pub fn immediate<T>(conn: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let done = f().and_then(|v| {
        conn.execute_batch("COMMIT")?;
        Ok(v)
    });
    if done.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows a journal at `version` can hold, one per table family it has.
    fn fill(conn: &Connection, version: usize) {
        let rows: [(std::ops::Range<usize>, &str); 16] = [
            (1..usize::MAX, "INSERT INTO actor_restarts (actor, reason, restarts_in_window, outcome) VALUES ('writer', 'test', 1, 'restarted')"),
            (2..usize::MAX, "INSERT INTO maintenance_runs (at_ms, at, task, trigger, outcome) VALUES (1, 'then', 'checkpoint', 'auto', 'done')"),
            (3..usize::MAX, "INSERT INTO retry_queue (kind, payload, priority, max_attempts, next_retry_at_ms, status, created_at_ms, updated_at_ms) VALUES ('webhook', '{\"n\":1}', 3, 10, 0, 'queued', 0, 0)"),
            (4..usize::MAX, "INSERT INTO breaker_state (name, state, consecutive_failures, trips, calls, failures, rejected, updated_at_ms) VALUES ('smtp', 'open', 5, 1, 9, 5, 0, 0)"),
            (6..usize::MAX, "INSERT INTO backups (name, label, created_at_ms, duration_ms, size, page_count, sha256, sqlite_version, user_version, row_counts) VALUES ('app-x-manual.db', 'manual', 1, 2, 4096, 1, 'ab', '3.50.0', 0, '{}')"),
            (7..14, "INSERT INTO op_log (seq, at_ms, op) VALUES (1, 1, '{\"statement\":{\"sql\":\"SELECT 1\",\"params\":[]}}')"),
            (7..usize::MAX, "INSERT INTO op_log_gaps (at_ms, after_seq, through_seq, reason) VALUES (1, 1, 2, 'test')"),
            (8..usize::MAX, "INSERT INTO recoveries (started_at_ms, trigger, steps, outcome, duration_ms, explanation) VALUES (1, 'manual', '[]', 'recovered', 2, 'test')"),
            (10..usize::MAX, "INSERT INTO events (at_ms, at, kind, severity, summary, cause, decision, subject) VALUES (1, 'then', 'backup', 'info', 's', 'c', 'd', 'app.db')"),
            (10..usize::MAX, "INSERT INTO error_log (signature, class, message, example, component, severity, count, first_seen_ms, last_seen_ms) VALUES ('ab', 'sql', 'm', 'e', 'execute', 'info', 1, 1, 1)"),
            (11..usize::MAX, "INSERT INTO archives (path, tbl, col, format, cutoff_ms, first_rowid, last_rowid, rows, uncompressed_size, stored_size, sha256, created_at_ms, created_at, status, updated_at_ms) VALUES ('/a.db.zst', 'logs', 'at', 'iso8601', 1, 1, 2, 2, 10, 5, 'ab', 1, 'then', 'purged', 1)"),
            (10..usize::MAX, "INSERT INTO slow_queries (hash, kind, sql, count, total_ms, max_ms, last_ms, rows, plan, scan, first_seen_ms, last_seen_ms) VALUES ('ab', 'query', 'SELECT ?', 1, 1, 1, 1, 0, '[]', 0, 1, 1)"),
            (12..14, "INSERT INTO audit_ops (at_ms, batch, kind, status, tables, rows, duration_us) VALUES (1, 1, 'statement', 'committed', '[\"t\"]', 1, 5)"),
            (13..usize::MAX, "INSERT INTO resource_samples (at_ms, at, db_bytes, wal_bytes, journal_bytes) VALUES (1, 'then', 4096, 0, 8192)"),
            (14..usize::MAX, "INSERT INTO op_log (seq, last_seq, at_ms, op) VALUES (1, 1, 1, '[{\"statement\":{\"sql\":\"SELECT 1\",\"params\":[]}}]')"),
            (14..usize::MAX, "INSERT INTO audit_batches (first_id, last_id, at_ms, batch, records) VALUES (1, 1, 1, 1, '[{\"kind\":\"statement\",\"status\":\"committed\",\"tables\":[\"t\"],\"rows\":1,\"duration_us\":5}]')"),
        ];
        for (versions, sql) in rows {
            if versions.contains(&version) {
                conn.execute_batch(sql).unwrap();
            }
        }
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A journal built at every old version, holding rows, migrates to the
    /// current one with its rows and constraints kept; a second run is a
    /// no-op.
    #[test]
    fn a_journal_at_every_old_version_migrates_keeping_its_rows() {
        for version in 0..MIGRATIONS.len() {
            let conn = Connection::open_in_memory().unwrap();
            for scripts in &MIGRATIONS[..version] {
                for sql in *scripts {
                    conn.execute_batch(sql).unwrap();
                }
            }
            conn.execute_batch(&format!("PRAGMA user_version = {version}"))
                .unwrap();
            fill(&conn, version);

            migrate(&conn).unwrap();
            migrate(&conn).unwrap();

            let at = |since: usize| i64::from(version >= since);
            assert_eq!(count(&conn, "PRAGMA user_version"), MIGRATIONS.len() as i64);
            assert_eq!(count(&conn, "SELECT count(*) FROM actor_restarts"), at(1));
            assert_eq!(count(&conn, "SELECT count(*) FROM maintenance_runs"), at(2));
            assert_eq!(
                count(
                    &conn,
                    "SELECT count(*) FROM retry_queue WHERE kind = 'webhook' AND priority = 3"
                ),
                at(3),
                "from version {version}"
            );
            assert_eq!(count(&conn, "SELECT count(*) FROM breaker_state"), at(4));
            assert_eq!(count(&conn, "SELECT count(*) FROM backups"), at(6));
            assert_eq!(
                count(
                    &conn,
                    "SELECT count(*) FROM backups WHERE op_log_seq IS NULL"
                ),
                at(6)
            );
            assert_eq!(count(&conn, "SELECT count(*) FROM op_log"), at(7));
            assert_eq!(
                op_log::after(&conn, 0, 10).unwrap().len() as i64,
                at(7),
                "an operation logged before version 14 is read back"
            );
            assert_eq!(count(&conn, "SELECT count(*) FROM op_log_gaps"), at(7));
            assert_eq!(count(&conn, "SELECT count(*) FROM recoveries"), at(8));
            assert_eq!(count(&conn, "SELECT count(*) FROM events"), at(10));
            assert_eq!(count(&conn, "SELECT count(*) FROM error_log"), at(10));
            assert_eq!(count(&conn, "SELECT count(*) FROM slow_queries"), at(10));
            assert_eq!(count(&conn, "SELECT count(*) FROM archives"), at(11));
            assert_eq!(
                count(&conn, "SELECT count(*) FROM resource_samples"),
                at(13)
            );
            let audited = audit::page(&conn, &crate::audit::AuditQuery::default()).unwrap();
            assert_eq!(
                audited.records.len() as i64,
                at(12),
                "a record kept before version 14 is read back"
            );
            if let Some(r) = audited.records.first() {
                assert_eq!(
                    (r.id, r.batch, r.tables.as_slice(), r.duration_us),
                    (1, Some(1), &["t".to_string()][..], 5)
                );
            }
            let queue: String = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'retry_queue'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(!queue.contains(" IN ("), "{queue}");
            assert_eq!(
                count(&conn, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'retry_queue'"),
                2
            );
            let bad = conn.execute(
                "INSERT INTO retry_queue (kind, payload, priority, max_attempts, next_retry_at_ms, status, created_at_ms, updated_at_ms) VALUES ('k', '{}', 3, 10, 0, 'lost', 0, 0)",
                [],
            );
            assert!(
                bad.is_err(),
                "the status check must hold (from version {version})"
            );
        }
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
