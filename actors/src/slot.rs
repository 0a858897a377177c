//! Where a supervised actor stands, as the handles that use it see it.
//!
//! The supervisor publishes each child in a [`Slot`] (a tokio watch
//! channel); handles read it, so a restart is invisible to callers beyond a
//! short wait for the new actor.
//!
//! Internal: `pub` only for the `resilite` facade (its supervisor and
//! runtime handle). Applications see [`ActorStatus`] and [`SlotState`],
//! re-exported from `resilite::`.

use std::future::Future;
use std::time::Duration;

use ractor::ActorRef;
use serde::Serialize;
use tokio::sync::watch;

use crate::audit::WriteContext;
use crate::error::{Error, Result};
use crate::value::{Operation, OperationOutcome};
use crate::writer::{Answered, WriterHandle, WriterMsg};

/// How long a caller waits for a failed actor to be restarted.
pub const RESTART_WAIT: Duration = Duration::from_secs(10);
/// How often one write is re-sent after its writer died before taking it.
const MAX_RESENDS: usize = 5;

/// The state of a supervised actor; `T` is what callers use while it runs.
#[derive(Debug, Clone)]
pub enum Slot<T> {
    /// Running.
    Running(T),
    /// Failed and being restarted (or not started yet).
    Restarting,
    /// Failed past the restart limit; the text says why.
    Failed(String),
    /// Stopped by shutdown.
    Stopped,
}

/// A running writer: its actor (for control messages) and a handle that
/// sends writes straight to its connection thread.
#[derive(Debug, Clone)]
pub struct RunningWriter {
    /// The WriterActor.
    pub actor: ActorRef<WriterMsg>,
    /// The hot path to its connection thread.
    pub handle: WriterHandle,
}

/// The slot of a writer.
pub type WriterSlot = Slot<RunningWriter>;

/// An actor's state as reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Running.
    Running,
    /// Being restarted.
    Restarting,
    /// Failed past the restart limit.
    Failed,
    /// Stopped.
    Stopped,
}

impl Slot<()> {
    /// This state for a slot of any kind; `Running` (which needs what the
    /// actor holds) becomes `Restarting`.
    pub fn down<T>(&self) -> Slot<T> {
        match self {
            Slot::Running(()) | Slot::Restarting => Slot::Restarting,
            Slot::Failed(reason) => Slot::Failed(reason.clone()),
            Slot::Stopped => Slot::Stopped,
        }
    }
}

impl<T> Slot<T> {
    /// The state without what the running actor holds.
    pub fn state(&self) -> SlotState {
        match self {
            Slot::Running(_) => SlotState::Running,
            Slot::Restarting => SlotState::Restarting,
            Slot::Failed(_) => SlotState::Failed,
            Slot::Stopped => SlotState::Stopped,
        }
    }
}

/// What `slot` holds once it runs, waiting (bounded by [`RESTART_WAIT`])
/// while the actor is restarted.
pub async fn running<T: Clone>(slot: &mut watch::Receiver<Slot<T>>) -> Result<T> {
    // The common case needs no timer.
    if let Slot::Running(t) = &*slot.borrow_and_update() {
        return Ok(t.clone());
    }
    let wait = tokio::time::timeout(RESTART_WAIT, async {
        loop {
            match &*slot.borrow_and_update() {
                Slot::Running(t) => return Ok(t.clone()),
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
            "the actor did not come back within {}s of failing",
            RESTART_WAIT.as_secs()
        )))
    })
}

/// Apply `op` through the writer in `slot`, answered after COMMIT.
///
/// If the writer's connection thread is gone before taking the operation
/// (so it was never applied), it is sent to the restarted writer.
pub async fn write(slot: &watch::Receiver<WriterSlot>, op: Operation) -> Result<OperationOutcome> {
    write_with(slot, op, None).await.result
}

/// [`write()`], with who asked for it (for the operation audit); the
/// operation comes back with the outcome when the writer took it (see
/// [`Answered`]).
pub async fn write_with(
    slot: &watch::Receiver<WriterSlot>,
    op: Operation,
    context: Option<Box<WriteContext>>,
) -> Answered {
    // The common case: the writer runs and its channel has room. Sent
    // through the handle the slot holds (its borrow ends with this
    // statement), with no clone of it or of the slot to drop again.
    let sent = match &*slot.borrow() {
        Slot::Running(writer) => writer.handle.try_write_with(op, context),
        _ => Err((op, context)),
    };
    let (op, context) = match sent {
        Ok(answer) => return answer.await,
        Err(unsent) => unsent,
    };
    resend(slot, (op, context), |writer, (op, context)| async move {
        writer.write_with(op, context).await
    })
    .await
    .unwrap_or_else(Answered::failed)
}

/// Apply independent operations through the writer in `slot`, committed
/// together: the outcome of each, in order (see
/// [`WriterHandle::write_many`]). Resent like [`write()`].
pub async fn write_many(
    slot: &watch::Receiver<WriterSlot>,
    ops: Vec<Operation>,
) -> Result<Vec<Result<OperationOutcome>>> {
    resend(slot, ops, |writer, ops| async move {
        writer.write_many(ops).await
    })
    .await?
}

/// Run the writer's write probe (a real write that changes nothing the
/// application sees). Resent like [`write()`].
pub async fn probe(slot: &watch::Receiver<WriterSlot>) -> Result<()> {
    resend(slot, (), |writer, ()| async move { writer.probe().await }).await?
}

/// Send `payload` with `send` to the writer running in `slot`; when its
/// connection thread is gone before taking it (`send` gives it back), send
/// it again to the restarted writer.
async fn resend<T, R, Fut>(
    slot: &watch::Receiver<WriterSlot>,
    mut payload: T,
    send: impl Fn(WriterHandle, T) -> Fut,
) -> Result<R>
where
    Fut: Future<Output = std::result::Result<R, T>>,
{
    let mut slot = slot.clone();
    for _ in 0..MAX_RESENDS {
        let writer = running(&mut slot).await?;
        match send(writer.handle, payload).await {
            Ok(result) => return Ok(result),
            Err(returned) => payload = returned,
        }
        let _ = tokio::time::timeout(RESTART_WAIT, slot.changed()).await;
    }
    Err(Error::unavailable(
        "the writer kept failing before it could take the write; nothing was applied",
    ))
}

/// One supervised actor as the supervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActorStatus {
    /// The actor's name (`writer`, `journal-writer`, `health`).
    pub name: String,
    /// Its state.
    pub state: SlotState,
    /// Restarts since the runtime started.
    pub restarts: u32,
    /// Why it last failed.
    pub last_failure: Option<String>,
}
