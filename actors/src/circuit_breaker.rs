//! Circuit breakers: stop calling a dependency that keeps failing or slowing
//! down, give it time to recover, then let a few trial calls through before
//! trusting it again.
//!
//! - [`Breaker`] is the state machine. It holds no clock (every method takes
//!   the time), so it is tested against a model without sleeping.
//! - [`CircuitBreakerActor`] holds one breaker per name; it logs, measures
//!   and journals every transition.
//! - [`BreakerHandle::call`] wraps a future with one named breaker.
//!
//! # States
//!
//! - **closed**: calls pass; the outcomes of the last `window` calls are
//!   kept. The breaker opens after `consecutive_failures` failures in a row,
//!   or once the window holds `min_calls` calls and the failure rate or the
//!   slow call rate reaches its threshold.
//! - **open**: calls are rejected with [`BreakerOpen`] until the open period
//!   ends. Each trip without a close in between stays open `backoff_factor`
//!   times longer than the last, up to `max_open_for`.
//! - **half-open**: up to `half_open_calls` trial calls pass; one failure
//!   opens the breaker again, `half_open_calls` successes close it.
//!
//! An operator can force a breaker open (it then stays open until reset,
//! e.g. while a restore runs) and reset it to closed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use humantime_serde::re::humantime;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::error::{Error, ErrorClass, Result};
use crate::maintenance::now_ms;
use crate::slot::{self, Slot, WriterSlot};
use crate::value::{Operation, Statement, Value};

/// `open_until_ms` of a breaker forced open: it stays open until reset.
pub const FORCED_OPEN_UNTIL_MS: i64 = i64::MAX;
/// The retry hint while every half-open trial call is taken: their outcome
/// decides soon, there is no end time to report.
const HALF_OPEN_RETRY: Duration = Duration::from_secs(1);
/// Largest window accepted: the window is kept in memory for each breaker.
const MAX_WINDOW: u32 = 100_000;
/// Journal batches queued behind a slow journal before new ones are
/// dropped (the next transition writes the state again).
const JOURNAL_QUEUE: usize = 1024;

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
        let ms = Duration::from_millis(1);
        if self.slow_call < ms {
            return Err(invalid(
                name,
                "slow_call",
                quoted(self.slow_call),
                "at least \"1ms\"",
            ));
        }
        pct("slow_call_rate_pct", self.slow_call_rate_pct)?;
        if self.open_for < ms || self.open_for > self.max_open_for {
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

/// What a call through [`BreakerHandle::call`] failed with.
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
        while self.window.len() > self.config.window as usize {
            if let Some(old) = self.window.pop_front() {
                self.window_failures -= u32::from(old.failed);
                self.window_slow -= u32::from(old.slow);
            }
        }
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

/// The statement that stores `snapshot` as the latest state of breaker
/// `name` in `breaker_state`.
pub fn state_statement(name: &str, snapshot: &BreakerSnapshot, at_ms: i64) -> Statement {
    Statement::new(
        "INSERT INTO breaker_state (name, state, consecutive_failures, trips, open_until_ms, \
         calls, failures, rejected, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (name) DO UPDATE SET state = excluded.state, \
         consecutive_failures = excluded.consecutive_failures, trips = excluded.trips, \
         open_until_ms = excluded.open_until_ms, calls = excluded.calls, \
         failures = excluded.failures, rejected = excluded.rejected, \
         updated_at_ms = excluded.updated_at_ms",
        [
            Value::from(name),
            Value::from(snapshot.state.as_str()),
            Value::Integer(snapshot.consecutive_failures.into()),
            Value::Integer(snapshot.trips.into()),
            snapshot.open_until_ms.map_or(Value::Null, Value::Integer),
            Value::from(snapshot.calls),
            Value::from(snapshot.failures),
            Value::from(snapshot.rejected),
            Value::Integer(at_ms),
        ],
    )
}

/// The statement that logs `transition` of breaker `name` in
/// `breaker_transitions`.
pub fn transition_statement(name: &str, transition: &Transition) -> Statement {
    Statement::new(
        "INSERT INTO breaker_transitions (at_ms, breaker, from_state, to_state, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        [
            Value::Integer(transition.at_ms),
            Value::from(name),
            Value::from(transition.from.as_str()),
            Value::from(transition.to.as_str()),
            Value::from(transition.reason.as_str()),
        ],
    )
}

/// A lifetime counter (stored as a non-negative INTEGER).
fn count(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
}

/// The breakers as last journaled, by name: what [`BreakerArgs::restored`]
/// takes at startup.
pub fn load(conn: &Connection) -> Result<Vec<BreakerSnapshot>> {
    let mut stmt = conn.prepare(
        "SELECT name, state, consecutive_failures, trips, open_until_ms, calls, failures, rejected \
         FROM breaker_state ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            BreakerSnapshot {
                name: None,
                state: BreakerState::Closed,
                consecutive_failures: r.get(2)?,
                trips: r.get(3)?,
                open_until_ms: r.get(4)?,
                calls: count(r, 5)?,
                failures: count(r, 6)?,
                rejected: count(r, 7)?,
            },
        ))
    })?;
    let mut snapshots = Vec::new();
    for row in rows {
        let (name, state, mut snapshot) = row?;
        snapshot.state = BreakerState::parse(&state).ok_or_else(|| {
            Error::classed(
                ErrorClass::Internal,
                format!("breaker_state holds unknown state `{state}` for breaker `{name}`"),
            )
        })?;
        snapshot.name = Some(name);
        snapshots.push(snapshot);
    }
    Ok(snapshots)
}

/// What the CircuitBreakerActor needs; cloned for each (re)start.
#[derive(Clone)]
pub struct BreakerArgs {
    /// Breakers configured by name (created at start).
    pub configs: BTreeMap<String, BreakerConfig>,
    /// The configuration of breakers first used by a name not configured.
    pub default: BreakerConfig,
    /// The journal writer (state and transitions).
    pub journal: watch::Receiver<WriterSlot>,
    /// The breakers as journaled before the restart ([`load`]).
    pub restored: Vec<BreakerSnapshot>,
}

/// Messages of the CircuitBreakerActor.
pub enum BreakerMsg {
    /// May a call through breaker `name` go ahead?
    Acquire {
        /// The breaker.
        name: String,
        /// `Ok` to go ahead; `Err` when rejected.
        reply: RpcReplyPort<Result<(), BreakerOpen>>,
    },
    /// The outcome of a call that was let through.
    Record {
        /// The breaker.
        name: String,
        /// Whether the call succeeded.
        success: bool,
        /// How long it took.
        duration: Duration,
    },
    /// A call that was let through was cancelled before its outcome.
    Release {
        /// The breaker.
        name: String,
    },
    /// Every breaker's snapshot, by name.
    Snapshot(RpcReplyPort<Vec<BreakerSnapshot>>),
    /// Open a breaker until it is reset (operators, e.g. during a restore).
    ForceOpen {
        /// The breaker.
        name: String,
        /// Why, for the log and the journal.
        reason: String,
        /// The breaker afterwards.
        reply: RpcReplyPort<BreakerSnapshot>,
    },
    /// Close a breaker and forget its failures (operators).
    Reset {
        /// The breaker.
        name: String,
        /// The breaker afterwards.
        reply: RpcReplyPort<BreakerSnapshot>,
    },
}

/// The CircuitBreakerActor. Spawn it with [`BreakerArgs`].
pub struct CircuitBreakerActor;

/// The breakers by name, with the configuration of new ones.
pub struct BreakerActorState {
    configs: BTreeMap<String, BreakerConfig>,
    default: BreakerConfig,
    breakers: HashMap<String, Breaker>,
    /// Statements for the journal task, in transition order.
    journal: mpsc::Sender<Vec<Statement>>,
}

impl BreakerActorState {
    /// Breaker `name`, created closed on first use.
    fn breaker(&mut self, name: &str) -> &mut Breaker {
        let (configs, default) = (&self.configs, &self.default);
        self.breakers.entry(name.to_owned()).or_insert_with(|| {
            set_gauge(name, BreakerState::Closed);
            Breaker::named(name, configs.get(name).unwrap_or(default).clone())
        })
    }

    /// Log, measure and journal a transition of breaker `name`.
    fn announce(&self, name: &str, transition: Option<Transition>) {
        let Some(t) = transition else {
            return;
        };
        let Some(breaker) = self.breakers.get(name) else {
            return;
        };
        let snapshot = breaker.snapshot();
        match t.to {
            BreakerState::Open => tracing::warn!(
                breaker = name,
                from = %t.from,
                reason = %t.reason,
                open_until_ms = ?snapshot.open_until_ms,
                "circuit breaker opened"
            ),
            BreakerState::HalfOpen => {
                tracing::info!(breaker = name, reason = %t.reason, "circuit breaker half-open")
            }
            BreakerState::Closed => {
                tracing::info!(breaker = name, from = %t.from, reason = %t.reason, "circuit breaker closed")
            }
        }
        set_gauge(name, t.to);
        metrics::counter!(
            "resilite_breaker_transitions_total",
            "breaker" => name.to_owned(),
            "to" => t.to.as_str()
        )
        .increment(1);
        let statements = vec![
            state_statement(name, &snapshot, t.at_ms),
            transition_statement(name, &t),
        ];
        if self.journal.try_send(statements).is_err() {
            tracing::warn!(
                breaker = name,
                "the journal is behind; a circuit breaker transition was not recorded"
            );
        }
    }
}

fn set_gauge(name: &str, state: BreakerState) {
    metrics::gauge!("resilite_breaker_state", "breaker" => name.to_owned()).set(state.gauge());
}

/// Write the queued statements through the journal writer, in order, so
/// the actor never waits on the journal and a later state is never
/// overwritten by an earlier one.
async fn journal_task(
    journal: watch::Receiver<WriterSlot>,
    mut rx: mpsc::Receiver<Vec<Statement>>,
) {
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, 64).await > 0 {
        let statements: Vec<Statement> = queued.drain(..).flatten().collect();
        if let Err(e) = slot::write(&journal, Operation::Batch(statements)).await {
            tracing::warn!(detail = %e.detail, "could not record circuit breaker transitions in the journal");
        }
    }
}

impl Actor for CircuitBreakerActor {
    type Msg = BreakerMsg;
    type State = BreakerActorState;
    type Arguments = BreakerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<BreakerMsg>,
        args: BreakerArgs,
    ) -> Result<BreakerActorState, ActorProcessingErr> {
        // The task ends once the actor (holding the sender) is gone.
        let (tx, rx) = mpsc::channel(JOURNAL_QUEUE);
        tokio::spawn(journal_task(args.journal.clone(), rx));
        let mut breakers = HashMap::new();
        for (name, config) in &args.configs {
            breakers.insert(name.clone(), Breaker::named(name, config.clone()));
        }
        for snapshot in &args.restored {
            let Some(name) = &snapshot.name else {
                continue;
            };
            let config = args.configs.get(name).unwrap_or(&args.default).clone();
            breakers.insert(name.clone(), Breaker::restore(config, snapshot));
        }
        for (name, breaker) in &breakers {
            set_gauge(name, breaker.state());
        }
        Ok(BreakerActorState {
            configs: args.configs,
            default: args.default,
            breakers,
            journal: tx,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<BreakerMsg>,
        msg: BreakerMsg,
        state: &mut BreakerActorState,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        match msg {
            BreakerMsg::Acquire { name, reply } => {
                let breaker = state.breaker(&name);
                let transition = breaker.advance(now);
                let result = breaker.try_acquire(now);
                state.announce(&name, transition);
                let _ = reply.send(result);
            }
            BreakerMsg::Record {
                name,
                success,
                duration,
            } => {
                let transition = state.breaker(&name).record(now, success, duration);
                state.announce(&name, transition);
            }
            BreakerMsg::Release { name } => state.breaker(&name).release(),
            BreakerMsg::Snapshot(reply) => {
                let mut all: Vec<BreakerSnapshot> =
                    state.breakers.values().map(Breaker::snapshot).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(all);
            }
            BreakerMsg::ForceOpen {
                name,
                reason,
                reply,
            } => {
                let transition = state.breaker(&name).force_open(now, &reason);
                state.announce(&name, transition);
                let _ = reply.send(state.breaker(&name).snapshot());
            }
            BreakerMsg::Reset { name, reply } => {
                let transition = state.breaker(&name).reset(now);
                state.announce(&name, transition);
                let _ = reply.send(state.breaker(&name).snapshot());
            }
        }
        Ok(())
    }
}

/// One named breaker of a CircuitBreakerActor, to wrap calls with.
/// Cloneable; it follows the actor across supervisor restarts.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    /// The breaker.
    pub name: String,
    actors: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
}

/// Releases the permit of a call whose future was dropped before it
/// finished (cancelled, timed out, panicked).
struct Permit<'a> {
    name: &'a str,
    actor: ActorRef<BreakerMsg>,
    finished: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let name = self.name.to_owned();
            let _ = self.actor.cast(BreakerMsg::Release { name });
        }
    }
}

impl BreakerHandle {
    /// The handle of breaker `name` of the actor published in `actors`.
    pub fn new(
        name: impl Into<String>,
        actors: watch::Receiver<Slot<ActorRef<BreakerMsg>>>,
    ) -> Self {
        BreakerHandle {
            name: name.into(),
            actors,
        }
    }

    async fn actor(&self) -> Result<ActorRef<BreakerMsg>> {
        slot::running(&mut self.actors.clone()).await
    }

    /// Run `fut` through the breaker: rejected without polling it when the
    /// breaker is open; otherwise timed, and its outcome recorded (`Err`
    /// counts as a failure).
    ///
    /// If the breaker actor does not answer, the call goes ahead: a broken
    /// breaker must not take the dependency down with it.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let acquired = match self.actor().await {
            Ok(actor) => ractor::call!(actor, |reply| BreakerMsg::Acquire {
                name: self.name.clone(),
                reply,
            })
            .map(|r| (actor, r))
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.detail),
        };
        let actor = match acquired {
            Ok((actor, Ok(()))) => actor,
            Ok((_, Err(open))) => return Err(BreakerError::Open(open)),
            Err(e) => {
                tracing::warn!(breaker = %self.name, error = %e, "the circuit breaker did not answer; letting the call through");
                return fut.await.map_err(BreakerError::Inner);
            }
        };
        let mut permit = Permit {
            name: &self.name,
            actor: actor.clone(),
            finished: false,
        };
        let started = Instant::now();
        let result = fut.await;
        permit.finished = true;
        let _ = actor.cast(BreakerMsg::Record {
            name: self.name.clone(),
            success: result.is_ok(),
            duration: started.elapsed(),
        });
        result.map_err(BreakerError::Inner)
    }

    /// Open the breaker until [`reset`](Self::reset) (operators, e.g. while
    /// a restore runs).
    pub async fn force_open(&self, reason: &str) -> Result<BreakerSnapshot> {
        let actor = self.actor().await?;
        ractor::call!(actor, |reply| BreakerMsg::ForceOpen {
            name: self.name.clone(),
            reason: reason.to_owned(),
            reply,
        })
        .map_err(|e| Error::unavailable(format!("the circuit breaker actor did not answer: {e}")))
    }

    /// Close the breaker and forget its failures.
    pub async fn reset(&self) -> Result<BreakerSnapshot> {
        let actor = self.actor().await?;
        ractor::call!(actor, |reply| BreakerMsg::Reset {
            name: self.name.clone(),
            reply,
        })
        .map_err(|e| Error::unavailable(format!("the circuit breaker actor did not answer: {e}")))
    }

    /// The breaker's snapshot (closed and empty if it was never used).
    pub async fn state(&self) -> Result<BreakerSnapshot> {
        let actor = self.actor().await?;
        let all = ractor::call!(actor, BreakerMsg::Snapshot).map_err(|e| {
            Error::unavailable(format!("the circuit breaker actor did not answer: {e}"))
        })?;
        Ok(all
            .into_iter()
            .find(|s| s.name.as_deref() == Some(self.name.as_str()))
            .unwrap_or_else(|| {
                Breaker::named(self.name.clone(), BreakerConfig::default()).snapshot()
            }))
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

    #[test]
    fn journal_rows_load_back_as_snapshots() {
        let conn = crate::journal::in_memory();
        let mut breaker = Breaker::named(
            "db",
            BreakerConfig {
                consecutive_failures: 1,
                ..BreakerConfig::default()
            },
        );
        let t = breaker.record(1_000, false, Duration::ZERO).unwrap();
        let mut forced = Breaker::named("api", BreakerConfig::default());
        let f = forced.force_open(2_000, "restore").unwrap();
        for (b, t) in [(&breaker, &t), (&forced, &f)] {
            let name = b.name().unwrap();
            for s in [
                state_statement(name, &b.snapshot(), t.at_ms),
                transition_statement(name, t),
            ] {
                conn.execute(&s.sql, rusqlite::params_from_iter(&s.params))
                    .unwrap();
            }
        }
        // A second upsert replaces the row.
        let s = state_statement("db", &breaker.snapshot(), 3_000);
        conn.execute(&s.sql, rusqlite::params_from_iter(&s.params))
            .unwrap();
        assert_eq!(
            load(&conn).unwrap(),
            vec![forced.snapshot(), breaker.snapshot()]
        );
        let transitions: i64 = conn
            .query_row("SELECT count(*) FROM breaker_transitions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(transitions, 2);
        let restored = Breaker::restore(BreakerConfig::default(), &load(&conn).unwrap()[0]);
        assert!(restored.is_forced_open());
    }

    fn journal_init(conn: &Connection) -> Result<()> {
        crate::journal::migrate(conn)
    }

    #[tokio::test]
    async fn actor_rejects_without_polling_and_journals_transitions() {
        use crate::connection::DbOptions;
        use crate::slot::{RunningWriter, Slot};
        use crate::writer::{WriterActor, WriterConfig, WriterMsg};
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let db = DbOptions::new(dir.path().join("journal.db"));
        let mut config = WriterConfig::new(db.clone());
        config.init = Some(journal_init);
        config.name = "journal-writer";
        let (writer, _) = Actor::spawn(None, WriterActor, config).await.unwrap();
        let handle = ractor::call!(writer, WriterMsg::Handle).unwrap();
        let (_slot_tx, journal) = watch::channel(Slot::Running(RunningWriter {
            actor: writer.clone(),
            handle,
        }));

        let mut configs = BTreeMap::new();
        configs.insert(
            "db".to_owned(),
            BreakerConfig {
                consecutive_failures: 2,
                open_for: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
        );
        let args = BreakerArgs {
            configs,
            default: BreakerConfig::default(),
            journal,
            restored: vec![],
        };
        let (actor, _) = Actor::spawn(None, CircuitBreakerActor, args).await.unwrap();
        let db_breaker = BreakerHandle::new("db", watch::channel(Slot::Running(actor.clone())).1);

        assert_eq!(
            db_breaker.call(async { Ok::<_, Error>(7) }).await.unwrap(),
            7
        );
        for _ in 0..2 {
            let r = db_breaker
                .call(async { Err::<(), _>(Error::unavailable("down")) })
                .await;
            assert!(matches!(r, Err(BreakerError::Inner(_))));
        }
        let polled = AtomicBool::new(false);
        let r = db_breaker
            .call(async {
                polled.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await;
        let Err(BreakerError::Open(open)) = r else {
            panic!("expected a rejection, got {r:?}");
        };
        assert!(!polled.load(Ordering::SeqCst));
        assert_eq!(open.name, "db");
        assert!(open.retry_after > Duration::from_secs(50), "{open:?}");
        let state = db_breaker.state().await.unwrap();
        assert_eq!(state.state, BreakerState::Open);
        assert_eq!((state.calls, state.failures, state.rejected), (3, 2, 1));

        // Operators: reset, then force open an unknown (default) breaker.
        let reset = ractor::call!(actor, |reply| BreakerMsg::Reset {
            name: "db".into(),
            reply
        })
        .unwrap();
        assert_eq!(reset.state, BreakerState::Closed);
        let forced = ractor::call!(actor, |reply| BreakerMsg::ForceOpen {
            name: "restore".into(),
            reason: "restoring a backup".into(),
            reply
        })
        .unwrap();
        assert_eq!(forced.open_until_ms, Some(FORCED_OPEN_UNTIL_MS));
        let all = ractor::call!(actor, BreakerMsg::Snapshot).unwrap();
        let names: Vec<_> = all.iter().filter_map(|s| s.name.as_deref()).collect();
        assert_eq!(names, ["db", "restore"]);

        // The journal task writes behind the actor: wait for the 3
        // transitions (open, closed, forced open).
        let reader = crate::connection::open_read_only(&db).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 = reader
                .query_row("SELECT count(*) FROM breaker_transitions", [], |r| r.get(0))
                .unwrap();
            if n == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "{n} transitions journaled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let states = load(&reader).unwrap();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].name.as_deref(), Some("db"));
        assert_eq!(states[0].state, BreakerState::Closed);
        assert_eq!(states[1].state, BreakerState::Open);
        let reasons: Vec<String> = reader
            .prepare("SELECT to_state || ': ' || reason FROM breaker_transitions ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            reasons[0].starts_with("open: 2 consecutive failures"),
            "{reasons:?}"
        );
        assert_eq!(reasons[1], "closed: reset by an operator");
        assert_eq!(reasons[2], "open: forced open: restoring a backup");

        // A restart restores the journaled state.
        actor.stop(None);
        let args = BreakerArgs {
            configs: BTreeMap::new(),
            default: BreakerConfig::default(),
            journal: watch::channel(Slot::Stopped).1,
            restored: states,
        };
        let (actor, _) = Actor::spawn(None, CircuitBreakerActor, args).await.unwrap();
        let restore = BreakerHandle::new("restore", watch::channel(Slot::Running(actor.clone())).1);
        let r = restore.call(async { Ok::<_, Error>(()) }).await;
        assert!(matches!(r, Err(BreakerError::Open(_))), "{r:?}");
        actor.stop(None);
        writer.stop(None);
    }
}
