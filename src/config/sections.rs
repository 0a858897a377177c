//! The `[database]`, `[writer]`, `[readers]`, `[http]`, `[supervisor]`,
//! `[backup]`, `[schema]` and `[audit]` sections and their defaults: the runtime's own `DEFAULT_*` constants
//! (in the parent module) and those of the actors each section configures.

use std::path::PathBuf;
use std::time::Duration;

use resilite_actors::backup::{
    Compress, DEFAULT_COMPRESS_LEVEL, DEFAULT_INTERVAL, DEFAULT_KEEP_GENERATIONS,
    DEFAULT_KEEP_LAST, DEFAULT_VERIFY_EVERY,
};
use resilite_actors::connection::DEFAULT_BUSY_TIMEOUT;
use resilite_actors::readers::{
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_ROWS, DEFAULT_POOL_SIZE, DEFAULT_QUERY_TIMEOUT,
};
use resilite_actors::slow_log::DEFAULT_SLOW_THRESHOLD;
use resilite_actors::writer::{
    DEFAULT_BATCH_WAIT, DEFAULT_MAX_BATCH, DEFAULT_MAX_RETRIES, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_RETRY_BASE, DEFAULT_RETRY_MAX, DEFAULT_STATEMENT_TIMEOUT,
};
use resilite_actors::{AuditLevel, Synchronous};
use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_AUDIT_LEVEL, DEFAULT_AUDIT_RETENTION, DEFAULT_BODY_TIMEOUT, DEFAULT_DATABASE_PATH,
    DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN, DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW,
};

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The application database file.
    pub path: PathBuf,
    /// The journal file; default: `<path>.journal` beside the database.
    pub journal_path: Option<PathBuf>,
    /// `PRAGMA synchronous`: off, normal, full or extra.
    pub synchronous: Synchronous,
    /// How long SQLite waits on a lock before reporting busy.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// Write-ahead logging (needed for readers that never wait).
    pub wal: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: PathBuf::from(DEFAULT_DATABASE_PATH),
            journal_path: None,
            synchronous: Synchronous::Full,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            wal: true,
        }
    }
}

/// `[writer]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterSection {
    /// Largest number of operations committed in one transaction.
    pub max_batch: usize,
    /// Longest wait for more writes before a commit (like PostgreSQL's commit_delay).
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Writes buffered for the connection thread before callers wait.
    pub queue_capacity: usize,
    /// In-place retries of a transient failure.
    pub max_retries: usize,
    /// First retry delay (doubles each time, with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Longest run of one caller statement; a longer one is interrupted
    /// and rolled back, and only its caller gets the error.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for WriterSection {
    fn default() -> Self {
        WriterSection {
            max_batch: DEFAULT_MAX_BATCH,
            batch_wait: DEFAULT_BATCH_WAIT,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_base_delay: DEFAULT_RETRY_BASE,
            retry_max_delay: DEFAULT_RETRY_MAX,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

/// `[readers]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadersSection {
    /// Number of read-only connections.
    pub pool_size: usize,
    /// Largest number of rows one query may return.
    pub max_rows: usize,
    /// Largest answer of one query (the sum of its values' sizes); also the
    /// largest string or blob any statement may build (`SQLITE_LIMIT_LENGTH`).
    pub max_response_bytes: usize,
    /// Longest run of one query; a longer one is interrupted.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
}

impl Default for ReadersSection {
    fn default() -> Self {
        ReadersSection {
            pool_size: DEFAULT_POOL_SIZE,
            max_rows: DEFAULT_MAX_ROWS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// Bearer token for /v1/*; required when `listen` is not loopback.
    pub token: Option<String>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Longest time a client may take to send a request's headers,
    /// counted from when the server waits for them: from connect, and on
    /// a keep-alive connection from the previous response.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest time a client may take to send a request's body, counted
    /// from the end of its headers (408).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// An idle keep-alive connection is closed after this long, or after
    /// `header_timeout` if that is shorter (its timer runs while a
    /// connection waits for its next request).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_LISTEN.into(),
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[supervisor]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Restarts allowed within `restart_window`; one more escalates.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_window: DEFAULT_RESTART_WINDOW,
        }
    }
}

/// `[backup]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSection {
    /// Where backups are written; default: `backups/` beside the database.
    pub dir: Option<PathBuf>,
    /// A scheduled backup is taken when the newest is this old; `0s`: no
    /// schedule (backups on request only).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The newest this many backups are kept, verified or not; `0` only
    /// with a generation below.
    pub keep_last: usize,
    /// The newest verified backup of each of the last this many UTC days
    /// that have one is kept too; `0`: off.
    pub keep_daily: usize,
    /// The same per ISO week (Monday to Sunday, UTC); `0`: off.
    pub keep_weekly: usize,
    /// The same per calendar month (UTC); `0`: off. Whatever these say, the
    /// newest verified backup is never deleted.
    pub keep_monthly: usize,
    /// A backup not verified within this long is verified again.
    #[serde(with = "humantime_serde")]
    pub verify_every: Duration,
    /// Keep the operation log: every operation the writer commits is
    /// appended to the journal (one extra journal commit per group commit,
    /// overlapping the next one) so that recovery can replay what came
    /// after the newest verified backup. On by default; without it a
    /// recovery restores the backup alone, and says so.
    pub op_log: bool,
    /// Recover by itself when the database is found damaged (an integrity
    /// check fails, or a query or write meets SQLITE_CORRUPT/NOTADB): once
    /// per damaged file, from the newest verified backup.
    pub auto_recover: bool,
    /// Every verification also restores the backup on trial: a copy in a
    /// temporary directory (`TMPDIR`), opened read-write as the runtime
    /// opens its database (WAL, `synchronous`, busy timeout) and checked
    /// with `PRAGMA integrity_check` there.
    pub trial_restore: bool,
    /// `none`: backups are stored as SQLite wrote them (`.db`); `zstd`:
    /// zstd-compressed (`.db.zst`, streamed), the SHA-256 of the stored
    /// file recorded along with the database's own size.
    pub compress: Compress,
    /// The zstd level (1 to 19) when `compress = "zstd"`.
    pub compress_level: i32,
}

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            dir: None,
            interval: DEFAULT_INTERVAL,
            keep_last: DEFAULT_KEEP_LAST,
            keep_daily: DEFAULT_KEEP_GENERATIONS,
            keep_weekly: DEFAULT_KEEP_GENERATIONS,
            keep_monthly: DEFAULT_KEEP_GENERATIONS,
            verify_every: DEFAULT_VERIFY_EVERY,
            op_log: true,
            auto_recover: true,
            trial_restore: false,
            compress: Compress::None,
            compress_level: DEFAULT_COMPRESS_LEVEL,
        }
    }
}

/// What [`Runtime::start`](crate::Runtime::start) does with `[schema] file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStart {
    /// Validate; refuse to start on an error finding (listed in the error).
    Strict,
    /// Validate; fix what `resilite fix` can (through the writer), log
    /// what was done and what is left, and start.
    Lenient,
    /// Do not validate at start.
    Off,
}

/// `[schema]`: the application's schema, its migrations and what start
/// does with them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaSection {
    /// A directory of migrations (`NNNN_name.up.sql`, each with an optional
    /// `NNNN_name.down.sql`) that `Runtime::start` applies before the
    /// runtime is ready; a migration that fails, or an applied one whose
    /// file changed, fails the start. A relative path is taken from the
    /// config file's directory (when the config is loaded from a file),
    /// as `file` is. Unset: no migrations at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrations_dir: Option<PathBuf>,
    /// Let the migrations applied at start drop tables or columns (or lose
    /// rows in a rebuild); without it such a migration is refused and the
    /// start fails.
    pub allow_destructive: bool,
    /// The expected schema (TOML). A relative path is taken from the
    /// config file's directory (when the config is loaded from a file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// `strict`, `lenient` or `off`; default: `strict` with a `file`,
    /// `off` without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_start: Option<OnStart>,
}

impl SchemaSection {
    /// The start-up mode in effect: as set, else `strict` with a file and
    /// `off` without.
    pub fn on_start(&self) -> OnStart {
        match (self.on_start, &self.file) {
            (Some(mode), _) => mode,
            (None, Some(_)) => OnStart::Strict,
            (None, None) => OnStart::Off,
        }
    }
}

/// `[audit]`: the operation audit's level, the slow-query log, and how long
/// the journal keeps events, error signatures, slow queries and operation
/// audit records. Events and the error log are always on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// The operation audit: `"off"`, `"failures"` (writes that did not
    /// commit: failed, rolled back, queued) or `"all"` (every write).
    pub level: AuditLevel,
    /// A write or query at least this long (as its caller waited for it)
    /// goes to the slow-query log, with its query plan; `"0s"` turns the
    /// slow-query log off.
    #[serde(with = "humantime_serde")]
    pub slow_threshold: Duration,
    /// Events, error signatures, slow queries and operation audit records
    /// not seen for this long are deleted (hourly, and at start); an error
    /// signature seen 100 times or more is kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            level: DEFAULT_AUDIT_LEVEL,
            slow_threshold: DEFAULT_SLOW_THRESHOLD,
            retention: DEFAULT_AUDIT_RETENTION,
        }
    }
}

/// `[archive]`: archive runs of the `[[retention]]` policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// Time between scheduled runs (the first an interval after start);
    /// `"0s"`: none (runs by `rt.archive_now()`, `POST /v1/archives/run`
    /// or `resilite archive run` only). No policy: no runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows moved per batch, one archive file each.
    pub batch_rows: usize,
    /// Where archive files go; default `archives/` beside the database.
    pub dir: Option<PathBuf>,
    /// zstd level of archive files (1 to 19).
    pub compress_level: i32,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        ArchiveSection {
            interval: resilite_actors::archive::DEFAULT_INTERVAL,
            batch_rows: resilite_actors::archive::DEFAULT_BATCH_ROWS,
            dir: None,
            compress_level: resilite_actors::backup::DEFAULT_COMPRESS_LEVEL,
        }
    }
}

/// `[log]`: the log filter of `resilite run`, applied again on a reload.
/// `RESILITE_LOG` (or `RUST_LOG`), when set, takes precedence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A tracing filter: a level (`error`, `warn`, `info`, `debug`,
    /// `trace`) or directives such as `"info,resilite=debug"`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: DEFAULT_LOG_LEVEL.into(),
        }
    }
}
