//! Environment overrides: `RESILITE_<SECTION>_<KEY>=value` sets the key
//! `<section>.<key>` over the config file, and an error about a key an
//! override set names the variable.

use super::{Config, ConfigError, ENV_PREFIX, FAULT_ENV_PREFIX, LOG_ENV};

/// One environment override applied to the config.
#[derive(Debug)]
pub(super) struct EnvOverride {
    /// The variable, e.g. `RESILITE_WRITER_MAX_BATCH`.
    pub(super) var: String,
    /// The dotted key it sets, e.g. `writer.max_batch`.
    pub(super) key: String,
    /// Its value as given.
    pub(super) raw: String,
}

/// Apply `RESILITE_<SECTION>_<KEY>=value` overrides to `table`; returns the
/// overrides applied. A value is read as TOML when the key holds a number,
/// boolean or the like, and as a string otherwise.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<EnvOverride>, ConfigError> {
    let defaults =
        toml::Table::try_from(Config::default()).map_err(|e| ConfigError(e.to_string()))?;
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with(ENV_PREFIX) && k != LOG_ENV && !k.starts_with(FAULT_ENV_PREFIX)
        })
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

/// A validation error about a key an environment variable set names the
/// variable too.
pub(super) fn note_env(err: ConfigError, env: &[EnvOverride]) -> ConfigError {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

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
}
