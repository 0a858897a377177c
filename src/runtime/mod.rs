//! The runtime handle: what an application holds. Cloneable, `Send + Sync`,
//! usable from any tokio runtime. Writes go to the supervised WriterActor,
//! reads to the read pool, health questions to the HealthActor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorRef};
use resilite_actors::breaker::{
    BreakerArgs, BreakerConfig, BreakerMsg, BreakerState, CircuitBreakerActor, DatabaseBreaker,
};
use resilite_actors::connection::{open_read_only, read_blocking};
use resilite_actors::health::{
    Action, HealthActor, HealthArgs, HealthEvent, HealthMsg, HealthReport,
};
use resilite_actors::journal::{self, RestartRecord};
use resilite_actors::retry_queue::{Handlers, RetryArgs, RetryMsg, RetryQueueActor, SqlGate};
use resilite_actors::slot::{self, ActorStatus, Slot, WriterSlot};
use resilite_actors::{Error, ReadPool, ReadPoolConfig, Result, WriterMsg, WriterStats};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::config::{Config, DATABASE_BREAKER};

mod breakers;
mod health;
mod queue;
mod ready;
mod writes;

use crate::supervisor::{
    spawn_error, ActorChild, RootSupervisor, SupervisorArgs, SupervisorMsg, WriterChild,
};
pub use queue::Durable;
pub use ready::NotReady;

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
    breakers: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
    /// The writer's `database` breaker. A lock, not an actor: it is
    /// consulted on every write.
    database: Arc<DatabaseBreaker>,
    roster: watch::Receiver<Vec<ActorStatus>>,
    latest: watch::Receiver<Option<Arc<HealthReport>>>,
    events: broadcast::Sender<HealthEvent>,
    readers: ReadPool,
    supervisor: ActorRef<SupervisorMsg>,
    closing: AtomicBool,
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
        let restored = read_blocking(&config.journal_db(), journal::breakers::load)
            .await
            .unwrap_or_default();
        let database = Arc::new(DatabaseBreaker::new(
            config.database_breaker(),
            &restored,
            journal.clone(),
        ));
        let gate = database.clone();
        let sql_gate: SqlGate = Arc::new(move || gate.lets_replays_through());
        let health_args = HealthArgs {
            db: config.app_db(),
            config: config.health.clone(),
            app: app.clone(),
            journal: journal.clone(),
            roster: roster.clone(),
            latest: Arc::new(latest_tx),
            events: events.clone(),
            retry: retry.clone(),
            database: database.clone(),
            breakers: breakers.clone(),
        };
        let retry_args = RetryArgs {
            config: config.retry.clone(),
            journal_db: config.journal_db(),
            journal: journal.clone(),
            app: app.clone(),
            handlers: handlers.clone(),
            sql_gate,
        };
        let breaker_args = BreakerArgs {
            configs: config
                .breakers
                .iter()
                .filter(|(name, _)| name.as_str() != DATABASE_BREAKER)
                .map(|(name, c)| (name.clone(), c.clone()))
                .collect(),
            default: BreakerConfig::default(),
            journal: journal.clone(),
            restored: Vec::new(),
        };
        let journal_db = config.journal_db();
        // The supervised children, in start order (stopped in reverse).
        let children = vec![
            WriterChild::boxed("journal-writer", journal_writer, journal_slot),
            WriterChild::boxed("writer", config.writer_config(config.app_db()), app_slot),
            ActorChild::boxed(
                "retry-queue",
                move || Ok((RetryQueueActor, retry_args.clone())),
                retry_slot,
            ),
            ActorChild::boxed(
                "breakers",
                move || {
                    // Restart from the state journaled last, not the one at startup.
                    let mut args = breaker_args.clone();
                    args.restored =
                        open_read_only(&journal_db).and_then(|c| journal::breakers::load(&c))?;
                    Ok((CircuitBreakerActor, args))
                },
                breakers_slot,
            ),
            ActorChild::boxed(
                "health",
                move || Ok((HealthActor, health_args.clone())),
                health_slot,
            ),
        ];
        let args = SupervisorArgs {
            policy: config.supervisor.clone(),
            children,
            journal: journal.clone(),
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
        Ok(Runtime {
            inner: Arc::new(Inner {
                config,
                app,
                journal,
                health,
                retry,
                handlers,
                breakers,
                database,
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

    /// The supervised actors: state, restarts since start, last failure.
    pub fn actors(&self) -> Vec<ActorStatus> {
        self.inner.roster.borrow().clone()
    }

    /// Whether the runtime takes writes: the writers run, the journal is
    /// migrated, and it is not shutting down. `Err` says what is missing.
    pub fn ready(&self) -> std::result::Result<(), NotReady> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(NotReady::ShuttingDown);
        }
        let database = self.database_breaker();
        if database.state == BreakerState::Open {
            let trips = u64::from(database.trips);
            return Err(NotReady::DatabaseBreakerOpen { trips });
        }
        // The last write probe could not write the file (read-only,
        // immutable): no write will, until someone fixes it. A lock held
        // elsewhere passes: the database breaker answers for that.
        if let Some(report) = self.latest_health() {
            if report.recommends(Action::FixPermissions) {
                return Err(NotReady::Unwritable(report.rule.clone()));
            }
        }
        match self.status() {
            Status::Healthy => Ok(()),
            Status::Restarting => Err(NotReady::Restarting),
            Status::Failed(reason) => Err(NotReady::Failed(reason)),
            Status::Stopped => Err(NotReady::Stopped),
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
