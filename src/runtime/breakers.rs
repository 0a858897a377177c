//! Circuit breakers as the runtime holds them: the writer's `database`
//! breaker, consulted on every write, and handles to the named breakers.

use std::sync::atomic::Ordering;

use resilite_actors::circuit_breaker::{
    self, Breaker, BreakerHandle, BreakerMsg, BreakerSnapshot, BreakerState, Transition,
};
use resilite_actors::maintenance::now_ms;
use resilite_actors::slot;
use resilite_actors::{Error, Operation, Result};

use super::Runtime;
use crate::config::DATABASE_BREAKER;

/// A write let through by the `database` breaker; its outcome is recorded
/// when it finishes, or the permit is released if the caller gave up.
pub(super) struct DatabasePermit<'a> {
    rt: &'a Runtime,
    finished: bool,
}

impl DatabasePermit<'_> {
    pub(super) fn finish(mut self, success: bool, duration: std::time::Duration) {
        self.finished = true;
        self.rt.record_database_outcome(success, duration);
    }
}

impl Drop for DatabasePermit<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.rt.lock_database_breaker().release();
        }
    }
}

impl Runtime {
    /// Record a write's outcome in the `database` breaker, refresh the quiet
    /// flag under its lock, and announce any transition.
    pub(super) fn record_database_outcome(&self, success: bool, duration: std::time::Duration) {
        let transition = {
            let mut breaker = self.lock_database_breaker();
            let transition = breaker.record(now_ms(), success, duration);
            self.inner
                .database_quiet
                .store(breaker.is_quiet(), Ordering::Relaxed);
            transition
        };
        self.announce(transition);
    }

    /// Ask the `database` breaker to let a write through.
    pub(super) fn database_permit(&self) -> Result<DatabasePermit<'_>> {
        let now = now_ms();
        let (transition, acquired) = {
            let mut breaker = self.lock_database_breaker();
            let transition = breaker.advance(now);
            (transition, breaker.try_acquire(now))
        };
        self.announce(transition);
        acquired?;
        Ok(DatabasePermit {
            rt: self,
            finished: false,
        })
    }

    fn lock_database_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker holds no invariant a panic elsewhere could break.
        self.inner
            .database
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Log, measure and journal a transition of the `database` breaker.
    fn announce(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        let snapshot = self.database_breaker();
        if t.to == BreakerState::Open {
            tracing::warn!(breaker = DATABASE_BREAKER, reason = %t.reason, "circuit breaker opened: writes fail fast, durable writes are queued");
        } else {
            tracing::info!(breaker = DATABASE_BREAKER, to = %t.to, reason = %t.reason, "circuit breaker changed state");
        }
        metrics::gauge!("resilite_breaker_state", "breaker" => DATABASE_BREAKER).set(t.to.gauge());
        metrics::counter!("resilite_breaker_transitions_total", "breaker" => DATABASE_BREAKER, "to" => t.to.as_str()).increment(1);
        let record = Operation::Batch(vec![
            circuit_breaker::state_statement(DATABASE_BREAKER, &snapshot, t.at_ms),
            circuit_breaker::transition_statement(DATABASE_BREAKER, &t),
        ]);
        let journal = self.inner.journal.clone();
        tokio::spawn(async move {
            if let Err(e) = slot::write(&journal, record).await {
                tracing::warn!(detail = %e.detail, "could not record a circuit breaker transition");
            }
        });
    }

    /// The writer's `database` breaker.
    pub fn database_breaker(&self) -> BreakerSnapshot {
        let mut snapshot = self.lock_database_breaker().snapshot();
        snapshot.calls += self.inner.database_quiet_calls.load(Ordering::Relaxed);
        snapshot
    }

    /// Open the `database` breaker until [`resume_writes`](Self::resume_writes):
    /// writes fail fast with `unavailable`, durable writes are queued, reads
    /// go on (e.g. while a restore runs).
    pub fn pause_writes(&self, reason: &str) {
        let transition = {
            let mut breaker = self.lock_database_breaker();
            let transition = breaker.force_open(now_ms(), reason);
            // Under the lock, as every other store of the flag.
            self.inner.database_quiet.store(false, Ordering::Relaxed);
            transition
        };
        self.announce(transition);
    }

    /// Close the `database` breaker; queued writes are replayed.
    pub fn resume_writes(&self) {
        let transition = self.lock_database_breaker().reset(now_ms());
        self.announce(transition);
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
        let actor = slot::running(&mut self.inner.breakers.clone()).await?;
        let named = ractor::call!(actor, BreakerMsg::Snapshot).map_err(|e| {
            Error::unavailable(format!("the circuit breaker actor did not answer: {e}"))
        })?;
        let mut all = vec![self.database_breaker()];
        all.extend(named);
        Ok(all)
    }
}
