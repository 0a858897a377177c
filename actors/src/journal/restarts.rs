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

/// The statement deleting restarts recorded before `cutoff_ms` (`at` is
/// an ISO-8601 UTC text, which sorts as time does).
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        format!("DELETE FROM actor_restarts WHERE at < {}", super::AT_TEXT),
        [Value::Integer(cutoff_ms)],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_deletes_restarts_before_the_cutoff_only() {
        let conn = crate::journal::in_memory();
        for (at, actor) in [
            ("2026-01-01T00:00:00.000Z", "old"),
            ("2026-06-01T00:00:00.000Z", "new"),
        ] {
            conn.execute(
                "INSERT INTO actor_restarts (at, actor, reason, restarts_in_window, outcome) VALUES (?1, ?2, 'test', 1, 'restarted')",
                [at, actor],
            )
            .unwrap();
        }
        // 2026-03-01T00:00:00Z in milliseconds.
        let p = prune_statement(1_772_323_200_000);
        conn.execute(&p.sql, rusqlite::params_from_iter(&p.params))
            .unwrap();
        let left: Vec<String> = restarts(&conn)
            .unwrap()
            .into_iter()
            .map(|r| r.actor)
            .collect();
        assert_eq!(left, ["new"]);
    }
}
