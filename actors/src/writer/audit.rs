//! The application writer's side of the operation audit (`[audit] level`):
//! the commit batch numbers, and the records of each finished batch that
//! the level keeps, appended to the journal's `audit_batches` with the
//! batch's completion (see `writer::complete`; the records alone do not
//! hold its callers). At level `failures` a batch where everything
//! committed has none.

use rusqlite::Connection;

use super::complete::Finished;
use crate::audit::{AuditLevel, AuditStatus, OpKind};
use crate::connection::DbOptions;
use crate::error::Result;
use crate::journal::audit::{self as journal_audit, RecordRef, RowRecords};
use crate::maintenance::now_ms;
use crate::retry_queue::{DURABLE_KEY_PREFIX, QUEUE_KEY_PREFIX};
use crate::value::Operation;

/// The audit's settings in a [`WriterConfig`](super::WriterConfig).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// What is recorded (never `Off` here: no config then).
    pub level: AuditLevel,
    /// The journal the records go to.
    pub journal: DbOptions,
}

/// What the audit keeps, and the last commit batch number given.
pub(super) struct AuditBook {
    level: AuditLevel,
    last_batch: i64,
}

impl AuditBook {
    /// Numbering after the last batch recorded in the journal at `conn`.
    pub(super) fn open(conn: &Connection, level: AuditLevel) -> Result<AuditBook> {
        Ok(AuditBook {
            level,
            last_batch: journal_audit::highest_batch(conn)?,
        })
    }

    /// What the audit records.
    pub(super) fn level(&self) -> AuditLevel {
        self.level
    }

    /// The records of `batch`'s operations that the level keeps, numbered
    /// with the next batch number, encoded for the journal's row as they
    /// are gathered (no [`AuditRecord`](crate::audit::AuditRecord) is
    /// built). The operations' traces are taken.
    pub(super) fn records(&mut self, batch: &mut Finished) -> RowRecords {
        self.last_batch += 1;
        let mut row = RowRecords::new(now_ms(), Some(self.last_batch));
        let traces = std::mem::take(&mut batch.traces);
        let ended = batch.ended();
        for (i, error) in ended.iter().enumerate() {
            let status = match error {
                None => AuditStatus::Committed,
                Some(_) if batch.whole_failed => AuditStatus::RolledBack,
                Some(_) => AuditStatus::Failed,
            };
            if !self.level.records(status) {
                continue;
            }
            let (kind, queue_id) = batch.op_kind(i);
            // resilite's own writes (pruning, forgetting keys) come
            // without a context and are not audited; callers' writes
            // and retry-queue replays are.
            let context = batch.contexts.get(i).and_then(|c| c.as_deref());
            if context.is_none() && !matches!(kind, OpKind::Queued | OpKind::Replay) {
                continue;
            }
            let trace = traces.get(i);
            let record = RecordRef {
                kind,
                status,
                context,
                rows: match (trace, error) {
                    (Some(t), None) => t.rows,
                    _ => 0,
                },
                error_class: error.as_ref().map(|e| e.class.as_str()),
                error: error.as_ref().map(|e| e.message.as_str()),
                duration_us: trace.map_or(0, |t| t.duration.as_micros() as u64),
                queue_id,
            };
            match trace {
                Some(t) => row.push(&record, t.tables.merged()),
                None => row.push(&record, []),
            }
        }
        row
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
