//! Retention policies (`[[retention]]`) and the options of an archive run
//! (`[archive]`), with their defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default time between scheduled archive runs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// Default rows moved per batch (one archive file per batch).
pub const DEFAULT_BATCH_ROWS: usize = 10_000;
/// The shortest `keep` a policy may have.
pub const MIN_KEEP: Duration = Duration::from_secs(3600);

/// How a policy's column holds its timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// ISO-8601 text as SQLite's date functions read it
    /// (`2026-01-31T12:00:00Z`, `2026-01-31 12:00:00.123`, with or
    /// without a `Z` or `+HH:MM` offset). Compared with `julianday()`, so
    /// `T` or a space both work; text SQLite cannot read is never expired.
    #[default]
    Iso8601,
    /// Seconds since the Unix epoch (integer or real).
    UnixSeconds,
    /// Milliseconds since the Unix epoch.
    UnixMs,
}

impl TimeFormat {
    /// The format as it is written in the config: `iso8601`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            TimeFormat::Iso8601 => "iso8601",
            TimeFormat::UnixSeconds => "unix_seconds",
            TimeFormat::UnixMs => "unix_ms",
        }
    }

    /// The format named `s`, if any.
    pub fn parse(s: &str) -> Option<TimeFormat> {
        [
            TimeFormat::Iso8601,
            TimeFormat::UnixSeconds,
            TimeFormat::UnixMs,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }

    /// The SQL condition "`col` is older than the cutoff", the cutoff in
    /// milliseconds since the epoch bound as parameter `?{param}`. A NULL
    /// or unreadable value is never older.
    pub(crate) fn expired_sql(self, col: &str, param: usize) -> String {
        let col = crate::schema::expected::quote(col);
        match self {
            TimeFormat::Iso8601 => {
                format!("julianday({col}) < julianday(?{param} / 1000.0, 'unixepoch')")
            }
            TimeFormat::UnixSeconds => {
                format!("typeof({col}) IN ('integer', 'real') AND {col} < ?{param} / 1000.0")
            }
            TimeFormat::UnixMs => {
                format!("typeof({col}) IN ('integer', 'real') AND {col} < ?{param}")
            }
        }
    }
}

/// One `[[retention]]` entry: rows of `table` whose `column` is older than
/// `keep` are archived (or, with `archive = false`, deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// The table (an identifier: letters, digits, `_`, not starting with
    /// a digit).
    pub table: String,
    /// The timestamp column (an identifier).
    pub column: String,
    /// Rows older than this are expired; at least 1 hour.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
    /// `true`: expired rows go to archive files first; `false`: they are
    /// deleted.
    #[serde(default = "yes")]
    pub archive: bool,
    /// How `column` holds time.
    #[serde(default)]
    pub format: TimeFormat,
    /// Archive files older than this are deleted (their catalog row
    /// stays, marked); none: kept until deleted by hand.
    #[serde(default, with = "humantime_serde")]
    pub archive_keep: Option<Duration>,
}

fn yes() -> bool {
    true
}

impl RetentionPolicy {
    /// A policy archiving rows of `table` older than `keep` by `column`
    /// (ISO-8601 text).
    pub fn new(table: &str, column: &str, keep: Duration) -> RetentionPolicy {
        RetentionPolicy {
            table: table.into(),
            column: column.into(),
            keep,
            archive: true,
            format: TimeFormat::Iso8601,
            archive_keep: None,
        }
    }

    /// Refuse what cannot work, naming `key` (e.g. `retention[0]`).
    pub fn validate(&self, key: &str) -> std::result::Result<(), String> {
        check_identifier(&self.table).map_err(|e| format!("config key `{key}.table`: {e}"))?;
        check_identifier(&self.column).map_err(|e| format!("config key `{key}.column`: {e}"))?;
        if self.keep < MIN_KEEP {
            return Err(format!(
                "config key `{key}.keep` = \"{}\" is shorter than 1h: give how long rows are kept, at least \"1h\" (e.g. \"30d\")",
                humantime_serde::re::humantime::format_duration(self.keep)
            ));
        }
        if let Some(k) = self.archive_keep {
            if !self.archive {
                return Err(format!("config key `{key}.archive_keep` is set but `archive = false`: a purge-only policy writes no archives; remove archive_keep or set archive = true"));
            }
            if k < MIN_KEEP {
                return Err(format!(
                    "config key `{key}.archive_keep` = \"{}\" is shorter than 1h: give how long archive files are kept, at least \"1h\"",
                    humantime_serde::re::humantime::format_duration(k)
                ));
            }
        }
        Ok(())
    }
}

/// Refuse a table or column name that is not a plain identifier: letters,
/// digits and `_`, not starting with a digit, at most 128 characters.
pub fn check_identifier(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "{name:?} is not a table or column name resilite archives: use letters, digits and `_`, not starting with a digit"
        )))
    }
}

/// How an archive run works: where the files go, how big a batch is.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveOptions {
    /// The directory of the archive files.
    pub dir: PathBuf,
    /// Rows per batch (per archive file).
    pub batch_rows: usize,
    /// zstd level of the archive files.
    pub compress_level: i32,
}

impl ArchiveOptions {
    /// Defaults for the database `db`: files in `archives/` beside it.
    pub fn for_database(db: &Path) -> ArchiveOptions {
        let dir = db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("archives");
        ArchiveOptions {
            dir,
            batch_rows: DEFAULT_BATCH_ROWS,
            compress_level: crate::backup::DEFAULT_COMPRESS_LEVEL,
        }
    }
}
