//! Damage found anywhere starts a recovery: a corruption error met by a
//! query or a write is reported to the HealthActor (CRITICAL at once, a
//! `quick_check`), whose `IntegrityFailed` event (from that, or from a
//! scheduled integrity check) starts [`Runtime::recover_with`], once per
//! damaged file, when `backup.auto_recover` is on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use resilite_actors::health::{HealthEvent, HealthMsg};
use resilite_actors::slot::Slot;
use resilite_actors::{Error, ErrorClass};
use tokio::sync::broadcast::error::RecvError;

use super::Runtime;

/// Longest wait for the checks run after the file was replaced.
const REPLACED_CHECK_WAIT: Duration = Duration::from_secs(60);
/// Longest cause kept in a recovery's `trigger`.
const MAX_TRIGGER_CHARS: usize = 300;

impl Runtime {
    /// Report `result`'s corruption error (if it is one) to the
    /// HealthActor, once until the file is replaced.
    pub(super) fn note_corruption<T>(&self, source: &str, result: &Result<T, Error>) {
        let Err(e) = result else { return };
        if e.class != ErrorClass::Corruption
            || self.inner.corruption_reported.swap(true, Ordering::AcqRel)
        {
            return;
        }
        if let Slot::Running(health) = &*self.inner.health.borrow() {
            let _ = health.send_message(HealthMsg::CorruptionSeen {
                source: source.to_string(),
                detail: e.detail.clone(),
            });
        }
    }

    /// Damage met from now on is reported and recovered afresh (writes
    /// resumed: the file was replaced, or an operator dealt with it).
    pub(super) fn forget_damage(&self) {
        self.inner
            .corruption_reported
            .store(false, Ordering::Release);
        self.inner
            .auto_recovery_spent
            .store(false, Ordering::Release);
    }

    /// The database file was replaced by a good one (a restore or a
    /// recovery succeeded, and resumed writes, which forgot the damage):
    /// health checks the new file now.
    pub(super) async fn file_replaced(&self) {
        let Slot::Running(health) = self.inner.health.borrow().clone() else {
            return;
        };
        let checked = ractor::call_t!(
            health,
            HealthMsg::DatabaseReplaced,
            REPLACED_CHECK_WAIT.as_millis() as u64
        );
        if let Err(e) = checked {
            tracing::warn!(error = %e, "health did not check the replaced database file");
        }
    }

    /// Recover when the integrity check failed, unless recovery is off, the
    /// runtime is closing, a recovery of this damage was tried already,
    /// or the event is stale (a newer report found the file sound).
    async fn recover_damage(&self, detail: &str) {
        if !self.config().backup.auto_recover || self.inner.closing.load(Ordering::Acquire) {
            return;
        }
        if self
            .latest_health()
            .is_some_and(|r| r.integrity.problems().is_none())
        {
            return;
        }
        if self.inner.auto_recovery_spent.swap(true, Ordering::AcqRel) {
            tracing::debug!("damage reported again; recovery was tried already");
            return;
        }
        let cause: String = detail.chars().take(MAX_TRIGGER_CHARS).collect();
        tracing::error!(%cause, "the database is damaged: recovering");
        if let Err(e) = self.recover_with(&format!("automatic: {cause}")).await {
            tracing::error!(error = %e, "automatic recovery failed; it is not tried again until a restore, a recovery or resume_writes");
        }
    }
}

/// Start the task that recovers on `IntegrityFailed`; it ends with the
/// runtime (it holds the runtime only while a recovery runs).
pub(super) fn watch(rt: &Runtime) {
    let weak = Arc::downgrade(&rt.inner);
    let mut events = rt.inner.events.subscribe();
    tokio::spawn(async move {
        loop {
            let detail = match events.recv().await {
                Ok(HealthEvent::IntegrityFailed { detail }) => detail,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            };
            let Some(inner) = weak.upgrade() else { break };
            Runtime { inner }.recover_damage(&detail).await;
        }
    });
}
