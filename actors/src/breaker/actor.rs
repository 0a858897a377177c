//! CircuitBreakerActor: the named application breakers, one [`Breaker`]
//! per name, created closed on first use with the configuration of
//! `[breakers.<name>]` (or the defaults). It answers for their state by
//! message, and announces every transition (log, metrics, journal) without
//! waiting on the journal. A restart rebuilds the breakers from the state
//! journaled last ([`BreakerArgs::restored`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use super::announce::{set_gauge, Announcer};
use super::{
    Breaker, BreakerConfig, BreakerOpen, BreakerSnapshot, BreakerState, DatabaseBreaker, Transition,
};
use crate::error::Error;
use crate::maintenance::now_ms;
use crate::slot::{self, Slot, WriterSlot};

/// What the CircuitBreakerActor needs; cloned for each (re)start.
#[derive(Clone)]
pub struct BreakerArgs {
    /// Breakers configured by name (created at start).
    pub configs: BTreeMap<String, BreakerConfig>,
    /// The configuration of breakers first used by a name not configured.
    pub default: BreakerConfig,
    /// The journal writer (state and transitions).
    pub journal: watch::Receiver<WriterSlot>,
    /// The breakers as journaled before the restart
    /// ([`load`](crate::journal::breakers::load)).
    pub restored: Vec<BreakerSnapshot>,
}

/// Messages of the CircuitBreakerActor.
pub enum BreakerMsg {
    /// May a call through breaker `name` go ahead?
    Acquire {
        /// The breaker.
        name: String,
        /// `Ok` to go ahead; `Err` when rejected.
        reply: RpcReplyPort<Result<(), BreakerOpen>>,
    },
    /// The outcome of a call that was let through.
    Record {
        /// The breaker.
        name: String,
        /// Whether the call succeeded.
        success: bool,
        /// How long it took.
        duration: Duration,
    },
    /// A call that was let through was cancelled before its outcome.
    Release {
        /// The breaker.
        name: String,
    },
    /// Every breaker's snapshot, by name.
    Snapshot(RpcReplyPort<Vec<BreakerSnapshot>>),
    /// Open a breaker until it is reset (operators, e.g. during a restore).
    ForceOpen {
        /// The breaker.
        name: String,
        /// Why, for the log and the journal.
        reason: String,
        /// The breaker afterwards.
        reply: RpcReplyPort<BreakerSnapshot>,
    },
    /// Close a breaker and forget its failures (operators).
    Reset {
        /// The breaker.
        name: String,
        /// The breaker afterwards.
        reply: RpcReplyPort<BreakerSnapshot>,
    },
    /// Answered once every transition so far is in the journal: `true`, or
    /// `false` when one could not be written. The actor does not wait for
    /// it.
    Flush(RpcReplyPort<bool>),
    /// Take new configurations by name (a reload): each breaker keeps its
    /// state and takes its new thresholds; a breaker no longer configured
    /// takes the default. Answers once in place.
    Reconfigure(BTreeMap<String, BreakerConfig>, RpcReplyPort<()>),
}

/// The CircuitBreakerActor. Spawn it with [`BreakerArgs`].
pub struct CircuitBreakerActor;

/// The breakers by name, with the configuration of new ones.
pub struct BreakerActorState {
    configs: BTreeMap<String, BreakerConfig>,
    default: BreakerConfig,
    breakers: HashMap<String, Breaker>,
    announcer: Announcer,
}

impl BreakerActorState {
    /// Breaker `name`, created closed on first use.
    fn breaker(&mut self, name: &str) -> &mut Breaker {
        let (configs, default) = (&self.configs, &self.default);
        self.breakers.entry(name.to_owned()).or_insert_with(|| {
            set_gauge(name, BreakerState::Closed);
            Breaker::named(name, configs.get(name).unwrap_or(default).clone())
        })
    }

    /// Log, measure and journal a transition of breaker `name`.
    fn announce(&self, name: &str, transition: Option<Transition>) {
        let (Some(t), Some(breaker)) = (transition, self.breakers.get(name)) else {
            return;
        };
        self.announcer.announce(name, &breaker.snapshot(), &t);
    }

    /// Ask breaker `name` to let a call through.
    fn acquire(&mut self, name: &str, now: i64) -> Result<(), BreakerOpen> {
        let breaker = self.breaker(name);
        let transition = breaker.advance(now);
        let result = breaker.try_acquire(now);
        self.announce(name, transition);
        result
    }

    /// Apply an operator's action to breaker `name`; its snapshot after.
    fn operate(
        &mut self,
        name: &str,
        action: impl FnOnce(&mut Breaker) -> Option<Transition>,
    ) -> BreakerSnapshot {
        let transition = action(self.breaker(name));
        self.announce(name, transition);
        self.breaker(name).snapshot()
    }

    /// Every breaker's snapshot, by name.
    fn snapshots(&self) -> Vec<BreakerSnapshot> {
        let mut all: Vec<BreakerSnapshot> = self.breakers.values().map(Breaker::snapshot).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

impl Actor for CircuitBreakerActor {
    type Msg = BreakerMsg;
    type State = BreakerActorState;
    type Arguments = BreakerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<BreakerMsg>,
        args: BreakerArgs,
    ) -> Result<BreakerActorState, ActorProcessingErr> {
        let announcer = Announcer::start(args.journal.clone(), "circuit breaker opened");
        let mut breakers = HashMap::new();
        for (name, config) in &args.configs {
            breakers.insert(name.clone(), Breaker::named(name, config.clone()));
        }
        for snapshot in &args.restored {
            let Some(name) = &snapshot.name else {
                continue;
            };
            let config = args.configs.get(name).unwrap_or(&args.default).clone();
            breakers.insert(name.clone(), Breaker::restore(config, snapshot));
        }
        for (name, breaker) in &breakers {
            set_gauge(name, breaker.state());
        }
        Ok(BreakerActorState {
            configs: args.configs,
            default: args.default,
            breakers,
            announcer,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<BreakerMsg>,
        msg: BreakerMsg,
        state: &mut BreakerActorState,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        match msg {
            BreakerMsg::Acquire { name, reply } => {
                let _ = reply.send(state.acquire(&name, now));
            }
            BreakerMsg::Record {
                name,
                success,
                duration,
            } => {
                let transition = state.breaker(&name).record(now, success, duration);
                state.announce(&name, transition);
            }
            BreakerMsg::Release { name } => state.breaker(&name).release(),
            BreakerMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshots());
            }
            BreakerMsg::ForceOpen {
                name,
                reason,
                reply,
            } => {
                let _ = reply.send(state.operate(&name, |b| b.force_open(now, &reason)));
            }
            BreakerMsg::Reset { name, reply } => {
                let _ = reply.send(state.operate(&name, |b| b.reset(now)));
            }
            BreakerMsg::Reconfigure(configs, reply) => {
                state.configs = configs;
                let (configs, default) = (&state.configs, &state.default);
                for (name, breaker) in state.breakers.iter_mut() {
                    breaker.set_config(configs.get(name).unwrap_or(default).clone());
                }
                let _ = reply.send(());
            }
            BreakerMsg::Flush(reply) => {
                let flushed = state.announcer.flush();
                tokio::spawn(async move {
                    let _ = reply.send(flushed.await);
                });
            }
        }
        Ok(())
    }
}

/// Every breaker's state: the database breaker first, then the named ones
/// as the [`CircuitBreakerActor`] running in `named` answers (within
/// `timeout`).
pub async fn snapshots(
    database: &DatabaseBreaker,
    named: &watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
    timeout: Duration,
) -> crate::Result<Vec<BreakerSnapshot>> {
    let actor = slot::running(&mut named.clone()).await?;
    let named = actor
        .call(BreakerMsg::Snapshot, Some(timeout))
        .await
        .map_err(|e| {
            Error::unavailable(format!("the circuit breaker actor did not answer: {e}"))
        })?;
    let answered = match named {
        ractor::rpc::CallResult::Success(all) => all,
        _ => {
            return Err(Error::unavailable(format!(
                "the circuit breaker actor did not answer within {timeout:?}"
            )))
        }
    };
    let mut all = vec![database.snapshot()];
    all.extend(answered);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::breaker::{BreakerError, BreakerHandle, FORCED_OPEN_UNTIL_MS};
    use crate::connection::open_read_only;
    use crate::error::Error;
    use crate::journal::breakers::load;

    /// Spawn the actor and a handle to its breaker `name`.
    async fn spawn(args: BreakerArgs, name: &str) -> (ActorRef<BreakerMsg>, BreakerHandle) {
        let (actor, _) = Actor::spawn(None, CircuitBreakerActor, args).await.unwrap();
        let handle = BreakerHandle::new(name, watch::channel(Slot::Running(actor.clone())).1);
        (actor, handle)
    }

    /// Operators: reset `db`, then force open an unknown (default) breaker.
    async fn reset_and_force_open(actor: &ActorRef<BreakerMsg>) {
        let reset = ractor::call!(actor, |reply| BreakerMsg::Reset {
            name: "db".into(),
            reply
        })
        .unwrap();
        assert_eq!(reset.state, BreakerState::Closed);
        let forced = ractor::call!(actor, |reply| BreakerMsg::ForceOpen {
            name: "restore".into(),
            reason: "restoring a backup".into(),
            reply
        })
        .unwrap();
        assert_eq!(forced.open_until_ms, Some(FORCED_OPEN_UNTIL_MS));
        let all = ractor::call!(actor, BreakerMsg::Snapshot).unwrap();
        let names: Vec<_> = all.iter().filter_map(|s| s.name.as_deref()).collect();
        assert_eq!(names, ["db", "restore"]);
    }

    #[tokio::test]
    async fn actor_rejects_without_polling_and_journals_transitions() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _slot, journal, db) = crate::journal::test_writer(&dir).await;
        let mut configs = BTreeMap::new();
        configs.insert(
            "db".to_owned(),
            BreakerConfig {
                consecutive_failures: 2,
                open_for: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
        );
        let args = BreakerArgs {
            configs,
            default: BreakerConfig::default(),
            journal,
            restored: vec![],
        };
        let (actor, db_breaker) = spawn(args, "db").await;

        assert_eq!(
            db_breaker.call(async { Ok::<_, Error>(7) }).await.unwrap(),
            7
        );
        for _ in 0..2 {
            let r = db_breaker
                .call(async { Err::<(), _>(Error::unavailable("down")) })
                .await;
            assert!(matches!(r, Err(BreakerError::Inner(_))));
        }
        let polled = AtomicBool::new(false);
        let r = db_breaker
            .call(async {
                polled.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await;
        let Err(BreakerError::Open(open)) = r else {
            panic!("expected a rejection, got {r:?}");
        };
        assert!(!polled.load(Ordering::SeqCst));
        assert_eq!(open.name, "db");
        assert!(open.retry_after > Duration::from_secs(50), "{open:?}");
        let state = db_breaker.state().await.unwrap();
        assert_eq!(state.state, BreakerState::Open);
        assert_eq!((state.calls, state.failures, state.rejected), (3, 2, 1));

        reset_and_force_open(&actor).await;

        // The journal task writes behind the actor: a flush waits for the
        // 3 transitions (open, closed, forced open).
        assert!(
            db_breaker.flush().await.unwrap(),
            "every transition written"
        );
        let reader = open_read_only(&db).unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM breaker_transitions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3, "{n} transitions journaled");
        let states = load(&reader).unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].name.as_deref(), Some("db"));
        assert_eq!(states[0].state, BreakerState::Closed);
        assert_eq!(states[1].state, BreakerState::Open);
        let reasons: Vec<String> = reader
            .prepare("SELECT to_state || ': ' || reason FROM breaker_transitions ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            reasons[0].starts_with("open: 2 consecutive failures"),
            "{reasons:?}"
        );
        assert_eq!(reasons[1], "closed: reset by an operator");
        assert_eq!(reasons[2], "open: forced open: restoring a backup");

        // A restart restores the journaled state.
        actor.stop(None);
        let args = BreakerArgs {
            configs: BTreeMap::new(),
            default: BreakerConfig::default(),
            journal: watch::channel(Slot::Stopped).1,
            restored: states,
        };
        let (actor, restore) = spawn(args, "restore").await;
        let r = restore.call(async { Ok::<_, Error>(()) }).await;
        assert!(matches!(r, Err(BreakerError::Open(_))), "{r:?}");
        actor.stop(None);
        writer.stop(None);
    }
}
