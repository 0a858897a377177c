//! resilite: a supervised, actor-based resilience runtime for SQLite.
//!
//! An application starts a [`Runtime`] on its database file and sends it
//! statements. Every write goes through one supervised writer with group
//! commit and is answered only after COMMIT; reads go to a pool of
//! read-only WAL connections. Transient failures are retried in place; a
//! write made [durable](Runtime::execute_durable) that cannot be applied
//! now is kept in a retry queue and, failing for good, in a dead-letter
//! queue. Circuit breakers, continuous health checks and maintenance, and
//! the journal that records all of it come with it.
//!
//! ```no_run
//! use resilite::{Config, Runtime, Statement, Value};
//! # async fn demo() -> resilite::Result<()> {
//! let rt = Runtime::start(Config::for_database("./data/app.db")).await?;
//! rt.execute(Statement::sql("CREATE TABLE IF NOT EXISTS logs(msg TEXT)")).await?;
//! rt.execute(Statement::new("INSERT INTO logs VALUES (?1)", [Value::from("hello")])).await?;
//! let rows = rt.query(Statement::sql("SELECT msg FROM logs")).await?;
//! assert_eq!(rows.columns, ["msg"]);
//! rt.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Everything an application uses is imported from `resilite::` (the types
//! listed below); the runtime's plumbing is private. The same runtime also
//! runs as a standalone process with an HTTP API (`resilite run`, see
//! [`http`]) and operates on database files from the command line
//! ([`cli`]).
//!
//! # Layout
//!
//! The public API, re-exported at the crate root:
//!
//! - The handle: [`Runtime`] (cloneable; `execute`, `batch`, `write`,
//!   `query`, `shutdown`, ...), its [`Status`] and readiness ([`NotReady`]).
//! - Configuration: [`Config`] and [`ConfigError`]; the sections and their
//!   defaults are in [`config`].
//! - Operations as data: [`Statement`], [`Operation`], [`Value`], and what
//!   comes back: [`WriteOutcome`], [`OperationOutcome`], [`QueryResult`].
//! - Errors: [`Error`], its [`ErrorClass`] (what to do with it), [`Result`].
//! - Durable writes and the dead-letter queue: [`Durable`],
//!   [`EnqueueOptions`], [`Entry`], [`EntryStatus`], [`Resolution`],
//!   [`QueueStats`]; application payload handlers: [`Handler`],
//!   [`HandlerFuture`].
//! - Circuit breakers: [`BreakerHandle`], [`BreakerConfig`],
//!   [`BreakerError`], [`BreakerOpen`], [`BreakerState`],
//!   [`BreakerSnapshot`].
//! - Health and maintenance: [`HealthReport`], [`HealthStatus`],
//!   [`HealthEvent`], [`Integrity`], [`Figures`], [`Recommendation`],
//!   [`Action`]; [`Maintenance`], [`CheckpointMode`], [`MaintenanceRun`],
//!   [`CheckpointOutcome`].
//! - Backups: [`BackupInfo`], [`Verification`] (`rt.backup`,
//!   `rt.backups`, `rt.verify_backup`); [`Compress`], how `[backup]
//!   compress` stores them.
//! - Schema validation: [`ExpectedSchema`] (from a TOML file, or
//!   derived from a database) with [`TableSpec`], [`ColumnSpec`],
//!   [`IndexSpec`]; `rt.validate` with [`ValidateOptions`] answers a
//!   [`SchemaReport`] of [`Finding`]s ([`FindingSeverity`], [`Problem`]);
//!   `rt.fix` with [`FixOptions`] ([`Keep`] for dedupe) answers a
//!   [`FixReport`] ([`FixStep`], [`StepStatus`], [`Removal`]);
//!   `rt.restore_removed` answers [`Restored`]; the journal's findings are
//!   [`StoredFinding`]s, its removed rows [`RemovedRow`]s.
//! - The audit trail: [`Event`], [`EventKind`], [`Severity`],
//!   [`EventRecord`], [`EventQuery`], [`EventPage`] (`rt.events`);
//!   [`ErrorRecord`] (`rt.errors`, `rt.resolve_error`); [`SlowQueryRecord`],
//!   [`SlowKind`] (`rt.slow_queries`); `rt.flush_logs`.
//! - Migrations: [`Migrations`] of [`Migration`]s (a directory or a list),
//!   run by `rt.migrate` with [`MigrateOptions`] into a
//!   [`MigrationReport`] ([`StepReport`], [`SchemaChange`], [`Renamed`]);
//!   `rt.migration_status` answers a [`MigrationStatus`] ([`MigrationInfo`],
//!   [`MigrationState`], the history's [`HistoryEntry`] and
//!   [`HistoryAction`]).
//! - Supervision: [`ActorStatus`], [`SlotState`], [`RestartRecord`],
//!   [`RestartOutcome`], [`WriterStats`]; [`Synchronous`], the durability
//!   level of `[database] synchronous`; [`journal_version`].
//!
//! Public modules:
//!
//! - [`config`]: `Config` and its sections, parsed from TOML with
//!   environment overrides and validated in one place.
//! - [`testing`]: the WriterActor's message API, for tests that drive it
//!   by message or spawn it alone.
//! - [`http`]: the HTTP API of `resilite run`, as an axum router.
//! - [`metrics`]: the Prometheus exporter behind `/metrics`.
//! - [`cli`]: the command line, one module per verb (the binary's `main`).
//!
//! Private modules: `runtime` (the handle's methods, a file per concern),
//! `startup` (the checks of [`Runtime::start`] before any actor runs) and
//! `supervisor` (the root supervisor: restart policy, escalation).
//!
//! The actors themselves live in the `resilite-actors` crate. It is not
//! re-exported as a whole: its modules also hold the plumbing the runtime
//! wires the actors with (slots, connections, the journal's SQL), which is
//! not API. The types above are its types, re-exported one by one.
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::await_holding_lock)]

pub mod cli;
pub mod config;
pub mod http;
mod log_filter;
pub mod metrics;
mod runtime;
mod startup;
mod supervisor;

pub use config::{ArchiveSection, Config, ConfigChange, ConfigError, RetentionPolicy, TimeFormat};
pub use resilite_actors::archive::{
    ArchiveCheck, ArchiveRecord, ArchiveStatus, RestoreCounts as ArchiveRestoreCounts,
    RunReport as ArchiveRunReport, TableReport as ArchiveTableReport,
};
pub use resilite_actors::journal::findings::StoredFinding;
pub use resilite_actors::schema::{
    ColumnSpec, IndexSpec, Keep, Removal, RemovedRow, Restored, StepStatus, TableSpec,
};
pub use resilite_actors::{
    Action, ActorStatus, AuditLevel, AuditPage, AuditQuery, AuditRecord, AuditStatus, BackupInfo,
    BaselineReport, BreakerConfig, BreakerError, BreakerHandle, BreakerOpen, BreakerSnapshot,
    BreakerState, CheckpointMode, CheckpointOutcome, Compress, EnqueueOptions, Entry, EntryStatus,
    Error, ErrorClass, ErrorRecord, Event, EventKind, EventPage, EventQuery, EventRecord, Figures,
    Handler, HandlerFuture, HealthEvent, HealthReport, HealthStatus, HistoryAction, HistoryEntry,
    Integrity, Maintenance, MaintenanceRun, MigrateOptions, Migration, MigrationInfo,
    MigrationReport, MigrationState, MigrationStatus, Migrations, OpKind, Operation,
    OperationOutcome, QueryResult, QueueStats, Recommendation, RecoveryRecord, Renamed, Resolution,
    ResourceSample, RestartOutcome, RestartRecord, Result, SchemaChange, Severity, SlotState,
    SlowKind, SlowQueryRecord, Statement, StepReport, Synchronous, Value, Verification,
    WriteContext, WriteOutcome, WriterStats,
};
pub use resilite_actors::{
    ExpectedSchema, Finding, FindingSeverity, FixOptions, FixReport, FixStep, Problem,
    SchemaReport, ValidateOptions,
};
pub use runtime::{
    Durable, NotReady, RecoveryOutcome, ReloadReport, RestoreOutcome, Runtime, Status,
};

/// The version of the journal's schema this build of resilite writes. A
/// journal at a newer version is refused at start (the error names both).
pub fn journal_version() -> usize {
    resilite_actors::journal::current_version()
}

/// The message API of the WriterActor, for tests that drive it directly
/// (fault injection, a writer spawned alone).
///
/// [`Runtime::writer`] returns the supervised writer's
/// `ractor::ActorRef<WriterMsg>`; [`WriterMsg::Handle`](testing::WriterMsg::Handle)
/// answers a [`WriterHandle`](testing::WriterHandle) that sends writes straight to the connection thread.
/// A writer can also run alone, without a runtime:
///
/// ```no_run
/// use resilite::testing::{DbOptions, WriterActor, WriterConfig, WriterMsg};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = WriterConfig::new(DbOptions::new("./data/app.db"));
/// let (writer, _thread) = ractor::Actor::spawn(None, WriterActor, config).await?;
/// let stats = ractor::call!(writer, WriterMsg::Stats)?;
/// println!("{} operations committed", stats.committed);
/// # Ok(()) }
/// ```
///
/// These live in their own module, not at the crate root, because an
/// application holding a [`Runtime`] never needs them: they are the third
/// way of using resilite (by message, in tests), and keeping them apart
/// keeps the root to what the handle takes and answers.
pub mod testing {
    pub use resilite_actors::writer::Answered;
    pub use resilite_actors::{
        DbOptions, RetryPolicy, WriterActor, WriterConfig, WriterHandle, WriterMsg,
    };
}
