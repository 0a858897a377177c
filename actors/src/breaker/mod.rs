//! Circuit breakers: stop calling a dependency that keeps failing or slowing
//! down, give it time to recover, then let a few trial calls through before
//! trusting it again.
//!
//! # Which breaker is which
//!
//! - **Named application breakers** (`rt.breaker("smtp")`, configured in
//!   `[breakers.<name>]`) keep resilience4j's time-based semantics: once
//!   open, a breaker stays open for `open_for` (longer for each trip in a
//!   row), then goes half-open and lets trial calls decide. They live in
//!   the [`CircuitBreakerActor`], which answers for them by message; a
//!   [`BreakerHandle`] wraps calls with one of them.
//! - **The database breaker** ([`DatabaseBreaker`], named
//!   [`DATABASE_BREAKER`]) guards the writer. It is built on the same state
//!   machine with the same semantics, and its transitions are logged,
//!   measured and journaled by the same code; but every write asks it, so
//!   it is a lock the runtime holds, not an actor, with a lock-free path
//!   while it is quiet.
//!
//! # Layout
//!
//! - `config`: [`BreakerConfig`], `[breakers.<name>]`, and its validation.
//! - `machine`: [`Breaker`], the state machine. It holds no clock (every
//!   method takes the time), so it is tested against a model without
//!   sleeping; and the values it reports ([`BreakerState`], [`Transition`],
//!   [`BreakerSnapshot`], [`BreakerOpen`]).
//! - `announce`: what a transition sets off (log, metrics, journal),
//!   shared by both kinds of breaker.
//! - `actor`: the [`CircuitBreakerActor`] and its messages.
//! - `handle`: [`BreakerHandle`], one named breaker to wrap calls with.
//! - `database`: the [`DatabaseBreaker`].
//!
//! Their rows in the journal are written and read by
//! [`journal::breakers`](crate::journal::breakers).
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

mod actor;
mod announce;
mod config;
mod database;
mod handle;
mod machine;

pub use actor::{snapshots, BreakerActorState, BreakerArgs, BreakerMsg, CircuitBreakerActor};
pub use config::BreakerConfig;
pub use database::{DatabaseBreaker, DatabasePermit, DATABASE_BREAKER};
pub use handle::BreakerHandle;
pub use machine::{
    Breaker, BreakerError, BreakerOpen, BreakerSnapshot, BreakerState, Transition,
    FORCED_OPEN_UNTIL_MS,
};
