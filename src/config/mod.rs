//! Configuration: parsed in this one place from TOML, then environment
//! overrides `RESILITE_<SECTION>_<KEY>`, then checked by [`Config::validate`].
//! Unknown sections and keys are errors, never ignored.
//!
//! # Layout
//!
//! - this module: [`Config`], [`ConfigError`], the `DEFAULT_*` constants,
//!   loading and parsing ([`Config::load`], [`Config::parse`]) and what the
//!   runtime derives from a config (open options, the writer's config).
//! - `sections`: the `[database]`, `[writer]`, `[readers]`, `[http]`,
//!   `[supervisor]`, `[backup]`, `[schema]` and `[audit]` sections and their defaults (`[health]`, `[retry]` and
//!   `[breakers.<name>]` belong to the actors they configure).
//! - `validate`: [`Config::validate`] and its range, duration, path and
//!   token checks.
//! - `env`: the `RESILITE_<SECTION>_<KEY>` overrides, and naming the
//!   variable in an error about a key it set.
//! - `type_errors`: a TOML or type error as a message naming the key, its
//!   value and what was expected.

mod changes;
mod env;
mod sections;
mod type_errors;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use resilite_actors::backup::Retention;
pub use resilite_actors::breaker::DATABASE_BREAKER;
use resilite_actors::writer::AuditConfig;
use resilite_actors::{AuditLevel, BackupConfig, DbOptions, RetryPolicy, WriterConfig};
// The sections owned by the actors they configure: `[health]`, `[retry]`
// and `[breakers.<name>]`.
pub use resilite_actors::{BreakerConfig, HealthConfig, RetryConfig};
use serde::{Deserialize, Serialize};

pub use changes::{changes, effective, needs_restart, ConfigChange};
pub use resilite_actors::archive::{RetentionPolicy, TimeFormat};
pub use sections::{
    ArchiveSection, AuditSection, BackupSection, DatabaseConfig, HttpConfig, LogSection, OnStart,
    ReadersSection, SchemaSection, SupervisorConfig, WriterSection,
};
pub use validate::MIN_REMOTE_TOKEN_CHARS;

use env::{apply_env, note_env};
use type_errors::type_error;

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
/// Default time the journal keeps events, error signatures and slow queries.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// Default log filter (`[log] level`).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default operation audit level: off. Measured on writes that all commit
/// (docs/benchmarks.md): `failures` costs little at 1-64 writers but up to
/// about 20% at 1024 (the tables each statement touches are noted, every
/// write carries its context), `all` 0-29% at 1-1024 writers, FULL and
/// NORMAL; the target for `all` is 30%.
pub const DEFAULT_AUDIT_LEVEL: AuditLevel = AuditLevel::Off;
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "RESILITE_";
/// Environment variable of the log filter (not a config key).
pub const LOG_ENV: &str = "RESILITE_LOG";
/// Variables starting with this name the crash tests' fault points (e.g.
/// `RESILITE_FAULT_ARCHIVE`), not config overrides.
pub const FAULT_ENV_PREFIX: &str = "RESILITE_FAULT_";

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
    /// `[backup]`: scheduled backups, retention and verification.
    pub backup: BackupSection,
    /// `[schema]`: the migrations and the expected schema, and what start
    /// does with them.
    pub schema: SchemaSection,
    /// `[audit]`: the slow-query log and the retention of the audit trail.
    pub audit: AuditSection,
    /// `[[retention]]`: which rows expire, and whether they are archived.
    pub retention: Vec<RetentionPolicy>,
    /// `[archive]`: when archive runs happen and where the files go.
    pub archive: ArchiveSection,
    /// `[log]`: the log filter of `resilite run`.
    pub log: LogSection,
    /// The file this config was loaded from ([`Config::load`]), which
    /// `Runtime::reload_config` reads again; `None` for a config built in
    /// code or parsed from text.
    #[serde(skip)]
    pub loaded_from: Option<PathBuf>,
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
        let mut config = Config::parse(&text, std::env::vars())
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))?;
        // The schema file and the migrations ship beside the config: a
        // relative path is taken from the config file's directory.
        let dir = path.parent().unwrap_or(Path::new(""));
        let schema = &mut config.schema;
        for beside in [&mut schema.file, &mut schema.migrations_dir] {
            if let Some(p) = beside.as_mut().filter(|p| p.is_relative()) {
                *p = dir.join(&*p);
            }
        }
        config.loaded_from = Some(path.to_path_buf());
        Ok(config)
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

    /// The options of an archive run: `[archive] dir` (default
    /// `archives/` beside the database), `batch_rows`, `compress_level`.
    pub fn archive_options(&self) -> resilite_actors::archive::ArchiveOptions {
        let mut opts = resilite_actors::archive::ArchiveOptions::for_database(&self.database.path);
        if let Some(dir) = &self.archive.dir {
            opts.dir = dir.clone();
        }
        opts.batch_rows = self.archive.batch_rows;
        opts.compress_level = self.archive.compress_level;
        opts
    }

    /// The configuration of the writer's built-in `database` breaker.
    pub fn database_breaker(&self) -> BreakerConfig {
        self.breakers
            .get(DATABASE_BREAKER)
            .cloned()
            .unwrap_or_default()
    }

    /// The journal file: configured, or `<database path>.journal`.
    pub fn journal_path(&self) -> PathBuf {
        self.database.journal_path.clone().unwrap_or_else(|| {
            let mut p = self.database.path.clone().into_os_string();
            p.push(".journal");
            PathBuf::from(p)
        })
    }

    /// The backup directory: configured, or `backups/` beside the database.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup.dir.clone().unwrap_or_else(|| {
            let parent = self.database.path.parent().unwrap_or(Path::new(""));
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent.join("backups")
        })
    }

    /// The BackupActor's configuration.
    pub fn backup_config(&self) -> BackupConfig {
        BackupConfig {
            db: self.app_db(),
            dir: self.backup_dir(),
            interval: self.backup.interval,
            retention: Retention {
                keep_last: self.backup.keep_last,
                keep_daily: self.backup.keep_daily,
                keep_weekly: self.backup.keep_weekly,
                keep_monthly: self.backup.keep_monthly,
            },
            verify_every: self.backup.verify_every,
            trial_restore: self.backup.trial_restore,
            compress: self.backup.compress,
            compress_level: self.backup.compress_level,
        }
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
            op_log: None,
            audit: None,
        }
    }

    /// The application writer's configuration: [`Config::writer_config`]
    /// with the operation log in the journal when `backup.op_log` is on.
    pub fn app_writer_config(&self) -> WriterConfig {
        let mut writer = self.writer_config(self.app_db());
        if self.backup.op_log {
            writer.op_log = Some(self.journal_db());
        }
        if self.audit.level != AuditLevel::Off {
            writer.audit = Some(AuditConfig {
                level: self.audit.level,
                journal: self.journal_db(),
            });
        }
        writer
    }
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
    fn config_bundled_file_holds_the_defaults() {
        let bundled = parse(include_str!("../../config.toml")).unwrap();
        let mut expected = Config::default();
        expected
            .breakers
            .insert(DATABASE_BREAKER.into(), BreakerConfig::default());
        assert_eq!(bundled, expected, "config.toml documents the defaults");
    }
}
