//! RetryQueueActor: the durable retry queue and its dead-letter queue, in
//! the journal.
//!
//! An operation that could not be applied (a transient failure after the
//! writer's in-place retries, or the database unavailable) is stored in the
//! journal's `retry_queue` table before its caller is told `Queued`. The
//! actor replays due entries in priority, then `next_retry_at` order, with
//! exponential backoff and jitter between attempts. Entries sharing an
//! ordering key are replayed one at a time, oldest first. A permanent error
//! (constraint, SQL, bad input) or the last allowed attempt moves an entry to
//! the dead-letter queue (status `dead`) with its error history, for an
//! operator to requeue or discard.
//!
//! Replays of SQL go through the writer as [`Operation::Once`] keyed by the
//! entry id, so an entry replayed again after a crash (between its commit
//! and the journal update) is not applied twice. A batch's SQL is one
//! `write_many` message: one commit, an outcome for each entry. Application
//! payloads are handed to the handler registered for their kind; handlers
//! must be idempotent (delivery is at least once).
//!
//! Entries being replayed are `retrying` in the counts and in an entry the
//! actor shows, but their rows stay `queued`: writing the mark would rewrite
//! every row once more, and a crash sends them back to the queue anyway.
//! The actor alone knows which entries are in flight; others ask it
//! ([`ask_stats`], [`ask_entry`]).
//!
//! The queue lives on disk: the actor reads at most `replay_batch` due
//! entries at a time, so memory stays flat however long the queue is. Its
//! SQL is in [`journal::queue`](crate::journal::queue).
//!
//! # Layout
//!
//! - `config`: [`RetryConfig`] and [`EnqueueOptions`], their validation,
//!   and the statement that queues an entry.
//! - `entry`: [`Entry`], [`QueueStats`], [`EntryStatus`], [`Resolution`].
//! - `in_flight`: the entries being replayed, held by the actor.
//! - `actor`: [`RetryQueueActor`], [`RetryMsg`], [`RetryArgs`], its state,
//!   the drain and its timers.
//! - `replay`: replaying a batch and the record of its outcomes.
//! - `ask`: asking the actor by message, with a time bound.
//!
//! [`Operation::Once`]: crate::value::Operation::Once

mod actor;
mod ask;
mod config;
mod entry;
mod in_flight;
mod replay;

pub use actor::{RetryArgs, RetryMsg, RetryQueueActor, RetryState, SqlGate, Token};
pub use ask::{ask_entry, ask_stats, DEFAULT_ASK_TIMEOUT};
pub use config::{enqueue_statement, EnqueueOptions, RetryConfig};
pub use entry::{Due, Entry, EntryStatus, QueueStats, Resolution};
pub(crate) use replay::QUEUE_KEY_PREFIX;
pub use replay::{Handler, HandlerFuture, Handlers, DURABLE_KEY_PREFIX};

/// The kind of queued SQL operations; other kinds are application payloads.
pub const SQL_KIND: &str = "sql";
