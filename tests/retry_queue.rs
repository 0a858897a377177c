//! The durable retry queue and dead-letter queue through the message API:
//! writes issued while another process holds the write lock, or while the
//! database's filesystem is full (a 4 MiB tmpfs, where mounting is
//! allowed), are queued and land exactly once when the fault goes; a poison
//! operation is dead-lettered, requeued after the data is fixed, or
//! discarded; application payloads reach their handler with retries; keys
//! of idempotent operations expire.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use resilite::{
    Action, Durable, EnqueueOptions, Error, Operation, QueueStats, Resolution, Runtime, Statement,
    Value,
};

use common::{open_direct, start_with};

/// Fast failure under a held lock, fast replay.
fn impatient(c: &mut resilite::Config) {
    c.database.busy_timeout = Duration::from_millis(20);
    c.writer.max_retries = 1;
    c.writer.retry_base_delay = Duration::from_millis(1);
    c.writer.retry_max_delay = Duration::from_millis(5);
    c.retry.base_delay = Duration::from_millis(50);
    c.retry.max_delay = Duration::from_millis(200);
    c.retry.poll_interval = Duration::from_millis(50);
    c.retry.max_attempts = 1000;
    // The database breaker opens under the lock; keep its open period short.
    c.breakers.insert(
        "database".into(),
        resilite::BreakerConfig {
            open_for: Duration::from_millis(100),
            ..Default::default()
        },
    );
}

async fn settled(rt: &Runtime) -> QueueStats {
    common::queue_settled(rt, Duration::from_secs(120)).await
}

fn insert(v: i64) -> Operation {
    Operation::Statement(Statement::new(
        "INSERT INTO t(v) VALUES (?1)",
        [Value::Integer(v)],
    ))
}

/// Issue `n` durable inserts (v = 0..n), 1,000 at a time; how many were
/// queued (the others were applied at once).
async fn durable_inserts(rt: &Runtime, n: i64) -> i64 {
    let mut queued = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&v| {
                let rt = rt.clone();
                tokio::spawn(async move {
                    rt.execute_durable(insert(v), EnqueueOptions::default())
                        .await
                })
            })
            .collect();
        for task in tasks {
            match task.await.unwrap().expect("a durable write is accepted") {
                Durable::Queued { id } => {
                    assert!(id > 0);
                    queued += 1;
                }
                Durable::Applied { .. } => {}
            }
        }
    }
    queued
}

/// Wait for the queue to settle; then every value 0..n is in `t` exactly
/// once, nothing is dead and no replay's idempotency key is left.
async fn assert_each_landed_once(rt: &Runtime, db: &Path, n: i64, queued: i64) {
    let stats = settled(rt).await;
    assert_eq!(
        stats,
        QueueStats {
            succeeded: queued,
            ..QueueStats::default()
        }
    );
    let conn = open_direct(db);
    let (rows, distinct, min, max): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT v), min(v), max(v) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (rows, distinct, min, max),
        (n, n, 0, n - 1),
        "every write exactly once"
    );
    assert!(rt.dead_letters(false).await.unwrap().is_empty());
    // Once the journal has their success, the replays' keys are deleted.
    common::assert_no_keys_left(db).await;
}

/// An impatient runtime with table `t` (v UNIQUE), whose write lock another
/// connection has taken and keeps (until it commits or is dropped).
async fn table_t_under_a_held_lock() -> (common::TestRuntime, rusqlite::Connection) {
    let t = start_with(impatient).await;
    t.rt.execute(Statement::sql(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER UNIQUE)",
    ))
    .await
    .unwrap();
    let holder = open_direct(&t.db_path());
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    (t, holder)
}

/// 10,000 durable writes made while another process holds the write lock
/// are all queued; once it lets go, each lands exactly once.
///
/// Property 2: Graceful Degradation on Connection Failure. With every
/// in-place retry spent, no write is lost: each is kept in the journal's
/// queue and replayed when the database takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_under_a_held_lock_are_queued_and_land_exactly_once() {
    let (t, holder) = table_t_under_a_held_lock().await;

    const N: i64 = 10_000;
    let queued = durable_inserts(&t.rt, N).await;
    assert_eq!(queued, N, "nothing can commit while the lock is held");
    let stats = t.rt.queue_stats().await.unwrap();
    assert_eq!(stats.queued + stats.retrying, N, "{stats:?}");

    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    assert_each_landed_once(&t.rt, &t.db_path(), N, N).await;
    t.rt.shutdown().await.unwrap();
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mount `bytes` of tmpfs, or `None` where mounting is not allowed.
    fn mount(bytes: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallFs { dir })
    }

    /// Write a file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).and_then(|_| file.sync_all()).is_ok() {}
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The database's filesystem fills up: SQLite answers "database or disk is
/// full", durable writes are queued in the journal (on another disk), the
/// health report says to free space; once space is freed every write
/// lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_on_a_full_disk_are_queued_and_land_exactly_once_after_space_is_freed() {
    let Some(fs) = SmallFs::mount(4 << 20) else {
        eprintln!("skipped: mounting a tmpfs needs root (CAP_SYS_ADMIN); the held-lock test covers the queue path");
        return;
    };
    let journal_dir = tempfile::tempdir().unwrap();
    let db = fs.dir.path().join("app.db");
    let mut config = resilite::Config::for_database(&db);
    config.database.journal_path = Some(journal_dir.path().join("app.db.journal"));
    impatient(&mut config);
    let rt = Runtime::start(config).await.unwrap();
    rt.execute(Statement::sql(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER UNIQUE)",
    ))
    .await
    .unwrap();
    let filler = fs.fill();

    const N: i64 = 10_000;
    let queued = durable_inserts(&rt, N).await;
    assert!(
        queued > N / 2,
        "only {queued} of {N} were queued on a full disk"
    );
    // The first ones failed with SQLite's own error; the database breaker
    // then opened and the rest went straight to the queue.
    let journal = open_direct(&rt.config().journal_path());
    let full: i64 = journal
        .query_row(
            "SELECT count(*) FROM retry_queue WHERE last_error LIKE '%database or disk is full%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(full > 0, "no write failed with SQLITE_FULL");
    let report = rt.check_now().await.unwrap();
    assert!(report.recommends(Action::FreeDisk), "{}", report.to_text());

    std::fs::remove_file(filler).unwrap();
    assert_each_landed_once(&rt, &db, N, queued).await;
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_with_an_idempotency_key_is_applied_once() {
    let t = start_with(|_| {}).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let once = || Operation::Once {
        key: "order-17".into(),
        op: Box::new(insert(17)),
    };
    assert_eq!(t.rt.write(once()).await.unwrap().len(), 1, "applied");
    assert!(t.rt.write(once()).await.unwrap().is_empty(), "skipped");
    // A failing operation does not claim its key.
    let failing = Operation::Once {
        key: "bad".into(),
        op: Box::new(Operation::Statement(Statement::sql(
            "INSERT INTO missing VALUES (1)",
        ))),
    };
    assert!(t.rt.write(failing).await.is_err());
    let rows = t
        .rt
        .query(Statement::sql("SELECT (SELECT count(*) FROM t), (SELECT group_concat(key) FROM _resilite_idempotency)"))
        .await
        .unwrap();
    assert_eq!(
        rows.rows[0],
        vec![Value::Integer(1), Value::from("order-17")]
    );
    t.rt.shutdown().await.unwrap();
}

/// A key is remembered for `retry.key_retention`: after that it is deleted
/// (at startup, then hourly) and the same key applies again; a younger key
/// is kept and still skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_forgotten_after_their_retention() {
    let t = start_with(|_| {}).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let once = |key: &str, v| Operation::Once {
        key: key.into(),
        op: Box::new(insert(v)),
    };
    t.rt.write(once("old", 1)).await.unwrap();
    t.rt.write(once("young", 2)).await.unwrap();
    let config = (*t.rt.config()).clone();
    t.rt.shutdown().await.unwrap();
    let eight_days_ms = 8 * 86_400_000;
    open_direct(&config.database.path)
        .execute(
            "UPDATE _resilite_idempotency SET applied_at_ms = applied_at_ms - ?1 WHERE key = 'old'",
            [eight_days_ms],
        )
        .unwrap();

    let rt = Runtime::start(config.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let keys: String = open_direct(&config.database.path)
            .query_row(
                "SELECT group_concat(key) FROM _resilite_idempotency",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if keys == "young" || Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(keys, "young", "the 8-day-old key goes, the young one stays");
    assert_eq!(
        rt.write(once("old", 1)).await.unwrap().len(),
        1,
        "applied again"
    );
    assert!(
        rt.write(once("young", 2)).await.unwrap().is_empty(),
        "still skipped"
    );
    let count: i64 = open_direct(&config.database.path)
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 3);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_write_is_dead_lettered_then_requeued_after_the_fix_or_discarded() {
    let (t, holder) = table_t_under_a_held_lock().await;
    let mut ids = Vec::new();
    for v in [1, 2] {
        match t
            .rt
            .execute_durable(insert(v), EnqueueOptions::default())
            .await
            .unwrap()
        {
            Durable::Queued { id } => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    // The lock holder writes the same values: both replays will violate
    // the UNIQUE constraint, a permanent error.
    holder
        .execute_batch("INSERT INTO t(v) VALUES (1), (2); COMMIT")
        .unwrap();
    drop(holder);
    settled(&t.rt).await;
    let dead = t.rt.dead_letters(false).await.unwrap();
    assert_eq!(dead.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    for entry in &dead {
        assert_eq!(entry.status.as_str(), "dead");
        assert_eq!(entry.attempts, 1, "a permanent error is not retried");
        let reason = entry.dead_reason.as_deref().unwrap();
        assert!(
            reason.contains("constraint") && reason.contains("UNIQUE"),
            "{reason}"
        );
        assert_eq!(
            entry.errors.as_array().unwrap().len(),
            2,
            "the lock failure and the replay failure"
        );
    }

    // Health calls for a review.
    let report = t.rt.check_now().await.unwrap();
    assert_eq!(
        report.status,
        resilite::HealthStatus::Warning,
        "{}",
        report.to_text()
    );
    assert!(report.recommends(Action::ReviewDeadLetters));
    assert_eq!(report.queue.unwrap().dead, 2);

    // Fix the data, requeue the first: it commits. Discard the second.
    t.rt.execute(Statement::sql("DELETE FROM t WHERE v = 1"))
        .await
        .unwrap();
    assert_eq!(t.rt.requeue(Some(ids[0])).await.unwrap(), 1);
    assert!(t.rt.discard(ids[1]).await.unwrap());
    assert!(!t.rt.discard(999_999).await.unwrap());
    let stats = settled(&t.rt).await;
    assert_eq!(stats.dead, 0, "{stats:?}");
    let first = t.rt.queue_entry(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (
            first.status.as_str(),
            first.resolution.map(Resolution::as_str)
        ),
        ("succeeded", Some("requeued"))
    );
    let second = t.rt.queue_entry(ids[1]).await.unwrap().unwrap();
    assert_eq!(second.resolution.map(Resolution::as_str), Some("discarded"));
    assert_eq!(
        t.rt.dead_letters(true).await.unwrap().len(),
        1,
        "discarded entries stay listed with --all"
    );
    let rows =
        t.rt.query(Statement::sql("SELECT v FROM t ORDER BY v"))
            .await
            .unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(1)], vec![Value::Integer(2)]]
    );
    t.rt.shutdown().await.unwrap();
}

/// Application payloads reach their handler: two transient failures are
/// retried and then delivered; a permanent error and a kind with no
/// handler go to the dead-letter queue with the reason.
///
/// Property 15: Audit Log Retry Pattern. A record whose handler fails
/// transiently is retried until delivered, each failure kept in its
/// history (the timing is checked by the property tests below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_payloads_reach_their_handler_with_retries_and_dead_letters() {
    let t = start_with(impatient).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    t.rt.register_handler(
        "webhook_delivery",
        Arc::new(move |payload| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if payload["url"] == "bad" {
                    return Err(Error::bad_input("the URL is not valid"));
                }
                if n < 2 {
                    return Err(Error::classed(
                        resilite::ErrorClass::Transient,
                        "503 from the receiver",
                    ));
                }
                Ok(())
            })
        }),
    );
    let good =
        t.rt.enqueue(
            "webhook_delivery",
            serde_json::json!({"url": "https://example.test/hook"}),
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    settled(&t.rt).await;
    let entry = t.rt.queue_entry(good).await.unwrap().unwrap();
    assert_eq!(entry.status.as_str(), "succeeded");
    assert_eq!(entry.attempts, 3, "two transient failures, then delivered");
    assert!(t
        .rt
        .enqueue("sql", serde_json::json!({}), EnqueueOptions::default())
        .await
        .is_err());
    let priority = EnqueueOptions {
        priority: 11,
        ..EnqueueOptions::default()
    };
    let err =
        t.rt.enqueue("webhook_delivery", serde_json::json!({}), priority)
            .await
            .unwrap_err();
    assert!(err.message.contains("priority 11"), "{err}");

    let bad =
        t.rt.enqueue(
            "webhook_delivery",
            serde_json::json!({"url": "bad"}),
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    let unknown =
        t.rt.enqueue(
            "no_such_kind",
            serde_json::json!({}),
            EnqueueOptions {
                max_attempts: Some(2),
                ..EnqueueOptions::default()
            },
        )
        .await
        .unwrap();
    settled(&t.rt).await;
    let dead = t.rt.dead_letters(false).await.unwrap();
    let ids: Vec<_> = dead.iter().map(|e| e.id).collect();
    assert_eq!(ids, [bad, unknown]);
    assert!(dead[0]
        .dead_reason
        .as_deref()
        .unwrap()
        .contains("bad_input"));
    assert!(dead[1]
        .dead_reason
        .as_deref()
        .unwrap()
        .contains("gave up after 2 attempts"));
    assert!(dead[1]
        .errors
        .to_string()
        .contains("no handler is registered"));
    t.rt.shutdown().await.unwrap();
}

/// Entries whose handler is still running are `retrying` in the counts and
/// in `queue_entry`, while their journal rows stay `queued` (what a crash
/// would send back to the queue); they are `succeeded` once it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_being_replayed_are_retrying_until_their_outcome_is_recorded() {
    let t = start_with(impatient).await;
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let (called_tx, mut called) = tokio::sync::mpsc::unbounded_channel();
    t.rt.register_handler(
        "slow_webhook",
        Arc::new(move |_| {
            let (gate, called) = (gate.clone(), called_tx.clone());
            Box::pin(async move {
                let _ = called.send(());
                gate.acquire().await.expect("gate").forget();
                Ok(())
            })
        }),
    );
    let id =
        t.rt.enqueue(
            "slow_webhook",
            serde_json::json!({"n": 1}),
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    // The handler is running: the queue actor answers meanwhile.
    tokio::time::timeout(Duration::from_secs(10), called.recv())
        .await
        .expect("the handler is called")
        .expect("the handler is registered");
    let stats = t.rt.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.retrying), (0, 1), "{stats:?}");
    assert_eq!(
        t.rt.queue_entry(id).await.unwrap().unwrap().status.as_str(),
        "retrying"
    );
    let journal = open_direct(&t.rt.config().journal_path());
    let row: String = journal
        .query_row("SELECT status FROM retry_queue WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(row, "queued");

    release.add_permits(1);
    let stats = settled(&t.rt).await;
    assert_eq!((stats.succeeded, stats.retrying), (1, 0), "{stats:?}");
    assert_eq!(
        t.rt.queue_entry(id).await.unwrap().unwrap().status.as_str(),
        "succeeded"
    );
    t.rt.shutdown().await.unwrap();
}

/// Application handlers run concurrently, but never more at once than
/// `retry.handler_concurrency`: a slow receiver is not flooded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_calls_are_bounded_by_handler_concurrency() {
    let t = start_with(|c| {
        impatient(c);
        c.retry.base_delay = Duration::from_millis(1);
        c.retry.handler_concurrency = 4;
    })
    .await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (running.clone(), most.clone());
    t.rt.register_handler(
        "slow_receiver",
        Arc::new(move |_| {
            let (now, peak) = (now.clone(), peak.clone());
            Box::pin(async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        }),
    );
    for n in 0..40 {
        t.rt.enqueue(
            "slow_receiver",
            serde_json::json!({ "n": n }),
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    }
    let stats = settled(&t.rt).await;
    assert_eq!(stats.succeeded, 40, "{stats:?}");
    let most = most.load(Ordering::SeqCst);
    assert!((2..=4).contains(&most), "{most} handler calls ran at once");
    t.rt.shutdown().await.unwrap();
}

/// The lowest delay of attempt `n` (from 1) under exponential backoff:
/// `base * factor^(n-1)`, capped at `max`.
fn floor_of(base: Duration, factor: f64, max: Duration, n: u32) -> Duration {
    let secs = base.as_secs_f64() * factor.powi(n as i32 - 1);
    Duration::from_secs_f64(secs.min(max.as_secs_f64()))
}

/// `got` lies in `[lo, hi]`, give or take the rounding of backon's f32
/// arithmetic.
fn within(got: Duration, lo: Duration, hi: Duration) -> bool {
    let slack = |d: Duration| d.mul_f64(1e-4) + Duration::from_micros(10);
    got + slack(lo) >= lo && got <= hi + slack(hi)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property 15: Audit Log Retry Pattern. For any retry policy, both
    /// schedules resilite retries a failed write on are exponential with
    /// jitter within bounds: a queued entry (`[retry]`, e.g. an audit
    /// record for an application handler) waits between `d(n)` and
    /// `min(2 d(n), max_delay)` before attempt `n + 1`, where
    /// `d(n) = min(base_delay * factor^(n-1), max_delay)`; the writer's
    /// in-place retries (`[writer]`, also the journal writer that keeps
    /// resilite's own records) wait between `d(n)` and `2 d(n)` with factor
    /// 2, exactly `max_retries` times.
    #[test]
    fn retry_schedules_are_exponential_with_jitter_within_bounds_for_any_policy(
        base_ms in 1u64..10_000,
        factor in 1.0f32..8.0,
        max_times in 1u64..1000,
        attempts in 1u32..30,
        max_retries in 0usize..12,
    ) {
        let base = Duration::from_millis(base_ms);
        let max = base * max_times as u32;
        let queue = resilite::config::RetryConfig {
            base_delay: base,
            factor,
            max_delay: max,
            ..Default::default()
        };
        for n in 1..=attempts {
            let d = floor_of(base, f64::from(factor), max, n);
            let got = queue.delay(n);
            prop_assert!(within(got, d, (d * 2).min(max)), "queue attempt {n}: {got:?} outside [{d:?}, {:?}]", (d * 2).min(max));
        }

        let mut config = resilite::Config::for_database("app.db");
        config.writer.max_retries = max_retries;
        config.writer.retry_base_delay = base;
        config.writer.retry_max_delay = max;
        let policy = config.writer_config(config.journal_db()).retry;
        let delays: Vec<Duration> = backon::BackoffBuilder::build(policy.backoff()).collect();
        prop_assert_eq!(delays.len(), max_retries);
        for (i, got) in delays.into_iter().enumerate() {
            let d = floor_of(base, 2.0, max, i as u32 + 1);
            prop_assert!(within(got, d, d * 2), "writer retry {}: {got:?} outside [{d:?}, {:?}]", i + 1, d * 2);
        }
    }
}

/// One case: an audit record whose store fails `fails` times, then takes
/// it, under a random `[retry]` policy; the failures are spaced as the
/// policy says.
async fn audit_retried(base_ms: u64, factor: f32, max_ms: u64, fails: usize) {
    let (base, max) = (
        Duration::from_millis(base_ms),
        Duration::from_millis(max_ms),
    );
    let poll = Duration::from_millis(10);
    let t = start_with(|c| {
        c.retry.base_delay = base;
        c.retry.factor = factor;
        c.retry.max_delay = max;
        c.retry.poll_interval = poll;
        c.retry.max_attempts = 100;
    })
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    t.rt.register_handler(
        "audit_log",
        Arc::new(move |_payload| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < fails {
                    // Each failure says something else: not a poison entry.
                    return Err(Error::classed(
                        resilite::ErrorClass::Transient,
                        format!("audit store unavailable (call {n})"),
                    ));
                }
                Ok(())
            })
        }),
    );
    let id =
        t.rt.enqueue(
            "audit_log",
            serde_json::json!({"event": "login", "user": 7}),
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    let stats = common::queue_settled(&t.rt, Duration::from_secs(30)).await;
    assert_eq!(stats.succeeded, 1, "{stats:?}");
    let entry = t.rt.queue_entry(id).await.unwrap().unwrap();
    assert_eq!(entry.attempts as usize, fails + 1, "{entry:?}");
    let at: Vec<i64> = entry
        .errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(at.len(), fails, "{entry:?}");
    // The first attempt waits `base_delay` after the entry was queued.
    assert!(at[0] - entry.created_at_ms >= base_ms as i64 - 1, "{at:?}");
    // Attempt n + 1 comes at least d(n) after failure n, and (a loaded
    // machine may run it late) within 2 d(n) plus polling and slack.
    let slack = poll + Duration::from_millis(500);
    for n in 1..fails {
        let gap = Duration::from_millis((at[n] - at[n - 1]) as u64);
        let d = floor_of(base, f64::from(factor), max, n as u32);
        assert!(
            gap + Duration::from_millis(1) >= d,
            "failure {n} -> {}: {gap:?} < {d:?} ({at:?})",
            n + 1
        );
        assert!(
            gap <= (d * 2).min(max) + slack,
            "failure {n} -> {}: {gap:?} > 2 x {d:?} ({at:?})",
            n + 1
        );
    }
    t.rt.shutdown().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(4),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property 15: Audit Log Retry Pattern. For any `[retry]` policy and
    /// any number of failures of the store an audit record goes to (an
    /// application handler failing transiently), the queue retries it by
    /// itself until it is taken, and the journaled failure times are
    /// spaced exponentially: failure `n + 1` comes at least
    /// `min(base_delay * factor^(n-1), max_delay)` after failure `n`.
    #[test]
    fn failing_audit_writes_are_retried_with_exponential_backoff(
        base_ms in 10u64..40,
        factor in 1.5f32..3.0,
        max_ms in 60u64..300,
        fails in 2usize..5,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(audit_retried(base_ms, factor, max_ms, fails));
    }
}
