//! The RetryQueueActor: its arguments, messages and state, the drain that
//! replays due entries batch after batch, and its timers.
//!
//! A replay runs in a task of its own and reports back by message
//! ([`RetryMsg::Replayed`]), and so does the record of its outcomes
//! ([`RetryMsg::Recorded`]): between them the actor answers
//! [`RetryMsg::Stats`] and [`RetryMsg::Entry`] from its own state (the
//! entries in flight) and the journal, even while a handler is slow. A
//! replay task that panics fails the actor; the supervisor restarts it and
//! [`RetryQueueActor::pre_start`] starts from the journal (nothing in
//! flight).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rusqlite::Connection;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinError, JoinHandle};

use super::config::RetryConfig;
use super::entry::{Due, Entry, QueueStats};
use super::in_flight::InFlight;
use super::replay::{self, Handlers, Outcomes, Record, Replayer};
use crate::connection::{open_read_only, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::journal::queue;
use crate::maintenance::now_ms;
use crate::slot::{self, WriterSlot};
use crate::value::Operation;

/// How often the queue gauges are refreshed while replaying.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How often succeeded entries past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often idempotency keys past their retention are deleted.
const KEY_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the RetryQueueActor needs; cloned for each (re)start.
#[derive(Clone)]
pub struct RetryArgs {
    /// Replay policy.
    pub config: RetryConfig,
    /// The journal file (read side).
    pub journal_db: DbOptions,
    /// The journal writer (queue updates).
    pub journal: watch::Receiver<WriterSlot>,
    /// The application writer (replays of SQL).
    pub app: watch::Receiver<WriterSlot>,
    /// Application payload handlers.
    pub handlers: Handlers,
    /// Whether SQL may be replayed now (false while the database breaker
    /// is open, e.g. during a restore).
    pub sql_gate: SqlGate,
}

/// Says whether the database takes replays now.
pub type SqlGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Messages of the RetryQueueActor.
pub enum RetryMsg {
    /// Replay what is due (sent by the actor's own timer, and by the
    /// runtime after a requeue).
    Tick,
    /// Counts by status (entries in flight count as `retrying`).
    Stats(RpcReplyPort<Result<QueueStats>>),
    /// One entry by id, whatever its status (`retrying` while in flight).
    Entry(i64, RpcReplyPort<Result<Option<Entry>>>),
    /// A replay the actor started is done (sent by its replay task).
    Replayed(Token),
    /// The outcomes of a replay are in the journal (sent by its record
    /// task): its entries are no longer in flight.
    Recorded(Token),
    /// Take a new configuration (a reload): backoff and attempts apply to
    /// the next failures, the timer polls at the new interval, the next
    /// replays run under the new handler concurrency. Answers once in place.
    Reconfigure(Box<RetryConfig>, RpcReplyPort<()>),
}

/// Names one replay or record of the actor; only the actor makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(u64);

/// The RetryQueueActor. Spawn it with [`RetryArgs`].
pub struct RetryQueueActor;

/// The actor's state: its arguments, timers, the entries in flight and
/// where its drain stands.
pub struct RetryState {
    args: RetryArgs,
    myself: ActorRef<RetryMsg>,
    timer: Option<JoinHandle<()>>,
    /// The read-only journal connection, between reads.
    reader: Option<Connection>,
    replayer: Replayer,
    in_flight: InFlight,
    drain: Option<Drain>,
    replaying: Option<Replaying>,
    /// The pending record of the last batch's outcomes.
    recording: Option<Recording>,
    key_prune: Option<JoinHandle<()>>,
    tokens: u64,
    /// Counting and pruning scan the table: done at most this often.
    last_stats: Option<Instant>,
    last_prune: Option<Instant>,
    last_key_prune: Option<Instant>,
}

/// Replaying due entries, a batch at a time, until none is due or the
/// target keeps failing.
#[derive(Default)]
struct Drain {
    /// A replay was answered in this drain (it passed, or failed for good,
    /// which also means the target answered). Until then the target may be
    /// down: the most urgent entry goes first and alone, so the others do
    /// not spend an attempt on it.
    proven: bool,
    /// The rest of the read the probe came from.
    pending: Vec<Due>,
    /// The last read was full: more may be due.
    full: bool,
    /// A tick came while draining: drain again when done.
    again: bool,
}

/// A replay in its task.
struct Replaying {
    token: Token,
    probe: bool,
    task: JoinHandle<std::result::Result<(Vec<Due>, Outcomes), JoinError>>,
}

/// A record being written. One is pending at most, so outcomes are
/// journaled in order; its entries stay in flight (skipped by the next
/// read) until it is written.
struct Recording {
    token: Token,
    ids: Vec<i64>,
    task: JoinHandle<Result<()>>,
}

impl Actor for RetryQueueActor {
    type Msg = RetryMsg;
    type State = RetryState;
    type Arguments = RetryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RetryMsg>,
        args: RetryArgs,
    ) -> Result<RetryState, ActorProcessingErr> {
        // After a crash or a restart nothing is being replayed. Entries in
        // flight were never marked in the journal; rows a journal from an
        // earlier version left `retrying` go back to the queue (a replay is
        // keyed, so an entry that did commit is not applied twice).
        let reset = queue::reset_retrying(now_ms());
        slot::write(&args.journal, Operation::Statement(reset)).await?;
        myself.send_message(RetryMsg::Tick)?;
        let timer = myself.send_interval(args.config.poll_interval, || RetryMsg::Tick);
        let replayer = Replayer {
            app: args.app.clone(),
            handlers: args.handlers.clone(),
            handler_slots: Arc::new(Semaphore::new(args.config.handler_concurrency.max(1))),
        };
        Ok(RetryState {
            args,
            myself,
            timer: Some(timer),
            reader: None,
            replayer,
            in_flight: InFlight::default(),
            drain: None,
            replaying: None,
            recording: None,
            key_prune: None,
            tokens: 0,
            last_stats: None,
            last_prune: None,
            last_key_prune: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RetryMsg>,
        msg: RetryMsg,
        state: &mut RetryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RetryMsg::Tick => state.tick().await,
            RetryMsg::Stats(reply) => {
                let stats = state.stats().await;
                if !reply.is_closed() {
                    let _ = reply.send(stats);
                }
            }
            RetryMsg::Entry(id, reply) => {
                let entry = state.entry(id).await;
                if !reply.is_closed() {
                    let _ = reply.send(entry);
                }
            }
            RetryMsg::Replayed(token) => state.replayed(token).await?,
            RetryMsg::Recorded(token) => state.recorded(token),
            RetryMsg::Reconfigure(config, reply) => {
                let old = &state.args.config;
                if config.poll_interval != old.poll_interval {
                    if let Some(timer) = state.timer.take() {
                        timer.abort();
                    }
                    state.timer =
                        Some(myself.send_interval(config.poll_interval, || RetryMsg::Tick));
                }
                if config.handler_concurrency != old.handler_concurrency {
                    state.replayer.handler_slots =
                        Arc::new(Semaphore::new(config.handler_concurrency.max(1)));
                }
                state.args.config = *config;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RetryMsg>,
        state: &mut RetryState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        if let Some(prune) = state.key_prune.take() {
            prune.abort();
        }
        // Outcomes already known go into the journal before it stops: the
        // replay under way is waited for, then recorded.
        if let Err(e) = state.finish_replay().await {
            tracing::warn!(detail = %e.detail, "the last replay outcomes could not be recorded; those entries will be replayed again");
        }
        // Close the read connection now, before the journal writer closes
        // its own: the last connection to close cleans up the WAL files,
        // and only a writer can.
        state.reader.take();
        Ok(())
    }
}

impl RetryState {
    fn token(&mut self) -> Token {
        self.tokens += 1;
        Token(self.tokens)
    }

    /// Run `f` on the actor's read-only journal connection (kept between
    /// calls, so its statement and page caches stay warm).
    async fn read<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.args.journal_db.clone();
        let conn = self.reader.take();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(conn) => conn,
                None => match open_read_only(&db) {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = f(&conn);
            (Some(conn), result)
        })
        .await
        .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?;
        self.reader = conn;
        result
    }

    /// Counts by status: the journal's, with the entries in flight moved
    /// from `queued` to `retrying`.
    async fn stats(&mut self) -> Result<QueueStats> {
        let counts = self.read(queue::counts).await?;
        Ok(self.in_flight.stats(counts))
    }

    /// An entry as the journal has it, `retrying` while it is in flight.
    async fn entry(&mut self, id: i64) -> Result<Option<Entry>> {
        let entry = self.read(move |c| queue::entry_by_id(c, id)).await?;
        Ok(entry.map(|e| self.in_flight.entry(e)))
    }

    /// Start a drain, or have the one under way run again when done.
    async fn tick(&mut self) {
        match &mut self.drain {
            Some(drain) => drain.again = true,
            None => {
                self.drain = Some(Drain::default());
                self.next_group().await;
            }
        }
    }

    /// Read the next due entries and start their replay, or end the drain.
    async fn next_group(&mut self) {
        match self.read_next_group().await {
            Ok(Some((group, probe))) => self.start_replay(group, probe),
            Ok(None) => self.end_drain(Ok(())).await,
            Err(e) => self.end_drain(Err(e)).await,
        }
    }

    /// The next group to replay and whether it is the drain's probe (the
    /// most urgent entry alone); `None` when nothing is due.
    async fn read_next_group(&mut self) -> Result<Option<(Vec<Due>, bool)>> {
        let limit = self.args.config.replay_batch.max(1);
        let sql = (self.args.sql_gate)();
        let busy = self.in_flight.ids();
        let mut due = self
            .read(move |c| queue::due(c, now_ms(), limit, sql, &busy))
            .await?;
        let Some(drain) = self.drain.as_mut() else {
            return Ok(None);
        };
        drain.full = due.len() >= limit;
        if due.is_empty() {
            return Ok(None);
        }
        if drain.proven {
            return Ok(Some((due, false)));
        }
        drain.pending = due.split_off(1);
        Ok(Some((due, true)))
    }

    /// Replay `entries` in a task of their own, which sends
    /// [`RetryMsg::Replayed`] when done; they are in flight until their
    /// outcome is recorded.
    fn start_replay(&mut self, entries: Vec<Due>, probe: bool) {
        let token = self.token();
        self.in_flight.enter(entries.iter().map(|e| e.id));
        let replay = tokio::spawn(self.replayer.clone().replay(entries));
        let myself = self.myself.clone();
        let task = tokio::spawn(async move {
            let done = replay.await;
            let _ = myself.send_message(RetryMsg::Replayed(token));
            done
        });
        self.replaying = Some(Replaying { token, probe, task });
    }

    /// The outcomes of replay `token`: record them, then go on with the
    /// drain. A replay that panicked fails the actor.
    async fn replayed(&mut self, token: Token) -> Result<(), ActorProcessingErr> {
        let Some(replaying) = self.replaying.take_if(|r| r.token == token) else {
            return Ok(());
        };
        let (entries, outcomes) = replaying.task.await??;
        let record = replay::record_of(&entries, outcomes, &self.args.config);
        let still_failing = record.still_failing;
        match self
            .record(record, entries.iter().map(|e| e.id).collect())
            .await
        {
            Ok(()) => self.after_group(replaying.probe, still_failing).await,
            Err(e) => self.end_drain(Err(e)).await,
        }
        Ok(())
    }

    /// Go on with the drain after a group: replay the rest of the probe's
    /// read, read more, or stop while the target keeps failing.
    async fn after_group(&mut self, probe: bool, still_failing: bool) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        if still_failing {
            return self.end_drain(Ok(())).await;
        }
        if probe {
            drain.proven = true;
            let pending = std::mem::take(&mut drain.pending);
            if !pending.is_empty() {
                return self.start_replay(pending, false);
            }
        }
        if !drain.full {
            return self.end_drain(Ok(())).await;
        }
        match self.housekeeping().await {
            Ok(()) => self.next_group().await,
            Err(e) => self.end_drain(Err(e)).await,
        }
    }

    /// End the drain: wait for the pending record, do the housekeeping,
    /// and start again if a tick came meanwhile.
    async fn end_drain(&mut self, result: Result<()>) {
        let again = self.drain.take().is_some_and(|d| d.again);
        let settled = self.settle_recording().await;
        let result = match result.and(settled) {
            Ok(()) => self.housekeeping().await,
            failed => failed,
        };
        if let Err(e) = result {
            tracing::warn!(class = ?e.class, detail = %e.detail, "retry queue replay stopped; next tick retries");
        }
        if again {
            let _ = self.myself.send_message(RetryMsg::Tick);
        }
    }

    /// Record a batch's outcomes in the journal in a task of its own, while
    /// the next batch is read and replayed; it sends
    /// [`RetryMsg::Recorded`] once they are written.
    async fn record(&mut self, record: Record, ids: Vec<i64>) -> Result<()> {
        if let Err(e) = self.settle_recording().await {
            self.in_flight.leave(&ids);
            return Err(e);
        }
        let token = self.token();
        let myself = self.myself.clone();
        let recorded = move || {
            let _ = myself.send_message(RetryMsg::Recorded(token));
        };
        let (journal, app) = (self.args.journal.clone(), self.args.app.clone());
        let task = tokio::spawn(replay::write_record(journal, app, record, recorded));
        self.recording = Some(Recording { token, ids, task });
        Ok(())
    }

    /// Record `token` is written: its entries are no longer in flight.
    fn recorded(&mut self, token: Token) {
        if let Some(recording) = self.recording.as_mut().filter(|r| r.token == token) {
            self.in_flight.leave(&std::mem::take(&mut recording.ids));
        }
    }

    /// Wait for the pending record, if any.
    async fn settle_recording(&mut self) -> Result<()> {
        let Some(recording) = self.recording.take() else {
            return Ok(());
        };
        let written = recording.task.await;
        self.in_flight.leave(&recording.ids);
        written.map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?
    }

    /// Wait for the replay under way, if any, record its outcomes and wait
    /// for the record (at stop).
    async fn finish_replay(&mut self) -> Result<()> {
        self.drain = None;
        if let Some(replaying) = self.replaying.take() {
            let joined = replaying.task.await.map(|done| done.ok());
            if let Ok(Some((entries, outcomes))) = joined {
                let record = replay::record_of(&entries, outcomes, &self.args.config);
                self.record(record, entries.iter().map(|e| e.id).collect())
                    .await?;
            }
        }
        self.settle_recording().await
    }

    /// Refresh the gauges, prune old succeeded entries and forget old
    /// idempotency keys, each at most as often as its period allows.
    async fn housekeeping(&mut self) -> Result<()> {
        let due = |last: Option<Instant>, every| last.is_none_or(|t: Instant| t.elapsed() >= every);
        if due(self.last_key_prune, KEY_PRUNE_EVERY) {
            self.last_key_prune = Some(Instant::now());
            // In a task: the application database may be slow to take it,
            // and the actor keeps answering meanwhile.
            let retention = self.args.config.key_retention.as_millis() as i64;
            let app = self.args.app.clone();
            self.key_prune = Some(tokio::spawn(replay::forget_old_keys(app, retention)));
        }
        if due(self.last_prune, PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            let retention = self.args.config.succeeded_retention.as_millis() as i64;
            let prune = queue::prune_succeeded(now_ms() - retention);
            slot::write(&self.args.journal, Operation::Statement(prune)).await?;
        }
        if due(self.last_stats, STATS_EVERY) {
            self.last_stats = Some(Instant::now());
            if let Ok(s) = self.stats().await {
                metrics::gauge!("resilite_retry_queue_depth").set((s.queued + s.retrying) as f64);
                metrics::gauge!("resilite_dead_letters").set(s.dead as f64);
            }
        }
        Ok(())
    }
}
