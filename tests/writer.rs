//! The writer through the runtime handle: group commit under concurrency,
//! per-operation isolation inside one commit, atomic batches; property
//! tests of atomicity and of the errors callers get.

mod common;

use std::collections::HashSet;

use proptest::prelude::*;
use resilite::{ErrorClass, Operation, Statement, Value};

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

/// Six concurrent inserts share one group commit; the two that violate
/// UNIQUE fail with `constraint`, the four others are committed.
///
/// Property 7: Automatic Transaction Rollback. A write that fails inside a
/// group commit is rolled back alone (its statement undone), without the
/// caller asking and without undoing the writes committed beside it.
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
///
/// Property 7: Automatic Transaction Rollback. A statement stopped for its
/// time bound is rolled back whole (no row of it stays).
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
    let handle = common::writer_handle(&t.rt).await;
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

/// One group commit runs the same INSERT again and again from one prepared
/// statement: around a schema change in the same commit (SQLite compiles
/// it again, still under the statement gate) each write gets its own
/// rowid and the rows hold the new column's default; a statement the gate
/// refuses between two of them fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_same_statement_around_a_schema_change_in_one_commit() {
    let t = start().await;
    t.rt.execute(Statement::sql(
        "CREATE TABLE p(id INTEGER PRIMARY KEY, v TEXT)",
    ))
    .await
    .unwrap();
    let handle = common::writer_handle(&t.rt).await;
    let commits_before = t.rt.writer_stats().await.unwrap().commits;
    let ins = |v: &str| {
        Operation::Statement(Statement::new(
            "INSERT INTO p(v) VALUES (?1)",
            [Value::from(v)],
        ))
    };
    let ops = vec![
        ins("a"),
        ins("b"),
        Operation::Statement(Statement::sql(
            "ALTER TABLE p ADD COLUMN w INTEGER DEFAULT 7",
        )),
        ins("c"),
        Operation::Statement(Statement::sql("COMMIT")),
        ins("d"),
    ];
    let results = handle
        .write_many(ops)
        .await
        .expect("taken")
        .expect("answered");
    let rowids: Vec<_> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|o| o[0].last_insert_rowid)
                .map_err(|e| e.class)
        })
        .collect();
    assert_eq!(
        rowids,
        [
            Ok(1),
            Ok(2),
            Ok(0),
            Ok(3),
            Err(ErrorClass::Forbidden),
            Ok(4)
        ]
    );
    assert_eq!(
        t.rt.writer_stats().await.unwrap().commits - commits_before,
        1
    );
    let rows =
        t.rt.query(Statement::sql("SELECT v, w FROM p ORDER BY id"))
            .await
            .unwrap();
    assert_eq!(
        rows.rows,
        ["a", "b", "c", "d"].map(|v| vec![Value::from(v), Value::Integer(7)])
    );
    drop(handle);
    t.rt.shutdown().await.unwrap();
}

/// `WriterHandle::call`: resilite's own work on the writer's connection
/// runs after the writes sent before it and may own its transaction; one
/// that panics leaves no transaction open and the writer keeps writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_call_runs_in_order_and_a_panicking_job_leaves_nothing_open() {
    let t = start().await;
    t.rt.execute(Statement::sql("CREATE TABLE c(v INTEGER)"))
        .await
        .unwrap();
    let handle = common::writer_handle(&t.rt).await;
    t.rt.execute(Statement::new(
        "INSERT INTO c VALUES (?1)",
        [Value::from(1)],
    ))
    .await
    .unwrap();
    let seen: i64 = handle
        .call(|conn| {
            conn.execute_batch("BEGIN; ALTER TABLE c ADD COLUMN w INTEGER; COMMIT;")?;
            Ok(conn.query_row("SELECT count(*) FROM c", [], |r| r.get(0))?)
        })
        .await
        .unwrap();
    assert_eq!(seen, 1, "the job ran after the write sent before it");
    let panicked = handle
        .call::<(), _>(|conn| {
            conn.execute_batch("BEGIN; INSERT INTO c VALUES (2, 2);")
                .unwrap();
            panic!("a bug in a job")
        })
        .await
        .unwrap_err();
    assert_eq!(panicked.class, ErrorClass::Internal);
    t.rt.execute(Statement::new(
        "INSERT INTO c VALUES (?1, 3)",
        [Value::from(3)],
    ))
    .await
    .unwrap();
    let rows =
        t.rt.query(Statement::sql("SELECT v, w FROM c ORDER BY v"))
            .await
            .unwrap();
    assert_eq!(
        rows.rows,
        vec![
            vec![Value::from(1), Value::Null],
            vec![Value::from(3), Value::from(3)]
        ],
        "the panicked job's insert was rolled back, the writer kept writing"
    );
    drop(handle);
    t.rt.shutdown().await.unwrap();
}

/// `INSERT OR FAIL` of four rows failing on the third, between two good
/// inserts in one group commit: none of its rows stays, both others do.
///
/// Property 7: Automatic Transaction Rollback. A statement that fails after
/// changing rows (`OR FAIL` keeps them in SQLite) is rolled back whole,
/// while the writes beside it in the same commit stay.
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

/// A batch of four whose third statement violates NOT NULL fails with
/// `constraint` and applies nothing; the next batch applies whole.
///
/// Property 6: Transaction Atomicity. A multi-statement operation is one
/// transaction: all of it or nothing. Property 7: Automatic Transaction
/// Rollback. The failing third statement rolls back the two before it
/// without the caller asking.
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

/// Wrong parameter counts, several statements, empty SQL, unknown tables,
/// a query through execute and a write through query: each gets its class
/// and a message, and nothing is applied.
///
/// Property 8: User-Friendly Error Messages. Each kind of bad input gets
/// its class and a non-empty message (the property test below checks
/// the messages themselves).
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
    #![proptest_config(ProptestConfig::with_cases(common::cases(24)))]
    /// Concurrent good and failing writes and batches: the table ends
    /// with exactly the rows of the acknowledged operations.
    ///
    /// Property 6: Transaction Atomicity. For any mix of concurrent
    /// writes and batches, good and failing, the committed rows are
    /// exactly those of the acknowledged operations: a batch is applied
    /// whole or not at all. Property 7: Automatic Transaction Rollback.
    /// Every failing operation, a batch with one failing statement
    /// included, leaves no row behind.
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

/// A failing operation of the error-message property test.
#[derive(Debug, Clone, Copy)]
enum Failing {
    Unique,
    NotNull,
    Check,
    ForeignKey,
    NoTable,
    NoColumn,
    Syntax,
    ParamCount,
    /// A write sent as a query.
    QueryWrites,
    /// Transaction control, refused by the statement gate.
    Begin,
    /// A pragma that changes the connection, refused by the gate.
    Pragma,
}

impl Failing {
    /// The statement (with `tag` in a comment), its class, and words of
    /// SQLite's own message that the detail must keep.
    fn case(self, tag: &str) -> (Statement, ErrorClass, &'static str) {
        let sql = |s: &str| format!("{s} /* {tag} */");
        let one = |s: &str, v: Value| Statement::new(sql(s), [v]);
        match self {
            Failing::Unique => (
                one("INSERT INTO e(k) VALUES (?1)", "taken".into()),
                ErrorClass::Constraint,
                "UNIQUE constraint failed",
            ),
            Failing::NotNull => (
                one("INSERT INTO e(k) VALUES (?1)", Value::Null),
                ErrorClass::Constraint,
                "NOT NULL constraint failed",
            ),
            Failing::Check => (
                one("INSERT INTO e(k, n) VALUES ('c', ?1)", (-1).into()),
                ErrorClass::Constraint,
                "CHECK constraint failed",
            ),
            Failing::ForeignKey => (
                one("INSERT INTO child(parent) VALUES (?1)", "none".into()),
                ErrorClass::Constraint,
                "FOREIGN KEY constraint failed",
            ),
            Failing::NoTable => (
                one("INSERT INTO nowhere VALUES (?1)", 1.into()),
                ErrorClass::Sql,
                "no such table",
            ),
            Failing::NoColumn => (
                one("UPDATE e SET nope = ?1", 1.into()),
                ErrorClass::Sql,
                "no such column",
            ),
            Failing::Syntax => (
                Statement::sql(sql("INSERT INTO e VALUES VALUES (1)")),
                ErrorClass::Sql,
                "syntax error",
            ),
            Failing::ParamCount => (
                Statement::new(
                    sql("INSERT INTO e(k) VALUES (?1)"),
                    [Value::from("a"), Value::from("b")],
                ),
                ErrorClass::BadInput,
                "",
            ),
            Failing::QueryWrites => (
                Statement::sql(sql("DELETE FROM e")),
                ErrorClass::BadInput,
                "",
            ),
            Failing::Begin => (
                Statement::sql(sql("BEGIN IMMEDIATE")),
                ErrorClass::Forbidden,
                "not authorized",
            ),
            Failing::Pragma => (
                Statement::sql(sql("PRAGMA journal_mode = DELETE")),
                ErrorClass::Forbidden,
                "not authorized",
            ),
        }
    }
}

fn failing() -> impl Strategy<Value = Failing> {
    prop_oneof![
        Just(Failing::Unique),
        Just(Failing::NotNull),
        Just(Failing::Check),
        Just(Failing::ForeignKey),
        Just(Failing::NoTable),
        Just(Failing::NoColumn),
        Just(Failing::Syntax),
        Just(Failing::ParamCount),
        Just(Failing::QueryWrites),
        Just(Failing::Begin),
        Just(Failing::Pragma),
    ]
}

/// One case: each failure sent alone or inside a batch; its error checked.
async fn failures_explained(cases: Vec<(Failing, bool, String)>) {
    let t = start().await;
    for ddl in [
        "CREATE TABLE e(k TEXT UNIQUE NOT NULL, n INTEGER CHECK (n >= 0))",
        "CREATE TABLE child(parent TEXT REFERENCES e(k))",
        "INSERT INTO e(k) VALUES ('taken')",
    ] {
        t.rt.execute(Statement::sql(ddl)).await.unwrap();
    }
    for (failing, in_batch, tag) in &cases {
        let (stmt, class, sqlite_words) = failing.case(tag);
        let err = match failing {
            Failing::QueryWrites => t.rt.query(stmt).await.map(|_| ()),
            _ if *in_batch => {
                let good = Statement::new(
                    "INSERT INTO e(k) VALUES (?1)",
                    [Value::from(format!("batched {tag}"))],
                );
                t.rt.batch(vec![good, stmt]).await.map(|_| ())
            }
            _ => t.rt.execute(stmt).await.map(|_| ()),
        }
        .expect_err("it fails");
        let case = format!("{failing:?} (batch: {in_batch}, tag {tag:?}): {err:?}");
        assert_eq!(err.class, class, "{case}");
        // Property 8: a message for people, no SQLite internals or SQL.
        let message = &err.message;
        assert!(!message.trim().is_empty(), "{case}");
        assert!(message.len() <= 1024, "{case}");
        assert!(!message.chars().any(char::is_control), "{case}");
        assert!(!message.contains(tag.lines().next().unwrap()), "{case}");
        assert!(
            sqlite_words.is_empty() || !message.contains(sqlite_words),
            "{case}"
        );
        // Property 9: the detail keeps SQLite's own message and the SQL's
        // start, escaped to one line.
        let detail = &err.detail;
        assert!(detail.contains(sqlite_words), "{case}");
        // (A write sent as a query is refused by resilite before SQLite
        // runs it: no SQLite error, and the detail is the message.)
        if !matches!(failing, Failing::QueryWrites) {
            assert!(detail.contains(&tag.escape_default().to_string()), "{case}");
        }
        assert!(!detail.chars().any(char::is_control), "{case}");
    }
    // Nothing of any failed operation was applied.
    let rows =
        t.rt.query(Statement::sql("SELECT count(*) FROM e"))
            .await
            .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    t.rt.shutdown().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(8),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property 8: User-Friendly Error Messages. For any failing
    /// operation (constraint, SQL, bad input, refused by the gate; alone or
    /// in a batch), the error has the class that says what to do and a
    /// message for people: one printable line of at most 1 KB, without the
    /// caller's SQL or SQLite's own wording.
    ///
    /// Property 9: Detailed Technical Logging. The same errors carry the
    /// technical detail, for logs: SQLite's own message and the start of
    /// the SQL, control characters escaped so it stays one log line (what
    /// is logged is checked by `http_server_errors_are_logged_with_their_detail`).
    #[test]
    fn writer_every_failure_has_a_plain_message_and_the_technical_detail(
        cases in prop::collection::vec(
            (failing(), any::<bool>(), "[a-z]{4,12}(\n[a-z]{1,8})?"),
            1..12,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(failures_explained(cases));
    }
}

/// `Once` operations of one group commit, keys claimed together: a key
/// applied before is skipped, the same key twice in the batch applies
/// once, and a key whose operation failed is free for a later operation
/// with it, in the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_keys_in_one_group_commit_apply_each_key_once() {
    let t = start().await;
    t.rt.execute(Statement::sql("CREATE TABLE o(v INTEGER)"))
        .await
        .unwrap();
    let once = |key: &str, sql: &str| Operation::Once {
        key: key.into(),
        op: Box::new(Operation::Statement(Statement::sql(sql))),
    };
    t.rt.write(once("before", "INSERT INTO o VALUES (0)"))
        .await
        .unwrap();
    let handle = common::writer_handle(&t.rt).await;
    let results = handle
        .write_many(vec![
            once("before", "INSERT INTO o VALUES (10)"),
            once("a", "INSERT INTO o VALUES (1)"),
            once("a", "INSERT INTO o VALUES (2)"),
            once("b", "INSERT INTO nowhere VALUES (3)"),
            once("b", "INSERT INTO o VALUES (4)"),
        ])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        results[0].as_ref().unwrap().len(),
        0,
        "applied before: skipped"
    );
    assert_eq!(results[1].as_ref().unwrap().len(), 1);
    assert_eq!(results[2].as_ref().unwrap().len(), 0, "same key: skipped");
    assert!(results[3].is_err());
    assert_eq!(
        results[4].as_ref().unwrap().len(),
        1,
        "the failed one's key is free"
    );
    let rows =
        t.rt.query(Statement::sql("SELECT v FROM o ORDER BY v"))
            .await
            .unwrap();
    let values: Vec<_> = rows.rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        values,
        [Value::Integer(0), Value::Integer(1), Value::Integer(4)]
    );
}
