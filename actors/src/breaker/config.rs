//! `[breakers.<name>]`: when a breaker opens and how long it stays open,
//! and the validation whose message names the key at fault.

use std::fmt;
use std::time::Duration;

use humantime_serde::re::humantime;
use serde::{Deserialize, Serialize};

/// Largest window accepted: the window is kept in memory for each breaker.
const MAX_WINDOW: u32 = 100_000;

/// `[breakers.<name>]`: when a breaker opens and how long it stays open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Open when this percentage of the window failed.
    pub failure_rate_pct: f64,
    /// How many of the latest call outcomes the rates are computed over.
    pub window: u32,
    /// The rates apply only once the window holds this many calls, so a
    /// single early failure does not open the breaker.
    pub min_calls: u32,
    /// A call lasting at least this long counts as slow.
    #[serde(with = "humantime_serde")]
    pub slow_call: Duration,
    /// Open when this percentage of the window was slow (100: only when
    /// every call was).
    pub slow_call_rate_pct: f64,
    /// How long the breaker stays open after its first trip.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The longest it stays open, however often it trips.
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
    /// Each trip without a close in between stays open this many times
    /// longer than the last.
    pub backoff_factor: f64,
    /// Trial calls let through while half-open; that many successes close.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate_pct: 50.0,
            window: 20,
            min_calls: 10,
            slow_call: Duration::from_secs(5),
            slow_call_rate_pct: 100.0,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            backoff_factor: 2.0,
            half_open_calls: 3,
        }
    }
}

/// The message for key `breakers.<name>.<key>` holding `value`.
fn invalid(name: &str, key: &str, value: impl fmt::Display, allowed: impl fmt::Display) -> String {
    format!("config key `breakers.{name}.{key}` = {value} is invalid: must be {allowed}")
}

/// A duration as the config file writes it.
fn quoted(d: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(d))
}

impl BreakerConfig {
    /// Reject values that would make the breaker useless or never close;
    /// the message names `breakers.<name>.<key>`, the value and what is
    /// allowed.
    pub fn validate(&self, name: &str) -> std::result::Result<(), String> {
        let pct = |key: &str, value: f64| {
            // `contains` is false for NaN too.
            if (0.0..=100.0).contains(&value) {
                Ok(())
            } else {
                Err(invalid(
                    name,
                    key,
                    value,
                    "between 0 and 100 (a percentage)",
                ))
            }
        };
        if self.consecutive_failures == 0 {
            return Err(invalid(name, "consecutive_failures", 0, "at least 1"));
        }
        pct("failure_rate_pct", self.failure_rate_pct)?;
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err(invalid(
                name,
                "window",
                self.window,
                format_args!("between 1 and {MAX_WINDOW} (calls)"),
            ));
        }
        if self.min_calls > self.window {
            return Err(invalid(
                name,
                "min_calls",
                self.min_calls,
                format_args!("between 0 and {} (`window`)", self.window),
            ));
        }
        if self.slow_call < Duration::from_millis(1) {
            return Err(invalid(
                name,
                "slow_call",
                quoted(self.slow_call),
                "at least \"1ms\"",
            ));
        }
        pct("slow_call_rate_pct", self.slow_call_rate_pct)?;
        self.validate_open_period(name)
    }

    /// The keys of the open period: `open_for`, `backoff_factor`,
    /// `half_open_calls`.
    fn validate_open_period(&self, name: &str) -> std::result::Result<(), String> {
        if self.open_for < Duration::from_millis(1) || self.open_for > self.max_open_for {
            return Err(invalid(
                name,
                "open_for",
                quoted(self.open_for),
                format_args!(
                    "between \"1ms\" and {} (`max_open_for`)",
                    quoted(self.max_open_for)
                ),
            ));
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            return Err(invalid(
                name,
                "backoff_factor",
                self.backoff_factor,
                "a finite number of at least 1",
            ));
        }
        if self.half_open_calls == 0 {
            return Err(invalid(name, "half_open_calls", 0, "at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(config: &BreakerConfig) -> String {
        config.validate("db").unwrap_err()
    }

    #[test]
    fn validate_accepts_the_defaults() {
        assert_eq!(BreakerConfig::default().validate("db"), Ok(()));
    }

    #[test]
    fn validate_names_the_key_the_value_and_the_range() {
        let base = BreakerConfig::default();
        let cases: Vec<(BreakerConfig, &str)> = vec![
            (
                BreakerConfig {
                    window: 0,
                    ..base.clone()
                },
                "config key `breakers.db.window` = 0 is invalid: must be between 1 and 100000",
            ),
            (
                BreakerConfig {
                    min_calls: 21,
                    ..base.clone()
                },
                "config key `breakers.db.min_calls` = 21 is invalid: must be between 0 and 20 (`window`)",
            ),
            (
                BreakerConfig {
                    failure_rate_pct: 101.0,
                    ..base.clone()
                },
                "config key `breakers.db.failure_rate_pct` = 101 is invalid: must be between 0 and 100",
            ),
            (
                BreakerConfig {
                    failure_rate_pct: f64::NAN,
                    ..base.clone()
                },
                "`breakers.db.failure_rate_pct` = NaN is invalid",
            ),
            (
                BreakerConfig {
                    slow_call_rate_pct: -1.0,
                    ..base.clone()
                },
                "config key `breakers.db.slow_call_rate_pct` = -1 is invalid: must be between 0 and 100",
            ),
            (
                BreakerConfig {
                    open_for: Duration::from_secs(600),
                    ..base.clone()
                },
                "config key `breakers.db.open_for` = \"10m\" is invalid: must be between \"1ms\" and \"5m\" (`max_open_for`)",
            ),
            (
                BreakerConfig {
                    backoff_factor: 0.5,
                    ..base.clone()
                },
                "config key `breakers.db.backoff_factor` = 0.5 is invalid: must be a finite number of at least 1",
            ),
            (
                BreakerConfig {
                    half_open_calls: 0,
                    ..base.clone()
                },
                "config key `breakers.db.half_open_calls` = 0 is invalid: must be at least 1",
            ),
            (
                BreakerConfig {
                    consecutive_failures: 0,
                    ..base.clone()
                },
                "config key `breakers.db.consecutive_failures` = 0 is invalid: must be at least 1",
            ),
            (
                BreakerConfig {
                    slow_call: Duration::ZERO,
                    ..base.clone()
                },
                "config key `breakers.db.slow_call` = \"0s\" is invalid: must be at least \"1ms\"",
            ),
        ];
        for (config, expected) in cases {
            let message = err(&config);
            assert!(
                message.contains(expected),
                "{message}\nexpected: {expected}"
            );
        }
        // Edges that are allowed.
        let edges = BreakerConfig {
            min_calls: 20,
            failure_rate_pct: 0.0,
            slow_call_rate_pct: 100.0,
            open_for: base.max_open_for,
            backoff_factor: 1.0,
            ..base
        };
        assert_eq!(edges.validate("db"), Ok(()));
    }

    #[test]
    fn config_reads_humantime_durations_and_rejects_unknown_keys() {
        let config: BreakerConfig =
            serde_json::from_str(r#"{"open_for": "10s", "window": 30}"#).unwrap();
        assert_eq!(config.open_for, Duration::from_secs(10));
        assert_eq!(config.window, 30);
        assert_eq!(config.min_calls, 10);
        let e = serde_json::from_str::<BreakerConfig>(r#"{"open_secs": 3}"#).unwrap_err();
        assert!(e.to_string().contains("open_secs"), "{e}");
    }
}
