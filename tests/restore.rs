//! Online restore through the runtime: the backup's rows come back, later
//! writes work, durable writes made while the restore runs are replayed
//! afterwards; a missing or tampered backup is refused and the database
//! file stays byte-identical.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resilite::{EnqueueOptions, Operation, QueryResult, Statement, Value};

use common::{insert, queue_settled, start_with};

fn ints(result: &QueryResult) -> Vec<i64> {
    result
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::Integer(i) => i,
            ref v => panic!("not an integer: {v:?}"),
        })
        .collect()
}

async fn values(rt: &resilite::Runtime) -> Vec<i64> {
    ints(
        &rt.query(Statement::sql("SELECT v FROM t ORDER BY v"))
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_restore_brings_back_rows_and_replays_queued_writes() {
    let t = start_with(|_| {}).await;
    let rt = &t.rt;
    rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    for v in 1..=3 {
        rt.execute(insert("t", v)).await.unwrap();
    }
    let backup = rt.backup("manual").await.unwrap();
    for v in 4..=5 {
        rt.execute(insert("t", v)).await.unwrap();
    }

    // Writes paused (as an operator would before a restore): durable
    // writes are queued.
    rt.pause_writes("test: about to restore");
    let mut queued = Vec::new();
    for v in 100..103 {
        let d = rt
            .execute_durable(
                Operation::Statement(insert("t", v)),
                EnqueueOptions::default(),
            )
            .await
            .unwrap();
        assert!(matches!(d, resilite::Durable::Queued { .. }), "{d:?}");
        queued.push(v);
    }
    // And more while the restore runs.
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let (rt, stop) = (rt.clone(), stop.clone());
        tokio::spawn(async move {
            let mut queued = Vec::new();
            let mut v = 1000;
            while !stop.load(Ordering::Relaxed) {
                let d = rt
                    .execute_durable(
                        Operation::Statement(insert("t", v)),
                        EnqueueOptions::default(),
                    )
                    .await
                    .unwrap();
                if matches!(d, resilite::Durable::Queued { .. }) {
                    queued.push(v);
                }
                v += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            queued
        })
    };
    let outcome = rt.restore(&backup.name).await.expect("restore");
    stop.store(true, Ordering::Relaxed);
    queued.extend(during.await.unwrap());
    assert_eq!(outcome.restored, backup.name);
    let pre = outcome.pre_restore.expect("a pre-restore backup");
    assert!(pre.ends_with("-pre-restore.db"), "{pre}");
    assert!(rt.backups().await.unwrap().iter().any(|b| b.name == pre));

    let stats = queue_settled(rt, Duration::from_secs(20)).await;
    assert_eq!(stats.queued + stats.retrying, 0, "{stats:?}");
    let now = values(rt).await;
    assert_eq!(&now[..3], [1, 2, 3], "the backup's rows: {now:?}");
    assert!(!now.contains(&4) && !now.contains(&5), "{now:?}");
    for v in &queued {
        assert!(now.contains(v), "queued write {v} lost: {now:?}");
    }
    rt.execute(insert("t", 7))
        .await
        .expect("writes after restore");
    assert!(values(rt).await.contains(&7));
    assert_eq!(rt.database_breaker().state, resilite::BreakerState::Closed);
    // The restore is in the journal's record of recoveries and restores.
    let log = rt.recoveries().await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].trigger, format!("restore of backup {}", backup.name));
    assert_eq!(log[0].outcome, "restored");
    assert!(log[0].explanation.contains(&pre), "{}", log[0].explanation);
    t.rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_missing_tampered_and_path_like_leaving_the_file_unchanged() {
    let t = start_with(|_| {}).await;
    let rt = &t.rt;
    rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    rt.execute(insert("t", 1)).await.unwrap();
    let backup = rt.backup("manual").await.unwrap();
    rt.execute(insert("t", 2)).await.unwrap();
    let path = t.dir.path().join("data/backups").join(&backup.name);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let before = std::fs::read(t.db_path()).unwrap();
    let err = rt.restore("app-nope.db").await.unwrap_err();
    assert!(err.to_string().contains("no backup named"), "{err}");
    let err = rt.restore("../data/app.db").await.unwrap_err();
    assert!(err.to_string().contains("not a path"), "{err}");
    let err = rt.restore(&backup.name).await.unwrap_err();
    assert!(err.to_string().contains("failed verification"), "{err}");
    assert_eq!(std::fs::read(t.db_path()).unwrap(), before);
    assert_eq!(values(rt).await, [1, 2]);
    // Writes were resumed after each refusal; each refusal is recorded.
    rt.execute(insert("t", 3)).await.unwrap();
    let log = rt.recoveries().await.unwrap();
    assert!(log.iter().all(|r| r.outcome == "failed"), "{log:?}");
    assert!(log.len() >= 2, "{log:?}");
    t.rt.shutdown().await.unwrap();
}
