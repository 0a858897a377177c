//! What a reload changes: the keys whose values differ between two
//! configs, which of them the running actors take at once and which need
//! a restart, and the config in effect afterwards (the new one, with the
//! restart-only keys kept at their running values).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Config, ConfigError};

/// Keys (or whole sections, ending in `.`) a running runtime cannot change:
/// the files it has open, the connections' settings, the HTTP listener.
/// Every other key is applied live.
const RESTART_ONLY: &[&str] = &[
    "database.",
    "writer.",
    "readers.",
    "http.listen",
    "http.max_body_bytes",
    "http.header_timeout",
    "http.body_timeout",
    "http.idle_timeout",
    "http.max_connections",
    "backup.dir",
    "backup.op_log",
    "schema.on_start",
    "schema.migrations_dir",
    "schema.allow_destructive",
    // The writer is given its audit level when it starts.
    "audit.level",
];

/// Keys whose values are secrets: a change is shown as `"(changed)"`.
const SECRET: &[&str] = &["http.token"];

/// Shown in place of a secret's value.
pub const HIDDEN: &str = "(changed)";

/// One key a reload found changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    /// The dotted key, e.g. `health.interval`, `breakers.smtp.open_for`.
    pub key: String,
    /// Its running value (TOML text; `(unset)` when absent; `(changed)`
    /// for a secret).
    pub old: String,
    /// Its value in the new config, written the same way.
    pub new: String,
    /// The running runtime took it.
    pub applied: bool,
    /// It takes effect only when the runtime is started again.
    pub needs_restart: bool,
}

/// Whether `key` can only change with a restart.
pub fn needs_restart(key: &str) -> bool {
    RESTART_ONLY.iter().any(|p| {
        if let Some(section) = p.strip_suffix('.') {
            key.split('.').next() == Some(section)
        } else {
            key == *p
        }
    })
}

/// `config` as dotted keys and their TOML values.
fn flatten(config: &Config) -> Result<BTreeMap<String, toml::Value>, ConfigError> {
    let table = toml::Table::try_from(config).map_err(|e| ConfigError(e.to_string()))?;
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                other => {
                    out.insert(key, other.clone());
                }
            }
        }
    }
    walk("", &table, &mut out);
    Ok(out)
}

fn show(key: &str, value: Option<&toml::Value>) -> String {
    match value {
        None => "(unset)".into(),
        Some(_) if SECRET.contains(&key) => HIDDEN.into(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The keys that differ between `old` and `new`, sorted, each marked
/// applied or needing a restart.
pub fn changes(old: &Config, new: &Config) -> Result<Vec<ConfigChange>, ConfigError> {
    let (a, b) = (flatten(old)?, flatten(new)?);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let restart = needs_restart(k);
            ConfigChange {
                key: k.clone(),
                old: show(k, a.get(k)),
                new: show(k, b.get(k)),
                applied: !restart,
                needs_restart: restart,
            }
        })
        .collect())
}

/// The config in effect after a reload from `old` to `new`: `new`, with
/// every restart-only key at its value in `old`.
pub fn effective(old: &Config, new: &Config) -> Result<Config, ConfigError> {
    let mut table = toml::Table::try_from(new).map_err(|e| ConfigError(e.to_string()))?;
    let running = toml::Table::try_from(old).map_err(|e| ConfigError(e.to_string()))?;
    for (section, value) in &running {
        let keep: Vec<(&String, &toml::Value)> = match value {
            toml::Value::Table(t) => t.iter().collect(),
            _ => continue,
        };
        let target = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(target) = target.as_table_mut() else {
            continue;
        };
        // Keys present in the running config: keep their running values.
        for (key, v) in keep {
            if needs_restart(&format!("{section}.{key}")) {
                target.insert(key.clone(), v.clone());
            }
        }
    }
    // Restart-only keys the new config sets and the running one does not
    // (optional keys): unset them again.
    for (section, value) in table.iter_mut() {
        let Some(t) = value.as_table_mut() else {
            continue;
        };
        let running_section = running.get(section).and_then(|v| v.as_table());
        t.retain(|key, _| {
            !needs_restart(&format!("{section}.{key}"))
                || running_section.is_some_and(|r| r.contains_key(key))
        });
    }
    let mut config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError(e.to_string()))?;
    config.loaded_from = new.loaded_from.clone().or_else(|| old.loaded_from.clone());
    config.health.backup_interval = new.health.backup_interval;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A change of a live key is applied; a change of `database.path` and
    /// `http.listen` is reported as needing a restart and kept running.
    #[test]
    fn changes_mark_restart_only_keys_and_keep_them_running() {
        let old = Config::for_database("/tmp/a.db");
        let mut new = Config::for_database("/tmp/b.db");
        new.health.interval = Duration::from_secs(3);
        new.http.listen = "127.0.0.1:9999".into();
        new.http.token = Some("a-long-enough-secret-token".into());
        let list = changes(&old, &new).unwrap();
        let keys: Vec<_> = list.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "database.path",
                "health.interval",
                "http.listen",
                "http.token"
            ]
        );
        assert!(list[0].needs_restart && !list[0].applied);
        assert!(list[1].applied && !list[1].needs_restart);
        assert_eq!(list[1].new, "3s");
        assert_eq!(list[3].new, HIDDEN, "a token is never shown");
        let now = effective(&old, &new).unwrap();
        assert_eq!(now.database.path, old.database.path);
        assert_eq!(now.http.listen, old.http.listen);
        assert_eq!(now.health.interval, Duration::from_secs(3));
        assert_eq!(now.http.token, new.http.token);
    }

    /// An optional restart-only key set only in the new config stays unset.
    #[test]
    fn effective_keeps_an_unset_restart_only_key_unset() {
        let old = Config::default();
        let mut new = Config::default();
        new.backup.dir = Some("/tmp/elsewhere".into());
        assert_eq!(effective(&old, &new).unwrap().backup.dir, None);
    }
}
