//! `[retry]`, the replay policy, and [`EnqueueOptions`], how one entry is
//! queued, with their validation and the statement that queues an entry.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::journal::queue::{self, NewEntry};
use crate::maintenance::now_ms;
use crate::value::Statement;

/// Delay before the first replay.
const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
/// Each next delay is this many times the last.
const DEFAULT_FACTOR: f32 = 2.0;
/// Longest delay between two attempts.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(300);
/// Attempts before an entry goes to the dead-letter queue.
const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// How often the queue looks for due entries.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Most entries replayed together.
const DEFAULT_REPLAY_BATCH: usize = 512;
/// Most application handler calls running at once.
const DEFAULT_HANDLER_CONCURRENCY: usize = 64;
/// How long succeeded entries are kept.
const DEFAULT_SUCCEEDED_RETENTION: Duration = Duration::from_secs(86_400);
/// How long the key of an idempotent operation is remembered.
const DEFAULT_KEY_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Longest wait for a durable write's answer before it is queued.
const DEFAULT_DURABLE_ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Priority of an entry queued without one.
const DEFAULT_PRIORITY: u8 = 5;

/// `[retry]`: the replay policy of the durable queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Delay before the first replay.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Each next delay is this many times the last (with jitter).
    pub factor: f32,
    /// Longest delay between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Attempts before an entry goes to the dead-letter queue.
    pub max_attempts: u32,
    /// How often the queue looks for due entries.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Most entries replayed together (their outcomes are one journal
    /// transaction).
    pub replay_batch: usize,
    /// Most application handler calls running at once (SQL replays share
    /// the writer's group commits and are not limited by this).
    pub handler_concurrency: usize,
    /// How long succeeded entries are kept before they are deleted.
    #[serde(with = "humantime_serde")]
    pub succeeded_retention: Duration,
    /// How long the key of an [`Operation::Once`](crate::value::Operation::Once)
    /// is remembered in the application database: a replay with the same
    /// key within this time is skipped, one after it is applied again.
    #[serde(with = "humantime_serde")]
    pub key_retention: Duration,
    /// A durable write not answered within this (the database locked, the
    /// writer busy) is queued and answered `queued` while it stays in
    /// flight; its idempotency key makes the two one write.
    #[serde(with = "humantime_serde")]
    pub durable_answer_within: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base_delay: DEFAULT_BASE_DELAY,
            factor: DEFAULT_FACTOR,
            max_delay: DEFAULT_MAX_DELAY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            poll_interval: DEFAULT_POLL_INTERVAL,
            replay_batch: DEFAULT_REPLAY_BATCH,
            handler_concurrency: DEFAULT_HANDLER_CONCURRENCY,
            succeeded_retention: DEFAULT_SUCCEEDED_RETENTION,
            key_retention: DEFAULT_KEY_RETENTION,
            durable_answer_within: DEFAULT_DURABLE_ANSWER_WITHIN,
        }
    }
}

impl RetryConfig {
    /// The delay before attempt `attempt + 1`, after `attempt` failures
    /// (exponential with jitter, never above `max_delay`).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_jitter()
            .without_max_times()
            .build();
        let mut delay = self.base_delay;
        for _ in 0..attempt.max(1) {
            delay = backoff.next().unwrap_or(self.max_delay);
        }
        delay.min(self.max_delay)
    }
}

/// How a durable operation is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnqueueOptions {
    /// 1 (most urgent) to 10.
    pub priority: u8,
    /// Entries with the same key are replayed one at a time, in order.
    pub ordering_key: Option<String>,
    /// Overrides `retry.max_attempts`.
    pub max_attempts: Option<u32>,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        EnqueueOptions {
            priority: DEFAULT_PRIORITY,
            ordering_key: None,
            max_attempts: None,
        }
    }
}

impl EnqueueOptions {
    /// Reject a priority outside 1..=10 or a zero `max_attempts`.
    pub fn validate(&self) -> Result<()> {
        if !(1..=10).contains(&self.priority) {
            return Err(Error::bad_input(format!(
                "priority {} is invalid: use 1 (most urgent) to 10",
                self.priority
            )));
        }
        if self.max_attempts == Some(0) {
            return Err(Error::bad_input("max_attempts must be at least 1"));
        }
        Ok(())
    }
}

/// The statement that queues `payload`, JSON text (its id is the last
/// insert rowid), once `options` and `kind` are checked.
pub fn enqueue_statement(
    kind: &str,
    payload: String,
    options: &EnqueueOptions,
    config: &RetryConfig,
    cause: Option<&Error>,
) -> Result<Statement> {
    options.validate()?;
    if kind.trim().is_empty() {
        return Err(Error::bad_input("the payload kind is empty"));
    }
    let now = now_ms();
    Ok(queue::enqueue(NewEntry {
        kind,
        payload,
        priority: options.priority,
        ordering_key: options.ordering_key.as_deref(),
        max_attempts: options.max_attempts.unwrap_or(config.max_attempts),
        next_retry_at_ms: now + config.base_delay.as_millis() as i64,
        cause,
        now_ms: now,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Delays stay within `[base_delay, max_delay]` and their lower
        /// bound doubles with each attempt (the default factor).
        ///
        /// Property 15: Audit Log Retry Pattern. A queued entry's retries
        /// back off exponentially, bounded (the integration tests in
        /// `tests/retry_queue.rs` vary the factor and check the spacing).
        #[test]
        fn backoff_delays_are_bounded_and_grow(base_ms in 1u64..2000, max_s in 1u64..600, attempt in 1u32..40) {
            let config = RetryConfig {
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_secs(max_s).max(Duration::from_millis(base_ms)),
                ..RetryConfig::default()
            };
            let delay = config.delay(attempt);
            prop_assert!(delay <= config.max_delay, "{delay:?} > {:?}", config.max_delay);
            prop_assert!(delay >= config.base_delay.min(config.max_delay));
            // Without jitter the delay doubles; with it, the lower bound of
            // attempt n+1 still reaches the lower bound of attempt n.
            let floor = |n: u32| config.base_delay.saturating_mul(1u32 << (n - 1).min(20)).min(config.max_delay);
            prop_assert!(config.delay(attempt + 1) >= floor(attempt + 1).min(config.max_delay));
        }
    }
}
