//! Bounded answers and fast recovery while the database is locked by
//! another process: a durable write is answered within
//! `retry.durable_answer_within` even when SQLite's busy wait is long, and
//! lands exactly once; after the lock ends, the database breaker's
//! recovery probe half-opens it at once (not after `open_for`) and the
//! queue drains within seconds.

mod common;

use std::time::{Duration, Instant};

use resilite::{BreakerConfig, BreakerState, EnqueueOptions, Operation, Statement, Value};

use common::{open_direct, start_with};

fn insert(v: i64) -> Operation {
    Operation::Statement(Statement::new(
        "INSERT INTO t(v) VALUES (?1)",
        [Value::Integer(v)],
    ))
}

fn count(db: &std::path::Path) -> (i64, i64) {
    open_direct(db)
        .query_row("SELECT count(*), count(DISTINCT v) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
}

/// With SQLite's busy wait at 5 s (the default) and the file locked, a
/// durable write is answered `queued` within its 300 ms bound; the write
/// that stayed in flight and its queued copy land once between them, and
/// no idempotency key is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_write_is_answered_within_its_bound_and_lands_once() {
    let t = start_with(|c| {
        c.retry.durable_answer_within = Duration::from_millis(300);
        c.retry.base_delay = Duration::from_millis(50);
        c.retry.poll_interval = Duration::from_millis(50);
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let holder = open_direct(&t.db_path());
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let mut answers = Vec::new();
    for v in 0..5 {
        let started = Instant::now();
        let outcome =
            t.rt.execute_durable(insert(v), EnqueueOptions::default())
                .await
                .unwrap();
        answers.push(started.elapsed());
        assert!(
            matches!(outcome, resilite::Durable::Queued { .. }),
            "{outcome:?}"
        );
    }
    let slowest = answers.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_millis(1500),
        "answers took {answers:?}"
    );

    // The lock ends while the first write is still in SQLite's busy wait.
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let s = common::queue_settled(&t.rt, Duration::from_secs(30)).await;
    assert_eq!(s.queued + s.retrying, 0, "{s:?}");
    assert_eq!(count(&t.db_path()), (5, 5), "each write exactly once");
    common::assert_no_keys_left(&t.db_path()).await;
}

/// The breaker opened under a held lock with a 30 s open period; the lock
/// ends, the recovery probe half-opens it within a second, and the queued
/// writes are all in the table within two seconds of the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_drains_within_seconds_of_the_lock_ending() {
    let t = start_with(|c| {
        c.database.busy_timeout = Duration::from_millis(20);
        c.writer.max_retries = 0;
        c.retry.base_delay = Duration::from_millis(50);
        c.retry.poll_interval = Duration::from_millis(100);
        c.retry.max_attempts = 1000;
        c.breakers.insert(
            "database".into(),
            BreakerConfig {
                consecutive_failures: 3,
                open_for: Duration::from_secs(30),
                max_open_for: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
        );
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let holder = open_direct(&t.db_path());
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for v in 0..50 {
        t.rt.execute_durable(insert(v), EnqueueOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(t.rt.database_breaker().state, BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(500)).await;

    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let ended = Instant::now();
    while t.rt.database_breaker().state == BreakerState::Open {
        assert!(
            ended.elapsed() < Duration::from_secs(2),
            "still open: the probe did not pass"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let half_open_after = ended.elapsed();
    loop {
        if count(&t.db_path()).0 == 50 {
            break;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(3),
            "the queue did not drain: {:?} rows",
            count(&t.db_path())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "half-open {half_open_after:?} and drained {:?} after the lock ended",
        ended.elapsed()
    );
    assert_eq!(count(&t.db_path()), (50, 50));
}

/// A plain write against a locked file fails after one busy wait (plus
/// the in-place retries' short delays), not one busy wait per retry; and
/// once the breaker is open, within a millisecond or so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_write_fails_within_one_busy_wait_then_fast() {
    let t = start_with(|c| {
        c.database.busy_timeout = Duration::from_millis(300);
        c.writer.max_retries = 5;
        c.breakers.insert(
            "database".into(),
            BreakerConfig {
                consecutive_failures: 2,
                open_for: Duration::from_secs(30),
                ..BreakerConfig::default()
            },
        );
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let holder = open_direct(&t.db_path());
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut took = Vec::new();
    for v in 0..4 {
        let started = Instant::now();
        let Operation::Statement(stmt) = insert(v) else {
            unreachable!()
        };
        let err = t.rt.execute(stmt).await.unwrap_err();
        took.push((started.elapsed(), err.class));
    }
    eprintln!("plain writes under the lock: {took:?}");
    // 300 ms of busy wait, then 5 retries without one: delays of about
    // 10, 20, 40, 80, 160 ms, with jitter.
    for (elapsed, _) in &took[..2] {
        assert!(*elapsed < Duration::from_millis(1500), "{took:?}");
    }
    for (elapsed, class) in &took[2..] {
        assert_eq!(*class, resilite::ErrorClass::Unavailable, "{took:?}");
        assert!(*elapsed < Duration::from_millis(20), "{took:?}");
    }
    holder.execute_batch("COMMIT").unwrap();
}

/// Another process that opens the database and exits (a shell, a backup
/// tool) must not take itself for the last user: the runtime's write probe
/// keeps SQLite's locks (it never opens and closes the file itself), so
/// the WAL is not checkpointed and deleted from under the runtime, and a
/// new connection reads every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_exiting_leaves_the_runtimes_wal_alone() {
    if std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no sqlite3 shell (.ci/run installs it)");
        return;
    }
    let t = start_with(|_| {}).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    t.rt.check_now().await.unwrap(); // runs the write probe
    let wal = t.db_path().with_extension("db-wal");
    assert!(wal.exists());
    let out = std::process::Command::new("sqlite3")
        .arg(t.db_path())
        .arg("SELECT count(*) FROM t;")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wal.exists(), "the other process deleted the runtime's WAL");
    let Operation::Statement(stmt) = insert(7) else {
        unreachable!()
    };
    t.rt.execute(stmt).await.unwrap();
    assert_eq!(
        count(&t.db_path()),
        (1, 1),
        "a new connection reads the write"
    );
}

/// Writes that queued behind a batch stuck on an outside lock do not each
/// wait SQLite's busy wait again: once a batch gave up, the next ones are
/// answered within the retries' delays, until the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_behind_a_stuck_batch_do_not_wait_another_busy_wait() {
    let t = start_with(|c| {
        c.database.busy_timeout = Duration::from_secs(2);
        c.breakers.insert(
            "database".into(),
            BreakerConfig {
                consecutive_failures: 1000,
                ..BreakerConfig::default()
            },
        );
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    // The health check at start has run (its write probe keeps SQLite's
    // busy wait: one queued behind the stuck batch would add a whole one).
    t.rt.check_now().await.unwrap();
    let holder = open_direct(&t.db_path());
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let stmt = |v: i64| Statement::new("INSERT INTO t(v) VALUES (?1)", [Value::Integer(v)]);
    let rt = t.rt.clone();
    let first = tokio::spawn(async move { rt.execute(stmt(0)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Sent while the first batch waits: the next batch.
    let started = Instant::now();
    let behind = t.rt.execute(stmt(1)).await;
    let waited = started.elapsed();
    assert!(first.await.unwrap().is_err());
    assert!(behind.is_err());
    // The first batch's busy wait (about 1.8 s left) and its retries'
    // delays, plus the second's delays: not a second 2 s busy wait.
    assert!(waited < Duration::from_millis(3300), "waited {waited:?}");
    holder.execute_batch("COMMIT").unwrap();
    t.rt.execute(stmt(2)).await.unwrap();
    assert_eq!(count(&t.db_path()), (1, 1));
}
