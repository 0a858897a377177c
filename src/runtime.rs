//! The runtime handle: what an application holds. Cloneable, `Send + Sync`,
//! usable from any tokio runtime. Writes go to the supervised WriterActor,
//! reads to the read pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use resilite_actors::journal::{self, RestartRecord};
use resilite_actors::{
    Error, ErrorClass, Operation, OperationOutcome, QueryResult, ReadPool, ReadPoolConfig, Result,
    Statement, WriteOutcome, WriterHandle, WriterMsg, WriterStats,
};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::supervisor::{spawn_error, RootSupervisor, Slot, SupervisorArgs, SupervisorMsg};

/// How long a caller waits for a failed writer to be restarted.
const RESTART_WAIT: Duration = Duration::from_secs(10);
/// How often one write is re-sent after its writer died before taking it.
const MAX_RESENDS: usize = 5;

/// A running resilite runtime. Clone it freely; all clones share the actors.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    app: watch::Receiver<Slot>,
    journal: watch::Receiver<Slot>,
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
    /// the supervised actors and the read pool.
    pub async fn start(config: Config) -> Result<Runtime> {
        config
            .validate()
            .map_err(|e| Error::bad_input(e.to_string()))?;
        let (app_slot, app) = watch::channel(Slot::Restarting);
        let (journal_slot, journal) = watch::channel(Slot::Restarting);
        let mut journal_writer = config.writer_config(config.journal_db());
        journal_writer.init = Some(journal::migrate);
        let args = SupervisorArgs {
            policy: config.supervisor.clone(),
            journal: journal_writer,
            app: config.writer_config(config.app_db()),
            journal_slot,
            app_slot,
        };
        let (supervisor, _) = RootSupervisor::spawn(None, RootSupervisor, args)
            .await
            .map_err(spawn_error)?;
        let readers = ReadPool::start(ReadPoolConfig {
            db: config.app_db(),
            pool_size: config.readers.pool_size,
            max_rows: config.readers.max_rows,
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
    pub async fn write(&self, mut op: Operation) -> Result<OperationOutcome> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::unavailable("resilite is shutting down"));
        }
        let mut slot = self.inner.app.clone();
        for _ in 0..MAX_RESENDS {
            let (_, writer) = running(&mut slot).await?;
            match writer.write(op).await {
                Ok(result) => return result,
                Err(returned) => op = returned,
            }
            wait_for_change(&mut slot).await;
        }
        Err(Error::unavailable(
            "the writer kept failing before it could take the write; nothing was applied",
        ))
    }

    /// Run a read-only statement on the read pool.
    pub async fn query(&self, stmt: Statement) -> Result<QueryResult> {
        self.inner.readers.query(stmt).await
    }

    /// The application writer, for sending it messages directly (tests,
    /// fault injection).
    pub async fn writer(&self) -> Result<ActorRef<WriterMsg>> {
        running(&mut self.inner.app.clone())
            .await
            .map(|(actor, _)| actor)
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
                Slot::Running(..) => {}
                Slot::Restarting => status = Status::Restarting,
                Slot::Failed(reason) => return Status::Failed(reason.clone()),
                Slot::Stopped => return Status::Stopped,
            }
        }
        status
    }

    /// The journal's restart log, oldest first.
    pub async fn restarts(&self) -> Result<Vec<RestartRecord>> {
        let journal = self.inner.config.journal_db();
        tokio::task::spawn_blocking(move || journal::restarts(&journal))
            .await
            .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?
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

/// The running actor in `slot`, waiting (bounded) while it restarts.
async fn running(slot: &mut watch::Receiver<Slot>) -> Result<(ActorRef<WriterMsg>, WriterHandle)> {
    let wait = tokio::time::timeout(RESTART_WAIT, async {
        loop {
            match &*slot.borrow_and_update() {
                Slot::Running(actor, handle) => return Ok((actor.clone(), handle.clone())),
                Slot::Failed(reason) => return Err(Error::unavailable(reason.clone())),
                Slot::Stopped => return Err(Error::unavailable("resilite is shut down")),
                Slot::Restarting => {}
            }
            if slot.changed().await.is_err() {
                return Err(Error::unavailable("resilite is shut down"));
            }
        }
    });
    wait.await.unwrap_or_else(|_| {
        Err(Error::unavailable(format!(
            "the writer did not come back within {}s of failing",
            RESTART_WAIT.as_secs()
        )))
    })
}

/// Wait (bounded) until the supervisor publishes a new state for `slot`.
async fn wait_for_change(slot: &mut watch::Receiver<Slot>) {
    let _ = tokio::time::timeout(RESTART_WAIT, slot.changed()).await;
}
