//! Circuit breakers through the runtime: the writer's `database` breaker
//! opens under a held lock, makes writes fail fast and durable writes
//! queue, and closes again; pausing writes holds queue replays back; named
//! breakers wrap application calls and keep their state across a restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resilite::{
    Action, BreakerConfig, BreakerError, BreakerState, Config, Durable, EnqueueOptions, Error,
    ErrorClass, HealthReport, HealthStatus, Operation, Runtime, Statement, Value,
};

use common::{open_direct, start_with};

fn fragile(c: &mut Config) {
    c.database.busy_timeout = Duration::from_millis(20);
    c.writer.max_retries = 0;
    c.retry.base_delay = Duration::from_millis(20);
    c.retry.poll_interval = Duration::from_millis(20);
    c.retry.max_attempts = 1000;
    c.breakers.insert(
        "database".into(),
        BreakerConfig {
            consecutive_failures: 3,
            open_for: Duration::from_millis(300),
            half_open_calls: 1,
            ..BreakerConfig::default()
        },
    );
}

fn insert(v: i64) -> Statement {
    Statement::new("INSERT INTO t(v) VALUES (?1)", [Value::Integer(v)])
}

/// The next health report that reports a breaker not closed (its state is
/// journaled a moment after the transition).
async fn report_with_breaker_warning(rt: &Runtime) -> HealthReport {
    // The health actor asks the breakers for their state: one check sees it.
    let report = rt.check_now().await.unwrap();
    assert!(report.recommends(Action::BreakerOpen), "{report:?}");
    report
}

async fn queue_drained(rt: &Runtime) {
    let s = common::queue_settled(rt, Duration::from_secs(30)).await;
    assert_eq!(s.queued + s.retrying, 0, "queue not drained: {s:?}");
}

/// Under a lock held by another connection three writes fail and open the
/// `database` breaker: writes fail fast, durable writes queue, reads and
/// health go on, `/ready` fails; the lock gone, a trial write closes it.
///
/// Property 2: Graceful Degradation on Connection Failure. With the
/// database failing, writes fail fast, durable writes are queued and
/// reads go on; the transitions are journaled, and queued writes land once
/// it closes. Property 14: Non-Database Command Continuity. Reads and
/// health keep answering while writes cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_breaker_opens_fails_fast_queues_durable_writes_and_closes() {
    let t = start_with(fragile).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    // Fill the breaker's window with successes: it goes quiet (successes
    // skip its lock), and failures must still be counted.
    t.rt.execute(Statement::sql("CREATE TABLE warm(v INTEGER)"))
        .await
        .unwrap();
    for v in 0..25 {
        t.rt.execute(Statement::new(
            "INSERT INTO warm VALUES (?1)",
            [Value::Integer(v)],
        ))
        .await
        .unwrap();
    }
    let holder = open_direct(&t.db_path());
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    for v in 0..3 {
        let err = t.rt.execute(insert(v)).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient, "{err}");
    }
    assert_eq!(t.rt.database_breaker().state, BreakerState::Open);
    let started = Instant::now();
    let err = t.rt.execute(insert(3)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(15), "fails fast");
    assert_eq!(err.class, ErrorClass::Unavailable);
    assert!(
        err.message.contains("circuit breaker `database` is open"),
        "{err}"
    );
    assert!(t
        .rt
        .ready()
        .unwrap_err()
        .to_string()
        .contains("circuit breaker is open"));
    let queued =
        t.rt.execute_durable(Operation::Statement(insert(4)), EnqueueOptions::default())
            .await
            .unwrap();
    assert!(matches!(queued, Durable::Queued { .. }), "{queued:?}");
    // Reads go on.
    t.rt.query(Statement::sql("SELECT count(*) FROM t"))
        .await
        .unwrap();
    // The health report names it (the write probe fails too: the lock is
    // really held, so the worst rule is that one).
    let report = report_with_breaker_warning(&t.rt).await;
    assert_eq!(report.breakers[0].name.as_deref(), Some("database"));
    assert_eq!(report.breakers[0].state, BreakerState::Open);
    let advice = &report.recommendation(Action::BreakerOpen).unwrap().reason;
    assert!(advice.contains("calls to `database` fail fast"), "{advice}");

    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The trial write closes it.
    t.rt.execute(insert(5)).await.unwrap();
    assert_eq!(t.rt.database_breaker().state, BreakerState::Closed);
    t.rt.ready().unwrap();
    queue_drained(&t.rt).await;
    assert!(
        !t.rt
            .check_now()
            .await
            .unwrap()
            .recommends(Action::BreakerOpen),
        "the closed breaker is still reported"
    );
    let rows =
        t.rt.query(Statement::sql("SELECT v FROM t ORDER BY v"))
            .await
            .unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(4)], vec![Value::Integer(5)]]
    );
    // Every transition is journaled, in order.
    let journal = open_direct(&t.rt.config().journal_path());
    let deadline = Instant::now() + Duration::from_secs(5);
    let transitions = loop {
        let mut stmt = journal
            .prepare("SELECT from_state || '>' || to_state FROM breaker_transitions WHERE breaker = 'database' ORDER BY id")
            .unwrap();
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        if rows.len() >= 3 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        transitions,
        ["closed>open", "open>halfopen", "halfopen>closed"]
    );
    t.rt.shutdown().await.unwrap();
}

/// Fast successes skip the breaker's lock, and are still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_breaker_counts_every_write() {
    let t = start_with(|_| {}).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let before = t.rt.database_breaker().calls;
    for v in 0..200 {
        t.rt.execute(insert(v)).await.unwrap();
    }
    let snapshot = t.rt.database_breaker();
    assert_eq!(snapshot.calls - before, 200, "{snapshot:?}");
    assert_eq!(snapshot.failures, 0);
    t.rt.shutdown().await.unwrap();
}

/// `pause_writes`: writes fail fast, a durable write is queued and not
/// replayed, health warns with the advice to resume; after
/// `resume_writes` it lands.
///
/// Property 2: Graceful Degradation on Connection Failure. Paused writes
/// are queued, not lost, and replayed once writes resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_writes_hold_queue_replays_until_resumed() {
    let t = start_with(fragile).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    t.rt.pause_writes("restore in progress");
    let err = t.rt.execute(insert(1)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Unavailable);
    let queued =
        t.rt.execute_durable(Operation::Statement(insert(2)), EnqueueOptions::default())
            .await
            .unwrap();
    assert!(matches!(queued, Durable::Queued { .. }));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        t.rt.queue_stats().await.unwrap().queued,
        1,
        "no replay while paused"
    );
    assert_eq!(
        t.rt.database_breaker().state,
        BreakerState::Open,
        "a forced open never half-opens by itself"
    );
    let report = report_with_breaker_warning(&t.rt).await;
    assert_eq!(report.status, HealthStatus::Warning, "{report:?}");
    assert!(
        report.rule.contains("breaker `database` is held open"),
        "{}",
        report.rule
    );
    let advice = &report.recommendation(Action::BreakerOpen).unwrap().reason;
    assert!(advice.contains("resume_writes()"), "{advice}");
    t.rt.resume_writes();
    queue_drained(&t.rt).await;
    let rows = t.rt.query(Statement::sql("SELECT v FROM t")).await.unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(2)]]);
    t.rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_breaker_wraps_calls_and_keeps_its_state_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_in(&dir);
    config.breakers.insert(
        "smtp".into(),
        BreakerConfig {
            consecutive_failures: 2,
            open_for: Duration::from_secs(60),
            ..BreakerConfig::default()
        },
    );
    let rt = Runtime::start(config.clone()).await.unwrap();
    assert!(rt.breaker("database").is_err(), "database is reserved");
    let smtp = rt.breaker("smtp").unwrap();
    for _ in 0..2 {
        let result: Result<(), _> = smtp
            .call(async { Err::<(), _>(Error::unavailable("smtp down")) })
            .await;
        assert!(matches!(result, Err(BreakerError::Inner(_))));
    }
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let result = smtp
        .call(async move {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, Error>(())
        })
        .await;
    match result {
        Err(BreakerError::Open(open)) => {
            assert_eq!(open.name, "smtp");
            assert!(open.retry_after > Duration::from_secs(50), "{open}");
        }
        other => panic!("expected an open breaker, got {other:?}"),
    }
    assert!(
        !polled.load(Ordering::SeqCst),
        "an open breaker never runs the call"
    );
    let names: Vec<_> = rt
        .breakers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name.unwrap_or_default(), s.state))
        .collect();
    assert!(
        names.contains(&("smtp".to_string(), BreakerState::Open)),
        "{names:?}"
    );
    assert_eq!(names[0], ("database".to_string(), BreakerState::Closed));

    // The transition reaches the journal asynchronously: wait for it.
    assert!(smtp.flush().await.unwrap(), "the transition is journaled");
    rt.shutdown().await.unwrap();
    let rt = Runtime::start(config).await.unwrap();
    let state = rt.breaker("smtp").unwrap().state().await.unwrap();
    assert_eq!(state.state, BreakerState::Open, "{state:?}");
    assert_eq!(state.trips, 1);
    rt.shutdown().await.unwrap();
}
