//! The operation log: table `op_log`, one row per operation the
//! application writer committed, numbered by `seq` in commit order, the
//! operation kept as JSON (serde's form of [`Operation`]); and table
//! `op_log_gaps`, the ranges of sequence numbers that were committed to
//! the application database but are missing from the log (an append that
//! failed after the commit, or a crash between the two). Recovery replays
//! the log after a backup's position and cannot go past a gap.
//!
//! Written by the application writer's own journal connection (see
//! `writer::op_log`), one transaction per group commit; trimmed through
//! the journal writer.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorClass, Result};
use crate::value::{Operation, Statement, Value};

/// One logged operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedOp {
    /// Its place in commit order (gaps are recorded in `op_log_gaps`).
    pub seq: i64,
    /// When it was logged (ms since the Unix epoch).
    pub at_ms: i64,
    /// The operation as committed (an `Operation::Once` with its key).
    pub op: Operation,
}

/// Sequence numbers committed to the database but missing from the log:
/// `after_seq < seq <= through_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The last sequence number before the gap.
    pub after_seq: i64,
    /// The last sequence number missing.
    pub through_seq: i64,
    /// When the gap was found (ms since the Unix epoch).
    pub at_ms: i64,
    /// Why the operations are missing.
    pub reason: String,
}

/// Append `ops` (their sequence numbers given) and record `gaps`, in one
/// transaction taken with `BEGIN IMMEDIATE` (so a busy journal is met at
/// the start, where the connection's busy timeout waits for it).
pub fn append(
    conn: &Connection,
    at_ms: i64,
    ops: &[(i64, &Operation)],
    gaps: &[Gap],
) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let written = (|| -> Result<()> {
        let mut insert =
            conn.prepare_cached("INSERT INTO op_log (seq, at_ms, op) VALUES (?1, ?2, ?3)")?;
        for (seq, op) in ops {
            let json = serde_json::to_string(op)
                .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?;
            insert.execute(rusqlite::params![seq, at_ms, json])?;
        }
        let mut gap = conn.prepare_cached(
            "INSERT INTO op_log_gaps (at_ms, after_seq, through_seq, reason) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for g in gaps {
            gap.execute(rusqlite::params![
                g.at_ms,
                g.after_seq,
                g.through_seq,
                g.reason
            ])?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(())
    })();
    if written.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    written
}

/// The logged operations with `seq > after`, in order, at most `limit`.
pub fn after(conn: &Connection, after: i64, limit: usize) -> Result<Vec<LoggedOp>> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, at_ms, op FROM op_log WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut ops = Vec::new();
    for row in rows {
        let (seq, at_ms, json) = row?;
        let op = serde_json::from_str(&json).map_err(|e| {
            Error::classed(
                ErrorClass::Corruption,
                format!("op_log row {seq} is not an operation: {e}"),
            )
        })?;
        ops.push(LoggedOp { seq, at_ms, op });
    }
    Ok(ops)
}

/// The newest sequence number logged, `None` when the log is empty (also
/// after a trim removed every row).
pub fn newest_seq(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn.query_row("SELECT max(seq) FROM op_log", [], |r| r.get(0))?)
}

/// The highest sequence number the log knows of: logged, or named by a
/// gap (still known after a trim emptied `op_log`).
pub fn highest_known_seq(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT max(coalesce((SELECT max(seq) FROM op_log), 0), coalesce((SELECT max(through_seq) FROM op_log_gaps), 0))",
        [],
        |r| r.get(0),
    )?)
}

/// The recorded gaps, oldest first.
pub fn gaps(conn: &Connection) -> Result<Vec<Gap>> {
    let mut stmt = conn.prepare(
        "SELECT after_seq, through_seq, at_ms, reason FROM op_log_gaps ORDER BY after_seq, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Gap {
            after_seq: r.get(0)?,
            through_seq: r.get(1)?,
            at_ms: r.get(2)?,
            reason: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The statement that trims the log up to `seq` (included), and the gaps
/// that lie wholly before it: a backup covering `seq` makes them useless.
pub fn trim_statement(seq: i64) -> Operation {
    Operation::Batch(vec![
        Statement::new("DELETE FROM op_log WHERE seq <= ?1", [Value::Integer(seq)]),
        Statement::new(
            "DELETE FROM op_log_gaps WHERE through_seq <= ?1",
            [Value::Integer(seq)],
        ),
    ])
}

/// Trim on a journal connection of one's own (tests, the CLI).
pub fn trim(conn: &Connection, seq: i64) -> Result<()> {
    conn.execute("DELETE FROM op_log WHERE seq <= ?1", [seq])?;
    conn.execute("DELETE FROM op_log_gaps WHERE through_seq <= ?1", [seq])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::in_memory;

    #[test]
    fn op_log_appends_reads_in_order_and_trims() {
        let conn = in_memory();
        assert_eq!(newest_seq(&conn).unwrap(), None);
        let a = Operation::Statement(Statement::new(
            "INSERT INTO t VALUES (?1)",
            [Value::Integer(1)],
        ));
        let b = Operation::Once {
            key: "k".into(),
            op: Box::new(a.clone()),
        };
        append(&conn, 5, &[(1, &a), (2, &b)], &[]).unwrap();
        let gap = Gap {
            after_seq: 2,
            through_seq: 4,
            at_ms: 6,
            reason: "test".into(),
        };
        append(&conn, 7, &[(5, &a)], std::slice::from_ref(&gap)).unwrap();
        assert_eq!(newest_seq(&conn).unwrap(), Some(5));
        let all = after(&conn, 0, 100).unwrap();
        assert_eq!(all.iter().map(|o| o.seq).collect::<Vec<_>>(), [1, 2, 5]);
        assert_eq!(all[1].op, b);
        assert_eq!(after(&conn, 1, 1).unwrap()[0].seq, 2);
        assert_eq!(gaps(&conn).unwrap(), [gap]);
        trim(&conn, 2).unwrap();
        assert_eq!(after(&conn, 0, 100).unwrap().len(), 1);
        assert_eq!(gaps(&conn).unwrap().len(), 1);
        trim(&conn, 5).unwrap();
        assert_eq!(newest_seq(&conn).unwrap(), None);
        assert!(gaps(&conn).unwrap().is_empty());
        // A duplicate seq fails the whole append, leaving nothing half done.
        append(&conn, 8, &[(6, &a)], &[]).unwrap();
        assert!(append(&conn, 9, &[(7, &a), (6, &a)], &[]).is_err());
        assert_eq!(newest_seq(&conn).unwrap(), Some(6));
        assert_eq!(highest_known_seq(&conn).unwrap(), 6);
    }
}
