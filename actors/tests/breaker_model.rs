//! Property tests of the circuit breaker state machine: it must agree with
//! a deliberately naive reference model on random call sequences, grow its
//! open period by the backoff factor up to the cap, and survive a
//! snapshot/restore (through JSON and through the journal's table).

use std::time::Duration;

use proptest::prelude::*;
use resilite_actors::breaker::{Breaker, BreakerConfig, BreakerState, FORCED_OPEN_UNTIL_MS};
use resilite_actors::journal::breakers::{load, state_statement};

/// Some moment in 2023, so the arithmetic is not near zero.
const START_MS: i64 = 1_700_000_000_000;
/// The retry hint while all half-open trial calls are taken.
const HALF_OPEN_RETRY_MS: i64 = 1_000;

/// A configuration with whole percentages and dyadic factors, so the model's
/// integer and repeated-multiplication arithmetic is exact.
fn config() -> impl Strategy<Value = BreakerConfig> {
    (1u32..=12)
        .prop_flat_map(|window| {
            (
                (1u32..=6, 0u32..=100, Just(window), 0u32..=window),
                (1u64..=50, 0u32..=100, 1u64..=200, 0u64..=2_000),
                (
                    prop::sample::select(vec![1.0, 1.5, 2.0, 2.5, 3.0]),
                    1u32..=4,
                ),
            )
        })
        .prop_map(
            |(
                (consecutive_failures, failure_pct, window, min_calls),
                (slow_ms, slow_pct, open_ms, extra_ms),
                (backoff_factor, half_open_calls),
            )| BreakerConfig {
                consecutive_failures,
                failure_rate_pct: f64::from(failure_pct),
                window,
                min_calls,
                slow_call: Duration::from_millis(slow_ms),
                slow_call_rate_pct: f64::from(slow_pct),
                open_for: Duration::from_millis(open_ms),
                max_open_for: Duration::from_millis(open_ms + extra_ms),
                backoff_factor,
                half_open_calls,
            },
        )
}

/// One step of a run: time passes, then something happens.
#[derive(Debug, Clone)]
enum Action {
    /// Acquire and, if let through, record the outcome at once.
    Call { success: bool, ms: u64 },
    /// Acquire and keep the call in flight.
    Start,
    /// The oldest call in flight finishes (or a stray late result).
    Finish { success: bool, ms: u64 },
    /// The oldest call in flight is cancelled.
    Cancel,
    /// An operator forces the breaker open.
    Force,
    /// An operator resets it.
    Reset,
}

fn step() -> impl Strategy<Value = (i64, Action)> {
    let advance = prop_oneof![3 => Just(0i64), 5 => 0i64..=60, 2 => 0i64..=400];
    let action = prop_oneof![
        12 => (any::<bool>(), 0u64..=60).prop_map(|(success, ms)| Action::Call { success, ms }),
        3 => Just(Action::Start),
        3 => (any::<bool>(), 0u64..=60).prop_map(|(success, ms)| Action::Finish { success, ms }),
        1 => Just(Action::Cancel),
        1 => Just(Action::Force),
        1 => Just(Action::Reset),
    ];
    (advance, action)
}

/// The reference model: keeps every outcome since the last close and
/// recounts from scratch at each step, with integer arithmetic.
#[derive(Debug)]
struct Model {
    c: BreakerConfig,
    state: BreakerState,
    /// (failed, slow) of every call recorded while closed since the last
    /// close or reset, oldest first.
    history: Vec<(bool, bool)>,
    trips: u32,
    open_until: i64,
    forced: bool,
    permits: u32,
    successes: u32,
    calls: u64,
    failures: u64,
    rejected: u64,
}

impl Model {
    fn new(c: BreakerConfig) -> Self {
        Model {
            c,
            state: BreakerState::Closed,
            history: Vec::new(),
            trips: 0,
            open_until: 0,
            forced: false,
            permits: 0,
            successes: 0,
            calls: 0,
            failures: 0,
            rejected: 0,
        }
    }

    fn open_ms(&self, trips: u32) -> i64 {
        let max = self.c.max_open_for.as_millis() as f64;
        let mut d = self.c.open_for.as_millis() as f64;
        for _ in 1..trips {
            d *= self.c.backoff_factor;
            if d >= max {
                break;
            }
        }
        d.min(max).round() as i64
    }

    fn consecutive(&self) -> u32 {
        self.history.iter().rev().take_while(|(f, _)| *f).count() as u32
    }

    fn enter(&mut self, state: BreakerState) {
        self.state = state;
        self.permits = 0;
        self.successes = 0;
    }

    fn trip(&mut self, now: i64) {
        self.trips += 1;
        self.open_until = now + self.open_ms(self.trips);
        self.enter(BreakerState::Open);
    }

    fn close(&mut self) {
        self.history.clear();
        self.trips = 0;
        self.forced = false;
        self.enter(BreakerState::Closed);
    }

    /// `Err(retry_after_ms)` when rejected.
    fn acquire(&mut self, now: i64) -> Result<(), i64> {
        if self.state == BreakerState::Open && !self.forced && now >= self.open_until {
            self.enter(BreakerState::HalfOpen);
        }
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::HalfOpen if self.permits < self.c.half_open_calls => {
                self.permits += 1;
                Ok(())
            }
            BreakerState::HalfOpen => {
                self.rejected += 1;
                Err(HALF_OPEN_RETRY_MS)
            }
            BreakerState::Open => {
                self.rejected += 1;
                Err(if self.forced {
                    self.c.open_for.as_millis() as i64
                } else {
                    self.open_until - now
                })
            }
        }
    }

    fn record(&mut self, now: i64, success: bool, ms: u64) {
        self.calls += 1;
        self.failures += u64::from(!success);
        match self.state {
            BreakerState::Closed => {
                let slow = ms >= self.c.slow_call.as_millis() as u64;
                self.history.push((!success, slow));
                let start = self.history.len().saturating_sub(self.c.window as usize);
                let window = &self.history[start..];
                let len = window.len() as u64;
                let failed = window.iter().filter(|(f, _)| *f).count() as u64;
                let slowed = window.iter().filter(|(_, s)| *s).count() as u64;
                let enough = len >= u64::from(self.c.min_calls);
                let rate = |n: u64, pct: f64| n > 0 && n * 100 >= pct as u64 * len;
                if (!success && self.consecutive() >= self.c.consecutive_failures)
                    || (enough && rate(failed, self.c.failure_rate_pct))
                    || (enough && rate(slowed, self.c.slow_call_rate_pct))
                {
                    self.trip(now);
                }
            }
            BreakerState::HalfOpen if self.permits > self.successes => {
                if !success {
                    self.trip(now);
                } else {
                    self.successes += 1;
                    if self.successes == self.c.half_open_calls {
                        self.close();
                    }
                }
            }
            BreakerState::HalfOpen | BreakerState::Open => {}
        }
    }

    fn release(&mut self) {
        if self.state == BreakerState::HalfOpen && self.permits > self.successes {
            self.permits -= 1;
        }
    }

    fn force(&mut self) {
        if !(self.state == BreakerState::Open && self.forced) {
            self.forced = true;
            self.enter(BreakerState::Open);
        }
    }
}

/// Compare everything the breaker shows with the model.
fn agree(b: &Breaker, m: &Model) -> Result<(), TestCaseError> {
    let s = b.snapshot();
    prop_assert_eq!(s.state, m.state);
    prop_assert_eq!(s.trips, m.trips);
    prop_assert_eq!(s.consecutive_failures, m.consecutive());
    let open_until = match (m.state, m.forced) {
        (BreakerState::Open, true) => Some(FORCED_OPEN_UNTIL_MS),
        (BreakerState::Open, false) => Some(m.open_until),
        _ => None,
    };
    prop_assert_eq!(s.open_until_ms, open_until);
    prop_assert_eq!(
        (s.calls, s.failures, s.rejected),
        (m.calls, m.failures, m.rejected)
    );
    Ok(())
}

/// Acquire on both; they must answer alike, and closed never rejects.
fn acquire(b: &mut Breaker, m: &mut Model, now: i64) -> Result<bool, TestCaseError> {
    let before = b.state();
    let model_ends_open = m.state == BreakerState::Open && !m.forced && now >= m.open_until;
    let t = b.advance(now);
    let got = b.try_acquire(now);
    let want = m.acquire(now);
    if before == BreakerState::Closed {
        prop_assert!(got.is_ok(), "a closed breaker rejected a call: {:?}", got);
    }
    prop_assert_eq!(t.is_some(), model_ends_open);
    if let Some(t) = &t {
        prop_assert_eq!((t.from, t.to), (BreakerState::Open, BreakerState::HalfOpen));
        prop_assert_eq!(t.at_ms, now);
    }
    match (&got, want) {
        (Ok(()), Ok(())) => {}
        (Err(open), Err(ms)) => {
            prop_assert_eq!(open.retry_after, Duration::from_millis(ms as u64));
            prop_assert_eq!(open.name.as_str(), "db");
        }
        _ => prop_assert!(false, "breaker {:?}, model {:?}", got, want),
    }
    Ok(got.is_ok())
}

/// Record on both; a transition must match the model's change of state.
fn record(
    b: &mut Breaker,
    m: &mut Model,
    now: i64,
    success: bool,
    ms: u64,
) -> Result<(), TestCaseError> {
    let before = m.state;
    let t = b.record(now, success, Duration::from_millis(ms));
    m.record(now, success, ms);
    match t {
        Some(t) => {
            prop_assert_ne!(before, m.state);
            prop_assert_eq!((t.from, t.to, t.at_ms), (before, m.state, now));
        }
        None => prop_assert_eq!(before, m.state),
    }
    Ok(())
}

/// Run `steps` on a named breaker and the model, checking after each.
fn run(config: &BreakerConfig, steps: &[(i64, Action)]) -> Result<(Breaker, i64), TestCaseError> {
    let mut b = Breaker::named("db", config.clone());
    let mut m = Model::new(config.clone());
    let mut now = START_MS;
    for (advance, action) in steps {
        now += advance;
        match action {
            Action::Call { success, ms } => {
                if acquire(&mut b, &mut m, now)? {
                    record(&mut b, &mut m, now, *success, *ms)?;
                }
            }
            // The call stays in flight until a later Finish or Cancel.
            Action::Start => {
                acquire(&mut b, &mut m, now)?;
            }
            // Without a call in flight this is a stray late result.
            Action::Finish { success, ms } => record(&mut b, &mut m, now, *success, *ms)?,
            Action::Cancel => {
                b.release();
                m.release();
            }
            Action::Force => {
                let t = b.force_open(now, "test");
                let was_forced = m.state == BreakerState::Open && m.forced;
                m.force();
                prop_assert_eq!(t.is_none(), was_forced);
            }
            Action::Reset => {
                let t = b.reset(now);
                let was_closed = m.state == BreakerState::Closed;
                m.close();
                prop_assert_eq!(t.is_none(), was_closed);
            }
        }
        agree(&b, &m)?;
    }
    Ok((b, now))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) The breaker and the model agree after every step.
    ///
    /// Property 2: Graceful Degradation on Connection Failure. For any
    /// sequence of calls, failures, cancellations and operator actions, the
    /// breaker that makes writes fail fast while the database keeps failing
    /// opens, half-opens and closes exactly as the reference model says.
    #[test]
    fn breaker_agrees_with_the_model(
        config in config(),
        steps in prop::collection::vec(step(), 1..200),
    ) {
        run(&config, &steps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// (b) Each trip in a row stays open `backoff_factor` times longer,
    /// never longer than `max_open_for`; closing starts over at `open_for`.
    #[test]
    fn open_period_grows_by_the_factor_up_to_the_cap(
        open_ms in 1u64..=10_000,
        extra_ms in 0u64..=600_000,
        factor in 1.0f64..4.0,
        trips in 1usize..40,
    ) {
        let config = BreakerConfig {
            consecutive_failures: 1,
            half_open_calls: 1,
            open_for: Duration::from_millis(open_ms),
            max_open_for: Duration::from_millis(open_ms + extra_ms),
            backoff_factor: factor,
            ..BreakerConfig::default()
        };
        prop_assert_eq!(config.validate("db"), Ok(()));
        let max = (open_ms + extra_ms) as f64;
        let mut b = Breaker::new(config);
        let mut now = START_MS;
        prop_assert!(b.record(now, false, Duration::ZERO).is_some());
        let mut last: Option<f64> = None;
        for trip in 1..=trips {
            let until = b.snapshot().open_until_ms.expect("open");
            let d = (until - now) as f64;
            prop_assert!(d <= max, "trip {}: open {}ms > cap {}ms", trip, d, max);
            prop_assert_eq!(Duration::from_millis(d as u64), b.open_duration(trip as u32));
            match last {
                None => prop_assert_eq!(d, open_ms as f64),
                Some(prev) => {
                    prop_assert!(d >= prev);
                    // Rounded to the ms at each trip: within half a factor.
                    let want = (prev * factor).min(max);
                    prop_assert!((d - want).abs() <= factor / 2.0 + 1.0,
                        "trip {}: open {}ms, expected about {}ms", trip, d, want);
                }
            }
            last = Some(d);
            // Still open just before the end, half-open at it.
            prop_assert!(b.try_acquire(until - 1).is_err());
            now = until;
            prop_assert!(b.try_acquire(now).is_ok());
            prop_assert_eq!(b.state(), BreakerState::HalfOpen);
            prop_assert!(b.record(now, false, Duration::ZERO).is_some());
            prop_assert_eq!(b.snapshot().trips as usize, trip + 1);
        }
        // A close forgets the trips.
        now = b.snapshot().open_until_ms.expect("open");
        prop_assert!(b.try_acquire(now).is_ok());
        let t = b.record(now, true, Duration::ZERO).expect("closes");
        prop_assert_eq!(t.to, BreakerState::Closed);
        prop_assert_eq!(b.snapshot().trips, 0);
        prop_assert!(b.record(now, false, Duration::ZERO).is_some());
        prop_assert_eq!(b.snapshot().open_until_ms, Some(now + open_ms as i64));
    }

    /// (c) A snapshot restores the same state, trips and open period,
    /// directly, through JSON and through the journal table.
    #[test]
    fn snapshot_restore_round_trips(
        config in config(),
        steps in prop::collection::vec(step(), 0..120),
        later in 0i64..=500,
    ) {
        let (mut b, now) = run(&config, &steps)?;
        let snap = b.snapshot();

        let json = serde_json::to_string(&snap).expect("serializes");
        let from_json: resilite_actors::breaker::BreakerSnapshot =
            serde_json::from_str(&json).expect("deserializes");
        prop_assert_eq!(&from_json, &snap);

        let conn = rusqlite::Connection::open_in_memory().expect("in-memory db");
        resilite_actors::journal::migrate(&conn).expect("schema");
        let s = state_statement("db", &snap, now);
        conn.execute(&s.sql, rusqlite::params_from_iter(&s.params)).expect("upsert");
        let loaded = load(&conn).expect("load");
        prop_assert_eq!(&loaded, &vec![snap.clone()]);

        let mut restored = Breaker::restore(config.clone(), &loaded[0]);
        prop_assert_eq!(restored.snapshot(), snap.clone());
        prop_assert_eq!(restored.state(), b.state());
        prop_assert_eq!(restored.is_forced_open(), b.is_forced_open());

        // They behave alike from here (a half-open breaker restarts its
        // trial period, so its in-flight permits are not compared).
        let at = now + later;
        if snap.state != BreakerState::HalfOpen {
            prop_assert_eq!(restored.try_acquire(at), b.try_acquire(at));
            prop_assert_eq!(restored.state(), b.state());
        } else {
            prop_assert!(restored.try_acquire(at).is_ok());
        }
    }
}
