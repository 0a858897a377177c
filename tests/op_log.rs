//! The operation log through the runtime: every acknowledged write from 8
//! concurrent tasks is in the log exactly once, in commit order, as sent;
//! failed operations are not logged; keyed operations keep their key; a
//! backup records the position it holds, and replaying the log after it
//! onto the backup gives exactly the live table; the log is trimmed up to
//! the newest verified backup; `backup.op_log = false` logs nothing; and
//! a property test of what each entry records.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resilite::{Operation, Statement, Synchronous, Value};
use resilite_actors::journal::op_log::{self, LoggedOp};
use rusqlite::Connection;

use common::{open_direct, start_with};

const SCHEMA: &str =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v NOT NULL CHECK (typeof(v) = 'integer'))";

fn insert(v: Value) -> Statement {
    Statement::new("INSERT INTO t(v) VALUES (?1)", [v])
}

/// Every row of the log.
fn logged(journal: &std::path::Path) -> Vec<LoggedOp> {
    op_log::after(&open_direct(journal), i64::MIN, usize::MAX >> 1).unwrap()
}

/// The value an insert into `t` writes, looking through `Once`.
fn inserted(op: &Operation) -> Option<i64> {
    match op {
        Operation::Statement(s) if s.sql.starts_with("INSERT INTO t(") => match s.params[0] {
            Value::Integer(v) => Some(v),
            _ => None,
        },
        Operation::Once { op, .. } => inserted(op),
        _ => None,
    }
}

fn rows(conn: &Connection) -> Vec<(i64, i64)> {
    conn.prepare("SELECT id, v FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn json(op: &Operation) -> String {
    serde_json::to_string(op).unwrap()
}

/// Apply logged operations to `conn` as recovery would: in order, a batch
/// all or nothing, a keyed one only if its key is not there yet.
fn replay(conn: &Connection, ops: &[LoggedOp]) {
    fn run(conn: &Connection, op: &Operation) {
        match op {
            Operation::Statement(s) => {
                conn.execute(&s.sql, rusqlite::params_from_iter(&s.params))
                    .unwrap();
            }
            Operation::Batch(list) => list
                .iter()
                .for_each(|s| run(conn, &Operation::Statement(s.clone()))),
            Operation::Once { key, op } => {
                conn.execute_batch("CREATE TABLE IF NOT EXISTS _resilite_idempotency (key TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL) WITHOUT ROWID").unwrap();
                let claimed = conn
                    .execute(
                        "INSERT OR IGNORE INTO _resilite_idempotency VALUES (?1, 0)",
                        [key],
                    )
                    .unwrap();
                if claimed == 1 {
                    run(conn, op);
                }
            }
        }
    }
    for op in ops {
        run(conn, &op.op);
    }
}

/// 8 tasks write `per_task` operations each: plain inserts, keyed ones
/// (every 5th) and failing ones (every 7th, a text value the CHECK
/// refuses). The acknowledged and the failed operations.
async fn eight_writers(
    rt: &resilite::Runtime,
    per_task: i64,
    stop: Option<Arc<AtomicBool>>,
) -> (Vec<Operation>, Vec<Operation>) {
    let mut tasks = Vec::new();
    for w in 0..8i64 {
        let (rt, stop) = (rt.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut i = 0;
            while i < per_task || stop.as_ref().is_some_and(|s| !s.load(Ordering::Relaxed)) {
                let v = w * 1_000_000 + i;
                let op = if i % 7 == 6 {
                    Operation::Statement(insert(Value::Text(format!("bad-{v}"))))
                } else if i % 5 == 4 {
                    Operation::Once {
                        key: format!("key-{v}"),
                        op: Box::new(Operation::Statement(insert(Value::Integer(v)))),
                    }
                } else {
                    Operation::Statement(insert(Value::Integer(v)))
                };
                match rt.write(op.clone()).await {
                    Ok(_) => acked.push(op),
                    Err(_) => failed.push(op),
                }
                i += 1;
                if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    break;
                }
            }
            (acked, failed)
        }));
    }
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, f) = t.await.unwrap();
        acked.extend(a);
        failed.extend(f);
    }
    (acked, failed)
}

/// 8 concurrent tasks: every acknowledged write is in the log exactly once,
/// as sent (keys kept), in commit order without a gap; failed ones are not.
///
/// Property 17: Comprehensive Operation Logging. Every committed write is
/// logged with its SQL and parameters, under concurrency (only writes,
/// and only with `backup.op_log` on: the property is checked in part).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_is_logged_once_in_commit_order() {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
    })
    .await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    let (acked, failed) = eight_writers(&t.rt, 140, None).await;
    assert_eq!(failed.len(), 8 * 20, "every 7th write fails");
    let journal = t.rt.config().journal_path();
    let log = logged(&journal);

    // Sequence numbers in order, no gap.
    for pair in log.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    // Exactly the acknowledged operations, each once, as sent (keys kept).
    let mut want: Vec<String> = acked.iter().map(json).collect();
    let mut got: Vec<String> = log
        .iter()
        .filter(|o| inserted(&o.op).is_some() || json(&o.op).contains("bad-"))
        .map(|o| json(&o.op))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got.len(), 8 * 120);
    assert_eq!(got, want);
    assert!(failed.iter().all(|f| !got.contains(&json(f))));
    assert_eq!(
        log.iter()
            .filter(|o| matches!(&o.op, Operation::Once { key, .. } if key.starts_with("key-")))
            .count(),
        8 * 24
    );
    // Commit order: the table's rowids follow the log's sequence.
    let table: Vec<i64> = rows(&open_direct(&t.db_path()))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let in_log: Vec<i64> = log.iter().filter_map(|o| inserted(&o.op)).collect();
    assert_eq!(in_log, table);
    assert!(op_log::gaps(&open_direct(&journal)).unwrap().is_empty());
    // The database's position is the last number logged.
    let position = resilite_actors::writer::op_log_position(&open_direct(&t.db_path())).unwrap();
    assert_eq!(position, log.last().map(|o| o.seq));
    t.rt.shutdown().await.unwrap();
}

/// 32 tasks write at once, so group commits follow each other while
/// earlier ones are still being logged; right after each answer, the task
/// finds its write in the log (read from the journal file directly). At
/// `synchronous = full` the log's rows are written beside the database's
/// commit, at `normal` after it: both are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_is_in_the_log_when_its_answer_arrives() {
    for sync in [Synchronous::Full, Synchronous::Normal] {
        every_write_logged_when_answered(sync).await;
    }
}

async fn every_write_logged_when_answered(sync: Synchronous) {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
        c.database.synchronous = sync;
    })
    .await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    let journal = t.rt.config().journal_path();
    let mut tasks = Vec::new();
    for w in 0..32i64 {
        let (rt, journal) = (t.rt.clone(), journal.clone());
        tasks.push(tokio::spawn(async move {
            let conn = open_direct(&journal);
            for i in 0..40 {
                let op = Operation::Statement(insert(Value::Integer(w * 1000 + i)));
                rt.write(op.clone()).await.unwrap();
                let found: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM op_log, json_each(op_log.op) WHERE json_each.value = json(?1)",
                        [json(&op)],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(
                    found, 1,
                    "write {w}/{i} answered before it was logged ({sync:?})"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let log = logged(&journal);
    assert_eq!(
        log.iter().filter(|o| inserted(&o.op).is_some()).count(),
        32 * 40
    );
    assert!(op_log::gaps(&open_direct(&journal)).unwrap().is_empty());
    t.rt.shutdown().await.unwrap();
}

/// A group commit whose COMMIT fails after its statements ran (a deferred
/// foreign key checked only then), its log row already written beside
/// the commit: its callers get the error, and the log keeps nothing of it
/// (no row, nothing pending); the next write takes its numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_leaves_nothing_in_the_log() {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
        c.database.synchronous = Synchronous::Full;
    })
    .await;
    for sql in [
        "CREATE TABLE parent(id INTEGER PRIMARY KEY)",
        "CREATE TABLE child(id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)",
    ] {
        t.rt.execute(Statement::sql(sql)).await.unwrap();
    }
    let orphan =
        t.rt.execute(Statement::new(
            "INSERT INTO child VALUES (1, ?1)",
            [Value::Integer(99)],
        ))
        .await;
    let e = orphan.expect_err("the deferred foreign key fails the COMMIT");
    assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
    let journal = t.rt.config().journal_path();
    assert!(
        !logged(&journal)
            .iter()
            .any(|o| json(&o.op).contains("INTO child")),
        "the failed write's row is still in the log when its caller hears the error"
    );
    t.rt.execute(Statement::new(
        "INSERT INTO parent VALUES (?1)",
        [Value::Integer(7)],
    ))
    .await
    .unwrap();
    // Stopped: what the writer deferred is written.
    t.rt.shutdown().await.unwrap();

    let log = logged(&journal);
    let sql: Vec<String> = log
        .iter()
        .map(|o| match &o.op {
            Operation::Statement(s) => s.sql.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        sql.iter().all(|s| !s.contains("INTO child")),
        "the failed write is in the log: {sql:?}"
    );
    assert!(sql.last().unwrap().contains("INTO parent"), "{sql:?}");
    let seqs: Vec<i64> = log.iter().map(|o| o.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "numbers in order, none skipped"
    );
    let pending = op_log::pending(&open_direct(&journal)).unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_plus_the_log_after_its_position_is_the_live_table() {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
    })
    .await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = {
        let (rt, stop) = (t.rt.clone(), stop.clone());
        tokio::spawn(async move { eight_writers(&rt, 50, Some(stop)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = t.rt.backup("manual").await.expect("backup while writing");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, _) = writers.await.unwrap();
    assert!(info.is_verified(), "{:?}", info.verify_errors);
    let seq = info.op_log_seq.expect("the backup records its position");

    // The position is the one held in the copy, and the catalog has it.
    let dir = t.dir.path().join("data").join("backups");
    let copy = dir.join("replayed.db");
    std::fs::copy(dir.join(&info.name), &copy).unwrap();
    let conn = open_direct(&copy);
    assert_eq!(
        resilite_actors::writer::op_log_position(&conn).unwrap(),
        Some(seq)
    );
    assert_eq!(t.rt.backups().await.unwrap()[0].op_log_seq, Some(seq));

    // The log was trimmed up to the backup's position: what is left
    // starts right after it.
    let journal = t.rt.config().journal_path();
    let log = logged(&journal);
    assert!(log.iter().all(|o| o.seq > seq));
    assert_eq!(
        log.first().map(|o| o.seq),
        Some(seq + 1),
        "writes went on after the backup"
    );

    replay(&conn, &log);
    let live = rows(&open_direct(&t.db_path()));
    assert_eq!(rows(&conn), live);
    assert_eq!(
        live.len(),
        acked.iter().filter(|o| inserted(o).is_some()).count()
    );
    t.rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_log_off_nothing_is_logged() {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = false;
    })
    .await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    t.rt.execute(insert(Value::Integer(1))).await.unwrap();
    assert!(logged(&t.rt.config().journal_path()).is_empty());
    let info = t.rt.backup("manual").await.unwrap();
    assert_eq!(info.op_log_seq, None);
    t.rt.shutdown().await.unwrap();
}

/// A write of the operation-log property test.
#[derive(Debug, Clone)]
enum Write {
    Insert(i64),
    Batch(i64, i64),
    /// An `Operation::Once` with this key (a repeat is skipped, and logged
    /// as sent).
    Keyed(u8, i64),
    /// Add to every value.
    Update(i64),
    /// A value the CHECK refuses: fails, never logged.
    Failing(i64),
}

fn write() -> impl proptest::strategy::Strategy<Value = Write> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0i64..1_000_000).prop_map(Write::Insert),
        2 => (0i64..1_000_000, 0i64..1_000_000).prop_map(|(a, b)| Write::Batch(a, b)),
        1 => (0u8..4, 0i64..1_000_000).prop_map(|(k, v)| Write::Keyed(k, v)),
        1 => (-5i64..5).prop_map(Write::Update),
        1 => (0i64..1_000_000).prop_map(Write::Failing),
    ]
}

impl Write {
    fn op(&self) -> Operation {
        let int = |v: i64| insert(Value::Integer(v));
        match *self {
            Write::Insert(v) => Operation::Statement(int(v)),
            Write::Batch(a, b) => Operation::Batch(vec![int(a), int(b)]),
            Write::Keyed(k, v) => Operation::Once {
                key: format!("k{k}"),
                op: Box::new(Operation::Statement(int(v))),
            },
            Write::Update(d) => Operation::Statement(Statement::new(
                "UPDATE t SET v = v + ?1",
                [Value::Integer(d)],
            )),
            Write::Failing(v) => Operation::Statement(insert(Value::Text(format!("bad-{v}")))),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One case: `writes` one after the other, each timed; then the log.
async fn logged_with_times(writes: Vec<Write>) {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
    })
    .await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    // The startup health check's write probe is done.
    while t.rt.latest_health().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let journal = t.rt.config().journal_path();
    let start = logged(&journal).last().map_or(0, |o| o.seq);
    let mut acked = Vec::new();
    for w in &writes {
        let op = w.op();
        let before = now_ms();
        let result = t.rt.write(op.clone()).await;
        let after = now_ms();
        match (w, result) {
            (Write::Failing(_), Err(e)) => {
                assert_eq!(e.class, resilite::ErrorClass::Constraint, "{e}")
            }
            (Write::Failing(_), Ok(_)) => panic!("{w:?} was applied"),
            (_, Ok(_)) => acked.push((op, before, after)),
            (_, Err(e)) => panic!("{w:?}: {e}"),
        }
    }
    let log: Vec<LoggedOp> = logged(&journal)
        .into_iter()
        .filter(|o| o.seq > start)
        .collect();
    // Every acknowledged operation, in the order committed, as sent
    // (SQL, parameters, key), numbered without a gap; nothing else.
    let got: Vec<String> = log.iter().map(|o| json(&o.op)).collect();
    let want: Vec<String> = acked.iter().map(|(op, ..)| json(op)).collect();
    assert_eq!(got, want);
    for (i, o) in log.iter().enumerate() {
        assert_eq!(o.seq, start + 1 + i as i64, "{log:?}");
        // Timestamped between the call and its answer.
        let (_, before, after) = &acked[i];
        assert!(
            (*before..=*after).contains(&o.at_ms),
            "#{i} logged at {} outside [{before}, {after}]",
            o.at_ms
        );
    }
    assert!(op_log::gaps(&open_direct(&journal)).unwrap().is_empty());
    t.rt.shutdown().await.unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: common::cases(6),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Property 17: Comprehensive Operation Logging. For any sequence of
    /// writes (statements, batches, keyed operations, failing ones) with
    /// `backup.op_log` on, the operation log holds every acknowledged
    /// write once, in commit order, with its SQL and parameters as sent
    /// and a timestamp between the call and its answer, and no failed
    /// write (the part resilite has: execution times and reads are not
    /// logged).
    #[test]
    fn every_acknowledged_write_is_logged_with_its_sql_and_time(
        writes in proptest::collection::vec(write(), 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(logged_with_times(writes));
    }
}
