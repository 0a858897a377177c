//! HealthActor: runs the health checks on their schedules, adds the write
//! probe (a round trip through the writer) and the actors' states, records
//! every result in the journal's health history (pruned by age), publishes
//! the latest report and metrics, emits events, and runs maintenance
//! through the writer (automatic checkpoint, VACUUM when idle, periodic
//! `PRAGMA optimize`, or on demand), recording each run. On a second timer
//! it takes resource samples (see `resources`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::inspect::{measure, Checks, IntegrityCheck};
use super::resources::{self, Asked, Previous};
use super::{BackupFigures, HealthConfig, HealthEvent, HealthReport, HealthStatus, Integrity};
use crate::breaker::{self, BreakerMsg, BreakerSnapshot, DatabaseBreaker};
use crate::connection::{read_blocking, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::error_log::{ErrorLog, DEFAULT_FLUSH_EVERY};
use crate::events::Event;
use crate::journal::health as history;
use crate::maintenance::{CheckpointMode, Maintenance, MaintenanceRun};
use crate::retry_queue::{self, RetryMsg};
use crate::slot::{self, ActorStatus, Slot, WriterSlot};
use crate::value::Operation;
use crate::writer::WriterMsg;

/// Longest wait for the write probe before the writer counts as stuck.
const WRITE_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for another actor's answer about its state.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the HealthActor needs; cloned for each (re)start.
#[derive(Clone)]
pub struct HealthArgs {
    /// The application database.
    pub db: DbOptions,
    /// Schedules, thresholds, automatic maintenance.
    pub config: HealthConfig,
    /// The application writer (write probe, maintenance).
    pub app: watch::Receiver<WriterSlot>,
    /// The journal writer (history, maintenance records).
    pub journal: watch::Receiver<WriterSlot>,
    /// The supervised actors, as the supervisor publishes them.
    pub roster: watch::Receiver<Vec<ActorStatus>>,
    /// Where the latest report is published.
    pub latest: Arc<watch::Sender<Option<Arc<HealthReport>>>>,
    /// Where events go.
    pub events: broadcast::Sender<HealthEvent>,
    /// The retry queue actor (asked for the queue figures).
    pub retry: watch::Receiver<Slot<ActorRef<RetryMsg>>>,
    /// The database breaker (asked for its state).
    pub database: Arc<DatabaseBreaker>,
    /// The circuit breaker actor (asked for the named breakers' states).
    pub breakers: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
    /// The journal file (the backup catalog is read from it).
    pub journal_db: DbOptions,
}

/// Messages of the HealthActor.
pub enum HealthMsg {
    /// Run the checks that are due (sent by the actor's own timer).
    Tick,
    /// Run every check now, the full integrity check included.
    CheckNow(RpcReplyPort<HealthReport>),
    /// A query, a write or an actor met a corruption error (SQLITE_CORRUPT,
    /// SQLITE_NOTADB): the report turns CRITICAL at once, a `quick_check`
    /// runs, and [`HealthEvent::IntegrityFailed`] goes out (recovery
    /// starts from it). Reported once per damaged file.
    CorruptionSeen {
        /// Who met it (`a query`, `a write`...).
        source: String,
        /// SQLite's error.
        detail: String,
    },
    /// The database file was replaced (a restore or a recovery succeeded):
    /// the corruption seen in the old file is forgotten and every check
    /// runs now.
    DatabaseReplaced(RpcReplyPort<HealthReport>),
    /// Run a maintenance task through the writer and record it.
    Maintain {
        /// The task.
        task: Maintenance,
        /// Where the outcome goes.
        reply: RpcReplyPort<Result<MaintenanceRun>>,
    },
    /// Take a new configuration (a reload): schedules and thresholds apply
    /// from the next tick, the timer runs at the new interval. Answers once
    /// it is in place.
    Reconfigure(Box<HealthConfig>, RpcReplyPort<()>),
    /// Take a resource sample and store it in the journal (sent by the
    /// actor's resource timer).
    Sample,
}

/// The HealthActor. Spawn it with [`HealthArgs`].
pub struct HealthActor;

/// When each scheduled check last ran, and the results carried between runs.
pub struct HealthState {
    args: HealthArgs,
    timer: Option<JoinHandle<()>>,
    /// The resource timer; none when `resource_interval` is zero.
    resource_timer: Option<JoinHandle<()>>,
    /// The previous resource sample (its rates count from it).
    last_sample: Option<Previous>,
    last_tick: Option<Instant>,
    last_quick: Option<Instant>,
    last_full: Option<Instant>,
    last_foreign_keys: Option<Instant>,
    last_optimize: Instant,
    integrity: Option<(Integrity, bool)>,
    /// A corruption error met outside the checks, until the file is
    /// replaced or a full integrity check passes.
    corruption: Option<String>,
    foreign_key_violations: i64,
    /// Operations the writer had answered after the last write probe, and
    /// since when that count has not moved: how long the application has
    /// not written (the probes themselves do not count).
    writer_ops: u64,
    quiet_since: Instant,
    /// When this actor started (a missing backup counts from then).
    started: Instant,
    /// Failed checks, counted in the journal's error log.
    errors: ErrorLog,
}

impl Actor for HealthActor {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthState, ActorProcessingErr> {
        // The first check (with the full integrity check) runs right away.
        myself.send_message(HealthMsg::Tick)?;
        let timer = myself.send_interval(args.config.interval, || HealthMsg::Tick);
        let errors = ErrorLog::start(args.journal.clone(), DEFAULT_FLUSH_EVERY);
        let resource_timer = resource_timer(&myself, args.config.resource_interval);
        Ok(HealthState {
            errors,
            resource_timer,
            last_sample: None,
            args,
            timer: Some(timer),
            last_tick: None,
            last_quick: None,
            last_full: None,
            last_foreign_keys: None,
            last_optimize: Instant::now(),
            integrity: None,
            corruption: None,
            foreign_key_violations: 0,
            writer_ops: 0,
            quiet_since: Instant::now(),
            started: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HealthMsg>,
        msg: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HealthMsg::Reconfigure(config, reply) => {
                if config.interval != state.args.config.interval {
                    if let Some(timer) = state.timer.take() {
                        timer.abort();
                    }
                    state.timer = Some(myself.send_interval(config.interval, || HealthMsg::Tick));
                }
                if config.resource_interval != state.args.config.resource_interval {
                    if let Some(timer) = state.resource_timer.take() {
                        timer.abort();
                    }
                    state.resource_timer = resource_timer(&myself, config.resource_interval);
                    state.last_sample = None;
                }
                state.args.config = *config;
                let _ = reply.send(());
            }
            HealthMsg::Tick => {
                // Ticks that queued up behind a long check are skipped.
                let interval = state.args.config.interval;
                if state.last_tick.is_some_and(|t| t.elapsed() < interval / 2) {
                    return Ok(());
                }
                let checks = state.due();
                state.check(checks).await;
            }
            HealthMsg::Sample => {
                // Samples that queued up behind a long check are skipped.
                let interval = state.args.config.resource_interval;
                if interval.is_zero()
                    || state
                        .last_sample
                        .is_some_and(|p| p.elapsed() < interval / 2)
                {
                    return Ok(());
                }
                state.sample().await;
            }
            HealthMsg::CheckNow(reply) => {
                let report = state.check(Checks::all(true)).await;
                let _ = reply.send(report);
            }
            HealthMsg::CorruptionSeen { source, detail } => {
                if state.corruption.is_some() {
                    return Ok(());
                }
                let seen = format!("{source} met a damaged database: {detail}");
                tracing::error!(%seen, "corruption seen; health is CRITICAL and recovery is due");
                state.corruption = Some(seen);
                state.publish_corruption_now();
                let quick = Checks {
                    integrity: Some(IntegrityCheck::Quick),
                    foreign_keys: false,
                };
                state.check(quick).await;
            }
            HealthMsg::DatabaseReplaced(reply) => {
                state.corruption = None;
                state.integrity = None;
                let report = state.check(Checks::all(true)).await;
                let _ = reply.send(report);
            }
            HealthMsg::Maintain { task, reply } => {
                let _ = reply.send(state.maintain(task, "manual").await);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<HealthMsg>,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        for timer in [state.timer.take(), state.resource_timer.take()]
            .into_iter()
            .flatten()
        {
            timer.abort();
        }
        Ok(())
    }
}

impl HealthState {
    /// The slower checks whose period has elapsed.
    fn due(&self) -> Checks {
        let c = &self.args.config;
        let elapsed =
            |last: Option<Instant>, every: Duration| last.is_none_or(|t| t.elapsed() >= every);
        let integrity = if elapsed(self.last_full, c.integrity_check_every) {
            Some(IntegrityCheck::Full)
        } else if elapsed(self.last_quick, c.quick_check_every) {
            Some(IntegrityCheck::Quick)
        } else {
            None
        };
        Checks {
            integrity,
            foreign_keys: elapsed(self.last_foreign_keys, c.foreign_key_check_every),
        }
    }

    /// Run `checks`, judge, maintain, record and publish.
    async fn check(&mut self, checks: Checks) -> HealthReport {
        let started = Instant::now();
        self.last_tick = Some(started);
        let db = self.args.db.clone();
        let (mut report, readable) = tokio::task::spawn_blocking(move || measure(&db, checks))
            .await
            .unwrap_or_else(|e| {
                let mut report = HealthReport::new(self.args.db.path.clone());
                report.status = HealthStatus::Unknown;
                report.rule = format!("the checks panicked: {e}");
                (report, false)
            });
        self.remember(checks, &mut report, started);
        // The writer does not count the write probe among its operations,
        // so the count read here is the one the next check compares with
        // (a write that races the probe is seen then).
        let ops = self.writer_ops().await;
        let writing = ops != Some(self.writer_ops);
        if writing {
            self.quiet_since = Instant::now();
        }
        self.writer_ops = ops.unwrap_or(0);
        let probe = self.write_probe().await;
        report.figures.write_probe_ms = probe.as_ref().ok().copied();
        report.actors = self.args.roster.borrow().clone();
        report.judge_actors();
        report.queue = self.queue_stats().await;
        report.breakers = self.breakers().await;
        report.backups = self.backups().await;
        report.judge_queue();
        report.judge_breakers();
        report.judge_backups(&self.args.config, self.started.elapsed());
        if readable {
            report.judge_database(&self.args.config);
            if let Err(e) = &probe {
                report.judge_write_probe(e);
            }
        }
        if checks.integrity == Some(IntegrityCheck::Full) && report.integrity == Integrity::Ok {
            if let Some(seen) = self.corruption.take() {
                tracing::warn!(%seen, "a full integrity check passes: the corruption seen earlier is no longer reported");
            }
        }
        if let Some(seen) = &self.corruption {
            report.judge_corruption_seen(seen);
        }
        if readable && report.integrity.problems().is_none() {
            report.maintenance = self.auto_maintain(&report, writing).await;
        }
        self.record(&report).await;
        self.publish(&report, checks.integrity.is_some() || !readable);
        metrics::histogram!("resilite_health_check_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        report
    }

    /// Note when the checks ran; carry the integrity and foreign key results
    /// of earlier runs into a report whose run skipped them.
    fn remember(&mut self, checks: Checks, report: &mut HealthReport, now: Instant) {
        match checks.integrity {
            Some(IntegrityCheck::Full) => {
                self.last_full = Some(now);
                self.last_quick = Some(now);
            }
            Some(IntegrityCheck::Quick) => self.last_quick = Some(now),
            None => {}
        }
        if checks.integrity.is_some() && report.integrity != Integrity::NotChecked {
            self.integrity = Some((report.integrity.clone(), report.full_integrity_check));
        } else if let Some((text, full)) = &self.integrity {
            report.integrity = text.clone();
            report.full_integrity_check = *full;
        }
        if checks.foreign_keys {
            self.last_foreign_keys = Some(now);
            self.foreign_key_violations = report.figures.foreign_key_violations;
        } else {
            report.figures.foreign_key_violations = self.foreign_key_violations;
        }
    }

    /// Every breaker's state as its owner answers it: the database breaker,
    /// and the named ones by the breaker actor (only the database breaker
    /// while that actor is down or does not answer).
    async fn breakers(&self) -> Vec<BreakerSnapshot> {
        let database = || vec![self.args.database.snapshot()];
        if !matches!(*self.args.breakers.borrow(), Slot::Running(_)) {
            return database();
        }
        breaker::snapshots(&self.args.database, &self.args.breakers, ASK_TIMEOUT)
            .await
            .unwrap_or_else(|_| database())
    }

    /// The retry queue's figures as its actor answers them; none while it
    /// is down or does not answer.
    async fn queue_stats(&self) -> Option<retry_queue::QueueStats> {
        if !matches!(*self.args.retry.borrow(), Slot::Running(_)) {
            return None;
        }
        retry_queue::ask_stats(&self.args.retry, retry_queue::DEFAULT_ASK_TIMEOUT)
            .await
            .ok()
    }

    /// The backup figures from the journal's catalog; none when it
    /// cannot be read.
    async fn backups(&self) -> Option<BackupFigures> {
        let live = read_blocking(&self.args.journal_db, crate::journal::backups::live).await;
        match live {
            Ok(live) => Some(BackupFigures::of(&live, crate::maintenance::now_ms())),
            Err(e) => {
                tracing::warn!(detail = %e.detail, "could not read the backup catalog");
                None
            }
        }
    }

    /// Milliseconds of a round trip through the writer, whose write probe
    /// writes the database file (see `WriterHandle::probe`), so it fails
    /// as the application's writes would.
    async fn write_probe(&self) -> Result<f64, Error> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(WRITE_PROBE_TIMEOUT, slot::probe(&self.args.app))
            .await
            .unwrap_or_else(|_| {
                Err(Error::classed(
                    ErrorClass::Transient,
                    format!("no answer within {WRITE_PROBE_TIMEOUT:?}"),
                ))
            });
        match outcome {
            Ok(_) => Ok(started.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                tracing::warn!(class = ?e.class, detail = %e.detail, "write probe failed");
                self.errors.record("health", &e);
                Err(e)
            }
        }
    }

    /// The maintenance the report calls for: checkpoint when the WAL is over
    /// its threshold, VACUUM when utilization is low and the writer idle,
    /// `PRAGMA optimize` when its period has elapsed.
    ///
    /// `writing`: the application wrote since the last check. The writer
    /// checkpoints its WAL itself, beside its writes, and keeps it bounded
    /// (`writer::checkpoint`); a checkpoint sent to it then would hold
    /// every write queued behind it while it copies (measured: 5-20 ms a
    /// time at 64 callers). So while writes come in, the WAL is
    /// checkpointed here only past `wal_urgent_bytes` (checkpoints are not
    /// keeping up); otherwise at the first check after they pause, which
    /// also truncates the file.
    async fn auto_maintain(&mut self, report: &HealthReport, writing: bool) -> Vec<MaintenanceRun> {
        let c = self.args.config.clone();
        let f = &report.figures;
        let mut runs = Vec::new();
        let wal_due =
            f.wal_bytes > c.wal_checkpoint_bytes && (!writing || f.wal_bytes > c.wal_urgent_bytes);
        if c.auto_checkpoint && wal_due {
            // PASSIVE never waits for readers; only when it moved every frame
            // does TRUNCATE follow (then it cannot block on a reader's
            // snapshot) and shrink the file.
            let passive = self
                .maintain(Maintenance::Checkpoint(CheckpointMode::Passive), "auto")
                .await;
            if let Ok(run) = passive {
                let complete = run
                    .checkpoint
                    .is_some_and(|o| !o.busy && o.checkpointed_frames == o.wal_frames);
                runs.push(run);
                if complete {
                    let truncate = Maintenance::Checkpoint(CheckpointMode::Truncate);
                    runs.extend(self.maintain(truncate, "auto").await);
                }
            }
        }
        // VACUUM rewrites the whole file: it needs that much free disk.
        let vacuum_room = f.disk_free_bytes == 0 || f.disk_free_bytes > f.db_bytes;
        let quiet = self.quiet_since.elapsed() >= c.vacuum_idle;
        if c.auto_vacuum && f.utilization_pct < c.min_utilization_pct && vacuum_room && quiet {
            runs.extend(self.maintain(Maintenance::Vacuum, "auto").await);
        }
        if self.last_optimize.elapsed() >= c.optimize_every {
            self.last_optimize = Instant::now();
            runs.extend(self.maintain(Maintenance::Optimize, "scheduled").await);
        }
        runs
    }

    /// Operations the application writer has answered since it started.
    async fn writer_ops(&self) -> Option<u64> {
        self.writer_stats().await.map(|s| s.committed + s.failed)
    }

    /// The application writer's counts since it started; none while it is
    /// down or does not answer.
    async fn writer_stats(&self) -> Option<crate::writer::WriterStats> {
        let writer = slot::running(&mut self.args.app.clone()).await.ok()?;
        ractor::call!(writer.actor, WriterMsg::Stats).ok()
    }

    /// Take a resource sample, publish its gauges and store it in the
    /// journal (pruned with the audit trail).
    async fn sample(&mut self) {
        let asked = Asked {
            queue: self.queue_stats().await,
            committed: self.writer_stats().await.map(|s| s.committed),
        };
        let sample = resources::take(
            &self.args.db.path,
            &self.args.journal_db.path,
            asked,
            &mut self.last_sample,
        );
        resources::export_metrics(&sample);
        let op = Operation::Statement(crate::journal::resources::insert_statement(&sample));
        if let Err(e) = slot::write(&self.args.journal, op).await {
            tracing::warn!(detail = %e.detail, "could not record the resource sample in the journal");
        }
    }

    /// Run `task` on the application writer, between two transactions, and
    /// record it in the journal.
    async fn maintain(&self, task: Maintenance, trigger: &str) -> Result<MaintenanceRun> {
        let writer = slot::running(&mut self.args.app.clone()).await?;
        let run = ractor::call!(writer.actor, |reply| WriterMsg::Maintain { task, reply })
            .map_err(|e| Error::unavailable(format!("the writer did not answer: {e}")))?;
        let db = self.args.db.path.display().to_string();
        let outcome = match &run {
            Ok(run) => {
                metrics::counter!("resilite_maintenance_runs_total", "task" => task.name())
                    .increment(1);
                metrics::counter!("resilite_maintenance_reclaimed_bytes_total", "task" => task.name())
                    .increment(run.bytes_reclaimed());
                vec![
                    history::record_maintenance(run, trigger, None),
                    Event::maintenance(run, trigger, &db).statement(),
                ]
            }
            Err(e) => vec![
                history::record_failed_maintenance(task, trigger, e),
                Event::maintenance_failed(task, trigger, &db, e).statement(),
                crate::error_log::statement("health", e),
            ],
        };
        if let Err(e) = slot::write(&self.args.journal, Operation::Batch(outcome)).await {
            tracing::warn!(detail = %e.detail, "could not record the maintenance run in the journal");
        }
        run
    }

    /// Store the report in the health history and prune old rows.
    async fn record(&self, report: &HealthReport) {
        let retention = self.args.config.history_retention;
        let mut statements = vec![history::record(report)];
        statements.extend(history::prune(report.checked_at_ms, retention));
        if let Err(e) = slot::write(&self.args.journal, Operation::Batch(statements)).await {
            tracing::warn!(detail = %e.detail, "could not record the health check in the journal");
        }
    }

    /// Publish the latest report again, CRITICAL for the corruption just
    /// seen, without waiting for a check to read the file.
    fn publish_corruption_now(&self) {
        let latest = self.args.latest.borrow().as_deref().cloned();
        let mut report = latest.unwrap_or_else(|| HealthReport::new(self.args.db.path.clone()));
        report.checked_at_ms = crate::maintenance::now_ms();
        if let Some(seen) = &self.corruption {
            report.judge_corruption_seen(seen);
        }
        self.publish(&report, true);
    }

    /// Publish the report, its metrics and the events it raises;
    /// `integrity_checked`: its integrity result is new (checked, or the
    /// file could not be read, or corruption was just seen), so a failure
    /// raises [`HealthEvent::IntegrityFailed`].
    fn publish(&self, report: &HealthReport, integrity_checked: bool) {
        let previous = self.args.latest.borrow().as_ref().map(|r| r.status);
        if previous != Some(report.status) {
            let from = previous.unwrap_or(HealthStatus::Unknown);
            if report.status == HealthStatus::Healthy {
                tracing::info!(status = report.status.as_str(), "health status changed");
            } else {
                tracing::warn!(status = report.status.as_str(), rule = %report.rule, "health status changed");
            }
            let _ = self.args.events.send(HealthEvent::StatusChanged {
                from,
                to: report.status,
                rule: report.rule.clone(),
            });
        }
        if let Some(problems) = report.integrity.problems().filter(|_| integrity_checked) {
            tracing::error!(detail = %problems, "integrity check failed; recovery needed");
            self.errors.record(
                "health",
                &Error::new(ErrorClass::Corruption, "integrity check failed", problems),
            );
            let _ = self.args.events.send(HealthEvent::IntegrityFailed {
                detail: problems.to_string(),
            });
        }
        export_metrics(report);
        self.args
            .latest
            .send_replace(Some(Arc::new(report.clone())));
    }
}

/// The report's status and figures as metrics.
/// The resource timer of `interval`; none when it is zero (sampling off).
fn resource_timer(myself: &ActorRef<HealthMsg>, interval: Duration) -> Option<JoinHandle<()>> {
    (!interval.is_zero()).then(|| myself.send_interval(interval, || HealthMsg::Sample))
}

fn export_metrics(report: &HealthReport) {
    let f = &report.figures;
    metrics::gauge!("resilite_health_status").set(f64::from(report.status.exit_code()));
    metrics::gauge!("resilite_db_bytes").set(f.db_bytes as f64);
    metrics::gauge!("resilite_wal_bytes").set(f.wal_bytes as f64);
    metrics::gauge!("resilite_disk_free_bytes").set(f.disk_free_bytes as f64);
    metrics::gauge!("resilite_db_utilization_ratio").set(f.utilization_pct / 100.0);
    metrics::gauge!("resilite_read_probe_seconds").set(f.read_probe_ms / 1000.0);
    if let Some(ms) = f.write_probe_ms {
        metrics::gauge!("resilite_write_probe_seconds").set(ms / 1000.0);
    }
    if let Some(b) = &report.backups {
        if let Some(age) = b.newest_verified_age_s {
            metrics::gauge!("resilite_backup_age_seconds").set(age);
        }
        if let (Some(ms), Some(size)) = (b.last_duration_ms, b.last_size) {
            metrics::gauge!("resilite_backup_last_duration_seconds").set(ms as f64 / 1000.0);
            metrics::gauge!("resilite_backup_last_size_bytes").set(size as f64);
        }
    }
    metrics::counter!("resilite_health_checks_total", "status" => report.status.as_str())
        .increment(1);
}
