//! Replaying a batch of due entries, and the journal record of how it went.
//!
//! SQL goes to the application writer as one `write_many` (one commit, an
//! outcome for each entry), each operation an [`Operation::Once`] keyed by
//! the entry id, so an entry replayed again after a crash (between its
//! commit and the journal update) is not applied twice. Application
//! payloads go to the handler registered for their kind, at most
//! `handler_concurrency` at once; handlers must be idempotent (delivery is
//! at least once).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use tokio::sync::{watch, Semaphore};

use super::config::RetryConfig;
use super::entry::{Due, EntryStatus};
use super::SQL_KIND;
use crate::error::{Error, ErrorClass, Result};
use crate::events::Event;
use crate::journal::queue::{self, Failure};
use crate::maintenance::now_ms;
use crate::slot::{self, WriterSlot};
use crate::value::{Operation, Statement};
use crate::writer;

/// Idempotency keys of queue replays: this prefix and the entry id.
pub(crate) const QUEUE_KEY_PREFIX: &str = "resilite-queue:";
/// Idempotency keys the runtime gives durable writes (this prefix and a
/// number): forgotten with the queue's key once a queued copy succeeded.
pub const DURABLE_KEY_PREFIX: &str = "resilite-durable:";
/// The same error this many times in a row marks a dead entry poisoned.
const POISON_REPEATS: usize = 3;

/// What an application handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;
/// A handler of one application payload kind. Its error's class decides:
/// transient, unavailable and permission are retried, anything else is
/// dead-lettered.
pub type Handler = Arc<dyn Fn(serde_json::Value) -> HandlerFuture + Send + Sync>;
/// Handlers by payload kind, shared by the runtime and the actor.
pub type Handlers = Arc<RwLock<HashMap<String, Handler>>>;

/// The outcome of each replayed entry, by id.
pub(crate) type Outcomes = HashMap<i64, Result<()>>;

/// What a replay needs; cloned into the task that runs it.
#[derive(Clone)]
pub(crate) struct Replayer {
    /// The application writer.
    pub(crate) app: watch::Receiver<WriterSlot>,
    /// Application payload handlers.
    pub(crate) handlers: Handlers,
    /// Bounds the application handler calls running at once.
    pub(crate) handler_slots: Arc<Semaphore>,
}

impl Replayer {
    /// Apply each entry; the entries back, with their outcomes by id.
    pub(crate) async fn replay(self, entries: Vec<Due>) -> (Vec<Due>, Outcomes) {
        let mut outcomes = HashMap::new();
        let mut handled = tokio::task::JoinSet::new();
        let (mut sql_ids, mut sql_ops) = (Vec::new(), Vec::new());
        for entry in &entries {
            if entry.kind != SQL_KIND {
                let replay = self.replay_payload(entry);
                let id = entry.id;
                handled.spawn(async move { (id, replay.await) });
                continue;
            }
            match serde_json::from_str::<Operation>(&entry.payload) {
                Ok(op) => {
                    sql_ids.push(entry.id);
                    sql_ops.push(Operation::Once {
                        key: format!("{QUEUE_KEY_PREFIX}{}", entry.id),
                        op: Box::new(op),
                    });
                }
                Err(e) => {
                    let e = Error::bad_input(format!("the queued operation is not valid: {e}"));
                    outcomes.insert(entry.id, Err(e));
                }
            }
        }
        if !sql_ops.is_empty() {
            match slot::write_many(&self.app, sql_ops).await {
                Ok(results) => {
                    for (id, result) in sql_ids.into_iter().zip(results) {
                        outcomes.insert(id, result.map(|_| ()));
                    }
                }
                Err(e) => outcomes.extend(sql_ids.into_iter().map(|id| (id, Err(e.clone())))),
            }
        }
        while let Some(joined) = handled.join_next().await {
            if let Ok((id, outcome)) = joined {
                outcomes.insert(id, outcome);
            }
        }
        (entries, outcomes)
    }

    /// Hand an application payload to the handler of its kind, at most
    /// `handler_concurrency` at once.
    fn replay_payload(&self, entry: &Due) -> impl Future<Output = Result<()>> + Send + 'static {
        let handler = self
            .handlers
            .read()
            .ok()
            .and_then(|h| h.get(&entry.kind).cloned());
        let kind = entry.kind.clone();
        let payload = entry.payload.clone();
        let handler_slots = self.handler_slots.clone();
        async move {
            match (handler, serde_json::from_str(&payload)) {
                (Some(handler), Ok(payload)) => {
                    // Never closed: acquiring only waits for a slot.
                    let _slot = handler_slots.acquire_owned().await;
                    handler(payload).await
                }
                (Some(_), Err(e)) => Err(Error::bad_input(format!(
                    "the queued payload is not JSON: {e}"
                ))),
                (None, _) => Err(Error::unavailable(format!(
                    "no handler is registered for payload kind `{kind}`"
                ))),
            }
        }
    }
}

/// How a replayed batch went, as the journal will record it.
pub(crate) struct Record {
    /// The journal updates, one transaction.
    pub(crate) updates: Vec<Statement>,
    /// The idempotency keys of replayed SQL, to go once this is recorded:
    /// the queue's, and a durable write's own.
    pub(crate) sql_done: Vec<String>,
    /// One failed in a way that may pass: the target may still be down.
    pub(crate) still_failing: bool,
}

/// The record of `entries` after their replay (an entry without an outcome
/// counts as failed: its replay task panicked).
pub(crate) fn record_of(entries: &[Due], mut outcomes: Outcomes, config: &RetryConfig) -> Record {
    let mut record = Record {
        updates: Vec::new(),
        sql_done: Vec::new(),
        still_failing: false,
    };
    let mut succeeded = Vec::new();
    for entry in entries {
        let outcome = outcomes.remove(&entry.id).unwrap_or_else(|| {
            Err(Error::classed(
                ErrorClass::Internal,
                "the replay task panicked",
            ))
        });
        match outcome {
            Ok(()) => {
                succeeded.push(entry.id);
                if entry.kind == SQL_KIND {
                    record
                        .sql_done
                        .push(format!("{QUEUE_KEY_PREFIX}{}", entry.id));
                    if let Ok(Operation::Once { key, .. }) = serde_json::from_str(&entry.payload) {
                        if key.starts_with(DURABLE_KEY_PREFIX) {
                            record.sql_done.push(key);
                        }
                    }
                }
            }
            Err(e) => {
                record.still_failing |= e.class.is_retryable_later();
                record
                    .updates
                    .push(crate::error_log::statement("retry_queue", &e));
                let failed = failure(entry, e, config);
                if failed.dead_reason.is_some() {
                    let gave_up = failed.error.class.is_retryable_later();
                    let event = Event::dead_lettered(
                        failed.id,
                        &entry.kind,
                        failed.attempts,
                        gave_up,
                        &failed.error,
                    );
                    record.updates.push(event.statement());
                }
                record.updates.push(queue::failed(failed));
            }
        }
    }
    if !succeeded.is_empty() {
        metrics::counter!("resilite_retry_replays_total", "outcome" => "succeeded")
            .increment(succeeded.len() as u64);
        record.updates.push(queue::succeeded(&succeeded, now_ms()));
    }
    record
}

/// What becomes of `entry` after a failed replay: back to the queue with
/// its next due time, or to the dead-letter queue.
fn failure(entry: &Due, e: Error, config: &RetryConfig) -> Failure {
    let now = now_ms();
    let attempts = entry.attempts + 1;
    let retryable = e.class.is_retryable_later();
    let mut history: Vec<serde_json::Value> =
        serde_json::from_str(&entry.errors).unwrap_or_default();
    history.push(serde_json::json!({ "at_ms": now, "class": e.class, "error": e.detail }));
    let poisoned = e.class == ErrorClass::Internal
        || (history.len() >= POISON_REPEATS
            && history[history.len() - POISON_REPEATS..]
                .iter()
                .all(|h| h["error"] == serde_json::Value::String(e.detail.clone())));
    let dead_reason = if !retryable {
        Some(format!(
            "permanent error ({}): {}",
            e.class.as_str(),
            e.detail
        ))
    } else if attempts >= entry.max_attempts {
        Some(format!(
            "gave up after {attempts} attempts; last error: {}",
            e.detail
        ))
    } else {
        None
    };
    let status = match dead_reason {
        Some(_) => EntryStatus::Dead,
        None => EntryStatus::Queued,
    };
    let outcome = if status == EntryStatus::Dead {
        "dead"
    } else {
        "retry"
    };
    metrics::counter!("resilite_retry_replays_total", "outcome" => outcome).increment(1);
    if let Some(reason) = &dead_reason {
        tracing::warn!(id = entry.id, kind = %entry.kind, reason = reason.as_str(), "queue entry moved to the dead-letter queue");
    }
    Failure {
        id: entry.id,
        status,
        attempts,
        next_retry_at_ms: now + config.delay(attempts as u32).as_millis() as i64,
        error: e,
        errors: serde_json::Value::Array(history).to_string(),
        poisoned,
        dead_reason,
        now_ms: now,
    }
}

/// Write `record` to the journal, call `recorded` (its entries are no
/// longer in flight), then delete the idempotency keys of its replayed SQL
/// (their success is recorded).
pub(crate) async fn write_record(
    journal: watch::Receiver<WriterSlot>,
    app: watch::Receiver<WriterSlot>,
    record: Record,
    recorded: impl FnOnce(),
) -> Result<()> {
    let written = slot::write(&journal, Operation::Batch(record.updates)).await;
    recorded();
    written?;
    if !record.sql_done.is_empty() {
        let keys = serde_json::to_string(&record.sql_done).unwrap_or_else(|_| "[]".into());
        let forget = writer::forget_keys_statement("", keys);
        if let Err(e) = slot::write(&app, Operation::Statement(forget)).await {
            tracing::warn!(detail = %e.detail, "could not delete the idempotency keys of replayed entries");
        }
    }
    Ok(())
}

/// Delete the idempotency keys claimed more than `retention_ms` ago.
pub(crate) async fn forget_old_keys(app: watch::Receiver<WriterSlot>, retention_ms: i64) {
    let prune = writer::expire_keys_statement(now_ms() - retention_ms);
    match slot::write(&app, Operation::Statement(prune)).await {
        Ok(outcome) => {
            let forgotten = outcome.first().map_or(0, |o| o.rows_affected);
            if forgotten > 0 {
                tracing::info!(forgotten, "idempotency keys past their retention deleted");
            }
        }
        // The table appears with the first key claimed; before that this
        // fixed, valid statement can only fail as SQL naming a missing table.
        Err(e) if e.class == ErrorClass::Sql => {}
        Err(e) => tracing::warn!(detail = %e.detail, "could not delete old idempotency keys"),
    }
}
