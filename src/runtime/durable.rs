//! Durable writes: applied now, or queued in the journal, and answered
//! within `retry.durable_answer_within` either way.
//!
//! Each durable write is sent as an [`Operation::Once`] with a key of its
//! own (`resilite-durable:<n>`). A write that fails in a way that may pass
//! was not applied: it is queued as the caller sent it. When the writer
//! does not answer within the bound (the database locked, a batch stuck in
//! SQLite's busy wait), the write is queued with its key while it stays
//! in flight, and the caller is answered `Queued`: if the in-flight write
//! commits after all, the queued copy finds its key claimed and is not
//! applied again; if it fails, the queue has it. Keys of writes answered `Applied` are useless from then on: they
//! are forgotten in one statement per second, so the key table holds only
//! the keys of queued writes, until their queued copy succeeds (or
//! `retry.key_retention` passes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilite_actors::maintenance::now_ms;
use resilite_actors::retry_queue::{EnqueueOptions, DURABLE_KEY_PREFIX};
use resilite_actors::slot;
use resilite_actors::writer::forget_keys_statement;
use resilite_actors::{AuditStatus, Error, Operation, OperationOutcome, Result, WriteContext};
use serde::Serialize;

use super::Runtime;

/// How often the keys of applied durable writes are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(1);

/// What became of a durable write.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Durable {
    /// Committed now.
    Applied {
        /// One outcome per statement.
        results: OperationOutcome,
    },
    /// Stored in the retry queue (committed to the journal); replayed later.
    Queued {
        /// The queue entry's id.
        id: i64,
    },
}

/// The keys given to durable writes, and those to forget.
pub(super) struct DurableKeys {
    /// The next key's number: starts at the start time in nanoseconds, so
    /// a restart never gives a key still remembered from before.
    next: AtomicU64,
    applied: Mutex<Vec<u64>>,
}

impl DurableKeys {
    pub(super) fn new() -> DurableKeys {
        DurableKeys {
            next: AtomicU64::new(now_ms() as u64 * 1_000_000),
            applied: Mutex::new(Vec::new()),
        }
    }

    /// `op` keyed for exactly-once, with its key's number; an operation
    /// that has a key of the caller's is kept as it is.
    fn key(&self, op: Operation) -> (Operation, Option<u64>) {
        if matches!(op, Operation::Once { .. }) {
            return (op, None);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (Self::keyed(op, Some(n)), Some(n))
    }

    /// `op` under the key numbered `n` (as it is without one).
    fn keyed(op: Operation, n: Option<u64>) -> Operation {
        match n {
            Some(n) => Operation::Once {
                key: format!("{DURABLE_KEY_PREFIX}{n}"),
                op: Box::new(op),
            },
            None => op,
        }
    }

    fn applied(&self, n: u64) {
        if let Ok(mut applied) = self.applied.lock() {
            applied.push(n);
        }
    }

    fn take(&self) -> Vec<u64> {
        self.applied
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }
}

impl Runtime {
    /// Apply `op` now if the database takes it; if it fails in a way that
    /// may pass (transient, unavailable, permission), or is not answered
    /// within `retry.durable_answer_within`, store it in the durable retry
    /// queue and answer `Queued` once that is committed: exactly once
    /// either way (see the module doc). Other errors (constraint, SQL, bad
    /// input) are returned as they are.
    pub async fn execute_durable(&self, op: Operation, options: EnqueueOptions) -> Result<Durable> {
        self.durable_with(op, options, None).await
    }

    /// [`execute_durable`](Self::execute_durable) with who asked for it
    /// (the operation audit).
    pub(crate) async fn durable_with(
        &self,
        op: Operation,
        options: EnqueueOptions,
        context: Option<Box<WriteContext>>,
    ) -> Result<Durable> {
        options.validate()?;
        let (in_flight, key) = self.inner.durable_keys.key(op.clone());
        let bound = self.config().retry.durable_answer_within;
        let started = std::time::Instant::now();
        // Not answered within the bound: the write is dropped here, but a
        // write the writer already took is not stopped by that; its key,
        // claimed in its own transaction, keeps it and the queued copy to
        // one. (One it had not taken yet is never applied.)
        let write = self.write_context(in_flight, context.clone());
        let (queued, cause) = match tokio::time::timeout(bound, write).await {
            Ok(Ok(results)) => {
                if let Some(n) = key {
                    self.inner.durable_keys.applied(n);
                }
                return Ok(Durable::Applied { results });
            }
            // Failed: nothing of it was applied, it is queued as sent.
            Ok(Err(e)) if e.class.is_retryable_later() => (op, e),
            Ok(Err(e)) => return Err(e),
            Err(_) => (
                DurableKeys::keyed(op, key),
                Error::unavailable(format!(
                    "no answer from the writer within {} (retry.durable_answer_within); the write stays in flight and its key keeps it to one",
                    humantime::format_duration(bound)
                )),
            ),
        };
        let id = self
            .queue_operation(&queued, &options, Some(&cause))
            .await?;
        tracing::info!(id, class = cause.class.as_str(), "write queued for replay");
        self.audit_outside(
            &queued,
            context,
            AuditStatus::Queued,
            &cause,
            Some(id),
            started.elapsed(),
        )
        .await;
        Ok(Durable::Queued { id })
    }
}

/// Forget the keys of applied durable writes, once a second, through the
/// writer; ends with the runtime.
pub(super) fn forget_applied_keys(rt: &Runtime) {
    let weak = Arc::downgrade(&rt.inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FORGET_EVERY).await;
            let Some(inner) = weak.upgrade() else { return };
            let keys = inner.durable_keys.take();
            if keys.is_empty() {
                continue;
            }
            let ids = serde_json::to_string(&keys).unwrap_or_else(|_| "[]".into());
            let forget = Operation::Statement(forget_keys_statement(DURABLE_KEY_PREFIX, ids));
            if let Err(e) = slot::write(&inner.app, forget).await {
                tracing::debug!(error = %e, "keys of applied durable writes not forgotten now; they expire with retry.key_retention");
            }
        }
    });
}
