//! The operation audit (`[audit] level`): one record per write operation,
//! with its status, the tables it touched (as SQLite's authorizer saw
//! them), its rows and its caller, in the journal; read through
//! `rt.audit`, `GET /v1/audit` and `resilite audit`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{open_direct, queue_settled, start_with};
use resilite::{
    AuditLevel, AuditQuery, AuditRecord, AuditStatus, EnqueueOptions, ErrorClass, OpKind,
    Operation, Runtime, Statement, Value, WriteContext,
};

/// Every record of the audit, oldest first.
async fn all_records(rt: &Runtime) -> Vec<AuditRecord> {
    let mut records = Vec::new();
    let mut before = None;
    loop {
        let page = rt
            .audit(AuditQuery {
                before,
                limit: Some(1000),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    records.reverse();
    records
}

fn counts(records: &[AuditRecord]) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for r in records {
        *counts.entry(r.status.as_str()).or_default() += 1;
    }
    counts
}

/// 16 tasks × 200 writes, one in ten violating a CHECK and one in fifty
/// refused by the statement gate, plus a batch that fails atomically: the
/// audit holds one record per operation, committed and failed counted as
/// the callers were answered, with the error class, the request id and
/// the commit batch of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_match_the_operations_under_concurrent_load() {
    let t = start_with(|c| c.audit.level = AuditLevel::All).await;
    let rt = &t.rt;
    rt.execute(Statement::sql("CREATE TABLE t(v INTEGER CHECK (v >= 0))"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..16i64 {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            for i in 0..200i64 {
                let stmt = if i % 50 == 7 {
                    Statement::sql("BEGIN")
                } else if i % 10 == 3 {
                    Statement::new("INSERT INTO t VALUES (?1)", [Value::Integer(-1)])
                } else {
                    Statement::new(
                        "INSERT INTO t VALUES (?1)",
                        [Value::Integer(task * 1000 + i)],
                    )
                };
                let context = WriteContext {
                    request_id: Some(format!("req-{task}-{i}")),
                    caller: Some(format!("task-{task}")),
                    client: None,
                };
                match rt.execute_with(stmt, context).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (1usize, 0usize); // the CREATE TABLE
    for task in tasks {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed += f;
    }
    let batch = rt
        .batch(vec![
            Statement::new("INSERT INTO t VALUES (?1)", [Value::Integer(99_999)]),
            Statement::new("INSERT INTO t VALUES (?1)", [Value::Integer(-5)]),
        ])
        .await;
    assert_eq!(batch.unwrap_err().class, ErrorClass::Constraint);
    failed += 1;

    let records = all_records(rt).await;
    let by_status = counts(&records);
    assert_eq!(by_status.get("committed").copied(), Some(ok));
    assert_eq!(by_status.get("failed").copied(), Some(failed));
    assert_eq!(records.len(), ok + failed);
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.error_class.as_deref() == Some("forbidden"))
        .collect();
    assert_eq!(refused.len(), 16 * 4, "gate refusals");
    let constraint = records
        .iter()
        .filter(|r| r.error_class.as_deref() == Some("constraint"))
        .count();
    assert_eq!(constraint, 16 * 20 + 1);
    let last = records.last().unwrap();
    assert_eq!(
        (last.kind, last.status, last.rows),
        (OpKind::Batch, AuditStatus::Failed, 0)
    );
    assert_eq!(last.tables, ["t"]);
    let one = records
        .iter()
        .find(|r| r.context.request_id.as_deref() == Some("req-3-0"))
        .unwrap();
    assert_eq!(one.context.caller.as_deref(), Some("task-3"));
    assert_eq!(
        (one.status, one.rows, one.kind),
        (AuditStatus::Committed, 1, OpKind::Statement)
    );
    assert!(one.batch.is_some());
    let failed_page = rt
        .audit(AuditQuery {
            status: Some(AuditStatus::Failed),
            limit: Some(1000),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failed_page.records.len(), failed);
}

/// The tables touched: an INSERT names its table, an UPDATE whose trigger
/// writes a second table names both, a DELETE its table; filtering by
/// table finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tables_touched_include_those_of_triggers() {
    let t = start_with(|c| c.audit.level = AuditLevel::All).await;
    let rt = &t.rt;
    rt.batch(vec![
        Statement::sql("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER)"),
        Statement::sql("CREATE TABLE history(account INTEGER, balance INTEGER)"),
        Statement::sql(
            "CREATE TRIGGER keep AFTER UPDATE ON accounts BEGIN \
             INSERT INTO history VALUES (old.id, old.balance); END",
        ),
    ])
    .await
    .unwrap();
    let insert = "INSERT INTO accounts VALUES (?1, 10)";
    let update = "UPDATE accounts SET balance = balance + 1 WHERE id = ?1";
    for round in 0..2 {
        // The second round runs the same SQL from the statement cache.
        rt.execute(Statement::new(insert, [Value::Integer(round)]))
            .await
            .unwrap();
        rt.execute(Statement::new(update, [Value::Integer(round)]))
            .await
            .unwrap();
    }
    rt.execute(Statement::sql("DELETE FROM accounts WHERE id = 0"))
        .await
        .unwrap();
    let records = all_records(rt).await;
    let tables: Vec<Vec<String>> = records[1..].iter().map(|r| r.tables.clone()).collect();
    let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    assert_eq!(
        tables,
        [
            s(&["accounts"]),
            s(&["accounts", "history"]),
            s(&["accounts"]),
            s(&["accounts", "history"]),
            s(&["accounts"]),
        ]
    );
    let history = rt
        .audit(AuditQuery {
            table: Some("history".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(history.records.len(), 2);
    assert!(history.records.iter().all(|r| r.rows == 1));
}

/// At `failures` only operations that did not commit are recorded; at
/// `off` nothing is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_level_failures_records_only_failures_and_off_nothing() {
    for level in [AuditLevel::Failures, AuditLevel::Off] {
        let t = start_with(|c| c.audit.level = level).await;
        let rt = &t.rt;
        rt.execute(Statement::sql("CREATE TABLE t(v INTEGER NOT NULL)"))
            .await
            .unwrap();
        for _ in 0..5 {
            rt.execute(Statement::sql("INSERT INTO t VALUES (1)"))
                .await
                .unwrap();
            rt.execute(Statement::sql("INSERT INTO t VALUES (NULL)"))
                .await
                .unwrap_err();
        }
        let records = all_records(rt).await;
        match level {
            AuditLevel::Failures => {
                assert_eq!(records.len(), 5);
                assert!(records.iter().all(|r| r.status == AuditStatus::Failed
                    && r.error_class.as_deref() == Some("constraint")));
            }
            _ => assert!(records.is_empty(), "{records:?}"),
        }
    }
}

/// Durable writes against a database locked by another connection are
/// recorded `queued` with their queue entry; once the lock ends and the
/// queue replays them, each is recorded again `committed`, kind `queued`,
/// with the same entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_queued_writes_and_their_replay() {
    let t = start_with(|c| {
        c.audit.level = AuditLevel::All;
        c.database.busy_timeout = Duration::from_millis(20);
        c.writer.max_retries = 0;
        c.retry.base_delay = Duration::from_millis(50);
        c.retry.poll_interval = Duration::from_millis(100);
        c.retry.max_attempts = 1000;
    })
    .await;
    let rt = &t.rt;
    rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let holder = open_direct(&t.db_path());
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut ids = Vec::new();
    for v in 0..10 {
        let op = Operation::Statement(Statement::new(
            "INSERT INTO t VALUES (?1)",
            [Value::Integer(v)],
        ));
        match rt
            .execute_durable(op, EnqueueOptions::default())
            .await
            .unwrap()
        {
            resilite::Durable::Queued { id } => ids.push(id),
            other => panic!("applied under the lock: {other:?}"),
        }
    }
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let stats = queue_settled(rt, Duration::from_secs(10)).await;
    assert_eq!(stats.queued + stats.retrying, 0, "{stats:?}");

    let records = all_records(rt).await;
    let queued: Vec<i64> = records
        .iter()
        .filter(|r| r.status == AuditStatus::Queued)
        .filter_map(|r| r.queue_id)
        .collect();
    assert_eq!(queued, ids);
    let mut replayed: Vec<i64> = records
        .iter()
        .filter(|r| r.kind == OpKind::Queued && r.status == AuditStatus::Committed)
        .filter_map(|r| r.queue_id)
        .collect();
    replayed.sort_unstable();
    assert_eq!(replayed, ids);
    assert!(records
        .iter()
        .filter(|r| r.status == AuditStatus::Queued)
        .all(|r| r.error_class.is_some() && r.batch.is_none()));
}

/// With the operation log off, the callers are answered before the audit's
/// records are appended, and each is given its operation back at once:
/// the audit still records every operation's kind, and the slow-query log
/// still has each slow write's SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_log_the_audit_and_the_slow_log_keep_what_they_need() {
    let t = start_with(|c| {
        c.audit.level = AuditLevel::All;
        c.backup.op_log = false;
        c.audit.slow_threshold = Duration::from_micros(1);
    })
    .await;
    let rt = &t.rt;
    rt.execute(Statement::sql("CREATE TABLE k(v INTEGER)"))
        .await
        .unwrap();
    rt.execute(Statement::new(
        "INSERT INTO k VALUES (?1)",
        [Value::Integer(1)],
    ))
    .await
    .unwrap();
    rt.batch(vec![
        Statement::new("INSERT INTO k VALUES (?1)", [Value::Integer(2)]),
        Statement::new("UPDATE k SET v = v + 10 WHERE v = ?1", [Value::Integer(2)]),
    ])
    .await
    .unwrap();

    rt.flush_logs().await.unwrap();
    let kinds: Vec<_> = all_records(rt).await.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [OpKind::Statement, OpKind::Statement, OpKind::Batch]);
    let slow = rt.slow_queries().await.unwrap();
    for sql in ["CREATE TABLE k", "INSERT INTO k VALUES", "UPDATE k SET"] {
        assert!(
            slow.iter()
                .any(|q| q.kind == resilite::SlowKind::Write && q.sql.contains(sql)),
            "no slow write {sql:?} in {slow:#?}"
        );
    }
}
