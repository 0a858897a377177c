//! What the supervisor needs of a child: the [`Child`] trait, and its two
//! implementations, [`WriterChild`] (a WriterActor and its handle) and
//! [`ActorChild`] (any other actor, published as its `ActorRef`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorRef};
use resilite_actors::maintenance;
use resilite_actors::slot::{RunningWriter, Slot, SlotState, WriterSlot};
use resilite_actors::{
    CheckpointMode, Error, ErrorClass, Maintenance, WriterActor, WriterConfig, WriterHandle,
    WriterMsg,
};
use tokio::sync::watch;

/// A future a child returns from its trait methods.
pub type ChildFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// A supervised child. The supervisor starts the children in list order,
/// restarts one that fails (as configured in `[supervisor]`), and stops
/// them in reverse order at shutdown. Each child publishes itself in a
/// slot that handles read, so a restart is invisible to callers beyond a
/// short wait.
pub trait Child: Send + Sync + 'static {
    /// The name in logs, metrics, reports and the restart log.
    fn name(&self) -> &'static str;

    /// Spawn the actor linked to `supervisor` and publish it as running;
    /// its id, by which the supervisor recognises its failure.
    fn start(&self, supervisor: ActorCell) -> ChildFuture<'_, ActorId>;

    /// Publish a state other than running: restarting, failed, stopped.
    fn set(&self, state: Slot<()>);

    /// The published state.
    fn state(&self) -> SlotState;

    /// Shutdown: finish its work, publish it stopped and stop it.
    fn stop(&self) -> ChildFuture<'_, ()>;
}

/// A WriterActor: published with the handle that writes straight to its
/// connection thread. At shutdown it commits every write it was given,
/// checkpoints its WAL into the file (TRUNCATE), so that the file is whole
/// on its own once the process is gone, and closes its connection.
pub struct WriterChild {
    name: &'static str,
    config: WriterConfig,
    slot: watch::Sender<WriterSlot>,
}

impl WriterChild {
    /// The writer `name` with `config`, published in `slot`.
    pub fn boxed(
        name: &'static str,
        config: WriterConfig,
        slot: watch::Sender<WriterSlot>,
    ) -> Box<dyn Child> {
        Box::new(WriterChild { name, config, slot })
    }

    fn running(&self) -> Option<RunningWriter> {
        match &*self.slot.borrow() {
            Slot::Running(w) => Some(w.clone()),
            _ => None,
        }
    }
}

impl Child for WriterChild {
    fn name(&self) -> &'static str {
        self.name
    }

    fn start(&self, supervisor: ActorCell) -> ChildFuture<'_, ActorId> {
        Box::pin(async move {
            let (actor, _) =
                WriterActor::spawn_linked(None, WriterActor, self.config.clone(), supervisor)
                    .await
                    .map_err(spawn_error)?;
            let handle = ractor::call!(actor, WriterMsg::Handle)
                .map_err(|e| Error::classed(ErrorClass::Internal, format!("writer handle: {e}")))?;
            let id = actor.get_id();
            self.slot
                .send_replace(Slot::Running(RunningWriter { actor, handle }));
            Ok(id)
        })
    }

    fn set(&self, state: Slot<()>) {
        self.slot.send_replace(state.down());
    }

    fn state(&self) -> SlotState {
        self.slot.borrow().state()
    }

    fn stop(&self) -> ChildFuture<'_, ()> {
        Box::pin(async move {
            let Some(RunningWriter { actor, handle }) = self.running() else {
                return Ok(());
            };
            let flushed = match flush(&actor).await {
                // The actor failed and shutdown came before its restart:
                // its connection thread still runs what it was given.
                Err(_) => flush_thread(&handle).await,
                done => done,
            };
            // Keep only the actor: the connection thread closes once no
            // handle to it is left, the published one included.
            drop(handle);
            self.set(Slot::Stopped);
            let _ = actor.stop_and_wait(Some("shutdown".into()), None).await;
            flushed
        })
    }
}

/// Commit every write `writer` was given, then checkpoint its WAL into the
/// file (TRUNCATE).
async fn flush(writer: &ActorRef<WriterMsg>) -> Result<(), Error> {
    let unavailable = |e: ractor::RactorErr<WriterMsg>| Error::unavailable(e.to_string());
    ractor::call!(writer, WriterMsg::Drain).map_err(unavailable)?;
    let truncate = Maintenance::Checkpoint(CheckpointMode::Truncate);
    ractor::call!(writer, |reply| WriterMsg::Maintain {
        task: truncate,
        reply
    })
    .map_err(unavailable)?
    .map(drop)
}

/// Commit every write the connection thread of `handle` was given, then
/// checkpoint its WAL into the file (TRUNCATE): [`flush`] without the
/// actor.
async fn flush_thread(handle: &WriterHandle) -> Result<(), Error> {
    handle
        .call(|c| maintenance::checkpoint(c, CheckpointMode::Truncate))
        .await
        .map(drop)
}

/// Any other actor, published as its `ActorRef`. The actor and its
/// arguments are made afresh at every start (an actor may restart from what
/// it journaled).
pub struct ActorChild<A: Actor> {
    name: &'static str,
    make: MakeFn<A>,
    slot: watch::Sender<Slot<ActorRef<A::Msg>>>,
}

type MakeFn<A> = Arc<dyn Fn() -> Result<(A, <A as Actor>::Arguments), Error> + Send + Sync>;

impl<A: Actor + Sync> ActorChild<A> {
    /// The actor `name` that `make` builds with its arguments, published
    /// in `slot`.
    pub fn boxed(
        name: &'static str,
        make: impl Fn() -> Result<(A, A::Arguments), Error> + Send + Sync + 'static,
        slot: watch::Sender<Slot<ActorRef<A::Msg>>>,
    ) -> Box<dyn Child> {
        Box::new(ActorChild {
            name,
            make: Arc::new(make),
            slot,
        })
    }
}

impl<A: Actor + Sync> Child for ActorChild<A> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn start(&self, supervisor: ActorCell) -> ChildFuture<'_, ActorId> {
        Box::pin(async move {
            let (actor, args) = (self.make)()?;
            let (actor, _) = A::spawn_linked(None, actor, args, supervisor)
                .await
                .map_err(spawn_error)?;
            let id = actor.get_id();
            self.slot.send_replace(Slot::Running(actor));
            Ok(id)
        })
    }

    fn set(&self, state: Slot<()>) {
        self.slot.send_replace(state.down());
    }

    fn state(&self) -> SlotState {
        self.slot.borrow().state()
    }

    fn stop(&self) -> ChildFuture<'_, ()> {
        Box::pin(async move {
            if let Slot::Running(actor) = self.slot.send_replace(Slot::Stopped) {
                let _ = actor.stop_and_wait(Some("shutdown".into()), None).await;
            }
            Ok(())
        })
    }
}

/// Turn a failed spawn into the error its `pre_start` returned.
pub fn spawn_error(err: ractor::SpawnErr) -> Error {
    if let ractor::SpawnErr::StartupFailed(inner) = &err {
        if let Some(e) = inner.downcast_ref::<Error>() {
            return e.clone();
        }
    }
    Error::classed(ErrorClass::Internal, err.to_string())
}
