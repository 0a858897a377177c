//! Health: checks of the database, the runtime's actors and the writer,
//! turned into an overall status with the rule that derived it and
//! recommendations with the thresholds that triggered them.
//!
//! # Layout
//!
//! - `config`: `[health]`, the schedules, thresholds and automatic
//!   maintenance, with their defaults.
//! - `report`: what a check reports: [`HealthStatus`], [`Integrity`],
//!   [`Figures`], [`Recommendation`] and its [`Action`], [`HealthReport`],
//!   and the [`HealthEvent`]s others may act on.
//! - `rules`: the rules that judge a report (database, write probe,
//!   actors, retry queue, breakers).
//! - `inspect`: the checks of a database file (integrity, sizes, pages,
//!   free disk, read probe). They only read, through their own read-only
//!   connection, so they run beside a live writer or on a file no process
//!   has open (`resilite health`).
//! - `actor`: the [`HealthActor`], which runs the checks on their schedules,
//!   adds the write probe and actor states, records every result in the
//!   journal (its SQL is in [`crate::journal::health`]) and runs
//!   maintenance through the writer; every `resource_interval` it also
//!   takes a resource sample.
//! - `resources`: the resource sample (memory, CPU, descriptors, file
//!   sizes, free disk, queue depth, write rate) and its gauges.
//! - `process`: the process's own figures, read from `/proc/self`.

mod actor;
mod config;
mod inspect;
mod process;
mod report;
mod resources;
mod rules;

pub use actor::{HealthActor, HealthArgs, HealthMsg};
pub use config::HealthConfig;
pub use inspect::inspect;
pub use report::{
    Action, BackupFigures, Figures, HealthEvent, HealthReport, HealthStatus, Integrity,
    Recommendation,
};
