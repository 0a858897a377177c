//! The operation audit (`[audit] level`): one record per write operation
//! the application writer was given (who asked, from where, what kind,
//! which tables it touched, how many rows, how it ended, how long it ran,
//! in which commit), kept in the journal's `audit_ops` table.
//!
//! The writer's connection thread records them: the statement gate notes
//! the tables each caller statement inserts into, updates or deletes from
//! (SQLite's authorizer, when the statement is compiled; see
//! [`crate::gate`]), and after each group commit the batch's records are
//! appended to the journal in one transaction on the writer's own journal
//! connection (as the operation log is; see `writer::audit`). Records of
//! operations that never reached the writer's transaction (a durable write
//! queued for replay, a write refused by the open breaker) are written by
//! the runtime through the journal writer.

use serde::{Deserialize, Serialize};

/// How much of the writes the audit records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditLevel {
    /// Nothing.
    Off,
    /// Operations that did not commit: failed, rolled back, queued.
    #[default]
    Failures,
    /// Every operation.
    All,
}

impl AuditLevel {
    /// Whether an operation that ended with `status` is recorded.
    pub fn records(self, status: AuditStatus) -> bool {
        match self {
            AuditLevel::Off => false,
            AuditLevel::Failures => status != AuditStatus::Committed,
            AuditLevel::All => true,
        }
    }
}

/// How a write operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditStatus {
    /// Committed.
    Committed,
    /// It ran, but its transaction was rolled back (a failure of the
    /// whole group commit: the database locked past the retries, COMMIT
    /// failed): nothing of it was applied.
    RolledBack,
    /// It failed itself (a constraint, bad SQL, refused by the statement
    /// gate, a batch that failed atomically): nothing of it was applied.
    Failed,
    /// Stored in the retry queue for replay (a durable write); its replay
    /// is recorded again with its final status.
    Queued,
}

impl AuditStatus {
    /// Every status.
    pub const ALL: [AuditStatus; 4] = [
        AuditStatus::Committed,
        AuditStatus::RolledBack,
        AuditStatus::Failed,
        AuditStatus::Queued,
    ];

    /// The status as it is stored and serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Committed => "committed",
            AuditStatus::RolledBack => "rolled_back",
            AuditStatus::Failed => "failed",
            AuditStatus::Queued => "queued",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<AuditStatus> {
        AuditStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What kind of write operation it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// One statement.
    Statement,
    /// Statements applied atomically.
    Batch,
    /// An operation with the caller's idempotency key.
    Once,
    /// Re-applied from the operation log by a recovery.
    Replay,
    /// Replayed from the retry queue.
    Queued,
}

impl OpKind {
    /// The kind as it is stored and serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Statement => "statement",
            OpKind::Batch => "batch",
            OpKind::Once => "once",
            OpKind::Replay => "replay",
            OpKind::Queued => "queued",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<OpKind> {
        [
            OpKind::Statement,
            OpKind::Batch,
            OpKind::Once,
            OpKind::Replay,
            OpKind::Queued,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Who asked for a write, for the audit: given by the HTTP layer (the
/// `X-Request-Id` header or a generated id, the client's address) or by
/// an embedding application (`Runtime::execute_with`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteContext {
    /// The request's id.
    pub request_id: Option<String>,
    /// Who called (a user, a service, a job name).
    pub caller: Option<String>,
    /// The client's network address.
    pub client: Option<String>,
}

/// One audited write operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its id: later records have larger ids (the `before` cursor). 0
    /// before it is stored.
    pub id: i64,
    /// When it ended (ms since the Unix epoch).
    pub at_ms: i64,
    /// The group commit it was part of (numbered by the writer, never
    /// reused); `None` when it never reached one (queued).
    pub batch: Option<i64>,
    /// What kind of operation.
    pub kind: OpKind,
    /// How it ended.
    pub status: AuditStatus,
    /// Who asked, from where.
    #[serde(flatten)]
    pub context: WriteContext,
    /// The tables its statements (and their triggers) inserted into,
    /// updated or deleted from, as SQLite's authorizer saw them.
    pub tables: Vec<String>,
    /// Rows its statements changed (0 unless committed).
    pub rows: u64,
    /// The error's class, when it did not commit.
    pub error_class: Option<String>,
    /// The error's message, when it did not commit.
    pub error: Option<String>,
    /// How long it ran in the writer (queued: how long its caller waited),
    /// in microseconds.
    pub duration_us: u64,
    /// The retry-queue entry that holds it (queued) or that it was
    /// replayed from.
    pub queue_id: Option<i64>,
}

/// Which audit records to read: newest first, filtered, a page at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only records at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only records with this status.
    pub status: Option<AuditStatus>,
    /// Only records of operations that touched this table.
    pub table: Option<String>,
    /// Only records older than this id (the `next` of the previous page).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// One page of audit records, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The records.
    pub records: Vec<AuditRecord>,
    /// The `before` of the next (older) page; `None` on the last page.
    pub next: Option<i64>,
}
