//! The operation audit: table `audit_batches`, one row per group commit
//! holding the JSON array of its operations' records (see
//! [`crate::audit`]), numbered `first_id` to `last_id`; appended by the
//! application writer's completion stage with the group commit's other
//! journal rows, read newest first a page at a time, pruned with the rest
//! of the audit trail (`[audit] retention`). One row per commit, not per
//! operation: an audit at `all` adds one insert to each group commit
//! rather than one per write.
//!
//! Records of operations that never reached the writer (a durable write
//! queued, a write refused by the open breaker) are rows of one, written
//! through the journal writer. Either writer takes its ids after the
//! newest row's inside its own insert, so the two never collide.

use std::fmt::Write;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditPage, AuditQuery, AuditRecord, AuditStatus, OpKind, WriteContext};
use crate::error::{Error, ErrorClass, Result};
use crate::value::{Statement, Value};

/// Records in one page when the caller names no limit.
pub const DEFAULT_PAGE: usize = 100;
/// Records in one page, at most.
pub const MAX_PAGE: usize = 1000;

/// `?1` records at `?2` in batch `?3`, as the JSON array `?4`, numbered
/// after the newest row's.
const INSERT: &str = "INSERT INTO audit_batches (first_id, last_id, at_ms, batch, records) \
     SELECT n + 1, n + ?1, ?2, ?3, ?4 FROM \
     (SELECT coalesce((SELECT last_id FROM audit_batches ORDER BY first_id DESC LIMIT 1), 0) AS n)";

/// A record as its row keeps it: the id, time and batch are the row's;
/// what is empty is left out. Rows are read through it; [`RowRecords`]
/// writes what its `Serialize` would (the tests hold the two together).
#[derive(Serialize, Deserialize)]
struct Stored {
    kind: OpKind,
    status: AuditStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    tables: Vec<String>,
    rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    duration_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queue_id: Option<i64>,
}

impl Stored {
    #[cfg(test)]
    fn from_record(r: AuditRecord) -> Stored {
        Stored {
            kind: r.kind,
            status: r.status,
            request_id: r.context.request_id,
            caller: r.context.caller,
            client: r.context.client,
            tables: r.tables,
            rows: r.rows,
            error_class: r.error_class,
            error: r.error,
            duration_us: r.duration_us,
            queue_id: r.queue_id,
        }
    }

    fn into_record(self, id: i64, at_ms: i64, batch: Option<i64>) -> AuditRecord {
        AuditRecord {
            id,
            at_ms,
            batch,
            kind: self.kind,
            status: self.status,
            context: WriteContext {
                request_id: self.request_id,
                caller: self.caller,
                client: self.client,
            },
            tables: self.tables,
            rows: self.rows,
            error_class: self.error_class,
            error: self.error,
            duration_us: self.duration_us,
            queue_id: self.queue_id,
        }
    }
}

/// One row's records, encoded: those of one group commit (they share its
/// time and batch number), or one record from outside the writer. The
/// [`RowRecords`] they were added to, its JSON array closed.
pub struct Encoded(RowRecords);

/// One record to encode, borrowed: an [`AuditRecord`] without its id, time,
/// batch and tables (the row's, and given beside it to
/// [`RowRecords::push`]).
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// What kind of operation.
    pub kind: OpKind,
    /// How it ended.
    pub status: AuditStatus,
    /// Who asked, from where (`None`: nobody said).
    pub context: Option<&'a WriteContext>,
    /// Rows its statements changed.
    pub rows: u64,
    /// The error's class, when it did not commit.
    pub error_class: Option<&'a str>,
    /// The error's message, when it did not commit.
    pub error: Option<&'a str>,
    /// How long it ran, in microseconds.
    pub duration_us: u64,
    /// The retry-queue entry that holds it or that it was replayed from.
    pub queue_id: Option<i64>,
}

/// Records for one row, encoded as they are added: [`encode`] takes them
/// (or a list of [`AuditRecord`]s). The writer adds a group commit's
/// straight from its operations, building no [`AuditRecord`]: the JSON is
/// written here, byte for byte what `serde_json` makes of the records (see
/// the tests), so every row reads the same whichever way it was written.
pub struct RowRecords {
    count: i64,
    at_ms: i64,
    batch: Option<i64>,
    json: String,
}

impl RowRecords {
    /// No records yet, of a row at `at_ms` in commit batch `batch`.
    pub fn new(at_ms: i64, batch: Option<i64>) -> RowRecords {
        RowRecords {
            count: 0,
            at_ms,
            batch,
            json: String::new(),
        }
    }

    /// Add `r`, which changed `tables` (each once, in the order first seen).
    pub fn push<'t>(&mut self, r: &RecordRef<'_>, tables: impl IntoIterator<Item = &'t str>) {
        let json = &mut self.json;
        json.push_str(if self.count == 0 { "[{" } else { ",{" });
        self.count += 1;
        // The fields of `Stored`, in its order; what is empty left out.
        json.push_str("\"kind\":\"");
        json.push_str(r.kind.as_str());
        json.push_str("\",\"status\":\"");
        json.push_str(r.status.as_str());
        json.push('"');
        if let Some(c) = r.context {
            push_field(json, "request_id", c.request_id.as_deref());
            push_field(json, "caller", c.caller.as_deref());
            push_field(json, "client", c.client.as_deref());
        }
        json.push_str(",\"tables\":[");
        for (i, table) in tables.into_iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            push_str(json, table);
        }
        let _ = write!(json, "],\"rows\":{}", r.rows);
        push_field(json, "error_class", r.error_class);
        push_field(json, "error", r.error);
        let _ = write!(json, ",\"duration_us\":{}", r.duration_us);
        if let Some(id) = r.queue_id {
            let _ = write!(json, ",\"queue_id\":{id}");
        }
        json.push('}');
    }

    /// How many records were added.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl From<Vec<AuditRecord>> for RowRecords {
    /// The records, with the row's time and batch taken from the first.
    fn from(records: Vec<AuditRecord>) -> RowRecords {
        let (at_ms, batch) = records.first().map_or((0, None), |r| (r.at_ms, r.batch));
        let mut row = RowRecords::new(at_ms, batch);
        for r in &records {
            row.push(
                &RecordRef {
                    kind: r.kind,
                    status: r.status,
                    context: Some(&r.context),
                    rows: r.rows,
                    error_class: r.error_class.as_deref(),
                    error: r.error.as_deref(),
                    duration_us: r.duration_us,
                    queue_id: r.queue_id,
                },
                r.tables.iter().map(String::as_str),
            );
        }
        row
    }
}

/// `,"name":"value"` when there is a value.
fn push_field(json: &mut String, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        json.push_str(",\"");
        json.push_str(name);
        json.push_str("\":");
        push_str(json, value);
    }
}

/// `s` as a JSON string, escaped as `serde_json` escapes it.
fn push_str(json: &mut String, s: &str) {
    // What serde_json escapes: the quote, the backslash, control characters.
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        match serde_json::to_string(s) {
            Ok(quoted) => json.push_str(&quoted),
            Err(_) => unreachable!("a string always serializes"),
        }
    } else {
        json.push('"');
        json.push_str(s);
        json.push('"');
    }
}

/// Encode `records` (a list of [`AuditRecord`]s, or [`RowRecords`]) for
/// one row, its time and batch those of the first; `None` when there are
/// none.
pub fn encode(records: impl Into<RowRecords>) -> Option<Encoded> {
    let mut row = records.into();
    if row.is_empty() {
        return None;
    }
    row.json.push(']');
    Some(Encoded(row))
}

/// The statement recording `r` (a record from outside the writer, written
/// through the journal writer), a row of its own.
pub fn insert_statement(r: &AuditRecord) -> Statement {
    let json = encode(vec![r.clone()]).map_or_else(|| "[]".to_owned(), |e| e.0.json);
    Statement::new(
        INSERT,
        [
            Value::Integer(1),
            Value::Integer(r.at_ms),
            r.batch.map_or(Value::Null, Value::Integer),
            Value::from(json.as_str()),
        ],
    )
}

impl Encoded {
    /// How many records.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never: [`encode`] gives `None` then).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Insert `records` as one row, inside the caller's open transaction.
pub fn insert(conn: &Connection, Encoded(records): &Encoded) -> Result<()> {
    conn.prepare_cached(INSERT)?.execute(rusqlite::params![
        records.count,
        records.at_ms,
        records.batch,
        records.json
    ])?;
    Ok(())
}

/// The highest commit batch number recorded (0 when none): the writer
/// numbers its group commits after it.
pub fn highest_batch(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT coalesce((SELECT batch FROM audit_batches WHERE batch IS NOT NULL ORDER BY first_id DESC LIMIT 1), 0)",
        [],
        |r| r.get(0),
    )?)
}

/// The statement deleting records older than `cutoff_ms`.
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM audit_batches WHERE at_ms < ?1",
        [Value::Integer(cutoff_ms)],
    )
}

/// One page of records, newest first: rows are read newest first until
/// the page is full, each row's records filtered here.
pub fn page(conn: &Connection, q: &AuditQuery) -> Result<AuditPage> {
    if !super::has_table(conn, "audit_batches")? {
        return Ok(AuditPage::default());
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let mut stmt = conn.prepare(
        "SELECT first_id, at_ms, batch, records FROM audit_batches \
         WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR first_id < ?2) \
         ORDER BY first_id DESC",
    )?;
    let mut rows = stmt.query(rusqlite::params![q.since_ms, q.before])?;
    let mut records = Vec::new();
    while let Some(row) = rows.next()? {
        let (first_id, at_ms, batch): (i64, i64, Option<i64>) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let json: String = row.get(3)?;
        let stored: Vec<Stored> = serde_json::from_str(&json).map_err(|e| {
            Error::classed(
                ErrorClass::Internal,
                format!("audit_batches row {first_id} is not a list of records: {e}"),
            )
        })?;
        for (i, s) in stored.into_iter().enumerate().rev() {
            let id = first_id + i as i64;
            if q.before.is_some_and(|before| id >= before)
                || q.status.is_some_and(|status| s.status != status)
                || q.table.as_ref().is_some_and(|t| !s.tables.contains(t))
            {
                continue;
            }
            records.push(s.into_record(id, at_ms, batch));
        }
        if records.len() > limit {
            break;
        }
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

    /// [`encode`] and [`insert`] in one transaction, as the writer's
    /// completion stage does.
    fn append(conn: &Connection, records: Vec<AuditRecord>) -> Result<()> {
        match encode(records) {
            Some(encoded) => crate::journal::immediate(conn, || insert(conn, &encoded)),
            None => Ok(()),
        }
    }

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

    /// What `serde_json` made of `records` before [`RowRecords`] wrote
    /// the JSON itself: the rows of every release read the same.
    fn serde_encoded(records: &[AuditRecord]) -> String {
        let stored: Vec<Stored> = records.iter().cloned().map(Stored::from_record).collect();
        serde_json::to_string(&stored).unwrap()
    }

    fn encoded(records: &[AuditRecord]) -> String {
        encode(records.to_vec()).unwrap().0.json
    }

    /// Every kind, status and optional field, and strings that need
    /// escaping, are encoded as serde_json encodes them.
    #[test]
    fn audit_encoding_is_serde_jsons() {
        let mut records = Vec::new();
        for (i, status) in AuditStatus::ALL.into_iter().enumerate() {
            for kind in [
                OpKind::Statement,
                OpKind::Batch,
                OpKind::Once,
                OpKind::Replay,
                OpKind::Queued,
            ] {
                let mut r = record(status, &["a", "b \"c\""]);
                r.kind = kind;
                r.rows = i as u64 * 1_000_000_007;
                r.duration_us = u64::MAX - i as u64;
                records.push(r);
            }
        }
        let odd = AuditRecord {
            context: WriteContext {
                request_id: Some("\u{0}\u{1f}\u{7f}\\/\n\r\t\u{8}\u{c}é😀".into()),
                caller: Some(String::new()),
                client: None,
            },
            tables: Vec::new(),
            rows: 0,
            error_class: Some("constraint".into()),
            error: Some("UNIQUE constraint failed: t.\"id\"".into()),
            duration_us: 0,
            queue_id: Some(i64::MIN),
            ..record(AuditStatus::Queued, &[])
        };
        records.push(odd.clone());
        records.push(AuditRecord {
            queue_id: Some(42),
            context: WriteContext::default(),
            ..odd
        });
        for r in &records {
            assert_eq!(
                encoded(std::slice::from_ref(r)),
                serde_encoded(std::slice::from_ref(r))
            );
        }
        assert_eq!(encoded(&records), serde_encoded(&records));
        assert!(encode(Vec::<AuditRecord>::new()).is_none());
    }

    proptest::proptest! {
        #[test]
        fn audit_encoding_is_serde_jsons_for_any_text(
            request_id in proptest::option::of(".*"),
            caller in proptest::option::of("\\PC*"),
            table in "[\\x00-\\x7f]*",
            error in proptest::option::of(".*"),
            rows: u64,
            duration_us: u64,
            queue_id in proptest::option::of(proptest::num::i64::ANY),
        ) {
            let r = AuditRecord {
                context: WriteContext { request_id, caller, client: None },
                tables: vec![table, "x".into()],
                rows,
                error_class: error.as_ref().map(|_| "sql".into()),
                error,
                duration_us,
                queue_id,
                ..record(AuditStatus::Failed, &[])
            };
            let records = vec![r.clone(), r];
            proptest::prop_assert_eq!(encoded(&records), serde_encoded(&records));
        }
    }

    /// Records come back newest first, filtered by status and table, a
    /// page at a time, and the writer's batch numbering resumes after them.
    #[test]
    fn audit_page_filters_and_pages() {
        let conn = in_memory();
        append(
            &conn,
            vec![
                record(AuditStatus::Committed, &["a"]),
                record(AuditStatus::Failed, &["b"]),
            ],
        )
        .unwrap();
        // A record from outside the writer takes the ids after them.
        let outside = record(AuditStatus::Committed, &["a", "b"]);
        let Statement { sql, params } = insert_statement(&AuditRecord {
            batch: None,
            ..outside
        });
        conn.execute(&sql, rusqlite::params_from_iter(params))
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
