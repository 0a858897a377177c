//! The BackupActor's configuration and its defaults.

use std::path::PathBuf;
use std::time::Duration;

use super::compress::Compress;
use super::retention::Retention;
use crate::connection::DbOptions;

/// Default time between scheduled backups.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// Default number of backups kept.
pub const DEFAULT_KEEP_LAST: usize = 10;
/// Default number of days, ISO weeks and months whose newest verified
/// backup is kept: none (only `keep_last` applies).
pub const DEFAULT_KEEP_GENERATIONS: usize = 0;
/// Default age of a verification after which a backup is verified again.
pub const DEFAULT_VERIFY_EVERY: Duration = Duration::from_secs(86_400);
/// Default zstd level of compressed backups (zstd's own default).
pub const DEFAULT_COMPRESS_LEVEL: i32 = 3;
/// Pages copied per backup step: 16 MiB of 4 KiB pages, a read snapshot
/// of a few tens of milliseconds (it holds back checkpoints, not writers).
/// Measured (`cargo bench --bench backup`): 256-page steps took 18% longer
/// than one step; steps this size come close to one.
pub const DEFAULT_STEP_PAGES: i32 = 4096;
/// Pause between two backup steps, so that writers get the file.
pub const DEFAULT_STEP_PAUSE: Duration = Duration::from_millis(1);

/// What the BackupActor needs to know: which database, where its backups
/// go, and the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupConfig {
    /// The application database (backups read it read-only).
    pub db: DbOptions,
    /// The directory backups are written to.
    pub dir: PathBuf,
    /// A scheduled backup is taken when the newest is this old; zero: no
    /// schedule.
    pub interval: Duration,
    /// Which backups retention keeps.
    pub retention: Retention,
    /// A backup not verified within this long is verified again.
    pub verify_every: Duration,
    /// Every verification also restores the backup on trial: a copy in a
    /// temporary directory, opened read-write with `db`'s options and
    /// checked there (see [`verify_with`](super::verify_with)).
    pub trial_restore: bool,
    /// Backups are stored as is or zstd-compressed (`.db.zst`).
    pub compress: Compress,
    /// The zstd level of compressed backups.
    pub compress_level: i32,
}

impl BackupConfig {
    /// Defaults for `db`, with backups in `backups/` beside it.
    pub fn new(db: DbOptions) -> BackupConfig {
        let dir = db
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join("backups");
        BackupConfig {
            db,
            dir,
            interval: DEFAULT_INTERVAL,
            retention: Retention {
                keep_last: DEFAULT_KEEP_LAST,
                keep_daily: DEFAULT_KEEP_GENERATIONS,
                keep_weekly: DEFAULT_KEEP_GENERATIONS,
                keep_monthly: DEFAULT_KEEP_GENERATIONS,
            },
            verify_every: DEFAULT_VERIFY_EVERY,
            trial_restore: false,
            compress: Compress::None,
            compress_level: DEFAULT_COMPRESS_LEVEL,
        }
    }
}
