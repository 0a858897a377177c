//! The deduplicated error log: every error answered to a caller and every
//! failure an actor logs is counted under its signature (a hash of its
//! class, SQLite's extended code and its message with literals taken out),
//! so a burst of one error is one row with a count.
//!
//! [`ErrorLog`] counts in memory (a map from signature to count and last
//! sighting, under a lock held for one map update, never across a wait)
//! and a task writes the counts to the journal as upserts every
//! [`DEFAULT_FLUSH_EVERY`], on [`ErrorLog::flush`] and when the last handle
//! is dropped. Actors that write the journal in batches of their own add
//! [`statement`] to them instead. Both count `resilite_errors_total{class}`.
//!
//! The SQL is in [`journal::errors`](crate::journal::errors).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{printable, Error, ErrorClass};
use crate::events::Severity;
use crate::journal::errors::{upsert_statement, ErrorRecord};
use crate::maintenance::now_ms;
use crate::normalise;
use crate::slot::{self, WriterSlot};
use crate::value::{Operation, Statement};

/// How often counted errors are written to the journal.
pub const DEFAULT_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Signatures counted in memory between two flushes, at most; errors with
/// a new signature past it are logged but not counted (a flood of
/// distinct messages must not grow memory without bound).
pub const DEFAULT_MAX_PENDING: usize = 10_000;
/// Most characters of an example message kept.
const MAX_EXAMPLE: usize = 500;

/// The severity of an error of `class`: what needs a person is critical
/// (a damaged file, a bug), what resilite copes with a warning, what the
/// caller's own request caused is for the record.
pub fn severity(class: ErrorClass) -> Severity {
    match class {
        ErrorClass::Corruption | ErrorClass::Internal => Severity::Critical,
        ErrorClass::Transient
        | ErrorClass::Permission
        | ErrorClass::Timeout
        | ErrorClass::Unavailable => Severity::Warning,
        _ => Severity::Info,
    }
}

/// One sighting of `error` in `component`, as a row of count 1.
pub fn occurrence(component: &str, error: &Error) -> ErrorRecord {
    let message = normalise::message(&error.detail);
    let class = error.class.as_str();
    let code = error.code.map(|c| c.to_string()).unwrap_or_default();
    let now = now_ms();
    ErrorRecord {
        signature: normalise::hash(&[class, &code, &message]),
        class: class.to_string(),
        code: error.code,
        message,
        example: printable(&error.detail, MAX_EXAMPLE),
        component: component.to_string(),
        severity: severity(error.class),
        count: 1,
        first_seen_ms: now,
        last_seen_ms: now,
        resolved: false,
    }
}

/// The statement counting one sighting of `error` in `component`, for who
/// writes the journal in batches of its own.
pub fn statement(component: &str, error: &Error) -> Statement {
    count_metric(error.class);
    upsert_statement(&occurrence(component, error))
}

fn count_metric(class: ErrorClass) {
    metrics::counter!("resilite_errors_total", "class" => class.as_str()).increment(1);
}

type Pending = Arc<Mutex<HashMap<String, ErrorRecord>>>;

/// Counts errors in memory and has them written to the journal. Cloneable;
/// the task behind it writes what is left and ends when the last clone is
/// dropped.
#[derive(Clone)]
pub struct ErrorLog {
    pending: Pending,
    flushes: Option<mpsc::Sender<oneshot::Sender<bool>>>,
}

impl std::fmt::Debug for ErrorLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorLog").finish_non_exhaustive()
    }
}

impl ErrorLog {
    /// Start the task writing counts through the journal writer in
    /// `journal` every `every`. Call it within a tokio runtime.
    pub fn start(journal: watch::Receiver<WriterSlot>, every: Duration) -> ErrorLog {
        let pending = Pending::default();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(flush_task(journal, pending.clone(), rx, every));
        ErrorLog {
            pending,
            flushes: Some(tx),
        }
    }

    /// An error log that counts the metric but keeps nothing (an actor
    /// started alone, without a journal).
    pub fn none() -> ErrorLog {
        ErrorLog {
            pending: Pending::default(),
            flushes: None,
        }
    }

    /// Count one sighting of `error` in `component`.
    pub fn record(&self, component: &str, error: &Error) {
        count_metric(error.class);
        if self.flushes.is_none() {
            return;
        }
        let seen = occurrence(component, error);
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if let Some(row) = pending.get_mut(&seen.signature) {
            row.count += 1;
            row.last_seen_ms = seen.last_seen_ms;
            row.example = seen.example;
            row.component = seen.component;
        } else if pending.len() < DEFAULT_MAX_PENDING {
            pending.insert(seen.signature.clone(), seen);
        }
    }

    /// Resolves once every error counted so far is in the journal: `true`,
    /// or `false` when the write failed.
    pub fn flush(&self) -> impl Future<Output = bool> + Send + 'static {
        let flushes = self.flushes.clone();
        async move {
            let Some(flushes) = flushes else { return true };
            let (tx, rx) = oneshot::channel();
            flushes.send(tx).await.is_ok() && rx.await.unwrap_or(false)
        }
    }
}

/// Write the counts every `every` and on each flush asked for; write what
/// is left and end when every handle is gone.
async fn flush_task(
    journal: watch::Receiver<WriterSlot>,
    pending: Pending,
    mut rx: mpsc::Receiver<oneshot::Sender<bool>>,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => { write(&journal, &pending).await; }
            asked = rx.recv() => match asked {
                Some(reply) => {
                    let written = write(&journal, &pending).await;
                    let _ = reply.send(written);
                }
                None => {
                    write(&journal, &pending).await;
                    return;
                }
            },
        }
    }
}

/// Write and forget what is counted; `true` when written (or nothing was).
async fn write(journal: &watch::Receiver<WriterSlot>, pending: &Pending) -> bool {
    let rows: Vec<ErrorRecord> = match pending.lock() {
        Ok(mut p) => p.drain().map(|(_, r)| r).collect(),
        Err(_) => return false,
    };
    if rows.is_empty() {
        return true;
    }
    let statements = rows.iter().map(upsert_statement).collect();
    match slot::write(journal, Operation::Batch(statements)).await {
        Ok(_) => true,
        Err(e) => {
            let lost: u64 = rows.iter().map(|r| r.count).sum();
            tracing::warn!(detail = %e.detail, lost, "could not write the error log to the journal");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same error with different values in its message has one
    /// signature; another class or message has another.
    #[test]
    fn signatures_ignore_literal_values() {
        let e = |detail: &str, class| Error::new(class, "m", detail);
        let a = occurrence(
            "execute",
            &e(
                "UNIQUE constraint failed: t.id; sql: INSERT INTO t VALUES (1, 'a')",
                ErrorClass::Constraint,
            ),
        );
        let b = occurrence(
            "execute",
            &e(
                "UNIQUE constraint failed: t.id; sql: INSERT INTO t VALUES (22, 'bb')",
                ErrorClass::Constraint,
            ),
        );
        let c = occurrence(
            "execute",
            &e(
                "UNIQUE constraint failed: t.id; sql: INSERT INTO t VALUES (1, 'a')",
                ErrorClass::Sql,
            ),
        );
        let d = occurrence("execute", &e("no such table: u", ErrorClass::Constraint));
        assert_eq!(a.signature, b.signature);
        assert_ne!(a.signature, c.signature);
        assert_ne!(a.signature, d.signature);
        assert_eq!(
            a.message,
            "UNIQUE constraint failed: t.id; sql: INSERT INTO t VALUES (?)"
        );
    }
}
