//! The health history and the maintenance log: tables `health_history` and
//! `maintenance_runs`. The statements that record a check or a maintenance
//! run (figures as columns, so they can be queried and plotted) and prune
//! rows older than the retention period; the HealthActor sends them to the
//! journal writer.

use std::time::Duration;

use super::AT_TEXT;
use crate::error::Error;
use crate::health::HealthReport;
use crate::maintenance::{Maintenance, MaintenanceRun};
use crate::slot::SlotState;
use crate::value::{Statement, Value};

/// The statement that stores `report` in `health_history`.
pub fn record(report: &HealthReport) -> Statement {
    let f = &report.figures;
    let failed = report
        .actors
        .iter()
        .filter(|a| a.state == SlotState::Failed)
        .count();
    let restarts: u32 = report.actors.iter().map(|a| a.restarts).sum();
    let actions: Vec<&str> = report
        .recommendations
        .iter()
        .map(|r| r.action.as_str())
        .collect();
    Statement::new(
        format!(
            "INSERT INTO health_history (at_ms, at, status, rule, integrity, full_integrity_check, \
             db_bytes, wal_bytes, shm_bytes, page_count, page_size, freelist_count, utilization_pct, \
             disk_free_bytes, disk_free_pct, read_probe_ms, write_probe_ms, foreign_key_violations, \
             actors_failed, actor_restarts, recommendations) \
             VALUES (?1, {AT_TEXT}, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
        ),
        [
            Value::Integer(report.checked_at_ms),
            Value::from(report.status.as_str()),
            Value::from(report.rule.as_str()),
            Value::from(report.integrity.as_str()),
            Value::Integer(report.full_integrity_check.into()),
            Value::from(f.db_bytes),
            Value::from(f.wal_bytes),
            Value::from(f.shm_bytes),
            Value::Integer(f.page_count),
            Value::Integer(f.page_size),
            Value::Integer(f.freelist_count),
            Value::Real(f.utilization_pct),
            Value::from(f.disk_free_bytes),
            Value::Real(f.disk_free_pct),
            Value::Real(f.read_probe_ms),
            f.write_probe_ms.map_or(Value::Null, Value::Real),
            Value::Integer(f.foreign_key_violations),
            Value::from(failed as u64),
            Value::Integer(restarts.into()),
            Value::from(actions.join(",").as_str()),
        ],
    )
}

/// The statements that delete history and maintenance rows older than
/// `retention` before `now_ms`.
pub fn prune(now_ms: i64, retention: Duration) -> Vec<Statement> {
    let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    ["health_history", "maintenance_runs"]
        .into_iter()
        .map(|table| {
            Statement::new(
                format!("DELETE FROM {table} WHERE at_ms < ?1"),
                [Value::Integer(cutoff)],
            )
        })
        .collect()
}

fn mode(task: Maintenance) -> Value {
    match task {
        Maintenance::Checkpoint(mode) => Value::from(mode.as_str()),
        _ => Value::Null,
    }
}

/// The statement that stores a finished maintenance run.
pub fn record_maintenance(run: &MaintenanceRun, trigger: &str, detail: Option<&str>) -> Statement {
    let busy = run.checkpoint.is_some_and(|c| c.busy);
    Statement::new(
        format!(
            "INSERT INTO maintenance_runs (at_ms, at, task, mode, trigger, duration_ms, bytes_before, \
             bytes_after, bytes_reclaimed, outcome, detail) \
             VALUES (?1, {AT_TEXT}, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        [
            Value::Integer(run.started_at_ms),
            Value::from(run.task.name()),
            mode(run.task),
            Value::from(trigger),
            Value::Real(run.duration_ms),
            Value::from(run.bytes_before),
            Value::from(run.bytes_after),
            Value::from(run.bytes_reclaimed()),
            Value::from(if busy { "busy" } else { "done" }),
            detail.map_or(Value::Null, Value::from),
        ],
    )
}

/// The statement that stores a maintenance run that failed.
pub fn record_failed_maintenance(task: Maintenance, trigger: &str, error: &Error) -> Statement {
    Statement::new(
        format!(
            "INSERT INTO maintenance_runs (at_ms, at, task, mode, trigger, outcome, detail) \
             VALUES (?1, {AT_TEXT}, ?2, ?3, ?4, 'failed', ?5)"
        ),
        [
            Value::Integer(crate::maintenance::now_ms()),
            Value::from(task.name()),
            mode(task),
            Value::from(trigger),
            Value::from(error.detail.as_str()),
        ],
    )
}
