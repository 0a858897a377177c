//! Health: checks of the database, the runtime's actors and the writer,
//! turned into an overall status with the rule that derived it and
//! recommendations with the thresholds that triggered them.
//!
//! - [`inspect`]: the checks of a database file (integrity, sizes, pages,
//!   free disk, read probe). They only read, through their own read-only
//!   connection, so they run beside a live writer or on a file no process
//!   has open (`resilite health`).
//! - [`actor`]: the HealthActor, which runs the checks on their schedules,
//!   adds the write probe and actor states, records every result in the
//!   journal and runs maintenance through the writer.

pub mod actor;
pub mod history;
pub mod inspect;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::{BreakerSnapshot, BreakerState, DATABASE_BREAKER, FORCED_OPEN_UNTIL_MS};
use crate::maintenance::MaintenanceRun;
use crate::retry_queue::QueueStats;
use crate::slot::{ActorStatus, SlotState};

pub use actor::{HealthActor, HealthArgs, HealthEvent, HealthMsg};
pub use inspect::inspect;

/// Overall health, worst first when compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    /// Every check passed.
    Healthy,
    /// Something needs attention soon; see the recommendations.
    Warning,
    /// Data is at risk or the database cannot work.
    Critical,
    /// The database could not be inspected.
    Unknown,
}

impl HealthStatus {
    /// The status as operators read it: HEALTHY, WARNING, CRITICAL, UNKNOWN.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Warning => "WARNING",
            HealthStatus::Critical => "CRITICAL",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }

    /// Exit code of `resilite health`: 0 healthy, 1 warning, 2 critical,
    /// 3 unknown. Also the value of the `resilite_health_status` metric.
    pub fn exit_code(self) -> u8 {
        match self {
            HealthStatus::Healthy => 0,
            HealthStatus::Warning => 1,
            HealthStatus::Critical => 2,
            HealthStatus::Unknown => 3,
        }
    }
}

/// `[health]`: check schedules, thresholds and automatic maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often sizes, probes and actor states are checked (and recorded).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How often `PRAGMA quick_check` runs.
    #[serde(with = "humantime_serde")]
    pub quick_check_every: Duration,
    /// How often the full `PRAGMA integrity_check` runs (also at startup).
    #[serde(with = "humantime_serde")]
    pub integrity_check_every: Duration,
    /// How often `PRAGMA foreign_key_check` runs.
    #[serde(with = "humantime_serde")]
    pub foreign_key_check_every: Duration,
    /// How long health history and maintenance records are kept.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
    /// Checkpoint automatically when the WAL exceeds `wal_checkpoint_bytes`.
    pub auto_checkpoint: bool,
    /// VACUUM automatically when utilization is low and the writer is idle.
    pub auto_vacuum: bool,
    /// How long the writer must have been idle before an automatic VACUUM.
    #[serde(with = "humantime_serde")]
    pub vacuum_idle: Duration,
    /// How often `PRAGMA optimize` runs.
    #[serde(with = "humantime_serde")]
    pub optimize_every: Duration,
    /// WAL bytes above which a checkpoint is recommended (and run).
    pub wal_checkpoint_bytes: u64,
    /// WAL bytes above which an immediate checkpoint is needed (WARNING).
    pub wal_urgent_bytes: u64,
    /// Utilization (%) below which VACUUM is recommended.
    pub min_utilization_pct: f64,
    /// Database bytes above which archiving is suggested.
    pub archive_bytes: u64,
    /// Read probe latency above which reads are slow (WARNING).
    #[serde(with = "humantime_serde")]
    pub slow_read: Duration,
    /// Write probe latency above which writes are slow (WARNING).
    #[serde(with = "humantime_serde")]
    pub slow_write: Duration,
    /// Free disk (%) below which the status is CRITICAL.
    pub min_disk_free_pct: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(30),
            quick_check_every: Duration::from_secs(5 * 60),
            integrity_check_every: Duration::from_secs(24 * 3600),
            foreign_key_check_every: Duration::from_secs(3600),
            history_retention: Duration::from_secs(90 * 24 * 3600),
            auto_checkpoint: true,
            auto_vacuum: true,
            vacuum_idle: Duration::from_secs(5 * 60),
            optimize_every: Duration::from_secs(24 * 3600),
            wal_checkpoint_bytes: 1024 * 1024,
            wal_urgent_bytes: 10 * 1024 * 1024,
            min_utilization_pct: 70.0,
            archive_bytes: 100 * 1024 * 1024,
            slow_read: Duration::from_millis(50),
            slow_write: Duration::from_millis(20),
            min_disk_free_pct: 10.0,
        }
    }
}

/// The measured figures of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Figures {
    /// Database file bytes.
    pub db_bytes: u64,
    /// WAL file bytes (0 when absent).
    pub wal_bytes: u64,
    /// Shared-memory index bytes (0 when absent).
    pub shm_bytes: u64,
    /// Pages in the database.
    pub page_count: i64,
    /// Bytes per page.
    pub page_size: i64,
    /// Pages on the freelist.
    pub freelist_count: i64,
    /// Pages in use, as a percentage of all pages.
    pub utilization_pct: f64,
    /// Free bytes on the database's filesystem.
    pub disk_free_bytes: u64,
    /// Free space on the database's filesystem, in percent.
    pub disk_free_pct: f64,
    /// Whether the two above were measured (statvfs answered).
    pub disk_measured: bool,
    /// Milliseconds the read probe took.
    pub read_probe_ms: f64,
    /// Milliseconds the write probe (a round trip through the writer) took;
    /// absent without a running writer.
    pub write_probe_ms: Option<f64>,
    /// Rows reported by the last `PRAGMA foreign_key_check`.
    pub foreign_key_violations: i64,
}

/// One recommendation: what to do, and the threshold that triggered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    /// A short action name: checkpoint, vacuum, archive, restore, free_disk...
    pub action: String,
    /// What was seen and what to do.
    pub reason: String,
}

/// The result of one health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The database file checked.
    pub path: PathBuf,
    /// When, in milliseconds since the Unix epoch.
    pub checked_at_ms: i64,
    /// Overall status.
    pub status: HealthStatus,
    /// The rule that set the status.
    pub rule: String,
    /// `ok`, or what the last `quick_check` / `integrity_check` reported.
    pub integrity: String,
    /// Whether that check was the full `integrity_check`.
    pub full_integrity_check: bool,
    /// The figures measured.
    pub figures: Figures,
    /// The runtime's actors (empty when checking a file from the CLI).
    pub actors: Vec<ActorStatus>,
    /// The durable retry queue by status (absent from the CLI).
    pub queue: Option<QueueStats>,
    /// The circuit breakers as last journaled, `database` among them
    /// (empty from the CLI).
    pub breakers: Vec<BreakerSnapshot>,
    /// Maintenance run because of this check.
    pub maintenance: Vec<MaintenanceRun>,
    /// What to do, with the thresholds that triggered it.
    pub recommendations: Vec<Recommendation>,
}

impl HealthReport {
    fn new(path: PathBuf) -> Self {
        HealthReport {
            path,
            checked_at_ms: crate::maintenance::now_ms(),
            status: HealthStatus::Healthy,
            rule: "every check passed".into(),
            integrity: "not checked".into(),
            full_integrity_check: false,
            figures: Figures::default(),
            actors: Vec::new(),
            queue: None,
            breakers: Vec::new(),
            maintenance: Vec::new(),
            recommendations: Vec::new(),
        }
    }

    /// Raise the status to `status` (never lower it), naming the rule.
    fn raise(&mut self, status: HealthStatus, rule: String) {
        if status > self.status {
            self.status = status;
            self.rule = rule;
        }
    }

    /// The write probe failed: writes fail as it did. CRITICAL, with what
    /// to do for the kind of failure.
    pub(crate) fn judge_write_probe(&mut self, e: &crate::Error) {
        self.raise(
            HealthStatus::Critical,
            format!(
                "the write probe failed ({}): the database is not taking writes: {}",
                e.class.as_str(),
                e.detail
            ),
        );
        let (action, reason) = match e.class {
            crate::ErrorClass::Permission => (
                "fix_permissions",
                format!(
                    "the database file or its directory cannot be written ({}): make both writable by resilite's user (chmod/chown; chattr -i if it was made immutable)",
                    e.detail
                ),
            ),
            crate::ErrorClass::Corruption => (
                "restore",
                "the write probe found the file corrupt: restore it from a verified backup".into(),
            ),
            _ => (
                "check_writer",
                format!("writes fail ({}): look at what holds the database or fills the disk", e.detail),
            ),
        };
        self.recommend(action, reason);
    }

    fn recommend(&mut self, action: &str, reason: String) {
        self.recommendations.push(Recommendation {
            action: action.into(),
            reason,
        });
    }

    /// Whether a recommendation for `action` was made.
    pub fn recommends(&self, action: &str) -> bool {
        self.recommendation(action).is_some()
    }

    /// The first recommendation for `action`, if one was made.
    pub fn recommendation(&self, action: &str) -> Option<&Recommendation> {
        self.recommendations.iter().find(|r| r.action == action)
    }

    /// Raise the status for actors that are restarting or failed.
    fn judge_actors(&mut self) {
        for actor in self.actors.clone() {
            match actor.state {
                SlotState::Failed => self.raise(
                    HealthStatus::Critical,
                    format!(
                        "actor {} failed past its restart limit: {}",
                        actor.name,
                        actor
                            .last_failure
                            .as_deref()
                            .unwrap_or("no reason recorded")
                    ),
                ),
                SlotState::Restarting => self.raise(
                    HealthStatus::Warning,
                    format!("actor {} is restarting", actor.name),
                ),
                SlotState::Running | SlotState::Stopped => {}
            }
        }
    }

    /// A WARNING while the dead-letter queue holds entries nobody reviewed.
    fn judge_queue(&mut self) {
        if let Some(q) = self.queue.filter(|q| q.dead > 0) {
            self.raise(
                HealthStatus::Warning,
                format!(
                    "{} dead-letter entr{}",
                    q.dead,
                    if q.dead == 1 { "y" } else { "ies" }
                ),
            );
            self.recommend(
                "review_dead_letters",
                format!(
                    "{} operation(s) failed for good: review them with `resilite dlq list`, then requeue or discard",
                    q.dead
                ),
            );
        }
    }

    /// A breaker that is not closed is a WARNING: calls through it are
    /// rejected (or, half-open, only trial calls pass). Not CRITICAL: the
    /// runtime is degraded on purpose, reads and durable writes go on.
    fn judge_breakers(&mut self) {
        let now = crate::maintenance::now_ms();
        for b in self.breakers.clone() {
            let name = b.name.as_deref().unwrap_or("?");
            let (rule, advice) = match (b.state, b.open_until_ms) {
                (BreakerState::Closed, _) => continue,
                (BreakerState::Open, Some(FORCED_OPEN_UNTIL_MS)) => (
                    format!("breaker `{name}` is held open"),
                    if name == DATABASE_BREAKER {
                        "writes are paused (pause_writes): durable writes are queued; resume_writes() when the database is ready".to_string()
                    } else {
                        format!("`{name}` was forced open: reset it when the service is ready")
                    },
                ),
                (BreakerState::Open, until) => (
                    format!("breaker `{name}` is open after {} trip(s)", b.trips),
                    format!(
                        "calls to `{name}` fail fast for {:.1}s more, then a trial call is let through; check what it protects",
                        until.map_or(0, |t| (t - now).max(0)) as f64 / 1000.0
                    ),
                ),
                (BreakerState::HalfOpen, _) => (
                    format!("breaker `{name}` is half-open"),
                    format!("`{name}` is being tried again: its trial calls decide whether it closes"),
                ),
            };
            self.raise(HealthStatus::Warning, rule);
            self.recommend("breaker_open", advice);
        }
    }

    /// Derive the status (worst rule wins) and the recommendations from the
    /// integrity result and the figures of a database that could be read.
    fn judge_database(&mut self, t: &HealthConfig) {
        let f = self.figures.clone();
        if self.integrity != "ok" && self.integrity != "not checked" {
            self.raise(
                HealthStatus::Critical,
                format!("integrity check failed: {}", self.integrity),
            );
            self.recommend(
                "restore",
                "the integrity check failed; restore from a verified backup (recovery starts from here)".into(),
            );
        }
        if f.disk_measured && f.disk_free_pct < t.min_disk_free_pct {
            self.raise(
                HealthStatus::Critical,
                format!(
                    "disk free {:.1}% < {}%",
                    f.disk_free_pct, t.min_disk_free_pct
                ),
            );
            self.recommend("free_disk", format!(
                "only {:.1}% of the filesystem is free (threshold {}%): free space before writes fail with SQLITE_FULL",
                f.disk_free_pct, t.min_disk_free_pct
            ));
        }
        if f.foreign_key_violations > 0 {
            self.raise(
                HealthStatus::Warning,
                format!("{} foreign key violation(s)", f.foreign_key_violations),
            );
            self.recommend(
                "fix_foreign_keys",
                "PRAGMA foreign_key_check reports rows whose parent is missing".into(),
            );
        }
        if f.wal_bytes > t.wal_urgent_bytes {
            self.raise(
                HealthStatus::Warning,
                format!("WAL {} bytes > {}", f.wal_bytes, t.wal_urgent_bytes),
            );
            self.recommend(
                "checkpoint_now",
                format!(
                    "the WAL is {} bytes (> {}): run an immediate checkpoint (TRUNCATE)",
                    f.wal_bytes, t.wal_urgent_bytes
                ),
            );
        } else if f.wal_bytes > t.wal_checkpoint_bytes {
            self.recommend(
                "checkpoint",
                format!(
                    "the WAL is {} bytes (> {}): checkpoint it",
                    f.wal_bytes, t.wal_checkpoint_bytes
                ),
            );
        }
        if f.utilization_pct < t.min_utilization_pct {
            self.recommend(
                "vacuum",
                format!(
                    "only {:.1}% of pages are in use (< {}%); {} free pages: VACUUM reclaims them",
                    f.utilization_pct, t.min_utilization_pct, f.freelist_count
                ),
            );
        }
        if f.db_bytes > t.archive_bytes {
            self.recommend(
                "archive",
                format!(
                    "the database is {} bytes (> {}): consider archiving old rows",
                    f.db_bytes, t.archive_bytes
                ),
            );
        }
        if f.read_probe_ms > t.slow_read.as_secs_f64() * 1000.0 {
            self.raise(
                HealthStatus::Warning,
                format!("read probe {:.1} ms", f.read_probe_ms),
            );
            self.recommend(
                "investigate_slow_reads",
                format!(
                    "the read probe took {:.1} ms (> {} ms)",
                    f.read_probe_ms,
                    t.slow_read.as_millis()
                ),
            );
        }
        if let Some(ms) = f
            .write_probe_ms
            .filter(|ms| *ms > t.slow_write.as_secs_f64() * 1000.0)
        {
            self.raise(HealthStatus::Warning, format!("write probe {ms:.1} ms"));
            self.recommend(
                "investigate_slow_writes",
                format!(
                    "the write probe took {ms:.1} ms (> {} ms): look for long transactions, lock holders or a slow disk",
                    t.slow_write.as_millis()
                ),
            );
        }
    }

    /// A readable multi-line report for the command line.
    pub fn to_text(&self) -> String {
        let f = &self.figures;
        let mut out = format!(
            "{}: {}\n  rule: {}\n  integrity ({}): {}\n  size: {} bytes, WAL {} bytes, shm {} bytes\n  pages: {} x {} bytes, {} free, utilization {:.1}%\n  disk free: {} bytes ({:.1}%)\n  read probe: {:.2} ms\n",
            self.path.display(),
            self.status.as_str(),
            self.rule,
            if self.full_integrity_check { "integrity_check" } else { "quick_check" },
            self.integrity,
            f.db_bytes,
            f.wal_bytes,
            f.shm_bytes,
            f.page_count,
            f.page_size,
            f.freelist_count,
            f.utilization_pct,
            f.disk_free_bytes,
            f.disk_free_pct,
            f.read_probe_ms,
        );
        if let Some(ms) = f.write_probe_ms {
            out.push_str(&format!("  write probe: {ms:.2} ms\n"));
        }
        out.push_str(&format!(
            "  foreign key violations: {}\n",
            f.foreign_key_violations
        ));
        for a in &self.actors {
            out.push_str(&format!(
                "  actor {}: {:?}, {} restart(s)\n",
                a.name, a.state, a.restarts
            ));
        }
        if let Some(q) = &self.queue {
            out.push_str(&format!(
                "  retry queue: {} queued, {} retrying, {} dead, {} succeeded\n",
                q.queued, q.retrying, q.dead, q.succeeded
            ));
        }
        for b in &self.breakers {
            out.push_str(&format!(
                "  breaker {}: {}, {} trip(s), {} call(s) rejected\n",
                b.name.as_deref().unwrap_or("?"),
                b.state.as_str(),
                b.trips,
                b.rejected
            ));
        }
        for m in &self.maintenance {
            out.push_str(&format!(
                "  maintenance {}: {:.1} ms, {} bytes reclaimed\n",
                m.task.name(),
                m.duration_ms,
                m.bytes_reclaimed()
            ));
        }
        if self.recommendations.is_empty() {
            out.push_str("  recommendations: none\n");
        }
        for r in &self.recommendations {
            out.push_str(&format!("  recommend {}: {}\n", r.action, r.reason));
        }
        out
    }
}
