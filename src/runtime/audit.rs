//! The audit trail the runtime keeps in the journal: events with
//! explanations, the deduplicated error log and the slow-query log; their
//! reads (`rt.events`, `rt.errors`, `rt.slow_queries`), `rt.flush_logs`,
//! and the hooks the write and query paths call with each answer.
//!
//! The hooks never wait and take no lock on a success: a fast success is
//! one comparison; an error is counted in memory (the error log's map), a
//! slow answer is sent with `try_send` to the slow-query task. The journal
//! is written by tasks behind them. A task here runs the journal's pruning
//! pass (`[audit] retention`, [`journal::prune_statements`]) at start and
//! every [`PRUNE_EVERY`].

use std::time::Duration;

use resilite_actors::error_log::{self, ErrorLog};
use resilite_actors::events::Events;
use resilite_actors::journal;
use resilite_actors::maintenance::now_ms;
use resilite_actors::slot::{self, Slot, WriterSlot};
use resilite_actors::slow_log::{self, SlowLog, SlowSample};
use resilite_actors::writer::op_kind;
use resilite_actors::{
    AuditPage, AuditQuery, AuditRecord, AuditStatus, Error, ErrorRecord, Event, EventPage,
    EventQuery, Operation, OperationOutcome, QueryResult, Result, SlowKind, SlowQueryRecord,
    Statement, WriteContext,
};
use tokio::sync::watch;

use super::Runtime;
use crate::config::Config;

/// How often the journal's pruning pass runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// An error signature seen this often is kept past the retention.
pub const DEFAULT_KEEP_FREQUENT_ERRORS: u64 = 100;

/// The runtime's recorders.
pub(super) struct Audit {
    /// Events from the runtime's own actions (restores, recoveries).
    pub(super) events: Events,
    /// Errors answered to callers.
    pub(super) errors: ErrorLog,
    /// Slow writes and queries.
    pub(super) slow: SlowLog,
}

impl Audit {
    /// Start the recorders' tasks and the pruning task, all writing through
    /// the journal writer in `journal`.
    pub(super) fn start(
        config: &Config,
        current: watch::Receiver<std::sync::Arc<Config>>,
        journal: &watch::Receiver<WriterSlot>,
    ) -> Audit {
        tokio::spawn(prune(journal.clone(), current));
        Audit {
            events: Events::start(journal.clone()),
            errors: ErrorLog::start(journal.clone(), error_log::DEFAULT_FLUSH_EVERY),
            slow: SlowLog::start(
                journal.clone(),
                config.app_db(),
                config.audit.slow_threshold,
                slow_log::DEFAULT_FLUSH_EVERY,
            ),
        }
    }
}

/// Delete what is past `[audit] retention` (as `current` has it at each
/// run) now and every [`PRUNE_EVERY`], until the journal writer stops
/// (the task ends then, not at the next run).
async fn prune(
    mut journal: watch::Receiver<WriterSlot>,
    current: watch::Receiver<std::sync::Arc<Config>>,
) {
    loop {
        let retention = current.borrow().audit.retention;
        let cutoff =
            now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let statements = journal::prune_statements(cutoff, DEFAULT_KEEP_FREQUENT_ERRORS);
        if let Err(e) = slot::write(&journal, Operation::Batch(statements)).await {
            if matches!(*journal.borrow(), Slot::Stopped) {
                return;
            }
            tracing::warn!(detail = %e.detail, "could not prune the journal's records past [audit] retention");
        }
        let next_run = tokio::time::sleep(PRUNE_EVERY);
        tokio::pin!(next_run);
        loop {
            tokio::select! {
                () = &mut next_run => break,
                changed = journal.changed() => {
                    if changed.is_err() || matches!(*journal.borrow(), Slot::Stopped) {
                        return;
                    }
                }
            }
        }
    }
}

/// `error`, answered to a caller of `component`: counted in the error log
/// (every class), and logged at debug when the caller's request caused it
/// (a constraint, SQL, bad input, a refused statement...), which nothing
/// on its way logs. A failure on the database's side is logged at warn
/// where it is met or answered (the writer's failed batches, HTTP's 5xx).
fn answered(errors: &ErrorLog, component: &str, error: &Error) {
    if error.class.is_caller_error() {
        error.log(&format!("{component} answered a caller's error"));
    }
    errors.record(component, error);
}

/// The SQL texts of `op`'s statements.
fn sql_of(op: &Operation) -> Vec<String> {
    match op {
        Operation::Statement(s) => vec![s.sql.clone()],
        Operation::Batch(list) => list.iter().map(|s| s.sql.clone()).collect(),
        Operation::Once { op, .. } => sql_of(op),
    }
}

impl Runtime {
    /// One page of the journal's events, newest first: `next` is the
    /// `before` of the next (older) page.
    pub async fn events(&self, query: EventQuery) -> Result<EventPage> {
        self.read_journal(move |c| journal::events::page(c, &query))
            .await
    }

    /// One page of the operation audit (`[audit] level`), newest first:
    /// `next` is the `before` of the next (older) page.
    pub async fn audit(&self, query: AuditQuery) -> Result<AuditPage> {
        // Without the operation log the writer answers its callers before
        // their records are appended: wait for those of every write
        // answered so far (a writer that is down has none pending).
        if let Ok(writer) = self.writer().await {
            let _ = ractor::call!(writer, resilite_actors::WriterMsg::Drain);
        }
        self.read_journal(move |c| journal::audit::page(c, &query))
            .await
    }

    /// Record an operation that never reached the writer's transaction
    /// (refused by the breaker, queued for replay) in the operation audit,
    /// through the writer, when the level keeps it.
    pub(super) async fn audit_outside(
        &self,
        op: &Operation,
        context: Option<Box<WriteContext>>,
        status: AuditStatus,
        error: &Error,
        queue_id: Option<i64>,
        waited: Duration,
    ) {
        if !self.inner.audit_level.records(status) {
            return;
        }
        let record = AuditRecord {
            id: 0,
            at_ms: now_ms(),
            batch: None,
            kind: op_kind(op).0,
            status,
            context: context.map(|c| *c).unwrap_or_default(),
            tables: Vec::new(),
            rows: 0,
            error_class: Some(error.class.as_str().to_owned()),
            error: Some(error.message.clone()),
            duration_us: waited.as_micros() as u64,
            queue_id,
        };
        // Through the journal writer, which also writes the queue entry:
        // no second writer on the journal contends with it.
        let insert = Operation::Statement(journal::audit::insert_statement(&record));
        if let Err(e) = slot::write(&self.inner.journal, insert).await {
            tracing::warn!(detail = %e.detail, "an operation audit record was not written");
        }
    }

    /// The error log: one row per error signature with its count, most
    /// recently seen first. Counts reach the journal within a second
    /// ([`flush_logs`](Self::flush_logs) writes them at once).
    pub async fn errors(&self) -> Result<Vec<ErrorRecord>> {
        self.read_journal(journal::errors::list).await
    }

    /// Mark error signature `signature` resolved (it opens again if it is
    /// seen again); `false` when there is no such signature.
    pub async fn resolve_error(&self, signature: &str) -> Result<bool> {
        if signature.is_empty() || !signature.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::bad_input(format!(
                "`{signature}` is not an error signature: use the hex `signature` that GET /v1/errors or `resilite errors` lists"
            )));
        }
        self.flush_logs().await?;
        let op = Operation::Statement(journal::errors::resolve_statement(signature));
        let outcome = slot::write(&self.inner.journal, op).await?;
        Ok(outcome.first().is_some_and(|o| o.rows_affected > 0))
    }

    /// The slow-query log: one row per normalised statement, the slowest in
    /// total first.
    pub async fn slow_queries(&self) -> Result<Vec<SlowQueryRecord>> {
        self.read_journal(journal::slow_queries::list).await
    }

    /// Write what the event, error and slow-query recorders hold to the
    /// journal now (they do so every second, and at shutdown).
    pub async fn flush_logs(&self) -> Result<()> {
        let audit = &self.inner.audit;
        let (slow, errors, events) = tokio::join!(
            audit.slow.flush(),
            audit.errors.flush(),
            audit.events.flush()
        );
        if slow && errors && events {
            Ok(())
        } else {
            Err(Error::unavailable(
                "the audit trail could not be written to the journal (the log says why)",
            ))
        }
    }

    /// Record `event` in the journal (without waiting).
    pub(super) fn record_event(&self, event: Event) {
        self.inner.audit.events.record(event);
    }

    /// The SQL of a query when the slow-query log is on.
    pub(super) fn slow_query_sql(&self, stmt: &Statement) -> Option<String> {
        self.inner.audit.slow.enabled().then(|| stmt.sql.clone())
    }

    /// Count an error answered to a caller of `component`.
    pub(super) fn audit_error(&self, component: &str, error: &Error) {
        answered(&self.inner.audit.errors, component, error);
    }

    /// What a write answered after `elapsed`: its error counted, a slow one
    /// sent to the slow-query log.
    pub(super) fn audit_write(
        &self,
        op: Option<&Operation>,
        elapsed: Duration,
        result: &Result<OperationOutcome>,
    ) {
        let audit = &self.inner.audit;
        match result {
            Err(e) => answered(&audit.errors, "write", e),
            Ok(outcome) if audit.slow.is_slow(elapsed) => {
                if let Some(op) = op {
                    audit.slow.record(SlowSample {
                        kind: SlowKind::Write,
                        sql: sql_of(op),
                        duration: elapsed,
                        rows: outcome.iter().map(|o| o.rows_affected as u64).sum(),
                    });
                }
            }
            Ok(_) => {}
        }
    }

    /// What a query answered after `elapsed`, like [`audit_write`](Self::audit_write).
    pub(super) fn audit_query(
        &self,
        sql: Option<String>,
        elapsed: Duration,
        result: &Result<QueryResult>,
    ) {
        let audit = &self.inner.audit;
        match result {
            Err(e) => answered(&audit.errors, "query", e),
            Ok(rows) if audit.slow.is_slow(elapsed) => {
                if let Some(sql) = sql {
                    audit.slow.record(SlowSample {
                        kind: SlowKind::Query,
                        sql: vec![sql],
                        duration: elapsed,
                        rows: rows.rows.len() as u64,
                    });
                }
            }
            Ok(_) => {}
        }
    }
}

/// An [`EventQuery`] from the text a person types (the CLI's flags, the
/// HTTP query string): `since` a duration back from now (`"1h"`, `"7days"`),
/// `kind` and `severity` by name. Bad text is an error saying what is
/// allowed.
pub(crate) fn event_query(
    since: Option<&str>,
    kind: Option<&str>,
    severity: Option<&str>,
    limit: Option<usize>,
    before: Option<i64>,
) -> Result<EventQuery> {
    use resilite_actors::{EventKind, Severity};
    let since_ms = since.map(since_ms).transpose()?;
    let kind = kind
        .map(|k| {
            EventKind::parse(k).ok_or_else(|| {
                let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                Error::bad_input(format!(
                    "kind = `{k}` is not an event kind: use one of {}",
                    all.join(", ")
                ))
            })
        })
        .transpose()?;
    let severity = severity
        .map(|s| {
            Severity::parse(s).ok_or_else(|| {
                Error::bad_input(format!(
                    "severity = `{s}` is not a severity: use info, warning or critical (that severity or worse is shown)"
                ))
            })
        })
        .transpose()?;
    if limit == Some(0) || limit.is_some_and(|l| l > journal::events::MAX_PAGE) {
        return Err(Error::bad_input(format!(
            "limit must be between 1 and {} events per page",
            journal::events::MAX_PAGE
        )));
    }
    Ok(EventQuery {
        since_ms,
        kind,
        severity,
        before,
        limit,
    })
}

/// The time `text` (a duration, e.g. `1h`) back from now, in ms since the
/// Unix epoch.
fn since_ms(text: &str) -> Result<i64> {
    humantime::parse_duration(text)
        .map(|d| now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
        .map_err(|e| {
            Error::bad_input(format!(
                "since = `{text}` is not a duration ({e}): give how far back to look, e.g. 30m, 1h, 7days"
            ))
        })
}

/// An [`AuditQuery`] from the text a person types (the CLI's flags, the
/// HTTP query string), like [`event_query`].
pub(crate) fn audit_query(
    since: Option<&str>,
    status: Option<&str>,
    table: Option<&str>,
    limit: Option<usize>,
    before: Option<i64>,
) -> Result<AuditQuery> {
    let since_ms = since.map(since_ms).transpose()?;
    let status = status
        .map(|s| {
            AuditStatus::parse(s).ok_or_else(|| {
                let all: Vec<&str> = AuditStatus::ALL.iter().map(|s| s.as_str()).collect();
                Error::bad_input(format!(
                    "status = `{s}` is not an operation status: use one of {}",
                    all.join(", ")
                ))
            })
        })
        .transpose()?;
    if table.is_some_and(str::is_empty) {
        return Err(Error::bad_input(
            "table is empty: name the table whose writes to show, or leave it out",
        ));
    }
    if limit == Some(0) || limit.is_some_and(|l| l > journal::audit::MAX_PAGE) {
        return Err(Error::bad_input(format!(
            "limit must be between 1 and {} records per page",
            journal::audit::MAX_PAGE
        )));
    }
    Ok(AuditQuery {
        since_ms,
        status,
        table: table.map(str::to_owned),
        before,
        limit,
    })
}
