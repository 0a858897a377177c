//! The actors of resilite and the values they exchange.
//!
//! # Layout
//!
//! - [`value`]: operations as data (`Statement`, `Operation`, `Value`) and
//!   their outcomes.
//! - [`error`]: error classification (transient, constraint, SQL,
//!   corruption, permission, bad input) with user and technical messages.
//! - [`gate`]: the statement gate on every connection: what a caller's
//!   SQL may do (authorizer, limits, time bounds).
//! - [`connection`]: opening the read-write and read-only connections.
//! - [`writer`]: `WriterActor`, the single writer with group commit.
//! - [`readers`]: the read pool of read-only connections.
//! - [`retry_queue`]: the durable retry queue and dead-letter queue.
//! - [`breaker`]: circuit breakers, named ones (an actor) and the
//!   database breaker, on one state machine, with persisted state.
//! - [`slot`]: where a supervised actor stands, as handles see it.
//! - [`maintenance`]: checkpoint, VACUUM and optimize, measured.
//! - [`health`]: inspection of a database file: status, figures,
//!   recommendations.
//! - [`journal`]: the runtime's own database and all of its SQL (restart
//!   log, retry queue and dead-letter queue, and later breakers and history).
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::await_holding_lock)]

pub mod breaker;
pub mod connection;
pub mod error;
pub mod gate;
pub mod health;
pub mod journal;
pub mod maintenance;
pub mod readers;
pub mod retry_queue;
pub mod slot;
pub mod value;
pub mod writer;

pub use connection::{DbOptions, Synchronous};
pub use error::{Error, ErrorClass, Result};
pub use maintenance::{CheckpointMode, CheckpointOutcome, Maintenance, MaintenanceRun};
pub use readers::{ReadPool, ReadPoolConfig};
pub use slot::{RunningWriter, Slot, SlotState, WriterSlot};
pub use value::{Operation, OperationOutcome, QueryResult, Statement, Value, WriteOutcome};
pub use writer::{RetryPolicy, WriterActor, WriterConfig, WriterHandle, WriterMsg, WriterStats};
