//! A row of the archive catalog: [`ArchiveRecord`], and its phase,
//! [`ArchiveStatus`].

use serde::{Deserialize, Serialize};

use super::policy::TimeFormat;

/// Where an archive is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveStatus {
    /// The file is written and recorded; its rows are still in the
    /// database.
    Written,
    /// The file passed verification; its rows may still be in the
    /// database (the next run deletes them).
    Verified,
    /// The rows were deleted from the database: the archive holds them.
    Purged,
    /// The rows were put back into the database.
    Restored,
    /// The run could not complete it (see `detail`).
    Failed,
}

impl ArchiveStatus {
    /// The status as it is stored: `written`, `verified`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveStatus::Written => "written",
            ArchiveStatus::Verified => "verified",
            ArchiveStatus::Purged => "purged",
            ArchiveStatus::Restored => "restored",
            ArchiveStatus::Failed => "failed",
        }
    }

    /// The status named `s`, if any.
    pub fn parse(s: &str) -> Option<ArchiveStatus> {
        [
            ArchiveStatus::Written,
            ArchiveStatus::Verified,
            ArchiveStatus::Purged,
            ArchiveStatus::Restored,
            ArchiveStatus::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for ArchiveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One archive file and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    /// Its id in the catalog (what `resilite archive verify ID` takes).
    pub id: i64,
    /// The archive file.
    pub path: String,
    /// The table its rows came from.
    pub table: String,
    /// The policy's timestamp column.
    pub column: String,
    /// How that column holds time.
    pub format: TimeFormat,
    /// The rows archived were older than this (ms since the Unix epoch).
    pub cutoff_ms: i64,
    /// The oldest value of the column among the rows (as text).
    pub min_value: Option<String>,
    /// The newest value of the column among the rows (as text).
    pub max_value: Option<String>,
    /// The smallest rowid archived.
    pub first_rowid: i64,
    /// The largest rowid archived.
    pub last_rowid: i64,
    /// Rows in the archive.
    pub rows: u64,
    /// Size of the SQLite file inside, in bytes.
    pub uncompressed_size: u64,
    /// Size of the stored (zstd) file, in bytes.
    pub stored_size: u64,
    /// `uncompressed_size / stored_size`.
    pub ratio: f64,
    /// SHA-256 (hex) of the stored file.
    pub sha256: String,
    /// When it was written (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When it was written (UTC, RFC 3339).
    pub created_at: String,
    /// When its file is deleted (`archive_keep`); `None`: kept.
    pub expires_at_ms: Option<i64>,
    /// Its phase.
    pub status: ArchiveStatus,
    /// Why it failed, or how a restore went.
    pub detail: Option<String>,
    /// When the file was deleted (`archive_keep`), if it was.
    pub file_deleted_at_ms: Option<i64>,
    /// Rowids of rows in the file that changed in the database after the
    /// file was written: they stayed there with their change, are not
    /// archived, and a restore never puts their old copy back.
    #[serde(default)]
    pub kept_rowids: Vec<i64>,
}

impl ArchiveRecord {
    /// Rows the archive holds for good: those in the file less the kept
    /// ones.
    pub fn archived_rows(&self) -> u64 {
        self.rows.saturating_sub(self.kept_rowids.len() as u64)
    }
}
