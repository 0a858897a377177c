//! The connection thread: group commit over the jobs the handles and the
//! actor send, and the connection's life (open, closed for a restore,
//! opened again).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BlockingRetryable;
use ractor::RpcReplyPort;
use rusqlite::Connection;

use super::apply::{
    apply_batch, panic_text, replay_batch, rollback_quietly, BeforeCommit, Logging, OpTrace,
};
use super::checkpoint::{Checkpointer, Wal};
use super::complete::{Answer, Completion, Finished, LogRow, Stage, WriteReply};
use super::op_log::OpLog;
use super::{ConnectionJob, WriterConfig, WriterStats};
use crate::audit::{OpKind, WriteContext};
use crate::connection::{open_read_write, DbOptions, Synchronous};
use crate::error::{Error, ErrorClass, Result};
use crate::gate::{Bounds, Gate};
use crate::journal::op_log::LoggedOp;
use crate::maintenance::{self, Maintenance, MaintenanceRun};
use crate::value::{Operation, OperationOutcome};

pub(super) enum Job {
    Write(Operation, Option<Box<WriteContext>>, WriteReply),
    /// Independent operations committed together, one outcome each.
    WriteMany(Vec<Operation>, RpcReplyPort<Vec<Result<OperationOutcome>>>),
    /// The health check's write probe.
    Probe(RpcReplyPort<Result<()>>),
    /// Logged operations re-applied by a recovery, not logged again.
    Replay(Vec<LoggedOp>, RpcReplyPort<Result<()>>),
    Maintain(Maintenance, RpcReplyPort<Result<MaintenanceRun>>),
    /// resilite's own work on the connection (a migration, a schema fix),
    /// between two transactions, outside the statement gate.
    Call(ConnectionJob),
    Barrier(RpcReplyPort<()>),
    Close(RpcReplyPort<Result<()>>),
    Open(RpcReplyPort<Result<()>>),
}

#[derive(Default)]
pub(super) struct Counters {
    commits: AtomicU64,
    committed: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> WriterStats {
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

/// The open connection and its statement gate.
struct Db {
    /// Its WAL's checkpoints (in WAL mode); declared first, so that its
    /// connection closes before `conn`, the file's last.
    checkpoints: Option<Checkpointer>,
    conn: Connection,
    /// What callers' statements may do on `conn`.
    gate: Gate,
}

pub(super) struct ConnectionLoop {
    /// `None` while closed for a restore.
    db: Option<Db>,
    /// The operation log, when on; opened with the database.
    op_log: Option<OpLog>,
    /// Where finished batches are appended to the journal and answered;
    /// started with the first open.
    stage: Option<Stage>,
    /// The operation audit is on: operations are traced.
    auditing: bool,
    rx: flume::Receiver<Job>,
    config: WriterConfig,
    counters: Arc<Counters>,
    /// The last batch gave up on a transient failure (the file locked
    /// elsewhere past the busy wait and the retries): the next one does
    /// not wait SQLite's busy wait at all, so the writes that queued
    /// behind it are answered within the retries' delays, until a batch
    /// or the write probe (which keeps its busy wait) gets through.
    found_locked: bool,
    /// The last commit was quicker than [`POLL_BEFORE_SLEEP`]: poll for
    /// the next job before sleeping.
    poll: bool,
    metrics: WriterMetrics,
}

/// The writer's metrics, looked up in the recorder once rather than on
/// every commit (a lookup hashes the name and labels).
struct WriterMetrics {
    committed: metrics::Counter,
    failed: metrics::Counter,
    batch_size: metrics::Histogram,
    commit_duration: metrics::Histogram,
    queue_depth: metrics::Gauge,
}

impl WriterMetrics {
    fn new(name: &'static str) -> Self {
        WriterMetrics {
            committed: metrics::counter!("resilite_writes_total", "writer" => name, "outcome" => "committed"),
            failed: metrics::counter!("resilite_writes_total", "writer" => name, "outcome" => "failed"),
            batch_size: metrics::histogram!("resilite_commit_batch_size", "writer" => name),
            commit_duration: metrics::histogram!("resilite_commit_duration_seconds", "writer" => name),
            queue_depth: metrics::gauge!("resilite_writer_queue_depth", "writer" => name),
        }
    }
}

/// The journal the completion stage appends to, if any. With the
/// operation log on, at the database's own `synchronous`: a log that a
/// power loss could cut short would fail the recovery it exists for. With
/// the audit alone, at NORMAL at most: its commits then wait for no fsync
/// (the WAL is synced at checkpoints), so the audit costs the writes no
/// disk flush of its own; a power loss (not a crash of the process) can
/// lose its last records, never the writes.
fn completion_journal(config: &WriterConfig) -> Option<DbOptions> {
    if let Some(journal) = &config.op_log {
        return Some(journal.clone());
    }
    let mut journal = config.audit.as_ref()?.journal.clone();
    if matches!(journal.synchronous, Synchronous::Full | Synchronous::Extra) {
        journal.synchronous = Synchronous::Normal;
    }
    Some(journal)
}

/// Whether the operation log's rows are written beside the database's
/// commit rather than after it: when both commits wait for the disk
/// (`synchronous` FULL or EXTRA), so that the two fsyncs overlap. At
/// NORMAL neither waits for one, and the hand-off would cost more than it
/// saves (see `writer::complete`).
fn log_ahead(config: &WriterConfig) -> bool {
    config
        .op_log
        .as_ref()
        .is_some_and(|j| matches!(j.synchronous, Synchronous::Full | Synchronous::Extra))
}

/// How long the connection thread polls for its next job before it
/// sleeps, after a commit quicker than this. Waking a sleeping thread
/// costs tens of µs (more on a VM): as much as a whole group commit at
/// `synchronous = NORMAL`, where an answered caller sends its next write
/// within about that time and then finds the thread polling (its send
/// wakes no one). A commit that waited for the disk makes the wake-up a
/// small share of its cycle, and there polling only moved threads between
/// cores (measured: three times the migrations, 5-9% fewer writes/s at
/// FULL with one caller), so the thread sleeps at once.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(50);

type Pending = (Operation, Option<Box<WriteContext>>, WriteReply);

impl ConnectionLoop {
    pub(super) fn new(
        rx: flume::Receiver<Job>,
        config: WriterConfig,
        counters: Arc<Counters>,
    ) -> Self {
        ConnectionLoop {
            db: None,
            op_log: None,
            stage: None,
            auditing: config.audit.is_some(),
            rx,
            metrics: WriterMetrics::new(config.name),
            config,
            counters,
            found_locked: false,
            poll: true,
        }
    }

    /// Open the connection (pragmas, init hook, statement gate) unless it
    /// is open.
    pub(super) fn open(&mut self) -> Result<()> {
        if self.db.is_some() {
            return Ok(());
        }
        let config = &self.config;
        let bounds = Bounds {
            timeout: config.statement_timeout,
            timeout_key: "writer.statement_timeout",
            max_value_bytes: config.max_value_bytes,
        };
        let conn = open_read_write(&config.db)?;
        if let Some(init) = config.init {
            init(&conn)?;
        }
        let gate = Gate::install(&conn, bounds)?;
        match (&mut self.op_log, &config.op_log) {
            (Some(log), _) => log.resync(&conn)?,
            (None, Some(journal)) => self.op_log = Some(OpLog::open(journal, &conn)?),
            (None, None) => {}
        }
        if self.stage.is_none() {
            let completion = Completion::open(
                completion_journal(config).as_ref(),
                config.audit.as_ref().map(|a| a.level),
            )?;
            self.stage = Some(Stage::start(completion, config.name, log_ahead(config))?);
        }
        gate.set_audit(self.auditing);
        let checkpoints = Checkpointer::start(&conn, &config.db, Wal::Database, config.name)?;
        self.db = Some(Db {
            checkpoints,
            conn,
            gate,
        });
        Ok(())
    }

    /// The open connection, or why there is none.
    fn db(&self) -> Result<&Db> {
        self.db.as_ref().ok_or_else(|| {
            Error::unavailable(format!(
                "{} is closed while its file is replaced (a restore); nothing was applied, send it again once it reopens",
                self.config.db.path.display()
            ))
        })
    }

    pub(super) fn run(mut self) {
        // How many writes the last batch held: the callers we expect back
        // while the next batch is being collected.
        let mut expected = 1;
        let mut next: Option<Job> = None;
        loop {
            let Some(job) = next.take().or_else(|| self.next_job(None)) else {
                break; // every sender dropped: the actor is gone
            };
            if !matches!(job, Job::Write(..) | Job::WriteMany(..)) {
                // Everything before a control job is answered first (see
                // `writer::complete`).
                self.stage().flush();
            }
            match job {
                Job::Write(op, context, reply) => {
                    let mut batch = Vec::with_capacity(expected.min(self.config.max_batch));
                    batch.push((op, context, reply));
                    let (batch, control) = self.collect(batch, expected);
                    expected = batch.len();
                    next = control;
                    self.commit(batch);
                }
                Job::WriteMany(ops, reply) => self.apply(ops, Vec::new(), Answer::All(reply)),
                Job::Maintain(task, reply) => {
                    let _ = reply.send(self.maintain(task));
                }
                Job::Probe(reply) => {
                    let _ = reply.send(self.probe());
                }
                Job::Call(job) => self.call(job),
                Job::Replay(ops, reply) => self.replay(ops, reply),
                Job::Barrier(reply) => {
                    let _ = reply.send(());
                }
                Job::Close(reply) => {
                    // Dropping the connection closes the file (SQLite
                    // checkpoints the WAL when its last connection closes).
                    self.db = None;
                    tracing::info!(path = %self.config.db.path.display(), "writer connection closed for a restore");
                    let _ = reply.send(Ok(()));
                }
                Job::Open(reply) => {
                    let _ = reply.send(self.open());
                }
            }
        }
        if let Some(stage) = self.stage.take() {
            stage.close();
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
                    match self.next_job(Some(deadline)) {
                        Some(job) => job,
                        None => break,
                    }
                }
                Err(_) => break,
            };
            match job {
                Job::Write(op, context, reply) => batch.push((op, context, reply)),
                control => return (batch, Some(control)),
            }
        }
        (batch, None)
    }

    /// The next job, or `None` at `deadline` or once every sender is
    /// gone. Polled first when the last commit was quick (see
    /// [`POLL_BEFORE_SLEEP`]), yielding the core between polls so that a
    /// caller's thread woken onto this core runs.
    fn next_job(&self, deadline: Option<Instant>) -> Option<Job> {
        if self.poll {
            let poll_until = Instant::now() + POLL_BEFORE_SLEEP;
            loop {
                match self.rx.try_recv() {
                    Ok(job) => return Some(job),
                    Err(flume::TryRecvError::Disconnected) => return None,
                    Err(flume::TryRecvError::Empty) => {}
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                if now >= poll_until {
                    break;
                }
                std::thread::yield_now();
            }
        }
        match deadline {
            Some(deadline) => self.rx.recv_deadline(deadline).ok(),
            None => self.rx.recv().ok(),
        }
    }

    /// The completion stage (started with the first open, before `run`).
    fn stage(&self) -> &Stage {
        self.stage
            .as_ref()
            .expect("the completion stage starts with the connection")
    }

    /// Hand `finished` to the completion stage, telling it whether more
    /// work is waiting here.
    fn complete(&self, finished: Finished) {
        let idle = self.rx.is_empty();
        self.stage().send(finished, idle);
        if let Some(Db {
            checkpoints: Some(checkpoints),
            conn,
            ..
        }) = &self.db
        {
            checkpoints.after_commit(conn);
        }
    }

    /// Commit a batch and answer every caller. A write whose caller went
    /// away before it started is not applied.
    fn commit(&mut self, batch: Vec<Pending>) {
        let mut ops = Vec::with_capacity(batch.len());
        let mut contexts = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        for (op, context, reply) in batch {
            if reply.is_closed() {
                continue;
            }
            ops.push(op);
            if self.auditing {
                contexts.push(context);
            }
            replies.push(reply);
        }
        if ops.is_empty() {
            return;
        }
        self.apply(ops, contexts, Answer::Each(replies));
    }

    /// Commit `ops` in one transaction (retrying transient failures in
    /// place), number the committed ones for the operation log (when it
    /// is on), and hand the batch to the completion stage, which appends
    /// it to the journal and then answers `answer`.
    fn apply(
        &mut self,
        ops: Vec<Operation>,
        contexts: Vec<Option<Box<WriteContext>>>,
        answer: Answer,
    ) {
        let logged_up_to = self.op_log.as_ref().map(OpLog::last);
        let sent_ahead = Cell::new(None);
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => {
                let results = vec![Err(e); ops.len()];
                let mut finished = Finished::new(ops, results, answer);
                finished.contexts = contexts;
                self.complete(finished);
                return;
            }
        };
        let mut traces = match self.auditing {
            true => vec![OpTrace::default(); ops.len()],
            false => Vec::new(),
        };
        let started = Instant::now();
        let attempts = AtomicU64::new(0);
        // The retries' own delays stand in for SQLite's busy wait: one
        // stuck batch holds the writer (and every caller behind it) for one
        // busy wait plus the delays, and the next ones for the delays.
        let no_wait_from = if self.found_locked { 0 } else { 1 };
        let stage = self.stage();
        let send_ahead = |first: i64, committed: &[&Operation]| -> Result<()> {
            if stage.ahead(LogRow::new(first, committed, true)?) {
                sent_ahead.set(Some(first));
            }
            Ok(())
        };
        let logging = logged_up_to.map(|up_to| Logging {
            up_to,
            before_commit: stage.sends_ahead().then_some(&send_ahead as &BeforeCommit),
        });
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (|| {
                if attempts.fetch_add(1, Ordering::Relaxed) == no_wait_from {
                    let _ = db.conn.busy_timeout(std::time::Duration::ZERO);
                }
                apply_batch(&db.conn, &db.gate, &ops, logging.as_ref(), &mut traces)
            })
            .retry(self.config.retry.backoff())
            .sleep(std::thread::sleep)
            .when(Error::is_transient)
            .notify(|e, delay| {
                tracing::warn!(class = ?e.class, detail = %e.detail, ?delay, "transient write failure; retrying batch");
            })
            .call()
        }));
        if attempts.load(Ordering::Relaxed) > no_wait_from {
            let _ = db.conn.busy_timeout(self.config.db.busy_timeout);
        }
        let gave_up = matches!(&outcome, Ok(Err(e)) if e.is_transient());
        let whole_failed = !matches!(&outcome, Ok(Ok(_)));
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
                rollback_quietly(&db.conn);
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
        let m = &self.metrics;
        m.committed.increment(committed);
        m.failed.increment(failed);
        m.batch_size.record(ops.len() as f64);
        let took = started.elapsed();
        self.poll = took < POLL_BEFORE_SLEEP;
        m.commit_duration.record(took.as_secs_f64());
        m.queue_depth.set(self.rx.len() as f64);
        self.found_locked = gave_up;
        let mut finished = Finished::new(ops, results, answer);
        finished.contexts = contexts;
        finished.traces = traces;
        finished.whole_failed = whole_failed;
        finished.ahead = sent_ahead.get();
        if let Some(log) = self.op_log.as_mut() {
            finished.logged_from = log.number(committed as usize);
            finished.gaps = log.take_gaps();
        }
        self.complete(finished);
    }

    /// Re-apply logged operations in one transaction (see
    /// [`replay_batch`]), retrying transient failures in place; answered
    /// through the completion stage (the audit records it).
    fn replay(&mut self, ops: Vec<LoggedOp>, reply: RpcReplyPort<Result<()>>) {
        let mut traces = match self.auditing {
            true => vec![OpTrace::default(); ops.len()],
            false => Vec::new(),
        };
        let replayed = self.db().and_then(|db| {
            catch_unwind(AssertUnwindSafe(|| {
                (|| replay_batch(&db.conn, &db.gate, &ops, &mut traces))
                    .retry(self.config.retry.backoff())
                    .sleep(std::thread::sleep)
                    .when(Error::is_transient)
                    .call()
            }))
            .unwrap_or_else(|panic| {
                rollback_quietly(&db.conn);
                Err(Error::classed(ErrorClass::Internal, panic_text(&panic)))
            })
        });
        let results = match &replayed {
            Ok(()) => vec![Ok(Vec::new()); ops.len()],
            Err(e) => vec![Err(e.clone()); ops.len()],
        };
        let whole_failed = replayed.is_err();
        let ops = ops.into_iter().map(|logged| logged.op).collect();
        let mut finished = Finished::new(ops, results, Answer::Replay(reply, replayed));
        finished.traces = traces;
        finished.whole_failed = whole_failed;
        finished.kind = Some(OpKind::Replay);
        self.complete(finished);
    }

    /// resilite's own write probe, between two transactions: one that
    /// rewrites the header's `user_version` with the value it holds. A real
    /// write to the file, so it fails as the callers' writes would
    /// (read-only or immutable file, full disk, lock held elsewhere), and
    /// the application sees no change; then the kernel is asked whether
    /// the file may be written. Tried once: it measures.
    fn probe(&self) -> Result<()> {
        let conn = &self.db()?.conn;
        let write = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            conn.execute_batch(&format!("PRAGMA user_version = {version}; COMMIT"))
        };
        let path = &self.config.db.path;
        write().map_err(|e| {
            rollback_quietly(conn);
            Error::from(e).during("write probe", path)
        })?;
        // The open connection keeps writing the WAL after its file was made
        // read-only or immutable: SQLite finds out only at the next
        // checkpoint, or when it opens the file again after a restart.
        // access(2) asks the kernel now. Never open and close the file
        // here: closing any descriptor of it drops every POSIX lock this
        // process holds on it, SQLite's included, and another process's
        // last connection would then delete the WAL from under this one.
        nix::unistd::access(path.as_path(), nix::unistd::AccessFlags::W_OK).map_err(|errno| {
            let mut err = Error::from(std::io::Error::from(errno)).during("write probe", path);
            err.detail = format!("{} is not writable: {}", path.display(), err.detail);
            err
        })
    }

    /// Run resilite's own `job` on the connection, between two transactions.
    /// A panic in `job` drops its reply (its caller hears the thread ended
    /// without answering) and rolls back whatever it left open.
    /// Then, with the operation log on, a position the job moved past the
    /// log (a migration's barrier) is recorded as a gap.
    fn call(&mut self, job: ConnectionJob) {
        let db = self.db();
        if catch_unwind(AssertUnwindSafe(|| job(db.map(|db| &db.conn)))).is_err() {
            if let Ok(db) = self.db() {
                rollback_quietly(&db.conn);
            }
            tracing::error!(
                writer = self.config.name,
                "a connection job panicked; its transaction was rolled back"
            );
        }
        if let (Some(log), Some(db)) = (self.op_log.as_mut(), self.db.as_ref()) {
            log.after_own_work(&db.conn);
            let gaps = log.take_gaps();
            if !gaps.is_empty() {
                let mut finished = Finished::new(Vec::new(), Vec::new(), Answer::Nobody);
                finished.gaps = gaps;
                self.complete(finished);
            }
        }
    }

    /// Run a maintenance task between two transactions.
    fn maintain(&self, task: Maintenance) -> Result<MaintenanceRun> {
        let run = self
            .db()
            .and_then(|db| maintenance::run(&db.conn, &self.config.db.path, task));
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
