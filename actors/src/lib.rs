//! The actors of resilite and the values they exchange.
//!
//! This crate is the inside of the `resilite` runtime: the single writer
//! with group commit, the read pool, the durable retry queue, the circuit
//! breakers, the health checks and the journal that records them. It is a
//! separate crate so that each actor is compiled and tested on its own; it
//! is not what an application depends on. Applications use the `resilite`
//! crate, which starts these actors under a supervisor and re-exports the
//! chosen types from `resilite::` (the types below are the same types, so
//! a value crosses the two crates as it is).
//!
//! ```no_run
//! use resilite_actors::{DbOptions, Operation, Statement, Value, WriterActor, WriterConfig, WriterMsg};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // One writer on one file, alone: what the runtime supervises.
//! let config = WriterConfig::new(DbOptions::new("./data/app.db"));
//! let (writer, _thread) = ractor::Actor::spawn(None, WriterActor, config).await?;
//! let op = Operation::Statement(Statement::new("INSERT INTO logs VALUES (?1)", [Value::from("hi")]));
//! let outcome = ractor::call!(writer, |reply| WriterMsg::Write { op, reply })??;
//! println!("{outcome:?}");
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Values, at the crate root (their modules are private):
//!
//! - `value`: operations as data ([`Statement`], [`Operation`], [`Value`])
//!   and their outcomes ([`WriteOutcome`], [`OperationOutcome`],
//!   [`QueryResult`]).
//! - `error`: error classification ([`Error`], [`ErrorClass`]): transient,
//!   constraint, SQL, corruption, permission, bad input, with user and
//!   technical messages.
//! - `gate`: the statement gate on every connection: what a caller's SQL
//!   may do (authorizer, limits, time bounds). Used by the writer and the
//!   readers only.
//!
//! The actors, a module each with its messages and configuration:
//!
//! - [`writer`]: [`WriterActor`], the single writer with group commit, its
//!   messages [`WriterMsg`] and the direct [`WriterHandle`].
//! - [`readers`]: [`ReadPool`], the read pool of read-only connections.
//! - [`retry_queue`]: the `RetryQueueActor`, the durable retry queue and
//!   dead-letter queue ([`Entry`], [`EnqueueOptions`], [`QueueStats`]).
//! - [`breaker`]: circuit breakers, named ones (the `CircuitBreakerActor`)
//!   and the database breaker, on one state machine, with persisted state
//!   ([`BreakerHandle`], [`BreakerSnapshot`]).
//! - [`archive`]: retention policies and archive runs: expired rows
//!   moved to verified archive files, catalogued, then deleted.
//! - [`backup`]: the `BackupActor`: online backups, verification,
//!   retention and the backup catalog ([`BackupConfig`]).
//! - [`health`]: the `HealthActor` and the inspection of a database file:
//!   [`HealthReport`], [`HealthStatus`], recommendations, events.
//! - [`schema`]: schema validation (not an actor): the expected schema
//!   ([`ExpectedSchema`]), findings ([`SchemaReport`]), data checks, fixes
//!   and dedupe, run by the runtime through the writer.
//! - [`audit`]: the operation audit's records ([`AuditRecord`],
//!   [`AuditLevel`], [`WriteContext`]), written by the writer.
//!
//! Not an actor: [`migrate`], the application's migrations ([`Migrations`],
//! [`MigrateOptions`], [`MigrationReport`], [`MigrationStatus`]), run on
//! a connection the caller holds (the writer's, or the CLI's).
//!
//! Internal modules. They are `pub` only because the `resilite` facade, a
//! separate crate, wires the actors together with them (the supervisor,
//! the runtime handle and the CLI); they are not re-exported from
//! `resilite::` and are not meant for applications:
//!
//! - [`slot`]: where a supervised actor stands, as handles see it
//!   ([`ActorStatus`], [`SlotState`] are the parts applications see).
//! - [`connection`]: opening the read-write and read-only connections
//!   ([`DbOptions`], [`Synchronous`] are re-exported).
//! - [`maintenance`]: checkpoint, VACUUM and optimize, measured
//!   ([`Maintenance`], [`MaintenanceRun`] are re-exported).
//! - [`journal`]: the runtime's own database and all of its SQL (restart
//!   log, retry queue and dead-letter queue, breakers, health history,
//!   events, error log, slow-query log); the restart log's
//!   [`RestartRecord`] is re-exported.
//! - [`events`]: events with explanations ([`Event`], [`EventKind`],
//!   [`Severity`] are re-exported) and the [`Events`](events::Events)
//!   sender that records them.
//! - [`error_log`]: the deduplicated error log's in-memory counts and
//!   their writer ([`ErrorLog`](error_log::ErrorLog)).
//! - [`slow_log`]: the slow-query log's task, plans and index suggestions
//!   ([`SlowLog`](slow_log::SlowLog)).
//! - `normalise` (private): literals out of SQL and messages, and their hash.
//!
//! Every type an application meets through `resilite::Runtime` is
//! re-exported at this crate's root, so the facade takes all of them from
//! here.
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::await_holding_lock)]

mod error;
mod gate;
mod normalise;
mod value;

pub mod archive;
pub mod audit;
pub mod backup;
pub mod breaker;
pub mod health;
pub mod migrate;
pub mod readers;
pub mod retry_queue;
pub mod schema;
pub mod writer;

pub mod connection;
pub mod error_log;
pub mod events;
pub mod journal;
pub mod maintenance;
pub mod slot;
pub mod slow_log;

pub use audit::{
    AuditLevel, AuditPage, AuditQuery, AuditRecord, AuditStatus, OpKind, WriteContext,
};
pub use backup::{BackupConfig, BackupInfo, Compress, Verification};
pub use breaker::{
    BreakerConfig, BreakerError, BreakerHandle, BreakerOpen, BreakerSnapshot, BreakerState,
};
pub use connection::{DbOptions, Synchronous};
pub use error::{Error, ErrorClass, Result};
pub use events::{Event, EventKind, Severity};
pub use health::{
    Action, Figures, HealthConfig, HealthEvent, HealthReport, HealthStatus, Integrity,
    Recommendation,
};
pub use journal::errors::ErrorRecord;
pub use journal::events::{EventPage, EventQuery, EventRecord};
pub use journal::recoveries::RecoveryRecord;
pub use journal::resources::ResourceSample;
pub use journal::slow_queries::{SlowKind, SlowQueryRecord};
pub use journal::{RestartOutcome, RestartRecord};
pub use maintenance::{CheckpointMode, CheckpointOutcome, Maintenance, MaintenanceRun};
pub use migrate::{
    BaselineReport, HistoryAction, HistoryEntry, MigrateOptions, Migration, MigrationInfo,
    MigrationReport, MigrationState, MigrationStatus, Migrations, Renamed, SchemaChange,
    StepReport,
};
pub use readers::{ReadPool, ReadPoolConfig};
pub use retry_queue::{
    EnqueueOptions, Entry, EntryStatus, Handler, HandlerFuture, QueueStats, Resolution, RetryConfig,
};
pub use schema::{
    ExpectedSchema, Finding, FindingSeverity, FixOptions, FixReport, FixStep, Keep, Problem,
    SchemaReport, ValidateOptions,
};
pub use slot::{ActorStatus, SlotState};
pub use value::{Operation, OperationOutcome, QueryResult, Statement, Value, WriteOutcome};
pub use writer::{
    ConnectionJob, RetryPolicy, WriterActor, WriterConfig, WriterHandle, WriterMsg, WriterStats,
};
