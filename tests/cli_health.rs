//! `resilite health`, `vacuum` and `checkpoint` on database files, as an
//! operator runs them: exit codes, recommendations, and a corrupted page
//! reported CRITICAL with the failing detail.

mod server;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Output};

use server::resilite;

/// `resilite health --db <db> <extra>`. Like every `resilite` the tests
/// start, it does not judge the free space or the speed of the disk the
/// tests run on (`server::HOST_DISK_NOT_JUDGED`, through the environment);
/// those rules have their own tests in `tests/health.rs`.
fn health(db: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["health", "--db", db.to_str().unwrap()];
    args.extend(extra);
    resilite(&args)
}

fn health_json(db: &Path, full: bool) -> (i32, serde_json::Value) {
    let out = health(
        db,
        if full {
            &["--json", "--full"]
        } else {
            &["--json"]
        },
    );
    let json = serde_json::from_slice(&out.stdout).expect("health prints JSON");
    (out.status.code().unwrap(), json)
}

/// A new database with one table, in a temp dir of its own.
fn fresh_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(v)")
        .unwrap();
    (dir, db)
}

/// A database of 20,000 rows of 200 bytes, most of them then deleted.
fn mostly_deleted(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO t(v) SELECT printf('%.200c', 'x') FROM n;
         DELETE FROM t WHERE id % 10 != 0;",
    )
    .unwrap();
}

#[test]
fn health_fresh_db_is_healthy_and_missing_file_is_unknown() {
    let (dir, db) = fresh_db();
    let (code, report) = health_json(&db, true);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["status"], "HEALTHY");
    assert_eq!(report["integrity"], "ok");
    let (code, report) = health_json(&dir.path().join("missing.db"), false);
    assert_eq!(code, 3);
    assert_eq!(report["status"], "UNKNOWN");
}

#[test]
fn health_recommends_vacuum_and_vacuum_reclaims_space() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sparse.db");
    mostly_deleted(&db);
    let (_, report) = health_json(&db, false);
    let actions: Vec<_> = report["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert!(actions.contains(&"vacuum".to_string()), "{report}");
    let before = std::fs::metadata(&db).unwrap().len();
    let out = resilite(&["vacuum", "--db", db.to_str().unwrap()]);
    assert!(out.status.success());
    let after = std::fs::metadata(&db).unwrap().len();
    assert!(
        after * 4 < before,
        "vacuum reclaimed space: {before} -> {after}"
    );
    let (code, report) = health_json(&db, false);
    assert_eq!(code, 0, "{report}");
    assert!(
        report["recommendations"].as_array().unwrap().is_empty(),
        "{report}"
    );
}

/// `resilite health` on a file with a corrupted page: CRITICAL, the
/// failing detail, exit 2.
///
/// Property 11: Integrity Checking. `resilite health` runs the integrity
/// check on a file from the command line and reports the damage.
#[test]
fn health_corrupted_page_is_critical_with_detail_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("corrupt.db");
    mostly_deleted(&db);
    assert!(resilite(&["vacuum", "--db", db.to_str().unwrap()])
        .status
        .success());
    // Overwrite bytes inside a b-tree page of the table (page 6 of 4 KiB).
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(4096 * 5 + 100)).unwrap();
    f.write_all(&[0xff; 200]).unwrap();
    drop(f);
    let (code, report) = health_json(&db, true);
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["status"], "CRITICAL");
    assert!(
        report["rule"]
            .as_str()
            .unwrap()
            .contains("integrity check failed"),
        "{report}"
    );
    assert!(
        report["integrity"].as_str().unwrap().contains("page"),
        "{report}"
    );
    let out = health(&db, &["--full"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CRITICAL"));
}

#[test]
fn checkpoint_truncates_the_wal_and_refuses_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wal.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(v); INSERT INTO t VALUES (randomblob(100000));")
        .unwrap();
    let wal = dir.path().join("wal.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 100_000);
    let out = resilite(&[
        "checkpoint",
        "--db",
        db.to_str().unwrap(),
        "--mode",
        "truncate",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    drop(conn);
    let out = resilite(&[
        "checkpoint",
        "--db",
        dir.path().join("nope.db").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(
        !dir.path().join("nope.db").exists(),
        "a missing file is never created"
    );
}

/// Without `--config`, `resilite health` takes the built-in thresholds
/// with the environment's `RESILITE_HEALTH_<KEY>` overrides, as a config
/// file's would be: a disk threshold of 100% makes a fresh database
/// CRITICAL; a value that is not a number is refused naming the variable;
/// another section's variable (a server's setting) is not this command's
/// concern.
#[test]
fn health_takes_threshold_overrides_from_the_environment() {
    let (_dir, db) = fresh_db();
    let with_env = |vars: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_resilite"))
            .args(["health", "--db", db.to_str().unwrap(), "--json"])
            .envs(vars.iter().copied())
            .output()
            .expect("run resilite")
    };
    let out = with_env(&[
        ("RESILITE_HEALTH_MIN_DISK_FREE_PCT", "100"),
        ("RESILITE_HTTP_LISTEN", "0.0.0.0:80"),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report["rule"].as_str().unwrap().starts_with("disk free "),
        "{report}"
    );
    let out = with_env(&[("RESILITE_HEALTH_MIN_DISK_FREE_PCT", "lots")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RESILITE_HEALTH_MIN_DISK_FREE_PCT"), "{err}");
}
