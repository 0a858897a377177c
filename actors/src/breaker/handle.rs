//! [`BreakerHandle`]: one named breaker of the CircuitBreakerActor, to wrap
//! calls to a dependency with. It follows the actor across restarts, and
//! gives back the permit of a call that was dropped before it finished.

use std::future::Future;
use std::time::Instant;

use ractor::ActorRef;
use tokio::sync::watch;

use super::{Breaker, BreakerConfig, BreakerError, BreakerMsg, BreakerSnapshot};
use crate::error::{Error, Result};
use crate::slot::{self, Slot};

/// One named breaker of a CircuitBreakerActor, to wrap calls with.
/// Cloneable; it follows the actor across supervisor restarts.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    /// The breaker.
    pub name: String,
    actors: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
}

/// Releases the permit of a call whose future was dropped before it
/// finished (cancelled, timed out, panicked).
struct Permit<'a> {
    name: &'a str,
    actor: ActorRef<BreakerMsg>,
    finished: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let name = self.name.to_owned();
            let _ = self.actor.cast(BreakerMsg::Release { name });
        }
    }
}

impl BreakerHandle {
    /// The handle of breaker `name` of the actor published in `actors`.
    pub fn new(
        name: impl Into<String>,
        actors: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
    ) -> Self {
        BreakerHandle {
            name: name.into(),
            actors,
        }
    }

    async fn actor(&self) -> Result<ActorRef<BreakerMsg>> {
        slot::running(&mut self.actors.clone()).await
    }

    /// Run `fut` through the breaker: rejected without polling it when the
    /// breaker is open; otherwise timed, and its outcome recorded (`Err`
    /// counts as a failure).
    ///
    /// If the breaker actor does not answer, the call goes ahead: a broken
    /// breaker must not take the dependency down with it.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let acquired = match self.actor().await {
            Ok(actor) => ractor::call!(actor, |reply| BreakerMsg::Acquire {
                name: self.name.clone(),
                reply,
            })
            .map(|r| (actor, r))
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.detail),
        };
        let actor = match acquired {
            Ok((actor, Ok(()))) => actor,
            Ok((_, Err(open))) => return Err(BreakerError::Open(open)),
            Err(e) => {
                tracing::warn!(breaker = %self.name, error = %e, "the circuit breaker did not answer; letting the call through");
                return fut.await.map_err(BreakerError::Inner);
            }
        };
        let mut permit = Permit {
            name: &self.name,
            actor: actor.clone(),
            finished: false,
        };
        let started = Instant::now();
        let result = fut.await;
        permit.finished = true;
        let _ = actor.cast(BreakerMsg::Record {
            name: self.name.clone(),
            success: result.is_ok(),
            duration: started.elapsed(),
        });
        result.map_err(BreakerError::Inner)
    }

    /// Open the breaker until [`reset`](Self::reset) (operators, e.g. while
    /// a restore runs).
    pub async fn force_open(&self, reason: &str) -> Result<BreakerSnapshot> {
        let actor = self.actor().await?;
        ractor::call!(actor, |reply| BreakerMsg::ForceOpen {
            name: self.name.clone(),
            reason: reason.to_owned(),
            reply,
        })
        .map_err(|e| Error::unavailable(format!("the circuit breaker actor did not answer: {e}")))
    }

    /// Close the breaker and forget its failures.
    pub async fn reset(&self) -> Result<BreakerSnapshot> {
        let actor = self.actor().await?;
        ractor::call!(actor, |reply| BreakerMsg::Reset {
            name: self.name.clone(),
            reply,
        })
        .map_err(|e| Error::unavailable(format!("the circuit breaker actor did not answer: {e}")))
    }

    /// Wait until every transition of the actor's breakers so far is in
    /// the journal: `true`, or `false` when one could not be written.
    pub async fn flush(&self) -> Result<bool> {
        let actor = self.actor().await?;
        ractor::call!(actor, BreakerMsg::Flush).map_err(|e| {
            Error::unavailable(format!("the circuit breaker actor did not answer: {e}"))
        })
    }

    /// The breaker's snapshot (closed and empty if it was never used).
    pub async fn state(&self) -> Result<BreakerSnapshot> {
        let actor = self.actor().await?;
        let all = ractor::call!(actor, BreakerMsg::Snapshot).map_err(|e| {
            Error::unavailable(format!("the circuit breaker actor did not answer: {e}"))
        })?;
        Ok(all
            .into_iter()
            .find(|s| s.name.as_deref() == Some(self.name.as_str()))
            .unwrap_or_else(|| {
                Breaker::named(self.name.clone(), BreakerConfig::default()).snapshot()
            }))
    }
}
