//! The circuit breaker state machine, [`Breaker`], and the values it
//! reports: its state, its transitions, its snapshot, and the rejection of
//! a call. It holds no clock (every method takes the time), so it is tested
//! against a model without sleeping.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use humantime_serde::re::humantime;
use serde::{Deserialize, Serialize};

use super::BreakerConfig;
use crate::error::{Error, ErrorClass};

/// `open_until_ms` of a breaker forced open: it stays open until reset.
pub const FORCED_OPEN_UNTIL_MS: i64 = i64::MAX;
/// The retry hint while every half-open trial call is taken: their outcome
/// decides soon, there is no end time to report.
const HALF_OPEN_RETRY: Duration = Duration::from_secs(1);

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A few trial calls pass to find out whether the dependency is back.
    HalfOpen,
}

impl BreakerState {
    /// The state as serialized and journaled: `closed`, `open`, `halfopen`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "halfopen",
        }
    }

    /// The value of the `resilite_breaker_state` gauge: 0 closed, 1
    /// half-open, 2 open (higher is worse).
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    /// The state written as [`as_str`](Self::as_str) does.
    pub fn parse(text: &str) -> Option<Self> {
        [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, with why and when: what is logged and journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// The rule that fired, for the person reading the log.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// A call was rejected because its breaker is open (or its half-open
/// trial calls are all taken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    /// The breaker.
    pub name: String,
    /// When trying again may be let through.
    pub retry_after: Duration,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole seconds, rounded up, so the hint is never too early.
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        let after = humantime::format_duration(Duration::from_secs(secs));
        if self.name.is_empty() {
            write!(f, "circuit breaker is open; retry after {after}")
        } else {
            write!(
                f,
                "circuit breaker `{}` is open; retry after {after}",
                self.name
            )
        }
    }
}

impl std::error::Error for BreakerOpen {}

impl From<BreakerOpen> for Error {
    fn from(open: BreakerOpen) -> Self {
        let detail = format!(
            "breaker `{}` rejected the call; retry_after_ms={}",
            open.name,
            open.retry_after.as_millis()
        );
        Error::new(ErrorClass::Unavailable, open.to_string(), detail)
    }
}

/// What a call through [`BreakerHandle::call`](super::BreakerHandle::call)
/// failed with.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker rejected the call; the future was not polled.
    #[error(transparent)]
    Open(BreakerOpen),
    /// The call ran and failed with its own error.
    #[error(transparent)]
    Inner(E),
}

impl From<BreakerError<Error>> for Error {
    fn from(err: BreakerError<Error>) -> Self {
        match err {
            BreakerError::Open(open) => open.into(),
            BreakerError::Inner(e) => e,
        }
    }
}

/// A breaker as it is reported and journaled; enough to rebuild it after a
/// restart with [`Breaker::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// The breaker's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its state.
    pub state: BreakerState,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Trips since it last closed (what the open period grows with).
    pub trips: u32,
    /// While open, until when ([`FORCED_OPEN_UNTIL_MS`] when forced open).
    pub open_until_ms: Option<i64>,
    /// Call outcomes recorded since it was created.
    pub calls: u64,
    /// Of which failures.
    pub failures: u64,
    /// Calls rejected since it was created.
    pub rejected: u64,
}

/// One call outcome in the window.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    failed: bool,
    slow: bool,
}

/// The circuit breaker state machine. It never reads a clock: every method
/// takes `now_ms`, milliseconds since the Unix epoch.
#[derive(Debug, Clone)]
pub struct Breaker {
    name: Option<String>,
    config: BreakerConfig,
    state: BreakerState,
    /// The latest outcomes while closed, oldest first, at most `window`.
    window: VecDeque<Outcome>,
    window_failures: u32,
    window_slow: u32,
    consecutive_failures: u32,
    trips: u32,
    open_until_ms: i64,
    /// Trial calls let through in this half-open period (released ones
    /// given back).
    half_open_permits: u32,
    /// Trial calls that succeeded in this half-open period.
    half_open_successes: u32,
    calls: u64,
    failures: u64,
    rejected: u64,
}

impl Breaker {
    /// A closed breaker without a name.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            name: None,
            config,
            state: BreakerState::Closed,
            window: VecDeque::new(),
            window_failures: 0,
            window_slow: 0,
            consecutive_failures: 0,
            trips: 0,
            open_until_ms: 0,
            half_open_permits: 0,
            half_open_successes: 0,
            calls: 0,
            failures: 0,
            rejected: 0,
        }
    }

    /// Closed, with a full window of fast successes and no failure: one
    /// more fast success would change nothing but the call count, so a hot
    /// path may skip recording it.
    pub fn is_quiet(&self) -> bool {
        self.state == BreakerState::Closed
            && self.window.len() >= self.config.window as usize
            && self.window_failures == 0
            && self.window_slow == 0
            && self.consecutive_failures == 0
    }

    /// A closed breaker whose rejections and snapshots carry `name`.
    pub fn named(name: impl Into<String>, config: BreakerConfig) -> Self {
        Breaker {
            name: Some(name.into()),
            ..Breaker::new(config)
        }
    }

    /// Rebuild a breaker from its snapshot (the window starts empty; a
    /// half-open breaker starts a fresh trial period).
    pub fn restore(config: BreakerConfig, snapshot: &BreakerSnapshot) -> Self {
        Breaker {
            name: snapshot.name.clone(),
            state: snapshot.state,
            consecutive_failures: snapshot.consecutive_failures,
            trips: snapshot.trips,
            // Open without an end (a hand-edited row): the period is over.
            open_until_ms: snapshot.open_until_ms.unwrap_or(i64::MIN),
            calls: snapshot.calls,
            failures: snapshot.failures,
            rejected: snapshot.rejected,
            ..Breaker::new(config)
        }
    }

    /// Its name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Its configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Take a new configuration (a reload), keeping its state and counts:
    /// thresholds apply from the next call, a shorter window drops its
    /// oldest outcomes, an open period already running keeps its end.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
        self.trim_window();
    }

    /// Keep at most `window` outcomes, dropping the oldest.
    fn trim_window(&mut self) {
        while self.window.len() > self.config.window as usize {
            if let Some(old) = self.window.pop_front() {
                self.window_failures -= u32::from(old.failed);
                self.window_slow -= u32::from(old.slow);
            }
        }
    }

    /// Its state (an open breaker whose period ended moves to half-open on
    /// the next [`advance`](Self::advance) or [`try_acquire`](Self::try_acquire)).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// True when forced open by an operator: only [`reset`](Self::reset)
    /// closes it.
    pub fn is_forced_open(&self) -> bool {
        self.state == BreakerState::Open && self.open_until_ms == FORCED_OPEN_UNTIL_MS
    }

    /// How long the breaker stays open after its `trips`-th trip in a row:
    /// `open_for * backoff_factor^(trips - 1)`, rounded to the millisecond
    /// and never more than `max_open_for`.
    pub fn open_duration(&self, trips: u32) -> Duration {
        let c = &self.config;
        let base = c.open_for.as_millis() as f64;
        let max = c.max_open_for.as_millis() as f64;
        let power = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = base * c.backoff_factor.powi(power);
        // A NaN (from a config that skipped validation) means the cap.
        let ms = if grown.is_nan() {
            max
        } else {
            grown.min(max).max(0.0)
        };
        Duration::from_millis(ms.round() as u64)
    }

    /// Move an open breaker whose period has ended to half-open. Call it
    /// before [`try_acquire`](Self::try_acquire) to see that transition.
    pub fn advance(&mut self, now_ms: i64) -> Option<Transition> {
        if self.state == BreakerState::Open && now_ms >= self.open_until_ms {
            let reason = format!(
                "the open period ended; letting up to {} trial call(s) through",
                self.config.half_open_calls
            );
            return Some(self.move_to(BreakerState::HalfOpen, now_ms, reason));
        }
        None
    }

    /// A recovery probe of the dependency passed while the breaker is open
    /// (and not forced open): half-open now, ahead of the open period's
    /// end. Only for a dependency that is cheap to probe (the database).
    pub fn probe_passed(&mut self, now_ms: i64) -> Option<Transition> {
        if self.state != BreakerState::Open || self.is_forced_open() {
            return None;
        }
        let reason = format!(
            "a recovery probe succeeded; letting up to {} trial call(s) through",
            self.config.half_open_calls
        );
        Some(self.move_to(BreakerState::HalfOpen, now_ms, reason))
    }

    /// Ask to make a call: `Ok` lets it through (record its outcome with
    /// [`record`](Self::record), or [`release`](Self::release) it if it was
    /// cancelled), `Err` says when to try again.
    pub fn try_acquire(&mut self, now_ms: i64) -> Result<(), BreakerOpen> {
        self.advance(now_ms);
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::HalfOpen if self.half_open_permits < self.config.half_open_calls => {
                self.half_open_permits += 1;
                Ok(())
            }
            BreakerState::HalfOpen => Err(self.reject(HALF_OPEN_RETRY)),
            BreakerState::Open => {
                let wait = if self.is_forced_open() {
                    self.config.open_for
                } else {
                    let ms = self.open_until_ms.saturating_sub(now_ms);
                    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                };
                Err(self.reject(wait))
            }
        }
    }

    fn reject(&mut self, retry_after: Duration) -> BreakerOpen {
        self.rejected += 1;
        BreakerOpen {
            name: self.name.clone().unwrap_or_default(),
            retry_after,
        }
    }

    /// Give back a permit whose call was cancelled before it finished, so
    /// a half-open breaker is not left waiting for an outcome that never
    /// comes.
    pub fn release(&mut self) {
        if self.state == BreakerState::HalfOpen && self.half_open_permits > self.half_open_successes
        {
            self.half_open_permits -= 1;
        }
    }

    /// Record the outcome of a call that was let through; returns the
    /// transition it caused. Results arriving while open, or while
    /// half-open with no trial call in flight, are late (the call started
    /// before the breaker opened) and only counted.
    pub fn record(&mut self, now_ms: i64, success: bool, duration: Duration) -> Option<Transition> {
        self.calls += 1;
        if !success {
            self.failures += 1;
        }
        match self.state {
            BreakerState::Closed => self.record_closed(now_ms, success, duration),
            BreakerState::HalfOpen => {
                if self.half_open_permits == self.half_open_successes {
                    return None;
                }
                if !success {
                    return Some(self.trip(now_ms, "a trial call failed while half-open".into()));
                }
                self.half_open_successes += 1;
                if self.half_open_successes < self.config.half_open_calls {
                    return None;
                }
                let reason = format!(
                    "{} trial call(s) succeeded while half-open",
                    self.half_open_successes
                );
                self.clear();
                Some(self.move_to(BreakerState::Closed, now_ms, reason))
            }
            BreakerState::Open => None,
        }
    }

    fn record_closed(
        &mut self,
        now_ms: i64,
        success: bool,
        duration: Duration,
    ) -> Option<Transition> {
        let outcome = Outcome {
            failed: !success,
            slow: duration >= self.config.slow_call,
        };
        self.window.push_back(outcome);
        self.window_failures += u32::from(outcome.failed);
        self.window_slow += u32::from(outcome.slow);
        self.trim_window();
        self.consecutive_failures = if success {
            0
        } else {
            self.consecutive_failures.saturating_add(1)
        };

        let c = &self.config;
        if !success && self.consecutive_failures >= c.consecutive_failures {
            let reason = format!("{} consecutive failures", self.consecutive_failures);
            return Some(self.trip(now_ms, reason));
        }
        let len = self.window.len();
        if len < c.min_calls as usize {
            return None;
        }
        // Compared as counts (count * 100 >= pct * len): exact for whole
        // percentages. A rate rule needs at least one bad call, so 0%
        // means "any failure", not "always".
        let reached =
            |count: u32, pct: f64| count > 0 && f64::from(count) * 100.0 >= pct * len as f64;
        if reached(self.window_failures, c.failure_rate_pct) {
            let reason = format!(
                "{} of the last {len} calls failed (threshold {}%)",
                self.window_failures, c.failure_rate_pct
            );
            return Some(self.trip(now_ms, reason));
        }
        if reached(self.window_slow, c.slow_call_rate_pct) {
            let reason = format!(
                "{} of the last {len} calls took at least {} (threshold {}%)",
                self.window_slow,
                humantime::format_duration(c.slow_call),
                c.slow_call_rate_pct
            );
            return Some(self.trip(now_ms, reason));
        }
        None
    }

    /// Open for the period of one more trip in a row.
    fn trip(&mut self, now_ms: i64, reason: String) -> Transition {
        self.trips = self.trips.saturating_add(1);
        let open_for = self.open_duration(self.trips);
        let ms = i64::try_from(open_for.as_millis()).unwrap_or(i64::MAX);
        self.open_until_ms = now_ms.saturating_add(ms);
        let reason = format!(
            "{reason}; open for {} (trip {} in a row)",
            humantime::format_duration(open_for),
            self.trips
        );
        self.move_to(BreakerState::Open, now_ms, reason)
    }

    /// Forget the outcomes and trips: the dependency counts as healthy.
    fn clear(&mut self) {
        self.window.clear();
        self.window_failures = 0;
        self.window_slow = 0;
        self.consecutive_failures = 0;
        self.trips = 0;
    }

    fn move_to(&mut self, to: BreakerState, now_ms: i64, reason: String) -> Transition {
        let from = self.state;
        self.state = to;
        self.half_open_permits = 0;
        self.half_open_successes = 0;
        Transition {
            from,
            to,
            reason,
            at_ms: now_ms,
        }
    }

    /// Open the breaker until [`reset`](Self::reset), whatever the calls
    /// do (e.g. while the database is being restored). `None` when it is
    /// already forced open.
    pub fn force_open(&mut self, now_ms: i64, reason: &str) -> Option<Transition> {
        if self.is_forced_open() {
            return None;
        }
        self.open_until_ms = FORCED_OPEN_UNTIL_MS;
        let reason = format!("forced open: {reason}");
        Some(self.move_to(BreakerState::Open, now_ms, reason))
    }

    /// Close the breaker and forget its outcomes and trips (the lifetime
    /// counters stay). `None` when it was closed already.
    pub fn reset(&mut self, now_ms: i64) -> Option<Transition> {
        self.clear();
        if self.state == BreakerState::Closed {
            return None;
        }
        Some(self.move_to(BreakerState::Closed, now_ms, "reset by an operator".into()))
    }

    /// Its state as reported and journaled.
    pub fn snapshot(&self) -> BreakerSnapshot {
        BreakerSnapshot {
            name: self.name.clone(),
            state: self.state,
            consecutive_failures: self.consecutive_failures,
            trips: self.trips,
            open_until_ms: (self.state == BreakerState::Open).then_some(self.open_until_ms),
            calls: self.calls,
            failures: self.failures,
            rejected: self.rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_says_when_to_retry_and_is_unavailable() {
        let open = BreakerOpen {
            name: "x".into(),
            retry_after: Duration::from_millis(11_500),
        };
        assert_eq!(
            open.to_string(),
            "circuit breaker `x` is open; retry after 12s"
        );
        let e = Error::from(open.clone());
        assert_eq!(e.class, ErrorClass::Unavailable);
        assert_eq!(e.message, open.to_string());
        let e = Error::from(BreakerError::<Error>::Open(open));
        assert_eq!(e.class, ErrorClass::Unavailable);
    }
}
