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
use resilite_actors::breaker::{BreakerArgs, BreakerMsg, CircuitBreakerActor};
use resilite_actors::connection::{open_read_only, DbOptions};
use resilite_actors::health::{HealthActor, HealthArgs, HealthMsg};
use resilite_actors::journal::{self, RestartOutcome};
use resilite_actors::retry_queue::{RetryArgs, RetryMsg, RetryQueueActor};
use resilite_actors::slot::{self, ActorStatus, RunningWriter, Slot, SlotState, WriterSlot};
use resilite_actors::{
    CheckpointMode, Error, ErrorClass, Maintenance, Operation, WriterActor, WriterConfig, WriterMsg,
};
use tokio::sync::watch;

use crate::config::SupervisorConfig;

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
    pub health: HealthArgs,
    pub retry: RetryArgs,
    pub breakers: BreakerArgs,
    pub journal_db: DbOptions,
    pub journal_slot: watch::Sender<WriterSlot>,
    pub app_slot: watch::Sender<WriterSlot>,
    pub health_slot: watch::Sender<Slot<ActorRef<HealthMsg>>>,
    pub retry_slot: watch::Sender<Slot<ActorRef<RetryMsg>>>,
    pub breakers_slot: watch::Sender<Slot<ActorRef<BreakerMsg>>>,
    pub roster: watch::Sender<Vec<ActorStatus>>,
}

pub struct RootSupervisor;

/// How to start a child and where it is published.
enum Spec {
    Writer {
        config: WriterConfig,
        slot: watch::Sender<WriterSlot>,
    },
    Health {
        args: HealthArgs,
        slot: watch::Sender<Slot<ActorRef<HealthMsg>>>,
    },
    Retry {
        args: RetryArgs,
        slot: watch::Sender<Slot<ActorRef<RetryMsg>>>,
    },
    Breakers {
        args: BreakerArgs,
        journal_db: DbOptions,
        slot: watch::Sender<Slot<ActorRef<BreakerMsg>>>,
    },
}

struct Child {
    name: &'static str,
    spec: Spec,
    id: Option<ActorId>,
    failures: VecDeque<Instant>,
    restarts: u32,
    last_failure: Option<String>,
}

pub struct SupervisorState {
    policy: SupervisorConfig,
    children: Vec<Child>, // [journal, app, retry, breakers, health]
    roster: watch::Sender<Vec<ActorStatus>>,
    stopping: bool,
}

impl SupervisorState {
    fn writer(&self, index: usize) -> Option<RunningWriter> {
        match &self.children[index].spec {
            Spec::Writer { slot, .. } => match &*slot.borrow() {
                Slot::Running(w) => Some(w.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Publish every child's state for the HealthActor and reports.
    fn publish_roster(&self) {
        let roster = self
            .children
            .iter()
            .map(|c| ActorStatus {
                name: c.name.into(),
                state: c.spec.state(),
                restarts: c.restarts,
                last_failure: c.last_failure.clone(),
            })
            .collect();
        self.roster.send_replace(roster);
    }
}

const JOURNAL: usize = 0;
const APP: usize = 1;
const RETRY: usize = 2;
const BREAKERS: usize = 3;
const HEALTH: usize = 4;

impl Actor for RootSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let writer = |config, slot| Spec::Writer { config, slot };
        let mut state = SupervisorState {
            policy: args.policy,
            children: vec![
                Child::new("journal-writer", writer(args.journal, args.journal_slot)),
                Child::new("writer", writer(args.app, args.app_slot)),
                Child::new(
                    "retry-queue",
                    Spec::Retry {
                        args: args.retry,
                        slot: args.retry_slot,
                    },
                ),
                Child::new(
                    "breakers",
                    Spec::Breakers {
                        args: args.breakers,
                        journal_db: args.journal_db,
                        slot: args.breakers_slot,
                    },
                ),
                Child::new(
                    "health",
                    Spec::Health {
                        args: args.health,
                        slot: args.health_slot,
                    },
                ),
            ],
            roster: args.roster,
            stopping: false,
        };
        // In order: the health actor needs both writers.
        for child in &mut state.children {
            child.start(&myself).await?;
        }
        state.publish_roster();
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
        child.restarts += 1;
        child.last_failure = Some(reason.clone());
        metrics::counter!("resilite_actor_restarts_total", "actor" => child.name).increment(1);
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
            child.spec.set(Slot::Failed(text));
            RestartOutcome::Escalated
        } else {
            tracing::warn!(actor = name, failures = count, %reason, "actor failed; restarting");
            child.spec.set(Slot::Restarting);
            if let Err(e) = child.start(&myself).await {
                let text = format!("{name} could not be restarted: {e}");
                tracing::error!(actor = name, error = %e, "restart failed; escalating");
                child.spec.set(Slot::Failed(text));
            }
            RestartOutcome::Restarted
        };
        state.publish_roster();
        if let Spec::Writer { slot, .. } = &state.children[JOURNAL].spec {
            let journal = slot.subscribe();
            let record = journal::record_restart(name, &reason, count, outcome);
            // Not awaited here: a slow journal must not stall supervision.
            tokio::spawn(async move {
                if let Err(e) = slot::write(&journal, Operation::Statement(record)).await {
                    tracing::warn!(error = %e, "could not record the restart in the journal");
                }
            });
        }
        Ok(())
    }
}

impl Child {
    fn new(name: &'static str, spec: Spec) -> Self {
        Child {
            name,
            spec,
            id: None,
            failures: VecDeque::new(),
            restarts: 0,
            last_failure: None,
        }
    }

    async fn start(&mut self, supervisor: &ActorRef<SupervisorMsg>) -> Result<(), Error> {
        let cell = supervisor.get_cell();
        let id = match &self.spec {
            Spec::Writer { config, slot } => {
                let (actor, _) = WriterActor::spawn_linked(None, WriterActor, config.clone(), cell)
                    .await
                    .map_err(spawn_error)?;
                let handle = ractor::call!(actor, WriterMsg::Handle).map_err(|e| {
                    Error::classed(ErrorClass::Internal, format!("writer handle: {e}"))
                })?;
                let id = actor.get_id();
                slot.send_replace(Slot::Running(RunningWriter { actor, handle }));
                id
            }
            Spec::Health { args, slot } => {
                spawn_published(HealthActor, args.clone(), cell, slot).await?
            }
            Spec::Retry { args, slot } => {
                spawn_published(RetryQueueActor, args.clone(), cell, slot).await?
            }
            Spec::Breakers {
                args,
                journal_db,
                slot,
            } => {
                // Restart from the state journaled last, not the one at startup.
                let mut args = args.clone();
                args.restored =
                    open_read_only(journal_db).and_then(|c| journal::breakers::load(&c))?;
                spawn_published(CircuitBreakerActor, args, cell, slot).await?
            }
        };
        self.id = Some(id);
        Ok(())
    }
}

impl Spec {
    /// Publish a state other than running.
    fn set(&self, state: Slot<()>) {
        match self {
            Spec::Writer { slot, .. } => {
                slot.send_replace(state.down());
            }
            Spec::Health { slot, .. } => {
                slot.send_replace(state.down());
            }
            Spec::Retry { slot, .. } => {
                slot.send_replace(state.down());
            }
            Spec::Breakers { slot, .. } => {
                slot.send_replace(state.down());
            }
        }
    }

    fn state(&self) -> SlotState {
        match self {
            Spec::Writer { slot, .. } => slot.borrow().state(),
            Spec::Health { slot, .. } => slot.borrow().state(),
            Spec::Retry { slot, .. } => slot.borrow().state(),
            Spec::Breakers { slot, .. } => slot.borrow().state(),
        }
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
    // The health and queue actors first: they must not probe, maintain or
    // replay through a stopping writer.
    for index in [HEALTH, BREAKERS, RETRY] {
        match &state.children[index].spec {
            Spec::Health { slot, .. } => stop_published(slot).await,
            Spec::Retry { slot, .. } => stop_published(slot).await,
            Spec::Breakers { slot, .. } => stop_published(slot).await,
            Spec::Writer { .. } => {}
        }
    }
    // Drain each writer and checkpoint its WAL into the file (TRUNCATE), so
    // both files are whole on their own once the process is gone.
    let mut result = Ok(());
    for index in [APP, JOURNAL] {
        if let Some(writer) = state.writer(index) {
            let truncate = Maintenance::Checkpoint(CheckpointMode::Truncate);
            result = result.and(drain(&writer.actor).await).and(
                ractor::call!(writer.actor, |reply| WriterMsg::Maintain {
                    task: truncate,
                    reply
                })
                .map_err(|e| Error::unavailable(e.to_string()))
                .and_then(|r| r.map(|_| ())),
            );
        }
    }
    // Stop the application writer first: the journal may still record its end.
    for index in [APP, JOURNAL] {
        // Keep only the actor, and drop the published handle: the
        // connection thread closes once no handle to it is left.
        let actor = state.writer(index).map(|w| w.actor);
        state.children[index].spec.set(Slot::Stopped);
        if let Some(actor) = actor {
            let _ = actor.stop_and_wait(Some("shutdown".into()), None).await;
        }
    }
    state.publish_roster();
    result
}

/// Spawn `actor` linked to the supervisor and publish it in `slot`.
async fn spawn_published<A: Actor>(
    actor: A,
    args: A::Arguments,
    supervisor: ractor::ActorCell,
    slot: &watch::Sender<Slot<ActorRef<A::Msg>>>,
) -> Result<ActorId, Error> {
    let (actor, _) = A::spawn_linked(None, actor, args, supervisor)
        .await
        .map_err(spawn_error)?;
    let id = actor.get_id();
    slot.send_replace(Slot::Running(actor));
    Ok(id)
}

/// Mark the actor in `slot` stopped, then stop it and wait for it.
async fn stop_published<M: ractor::Message>(slot: &watch::Sender<Slot<ActorRef<M>>>) {
    if let Slot::Running(actor) = slot.send_replace(Slot::Stopped) {
        let _ = actor.stop_and_wait(Some("shutdown".into()), None).await;
    }
}

async fn drain(writer: &ActorRef<WriterMsg>) -> Result<(), Error> {
    ractor::call!(writer, WriterMsg::Drain).map_err(|e| Error::unavailable(e.to_string()))
}
