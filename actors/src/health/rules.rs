//! The rules that judge a report: each raises the status (the worst rule
//! wins and names itself) and adds the recommendations it calls for, with
//! the threshold that triggered them.

use super::{Action, HealthConfig, HealthReport, HealthStatus, Integrity};
use crate::breaker::{BreakerState, DATABASE_BREAKER, FORCED_OPEN_UNTIL_MS};
use crate::slot::SlotState;

impl HealthReport {
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
                Action::FixPermissions,
                format!(
                    "the database file or its directory cannot be written ({}): make both writable by resilite's user (chmod/chown; chattr -i if it was made immutable)",
                    e.detail
                ),
            ),
            crate::ErrorClass::Corruption => (
                Action::Restore,
                "the write probe found the file corrupt: restore it from a verified backup".into(),
            ),
            _ => (
                Action::CheckWriter,
                format!("writes fail ({}): look at what holds the database or fills the disk", e.detail),
            ),
        };
        self.recommend(action, reason);
    }

    /// Raise the status for actors that are restarting or failed.
    pub(crate) fn judge_actors(&mut self) {
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
    pub(crate) fn judge_queue(&mut self) {
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
                Action::ReviewDeadLetters,
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
    pub(crate) fn judge_breakers(&mut self) {
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
            self.recommend(Action::BreakerOpen, advice);
        }
    }

    /// Derive the status (worst rule wins) and the recommendations from the
    /// integrity result and the figures of a database that could be read.
    pub(crate) fn judge_database(&mut self, t: &HealthConfig) {
        self.judge_integrity();
        self.judge_disk(t);
        self.judge_foreign_keys();
        self.judge_wal(t);
        self.judge_space(t);
        self.judge_probes(t);
    }

    /// CRITICAL: a query, a write or an actor met a corruption error
    /// (`seen` says which and what), whatever this run's checks found: the
    /// damaged page may lie outside what they read. Kept until the file is
    /// replaced or a full integrity check passes.
    pub(crate) fn judge_corruption_seen(&mut self, seen: &str) {
        if self.integrity.problems().is_none() {
            self.integrity = Integrity::Failed(seen.to_string());
        }
        self.raise(HealthStatus::Critical, format!("corruption seen: {seen}"));
        if !self.recommends(Action::Restore) {
            self.recommend(
                Action::Restore,
                "SQLite reported the file damaged; restore from a verified backup (recovery starts from here)".into(),
            );
        }
    }

    /// With scheduled backups (`t.backup_interval` > 0): WARNING when the
    /// newest verified backup is older than `t.backup_max_age` (default
    /// twice the interval), CRITICAL when none is verified `up_for` past
    /// `t.backup_missing_after`.
    pub(crate) fn judge_backups(&mut self, t: &HealthConfig, up_for: std::time::Duration) {
        let Some(b) = self.backups.clone() else {
            return;
        };
        if t.backup_interval.is_zero() {
            return;
        }
        let max_age = if t.backup_max_age.is_zero() {
            t.backup_interval * 2
        } else {
            t.backup_max_age
        };
        match b.newest_verified_age_s {
            None if up_for >= t.backup_missing_after => {
                self.raise(
                    HealthStatus::Critical,
                    format!(
                        "no verified backup ({} kept, {} failed verification) {} s after start",
                        b.count,
                        b.failed_verification,
                        up_for.as_secs()
                    ),
                );
                self.recommend(
                    Action::TakeBackup,
                    "no verified backup to recover from: look at the backup log lines and the backup directory (space, permissions), then take one (`POST /v1/backups`)".into(),
                );
            }
            Some(age) if age > max_age.as_secs_f64() => {
                self.raise(
                    HealthStatus::Warning,
                    format!(
                        "the newest verified backup is {age:.0} s old, over {} s",
                        max_age.as_secs()
                    ),
                );
                self.recommend(
                    Action::TakeBackup,
                    format!(
                        "scheduled backups are not being taken or verified (every {} s expected): look at the backup log lines, then take one (`POST /v1/backups`)",
                        t.backup_interval.as_secs()
                    ),
                );
            }
            _ => {}
        }
    }

    /// CRITICAL when the integrity check reported problems.
    fn judge_integrity(&mut self) {
        if let Some(problems) = self.integrity.problems() {
            let rule = format!("integrity check failed: {problems}");
            self.raise(HealthStatus::Critical, rule);
            self.recommend(
                Action::Restore,
                "the integrity check failed; restore from a verified backup (recovery starts from here)".into(),
            );
        }
    }

    /// CRITICAL when the filesystem is nearly full.
    fn judge_disk(&mut self, t: &HealthConfig) {
        let f = &self.figures;
        if f.disk_measured && f.disk_free_pct < t.min_disk_free_pct {
            let pct = f.disk_free_pct;
            self.raise(
                HealthStatus::Critical,
                format!("disk free {pct:.1}% < {}%", t.min_disk_free_pct),
            );
            self.recommend(Action::FreeDisk, format!(
                "only {pct:.1}% of the filesystem is free (threshold {}%): free space before writes fail with SQLITE_FULL",
                t.min_disk_free_pct
            ));
        }
    }

    /// A WARNING for rows whose parent is missing.
    fn judge_foreign_keys(&mut self) {
        let violations = self.figures.foreign_key_violations;
        if violations > 0 {
            self.raise(
                HealthStatus::Warning,
                format!("{violations} foreign key violation(s)"),
            );
            self.recommend(
                Action::FixForeignKeys,
                "PRAGMA foreign_key_check reports rows whose parent is missing".into(),
            );
        }
    }

    /// A checkpoint when the WAL is over its threshold; a WARNING and an
    /// immediate checkpoint when it is over the urgent one.
    fn judge_wal(&mut self, t: &HealthConfig) {
        let wal = self.figures.wal_bytes;
        if wal > t.wal_urgent_bytes {
            self.raise(
                HealthStatus::Warning,
                format!("WAL {wal} bytes > {}", t.wal_urgent_bytes),
            );
            self.recommend(
                Action::CheckpointNow,
                format!(
                    "the WAL is {wal} bytes (> {}): run an immediate checkpoint (TRUNCATE)",
                    t.wal_urgent_bytes
                ),
            );
        } else if wal > t.wal_checkpoint_bytes {
            self.recommend(
                Action::Checkpoint,
                format!(
                    "the WAL is {wal} bytes (> {}): checkpoint it",
                    t.wal_checkpoint_bytes
                ),
            );
        }
    }

    /// VACUUM when few pages are in use; archiving when the file is large.
    fn judge_space(&mut self, t: &HealthConfig) {
        let f = self.figures.clone();
        if f.utilization_pct < t.min_utilization_pct {
            self.recommend(
                Action::Vacuum,
                format!(
                    "only {:.1}% of pages are in use (< {}%); {} free pages: VACUUM reclaims them",
                    f.utilization_pct, t.min_utilization_pct, f.freelist_count
                ),
            );
        }
        if f.db_bytes > t.archive_bytes {
            self.recommend(
                Action::Archive,
                format!(
                    "the database is {} bytes (> {}): consider archiving old rows",
                    f.db_bytes, t.archive_bytes
                ),
            );
        }
    }

    /// A WARNING when the read or write probe is slow.
    fn judge_probes(&mut self, t: &HealthConfig) {
        let read_ms = self.figures.read_probe_ms;
        if read_ms > t.slow_read.as_secs_f64() * 1000.0 {
            self.raise(HealthStatus::Warning, format!("read probe {read_ms:.1} ms"));
            self.recommend(
                Action::InvestigateSlowReads,
                format!(
                    "the read probe took {read_ms:.1} ms (> {} ms)",
                    t.slow_read.as_millis()
                ),
            );
        }
        if let Some(ms) = self
            .figures
            .write_probe_ms
            .filter(|ms| *ms > t.slow_write.as_secs_f64() * 1000.0)
        {
            self.raise(HealthStatus::Warning, format!("write probe {ms:.1} ms"));
            self.recommend(
                Action::InvestigateSlowWrites,
                format!(
                    "the write probe took {ms:.1} ms (> {} ms): look for long transactions, lock holders or a slow disk",
                    t.slow_write.as_millis()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Integrity;

    fn report() -> HealthReport {
        let mut r = HealthReport::new("app.db".into());
        r.figures.utilization_pct = 100.0;
        r
    }

    #[test]
    fn judge_database_a_healthy_file_has_no_recommendations() {
        let mut r = report();
        r.integrity = Integrity::Ok;
        r.judge_database(&HealthConfig::default());
        assert_eq!(r.status, HealthStatus::Healthy);
        assert_eq!(r.rule, "every check passed");
        assert!(r.recommendations.is_empty(), "{:?}", r.recommendations);
    }

    #[test]
    fn judge_database_the_worst_rule_wins_and_each_recommends() {
        let mut r = report();
        r.integrity = Integrity::Failed("page 6: btree problem".into());
        r.figures.wal_bytes = 80 * 1024 * 1024;
        r.figures.utilization_pct = 10.0;
        r.judge_database(&HealthConfig::default());
        assert_eq!(r.status, HealthStatus::Critical);
        assert_eq!(r.rule, "integrity check failed: page 6: btree problem");
        assert!(r.recommends(Action::Restore));
        assert!(r.recommends(Action::CheckpointNow));
        assert!(!r.recommends(Action::Checkpoint));
        assert!(r.recommends(Action::Vacuum));
    }

    #[test]
    fn judge_database_an_unchecked_integrity_is_not_a_failure() {
        let mut r = report();
        r.judge_database(&HealthConfig::default());
        assert_eq!(r.status, HealthStatus::Healthy);
        assert!(!r.recommends(Action::Restore));
    }

    #[test]
    fn judge_write_probe_a_permission_error_recommends_fix_permissions() {
        let mut r = report();
        let e = crate::Error::classed(
            crate::ErrorClass::Permission,
            "attempt to write a readonly database",
        );
        r.judge_write_probe(&e);
        assert_eq!(r.status, HealthStatus::Critical);
        let advice = &r.recommendation(Action::FixPermissions).unwrap().reason;
        assert!(advice.contains("chmod"), "{advice}");
    }
}
