//! Retention and archives through the `resilite archive` verbs, on real
//! files: expired rows move to verified archive files and nowhere else,
//! even when the process dies between phases; restore brings them back;
//! a damaged archive is refused; policy mistakes are named; a purge-only
//! policy deletes exactly the expired rows. A runtime started after a
//! killed run completes what it left without being asked, and no run
//! ever removes a file of another database sharing the directory.

mod server;

use server::{resilite, text};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ROWS: i64 = 100_000;

/// `logs` with `rows` rows: odd ids 40 days old (expired under keep =
/// 30d), even ids an hour old.
fn make_logs(db: &Path, rows: i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE logs(id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, msg TEXT);",
    )
    .unwrap();
    conn.execute_batch("BEGIN").unwrap();
    for id in 1..=rows {
        let age = if id % 2 == 1 { "-40 days" } else { "-1 hours" };
        conn.execute(
            "INSERT INTO logs VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?2), 'message ' || ?1)",
            rusqlite::params![id, age],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

fn config(dir: &Path, db: &Path, policy: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\npath = \"{}\"\n[archive]\nbatch_rows = 10000\n{policy}",
            db.display()
        ),
    )
    .unwrap();
    path
}

const ARCHIVE_LOGS: &str =
    "[[retention]]\ntable = \"logs\"\ncolumn = \"created_at\"\nkeep = \"30d\"\n";

fn ids(db: &Path) -> BTreeSet<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM logs").unwrap();
    let ids = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    ids
}

fn list(db: &Path) -> Vec<serde_json::Value> {
    let out = resilite(&["archive", "list", "--db", db.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The ids inside the archive file `path`.
fn archived_ids(path: &Path) -> Vec<i64> {
    let plain = path.with_extension("plain-test");
    resilite_actors::backup::decompress_file(path, &plain).unwrap();
    let conn = rusqlite::Connection::open(&plain).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM logs").unwrap();
    let ids = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(stmt);
    drop(conn);
    std::fs::remove_file(&plain).unwrap();
    ids
}

fn run_archive(cfg: &Path, fault: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resilite"));
    cmd.args(["archive", "run", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null());
    if let Some(point) = fault {
        cmd.env("RESILITE_FAULT_ARCHIVE", point);
    }
    cmd.output().unwrap()
}

/// Every expired row is in exactly one verified archive and not in the
/// database; every other row is in the database only; every archive file
/// is catalogued.
fn assert_each_row_in_one_place(db: &Path, dir: &Path) {
    let in_db = ids(db);
    let expected_db: BTreeSet<i64> = (1..=ROWS).filter(|i| i % 2 == 0).collect();
    assert_eq!(
        in_db, expected_db,
        "the database keeps exactly the rows not expired"
    );
    let mut archived = Vec::new();
    let catalog = list(db);
    for a in &catalog {
        assert_eq!(a["status"], "purged", "{a}");
        let path = Path::new(a["path"].as_str().unwrap());
        let got = archived_ids(path);
        assert_eq!(got.len() as u64, a["rows"].as_u64().unwrap());
        archived.extend(got);
    }
    let unique: BTreeSet<i64> = archived.iter().copied().collect();
    assert_eq!(unique.len(), archived.len(), "no row is in two archives");
    let expected_archived: BTreeSet<i64> = (1..=ROWS).filter(|i| i % 2 == 1).collect();
    assert_eq!(unique, expected_archived, "every expired row is archived");
    let files: BTreeSet<String> = std::fs::read_dir(dir.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = catalog
        .iter()
        .map(|a| a["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        files, listed,
        "every file in the archive directory is catalogued"
    );
}

/// The archive run's fault points (`RESILITE_FAULT_ARCHIVE`): after
/// each phase of a batch.
const KILL_POINTS: [&str; 4] = [
    "after_write",
    "after_record",
    "after_verify",
    "after_delete_batch",
];

/// A process killed (aborted) after each phase of a batch, then a run
/// again: every row is in exactly one place, the archives verify, and
/// restoring them brings every row back (and skips them all a second time).
#[test]
fn archive_run_killed_between_phases_loses_and_duplicates_nothing() {
    for point in KILL_POINTS {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        make_logs(&db, ROWS);
        let cfg = config(tmp.path(), &db, ARCHIVE_LOGS);
        let killed = run_archive(&cfg, Some(point));
        assert!(
            !killed.status.success() && text(&killed).contains("aborting"),
            "{point}: the run stops at the fault point: {}",
            text(&killed)
        );
        let out = run_archive(&cfg, None);
        assert!(out.status.success(), "{point}: {}", text(&out));
        assert_each_row_in_one_place(&db, tmp.path());

        if point == "after_delete_batch" {
            let catalog = list(&db);
            assert_eq!(catalog.len(), 5);
            let dbs = db.to_str().unwrap();
            let mut restored = 0;
            for a in &catalog {
                let id = a["id"].to_string();
                let out = resilite(&["archive", "verify", "--db", dbs, &id]);
                assert!(out.status.success(), "{}", text(&out));
                let out = resilite(&["archive", "restore", "--db", dbs, &id, "--yes"]);
                assert!(out.status.success(), "{}", text(&out));
                let rows = a["rows"].as_u64().unwrap();
                assert!(
                    text(&out).contains(&format!("{rows} rows restored, 0 skipped")),
                    "{}",
                    text(&out)
                );
                restored += rows;
            }
            assert_eq!(restored, (ROWS / 2) as u64);
            assert_eq!(ids(&db), (1..=ROWS).collect::<BTreeSet<_>>());
            let id = catalog[0]["id"].to_string();
            let out = resilite(&["archive", "restore", "--db", dbs, &id, "--yes"]);
            assert!(
                text(&out).contains("0 rows restored, 10000 skipped"),
                "{}",
                text(&out)
            );
        }
    }
}

/// An archive file with one byte changed fails verify with a clear error
/// (exit 1), and restore refuses it without touching the database.
#[test]
fn corrupt_archive_fails_verify_and_restore_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    make_logs(&db, 2000);
    let cfg = config(tmp.path(), &db, ARCHIVE_LOGS);
    let out = run_archive(&cfg, None);
    assert!(out.status.success(), "{}", text(&out));
    let a = &list(&db)[0];
    let path = PathBuf::from(a["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let dbs = db.to_str().unwrap();
    let id = a["id"].to_string();
    let out = resilite(&["archive", "verify", "--db", dbs, &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("archive {id}")) && text(&out).contains("failed verification"),
        "{}",
        text(&out)
    );
    let before = ids(&db);
    let out = resilite(&["archive", "restore", "--db", dbs, &id, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("failed verification"), "{}", text(&out));
    assert_eq!(ids(&db), before, "nothing was inserted");
}

/// Policy mistakes are named with the key and how to fix them: a table
/// name that is not an identifier, keep under 1h, an unknown key, and a
/// table the database does not have.
#[test]
fn retention_policy_mistakes_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    make_logs(&db, 10);
    let cases = [
        (
            "[[retention]]\ntable = \"logs; drop\"\ncolumn = \"created_at\"\nkeep = \"30d\"\n",
            "`retention[0].table`",
        ),
        (
            "[[retention]]\ntable = \"logs\"\ncolumn = \"created_at\"\nkeep = \"30m\"\n",
            "shorter than 1h",
        ),
        (
            "[[retention]]\ntable = \"logs\"\ncolum = \"created_at\"\nkeep = \"30d\"\n",
            "colum",
        ),
        (
            "[[retention]]\ntable = \"nope\"\ncolumn = \"created_at\"\nkeep = \"30d\"\n",
            "has no table `nope`",
        ),
        (
            "[[retention]]\ntable = \"logs\"\ncolumn = \"at\"\nkeep = \"30d\"\n",
            "no column `at`",
        ),
    ];
    for (policy, expected) in cases {
        let cfg = config(tmp.path(), &db, policy);
        let out = run_archive(&cfg, None);
        assert_eq!(out.status.code(), Some(1), "{policy}: {}", text(&out));
        assert!(text(&out).contains(expected), "{policy}: {}", text(&out));
    }
    assert_eq!(ids(&db).len(), 10, "nothing was deleted");
}

/// A purge-only policy (archive = false) deletes exactly the expired rows,
/// writes no archive, and records a `purge` event.
#[test]
fn purge_only_policy_deletes_exactly_the_expired_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    make_logs(&db, 25_000);
    let cfg = config(
        tmp.path(),
        &db,
        "[[retention]]\ntable = \"logs\"\ncolumn = \"created_at\"\nkeep = \"30d\"\narchive = false\n",
    );
    let out = run_archive(&cfg, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("12500 rows purged"), "{}", text(&out));
    let expected: BTreeSet<i64> = (1..=25_000).filter(|i| i % 2 == 0).collect();
    assert_eq!(ids(&db), expected);
    assert!(list(&db).is_empty());
    assert!(!tmp.path().join("archives").exists());
    let out = resilite(&["events", "--db", db.to_str().unwrap(), "--kind", "purge"]);
    assert!(
        text(&out).contains("12500 expired rows of table logs were deleted"),
        "{}",
        text(&out)
    );
}

/// A row the application updates after its archive was written and
/// recorded (the run killed `after_record`) but before the resuming run
/// deletes the batch stays in the database with its update; the archive
/// marks it kept (not archived), a restore does not put its old copy back,
/// and every other row is in exactly one place.
#[test]
fn row_updated_between_archive_and_delete_keeps_its_update() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    make_logs(&db, 40_000);
    let cfg = config(tmp.path(), &db, ARCHIVE_LOGS);
    let killed = run_archive(&cfg, Some("after_record"));
    assert!(
        !killed.status.success() && text(&killed).contains("aborting"),
        "the run stops at the fault point: {}",
        text(&killed)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE logs SET msg = 'edited', created_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = 7",
        [],
    )
    .unwrap();
    drop(conn);
    let out = run_archive(&cfg, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 archived rows changed after their archive was written"),
        "{}",
        text(&out)
    );

    let conn = rusqlite::Connection::open(&db).unwrap();
    let msg: String = conn
        .query_row("SELECT msg FROM logs WHERE id = 7", [], |r| r.get(0))
        .unwrap();
    assert_eq!(msg, "edited", "the update is in the database");
    drop(conn);
    let mut expected_db: BTreeSet<i64> = (1..=40_000).filter(|i| i % 2 == 0).collect();
    expected_db.insert(7);
    assert_eq!(ids(&db), expected_db);

    let catalog = list(&db);
    let mut archived = Vec::new();
    for a in &catalog {
        assert_eq!(a["status"], "purged", "{a}");
        let kept: Vec<i64> = serde_json::from_value(a["kept_rowids"].clone()).unwrap();
        let got = archived_ids(Path::new(a["path"].as_str().unwrap()));
        archived.extend(got.into_iter().filter(|id| !kept.contains(id)));
    }
    let first_kept: Vec<i64> = serde_json::from_value(catalog[0]["kept_rowids"].clone()).unwrap();
    assert_eq!(first_kept, [7], "the first archive marks row 7 kept");
    let unique: BTreeSet<i64> = archived.iter().copied().collect();
    assert_eq!(unique.len(), archived.len(), "no row is archived twice");
    let expected_archived: BTreeSet<i64> = (1..=40_000).filter(|i| i % 2 == 1 && *i != 7).collect();
    assert_eq!(
        unique, expected_archived,
        "every other expired row is archived"
    );

    let out = resilite(&["events", "--db", db.to_str().unwrap(), "--kind", "archive"]);
    assert!(
        text(&out).contains("changed after the archive was written"),
        "{}",
        text(&out)
    );

    let dbs = db.to_str().unwrap();
    let id = catalog[0]["id"].to_string();
    let out = resilite(&["archive", "restore", "--db", dbs, &id, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("9999 rows restored, 1 skipped"),
        "{}",
        text(&out)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let msg: String = conn
        .query_row("SELECT msg FROM logs WHERE id = 7", [], |r| r.get(0))
        .unwrap();
    assert_eq!(msg, "edited", "the restore left the update alone");
}

/// The ids of `logs` in each archive file of `dir/archives`, by file; fails
/// on any other file there (an orphan, a temporary file).
fn archives_in(dir: &Path, catalog: &[String]) -> Vec<Vec<i64>> {
    let files: BTreeSet<String> = std::fs::read_dir(dir.join("archives"))
        .map(|d| {
            d.map(|e| e.unwrap().path().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let listed: BTreeSet<String> = catalog.iter().cloned().collect();
    assert_eq!(
        files, listed,
        "the archive directory holds exactly the catalogued files"
    );
    catalog.iter().map(|p| archived_ids(Path::new(p))).collect()
}

/// An archive run killed after each phase (and a temporary file left
/// beside its archive), then `Runtime::start` with no scheduled run
/// (`interval = "0s"`) and no call to `archive_now`: once the start
/// returns, every row is in exactly one place (the database, or one purged
/// and verified archive), the unrecorded file and the temporary file are
/// gone, no new expired row was moved, and an `archive_resumed` event says
/// what was completed. A file of another database whose name shares the
/// prefix (`app-old-...` beside `app`) is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_start_completes_an_archive_run_killed_between_phases() {
    const ROWS: i64 = 30_000;
    for point in KILL_POINTS {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("app.db");
        make_logs(&db, ROWS);
        let cfg = config(
            tmp.path(),
            &db,
            &format!("interval = \"0s\"\n{ARCHIVE_LOGS}"),
        );
        let killed = run_archive(&cfg, Some(point));
        assert!(
            !killed.status.success() && text(&killed).contains("aborting"),
            "{point}: the run stops at the fault point: {}",
            text(&killed)
        );
        let archives = tmp.path().join("archives");
        let scratch = archives.join(".app-logs-20260101T000000.000Z-1.db.zst.plain");
        std::fs::write(&scratch, b"half a copy").unwrap();
        let foreign = archives.join("app-old-logs-20260101T000000.000Z-1.db.zst");
        std::fs::write(&foreign, b"another database's archive").unwrap();

        let rt = resilite::Runtime::start(resilite::Config::load(&cfg).unwrap())
            .await
            .unwrap();
        let catalog = rt.archives().await.unwrap();
        assert!(
            catalog
                .iter()
                .all(|a| a.status == resilite::ArchiveStatus::Purged),
            "{point}: {catalog:?}"
        );
        // The killed run had written one batch; only `after_write` left it
        // unrecorded (removed: its rows are still in the database).
        let expected_archives = usize::from(point != "after_write");
        assert_eq!(catalog.len(), expected_archives, "{point}");
        assert!(foreign.exists(), "{point}: another database's file is kept");
        std::fs::remove_file(&foreign).unwrap();
        assert!(!scratch.exists(), "{point}: the temporary file is removed");
        let paths: Vec<String> = catalog.iter().map(|a| a.path.clone()).collect();
        let archived: Vec<i64> = archives_in(tmp.path(), &paths).concat();
        let in_db = ids(&db);
        let archived_set: BTreeSet<i64> = archived.iter().copied().collect();
        assert_eq!(
            archived_set.len(),
            archived.len(),
            "{point}: no row in two archives"
        );
        assert!(
            in_db.is_disjoint(&archived_set),
            "{point}: no row both in the database and an archive"
        );
        let all: BTreeSet<i64> = in_db.union(&archived_set).copied().collect();
        assert_eq!(all, (1..=ROWS).collect(), "{point}: no row lost");
        // One batch at most: the start moved no expired row of its own.
        assert_eq!(archived.len(), 10_000 * expected_archives, "{point}");

        rt.flush_logs().await.unwrap();
        let events = rt
            .events(resilite::EventQuery {
                kind: Some(resilite::EventKind::ArchiveResumed),
                ..Default::default()
            })
            .await
            .unwrap()
            .events;
        assert_eq!(events.len(), 1, "{point}: {events:?}");
        let summary = &events[0].event.summary;
        assert!(summary.contains("was completed at start"), "{summary}");
        // Ours, and the copy the killed verification had decompressed.
        let temporary = if matches!(point, "after_verify" | "after_delete_batch") {
            2
        } else {
            1
        };
        assert!(
            summary.contains(&format!("{temporary} temporary file(s) were removed")),
            "{point}: {summary}"
        );
        let finished = if point == "after_write" {
            "1 archive file(s) written but never recorded were removed"
        } else {
            "1 archive(s) recorded but not finished were verified"
        };
        assert!(summary.contains(finished), "{point}: {summary}");
        rt.shutdown().await.unwrap();
    }
}

/// Two databases in one directory, `app.db` and `app-old.db`, share the
/// archive directory, and `app-` prefixes both's file names. A run of
/// `app-old` killed after writing its archive leaves an unrecorded file;
/// a run of `app` leaves it alone (it holds `app-old`'s rows, still in
/// `app-old`'s database too); the next run of `app-old` removes it and
/// archives the rows again, each in exactly one place.
#[test]
fn archive_run_never_removes_another_databases_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (app, old) = (tmp.path().join("app.db"), tmp.path().join("app-old.db"));
    make_logs(&app, 20);
    make_logs(&old, 20);
    let cfg = |db: &Path, name: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, format!("[database]\npath = {db:?}\n{ARCHIVE_LOGS}")).unwrap();
        path
    };
    let (app_cfg, old_cfg) = (cfg(&app, "app.toml"), cfg(&old, "old.toml"));
    let killed = run_archive(&old_cfg, Some("after_write"));
    assert!(!killed.status.success(), "{}", text(&killed));
    let orphan: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("archives"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(orphan.len(), 1, "{orphan:?}");
    assert!(orphan[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("app-old-logs-"));

    let out = run_archive(&app_cfg, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(orphan[0].exists(), "app's run kept app-old's file");
    assert!(!text(&out).contains("unrecorded"), "{}", text(&out));

    let out = run_archive(&old_cfg, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("removed 1 unrecorded files"),
        "{}",
        text(&out)
    );
    assert!(!orphan[0].exists(), "app-old's own run removed it");
    for db in [&app, &old] {
        let catalog = list(db);
        assert_eq!(catalog.len(), 1);
        let archived: BTreeSet<i64> = archived_ids(Path::new(catalog[0]["path"].as_str().unwrap()))
            .into_iter()
            .collect();
        assert_eq!(archived, (1..=20).filter(|i| i % 2 == 1).collect());
        assert_eq!(ids(db), (1..=20).filter(|i| i % 2 == 0).collect());
    }
}
