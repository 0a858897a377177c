//! The database breaker: the writer's own breaker, [`DATABASE_BREAKER`].
//! Every write asks it, so it is a lock beside the runtime rather than an
//! actor: the same [`Breaker`] state machine as the named breakers, behind
//! a mutex, announced by the same code. While it is quiet (closed, its
//! window full of fast successes) a write does not even take the lock: a
//! fast success changes nothing in the breaker but its call count, kept
//! here in an atomic.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::announce::Announcer;
use super::{Breaker, BreakerConfig, BreakerOpen, BreakerSnapshot, BreakerState, Transition};
use crate::maintenance::now_ms;
use crate::slot::WriterSlot;

/// The name of the writer's built-in circuit breaker (`[breakers.database]`).
pub const DATABASE_BREAKER: &str = "database";

/// The log message of an opening.
const OPENED: &str = "circuit breaker opened: writes fail fast, durable writes are queued";

/// The writer's `database` breaker. Share it with an `Arc`.
#[derive(Debug)]
pub struct DatabaseBreaker {
    breaker: Mutex<Breaker>,
    /// Mirrors [`Breaker::is_quiet`], read without the lock; stored only
    /// under it.
    quiet: AtomicBool,
    /// Fast successes while quiet: counted here, outside the lock.
    quiet_calls: AtomicU64,
    /// `slow_call` of its configuration, in nanoseconds (read without the
    /// lock; changed by a reload).
    slow_call_ns: AtomicU64,
    /// Woken when it opens by itself (not forced): recovery probes start.
    opened: Notify,
    announcer: Announcer,
}

impl DatabaseBreaker {
    /// The database breaker with `config`, continuing from its snapshot in
    /// `restored` (the breakers as
    /// [`load`](crate::journal::breakers::load) reads them) if it has one;
    /// its transitions are journaled through `journal`. Call it within a
    /// tokio runtime.
    pub fn new(
        config: BreakerConfig,
        restored: &[BreakerSnapshot],
        journal: watch::Receiver<WriterSlot>,
    ) -> Self {
        let slow_call_ns = AtomicU64::new(nanos(config.slow_call));
        let breaker = match restored
            .iter()
            .find(|s| s.name.as_deref() == Some(DATABASE_BREAKER))
        {
            Some(snapshot) => Breaker::restore(config, snapshot),
            None => Breaker::named(DATABASE_BREAKER, config),
        };
        DatabaseBreaker {
            breaker: Mutex::new(breaker),
            quiet: AtomicBool::new(false),
            quiet_calls: AtomicU64::new(0),
            slow_call_ns,
            opened: Notify::new(),
            announcer: Announcer::start(journal, OPENED),
        }
    }

    /// Ask to let a write through: `Err` when the breaker is open (or its
    /// half-open trial writes are all taken). While quiet this is one
    /// atomic load.
    #[inline]
    pub fn acquire(&self) -> Result<DatabasePermit<'_>, BreakerOpen> {
        let held = !self.quiet.load(Ordering::Relaxed);
        if held {
            self.update(|b, now| (b.advance(now), b.try_acquire(now)))?;
        }
        Ok(DatabasePermit {
            breaker: self,
            held,
            finished: false,
        })
    }

    /// Its snapshot, every write counted.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.snapshot_of(&self.lock())
    }

    /// Open it until [`reset`](Self::reset), whatever the writes do: writes
    /// fail fast, durable writes are queued (e.g. while a restore runs).
    pub fn force_open(&self, reason: &str) {
        self.update(|b, now| (b.force_open(now, reason), ()));
    }

    /// Close it and forget its failures.
    pub fn reset(&self) {
        self.update(|b, now| (b.reset(now), ()));
    }

    /// Resolves when the breaker has opened by itself (failures, not
    /// [`force_open`](Self::force_open)) since the last call, or is open
    /// so now.
    pub async fn opened(&self) {
        let notified = self.opened.notified();
        if self.needs_probe() {
            return;
        }
        notified.await;
    }

    /// Whether recovery probes are due: open by itself (not forced).
    pub fn needs_probe(&self) -> bool {
        let breaker = self.lock();
        breaker.state() == BreakerState::Open && !breaker.is_forced_open()
    }

    /// A recovery probe (a real write) passed while it is open: half-open
    /// now, ahead of the open period's end. Nothing when forced open.
    pub fn probe_passed(&self) {
        self.update(|b, now| (b.probe_passed(now), ()));
    }

    /// `open_for` of its configuration: the longest pause between probes.
    pub fn open_for(&self) -> Duration {
        self.lock().config().open_for
    }

    /// Whether queued writes may be replayed now: not while it is open,
    /// but once its open period is over (the next write moves it to
    /// half-open).
    pub fn lets_replays_through(&self) -> bool {
        let breaker = self.lock();
        breaker.state() != BreakerState::Open
            || breaker
                .snapshot()
                .open_until_ms
                .is_some_and(|t| t <= now_ms())
    }

    /// Resolves once every transition so far is in the journal: `true`, or
    /// `false` when one could not be written.
    pub fn flush(&self) -> impl Future<Output = bool> + Send + 'static {
        self.announcer.flush()
    }

    /// Take a new configuration (a reload), keeping the breaker's state.
    pub fn reconfigure(&self, config: BreakerConfig) {
        self.slow_call_ns
            .store(nanos(config.slow_call), Ordering::Relaxed);
        self.update(|b, _| {
            b.set_config(config);
            (None, ())
        });
    }

    /// Record a write's outcome.
    fn record(&self, success: bool, duration: Duration) {
        self.update(|b, now| (b.record(now, success, duration), ()));
    }

    /// Change the breaker under its lock with `change`, which returns the
    /// transition it caused and a value; refresh the quiet flag and
    /// announce the transition, both under the lock too (so the flag never
    /// contradicts the breaker, and the journal gets the transitions in
    /// the order they happened).
    fn update<T>(&self, change: impl FnOnce(&mut Breaker, i64) -> (Option<Transition>, T)) -> T {
        let mut breaker = self.lock();
        let (transition, value) = change(&mut breaker, now_ms());
        self.quiet.store(breaker.is_quiet(), Ordering::Relaxed);
        if let Some(t) = transition {
            if t.to == BreakerState::Open && !breaker.is_forced_open() {
                self.opened.notify_one();
            }
            let snapshot = self.snapshot_of(&breaker);
            self.announcer.announce(DATABASE_BREAKER, &snapshot, &t);
        }
        value
    }

    fn snapshot_of(&self, breaker: &Breaker) -> BreakerSnapshot {
        let mut snapshot = breaker.snapshot();
        snapshot.calls += self.quiet_calls.load(Ordering::Relaxed);
        snapshot
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // The breaker holds no invariant a panic elsewhere could break.
        self.breaker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A write let through by the database breaker: [`finish`](Self::finish)
/// it with its outcome; dropped unfinished (the caller gave up), its
/// half-open trial permit is given back.
#[derive(Debug)]
#[must_use = "finish the permit with the write's outcome"]
pub struct DatabasePermit<'a> {
    breaker: &'a DatabaseBreaker,
    /// Taken under the lock; false when the breaker was quiet.
    held: bool,
    finished: bool,
}

impl DatabasePermit<'_> {
    /// Record the write's outcome. A fast success while the breaker was
    /// quiet changes nothing in it: only its count goes up, without the
    /// lock.
    #[inline]
    pub fn finish(mut self, success: bool, duration: Duration) {
        self.finished = true;
        let breaker = self.breaker;
        let slow = nanos(duration) >= breaker.slow_call_ns.load(Ordering::Relaxed);
        if self.held || !success || slow {
            breaker.record(success, duration);
        } else {
            breaker.quiet_calls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for DatabasePermit<'_> {
    fn drop(&mut self) {
        if self.held && !self.finished {
            self.breaker.update(|b, _| {
                b.release();
                (None, ())
            });
        }
    }
}

/// `d` in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::open_read_only;
    use crate::journal::breakers::load;
    use crate::slot::Slot;

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 2,
            window: 4,
            min_calls: 4,
            slow_call: Duration::from_millis(100),
            open_for: Duration::from_secs(60),
            ..BreakerConfig::default()
        }
    }

    fn write(breaker: &DatabaseBreaker, success: bool, ms: u64) -> Result<(), BreakerOpen> {
        breaker
            .acquire()?
            .finish(success, Duration::from_millis(ms));
        Ok(())
    }

    #[tokio::test]
    async fn database_breaker_goes_quiet_and_still_counts_every_write() {
        let breaker = DatabaseBreaker::new(config(), &[], watch::channel(Slot::Stopped).1);
        for _ in 0..4 {
            write(&breaker, true, 0).unwrap();
        }
        assert!(
            breaker.quiet.load(Ordering::Relaxed),
            "a full window of fast successes"
        );
        for _ in 0..10 {
            write(&breaker, true, 0).unwrap();
        }
        assert_eq!(breaker.quiet_calls.load(Ordering::Relaxed), 10);
        let snapshot = breaker.snapshot();
        assert_eq!((snapshot.calls, snapshot.failures), (14, 0));
        assert_eq!(snapshot.name.as_deref(), Some(DATABASE_BREAKER));
        // A slow write while quiet is recorded: the breaker is not quiet
        // any more.
        write(&breaker, true, 150).unwrap();
        assert!(!breaker.quiet.load(Ordering::Relaxed));
        assert_eq!(breaker.snapshot().calls, 15);
    }

    #[tokio::test]
    async fn database_breaker_opens_on_failures_while_quiet_and_journals_it() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _slot, journal, db) = crate::journal::test_writer(&dir).await;
        let breaker = DatabaseBreaker::new(config(), &[], journal);
        for _ in 0..4 {
            write(&breaker, true, 0).unwrap();
        }
        assert!(breaker.lets_replays_through());
        for _ in 0..2 {
            write(&breaker, false, 0).unwrap();
        }
        let opened = breaker.snapshot();
        let open = write(&breaker, true, 0).unwrap_err();
        assert_eq!(open.name, DATABASE_BREAKER);
        assert!(open.retry_after > Duration::from_secs(50), "{open:?}");
        assert!(!breaker.lets_replays_through(), "no replays while open");

        assert!(breaker.flush().await, "the transition is written");
        let reader = open_read_only(&db).unwrap();
        let reason: String = reader
            .query_row(
                "SELECT from_state || '>' || to_state || ': ' || reason FROM breaker_transitions WHERE breaker = 'database'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            reason.starts_with("closed>open: 2 consecutive failures"),
            "{reason}"
        );
        let states = load(&reader).unwrap();
        assert_eq!(states, vec![opened]);

        // A restart continues from the journaled state.
        let restored = DatabaseBreaker::new(config(), &states, watch::channel(Slot::Stopped).1);
        assert!(write(&restored, true, 0).is_err());
        writer.stop(None);
    }

    #[tokio::test]
    async fn database_breaker_forced_open_holds_until_reset() {
        let breaker = DatabaseBreaker::new(config(), &[], watch::channel(Slot::Stopped).1);
        for _ in 0..4 {
            write(&breaker, true, 0).unwrap();
        }
        breaker.force_open("restore in progress");
        assert!(
            write(&breaker, true, 0).is_err(),
            "a quiet breaker forced open rejects"
        );
        assert!(!breaker.lets_replays_through());
        assert_eq!(
            breaker.snapshot().open_until_ms,
            Some(super::super::FORCED_OPEN_UNTIL_MS)
        );
        breaker.reset();
        assert!(breaker.lets_replays_through());
        write(&breaker, true, 0).unwrap();
        assert_eq!(breaker.snapshot().state, BreakerState::Closed);
        // The journal is stopped: the transitions could not be written.
        assert!(!breaker.flush().await);
    }
}
