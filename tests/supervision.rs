//! Supervision through the message API: a panicking writer is restarted,
//! restarts are recorded in the journal, and past the limit the runtime
//! escalates with a clear error; a runtime shut down leaves no task behind.

mod common;

use std::time::Duration;

use proptest::prelude::*;
use resilite::testing::WriterMsg;
use resilite::{ErrorClass, RestartOutcome, Statement, Status};

use common::{insert, start_with};

async fn restarts_recorded(rt: &resilite::Runtime, n: usize) -> Vec<resilite::RestartRecord> {
    // The journal write is asynchronous to supervision: poll briefly.
    for _ in 0..100 {
        let records = rt.restarts().await.unwrap();
        if records.len() >= n {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rt.restarts().await.unwrap()
}

/// A panicking writer is restarted with a new connection; the writes
/// racing the panic are all applied, and the restart is journaled and
/// shown in the health report.
///
/// Property 1: Connection Recovery Behavior. The writer's connection is
/// lost mid-load and the supervisor reconnects without the caller doing
/// anything (one example; the property test below varies the losses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_restarts_a_panicking_writer_and_records_it() {
    let t = start_with(|c| c.supervisor.max_restarts = 3).await;
    t.rt.execute(Statement::sql("CREATE TABLE r(v INTEGER)"))
        .await
        .unwrap();
    let before = t.rt.writer().await.unwrap();

    // Writes racing the panic are either committed or re-sent: none is lost.
    let writers: Vec<_> = (0..50)
        .map(|i| {
            let rt = t.rt.clone();
            tokio::spawn(async move { rt.execute(insert("r", i)).await })
        })
        .collect();
    before.send_message(WriterMsg::InjectPanic).unwrap();
    for w in writers {
        w.await.unwrap().expect("write survives a writer restart");
    }

    let mut after = t.rt.writer().await.unwrap();
    for _ in 0..200 {
        if after.get_id() != before.get_id() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = t.rt.writer().await.unwrap();
    }
    assert_ne!(before.get_id(), after.get_id(), "a new writer was started");
    t.rt.execute(insert("r", 1000)).await.unwrap();
    let rows =
        t.rt.query(Statement::sql("SELECT count(*) FROM r"))
            .await
            .unwrap();
    assert_eq!(rows.rows[0][0], resilite::Value::Integer(51));
    assert_eq!(t.rt.status(), Status::Healthy);

    let records = restarts_recorded(&t.rt, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].actor, "writer");
    assert_eq!(records[0].outcome, RestartOutcome::Restarted);
    assert!(records[0].reason.contains("injected"), "{records:?}");

    // The health report shows the restart and a running writer.
    let report = t.rt.check_now().await.unwrap();
    let writer = report.actors.iter().find(|a| a.name == "writer").unwrap();
    assert_eq!(writer.restarts, 1, "{writer:?}");
    assert_eq!(writer.state, resilite::SlotState::Running);
    assert!(writer.last_failure.as_deref().unwrap().contains("injected"));
}

/// Past `max_restarts`, the writer is marked failed: writes get an
/// `unavailable` error naming the cause, reads are still served, health is
/// CRITICAL, the runtime is not ready, and every restart and the
/// escalation are in the journal.
///
/// Property 2: Graceful Degradation on Connection Failure. Once the
/// restarts are spent every failure is recorded in the journal and the
/// runtime keeps serving reads and health with writes refused clearly.
/// Property 14: Non-Database Command Continuity. With the writer gone,
/// reads, the health report and readiness still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_escalates_past_the_restart_limit_with_a_clear_error() {
    let t = start_with(|c| {
        c.supervisor.max_restarts = 2;
        c.supervisor.restart_window = Duration::from_secs(60);
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE e(v INTEGER)"))
        .await
        .unwrap();
    for _ in 0..3 {
        let writer = t.rt.writer().await.unwrap();
        writer.send_message(WriterMsg::InjectPanic).unwrap();
        // Wait until the supervisor has dealt with this failure.
        for _ in 0..100 {
            match t.rt.writer().await {
                Ok(w) if w.get_id() != writer.get_id() => break,
                Err(_) => break,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    let err = t.rt.execute(insert("e", 1)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Unavailable);
    assert!(err.detail.contains("failed 3 times"), "{err}");
    assert!(err.detail.contains("max_restarts = 2"), "{err}");
    assert!(matches!(t.rt.status(), Status::Failed(_)));

    // Reads keep being served after the writer escalated.
    let rows =
        t.rt.query(Statement::sql("SELECT count(*) FROM e"))
            .await
            .unwrap();
    assert_eq!(rows.rows[0][0], resilite::Value::Integer(0));

    // Health says CRITICAL and why; the runtime is not ready.
    let report = t.rt.check_now().await.unwrap();
    assert_eq!(report.status, resilite::HealthStatus::Critical);
    assert!(
        report.rule.contains("writer failed past its restart limit"),
        "{}",
        report.rule
    );
    assert!(t
        .rt
        .ready()
        .unwrap_err()
        .to_string()
        .contains("max_restarts"));

    let records = restarts_recorded(&t.rt, 3).await;
    let outcomes: Vec<_> = records.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            RestartOutcome::Restarted,
            RestartOutcome::Restarted,
            RestartOutcome::Escalated
        ]
    );
}

/// A loss of the writer's connection, as a test can cause it.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// The writer panics: the supervisor restarts it with a new connection.
    Panic,
    /// Another process holds the write lock this long (ms): the writer's
    /// transaction fails with SQLITE_BUSY and is retried in place.
    HeldLock(u64),
}

fn loss() -> impl Strategy<Value = Loss> {
    prop_oneof![
        2 => Just(Loss::Panic),
        1 => (20u64..100).prop_map(Loss::HeldLock),
    ]
}

/// The current writer, once it is another actor than `before`.
async fn writer_after(
    rt: &resilite::Runtime,
    before: &ractor::ActorRef<WriterMsg>,
) -> ractor::ActorRef<WriterMsg> {
    for _ in 0..500 {
        if let Ok(w) = rt.writer().await {
            if w.get_id() != before.get_id() {
                return w;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the writer was not restarted within 5 s");
}

/// One case: `losses` in a row, each while 10 writes are in flight.
async fn connection_losses(losses: Vec<Loss>) {
    let t = start_with(|c| {
        c.supervisor.max_restarts = 10;
        c.supervisor.restart_window = Duration::from_secs(60);
        c.database.busy_timeout = Duration::from_millis(20);
        // At least 10+20+40+80+160+200+200+200 ms of retries: longer
        // than any lock the case holds.
        c.writer.max_retries = 8;
        c.writer.retry_base_delay = Duration::from_millis(10);
        c.writer.retry_max_delay = Duration::from_millis(200);
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE r(v INTEGER NOT NULL)"))
        .await
        .unwrap();
    let mut sent = 0i64;
    for loss in &losses {
        let writes: Vec<_> = (sent..sent + 10)
            .map(|v| {
                let rt = t.rt.clone();
                tokio::spawn(async move { rt.execute(insert("r", v)).await })
            })
            .collect();
        sent += 10;
        match *loss {
            Loss::Panic => {
                let before = t.rt.writer().await.unwrap();
                before.send_message(WriterMsg::InjectPanic).unwrap();
                writer_after(&t.rt, &before).await;
            }
            Loss::HeldLock(ms) => {
                let holder = common::open_direct(&t.db_path());
                holder.execute_batch("BEGIN IMMEDIATE").unwrap();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                holder.execute_batch("COMMIT").unwrap();
            }
        }
        for w in writes {
            w.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{loss:?}: a write was lost: {e}"));
        }
    }
    // Every write once, and the writer takes new ones.
    t.rt.execute(insert("r", -1)).await.unwrap();
    let rows =
        t.rt.query(Statement::sql(
            "SELECT count(*), count(DISTINCT v), min(v), max(v) FROM r",
        ))
        .await
        .unwrap();
    let n = resilite::Value::Integer;
    assert_eq!(
        rows.rows[0],
        vec![n(sent + 1), n(sent + 1), n(-1), n(sent - 1)]
    );
    assert_eq!(t.rt.status(), Status::Healthy);
    t.rt.ready().expect("ready after the losses");
    // One journaled restart per panic, none for a held lock.
    let panics = losses.iter().filter(|l| matches!(l, Loss::Panic)).count();
    let records = restarts_recorded(&t.rt, panics).await;
    assert_eq!(records.len(), panics, "{records:?}");
    assert!(records
        .iter()
        .all(|r| r.actor == "writer" && r.outcome == RestartOutcome::Restarted));
    t.rt.shutdown().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(4),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property 1: Connection Recovery Behavior. For any sequence of
    /// connection losses (the writer panicking, or another process holding
    /// the write lock) during writes, the writer recovers by itself: a
    /// panicked writer is restarted with a new connection and the restart
    /// journaled, a locked transaction is retried in place with backoff,
    /// and every write in flight is answered and applied once.
    #[test]
    fn supervisor_recovers_the_writer_from_any_connection_losses(
        losses in prop::collection::vec(loss(), 1..5),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(connection_losses(losses));
    }
}

/// A runtime that has written, queued a durable write, lost its writer to
/// a panic and reloaded its config shuts down cleanly at once (the WAL
/// checkpointed into the file, even when the writer's restart has not come
/// yet), and leaves no task behind once dropped: an application that
/// starts and stops runtimes (a test suite, a reconfiguration) does not
/// accumulate tasks, nor the breaker, journal handles and buffers they
/// would hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_shut_down_and_dropped_leaves_no_task_behind() {
    let tasks = tokio::runtime::Handle::current().metrics();
    let before = tasks.num_alive_tasks();
    for round in 0..2 {
        let t = start_with(|c| c.supervisor.max_restarts = 3).await;
        t.rt.execute(Statement::sql("CREATE TABLE r(v INTEGER)"))
            .await
            .unwrap();
        t.rt.execute(insert("r", round)).await.unwrap();
        t.rt.execute_durable(
            resilite::Operation::Statement(insert("r", round)),
            resilite::EnqueueOptions::default(),
        )
        .await
        .unwrap();
        let writer = t.rt.writer().await.unwrap();
        writer.send_message(WriterMsg::InjectPanic).unwrap();
        t.rt.execute(insert("r", round)).await.unwrap();
        let mut config = (*t.rt.config()).clone();
        config.health.slow_read = Duration::from_secs(30);
        t.rt.reload_config_from(config).await.unwrap();
        // The restart may not have come yet: shutdown still commits and
        // checkpoints through the failed writer's connection thread.
        t.rt.shutdown()
            .await
            .expect("shutdown right after a writer failure");
        let wal = t.dir.path().join("data").join("app.db-wal");
        assert!(
            std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
            "round {round}: the WAL was checkpointed into the file"
        );
        let rows: i64 = common::open_direct(&t.db_path())
            .query_row("SELECT count(*) FROM r", [], |r| r.get(0))
            .unwrap();
        assert!(rows >= 2, "round {round}: {rows} rows");
        drop(t);

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tasks.num_alive_tasks() > before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            tasks.num_alive_tasks(),
            before,
            "round {round}: tasks left running after shutdown"
        );
    }
}
