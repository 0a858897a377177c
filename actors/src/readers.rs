//! The read pool: N read-only connections, each on its own thread, sharing
//! one bounded queue of queries. In WAL mode a reader sees the last committed
//! snapshot and never waits behind the writer.
//!
//! A reader thread survives a panic in one query (the caller gets an
//! internal error); the pool ends when its last handle is dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::connection::{open_read_only, DbOptions};
use crate::error::{Error, ErrorClass, Result};
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
}

/// A cloneable handle to the read pool.
#[derive(Clone)]
pub struct ReadPool {
    jobs: flume::Sender<ReadJob>,
}

impl ReadPool {
    /// Open `pool_size` read-only connections (the database must exist).
    pub fn start(config: ReadPoolConfig) -> Result<ReadPool> {
        let size = config.pool_size.max(1);
        let (jobs, rx) = flume::bounded::<ReadJob>(size * QUEUE_PER_READER);
        for i in 0..size {
            let conn = open_read_only(&config.db)?;
            let rx = rx.clone();
            let max_rows = config.max_rows;
            std::thread::Builder::new()
                .name(format!("resilite-reader-{i}"))
                .spawn(move || {
                    for job in rx.iter() {
                        let result = catch_unwind(AssertUnwindSafe(|| {
                            run_query(&conn, &job.stmt, max_rows)
                        }))
                        .unwrap_or_else(|_| {
                            Err(Error::classed(
                                ErrorClass::Internal,
                                "reader panicked on a query",
                            ))
                        });
                        let _ = job.reply.send(result);
                    }
                })?;
        }
        Ok(ReadPool { jobs })
    }

    /// Run a read-only statement and return its columns and rows.
    pub async fn query(&self, stmt: Statement) -> Result<QueryResult> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send_async(ReadJob { stmt, reply })
            .await
            .map_err(|_| Error::unavailable("the read pool is stopped"))?;
        rx.await
            .map_err(|_| Error::classed(ErrorClass::Internal, "reader stopped before answering"))?
    }
}

fn run_query(conn: &Connection, s: &Statement, max_rows: usize) -> Result<QueryResult> {
    if s.sql.trim().is_empty() {
        return Err(Error::bad_input("the SQL text is empty"));
    }
    let mut stmt = conn
        .prepare_cached(&s.sql)
        .map_err(|e| Error::from_sqlite(e, &s.sql))?;
    if !stmt.readonly() {
        return Err(Error::bad_input(
            "a query must be read-only; send writes to execute or batch",
        ));
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let width = columns.len();
    let mut rows = Vec::new();
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
            values.push(Value::from(row.get_ref(i)?));
        }
        rows.push(values);
    }
    Ok(QueryResult { columns, rows })
}
