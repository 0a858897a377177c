//! What a health check reports: the overall status, the integrity result,
//! the measured figures, the recommendations with the actions they name,
//! and the events other parts of the runtime may act on. serde gives each
//! value the name it has in `GET /health/detailed` and `resilite health
//! --json`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use crate::breaker::BreakerSnapshot;
use crate::maintenance::MaintenanceRun;
use crate::retry_queue::QueueStats;
use crate::slot::ActorStatus;

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

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a recommendation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Checkpoint the WAL.
    Checkpoint,
    /// Checkpoint the WAL now (TRUNCATE): it is far over its threshold.
    CheckpointNow,
    /// VACUUM to reclaim free pages.
    Vacuum,
    /// Archive old rows: the database is large.
    Archive,
    /// Restore from a verified backup: the file is corrupt.
    Restore,
    /// Free disk space before writes fail.
    FreeDisk,
    /// Fix rows whose parent row is missing.
    FixForeignKeys,
    /// Look into slow reads.
    InvestigateSlowReads,
    /// Look into slow writes.
    InvestigateSlowWrites,
    /// Review the dead-letter queue.
    ReviewDeadLetters,
    /// A circuit breaker is not closed.
    BreakerOpen,
    /// Make the database file and its directory writable.
    FixPermissions,
    /// Writes fail for another reason: look at the writer's surroundings.
    CheckWriter,
    /// Take (or fix) backups: none is verified, or the newest is too old.
    TakeBackup,
}

impl Action {
    /// The action's name, as in the JSON and the health history.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Checkpoint => "checkpoint",
            Action::CheckpointNow => "checkpoint_now",
            Action::Vacuum => "vacuum",
            Action::Archive => "archive",
            Action::Restore => "restore",
            Action::FreeDisk => "free_disk",
            Action::FixForeignKeys => "fix_foreign_keys",
            Action::InvestigateSlowReads => "investigate_slow_reads",
            Action::InvestigateSlowWrites => "investigate_slow_writes",
            Action::ReviewDeadLetters => "review_dead_letters",
            Action::BreakerOpen => "breaker_open",
            Action::FixPermissions => "fix_permissions",
            Action::CheckWriter => "check_writer",
            Action::TakeBackup => "take_backup",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recommendation: what to do, and the threshold that triggered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    /// What to do.
    pub action: Action,
    /// What was seen and what to do.
    pub reason: String,
}

/// What the last `quick_check` / `integrity_check` found. Serialized as
/// `"ok"`, `"not checked"`, or the problems reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Integrity {
    /// No integrity check has run (or its result was not carried over).
    #[default]
    NotChecked,
    /// The check reported `ok`.
    Ok,
    /// The check reported problems, or the file could not be read: what it
    /// said.
    Failed(String),
}

impl Integrity {
    /// The result of a check that printed `lines`.
    pub fn from_lines(lines: &[String]) -> Integrity {
        match lines.join("; ") {
            text if text == "ok" => Integrity::Ok,
            text => Integrity::Failed(text),
        }
    }

    /// The problems found, if the check failed.
    pub fn problems(&self) -> Option<&str> {
        match self {
            Integrity::Failed(text) => Some(text),
            Integrity::NotChecked | Integrity::Ok => None,
        }
    }

    /// `ok`, `not checked`, or the problems found.
    pub fn as_str(&self) -> &str {
        match self {
            Integrity::NotChecked => "not checked",
            Integrity::Ok => "ok",
            Integrity::Failed(text) => text,
        }
    }
}

impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Integrity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
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

/// The backups as the journal's catalog records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BackupFigures {
    /// Backups kept.
    pub count: usize,
    /// The newest backup whose last verification passed.
    pub newest_verified: Option<String>,
    /// How old it is, in seconds.
    pub newest_verified_age_s: Option<f64>,
    /// How long the newest backup took to take, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// The newest backup's size in bytes.
    pub last_size: Option<u64>,
    /// Backups whose last verification failed.
    pub failed_verification: usize,
}

impl BackupFigures {
    /// The figures of `backups` (the live catalog) at `now_ms`.
    pub fn of(backups: &[crate::BackupInfo], now_ms: i64) -> BackupFigures {
        let newest = backups.iter().max_by_key(|b| b.created_at_ms);
        let verified = backups
            .iter()
            .filter(|b| b.is_verified())
            .max_by_key(|b| b.created_at_ms);
        BackupFigures {
            count: backups.len(),
            newest_verified: verified.map(|b| b.name.clone()),
            newest_verified_age_s: verified
                .map(|b| (now_ms - b.created_at_ms).max(0) as f64 / 1000.0),
            last_duration_ms: newest.map(|b| b.duration_ms),
            last_size: newest.map(|b| b.size),
            failed_verification: backups.iter().filter(|b| b.verified == Some(false)).count(),
        }
    }
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
    /// What the last `quick_check` / `integrity_check` reported.
    pub integrity: Integrity,
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
    /// The backups (absent from the CLI).
    pub backups: Option<BackupFigures>,
    /// Maintenance run because of this check.
    pub maintenance: Vec<MaintenanceRun>,
    /// What to do, with the thresholds that triggered it.
    pub recommendations: Vec<Recommendation>,
}

impl HealthReport {
    pub(crate) fn new(path: PathBuf) -> Self {
        HealthReport {
            path,
            checked_at_ms: crate::maintenance::now_ms(),
            status: HealthStatus::Healthy,
            rule: "every check passed".into(),
            integrity: Integrity::NotChecked,
            full_integrity_check: false,
            figures: Figures::default(),
            actors: Vec::new(),
            queue: None,
            breakers: Vec::new(),
            backups: None,
            maintenance: Vec::new(),
            recommendations: Vec::new(),
        }
    }

    /// Raise the status to `status` (never lower it), naming the rule.
    pub(crate) fn raise(&mut self, status: HealthStatus, rule: String) {
        if status > self.status {
            self.status = status;
            self.rule = rule;
        }
    }

    pub(crate) fn recommend(&mut self, action: Action, reason: String) {
        self.recommendations.push(Recommendation { action, reason });
    }

    /// Whether a recommendation for `action` was made.
    pub fn recommends(&self, action: Action) -> bool {
        self.recommendation(action).is_some()
    }

    /// The first recommendation for `action`, if one was made.
    pub fn recommendation(&self, action: Action) -> Option<&Recommendation> {
        self.recommendations.iter().find(|r| r.action == action)
    }

    /// A readable multi-line report for the command line.
    pub fn to_text(&self) -> String {
        let mut out = self.database_text();
        self.runtime_text(&mut out);
        if self.recommendations.is_empty() {
            out.push_str("  recommendations: none\n");
        }
        for r in &self.recommendations {
            out.push_str(&format!("  recommend {}: {}\n", r.action, r.reason));
        }
        out
    }

    /// The status, integrity and figures of the database file.
    fn database_text(&self) -> String {
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
        out
    }

    /// The actors, retry queue, breakers and maintenance runs.
    fn runtime_text(&self, out: &mut String) {
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
        if let Some(b) = &self.backups {
            out.push_str(&format!(
                "  backups: {} kept, newest verified {}, {} failed verification\n",
                b.count,
                match (&b.newest_verified, b.newest_verified_age_s) {
                    (Some(name), Some(age)) => format!("{name} ({age:.0} s old)"),
                    _ => "none".into(),
                },
                b.failed_verification
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
    }
}

/// Something a health check found that others may act on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HealthEvent {
    /// The overall status changed.
    StatusChanged {
        /// The status before.
        from: HealthStatus,
        /// The status now.
        to: HealthStatus,
        /// The rule that set it.
        rule: String,
    },
    /// An integrity check failed: the database needs recovery (restore from
    /// a verified backup).
    IntegrityFailed {
        /// What the check reported.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_serializes_as_the_text_it_replaced() {
        let json = |i: Integrity| serde_json::to_value(i).unwrap();
        assert_eq!(json(Integrity::Ok), "ok");
        assert_eq!(json(Integrity::NotChecked), "not checked");
        assert_eq!(
            json(Integrity::Failed("row 3 missing from index i".into())),
            "row 3 missing from index i"
        );
        assert_eq!(Integrity::from_lines(&["ok".into()]), Integrity::Ok);
        assert_eq!(
            Integrity::from_lines(&["a".into(), "b".into()]),
            Integrity::Failed("a; b".into())
        );
    }

    #[test]
    fn action_serializes_as_its_name() {
        for action in [
            Action::Checkpoint,
            Action::CheckpointNow,
            Action::Vacuum,
            Action::Archive,
            Action::Restore,
            Action::FreeDisk,
            Action::FixForeignKeys,
            Action::InvestigateSlowReads,
            Action::InvestigateSlowWrites,
            Action::ReviewDeadLetters,
            Action::BreakerOpen,
            Action::FixPermissions,
            Action::CheckWriter,
            Action::TakeBackup,
        ] {
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json, action.as_str());
            assert_eq!(serde_json::from_value::<Action>(json).unwrap(), action);
        }
    }
}
