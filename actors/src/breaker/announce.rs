//! What a breaker's change of state sets off: a log line, the metrics and
//! three journal rows (its latest state, the transition and an event
//! explaining it). One
//! [`Announcer`] serves the named breakers of the CircuitBreakerActor,
//! another the database breaker, with the same code.

use std::future::Future;

use tokio::sync::{mpsc, oneshot, watch};

use super::{BreakerSnapshot, BreakerState, Transition};
use crate::events::Event;
use crate::journal::breakers::{state_statement, transition_statement};
use crate::slot::{self, WriterSlot};
use crate::value::{Operation, Statement};

/// Journal batches queued behind a slow journal before new ones are
/// dropped (the next transition writes the state again).
const JOURNAL_QUEUE: usize = 1024;
/// Transitions written to the journal in one batch, at most.
const JOURNAL_BATCH: usize = 64;

/// What the journal task is sent.
enum Entry {
    /// The statements that record one transition.
    Transition(Vec<Statement>),
    /// Answered once every transition queued before it is written: `true`,
    /// or `false` when a write since the last flush failed.
    Flush(oneshot::Sender<bool>),
}

/// Logs, measures and journals transitions. The journal is written by a
/// task behind it, in order, so the caller never waits on the journal and
/// a later state is never overwritten by an earlier one.
#[derive(Debug)]
pub(crate) struct Announcer {
    queue: mpsc::Sender<Entry>,
    /// The log message of an opening.
    opened: &'static str,
}

impl Announcer {
    /// Start the journal task writing through `journal` (it ends once the
    /// announcer is dropped); `opened` is the log message of an opening.
    /// Call it within a tokio runtime.
    pub(crate) fn start(journal: watch::Receiver<WriterSlot>, opened: &'static str) -> Self {
        let (queue, rx) = mpsc::channel(JOURNAL_QUEUE);
        tokio::spawn(journal_task(journal, rx));
        Announcer { queue, opened }
    }

    /// Log, measure and journal transition `t` of breaker `name`, which
    /// now stands at `snapshot`.
    pub(crate) fn announce(&self, name: &str, snapshot: &BreakerSnapshot, t: &Transition) {
        match t.to {
            BreakerState::Open => tracing::warn!(
                breaker = name,
                from = %t.from,
                reason = %t.reason,
                open_until_ms = ?snapshot.open_until_ms,
                "{}",
                self.opened
            ),
            BreakerState::HalfOpen => {
                tracing::info!(breaker = name, reason = %t.reason, "circuit breaker half-open")
            }
            BreakerState::Closed => {
                tracing::info!(breaker = name, from = %t.from, reason = %t.reason, "circuit breaker closed")
            }
        }
        set_gauge(name, t.to);
        metrics::counter!(
            "resilite_breaker_transitions_total",
            "breaker" => name.to_owned(),
            "to" => t.to.as_str()
        )
        .increment(1);
        let statements = vec![
            state_statement(name, snapshot, t.at_ms),
            transition_statement(name, t),
            Event::breaker(name, t, snapshot.open_until_ms).statement(),
        ];
        if self.queue.try_send(Entry::Transition(statements)).is_err() {
            tracing::warn!(
                breaker = name,
                "the journal is behind; a circuit breaker transition was not recorded"
            );
        }
    }

    /// Resolves once every transition announced so far is in the journal:
    /// `true`, or `false` when one could not be written.
    pub(crate) fn flush(&self) -> impl Future<Output = bool> + Send + 'static {
        // Announcements are queued when they are made, so this one is
        // behind every one made before.
        let queue = self.queue.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            queue.send(Entry::Flush(tx)).await.is_ok() && rx.await.unwrap_or(false)
        }
    }
}

/// Set the `resilite_breaker_state` gauge of breaker `name`.
pub(crate) fn set_gauge(name: &str, state: BreakerState) {
    metrics::gauge!("resilite_breaker_state", "breaker" => name.to_owned()).set(state.gauge());
}

/// Write the queued transitions through the journal writer, in order, and
/// answer flushes once what was queued before them is written.
async fn journal_task(journal: watch::Receiver<WriterSlot>, mut rx: mpsc::Receiver<Entry>) {
    let mut queued = Vec::new();
    let mut all_written = true;
    while rx.recv_many(&mut queued, JOURNAL_BATCH).await > 0 {
        let mut statements = Vec::new();
        let mut flushes = Vec::new();
        for entry in queued.drain(..) {
            match entry {
                Entry::Transition(s) => statements.extend(s),
                Entry::Flush(reply) => flushes.push(reply),
            }
        }
        if !statements.is_empty() {
            if let Err(e) = slot::write(&journal, Operation::Batch(statements)).await {
                all_written = false;
                tracing::warn!(detail = %e.detail, "could not record circuit breaker transitions in the journal");
            }
        }
        if !flushes.is_empty() {
            for reply in flushes {
                let _ = reply.send(all_written);
            }
            all_written = true;
        }
    }
}
