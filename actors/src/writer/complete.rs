//! The completion of a group commit: what the journal keeps of it (the
//! operation log's row, the audit's records, gaps found) is appended in
//! one journal transaction, and then its callers are answered.
//!
//! # Pipelined
//!
//! With the operation log or the audit on, completion runs on a thread of
//! its own while the connection thread has more work: it hands over a
//! committed batch and goes on with the next one, so the journal's commit
//! and the answering of callers overlap the database's next commit instead
//! of following it. A caller is still answered only after both commits: an
//! acknowledged write is always in the log (or in a recorded gap). The
//! hand-off holds one batch (a bounded channel), so the database is at
//! most two group commits ahead of the log; a crash there loses no
//! acknowledged write, and the range is found as a gap at the next open
//! (see `writer::op_log`). A batch with nothing to append (neither on, or
//! an audit of failures where all committed) is answered on the connection
//! thread at once, and so is one that would find the stage empty and no
//! job waiting: the connection thread would only wait for it.
//!
//! # The log's row beside the commit (`synchronous` FULL or EXTRA)
//!
//! When both commits wait for the disk, a group commit's callers would
//! wait for two fsyncs in a row: the database's, then the journal's. So
//! the log's row is sent to the stage just before COMMIT
//! ([`StageMsg::Ahead`]) and appended as **pending** while the database
//! commits; the finished batch follows, and its callers are answered once
//! both are done. The two fsyncs overlap. What its outcome asks is written
//! with the next journal transaction (or at a flush): a committed batch's
//! row is confirmed (and its audit records appended: they hold no caller);
//! a failed one's row is removed (voided) before its callers hear the
//! error, and a retry of the same batch replaces it. A crash leaves at most
//! the last rows pending: at the next open they are settled against the
//! database's op-log position (`journal::op_log::settle`): kept when the
//! database holds them, removed when it does not. At NORMAL neither commit
//! waits for the disk and the row follows the commit as above: sending it
//! ahead would cost the connection thread the encoding and a hand-off for
//! nothing.
//!
//! The connection thread waits for the stage to be empty ([`Stage::flush`])
//! before any job other than a write: a restore that closes the database
//! then finds every acknowledged write in the log it replays, and a drain
//! answers after the callers before it.
//!
//! # A second writer on the journal
//!
//! The journal is a WAL file written by the journal writer; this connection
//! is a second writer on it. SQLite serializes writers with the WAL write
//! lock, so this is sound: each append is one `BEGIN IMMEDIATE … COMMIT`,
//! which takes the write lock at its start (where `busy_timeout` waits for
//! the journal writer's transaction to end, with no lock upgrade that could
//! deadlock), and a transient failure left after the timeout is retried a
//! few times with backoff. Sequence numbers and commit batch numbers come
//! from the writer alone, so the two writers never conflict on rows.
//!
//! # When the append fails
//!
//! The operations are committed to the database: their callers are answered
//! with their outcome, the failure is logged at error level, the audit's
//! records are dropped (counted in `resilite_audit_dropped_total`: the
//! audit never fails a write), and the logged range is a **gap**, recorded
//! with the next append that succeeds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ractor::RpcReplyPort;
use rusqlite::Connection;

use super::apply::OpTrace;
use super::audit::{kind_of, AuditBook};
use super::checkpoint::{Checkpointer, Wal};
use crate::audit::{AuditLevel, AuditStatus, OpKind, WriteContext};
use crate::connection::{open_read_write, DbOptions};
use crate::error::{Error, Result};
use crate::journal::op_log::{self as journal_log, Gap};
use crate::journal::{self, audit as journal_audit};
use crate::maintenance::now_ms;
use crate::value::{Operation, OperationOutcome};

/// Attempts of one append that fails with a transient error (BUSY past
/// the busy timeout, IOERR).
const APPEND_ATTEMPTS: u32 = 4;
/// First pause between two attempts; doubled each time.
const APPEND_RETRY_BASE: Duration = Duration::from_millis(5);

/// Where one write's outcome goes.
pub(super) enum WriteReply {
    /// A [`WriterMsg::Write`](super::WriterMsg::Write)'s caller: the
    /// outcome alone.
    Outcome(RpcReplyPort<Result<OperationOutcome>>),
    /// A [`WriterHandle`](super::WriterHandle)'s caller: the outcome, and
    /// its operation given back, so that the caller frees what it made
    /// (freeing callers' memory on this thread is a share of its time
    /// under load) and can still read it (the slow-query log).
    Given(tokio::sync::oneshot::Sender<Answered>),
}

/// A write's outcome, with its operation given back once the writer is
/// done with it (`None` when the writer never took it, or its thread
/// ended without answering).
#[derive(Debug)]
pub struct Answered {
    /// The outcome.
    pub result: Result<OperationOutcome>,
    /// The operation sent.
    pub op: Option<Operation>,
}

impl Answered {
    /// A write that failed with `error` before the writer took it, or
    /// without an answer from it: no operation to give back.
    pub(crate) fn failed(error: Error) -> Self {
        Answered {
            result: Err(error),
            op: None,
        }
    }
}

impl WriteReply {
    /// The caller stopped waiting.
    pub(super) fn is_closed(&self) -> bool {
        match self {
            WriteReply::Outcome(reply) => reply.is_closed(),
            WriteReply::Given(reply) => reply.is_closed(),
        }
    }

    fn send(self, result: Result<OperationOutcome>, op: Option<Operation>) {
        match self {
            WriteReply::Outcome(reply) => {
                let _ = reply.send(result);
            }
            WriteReply::Given(reply) => {
                let _ = reply.send(Answered { result, op });
            }
        }
    }
}

/// Who is waiting for a finished batch.
pub(super) enum Answer {
    /// One caller per operation (a group commit).
    Each(Vec<WriteReply>),
    /// One caller for all of them (`Job::WriteMany`).
    All(RpcReplyPort<Vec<Result<OperationOutcome>>>),
    /// A recovery's replay, all or nothing.
    Replay(RpcReplyPort<Result<()>>, Result<()>),
    /// Nobody: resilite's own record (a gap after a migration's barrier).
    Nobody,
}

/// A batch the connection thread is done with: committed, or failed.
pub(super) struct Finished {
    pub(super) ops: Vec<Operation>,
    /// Beside `ops`, or empty (no audit).
    pub(super) contexts: Vec<Option<Box<WriteContext>>>,
    /// Beside `ops`, or empty (no audit).
    pub(super) traces: Vec<OpTrace>,
    /// Beside `ops`.
    pub(super) results: Vec<Result<OperationOutcome>>,
    /// The batch failed as a whole: everything in it was rolled back.
    pub(super) whole_failed: bool,
    /// The operation log's number of the first committed operation (the
    /// others follow in order); `None` when they are not logged.
    pub(super) logged_from: Option<i64>,
    /// Gaps in the log the connection thread found.
    pub(super) gaps: Vec<Gap>,
    /// Audited as the given kind rather than each operation's own (a
    /// recovery's replay).
    pub(super) kind: Option<OpKind>,
    /// Each operation's kind, kept for the audit when the operations went
    /// back to their callers before the append; empty otherwise.
    kinds: Vec<(OpKind, Option<i64>)>,
    pub(super) answer: Answer,
    /// Each operation's error, kept for the audit when the callers were
    /// answered (and `results` given away) before the append.
    pub(super) ended: Option<Vec<Option<Error>>>,
    /// The first number of the log's row sent ahead of the commit
    /// ([`StageMsg::Ahead`]), to be confirmed or voided now that its
    /// outcome is known.
    pub(super) ahead: Option<i64>,
}

impl Finished {
    /// `results` of `ops`, to be answered through `answer`; nothing logged
    /// or audited beyond what the fields added later say.
    pub(super) fn new(
        ops: Vec<Operation>,
        results: Vec<Result<OperationOutcome>>,
        answer: Answer,
    ) -> Self {
        Finished {
            ops,
            contexts: Vec::new(),
            traces: Vec::new(),
            results,
            whole_failed: false,
            logged_from: None,
            gaps: Vec::new(),
            kind: None,
            kinds: Vec::new(),
            answer,
            ended: None,
            ahead: None,
        }
    }

    /// Whether the journal keeps anything of it: logged operations, gaps
    /// to record, or records the audit at `audit` keeps.
    fn has_records(&self, audit: Option<AuditLevel>) -> bool {
        self.logged_from.is_some()
            || self.ahead.is_some()
            || !self.gaps.is_empty()
            || audit.is_some_and(|level| {
                self.results.iter().any(|r| {
                    level.records(match r {
                        Ok(_) => AuditStatus::Committed,
                        Err(_) => AuditStatus::Failed,
                    })
                })
            })
    }

    /// Each operation's error (`None`: committed), for the audit.
    pub(super) fn ended(&mut self) -> Vec<Option<Error>> {
        self.ended.take().unwrap_or_else(|| {
            self.results
                .iter()
                .map(|r| r.as_ref().err().cloned())
                .collect()
        })
    }

    /// Answer the callers now, keeping what the audit needs.
    fn answer_early(&mut self) {
        self.ended = Some(self.ended());
        if self.kind.is_none() {
            self.kinds = self.ops.iter().map(kind_of).collect();
        }
        let answer = std::mem::replace(&mut self.answer, Answer::Nobody);
        let ops = std::mem::take(&mut self.ops);
        send_answer(answer, std::mem::take(&mut self.results), ops);
    }

    /// The kind the audit records for operation `i` (and its retry-queue
    /// entry, if it is one).
    pub(super) fn op_kind(&self, i: usize) -> (OpKind, Option<i64>) {
        match (self.kind, self.kinds.get(i), self.ops.get(i)) {
            (Some(kind), _, _) => (kind, None),
            (None, Some(kind), _) => *kind,
            (None, None, Some(op)) => kind_of(op),
            (None, None, None) => (OpKind::Statement, None),
        }
    }

    fn answer(self) {
        send_answer(self.answer, self.results, self.ops);
    }
}

/// Send `results` to `answer`; each caller of a group commit is given its
/// operation of `ops` back (`ops` is beside `results`; a missing one is
/// answered without it rather than not at all).
fn send_answer(answer: Answer, results: Vec<Result<OperationOutcome>>, ops: Vec<Operation>) {
    match answer {
        Answer::Each(replies) => {
            let ops = ops
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat_with(|| None));
            for ((reply, result), op) in replies.into_iter().zip(results).zip(ops) {
                reply.send(result, op);
            }
        }
        Answer::All(reply) => {
            let _ = reply.send(results);
        }
        Answer::Replay(reply, result) => {
            let _ = reply.send(result);
        }
        Answer::Nobody => {}
    }
}

/// The journal side of completion: the connection the log and the audit
/// append through, and what is pending.
pub(super) struct Completion {
    /// The journal's connection and its path, and its checkpoints (off
    /// this thread: see `writer::checkpoint`); the checkpointer first, so
    /// that its connection closes first.
    journal: Option<(Option<Checkpointer>, Connection, PathBuf)>,
    audit: Option<AuditBook>,
    /// Gaps not yet recorded.
    gaps: Vec<Gap>,
    /// Written with the next journal transaction, whatever it is (or at a
    /// flush): the pending rows whose commit succeeded, and the audit's
    /// records of batches whose log row was written ahead.
    deferred: Deferred,
    /// The row last sent ahead whose append failed: its range is a gap
    /// once the database's commit is known to have succeeded.
    ahead_failed: Option<Gap>,
}

#[derive(Default)]
struct Deferred {
    confirms: Vec<i64>,
    records: Vec<journal_audit::Encoded>,
}

/// The operation log's row of one group commit.
pub(super) struct LogRow {
    pub(super) first: i64,
    pub(super) count: usize,
    /// The operations, as `journal::op_log::encode` makes them.
    pub(super) json: String,
    /// Sent ahead of the commit, whose outcome is not known yet.
    pub(super) pending: bool,
}

impl LogRow {
    /// The row of `committed`, numbered `first` on; `pending`: sent ahead
    /// of the commit.
    pub(super) fn new(first: i64, committed: &[&Operation], pending: bool) -> Result<LogRow> {
        Ok(LogRow {
            first,
            count: committed.len(),
            json: journal_log::encode(committed)?,
            pending,
        })
    }
}

impl Completion {
    /// Open the journal at `journal` (migrated already: its writer starts
    /// first) when there is one, for the log and the audit at `audit`.
    pub(super) fn open(
        journal: Option<&DbOptions>,
        audit: Option<crate::audit::AuditLevel>,
    ) -> Result<Completion> {
        let mut completion = Completion {
            journal: None,
            audit: None,
            gaps: Vec::new(),
            deferred: Deferred::default(),
            ahead_failed: None,
        };
        let Some(opts) = journal else {
            return Ok(completion);
        };
        let conn = open_read_write(opts).map_err(|e| e.during("open the journal", &opts.path))?;
        let checkpoints = Checkpointer::start(&conn, opts, Wal::Journal, "journal")?;
        if let Some(level) = audit {
            completion.audit = Some(
                AuditBook::open(&conn, level)
                    .map_err(|e| e.during("read the operation audit", &opts.path))?,
            );
        }
        completion.journal = Some((checkpoints, conn, opts.path.clone()));
        Ok(completion)
    }

    /// Whether there is anything to append: the stage then runs on a
    /// thread of its own.
    pub(super) fn appends(&self) -> bool {
        self.journal.is_some()
    }

    /// Append what the journal keeps of `batch`, then answer its callers.
    /// The callers are answered even if the append panics (a bug): their
    /// writes committed, and they must not wait for an answer that never
    /// comes.
    fn complete(&mut self, mut batch: Finished) {
        self.guarded(|completion| completion.append(&mut batch));
        batch.answer();
        self.checkpoint_if_due();
    }

    /// After a completion's journal transaction, once its callers are
    /// answered: the journal's checkpoints (see `writer::checkpoint`).
    fn checkpoint_if_due(&self) {
        if let Some((Some(checkpoints), conn, _)) = &self.journal {
            checkpoints.after_commit(conn);
        }
    }

    /// Run `f`, rolling back the journal transaction it left open if it
    /// panics (a bug: what it was writing is lost, logged).
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))).is_err() {
            tracing::error!("a journal append of the writer's completion panicked; its records are lost, its callers are answered");
            if let Some((_, conn, _)) = &self.journal {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
        }
    }

    fn append(&mut self, batch: &mut Finished) {
        if self.journal.is_none() {
            return;
        }
        self.gaps.append(&mut batch.gaps);
        let records = self.records(batch);
        if let Some(first) = batch.ahead {
            // The row went ahead of the commit: now its outcome is known.
            if batch.logged_from == Some(first) {
                match self.ahead_failed.take() {
                    Some(gap) if gap.after_seq == first - 1 => self.lost_row(gap),
                    _ => self.deferred.confirms.push(first),
                }
                // The callers wait for nothing more: the rest goes with
                // the next journal transaction.
                self.deferred.records.extend(records);
            } else {
                self.ahead_failed = None;
                let _ = self.write(None, Some(first), records);
            }
            return;
        }
        let row = batch.logged_from.and_then(|first| {
            let committed: Vec<&Operation> = batch
                .ops
                .iter()
                .zip(&batch.results)
                .filter(|(_, r)| r.is_ok())
                .map(|(op, _)| op)
                .collect();
            LogRow::new(first, &committed, false)
                .inspect_err(|e| self.lost_row(gap(first, committed.len(), e)))
                .ok()
        });
        if row.is_none() && records.is_none() && self.gaps.is_empty() && !self.has_deferred() {
            return;
        }
        if let (Err(e), Some(row)) = (self.write(row.as_ref(), None, records), &row) {
            self.lost_row(gap(row.first, row.count, &e));
        }
    }

    /// The audit's records of `batch`, encoded; `None` when there are none
    /// (or the audit is off).
    fn records(&mut self, batch: &mut Finished) -> Option<journal_audit::Encoded> {
        journal_audit::encode(self.audit.as_mut()?.records(batch))
    }

    /// The log's row of a group commit, sent ahead of its commit: appended
    /// as pending now, while the database commits (see the module doc).
    fn ahead(&mut self, row: LogRow) {
        self.ahead_failed = self
            .write(Some(&row), None, None)
            .err()
            .map(|e| gap(row.first, row.count, &e));
    }

    /// Whether something waits for the next journal transaction.
    fn has_deferred(&self) -> bool {
        !self.deferred.confirms.is_empty() || !self.deferred.records.is_empty()
    }

    /// Write what was deferred and the gaps not yet recorded, if any (at a
    /// flush, and when the stage stops).
    fn write_deferred(&mut self) {
        if self.has_deferred() || !self.gaps.is_empty() {
            let _ = self.write(None, None, None);
        }
    }

    /// A committed range the log will not hold: a gap, recorded with the
    /// next journal transaction that succeeds.
    fn lost_row(&mut self, gap: Gap) {
        metrics::counter!("resilite_op_log_gaps_total").increment(1);
        tracing::error!(
            after_seq = gap.after_seq, through_seq = gap.through_seq, reason = %gap.reason,
            "operation log append failed after the database committed: the writes stand and are answered, the log has a gap recovery cannot replay past"
        );
        self.gaps.push(gap);
    }

    /// One journal transaction: the void of pending rows from `void` on,
    /// the log's `row`, `records`, and everything deferred and not yet
    /// recorded; transient failures retried a few times. On failure the
    /// audit's records are dropped (the audit never fails a write); gaps
    /// and confirmations stay for the next one.
    fn write(
        &mut self,
        row: Option<&LogRow>,
        void: Option<i64>,
        records: Option<journal_audit::Encoded>,
    ) -> Result<()> {
        let Some((_, conn, path)) = &self.journal else {
            return Ok(());
        };
        let mut all = std::mem::take(&mut self.deferred.records);
        all.extend(records);
        let (confirms, gaps) = (&self.deferred.confirms, &self.gaps);
        let at_ms = now_ms();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let written = journal::immediate(conn, || {
                if let Some(first) = void {
                    journal_log::void(conn, first)?;
                }
                if let Some(row) = row {
                    journal_log::insert_encoded(
                        conn,
                        at_ms,
                        row.first,
                        row.count,
                        &row.json,
                        row.pending,
                    )?;
                }
                journal_log::confirm(conn, confirms)?;
                journal_log::insert_gaps(conn, gaps)?;
                all.iter().try_for_each(|r| journal_audit::insert(conn, r))
            });
            match written {
                Err(e) if e.is_transient() && attempt < APPEND_ATTEMPTS => {
                    tracing::warn!(detail = %e.detail, attempt, "journal append busy; retrying");
                    std::thread::sleep(APPEND_RETRY_BASE * 2u32.pow(attempt - 1));
                }
                other => break other,
            }
        };
        match &result {
            Ok(()) => {
                self.gaps.clear();
                self.deferred.confirms.clear();
            }
            Err(e) => {
                let lost: usize = all.iter().map(journal_audit::Encoded::len).sum();
                if lost > 0 {
                    dropped(path, lost, e);
                }
            }
        }
        result
    }
}

/// The range of `count` operations numbered `first` on, whose append
/// failed with `e`, as a gap.
fn gap(first: i64, count: usize, e: &Error) -> Gap {
    Gap {
        after_seq: first - 1,
        through_seq: first + count as i64 - 1,
        at_ms: now_ms(),
        reason: format!("append failed: {}", e.detail),
    }
}

fn dropped(path: &std::path::Path, count: usize, e: &Error) {
    metrics::counter!("resilite_audit_dropped_total").increment(count as u64);
    tracing::error!(
        path = %path.display(), count, class = ?e.class, detail = %e.detail,
        "operation audit append failed: these records are lost (the writes themselves are not affected)"
    );
}

pub(super) enum StageMsg {
    /// A group commit's log row, sent before its COMMIT.
    Ahead(Box<LogRow>),
    Finished(Box<Finished>),
    /// Answered once everything sent before it is complete (and what was
    /// deferred is written).
    Flush(flume::Sender<()>),
}

/// Where finished batches are completed (see the module doc): handed to
/// the stage's thread while the connection thread has more work, or
/// completed on the connection thread itself when it would only wait
/// (no job waiting, nothing in the stage), which spares a single caller
/// the hand-off.
pub(super) struct Stage {
    completion: Arc<Mutex<Completion>>,
    /// What the audit records, if on.
    audit: Option<AuditLevel>,
    /// The log's rows are sent ahead of their commit ([`Stage::ahead`]).
    ahead: bool,
    /// Messages handed to the thread and not yet done.
    in_flight: Arc<AtomicUsize>,
    /// The stage's thread; `None` when there is nothing to append.
    thread: Option<(flume::Sender<StageMsg>, JoinHandle<()>)>,
}

impl Stage {
    /// The stage for `completion`: with a thread of its own when it
    /// appends. `ahead`: the operation log's rows are to be written beside
    /// the database's commit (see the module doc).
    pub(super) fn start(completion: Completion, name: &str, ahead: bool) -> Result<Stage> {
        let appends = completion.appends();
        let audit = completion.audit.as_ref().map(AuditBook::level);
        let completion = Arc::new(Mutex::new(completion));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut stage = Stage {
            completion: completion.clone(),
            audit,
            ahead: ahead && appends,
            in_flight: in_flight.clone(),
            thread: None,
        };
        if !appends {
            return Ok(stage);
        }
        // One batch in hand while the next one commits.
        let (tx, rx) = flume::bounded::<StageMsg>(1);
        let thread = std::thread::Builder::new()
            .name(format!("{name}:complete"))
            .spawn(move || {
                for msg in rx {
                    match msg {
                        StageMsg::Ahead(row) => {
                            lock(&completion).guarded(|c| c.ahead(*row));
                        }
                        StageMsg::Finished(batch) => lock(&completion).complete(*batch),
                        StageMsg::Flush(done) => {
                            lock(&completion).guarded(Completion::write_deferred);
                            let _ = done.send(());
                        }
                    }
                    in_flight.fetch_sub(1, Ordering::Release);
                }
                lock(&completion).guarded(Completion::write_deferred);
            })
            .map_err(Error::from)?;
        stage.thread = Some((tx, thread));
        Ok(stage)
    }

    /// Whether the log's rows are sent ahead of their commit.
    pub(super) fn sends_ahead(&self) -> bool {
        self.ahead
    }

    /// Send a group commit's log row ahead of its COMMIT, to be appended
    /// while the database commits. `false` when it could not be (the
    /// stage's thread is gone): the batch is then completed as any other.
    pub(super) fn ahead(&self, row: LogRow) -> bool {
        self.hand(StageMsg::Ahead(Box::new(row))).is_ok()
    }

    /// Complete `batch`. `idle`: the connection thread has no job waiting.
    pub(super) fn send(&self, mut batch: Finished, idle: bool) {
        let ahead = batch.ahead.is_some();
        if !ahead && !batch.has_records(self.audit) {
            // Nothing for the journal: answered at once (callers of
            // different batches need no order among their answers).
            batch.answer();
            return;
        }
        // The audit's records (and gaps) alone do not hold the callers:
        // only the operation log is a promise made to them.
        let early = batch.logged_from.is_none() && !ahead;
        if early {
            batch.answer_early();
        }
        if self.thread.is_none() {
            return lock(&self.completion).complete(batch);
        }
        // Callers waiting, nothing in the stage to overtake (and its lock
        // free), and nothing else to do: completed here.
        if !early && !ahead && idle && self.in_flight.load(Ordering::Acquire) == 0 {
            return lock(&self.completion).complete(batch);
        }
        if let Err(StageMsg::Finished(batch)) = self.hand(StageMsg::Finished(Box::new(batch))) {
            // The stage's thread is gone (it panicked): answer here
            // rather than leave callers waiting.
            tracing::error!(
                "the writer's completion thread is gone; answering without the journal"
            );
            batch.answer();
        }
    }

    /// Hand `msg` to the stage's thread; given back when it is gone.
    fn hand(&self, msg: StageMsg) -> std::result::Result<(), StageMsg> {
        let Some((tx, _)) = &self.thread else {
            return Err(msg);
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        tx.send(msg).map_err(|flume::SendError(msg)| {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            msg
        })
    }

    /// Wait until every batch sent before is appended and answered, and
    /// what was deferred is written.
    pub(super) fn flush(&self) {
        let (done, wait) = flume::bounded(1);
        if self.hand(StageMsg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Complete what was sent and stop the stage's thread.
    pub(super) fn close(self) {
        if let Some((tx, thread)) = self.thread {
            drop(tx);
            let _ = thread.join();
        }
    }
}

fn lock(completion: &Mutex<Completion>) -> std::sync::MutexGuard<'_, Completion> {
    completion
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Statement, Value};

    fn op(v: i64) -> Operation {
        Operation::Statement(Statement::new(
            "INSERT INTO t VALUES (?1)",
            [Value::Integer(v)],
        ))
    }

    fn logged(ops: Vec<Operation>, from: i64) -> Finished {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let results = vec![Ok(Vec::new()); ops.len()];
        let mut batch = Finished::new(ops, results, Answer::All(tx.into()));
        batch.logged_from = Some(from);
        batch
    }

    /// An append that fails (the journal locked past the busy timeout and
    /// the retries) loses no number: the range becomes a gap, recorded
    /// with the next append that succeeds.
    #[test]
    fn a_failed_append_becomes_a_gap_recorded_with_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DbOptions::new(dir.path().join("journal.db"));
        opts.busy_timeout = Duration::from_millis(10);
        crate::journal::migrate(&open_read_write(&opts).unwrap()).unwrap();
        let mut completion = Completion::open(Some(&opts), None).unwrap();
        completion.complete(logged(vec![op(1)], 1));

        let other = open_read_write(&opts).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        completion.complete(logged(vec![op(2)], 2));
        other.execute_batch("COMMIT").unwrap();

        completion.complete(logged(vec![op(3)], 3));
        let seqs: Vec<i64> = journal_log::after(&other, 0, 10)
            .unwrap()
            .iter()
            .map(|o| o.seq)
            .collect();
        assert_eq!(seqs, [1, 3]);
        let gaps = journal_log::gaps(&other).unwrap();
        assert_eq!(
            (gaps.len(), gaps[0].after_seq, gaps[0].through_seq),
            (1, 1, 2)
        );
        assert!(
            gaps[0].reason.starts_with("append failed"),
            "{}",
            gaps[0].reason
        );
    }

    /// The journal's WAL is checkpointed by the stage's checkpointer
    /// (SQLite's autocheckpoint is replaced, so nothing else would): after
    /// 12,000 appends (~13,800 pages: 13,801 with the thread's nudge
    /// disabled) it is still about the size of the threshold, not of
    /// everything appended.
    #[test]
    fn the_journal_wal_stays_bounded_under_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DbOptions::new(dir.path().join("journal.db"));
        opts.synchronous = crate::connection::Synchronous::Off;
        crate::journal::migrate(&open_read_write(&opts).unwrap()).unwrap();
        let mut completion = Completion::open(Some(&opts), None).unwrap();
        for seq in 1..=12_000 {
            completion.complete(logged(vec![op(seq); 4], 4 * seq - 3));
        }
        let wal = std::fs::metadata(dir.path().join("journal.db-wal"))
            .unwrap()
            .len();
        let threshold = super::super::checkpoint::checkpoint_pages(opts.synchronous);
        let limit = (2 * threshold as u64 + 100) * 4096;
        assert!(wal < limit, "journal WAL {wal} bytes (limit {limit})");
    }
}
