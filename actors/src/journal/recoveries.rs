//! The recovery log: table `recoveries`, one row per recovery attempt
//! (automatic or requested), with the steps taken (a JSON list of
//! sentences), the outcome and an explanation in plain words: what was
//! found, what was done, what to do now.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::value::{Operation, Statement, Value};

/// One recovery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// What started it: `manual` (the runtime handle), `http`, `cli`, or
    /// `automatic: <the damage found>`.
    pub trigger: String,
    /// The steps taken, in order, one sentence each.
    pub steps: Vec<String>,
    /// `recovered`, `no-backup` or `failed`.
    pub outcome: String,
    /// How long it took.
    pub duration_ms: i64,
    /// What was found, what was done, what to do now.
    pub explanation: String,
}

/// The statement recording `r`, for the journal writer.
pub fn insert_statement(r: &RecoveryRecord) -> Operation {
    let steps = serde_json::to_string(&r.steps).unwrap_or_else(|_| "[]".into());
    Operation::Statement(Statement::new(
        "INSERT INTO recoveries (started_at_ms, trigger, steps, outcome, duration_ms, explanation) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [
            Value::Integer(r.started_at_ms),
            Value::Text(r.trigger.clone()),
            Value::Text(steps),
            Value::Text(r.outcome.clone()),
            Value::Integer(r.duration_ms),
            Value::Text(r.explanation.clone()),
        ],
    ))
}

/// Record `r` on a journal connection of one's own (the CLI).
pub fn insert(conn: &Connection, r: &RecoveryRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO recoveries (started_at_ms, trigger, steps, outcome, duration_ms, explanation) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        rusqlite::params![
            r.started_at_ms,
            r.trigger,
            serde_json::to_string(&r.steps).unwrap_or_else(|_| "[]".into()),
            r.outcome,
            r.duration_ms,
            r.explanation
        ],
    )?;
    Ok(())
}

/// The statement deleting the attempts started before `cutoff_ms`.
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM recoveries WHERE started_at_ms < ?1",
        [Value::Integer(cutoff_ms)],
    )
}

/// Every recorded attempt, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<RecoveryRecord>> {
    let mut stmt = conn.prepare(
        "SELECT started_at_ms, trigger, steps, outcome, duration_ms, explanation FROM recoveries ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let steps: String = r.get(2)?;
        Ok(RecoveryRecord {
            started_at_ms: r.get(0)?,
            trigger: r.get(1)?,
            steps: serde_json::from_str(&steps).unwrap_or_default(),
            outcome: r.get(3)?,
            duration_ms: r.get(4)?,
            explanation: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::in_memory;

    #[test]
    fn recoveries_are_recorded_and_listed() {
        let conn = in_memory();
        let r = RecoveryRecord {
            started_at_ms: 1,
            trigger: "manual".into(),
            steps: vec!["paused writes".into(), "restored".into()],
            outcome: "recovered".into(),
            duration_ms: 5,
            explanation: "fine".into(),
        };
        insert(&conn, &r).unwrap();
        assert_eq!(list(&conn).unwrap(), [r]);
    }
}
