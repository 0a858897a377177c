//! The runtime handle: what an application holds. Cloneable, `Send + Sync`,
//! usable from any tokio runtime. Writes go to the supervised WriterActor,
//! reads to the read pool, health questions to the HealthActor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ractor::{Actor, ActorRef};
use resilite_actors::circuit_breaker::{
    self, Breaker, BreakerArgs, BreakerConfig, BreakerHandle, BreakerMsg, BreakerSnapshot,
    BreakerState, Transition,
};
use resilite_actors::connection::read_blocking;
use resilite_actors::health::{HealthArgs, HealthEvent, HealthMsg, HealthReport};
use resilite_actors::journal::{self, RestartRecord};
use resilite_actors::maintenance::now_ms;
use resilite_actors::retry_queue::{
    self, EnqueueOptions, Entry, Handler, Handlers, InFlight, QueueStats, Resolution, RetryArgs,
    RetryMsg, SqlGate, SQL_KIND,
};
use resilite_actors::slot::{self, ActorStatus, Slot, WriterSlot};
use resilite_actors::{
    Error, ErrorClass, Maintenance, MaintenanceRun, Operation, OperationOutcome, QueryResult,
    ReadPool, ReadPoolConfig, Result, Statement, WriteOutcome, WriterMsg, WriterStats,
};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::config::{Config, DATABASE_BREAKER};
use crate::supervisor::{spawn_error, RootSupervisor, SupervisorArgs, SupervisorMsg};

/// Largest value the journal writer takes: SQLite's own default length limit.
const JOURNAL_MAX_VALUE_BYTES: usize = 1_000_000_000;

/// Health events buffered for a slow subscriber before it misses some.
const EVENT_BUFFER: usize = 64;

/// A running resilite runtime. Clone it freely; all clones share the actors.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    app: watch::Receiver<WriterSlot>,
    journal: watch::Receiver<WriterSlot>,
    health: watch::Receiver<Slot<ActorRef<HealthMsg>>>,
    retry: watch::Receiver<Slot<ActorRef<RetryMsg>>>,
    handlers: Handlers,
    /// Queue entries being replayed now.
    in_flight: InFlight,
    breakers: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
    /// The writer's `database` breaker. A plain lock, not an actor: it is
    /// consulted on every write.
    database: Arc<Mutex<Breaker>>,
    /// Mirrors `Breaker::is_quiet` of `database`, read without its lock.
    database_quiet: AtomicBool,
    /// Fast successes while quiet: counted here, outside the breaker's lock.
    database_quiet_calls: AtomicU64,
    /// `slow_call` of the database breaker.
    slow_write: std::time::Duration,
    roster: watch::Receiver<Vec<ActorStatus>>,
    latest: watch::Receiver<Option<Arc<HealthReport>>>,
    events: broadcast::Sender<HealthEvent>,
    readers: ReadPool,
    supervisor: ActorRef<SupervisorMsg>,
    closing: AtomicBool,
}

/// A write let through by the `database` breaker; its outcome is recorded
/// when it finishes, or the permit is released if the caller gave up.
struct DatabasePermit<'a> {
    rt: &'a Runtime,
    finished: bool,
}

impl DatabasePermit<'_> {
    fn finish(mut self, success: bool, duration: std::time::Duration) {
        self.finished = true;
        self.rt.record_database_outcome(success, duration);
    }
}

impl Drop for DatabasePermit<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.rt.lock_database_breaker().release();
        }
    }
}

/// What became of a durable write.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Durable {
    /// Committed now.
    Applied {
        /// One outcome per statement.
        results: OperationOutcome,
    },
    /// Stored in the retry queue (committed to the journal); replayed later.
    Queued {
        /// The queue entry's id.
        id: i64,
    },
}

/// The runtime's overall state, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Status {
    /// Every actor is running.
    Healthy,
    /// An actor is being restarted.
    Restarting,
    /// An actor failed past its restart limit: writes are refused.
    Failed(String),
    /// Shut down.
    Stopped,
}

impl Runtime {
    /// Validate `config`, open (and create) the database and journal, start
    /// the supervised actors and the read pool. A path that cannot work (a
    /// directory, under a file, read-only), a file that is not a database,
    /// a damaged or newer journal, or a journal that is the database itself
    /// is refused with an error naming the path and the problem, and the
    /// files this start created are removed.
    pub async fn start(config: Config) -> Result<Runtime> {
        config
            .validate()
            .map_err(|e| Error::bad_input(e.to_string()))?;
        // The files: the journal is its own file, the database opens and is
        // a database, then the journal; nothing is left behind on failure.
        crate::startup::check(&config).await?;
        crate::metrics::install();
        let (app_slot, app) = watch::channel(Slot::Restarting);
        let (journal_slot, journal) = watch::channel(Slot::Restarting);
        let (health_slot, health) = watch::channel(Slot::Restarting);
        let (retry_slot, retry) = watch::channel(Slot::Restarting);
        let (breakers_slot, breakers) = watch::channel(Slot::Restarting);
        let handlers = Handlers::default();
        let in_flight = InFlight::default();
        let (roster_tx, roster) = watch::channel(Vec::new());
        let (latest_tx, latest) = watch::channel(None);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let mut journal_writer = config.writer_config(config.journal_db());
        journal_writer.init = Some(journal::migrate);
        journal_writer.name = "journal-writer";
        // The journal keeps whole operations as JSON (a blob as base64), so
        // its values may be larger than any one value of the database.
        journal_writer.max_value_bytes = JOURNAL_MAX_VALUE_BYTES;
        // The database breaker continues from its journaled state.
        let restored = read_blocking(&config.journal_db(), circuit_breaker::load)
            .await
            .unwrap_or_default();
        let database = match restored
            .iter()
            .find(|s| s.name.as_deref() == Some(DATABASE_BREAKER))
        {
            Some(snapshot) => Breaker::restore(config.database_breaker(), snapshot),
            None => Breaker::named(DATABASE_BREAKER, config.database_breaker()),
        };
        let database = Arc::new(Mutex::new(database));
        let gate = database.clone();
        // Replays wait while the breaker is open, and resume once its open
        // period is over (the next write moves it to half-open).
        let sql_gate: SqlGate = Arc::new(move || {
            let breaker = gate.lock().unwrap_or_else(|p| p.into_inner()).snapshot();
            breaker.state != BreakerState::Open
                || breaker.open_until_ms.is_some_and(|t| t <= now_ms())
        });
        let args = SupervisorArgs {
            policy: config.supervisor.clone(),
            journal: journal_writer,
            app: config.writer_config(config.app_db()),
            health: HealthArgs {
                db: config.app_db(),
                config: config.health.clone(),
                app: app.clone(),
                journal: journal.clone(),
                journal_db: config.journal_db(),
                roster: roster.clone(),
                latest: Arc::new(latest_tx),
                events: events.clone(),
                in_flight: in_flight.clone(),
            },
            retry: RetryArgs {
                config: config.retry.clone(),
                journal_db: config.journal_db(),
                journal: journal.clone(),
                app: app.clone(),
                handlers: handlers.clone(),
                in_flight: in_flight.clone(),
                sql_gate,
            },
            breakers: BreakerArgs {
                configs: config
                    .breakers
                    .iter()
                    .filter(|(name, _)| name.as_str() != DATABASE_BREAKER)
                    .map(|(name, c)| (name.clone(), c.clone()))
                    .collect(),
                default: BreakerConfig::default(),
                journal: journal.clone(),
                restored: Vec::new(),
            },
            journal_db: config.journal_db(),
            journal_slot,
            app_slot,
            health_slot,
            retry_slot,
            breakers_slot,
            roster: roster_tx,
        };
        let (supervisor, _) = RootSupervisor::spawn(None, RootSupervisor, args)
            .await
            .map_err(spawn_error)?;
        let readers = ReadPool::start(ReadPoolConfig {
            db: config.app_db(),
            pool_size: config.readers.pool_size,
            max_rows: config.readers.max_rows,
            max_response_bytes: config.readers.max_response_bytes,
            query_timeout: config.readers.query_timeout,
        });
        let readers = match readers {
            Ok(r) => r,
            Err(e) => {
                supervisor.stop(Some("read pool failed to start".into()));
                return Err(e);
            }
        };
        tracing::info!(
            db = %config.database.path.display(),
            journal = %config.journal_path().display(),
            "resilite runtime started"
        );
        let slow_write = config.database_breaker().slow_call;
        Ok(Runtime {
            inner: Arc::new(Inner {
                config,
                app,
                journal,
                health,
                retry,
                handlers,
                in_flight,
                breakers,
                database,
                database_quiet: AtomicBool::new(false),
                database_quiet_calls: AtomicU64::new(0),
                slow_write,
                roster,
                latest,
                events,
                readers,
                supervisor,
                closing: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration the runtime was started with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Apply one statement; returns after it is committed (durable under
    /// the configured `synchronous` level).
    pub async fn execute(&self, stmt: Statement) -> Result<WriteOutcome> {
        let mut outcome = self.write(Operation::Statement(stmt)).await?;
        outcome
            .pop()
            .ok_or_else(|| Error::classed(ErrorClass::Internal, "writer returned no outcome"))
    }

    /// Apply several statements atomically: all are committed, or none.
    pub async fn batch(&self, stmts: Vec<Statement>) -> Result<Vec<WriteOutcome>> {
        self.write(Operation::Batch(stmts)).await
    }

    /// Apply an operation through the writer, answered after COMMIT.
    ///
    /// If the writer's connection thread is gone before taking the
    /// operation (it was never applied), it is sent to the restarted writer.
    pub async fn write(&self, op: Operation) -> Result<OperationOutcome> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::unavailable("resilite is shutting down"));
        }
        // While the breaker is quiet, a fast success changes nothing in it:
        // only failures and slow calls take its lock.
        let quiet = self.inner.database_quiet.load(Ordering::Relaxed);
        let permit = if quiet {
            None
        } else {
            Some(self.database_permit()?)
        };
        let started = Instant::now();
        let result = slot::write(&self.inner.app, op).await;
        let elapsed = started.elapsed();
        if crate::metrics::sampled() {
            metrics::histogram!("resilite_write_duration_seconds").record(elapsed.as_secs_f64());
        }
        // Failures of the database itself count; a constraint or SQL error
        // means the database worked.
        let failed = matches!(&result, Err(e) if e.class.is_retryable_later() || e.class == ErrorClass::Corruption);
        match permit {
            Some(permit) => permit.finish(!failed, elapsed),
            None if failed || elapsed >= self.inner.slow_write => {
                self.record_database_outcome(!failed, elapsed)
            }
            None => {
                self.inner
                    .database_quiet_calls
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Record a write's outcome in the `database` breaker, refresh the quiet
    /// flag under its lock, and announce any transition.
    fn record_database_outcome(&self, success: bool, duration: std::time::Duration) {
        let transition = {
            let mut breaker = self.lock_database_breaker();
            let transition = breaker.record(now_ms(), success, duration);
            self.inner
                .database_quiet
                .store(breaker.is_quiet(), Ordering::Relaxed);
            transition
        };
        self.announce(transition);
    }

    /// Ask the `database` breaker to let a write through.
    fn database_permit(&self) -> Result<DatabasePermit<'_>> {
        let now = now_ms();
        let (transition, acquired) = {
            let mut breaker = self.lock_database_breaker();
            let transition = breaker.advance(now);
            (transition, breaker.try_acquire(now))
        };
        self.announce(transition);
        acquired?;
        Ok(DatabasePermit {
            rt: self,
            finished: false,
        })
    }

    fn lock_database_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker holds no invariant a panic elsewhere could break.
        self.inner
            .database
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Log, measure and journal a transition of the `database` breaker.
    fn announce(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        let snapshot = self.database_breaker();
        if t.to == BreakerState::Open {
            tracing::warn!(breaker = DATABASE_BREAKER, reason = %t.reason, "circuit breaker opened: writes fail fast, durable writes are queued");
        } else {
            tracing::info!(breaker = DATABASE_BREAKER, to = %t.to, reason = %t.reason, "circuit breaker changed state");
        }
        metrics::gauge!("resilite_breaker_state", "breaker" => DATABASE_BREAKER).set(t.to.gauge());
        metrics::counter!("resilite_breaker_transitions_total", "breaker" => DATABASE_BREAKER, "to" => t.to.as_str()).increment(1);
        let record = Operation::Batch(vec![
            circuit_breaker::state_statement(DATABASE_BREAKER, &snapshot, t.at_ms),
            circuit_breaker::transition_statement(DATABASE_BREAKER, &t),
        ]);
        let journal = self.inner.journal.clone();
        tokio::spawn(async move {
            if let Err(e) = slot::write(&journal, record).await {
                tracing::warn!(detail = %e.detail, "could not record a circuit breaker transition");
            }
        });
    }

    /// The writer's `database` breaker.
    pub fn database_breaker(&self) -> BreakerSnapshot {
        let mut snapshot = self.lock_database_breaker().snapshot();
        snapshot.calls += self.inner.database_quiet_calls.load(Ordering::Relaxed);
        snapshot
    }

    /// Open the `database` breaker until [`resume_writes`](Self::resume_writes):
    /// writes fail fast with `unavailable`, durable writes are queued, reads
    /// go on (e.g. while a restore runs).
    pub fn pause_writes(&self, reason: &str) {
        let transition = {
            let mut breaker = self.lock_database_breaker();
            let transition = breaker.force_open(now_ms(), reason);
            // Under the lock, as every other store of the flag.
            self.inner.database_quiet.store(false, Ordering::Relaxed);
            transition
        };
        self.announce(transition);
    }

    /// Close the `database` breaker; queued writes are replayed.
    pub fn resume_writes(&self) {
        let transition = self.lock_database_breaker().reset(now_ms());
        self.announce(transition);
        self.wake_queue();
    }

    /// The named circuit breaker `name`, to wrap calls to a dependency:
    /// `rt.breaker("smtp")?.call(send(mail)).await`. Configured in
    /// `[breakers.<name>]`; other names get the defaults. `database` is the
    /// writer's own breaker: see [`database_breaker`](Self::database_breaker).
    pub fn breaker(&self, name: &str) -> Result<BreakerHandle> {
        if name == DATABASE_BREAKER {
            return Err(Error::bad_input(
                "`database` is the writer's built-in breaker: use database_breaker(), pause_writes() and resume_writes()",
            ));
        }
        Ok(BreakerHandle::new(name, self.inner.breakers.clone()))
    }

    /// Every circuit breaker's state, `database` first.
    pub async fn breakers(&self) -> Result<Vec<BreakerSnapshot>> {
        let actor = slot::running(&mut self.inner.breakers.clone()).await?;
        let named = ractor::call!(actor, BreakerMsg::Snapshot).map_err(|e| {
            Error::unavailable(format!("the circuit breaker actor did not answer: {e}"))
        })?;
        let mut all = vec![self.database_breaker()];
        all.extend(named);
        Ok(all)
    }

    /// Apply `op` now if the database takes it; if it fails in a way that
    /// may pass (transient, unavailable, permission), store it in the
    /// durable retry queue and answer `Queued` once that is committed. Other
    /// errors (constraint, SQL, bad input) are returned as they are.
    pub async fn execute_durable(&self, op: Operation, options: EnqueueOptions) -> Result<Durable> {
        options.validate()?;
        match self.write(op.clone()).await {
            Ok(results) => Ok(Durable::Applied { results }),
            Err(e) if e.class.is_retryable_later() => {
                let id = self.queue_operation(&op, &options, Some(&e)).await?;
                tracing::info!(id, class = e.class.as_str(), "write queued for replay");
                Ok(Durable::Queued { id })
            }
            Err(e) => Err(e),
        }
    }

    /// Store `op` in the durable retry queue without trying it first (e.g.
    /// while the application knows the database is unavailable); returns
    /// the queue id once the entry is committed to the journal.
    pub async fn enqueue_operation(&self, op: Operation, options: EnqueueOptions) -> Result<i64> {
        self.queue_operation(&op, &options, None).await
    }

    async fn queue_operation(
        &self,
        op: &Operation,
        options: &EnqueueOptions,
        cause: Option<&Error>,
    ) -> Result<i64> {
        let payload = serde_json::to_string(op)
            .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?;
        self.enqueue_payload(SQL_KIND, payload, options, cause)
            .await
    }

    /// Queue an application payload for the handler registered for `kind`
    /// (at-least-once delivery, with the queue's backoff and DLQ).
    pub async fn enqueue(
        &self,
        kind: &str,
        payload: serde_json::Value,
        options: EnqueueOptions,
    ) -> Result<i64> {
        if kind == SQL_KIND {
            return Err(Error::bad_input(
                "payload kind `sql` is reserved: use execute_durable for SQL",
            ));
        }
        self.enqueue_payload(kind, payload.to_string(), &options, None)
            .await
    }

    async fn enqueue_payload(
        &self,
        kind: &str,
        payload: String,
        options: &EnqueueOptions,
        cause: Option<&Error>,
    ) -> Result<i64> {
        let stmt = retry_queue::enqueue_statement(
            kind,
            payload,
            options,
            &self.inner.config.retry,
            cause,
        )?;
        let outcome = slot::write(&self.inner.journal, Operation::Statement(stmt)).await?;
        metrics::counter!("resilite_retry_enqueued_total").increment(1);
        Ok(outcome.first().map_or(0, |o| o.last_insert_rowid))
    }

    /// Handle queued payloads of `kind` with `handler`. Its error's class
    /// decides: transient, unavailable and permission are retried with
    /// backoff, anything else goes to the dead-letter queue.
    pub fn register_handler(&self, kind: &str, handler: Handler) {
        if let Ok(mut handlers) = self.inner.handlers.write() {
            handlers.insert(kind.to_string(), handler);
        }
    }

    /// Counts of the retry queue by status.
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        let in_flight = self.inner.in_flight.clone();
        self.read_journal(move |c| in_flight.stats(c)).await
    }

    /// The dead-letter queue (with `all`, discarded entries too).
    pub async fn dead_letters(&self, all: bool) -> Result<Vec<Entry>> {
        self.read_journal(move |c| retry_queue::dead_letters(c, all))
            .await
    }

    /// One queue entry by id.
    pub async fn queue_entry(&self, id: i64) -> Result<Option<Entry>> {
        let entry = self
            .read_journal(move |c| retry_queue::entry_by_id(c, id))
            .await?;
        Ok(entry.map(|e| self.inner.in_flight.entry(e)))
    }

    /// Send dead entry `id` (or, with `None`, every unresolved dead entry)
    /// back to the queue, due now; returns how many were requeued.
    pub async fn requeue(&self, id: Option<i64>) -> Result<usize> {
        let ops = retry_queue::requeue_statements(id);
        let outcome = slot::write(&self.inner.journal, Operation::Batch(ops)).await?;
        let requeued = outcome.iter().map(|o| o.rows_affected).sum();
        self.wake_queue();
        Ok(requeued)
    }

    /// Discard dead entry `id` (kept in the journal, marked discarded);
    /// false when no such dead entry exists.
    pub async fn discard(&self, id: i64) -> Result<bool> {
        self.resolve(id, Resolution::Discarded).await
    }

    /// Mark dead entry `id` fixed by hand: not replayed, kept in the
    /// journal; false when no such dead entry exists.
    pub async fn mark_fixed(&self, id: i64) -> Result<bool> {
        self.resolve(id, Resolution::Fixed).await
    }

    /// Close dead entry `id` with `resolution`; false when no such dead
    /// entry exists.
    pub async fn resolve(&self, id: i64, resolution: Resolution) -> Result<bool> {
        let stmt = retry_queue::resolve_statement(id, resolution);
        let outcome = slot::write(&self.inner.journal, Operation::Statement(stmt)).await?;
        Ok(outcome.first().is_some_and(|o| o.rows_affected > 0))
    }

    fn wake_queue(&self) {
        if let Slot::Running(queue) = &*self.inner.retry.borrow() {
            let _ = queue.send_message(RetryMsg::Tick);
        }
    }

    async fn read_journal<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        read_blocking(&self.inner.config.journal_db(), f).await
    }

    /// Run a read-only statement on the read pool.
    pub async fn query(&self, stmt: Statement) -> Result<QueryResult> {
        let started = Instant::now();
        let result = self.inner.readers.query(stmt).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("resilite_reads_total", "outcome" => outcome).increment(1);
        if crate::metrics::sampled() {
            metrics::histogram!("resilite_read_duration_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        result
    }

    /// The application writer, for sending it messages directly (tests,
    /// fault injection).
    pub async fn writer(&self) -> Result<ActorRef<WriterMsg>> {
        slot::running(&mut self.inner.app.clone())
            .await
            .map(|w| w.actor)
    }

    /// The writer's counters since its last start.
    pub async fn writer_stats(&self) -> Result<WriterStats> {
        let writer = self.writer().await?;
        ractor::call!(writer, WriterMsg::Stats).map_err(|e| Error::unavailable(e.to_string()))
    }

    /// The overall state of the runtime.
    pub fn status(&self) -> Status {
        let mut status = Status::Healthy;
        for slot in [&self.inner.journal, &self.inner.app] {
            match &*slot.borrow() {
                Slot::Running(_) => {}
                Slot::Restarting => status = Status::Restarting,
                Slot::Failed(reason) => return Status::Failed(reason.clone()),
                Slot::Stopped => return Status::Stopped,
            }
        }
        status
    }

    /// The journal's restart log, oldest first.
    pub async fn restarts(&self) -> Result<Vec<RestartRecord>> {
        self.read_journal(journal::restarts).await
    }

    /// The latest health report; runs the checks first if none has
    /// finished since start.
    pub async fn health(&self) -> Result<HealthReport> {
        match self.latest_health() {
            Some(report) => Ok((*report).clone()),
            None => self.check_now().await,
        }
    }

    /// The latest health report, if a check has finished since start.
    pub fn latest_health(&self) -> Option<Arc<HealthReport>> {
        self.inner.latest.borrow().clone()
    }

    /// Run every health check now (the full integrity check included),
    /// record the result and return it.
    pub async fn check_now(&self) -> Result<HealthReport> {
        let health = slot::running(&mut self.inner.health.clone()).await?;
        ractor::call!(health, HealthMsg::CheckNow)
            .map_err(|e| Error::unavailable(format!("the health actor did not answer: {e}")))
    }

    /// Run a maintenance task (checkpoint, VACUUM, optimize) through the
    /// writer, between two transactions, and record it in the journal.
    pub async fn maintain(&self, task: Maintenance) -> Result<MaintenanceRun> {
        let health = slot::running(&mut self.inner.health.clone()).await?;
        ractor::call!(health, |reply| HealthMsg::Maintain { task, reply })
            .map_err(|e| Error::unavailable(format!("the health actor did not answer: {e}")))?
    }

    /// Health events (status changes, integrity failures) from now on.
    pub fn health_events(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// The supervised actors: state, restarts since start, last failure.
    pub fn actors(&self) -> Vec<ActorStatus> {
        self.inner.roster.borrow().clone()
    }

    /// Whether the runtime takes writes: the writers run, the journal is
    /// migrated, and it is not shutting down. `Err` says what is missing.
    pub fn ready(&self) -> std::result::Result<(), String> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err("resilite is shutting down".into());
        }
        let database = self.database_breaker();
        if database.state == BreakerState::Open {
            return Err(format!(
                "the database circuit breaker is open ({} trip(s)): writes fail fast until it closes",
                database.trips
            ));
        }
        // The last write probe could not write the file (read-only,
        // immutable): no write will, until someone fixes it. A lock held
        // elsewhere passes: the database breaker answers for that.
        if let Some(report) = self.latest_health() {
            if report.recommends("fix_permissions") {
                return Err(report.rule.clone());
            }
        }
        match self.status() {
            Status::Healthy => Ok(()),
            Status::Restarting => Err("a writer is restarting".into()),
            Status::Failed(reason) => Err(reason),
            Status::Stopped => Err("resilite is shut down".into()),
        }
    }

    /// Stop taking writes, commit every write already taken, checkpoint the
    /// WAL into the database file and stop the actors.
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = ractor::call!(self.inner.supervisor, SupervisorMsg::Shutdown)
            .map_err(|e| Error::unavailable(format!("supervisor is not running: {e}")))?;
        tracing::info!("resilite runtime stopped");
        result
    }
}
