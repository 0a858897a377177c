//! The writer through the runtime handle: group commit under concurrency,
//! per-operation isolation inside one commit, atomic batches.

mod common;

use std::collections::HashSet;

use proptest::prelude::*;
use resilite::{ErrorClass, Statement, Value};

use common::{insert, open_direct, start, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writer_64_tasks_x_1000_writes_all_acknowledged_rows_present() {
    let t = start().await;
    t.rt.execute(Statement::sql(
        "CREATE TABLE w(id INTEGER PRIMARY KEY, task INTEGER NOT NULL, seq INTEGER NOT NULL)",
    ))
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for task in 0..64i64 {
        let rt = t.rt.clone();
        tasks.push(tokio::spawn(async move {
            let mut rowids = Vec::with_capacity(1000);
            for seq in 0..1000i64 {
                let out = rt
                    .execute(Statement::new(
                        "INSERT INTO w(task, seq) VALUES (?1, ?2)",
                        [Value::from(task), Value::from(seq)],
                    ))
                    .await
                    .expect("write acknowledged");
                assert_eq!(out.rows_affected, 1);
                rowids.push(out.last_insert_rowid);
            }
            rowids
        }));
    }
    let mut all_rowids = HashSet::new();
    for task in tasks {
        let rowids = task.await.unwrap();
        // One writer: a task's writes are committed in the order it made them.
        assert!(
            rowids.windows(2).all(|w| w[0] < w[1]),
            "rowids not increasing within a task"
        );
        all_rowids.extend(rowids);
    }
    assert_eq!(
        all_rowids.len(),
        64_000,
        "every acknowledged write has its own row"
    );
    let stats = t.rt.writer_stats().await.unwrap();
    assert!(
        stats.mean_batch > 1.0,
        "writes were group-committed: {stats:?}"
    );
    t.rt.shutdown().await.unwrap();

    let conn = open_direct(&t.db_path());
    let count: i64 = conn
        .query_row("SELECT count(*) FROM w", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 64_000);
    let per_task_ok: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT task FROM w GROUP BY task HAVING count(*) = 1000 AND count(DISTINCT seq) = 1000)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(per_task_ok, 64);
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_constraint_failure_fails_only_its_caller_in_a_group_commit() {
    // A long batch wait makes the concurrent writes land in one commit.
    let t = start_with(|c| c.writer.batch_wait = std::time::Duration::from_millis(50)).await;
    t.rt.execute(Statement::sql("CREATE TABLE u(v TEXT UNIQUE NOT NULL)"))
        .await
        .unwrap();
    t.rt.execute(insert("u", "taken")).await.unwrap();
    let values: [&'static str; 6] = ["a", "taken", "b", "c", "taken", "d"];
    let handles: Vec<_> = values
        .iter()
        .map(|&v| {
            let rt = t.rt.clone();
            tokio::spawn(async move { rt.execute(insert("u", v)).await })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    for (v, r) in values.iter().zip(&results) {
        match *v {
            "taken" => assert_eq!(r.as_ref().unwrap_err().class, ErrorClass::Constraint),
            _ => assert!(r.is_ok(), "{v}: {r:?}"),
        }
    }
    let rows =
        t.rt.query(Statement::sql("SELECT v FROM u ORDER BY v"))
            .await
            .unwrap();
    let got: Vec<Value> = rows.rows.into_iter().map(|mut r| r.remove(0)).collect();
    let want: Vec<Value> = ["a", "b", "c", "d", "taken"].map(Value::from).to_vec();
    assert_eq!(got, want);
}

/// `writer.statement_timeout`: a caller statement that runs too long is
/// stopped with a `timeout` error and applies nothing, while the writes
/// committed in the same group commit are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_statement_past_its_timeout_fails_alone_and_applies_nothing() {
    let t = start_with(|c| {
        c.writer.batch_wait = std::time::Duration::from_millis(50);
        c.writer.statement_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE u(v INTEGER)"))
        .await
        .unwrap();
    let endless = Statement::sql(
        "INSERT INTO u WITH RECURSIVE c(x) AS (SELECT 1000 UNION ALL SELECT x+1 FROM c) SELECT x FROM c",
    );
    let started = std::time::Instant::now();
    let long = tokio::spawn({
        let rt = t.rt.clone();
        async move { rt.execute(endless).await }
    });
    let quick: Vec<_> = (0..20)
        .map(|v| {
            let rt = t.rt.clone();
            tokio::spawn(async move { rt.execute(insert("u", v)).await })
        })
        .collect();
    let err = long.await.unwrap().unwrap_err();
    assert_eq!(err.class, ErrorClass::Timeout, "{err}");
    assert!(err.message.contains("writer.statement_timeout"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    for q in quick {
        q.await
            .unwrap()
            .expect("a quick write beside the stopped one");
    }
    let rows =
        t.rt.query(Statement::sql("SELECT count(*), max(v) FROM u"))
            .await
            .unwrap();
    assert_eq!(rows.rows[0], vec![Value::Integer(20), Value::Integer(19)]);
}

/// A write whose caller stopped waiting before the writer took it up is
/// never applied: the caller could not learn its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_skips_a_write_whose_caller_left_before_it_started() {
    let t = start().await;
    t.rt.execute(Statement::sql("CREATE TABLE u(v INTEGER)"))
        .await
        .unwrap();
    // Holds the connection thread for a while (well under the 10 s bound).
    let slow = tokio::spawn({
        let rt = t.rt.clone();
        async move {
            rt.execute(Statement::sql(
                "INSERT INTO u SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 3000000) SELECT x FROM c)",
            ))
            .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let gone = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        t.rt.execute(insert("u", -1)),
    )
    .await;
    assert!(
        gone.is_err(),
        "the write was answered before the slow one ended"
    );
    slow.await.unwrap().unwrap();
    t.rt.execute(insert("u", 1)).await.unwrap();
    let rows =
        t.rt.query(Statement::sql("SELECT v FROM u ORDER BY rowid"))
            .await
            .unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(3_000_000)], vec![Value::Integer(1)]]
    );
}

/// `WriterHandle::write_many`: many independent operations in one message
/// and one commit, an outcome for each in order; a failing one fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_write_many_isolates_each_operation_in_one_commit() {
    let t = start().await;
    t.rt.execute(Statement::sql("CREATE TABLE u(v TEXT UNIQUE NOT NULL)"))
        .await
        .unwrap();
    t.rt.execute(insert("u", "taken")).await.unwrap();
    let writer = t.rt.writer().await.unwrap();
    let handle = ractor::call!(writer, resilite::testing::WriterMsg::Handle).unwrap();
    let commits_before = t.rt.writer_stats().await.unwrap().commits;
    let values = ["a", "taken", "b", "taken", "c"];
    let ops = values
        .iter()
        .map(|&v| resilite::Operation::Statement(insert("u", v)))
        .collect();
    let results = handle
        .write_many(ops)
        .await
        .expect("taken")
        .expect("answered");
    let classes: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.class))
        .collect();
    assert_eq!(
        classes,
        [
            None,
            Some(ErrorClass::Constraint),
            None,
            Some(ErrorClass::Constraint),
            None
        ]
    );
    assert_eq!(
        t.rt.writer_stats().await.unwrap().commits - commits_before,
        1
    );
    let rows =
        t.rt.query(Statement::sql("SELECT v FROM u ORDER BY v"))
            .await
            .unwrap();
    let got: Vec<Value> = rows.rows.into_iter().map(|mut r| r.remove(0)).collect();
    assert_eq!(got, ["a", "b", "c", "taken"].map(Value::from).to_vec());
    // A handle kept past shutdown keeps the connection thread open.
    drop(handle);
    t.rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_or_fail_statement_leaves_no_partial_rows_in_a_group_commit() {
    // OR FAIL keeps the rows a statement changed before failing; resilite
    // must still apply the statement all or nothing.
    let t = start_with(|c| c.writer.batch_wait = std::time::Duration::from_millis(50)).await;
    t.rt.execute(Statement::sql("CREATE TABLE f(v INTEGER UNIQUE)"))
        .await
        .unwrap();
    t.rt.execute(insert("f", 3)).await.unwrap();
    let partial = Statement::sql("INSERT OR FAIL INTO f(v) VALUES (1), (2), (3), (4)");
    let handles: Vec<_> = [insert("f", 10), partial, insert("f", 11)]
        .into_iter()
        .map(|stmt| {
            let rt = t.rt.clone();
            tokio::spawn(async move { rt.execute(stmt).await })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert_eq!(
        results[1].as_ref().unwrap_err().class,
        ErrorClass::Constraint
    );
    let rows =
        t.rt.query(Statement::sql("SELECT v FROM f ORDER BY v"))
            .await
            .unwrap();
    let got: Vec<Value> = rows.rows.into_iter().map(|mut r| r.remove(0)).collect();
    assert_eq!(got, [3, 10, 11].map(Value::from).to_vec());
}

#[tokio::test]
async fn writer_atomic_batch_with_one_bad_statement_leaves_nothing() {
    let t = start().await;
    t.rt.execute(Statement::sql("CREATE TABLE b(v INTEGER NOT NULL)"))
        .await
        .unwrap();
    let err =
        t.rt.batch(vec![
            insert("b", 1),
            insert("b", 2),
            Statement::new("INSERT INTO b(v) VALUES (?1)", [Value::Null]),
            insert("b", 4),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Constraint);
    let ok =
        t.rt.batch(vec![insert("b", 5), insert("b", 6)])
            .await
            .unwrap();
    assert_eq!(ok.len(), 2);
    let rows =
        t.rt.query(Statement::sql("SELECT v FROM b ORDER BY v"))
            .await
            .unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(5)], vec![Value::Integer(6)]]
    );
}

#[tokio::test]
async fn writer_bad_input_gets_a_clear_error_and_nothing_is_applied() {
    let t = start().await;
    t.rt.execute(Statement::sql("CREATE TABLE p(a INTEGER)"))
        .await
        .unwrap();
    let cases = [
        (
            Statement::sql("INSERT INTO p VALUES (?1, ?2)"),
            ErrorClass::Sql,
        ),
        (
            Statement::new(
                "INSERT INTO p VALUES (?1)",
                [Value::from(1), Value::from(2)],
            ),
            ErrorClass::BadInput,
        ),
        (
            Statement::sql("INSERT INTO p VALUES (1); INSERT INTO p VALUES (2)"),
            ErrorClass::BadInput,
        ),
        (Statement::sql("   "), ErrorClass::BadInput),
        (
            Statement::sql("INSERT INTO missing VALUES (1)"),
            ErrorClass::Sql,
        ),
        (Statement::sql("SELECT * FROM p"), ErrorClass::BadInput),
    ];
    for (stmt, class) in cases {
        let err = t.rt.execute(stmt.clone()).await.unwrap_err();
        assert_eq!(err.class, class, "{stmt:?}: {err}");
        assert!(!err.message.is_empty());
    }
    let err = t.rt.batch(vec![]).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::BadInput);
    let err =
        t.rt.query(Statement::sql("DELETE FROM p"))
            .await
            .unwrap_err();
    assert_eq!(err.class, ErrorClass::BadInput);
    assert!(err.message.contains("read-only"), "{err}");
    let rows =
        t.rt.query(Statement::sql("SELECT count(*) FROM p"))
            .await
            .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(0)]]);
}

#[tokio::test]
async fn writer_shutdown_drains_and_later_writes_are_refused() {
    let t = start().await;
    t.rt.execute(Statement::sql("CREATE TABLE s(v INTEGER)"))
        .await
        .unwrap();
    let pending: Vec<_> = (0..200)
        .map(|i| {
            let rt = t.rt.clone();
            tokio::spawn(async move { rt.execute(insert("s", i)).await })
        })
        .collect();
    let mut acknowledged = 0;
    tokio::task::yield_now().await;
    t.rt.shutdown().await.unwrap();
    for p in pending {
        match p.await.unwrap() {
            Ok(_) => acknowledged += 1,
            Err(e) => assert_eq!(e.class, ErrorClass::Unavailable, "{e}"),
        }
    }
    let err = t.rt.execute(insert("s", 1)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Unavailable);
    // The read pool closed too: no connection of resilite's holds the file.
    let err = t.rt.query(Statement::sql("SELECT 1")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Unavailable, "{err}");
    assert!(
        !t.db_path().with_extension("db-wal").exists(),
        "the last connection to close removed the WAL"
    );
    let conn = open_direct(&t.db_path());
    let count: i64 = conn
        .query_row("SELECT count(*) FROM s", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        count, acknowledged,
        "exactly the acknowledged writes are on disk"
    );
    let wal = std::fs::metadata(t.db_path().with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "shutdown checkpointed and truncated the WAL");
}

/// One proptest case: a random mix of good and failing operations sent
/// concurrently; afterwards the table holds exactly the acknowledged ones.
#[derive(Debug, Clone)]
enum Op {
    Good(i64),
    Duplicate,
    BadSql,
    BatchGood(i64, i64),
    BatchWithBad(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0i64..1_000_000).prop_map(Op::Good),
        1 => Just(Op::Duplicate),
        1 => Just(Op::BadSql),
        1 => (0i64..1_000_000, 0i64..1_000_000).prop_map(|(a, b)| Op::BatchGood(a, b)),
        1 => (0i64..1_000_000).prop_map(Op::BatchWithBad),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn writer_committed_rows_are_exactly_the_acknowledged_operations(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let t = start().await;
            t.rt.execute(Statement::sql("CREATE TABLE k(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")).await.unwrap();
            t.rt.execute(Statement::sql("INSERT INTO k(id, v) VALUES (-1, -1)")).await.unwrap();
            let mut handles = Vec::new();
            for (i, op) in ops.iter().cloned().enumerate() {
                let rt = t.rt.clone();
                // Unique ids per op index keep good writes from colliding.
                let id = move |n: i64| (i as i64) * 10 + n;
                handles.push(tokio::spawn(async move {
                    let v = |x: i64| Value::from(x);
                    let ins = |n: i64, val: i64| Statement::new("INSERT INTO k(id, v) VALUES (?1, ?2)", [v(id(n)), v(val)]);
                    let result = match &op {
                        Op::Good(x) => rt.execute(ins(0, *x)).await.map(|_| vec![id(0)]),
                        Op::Duplicate => rt.execute(Statement::sql("INSERT INTO k(id, v) VALUES (-1, 0)")).await.map(|_| vec![]),
                        Op::BadSql => rt.execute(Statement::sql("INSERT INTO nowhere VALUES (1)")).await.map(|_| vec![]),
                        Op::BatchGood(a, b) => rt.batch(vec![ins(0, *a), ins(1, *b)]).await.map(|_| vec![id(0), id(1)]),
                        Op::BatchWithBad(a) => rt.batch(vec![ins(0, *a), Statement::sql("INSERT INTO k(id, v) VALUES (-1, 0)")]).await.map(|_| vec![id(0)]),
                    };
                    (op, result)
                }));
            }
            let mut expected: Vec<i64> = vec![-1];
            for h in handles {
                let (op, result) = h.await.unwrap();
                match (&op, result) {
                    (Op::Good(_) | Op::BatchGood(..), Ok(ids)) => expected.extend(ids),
                    (Op::Duplicate | Op::BadSql | Op::BatchWithBad(_), Err(e)) => {
                        assert!(matches!(e.class, ErrorClass::Constraint | ErrorClass::Sql), "{e}");
                    }
                    (op, r) => panic!("unexpected outcome for {op:?}: {r:?}"),
                }
            }
            expected.sort();
            let rows = t.rt.query(Statement::sql("SELECT id FROM k ORDER BY id")).await.unwrap();
            let got: Vec<i64> = rows.rows.iter().map(|r| match r[0] { Value::Integer(i) => i, _ => unreachable!() }).collect();
            assert_eq!(got, expected);
            t.rt.shutdown().await.unwrap();
        });
    }
}
