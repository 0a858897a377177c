//! The error log: table `error_log`, one row per error signature (class,
//! SQLite extended code and normalised message) with its count, first and
//! last sighting, one example and whether an operator marked it resolved.
//! Rows are upserted: a burst of one error is one row with a count, and a
//! resolved signature that recurs is open again.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::events::Severity;
use crate::value::{Statement, Value};

/// One error signature as counted in memory before it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The hash of class, code and normalised message.
    pub signature: String,
    /// The error class (`constraint`, `transient`, ...).
    pub class: String,
    /// SQLite's extended result code, when SQLite gave one.
    pub code: Option<i32>,
    /// The message with literals taken out.
    pub message: String,
    /// One message as it was seen (the latest).
    pub example: String,
    /// Where it was seen last: `execute`, `query`, `retry_queue`, `backup`, `health`...
    pub component: String,
    /// How much it needs a person.
    pub severity: Severity,
    /// How many times it was seen.
    pub count: u64,
    /// First seen (ms since the Unix epoch).
    pub first_seen_ms: i64,
    /// Last seen (ms since the Unix epoch).
    pub last_seen_ms: i64,
    /// Marked resolved by an operator (and not seen since).
    pub resolved: bool,
}

/// The statement adding `r` (its count and sightings) to its signature's
/// row, reopening it if it was resolved.
pub fn upsert_statement(r: &ErrorRecord) -> Statement {
    Statement::new(
        "INSERT INTO error_log (signature, class, code, message, example, component, severity, count, first_seen_ms, last_seen_ms, resolved) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0) \
         ON CONFLICT (signature) DO UPDATE SET count = count + excluded.count, \
         first_seen_ms = min(first_seen_ms, excluded.first_seen_ms), \
         last_seen_ms = max(last_seen_ms, excluded.last_seen_ms), \
         example = excluded.example, component = excluded.component, \
         severity = excluded.severity, resolved = 0",
        [
            Value::from(r.signature.as_str()),
            Value::from(r.class.as_str()),
            r.code.map_or(Value::Null, |c| Value::Integer(c.into())),
            Value::from(r.message.as_str()),
            Value::from(r.example.as_str()),
            Value::from(r.component.as_str()),
            Value::from(r.severity.as_str()),
            Value::from(r.count),
            Value::Integer(r.first_seen_ms),
            Value::Integer(r.last_seen_ms),
        ],
    )
}

/// The statement marking `signature` resolved.
pub fn resolve_statement(signature: &str) -> Statement {
    Statement::new(
        "UPDATE error_log SET resolved = 1 WHERE signature = ?1",
        [Value::from(signature)],
    )
}

/// The statement deleting signatures last seen before `cutoff_ms`, except
/// frequent ones (seen at least `keep_count` times).
pub fn prune_statement(cutoff_ms: i64, keep_count: u64) -> Statement {
    Statement::new(
        "DELETE FROM error_log WHERE last_seen_ms < ?1 AND count < ?2",
        [Value::Integer(cutoff_ms), Value::from(keep_count)],
    )
}

/// Every signature, most recently seen first. A journal from before the
/// error log has none.
pub fn list(conn: &Connection) -> Result<Vec<ErrorRecord>> {
    if !super::has_table(conn, "error_log")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT signature, class, code, message, example, component, severity, count, first_seen_ms, last_seen_ms, resolved \
         FROM error_log ORDER BY last_seen_ms DESC, signature",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ErrorRecord {
            signature: r.get(0)?,
            class: r.get(1)?,
            code: r.get(2)?,
            message: r.get(3)?,
            example: r.get(4)?,
            component: r.get(5)?,
            severity: Severity::parse(&r.get::<_, String>(6)?).unwrap_or(Severity::Warning),
            count: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
            first_seen_ms: r.get(8)?,
            last_seen_ms: r.get(9)?,
            resolved: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::in_memory;

    fn run(conn: &Connection, s: &Statement) -> usize {
        conn.execute(&s.sql, rusqlite::params_from_iter(&s.params))
            .unwrap()
    }

    /// Upserts add up; a resolved signature seen again is open again; the
    /// prune keeps frequent signatures.
    #[test]
    fn error_rows_add_up_reopen_and_prune() {
        let conn = in_memory();
        let mut r = ErrorRecord {
            signature: "s1".into(),
            class: "constraint".into(),
            code: Some(1555),
            message: "UNIQUE constraint failed: t.id".into(),
            example: "UNIQUE constraint failed: t.id".into(),
            component: "execute".into(),
            severity: Severity::Info,
            count: 3,
            first_seen_ms: 10,
            last_seen_ms: 20,
            resolved: false,
        };
        run(&conn, &upsert_statement(&r));
        run(&conn, &resolve_statement("s1"));
        assert!(list(&conn).unwrap()[0].resolved);
        r.count = 2;
        r.first_seen_ms = 30;
        r.last_seen_ms = 40;
        run(&conn, &upsert_statement(&r));
        let rows = list(&conn).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].count, rows[0].first_seen_ms, rows[0].last_seen_ms),
            (5, 10, 40)
        );
        assert!(!rows[0].resolved);
        assert_eq!(run(&conn, &prune_statement(100, 5)), 0);
        assert_eq!(run(&conn, &prune_statement(100, 6)), 1);
    }
}
