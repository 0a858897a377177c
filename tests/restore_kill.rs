//! SIGKILL during a restore or a recovery (the `resilite restore` and
//! `resilite recover` processes, killed at points spread over their run)
//! leaves the old file or the new one at the database path, never a mix
//! and never none; a run again finishes the job, and a start removes the
//! staged copy a killed run left behind. Iterations: `SOAK_KILL_POINTS`.

mod server;

use server::resilite;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `args`, SIGKILL it after `after` (if still running).
fn killed_after(args: &[&str], after: Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_resilite"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

fn sidecars(db: &Path) -> [PathBuf; 2] {
    let name = db.file_name().unwrap().to_string_lossy();
    [
        db.with_file_name(format!("{name}-wal")),
        db.with_file_name(format!("{name}-shm")),
    ]
}

/// Put the bytes of `pristine` at `db`, with no -wal or -shm.
fn reset(db: &Path, pristine: &[u8]) {
    for side in sidecars(db) {
        let _ = std::fs::remove_file(side);
    }
    std::fs::write(db, pristine).unwrap();
}

/// The rows of `t` if `db` is a sound database, `None` if SQLite cannot
/// read it.
fn sound_count(db: &Path) -> Option<i64> {
    let conn = rusqlite::Connection::open(db).ok()?;
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .ok()?;
    assert_eq!(ok, "ok", "{} is readable but not sound", db.display());
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .ok()
}

/// A database of `rows` rows of 1 KB (checkpointed, no -wal left).
fn make_db(db: &Path, rows: std::ops::Range<i64>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(v, pad);")
        .unwrap();
    conn.execute_batch("BEGIN").unwrap();
    for v in rows {
        conn.execute("INSERT INTO t VALUES (?1, randomblob(1000))", [v])
            .unwrap();
    }
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
}

/// Points from 30% of a full run to a little past its end (runs vary),
/// denser towards the end,
/// where the file is swapped.
fn kill_points(total: Duration) -> Vec<Duration> {
    let n = server::soak("KILL_POINTS", 8).max(2) as f64;
    (0..n as usize)
        .map(|i| {
            let left = (n - 1.0 - i as f64) / (n - 1.0);
            total.mul_f64(1.25 - 0.95 * left * left)
        })
        .collect()
}

const BACKUP_ROWS: i64 = 6000;
const CURRENT_ROWS: i64 = 7000;

/// Set up `app.db` with a verified backup of its first rows, and more rows
/// since; the bytes of the current file and the backup's path.
fn database_with_a_backup(dir: &Path) -> (PathBuf, Vec<u8>, PathBuf) {
    let db = dir.join("app.db");
    make_db(&db, 0..BACKUP_ROWS);
    let out = resilite(&["backup", "--db", db.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    make_db(&db, BACKUP_ROWS..CURRENT_ROWS);
    let backup = std::fs::read_dir(dir.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "db"))
        .unwrap();
    (db.clone(), std::fs::read(&db).unwrap(), backup)
}

#[test]
fn sigkill_during_restore_leaves_the_old_file_or_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (db, current, backup) = database_with_a_backup(dir.path());
    let args = [
        "restore",
        "--db",
        db.to_str().unwrap(),
        backup.to_str().unwrap(),
        "--yes",
    ];

    let started = Instant::now();
    let out = resilite(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = started.elapsed();
    assert_eq!(sound_count(&db), Some(BACKUP_ROWS));

    let mut seen = std::collections::BTreeMap::new();
    for at in kill_points(total) {
        reset(&db, &current);
        killed_after(&args, at);
        let rows = sound_count(&db).expect("a whole database at the path");
        assert!(
            rows == CURRENT_ROWS || rows == BACKUP_ROWS,
            "killed after {at:?}: {rows} rows, neither the old file nor the backup"
        );
        *seen.entry(rows).or_insert(0) += 1;
    }
    eprintln!("restore killed at points over {total:?}: rows seen (count of kills) {seen:?}");

    // A killed run may leave its staged copy; a start removes it.
    std::fs::write(resilite_actors::backup::staged_path(&db), b"partial copy").unwrap();
    let out = resilite(&["health", "--db", db.to_str().unwrap()]);
    assert!(out.status.code().is_some());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let runtime = resilite::Runtime::start(resilite::Config::for_database(&db))
            .await
            .unwrap();
        runtime.shutdown().await.unwrap();
    });
    assert!(!resilite_actors::backup::staged_path(&db).exists());
}

#[test]
fn sigkill_during_recovery_leaves_the_damaged_file_or_the_backup_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut damaged, _) = database_with_a_backup(dir.path());
    damaged[..100].fill(0);
    let args = ["recover", "--db", db.to_str().unwrap(), "--yes"];

    reset(&db, &damaged);
    let started = Instant::now();
    let out = resilite(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = started.elapsed();
    assert_eq!(sound_count(&db), Some(BACKUP_ROWS));

    for at in kill_points(total) {
        reset(&db, &damaged);
        killed_after(&args, at);
        match sound_count(&db) {
            None => assert_eq!(
                std::fs::read(&db).unwrap(),
                damaged,
                "killed after {at:?}: the damaged file, untouched"
            ),
            Some(rows) => assert_eq!(rows, BACKUP_ROWS, "killed after {at:?}"),
        }
        let out = resilite(&args);
        assert!(
            out.status.success(),
            "a rerun after a kill at {at:?} finishes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sound_count(&db), Some(BACKUP_ROWS));
    }
}
