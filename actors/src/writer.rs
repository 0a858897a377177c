//! WriterActor: owns the only read-write connection to a database file and
//! applies every write through it, with group commit.
//!
//! The connection lives on its own OS thread (SQLite calls block). Writes
//! reach that thread over a bounded channel: directly from a [`WriterHandle`]
//! (the hot path: the handle holds only a sender, as in tokio-rusqlite), or
//! forwarded by the actor for a [`WriterMsg::Write`]. The thread takes every write that has arrived while the previous COMMIT
//! was in flight (up to `max_batch`, waiting at most `batch_wait` for callers
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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backon::{BlockingRetryable, ExponentialBuilder};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::connection::{open_read_write, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::gate::{Bounds, Gate};
use crate::maintenance::{self, Maintenance, MaintenanceRun};
use crate::value::{Operation, OperationOutcome, Statement, WriteOutcome};

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
    /// Answered once every write received before it has been committed or failed.
    Drain(RpcReplyPort<()>),
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
            let bounds = Bounds {
                timeout: config.statement_timeout,
                timeout_key: "writer.statement_timeout",
                max_value_bytes: config.max_value_bytes,
            };
            let opened = open_read_write(&config.db)
                .and_then(|c| config.init.map_or(Ok(()), |init| init(&c)).map(|_| c))
                .and_then(|c| Gate::install(&c, bounds).map(|gate| (c, gate)));
            let (conn, gate) = match opened {
                Ok(opened) => {
                    let _ = opened_tx.send(Ok(()));
                    opened
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            ConnectionLoop {
                conn,
                gate,
                rx,
                config,
                counters: thread_counters,
            }
            .run();
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
            WriterMsg::Write { op, reply } => Job::Write(op, reply),
            WriterMsg::Maintain { task, reply } => Job::Maintain(task, reply),
            WriterMsg::Drain(reply) => Job::Barrier(reply),
            WriterMsg::Stats(reply) => {
                let _ = reply.send(state.counters.snapshot());
                return Ok(());
            }
            WriterMsg::Handle(reply) => {
                if let Some(jobs) = &state.jobs {
                    let _ = reply.send(WriterHandle { jobs: jobs.clone() });
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

/// Sends writes straight to a writer's connection thread, skipping the
/// actor's mailbox. Cloneable; get one with [`WriterMsg::Handle`].
#[derive(Clone)]
pub struct WriterHandle {
    jobs: flume::Sender<Job>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("queued", &self.jobs.len())
            .finish()
    }
}

impl WriterHandle {
    /// Apply `op` and wait for its committed outcome. `Err(op)` gives the
    /// operation back, never applied, when the connection thread is gone.
    pub async fn write(
        &self,
        op: Operation,
    ) -> std::result::Result<Result<OperationOutcome>, Operation> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.jobs.send_async(Job::Write(op, tx.into())).await {
            Ok(()) => Ok(answer(rx).await.and_then(|r| r)),
            Err(flume::SendError(Job::Write(op, _))) => Err(op),
            Err(_) => Ok(Err(Error::unavailable("the writer thread is gone"))),
        }
    }

    /// Run the write probe (see the health check). `Err(())` when the
    /// connection thread is gone.
    pub async fn probe(&self) -> std::result::Result<Result<()>, ()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.jobs.send_async(Job::Probe(tx.into())).await {
            Ok(()) => Ok(answer(rx).await.and_then(|r| r)),
            Err(_) => Err(()),
        }
    }

    /// Apply independent operations in one transaction (as a group commit
    /// of as many callers would): the outcome of each, in order. One
    /// message for all of them, for callers that have many at hand.
    /// `Err(ops)` gives them back, never applied, when the thread is gone.
    pub async fn write_many(
        &self,
        ops: Vec<Operation>,
    ) -> std::result::Result<Result<Vec<Result<OperationOutcome>>>, Vec<Operation>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.jobs.send_async(Job::WriteMany(ops, tx.into())).await {
            Ok(()) => Ok(answer(rx).await),
            Err(flume::SendError(Job::WriteMany(ops, _))) => Err(ops),
            Err(_) => Ok(Err(Error::unavailable("the writer thread is gone"))),
        }
    }
}

/// The connection thread's answer to a job it took (it answers every job,
/// even after a panic).
async fn answer<T>(rx: tokio::sync::oneshot::Receiver<T>) -> Result<T> {
    rx.await.map_err(|_| {
        Error::classed(
            ErrorClass::Internal,
            "writer thread ended without answering",
        )
    })
}

enum Job {
    Write(Operation, RpcReplyPort<Result<OperationOutcome>>),
    /// Independent operations committed together, one outcome each.
    WriteMany(Vec<Operation>, RpcReplyPort<Vec<Result<OperationOutcome>>>),
    /// The health check's write probe.
    Probe(RpcReplyPort<Result<()>>),
    Maintain(Maintenance, RpcReplyPort<Result<MaintenanceRun>>),
    Barrier(RpcReplyPort<()>),
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    committed: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WriterStats {
        let commits = self.commits.load(Ordering::Relaxed);
        let committed = self.committed.load(Ordering::Relaxed);
        WriterStats {
            commits,
            committed,
            failed: self.failed.load(Ordering::Relaxed),
            mean_batch: if commits == 0 {
                0.0
            } else {
                committed as f64 / commits as f64
            },
        }
    }
}

struct ConnectionLoop {
    conn: Connection,
    /// What callers' statements may do on `conn`.
    gate: Gate,
    rx: flume::Receiver<Job>,
    config: WriterConfig,
    counters: Arc<Counters>,
}

type Pending = (Operation, RpcReplyPort<Result<OperationOutcome>>);

impl ConnectionLoop {
    fn run(self) {
        // How many writes the last batch held: the callers we expect back
        // while the next batch is being collected.
        let mut expected = 1;
        let mut next: Option<Job> = None;
        loop {
            let job = match next.take().map_or_else(|| self.rx.recv(), Ok) {
                Ok(job) => job,
                Err(_) => break, // every sender dropped: the actor is gone
            };
            match job {
                Job::Write(op, reply) => {
                    let (batch, control) = self.collect(vec![(op, reply)], expected);
                    expected = batch.len();
                    next = control;
                    self.commit(batch);
                }
                Job::WriteMany(ops, reply) => {
                    let _ = reply.send(self.apply(&ops));
                }
                Job::Maintain(task, reply) => {
                    let _ = reply.send(self.maintain(task));
                }
                Job::Probe(reply) => {
                    let _ = reply.send(self.probe());
                }
                Job::Barrier(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        tracing::debug!(path = %self.config.db.path.display(), "writer connection closed");
    }

    /// Take the writes that are waiting, up to `max_batch`; wait up to
    /// `batch_wait` while fewer than `expected` arrived. Stops at a control
    /// job, returned to run after this batch.
    fn collect(&self, mut batch: Vec<Pending>, expected: usize) -> (Vec<Pending>, Option<Job>) {
        let deadline = Instant::now() + self.config.batch_wait;
        while batch.len() < self.config.max_batch {
            let job = match self.rx.try_recv() {
                Ok(job) => job,
                Err(flume::TryRecvError::Empty) if batch.len() < expected => {
                    match self.rx.recv_deadline(deadline) {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            match job {
                Job::Write(op, reply) => batch.push((op, reply)),
                control => return (batch, Some(control)),
            }
        }
        (batch, None)
    }

    /// Commit a batch and answer every caller. A write whose caller went
    /// away before it started is not applied.
    fn commit(&self, batch: Vec<Pending>) {
        let (ops, replies): (Vec<Operation>, Vec<_>) = batch
            .into_iter()
            .filter(|(_, reply)| !reply.is_closed())
            .unzip();
        if ops.is_empty() {
            return;
        }
        for (reply, result) in replies.into_iter().zip(self.apply(&ops)) {
            let _ = reply.send(result);
        }
    }

    /// Commit `ops` in one transaction (retrying transient failures in
    /// place): the outcome of each.
    fn apply(&self, ops: &[Operation]) -> Vec<Result<OperationOutcome>> {
        let started = Instant::now();
        let attempts = AtomicU64::new(0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (|| {
                attempts.fetch_add(1, Ordering::Relaxed);
                apply_batch(&self.conn, &self.gate, ops)
            })
            .retry(self.config.retry.backoff())
            .sleep(std::thread::sleep)
            .when(Error::is_transient)
            .notify(|e, delay| {
                tracing::warn!(class = ?e.class, detail = %e.detail, ?delay, "transient write failure; retrying batch");
            })
            .call()
        }));
        let results = match outcome {
            Ok(Ok(results)) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                results
            }
            Ok(Err(mut e)) => {
                if e.is_transient() {
                    e.detail = format!(
                        "{} (gave up after {} attempts)",
                        e.detail,
                        attempts.load(Ordering::Relaxed)
                    );
                }
                tracing::error!(class = ?e.class, detail = %e.detail, ops = ops.len(), "write batch failed");
                vec![Err(e); ops.len()]
            }
            Err(panic) => {
                rollback_quietly(&self.conn);
                let e = Error::classed(ErrorClass::Internal, panic_text(&panic));
                tracing::error!(detail = %e.detail, "writer panicked applying a batch; rolled back");
                vec![Err(e); ops.len()]
            }
        };
        let failed = results.iter().filter(|r| r.is_err()).count() as u64;
        let committed = results.len() as u64 - failed;
        self.counters
            .committed
            .fetch_add(committed, Ordering::Relaxed);
        self.counters.failed.fetch_add(failed, Ordering::Relaxed);
        let name = self.config.name;
        metrics::counter!("resilite_writes_total", "writer" => name, "outcome" => "committed")
            .increment(committed);
        metrics::counter!("resilite_writes_total", "writer" => name, "outcome" => "failed")
            .increment(failed);
        metrics::histogram!("resilite_commit_batch_size", "writer" => name)
            .record(ops.len() as f64);
        metrics::histogram!("resilite_commit_duration_seconds", "writer" => name)
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("resilite_writer_queue_depth", "writer" => name).set(self.rx.len() as f64);
        results
    }

    /// resilite's own write probe, between two transactions: one that
    /// rewrites the header's `user_version` with the value it holds. A real
    /// write to the file, so it fails as the callers' writes would
    /// (read-only or immutable file, full disk, lock held elsewhere), and
    /// the application sees no change; then the file is opened for
    /// writing. Tried once: it measures.
    fn probe(&self) -> Result<()> {
        let conn = &self.conn;
        let write = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            conn.execute_batch(&format!("PRAGMA user_version = {version}; COMMIT"))
        };
        write().map_err(|e| {
            rollback_quietly(conn);
            Error::from(e)
        })?;
        // The open connection keeps writing the WAL after its file was made
        // read-only or immutable: SQLite finds out only at the next
        // checkpoint, or when it opens the file again after a restart.
        // Opening the file for writing finds out now.
        let path = &self.config.db.path;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| {
                let mut err = Error::from(e);
                err.detail = format!("opening {} for writing: {}", path.display(), err.detail);
                err
            })
    }

    /// Run a maintenance task between two transactions.
    fn maintain(&self, task: Maintenance) -> Result<MaintenanceRun> {
        let run = maintenance::run(&self.conn, &self.config.db.path, task);
        match &run {
            Ok(run) => tracing::info!(
                writer = self.config.name,
                task = task.name(),
                duration_ms = run.duration_ms,
                reclaimed = run.bytes_reclaimed(),
                "maintenance done"
            ),
            Err(e) => {
                tracing::warn!(writer = self.config.name, task = task.name(), detail = %e.detail, "maintenance failed")
            }
        }
        run
    }
}

/// One transaction over `ops`. A transient failure anywhere aborts the whole
/// attempt (to be retried); any other failure fails only its operation.
///
/// Transaction control is never taken from the statement cache: a caller's
/// `COMMIT` would find resilite's own there, compiled outside the gate.
fn apply_batch(
    conn: &Connection,
    gate: &Gate,
    ops: &[Operation],
) -> Result<Vec<Result<OperationOutcome>>> {
    let mut failed: Vec<Option<Error>> = vec![None; ops.len()];
    'attempt: loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut done = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            match apply_operation(conn, gate, op) {
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

/// Apply one operation so that, if it fails, it leaves nothing behind.
///
/// A single statement needs no SAVEPOINT: SQLite's statement journal undoes
/// a failed statement by itself. The exception is OR FAIL / RAISE(FAIL),
/// which keeps the rows changed before the failure; `total_changes` shows
/// it, and the caller then redoes the transaction without this operation.
/// A batch of statements runs inside its own SAVEPOINT.
fn apply_operation(
    conn: &Connection,
    gate: &Gate,
    op: &Operation,
) -> Result<OperationOutcome, Failure> {
    let list = match op {
        Operation::Statement(s) => {
            let before = conn.total_changes();
            return run_statement(conn, gate, s)
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
        Operation::Once { key, op } => return apply_once(conn, gate, key, op),
    };
    conn.execute_batch("SAVEPOINT op")?;
    match list.iter().map(|s| run_statement(conn, gate, s)).collect() {
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

/// Apply `op` unless `key` was applied before. The key is claimed in the
/// same transaction, so both commit together or not at all; if `op` fails,
/// the claim is withdrawn (no SAVEPOINT needed: SQLite's statement journal
/// already undoes a failed statement).
fn apply_once(
    conn: &Connection,
    gate: &Gate,
    key: &str,
    op: &Operation,
) -> Result<OperationOutcome, Failure> {
    if !claim_key(conn, key)? {
        return Ok(Vec::new());
    }
    apply_operation(conn, gate, op).map_err(|failure| {
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

/// Insert `key` into `_resilite_idempotency` (created on first use); false
/// when it was there already.
fn claim_key(conn: &Connection, key: &str) -> rusqlite::Result<bool> {
    const CLAIM: &str =
        "INSERT OR IGNORE INTO _resilite_idempotency (key, applied_at_ms) VALUES (?1, ?2)";
    let claim = || -> rusqlite::Result<usize> {
        conn.prepare_cached(CLAIM)?
            .execute(rusqlite::params![key, crate::maintenance::now_ms()])
    };
    let inserted = match claim() {
        Err(_) if conn.table_exists(None, "_resilite_idempotency").ok() == Some(false) => {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS _resilite_idempotency (key TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL) WITHOUT ROWID",
            )?;
            claim()?
        }
        other => other?,
    };
    Ok(inserted == 1)
}

/// The statement that deletes the idempotency keys claimed before
/// `before_ms` (their retention is over: the same key applies again). The
/// table exists once a key was claimed; before that it fails with "no
/// such table".
pub fn expire_keys_statement(before_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM _resilite_idempotency WHERE applied_at_ms < ?1",
        [crate::value::Value::Integer(before_ms)],
    )
}

/// The statement that deletes the keys `prefix` followed by each id of
/// `ids_json` (a JSON array), once their operations' success is recorded
/// elsewhere.
pub fn forget_keys_statement(prefix: &str, ids_json: String) -> Statement {
    Statement::new(
        "DELETE FROM _resilite_idempotency WHERE key IN \
         (SELECT ?1 || value FROM json_each(?2))",
        [
            crate::value::Value::from(prefix),
            crate::value::Value::Text(ids_json),
        ],
    )
}

/// Run one caller statement through the gate. A statement that changed no
/// row (DDL among them) reports 0 rows and rowid 0, where SQLite would
/// repeat the count and rowid of another caller's earlier statement.
fn run_statement(conn: &Connection, gate: &Gate, s: &Statement) -> Result<WriteOutcome> {
    let changes_before = conn.total_changes();
    let rows_affected = gate.caller(conn, None, || {
        let mut stmt = crate::gate::prepare(conn, &s.sql)?;
        if stmt.column_count() > 0 {
            return Err(Error::from_sqlite(
                rusqlite::Error::ExecuteReturnedResults,
                &s.sql,
            ));
        }
        stmt.execute(rusqlite::params_from_iter(&s.params))
            .map_err(|e| crate::gate::run_error(conn, &s.sql, e))
    })?;
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

fn rollback_quietly(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "rollback failed");
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into())
}
