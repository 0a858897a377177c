//! Why the runtime is not ready to take writes: the reason
//! [`Runtime::ready`](super::Runtime::ready) gives, and `GET /ready` shows
//! as `{"ready": false, "reason": "..."}`.

use std::fmt;

use serde::{Serialize, Serializer};

/// What keeps the runtime from taking writes. Displayed (and serialized) as
/// the sentence an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReady {
    /// `shutdown` was called.
    ShuttingDown,
    /// The `database` circuit breaker is open: writes fail fast.
    DatabaseBreakerOpen {
        /// How often it has tripped.
        trips: u64,
    },
    /// The last write probe could not write the file (read-only,
    /// immutable); the rule of that health check.
    Unwritable(String),
    /// The database has not been validated against `[schema] file` yet
    /// (`schema.on_start`): why.
    SchemaNotValidated(String),
    /// A writer is being restarted.
    Restarting,
    /// An actor failed past its restart limit: why.
    Failed(String),
    /// The runtime is shut down.
    Stopped,
    /// `Runtime::start` is applying the migrations of this directory
    /// (`schema.migrations_dir`).
    Migrating(String),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::ShuttingDown => f.write_str("resilite is shutting down"),
            NotReady::DatabaseBreakerOpen { trips } => write!(
                f,
                "the database circuit breaker is open ({trips} trip(s)): writes fail fast until it closes"
            ),
            NotReady::Unwritable(rule) => f.write_str(rule),
            NotReady::SchemaNotValidated(reason) => f.write_str(reason),
            NotReady::Restarting => f.write_str("a writer is restarting"),
            NotReady::Failed(reason) => f.write_str(reason),
            NotReady::Stopped => f.write_str("resilite is shut down"),
            NotReady::Migrating(dir) => write!(
                f,
                "applying the migrations in {dir} (schema.migrations_dir); writes wait until they are done"
            ),
        }
    }
}

impl std::error::Error for NotReady {}

impl Serialize for NotReady {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
