//! Startup refuses what cannot work, says exactly what is wrong, and leaves
//! the disk as it found it: database paths that are directories, under a
//! file or in a read-only directory; a file that is not a database; a
//! damaged or newer journal; a journal that is the database under another
//! name; `:memory:`. Each case runs the real binary (`resilite run`) and
//! `Runtime::start`, asserting the exit code or error class, the message,
//! and that no file was created.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use resilite::{Config, ErrorClass, Runtime};

/// Every path under `dir`, relative, directories with a trailing `/`.
fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// `resilite run` in `dir` (its working directory) on a config whose
/// `[database]` section is `database`; it must exit by itself.
fn run(dir: &Path, database: &str) -> Output {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("[http]\nlisten = \"127.0.0.1:0\"\n\n[database]\n{database}\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_resilite"))
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn resilite run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "resilite run started instead of refusing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    std::fs::remove_file(&config).unwrap();
    out
}

/// The binary refused with exit 1 and a message holding every `needle`.
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    assert!(
        !err.contains("busy or temporarily unavailable"),
        "a path problem reported as transient: {err}"
    );
    err
}

async fn start_err(config: Config) -> resilite::Error {
    match Runtime::start(config).await {
        Ok(rt) => {
            let _ = rt.shutdown().await;
            panic!("Runtime::start should refuse");
        }
        Err(e) => e,
    }
}

fn config(db: impl Into<PathBuf>) -> Config {
    Config::for_database(db)
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A database path that is a directory: `resilite run` exits 1 and
/// `Runtime::start` fails with `bad_input`, naming the path; nothing is
/// created.
///
/// Property 8: User-Friendly Error Messages. A database that cannot be
/// opened is refused with a message naming the path and the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_a_database_path_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data");
    std::fs::create_dir(&db).unwrap();
    let before = listing(dir.path());

    let out = run(dir.path(), &format!("path = {}", toml_path(&db)));
    assert_refused(
        &out,
        &[&db.display().to_string(), "is a directory", "database.path"],
    );
    assert_eq!(listing(dir.path()), before, "no file may be created");

    let err = start_err(config(&db)).await;
    assert_eq!(err.class, ErrorClass::BadInput, "{err}");
    assert!(err.message.contains("is a directory"), "{err}");
    assert_eq!(listing(dir.path()), before, "no file may be created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_a_database_path_under_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "not a directory").unwrap();
    let before = listing(dir.path());
    for db in [file.join("app.db"), file.join("sub").join("app.db")] {
        let out = run(dir.path(), &format!("path = {}", toml_path(&db)));
        assert_refused(
            &out,
            &[
                &db.display().to_string(),
                &format!("a parent, {}, is a file, not a directory", file.display()),
            ],
        );
        let err = start_err(config(&db)).await;
        assert_eq!(err.class, ErrorClass::BadInput, "{err}");
        assert!(err.message.contains("is a file, not a directory"), "{err}");
        assert_eq!(listing(dir.path()), before, "no file may be created");
    }
}

/// Makes `dir` read-only for this process, root included (`chattr +i`),
/// and undoes it on drop. `None` (with a note printed) when it cannot be
/// done here: the test is then skipped.
struct ReadOnlyDir(PathBuf, bool);

impl ReadOnlyDir {
    fn make(dir: &Path) -> Option<ReadOnlyDir> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut immutable = false;
        if std::fs::write(dir.join("probe"), "x").is_ok() {
            // Root ignores the mode bits; an immutable directory stops it.
            let _ = std::fs::remove_file(dir.join("probe"));
            immutable = Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        }
        let guard = ReadOnlyDir(dir.to_path_buf(), immutable);
        if std::fs::write(dir.join("probe"), "x").is_ok() {
            let _ = std::fs::remove_file(dir.join("probe"));
            eprintln!(
                "note: skipped: {} stays writable for this user (root, and `chattr +i` unavailable here)",
                dir.display()
            );
            return None;
        }
        Some(guard)
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.1 {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_a_database_in_a_read_only_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let Some(_guard) = ReadOnlyDir::make(&ro) else {
        return;
    };
    let before = listing(dir.path());
    for db in [ro.join("app.db"), ro.join("data").join("app.db")] {
        let out = run(dir.path(), &format!("path = {}", toml_path(&db)));
        assert_refused(
            &out,
            &[
                &db.display().to_string(),
                "cannot be created",
                &format!("directory {} is read-only", ro.display()),
            ],
        );
        let err = start_err(config(&db)).await;
        assert_eq!(err.class, ErrorClass::Permission, "{err}");
        assert!(err.message.contains("is read-only"), "{err}");
        assert_eq!(listing(dir.path()), before, "no file may be created");
    }
}

/// A file of noise as the database: refused by the binary and by
/// `Runtime::start` (class `corruption`), no journal, `-wal` or `-shm` left.
///
/// Property 8: User-Friendly Error Messages. A file SQLite cannot read is
/// refused with "not an SQLite database" and its path, the file untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_a_file_that_is_not_a_database_leaves_no_journal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let noise: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &noise).unwrap();
    let before = listing(dir.path());

    let out = run(dir.path(), &format!("path = {}", toml_path(&db)));
    assert_refused(&out, &[&db.display().to_string(), "not an SQLite database"]);
    assert_eq!(listing(dir.path()), before, "no journal, -wal or -shm");

    let err = start_err(config(&db)).await;
    assert_eq!(err.class, ErrorClass::Corruption, "{err}");
    assert_eq!(listing(dir.path()), before, "no journal, -wal or -shm");
    assert_eq!(std::fs::read(&db).unwrap(), noise, "the file is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_a_damaged_journal_is_named_as_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let journal = dir.path().join("app.db.journal");
    let noise: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(40_503) >> 3) as u8)
        .collect();
    std::fs::write(&journal, &noise).unwrap();
    let before = listing(dir.path());

    let out = run(dir.path(), &format!("path = {}", toml_path(&db)));
    let err = assert_refused(
        &out,
        &[
            &format!("the journal {}", journal.display()),
            "move it aside",
            "creates a new, empty journal",
            "dead-letter queue",
        ],
    );
    assert!(
        !err.contains("restore it from a verified backup"),
        "the journal is not the database: {err}"
    );
    assert_eq!(listing(dir.path()), before, "app.db is not left behind");

    let err = start_err(config(&db)).await;
    assert_eq!(err.class, ErrorClass::Corruption, "{err}");
    assert!(err.message.contains("the journal"), "{err}");
    assert_eq!(listing(dir.path()), before);
    assert_eq!(std::fs::read(&journal).unwrap(), noise);

    // Moved aside as the message says, the next start works.
    std::fs::rename(&journal, dir.path().join("app.db.journal.damaged")).unwrap();
    let rt = Runtime::start(config(&db)).await.expect("starts");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_a_journal_newer_than_this_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let journal = dir.path().join("app.db.journal");
    let newer = resilite::journal_version() + 7;
    rusqlite::Connection::open(&journal)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {newer}"))
        .unwrap();
    let before = listing(dir.path());

    let out = run(dir.path(), &format!("path = {}", toml_path(&db)));
    let err = assert_refused(
        &out,
        &[
            &format!("journal {} is at version {newer}", journal.display()),
            &format!("newer than this resilite ({})", resilite::journal_version()),
            "use a newer resilite",
        ],
    );
    assert!(!err.contains("no such table"), "{err}");
    assert_eq!(listing(dir.path()), before);

    let err = start_err(config(&db)).await;
    assert_eq!(err.class, ErrorClass::BadInput, "{err}");
    assert_eq!(listing(dir.path()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_a_journal_that_is_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let link = dir.path().join("journal.link");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let other_spelling = dir.path().join("sub").join("..").join("app.db");
    std::fs::create_dir(dir.path().join("sub")).unwrap();

    // The files do not exist yet: the symlink points at nothing.
    for journal in [&link, &other_spelling] {
        let before = listing(dir.path());
        let out = run(
            dir.path(),
            &format!(
                "path = {}\njournal_path = {}",
                toml_path(&db),
                toml_path(journal)
            ),
        );
        assert_refused(
            &out,
            &["database.journal_path", "application database itself"],
        );
        assert_eq!(listing(dir.path()), before);
        let mut c = config(&db);
        c.database.journal_path = Some(journal.clone());
        let err = start_err(c).await;
        assert_eq!(err.class, ErrorClass::BadInput, "{err}");
    }

    // Both exist: an application database with a table of its own.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE mine(v)")
        .unwrap();
    let hard = dir.path().join("hard.link");
    std::fs::hard_link(&db, &hard).unwrap();
    for journal in [&link, &hard] {
        let mut c = config(&db);
        c.database.journal_path = Some(journal.clone());
        let err = start_err(c).await;
        assert_eq!(err.class, ErrorClass::BadInput, "{err}");
        assert!(err.message.contains("application database itself"), "{err}");
    }
    let tables: Vec<String> = rusqlite::Connection::open(&db)
        .unwrap()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["mine"], "no journal table in the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_memory_databases_are_refused_leaving_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let before = listing(dir.path());
    for path in [":memory:", "file::memory:", "file:app.db?mode=memory"] {
        let out = run(dir.path(), &format!("path = {path:?}"));
        assert_refused(&out, &["database.path", path, "writer and readers share"]);
        assert_eq!(
            listing(dir.path()),
            before,
            "{path}: no file may be created"
        );
        let err = start_err(config(path)).await;
        assert_eq!(err.class, ErrorClass::BadInput, "{err}");
    }
    assert!(!Path::new(":memory:.journal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_a_refused_journal_removes_only_what_this_start_created() {
    // The database's directories do not exist yet; the journal's path is
    // under a file. The start creates data/app.db, then refuses the
    // journal: data/ and app.db go again; the existing file stays.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "x").unwrap();
    let db = dir.path().join("data").join("nested").join("app.db");
    let journal = blocker.join("app.db.journal");
    let before = listing(dir.path());
    let mut c = config(&db);
    c.database.journal_path = Some(journal.clone());
    let err = start_err(c).await;
    assert_eq!(err.class, ErrorClass::BadInput, "{err}");
    assert!(
        err.message.contains("database.journal_path")
            && err.message.contains("is a file, not a directory"),
        "{err}"
    );
    assert_eq!(listing(dir.path()), before);

    // An existing database is kept when its journal is refused.
    let db = dir.path().join("kept.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE mine(v)")
        .unwrap();
    let before = listing(dir.path());
    let mut c = config(&db);
    c.database.journal_path = Some(journal);
    start_err(c).await;
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn cli_verbs_name_the_path_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    let cases = [
        (dir.path().to_path_buf(), "is a directory"),
        (file.join("app.db"), "is a file, not a directory"),
        (dir.path().join("missing.db"), "does not exist"),
    ];
    for (db, needle) in &cases {
        for verb in ["checkpoint", "vacuum"] {
            let out = Command::new(env!("CARGO_BIN_EXE_resilite"))
                .args([verb, "--db", db.to_str().unwrap()])
                .output()
                .unwrap();
            assert_refused(&out, &[&db.display().to_string(), needle]);
        }
    }
    // `health` answers UNKNOWN (exit 3) and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_resilite"))
        .args(["health", "--db", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));
    assert_eq!(
        listing(dir.path()),
        BTreeSet::from(["notes.txt".to_string()])
    );
}

#[test]
fn cli_dlq_names_a_damaged_or_newer_journal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let journal = dir.path().join("app.db.journal");
    std::fs::write(&journal, vec![7u8; 4096]).unwrap();
    let dlq = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_resilite"))
            .args(["dlq", "--db", db.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    for args in [&["list"][..], &["requeue", "--all"][..]] {
        assert_refused(
            &dlq(args),
            &[
                &format!("the journal {}", journal.display()),
                "move it aside",
            ],
        );
    }
    std::fs::remove_file(&journal).unwrap();
    rusqlite::Connection::open(&journal)
        .unwrap()
        .execute_batch("PRAGMA user_version = 999")
        .unwrap();
    for args in [&["list"][..], &["discard", "1"][..]] {
        assert_refused(&dlq(args), &["is at version 999", "use a newer resilite"]);
    }
}
