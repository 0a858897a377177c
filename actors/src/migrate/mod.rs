//! Application migrations: versioned SQL scripts applied to the
//! application database in order, each in its own transaction, with
//! `PRAGMA user_version` and a history table in the database itself.
//!
//! Nothing here owns a connection: every function takes one that is
//! between transactions. The runtime runs them on the writer's connection
//! (`WriterHandle::call`, after every write sent before, while writes sent
//! after wait); the CLI on a connection of its own to a file no program
//! has open. The `pre-migration` backup, taken before a run that has
//! something to do, is the caller's (it needs the backup machinery).
//!
//! # Layout
//!
//! - `source`: [`Migration`], [`Migrations`] (a directory of
//!   `NNNN_name.up.sql` / `.down.sql`, or a list), their checks and
//!   [`checksum`]s.
//! - `script`: a script split into statements (as `sqlite3_complete`
//!   does), so a failure names its statement.
//! - `history`: the `_resilite_migrations` table ([`HistoryEntry`]).
//! - `status`: where a database stands ([`MigrationStatus`],
//!   [`MigrationState`]), what blocks a run, the steps of a run.
//! - `apply`: [`run`] (apply, roll back, dry run) and its
//!   [`MigrationReport`].
//! - `schema`: destructive-change detection from the schema before and
//!   after ([`SchemaChange`]).
//! - `repair`: accepting changed applied migrations ([`repair`]).
//! - `baseline`: adopting a database whose schema already holds
//!   migrations, without running them ([`baseline`]).

mod apply;
mod baseline;
mod history;
mod repair;
mod schema;
mod script;
mod source;
mod status;

pub use apply::{plan, run, MigrateOptions, MigrationReport, OpLogBarrier, RunContext, StepReport};
pub use baseline::{baseline, baseline_plan, BaselineReport};
pub use history::{read as history, HistoryAction, HistoryEntry, HISTORY_TABLE};
pub use repair::{repair, repairs, Repair};
pub use schema::{Renamed, SchemaChange};
pub use source::{checksum, Migration, Migrations, DOWN_SUFFIX, UP_SUFFIX};
pub use status::{status, MigrationInfo, MigrationState, MigrationStatus, Step};

#[cfg(test)]
mod tests;
