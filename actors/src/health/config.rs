//! `[health]`: how often each check runs, the thresholds the rules judge
//! against, and the automatic maintenance, with their defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default `interval`: sizes, probes and actor states.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default `quick_check_every`.
pub const DEFAULT_QUICK_CHECK_EVERY: Duration = Duration::from_secs(5 * 60);
/// Default `integrity_check_every`.
pub const DEFAULT_INTEGRITY_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Default `foreign_key_check_every`.
pub const DEFAULT_FOREIGN_KEY_CHECK_EVERY: Duration = Duration::from_secs(3600);
/// Default `history_retention`: 90 days.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default `vacuum_idle`.
pub const DEFAULT_VACUUM_IDLE: Duration = Duration::from_secs(5 * 60);
/// Default `optimize_every`.
pub const DEFAULT_OPTIMIZE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Default `wal_checkpoint_bytes`: 1 MiB.
pub const DEFAULT_WAL_CHECKPOINT_BYTES: u64 = 1024 * 1024;
/// Default `wal_urgent_bytes`: 64 MiB. The writer's own checkpoints keep
/// a busy WAL under about 16 MiB (4000 pages of 4 KiB, see
/// `writer::checkpoint`) and checkpoint in place past four times that, so
/// a WAL this large means checkpoints are not keeping up (a reader holds
/// an old snapshot, or the file cannot be written).
pub const DEFAULT_WAL_URGENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default `min_utilization_pct`.
pub const DEFAULT_MIN_UTILIZATION_PCT: f64 = 70.0;
/// Default `archive_bytes`: 100 MiB.
pub const DEFAULT_ARCHIVE_BYTES: u64 = 100 * 1024 * 1024;
/// Default `slow_read`.
pub const DEFAULT_SLOW_READ: Duration = Duration::from_millis(50);
/// Default `slow_write`.
pub const DEFAULT_SLOW_WRITE: Duration = Duration::from_millis(20);
/// Default `backup_missing_after`.
pub const DEFAULT_BACKUP_MISSING_AFTER: Duration = Duration::from_secs(10 * 60);
/// Default `resource_interval`: how often the process's resources are
/// sampled.
pub const DEFAULT_RESOURCE_INTERVAL: Duration = Duration::from_secs(60);
/// Default `min_disk_free_pct`.
pub const DEFAULT_MIN_DISK_FREE_PCT: f64 = 10.0;

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
    /// How often a resource sample (memory, CPU, descriptors, file sizes,
    /// free disk, queue depth, write rate) is taken and stored in the
    /// journal; `0s`: never.
    #[serde(with = "humantime_serde")]
    pub resource_interval: Duration,
    /// Age of the newest verified backup above which the status is
    /// WARNING; `0s`: twice `backup.interval`.
    #[serde(with = "humantime_serde")]
    pub backup_max_age: Duration,
    /// With scheduled backups, how long after start a missing verified
    /// backup makes the status CRITICAL (the first one is taken at start).
    #[serde(with = "humantime_serde")]
    pub backup_missing_after: Duration,
    /// `backup.interval`, copied from `[backup]` (zero: no schedule, and
    /// no backup-age rule).
    #[serde(skip)]
    pub backup_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: DEFAULT_INTERVAL,
            quick_check_every: DEFAULT_QUICK_CHECK_EVERY,
            integrity_check_every: DEFAULT_INTEGRITY_CHECK_EVERY,
            foreign_key_check_every: DEFAULT_FOREIGN_KEY_CHECK_EVERY,
            history_retention: DEFAULT_HISTORY_RETENTION,
            auto_checkpoint: true,
            auto_vacuum: true,
            vacuum_idle: DEFAULT_VACUUM_IDLE,
            optimize_every: DEFAULT_OPTIMIZE_EVERY,
            wal_checkpoint_bytes: DEFAULT_WAL_CHECKPOINT_BYTES,
            wal_urgent_bytes: DEFAULT_WAL_URGENT_BYTES,
            min_utilization_pct: DEFAULT_MIN_UTILIZATION_PCT,
            archive_bytes: DEFAULT_ARCHIVE_BYTES,
            slow_read: DEFAULT_SLOW_READ,
            slow_write: DEFAULT_SLOW_WRITE,
            min_disk_free_pct: DEFAULT_MIN_DISK_FREE_PCT,
            resource_interval: DEFAULT_RESOURCE_INTERVAL,
            backup_max_age: Duration::ZERO,
            backup_missing_after: DEFAULT_BACKUP_MISSING_AFTER,
            backup_interval: Duration::ZERO,
        }
    }
}
