//! Health inspection of a database file: integrity, WAL and file sizes,
//! page utilization, free disk space and a read probe, turned into an
//! overall status with the rule that derived it and recommendations with
//! their thresholds.
//!
//! [`inspect`] only reads: it opens its own read-only connection, so it can
//! run beside a live writer or on a file no process has open (the
//! `resilite health` command).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::connection::{open_read_only, DbOptions};
use crate::error::Result;

/// Default WAL size that recommends a checkpoint.
pub const DEFAULT_WAL_CHECKPOINT_BYTES: u64 = 1024 * 1024;
/// Default WAL size that calls for an immediate checkpoint.
pub const DEFAULT_WAL_URGENT_BYTES: u64 = 10 * 1024 * 1024;
/// Default page utilization (%) below which VACUUM is recommended.
pub const DEFAULT_MIN_UTILIZATION_PCT: f64 = 70.0;
/// Default database size that suggests archiving old rows.
pub const DEFAULT_ARCHIVE_BYTES: u64 = 100 * 1024 * 1024;
/// Default read probe latency above which reads are called slow.
pub const DEFAULT_SLOW_READ: Duration = Duration::from_millis(50);
/// Default free disk space (%) below which the status is CRITICAL.
pub const DEFAULT_MIN_DISK_FREE_PCT: f64 = 10.0;

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

    /// Exit code of `resilite health`: 0 healthy, 1 warning, 2 critical, 3 unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            HealthStatus::Healthy => 0,
            HealthStatus::Warning => 1,
            HealthStatus::Critical => 2,
            HealthStatus::Unknown => 3,
        }
    }
}

/// Thresholds that turn figures into statuses and recommendations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// WAL bytes above which a checkpoint is recommended.
    pub wal_checkpoint_bytes: u64,
    /// WAL bytes above which an immediate checkpoint is needed (WARNING).
    pub wal_urgent_bytes: u64,
    /// Utilization (%) below which VACUUM is recommended.
    pub min_utilization_pct: f64,
    /// Database bytes above which archiving is suggested.
    pub archive_bytes: u64,
    /// Read probe latency above which reads are slow (WARNING).
    pub slow_read: Duration,
    /// Free disk (%) below which the status is CRITICAL.
    pub min_disk_free_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            wal_checkpoint_bytes: DEFAULT_WAL_CHECKPOINT_BYTES,
            wal_urgent_bytes: DEFAULT_WAL_URGENT_BYTES,
            min_utilization_pct: DEFAULT_MIN_UTILIZATION_PCT,
            archive_bytes: DEFAULT_ARCHIVE_BYTES,
            slow_read: DEFAULT_SLOW_READ,
            min_disk_free_pct: DEFAULT_MIN_DISK_FREE_PCT,
        }
    }
}

/// The measured figures of one inspection.
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
    /// Milliseconds the read probe took.
    pub read_probe_ms: f64,
    /// Rows reported by `PRAGMA foreign_key_check`.
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

/// The result of one inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The database file inspected.
    pub path: PathBuf,
    /// Overall status.
    pub status: HealthStatus,
    /// The rule that set the status.
    pub rule: String,
    /// `ok`, or what `quick_check` / `integrity_check` reported.
    pub integrity: String,
    /// Whether the full `integrity_check` ran (otherwise `quick_check`).
    pub full_integrity_check: bool,
    /// The figures measured.
    pub figures: Figures,
    /// What to do, with the thresholds that triggered it.
    pub recommendations: Vec<Recommendation>,
}

/// Inspect the database at `db`. `full` runs `integrity_check` instead of
/// the faster `quick_check`. A file that cannot be opened or read yields an
/// UNKNOWN (missing) or CRITICAL (not a database) report, not an error.
pub fn inspect(db: &DbOptions, full: bool, t: &Thresholds) -> HealthReport {
    let mut report = HealthReport {
        path: db.path.clone(),
        status: HealthStatus::Healthy,
        rule: "every check passed".into(),
        integrity: "not checked".into(),
        full_integrity_check: full,
        figures: Figures::default(),
        recommendations: Vec::new(),
    };
    if !db.path.is_file() {
        report.status = HealthStatus::Unknown;
        report.rule = format!("{} does not exist or is not a file", db.path.display());
        return report;
    }
    report.figures.db_bytes = file_len(&db.path);
    report.figures.wal_bytes = file_len(&sibling(&db.path, "-wal"));
    report.figures.shm_bytes = file_len(&sibling(&db.path, "-shm"));
    if let Some((free, pct)) = disk_free(&db.path) {
        report.figures.disk_free_bytes = free;
        report.figures.disk_free_pct = pct;
    }
    if let Err(e) = open_read_only(db).and_then(|conn| measure(&conn, full, &mut report)) {
        report.integrity = e.detail.clone();
        report.status = match e.class {
            crate::ErrorClass::Corruption => HealthStatus::Critical,
            _ => HealthStatus::Unknown,
        };
        report.rule = format!("the database could not be inspected: {}", e.detail);
        if report.status == HealthStatus::Critical {
            recommend(
                &mut report,
                "restore",
                "the file is not a readable SQLite database; restore it from a verified backup",
            );
        }
        return report;
    }
    judge(&mut report, t);
    report
}

fn measure(conn: &Connection, full: bool, report: &mut HealthReport) -> Result<()> {
    let started = Instant::now();
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    report.figures.read_probe_ms = started.elapsed().as_secs_f64() * 1000.0;
    let f = &mut report.figures;
    f.page_count = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    f.page_size = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    f.freelist_count = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    f.utilization_pct = if f.page_count == 0 {
        100.0
    } else {
        100.0 * (f.page_count - f.freelist_count) as f64 / f.page_count as f64
    };
    let pragma = if full {
        "integrity_check"
    } else {
        "quick_check"
    };
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}(20)"))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    report.integrity = lines.join("; ");
    let mut fk = conn.prepare("PRAGMA foreign_key_check")?;
    f.foreign_key_violations = fk.query_map([], |_| Ok(()))?.count() as i64;
    Ok(())
}

/// Derive the status (worst rule wins) and the recommendations.
fn judge(report: &mut HealthReport, t: &Thresholds) {
    let f = report.figures.clone();
    let set = |report: &mut HealthReport, status: HealthStatus, rule: String| {
        if status > report.status {
            report.status = status;
            report.rule = rule;
        }
    };
    if report.integrity != "ok" {
        set(
            report,
            HealthStatus::Critical,
            format!("integrity check failed: {}", report.integrity),
        );
        recommend(report, "restore", "the integrity check failed; restore from a verified backup (recovery starts from here)");
    }
    if f.disk_free_pct > 0.0 && f.disk_free_pct < t.min_disk_free_pct {
        set(
            report,
            HealthStatus::Critical,
            format!(
                "disk free {:.1}% < {}%",
                f.disk_free_pct, t.min_disk_free_pct
            ),
        );
        recommend(report, "free_disk", &format!(
            "only {:.1}% of the filesystem is free (threshold {}%): free space before writes fail with SQLITE_FULL",
            f.disk_free_pct, t.min_disk_free_pct
        ));
    }
    if f.foreign_key_violations > 0 {
        set(
            report,
            HealthStatus::Warning,
            format!("{} foreign key violation(s)", f.foreign_key_violations),
        );
        recommend(
            report,
            "fix_foreign_keys",
            "PRAGMA foreign_key_check reports rows whose parent is missing",
        );
    }
    if f.wal_bytes > t.wal_urgent_bytes {
        set(
            report,
            HealthStatus::Warning,
            format!("WAL {} bytes > {}", f.wal_bytes, t.wal_urgent_bytes),
        );
        recommend(
            report,
            "checkpoint_now",
            &format!(
                "the WAL is {} bytes (> {}): run an immediate checkpoint (TRUNCATE)",
                f.wal_bytes, t.wal_urgent_bytes
            ),
        );
    } else if f.wal_bytes > t.wal_checkpoint_bytes {
        recommend(
            report,
            "checkpoint",
            &format!(
                "the WAL is {} bytes (> {}): checkpoint it",
                f.wal_bytes, t.wal_checkpoint_bytes
            ),
        );
    }
    if f.utilization_pct < t.min_utilization_pct {
        recommend(
            report,
            "vacuum",
            &format!(
                "only {:.1}% of pages are in use (< {}%); {} free pages: VACUUM reclaims them",
                f.utilization_pct, t.min_utilization_pct, f.freelist_count
            ),
        );
    }
    if f.db_bytes > t.archive_bytes {
        recommend(
            report,
            "archive",
            &format!(
                "the database is {} bytes (> {}): consider archiving old rows",
                f.db_bytes, t.archive_bytes
            ),
        );
    }
    if f.read_probe_ms > t.slow_read.as_secs_f64() * 1000.0 {
        set(
            report,
            HealthStatus::Warning,
            format!("read probe {:.1} ms", f.read_probe_ms),
        );
        recommend(
            report,
            "investigate_slow_reads",
            &format!(
                "the read probe took {:.1} ms (> {} ms)",
                f.read_probe_ms,
                t.slow_read.as_millis()
            ),
        );
    }
}

fn recommend(report: &mut HealthReport, action: &str, reason: &str) {
    report.recommendations.push(Recommendation {
        action: action.into(),
        reason: reason.into(),
    });
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Free bytes and percent on the filesystem holding `path`.
fn disk_free(path: &Path) -> Option<(u64, f64)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let block = st.fragment_size() as u64;
    let free = st.blocks_available() as u64 * block;
    let total = st.blocks() as u64 * block;
    (total > 0).then(|| (free, 100.0 * free as f64 / total as f64))
}

impl HealthReport {
    /// A readable multi-line report for the command line.
    pub fn to_text(&self) -> String {
        let f = &self.figures;
        let mut out = format!(
            "{}: {}\n  rule: {}\n  integrity ({}): {}\n  size: {} bytes, WAL {} bytes, shm {} bytes\n  pages: {} x {} bytes, {} free, utilization {:.1}%\n  disk free: {} bytes ({:.1}%)\n  read probe: {:.2} ms\n  foreign key violations: {}\n",
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
            f.foreign_key_violations,
        );
        if self.recommendations.is_empty() {
            out.push_str("  recommendations: none\n");
        }
        for r in &self.recommendations {
            out.push_str(&format!("  recommend {}: {}\n", r.action, r.reason));
        }
        out
    }
}
