//! Backups through the runtime: a backup taken while 8 tasks write holds a
//! consistent snapshot and verifies; files are private (0600); one changed
//! byte fails verification and is recorded as failed; retention keeps the
//! newest `keep_last`, each deletion recorded; and a property test of
//! the backup schedule.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use resilite::{ErrorClass, Statement};

use common::{insert, open_direct, start_with};

fn backup_dir(t: &common::TestRuntime) -> std::path::PathBuf {
    t.dir.path().join("data").join("backups")
}

/// A backup taken while 8 tasks write holds between the rows acknowledged
/// before and after it, verifies, opens alone with `integrity_check` ok,
/// and its file and sidecar are private (0600).
///
/// Property 12: Automatic Backup Creation. A backup is created
/// successfully (consistent and verified) under a write load; the
/// property test below takes them on the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_during_eight_writers_is_a_consistent_verified_snapshot() {
    let t = start_with(|_| {}).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (rt, acked, stop) = (t.rt.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                rt.execute(insert("t", w * 1_000_000 + i)).await.unwrap();
                acked.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = acked.load(Ordering::SeqCst);
    let info = t.rt.backup("manual").await.expect("backup while writing");
    let after = acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let rows = info.row_counts["t"];
    assert!(
        before <= rows && rows <= after,
        "snapshot holds {rows} rows; {before} were acknowledged before, {after} after"
    );
    assert!(info.is_verified(), "{:?}", info.verify_errors);
    assert!(info.name.ends_with("-manual.db"), "{}", info.name);
    let verification = t.rt.verify_backup(&info.name).await.unwrap();
    assert!(verification.passed, "{:?}", verification.errors);

    // The file stands alone: integrity ok with a plain connection.
    let path = backup_dir(&t).join(&info.name);
    let check: String = open_direct(&path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    for file in [
        path.clone(),
        backup_dir(&t).join(format!("{}.json", info.name)),
    ] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    assert_eq!(
        t.rt.backups().await.unwrap(),
        [info.clone()].map(|mut b| {
            b.verified_at_ms = verification.verified_at_ms.into();
            b
        })
    );
    t.rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn backup_with_one_changed_byte_fails_verification_and_is_recorded() {
    let t = start_with(|_| {}).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v)"))
        .await
        .unwrap();
    t.rt.execute(insert("t", 1)).await.unwrap();
    let info = t.rt.backup("pre-migration").await.unwrap();
    let path = backup_dir(&t).join(&info.name);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let v = t.rt.verify_backup(&info.name).await.unwrap();
    assert!(!v.passed);
    assert!(
        v.errors.iter().any(|e| e.contains("checksum mismatch")),
        "{:?}",
        v.errors
    );
    let listed = t.rt.backups().await.unwrap();
    assert_eq!(listed[0].verified, Some(false));
    assert!(!listed[0].verify_errors.is_empty());
    // Recorded in the journal's catalog.
    let journal = open_direct(&t.rt.config().journal_path());
    let verified: i64 = journal
        .query_row(
            "SELECT verified FROM backups WHERE name = ?1",
            [&info.name],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(verified, 0);

    // Names only: a path is refused, and so is an unknown name.
    for bad in ["../app.db", "x/y.db", ".."] {
        let err = t.rt.verify_backup(bad).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::BadInput, "{bad}");
    }
    let err = t.rt.verify_backup("nope.db").await.unwrap_err();
    assert!(err.message.contains("no backup named nope.db"), "{err}");
    let err = t.rt.backup("bad label").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::BadInput);
    t.rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_keeps_exactly_the_newest_keep_last() {
    let t = start_with(|c| c.backup.keep_last = 2).await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v)"))
        .await
        .unwrap();
    let mut names = Vec::new();
    for i in 0..4 {
        t.rt.execute(insert("t", i)).await.unwrap();
        names.push(t.rt.backup("manual").await.unwrap().name);
    }
    let mut files: Vec<String> = std::fs::read_dir(backup_dir(&t))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let expected = [
        names[2].clone(),
        format!("{}.json", names[2]),
        names[3].clone(),
        format!("{}.json", names[3]),
    ];
    assert_eq!(files, expected);
    let listed: Vec<String> =
        t.rt.backups()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
    assert_eq!(listed, names[2..]);
    let journal = open_direct(&t.rt.config().journal_path());
    let deleted: i64 = journal
        .query_row(
            "SELECT count(*) FROM backups WHERE deleted_at_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(deleted, 2);
    t.rt.shutdown().await.unwrap();
}

/// After a restart with a smaller `keep_last`, the schedule's retention
/// keeps the newest backup and the newest verified one, even when that
/// one is older than every other.
#[tokio::test]
async fn retention_on_tick_keeps_the_newest_verified_one_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    let backups = dir.path().join("data").join("backups");
    let mut config = resilite::Config::for_database(&db);
    config.backup.interval = Duration::ZERO;
    let rt = resilite::Runtime::start(config.clone()).await.unwrap();
    rt.execute(Statement::sql("CREATE TABLE t(v)"))
        .await
        .unwrap();
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(rt.backup("manual").await.unwrap().name);
    }
    // The two newest are damaged: only the oldest still verifies.
    for name in &names[1..] {
        let path = backups.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[200] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        assert!(!rt.verify_backup(name).await.unwrap().passed);
    }
    rt.shutdown().await.unwrap();
    drop(rt);

    config.backup.keep_last = 1;
    config.backup.verify_every = Duration::from_secs(1);
    let rt = resilite::Runtime::start(config).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let kept: Vec<String> = rt
            .backups()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        if kept.len() == 2 || std::time::Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kept, [names[0].clone(), names[2].clone()]);
    assert!(!backups.join(&names[1]).exists());
    assert!(backups.join(&names[0]).exists() && backups.join(&names[2]).exists());
    rt.shutdown().await.unwrap();
}

/// Daily and monthly generations: after a restart with `keep_last = 1`,
/// `keep_daily = 2`, `keep_monthly = 2`, the schedule's retention keeps the
/// newest backup, the newest of each of the last two days that have one
/// and the newest of each of the last two months; the rest is deleted,
/// file and sidecar, and each deletion recorded in the catalog.
#[tokio::test]
async fn retention_generations_keep_newest_of_each_day_and_month() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    let backups = dir.path().join("data").join("backups");
    let mut config = resilite::Config::for_database(&db);
    config.backup.interval = Duration::ZERO;
    let rt = resilite::Runtime::start(config.clone()).await.unwrap();
    rt.execute(Statement::sql("CREATE TABLE t(v)"))
        .await
        .unwrap();
    // When each backup is said to have been taken (UTC), oldest first.
    let dates = [
        ("2024-01-15T10:00", 1_705_312_800_000i64),
        ("2024-02-10T10:00", 1_707_559_200_000),
        ("2024-02-20T10:00", 1_708_423_200_000),
        ("2024-02-20T20:00", 1_708_459_200_000),
        ("2024-02-21T10:00", 1_708_509_600_000),
    ];
    let mut names = Vec::new();
    for _ in dates {
        names.push(rt.backup("manual").await.unwrap().name);
    }
    rt.shutdown().await.unwrap();
    drop(rt);
    let journal = open_direct(&config.journal_path());
    for (name, (_, at)) in names.iter().zip(dates) {
        journal
            .execute(
                "UPDATE backups SET created_at_ms = ?2 WHERE name = ?1",
                rusqlite::params![name, at],
            )
            .unwrap();
    }
    drop(journal);

    config.backup.keep_last = 1;
    config.backup.keep_daily = 2;
    config.backup.keep_monthly = 2;
    config.backup.verify_every = Duration::from_secs(1);
    let rt = resilite::Runtime::start(config.clone()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let kept: Vec<String> = rt
            .backups()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        if kept.len() == 3 || std::time::Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // 02-21: the newest (keep_last), day 1 and February; 02-20T20:00: day 2;
    // 01-15: January. Deleted: 02-20T10:00 (not the newest of its day)
    // and 02-10 (neither day nor month).
    assert_eq!(
        kept,
        [names[0].clone(), names[3].clone(), names[4].clone()],
        "{dates:?}"
    );
    for (i, name) in names.iter().enumerate() {
        let there = [0, 3, 4].contains(&i);
        assert_eq!(backups.join(name).exists(), there, "{name}");
        assert_eq!(
            backups.join(format!("{name}.json")).exists(),
            there,
            "{name}"
        );
    }
    let journal = open_direct(&config.journal_path());
    let mut deleted: Vec<String> = journal
        .prepare("SELECT name FROM backups WHERE deleted_at_ms IS NOT NULL ORDER BY created_at_ms")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    deleted.sort();
    let mut expected = vec![names[1].clone(), names[2].clone()];
    expected.sort();
    assert_eq!(deleted, expected);
    rt.shutdown().await.unwrap();
}

/// `backup.trial_restore = true`: each verification also restores the
/// backup on trial, opened read-write. A backup that reads well but
/// cannot be written (write version 3 in its header, recorded as written)
/// passes the standard checks and fails the trial restore, recorded among
/// its verification errors.
#[tokio::test]
async fn trial_restore_on_verify_records_a_backup_that_cannot_be_opened_read_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    let mut config = resilite::Config::for_database(&db);
    config.backup.interval = Duration::ZERO;
    config.backup.trial_restore = true;
    let rt = resilite::Runtime::start(config.clone()).await.unwrap();
    rt.execute(Statement::sql("CREATE TABLE t(v)"))
        .await
        .unwrap();
    rt.execute(insert("t", 1)).await.unwrap();
    let info = rt.backup("manual").await.unwrap();
    assert!(info.is_verified(), "{:?}", info.verify_errors);
    rt.shutdown().await.unwrap();
    drop(rt);

    let path = db.parent().unwrap().join("backups").join(&info.name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[18] = 3;
    std::fs::write(&path, bytes).unwrap();
    let sum = resilite_actors::backup::sha256(&path).unwrap();
    open_direct(&config.journal_path())
        .execute(
            "UPDATE backups SET sha256 = ?2 WHERE name = ?1",
            [&info.name, &sum],
        )
        .unwrap();

    let rt = resilite::Runtime::start(config.clone()).await.unwrap();
    let v = rt.verify_backup(&info.name).await.unwrap();
    assert!(!v.passed);
    assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
    assert!(v.errors[0].starts_with("trial restore: "), "{:?}", v.errors);
    let listed = rt.backups().await.unwrap();
    assert_eq!(listed[0].verified, Some(false));
    assert_eq!(listed[0].verify_errors, v.errors);
    rt.shutdown().await.unwrap();
    drop(rt);

    // Without the trial, the same file passes.
    config.backup.trial_restore = false;
    let rt = resilite::Runtime::start(config).await.unwrap();
    let v = rt.verify_backup(&info.name).await.unwrap();
    assert!(v.passed, "{:?}", v.errors);
    rt.shutdown().await.unwrap();
}

/// `backup.compress = "zstd"`: the backup is a private `.db.zst` with the
/// stored file's SHA-256 and the database's size recorded (the latter read
/// back from the sidecar after a restart); it verifies and restores online;
/// one changed byte fails verification and the restore is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_backup_verifies_restores_and_fails_when_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    let backups = dir.path().join("data").join("backups");
    let mut config = resilite::Config::for_database(&db);
    config.backup.interval = Duration::ZERO;
    config.backup.compress = resilite::Compress::Zstd;
    config.backup.compress_level = 9;
    let rt = resilite::Runtime::start(config.clone()).await.unwrap();
    rt.execute(Statement::sql("CREATE TABLE t(v)"))
        .await
        .unwrap();
    for i in 0..200 {
        rt.execute(insert("t", format!("row {i} {}", "x".repeat(200))))
            .await
            .unwrap();
    }
    let info = rt.backup("manual").await.unwrap();
    assert!(info.name.ends_with("-manual.db.zst"), "{}", info.name);
    assert!(info.is_verified(), "{:?}", info.verify_errors);
    let plain = info.uncompressed_size.expect("uncompressed size recorded");
    assert!(info.size * 4 < plain, "{} of {plain}", info.size);
    let path = backups.join(&info.name);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), info.size);
    assert_eq!(
        resilite_actors::backup::sha256(&path).unwrap(),
        info.sha256,
        "the SHA-256 of the stored file"
    );
    let mut files: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [info.name.clone(), info.sidecar_name()],
        "no temp file left"
    );
    for file in &files {
        let mode = std::fs::metadata(backups.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    assert!(rt.verify_backup(&info.name).await.unwrap().passed);

    rt.execute(insert("t", "after")).await.unwrap();
    let restored = rt.restore(&info.name).await.unwrap();
    assert_eq!(restored.restored, info.name);
    let n = rt
        .query(Statement::sql("SELECT count(*) FROM t"))
        .await
        .unwrap();
    assert_eq!(n.rows[0][0], resilite::Value::Integer(200));
    rt.shutdown().await.unwrap();
    drop(rt);

    // After a restart the catalog's row is completed from the sidecar.
    let rt = resilite::Runtime::start(config).await.unwrap();
    let listed = rt.backups().await.unwrap();
    let again = listed.iter().find(|b| b.name == info.name).unwrap();
    assert_eq!(again.uncompressed_size, Some(plain));

    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let v = rt.verify_backup(&info.name).await.unwrap();
    assert!(!v.passed);
    assert!(
        v.errors.iter().any(|e| e.contains("checksum mismatch")),
        "{:?}",
        v.errors
    );
    let err = rt.restore(&info.name).await.unwrap_err();
    assert!(err.to_string().contains("failed verification"), "{err}");
    rt.shutdown().await.unwrap();
}

/// A scheduled backup as the journal's catalog records it.
#[derive(Debug)]
struct Scheduled {
    name: String,
    created_at_ms: i64,
    verified: Option<bool>,
    deleted: bool,
    rows: i64,
}

fn scheduled(journal: &std::path::Path) -> Vec<Scheduled> {
    let conn = open_direct(journal);
    let mut stmt = conn
        .prepare(
            "SELECT name, created_at_ms, verified, deleted_at_ms IS NOT NULL, json_extract(row_counts, '$.t') \
             FROM backups WHERE label = 'scheduled' ORDER BY created_at_ms",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Scheduled {
            name: r.get(0)?,
            created_at_ms: r.get(1)?,
            verified: r.get::<_, Option<i64>>(2)?.map(|v| v != 0),
            deleted: r.get(3)?,
            rows: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
        })
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

/// One case: a runtime with `backup.interval` and `keep_last`, written to
/// all along, until two scheduled backups are recorded.
async fn backups_on_schedule(interval: Duration, keep_last: usize) {
    let t = start_with(|c| {
        c.backup.interval = interval;
        c.backup.keep_last = keep_last;
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (rt, stop) = (t.rt.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                rt.execute(insert("t", i)).await.unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let journal = t.rt.config().journal_path();
    // The schedule is checked every `interval`, and a backup is due when
    // the newest is at least `interval` old: one comes within two.
    let deadline = std::time::Instant::now() + interval * 5 + Duration::from_secs(5);
    let taken = loop {
        let taken = scheduled(&journal);
        if taken.len() >= 2 {
            break taken;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{interval:?}: {taken:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let ms = interval.as_millis() as i64;
    for pair in taken.windows(2) {
        let gap = pair[1].created_at_ms - pair[0].created_at_ms;
        assert!(gap >= ms, "{interval:?}: backups {gap} ms apart: {taken:?}");
        assert!(
            gap <= 2 * ms + 1000,
            "{interval:?}: backups {gap} ms apart: {taken:?}"
        );
        assert!(pair[0].rows <= pair[1].rows, "{taken:?}");
    }
    assert!(taken.iter().all(|b| b.verified == Some(true)), "{taken:?}");
    for b in t.rt.backups().await.unwrap() {
        assert_eq!(b.label, "scheduled");
        assert!(t.rt.verify_backup(&b.name).await.unwrap().passed, "{b:?}");
    }
    // Retention keeps the newest `keep_last`; each deletion is recorded.
    // Read once the schedule has stopped: another backup (and the deletion
    // it brings) may come while the checks above run.
    t.rt.shutdown().await.unwrap();
    let all = scheduled(&journal);
    let kept: Vec<_> = all.iter().filter(|b| !b.deleted).collect();
    assert!(!kept.is_empty() && kept.len() <= keep_last, "{all:?}");
    assert!(!all.last().unwrap().deleted, "the newest is kept: {all:?}");
    for b in &all {
        assert_eq!(backup_dir(&t).join(&b.name).exists(), !b.deleted, "{b:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // `backup.interval` is at least 1 s: each case takes 2 to 3 of them.
        cases: common::cases(2),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property 12: Automatic Backup Creation. For any `backup.interval`
    /// and `keep_last`, while the application writes, backups are taken by
    /// themselves (label `scheduled`): never more often than the interval,
    /// within two intervals of the last, each verified, each holding at
    /// least the rows of the one before; retention keeps the newest
    /// `keep_last`, records each deletion and removes its file.
    #[test]
    fn scheduled_backups_are_taken_and_verified_for_any_interval(
        interval_ms in 1000u64..1600,
        keep_last in 1usize..=2,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(backups_on_schedule(Duration::from_millis(interval_ms), keep_last));
    }
}
