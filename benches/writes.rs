//! `cargo bench --bench writes` (`BENCH_SECONDS=0.5` for a quick run;
//! `RESILITE_BACKUP_OP_LOG=true` or `=false` for resilite with or without
//! the operation log; `RESILITE_AUDIT_LEVEL=off`, `failures` or `all` for
//! the operation audit's level; `RESILITE_HEALTH_INTERVAL=1s` for the
//! health actor's checks; unset: as configured by default; `BENCH_TAIL=1`
//! for a line of resilite's slowest answers (p99.9, max) per case; `BENCH_SYNC=normal`
//! or `full`, `BENCH_TASKS=1,8` and `BENCH_SUBJECTS=resilite` to run some
//! rows and columns only, e.g. under a profiler; `BENCH_ACKED=1` to print
//! how many writes resilite acknowledged, for CPU per write under
//! `perf stat`).
//!
//! Acknowledged single-row inserts/s, in one run, for resilite and its
//! baselines at synchronous FULL and NORMAL:
//! - resilite: `Runtime::execute` (group commit through the WriterActor);
//! - mutex: `Mutex<rusqlite::Connection>`, one transaction per write, on
//!   `spawn_blocking`;
//! - tokio-rusqlite: one `call` per write (autocommit);
//! - floor: the least group commit: one thread with one connection takes
//!   the writes queued for it (waiting, as resilite's writer does, up to
//!   500 µs for as many callers as its last batch held), commits them in
//!   one transaction and answers each; no statement gate, breaker,
//!   retries, audit or metrics. With resilite's operation log on, the
//!   floor keeps the least such log: its position in a one-row table of
//!   the database, in the same transaction, then the batch's statements
//!   as one row of a second file, in a transaction of its own, before the
//!   answers. What resilite adds costs the difference; a target above the
//!   floor's share of the limit is beyond what group commit itself (with
//!   such a log, when on) reaches on the machine;
//! - ceiling: one thread, raw rusqlite, 10,000-row transactions.
//!
//! The physical limit at FULL for C concurrent callers is
//! min(ceiling, C x the one-row-commit rate), since C waiting callers can put
//! at most C writes into one commit.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use resilite::{Config, Runtime, Statement, Synchronous, Value};
use rusqlite::Connection;

const INSERT: &str = "INSERT INTO t(v) VALUES (?1)";
const CREATE: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";

struct Measured {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// The slowest answers (`BENCH_TAIL=1` prints them for resilite).
    p999_us: f64,
    max_us: f64,
    over_20ms: usize,
    acked: u64,
}

impl Measured {
    /// The rate and percentiles of `latencies` (µs) answered in `elapsed` s.
    fn of(mut latencies: Vec<u32>, elapsed: f64) -> Measured {
        latencies.sort_unstable();
        let pct = |p: f64| {
            let at = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
            latencies.get(at).copied().unwrap_or(0) as f64
        };
        Measured {
            rate: latencies.len() as f64 / elapsed,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            max_us: latencies.last().copied().unwrap_or(0) as f64,
            over_20ms: latencies.iter().filter(|&&us| us > 20_000).count(),
            acked: latencies.len() as u64,
        }
    }

    /// A baseline left out by `BENCH_SUBJECTS`.
    const NONE: Measured = Measured {
        rate: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        p999_us: f64::NAN,
        max_us: f64::NAN,
        over_20ms: 0,
        acked: 0,
    };

    /// `BENCH_TAIL=1`: a line with the slowest answers of `who`.
    fn print_tail(&self, who: &str) {
        if std::env::var_os("BENCH_TAIL").is_some() {
            println!(
                "{who} tail: p99.9 {:.0} µs, max {:.0} µs, {} answers over 20 ms",
                self.p999_us, self.max_us, self.over_20ms
            );
        }
    }
}

fn seconds() -> Duration {
    let s: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(s)
}

fn pragma(sync: Synchronous) -> &'static str {
    match sync {
        Synchronous::Full => "FULL",
        _ => "NORMAL",
    }
}

fn open(path: &std::path::Path, sync: Synchronous) -> Connection {
    let conn = Connection::open(path).expect("open bench db");
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={}; PRAGMA busy_timeout=5000;",
        pragma(sync)
    ))
    .expect("pragmas");
    conn
}

/// Run `tasks` concurrent loops of `write` until the deadline; count
/// acknowledged writes and their latencies.
async fn drive<W, F>(tasks: usize, write: W) -> Measured
where
    W: Fn(u64) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = bool> + Send,
{
    let duration = seconds();
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (write, counter) = (write.clone(), counter.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                if !write(n).await {
                    break;
                }
                latencies.push(t0.elapsed().as_micros() as u32);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("bench task"));
    }
    Measured::of(all, started.elapsed().as_secs_f64())
}

/// Writes issued at `rate` per second whatever the answers (an open
/// loop, as a service's requests arrive), each timed from when it was
/// due: a stall of the writer then counts for every write due during it,
/// where a closed loop stops issuing while its callers wait.
async fn open_loop<W, F>(rate: f64, write: W) -> Measured
where
    W: Fn(u64) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = bool> + Send + 'static,
{
    let duration = seconds();
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()) as u64;
    let (done, mut latencies) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let (write, done) = (write.clone(), done.clone());
        tokio::spawn(async move {
            if write(n).await {
                let _ = done.send(due.elapsed().as_micros() as u32);
            }
        });
    }
    drop(done);
    let mut all = Vec::with_capacity(total as usize);
    while let Some(us) = latencies.recv().await {
        all.push(us);
    }
    Measured::of(all, started.elapsed().as_secs_f64())
}

/// A runtime on a fresh database at `sync` (as the environment sets the
/// log and the audit), with the bench's table; the directory goes with it.
async fn start_resilite(sync: Synchronous) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::for_database(dir.path().join("app.db"));
    config.database.synchronous = sync;
    common::apply_env(&mut config);
    let rt = Runtime::start(config).await.expect("runtime");
    rt.execute(Statement::sql(CREATE)).await.expect("create");
    (rt, dir)
}

/// Insert row `n` through `rt`; whether it was acknowledged.
async fn insert(rt: Runtime, n: u64) -> bool {
    rt.execute(Statement::new(INSERT, [Value::Text(format!("v{n}"))]))
        .await
        .is_ok()
}

/// resilite under an open loop of `rate` writes/s (see [`open_loop`]).
async fn bench_resilite_open(sync: Synchronous, rate: f64) -> Measured {
    let (rt, _dir) = start_resilite(sync).await;
    let writer = rt.clone();
    let m = open_loop(rate, move |n| insert(writer.clone(), n)).await;
    rt.shutdown().await.expect("shutdown");
    m
}

async fn bench_resilite(sync: Synchronous, tasks: usize) -> (Measured, f64) {
    let (rt, _dir) = start_resilite(sync).await;
    let writer = rt.clone();
    let m = drive(tasks, move |n| insert(writer.clone(), n)).await;
    let stats = rt.writer_stats().await.expect("stats");
    let rows = rt
        .query(Statement::sql("SELECT count(*) FROM t"))
        .await
        .expect("count");
    if rows.rows[0][0] != Value::Integer(m.acked as i64) {
        println!(
            "WARNING: {} acknowledged but {:?} rows",
            m.acked, rows.rows[0][0]
        );
    }
    rt.shutdown().await.expect("shutdown");
    if std::env::var_os("BENCH_ACKED").is_some() {
        // For CPU per write: divide `perf stat`'s task-clock by it.
        println!("resilite acknowledged {} writes", m.acked);
    }
    m.print_tail("resilite");
    (m, stats.mean_batch)
}

async fn bench_mutex(sync: Synchronous, tasks: usize) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = open(&dir.path().join("m.db"), sync);
    conn.execute_batch(CREATE).expect("create");
    let conn = Arc::new(Mutex::new(conn));
    drive(tasks, move |n| {
        let conn = conn.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let c = conn.lock().expect("mutex");
                c.execute_batch("BEGIN IMMEDIATE").is_ok()
                    && c.prepare_cached(INSERT)
                        .and_then(|mut s| s.execute([format!("v{n}")]))
                        .is_ok()
                    && c.execute_batch("COMMIT").is_ok()
            })
            .await
            .unwrap_or(false)
        }
    })
    .await
}

async fn bench_tokio_rusqlite(sync: Synchronous, tasks: usize) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    open(&dir.path().join("tr.db"), sync)
        .execute_batch(CREATE)
        .expect("create");
    let conn = tokio_rusqlite::Connection::open(dir.path().join("tr.db"))
        .await
        .expect("open");
    let sql = format!(
        "PRAGMA synchronous={}; PRAGMA busy_timeout=5000;",
        pragma(sync)
    );
    conn.call(move |c| c.execute_batch(&sql))
        .await
        .expect("pragmas");
    drive(tasks, move |n| {
        let conn = conn.clone();
        async move {
            conn.call(move |c| {
                c.prepare_cached(INSERT)
                    .and_then(|mut s| s.execute([format!("v{n}")]))
            })
            .await
            .is_ok()
        }
    })
    .await
}

/// A write sent to the floor's thread: its value and who waits for it.
type FloorWrite = (String, tokio::sync::oneshot::Sender<bool>);

/// The floor's thread: group commits of what is queued on `jobs` (see
/// the module doc), with the least operation log on `log` when given,
/// until every sender is gone.
fn floor_thread(
    conn: Connection,
    log: Option<Connection>,
    jobs: std::sync::mpsc::Receiver<FloorWrite>,
) {
    const POSITION: &str = "INSERT OR REPLACE INTO position (id, seq) VALUES (1, ?1)";
    const APPEND: &str = "INSERT INTO op_log (seq, op) VALUES (?1, ?2)";
    const MAX_BATCH: usize = 1024;
    const BATCH_WAIT: Duration = Duration::from_micros(500);
    let mut seq = 0i64;
    let mut expected = 1;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + BATCH_WAIT;
        while batch.len() < MAX_BATCH {
            let next = match jobs.try_recv() {
                Ok(job) => Ok(job),
                Err(_) if batch.len() < expected => jobs
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .map_err(drop),
                Err(_) => Err(()),
            };
            match next {
                Ok(job) => batch.push(job),
                Err(()) => break,
            }
        }
        expected = batch.len();
        seq += batch.len() as i64;
        let committed = conn.execute_batch("BEGIN IMMEDIATE").is_ok()
            && conn
                .prepare_cached(INSERT)
                .is_ok_and(|mut stmt| batch.iter().all(|(v, _)| stmt.execute([v]).is_ok()))
            && (log.is_none() || conn.execute(POSITION, [seq]).is_ok())
            && conn.execute_batch("COMMIT").is_ok();
        if !committed {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let committed = committed
            && log.as_ref().is_none_or(|log| {
                let ops: String = batch
                    .iter()
                    .map(|(v, _)| format!(r#"{{"sql":"{INSERT}","params":["{v}"]}},"#))
                    .collect();
                log.execute_batch("BEGIN IMMEDIATE").is_ok()
                    && log.execute(APPEND, (seq, ops)).is_ok()
                    && log.execute_batch("COMMIT").is_ok()
            });
        for (_, answer) in batch {
            let _ = answer.send(committed);
        }
    }
}

async fn bench_floor(sync: Synchronous, tasks: usize) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = open(&dir.path().join("f.db"), sync);
    conn.execute_batch(CREATE).expect("create");
    let log = op_log_on().then(|| {
        conn.execute_batch("CREATE TABLE position (id INTEGER PRIMARY KEY, seq INTEGER)")
            .expect("create position");
        let log = open(&dir.path().join("f-log.db"), sync);
        log.execute_batch("CREATE TABLE op_log (seq INTEGER PRIMARY KEY, op TEXT)")
            .expect("create log");
        log
    });
    let (jobs, queued) = std::sync::mpsc::channel::<FloorWrite>();
    let thread = std::thread::spawn(move || floor_thread(conn, log, queued));
    let m = drive(tasks, move |n| {
        let jobs = jobs.clone();
        async move {
            let (answer, answered) = tokio::sync::oneshot::channel();
            jobs.send((format!("v{n}"), answer)).is_ok() && answered.await.unwrap_or(false)
        }
    })
    .await;
    thread.join().expect("floor thread");
    m
}

fn bench_ceiling(sync: Synchronous) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = open(&dir.path().join("c.db"), sync);
    conn.execute_batch(CREATE).expect("create");
    let deadline = Instant::now() + seconds();
    let started = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let tx = conn.transaction().expect("begin");
        {
            let mut stmt = tx.prepare_cached(INSERT).expect("prepare");
            for _ in 0..10_000 {
                stmt.execute([format!("v{n}")]).expect("insert");
                n += 1;
            }
        }
        tx.commit().expect("commit");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Whether resilite runs with its operation log (as the environment or
/// the default says): the floor then keeps one too.
fn op_log_on() -> bool {
    common::op_log().unwrap_or(Config::default().backup.op_log)
}

/// True when the comma-separated list in `var` is unset or names `case`
/// (case-insensitive).
fn selected(var: &str, case: &str) -> bool {
    std::env::var(var).map_or(true, |list| {
        list.split(',').any(|c| c.trim().eq_ignore_ascii_case(case))
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "acknowledged single-row inserts/s; {:.1}s per case; {cores} cores; latencies in microseconds; resilite's operation log {}\n",
        seconds().as_secs_f64(),
        match (common::op_log(), op_log_on()) {
            (Some(_), true) => "on (RESILITE_BACKUP_OP_LOG=true)",
            (Some(_), false) => "off (RESILITE_BACKUP_OP_LOG=false)",
            (None, true) => "on (the default)",
            (None, false) => "off (the default)",
        }
    );
    println!(
        "operation audit level: {:?}\n",
        common::audit_level().unwrap_or(Config::default().audit.level)
    );
    if let Ok(rates) = std::env::var("BENCH_RATE") {
        open_loop_table(&rt, &rates);
        return;
    }
    for sync in [Synchronous::Full, Synchronous::Normal] {
        if !selected("BENCH_SYNC", pragma(sync)) {
            continue;
        }
        let ceiling = if selected("BENCH_SUBJECTS", "ceiling") {
            bench_ceiling(sync)
        } else {
            f64::NAN
        };
        let mut one_row_commit = 0.0;
        println!(
            "synchronous={}  ceiling (1 thread, 10k-row txns): {ceiling:.0}/s",
            pragma(sync)
        );
        println!(
            "{:>6} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9}",
            "tasks",
            "resilite",
            "mutex",
            "tokio-rsq",
            "floor",
            "p50",
            "p99",
            "mean batch",
            "x mutex",
            "x floor",
            "limit",
            "% limit",
            "floor %"
        );
        let concurrency: &[usize] = match sync {
            Synchronous::Full => &[1, 8, 64],
            _ => &[1, 8, 64, 1024],
        };
        for &tasks in concurrency {
            if !selected("BENCH_TASKS", &tasks.to_string()) {
                continue;
            }
            let (r, mean_batch) = rt.block_on(bench_resilite(sync, tasks));
            let m = match selected("BENCH_SUBJECTS", "mutex") {
                true => rt.block_on(bench_mutex(sync, tasks)),
                false => Measured::NONE,
            };
            let tr = match selected("BENCH_SUBJECTS", "tokio-rusqlite") {
                true => rt.block_on(bench_tokio_rusqlite(sync, tasks)),
                false => Measured::NONE,
            };
            let f = match selected("BENCH_SUBJECTS", "floor") {
                true => rt.block_on(bench_floor(sync, tasks)),
                false => Measured::NONE,
            };
            if tasks == 1 {
                one_row_commit = m.rate;
            }
            // C waiting callers put at most C writes into one commit.
            let limit = match sync {
                Synchronous::Full => ceiling.min(tasks as f64 * one_row_commit),
                _ => ceiling,
            };
            println!(
                "{tasks:>6} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>9.0} {:>9.0} {:>10.1} {:>8.1}x {:>8.2}x {:>10.0} {:>8.1}% {:>8.1}%",
                r.rate,
                m.rate,
                tr.rate,
                f.rate,
                r.p50_us,
                r.p99_us,
                mean_batch,
                r.rate / m.rate,
                r.rate / f.rate,
                limit,
                100.0 * r.rate / limit,
                100.0 * f.rate / limit
            );
        }
        println!();
    }
}

/// `BENCH_RATE=r1,r2`: resilite alone under open loops of those rates
/// (writes/s), at each selected sync level.
fn open_loop_table(rt: &tokio::runtime::Runtime, rates: &str) {
    println!("open loop: writes issued at a fixed rate, each timed from when it was due\n");
    println!(
        "{:>8} {:>10} {:>12} {:>9} {:>9}",
        "sync", "offered/s", "answered/s", "p50", "p99"
    );
    for sync in [Synchronous::Full, Synchronous::Normal] {
        if !selected("BENCH_SYNC", pragma(sync)) {
            continue;
        }
        for rate in rates.split(',').map(|r| match r.trim().parse::<f64>() {
            Ok(rate) if rate > 0.0 => rate,
            _ => {
                panic!("BENCH_RATE={rates}: {r:?} is not a rate; give writes/s, e.g. 20000,100000")
            }
        }) {
            let m = rt.block_on(bench_resilite_open(sync, rate));
            println!(
                "{:>8} {rate:>10.0} {:>12.0} {:>9.0} {:>9.0}",
                pragma(sync),
                m.rate,
                m.p50_us,
                m.p99_us
            );
        }
    }
}
