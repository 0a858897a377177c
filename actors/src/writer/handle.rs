//! [`WriterHandle`]: the hot path to a writer's connection thread.

use crate::audit::WriteContext;
use crate::error::{Error, ErrorClass, Result};
use crate::value::{Operation, OperationOutcome};

use super::complete::{Answered, WriteReply};
use super::thread::Job;

/// Sends writes straight to a writer's connection thread, skipping the
/// actor's mailbox. Cloneable; get one with
/// [`WriterMsg::Handle`](super::WriterMsg::Handle).
#[derive(Clone)]
pub struct WriterHandle {
    jobs: flume::Sender<Job>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("queued", &self.jobs.len())
            .finish()
    }
}

impl WriterHandle {
    pub(super) fn new(jobs: flume::Sender<Job>) -> Self {
        WriterHandle { jobs }
    }

    /// Apply `op` and wait for its committed outcome. `Err(op)` gives the
    /// operation back, never applied, when the connection thread is gone.
    pub async fn write(
        &self,
        op: Operation,
    ) -> std::result::Result<Result<OperationOutcome>, Operation> {
        match self.write_with(op, None).await {
            Ok(answered) => Ok(answered.result),
            Err((op, _)) => Err(op),
        }
    }

    /// [`write`](Self::write), with who asked for it (for the operation
    /// audit); the operation comes back with the outcome (see
    /// [`Answered`]). `Err` gives both back, never applied, when the
    /// thread is gone.
    pub async fn write_with(
        &self,
        op: Operation,
        context: Option<Box<WriteContext>>,
    ) -> std::result::Result<Answered, (Operation, Option<Box<WriteContext>>)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self
            .jobs
            .send_async(Job::Write(op, context, WriteReply::Given(tx)))
            .await
        {
            Ok(()) => Ok(answered(rx).await),
            Err(flume::SendError(Job::Write(op, context, _))) => Err((op, context)),
            Err(_) => Ok(Answered::failed(Error::unavailable(
                "the writer thread is gone",
            ))),
        }
    }

    /// Send `op` at once if the channel has room, without waiting for it:
    /// the answer to await. `Err` gives both back, never sent, when the
    /// channel is full or the thread is gone. Needs only `&self`, so a
    /// caller can send through a handle it borrows rather than a clone
    /// (cloning and dropping one per write touches counters every caller
    /// shares).
    pub fn try_write_with(
        &self,
        op: Operation,
        context: Option<Box<WriteContext>>,
    ) -> std::result::Result<
        impl std::future::Future<Output = Answered>,
        (Operation, Option<Box<WriteContext>>),
    > {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let answer = answered(rx);
        match self
            .jobs
            .try_send(Job::Write(op, context, WriteReply::Given(tx)))
        {
            Ok(()) => Ok(answer),
            Err(unsent) => match unsent.into_inner() {
                Job::Write(op, context, _) => Err((op, context)),
                // Not the write sent above, so never here; its reply port
                // is dropped, and the answer says the thread ended.
                _ => Ok(answer),
            },
        }
    }

    /// Run the write probe (see the health check). `Err(())` when the
    /// connection thread is gone.
    pub async fn probe(&self) -> std::result::Result<Result<()>, ()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.jobs.send_async(Job::Probe(tx.into())).await {
            Ok(()) => Ok(answer(rx).await.and_then(|r| r)),
            Err(_) => Err(()),
        }
    }

    /// Apply independent operations in one transaction (as a group commit
    /// of as many callers would): the outcome of each, in order. One
    /// message for all of them, for callers that have many at hand.
    /// `Err(ops)` gives them back, never applied, when the thread is gone.
    pub async fn write_many(
        &self,
        ops: Vec<Operation>,
    ) -> std::result::Result<Result<Vec<Result<OperationOutcome>>>, Vec<Operation>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.jobs.send_async(Job::WriteMany(ops, tx.into())).await {
            Ok(()) => Ok(answer(rx).await),
            Err(flume::SendError(Job::WriteMany(ops, _))) => Err(ops),
            Err(_) => Ok(Err(Error::unavailable("the writer thread is gone"))),
        }
    }
}

impl WriterHandle {
    /// Run `f` on the writer's connection after every write sent before it,
    /// between two transactions, outside the statement gate: for
    /// resilite's own trusted work (migrations, schema fixes), never for
    /// a caller's SQL. `f` owns its transaction, if it wants one.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: super::ConnectionJob = Box::new(move |conn| {
            let _ = tx.send(conn.and_then(f));
        });
        if self.jobs.send_async(Job::Call(job)).await.is_err() {
            return Err(Error::unavailable("the writer thread is gone"));
        }
        answer(rx).await.and_then(|r| r)
    }
}

/// The connection thread's answer to a write it took, with the operation
/// given back.
async fn answered(rx: tokio::sync::oneshot::Receiver<Answered>) -> Answered {
    answer(rx).await.unwrap_or_else(Answered::failed)
}

/// The connection thread's answer to a job it took (it answers every job,
/// even after a panic).
async fn answer<T>(rx: tokio::sync::oneshot::Receiver<T>) -> Result<T> {
    rx.await.map_err(|_| {
        Error::classed(
            ErrorClass::Internal,
            "writer thread ended without answering",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Statement;

    fn op() -> Operation {
        Operation::Statement(Statement::sql("INSERT INTO t VALUES (1)"))
    }

    /// A write the channel cannot take at once (full, or its thread gone)
    /// is given back unsent, to be sent the slow way or to the restarted
    /// writer: never dropped, never applied twice.
    #[test]
    fn try_write_gives_the_write_back_when_the_channel_is_full_or_gone() {
        let (jobs, queued) = flume::bounded(1);
        let handle = WriterHandle::new(jobs);
        let first = handle.try_write_with(op(), None);
        assert!(first.is_ok(), "an empty channel takes the write");
        let (given_back, context) = handle
            .try_write_with(op(), Some(Box::default()))
            .err()
            .expect("a full channel gives the write back");
        assert_eq!(given_back, op());
        assert!(context.is_some(), "its audit context comes back with it");
        assert_eq!(queued.len(), 1, "only the first write was queued");

        drop(queued);
        let (given_back, _) = handle
            .try_write_with(op(), None)
            .err()
            .expect("a channel whose thread is gone gives the write back");
        assert_eq!(given_back, op());
    }
}
