//! Hot reload of the configuration (`rt.reload_config()`,
//! `rt.reload_config_from(config)`; `resilite run` on SIGHUP, `POST
//! /v1/config/reload`).
//!
//! A config that does not parse or validate is refused: the runtime keeps
//! the one in effect, the error says why, a `config_rejected` event and a
//! log line record it. A valid one becomes the config in effect, with the
//! keys that need a restart kept at their running values
//! ([`config::effective`](crate::config::effective)); each actor that takes
//! settings live is sent its part by message (health, backup, retry queue,
//! breakers, supervisor), the database breaker, the slow-query log and the
//! log filter are changed in place, and the supervisor's children read the
//! config in effect when they restart. The answer and a `config_change`
//! event list what changed and what waits for a restart.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use resilite_actors::slot::Slot;
use resilite_actors::{Error, Event, Result};
use serde::Serialize;
use tokio::sync::watch;

use super::{health_config, named_breakers, Runtime};
use crate::config::{self, Config, ConfigChange};
use crate::supervisor::SupervisorMsg;

/// Longest wait for an actor to take its new settings.
const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Where the new config came from: its file, or `a Config value`.
    pub source: String,
    /// Every key whose value differs from the running config, sorted.
    pub changes: Vec<ConfigChange>,
    /// The keys among them that take effect only after a restart.
    pub needs_restart: Vec<String>,
}

impl Runtime {
    /// Read the file the runtime's config was loaded from again (with the
    /// process environment's `RESILITE_<SECTION>_<KEY>` overrides, as
    /// [`Config::load`] does) and apply it as
    /// [`reload_config_from`](Self::reload_config_from) does. A runtime
    /// started from a config built in code has no file to read: `Err`
    /// (bad input) says to use `reload_config_from`.
    pub async fn reload_config(&self) -> Result<ReloadReport> {
        let Some(path) = self.config().loaded_from.clone() else {
            return Err(Error::bad_input(
                "this runtime's configuration was not loaded from a file (Config::load): pass the new one to reload_config_from",
            ));
        };
        let source = path.display().to_string();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| Error::classed(resilite_actors::ErrorClass::Internal, e.to_string()))?;
        match loaded {
            Ok(config) => self.apply_config(source, config).await,
            Err(e) => Err(self.refuse(&source, &e.0)),
        }
    }

    /// Validate `config` and make it the configuration in effect: `Err`
    /// (bad input, naming the key and what is allowed) leaves the running
    /// one untouched; `Ok` lists every changed key, applied or waiting for
    /// a restart.
    pub async fn reload_config_from(&self, config: Config) -> Result<ReloadReport> {
        let source = config
            .loaded_from
            .as_ref()
            .map_or_else(|| "a Config value".to_string(), |p| p.display().to_string());
        if let Err(e) = config.validate() {
            return Err(self.refuse(&source, &e.0));
        }
        self.apply_config(source, config).await
    }

    /// Record a refused reload; the error to answer.
    fn refuse(&self, source: &str, reason: &str) -> Error {
        tracing::error!(%source, %reason, "configuration reload refused; keeping the configuration in effect");
        self.record_event(Event::config_rejected(source, reason));
        Error::bad_input(format!(
            "the configuration was not reloaded, the runtime keeps the one in effect: {reason}"
        ))
    }

    async fn apply_config(&self, source: String, new: Config) -> Result<ReloadReport> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let old = self.config();
        let mut changes = config::changes(&old, &new).map_err(|e| self.refuse(&source, &e.0))?;
        let now = Arc::new(config::effective(&old, &new).map_err(|e| self.refuse(&source, &e.0))?);
        // Children restarting from here on start with the new settings.
        self.inner.config.send_replace(now.clone());
        self.send_settings(&now).await;
        self.inner
            .audit
            .slow
            .set_threshold(now.audit.slow_threshold);
        self.inner.database.reconfigure(now.database_breaker());
        if let Some(change) = changes.iter_mut().find(|c| c.key == "log.level") {
            match crate::log_filter::set(&now.log.level) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the log filter was not changed");
                    change.applied = false;
                }
                // No reloadable filter in this process (an embedding
                // application's subscriber, or RESILITE_LOG).
                None => change.applied = false,
            }
        }
        let shown = |c: &ConfigChange| format!("{}: {} → {}", c.key, c.old, c.new);
        let applied: Vec<String> = changes.iter().filter(|c| c.applied).map(shown).collect();
        let pending: Vec<String> = changes
            .iter()
            .filter(|c| c.needs_restart)
            .map(|c| c.key.clone())
            .collect();
        tracing::info!(
            %source,
            applied = %applied.join(", "),
            needs_restart = %pending.join(", "),
            "configuration reloaded"
        );
        self.record_event(Event::config_change(&source, &applied, &pending));
        Ok(ReloadReport {
            source,
            changes,
            needs_restart: pending,
        })
    }

    /// Send each running actor that takes settings live its part of `c`.
    /// An actor that is restarting reads `c` when it starts.
    async fn send_settings(&self, c: &Config) {
        let health = Box::new(health_config(c));
        tell(&self.inner.health, "health", |r| {
            resilite_actors::health::HealthMsg::Reconfigure(health, r)
        })
        .await;
        let backup = Box::new(c.backup_config());
        tell(&self.inner.backup, "backup", |r| {
            resilite_actors::backup::BackupMsg::Reconfigure(backup, r)
        })
        .await;
        let retry = Box::new(c.retry.clone());
        tell(&self.inner.retry, "retry-queue", |r| {
            resilite_actors::retry_queue::RetryMsg::Reconfigure(retry, r)
        })
        .await;
        let breakers = named_breakers(c);
        tell(&self.inner.breakers, "breakers", |r| {
            resilite_actors::breaker::BreakerMsg::Reconfigure(breakers, r)
        })
        .await;
        let policy = c.supervisor.clone();
        let asked = self
            .inner
            .supervisor
            .call(
                |r| SupervisorMsg::Reconfigure(policy, r),
                Some(RECONFIGURE_TIMEOUT),
            )
            .await;
        if !matches!(asked, Ok(ractor::rpc::CallResult::Success(()))) {
            tracing::warn!("the supervisor did not take its new restart policy");
        }
    }
}

/// Ask the actor in `slot`, if it runs, to take its new settings.
async fn tell<M: ractor::Message>(
    slot: &watch::Receiver<Slot<ActorRef<M>>>,
    name: &str,
    msg: impl FnOnce(RpcReplyPort<()>) -> M,
) {
    let actor = match &*slot.borrow() {
        Slot::Running(actor) => actor.clone(),
        _ => return,
    };
    match actor.call(msg, Some(RECONFIGURE_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(())) => {}
        _ => tracing::warn!(
            actor = name,
            "the actor did not take its new settings in time; it gets them when it restarts"
        ),
    }
}
