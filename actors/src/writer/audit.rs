//! The application writer's side of the operation audit (`[audit] level`):
//! a connection of its own on the journal, the commit batch numbers, and
//! the append of each group commit's records.
//!
//! After a group commit (or a batch that failed as a whole), the records
//! of its operations that the level keeps are appended to the journal's
//! `audit_ops` in one journal transaction, before the callers are
//! answered, like the operation log (see `writer::op_log`, whose notes on
//! a second writer on the journal hold here too). At level `failures` a
//! batch where everything committed writes nothing. An append that fails
//! (the journal locked past its busy timeout and the retries) drops the
//! batch's records, counted in `resilite_audit_dropped_total` and logged:
//! the audit never fails a write.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::Connection;

use super::apply::OpTrace;
use crate::audit::{AuditLevel, AuditRecord, AuditStatus, OpKind, WriteContext};
use crate::connection::{open_read_write, DbOptions};
use crate::error::{Error, Result};
use crate::journal::audit as journal_audit;
use crate::maintenance::now_ms;
use crate::retry_queue::{DURABLE_KEY_PREFIX, QUEUE_KEY_PREFIX};
use crate::value::{Operation, OperationOutcome};

/// Attempts of one append that fails with a transient error.
const APPEND_ATTEMPTS: u32 = 4;
/// First pause between two attempts; doubled each time.
const APPEND_RETRY_BASE: Duration = Duration::from_millis(5);

/// The audit's settings in a [`WriterConfig`](super::WriterConfig).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// What is recorded (never `Off` here: no config then).
    pub level: AuditLevel,
    /// The journal the records go to.
    pub journal: DbOptions,
}

/// The writer's journal connection for the audit, and the batch numbers.
pub(super) struct AuditLog {
    conn: Connection,
    path: PathBuf,
    level: AuditLevel,
    /// The last commit batch number given.
    last_batch: i64,
}

/// How a batch ended, for its operations' records.
pub(super) enum BatchEnd<'a> {
    /// Each operation's own outcome (committed or failed by itself).
    Each(&'a [Result<OperationOutcome>]),
    /// The batch failed as a whole: everything in it was rolled back.
    Whole(&'a [Result<OperationOutcome>]),
}

impl AuditLog {
    /// Open the journal at `config.journal` (migrated already: its writer
    /// starts first) and find the last batch number.
    pub(super) fn open(config: &AuditConfig) -> Result<AuditLog> {
        let opts = &config.journal;
        let conn =
            open_read_write(opts).map_err(|e| e.during("open the operation audit", &opts.path))?;
        let last_batch = journal_audit::highest_batch(&conn)
            .map_err(|e| e.during("read the operation audit", &opts.path))?;
        Ok(AuditLog {
            conn,
            path: opts.path.clone(),
            level: config.level,
            last_batch,
        })
    }

    /// What the audit records.
    pub(super) fn level(&self) -> AuditLevel {
        self.level
    }

    /// Record the operations of one batch (`ctxs` beside `ops`, or empty;
    /// `traces` beside `ops`), numbered with the next batch number.
    pub(super) fn batch(
        &mut self,
        ops: &[Operation],
        ctxs: &[Option<Box<WriteContext>>],
        traces: &[OpTrace],
        end: BatchEnd<'_>,
    ) {
        self.record(ops, ctxs, traces, end, None);
    }

    /// Record a recovery's replay of logged operations (kind `replay`).
    pub(super) fn replayed(&mut self, ops: &[Operation], traces: &[OpTrace], end: BatchEnd<'_>) {
        self.record(ops, &[], traces, end, Some(OpKind::Replay));
    }

    fn record(
        &mut self,
        ops: &[Operation],
        ctxs: &[Option<Box<WriteContext>>],
        traces: &[OpTrace],
        end: BatchEnd<'_>,
        kind: Option<OpKind>,
    ) {
        self.last_batch += 1;
        let (results, whole_failed) = match end {
            BatchEnd::Each(r) => (r, false),
            BatchEnd::Whole(r) => (r, true),
        };
        let at_ms = now_ms();
        let records: Vec<AuditRecord> = ops
            .iter()
            .zip(results)
            .enumerate()
            .filter_map(|(i, (op, result))| {
                let status = match result {
                    Ok(_) => AuditStatus::Committed,
                    Err(_) if whole_failed => AuditStatus::RolledBack,
                    Err(_) => AuditStatus::Failed,
                };
                if !self.level.records(status) {
                    return None;
                }
                let (kind, queue_id) = match kind {
                    Some(kind) => (kind, None),
                    None => kind_of(op),
                };
                // resilite's own writes (pruning, forgetting keys) come
                // without a context and are not audited; callers' writes
                // and retry-queue replays are.
                let context = ctxs.get(i).and_then(|c| c.as_deref());
                if context.is_none() && !matches!(kind, OpKind::Queued | OpKind::Replay) {
                    return None;
                }
                let trace = traces.get(i);
                let error = result.as_ref().err();
                Some(AuditRecord {
                    id: 0,
                    at_ms,
                    batch: Some(self.last_batch),
                    kind,
                    status,
                    context: context.cloned().unwrap_or_default(),
                    tables: trace.map(|t| t.tables.clone()).unwrap_or_default(),
                    rows: if error.is_none() {
                        trace.map_or(0, |t| t.rows)
                    } else {
                        0
                    },
                    error_class: error.map(|e| e.class.as_str().to_owned()),
                    error: error.map(|e| e.message.clone()),
                    duration_us: trace.map_or(0, |t| t.duration.as_micros() as u64),
                    queue_id,
                })
            })
            .collect();
        self.append(&records);
    }

    /// Append `records` in one journal transaction, retrying a busy
    /// journal a few times; never fails (see the module doc).
    fn append(&self, records: &[AuditRecord]) {
        if records.is_empty() {
            return;
        }
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match journal_audit::append(&self.conn, records) {
                Err(e) if e.is_transient() && attempt < APPEND_ATTEMPTS => {
                    std::thread::sleep(APPEND_RETRY_BASE * 2u32.pow(attempt - 1));
                }
                other => break other,
            }
        };
        if let Err(e) = result {
            self.dropped(records.len(), &e);
        }
    }

    fn dropped(&self, count: usize, e: &Error) {
        metrics::counter!("resilite_audit_dropped_total").increment(count as u64);
        tracing::error!(
            path = %self.path.display(), count, class = ?e.class, detail = %e.detail,
            "operation audit append failed: these records are lost (the writes themselves are not affected)"
        );
    }
}

/// The kind of `op`, and the retry-queue entry it is replayed from.
/// resilite's own keys (durable writes, queue replays) are not the
/// caller's `once`.
pub fn kind_of(op: &Operation) -> (OpKind, Option<i64>) {
    match op {
        Operation::Statement(_) => (OpKind::Statement, None),
        Operation::Batch(_) => (OpKind::Batch, None),
        Operation::Once { key, op } => {
            if let Some(id) = key.strip_prefix(QUEUE_KEY_PREFIX) {
                (OpKind::Queued, id.parse().ok())
            } else if key.starts_with(DURABLE_KEY_PREFIX) {
                kind_of(op)
            } else {
                (OpKind::Once, None)
            }
        }
    }
}
