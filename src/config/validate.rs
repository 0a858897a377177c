//! [`Config::validate`]: every value that cannot work is refused with a
//! message naming the key, the value and what is allowed. The range and
//! duration bounds, the database path and bearer token checks are here.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use resilite_actors::backup::{MAX_COMPRESS_LEVEL, MIN_COMPRESS_LEVEL};

use super::{Config, ConfigError};

impl Config {
    /// Reject values that cannot work, naming the key, the value and what
    /// is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The checks run in this order and the first failure is reported;
        // `readers.pool_size` comes between the writer's retry delays and
        // its statement timeout.
        self.validate_database()?;
        self.validate_writer()?;
        range("readers.pool_size", self.readers.pool_size, 1, 256)?;
        duration(
            "writer.statement_timeout",
            self.writer.statement_timeout,
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        )?;
        self.validate_readers()?;
        self.validate_http()?;
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
        self.validate_backup()?;
        self.validate_schema()?;
        duration(
            "audit.slow_threshold",
            self.audit.slow_threshold,
            Duration::ZERO,
            Duration::from_secs(3600),
        )?;
        duration(
            "audit.retention",
            self.audit.retention,
            Duration::from_secs(3600),
            Duration::from_secs(100 * 365 * 86_400),
        )?;
        self.validate_log()?;
        for (name, breaker) in &self.breakers {
            breaker.validate(name).map_err(ConfigError)?;
        }
        self.validate_archive()?;
        Ok(())
    }

    fn validate_archive(&self) -> Result<(), ConfigError> {
        duration(
            "archive.interval",
            self.archive.interval,
            Duration::ZERO,
            Duration::from_secs(365 * 86_400),
        )?;
        if !self.archive.interval.is_zero() && self.archive.interval < Duration::from_secs(60) {
            return Err(ConfigError(format!(
                "config key `archive.interval` = \"{}\" is shorter than 1m: give at least \"1m\" (e.g. \"1h\"), or \"0s\" for no scheduled runs",
                humantime_serde::re::humantime::format_duration(self.archive.interval)
            )));
        }
        range("archive.batch_rows", self.archive.batch_rows, 1, 1_000_000)?;
        range(
            "archive.compress_level",
            self.archive.compress_level,
            MIN_COMPRESS_LEVEL,
            MAX_COMPRESS_LEVEL,
        )?;
        if let Some(dir) = &self.archive.dir {
            if dir.as_os_str().is_empty() {
                return Err(ConfigError(
                    "config key `archive.dir` is empty: remove it (archives go beside the database) or name a directory".into(),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, policy) in self.retention.iter().enumerate() {
            policy
                .validate(&format!("retention[{i}]"))
                .map_err(ConfigError)?;
            if !seen.insert(policy.table.as_str()) {
                return Err(ConfigError(format!(
                    "config key `retention[{i}].table` = \"{}\": a second policy for the same table; keep one `[[retention]]` per table",
                    policy.table
                )));
            }
        }
        Ok(())
    }

    fn validate_database(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_writer(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_readers(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
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
        Ok(())
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
        duration(
            "retry.durable_answer_within",
            r.durable_answer_within,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )?;
        Ok(())
    }

    fn validate_log(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError(format!(
                "config key `log.level` = \"{}\" is invalid ({e}): use a level (error, warn, info, debug, trace) or directives such as \"info,resilite=debug\"",
                self.log.level
            ))
        })?;
        Ok(())
    }

    fn validate_schema(&self) -> Result<(), ConfigError> {
        let s = &self.schema;
        if s.migrations_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(ConfigError(
                "config key `schema.migrations_dir` is empty: set it to the directory of the migrations (e.g. \"./migrations\"), or leave it out".into(),
            ));
        }
        if s.file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            return Err(ConfigError(
                "config key `schema.file` is empty: set it to the expected schema's TOML file, e.g. \"schema.toml\", or remove it".into(),
            ));
        }
        if s.file.is_none() && s.on_start.is_some_and(|m| m != super::OnStart::Off) {
            return Err(ConfigError(format!(
                "config key `schema.on_start` = \"{}\" needs `schema.file`: set it to the expected schema's TOML file, or set on_start = \"off\"",
                if s.on_start == Some(super::OnStart::Strict) { "strict" } else { "lenient" }
            )));
        }
        Ok(())
    }

    fn validate_backup(&self) -> Result<(), ConfigError> {
        let b = &self.backup;
        if let Some(dir) = &b.dir {
            if dir.as_os_str().is_empty() {
                return Err(ConfigError(
                    "config key `backup.dir` is empty: set it to a directory, e.g. \"./data/backups\", or remove it for `backups/` beside the database".into(),
                ));
            }
        }
        let year = Duration::from_secs(366 * 86_400);
        if !b.interval.is_zero() {
            duration("backup.interval", b.interval, Duration::from_secs(1), year)?;
        }
        range("backup.keep_last", b.keep_last, 0, 100_000)?;
        for (key, value) in [
            ("backup.keep_daily", b.keep_daily),
            ("backup.keep_weekly", b.keep_weekly),
            ("backup.keep_monthly", b.keep_monthly),
        ] {
            range(key, value, 0, 100_000)?;
        }
        if b.keep_last == 0 && b.keep_daily + b.keep_weekly + b.keep_monthly == 0 {
            return Err(ConfigError(
                "config key `backup.keep_last` = 0 is invalid with no generation set: retention would keep only the newest verified backup; set `backup.keep_last` to 1 or more (default 10), or set `backup.keep_daily`, `backup.keep_weekly` or `backup.keep_monthly`".into(),
            ));
        }
        duration(
            "backup.verify_every",
            b.verify_every,
            Duration::from_secs(1),
            Duration::from_secs(10 * 366 * 86_400),
        )?;
        if !(MIN_COMPRESS_LEVEL..=MAX_COMPRESS_LEVEL).contains(&b.compress_level) {
            return Err(ConfigError(format!(
                "config key `backup.compress_level` = {} is invalid: must be between {MIN_COMPRESS_LEVEL} and {MAX_COMPRESS_LEVEL} (zstd levels; 3 is zstd's default, higher is smaller and slower)",
                b.compress_level
            )));
        }
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
        if !h.resource_interval.is_zero() {
            duration(
                "health.resource_interval",
                h.resource_interval,
                Duration::from_millis(100),
                Duration::from_secs(86_400),
            )?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Vec::new())
    }

    /// `[audit]`: durations are read, "0s" turns the slow-query log off,
    /// a retention under an hour and unknown keys are refused with the key
    /// named.
    #[test]
    fn config_audit_section_is_parsed_and_checked() {
        let c = parse("").unwrap();
        assert_eq!(c.audit.slow_threshold, Duration::from_millis(250));
        assert_eq!(c.audit.retention, Duration::from_secs(90 * 86_400));
        let c = parse("[audit]\nslow_threshold = \"0s\"\nretention = \"7days\"\n").unwrap();
        assert_eq!(c.audit.slow_threshold, Duration::ZERO);
        assert_eq!(c.audit.retention, Duration::from_secs(7 * 86_400));
        let err = parse("[audit]\nretention = \"1m\"\n").unwrap_err();
        assert!(err.0.contains("`audit.retention`"), "{err}");
        let err = parse("[audit]\nslow = \"1s\"\n").unwrap_err();
        assert!(err.0.contains("slow"), "{err}");
        let c = Config::parse(
            "",
            [(
                "RESILITE_AUDIT_SLOW_THRESHOLD".to_string(),
                "5ms".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(c.audit.slow_threshold, Duration::from_millis(5));
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
        let c = parse("[health]\nresource_interval = \"0s\"\n").unwrap();
        assert!(c.health.resource_interval.is_zero());
        let c = parse("[health]\nresource_interval = \"250ms\"\n").unwrap();
        assert_eq!(c.health.resource_interval, Duration::from_millis(250));
        let err = parse("[health]\nresource_interval = \"10ms\"\n").unwrap_err();
        assert!(err.0.contains("`health.resource_interval`"), "{err}");
        let err = parse("[health]\nintervall = \"1s\"\n").unwrap_err();
        assert!(err.0.contains("intervall"), "{err}");
    }

    #[test]
    fn config_backup_retention_keys_are_checked() {
        let c = parse("[backup]\nkeep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 12\n").unwrap();
        assert_eq!(
            (
                c.backup.keep_last,
                c.backup.keep_daily,
                c.backup.keep_weekly,
                c.backup.keep_monthly
            ),
            (10, 7, 4, 12)
        );
        let r = c.backup_config().retention;
        assert_eq!(
            (r.keep_last, r.keep_daily, r.keep_weekly, r.keep_monthly),
            (10, 7, 4, 12)
        );
        // keep_last = 0 only with a generation.
        assert!(parse("[backup]\nkeep_last = 0\nkeep_weekly = 4\n").is_ok());
        let err = parse("[backup]\nkeep_last = 0\n").unwrap_err();
        assert!(
            err.0.contains("`backup.keep_last` = 0") && err.0.contains("`backup.keep_daily`"),
            "{err}"
        );
        let err = parse("[backup]\nkeep_monthly = 1000000\n").unwrap_err();
        assert!(
            err.0.contains(
                "`backup.keep_monthly` = 1000000 is invalid: must be between 0 and 100000"
            ),
            "{err}"
        );
        let err = parse("[backup]\nkeep_daily = -1\n").unwrap_err();
        assert!(err.0.contains("`backup.keep_daily` = -1"), "{err}");
        let env = vec![("RESILITE_BACKUP_KEEP_WEEKLY".to_string(), "5".to_string())];
        assert_eq!(Config::parse("", env).unwrap().backup.keep_weekly, 5);
    }

    #[test]
    fn config_backup_compress_is_none_or_zstd_with_a_level() {
        use resilite_actors::backup::Compress;
        let c = parse("").unwrap().backup_config();
        assert_eq!((c.compress, c.compress_level), (Compress::None, 3));
        let c = parse("[backup]\ncompress = \"zstd\"\ncompress_level = 19\n").unwrap();
        let b = c.backup_config();
        assert_eq!((b.compress, b.compress_level), (Compress::Zstd, 19));
        let err = parse("[backup]\ncompress = \"gzip\"\n").unwrap_err();
        assert!(
            err.0
                .contains("config key `backup.compress` = \"gzip\" is invalid")
                && err.0.contains("`none`")
                && err.0.contains("`zstd`"),
            "{err}"
        );
        for level in ["0", "20", "-5"] {
            let err = parse(&format!(
                "[backup]\ncompress = \"zstd\"\ncompress_level = {level}\n"
            ))
            .unwrap_err();
            assert!(
                err.0.contains(&format!(
                    "`backup.compress_level` = {level} is invalid: must be between 1 and 19"
                )),
                "{err}"
            );
        }
        let env = vec![
            ("RESILITE_BACKUP_COMPRESS".to_string(), "zstd".to_string()),
            (
                "RESILITE_BACKUP_COMPRESS_LEVEL".to_string(),
                "7".to_string(),
            ),
        ];
        let c = Config::parse("", env).unwrap();
        assert_eq!(
            (c.backup.compress, c.backup.compress_level),
            (Compress::Zstd, 7)
        );
        let env = vec![("RESILITE_BACKUP_COMPRESS".to_string(), "lz4".to_string())];
        let err = Config::parse("", env).unwrap_err();
        assert!(
            err.0.contains("RESILITE_BACKUP_COMPRESS") && err.0.contains("`zstd`"),
            "{err}"
        );
    }

    #[test]
    fn config_backup_trial_restore_is_a_boolean() {
        assert!(!parse("").unwrap().backup_config().trial_restore);
        let c = parse("[backup]\ntrial_restore = true\n").unwrap();
        assert!(c.backup_config().trial_restore);
        let err = parse("[backup]\ntrial_restore = \"yes\"\n").unwrap_err();
        assert!(
            err.0
                .contains("`backup.trial_restore` = \"yes\" is invalid: expected a boolean"),
            "{err}"
        );
        let env = vec![(
            "RESILITE_BACKUP_TRIAL_RESTORE".to_string(),
            "true".to_string(),
        )];
        assert!(Config::parse("", env).unwrap().backup.trial_restore);
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
}
