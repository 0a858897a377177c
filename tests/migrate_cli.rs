//! Migrations from the command line and over HTTP: `resilite migrate`
//! (apply, roll back, dry run, repair, baseline) and `resilite migrations` on a file
//! no program has open, with their exit codes (0 clean, 1 warnings, 2
//! errors); a server applying `schema.migrations_dir` at start (`/ready`
//! 503 meanwhile) and answering `GET /v1/migrations`.

mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use server::{resilite, text};

const TOKEN: &str = "s3cret-s3cret-s3cret";

struct Files {
    _dir: tempfile::TempDir,
    db: PathBuf,
    migrations: PathBuf,
}

impl Files {
    fn db(&self) -> &str {
        self.db.to_str().unwrap()
    }

    fn dir(&self) -> &str {
        self.migrations.to_str().unwrap()
    }

    fn write(&self, name: &str, sql: &str) {
        std::fs::write(self.migrations.join(name), sql).unwrap();
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        resilite(args)
    }

    fn user_version(&self) -> i64 {
        rusqlite::Connection::open(&self.db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    fn tables(&self) -> Vec<String> {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        let mut stmt = c
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_resilite%' ESCAPE '\\' ORDER BY name")
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.collect::<rusqlite::Result<_>>().unwrap()
    }

    fn backups(&self, label: &str) -> usize {
        let dir = self.db.parent().unwrap().join("backups");
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter(|e| {
                    let name = e
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .into_owned();
                    name.ends_with(&format!("-{label}.db"))
                })
                .count()
            })
            .unwrap_or(0)
    }
}

/// A database (WAL, one table, one row) and a migrations directory with
/// `0001_create_users` (with down) and `0002_add_email`.
fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE notes(v TEXT); INSERT INTO notes VALUES ('kept');",
    )
    .unwrap();
    drop(conn);
    let migrations = dir.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    let f = Files {
        _dir: dir,
        db,
        migrations,
    };
    f.write(
        "0001_create_users.up.sql",
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n",
    );
    f.write("0001_create_users.down.sql", "DROP TABLE users;\n");
    f.write(
        "0002_add_email.up.sql",
        "ALTER TABLE users ADD COLUMN email TEXT;\n",
    );
    f.write(
        "0002_add_email.down.sql",
        "ALTER TABLE users DROP COLUMN email;\n",
    );
    f
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn cli_migrate_applies_once_after_a_pre_migration_backup() {
    let f = files();
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    for expected in [
        "pre-migration backup: ",
        "applied 1 create_users",
        "applied 2 add_email",
        "the database is at version 2 (was 0)",
        "+ table users",
        "+ column users.email",
    ] {
        assert!(shown.contains(expected), "{expected:?} in {shown}");
    }
    assert_eq!(f.user_version(), 2);
    assert_eq!(f.backups("pre-migration"), 1);
    let listed = f.run(&["backups", "--db", f.db()]);
    assert!(
        text(&listed).contains("pre-migration.db"),
        "{}",
        text(&listed)
    );

    let again = f.run(&["migrate", "--db", f.db(), "--dir", f.dir(), "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["applied"], serde_json::json!([]));
    assert_eq!(report["to_version"], 2);
    assert_eq!(f.backups("pre-migration"), 1, "a no-op takes no backup");
}

#[test]
fn cli_migrate_failure_exits_2_with_the_sql_error_and_the_statement() {
    let f = files();
    f.write(
        "0003_broken.up.sql",
        "CREATE TABLE tags(t TEXT);\nINSERT INTO notes VALUES ('gone');\nINSERT INTO nowhere VALUES (1);\n",
    );
    f.write("0004_later.up.sql", "CREATE TABLE later(x);\n");
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir(), "--to", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = (f.tables(), f.user_version());
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("migration 3 (broken) failed at statement 3 of 0003_broken.up.sql (line 3): no such table: nowhere"),
        "{stderr}"
    );
    assert!(
        stderr.contains("later migrations were not attempted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("statement: INSERT INTO nowhere VALUES (1);"),
        "{stderr}"
    );
    assert_eq!((f.tables(), f.user_version()), before);
    let notes: i64 = rusqlite::Connection::open(&f.db)
        .unwrap()
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        notes, 1,
        "the insert of the failed migration was rolled back"
    );

    let listed = f.run(&["migrations", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(listed.status.code(), Some(2), "{}", text(&listed));
    let shown = text(&listed);
    assert!(
        shown.contains("broken") && shown.contains("FAILED"),
        "{shown}"
    );
    assert!(shown.contains("pending"), "{shown}");
}

#[test]
fn cli_migrate_dry_run_changes_no_byte_and_prints_the_change() {
    let f = files();
    let before = bytes(&f.db);
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    for expected in [
        "would apply 1 create_users",
        "would apply 2 add_email",
        "from version 0 to 2; nothing was written",
        "+ table users",
    ] {
        assert!(shown.contains(expected), "{expected:?} in {shown}");
    }
    assert!(!shown.contains("pre-migration backup"), "{shown}");
    assert_eq!(bytes(&f.db), before, "not a byte of the file changed");
    assert_eq!(f.backups("pre-migration"), 0);
    // A dry run that fails says so and still changes nothing.
    f.write("0003_bad.up.sql", "CREATE TABLE x(;\n");
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("statement: CREATE TABLE x(;"),
        "{}",
        text(&out)
    );
    assert_eq!(bytes(&f.db), before);
}

#[test]
fn cli_an_edited_applied_migration_blocks_until_repaired() {
    let f = files();
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // CRLF line endings are no change.
    f.write(
        "0001_create_users.up.sql",
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);\r\n",
    );
    let listed = f.run(&["migrations", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed));
    // An edit is.
    f.write(
        "0001_create_users.up.sql",
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);\n",
    );
    f.write("0003_posts.up.sql", "CREATE TABLE posts(p);\n");
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("0001_create_users.up.sql now has checksum"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("resilite migrate repair"),
        "{}",
        text(&out)
    );
    let listed = f.run(&["migrations", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(listed.status.code(), Some(2));
    assert!(text(&listed).contains("CHANGED"), "{}", text(&listed));

    // Not confirmed: nothing recorded.
    let out = f.run(&["migrate", "repair", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    let out = f.run(&[
        "migrate",
        "repair",
        "--db",
        f.db(),
        "--dir",
        f.dir(),
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("recorded 1 repair(s)"),
        "{}",
        text(&out)
    );
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(f.user_version(), 3);

    let c = rusqlite::Connection::open(&f.db).unwrap();
    let (applied, repaired, previous): (String, String, String) = c
        .query_row(
            "SELECT a.checksum, r.checksum, r.previous_checksum FROM _resilite_migrations a
             JOIN _resilite_migrations r ON r.version = a.version AND r.action = 'repair'
             WHERE a.version = 1 AND a.action = 'apply'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(previous, applied, "the history keeps both checksums");
    assert_ne!(repaired, applied);
}

/// A database whose schema another tool made (its `users` table, rows and
/// a `user_version` of its own, no history) is blocked with advice to
/// baseline; `migrate baseline` asks, refuses a version the directory
/// lacks or a schema missing what the migrations create, then records
/// migration 1 as applied without running it (the rows stay; a NOT NULL
/// the table lacks is printed as a warning), and `migrate` applies
/// migration 2 alone. A second baseline is refused.
#[test]
fn cli_baseline_adopts_a_database_made_elsewhere() {
    let f = files();
    let c = rusqlite::Connection::open(&f.db).unwrap();
    c.execute_batch(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users(name) VALUES ('ada'); PRAGMA user_version = 42;",
    )
    .unwrap();
    drop(c);
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("resilite migrate baseline --version N"),
        "{}",
        text(&out)
    );
    let baseline = |version: &str, yes: bool| {
        let mut args = vec!["migrate", "baseline", "--db", f.db(), "--dir", f.dir()];
        args.extend(["--version", version]);
        if yes {
            args.push("--yes");
        }
        f.run(&args)
    };

    // Not confirmed (no terminal): nothing recorded.
    let out = baseline("1", false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(f.user_version(), 42);
    // A version the directory lacks; a schema without migration 2's column.
    let out = baseline("7", true);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no migration 7"), "{}", text(&out));
    let out = baseline("2", true);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("does not hold what migrations 1 to 2 create")
            && text(&out).contains("email"),
        "{}",
        text(&out)
    );
    assert_eq!(f.user_version(), 42);

    let out = baseline("1", true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("recorded 1 migration(s) as applied"),
        "{}",
        text(&out)
    );
    // The NOT NULL migration 1 declares and the table lacks is a warning,
    // printed, not a refusal.
    assert!(
        text(&out).contains("note (warning)") && text(&out).contains("NOT NULL"),
        "{}",
        text(&out)
    );
    assert_eq!(f.user_version(), 1);
    let listed = f.run(&["migrations", "--db", f.db(), "--dir", f.dir(), "--json"]);
    assert_eq!(listed.status.code(), Some(1), "migration 2 is pending");
    let status: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(status["migrations"][0]["state"], "applied", "{status}");
    assert_eq!(status["migrations"][1]["state"], "pending", "{status}");
    assert_eq!(status["history"][0]["action"], "baseline", "{status}");

    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("applied 2 add_email"), "{}", text(&out));
    assert!(!text(&out).contains("applied 1 "), "{}", text(&out));
    assert_eq!(f.user_version(), 2);
    let names: i64 = rusqlite::Connection::open(&f.db)
        .unwrap()
        .query_row("SELECT count(*) FROM users WHERE name = 'ada'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(names, 1, "the adopted rows are kept");

    let out = baseline("2", true);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("already has a migration history"),
        "{}",
        text(&out)
    );
}

#[test]
fn cli_migrations_lists_states_with_exit_codes() {
    let f = files();
    let out = f.run(&["migrations", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(1), "pending: {}", text(&out));
    assert!(text(&out).contains("create_users") && text(&out).contains("pending"));
    f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    let out = f.run(&["migrations", "--db", f.db(), "--dir", f.dir(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["user_version"], 2);
    assert_eq!(status["migrations"][1]["state"], "applied");
    assert_eq!(status["history"].as_array().unwrap().len(), 2);
    // Without --dir: the history alone.
    let out = f.run(&["migrations", "--db", f.db()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("the history alone"), "{}", text(&out));
    // A file that is removed after it was applied is missing.
    std::fs::remove_file(f.migrations.join("0002_add_email.up.sql")).unwrap();
    std::fs::remove_file(f.migrations.join("0002_add_email.down.sql")).unwrap();
    let out = f.run(&["migrations", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("MISSING"), "{}", text(&out));
}

#[test]
fn cli_migrate_refuses_destruction_bad_files_and_a_database_in_use() {
    let f = files();
    f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    // Rolling back drops a column and a table: destructive.
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir(), "--to", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("would lose column users.email"),
        "{}",
        text(&out)
    );
    assert_eq!(f.user_version(), 2);
    let out = f.run(&[
        "migrate",
        "--db",
        f.db(),
        "--dir",
        f.dir(),
        "--to",
        "0",
        "--allow-destructive",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("rolled back 2 add_email"),
        "{}",
        text(&out)
    );
    assert_eq!(
        (f.user_version(), f.tables()),
        (0, vec!["notes".to_string()])
    );

    f.write("0003-bad-name.up.sql", "SELECT 1;\n");
    f.write("0005_orphan.down.sql", "SELECT 1;\n");
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("0003-bad-name.up.sql: does not match"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("0005_orphan.down.sql has no up script"),
        "{}",
        text(&out)
    );
    std::fs::remove_file(f.migrations.join("0003-bad-name.up.sql")).unwrap();
    std::fs::remove_file(f.migrations.join("0005_orphan.down.sql")).unwrap();

    let holder = rusqlite::Connection::open(&f.db).unwrap();
    holder
        .execute_batch("BEGIN; SELECT count(*) FROM notes;")
        .unwrap();
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is in use"), "{}", text(&out));
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    assert_eq!(f.user_version(), 0);
}

/// A database a server ran with the operation log on (it keeps a log
/// position): `resilite migrate` makes each migration a barrier in the log
/// (the position moves past it, the range recorded as a gap in the
/// journal) and takes a `post-migration` backup.
#[test]
fn cli_migrate_marks_the_operation_log_of_a_database_that_keeps_one() {
    let f = files();
    rusqlite::Connection::open(&f.db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE _resilite_op_log (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
             INSERT INTO _resilite_op_log VALUES (1, 7);",
        )
        .unwrap();
    let out = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("post-migration backup: "),
        "{}",
        text(&out)
    );
    assert_eq!(f.backups("post-migration"), 1);
    let c = rusqlite::Connection::open(&f.db).unwrap();
    let seq: i64 = c
        .query_row("SELECT seq FROM _resilite_op_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seq, 9, "one number per migration");
    let mut journal = f.db.clone().into_os_string();
    journal.push(".journal");
    let gaps =
        resilite_actors::journal::op_log::gaps(&rusqlite::Connection::open(journal).unwrap())
            .unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].after_seq, gaps[0].through_seq), (7, 9));
    assert!(
        gaps[0].reason.contains("resilite migrate"),
        "{}",
        gaps[0].reason
    );
}

fn server_config(f: &Files) -> String {
    format!(
        "token = \"{TOKEN}\"\n\n[schema]\nmigrations_dir = {:?}\n",
        f.migrations
    )
}

/// A server with `schema.migrations_dir` answers `/ready` 503 (migrating)
/// until its migrations are applied, then 200; `GET /v1/migrations`
/// (token-protected) gives the status. A migration that fails stops the
/// server with the error.
#[tokio::test]
async fn a_server_migrates_at_start_and_answers_v1_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let f = Files {
        db: dir.path().join("data").join("app.db"),
        migrations: dir.path().join("migrations"),
        _dir: tempfile::tempdir().unwrap(),
    };
    std::fs::create_dir_all(&f.migrations).unwrap();
    f.write(
        "0001_create_users.up.sql",
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);\n",
    );
    // Long enough to be seen migrating.
    f.write(
        "0002_fill.up.sql",
        "CREATE TABLE filler(x INTEGER);\nWITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) INSERT INTO filler SELECT x FROM c;\n",
    );
    let s = server::start(&dir, &server_config(&f));
    let c = Client::new();
    let ready = c.get(s.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("applying the migrations in"),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = c.get(s.url("/ready")).send().await.unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.get(s.url("/v1/migrations")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(s.url("/v1/migrations"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["user_version"], 2, "{status}");
    assert_eq!(status["migrations"][0]["state"], "applied", "{status}");
    assert_eq!(status["migrations"][1]["state"], "applied", "{status}");
    assert_eq!(status["problems"], serde_json::json!([]), "{status}");
    drop(s);

    // A failing migration: the server stops with the error.
    f.write("0003_broken.up.sql", "INSERT INTO nowhere VALUES (1);\n");
    let mut s = server::start(&dir, &server_config(&f));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("migration 3 (broken) failed at statement 1 of 0003_broken.up.sql (line 1): no such table: nowhere"),
        "{log}"
    );
}

/// `resilite validate --migrations DIR`: the expected schema is the one
/// the migrations produce (derived in a scratch database): a database
/// missing the second migration's column is an error (exit 2, the column
/// named); once migrated it validates clean (exit 0), its own extra table
/// only an info finding. A migration that does not apply says which.
#[test]
fn cli_validate_against_the_schema_the_migrations_produce() {
    let f = files();
    f.write(
        "0002_add_email.up.sql",
        "ALTER TABLE users ADD COLUMN email TEXT;\n",
    );
    let up_to_1 = f.run(&["migrate", "--db", f.db(), "--dir", f.dir(), "--to", "1"]);
    assert!(up_to_1.status.success(), "{}", text(&up_to_1));
    let out = f.run(&["validate", "--db", f.db(), "--migrations", f.dir()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("email"), "{}", text(&out));
    let migrated = f.run(&["migrate", "--db", f.db(), "--dir", f.dir()]);
    assert!(migrated.status.success(), "{}", text(&migrated));
    let out = f.run(&["validate", "--db", f.db(), "--migrations", f.dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    f.write(
        "0003_bad.up.sql",
        "ALTER TABLE nowhere ADD COLUMN x TEXT;\n",
    );
    let out = f.run(&["validate", "--db", f.db(), "--migrations", f.dir()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("migration 3 (bad)"), "{}", text(&out));
    let neither = f.run(&["validate", "--db", f.db()]);
    assert!(!neither.status.success(), "{}", text(&neither));
}
