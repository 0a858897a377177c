//! Writes and reads: every write goes through the `database` breaker to the
//! supervised writer; reads go to the read pool. Each answer is handed to
//! the audit hooks (`audit`): errors counted, slow answers logged.

use std::sync::atomic::Ordering;
use std::time::Instant;

use resilite_actors::retry_queue::DURABLE_KEY_PREFIX;
use resilite_actors::slot;
use resilite_actors::writer::Answered;
use resilite_actors::{
    AuditLevel, AuditStatus, Error, ErrorClass, Operation, OperationOutcome, QueryResult, Result,
    Statement, WriteContext, WriteOutcome,
};

use super::Runtime;

impl Runtime {
    /// Apply one statement; returns after it is committed (durable under
    /// the configured `synchronous` level).
    pub async fn execute(&self, stmt: Statement) -> Result<WriteOutcome> {
        let mut outcome = self.write(Operation::Statement(stmt)).await?;
        outcome
            .pop()
            .ok_or_else(|| Error::classed(ErrorClass::Internal, "writer returned no outcome"))
    }

    /// [`execute`](Self::execute), with who asked for it: the operation
    /// audit (`[audit] level`) records `context` with the write.
    pub async fn execute_with(
        &self,
        stmt: Statement,
        context: WriteContext,
    ) -> Result<WriteOutcome> {
        let mut outcome = self.write_with(Operation::Statement(stmt), context).await?;
        outcome
            .pop()
            .ok_or_else(|| Error::classed(ErrorClass::Internal, "writer returned no outcome"))
    }

    /// Apply several statements atomically: all are committed, or none.
    pub async fn batch(&self, stmts: Vec<Statement>) -> Result<Vec<WriteOutcome>> {
        self.write(Operation::Batch(stmts)).await
    }

    /// Apply an operation through the writer, answered after COMMIT.
    ///
    /// If the writer's connection thread is gone before taking the
    /// operation (it was never applied), it is sent to the restarted writer.
    pub async fn write(&self, op: Operation) -> Result<OperationOutcome> {
        self.write_context(op, None).await
    }

    /// [`write`](Self::write), with who asked for it: the operation audit
    /// (`[audit] level`) records `context` with the write.
    pub async fn write_with(
        &self,
        op: Operation,
        context: WriteContext,
    ) -> Result<OperationOutcome> {
        self.write_context(op, Some(Box::new(context))).await
    }

    pub(crate) async fn write_context(
        &self,
        op: Operation,
        context: Option<Box<WriteContext>>,
    ) -> Result<OperationOutcome> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(Error::unavailable("resilite is shutting down"));
        }
        // A caller's write is audited with its context, empty if none was
        // given (resilite's own writes, sent without one, are not).
        let context =
            context.or_else(|| (self.inner.audit_level != AuditLevel::Off).then(Box::default));
        // While the breaker is quiet, a fast success changes nothing in it:
        // only failures and slow calls take its lock.
        let permit = match self.inner.database.acquire() {
            Ok(permit) => permit,
            Err(open) => {
                let e = Error::from(open);
                self.audit_error("write", &e);
                // A durable write refused here is queued, and recorded so.
                let durable = matches!(&op, Operation::Once { key, .. } if key.starts_with(DURABLE_KEY_PREFIX));
                if !durable {
                    self.audit_outside(
                        &op,
                        context,
                        AuditStatus::Failed,
                        &e,
                        None,
                        Default::default(),
                    )
                    .await;
                }
                return Err(e);
            }
        };
        let started = Instant::now();
        // The operation comes back with its outcome: the slow-query log
        // reads its SQL there, with no copy made in case it is slow.
        let Answered { result, op } = slot::write_with(&self.inner.app, op, context).await;
        let elapsed = started.elapsed();
        if crate::metrics::sampled() {
            metrics::histogram!("resilite_write_duration_seconds").record(elapsed.as_secs_f64());
        }
        // Failures of the database itself count; a constraint or SQL error
        // means the database worked.
        let failed = matches!(&result, Err(e) if e.class.is_retryable_later() || e.class == ErrorClass::Corruption);
        permit.finish(!failed, elapsed);
        self.note_corruption("a write", &result);
        self.audit_write(op.as_ref(), elapsed, &result);
        result
    }

    /// Run a read-only statement on the read pool.
    pub async fn query(&self, stmt: Statement) -> Result<QueryResult> {
        let sql = self.slow_query_sql(&stmt);
        let started = Instant::now();
        let result = self.inner.readers.query(stmt).await;
        let elapsed = started.elapsed();
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("resilite_reads_total", "outcome" => outcome).increment(1);
        if crate::metrics::sampled() {
            metrics::histogram!("resilite_read_duration_seconds").record(elapsed.as_secs_f64());
        }
        self.note_corruption("a query", &result);
        self.audit_query(sql, elapsed, &result);
        result
    }
}
