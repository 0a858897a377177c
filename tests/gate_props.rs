//! The statement gate under random concurrent interleavings, through the
//! embedded runtime: valid inserts and batches sent at the same time as
//! refused statements (transaction control, ATTACH, forbidden pragmas, TEMP
//! tables), alone, inside batches and through the read pool, so that they
//! share group commits.

mod common;

use std::time::Duration;

use proptest::prelude::*;
use resilite::{ErrorClass, Operation, Statement, Value};

use common::start_with;

/// A statement the gate refuses.
#[derive(Debug, Clone, Copy)]
enum Refused {
    Begin,
    BeginExclusive,
    Commit,
    End,
    Rollback,
    Savepoint,
    Release,
    RollbackTo,
    Attach,
    Detach,
    Pragma(usize),
    /// A TEMP table named like the real one: it would shadow it.
    TempTable,
    TempTrigger,
}

const PRAGMAS: &[&str] = &[
    "PRAGMA query_only=1",
    "PRAGMA locking_mode=EXCLUSIVE",
    "PRAGMA writable_schema=ON",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA user_version=7",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA synchronous=OFF",
    "PRAGMA recursive_triggers=ON",
];

impl Refused {
    fn sql(self, outside: &std::path::Path, i: usize) -> String {
        match self {
            Refused::Begin => "BEGIN".into(),
            Refused::BeginExclusive => "BEGIN EXCLUSIVE".into(),
            Refused::Commit => "COMMIT".into(),
            Refused::End => "END TRANSACTION".into(),
            Refused::Rollback => "ROLLBACK".into(),
            Refused::Savepoint => "SAVEPOINT hostile".into(),
            Refused::Release => "RELEASE hostile".into(),
            Refused::RollbackTo => "ROLLBACK TO hostile".into(),
            Refused::Attach => format!(
                "ATTACH '{}' AS a{i}",
                outside.join(format!("a{i}.db")).display()
            ),
            Refused::Detach => "DETACH main".into(),
            Refused::Pragma(p) => PRAGMAS[p % PRAGMAS.len()].into(),
            Refused::TempTable => "CREATE TEMP TABLE k(id INTEGER NOT NULL, v INTEGER)".into(),
            Refused::TempTrigger => {
                format!("CREATE TEMP TRIGGER eat{i} AFTER INSERT ON main.k BEGIN DELETE FROM main.k; END")
            }
        }
    }
}

fn refused() -> impl Strategy<Value = Refused> {
    prop_oneof![
        Just(Refused::Begin),
        Just(Refused::BeginExclusive),
        Just(Refused::Commit),
        Just(Refused::End),
        Just(Refused::Rollback),
        Just(Refused::Savepoint),
        Just(Refused::Release),
        Just(Refused::RollbackTo),
        Just(Refused::Attach),
        Just(Refused::Detach),
        (0..PRAGMAS.len()).prop_map(Refused::Pragma),
        Just(Refused::TempTable),
        Just(Refused::TempTrigger),
    ]
}

/// One operation of a case.
#[derive(Debug, Clone)]
enum Op {
    /// A valid single insert.
    Insert,
    /// A valid batch of this many inserts.
    Batch(usize),
    /// A refused statement alone, through the writer.
    Refused(Refused),
    /// A refused statement through the read pool.
    QueryRefused(Refused),
    /// A batch of `n` valid inserts with the refused statement at `at`.
    Mixed { n: usize, at: usize, bad: Refused },
}

impl Op {
    fn is_valid(&self) -> bool {
        matches!(self, Op::Insert | Op::Batch(_))
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Insert),
        2 => (1..4usize).prop_map(Op::Batch),
        2 => refused().prop_map(Op::Refused),
        1 => refused()
            .prop_filter("TEMP objects may be refused as writes by the read pool", |r| {
                !matches!(r, Refused::TempTable | Refused::TempTrigger)
            })
            .prop_map(Op::QueryRefused),
        2 => (1..4usize, 0..4usize, refused()).prop_map(|(n, at, bad)| Op::Mixed { n, at: at % (n + 1), bad }),
    ]
}

/// Row ids an operation tries to insert: `i * 10 + n`, unique per op.
fn ids(i: usize, n: usize) -> Vec<i64> {
    (0..n).map(|j| (i * 10 + j) as i64).collect()
}

fn ins(id: i64) -> Statement {
    Statement::new(
        "INSERT INTO k(id, v) VALUES (?1, ?2)",
        [Value::from(id), Value::from(id * 7)],
    )
}

/// Run one case: every op sent at once, then the property checked.
async fn run_case(ops: Vec<Op>) {
    let t = start_with(|c| c.writer.batch_wait = Duration::from_millis(2)).await;
    let outside = tempfile::tempdir().unwrap();
    // No key constraint: a duplicated row would show.
    t.rt.execute(Statement::sql(
        "CREATE TABLE k(id INTEGER NOT NULL, v INTEGER)",
    ))
    .await
    .unwrap();
    t.rt.execute(ins(-1)).await.unwrap();

    let mut handles = Vec::new();
    for (i, op) in ops.iter().cloned().enumerate() {
        let rt = t.rt.clone();
        let outside = outside.path().to_path_buf();
        handles.push(tokio::spawn(async move {
            let (tried, fut): (Vec<i64>, _) = match &op {
                Op::Insert => (ids(i, 1), rt.write(Operation::Statement(ins(ids(i, 1)[0])))),
                Op::Batch(n) => {
                    let tried = ids(i, *n);
                    let stmts = tried.iter().map(|&id| ins(id)).collect();
                    (tried, rt.write(Operation::Batch(stmts)))
                }
                Op::Refused(bad) => (
                    vec![],
                    rt.write(Operation::Statement(Statement::sql(bad.sql(&outside, i)))),
                ),
                Op::Mixed { n, at, bad } => {
                    let tried = ids(i, *n);
                    let mut stmts: Vec<Statement> = tried.iter().map(|&id| ins(id)).collect();
                    stmts.insert(*at, Statement::sql(bad.sql(&outside, i)));
                    (tried, rt.write(Operation::Batch(stmts)))
                }
                Op::QueryRefused(bad) => {
                    let result = tokio::time::timeout(
                        Duration::from_secs(15),
                        rt.query(Statement::sql(bad.sql(&outside, i))),
                    )
                    .await
                    .map(|r| r.map(|_| ()));
                    return (op, vec![], result);
                }
            };
            let result = tokio::time::timeout(Duration::from_secs(15), fut)
                .await
                .map(|r| r.map(|_| ()));
            (op, tried, result)
        }));
    }

    let mut outcomes = Vec::new();
    for h in handles {
        let (op, tried, result) = h.await.unwrap();
        let result = result.unwrap_or_else(|_| panic!("{op:?} was not answered within 15 s"));
        outcomes.push((op, tried, result));
    }
    // Acknowledged valid writes must be there; rows of anything that
    // failed must not.
    let mut expected: Vec<i64> = vec![-1];
    let mut failed_ids: Vec<i64> = Vec::new();
    for (_, tried, result) in &outcomes {
        match result {
            Ok(()) => expected.extend(tried),
            Err(_) => failed_ids.extend(tried),
        }
    }
    expected.sort_unstable();

    let rows =
        t.rt.query(Statement::sql("SELECT id FROM main.k ORDER BY id"))
            .await
            .unwrap();
    let got: Vec<i64> = rows
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::Integer(i) => i,
            ref other => panic!("id {other:?}"),
        })
        .collect();
    let leaked: Vec<_> = got.iter().filter(|id| failed_ids.contains(id)).collect();
    assert!(
        leaked.is_empty(),
        "rows of writes that got an error were committed: {leaked:?}"
    );
    assert_eq!(
        got, expected,
        "committed rows are exactly the acknowledged writes, each once"
    );
    for (op, _, result) in &outcomes {
        match (op.is_valid(), result) {
            (true, Ok(())) => {}
            // A refused statement never changes another caller's outcome.
            (true, Err(e)) => panic!("valid {op:?} failed beside refused statements: {e}"),
            (false, Err(e)) => assert_eq!(e.class, ErrorClass::Forbidden, "{op:?}: {e}"),
            (false, Ok(())) => panic!("{op:?} was applied"),
        }
    }

    // The writer is back in autocommit between commits: a normal write and
    // read work, land in the real table, and nothing was attached.
    let out =
        t.rt.execute(ins(1_000_000))
            .await
            .expect("a normal write afterwards");
    assert_eq!(out.rows_affected, 1);
    let rows =
        t.rt.query(Statement::sql(
            "SELECT count(*) FROM main.k WHERE id = 1000000",
        ))
        .await
        .expect("a normal read afterwards");
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    let created: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(created.is_empty(), "ATTACH created {created:?}");
    t.rt.shutdown().await.unwrap();

    let conn = rusqlite::Connection::open(t.db_path()).unwrap();
    let (count, version): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM k), (SELECT user_version FROM pragma_user_version)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(count as usize, expected.len() + 1);
    assert_eq!(version, 0, "a refused PRAGMA user_version took effect");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(24),
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Atomicity and isolation under the statement gate: a refused
    /// statement never loses or duplicates another caller's acknowledged
    /// write nor commits part of its batch. Every valid write sent beside
    /// refused ones is acknowledged and present exactly once, no row of a
    /// refused batch is committed, every refused statement is answered
    /// `Forbidden`, and afterwards a normal write and read work.
    ///
    /// Property 6: Transaction Atomicity. For any interleaving, a batch
    /// with a refused statement commits none of its rows and every other
    /// batch all of its rows, each once. Property 7: Automatic Transaction
    /// Rollback. A refused step rolls back the steps of its batch before
    /// it, without touching the other callers sharing the commit.
    #[test]
    fn gate_refusals_never_lose_duplicate_or_half_commit_writes(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_case(ops));
    }
}
