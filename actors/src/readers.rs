//! The read pool: N read-only connections, each on its own thread, sharing
//! one bounded queue of queries. In WAL mode a reader sees the last committed
//! snapshot and never waits behind the writer.
//!
//! Every query passes the statement gate (read-only, no transaction
//! control, ATTACH or pragma outside the allow-list), runs at most
//! `query_timeout`, is stopped as soon as its caller goes away, and answers
//! at most `max_rows` rows and `max_response_bytes` bytes of values.
//!
//! The pool can be closed and opened again on the same path while its
//! handles stay valid ([`ReadPool::close`], [`ReadPool::open`]): a restore
//! replaces the file.
//!
//! A reader thread survives a panic in one query (the caller gets an
//! internal error); the pool ends when its last handle is dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::connection::{open_read_only, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::gate::{self, Bounds, Gate};
use crate::value::{QueryResult, Statement, Value};

/// Default number of read-only connections.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default largest number of rows one query may return.
pub const DEFAULT_MAX_ROWS: usize = 100_000;
/// Default largest answer of one query, in bytes of values.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Default longest run of one query.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Queries waiting for a reader, per connection, before callers wait.
const QUEUE_PER_READER: usize = 256;

/// How to start a read pool.
#[derive(Debug, Clone)]
pub struct ReadPoolConfig {
    /// The database file.
    pub db: DbOptions,
    /// Number of read-only connections.
    pub pool_size: usize,
    /// Largest number of rows one query may return.
    pub max_rows: usize,
    /// Largest answer of one query (the sum of its values' sizes).
    pub max_response_bytes: usize,
    /// Longest run of one query before it is interrupted.
    pub query_timeout: Duration,
}

struct ReadJob {
    stmt: Statement,
    reply: oneshot::Sender<Result<QueryResult>>,
    /// Set when the caller stopped waiting: the query is stopped.
    cancelled: Arc<AtomicBool>,
}

/// Sets `cancelled` when the caller's future is dropped before its answer.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The limits of one reader connection.
#[derive(Clone, Copy)]
struct Limits {
    max_rows: usize,
    max_response_bytes: usize,
}

/// What a reader thread takes from the pool's queue.
enum Job {
    Query(ReadJob),
    /// Close the connection, then wait at the barrier until every reader
    /// has (so that no reader takes two), then answer.
    Close(Arc<Barrier>, oneshot::Sender<()>),
}

/// A cloneable handle to the read pool.
#[derive(Clone)]
pub struct ReadPool {
    jobs: flume::Sender<Job>,
    size: usize,
    /// True between [`ReadPool::close`] and [`ReadPool::open`].
    closed: Arc<AtomicBool>,
}

/// One reader thread and its connection.
struct Reader {
    db: DbOptions,
    bounds: Bounds,
    limits: Limits,
    closed: Arc<AtomicBool>,
    /// The connection and its gate; opened when a query needs it.
    open: Option<(Connection, Gate)>,
}

impl Reader {
    /// The open connection, opened if needed; refused while the pool is
    /// closed.
    fn connection(&mut self) -> Result<&(Connection, Gate)> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::unavailable(format!(
                "{} is closed while its file is replaced (a restore); query again once it reopens",
                self.db.path.display()
            )));
        }
        if self.open.is_none() {
            let conn = open_read_only(&self.db)?;
            let gate = Gate::install(&conn, self.bounds)?;
            self.open = Some((conn, gate));
        }
        Ok(self.open.as_ref().expect("opened above"))
    }

    fn serve(mut self, rx: flume::Receiver<Job>) {
        for job in rx.iter() {
            match job {
                Job::Query(job) => self.query(job),
                Job::Close(barrier, reply) => {
                    self.open = None;
                    barrier.wait();
                    let _ = reply.send(());
                }
            }
        }
    }

    fn query(&mut self, job: ReadJob) {
        if job.reply.is_closed() {
            return; // its caller left while it waited
        }
        let limits = self.limits;
        let result = self.connection().and_then(|(conn, gate)| {
            let result = catch_unwind(AssertUnwindSafe(|| {
                gate.caller(conn, Some(&job.cancelled), || {
                    run_query(conn, &job.stmt, limits)
                })
            }))
            .unwrap_or_else(|_| {
                Err(Error::classed(
                    ErrorClass::Internal,
                    "reader panicked on a query",
                ))
            });
            end_read(conn);
            result
        });
        let _ = job.reply.send(result);
    }
}

impl ReadPool {
    /// Open `pool_size` read-only connections (the database must exist).
    pub fn start(config: ReadPoolConfig) -> Result<ReadPool> {
        let size = config.pool_size.max(1);
        let (jobs, rx) = flume::bounded::<Job>(size * QUEUE_PER_READER);
        let closed = Arc::new(AtomicBool::new(false));
        for i in 0..size {
            let mut reader = Reader {
                db: config.db.clone(),
                bounds: Bounds {
                    timeout: config.query_timeout,
                    timeout_key: "readers.query_timeout",
                    max_value_bytes: config.max_response_bytes,
                },
                limits: Limits {
                    max_rows: config.max_rows,
                    max_response_bytes: config.max_response_bytes,
                },
                closed: closed.clone(),
                open: None,
            };
            // Open now, so that a database that cannot be read fails the start.
            reader.connection()?;
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("resilite-reader-{i}"))
                .spawn(move || reader.serve(rx))?;
        }
        Ok(ReadPool { jobs, size, closed })
    }

    /// Close every reader's connection (after the queries they are running)
    /// and refuse queries (`unavailable`) until [`ReadPool::open`]: a
    /// restore replaces the file. Handles stay valid.
    pub async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let barrier = Arc::new(Barrier::new(self.size));
        let mut answers = Vec::with_capacity(self.size);
        for _ in 0..self.size {
            let (reply, answer) = oneshot::channel();
            self.jobs
                .send_async(Job::Close(barrier.clone(), reply))
                .await
                .map_err(|_| Error::unavailable("the read pool is stopped"))?;
            answers.push(answer);
        }
        for answer in answers {
            answer
                .await
                .map_err(|_| Error::unavailable("a reader stopped while closing"))?;
        }
        Ok(())
    }

    /// Take queries again; each reader opens the file at the same path
    /// before its next query.
    pub fn open(&self) {
        self.closed.store(false, Ordering::Release);
    }

    /// Run a read-only statement and return its columns and rows.
    pub async fn query(&self, stmt: Statement) -> Result<QueryResult> {
        let (reply, rx) = oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let _stop_if_dropped = CancelOnDrop(cancelled.clone());
        self.jobs
            .send_async(Job::Query(ReadJob {
                stmt,
                reply,
                cancelled,
            }))
            .await
            .map_err(|_| Error::unavailable("the read pool is stopped"))?;
        rx.await
            .map_err(|_| Error::classed(ErrorClass::Internal, "reader stopped before answering"))?
    }
}

/// A reader never keeps a transaction open between queries: it would pin
/// an old snapshot (later reads would miss acknowledged writes) and hold
/// back checkpoints. The gate refuses BEGIN; this is the second line.
fn end_read(conn: &Connection) {
    if !conn.is_autocommit() {
        tracing::warn!("a query left a read transaction open; rolled back");
        let _ = conn.execute_batch("ROLLBACK");
    }
}

fn run_query(conn: &Connection, s: &Statement, limits: Limits) -> Result<QueryResult> {
    let Limits {
        max_rows,
        max_response_bytes,
    } = limits;
    let mut stmt = gate::prepare(conn, &s.sql)?;
    if !stmt.readonly() {
        if let Some(refused) = gate::vacuum_refusal(conn, &s.sql) {
            return Err(refused);
        }
        return Err(Error::bad_input(
            "a query must be read-only; send writes to execute or batch",
        ));
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let width = columns.len();
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = stmt
        .query(rusqlite::params_from_iter(&s.params))
        .map_err(|e| Error::from_sqlite(e, &s.sql))?;
    while let Some(row) = cursor.next().map_err(|e| Error::from_sqlite(e, &s.sql))? {
        if rows.len() == max_rows {
            return Err(Error::bad_input(format!(
                "the query returns more than {max_rows} rows; add a LIMIT or raise readers.max_rows"
            )));
        }
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            let value = Value::from(row.get_ref(i)?);
            bytes += value.size();
            values.push(value);
        }
        if bytes > max_response_bytes {
            return Err(Error::bad_input(format!(
                "the answer is larger than readers.max_response_bytes ({max_response_bytes} bytes) \
                 after {} rows; page through it (WHERE key > last key ORDER BY key LIMIT n), \
                 select fewer columns, or raise readers.max_response_bytes",
                rows.len()
            )));
        }
        rows.push(values);
    }
    Ok(QueryResult { columns, rows })
}
