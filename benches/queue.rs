//! `cargo bench --bench queue` (`QUEUE_BENCH_OPS=20000` for a quick run;
//! `RESILITE_BACKUP_OP_LOG` and `RESILITE_AUDIT_LEVEL` as for `writes`).
//!
//! The durable retry queue, in one run:
//! - memory: resident set size of a runtime with an empty queue, then with
//!   1,000,000 entries queued in its journal while it replays them (the
//!   queue lives on disk, so memory should stay flat);
//! - throughput: operations enqueued (each committed to the journal) and
//!   then replayed successfully, per second, for application payloads (a
//!   handler that does nothing) and for SQL inserts (applied once, keyed);
//!   compared with plain `execute` of the same inserts, the baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use resilite::{Config, EnqueueOptions, Operation, Runtime, Statement, Synchronous, Value};

const MEMORY_ENTRIES: i64 = 1_000_000;
/// The small queue memory is compared with.
const SMALL_ENTRIES: i64 = 100_000;
const TASKS: usize = 256;

fn ops() -> usize {
    std::env::var("QUEUE_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn config(dir: &tempfile::TempDir) -> Config {
    let mut c = Config::for_database(dir.path().join("app.db"));
    c.database.synchronous = Synchronous::Normal;
    c.retry.base_delay = Duration::from_millis(1);
    c.retry.poll_interval = Duration::from_millis(10);
    common::apply_env(&mut c);
    c
}

async fn settled(rt: &Runtime, total: i64) {
    loop {
        let s = rt.queue_stats().await.expect("stats");
        if s.succeeded + s.dead >= total && s.queued + s.retrying == 0 {
            assert_eq!(s.dead, 0, "nothing should be dead-lettered");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Peak resident set size while a runtime replays `entries` queued
/// application payloads (the first 100,000 of them, at most 120 s).
async fn replay_peak(entries: i64) -> (f64, i64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::start(config(&dir)).await.expect("start");
    rt.shutdown().await.expect("shutdown");
    // Fill the journal directly: due entries.
    let journal = rusqlite::Connection::open(dir.path().join("app.db.journal")).expect("journal");
    journal
        .execute(
            "INSERT INTO retry_queue (kind, payload, priority, max_attempts, next_retry_at_ms, status, created_at_ms, updated_at_ms) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             SELECT 'noop', '{\"n\":' || i || '}', 1 + i % 10, 10, 0, 'queued', 0, 0 FROM n",
            [entries],
        )
        .expect("fill");
    drop(journal);
    let rt = Runtime::start(config(&dir)).await.expect("restart");
    rt.register_handler("noop", Arc::new(|_| Box::pin(async { Ok(()) })));
    let started = Instant::now();
    let target = entries.min(100_000);
    let mut peak = rss_mib();
    let replayed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_mib());
        let s = rt.queue_stats().await.expect("stats");
        if s.succeeded >= target || started.elapsed() > Duration::from_secs(120) {
            break s.succeeded;
        }
    };
    let secs = started.elapsed().as_secs_f64();
    rt.shutdown().await.expect("shutdown");
    (peak, replayed, replayed as f64 / secs)
}

async fn memory() {
    let (small, _, _) = replay_peak(SMALL_ENTRIES).await;
    let (large, replayed, rate) = replay_peak(MEMORY_ENTRIES).await;
    println!(
        "memory: peak RSS replaying {SMALL_ENTRIES} queued: {small:.1} MiB; {MEMORY_ENTRIES} queued: {large:.1} MiB ({:.2}x); {replayed} replayed at {rate:.0}/s",
        large / small
    );
}

/// Enqueue `n` operations from TASKS tasks with `enqueue`, then wait for the
/// replay; prints and returns the end-to-end rate.
async fn throughput<F, Fut>(label: &str, rt: &Runtime, n: usize, enqueue: F) -> f64
where
    F: Fn(Runtime, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (rt, enqueue) = (rt.clone(), enqueue.clone());
            tokio::spawn(async move {
                for i in (t..n).step_by(TASKS) {
                    enqueue(rt.clone(), i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("enqueue task");
    }
    let enqueued = started.elapsed();
    settled(rt, n as i64).await;
    let total = started.elapsed();
    let rate = n as f64 / total.as_secs_f64();
    println!(
        "{label:<28} {n} ops: enqueue {:>9.0}/s, enqueue+replay {:>9.0}/s",
        n as f64 / enqueued.as_secs_f64(),
        rate
    );
    rate
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    tokio.block_on(async {
        let batch = resilite::config::RetryConfig::default().replay_batch;
        println!("durable retry queue; synchronous=NORMAL; {TASKS} enqueuing tasks; replay_batch {batch}\n");
        memory().await;
        let n = ops();

        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::start(config(&dir)).await.expect("start");
        rt.register_handler("noop", Arc::new(|_| Box::pin(async { Ok(()) })));
        let payloads = throughput("application payloads", &rt, n, |rt: Runtime, i| async move {
            rt.enqueue("noop", serde_json::json!({ "n": i }), EnqueueOptions::default())
                .await
                .expect("enqueue");
        })
        .await;
        rt.shutdown().await.expect("shutdown");

        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::start(config(&dir)).await.expect("start");
        rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)")).await.expect("table");
        // Queue SQL the way execute_durable does after a failure.
        let sql = throughput("SQL inserts (keyed replay)", &rt, n, |rt: Runtime, i| async move {
            let op = Operation::Statement(Statement::new("INSERT INTO t VALUES (?1)", [Value::Integer(i as i64)]));
            rt.enqueue_operation(op, EnqueueOptions::default()).await.expect("enqueue");
        })
        .await;
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let rt = rt.clone();
                tokio::spawn(async move {
                    for i in (t..n).step_by(TASKS) {
                        rt.execute(Statement::new("INSERT INTO t VALUES (?1)", [Value::Integer(i as i64)]))
                            .await
                            .expect("execute");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("execute task");
        }
        let direct = n as f64 / started.elapsed().as_secs_f64();
        println!("{:<28} {n} ops: {direct:>9.0}/s (baseline)", "execute (no queue)");
        // The durable path when the database takes the write at once: what
        // a durable write costs over a plain one when nothing fails.
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let rt = rt.clone();
                tokio::spawn(async move {
                    for i in (t..n).step_by(TASKS) {
                        let op = Operation::Statement(Statement::new("INSERT INTO t VALUES (?1)", [Value::Integer(i as i64)]));
                        rt.execute_durable(op, EnqueueOptions::default()).await.expect("execute_durable");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("execute_durable task");
        }
        let durable = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "{:<28} {n} ops: {durable:>9.0}/s ({:.2}x of execute)",
            "execute_durable (applied)",
            durable / direct
        );
        println!(
            "\nratios: payloads {:.2}x and SQL {:.2}x of direct execute; target >= 50000 ops/s: payloads {}, SQL {}",
            payloads / direct,
            sql / direct,
            if payloads >= 50_000.0 { "met" } else { "NOT met" },
            if sql >= 50_000.0 { "met" } else { "NOT met" }
        );
        rt.shutdown().await.expect("shutdown");
    });
}
