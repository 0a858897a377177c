//! One transaction over a batch of operations, each isolated so that a
//! failing one fails only its caller; callers' statements run through the
//! statement gate.

use std::time::{Duration, Instant};

use rusqlite::{CachedStatement, Connection};

use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::journal::op_log::LoggedOp;
use crate::value::{Operation, OperationOutcome, Statement, WriteOutcome};

use super::keys::claim_key;

/// One transaction over `ops`. A transient failure anywhere aborts the whole
/// attempt (to be retried); any other failure fails only its operation.
///
/// With `logging` (the operation log is on), the operations that succeeded
/// take the numbers after the last one given and the last of them is
/// written as the database's op-log position before COMMIT; then, when it
/// asks for them, they are handed to `before_commit` (which fails the
/// attempt if it fails: a write that cannot be logged is not committed).
///
/// With the audit on, `traces` (one per operation, else empty) gets how
/// long each operation ran and the tables it changed, in the last attempt.
///
/// Transaction control is never taken from the statement cache: a caller's
/// `COMMIT` would find resilite's own there, compiled outside the gate.
pub(super) fn apply_batch(
    conn: &Connection,
    gate: &Gate,
    ops: &[Operation],
    logging: Option<&Logging>,
    traces: &mut [OpTrace],
) -> Result<Vec<Result<OperationOutcome>>> {
    let mut failed: Vec<Option<Error>> = vec![None; ops.len()];
    let mut runner = Runner::new(conn, gate);
    'attempt: loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut done = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            match runner.traced(op, traces.get_mut(i)) {
                Ok(outcome) => done.push((i, outcome)),
                Err(Failure { error, .. }) if error.is_transient() => {
                    rollback_quietly(conn);
                    return Err(error);
                }
                Err(Failure {
                    error,
                    left_effects,
                }) => {
                    failed[i] = Some(error);
                    if left_effects || conn.is_autocommit() {
                        // The failure left changes behind, or SQLite rolled
                        // back the whole transaction: apply the others again.
                        rollback_quietly(conn);
                        continue 'attempt;
                    }
                }
            }
        }
        if let (Some(log), false) = (logging, done.is_empty()) {
            let logged = super::op_log::write_position(conn, log.up_to + done.len() as i64)
                .map_err(Error::from)
                .and_then(|()| match log.before_commit {
                    Some(send) => {
                        let committed: Vec<&Operation> =
                            done.iter().map(|(i, _)| &ops[*i]).collect();
                        send(log.up_to + 1, &committed)
                    }
                    None => Ok(()),
                });
            if let Err(e) = logged {
                rollback_quietly(conn);
                return Err(e);
            }
        }
        if let Err(e) = conn.execute_batch("COMMIT") {
            rollback_quietly(conn);
            return Err(e.into());
        }
        let mut results: Vec<Result<OperationOutcome>> = failed
            .into_iter()
            .map(|f| f.map_or(Ok(Vec::new()), Err))
            .collect();
        for (i, outcome) in done {
            results[i] = Ok(outcome);
        }
        return Ok(results);
    }
}

/// The operation log's part in a batch.
pub(super) struct Logging<'a> {
    /// The last sequence number given.
    pub(super) up_to: i64,
    /// Given the first number and the operations that will commit, just
    /// before COMMIT (the log's row sent ahead, see `writer::complete`).
    pub(super) before_commit: Option<&'a BeforeCommit<'a>>,
}

/// What [`Logging::before_commit`] is given: the first number, and the
/// operations that will commit.
pub(super) type BeforeCommit<'a> = dyn Fn(i64, &[&Operation]) -> Result<()> + 'a;

/// Re-apply logged operations (a recovery's replay of the operation log)
/// in one transaction, all or nothing, and write the last one's own
/// sequence number as the database's op-log position. They are not logged
/// again: the log already holds them, under those numbers, so a later
/// recovery from the same backup replays each once.
pub(super) fn replay_batch(
    conn: &Connection,
    gate: &Gate,
    ops: &[LoggedOp],
    traces: &mut [OpTrace],
) -> Result<()> {
    let Some(last) = ops.last() else {
        return Ok(());
    };
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut runner = Runner::new(conn, gate);
    let applied = (|| -> Result<()> {
        for (i, logged) in ops.iter().enumerate() {
            runner.traced(&logged.op, traces.get_mut(i)).map_err(|f| {
                let mut e = f.error;
                e.message = format!("logged operation {}: {}", logged.seq, e.message);
                e
            })?;
        }
        super::op_log::write_position(conn, last.seq)?;
        conn.execute_batch("COMMIT")?;
        Ok(())
    })();
    if applied.is_err() {
        rollback_quietly(conn);
    }
    applied
}

/// What the audit keeps of one operation's run.
#[derive(Debug, Clone, Default)]
pub(super) struct OpTrace {
    /// How long it ran.
    pub(super) duration: Duration,
    /// The tables its statements (and their triggers) changed, one set
    /// per statement (merged for the record, off the connection thread).
    pub(super) tables: crate::gate::OpTables,
    /// Rows its statements changed.
    pub(super) rows: u64,
}

/// A failed operation; `left_effects` when its partial changes remain in
/// the transaction.
struct Failure {
    error: Error,
    left_effects: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            left_effects: false,
        }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::from(Error::from(e))
    }
}

/// Where a batch's operations run: the connection, its statement gate,
/// and the last caller statement, kept prepared for the next one with the
/// same SQL (not while the audit is on: see `run_statement`). A group
/// commit is mostly one kind of write, and taking a statement from the
/// connection's cache hashes its SQL (a tenth of the connection thread's
/// time under load).
struct Runner<'c, 'o> {
    conn: &'c Connection,
    gate: &'c Gate,
    last: Option<(&'o str, CachedStatement<'c>)>,
}

impl<'c, 'o> Runner<'c, 'o> {
    fn new(conn: &'c Connection, gate: &'c Gate) -> Self {
        Runner {
            conn,
            gate,
            last: None,
        }
    }

    /// [`apply_operation`](Self::apply_operation), traced into `trace`
    /// when there is one.
    fn traced(
        &mut self,
        op: &'o Operation,
        trace: Option<&mut OpTrace>,
    ) -> Result<OperationOutcome, Failure> {
        let Some(trace) = trace else {
            return self.apply_operation(op);
        };
        let started = Instant::now();
        let applied = self.apply_operation(op);
        trace.duration = started.elapsed();
        trace.tables = self.gate.take_tables();
        trace.rows = match &applied {
            Ok(outcome) => outcome.iter().map(|o| o.rows_affected as u64).sum(),
            Err(_) => 0,
        };
        applied
    }

    /// Apply one operation so that, if it fails, it leaves nothing behind.
    ///
    /// A single statement needs no SAVEPOINT: SQLite's statement journal
    /// undoes a failed statement by itself. The exception is OR FAIL /
    /// RAISE(FAIL), which keeps the rows changed before the failure;
    /// `total_changes` shows it, and the caller then redoes the
    /// transaction without this operation. A batch of statements runs
    /// inside its own SAVEPOINT.
    fn apply_operation(&mut self, op: &'o Operation) -> Result<OperationOutcome, Failure> {
        let conn = self.conn;
        let list = match op {
            Operation::Statement(s) => {
                let before = conn.total_changes();
                return self
                    .run_statement(s)
                    .map(|o| vec![o])
                    .map_err(|error| Failure {
                        error,
                        left_effects: conn.total_changes() != before,
                    });
            }
            Operation::Batch(list) if list.is_empty() => {
                return Err(Error::bad_input("a batch needs at least one statement").into())
            }
            Operation::Batch(list) => list,
            Operation::Once { key, op } => return self.apply_once(key, op),
        };
        conn.execute_batch("SAVEPOINT op")?;
        match list.iter().map(|s| self.run_statement(s)).collect() {
            Ok(outcome) => {
                conn.execute_batch("RELEASE op")?;
                Ok(outcome)
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
                }
                Err(e.into())
            }
        }
    }

    /// Apply `op` unless `key` was applied before. The key is claimed in
    /// the same transaction, so both commit together or not at all; if
    /// `op` fails, the claim is withdrawn (no SAVEPOINT needed: SQLite's
    /// statement journal already undoes a failed statement).
    fn apply_once(&mut self, key: &str, op: &'o Operation) -> Result<OperationOutcome, Failure> {
        let conn = self.conn;
        if !claim_key(conn, key)? {
            return Ok(Vec::new());
        }
        self.apply_operation(op).map_err(|failure| {
            if conn.is_autocommit() {
                return failure; // the whole transaction is gone, claim included
            }
            let withdrawn = conn
                .prepare_cached("DELETE FROM _resilite_idempotency WHERE key = ?1")
                .and_then(|mut stmt| stmt.execute([key]));
            Failure {
                left_effects: failure.left_effects || withdrawn.is_err(),
                error: failure.error,
            }
        })
    }

    /// Run one caller statement through the gate. A statement that changed
    /// no row (DDL among them) reports 0 rows and rowid 0, where SQLite
    /// would repeat the count and rowid of another caller's earlier
    /// statement.
    fn run_statement(&mut self, s: &'o Statement) -> Result<WriteOutcome> {
        let (conn, gate) = (self.conn, self.gate);
        let changes_before = conn.total_changes();
        let last = &mut self.last;
        let rows_affected = gate.caller(conn, None, || {
            // Prepared under the gate like any other: the authorizer ran
            // when it was compiled, as for one taken from the cache.
            let mut stmt = match last.take() {
                Some((sql, stmt)) if sql == s.sql => stmt,
                _ => crate::gate::prepare(conn, &s.sql)?,
            };
            if stmt.column_count() > 0 {
                return Err(Error::from_sqlite(
                    rusqlite::Error::ExecuteReturnedResults,
                    &s.sql,
                ));
            }
            let rows = stmt
                .execute(rusqlite::params_from_iter(&s.params))
                .map_err(|e| crate::gate::run_error(conn, &s.sql, e))?;
            // With the audit on, every statement comes from the cache: its
            // tables are noted per SQL text beside the cache, and a flush of
            // both (past its size) must not miss a statement held here.
            if !gate.auditing() {
                *last = Some((&s.sql, stmt));
            }
            Ok(rows)
        });
        if gate.auditing() {
            gate.note_tables(conn, &s.sql);
        }
        let rows_affected = rows_affected?;
        if conn.total_changes() == changes_before {
            return Ok(WriteOutcome {
                rows_affected: 0,
                last_insert_rowid: 0,
            });
        }
        Ok(WriteOutcome {
            rows_affected,
            last_insert_rowid: conn.last_insert_rowid(),
        })
    }
}

pub(super) fn rollback_quietly(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "rollback failed");
        }
    }
}

pub(super) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into())
}
