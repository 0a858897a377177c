//! The operation log: table `op_log`, one row per group commit of the
//! application writer, holding the operations it committed numbered `seq`
//! to `last_seq` in commit order, as a JSON array (serde's form of
//! [`Operation`]); and table
//! `op_log_gaps`, the ranges of sequence numbers that were committed to
//! the application database but are missing from the log (an append that
//! failed after the commit, or a crash between the two). Recovery replays
//! the log after a backup's position and cannot go past a gap.
//!
//! Written by the application writer's own journal connection (see
//! `writer::op_log`), one transaction per group commit; trimmed through
//! the journal writer. A row written beside the database's commit, before
//! its outcome is known, is `pending` until it is: confirmed, or voided
//! (removed); [`settle`] decides the ones a crash left.

use rusqlite::{Connection, OptionalExtension};
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

/// One group commit's committed operations as the log's row keeps them
/// (a JSON array).
pub fn encode(ops: &[&Operation]) -> Result<String> {
    serde_json::to_string(ops).map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))
}

/// Insert one group commit's operations, numbered `first` on, as one row,
/// inside the caller's open transaction.
pub fn insert(conn: &Connection, at_ms: i64, first: i64, ops: &[&Operation]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    insert_encoded(conn, at_ms, first, ops.len(), &encode(ops)?, false)
}

/// Insert the row [`encode`] made of `count` operations numbered `first`
/// on, inside the caller's open transaction. `pending`: written beside the
/// database's commit, whose outcome is not known yet; a pending row left
/// by an earlier attempt of the same group commit is replaced.
pub fn insert_encoded(
    conn: &Connection,
    at_ms: i64,
    first: i64,
    count: usize,
    json: &str,
    pending: bool,
) -> Result<()> {
    if pending {
        void(conn, first)?;
    }
    conn.prepare_cached(
        "INSERT INTO op_log (seq, last_seq, at_ms, op, pending) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![
        first,
        first + count as i64 - 1,
        at_ms,
        json,
        pending
    ])?;
    Ok(())
}

/// The database committed the pending rows numbered `firsts`: they are
/// the log's like any other.
pub fn confirm(conn: &Connection, firsts: &[i64]) -> Result<()> {
    let mut confirm =
        conn.prepare_cached("UPDATE op_log SET pending = 0 WHERE seq = ?1 AND pending = 1")?;
    for first in firsts {
        confirm.execute([first])?;
    }
    Ok(())
}

/// The database did not commit the pending row numbered `first` (nor any
/// pending one after it): removed, its numbers to be given again.
pub fn void(conn: &Connection, first: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM op_log WHERE seq >= ?1 AND pending = 1")?
        .execute([first])?;
    Ok(())
}

/// Settle the pending rows against the position `held` of the database
/// the log belongs to (see `writer::op_log`): a row the database holds was
/// committed and is confirmed; one after it never was (the process ended
/// during that commit) and is removed. How many rows were removed.
pub fn settle(conn: &Connection, held: i64) -> Result<usize> {
    super::immediate(conn, || {
        let removed = conn.execute("DELETE FROM op_log WHERE pending = 1 AND seq > ?1", [held])?;
        conn.execute("UPDATE op_log SET pending = 0 WHERE pending = 1", [])?;
        Ok(removed)
    })
}

/// How many rows are pending: written beside a commit whose outcome the
/// log does not hold yet (none once the writer stopped, or after
/// [`settle`]).
pub fn pending(conn: &Connection) -> Result<i64> {
    Ok(
        conn.query_row("SELECT count(*) FROM op_log WHERE pending = 1", [], |r| {
            r.get(0)
        })?,
    )
}

/// Record `gaps`, inside the caller's open transaction.
pub fn insert_gaps(conn: &Connection, gaps: &[Gap]) -> Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO op_log_gaps (at_ms, after_seq, through_seq, reason) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for g in gaps {
        insert.execute(rusqlite::params![
            g.at_ms,
            g.after_seq,
            g.through_seq,
            g.reason
        ])?;
    }
    Ok(())
}

/// [`insert`] and [`insert_gaps`] in one transaction of their own, taken
/// with `BEGIN IMMEDIATE` (so a busy journal is met at the start, where
/// the connection's busy timeout waits for it).
pub fn append(
    conn: &Connection,
    at_ms: i64,
    first: i64,
    ops: &[&Operation],
    gaps: &[Gap],
) -> Result<()> {
    super::immediate(conn, || {
        insert(conn, at_ms, first, ops)?;
        insert_gaps(conn, gaps)
    })
}

/// The logged operations with `seq > after`, in order, at most `limit`.
pub fn after(conn: &Connection, after: i64, limit: usize) -> Result<Vec<LoggedOp>> {
    // The row holding `after + 1` starts at or before it.
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_ms, op FROM op_log \
         WHERE seq >= coalesce((SELECT max(seq) FROM op_log WHERE seq <= ?1), 0) AND last_seq > ?1 \
         ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut ops = Vec::new();
    for row in rows {
        let (first, at_ms, json) = row?;
        let batch: Vec<Operation> = serde_json::from_str(&json).map_err(|e| {
            Error::classed(
                ErrorClass::Corruption,
                format!("op_log row {first} is not a list of operations: {e}"),
            )
        })?;
        for (seq, op) in (first..).zip(batch) {
            if seq > after && ops.len() < limit {
                ops.push(LoggedOp { seq, at_ms, op });
            }
        }
    }
    Ok(ops)
}

/// The newest sequence number logged, `None` when the log is empty (also
/// after a trim removed every row).
pub fn newest_seq(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT last_seq FROM op_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// The highest sequence number the log knows of: logged, or named by a
/// gap (still known after a trim emptied `op_log`).
pub fn highest_known_seq(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT max(coalesce((SELECT last_seq FROM op_log ORDER BY seq DESC LIMIT 1), 0), coalesce((SELECT max(through_seq) FROM op_log_gaps), 0))",
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

/// Deletes the rows whose every operation is numbered `?1` or less.
const TRIM: &str = "DELETE FROM op_log WHERE seq <= ?1 AND last_seq <= ?1";

/// The statement that trims the log up to `seq` (included), and the gaps
/// that lie wholly before it: a backup covering `seq` makes them useless.
pub fn trim_statement(seq: i64) -> Operation {
    Operation::Batch(vec![
        Statement::new(TRIM, [Value::Integer(seq)]),
        Statement::new(
            "DELETE FROM op_log_gaps WHERE through_seq <= ?1",
            [Value::Integer(seq)],
        ),
    ])
}

/// Trim on a journal connection of one's own (tests, the CLI).
pub fn trim(conn: &Connection, seq: i64) -> Result<()> {
    conn.execute(TRIM, [seq])?;
    conn.execute("DELETE FROM op_log_gaps WHERE through_seq <= ?1", [seq])?;
    Ok(())
}

/// Insert a row of `INSERT INTO t VALUES (v)` operations, one per value,
/// numbered `first` on (tests).
#[cfg(test)]
pub(crate) fn insert_values(conn: &Connection, first: i64, values: &[i64], pending: bool) {
    let ops: Vec<Operation> = values
        .iter()
        .map(|v| {
            Operation::Statement(Statement::new(
                "INSERT INTO t VALUES (?1)",
                [Value::Integer(*v)],
            ))
        })
        .collect();
    let refs: Vec<&Operation> = ops.iter().collect();
    insert_encoded(conn, 1, first, ops.len(), &encode(&refs).unwrap(), pending).unwrap();
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
        append(&conn, 5, 1, &[&a, &b], &[]).unwrap();
        let gap = Gap {
            after_seq: 2,
            through_seq: 4,
            at_ms: 6,
            reason: "test".into(),
        };
        append(&conn, 7, 5, &[&a, &b, &a], std::slice::from_ref(&gap)).unwrap();
        assert_eq!(newest_seq(&conn).unwrap(), Some(7));
        let all = after(&conn, 0, 100).unwrap();
        assert_eq!(
            all.iter().map(|o| o.seq).collect::<Vec<_>>(),
            [1, 2, 5, 6, 7]
        );
        assert_eq!((all[1].op.clone(), all[4].at_ms), (b.clone(), 7));
        // Read from inside a group commit's row, and a page at a time.
        assert_eq!(after(&conn, 1, 1).unwrap()[0].seq, 2);
        let page: Vec<i64> = after(&conn, 5, 1).unwrap().iter().map(|o| o.seq).collect();
        assert_eq!(page, [6]);
        assert_eq!(after(&conn, 2, 2).unwrap()[1].seq, 6);
        assert!(after(&conn, 7, 10).unwrap().is_empty());
        assert_eq!(gaps(&conn).unwrap(), std::slice::from_ref(&gap));
        // A trim keeps a row still holding an operation after its point.
        trim(&conn, 6).unwrap();
        assert_eq!(after(&conn, 0, 100).unwrap().len(), 3);
        assert_eq!(after(&conn, 6, 100).unwrap()[0].seq, 7);
        assert_eq!(gaps(&conn).unwrap().len(), 0);
        trim(&conn, 7).unwrap();
        assert_eq!(newest_seq(&conn).unwrap(), None);
        assert_eq!(highest_known_seq(&conn).unwrap(), 0);
        // A duplicate seq fails the whole append, leaving nothing half done.
        append(&conn, 8, 8, &[&a], &[]).unwrap();
        assert!(append(&conn, 9, 8, &[&a], std::slice::from_ref(&gap)).is_err());
        assert_eq!(newest_seq(&conn).unwrap(), Some(8));
        assert!(gaps(&conn).unwrap().is_empty());
        assert_eq!(highest_known_seq(&conn).unwrap(), 8);
    }

    /// A pending row (written beside a commit) is replaced by a retry of
    /// the same group commit, confirmed, or voided with every pending row
    /// after it; rows already confirmed are never voided.
    #[test]
    fn pending_rows_are_replaced_confirmed_or_voided() {
        let conn = in_memory();
        let row = |first: i64, values: &[i64], pending: bool| {
            insert_values(&conn, first, values, pending)
        };
        let seqs = || -> Vec<i64> {
            after(&conn, 0, 100)
                .unwrap()
                .iter()
                .map(|o| o.seq)
                .collect()
        };
        row(1, &[1], false);
        row(2, &[2, 3, 4], true);
        // The retry committed fewer operations: its row replaces the first.
        row(2, &[2, 3], true);
        assert_eq!(seqs(), [1, 2, 3]);
        confirm(&conn, &[2]).unwrap();
        row(4, &[5], true);
        row(5, &[6], true);
        void(&conn, 4).unwrap();
        assert_eq!(seqs(), [1, 2, 3], "the pending rows from 4 on are gone");
        void(&conn, 1).unwrap();
        assert_eq!(seqs(), [1, 2, 3], "confirmed rows are not voided");
    }
}
