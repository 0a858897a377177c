//! Automatic recovery on real files: a database damaged on disk is moved
//! aside and replaced by the newest verified backup, the operation log
//! replayed on top; with no verified backup nothing is touched and writes
//! stay paused. Every attempt is recorded in the journal.

mod common;

use std::time::Duration;

use resilite::{CheckpointMode, HealthStatus, Maintenance, Statement, Value};
use resilite_actors::journal::recoveries;

use common::{open_direct, start_with};

const SCHEMA: &str =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, pad TEXT NOT NULL)";

fn insert(v: i64) -> Statement {
    Statement::new(
        "INSERT INTO t(v, pad) VALUES (?1, ?2)",
        [Value::Integer(v), Value::Text("x".repeat(300))],
    )
}

/// Checkpoint the WAL into the file, then overwrite the start of the
/// table's root page so that the file itself is damaged.
async fn corrupt(t: &common::TestRuntime) {
    t.rt.maintain(Maintenance::Checkpoint(CheckpointMode::Truncate))
        .await
        .unwrap();
    let db = t.db_path();
    let (root, page_size): (i64, i64) = {
        let c = open_direct(&db);
        let root = c
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 't'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let size = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (root, size)
    };
    let mut bytes = std::fs::read(&db).unwrap();
    let at = ((root - 1) * page_size) as usize;
    bytes[at..at + 64].iter_mut().for_each(|b| *b = 0xFF);
    std::fs::write(&db, &bytes).unwrap();
    let ok: std::result::Result<String, _> =
        open_direct(&db).query_row("PRAGMA integrity_check", [], |r| r.get(0));
    assert!(
        !matches!(ok.as_deref(), Ok("ok")),
        "the file must be damaged: {ok:?}"
    );
}

fn damaged_files(t: &common::TestRuntime) -> Vec<String> {
    std::fs::read_dir(t.db_path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("app.db.damaged-"))
        .collect()
}

fn recorded(t: &common::TestRuntime) -> Vec<recoveries::RecoveryRecord> {
    recoveries::list(&open_direct(&t.rt.config().journal_path())).unwrap()
}

/// `rt.recover()` on a damaged file: the backup is put in place, the 150
/// writes after it are replayed from the operation log, the damaged file
/// is kept, writes resume, and the attempt is journaled; a second
/// recovery from the same backup applies each operation once.
///
/// Property 13: Corruption Recovery. A damaged database is restored from
/// the newest verified backup with no acknowledged write lost; the damaged
/// file is kept and the attempt recorded with an explanation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_restores_the_backup_and_replays_every_acknowledged_write() {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
    })
    .await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    for v in 0..100 {
        t.rt.execute(insert(v)).await.unwrap();
    }
    let backup = t.rt.backup("manual").await.unwrap();
    assert!(backup.op_log_seq.is_some());
    for v in 100..250 {
        t.rt.execute(insert(v)).await.unwrap();
    }
    corrupt(&t).await;

    let done = t.rt.recover().await.unwrap();
    assert_eq!(done.restored, backup.name);
    assert_eq!(done.replay_skipped, None, "{done:?}");
    assert_eq!(done.replayed, 150);

    let result =
        t.rt.query(Statement::sql("SELECT v FROM t ORDER BY v"))
            .await
            .unwrap();
    let values: Vec<i64> = result
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::Integer(v) => v,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        values,
        (0..250).collect::<Vec<_>>(),
        "every acknowledged row, once"
    );
    let check =
        t.rt.query(Statement::sql("PRAGMA integrity_check"))
            .await
            .unwrap();
    assert_eq!(check.rows, vec![vec![Value::Text("ok".into())]]);
    assert_eq!(damaged_files(&t).len(), 1, "the damaged file is kept");
    assert!(done.quarantined.is_file());
    // Writes resumed.
    t.rt.execute(insert(250)).await.unwrap();
    let log = recorded(&t);
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].trigger.as_str(), log[0].outcome.as_str()),
        ("manual", "recovered")
    );
    assert!(
        log[0].explanation.contains("was restored in its place"),
        "{}",
        log[0].explanation
    );
    assert!(log[0].steps.len() >= 6, "{:?}", log[0].steps);

    // Damaged again before any newer backup: the second recovery starts
    // from the same backup and replays each logged operation once (the
    // first replay did not log them again).
    corrupt(&t).await;
    let again = t.rt.recover().await.unwrap();
    assert_eq!(again.restored, backup.name);
    assert_eq!(again.replayed, 151, "{again:?}");
    let count =
        t.rt.query(Statement::sql("SELECT count(*), count(DISTINCT v) FROM t"))
            .await
            .unwrap();
    assert_eq!(
        count.rows,
        vec![vec![Value::Integer(251), Value::Integer(251)]]
    );
}

/// With no verified backup, recovery leaves the damaged file in place,
/// keeps writes paused, says what to do, and records `no-backup`.
///
/// Property 13: Corruption Recovery. With nothing to restore from, the
/// error offers what to do instead and the file is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_verified_backup_nothing_is_touched_and_writes_stay_paused() {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
    })
    .await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    for v in 0..100 {
        t.rt.execute(insert(v)).await.unwrap();
    }
    corrupt(&t).await;
    let before = std::fs::read(t.db_path()).unwrap();

    let err = t.rt.recover().await.unwrap_err();
    assert!(err.message.contains("no verified backup"), "{err}");
    assert!(err.detail.contains("left in place"), "{err}");
    assert_eq!(
        std::fs::read(t.db_path()).unwrap(),
        before,
        "the file is untouched"
    );
    assert!(damaged_files(&t).is_empty());
    assert!(
        t.rt.execute(insert(1000)).await.is_err(),
        "writes stay paused"
    );
    let log = recorded(&t);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, "no-backup");
    assert!(
        log[0].explanation.contains("What to do"),
        "{}",
        log[0].explanation
    );
}

/// How the file is damaged in the automatic-recovery tests.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The table's root page overwritten (`corrupt`).
    TablePage,
    /// The 100-byte header zeroed: no longer an SQLite file.
    Header,
    /// The file cut to half its length.
    Truncated,
}

async fn damage(t: &common::TestRuntime, how: Damage) {
    match how {
        Damage::TablePage => corrupt(t).await,
        Damage::Header | Damage::Truncated => {
            t.rt.maintain(Maintenance::Checkpoint(CheckpointMode::Truncate))
                .await
                .unwrap();
            let mut bytes = std::fs::read(t.db_path()).unwrap();
            match how {
                Damage::Header => bytes[..100].fill(0),
                _ => bytes.truncate(bytes.len() / 2),
            }
            std::fs::write(t.db_path(), &bytes).unwrap();
        }
    }
}

/// Wait for the recovery the damage started by itself to be recorded.
async fn recorded_within(
    t: &common::TestRuntime,
    limit: Duration,
) -> Vec<recoveries::RecoveryRecord> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let log = recorded(t);
        if !log.is_empty() || std::time::Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn values(t: &common::TestRuntime) -> Vec<i64> {
    let result =
        t.rt.query(Statement::sql("SELECT v FROM t ORDER BY v"))
            .await
            .unwrap();
    result
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::Integer(v) => v,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

/// Start with the operation log on, 100 rows, a verified backup, then
/// 150 more acknowledged rows.
async fn written_after_a_backup() -> common::TestRuntime {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
    })
    .await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    for v in 0..100 {
        t.rt.execute(insert(v)).await.unwrap();
    }
    t.rt.backup("manual").await.unwrap();
    for v in 100..250 {
        t.rt.execute(insert(v)).await.unwrap();
    }
    t
}

/// A query that meets SQLITE_CORRUPT makes health CRITICAL at once (not at
/// the next scheduled check) and starts a recovery by itself; afterwards
/// every acknowledged row is there once and health is HEALTHY again.
///
/// Property 13: Corruption Recovery. Corruption detected by an ordinary
/// query is restored from the backup automatically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_met_by_a_query_makes_health_critical_at_once_and_recovers_by_itself() {
    let t = written_after_a_backup().await;
    corrupt(&t).await;
    // The read pool has not read `t` yet: the query reads the damaged page.
    let err =
        t.rt.query(Statement::sql("SELECT sum(v) FROM t"))
            .await
            .unwrap_err();
    assert_eq!(err.class, resilite::ErrorClass::Corruption, "{err}");
    // CRITICAL at once: published before any check reads the file again.
    let critical = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(r) = t.rt.latest_health() {
                if r.status == HealthStatus::Critical && r.integrity.problems().is_some() {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("health turns CRITICAL within seconds");
    assert!(
        critical.recommends(resilite::Action::Restore),
        "{}",
        critical.rule
    );

    let log = recorded_within(&t, Duration::from_secs(30)).await;
    assert_eq!(log.len(), 1, "one recovery: {log:?}");
    assert!(
        log[0]
            .trigger
            .starts_with("automatic: a query met a damaged database"),
        "{}",
        log[0].trigger
    );
    assert_eq!(log[0].outcome, "recovered", "{}", log[0].explanation);
    assert_eq!(values(&t).await, (0..250).collect::<Vec<_>>());
    let report = t.rt.health().await.unwrap();
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.rule);
    t.rt.execute(insert(250)).await.unwrap();
}

/// Damage found by health's own checks (a page overwritten, the header
/// zeroed, the file truncated) is recovered by itself, every acknowledged
/// write present afterwards.
///
/// Property 13: Corruption Recovery. Corruption detected by the health
/// checks (three kinds of damage) is restored automatically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_found_by_the_health_check_is_recovered_by_itself() {
    for how in [Damage::TablePage, Damage::Header, Damage::Truncated] {
        let t = written_after_a_backup().await;
        damage(&t, how).await;
        let report = t.rt.check_now().await.unwrap();
        assert_eq!(report.status, HealthStatus::Critical, "{how:?}");
        let log = recorded_within(&t, Duration::from_secs(30)).await;
        assert_eq!(log.len(), 1, "{how:?}: {log:?}");
        assert_eq!(
            log[0].outcome, "recovered",
            "{how:?}: {}",
            log[0].explanation
        );
        assert_eq!(values(&t).await, (0..250).collect::<Vec<_>>(), "{how:?}");
    }
}

/// With no verified backup, the automatic recovery is tried once: later
/// reports of the same damage do not start it again, and the file stays
/// as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_backup_automatic_recovery_is_tried_once() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    for v in 0..100 {
        t.rt.execute(insert(v)).await.unwrap();
    }
    corrupt(&t).await;
    let before = std::fs::read(t.db_path()).unwrap();
    t.rt.check_now().await.unwrap();
    let log = recorded_within(&t, Duration::from_secs(30)).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, "no-backup");
    t.rt.check_now().await.unwrap();
    t.rt.check_now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorded(&t).len(), 1, "not tried again");
    assert_eq!(std::fs::read(t.db_path()).unwrap(), before);
}

/// A recovery asked for on a sound file with no backup to restore changes
/// nothing and does not stop writes: the error says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_of_a_sound_file_without_a_backup_leaves_writes_running() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    t.rt.execute(Statement::sql(SCHEMA)).await.unwrap();
    t.rt.execute(insert(1)).await.unwrap();
    let err = t.rt.recover().await.unwrap_err();
    assert!(err.message.contains("no verified backup"), "{err}");
    assert!(err.detail.contains("writes go on"), "{err}");
    t.rt.execute(insert(2)).await.expect("writes go on");
    assert_eq!(values(&t).await, [1, 2]);
    assert_eq!(recorded(&t)[0].outcome, "no-backup");
}
