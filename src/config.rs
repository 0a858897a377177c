//! Configuration: parsed in this one place from TOML, then environment
//! overrides `RESILITE_<SECTION>_<KEY>`, then checked by [`Config::validate`].
//! Unknown sections and keys are errors, never ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use resilite_actors::breaker::DATABASE_BREAKER;
use resilite_actors::connection::DEFAULT_BUSY_TIMEOUT;
use resilite_actors::readers::{
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_ROWS, DEFAULT_POOL_SIZE, DEFAULT_QUERY_TIMEOUT,
};
use resilite_actors::writer::{
    DEFAULT_BATCH_WAIT, DEFAULT_MAX_BATCH, DEFAULT_MAX_RETRIES, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_RETRY_BASE, DEFAULT_RETRY_MAX, DEFAULT_STATEMENT_TIMEOUT,
};
use resilite_actors::{DbOptions, RetryPolicy, Synchronous, WriterConfig};
// The sections owned by the actors they configure: `[health]`, `[retry]`
// and `[breakers.<name>]`.
pub use resilite_actors::{BreakerConfig, HealthConfig, RetryConfig};
use serde::{Deserialize, Serialize};

/// Default application database.
pub const DEFAULT_DATABASE_PATH: &str = "./data/app.db";
/// Default HTTP listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default largest HTTP request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default longest time to receive a request's headers.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest time to receive a request's body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time an idle keep-alive connection is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most client connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default restarts allowed within the window before escalating.
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
/// Default restart window.
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "RESILITE_";
/// Environment variable of the log filter (not a config key).
pub const LOG_ENV: &str = "RESILITE_LOG";

/// The whole configuration of a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[database]`: the application database.
    pub database: DatabaseConfig,
    /// `[writer]`: group commit and in-place retries.
    pub writer: WriterSection,
    /// `[readers]`: the read pool.
    pub readers: ReadersSection,
    /// `[http]`: the HTTP API of `resilite run`.
    pub http: HttpConfig,
    /// `[supervisor]`: restart policy.
    pub supervisor: SupervisorConfig,
    /// `[health]`: check schedules, thresholds, automatic maintenance.
    pub health: HealthConfig,
    /// `[retry]`: the durable retry queue.
    pub retry: RetryConfig,
    /// `[breakers.<name>]`: circuit breakers; `database` is the writer's.
    pub breakers: BTreeMap<String, BreakerConfig>,
}

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

/// A configuration that cannot be used; the message names the key, the
/// value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults with the application database at `path`.
    pub fn for_database(path: impl Into<PathBuf>) -> Config {
        let mut config = Config::default();
        config.database.path = path.into();
        config
    }

    /// Read `path`, apply the process environment's overrides, validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read config file {}: {e}; pass an existing file with --config",
                path.display()
            ))
        })?;
        Config::parse(&text, std::env::vars())
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parse TOML text, apply `RESILITE_<SECTION>_<KEY>` overrides from
    /// `env`, validate.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(format!("invalid TOML: {e}")))?;
        let applied = apply_env(&mut table, env)?;
        let config: Config = if applied.is_empty() {
            toml::from_str(text).map_err(|e| type_error(text, &e, &[]))?
        } else {
            let merged = toml::to_string(&table).map_err(|e| ConfigError(e.to_string()))?;
            toml::from_str(&merged).map_err(|e| type_error(&merged, &e, &applied))?
        };
        config.validate().map_err(|e| note_env(e, &applied))?;
        Ok(config)
    }

    /// Reject values that cannot work, naming the key, the value and what
    /// is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let db = &self.database;
        if db.path.as_os_str().is_empty() {
            return Err(ConfigError(
                "config key `database.path` is empty: set it to the SQLite file to use, e.g. \"./data/app.db\"".into(),
            ));
        }
        in_a_file("database.path", &db.path)?;
        if let Some(journal) = &db.journal_path {
            in_a_file("database.journal_path", journal)?;
        }
        if self.journal_path() == db.path {
            return Err(ConfigError(format!(
                "config key `database.journal_path` = \"{}\" is the application database itself: the journal needs its own file",
                db.path.display()
            )));
        }
        duration(
            "database.busy_timeout",
            db.busy_timeout,
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        let w = &self.writer;
        range("writer.max_batch", w.max_batch, 1, 100_000)?;
        duration(
            "writer.batch_wait",
            w.batch_wait,
            Duration::ZERO,
            Duration::from_millis(100),
        )?;
        range("writer.queue_capacity", w.queue_capacity, 1, 10_000_000)?;
        range("writer.max_retries", w.max_retries, 0, 100)?;
        duration(
            "writer.retry_base_delay",
            w.retry_base_delay,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        duration(
            "writer.retry_max_delay",
            w.retry_max_delay,
            w.retry_base_delay,
            Duration::from_secs(3600),
        )?;
        range("readers.pool_size", self.readers.pool_size, 1, 256)?;
        duration(
            "writer.statement_timeout",
            w.statement_timeout,
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        )?;
        range("readers.max_rows", self.readers.max_rows, 1, 100_000_000)?;
        range(
            "readers.max_response_bytes",
            self.readers.max_response_bytes,
            1024,
            1 << 30,
        )?;
        duration(
            "readers.query_timeout",
            self.readers.query_timeout,
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        )?;
        let http = &self.http;
        let addr: SocketAddr = http.listen.parse().map_err(|_| {
            ConfigError(format!(
                "config key `http.listen` = \"{}\" is invalid: must be an IP address and port, e.g. \"127.0.0.1:7070\"",
                http.listen
            ))
        })?;
        check_token(&http.listen, addr, http.token.as_deref())?;
        range(
            "http.max_body_bytes",
            http.max_body_bytes,
            1024,
            256 * 1024 * 1024,
        )?;
        for (key, value) in [
            ("http.header_timeout", http.header_timeout),
            ("http.body_timeout", http.body_timeout),
            ("http.idle_timeout", http.idle_timeout),
        ] {
            duration(
                key,
                value,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?;
        }
        range("http.max_connections", http.max_connections, 1, 1_000_000)?;
        range(
            "supervisor.max_restarts",
            self.supervisor.max_restarts,
            0,
            1000,
        )?;
        duration(
            "supervisor.restart_window",
            self.supervisor.restart_window,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
        )?;
        self.validate_health()?;
        self.validate_retry()?;
        for (name, breaker) in &self.breakers {
            breaker.validate(name).map_err(ConfigError)?;
        }
        Ok(())
    }

    /// The configuration of the writer's built-in `database` breaker.
    pub fn database_breaker(&self) -> BreakerConfig {
        self.breakers
            .get(DATABASE_BREAKER)
            .cloned()
            .unwrap_or_default()
    }

    fn validate_retry(&self) -> Result<(), ConfigError> {
        let r = &self.retry;
        duration(
            "retry.base_delay",
            r.base_delay,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )?;
        duration(
            "retry.max_delay",
            r.max_delay,
            r.base_delay,
            Duration::from_secs(7 * 86_400),
        )?;
        range("retry.factor", r.factor, 1.0, 100.0)?;
        range("retry.max_attempts", r.max_attempts, 1, 1_000_000)?;
        duration(
            "retry.poll_interval",
            r.poll_interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        )?;
        range("retry.replay_batch", r.replay_batch, 1, 100_000)?;
        range(
            "retry.handler_concurrency",
            r.handler_concurrency,
            1,
            100_000,
        )?;
        duration(
            "retry.succeeded_retention",
            r.succeeded_retention,
            Duration::ZERO,
            Duration::from_secs(10 * 366 * 86_400),
        )?;
        // Shorter, and a key could be forgotten while its replay is still
        // being recorded.
        duration(
            "retry.key_retention",
            r.key_retention,
            Duration::from_secs(60),
            Duration::from_secs(10 * 366 * 86_400),
        )?;
        Ok(())
    }

    fn validate_health(&self) -> Result<(), ConfigError> {
        let h = &self.health;
        let second = Duration::from_secs(1);
        let year = Duration::from_secs(366 * 86_400);
        duration(
            "health.interval",
            h.interval,
            Duration::from_millis(100),
            Duration::from_secs(86_400),
        )?;
        for (key, value) in [
            ("health.quick_check_every", h.quick_check_every),
            ("health.integrity_check_every", h.integrity_check_every),
            ("health.foreign_key_check_every", h.foreign_key_check_every),
            ("health.optimize_every", h.optimize_every),
        ] {
            duration(key, value, h.interval, year)?;
        }
        duration(
            "health.history_retention",
            h.history_retention,
            second,
            Duration::from_secs(10 * 366 * 86_400),
        )?;
        duration("health.vacuum_idle", h.vacuum_idle, Duration::ZERO, year)?;
        duration(
            "health.slow_read",
            h.slow_read,
            Duration::from_millis(1),
            Duration::from_secs(600),
        )?;
        duration(
            "health.slow_write",
            h.slow_write,
            Duration::from_millis(1),
            Duration::from_secs(600),
        )?;
        range(
            "health.wal_checkpoint_bytes",
            h.wal_checkpoint_bytes,
            4096,
            1 << 40,
        )?;
        range(
            "health.wal_urgent_bytes",
            h.wal_urgent_bytes,
            h.wal_checkpoint_bytes,
            1 << 40,
        )?;
        range(
            "health.min_utilization_pct",
            h.min_utilization_pct,
            0.0,
            100.0,
        )?;
        range("health.archive_bytes", h.archive_bytes, 4096, u64::MAX)?;
        range("health.min_disk_free_pct", h.min_disk_free_pct, 0.0, 100.0)?;
        Ok(())
    }

    /// The journal file: configured, or `<database path>.journal`.
    pub fn journal_path(&self) -> PathBuf {
        self.database.journal_path.clone().unwrap_or_else(|| {
            let mut p = self.database.path.clone().into_os_string();
            p.push(".journal");
            PathBuf::from(p)
        })
    }

    /// Open options of the application database.
    pub fn app_db(&self) -> DbOptions {
        self.db_options(self.database.path.clone())
    }

    /// Open options of the journal.
    pub fn journal_db(&self) -> DbOptions {
        self.db_options(self.journal_path())
    }

    fn db_options(&self, path: PathBuf) -> DbOptions {
        DbOptions {
            path,
            synchronous: self.database.synchronous,
            busy_timeout: self.database.busy_timeout,
            wal: self.database.wal,
        }
    }

    /// The WriterActor configuration for `db`.
    pub fn writer_config(&self, db: DbOptions) -> WriterConfig {
        let w = &self.writer;
        WriterConfig {
            db,
            max_batch: w.max_batch,
            batch_wait: w.batch_wait,
            queue_capacity: w.queue_capacity,
            retry: RetryPolicy {
                max_retries: w.max_retries,
                base_delay: w.retry_base_delay,
                max_delay: w.retry_max_delay,
            },
            statement_timeout: w.statement_timeout,
            max_value_bytes: self.readers.max_response_bytes,
            init: None,
            name: "writer",
        }
    }
}

/// Shortest bearer token accepted when the API listens off loopback.
pub const MIN_REMOTE_TOKEN_CHARS: usize = 16;

/// A token is never blank; off loopback it is required and holds at least
/// [`MIN_REMOTE_TOKEN_CHARS`] non-blank characters.
fn check_token(listen: &str, addr: SocketAddr, token: Option<&str>) -> Result<(), ConfigError> {
    const MAKE_ONE: &str =
        "make one with `openssl rand -hex 32` and set it as `http.token` (or RESILITE_HTTP_TOKEN)";
    let remote = !addr.ip().is_loopback();
    match token {
        Some(t) if t.trim().is_empty() => Err(ConfigError(format!(
            "config key `http.token` is {}: a blank token would protect nothing; remove the key{}, or {MAKE_ONE}",
            if t.is_empty() { "empty" } else { "only whitespace" },
            if remote { " and listen on loopback" } else { "" },
        ))),
        Some(t) if remote && t.chars().filter(|c| !c.is_whitespace()).count() < MIN_REMOTE_TOKEN_CHARS => {
            Err(ConfigError(format!(
                "config key `http.token` is too short for `http.listen` = \"{listen}\" (not a loopback address): it needs at least {MIN_REMOTE_TOKEN_CHARS} non-blank characters; {MAKE_ONE}"
            )))
        }
        None if remote => Err(ConfigError(format!(
            "config key `http.listen` = \"{listen}\" is not a loopback address, so `http.token` is required: {MAKE_ONE}"
        ))),
        _ => Ok(()),
    }
}

/// The runtime's writer and readers share the database through a file: an
/// in-memory database (`:memory:`, `file::memory:`, `mode=memory`) or any
/// other SQLite URI cannot be shared that way.
fn in_a_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    let text = path.to_string_lossy();
    if text == ":memory:" {
        return Err(ConfigError(format!(
            "config key `{key}` = \":memory:\" is invalid: resilite needs a database file that its writer and readers share (each connection to :memory: is its own empty database); set it to a file path, e.g. \"./data/app.db\""
        )));
    }
    if text.starts_with("file:") {
        let what = if text.contains(":memory:") || text.contains("mode=memory") {
            "an in-memory database URI"
        } else {
            "an SQLite URI"
        };
        return Err(ConfigError(format!(
            "config key `{key}` = \"{text}\" is invalid: {what}; resilite needs a plain path to a database file that its writer and readers share, e.g. \"./data/app.db\""
        )));
    }
    Ok(())
}

/// `value` must lie in `min..=max`. Written so that a value comparing to
/// neither bound (a float NaN) fails too: `value < min || value > max`
/// would let it through.
fn range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value >= min && value <= max {
        return Ok(());
    }
    // Only an unordered value (NaN) is not equal to itself.
    #[allow(clippy::eq_op)]
    let unordered = value != value;
    let what = if unordered { " (not a number)" } else { "" };
    Err(ConfigError(format!(
        "config key `{key}` = {value} is invalid{what}: must be between {min} and {max}"
    )))
}
fn duration(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError(format!(
            "config key `{key}` = \"{}\" is invalid: must be between \"{}\" and \"{}\"",
            humantime::format_duration(value),
            humantime::format_duration(min),
            humantime::format_duration(max)
        )));
    }
    Ok(())
}

/// One environment override applied to the config.
#[derive(Debug)]
struct EnvOverride {
    /// The variable, e.g. `RESILITE_WRITER_MAX_BATCH`.
    var: String,
    /// The dotted key it sets, e.g. `writer.max_batch`.
    key: String,
    /// Its value as given.
    raw: String,
}

/// Apply `RESILITE_<SECTION>_<KEY>=value` overrides to `table`; returns the
/// overrides applied. A value is read as TOML when the key holds a number,
/// boolean or the like, and as a string otherwise.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<EnvOverride>, ConfigError> {
    let defaults =
        toml::Table::try_from(Config::default()).map_err(|e| ConfigError(e.to_string()))?;
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != LOG_ENV)
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some((section, key)) = defaults.keys().find_map(|s| {
            name.strip_prefix(&format!("{s}_"))
                .map(|k| (s.clone(), k.to_owned()))
        }) else {
            return Err(ConfigError(format!(
                "environment variable {var} names no config section: use RESILITE_<SECTION>_<KEY> with a section among {}",
                defaults.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let takes_string = defaults[&section].get(&key).is_none_or(|v| v.is_str());
        let value = if takes_string {
            toml::Value::String(raw.clone())
        } else {
            format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()))
        };
        let dotted = format!("{section}.{key}");
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table.as_table_mut() {
            Some(t) => {
                t.insert(key, value);
            }
            None => {
                return Err(ConfigError(format!(
                    "config key `{section}` must be a table ([{section}]) to take {var}"
                )))
            }
        }
        applied.push(EnvOverride {
            var,
            key: dotted,
            raw,
        });
    }
    Ok(applied)
}

/// A deserialization error of `text` (the config file, or the file merged
/// with `env` overrides) as a message naming the key, its value and what
/// was expected; an override names its variable too.
fn type_error(text: &str, err: &toml::de::Error, env: &[EnvOverride]) -> ConfigError {
    let problem = explain_serde(err.message());
    let Some(span) = err.span() else {
        return ConfigError(format!("invalid config{}: {problem}", env_note(env)));
    };
    let Some((key, value)) = key_at(text, span.start) else {
        let line = if env.is_empty() {
            format!(" at line {}", line_of(text, span.start))
        } else {
            env_note(env)
        };
        return ConfigError(format!("invalid config{line}: {problem}"));
    };
    if let Some(o) = env.iter().find(|o| o.key == key) {
        return match err.message().strip_prefix("unknown field ") {
            Some(expected) => ConfigError(format!(
                "environment variable {} sets unknown config key `{key}`: {}",
                o.var,
                expected.split_once(", ").map_or("", |(_, rest)| rest)
            )),
            None => ConfigError(format!(
                "environment variable {}={:?} sets config key `{key}`, which is invalid: {problem}",
                o.var, o.raw
            )),
        };
    }
    let line = if env.is_empty() {
        format!(" (line {})", line_of(text, span.start))
    } else {
        String::new()
    };
    if let Some(expected) = err.message().strip_prefix("unknown field ") {
        let expected = expected.split_once(", ").map_or("", |(_, rest)| rest);
        return ConfigError(format!("unknown config key `{key}`{line}: {expected}"));
    }
    match value {
        Some(value) => ConfigError(format!(
            "config key `{key}` = {value} is invalid: {problem}{line}"
        )),
        None => ConfigError(format!("config key `{key}` is invalid: {problem}{line}")),
    }
}

/// A validation error about a key an environment variable set names the
/// variable too.
fn note_env(err: ConfigError, env: &[EnvOverride]) -> ConfigError {
    let named: Vec<String> = env
        .iter()
        .filter(|o| err.0.contains(&format!("`{}`", o.key)))
        .map(|o| {
            if o.key == "http.token" {
                o.var.clone() // a secret: never echoed
            } else {
                format!("{}={:?}", o.var, o.raw)
            }
        })
        .collect();
    match named.len() {
        0 => err,
        1 => ConfigError(format!(
            "{} (set by environment variable {})",
            err.0, named[0]
        )),
        _ => ConfigError(format!(
            "{} (set by environment variables {})",
            err.0,
            named.join(", ")
        )),
    }
}

fn env_note(env: &[EnvOverride]) -> String {
    if env.is_empty() {
        return String::new();
    }
    let vars: Vec<&str> = env.iter().map(|o| o.var.as_str()).collect();
    format!(" (with environment overrides {})", vars.join(", "))
}

fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

/// serde's "invalid type: string \"lots\", expected usize" in a reader's
/// words: "expected an integer (0 or more), found string \"lots\"".
fn explain_serde(message: &str) -> String {
    let message = message.trim_end();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((found, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once(", expected "))
        {
            let expected = match expected {
                "usize" | "u8" | "u16" | "u32" | "u64" => "an integer (0 or more)",
                "isize" | "i8" | "i16" | "i32" | "i64" => "an integer",
                "f32" | "f64" => "a number",
                other => other,
            };
            return format!("expected {expected}, found {found}");
        }
    }
    message.to_string()
}

/// The dotted key at byte `pos` of `text` (on its name or its value), and
/// the value as written when it is not a table.
fn key_at(text: &str, pos: usize) -> Option<(String, Option<String>)> {
    use toml::de::{DeTable, DeValue};
    fn walk(
        table: &DeTable<'_>,
        text: &str,
        pos: usize,
        path: &mut Vec<String>,
        best: &mut Option<(Vec<String>, Option<String>)>,
    ) {
        for (key, value) in table.iter() {
            path.push(key.get_ref().to_string());
            let hit = key.span().contains(&pos) || value.span().contains(&pos);
            if hit && best.as_ref().is_none_or(|(p, _)| p.len() < path.len()) {
                let written = match value.get_ref() {
                    DeValue::Table(_) => None,
                    _ => text.get(value.span()).map(str::to_string),
                };
                *best = Some((path.clone(), written));
            }
            if let DeValue::Table(inner) = value.get_ref() {
                walk(inner, text, pos, path, best);
            }
            path.pop();
        }
    }
    let root = DeTable::parse(text).ok()?;
    let mut best = None;
    walk(root.get_ref(), text, pos, &mut Vec::new(), &mut best);
    best.map(|(path, value)| (path.join("."), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Vec::new())
    }

    #[test]
    fn config_defaults_are_valid_and_loopback() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.http.listen, "127.0.0.1:7070");
        assert_eq!(c.journal_path(), PathBuf::from("./data/app.db.journal"));
    }

    #[test]
    fn config_env_overrides_typed_values() {
        let env = vec![
            ("RESILITE_WRITER_MAX_BATCH".to_string(), "64".to_string()),
            ("RESILITE_HTTP_TOKEN".to_string(), "123".to_string()),
            (
                "RESILITE_DATABASE_BUSY_TIMEOUT".to_string(),
                "2s".to_string(),
            ),
            ("RESILITE_LOG".to_string(), "debug".to_string()),
        ];
        let c = Config::parse("[writer]\nmax_batch = 8\n", env).unwrap();
        assert_eq!(c.writer.max_batch, 64);
        assert_eq!(c.http.token.as_deref(), Some("123"));
        assert_eq!(c.database.busy_timeout, Duration::from_secs(2));
    }

    #[test]
    fn config_env_unknown_section_is_an_error() {
        let env = vec![("RESILITE_WRITR_MAX_BATCH".to_string(), "1".to_string())];
        let err = Config::parse("", env).unwrap_err();
        assert!(err.0.contains("RESILITE_WRITR_MAX_BATCH"), "{err}");
    }

    #[test]
    fn config_health_section_is_parsed_and_checked() {
        let c = parse(
            "[health]\ninterval = \"10s\"\nwal_checkpoint_bytes = 65536\nhistory_retention = \"30days\"\nauto_vacuum = false\n",
        )
        .unwrap();
        assert_eq!(c.health.interval, Duration::from_secs(10));
        assert_eq!(c.health.wal_checkpoint_bytes, 65536);
        assert_eq!(c.health.history_retention, Duration::from_secs(30 * 86_400));
        assert!(!c.health.auto_vacuum);

        let err =
            parse("[health]\nwal_checkpoint_bytes = 65536\nwal_urgent_bytes = 1000\n").unwrap_err();
        assert!(err.0.contains("`health.wal_urgent_bytes` = 1000"), "{err}");
        let err = parse("[health]\ninterval = \"1h\"\nquick_check_every = \"1m\"\n").unwrap_err();
        assert!(err.0.contains("`health.quick_check_every`"), "{err}");
        let err = parse("[health]\nintervall = \"1s\"\n").unwrap_err();
        assert!(err.0.contains("intervall"), "{err}");
    }

    #[test]
    fn config_retry_key_retention_is_checked() {
        let c = parse("[retry]\nkey_retention = \"30days\"\n").unwrap();
        assert_eq!(c.retry.key_retention, Duration::from_secs(30 * 86_400));
        let err = parse("[retry]\nkey_retention = \"5s\"\n").unwrap_err();
        assert!(
            err.0
                .contains("`retry.key_retention` = \"5s\" is invalid: must be between \"1m\""),
            "{err}"
        );
    }

    #[test]
    fn config_type_errors_name_the_key_and_the_value() {
        let err = parse("[writer]\nmax_batch = \"lots\"\n").unwrap_err();
        assert!(
            err.0.contains(
                "config key `writer.max_batch` = \"lots\" is invalid: expected an integer"
            ),
            "{err}"
        );
        assert!(err.0.contains("line 2"), "{err}");
        // Dotted keys and inline tables name the same key.
        let err = parse("writer.max_batch = true\n").unwrap_err();
        assert!(err.0.contains("`writer.max_batch` = true"), "{err}");
        let err = parse("writer = { max_batch = 1.5 }\n").unwrap_err();
        assert!(err.0.contains("`writer.max_batch` = 1.5"), "{err}");
        let err = parse("[breakers.smtp]\nwindow = \"wide\"\n").unwrap_err();
        assert!(err.0.contains("`breakers.smtp.window` = \"wide\""), "{err}");
        let err = parse("[retry]\nfactor = \"2\"\n").unwrap_err();
        assert!(
            err.0.contains("`retry.factor`") && err.0.contains("expected a number"),
            "{err}"
        );
        let err = parse("[database]\nbusy_timeout = 5\n").unwrap_err();
        assert!(err.0.contains("`database.busy_timeout` = 5"), "{err}");
        let err = parse("[http]\ntokn = \"x\"\n").unwrap_err();
        assert!(err.0.contains("unknown config key `http.tokn`"), "{err}");
    }

    #[test]
    fn config_env_type_errors_name_the_variable_and_the_key() {
        let env = vec![("RESILITE_WRITER_MAX_BATCH".to_string(), "lots".to_string())];
        let err = Config::parse("", env).unwrap_err();
        assert!(
            err.0.contains("RESILITE_WRITER_MAX_BATCH")
                && err.0.contains("`writer.max_batch`")
                && err.0.contains("expected an integer"),
            "{err}"
        );
        // A bad value in the file is still named when overrides are applied.
        let env = vec![("RESILITE_WRITER_MAX_RETRIES".to_string(), "3".to_string())];
        let err = Config::parse("[readers]\npool_size = \"four\"\n", env).unwrap_err();
        assert!(err.0.contains("`readers.pool_size` = \"four\""), "{err}");
        assert!(!err.0.contains("RESILITE_WRITER_MAX_RETRIES"), "{err}");
        // A range error of an override names the variable too.
        let env = vec![("RESILITE_RETRY_FACTOR".to_string(), "nan".to_string())];
        let err = Config::parse("", env).unwrap_err();
        assert!(
            err.0.contains("`retry.factor`") && err.0.contains("RESILITE_RETRY_FACTOR"),
            "{err}"
        );
    }

    #[test]
    fn config_non_finite_floats_are_refused() {
        for (text, key) in [
            ("[retry]\nfactor = nan\n", "retry.factor"),
            ("[retry]\nfactor = inf\n", "retry.factor"),
            ("[retry]\nfactor = -nan\n", "retry.factor"),
            (
                "[health]\nmin_utilization_pct = nan\n",
                "health.min_utilization_pct",
            ),
            (
                "[health]\nmin_utilization_pct = -inf\n",
                "health.min_utilization_pct",
            ),
            (
                "[health]\nmin_disk_free_pct = nan\n",
                "health.min_disk_free_pct",
            ),
            (
                "[health]\nmin_disk_free_pct = inf\n",
                "health.min_disk_free_pct",
            ),
            (
                "[breakers.smtp]\nfailure_rate_pct = nan\n",
                "breakers.smtp.failure_rate_pct",
            ),
            (
                "[breakers.smtp]\nslow_call_rate_pct = inf\n",
                "breakers.smtp.slow_call_rate_pct",
            ),
            (
                "[breakers.database]\nbackoff_factor = nan\n",
                "breakers.database.backoff_factor",
            ),
            (
                "[breakers.database]\nbackoff_factor = inf\n",
                "breakers.database.backoff_factor",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.0.contains(&format!("`{key}`")), "{text:?}: {err}");
        }
        // The generic bound check itself refuses NaN, naming the key.
        let err = range("x.y", f64::NAN, 0.0, 1.0).unwrap_err();
        assert!(
            err.0.contains("`x.y` = NaN") && err.0.contains("not a number"),
            "{err}"
        );
        assert!(range("x.y", 0.5, 0.0, 1.0).is_ok());
        assert!(range("x.y", 1.0, 0.0, 1.0).is_ok());
    }

    #[test]
    fn config_tokens_are_never_blank_and_long_off_loopback() {
        for token in ["", " ", "\t  "] {
            let err = parse(&format!("[http]\ntoken = {token:?}\n")).unwrap_err();
            assert!(err.0.contains("`http.token`"), "{token:?}: {err}");
            assert!(err.0.contains("openssl rand -hex 32"), "{err}");
        }
        // Off loopback: at least 16 non-blank characters.
        for token in ["Zq", "0123456789abcde", "  0123456789abcde  "] {
            let err = parse(&format!(
                "[http]\nlisten = \"0.0.0.0:7070\"\ntoken = {token:?}\n"
            ))
            .unwrap_err();
            assert!(
                err.0.contains("`http.token`")
                    && err.0.contains("16")
                    && err.0.contains("openssl rand"),
                "{token:?}: {err}"
            );
            assert!(
                !err.0.contains(token.trim()) || token.trim().is_empty(),
                "the token is echoed: {err}"
            );
        }
        let long = "0123456789abcdef";
        let c = parse(&format!(
            "[http]\nlisten = \"0.0.0.0:7070\"\ntoken = {long:?}\n"
        ))
        .unwrap();
        assert_eq!(c.http.token.as_deref(), Some(long));
        let err = parse("[http]\nlisten = \"[::]:7070\"\n").unwrap_err();
        assert!(err.0.contains("`http.token` is required"), "{err}");
        // On loopback a short token is the operator's choice.
        assert!(parse("[http]\ntoken = \"abc\"\n").is_ok());
        // A token from the environment is checked the same, and not echoed.
        let env = vec![
            (
                "RESILITE_HTTP_LISTEN".to_string(),
                "0.0.0.0:7070".to_string(),
            ),
            ("RESILITE_HTTP_TOKEN".to_string(), "hunter2".to_string()),
        ];
        let err = Config::parse("", env).unwrap_err();
        assert!(
            err.0.contains("RESILITE_HTTP_TOKEN") && !err.0.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn config_in_memory_databases_are_refused() {
        for path in [
            ":memory:",
            "file::memory:",
            "file::memory:?cache=shared",
            "file:app.db?mode=memory",
            "file:app.db",
        ] {
            let err = parse(&format!("[database]\npath = {path:?}\n")).unwrap_err();
            assert!(
                err.0.contains("`database.path`") && err.0.contains("file"),
                "{path}: {err}"
            );
            let err = parse(&format!(
                "[database]\npath = \"a.db\"\njournal_path = {path:?}\n"
            ))
            .unwrap_err();
            assert!(err.0.contains("`database.journal_path`"), "{path}: {err}");
        }
        let err = Config::parse(
            "",
            vec![("RESILITE_DATABASE_PATH".to_string(), ":memory:".to_string())],
        )
        .unwrap_err();
        assert!(err.0.contains("RESILITE_DATABASE_PATH"), "{err}");
    }

    #[test]
    fn config_bundled_file_holds_the_defaults() {
        let bundled = parse(include_str!("../config.toml")).unwrap();
        let mut expected = Config::default();
        expected
            .breakers
            .insert(DATABASE_BREAKER.into(), BreakerConfig::default());
        assert_eq!(bundled, expected, "config.toml documents the defaults");
    }
}
