//! A TOML deserialization error as a message that names the key (dotted,
//! however the file wrote it), the value as written, what was expected and
//! the line; or, for a key an environment override set, the variable.

use super::env::EnvOverride;
use super::ConfigError;

/// A deserialization error of `text` (the config file, or the file merged
/// with `env` overrides) as a message naming the key, its value and what
/// was expected; an override names its variable too.
pub(super) fn type_error(text: &str, err: &toml::de::Error, env: &[EnvOverride]) -> ConfigError {
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
    use crate::config::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Vec::new())
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
}
