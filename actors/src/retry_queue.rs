//! RetryQueueActor: the durable retry queue and its dead-letter queue, in
//! the journal.
//!
//! An operation that could not be applied (a transient failure after the
//! writer's in-place retries, or the database unavailable) is stored in the
//! journal's `retry_queue` table before its caller is told `Queued`. The
//! actor replays due entries in priority, then `next_retry_at` order, with
//! exponential backoff and jitter between attempts. Entries sharing an
//! ordering key are replayed one at a time, oldest first. A permanent error
//! (constraint, SQL, bad input) or the last allowed attempt moves an entry to
//! the dead-letter queue (status `dead`) with its error history, for an
//! operator to requeue or discard.
//!
//! Replays of SQL go through the writer as [`Operation::Once`] keyed by the
//! entry id, so an entry replayed again after a crash (between its commit
//! and the journal update) is not applied twice. A batch's SQL is one
//! `write_many` message: one commit, an outcome for each entry. Application
//! payloads are handed to the handler registered for their kind; handlers
//! must be idempotent (delivery is at least once).
//!
//! Entries being replayed are `retrying` in the counts and in
//! [`InFlight::entry`], but their rows stay `queued`: writing the mark would
//! rewrite every row once more, and a crash sends them back to the queue
//! anyway.
//!
//! The queue lives on disk: the actor reads at most `replay_batch` due
//! entries at a time, so memory stays flat however long the queue is.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connection::{open_read_only, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::maintenance::now_ms;
use crate::slot::{self, WriterSlot};
use crate::value::{Operation, Statement, Value};

/// Idempotency keys of queue replays: this prefix and the entry id.
const QUEUE_KEY_PREFIX: &str = "resilite-queue:";
/// The kind of queued SQL operations; other kinds are application payloads.
pub const SQL_KIND: &str = "sql";
/// The same error this many times in a row marks a dead entry poisoned.
const POISON_REPEATS: usize = 3;

/// `[retry]`: the replay policy of the durable queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Delay before the first replay.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Each next delay is this many times the last (with jitter).
    pub factor: f32,
    /// Longest delay between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Attempts before an entry goes to the dead-letter queue.
    pub max_attempts: u32,
    /// How often the queue looks for due entries.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Most entries replayed together (their outcomes are one journal
    /// transaction).
    pub replay_batch: usize,
    /// Most application handler calls running at once (SQL replays share
    /// the writer's group commits and are not limited by this).
    pub handler_concurrency: usize,
    /// How long succeeded entries are kept before they are deleted.
    #[serde(with = "humantime_serde")]
    pub succeeded_retention: Duration,
    /// How long the key of an [`Operation::Once`] is remembered in the
    /// application database: a replay with the same key within this time
    /// is skipped, one after it is applied again.
    #[serde(with = "humantime_serde")]
    pub key_retention: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(300),
            max_attempts: 10,
            poll_interval: Duration::from_secs(1),
            replay_batch: 512,
            handler_concurrency: 64,
            succeeded_retention: Duration::from_secs(86_400),
            key_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

impl RetryConfig {
    /// The delay before attempt `attempt + 1`, after `attempt` failures
    /// (exponential with jitter, never above `max_delay`).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_jitter()
            .without_max_times()
            .build();
        let mut delay = self.base_delay;
        for _ in 0..attempt.max(1) {
            delay = backoff.next().unwrap_or(self.max_delay);
        }
        delay.min(self.max_delay)
    }
}

/// How a durable operation is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnqueueOptions {
    /// 1 (most urgent) to 10.
    pub priority: u8,
    /// Entries with the same key are replayed one at a time, in order.
    pub ordering_key: Option<String>,
    /// Overrides `retry.max_attempts`.
    pub max_attempts: Option<u32>,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        EnqueueOptions {
            priority: 5,
            ordering_key: None,
            max_attempts: None,
        }
    }
}

/// What an application handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;
/// A handler of one application payload kind. Its error's class decides:
/// transient, unavailable and permission are retried, anything else is
/// dead-lettered.
pub type Handler = Arc<dyn Fn(serde_json::Value) -> HandlerFuture + Send + Sync>;
/// Handlers by payload kind, shared by the runtime and the actor.
pub type Handlers = Arc<RwLock<HashMap<String, Handler>>>;

/// One queue entry, as the DLQ commands show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The queue id.
    pub id: i64,
    /// `sql`, or an application payload kind.
    pub kind: String,
    /// The operation or payload (JSON).
    pub payload: serde_json::Value,
    /// 1 (most urgent) to 10.
    pub priority: i64,
    /// The ordering key, if any.
    pub ordering_key: Option<String>,
    /// Attempts so far.
    pub attempts: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// `queued`, `retrying`, `succeeded` or `dead`.
    pub status: String,
    /// When the next attempt is due (ms since the Unix epoch).
    pub next_retry_at_ms: i64,
    /// Every failure: `[{"at_ms", "class", "error"}, ...]`.
    pub errors: serde_json::Value,
    /// Why it is dead.
    pub dead_reason: Option<String>,
    /// Failed the same way again and again.
    pub poisoned: bool,
    /// First and last failure (ms since the Unix epoch).
    pub first_failure_at_ms: Option<i64>,
    /// Last failure.
    pub last_failure_at_ms: Option<i64>,
    /// When an operator requeued, discarded or marked it fixed.
    pub reviewed_at_ms: Option<i64>,
    /// `requeued`, `discarded` or `fixed` (by hand).
    pub resolution: Option<String>,
    /// When it was queued.
    pub created_at_ms: i64,
}

/// The entries being replayed now: `retrying` in the counts and in
/// [`InFlight::entry`]. They are not marked in the journal (that would be
/// one more write of every row): their rows stay `queued`, which is what
/// they go back to after a crash anyway, and a replay is keyed (SQL) or at
/// least once (payloads). Shared by the runtime and the actor.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<i64>>>);

/// Entries in flight until it is dropped.
struct InFlightGuard {
    set: InFlight,
    ids: Vec<i64>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut set = self.set.lock();
        for id in &self.ids {
            set.remove(id);
        }
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, ids: impl Iterator<Item = i64>) -> InFlightGuard {
        let ids: Vec<i64> = ids.collect();
        self.lock().extend(&ids);
        InFlightGuard {
            set: self.clone(),
            ids,
        }
    }

    fn clear(&self) {
        self.lock().clear();
    }

    fn ids(&self) -> Vec<i64> {
        self.lock().iter().copied().collect()
    }

    /// Counts of the queue by status: the journal's, with the entries in
    /// flight moved from `queued` to `retrying`.
    pub fn stats(&self, conn: &Connection) -> Result<QueueStats> {
        let mut stats = journal_counts(conn)?;
        let n = self.lock().len() as i64;
        // Just replayed entries leave the set after their outcome is
        // committed: never count fewer than zero queued.
        stats.queued = (stats.queued - n).max(0);
        stats.retrying += n;
        Ok(stats)
    }

    /// An entry as the journal has it, `retrying` while it is in flight.
    pub fn entry(&self, mut entry: Entry) -> Entry {
        if entry.status == "queued" && self.lock().contains(&entry.id) {
            entry.status = "retrying".into();
        }
        entry
    }
}

/// Counts of the queue, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct QueueStats {
    /// Waiting for their next attempt.
    pub queued: i64,
    /// Being replayed now.
    pub retrying: i64,
    /// In the dead-letter queue, not yet discarded.
    pub dead: i64,
    /// Replayed successfully (kept for `succeeded_retention`).
    pub succeeded: i64,
}

impl EnqueueOptions {
    /// Reject a priority outside 1..=10 or a zero `max_attempts`.
    pub fn validate(&self) -> Result<()> {
        if !(1..=10).contains(&self.priority) {
            return Err(Error::bad_input(format!(
                "priority {} is invalid: use 1 (most urgent) to 10",
                self.priority
            )));
        }
        if self.max_attempts == Some(0) {
            return Err(Error::bad_input("max_attempts must be at least 1"));
        }
        Ok(())
    }
}

/// The statement that queues `payload`, JSON text (its id is the last
/// insert rowid).
pub fn enqueue_statement(
    kind: &str,
    payload: String,
    options: &EnqueueOptions,
    config: &RetryConfig,
    cause: Option<&Error>,
) -> Result<Statement> {
    options.validate()?;
    if kind.trim().is_empty() {
        return Err(Error::bad_input("the payload kind is empty"));
    }
    let now = now_ms();
    let errors = match cause {
        Some(e) => {
            serde_json::json!([{ "at_ms": now, "class": e.class, "error": e.detail }]).to_string()
        }
        None => "[]".to_string(),
    };
    let next = now + config.base_delay.as_millis() as i64;
    Ok(Statement::new(
        "INSERT INTO retry_queue (kind, payload, priority, ordering_key, max_attempts, next_retry_at_ms, \
         last_error_class, last_error, errors, status, first_failure_at_ms, last_failure_at_ms, created_at_ms, updated_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', ?10, ?10, ?11, ?11)",
        [
            Value::from(kind),
            Value::Text(payload),
            Value::Integer(options.priority.into()),
            options.ordering_key.as_deref().map_or(Value::Null, Value::from),
            Value::Integer(options.max_attempts.unwrap_or(config.max_attempts).into()),
            Value::Integer(next),
            cause.map_or(Value::Null, |e| Value::Text(e.class.as_str().into())),
            cause.map_or(Value::Null, |e| Value::Text(e.detail.clone())),
            Value::Text(errors),
            cause.map_or(Value::Null, |_| Value::Integer(now)),
            Value::Integer(now),
        ],
    ))
}

/// The statements that send dead entry `id` (or every unresolved dead
/// entry) back to the queue, due now, with its attempts reset.
pub fn requeue_statements(id: Option<i64>) -> Vec<Statement> {
    let now = now_ms();
    let filter = id.map_or("status = 'dead' AND resolution IS NULL".to_string(), |_| {
        "id = ?2 AND status = 'dead'".to_string()
    });
    let mut params = vec![Value::Integer(now)];
    params.extend(id.map(Value::Integer));
    vec![Statement::new(
        format!(
            "UPDATE retry_queue SET status = 'queued', attempts = 0, next_retry_at_ms = ?1, \
             reviewed_at_ms = ?1, resolution = 'requeued', dead_reason = NULL, updated_at_ms = ?1 WHERE {filter}"
        ),
        params,
    )]
}

/// How an operator closed a dead entry without replaying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Not wanted any more.
    Discarded,
    /// Fixed by hand (the change was made some other way).
    Fixed,
}

impl Resolution {
    /// As stored in `resolution`: `discarded` or `fixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Discarded => "discarded",
            Resolution::Fixed => "fixed",
        }
    }
}

/// The statement that closes dead entry `id` with `resolution` (the entry
/// is kept in the journal).
pub fn resolve_statement(id: i64, resolution: Resolution) -> Statement {
    Statement::new(
        "UPDATE retry_queue SET reviewed_at_ms = ?1, resolution = ?2, updated_at_ms = ?1 \
         WHERE id = ?3 AND status = 'dead'",
        [
            Value::Integer(now_ms()),
            Value::from(resolution.as_str()),
            Value::Integer(id),
        ],
    )
}

const ENTRY_COLUMNS: &str =
    "id, kind, payload, priority, ordering_key, attempts, max_attempts, status, \
    next_retry_at_ms, errors, dead_reason, poisoned, first_failure_at_ms, last_failure_at_ms, \
    reviewed_at_ms, resolution, created_at_ms";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    };
    Ok(Entry {
        id: r.get(0)?,
        kind: r.get(1)?,
        payload: json(2)?,
        priority: r.get(3)?,
        ordering_key: r.get(4)?,
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        status: r.get(7)?,
        next_retry_at_ms: r.get(8)?,
        errors: json(9)?,
        dead_reason: r.get(10)?,
        poisoned: r.get(11)?,
        first_failure_at_ms: r.get(12)?,
        last_failure_at_ms: r.get(13)?,
        reviewed_at_ms: r.get(14)?,
        resolution: r.get(15)?,
        created_at_ms: r.get(16)?,
    })
}

/// The dead-letter queue, oldest first; discarded entries only with `all`.
pub fn dead_letters(conn: &Connection, all: bool) -> Result<Vec<Entry>> {
    let filter = if all { "" } else { " AND resolution IS NULL" };
    let mut stmt = conn.prepare(&format!(
        "SELECT {ENTRY_COLUMNS} FROM retry_queue WHERE status = 'dead'{filter} ORDER BY id"
    ))?;
    let rows = stmt.query_map([], entry)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One entry by id, whatever its status.
pub fn entry_by_id(conn: &Connection, id: i64) -> Result<Option<Entry>> {
    Ok(conn
        .query_row(
            &format!("SELECT {ENTRY_COLUMNS} FROM retry_queue WHERE id = ?1"),
            [id],
            entry,
        )
        .optional()?)
}

/// Counts by status as the journal has them (each an index range count,
/// not a table scan); [`InFlight::stats`] adds the entries in flight.
fn journal_counts(conn: &Connection) -> Result<QueueStats> {
    let count = |filter: &str| -> Result<i64> {
        Ok(conn
            .prepare_cached(&format!("SELECT count(*) FROM retry_queue WHERE {filter}"))?
            .query_row([], |r| r.get(0))?)
    };
    Ok(QueueStats {
        queued: count("status = 'queued'")?,
        retrying: count("status = 'retrying'")?,
        dead: count("status = 'dead' AND resolution IS NULL")?,
        succeeded: count("status = 'succeeded'")?,
    })
}

/// A due entry: what its replay needs, its payload and error history
/// still as text (parsed only when used).
#[derive(Debug, Clone)]
struct Due {
    id: i64,
    kind: String,
    payload: String,
    attempts: i64,
    max_attempts: i64,
    errors: String,
}

/// Due entries, most urgent first; of the entries sharing an ordering key,
/// only the oldest unfinished one. Without `sql`, only application payloads.
/// `busy` (a JSON array of ids) are in flight: their rows still say
/// `queued` until their outcome is recorded.
fn due(conn: &Connection, now: i64, limit: usize, sql: bool, busy: &str) -> Result<Vec<Due>> {
    let kinds = if sql { "" } else { "AND kind != 'sql' " };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, kind, payload, attempts, max_attempts, errors \
         FROM retry_queue q \
         WHERE status = 'queued' AND next_retry_at_ms <= ?1 {kinds}\
           AND id NOT IN (SELECT value FROM json_each(?3)) \
           AND (ordering_key IS NULL OR NOT EXISTS ( \
                SELECT 1 FROM retry_queue o WHERE o.ordering_key = q.ordering_key AND o.id < q.id \
                AND o.status IN ('queued', 'retrying'))) \
         ORDER BY priority, next_retry_at_ms, id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(rusqlite::params![now, limit as i64, busy], |r| {
        Ok(Due {
            id: r.get(0)?,
            kind: r.get(1)?,
            payload: r.get(2)?,
            attempts: r.get(3)?,
            max_attempts: r.get(4)?,
            errors: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

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
    /// The entries being replayed now.
    pub in_flight: InFlight,
    /// Whether SQL may be replayed now (false while the database breaker
    /// is open, e.g. during a restore).
    pub sql_gate: SqlGate,
}

/// Says whether the database takes replays now.
pub type SqlGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Messages of the RetryQueueActor.
pub enum RetryMsg {
    /// Replay what is due (sent by the actor's own timer).
    Tick,
    /// Counts by status.
    Stats(RpcReplyPort<Result<QueueStats>>),
}

/// The RetryQueueActor. Spawn it with [`RetryArgs`].
pub struct RetryQueueActor;

/// The actor's state: its arguments and its timer.
pub struct RetryState {
    args: RetryArgs,
    timer: Option<JoinHandle<()>>,
    /// The read-only journal connection, between reads.
    reader: Mutex<Option<Connection>>,
    /// Bounds the application handler calls running at once.
    handler_slots: Arc<tokio::sync::Semaphore>,
    /// The pending record of the last batch's outcomes.
    recording: Option<JoinHandle<Result<()>>>,
    /// Counting and pruning scan the table: done at most this often.
    last_stats: Option<Instant>,
    last_prune: Option<Instant>,
    last_key_prune: Option<Instant>,
}

/// Ids as the JSON array `json_each` reads.
fn ids_json(ids: &[i64]) -> Value {
    Value::Text(ids_text(ids))
}

fn ids_text(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

/// How often the queue gauges are refreshed while replaying.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How often succeeded entries past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often idempotency keys past their retention are deleted.
const KEY_PRUNE_EVERY: Duration = Duration::from_secs(3600);

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
        args.in_flight.clear();
        let reset = Statement::new(
            "UPDATE retry_queue SET status = 'queued', updated_at_ms = ?1 WHERE status = 'retrying'",
            [Value::Integer(now_ms())],
        );
        slot::write(&args.journal, Operation::Statement(reset)).await?;
        myself.send_message(RetryMsg::Tick)?;
        let timer = myself.send_interval(args.config.poll_interval, || RetryMsg::Tick);
        let handler_slots = Arc::new(tokio::sync::Semaphore::new(
            args.config.handler_concurrency.max(1),
        ));
        Ok(RetryState {
            args,
            timer: Some(timer),
            reader: Mutex::new(None),
            handler_slots,
            recording: None,
            last_stats: None,
            last_prune: None,
            last_key_prune: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RetryMsg>,
        msg: RetryMsg,
        state: &mut RetryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RetryMsg::Tick => {
                if let Err(e) = state.replay_due().await {
                    tracing::warn!(class = ?e.class, detail = %e.detail, "retry queue replay stopped; next tick retries");
                }
            }
            RetryMsg::Stats(reply) => {
                let _ = reply.send(state.stats().await);
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
        // Outcomes already known go into the journal before it stops.
        if let Err(e) = state.settle_recording().await {
            tracing::warn!(detail = %e.detail, "the last replay outcomes could not be recorded; those entries will be replayed again");
        }
        // Close the read connection now, before the journal writer closes
        // its own: the last connection to close cleans up the WAL files,
        // and only a writer can.
        if let Ok(mut reader) = state.reader.lock() {
            reader.take();
        }
        Ok(())
    }
}

impl RetryState {
    /// Run `f` on the actor's read-only journal connection (kept between
    /// calls, so its statement and page caches stay warm).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.args.journal_db.clone();
        let conn = self.reader.lock().ok().and_then(|mut r| r.take());
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
        if let Ok(mut reader) = self.reader.lock() {
            *reader = conn;
        }
        result
    }

    /// Replay due entries, a batch at a time, until none is due or the
    /// database keeps failing.
    async fn replay_due(&mut self) -> Result<()> {
        let limit = self.args.config.replay_batch.max(1);
        // Until a replay has been answered in this tick (it passed, or failed
        // for good, which also means the target answered), the target may
        // still be down: the most urgent entry goes first and alone, so the
        // others do not spend an attempt on it.
        let mut proven = false;
        loop {
            let sql = (self.args.sql_gate)();
            let busy = ids_text(&self.args.in_flight.ids());
            let due = self
                .read(move |c| due(c, now_ms(), limit, sql, &busy))
                .await?;
            let mut rest = due.as_slice();
            if !proven {
                let Some((probe, others)) = rest.split_first() else {
                    break;
                };
                if self.replay_group(std::slice::from_ref(probe)).await? {
                    break;
                }
                proven = true;
                rest = others;
            }
            let still_failing = !rest.is_empty() && self.replay_group(rest).await?;
            if still_failing || due.len() < limit {
                break;
            }
            self.housekeeping().await?;
        }
        self.settle_recording().await?;
        self.housekeeping().await
    }

    /// Record a batch's outcomes in the journal, then delete the
    /// idempotency keys of its replayed SQL (their success is recorded).
    /// This runs while the next batch is read and replayed; its entries stay
    /// in flight (skipped by the next read) until it is done. One record is
    /// pending at most, so outcomes are journaled in order.
    async fn record(
        &mut self,
        updates: Vec<Statement>,
        sql_done: Vec<i64>,
        in_flight: InFlightGuard,
    ) -> Result<()> {
        self.settle_recording().await?;
        let (journal, app) = (self.args.journal.clone(), self.args.app.clone());
        self.recording = Some(tokio::spawn(async move {
            slot::write(&journal, Operation::Batch(updates)).await?;
            drop(in_flight);
            if !sql_done.is_empty() {
                let forget = Statement::new(
                    "DELETE FROM _resilite_idempotency WHERE key IN \
                     (SELECT ?1 || value FROM json_each(?2))",
                    [Value::from(QUEUE_KEY_PREFIX), ids_json(&sql_done)],
                );
                if let Err(e) = slot::write(&app, Operation::Statement(forget)).await {
                    tracing::warn!(detail = %e.detail, "could not delete the idempotency keys of replayed entries");
                }
            }
            Ok(())
        }));
        Ok(())
    }

    /// Wait for the pending record, if any.
    async fn settle_recording(&mut self) -> Result<()> {
        match self.recording.take() {
            Some(pending) => pending
                .await
                .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?,
            None => Ok(()),
        }
    }

    /// Refresh the gauges, prune old succeeded entries and forget old
    /// idempotency keys, each at most as often as its period allows.
    async fn housekeeping(&mut self) -> Result<()> {
        let due = |last: Option<Instant>, every| last.is_none_or(|t: Instant| t.elapsed() >= every);
        if due(self.last_key_prune, KEY_PRUNE_EVERY) {
            self.last_key_prune = Some(Instant::now());
            self.forget_old_keys().await;
        }
        if due(self.last_prune, PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            let retention = self.args.config.succeeded_retention.as_millis() as i64;
            let prune = Statement::new(
                "DELETE FROM retry_queue WHERE status = 'succeeded' AND updated_at_ms < ?1",
                [Value::Integer(now_ms() - retention)],
            );
            self.journal(vec![prune]).await?;
        }
        if due(self.last_stats, STATS_EVERY) {
            self.last_stats = Some(Instant::now());
            self.publish_stats().await;
        }
        Ok(())
    }

    /// Replay `entries` and record the outcomes; true when one failed in a
    /// way that may pass.
    async fn replay_group(&mut self, entries: &[Due]) -> Result<bool> {
        let in_flight = self.args.in_flight.enter(entries.iter().map(|e| e.id));
        let mut outcomes = self.replay_entries(entries).await;
        let mut updates = Vec::new();
        let mut succeeded = Vec::new();
        let mut sql_done = Vec::new();
        let mut still_failing = false;
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
                        sql_done.push(entry.id);
                    }
                }
                Err(e) => {
                    still_failing |= e.class.is_retryable_later();
                    updates.push(self.failed(entry, e));
                }
            }
        }
        if !succeeded.is_empty() {
            metrics::counter!("resilite_retry_replays_total", "outcome" => "succeeded")
                .increment(succeeded.len() as u64);
            updates.push(Statement::new(
                "UPDATE retry_queue SET status = 'succeeded', attempts = attempts + 1, updated_at_ms = ?1 \
                 WHERE id IN (SELECT value FROM json_each(?2))",
                [Value::Integer(now_ms()), ids_json(&succeeded)],
            ));
        }
        self.record(updates, sql_done, in_flight).await?;
        Ok(still_failing)
    }

    /// Delete the idempotency keys older than `key_retention` (a scan of
    /// the key table, hence hourly). The table exists once a key was used.
    async fn forget_old_keys(&self) {
        let retention = self.args.config.key_retention.as_millis() as i64;
        let prune = Statement::new(
            "DELETE FROM _resilite_idempotency WHERE applied_at_ms < ?1",
            [Value::Integer(now_ms() - retention)],
        );
        match slot::write(&self.args.app, Operation::Statement(prune)).await {
            Ok(outcome) => {
                let forgotten = outcome.first().map_or(0, |o| o.rows_affected);
                if forgotten > 0 {
                    tracing::info!(forgotten, "idempotency keys past their retention deleted");
                }
            }
            Err(e) if e.detail.contains("no such table") => {}
            Err(e) => tracing::warn!(detail = %e.detail, "could not delete old idempotency keys"),
        }
    }

    /// Apply each entry; its outcome by id. SQL goes to the writer as one
    /// `write_many` (one commit, an outcome each) while the payloads run
    /// through their handlers.
    async fn replay_entries(&self, entries: &[Due]) -> HashMap<i64, Result<()>> {
        let mut outcomes = HashMap::new();
        let mut handled = tokio::task::JoinSet::new();
        let (mut sql_ids, mut sql_ops) = (Vec::new(), Vec::new());
        for entry in entries {
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
            match slot::write_many(&self.args.app, sql_ops).await {
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
        outcomes
    }

    /// Hand an application payload to the handler of its kind, at most
    /// `handler_concurrency` at once.
    fn replay_payload(&self, entry: &Due) -> impl Future<Output = Result<()>> + Send + 'static {
        let handler = self
            .args
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

    /// The journal update for `entry` after a failed replay: back to the
    /// queue with its next due time, or to the dead-letter queue.
    fn failed(&self, entry: &Due, e: Error) -> Statement {
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
        let (status, reason) = if !retryable {
            (
                "dead",
                Some(format!(
                    "permanent error ({}): {}",
                    e.class.as_str(),
                    e.detail
                )),
            )
        } else if attempts >= entry.max_attempts {
            (
                "dead",
                Some(format!(
                    "gave up after {attempts} attempts; last error: {}",
                    e.detail
                )),
            )
        } else {
            ("queued", None)
        };
        let outcome = if status == "dead" { "dead" } else { "retry" };
        metrics::counter!("resilite_retry_replays_total", "outcome" => outcome).increment(1);
        if status == "dead" {
            tracing::warn!(id = entry.id, kind = %entry.kind, reason = reason.as_deref().unwrap_or(""), "queue entry moved to the dead-letter queue");
        }
        let next = now + self.args.config.delay(attempts as u32).as_millis() as i64;
        Statement::new(
            "UPDATE retry_queue SET status = ?1, attempts = ?2, next_retry_at_ms = ?3, last_error_class = ?4, \
             last_error = ?5, errors = ?6, poisoned = ?7, dead_reason = ?8, \
             first_failure_at_ms = coalesce(first_failure_at_ms, ?9), last_failure_at_ms = ?9, \
             resolution = NULL, updated_at_ms = ?9 WHERE id = ?10",
            [
                Value::from(status),
                Value::Integer(attempts),
                Value::Integer(next),
                Value::Text(e.class.as_str().into()),
                Value::Text(e.detail.clone()),
                Value::Text(serde_json::Value::Array(history).to_string()),
                Value::Integer(poisoned.into()),
                reason.map_or(Value::Null, Value::Text),
                Value::Integer(now),
                Value::Integer(entry.id),
            ],
        )
    }

    async fn journal(&self, statements: Vec<Statement>) -> Result<()> {
        slot::write(&self.args.journal, Operation::Batch(statements))
            .await
            .map(|_| ())
    }

    async fn stats(&self) -> Result<QueueStats> {
        let in_flight = self.args.in_flight.clone();
        self.read(move |c| in_flight.stats(c)).await
    }

    async fn publish_stats(&self) {
        if let Ok(s) = self.stats().await {
            metrics::gauge!("resilite_retry_queue_depth").set((s.queued + s.retrying) as f64);
            metrics::gauge!("resilite_dead_letters").set(s.dead as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A journal in memory holding `entries` (priority, due offset in ms,
    /// ordering key, status).
    fn queue_of(entries: &[(u8, i64, Option<u8>, u8)]) -> Connection {
        let conn = crate::journal::in_memory();
        for (priority, due_in, key, status) in entries {
            let status =
                ["queued", "queued", "retrying", "succeeded", "dead"][*status as usize % 5];
            conn.execute(
                "INSERT INTO retry_queue (kind, payload, priority, ordering_key, max_attempts, next_retry_at_ms, status, created_at_ms, updated_at_ms) \
                 VALUES ('sql', '{}', ?1, ?2, 10, ?3, ?4, 0, 0)",
                rusqlite::params![priority, key.map(|k| format!("k{k}")), 1_000 + due_in, status],
            )
            .unwrap();
        }
        conn
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn due_entries_come_by_priority_then_due_time_and_one_per_ordering_key(
            entries in prop::collection::vec((1u8..=10, -500i64..500, prop::option::of(0u8..4), 0u8..5), 0..60),
            limit in 1usize..80,
            busy in prop::collection::btree_set(1i64..60, 0..10),
        ) {
            let conn = queue_of(&entries);
            let now = 1_000;
            let busy: Vec<i64> = busy.into_iter().collect();
            let got: Vec<Entry> = due(&conn, now, limit, true, &ids_text(&busy))
                .unwrap()
                .iter()
                .map(|d| entry_by_id(&conn, d.id).unwrap().unwrap())
                .collect();
            prop_assert!(got.len() <= limit);
            for e in &got {
                prop_assert_eq!(e.status.as_str(), "queued");
                prop_assert!(e.next_retry_at_ms <= now);
                prop_assert!(!busy.contains(&e.id), "entry {} is in flight", e.id);
            }
            // Sorted by (priority, next_retry_at, id).
            let keys: Vec<_> = got.iter().map(|e| (e.priority, e.next_retry_at_ms, e.id)).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            prop_assert_eq!(&keys, &sorted);
            // An entry with an ordering key comes only when no older entry
            // with that key is waiting or being replayed.
            let unfinished = |key: &str, before: i64| entries.iter().enumerate().any(|(i, (_, _, k, st))| {
                let id = i as i64 + 1;
                id < before && k.map(|k| format!("k{k}")).as_deref() == Some(key) && st % 5 <= 2
            });
            for e in &got {
                if let Some(key) = &e.ordering_key {
                    prop_assert!(!unfinished(key, e.id), "entry {} jumped the queue of {}", e.id, key);
                }
            }
            // Nothing due and eligible is left out when there was room.
            if got.len() < limit {
                let eligible = entries.iter().enumerate().filter(|(i, (_, due_in, k, st))| {
                    let id = *i as i64 + 1;
                    st % 5 <= 1 && 1_000 + due_in <= now && !busy.contains(&id)
                        && k.is_none_or(|k| !unfinished(&format!("k{k}"), id))
                }).count();
                prop_assert_eq!(got.len(), eligible);
            }
        }
    }

    proptest! {
        #[test]
        fn backoff_delays_are_bounded_and_grow(base_ms in 1u64..2000, max_s in 1u64..600, attempt in 1u32..40) {
            let config = RetryConfig {
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_secs(max_s).max(Duration::from_millis(base_ms)),
                ..RetryConfig::default()
            };
            let delay = config.delay(attempt);
            prop_assert!(delay <= config.max_delay, "{delay:?} > {:?}", config.max_delay);
            prop_assert!(delay >= config.base_delay.min(config.max_delay));
            // Without jitter the delay doubles; with it, the lower bound of
            // attempt n+1 still reaches the lower bound of attempt n.
            let floor = |n: u32| config.base_delay.saturating_mul(1u32 << (n - 1).min(20)).min(config.max_delay);
            prop_assert!(config.delay(attempt + 1) >= floor(attempt + 1).min(config.max_delay));
        }
    }
}
