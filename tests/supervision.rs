//! Supervision through the message API: a panicking writer is restarted,
//! restarts are recorded in the journal, and past the limit the runtime
//! escalates with a clear error.

mod common;

use std::time::Duration;

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
