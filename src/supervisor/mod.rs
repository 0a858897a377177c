//! RootSupervisor: starts the runtime's actors, restarts one that fails and
//! escalates past the restart limit (OTP's one-for-one with intensity: at
//! most `max_restarts` restarts within `restart_window`).
//!
//! The supervisor holds a list of [`Child`]ren, started in list order and
//! stopped in reverse order. Each publishes itself in a slot (a watch
//! channel) that handles read, so a restart is invisible to callers beyond
//! a short wait. Every restart and escalation is logged and recorded in the
//! journal's restart log, with an event explaining it. On [`SupervisorMsg::Shutdown`] each child
//! finishes its work and stops (a writer commits what it was given and
//! checkpoints its file), then the supervisor stops.
//!
//! Adding an actor: implement it in the actors crate, then add one line to
//! the list in `Runtime::start` (an [`ActorChild`], or a [`WriterChild`]).

mod child;

use std::collections::VecDeque;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use resilite_actors::journal::{self, RestartOutcome};
use resilite_actors::slot::{self, ActorStatus, Slot, WriterSlot};
use resilite_actors::{Error, Event, Operation, Statement};
use tokio::sync::{mpsc, watch};

pub use child::{spawn_error, ActorChild, Child, WriterChild};

use crate::config::SupervisorConfig;

/// Messages of the RootSupervisor.
pub enum SupervisorMsg {
    /// Stop every child in reverse order (writers commit and checkpoint
    /// first), then answer.
    Shutdown(RpcReplyPort<Result<(), Error>>),
    /// Take a new restart intensity (a reload); the failures already
    /// counted stay counted. Answers once in place.
    Reconfigure(SupervisorConfig, RpcReplyPort<()>),
}

/// What the supervisor needs to start.
pub struct SupervisorArgs {
    /// Restart intensity.
    pub policy: SupervisorConfig,
    /// The children, in start order.
    pub children: Vec<Box<dyn Child>>,
    /// The journal writer, where restarts are recorded.
    pub journal: watch::Receiver<WriterSlot>,
    /// Where every child's state is published for reports.
    pub roster: watch::Sender<Vec<ActorStatus>>,
}

pub struct RootSupervisor;

/// A child and what the supervisor knows of it.
struct Supervised {
    child: Box<dyn Child>,
    id: Option<ActorId>,
    failures: VecDeque<Instant>,
    restarts: u32,
    last_failure: Option<String>,
}

pub struct SupervisorState {
    policy: SupervisorConfig,
    children: Vec<Supervised>,
    /// Restart records (with the event explaining each), written to the
    /// journal in order by one task.
    records: mpsc::UnboundedSender<Vec<Statement>>,
    roster: watch::Sender<Vec<ActorStatus>>,
    stopping: bool,
}

impl SupervisorState {
    /// Publish every child's state for the HealthActor and reports.
    fn publish_roster(&self) {
        let roster = self
            .children
            .iter()
            .map(|c| ActorStatus {
                name: c.child.name().into(),
                state: c.child.state(),
                restarts: c.restarts,
                last_failure: c.last_failure.clone(),
            })
            .collect();
        self.roster.send_replace(roster);
    }

    /// Record a restart or escalation in the journal, without waiting: a
    /// slow journal must not stall supervision. One task writes them, so
    /// they are in the journal in the order they happened.
    fn record(&self, name: &str, reason: &str, count: u32, outcome: RestartOutcome) {
        let _ = self.records.send(vec![
            journal::record_restart(name, reason, count, outcome),
            Event::restart(name, reason, count, outcome).statement(),
        ]);
    }
}

/// The task that writes restart records to the journal, in order; it ends
/// when the supervisor's state (the sender) is dropped.
fn record_writer(journal: watch::Receiver<WriterSlot>) -> mpsc::UnboundedSender<Vec<Statement>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Statement>>();
    tokio::spawn(async move {
        while let Some(record) = rx.recv().await {
            if let Err(e) = slot::write(&journal, Operation::Batch(record)).await {
                tracing::warn!(error = %e, "could not record the restart in the journal");
            }
        }
    });
    tx
}

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
            children: args.children.into_iter().map(Supervised::new).collect(),
            records: record_writer(args.journal),
            roster: args.roster,
            stopping: false,
        };
        // In order: a child may need the ones before it (health needs both
        // writers, and every restart is recorded through the journal writer).
        for supervised in &mut state.children {
            supervised.id = Some(supervised.child.start(myself.get_cell()).await?);
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
            SupervisorMsg::Reconfigure(policy, reply) => {
                state.policy = policy;
                let _ = reply.send(());
            }
            SupervisorMsg::Shutdown(reply) => {
                state.stopping = true;
                let mut result = Ok(());
                for supervised in state.children.iter().rev() {
                    result = result.and(supervised.child.stop().await);
                }
                state.publish_roster();
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
        let Some(supervised) = state
            .children
            .iter_mut()
            .find(|c| c.id == Some(cell.get_id()))
        else {
            return Ok(());
        };
        let (name, count, outcome) = supervised.restart(&state.policy, &reason, &myself).await;
        state.publish_roster();
        state.record(name, &reason, count, outcome);
        Ok(())
    }
}

impl Supervised {
    fn new(child: Box<dyn Child>) -> Self {
        Supervised {
            child,
            id: None,
            failures: VecDeque::new(),
            restarts: 0,
            last_failure: None,
        }
    }

    /// Count the failure in the restart window; restart the child, or
    /// escalate past the limit. Its name, the failures in the window and
    /// what was done.
    async fn restart(
        &mut self,
        policy: &SupervisorConfig,
        reason: &str,
        supervisor: &ActorRef<SupervisorMsg>,
    ) -> (&'static str, u32, RestartOutcome) {
        let name = self.child.name();
        self.id = None;
        self.restarts += 1;
        self.last_failure = Some(reason.to_string());
        metrics::counter!("resilite_actor_restarts_total", "actor" => name).increment(1);
        let now = Instant::now();
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.restart_window)
        {
            self.failures.pop_front();
        }
        let count = self.failures.len() as u32;
        if count > policy.max_restarts {
            let text = format!(
                "{name} failed {count} times within {} (supervisor.max_restarts = {}); last failure: {reason}. \
                 Fix the cause and restart resilite; the journal's actor_restarts table has the history",
                humantime::format_duration(policy.restart_window),
                policy.max_restarts
            );
            tracing::error!(actor = name, failures = count, %reason, "restart limit reached; escalating");
            self.child.set(Slot::Failed(text));
            return (name, count, RestartOutcome::Escalated);
        }
        tracing::warn!(actor = name, failures = count, %reason, "actor failed; restarting");
        self.child.set(Slot::Restarting);
        match self.child.start(supervisor.get_cell()).await {
            Ok(id) => {
                self.id = Some(id);
                (name, count, RestartOutcome::Restarted)
            }
            Err(e) => {
                tracing::error!(actor = name, error = %e, "restart failed; escalating");
                self.child
                    .set(Slot::Failed(format!("{name} could not be restarted: {e}")));
                (name, count, RestartOutcome::Escalated)
            }
        }
    }
}
