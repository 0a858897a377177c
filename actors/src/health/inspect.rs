//! The checks of a database file: integrity, WAL and file sizes, page
//! utilization, free disk space, foreign keys and a read probe.

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::{Action, HealthConfig, HealthReport, HealthStatus, Integrity};
use crate::connection::{open_read_only, DbOptions};
use crate::error::{ErrorClass, Result};
use crate::maintenance::{file_len, sibling};

/// Which integrity check to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityCheck {
    /// `PRAGMA quick_check`: O(N), skips index consistency.
    Quick,
    /// `PRAGMA integrity_check`: everything, slower.
    Full,
}

/// The slower checks to run besides the always-measured figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// The integrity check, if one is due.
    pub integrity: Option<IntegrityCheck>,
    /// Whether `PRAGMA foreign_key_check` is due.
    pub foreign_keys: bool,
}

impl Checks {
    /// Every check; the integrity check full or quick.
    pub fn all(full: bool) -> Checks {
        Checks {
            integrity: Some(if full {
                IntegrityCheck::Full
            } else {
                IntegrityCheck::Quick
            }),
            foreign_keys: true,
        }
    }
}

/// Inspect the database at `db` with every check (`full` runs
/// `integrity_check` instead of the faster `quick_check`), judged against
/// `config`'s thresholds. A file that cannot be opened or read yields an
/// UNKNOWN (missing) or CRITICAL (not a database) report, not an error.
pub fn inspect(db: &DbOptions, full: bool, config: &HealthConfig) -> HealthReport {
    let (mut report, readable) = measure(db, Checks::all(full));
    if readable {
        report.judge_database(config);
    }
    report
}

/// Measure the figures and run `checks`, without judging them. The flag is
/// false for a database that could not be read; its report's status is set.
pub fn measure(db: &DbOptions, checks: Checks) -> (HealthReport, bool) {
    let mut report = HealthReport::new(db.path.clone());
    if !db.path.is_file() {
        report.status = HealthStatus::Unknown;
        report.rule = format!("{} does not exist or is not a file", db.path.display());
        return (report, false);
    }
    report.figures.db_bytes = file_len(&db.path);
    report.figures.wal_bytes = file_len(&sibling(&db.path, "-wal"));
    report.figures.shm_bytes = file_len(&sibling(&db.path, "-shm"));
    if let Some((free, pct)) = disk_free(&db.path) {
        report.figures.disk_free_bytes = free;
        report.figures.disk_free_pct = pct;
        report.figures.disk_measured = true;
    }
    if let Err(e) = open_read_only(db).and_then(|conn| run_checks(&conn, checks, &mut report)) {
        report.integrity = Integrity::Failed(e.detail.clone());
        report.status = match e.class {
            ErrorClass::Corruption => HealthStatus::Critical,
            _ => HealthStatus::Unknown,
        };
        report.rule = format!("the database could not be inspected: {}", e.detail);
        if report.status == HealthStatus::Critical {
            report.recommend(
                Action::Restore,
                "the file is not a readable SQLite database; restore it from a verified backup"
                    .into(),
            );
        }
        return (report, false);
    }
    (report, true)
}

fn run_checks(conn: &Connection, checks: Checks, report: &mut HealthReport) -> Result<()> {
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
    if let Some(check) = checks.integrity {
        let pragma = match check {
            IntegrityCheck::Quick => "quick_check",
            IntegrityCheck::Full => "integrity_check",
        };
        let mut stmt = conn.prepare(&format!("PRAGMA {pragma}(20)"))?;
        let lines: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        report.integrity = Integrity::from_lines(&lines);
        report.full_integrity_check = check == IntegrityCheck::Full;
    }
    if checks.foreign_keys {
        let mut fk = conn.prepare("PRAGMA foreign_key_check")?;
        report.figures.foreign_key_violations = fk.query_map([], |_| Ok(()))?.count() as i64;
    }
    Ok(())
}

/// Free bytes and percent on the filesystem holding `path`.
pub(super) fn disk_free(path: &Path) -> Option<(u64, f64)> {
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
