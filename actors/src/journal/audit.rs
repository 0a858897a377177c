//! The operation audit: table `audit_ops`, one row per audited write
//! operation (see [`crate::audit`]), appended by the application writer's
//! own journal connection once per group commit, read newest first a page
//! at a time, pruned with the rest of the audit trail (`[audit] retention`).

use rusqlite::Connection;

use crate::audit::{AuditPage, AuditQuery, AuditRecord, AuditStatus, OpKind, WriteContext};
use crate::error::{Error, ErrorClass, Result};
use crate::value::{Statement, Value};

/// Records in one page when the caller names no limit.
pub const DEFAULT_PAGE: usize = 100;
/// Records in one page, at most.
pub const MAX_PAGE: usize = 1000;

const INSERT: &str =
    "INSERT INTO audit_ops (at_ms, batch, kind, status, request_id, caller, client, \
     tables, rows, error_class, error, duration_us, queue_id) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// The statement recording `r` (a record from outside the writer, written
/// through the journal writer).
pub fn insert_statement(r: &AuditRecord) -> Statement {
    let text = |v: &Option<String>| v.as_deref().map_or(Value::Null, Value::from);
    Statement::new(
        INSERT,
        [
            Value::Integer(r.at_ms),
            r.batch.map_or(Value::Null, Value::Integer),
            Value::from(r.kind.as_str()),
            Value::from(r.status.as_str()),
            text(&r.context.request_id),
            text(&r.context.caller),
            text(&r.context.client),
            Value::from(
                serde_json::to_string(&r.tables)
                    .unwrap_or_else(|_| "[]".into())
                    .as_str(),
            ),
            Value::Integer(r.rows as i64),
            text(&r.error_class),
            text(&r.error),
            Value::Integer(r.duration_us as i64),
            r.queue_id.map_or(Value::Null, Value::Integer),
        ],
    )
}

/// Append `records` in one transaction taken with `BEGIN IMMEDIATE` (a
/// busy journal is met at the start, where the busy timeout waits).
pub fn append(conn: &Connection, records: &[AuditRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let written = (|| -> Result<()> {
        let mut insert = conn.prepare_cached(INSERT)?;
        for r in records {
            let tables = serde_json::to_string(&r.tables)
                .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?;
            insert.execute(rusqlite::params![
                r.at_ms,
                r.batch,
                r.kind.as_str(),
                r.status.as_str(),
                r.context.request_id,
                r.context.caller,
                r.context.client,
                tables,
                r.rows as i64,
                r.error_class,
                r.error,
                r.duration_us as i64,
                r.queue_id,
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

/// The highest commit batch number recorded (0 when none): the writer
/// numbers its group commits after it.
pub fn highest_batch(conn: &Connection) -> Result<i64> {
    Ok(
        conn.query_row("SELECT coalesce(max(batch), 0) FROM audit_ops", [], |r| {
            r.get(0)
        })?,
    )
}

/// The statement deleting records older than `cutoff_ms`.
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM audit_ops WHERE at_ms < ?1",
        [Value::Integer(cutoff_ms)],
    )
}

/// One page of records, newest first.
pub fn page(conn: &Connection, q: &AuditQuery) -> Result<AuditPage> {
    if !super::has_table(conn, "audit_ops")? {
        return Ok(AuditPage::default());
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let mut stmt = conn.prepare(
        "SELECT id, at_ms, batch, kind, status, request_id, caller, client, tables, rows, \
         error_class, error, duration_us, queue_id FROM audit_ops \
         WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3) \
         AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(tables) WHERE value = ?4)) \
         ORDER BY id DESC LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![
            q.since_ms,
            q.status.map(AuditStatus::as_str),
            q.before,
            q.table,
            (limit + 1) as i64
        ],
        |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ),
                WriteContext {
                    request_id: r.get(5)?,
                    caller: r.get(6)?,
                    client: r.get(7)?,
                },
                (
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, Option<String>>(10)?,
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, i64>(12)?,
                    r.get::<_, Option<i64>>(13)?,
                ),
            ))
        },
    )?;
    let mut records = Vec::new();
    for row in rows {
        let ((id, at_ms, batch, kind, status), context, rest) = row?;
        let (tables, rows, error_class, error, duration_us, queue_id) = rest;
        let unknown = |what: &str, v: &str| {
            Error::classed(
                ErrorClass::Internal,
                format!("audit_ops row {id} holds unknown {what} `{v}`"),
            )
        };
        records.push(AuditRecord {
            id,
            at_ms,
            batch,
            kind: OpKind::parse(&kind).ok_or_else(|| unknown("kind", &kind))?,
            status: AuditStatus::parse(&status).ok_or_else(|| unknown("status", &status))?,
            context,
            tables: serde_json::from_str(&tables).map_err(|_| unknown("tables", &tables))?,
            rows: rows.max(0) as u64,
            error_class,
            error,
            duration_us: duration_us.max(0) as u64,
            queue_id,
        });
    }
    let next = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|r| r.id)
    } else {
        None
    };
    Ok(AuditPage { records, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::in_memory;

    fn record(status: AuditStatus, tables: &[&str]) -> AuditRecord {
        AuditRecord {
            id: 0,
            at_ms: 1_000,
            batch: Some(3),
            kind: OpKind::Statement,
            status,
            context: WriteContext {
                request_id: Some("r-1".into()),
                caller: None,
                client: Some("127.0.0.1:5000".into()),
            },
            tables: tables.iter().map(|t| t.to_string()).collect(),
            rows: 1,
            error_class: None,
            error: None,
            duration_us: 12,
            queue_id: None,
        }
    }

    /// Records come back newest first, filtered by status and table, a
    /// page at a time, and the writer's batch numbering resumes after them.
    #[test]
    fn audit_page_filters_and_pages() {
        let conn = in_memory();
        append(
            &conn,
            &[
                record(AuditStatus::Committed, &["a"]),
                record(AuditStatus::Failed, &["b"]),
                record(AuditStatus::Committed, &["a", "b"]),
            ],
        )
        .unwrap();
        assert_eq!(highest_batch(&conn).unwrap(), 3);
        let all = page(&conn, &AuditQuery::default()).unwrap();
        assert_eq!(all.records.len(), 3);
        assert_eq!(all.records[0].tables, ["a", "b"]);
        assert_eq!(
            all.records[0].context.client.as_deref(),
            Some("127.0.0.1:5000")
        );
        let q = |status, table: Option<&str>| AuditQuery {
            status,
            table: table.map(str::to_string),
            ..AuditQuery::default()
        };
        assert_eq!(
            page(&conn, &q(Some(AuditStatus::Failed), None))
                .unwrap()
                .records
                .len(),
            1
        );
        assert_eq!(page(&conn, &q(None, Some("a"))).unwrap().records.len(), 2);
        let first = page(
            &conn,
            &AuditQuery {
                limit: Some(2),
                ..AuditQuery::default()
            },
        )
        .unwrap();
        assert_eq!((first.records.len(), first.next), (2, Some(2)));
        let second = page(
            &conn,
            &AuditQuery {
                before: first.next,
                ..AuditQuery::default()
            },
        )
        .unwrap();
        assert_eq!((second.records.len(), second.next), (1, None));
    }
}
