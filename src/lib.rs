//! resilite: a supervised, actor-based resilience runtime for SQLite.
//!
//! # Layout
//!
//! - [`config`]: `Config`, parsed from TOML with environment overrides and
//!   validated in one place.
//! - `runtime`: [`Runtime`], the cloneable handle an application holds.
//! - `startup`: the checks of `Runtime::start` before any actor runs.
//! - `supervisor`: the root supervisor (restart policy, escalation).
//! - [`http`]: the HTTP API of `resilite run`.
//! - [`metrics`]: the Prometheus exporter behind `/metrics`.
//! - [`cli`]: the command line, one module per verb.
//!
//! The actors themselves live in the `resilite-actors` crate, re-exported as
//! [`actors`].
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
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::await_holding_lock)]

pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
mod runtime;
mod startup;
mod supervisor;

pub use config::{Config, ConfigError};
pub use resilite_actors as actors;
pub use resilite_actors::{
    Error, ErrorClass, Operation, QueryResult, Result, Statement, Value, WriteOutcome,
};
pub use runtime::{Durable, NotReady, Runtime, Status};
