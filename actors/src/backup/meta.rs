//! What is known about a backup ([`BackupInfo`], kept in its JSON sidecar
//! and the journal's catalog), the outcome of a verification
//! ([`Verification`]), and how backups are named.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::destination::Destination;
use crate::error::{Error, Result};

/// Longest label.
const MAX_LABEL: usize = 64;

/// One backup: what was copied, when, and whether it was proven readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The file name in the backup directory:
    /// `<dbname>-<UTC timestamp>-<label>.db`, or `.db.zst` when compressed.
    pub name: String,
    /// Why it was taken: `manual`, `scheduled`, or the caller's label.
    pub label: String,
    /// When the copy started (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// How long the copy took.
    pub duration_ms: u64,
    /// Size of the stored file in bytes (compressed, for a `.db.zst`).
    pub size: u64,
    /// Pages in the copy.
    pub page_count: u64,
    /// SHA-256 of the stored file (compressed, for a `.db.zst`), hex.
    pub sha256: String,
    /// The SQLite library that wrote it.
    pub sqlite_version: String,
    /// `PRAGMA user_version` of the copy (the application's schema version).
    pub user_version: i64,
    /// Rows per table in the copy.
    pub row_counts: BTreeMap<String, u64>,
    /// Times the online copy started over because another connection wrote
    /// to the database meanwhile.
    #[serde(default)]
    pub restarts: u32,
    /// The last verification: when (ms), `None` if never verified.
    #[serde(default)]
    pub verified_at_ms: Option<i64>,
    /// The last verification's outcome, `None` if never verified.
    #[serde(default)]
    pub verified: Option<bool>,
    /// What the last verification found wrong (empty when it passed).
    #[serde(default)]
    pub verify_errors: Vec<String>,
    /// The operation-log position the copy holds: every logged operation
    /// up to this sequence number is in it, none after it (read from the
    /// copy itself, see `take`). Recovery replays the log after it. `None`
    /// when no operation was ever logged for the database.
    #[serde(default)]
    pub op_log_seq: Option<i64>,
    /// For a compressed backup, the size of the database inside (bytes);
    /// `None` for an uncompressed one (`size` is the database's size). Kept
    /// in the sidecar only (the catalog has no column for it): the
    /// BackupActor reads it from there at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
}

impl BackupInfo {
    /// Passed its last verification.
    pub fn is_verified(&self) -> bool {
        self.verified == Some(true)
    }

    /// Stored zstd-compressed (its name ends in `.zst`).
    pub fn is_compressed(&self) -> bool {
        self.name.ends_with(super::compress::ZSTD_SUFFIX)
    }

    /// The sidecar's name: `<name>.json`.
    pub fn sidecar_name(&self) -> String {
        sidecar_name(&self.name)
    }

    /// This info with the outcome of `verification`.
    pub fn apply(&mut self, verification: &Verification) {
        self.verified_at_ms = Some(verification.verified_at_ms);
        self.verified = Some(verification.passed);
        self.verify_errors = verification.errors.clone();
    }
}

/// The sidecar of the backup `name`.
pub fn sidecar_name(name: &str) -> String {
    format!("{name}.json")
}

/// Read the sidecar of the backup file at `path` (`<path>.json`).
pub fn read_sidecar(path: &Path) -> Result<BackupInfo> {
    let mut sidecar = path.as_os_str().to_owned();
    sidecar.push(".json");
    let sidecar = std::path::PathBuf::from(sidecar);
    let text = std::fs::read_to_string(&sidecar).map_err(|e| {
        Error::bad_input(format!(
            "cannot read {} ({e}): a backup is verified against the metadata written beside it; keep the .json file next to the backup file",
            sidecar.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(format!(
            "{} is not a resilite backup sidecar: {e}",
            sidecar.display()
        ))
    })
}

/// Fill in, for each compressed backup among `backups` (as the catalog
/// lists them), what the catalog has no column for
/// ([`BackupInfo::uncompressed_size`]) from its sidecar in `dest`. Best
/// effort: a missing or unreadable sidecar leaves it `None` (verification
/// then skips the size check; the zstd frame's checksum still holds).
pub fn fill_from_sidecars(dest: &dyn Destination, backups: &mut [BackupInfo]) {
    for b in backups
        .iter_mut()
        .filter(|b| b.is_compressed() && b.uncompressed_size.is_none())
    {
        let side = dest.read_path(&b.name).and_then(|path| read_sidecar(&path));
        match side {
            Ok(side) if side.name == b.name => b.uncompressed_size = side.uncompressed_size,
            Ok(side) => {
                tracing::warn!(backup = %b.name, sidecar = %side.name, "the sidecar describes another backup")
            }
            Err(e) => tracing::warn!(backup = %b.name, error = %e, "the sidecar was not read"),
        }
    }
}

/// The outcome of verifying one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The backup's name.
    pub name: String,
    /// Every check passed.
    pub passed: bool,
    /// What failed, one line each (empty when it passed).
    pub errors: Vec<String>,
    /// When it was verified (ms since the Unix epoch).
    pub verified_at_ms: i64,
    /// How long the checks took.
    pub duration_ms: u64,
}

/// Refuse a label that would not make a plain file name: 1 to 64 ASCII
/// letters, digits, `-` and `_`.
pub fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= MAX_LABEL
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        return Ok(());
    }
    Err(Error::bad_input(format!(
        "invalid backup label {label:?}: use 1 to {MAX_LABEL} letters, digits, `-` or `_` (e.g. pre-migration)"
    )))
}

/// `<dbname>-<UTC timestamp>-<label>.db` for a backup of `db` started at
/// `at_ms`.
pub fn backup_name(db: &Path, at_ms: i64, label: &str) -> String {
    let stem = db
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("db");
    let stem: String = stem
        .chars()
        .map(|c| if c == '.' || c == '/' { '_' } else { c })
        .collect();
    format!("{stem}-{}-{label}.db", utc_stamp(at_ms))
}

/// `YYYYMMDDTHHMMSS.mmmZ` in UTC.
pub fn utc_stamp(at_ms: i64) -> String {
    let secs = at_ms.div_euclid(1000);
    let ms = at_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_name_has_utc_stamp_and_label() {
        assert_eq!(utc_stamp(0), "19700101T000000.000Z");
        assert_eq!(utc_stamp(1_709_251_199_123), "20240229T235959.123Z");
        assert_eq!(
            backup_name(Path::new("/data/app.db"), 0, "manual"),
            "app-19700101T000000.000Z-manual.db"
        );
    }

    #[test]
    fn check_label_refuses_path_parts() {
        assert!(check_label("pre-migration").is_ok());
        for bad in ["", "a/b", "..", "x y", &"l".repeat(65)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }
}
