//! RootSupervisor: starts the runtime's actors, restarts one that fails and
//! escalates past the restart limit (OTP's one-for-one with intensity:
//! at most `max_restarts` restarts within `restart_window`).
//!
//! Each child is published in a [`Slot`] (a watch channel) that handles
//! read, so a restart is invisible to callers beyond a short wait. Every
//! restart and escalation is logged and recorded in the journal.
//!
//! Children: the journal writer (started first, so restarts can be
//! recorded) and the application writer. On [`SupervisorMsg::Shutdown`] the
//! supervisor drains both writers, checkpoints the application database
//! and stops.

use std::collections::VecDeque;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use resilite_actors::journal::{self, RestartOutcome};
use resilite_actors::writer::{write, CheckpointMode};
use resilite_actors::{
    Error, ErrorClass, Operation, WriterActor, WriterConfig, WriterHandle, WriterMsg,
};
use tokio::sync::watch;

use crate::config::SupervisorConfig;

/// Where a supervised actor stands, as handles see it.
#[derive(Debug, Clone)]
pub enum Slot {
    /// Running: messages go to the actor, writes straight to its thread.
    Running(ActorRef<WriterMsg>, WriterHandle),
    /// Failed and being restarted.
    Restarting,
    /// Failed past the restart limit; the text says why.
    Failed(String),
    /// Stopped by shutdown.
    Stopped,
}

/// Messages of the RootSupervisor.
pub enum SupervisorMsg {
    /// Drain the writers, checkpoint, stop every child, then answer.
    Shutdown(RpcReplyPort<Result<(), Error>>),
}

/// What the supervisor needs to start.
pub struct SupervisorArgs {
    pub policy: SupervisorConfig,
    pub journal: WriterConfig,
    pub app: WriterConfig,
    pub journal_slot: watch::Sender<Slot>,
    pub app_slot: watch::Sender<Slot>,
}

pub struct RootSupervisor;

struct Child {
    name: &'static str,
    config: WriterConfig,
    slot: watch::Sender<Slot>,
    id: Option<ActorId>,
    failures: VecDeque<Instant>,
}

pub struct SupervisorState {
    policy: SupervisorConfig,
    children: Vec<Child>, // [journal, app]
    stopping: bool,
}

impl SupervisorState {
    fn running(&self, index: usize) -> Option<ActorRef<WriterMsg>> {
        match &*self.children[index].slot.borrow() {
            Slot::Running(r, _) => Some(r.clone()),
            _ => None,
        }
    }
}

const JOURNAL: usize = 0;
const APP: usize = 1;

impl Actor for RootSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            policy: args.policy,
            children: vec![
                Child::new("journal-writer", args.journal, args.journal_slot),
                Child::new("writer", args.app, args.app_slot),
            ],
            stopping: false,
        };
        for child in &mut state.children {
            child.start(&myself).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Shutdown(reply) => {
                state.stopping = true;
                let result = drain_and_stop(state).await;
                let _ = reply.send(result);
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                reason.unwrap_or_else(|| "stopped without a reason".into()),
            ),
            _ => return Ok(()),
        };
        if state.stopping {
            return Ok(());
        }
        let Some(index) = state
            .children
            .iter()
            .position(|c| c.id == Some(cell.get_id()))
        else {
            return Ok(());
        };
        let policy = state.policy.clone();
        let child = &mut state.children[index];
        child.id = None;
        let now = Instant::now();
        child.failures.push_back(now);
        while child
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.restart_window)
        {
            child.failures.pop_front();
        }
        let count = child.failures.len() as u32;
        let name = child.name;
        let outcome = if count > policy.max_restarts {
            let text = format!(
                "{name} failed {count} times within {} (supervisor.max_restarts = {}); last failure: {reason}. \
                 Fix the cause and restart resilite; the journal's actor_restarts table has the history",
                humantime::format_duration(policy.restart_window),
                policy.max_restarts
            );
            tracing::error!(actor = name, failures = count, %reason, "restart limit reached; escalating");
            child.slot.send_replace(Slot::Failed(text));
            RestartOutcome::Escalated
        } else {
            tracing::warn!(actor = name, failures = count, %reason, "actor failed; restarting");
            child.slot.send_replace(Slot::Restarting);
            if let Err(e) = child.start(&myself).await {
                let text = format!("{name} could not be restarted: {e}");
                tracing::error!(actor = name, error = %e, "restart failed; escalating");
                child.slot.send_replace(Slot::Failed(text));
            }
            RestartOutcome::Restarted
        };
        if let Some(journal) = state.running(JOURNAL) {
            let record = journal::record_restart(name, &reason, count, outcome);
            // Not awaited here: a slow journal must not stall supervision.
            tokio::spawn(async move {
                if let Err(e) = write(&journal, Operation::Statement(record)).await {
                    tracing::warn!(error = %e, "could not record the restart in the journal");
                }
            });
        }
        Ok(())
    }
}

impl Child {
    fn new(name: &'static str, config: WriterConfig, slot: watch::Sender<Slot>) -> Self {
        Child {
            name,
            config,
            slot,
            id: None,
            failures: VecDeque::new(),
        }
    }

    async fn start(&mut self, supervisor: &ActorRef<SupervisorMsg>) -> Result<(), Error> {
        let (actor, _) = WriterActor::spawn_linked(
            None,
            WriterActor,
            self.config.clone(),
            supervisor.get_cell(),
        )
        .await
        .map_err(spawn_error)?;
        let handle = ractor::call!(actor, WriterMsg::Handle)
            .map_err(|e| Error::classed(ErrorClass::Internal, format!("writer handle: {e}")))?;
        self.id = Some(actor.get_id());
        self.slot.send_replace(Slot::Running(actor, handle));
        Ok(())
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

async fn drain_and_stop(state: &mut SupervisorState) -> Result<(), Error> {
    let mut result = Ok(());
    if let Some(app) = state.running(APP) {
        result = drain(&app).await.and(
            ractor::call!(app, |reply| WriterMsg::Checkpoint {
                mode: CheckpointMode::Truncate,
                reply
            })
            .map_err(|e| Error::unavailable(e.to_string()))
            .and_then(|r| r.map(|_| ())),
        );
    }
    if let Some(journal) = state.running(JOURNAL) {
        result = result.and(drain(&journal).await);
    }
    // Stop the application writer first: the journal may still record its end.
    for index in [APP, JOURNAL] {
        let actor = state.running(index);
        // Drop the published handle first: the connection thread closes
        // once no handle to it is left.
        state.children[index].slot.send_replace(Slot::Stopped);
        if let Some(actor) = actor {
            let _ = actor.stop_and_wait(Some("shutdown".into()), None).await;
        }
    }
    result
}

async fn drain(writer: &ActorRef<WriterMsg>) -> Result<(), Error> {
    ractor::call!(writer, WriterMsg::Drain).map_err(|e| Error::unavailable(e.to_string()))
}
