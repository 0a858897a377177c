//! The HealthActor through the runtime's message API: reports with probes
//! and actor states, automatic checkpoint of a WAL grown under a held
//! snapshot, VACUUM when idle, history written and pruned, a corrupted
//! page reported CRITICAL with an IntegrityFailed event, and a property
//! test of the scheduled integrity checks finding any damaged page.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use proptest::prelude::*;
use resilite::{
    Action, CheckpointMode, HealthEvent, HealthStatus, Integrity, Maintenance, SlotState, Statement,
};

use common::{open_direct, start_with};

/// No background checks during a test beyond the one at startup.
fn quiet_schedule(c: &mut resilite::Config) {
    c.health.interval = Duration::from_secs(3600);
    for every in [
        &mut c.health.quick_check_every,
        &mut c.health.integrity_check_every,
        &mut c.health.foreign_key_check_every,
        &mut c.health.optimize_every,
    ] {
        *every = Duration::from_secs(3600);
    }
}

fn wal_len(db: &std::path::Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

fn journal_count(t: &common::TestRuntime, sql: &str) -> i64 {
    let journal = t.rt.config().journal_path();
    open_direct(&journal)
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// A fresh database is HEALTHY: integrity ok (a full `integrity_check`
/// on request), the write probe measured, every supervised actor running,
/// ready, and the startup check and this one in the health history.
///
/// Property 10: Health Monitoring Data Collection. Connection status
/// (actors, readiness), performance (probe latencies) and the figures are
/// collected and journaled. Property 11: Integrity Checking. The check at
/// startup is recorded, and `check_now` runs a full `integrity_check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_is_healthy_with_probes_actors_and_history() {
    let t = start_with(quiet_schedule).await;
    let report = t.rt.check_now().await.unwrap();
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.to_text());
    assert_eq!(report.integrity, Integrity::Ok);
    assert!(
        report.full_integrity_check,
        "check_now runs integrity_check"
    );
    let write_ms = report.figures.write_probe_ms.expect("write probe ran");
    assert!(
        write_ms > 0.0 && write_ms < 5000.0,
        "write probe {write_ms} ms"
    );
    let names: Vec<_> = report.actors.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "journal-writer",
            "writer",
            "retry-queue",
            "breakers",
            "backup",
            "health"
        ]
    );
    assert!(report
        .actors
        .iter()
        .all(|a| a.state == SlotState::Running && a.restarts == 0));
    assert_eq!(t.rt.health().await.unwrap().status, HealthStatus::Healthy);
    t.rt.ready().expect("ready");

    // The probe never touches the application's schema.
    let tables =
        t.rt.query(Statement::sql("SELECT count(*) FROM sqlite_master"))
            .await
            .unwrap();
    assert_eq!(tables.rows[0][0], resilite::Value::Integer(0));
    // Startup check + check_now, figures as columns.
    assert!(
        journal_count(
            &t,
            "SELECT count(*) FROM health_history WHERE status = 'HEALTHY' AND write_probe_ms > 0 AND page_size > 0"
        ) >= 2
    );
    t.rt.shutdown().await.unwrap();
}

/// A write that has to wait is seen: while another connection holds the
/// write lock for 1.5 s, the check's write probe waits for it, and the
/// report is a WARNING that gives the probe's time and points at lock
/// holders, long transactions or a slow disk. Without the holder the same
/// threshold raises nothing.
///
/// Property 10: Health Monitoring Data Collection (performance metrics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_probe_slowed_by_a_lock_holder_is_a_warning() {
    let t = start_with(|c| {
        quiet_schedule(c);
        c.health.slow_write = Duration::from_millis(500);
    })
    .await;
    let report = t.rt.check_now().await.unwrap();
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.to_text());

    let holder = open_direct(&t.db_path());
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        holder.execute_batch("COMMIT").unwrap();
    });
    let report = t.rt.check_now().await.unwrap();
    release.join().unwrap();
    let ms = report
        .figures
        .write_probe_ms
        .expect("the probe waited, then wrote");
    assert!(ms > 500.0, "write probe {ms} ms");
    assert_eq!(report.status, HealthStatus::Warning, "{}", report.to_text());
    assert!(report.rule.starts_with("write probe "), "{}", report.rule);
    let advice = &report
        .recommendation(Action::InvestigateSlowWrites)
        .unwrap()
        .reason;
    assert!(
        advice.contains("(> 500 ms)") && advice.contains("lock holders"),
        "{advice}"
    );
    t.rt.shutdown().await.unwrap();
}

/// The free space of the database's filesystem is measured and judged
/// against `health.min_disk_free_pct`: below it the report is CRITICAL and
/// says to free space before writes fail with SQLITE_FULL; above it the
/// disk raises nothing. (The other tests set the threshold to 0%, so the
/// disk they run on does not decide their reports.)
///
/// Property 10: Health Monitoring Data Collection (resource usage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_disk_below_the_threshold_is_critical_and_says_to_free_space() {
    let t = start_with(|c| {
        quiet_schedule(c);
        c.health.min_disk_free_pct = 100.0;
    })
    .await;
    let report = t.rt.check_now().await.unwrap();
    let free = report.figures.disk_free_pct;
    assert!(report.figures.disk_measured, "{}", report.to_text());
    assert!(report.figures.disk_free_bytes > 0 && free > 0.0 && free < 100.0);
    assert_eq!(
        report.status,
        HealthStatus::Critical,
        "{}",
        report.to_text()
    );
    assert!(report.rule.starts_with("disk free "), "{}", report.rule);
    let advice = &report.recommendation(Action::FreeDisk).unwrap().reason;
    assert!(
        advice.contains("threshold 100%") && advice.contains("SQLITE_FULL"),
        "{advice}"
    );
    t.rt.shutdown().await.unwrap();

    let t = start_with(|c| {
        quiet_schedule(c);
        c.health.min_disk_free_pct = free / 2.0;
    })
    .await;
    let report = t.rt.check_now().await.unwrap();
    assert_eq!(report.status, HealthStatus::Healthy, "{}", report.to_text());
    assert!(!report.recommends(Action::FreeDisk));
    t.rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_grown_under_a_held_snapshot_is_recommended_then_auto_checkpointed() {
    let t = start_with(|c| {
        quiet_schedule(c);
        c.health.wal_checkpoint_bytes = 64 * 1024;
        c.health.wal_urgent_bytes = 512 * 1024 * 1024;
    })
    .await;
    let db = t.db_path();
    t.rt.execute(Statement::sql("CREATE TABLE t(v BLOB)"))
        .await
        .unwrap();
    // A reader holding a snapshot keeps any checkpoint from resetting the WAL.
    let reader = open_direct(&db);
    reader.execute_batch("BEGIN").unwrap();
    reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        .unwrap();
    for _ in 0..300 {
        t.rt.execute(Statement::sql("INSERT INTO t VALUES (randomblob(8000))"))
            .await
            .unwrap();
    }
    let grown = wal_len(&db);
    assert!(grown > 2 * 1024 * 1024, "WAL grew to {grown} bytes");

    // Writes came in since the last check: the WAL is the writer's to
    // checkpoint beside them, and the check only recommends it.
    let writing = t.rt.check_now().await.unwrap();
    assert!(
        writing.recommends(Action::Checkpoint),
        "{}",
        writing.to_text()
    );
    assert!(
        writing.maintenance.is_empty(),
        "no checkpoint sent to the writer while it writes: {}",
        writing.to_text()
    );

    let held = t.rt.check_now().await.unwrap();
    assert!(held.recommends(Action::Checkpoint), "{}", held.to_text());
    assert!(held.figures.wal_bytes >= grown);
    // The automatic checkpoint ran PASSIVE, could not finish, and did not
    // try TRUNCATE against the reader.
    let tasks: Vec<_> = held.maintenance.iter().map(|m| m.task).collect();
    assert_eq!(
        tasks,
        [Maintenance::Checkpoint(CheckpointMode::Passive)],
        "{}",
        held.to_text()
    );
    assert!(wal_len(&db) >= grown, "nothing could be truncated yet");

    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let released = t.rt.check_now().await.unwrap();
    let truncate = released
        .maintenance
        .iter()
        .find(|m| m.task == Maintenance::Checkpoint(CheckpointMode::Truncate))
        .unwrap_or_else(|| panic!("no truncate: {}", released.to_text()));
    assert!(truncate.bytes_reclaimed() >= grown / 2, "{truncate:?}");
    assert_eq!(wal_len(&db), 0, "the WAL file was truncated");
    assert!(
        journal_count(
            &t,
            "SELECT count(*) FROM maintenance_runs WHERE task = 'checkpoint' AND mode = 'truncate' AND trigger = 'auto' AND bytes_reclaimed > 0"
        ) == 1
    );
    let rows =
        t.rt.query(Statement::sql("SELECT count(*) FROM t"))
            .await
            .unwrap();
    assert_eq!(rows.rows[0][0], resilite::Value::Integer(300));
    t.rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_utilization_is_vacuumed_when_the_writer_is_idle() {
    let t = start_with(|c| {
        quiet_schedule(c);
        c.health.vacuum_idle = Duration::from_millis(300);
    })
    .await;
    let db = t.db_path();
    t.rt.execute(Statement::sql(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
    ))
    .await
    .unwrap();
    t.rt.execute(Statement::sql(
        "INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) \
         SELECT randomblob(1000) FROM n",
    ))
    .await
    .unwrap();
    t.rt.execute(Statement::sql("DELETE FROM t WHERE id % 10 != 0"))
        .await
        .unwrap();
    t.rt.maintain(Maintenance::Checkpoint(CheckpointMode::Truncate))
        .await
        .unwrap();
    let before = std::fs::metadata(&db).unwrap().len();

    // Writes came in since the last check: not idle yet.
    let writing = t.rt.check_now().await.unwrap();
    assert!(writing.recommends(Action::Vacuum), "{}", writing.to_text());
    assert!(writing.maintenance.is_empty(), "{}", writing.to_text());
    // Idle for longer than `vacuum_idle` (the checks' own write probes do
    // not count as writes).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = t.rt.check_now().await.unwrap();
    assert!(report.recommends(Action::Vacuum), "{}", report.to_text());
    let vacuum = report
        .maintenance
        .iter()
        .find(|m| m.task == Maintenance::Vacuum)
        .unwrap_or_else(|| panic!("no vacuum: {}", report.to_text()));
    let after = std::fs::metadata(&db).unwrap().len();
    assert!(after * 4 < before, "file {before} -> {after} bytes");
    assert!(vacuum.bytes_reclaimed() * 4 > before * 3, "{vacuum:?}");
    let again = t.rt.check_now().await.unwrap();
    assert!(!again.recommends(Action::Vacuum), "{}", again.to_text());
    let rows =
        t.rt.query(Statement::sql("SELECT count(*) FROM t"))
            .await
            .unwrap();
    assert_eq!(rows.rows[0][0], resilite::Value::Integer(400));
    t.rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_history_is_written_and_pruned_by_age() {
    let t = start_with(|c| {
        quiet_schedule(c);
        c.health.history_retention = Duration::from_secs(30 * 86_400);
    })
    .await;
    t.rt.check_now().await.unwrap();
    let journal = open_direct(&t.rt.config().journal_path());
    let day_ms: i64 = 86_400_000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (age_days, status) in [(40, "OLD"), (20, "KEPT")] {
        journal
            .execute(
                "INSERT INTO health_history (at_ms, at, status, rule, integrity, full_integrity_check, \
                 db_bytes, wal_bytes, shm_bytes, page_count, page_size, freelist_count, utilization_pct, \
                 disk_free_bytes, disk_free_pct, read_probe_ms, foreign_key_violations, actors_failed, \
                 actor_restarts, recommendations) \
                 VALUES (?1, 'then', ?2, '', 'ok', 0, 0, 0, 0, 0, 0, 0, 100, 0, 50, 0, 0, 0, 0, '')",
                rusqlite::params![now_ms - age_days * day_ms, status],
            )
            .unwrap();
    }
    journal
        .execute(
            "INSERT INTO maintenance_runs (at_ms, at, task, trigger, outcome) VALUES (?1, 'then', 'optimize', 'scheduled', 'done')",
            [now_ms - 40 * day_ms],
        )
        .unwrap();
    drop(journal);

    t.rt.check_now().await.unwrap();
    assert_eq!(
        journal_count(
            &t,
            "SELECT count(*) FROM health_history WHERE status = 'OLD'"
        ),
        0,
        "a row older than the retention is pruned"
    );
    assert_eq!(
        journal_count(
            &t,
            "SELECT count(*) FROM health_history WHERE status = 'KEPT'"
        ),
        1
    );
    assert_eq!(
        journal_count(
            &t,
            "SELECT count(*) FROM maintenance_runs WHERE at = 'then'"
        ),
        0
    );
    assert!(
        journal_count(
            &t,
            "SELECT count(*) FROM health_history WHERE status = 'HEALTHY' AND at LIKE '20%T%Z'"
        ) >= 3,
        "startup and both check_now runs are recorded with their time"
    );
    t.rt.shutdown().await.unwrap();
}

/// A b-tree page overwritten on disk: the integrity check reports the
/// page, health is CRITICAL with a restore recommendation, an
/// `IntegrityFailed` event is emitted and the result journaled.
///
/// Property 11: Integrity Checking. A requested check finds real damage
/// (the property test below relies on the schedule alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_page_is_critical_and_emits_integrity_failed() {
    let t = start_with(quiet_schedule).await;
    let db = t.db_path();
    t.rt.execute(Statement::sql(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
    ))
    .await
    .unwrap();
    for chunk in 0..20 {
        let values: Vec<String> = (0..100)
            .map(|i| format!("({}, printf('%.200c', 'x'))", chunk * 100 + i))
            .collect();
        t.rt.execute(Statement::sql(format!(
            "INSERT INTO t(id, v) VALUES {}",
            values.join(",")
        )))
        .await
        .unwrap();
    }
    t.rt.maintain(Maintenance::Checkpoint(CheckpointMode::Truncate))
        .await
        .unwrap();
    let mut events = t.rt.health_events();
    // Overwrite bytes inside a b-tree page of the table (page 6 of 4 KiB).
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(4096 * 5 + 100)).unwrap();
    f.write_all(&[0xff; 200]).unwrap();
    drop(f);

    let report = t.rt.check_now().await.unwrap();
    assert_eq!(
        report.status,
        HealthStatus::Critical,
        "{}",
        report.to_text()
    );
    assert!(
        report.rule.contains("integrity check failed"),
        "{}",
        report.rule
    );
    assert!(report.recommends(Action::Restore));
    let mut integrity_failed = false;
    while let Ok(event) = events.try_recv() {
        if let HealthEvent::IntegrityFailed { detail } = event {
            assert!(detail.contains("page"), "{detail}");
            integrity_failed = true;
        }
    }
    assert!(integrity_failed, "an IntegrityFailed event was emitted");
    assert_eq!(
        journal_count(
            &t,
            "SELECT count(*) FROM health_history WHERE status = 'CRITICAL' AND integrity != 'ok'"
        ),
        1
    );
}

/// The report carries the backup figures from the journal's catalog; the
/// newest verified backup older than `health.backup_max_age` is a
/// WARNING with a take_backup recommendation, and no verified backup at
/// all (backups failing) is CRITICAL once `backup_missing_after` passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_age_and_missing_backups_are_judged() {
    let t = start_with(|c| {
        quiet_schedule(c);
        c.health.backup_max_age = Duration::from_millis(1);
    })
    .await;
    let taken = t.rt.backup("manual").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = t.rt.check_now().await.unwrap();
    let figures = report.backups.clone().expect("backup figures");
    assert_eq!(
        figures.newest_verified.as_deref(),
        Some(taken.name.as_str())
    );
    assert!(figures.newest_verified_age_s.unwrap() > 0.0);
    assert_eq!(figures.last_size, Some(taken.size));
    assert_eq!(
        report.status,
        resilite::HealthStatus::Warning,
        "{}",
        report.rule
    );
    assert!(report.recommends(resilite::Action::TakeBackup));

    // Backups cannot be written (the directory is a file): none verified.
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"x").unwrap();
    let t = start_with(|c| {
        quiet_schedule(c);
        c.backup.dir = Some(blocked.clone());
        c.health.backup_missing_after = Duration::ZERO;
    })
    .await;
    let report = t.rt.check_now().await.unwrap();
    assert_eq!(report.backups.as_ref().unwrap().newest_verified, None);
    assert_eq!(
        report.status,
        resilite::HealthStatus::Critical,
        "{}",
        report.rule
    );
    assert!(
        report.rule.contains("no verified backup"),
        "{}",
        report.rule
    );
    assert!(report.recommends(resilite::Action::TakeBackup));
}

/// When the file is damaged, for the scheduled-check property test.
#[derive(Debug, Clone, Copy)]
enum When {
    /// While no runtime has it open: the check at startup must find it.
    BeforeStart,
    /// While the runtime runs, checks every 100 ms: the scheduled
    /// `integrity_check` (full) or `quick_check` must find it.
    Running { full: bool },
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        Just(When::BeforeStart),
        any::<bool>().prop_map(|full| When::Running { full }),
    ]
}

/// Overwrite the first 64 bytes of one page in use past page 1 (page 1
/// holds the header and the schema), chosen by `n`.
fn damage_page(db: &std::path::Path, n: usize) {
    let mut bytes = std::fs::read(db).unwrap();
    let page_size = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    let pages = bytes.len() / page_size;
    assert!(pages > 2, "{pages} pages");
    let page = 1 + n % (pages - 1);
    bytes[page * page_size..page * page_size + 64].fill(0xFF);
    std::fs::write(db, bytes).unwrap();
}

const FILL: &str = "INSERT INTO t(v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) SELECT printf('%.200c', 'x') FROM c";

/// One case: `rows` rows, page `n` damaged `when`; the checks the runtime
/// runs by itself (never `check_now`) report it.
async fn found_by_schedule(rows: i64, n: usize, when: When) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_in(&dir);
    config.backup.auto_recover = false;
    config.backup.interval = Duration::ZERO;
    let db = config.database.path.clone();
    let table = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)";
    let since_ms;
    let rt = match when {
        When::BeforeStart => {
            std::fs::create_dir_all(db.parent().unwrap()).unwrap();
            let conn = open_direct(&db);
            conn.execute_batch(table).unwrap();
            conn.execute(FILL, [rows]).unwrap();
            drop(conn);
            damage_page(&db, n);
            since_ms = 0;
            resilite::Runtime::start(config).await.unwrap()
        }
        When::Running { full } => {
            config.health.interval = Duration::from_millis(100);
            config.health.quick_check_every = Duration::from_millis(100);
            if full {
                config.health.integrity_check_every = Duration::from_millis(100);
            }
            let rt = resilite::Runtime::start(config).await.unwrap();
            rt.execute(Statement::sql(table)).await.unwrap();
            rt.execute(Statement::new(FILL, [resilite::Value::Integer(rows)]))
                .await
                .unwrap();
            rt.maintain(Maintenance::Checkpoint(CheckpointMode::Truncate))
                .await
                .unwrap();
            since_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            damage_page(&db, n);
            rt
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let report = loop {
        if let Some(r) = rt.latest_health() {
            if r.checked_at_ms >= since_ms && r.integrity.problems().is_some() {
                break r;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{when:?}: no scheduled check found the damage: {:?}",
            rt.latest_health().map(|r| r.to_text())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        report.status,
        HealthStatus::Critical,
        "{}",
        report.to_text()
    );
    if report.rule.contains("integrity check failed") {
        // The check that ran is the one its schedule made due.
        let full = !matches!(when, When::Running { full: false });
        assert_eq!(report.full_integrity_check, full, "{when:?}");
    } else {
        // Damage to a page the check itself needs stops it with SQLite's
        // corruption error, reported as such.
        assert!(
            report.rule.contains("could not be inspected") && report.rule.contains("malformed"),
            "{when:?}: {}",
            report.rule
        );
    }
    rt.shutdown().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(6),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property 11: Integrity Checking. For any table size and any damaged
    /// page, whether the file was damaged before the runtime started or
    /// while it runs, the integrity checks the runtime schedules by itself
    /// (the full `integrity_check` at startup and every
    /// `integrity_check_every`, `quick_check` every `quick_check_every`)
    /// find it: the latest report is CRITICAL with what the check said (or
    /// SQLite's corruption error when the check could not go on), and no
    /// check was asked for.
    #[test]
    fn scheduled_integrity_checks_find_any_damaged_page(
        rows in 100i64..600,
        n in 0usize..1000,
        when in when(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(found_by_schedule(rows, n, when));
    }
}
