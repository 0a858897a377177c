//! Health questions, answered by the HealthActor, and the resource
//! samples it stores in the journal.

use std::sync::Arc;

use resilite_actors::health::{HealthEvent, HealthMsg, HealthReport};
use resilite_actors::journal::resources::{self, ResourceSample};
use resilite_actors::slot;
use resilite_actors::{Error, Maintenance, MaintenanceRun, Result};
use tokio::sync::broadcast;

use super::Runtime;

impl Runtime {
    /// The latest health report; runs the checks first if none has
    /// finished since start.
    pub async fn health(&self) -> Result<HealthReport> {
        match self.latest_health() {
            Some(report) => Ok((*report).clone()),
            None => self.check_now().await,
        }
    }

    /// The latest health report, if a check has finished since start.
    pub fn latest_health(&self) -> Option<Arc<HealthReport>> {
        self.inner.latest.borrow().clone()
    }

    /// Run every health check now (the full integrity check included),
    /// record the result and return it.
    pub async fn check_now(&self) -> Result<HealthReport> {
        let health = slot::running(&mut self.inner.health.clone()).await?;
        ractor::call!(health, HealthMsg::CheckNow)
            .map_err(|e| Error::unavailable(format!("the health actor did not answer: {e}")))
    }

    /// Run a maintenance task (checkpoint, VACUUM, optimize) through the
    /// writer, between two transactions, and record it in the journal.
    pub async fn maintain(&self, task: Maintenance) -> Result<MaintenanceRun> {
        let health = slot::running(&mut self.inner.health.clone()).await?;
        ractor::call!(health, |reply| HealthMsg::Maintain { task, reply })
            .map_err(|e| Error::unavailable(format!("the health actor did not answer: {e}")))?
    }

    /// Health events (status changes, integrity failures) from now on.
    pub fn health_events(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// The newest `limit` resource samples (memory, CPU, descriptors, file
    /// sizes, free disk, queue depth, write rate), newest first; one is
    /// taken every `[health] resource_interval`. `limit` is 1 to 10000.
    pub async fn resource_samples(&self, limit: usize) -> Result<Vec<ResourceSample>> {
        let limit = resource_limit(Some(limit))?;
        self.read_journal(move |c| resources::list(c, limit)).await
    }
}

/// The number of resource samples to list: `limit`, checked, or the
/// default.
pub(crate) fn resource_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(resources::DEFAULT_LIST),
        Some(n) if (1..=resources::MAX_LIST).contains(&n) => Ok(n),
        Some(n) => Err(Error::bad_input(format!(
            "limit = {n} is invalid: give between 1 and {} resource samples",
            resources::MAX_LIST
        ))),
    }
}
