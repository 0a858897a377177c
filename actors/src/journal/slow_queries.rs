//! The slow-query log: table `slow_queries`, one row per normalised
//! statement (its hash) with its count, total, longest and last duration,
//! its query plan, whether the plan scans a table without an index, and a
//! suggested index. Rows are upserted; the plan is the latest one.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::value::{Statement, Value};

/// What was slow: a write (through the writer) or a query (the read pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowKind {
    /// A write: execute, batch, an operation.
    Write,
    /// A read-only query.
    Query,
}

impl SlowKind {
    /// `write` or `query`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowKind::Write => "write",
            SlowKind::Query => "query",
        }
    }
}

/// One normalised statement that ran longer than `[audit] slow_threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowQueryRecord {
    /// The hash of the normalised SQL.
    pub hash: String,
    /// A write or a query.
    pub kind: SlowKind,
    /// The SQL with its literals taken out (a batch's statements joined by `; `).
    pub sql: String,
    /// How many times it was slow.
    pub count: u64,
    /// Its slow runs together, in milliseconds.
    pub total_ms: f64,
    /// The longest, in milliseconds.
    pub max_ms: f64,
    /// The latest, in milliseconds.
    pub last_ms: f64,
    /// Rows it returned (a query) or changed (a write), the latest time.
    pub rows: u64,
    /// `EXPLAIN QUERY PLAN`, one line per step.
    pub plan: Vec<String>,
    /// The plan scans a table without using an index.
    pub scan: bool,
    /// An index that would serve it, when resilite is confident of one.
    pub suggestion: Option<String>,
    /// First slow (ms since the Unix epoch).
    pub first_seen_ms: i64,
    /// Last slow (ms since the Unix epoch).
    pub last_seen_ms: i64,
}

/// The statement adding `r` (its count and durations) to its hash's row,
/// with the latest plan.
pub fn upsert_statement(r: &SlowQueryRecord) -> Statement {
    Statement::new(
        "INSERT INTO slow_queries (hash, kind, sql, count, total_ms, max_ms, last_ms, rows, plan, scan, suggestion, first_seen_ms, last_seen_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (hash) DO UPDATE SET count = count + excluded.count, \
         total_ms = total_ms + excluded.total_ms, max_ms = max(max_ms, excluded.max_ms), \
         last_ms = excluded.last_ms, rows = excluded.rows, plan = excluded.plan, \
         scan = excluded.scan, suggestion = excluded.suggestion, \
         last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
        [
            Value::from(r.hash.as_str()),
            Value::from(r.kind.as_str()),
            Value::from(r.sql.as_str()),
            Value::from(r.count),
            Value::Real(r.total_ms),
            Value::Real(r.max_ms),
            Value::Real(r.last_ms),
            Value::from(r.rows),
            Value::Text(serde_json::to_string(&r.plan).unwrap_or_else(|_| "[]".into())),
            Value::Integer(r.scan.into()),
            r.suggestion.as_deref().map_or(Value::Null, Value::from),
            Value::Integer(r.first_seen_ms),
            Value::Integer(r.last_seen_ms),
        ],
    )
}

/// The statement deleting rows last seen before `cutoff_ms`.
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM slow_queries WHERE last_seen_ms < ?1",
        [Value::Integer(cutoff_ms)],
    )
}

/// Every row, the slowest in total first. A journal from before the
/// slow-query log has none.
pub fn list(conn: &Connection) -> Result<Vec<SlowQueryRecord>> {
    if !super::has_table(conn, "slow_queries")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT hash, kind, sql, count, total_ms, max_ms, last_ms, rows, plan, scan, suggestion, first_seen_ms, last_seen_ms \
         FROM slow_queries ORDER BY total_ms DESC, hash",
    )?;
    let rows = stmt.query_map([], |r| {
        let plan: String = r.get(8)?;
        Ok(SlowQueryRecord {
            hash: r.get(0)?,
            kind: if r.get::<_, String>(1)? == "write" {
                SlowKind::Write
            } else {
                SlowKind::Query
            },
            sql: r.get(2)?,
            count: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            total_ms: r.get(4)?,
            max_ms: r.get(5)?,
            last_ms: r.get(6)?,
            rows: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
            plan: serde_json::from_str(&plan).unwrap_or_default(),
            scan: r.get(9)?,
            suggestion: r.get(10)?,
            first_seen_ms: r.get(11)?,
            last_seen_ms: r.get(12)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
