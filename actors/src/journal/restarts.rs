//! The supervisor's restart log: table `actor_restarts`.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::value::{Statement, Value};

/// What the supervisor did about a failed actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartOutcome {
    /// A new instance was started.
    Restarted,
    /// The restart limit was reached; the failure was escalated.
    Escalated,
}

impl RestartOutcome {
    fn as_str(self) -> &'static str {
        match self {
            RestartOutcome::Restarted => "restarted",
            RestartOutcome::Escalated => "escalated",
        }
    }
}

/// One row of the restart log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// When (UTC, RFC 3339).
    pub at: String,
    /// Which actor failed.
    pub actor: String,
    /// Why it failed.
    pub reason: String,
    /// Failures within the restart window, this one included.
    pub restarts_in_window: u32,
    /// What the supervisor did.
    pub outcome: RestartOutcome,
}

/// The statement that records a restart (sent to the journal writer).
pub fn record_restart(
    actor: &str,
    reason: &str,
    restarts_in_window: u32,
    outcome: RestartOutcome,
) -> Statement {
    Statement::new(
        "INSERT INTO actor_restarts (actor, reason, restarts_in_window, outcome) VALUES (?1, ?2, ?3, ?4)",
        [
            Value::from(actor),
            Value::from(reason),
            Value::Integer(restarts_in_window.into()),
            Value::from(outcome.as_str()),
        ],
    )
}

/// The restart log, oldest first.
pub fn restarts(conn: &Connection) -> Result<Vec<RestartRecord>> {
    let mut stmt = conn.prepare(
        "SELECT at, actor, reason, restarts_in_window, outcome FROM actor_restarts ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RestartRecord {
            at: r.get(0)?,
            actor: r.get(1)?,
            reason: r.get(2)?,
            restarts_in_window: r.get(3)?,
            outcome: if r.get::<_, String>(4)? == "escalated" {
                RestartOutcome::Escalated
            } else {
                RestartOutcome::Restarted
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
