//! The runtime handle: what an application holds. Cloneable, `Send + Sync`,
//! usable from any tokio runtime. Writes go to the supervised WriterActor,
//! reads to the read pool, health questions to the HealthActor, backups
//! to the BackupActor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorRef};
use resilite_actors::backup::{BackupActor, BackupArgs, BackupMsg};
use resilite_actors::breaker::{
    BreakerArgs, BreakerConfig, BreakerMsg, BreakerState, CircuitBreakerActor, DatabaseBreaker,
};
use resilite_actors::connection::{open_read_only, read_blocking};
use resilite_actors::health::{
    Action, HealthActor, HealthArgs, HealthEvent, HealthMsg, HealthReport,
};
use resilite_actors::journal::{self, RestartRecord};
use resilite_actors::retry_queue::{Handlers, RetryArgs, RetryMsg, RetryQueueActor};
use resilite_actors::slot::{self, ActorStatus, Slot, WriterSlot};
use resilite_actors::{
    AuditLevel, Error, ErrorClass, ReadPool, ReadPoolConfig, Result, WriterConfig, WriterMsg,
    WriterStats,
};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::config::{Config, DATABASE_BREAKER};

mod archive;
mod audit;
mod backup;
mod breakers;
mod damage;
mod durable;
mod health;
mod migrate;
mod queue;
mod ready;
mod recover;
mod reload;
mod schema;
mod writes;

use crate::supervisor::{
    spawn_error, ActorChild, Child, RootSupervisor, SupervisorArgs, SupervisorMsg, WriterChild,
};
pub(crate) use audit::{audit_query, event_query};
pub use backup::RestoreOutcome;
pub use durable::Durable;
pub(crate) use health::resource_limit;
pub use ready::NotReady;
pub use recover::RecoveryOutcome;
pub use reload::ReloadReport;

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
    /// The configuration in effect; a reload replaces it, and the
    /// supervisor's children read it when they (re)start.
    config: watch::Sender<Arc<Config>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    app: watch::Receiver<WriterSlot>,
    journal: watch::Receiver<WriterSlot>,
    health: watch::Receiver<Slot<ActorRef<HealthMsg>>>,
    retry: watch::Receiver<Slot<ActorRef<RetryMsg>>>,
    handlers: Handlers,
    breakers: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
    backup: watch::Receiver<Slot<ActorRef<BackupMsg>>>,
    /// The writer's `database` breaker. A lock, not an actor: it is
    /// consulted on every write.
    database: Arc<DatabaseBreaker>,
    roster: watch::Receiver<Vec<ActorStatus>>,
    latest: watch::Receiver<Option<Arc<HealthReport>>>,
    events: broadcast::Sender<HealthEvent>,
    readers: ReadPool,
    supervisor: ActorRef<SupervisorMsg>,
    closing: AtomicBool,
    /// A recovery is running: a second one is refused.
    recovering: AtomicBool,
    /// A corruption error was reported to health (once per damaged file).
    corruption_reported: AtomicBool,
    /// An automatic recovery of the current damage was tried.
    auto_recovery_spent: AtomicBool,
    /// The idempotency keys of durable writes.
    durable_keys: durable::DurableKeys,
    /// Why the schema is not validated yet (`schema.on_start`); `None`
    /// once it is, or when no schema file is checked at start.
    schema_pending: std::sync::Mutex<Option<String>>,
    /// Events, the error log and the slow-query log.
    audit: audit::Audit,
    /// The operation audit's level, fixed at start (`audit.level` takes a
    /// restart): read on every write, so not through the config's lock.
    audit_level: AuditLevel,
    /// The migrations of `schema.migrations_dir` are being applied at start.
    migrating: AtomicBool,
    /// One migration run at a time (each reads the history again anyway).
    migrate_lock: tokio::sync::Mutex<()>,
    /// One archive run or archive restore at a time.
    archive_lock: tokio::sync::Mutex<()>,
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
    ///
    /// What an interrupted archive run left (an unrecorded archive file,
    /// temporary files, recorded archives whose rows are still in the
    /// database) is completed before this returns, with an
    /// `archive_resumed` event; no new rows are archived.
    ///
    /// With `schema.migrations_dir` set, the pending migrations there are
    /// applied once the actors run (a `pre-migration` backup first), before
    /// this returns; until then [`ready`](Runtime::ready) says so. A
    /// migration that fails, would lose data without
    /// `schema.allow_destructive`, or an applied one whose file changed or
    /// disappeared fails the start with that error (the runtime is shut
    /// down again).
    pub async fn start(config: Config) -> Result<Runtime> {
        let rt = Runtime::launch(config).await?;
        if let Err(e) = rt.schema_at_start().await {
            tracing::error!(error = %e, "the schema step at start failed; stopping");
            if let Err(stop) = rt.shutdown().await {
                tracing::warn!(error = %stop, "the runtime did not stop cleanly after the schema step failed");
            }
            return Err(e);
        }
        Ok(rt)
    }

    /// [`start`](Runtime::start) without the schema step (migrations, then
    /// the schema check): `resilite run` serves `/ready` (503, with the
    /// reason) while it runs that step itself.
    pub(crate) async fn launch(config: Config) -> Result<Runtime> {
        config
            .validate()
            .map_err(|e| Error::bad_input(e.to_string()))?;
        // The files: the journal is its own file, the database opens and is
        // a database, then the journal; nothing is left behind on failure.
        let early = match crate::startup::check(&config).await {
            Ok(()) => None,
            // The database cannot be read: recover before anything opens it.
            Err(e) if e.class == ErrorClass::Corruption && config.backup.auto_recover => {
                let cfg = config.clone();
                let early =
                    tokio::task::spawn_blocking(move || recover::replace_before_start(&cfg, e))
                        .await
                        .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))??;
                crate::startup::check(&config).await?;
                Some(early)
            }
            Err(e) => return Err(e),
        };
        crate::metrics::install();
        let (senders, published) = channels();
        // The database breaker continues from its journaled state.
        let restored = read_blocking(&config.journal_db(), journal::breakers::load)
            .await
            .unwrap_or_default();
        let database = Arc::new(DatabaseBreaker::new(
            config.database_breaker(),
            &restored,
            published.journal.clone(),
        ));
        let handlers = Handlers::default();
        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        let args = SupervisorArgs {
            policy: config.supervisor.clone(),
            journal: published.journal.clone(),
            roster: senders.roster.clone(),
            children: children(
                &config, &config_rx, senders, &published, &database, &handlers,
            ),
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
        let audit = audit::Audit::start(&config, config_rx.clone(), &published.journal);
        let migrating = config.schema.migrations_dir.is_some();
        let Published {
            app,
            journal,
            health,
            retry,
            breakers,
            backup,
            roster,
            latest,
            events,
        } = published;
        let schema_pending = match (&config.schema.file, config.schema.on_start()) {
            (Some(file), mode) if mode != crate::config::OnStart::Off => Some(format!(
                "the database has not been validated against the schema file {} yet",
                file.display()
            )),
            _ => None,
        };
        let rt = Runtime {
            inner: Arc::new(Inner {
                config: config_tx,
                reloading: tokio::sync::Mutex::new(()),
                app,
                journal,
                health,
                retry,
                handlers,
                breakers,
                backup,
                database,
                roster,
                latest,
                events,
                readers,
                supervisor,
                closing: AtomicBool::new(false),
                recovering: AtomicBool::new(false),
                corruption_reported: AtomicBool::new(false),
                auto_recovery_spent: AtomicBool::new(false),
                durable_keys: durable::DurableKeys::new(),
                schema_pending: std::sync::Mutex::new(schema_pending),
                audit,
                audit_level: config.audit.level,
                migrating: AtomicBool::new(migrating),
                migrate_lock: tokio::sync::Mutex::new(()),
                archive_lock: tokio::sync::Mutex::new(()),
            }),
        };
        damage::watch(&rt);
        breakers::probe_database(&rt);
        durable::forget_applied_keys(&rt);
        archive::schedule(&rt);
        if let Some(early) = early {
            rt.finish_early_recovery(early).await;
        }
        // Before the migrations: the archives were written against the
        // schema the database has now.
        rt.finish_archives_at_start().await;
        Ok(rt)
    }

    /// At start, once the actors run: the migrations of
    /// `schema.migrations_dir`, then the check of `schema.file` against
    /// the migrated database (`schema.on_start`). `ready` says which is
    /// pending meanwhile.
    pub(crate) async fn schema_at_start(&self) -> Result<()> {
        self.migrate_at_start().await?;
        self.check_schema_at_start().await
    }

    /// The configuration in effect: the one the runtime was started with,
    /// as the last reload ([`reload_config`](Self::reload_config)) left it.
    /// A snapshot: a later reload does not change it.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.borrow().clone()
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
    /// migrated, the migrations of `schema.migrations_dir` are applied,
    /// the schema file (`schema.on_start`) has been validated,
    /// and it is not shutting down. `Err` says what is missing.
    pub fn ready(&self) -> std::result::Result<(), NotReady> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(NotReady::ShuttingDown);
        }
        if let Some(reason) = self.schema_pending() {
            return Err(NotReady::SchemaNotValidated(reason));
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
        if self.inner.migrating.load(Ordering::Acquire) {
            let dir = self.config().schema.migrations_dir.clone();
            return Err(NotReady::Migrating(
                dir.unwrap_or_default().display().to_string(),
            ));
        }
        match self.status() {
            Status::Healthy => Ok(()),
            Status::Restarting => Err(NotReady::Restarting),
            Status::Failed(reason) => Err(NotReady::Failed(reason)),
            Status::Stopped => Err(NotReady::Stopped),
        }
    }

    /// Why the schema is not validated yet, if it is not.
    fn schema_pending(&self) -> Option<String> {
        self.inner
            .schema_pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The schema check at start is done.
    fn schema_validated(&self) {
        *self
            .inner
            .schema_pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Stop taking writes, commit every write already taken, checkpoint the
    /// WAL into the database file and stop the actors. The read pool closes
    /// first (queries answer `unavailable` from then on), so the writer's
    /// connection is the file's last and closing it removes the WAL.
    /// A writer that failed just before (its restart not come yet) is
    /// flushed through its connection thread. Once it returns and the
    /// last handle is dropped, no task of the runtime is left. Call it
    /// before dropping the last handle: the actors are tasks of their own,
    /// and without it they (and their connections) live on until the
    /// tokio runtime ends.
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Err(e) = self.inner.readers.close().await {
            tracing::warn!(detail = %e.detail, "the read pool did not close");
        }
        // The journal writer still runs: the audit trail goes in before it stops.
        if let Err(e) = self.flush_logs().await {
            tracing::warn!(detail = %e.detail, "the audit trail was not all written");
        }
        let result = ractor::call!(self.inner.supervisor, SupervisorMsg::Shutdown)
            .map_err(|e| Error::unavailable(format!("supervisor is not running: {e}")))?;
        tracing::info!("resilite runtime stopped");
        result
    }
}

/// Where the supervisor publishes each child, and the health actor its
/// reports and events.
struct Senders {
    app: watch::Sender<WriterSlot>,
    journal: watch::Sender<WriterSlot>,
    health: watch::Sender<Slot<ActorRef<HealthMsg>>>,
    retry: watch::Sender<Slot<ActorRef<RetryMsg>>>,
    breakers: watch::Sender<Slot<ActorRef<BreakerMsg>>>,
    backup: watch::Sender<Slot<ActorRef<BackupMsg>>>,
    roster: watch::Sender<Vec<ActorStatus>>,
    latest: watch::Sender<Option<Arc<HealthReport>>>,
}

/// What the handle (and the actors that ask each other) read.
struct Published {
    app: watch::Receiver<WriterSlot>,
    journal: watch::Receiver<WriterSlot>,
    health: watch::Receiver<Slot<ActorRef<HealthMsg>>>,
    retry: watch::Receiver<Slot<ActorRef<RetryMsg>>>,
    breakers: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
    backup: watch::Receiver<Slot<ActorRef<BackupMsg>>>,
    roster: watch::Receiver<Vec<ActorStatus>>,
    latest: watch::Receiver<Option<Arc<HealthReport>>>,
    events: broadcast::Sender<HealthEvent>,
}

fn channels() -> (Senders, Published) {
    let (app_tx, app) = watch::channel(Slot::Restarting);
    let (journal_tx, journal) = watch::channel(Slot::Restarting);
    let (health_tx, health) = watch::channel(Slot::Restarting);
    let (retry_tx, retry) = watch::channel(Slot::Restarting);
    let (breakers_tx, breakers) = watch::channel(Slot::Restarting);
    let (backup_tx, backup) = watch::channel(Slot::Restarting);
    let (roster_tx, roster) = watch::channel(Vec::new());
    let (latest_tx, latest) = watch::channel(None);
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let senders = Senders {
        app: app_tx,
        journal: journal_tx,
        health: health_tx,
        retry: retry_tx,
        breakers: breakers_tx,
        backup: backup_tx,
        roster: roster_tx,
        latest: latest_tx,
    };
    let published = Published {
        app,
        journal,
        health,
        retry,
        breakers,
        backup,
        roster,
        latest,
        events,
    };
    (senders, published)
}

/// The supervised children, in start order (stopped in reverse). Adding an
/// actor is one more line here.
fn children(
    config: &Config,
    current: &watch::Receiver<Arc<Config>>,
    senders: Senders,
    published: &Published,
    database: &Arc<DatabaseBreaker>,
    handlers: &Handlers,
) -> Vec<Box<dyn Child>> {
    // The actors that take a reload live are (re)started with the settings
    // in effect, read from `current`; the writers keep the ones they were
    // started with (their keys need a restart of the runtime).
    let gate = database.clone();
    let retry = RetryArgs {
        config: config.retry.clone(),
        journal_db: config.journal_db(),
        journal: published.journal.clone(),
        app: published.app.clone(),
        handlers: handlers.clone(),
        sql_gate: Arc::new(move || gate.lets_replays_through()),
    };
    let breakers = BreakerArgs {
        configs: named_breakers(config),
        default: BreakerConfig::default(),
        journal: published.journal.clone(),
        restored: Vec::new(),
    };
    let journal_db = config.journal_db();
    let health = HealthArgs {
        db: config.app_db(),
        config: health_config(config),
        app: published.app.clone(),
        journal: published.journal.clone(),
        roster: published.roster.clone(),
        latest: Arc::new(senders.latest),
        events: published.events.clone(),
        retry: published.retry.clone(),
        database: database.clone(),
        breakers: published.breakers.clone(),
        journal_db: config.journal_db(),
    };
    let backup = BackupArgs {
        config: config.backup_config(),
        journal_db: config.journal_db(),
        journal: published.journal.clone(),
    };
    vec![
        WriterChild::boxed("journal-writer", journal_writer(config), senders.journal),
        WriterChild::boxed("writer", config.app_writer_config(), senders.app),
        ActorChild::boxed(
            "retry-queue",
            {
                let current = current.clone();
                move || {
                    let mut args = retry.clone();
                    args.config = current.borrow().retry.clone();
                    Ok((RetryQueueActor, args))
                }
            },
            senders.retry,
        ),
        ActorChild::boxed(
            "breakers",
            {
                let current = current.clone();
                move || {
                    // Restart from the state journaled last, not the one at startup.
                    let mut args = breakers.clone();
                    args.configs = named_breakers(&current.borrow());
                    args.restored =
                        open_read_only(&journal_db).and_then(|c| journal::breakers::load(&c))?;
                    Ok((CircuitBreakerActor, args))
                }
            },
            senders.breakers,
        ),
        ActorChild::boxed(
            "backup",
            {
                let current = current.clone();
                move || {
                    let mut args = backup.clone();
                    args.config = current.borrow().backup_config();
                    Ok((BackupActor, args))
                }
            },
            senders.backup,
        ),
        ActorChild::boxed(
            "health",
            {
                let current = current.clone();
                move || {
                    let mut args = health.clone();
                    args.config = health_config(&current.borrow());
                    Ok((HealthActor, args))
                }
            },
            senders.health,
        ),
    ]
}

/// The named breakers' configurations (all but `database`).
fn named_breakers(config: &Config) -> std::collections::BTreeMap<String, BreakerConfig> {
    config
        .breakers
        .iter()
        .filter(|(name, _)| name.as_str() != DATABASE_BREAKER)
        .map(|(name, c)| (name.clone(), c.clone()))
        .collect()
}

/// The HealthActor's configuration: `[health]` with `backup.interval`.
fn health_config(config: &Config) -> resilite_actors::HealthConfig {
    let mut health = config.health.clone();
    health.backup_interval = config.backup.interval;
    health
}

/// The journal writer: a writer like the application's, on the journal
/// file, migrating it when it opens.
fn journal_writer(config: &Config) -> WriterConfig {
    let mut writer = config.writer_config(config.journal_db());
    writer.init = Some(journal::migrate);
    writer.name = "journal-writer";
    // The journal keeps whole operations as JSON (a blob as base64), so
    // its values may be larger than any one value of the database.
    writer.max_value_bytes = JOURNAL_MAX_VALUE_BYTES;
    writer
}
