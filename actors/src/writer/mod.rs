//! WriterActor: owns the only read-write connection to a database file and
//! applies every write through it, with group commit.
//!
//! The connection lives on its own OS thread (SQLite calls block). Writes
//! reach that thread over a bounded channel: directly from a [`WriterHandle`]
//! (the hot path: the handle holds only a sender, as in tokio-rusqlite), or
//! forwarded by the actor for a [`WriterMsg::Write`]. The thread takes
//! every write that has arrived while the previous COMMIT was in flight (up to `max_batch`, waiting at most `batch_wait` for callers
//! it expects) and applies them in one transaction, each operation isolated
//! (a batch in its own SAVEPOINT, a single statement by SQLite's statement
//! journal) so a failing operation fails only its own caller. Callers are
//! answered only after COMMIT returned. Transient failures (BUSY, LOCKED,
//! IOERR, FULL) are retried in place with exponential backoff and jitter.
//!
//! Failure and restart: a panic in the actor fails it and its supervisor
//! starts a new one, which opens a new connection. Writes still in the
//! actor's mailbox are dropped unanswered (they were never applied, so the
//! runtime sends them again); writes already handed to the connection thread
//! are finished and answered by that thread, which closes its connection
//! once the last sender to it is gone.
//!
//! The connection can be closed and opened again on the same path
//! ([`WriterMsg::Close`], [`WriterMsg::Open`]) while the actor and every
//! handle stay valid: a restore swaps the file underneath. While closed,
//! writes are refused (`unavailable`), never applied.
//!
//! Files: this one (configuration, messages, the actor), `handle` (the
//! hot path), `thread` (the connection thread and group commit), `apply`
//! (one transaction, each operation isolated, through the statement gate),
//! `keys` (idempotency keys of `Operation::Once`), `op_log` (the operation
//! log: sequence numbers, the database's op-log position, gaps found),
//! `audit` (the operation audit's records and batch numbers), `complete`
//! (after each group commit: the journal's records of it in one journal
//! transaction, then the answers; on a thread of its own when the log or
//! the audit is on), `checkpoint` (the WAL's checkpoints, beside the
//! writer rather than inside its COMMIT).

mod apply;
mod audit;
mod checkpoint;
mod complete;
mod handle;
mod keys;
mod op_log;
mod thread;

pub use audit::{kind_of as op_kind, AuditConfig};
pub use complete::Answered;
pub use handle::WriterHandle;
pub use keys::{expire_keys_statement, forget_keys_statement};
pub use op_log::{
    barrier as op_log_barrier, numbers_given as op_log_numbers_given, position as op_log_position,
    POSITION_TABLE as OP_LOG_POSITION_TABLE,
};

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use backon::ExponentialBuilder;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::connection::DbOptions;
use crate::error::{Error, ErrorClass, Result};
use crate::journal::op_log::LoggedOp;
use crate::maintenance::{Maintenance, MaintenanceRun};
use crate::value::{Operation, OperationOutcome};
use complete::WriteReply;
use thread::{ConnectionLoop, Counters, Job};

/// Default largest number of operations committed in one transaction.
pub const DEFAULT_MAX_BATCH: usize = 1024;
/// Default longest wait for more writes before committing a batch.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_micros(500);
/// Default capacity of the channel between the actor and its connection thread.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// Default in-place retries of a batch that failed with a transient error.
pub const DEFAULT_MAX_RETRIES: usize = 5;
/// Default first retry delay.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(10);
/// Default longest retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(1);
/// Default longest run of one caller statement.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest string or blob a statement may build (`SQLITE_LIMIT_LENGTH`).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 32 * 1024 * 1024;
/// How long a stopping writer waits for its connection thread to close.
const THREAD_JOIN_WAIT: Duration = Duration::from_secs(10);

/// In-place retry of transient failures: exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = no retry).
    pub max_retries: usize,
    /// First delay; each next delay doubles, with jitter.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            base_delay: DEFAULT_RETRY_BASE,
            max_delay: DEFAULT_RETRY_MAX,
        }
    }
}

impl RetryPolicy {
    /// The backon policy this describes.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_retries)
    }
}

/// A hook run on the connection right after it is opened (e.g. migrations).
pub type InitHook = fn(&Connection) -> Result<()>;

/// Everything a WriterActor needs to start.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The database file and its pragmas.
    pub db: DbOptions,
    /// Largest number of operations in one transaction.
    pub max_batch: usize,
    /// Longest wait for expected writes before committing a batch.
    pub batch_wait: Duration,
    /// Writes buffered between the actor and its connection thread.
    pub queue_capacity: usize,
    /// In-place retries of transient failures.
    pub retry: RetryPolicy,
    /// Run once on the new connection before any write.
    pub init: Option<InitHook>,
    /// The writer's name in logs and metrics (`writer`, `journal-writer`).
    pub name: &'static str,
    /// Longest run of one caller statement before it is interrupted.
    pub statement_timeout: Duration,
    /// Largest string or blob a statement may build (`SQLITE_LIMIT_LENGTH`).
    pub max_value_bytes: usize,
    /// The journal to keep the operation log in (`[backup] op_log`):
    /// every committed operation is appended there before its caller is
    /// answered, one journal transaction per group commit (see
    /// `writer::op_log`). `None` for the journal writer itself and when
    /// the log is off.
    pub op_log: Option<DbOptions>,
    /// The operation audit (`[audit] level`): a record per operation, in
    /// the journal, one journal transaction per group commit that has
    /// records (see `writer::audit`). `None` when it is off.
    pub audit: Option<AuditConfig>,
}

impl WriterConfig {
    /// Defaults for the database at `db`.
    pub fn new(db: DbOptions) -> Self {
        WriterConfig {
            db,
            max_batch: DEFAULT_MAX_BATCH,
            batch_wait: DEFAULT_BATCH_WAIT,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            retry: RetryPolicy::default(),
            init: None,
            name: "writer",
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            op_log: None,
            audit: None,
        }
    }
}

/// Counters of a writer since it started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Operations committed.
    pub committed: u64,
    /// Operations that failed (answered with an error).
    pub failed: u64,
    /// Mean operations per commit.
    pub mean_batch: f64,
}

/// Work run on the writer's connection by [`WriterMsg::Call`]: it gets the
/// open connection, or the error that says why there is none.
pub type ConnectionJob = Box<dyn FnOnce(Result<&Connection>) + Send>;

/// Messages of the WriterActor.
pub enum WriterMsg {
    /// Apply an operation; answered after COMMIT with one outcome per statement.
    Write {
        /// The operation.
        op: Operation,
        /// Where the outcome goes.
        reply: RpcReplyPort<Result<OperationOutcome>>,
    },
    /// Run a maintenance task (checkpoint, VACUUM, optimize) after every
    /// write received before it, between two transactions.
    Maintain {
        /// The task.
        task: Maintenance,
        /// Where the outcome goes.
        reply: RpcReplyPort<Result<MaintenanceRun>>,
    },
    /// Run resilite's own work on the connection (a migration, a schema
    /// fix), after every write received before it, between two
    /// transactions and outside the statement gate: never a caller's SQL.
    /// The job gets the connection, or why it is closed; it answers its
    /// own caller (see [`WriterHandle::call`]).
    Call(ConnectionJob),
    /// Answered once every write received before it has been committed or failed.
    Drain(RpcReplyPort<()>),
    /// After every write received before it, close the connection (and so
    /// the file): writes are refused until [`WriterMsg::Open`]. For a
    /// restore, which replaces the file.
    Close(RpcReplyPort<Result<()>>),
    /// Open the connection again on the same path (as at start: pragmas,
    /// init hook, statement gate). Answered `Ok` at once if it is open.
    Open(RpcReplyPort<Result<()>>),
    /// Re-apply operations of the operation log (a recovery's replay), in
    /// one transaction, all or nothing, after every write received before
    /// it. The database's op-log position becomes the last one's sequence
    /// number; they are not logged again.
    Replay {
        /// The logged operations, in order.
        ops: Vec<LoggedOp>,
        /// Where the outcome goes.
        reply: RpcReplyPort<Result<()>>,
    },
    /// Counters since start.
    Stats(RpcReplyPort<WriterStats>),
    /// A handle that sends writes straight to the connection thread.
    Handle(RpcReplyPort<WriterHandle>),
    /// Fault injection for tests: the actor panics, as a bug would make it.
    InjectPanic,
}

/// The WriterActor. Spawn it with a [`WriterConfig`].
pub struct WriterActor;

/// The actor's state: the sender to its connection thread.
pub struct WriterState {
    jobs: Option<flume::Sender<Job>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Actor for WriterActor {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = WriterConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<WriterMsg>,
        config: WriterConfig,
    ) -> Result<WriterState, ActorProcessingErr> {
        let (jobs, rx) = flume::bounded(config.queue_capacity.max(1));
        let (opened_tx, opened_rx) = flume::bounded(1);
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let name = format!("resilite-writer:{}", config.db.path.display());
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let mut connection = ConnectionLoop::new(rx, config, thread_counters);
            let opened = connection.open();
            let failed = opened.is_err();
            let _ = opened_tx.send(opened);
            if !failed {
                connection.run();
            }
        })?;
        match opened_rx.recv_async().await {
            Ok(Ok(())) => Ok(WriterState {
                jobs: Some(jobs),
                counters,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(Box::new(e)),
            Err(_) => Err(Box::new(Error::classed(
                ErrorClass::Internal,
                "writer thread exited while opening the database",
            ))),
        }
    }

    async fn handle(
        &self,
        _myself: ActorRef<WriterMsg>,
        msg: WriterMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        let job = match msg {
            WriterMsg::Write { op, reply } => Job::Write(op, None, WriteReply::Outcome(reply)),
            WriterMsg::Maintain { task, reply } => Job::Maintain(task, reply),
            WriterMsg::Call(job) => Job::Call(job),
            WriterMsg::Drain(reply) => Job::Barrier(reply),
            WriterMsg::Close(reply) => Job::Close(reply),
            WriterMsg::Open(reply) => Job::Open(reply),
            WriterMsg::Replay { ops, reply } => Job::Replay(ops, reply),
            WriterMsg::Stats(reply) => {
                let _ = reply.send(state.counters.snapshot());
                return Ok(());
            }
            WriterMsg::Handle(reply) => {
                if let Some(jobs) = &state.jobs {
                    let _ = reply.send(WriterHandle::new(jobs.clone()));
                }
                return Ok(());
            }
            WriterMsg::InjectPanic => panic!("injected writer panic (fault injection)"),
        };
        // A closed channel means the connection thread is gone: fail, so the
        // supervisor starts a fresh actor and connection.
        let sent = match &state.jobs {
            Some(jobs) => jobs.send_async(job).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(Box::new(Error::classed(
                ErrorClass::Internal,
                "writer connection thread stopped",
            )));
        }
        Ok(())
    }

    /// On a clean stop, let the connection thread finish the writes it
    /// holds and close the connection before the actor is reported stopped.
    async fn post_stop(
        &self,
        _myself: ActorRef<WriterMsg>,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        state.jobs = None;
        if let Some(thread) = state.thread.take() {
            // The thread ends when the last handle is dropped; do not hang
            // the stop on a handle someone still holds.
            let join = tokio::task::spawn_blocking(move || thread.join());
            let _ = tokio::time::timeout(THREAD_JOIN_WAIT, join).await;
        }
        Ok(())
    }
}
