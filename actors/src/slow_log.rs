//! The slow-query log: a write or query that took longer than
//! `[audit] slow_threshold` is counted under the hash of its normalised SQL
//! with its durations, its `EXPLAIN QUERY PLAN`, whether that plan scans a
//! table without an index, and the index that would serve it when resilite
//! is confident of one.
//!
//! The caller's path pays for a clock read and a comparison (the runtime's
//! execute and query wrappers time every answer anyway); a slow one is
//! sent with `try_send` on a bounded channel to a task that aggregates in
//! memory, asks SQLite for the plan on a read-only connection of its own
//! (once per statement, again after the schema changed), and writes the
//! rows to the journal as upserts every [`DEFAULT_FLUSH_EVERY`], on
//! [`SlowLog::flush`] and when the last handle is dropped.
//!
//! The SQL is in [`journal::slow_queries`](crate::journal::slow_queries).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use crate::connection::{open_read_only, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::journal::slow_queries::{upsert_statement, SlowKind, SlowQueryRecord};
use crate::maintenance::now_ms;
use crate::normalise;
use crate::slot::{self, WriterSlot};
use crate::value::Operation;

/// A write or query at least this long is slow (`[audit] slow_threshold`).
pub const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_millis(250);
/// How often the slow-query counts are written to the journal.
pub const DEFAULT_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Slow statements queued for the task before new ones are dropped.
const QUEUE: usize = 1024;
/// Distinct statements counted between two flushes, at most.
const MAX_PENDING: usize = 1000;

/// One slow answer.
#[derive(Debug, Clone)]
pub struct SlowSample {
    /// A write or a query.
    pub kind: SlowKind,
    /// Its statements' SQL (one for a statement or a query).
    pub sql: Vec<String>,
    /// How long the caller waited for the answer.
    pub duration: Duration,
    /// Rows returned or changed.
    pub rows: u64,
}

enum Msg {
    Sample(SlowSample, i64),
    Flush(oneshot::Sender<bool>),
}

/// `d` in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Records slow writes and queries. Cloneable; the task behind it writes
/// what is left and ends when the last clone is dropped.
#[derive(Clone)]
pub struct SlowLog {
    /// The threshold in nanoseconds; 0: off. Shared by the clones, and
    /// changed by a reload ([`SlowLog::set_threshold`]).
    threshold_ns: Arc<AtomicU64>,
    queue: Option<mpsc::Sender<Msg>>,
}

impl std::fmt::Debug for SlowLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowLog")
            .field("threshold", &self.threshold())
            .finish_non_exhaustive()
    }
}

impl SlowLog {
    /// Start the task: plans are asked of `app` (read-only), rows written
    /// through the journal writer in `journal`. A zero `threshold` turns
    /// the log off until [`set_threshold`](Self::set_threshold) turns it
    /// on (the task waits idle). Call it within a tokio runtime.
    pub fn start(
        journal: watch::Receiver<WriterSlot>,
        app: DbOptions,
        threshold: Duration,
        every: Duration,
    ) -> SlowLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(task(journal, app, rx, every));
        SlowLog {
            threshold_ns: Arc::new(AtomicU64::new(nanos(threshold))),
            queue: Some(tx),
        }
    }

    /// A log that records nothing, ever.
    pub fn off() -> SlowLog {
        SlowLog {
            threshold_ns: Arc::new(AtomicU64::new(0)),
            queue: None,
        }
    }

    /// The threshold in force; zero: off.
    pub fn threshold(&self) -> Duration {
        Duration::from_nanos(self.threshold_ns.load(Ordering::Relaxed))
    }

    /// Change the threshold of this log and all its clones (a reload);
    /// zero turns it off. A log made with [`off`](Self::off) stays off.
    pub fn set_threshold(&self, threshold: Duration) {
        self.threshold_ns.store(nanos(threshold), Ordering::Relaxed);
    }

    /// Whether slow answers are recorded (callers keep the SQL only then).
    pub fn enabled(&self) -> bool {
        self.queue.is_some() && self.threshold_ns.load(Ordering::Relaxed) > 0
    }

    /// Whether an answer that took `elapsed` is slow.
    pub fn is_slow(&self, elapsed: Duration) -> bool {
        let t = self.threshold_ns.load(Ordering::Relaxed);
        t > 0 && nanos(elapsed) >= t
    }

    /// Queue `sample` for the task; never waits (dropped when it is behind).
    pub fn record(&self, sample: SlowSample) {
        let Some(queue) = &self.queue else { return };
        metrics::counter!("resilite_slow_queries_total", "kind" => sample.kind.as_str())
            .increment(1);
        if queue.try_send(Msg::Sample(sample, now_ms())).is_err() {
            tracing::debug!("the slow-query log is behind; a slow statement was not counted");
        }
    }

    /// Resolves once every slow answer recorded so far is in the journal,
    /// with its plan: `true`, or `false` when the write failed.
    pub fn flush(&self) -> impl Future<Output = bool> + Send + 'static {
        let queue = self.queue.clone();
        async move {
            let Some(queue) = queue else { return true };
            let (tx, rx) = oneshot::channel();
            queue.send(Msg::Flush(tx)).await.is_ok() && rx.await.unwrap_or(false)
        }
    }
}

/// A statement counted since the last write, and one of its texts (for
/// the plan).
struct Pending {
    record: SlowQueryRecord,
    raw: Vec<String>,
}

/// The plan of a statement, and the schema it was made on.
#[derive(Clone)]
struct Explained {
    schema_version: i64,
    plan: Vec<String>,
    scan: bool,
    suggestion: Option<String>,
}

struct TaskState {
    journal: watch::Receiver<WriterSlot>,
    app: DbOptions,
    pending: HashMap<String, Pending>,
    explained: HashMap<String, Explained>,
    conn: Option<Connection>,
}

async fn task(
    journal: watch::Receiver<WriterSlot>,
    app: DbOptions,
    mut rx: mpsc::Receiver<Msg>,
    every: Duration,
) {
    let mut state = TaskState {
        journal,
        app,
        pending: HashMap::new(),
        explained: HashMap::new(),
        conn: None,
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => { state.write().await; }
            msg = rx.recv() => match msg {
                Some(Msg::Sample(sample, at_ms)) => state.add(sample, at_ms),
                Some(Msg::Flush(reply)) => {
                    let written = state.write().await;
                    let _ = reply.send(written);
                }
                None => {
                    state.write().await;
                    return;
                }
            },
        }
    }
}

impl TaskState {
    fn add(&mut self, sample: SlowSample, at_ms: i64) {
        let sql = sample
            .sql
            .iter()
            .map(|s| normalise::sql(s))
            .collect::<Vec<_>>()
            .join("; ");
        let hash = normalise::hash(&[sample.kind.as_str(), &sql]);
        let ms = sample.duration.as_secs_f64() * 1000.0;
        if let Some(p) = self.pending.get_mut(&hash) {
            let r = &mut p.record;
            r.count += 1;
            r.total_ms += ms;
            r.max_ms = r.max_ms.max(ms);
            r.last_ms = ms;
            r.rows = sample.rows;
            r.last_seen_ms = at_ms;
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            return;
        }
        let record = SlowQueryRecord {
            hash: hash.clone(),
            kind: sample.kind,
            sql,
            count: 1,
            total_ms: ms,
            max_ms: ms,
            last_ms: ms,
            rows: sample.rows,
            plan: Vec::new(),
            scan: false,
            suggestion: None,
            first_seen_ms: at_ms,
            last_seen_ms: at_ms,
        };
        self.pending.insert(
            hash,
            Pending {
                record,
                raw: sample.sql,
            },
        );
    }

    /// Explain what needs it, then write and forget what is counted.
    async fn write(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        self.explain(&pending).await;
        let statements = pending
            .into_iter()
            .map(|mut p| {
                if let Some(e) = self.explained.get(&p.record.hash) {
                    p.record.plan = e.plan.clone();
                    p.record.scan = e.scan;
                    p.record.suggestion = e.suggestion.clone();
                }
                upsert_statement(&p.record)
            })
            .collect();
        match slot::write(&self.journal, Operation::Batch(statements)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(detail = %e.detail, "could not write the slow-query log to the journal");
                false
            }
        }
    }

    /// Ask SQLite for the plans not known for the current schema, on the
    /// task's read-only connection, on the blocking pool.
    async fn explain(&mut self, pending: &[Pending]) {
        let conn = self.conn.take();
        let app = self.app.clone();
        let known: HashMap<String, i64> = self
            .explained
            .iter()
            .map(|(h, e)| (h.clone(), e.schema_version))
            .collect();
        let asked: Vec<(String, Vec<String>)> = pending
            .iter()
            .map(|p| (p.record.hash.clone(), p.raw.clone()))
            .collect();
        let done = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => open_read_only(&app)?,
            };
            let version: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
            let asked: Vec<_> = asked
                .into_iter()
                .filter(|(hash, _)| known.get(hash) != Some(&version))
                .collect();
            if asked.is_empty() {
                return Ok::<_, Error>((conn, Vec::new()));
            }
            // A connection keeps the schema it last loaded for planning
            // (EXPLAIN QUERY PLAN is not re-planned after a schema
            // change): plans are made on a new one, kept for next time.
            drop(conn);
            let conn = open_read_only(&app)?;
            let version: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
            let plans = asked
                .into_iter()
                .map(|(hash, sqls)| {
                    let explained = explain_all(&conn, &sqls, version);
                    (hash, explained)
                })
                .collect();
            Ok((conn, plans))
        })
        .await
        .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))
        .and_then(|r| r);
        match done {
            Ok((conn, plans)) => {
                self.conn = Some(conn);
                self.explained.extend(plans);
            }
            Err(e) => {
                tracing::debug!(detail = %e.detail, "no query plan for the slow-query log");
            }
        }
    }
}

/// The plans of a statement's SQL texts together.
fn explain_all(conn: &Connection, sqls: &[String], schema_version: i64) -> Explained {
    let mut explained = Explained {
        schema_version,
        plan: Vec::new(),
        scan: false,
        suggestion: None,
    };
    let mut suggestions = Vec::new();
    for sql in sqls {
        let plan = match plan(conn, sql) {
            Ok(plan) => plan,
            Err(e) => vec![format!("no plan: {}", e.detail)],
        };
        for table in scanned_tables(&plan) {
            explained.scan = true;
            if let Some(s) = suggest(conn, &table, sql) {
                suggestions.push(s);
            }
        }
        explained.plan.extend(plan);
    }
    if !suggestions.is_empty() {
        suggestions.dedup();
        explained.suggestion = Some(suggestions.join("; "));
    }
    explained
}

/// `EXPLAIN QUERY PLAN` of `sql`, one line per step, indented by depth.
/// Only statements that read or change rows are explained.
pub fn plan(conn: &Connection, sql: &str) -> Result<Vec<String>> {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if !matches!(
        first.as_str(),
        "SELECT" | "WITH" | "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "VALUES"
    ) {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    // The plan does not depend on the values: every parameter is NULL.
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    let rows = stmt.query_map(rusqlite::params_from_iter(nulls), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut depth: HashMap<i64, usize> = HashMap::new();
    let mut lines = Vec::new();
    for row in rows {
        let (id, parent, detail) = row?;
        let d = depth.get(&parent).map_or(0, |d| d + 1);
        depth.insert(id, d);
        lines.push(format!("{}{detail}", "  ".repeat(d)));
    }
    Ok(lines)
}

/// The tables a plan reads by a full scan, without an index: `SCAN t`
/// (SQLite 3.36 on; `SCAN TABLE t` before) with no `USING ... INDEX`.
pub fn scanned_tables(plan: &[String]) -> Vec<String> {
    let mut tables = Vec::new();
    for line in plan {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix("SCAN ") else {
            continue;
        };
        if line.contains(" INDEX") || rest.starts_with("CONSTANT ROW") {
            continue;
        }
        let rest = rest.strip_prefix("TABLE ").unwrap_or(rest);
        if let Some(name) = rest.split_whitespace().next() {
            if !name.starts_with('(') && !tables.iter().any(|t| t == name) {
                tables.push(name.to_string());
            }
        }
    }
    tables
}

/// `CREATE INDEX ...` on the columns of `table` that `sql` compares in its
/// WHERE clause, when SQLite knows the table and its columns; `None` when
/// not confident (no WHERE, no such column, a view or subquery).
fn suggest(conn: &Connection, table: &str, sql: &str) -> Option<String> {
    let columns: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .ok()?;
        let rows = stmt.query_map([table], |r| r.get::<_, String>(0)).ok()?;
        rows.collect::<rusqlite::Result<_>>().ok()?
    };
    if columns.is_empty() {
        return None;
    }
    let compared = compared_columns(sql);
    let mut chosen: Vec<&str> = Vec::new();
    for name in &compared {
        if let Some(c) = columns.iter().find(|c| c.eq_ignore_ascii_case(name)) {
            if !chosen.contains(&c.as_str()) {
                chosen.push(c);
            }
        }
    }
    if chosen.is_empty() {
        return None;
    }
    Some(format!(
        "CREATE INDEX {table}_{} ON {table}({})",
        chosen.join("_"),
        chosen.join(", ")
    ))
}

/// The column names a statement compares in its WHERE clause: a name
/// (perhaps qualified, `a.col`) followed by `=`, `==`, `<`, `>`, `<=`,
/// `>=`, `IN`, `LIKE`, `GLOB`, `IS` or `BETWEEN`.
pub fn compared_columns(sql: &str) -> Vec<String> {
    let upper = sql.to_ascii_uppercase();
    let Some(start) = find_word(&upper, "WHERE") else {
        return Vec::new();
    };
    let mut end = sql.len();
    for word in ["GROUP", "ORDER", "LIMIT", "RETURNING", "WINDOW"] {
        if let Some(at) = find_word(&upper[start..], word) {
            end = end.min(start + at);
        }
    }
    let clause = &sql[start + 5..end];
    let tokens = tokens(clause);
    let mut columns = Vec::new();
    for pair in tokens.windows(2) {
        let (name, next) = (&pair[0], pair[1].to_ascii_uppercase());
        let is_op = matches!(
            next.as_str(),
            "=" | "==" | "<" | ">" | "<=" | ">=" | "IN" | "LIKE" | "GLOB" | "IS" | "BETWEEN"
        );
        let is_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '"');
        if is_op && is_name {
            let bare = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
            let keyword = matches!(
                bare.to_ascii_uppercase().as_str(),
                "AND" | "OR" | "NOT" | "NULL"
            );
            if !keyword && !columns.iter().any(|c: &String| c == bare) {
                columns.push(bare.to_string());
            }
        }
    }
    columns
}

/// Where `word` starts in `upper` as a whole word.
fn find_word(upper: &str, word: &str) -> Option<usize> {
    let bytes = upper.as_bytes();
    let mut from = 0;
    while let Some(at) = upper[from..].find(word) {
        let i = from + at;
        let before = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let j = i + word.len();
        let after = j >= bytes.len() || !(bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_');
        if before && after {
            return Some(i);
        }
        from = j;
    }
    None
}

/// Names (with dots and double quotes), operators and the rest, one token
/// each; string literals are skipped.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push("?".into());
        } else if c.is_alphanumeric() || c == '_' || c == '"' || c == '.' {
            let start = i;
            let mut quoted = false;
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '.'
                    || chars[i] == '"'
                    || quoted)
            {
                if chars[i] == '"' {
                    quoted = !quoted;
                }
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if matches!(c, '=' | '<' | '>' | '!') {
            let start = i;
            while i < chars.len() && matches!(chars[i], '=' | '<' | '>' | '!') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scan is found and an index on the compared column suggested; with
    /// the index, the plan searches and nothing is suggested.
    #[test]
    fn plans_find_scans_and_suggest_the_compared_column() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL)",
        )
        .unwrap();
        let sql = "SELECT * FROM orders WHERE customer = ?1 AND total > 10 ORDER BY id";
        let e = explain_all(&conn, &[sql.to_string()], 1);
        assert!(e.scan, "{:?}", e.plan);
        assert_eq!(
            e.suggestion.as_deref(),
            Some("CREATE INDEX orders_customer_total ON orders(customer, total)")
        );
        conn.execute_batch("CREATE INDEX orders_customer ON orders(customer)")
            .unwrap();
        let e = explain_all(&conn, &[sql.to_string()], 2);
        assert!(!e.scan, "{:?}", e.plan);
        assert_eq!(e.suggestion, None);
        // No WHERE: a scan, and nothing to suggest with confidence.
        let e = explain_all(&conn, &["SELECT count(*) FROM orders".to_string()], 2);
        assert_eq!(e.suggestion, None);
        assert_eq!(
            compared_columns("UPDATE t SET a = 1 WHERE o.\"b\" IN (1, 2) AND c LIKE 'x'"),
            ["b", "c"]
        );
    }
}
