//! Circuit breakers as the runtime holds them: the writer's `database`
//! breaker ([`DatabaseBreaker`](resilite_actors::breaker::DatabaseBreaker),
//! consulted on every write) and handles to the named breakers.

use std::sync::Arc;
use std::time::Duration;

use resilite_actors::breaker::{self, BreakerHandle, BreakerSnapshot};
use resilite_actors::slot;
use resilite_actors::{Error, Result};

use super::Runtime;
use crate::config::DATABASE_BREAKER;

/// Longest wait for the circuit breaker actor's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause before a recovery probe of the database; each next one
/// doubles, up to the breaker's `open_for`.
const FIRST_PROBE: Duration = Duration::from_millis(100);

impl Runtime {
    /// The writer's `database` breaker.
    pub fn database_breaker(&self) -> BreakerSnapshot {
        self.inner.database.snapshot()
    }

    /// Open the `database` breaker until [`resume_writes`](Self::resume_writes):
    /// writes fail fast with `unavailable`, durable writes are queued, reads
    /// go on (e.g. while a restore runs).
    pub fn pause_writes(&self, reason: &str) {
        self.inner.database.force_open(reason);
    }

    /// Close the `database` breaker; queued writes are replayed. Damage met
    /// from then on is reported and recovered afresh.
    pub fn resume_writes(&self) {
        self.forget_damage();
        self.inner.database.reset();
        self.wake_queue();
    }

    /// The named circuit breaker `name`, to wrap calls to a dependency:
    /// `rt.breaker("smtp")?.call(send(mail)).await`. Configured in
    /// `[breakers.<name>]`; other names get the defaults. `database` is the
    /// writer's own breaker: see [`database_breaker`](Self::database_breaker).
    pub fn breaker(&self, name: &str) -> Result<BreakerHandle> {
        if name == DATABASE_BREAKER {
            return Err(Error::bad_input(
                "`database` is the writer's built-in breaker: use database_breaker(), pause_writes() and resume_writes()",
            ));
        }
        Ok(BreakerHandle::new(name, self.inner.breakers.clone()))
    }

    /// Every circuit breaker's state, `database` first.
    pub async fn breakers(&self) -> Result<Vec<BreakerSnapshot>> {
        breaker::snapshots(&self.inner.database, &self.inner.breakers, ASK_TIMEOUT).await
    }
}

/// Probe the database while its breaker is open by itself: a real write
/// (the health check's write probe) after 100 ms, then at doubling pauses
/// up to `open_for`; the first that passes half-opens the breaker at once
/// and wakes the retry queue, so a database back after a short outage
/// takes writes again within a fraction of a second, not after `open_for`.
/// A breaker forced open (a restore, a recovery) is not probed. The named
/// breakers keep their time-based open period: they guard remote
/// dependencies that are not cheap to probe.
///
/// The task ends with the runtime: it holds the runtime weakly, and the
/// config's sender (which only the runtime holds) closing wakes it from
/// its wait. Left waiting, it would keep the breaker, and the event and
/// journal tasks behind the breaker's senders, for as long as the process.
pub(super) fn probe_database(rt: &Runtime) {
    let weak = Arc::downgrade(&rt.inner);
    let database = rt.inner.database.clone();
    let mut runtime_alive = rt.inner.config.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = database.opened() => {}
                changed = runtime_alive.changed() => match changed {
                    Ok(()) => continue, // a reload
                    Err(_) => return,   // the runtime is gone
                },
            }
            let mut pause = FIRST_PROBE;
            while database.needs_probe() {
                tokio::time::sleep(pause).await;
                let Some(inner) = weak.upgrade() else { return };
                if !inner.database.needs_probe() {
                    break;
                }
                if slot::probe(&inner.app).await.is_ok() {
                    tracing::info!("database recovery probe passed: the breaker half-opens");
                    inner.database.probe_passed();
                    Runtime { inner }.wake_queue();
                    break;
                }
                pause = (pause * 2).min(database.open_for().max(FIRST_PROBE));
            }
        }
    });
}
