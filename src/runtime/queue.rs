//! The durable retry queue and the dead-letter queue, as the runtime
//! offers them.

use resilite_actors::connection::read_blocking;
use resilite_actors::journal::queue;
use resilite_actors::maintenance::now_ms;
use resilite_actors::retry_queue::{
    self, EnqueueOptions, Entry, Handler, QueueStats, Resolution, RetryMsg, DEFAULT_ASK_TIMEOUT,
    SQL_KIND,
};
use resilite_actors::slot::{self, Slot};
use resilite_actors::{Error, ErrorClass, Operation, Result};

use super::Runtime;

impl Runtime {
    /// Store `op` in the durable retry queue without trying it first (e.g.
    /// while the application knows the database is unavailable); returns
    /// the queue id once the entry is committed to the journal.
    pub async fn enqueue_operation(&self, op: Operation, options: EnqueueOptions) -> Result<i64> {
        self.queue_operation(&op, &options, None).await
    }

    pub(super) async fn queue_operation(
        &self,
        op: &Operation,
        options: &EnqueueOptions,
        cause: Option<&Error>,
    ) -> Result<i64> {
        let payload = serde_json::to_string(op)
            .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?;
        self.enqueue_payload(SQL_KIND, payload, options, cause)
            .await
    }

    /// Queue an application payload for the handler registered for `kind`
    /// (at-least-once delivery, with the queue's backoff and DLQ).
    pub async fn enqueue(
        &self,
        kind: &str,
        payload: serde_json::Value,
        options: EnqueueOptions,
    ) -> Result<i64> {
        if kind == SQL_KIND {
            return Err(Error::bad_input(
                "payload kind `sql` is reserved: use execute_durable for SQL",
            ));
        }
        self.enqueue_payload(kind, payload.to_string(), &options, None)
            .await
    }

    async fn enqueue_payload(
        &self,
        kind: &str,
        payload: String,
        options: &EnqueueOptions,
        cause: Option<&Error>,
    ) -> Result<i64> {
        let stmt =
            retry_queue::enqueue_statement(kind, payload, options, &self.config().retry, cause)?;
        let outcome = slot::write(&self.inner.journal, Operation::Statement(stmt)).await?;
        metrics::counter!("resilite_retry_enqueued_total").increment(1);
        Ok(outcome.first().map_or(0, |o| o.last_insert_rowid))
    }

    /// Handle queued payloads of `kind` with `handler`. Its error's class
    /// decides: transient, unavailable and permission are retried with
    /// backoff, anything else goes to the dead-letter queue.
    pub fn register_handler(&self, kind: &str, handler: Handler) {
        if let Ok(mut handlers) = self.inner.handlers.write() {
            handlers.insert(kind.to_string(), handler);
        }
    }

    /// Counts of the retry queue by status, as the queue actor answers
    /// them (`unavailable` while it is down).
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        retry_queue::ask_stats(&self.inner.retry, DEFAULT_ASK_TIMEOUT).await
    }

    /// The dead-letter queue (with `all`, discarded entries too).
    pub async fn dead_letters(&self, all: bool) -> Result<Vec<Entry>> {
        self.read_journal(move |c| queue::dead_letters(c, all))
            .await
    }

    /// One queue entry by id, as the queue actor answers it (`retrying`
    /// while in flight; `unavailable` while the actor is down).
    pub async fn queue_entry(&self, id: i64) -> Result<Option<Entry>> {
        retry_queue::ask_entry(&self.inner.retry, id, DEFAULT_ASK_TIMEOUT).await
    }

    /// Send dead entry `id` (or, with `None`, every unresolved dead entry)
    /// back to the queue, due now; returns how many were requeued.
    pub async fn requeue(&self, id: Option<i64>) -> Result<usize> {
        let ops = queue::requeue(id, now_ms());
        let outcome = slot::write(&self.inner.journal, Operation::Batch(ops)).await?;
        let requeued = outcome.iter().map(|o| o.rows_affected).sum();
        self.wake_queue();
        Ok(requeued)
    }

    /// Discard dead entry `id` (kept in the journal, marked discarded);
    /// false when no such dead entry exists.
    pub async fn discard(&self, id: i64) -> Result<bool> {
        self.resolve(id, Resolution::Discarded).await
    }

    /// Mark dead entry `id` fixed by hand: not replayed, kept in the
    /// journal; false when no such dead entry exists.
    pub async fn mark_fixed(&self, id: i64) -> Result<bool> {
        self.resolve(id, Resolution::Fixed).await
    }

    /// Close dead entry `id` with `resolution` (`Requeued` sends it back
    /// to the queue, as [`Runtime::requeue`]); false when no such dead
    /// entry exists.
    pub async fn resolve(&self, id: i64, resolution: Resolution) -> Result<bool> {
        let ops = queue::resolve(id, resolution, now_ms());
        let outcome = slot::write(&self.inner.journal, Operation::Batch(ops)).await?;
        let resolved = outcome.iter().any(|o| o.rows_affected > 0);
        if resolved && resolution == Resolution::Requeued {
            self.wake_queue();
        }
        Ok(resolved)
    }

    pub(super) fn wake_queue(&self) {
        if let Slot::Running(queue) = &*self.inner.retry.borrow() {
            let _ = queue.send_message(RetryMsg::Tick);
        }
    }

    pub(super) async fn read_journal<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        read_blocking(&self.config().journal_db(), f).await
    }
}
