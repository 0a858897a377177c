//! The runner on a plain connection: what the runtime and the CLI share.

use rusqlite::Connection;

use super::*;
use crate::error::ErrorClass;

fn db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("app.db")).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
        .unwrap();
    (dir, conn)
}

fn users() -> Vec<Migration> {
    vec![
        Migration::new(
            1,
            "create_users",
            "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);",
        )
        .with_down("DROP TABLE users;"),
        Migration::new(
            2,
            "add_email",
            "ALTER TABLE users ADD COLUMN email TEXT;\nCREATE INDEX users_email ON users(email);",
        )
        .with_down("DROP INDEX users_email;\nALTER TABLE users DROP COLUMN email;"),
    ]
}

fn apply(
    conn: &Connection,
    m: &Migrations,
    options: MigrateOptions,
) -> crate::Result<MigrationReport> {
    run(conn, m, &options, &RunContext::default())
}

/// The schema and the user version, as text, the history left out.
fn snapshot(conn: &Connection) -> (Vec<String>, i64) {
    let mut stmt = conn
        .prepare("SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_schema WHERE name NOT LIKE '\\_resilite%' ESCAPE '\\' ORDER BY 1")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    let schema = rows.collect::<rusqlite::Result<_>>().unwrap();
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    (schema, version)
}

#[test]
fn run_applies_in_order_once_and_records_the_history() {
    let (_dir, conn) = db();
    let m = Migrations::new(users()).unwrap();
    let report = apply(&conn, &m, MigrateOptions::default()).unwrap();
    assert_eq!(
        report.applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!((report.from_version, report.to_version), (0, 2));
    assert_eq!(report.schema.tables_added, ["users"]);
    assert_eq!(report.schema.indexes_added, ["users_email"]);
    assert_eq!(snapshot(&conn).1, 2);
    let again = apply(&conn, &m, MigrateOptions::default()).unwrap();
    assert!(again.is_noop());
    let h = history(&conn).unwrap();
    assert_eq!(h.len(), 2);
    assert!(h
        .iter()
        .all(|e| e.success && e.action == HistoryAction::Apply));
    assert_eq!(
        h[1].checksum.as_deref(),
        Some(m.get(2).unwrap().checksum().as_str())
    );
    assert_eq!(h[1].down_sql.as_deref(), m.get(2).unwrap().down());
    assert!(h[1].size_after.unwrap() > 0);
    let s = status(&conn, Some(&m)).unwrap();
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.pending(), 0);
    // Foreign keys are as the connection had them.
    let fk: bool = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert!(fk);
}

#[test]
fn run_a_failing_migration_leaves_the_database_as_it_was_and_records_the_statement() {
    let (_dir, conn) = db();
    let mut list = users();
    list.push(Migration::new(
        3,
        "broken",
        "CREATE TABLE posts(id INTEGER PRIMARY KEY);\nINSERT INTO users(name) VALUES ('x');\nALTER TABLE nope ADD COLUMN y;\nCREATE TABLE never(z);",
    ));
    list.push(Migration::new(4, "later", "CREATE TABLE later(z);"));
    let m = Migrations::new(list).unwrap();
    apply(
        &conn,
        &m,
        MigrateOptions {
            to: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    conn.execute("INSERT INTO users(name, email) VALUES ('a', 'a@x')", [])
        .unwrap();
    let before = snapshot(&conn);
    let e = apply(&conn, &m, MigrateOptions::default()).unwrap_err();
    assert_eq!(e.class, ErrorClass::Sql);
    assert!(
        e.message.contains("migration 3 (broken) failed at statement 3 of the up script of migration 3 (broken) (line 3): no such table: nope"),
        "{e}"
    );
    assert!(
        e.message.contains("later migrations were not attempted"),
        "{e}"
    );
    assert_eq!(e.detail, "statement: ALTER TABLE nope ADD COLUMN y;");
    assert_eq!(snapshot(&conn), before, "schema and user_version as before");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        rows, 1,
        "the insert of the failed migration was rolled back"
    );
    let last = history(&conn).unwrap().pop().unwrap();
    assert_eq!((last.version, last.success), (3, false));
    assert_eq!(
        last.failed_statement.as_deref(),
        Some("ALTER TABLE nope ADD COLUMN y;")
    );
    assert!(last.error.unwrap().contains("no such table: nope"));
    let s = status(&conn, Some(&m)).unwrap();
    let states: Vec<_> = s.migrations.iter().map(|m| (m.version, m.state)).collect();
    assert_eq!(
        states,
        [
            (1, MigrationState::Applied),
            (2, MigrationState::Applied),
            (3, MigrationState::Failed),
            (4, MigrationState::Pending)
        ]
    );
}

#[test]
fn run_refuses_what_loses_tables_columns_or_rows_without_the_flag() {
    let (_dir, conn) = db();
    let m = Migrations::new(users()).unwrap();
    apply(&conn, &m, MigrateOptions::default()).unwrap();
    conn.execute("INSERT INTO users(name, email) VALUES ('a', 'a@x')", [])
        .unwrap();
    let cases = [
        ("DROP TABLE users;", "table users"),
        ("ALTER TABLE users DROP COLUMN name;", "column users.name"),
        (
            "CREATE TABLE u2(id INTEGER PRIMARY KEY, name TEXT);\nINSERT INTO u2 SELECT id, name FROM users;\nDROP TABLE users;\nALTER TABLE u2 RENAME TO users;",
            "column users.email",
        ),
    ];
    for (i, (script, lost)) in cases.iter().enumerate() {
        let mut list = users();
        list.push(Migration::new(3, "destructive", *script));
        let m = Migrations::new(list).unwrap();
        let before = snapshot(&conn);
        let e = apply(&conn, &m, MigrateOptions::default()).unwrap_err();
        assert_eq!(e.class, ErrorClass::Forbidden, "case {i}");
        assert!(
            e.message.contains(&format!("would lose {lost}")),
            "case {i}: {e}"
        );
        assert_eq!(snapshot(&conn), before, "case {i}: nothing changed");
        assert_eq!(
            history(&conn).unwrap().len(),
            2,
            "case {i}: a refusal is not a failure"
        );
    }
    let mut list = users();
    list.push(Migration::new(3, "drop_users", "DROP TABLE users;"));
    let m = Migrations::new(list).unwrap();
    let report = apply(
        &conn,
        &m,
        MigrateOptions {
            allow_destructive: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.schema.tables_removed, ["users"]);
    assert_eq!(snapshot(&conn).1, 3);
}

#[test]
fn run_rolls_back_to_a_version_and_stops_before_a_migration_without_down() {
    let (_dir, conn) = db();
    let mut list = users();
    list.push(
        Migration::new(3, "posts", "CREATE TABLE posts(id INTEGER PRIMARY KEY);")
            .with_down("DROP TABLE posts;"),
    );
    let m = Migrations::new(list).unwrap();
    apply(
        &conn,
        &Migrations::new(users()[..1].to_vec()).unwrap(),
        MigrateOptions::default(),
    )
    .unwrap();
    let at_one = snapshot(&conn);
    apply(&conn, &m, MigrateOptions::default()).unwrap();
    // Rolling back drops a table and a column: destructive, the same rule.
    let e = apply(
        &conn,
        &m,
        MigrateOptions {
            to: Some(1),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Forbidden, "{e}");
    assert!(
        e.message
            .contains("the rollback of migration 3 (posts) would lose table posts"),
        "{e}"
    );
    let back = apply(
        &conn,
        &m,
        MigrateOptions {
            to: Some(1),
            allow_destructive: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        back.rolled_back
            .iter()
            .map(|s| s.version)
            .collect::<Vec<_>>(),
        [3, 2]
    );
    assert_eq!(snapshot(&conn), at_one);
    let s = status(&conn, Some(&m)).unwrap();
    assert_eq!(s.pending(), 2);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    // Forward again, then a migration with no down script stops the rollback.
    let mut list = users();
    list.push(Migration::new(
        3,
        "posts",
        "CREATE TABLE posts(id INTEGER PRIMARY KEY);",
    ));
    list.push(Migration::new(4, "tags", "CREATE TABLE tags(t);").with_down("DROP TABLE tags;"));
    let m = Migrations::new(list).unwrap();
    apply(&conn, &m, MigrateOptions::default()).unwrap();
    let e = apply(
        &conn,
        &m,
        MigrateOptions {
            to: Some(1),
            allow_destructive: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        e.message.contains("the rollback stopped before migration 3 (posts): it has no down script; the database is at version 3 (rolled back: 4)"),
        "{e}"
    );
    assert_eq!(snapshot(&conn).1, 3);
}

#[test]
fn run_dry_run_changes_nothing_and_shows_the_change() {
    let (dir, conn) = db();
    conn.execute_batch("CREATE TABLE keep(x); PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let file = || std::fs::read(dir.path().join("app.db")).unwrap();
    let before = (snapshot(&conn), file());
    let m = Migrations::new(users()).unwrap();
    let report = apply(
        &conn,
        &m,
        MigrateOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.to_version, 2);
    assert_eq!(report.applied.len(), 2);
    assert_eq!(report.schema.tables_added, ["users"]);
    assert_eq!(report.schema.indexes_added, ["users_email"]);
    assert_eq!(report.applied[1].schema.columns_added, ["users.email"]);
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    assert_eq!((snapshot(&conn), file()), before);
    assert!(history(&conn).unwrap().is_empty());
}

#[test]
fn an_edited_applied_migration_blocks_until_repaired_and_crlf_is_no_edit() {
    let (_dir, conn) = db();
    apply(
        &conn,
        &Migrations::new(users()).unwrap(),
        MigrateOptions::default(),
    )
    .unwrap();
    let mut crlf = users();
    crlf[1] = Migration::new(2, "add_email", users()[1].up().replace('\n', "\r\n"));
    let crlf = Migrations::new(crlf).unwrap();
    assert!(status(&conn, Some(&crlf)).unwrap().problems.is_empty());
    let mut edited = users();
    edited[0] = Migration::new(
        1,
        "create_users",
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    );
    edited.push(Migration::new(3, "posts", "CREATE TABLE posts(p);"));
    let edited = Migrations::new(edited).unwrap();
    let s = status(&conn, Some(&edited)).unwrap();
    assert_eq!(s.migrations[0].state, MigrationState::Changed);
    let e = apply(&conn, &edited, MigrateOptions::default()).unwrap_err();
    assert!(e.message.contains("migrations are blocked"), "{e}");
    assert!(
        e.message
            .contains("migration 1 (create_users) was applied with checksum"),
        "{e}"
    );
    assert_eq!(repairs(&conn, &edited).unwrap().len(), 1);
    let done = repair(&conn, &edited).unwrap();
    assert_eq!(done[0].accepted, Some(edited.get(1).unwrap().checksum()));
    assert_eq!(done[0].recorded, Some(users()[0].checksum()));
    apply(&conn, &edited, MigrateOptions::default()).unwrap();
    let rows = history(&conn).unwrap();
    let repair_row = rows
        .iter()
        .find(|r| r.action == HistoryAction::Repair)
        .unwrap();
    assert_eq!(repair_row.previous_checksum, Some(users()[0].checksum()));
    assert_eq!(
        rows[0].checksum,
        Some(users()[0].checksum()),
        "the apply row keeps its checksum"
    );
    // A removed file is missing, and a repair accepts that too.
    let fewer =
        Migrations::new(vec![Migration::new(3, "posts", "CREATE TABLE posts(p);")]).unwrap();
    let s = status(&conn, Some(&fewer)).unwrap();
    assert_eq!(s.in_state(MigrationState::Missing).count(), 2);
    repair(&conn, &fewer).unwrap();
    assert!(status(&conn, Some(&fewer)).unwrap().problems.is_empty());
}

#[test]
fn scripts_that_control_transactions_are_refused_when_read() {
    let e = Migrations::new(vec![Migration::new(
        1,
        "wrapped",
        "BEGIN;\nCREATE TABLE a(x);\nCOMMIT;",
    )])
    .unwrap_err();
    assert!(
        e.message
            .contains("the up script of migration 1 (wrapped), statement 1 (line 1): BEGIN;"),
        "{e}"
    );
}

#[test]
fn a_user_version_the_history_does_not_explain_blocks() {
    let (_dir, conn) = db();
    conn.execute_batch("PRAGMA user_version = 5").unwrap();
    let e = apply(
        &conn,
        &Migrations::new(users()).unwrap(),
        MigrateOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("PRAGMA user_version is 5 but the database has no migration history")
            && e.message.contains("resilite migrate baseline"),
        "{e}"
    );
}

/// A database whose schema another tool made (user_version 7, no
/// history) is adopted at migration 1 without running it: migration 1 is
/// applied as far as the history says, user_version is 1, the next run
/// applies migration 2 alone, and a later change to the baselined script
/// is caught as for any applied migration.
#[test]
fn baseline_adopts_a_schema_made_elsewhere_then_migrations_continue() {
    let (_dir, conn) = db();
    conn.execute_batch(
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users(name) VALUES ('ada'); PRAGMA user_version = 7;",
    )
    .unwrap();
    let m = Migrations::new(users()).unwrap();
    let blocked = apply(&conn, &m, MigrateOptions::default()).unwrap_err();
    assert!(blocked.message.contains("baseline"), "{blocked}");

    let plan = baseline_plan(&conn, &m, 1).unwrap();
    assert_eq!(snapshot(&conn).1, 7, "the plan writes nothing");
    assert!(history(&conn).unwrap().is_empty());
    let report = baseline(&conn, &m, 1).unwrap();
    assert_eq!(report, plan);
    assert_eq!(report.version, 1);
    assert_eq!(report.previous_user_version, 7);
    assert_eq!(report.recorded, [(1, "create_users".to_string())]);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(snapshot(&conn).1, 1);
    let h = history(&conn).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].action, h[0].success), (HistoryAction::Baseline, true));
    assert_eq!(
        h[0].checksum.as_deref(),
        Some(users()[0].checksum().as_str())
    );
    let s = status(&conn, Some(&m)).unwrap();
    assert!(!s.is_blocked(), "{:?}", s.problems);
    assert_eq!(s.migrations[0].state, MigrationState::Applied);
    assert_eq!(s.migrations[1].state, MigrationState::Pending);

    let run = apply(&conn, &m, MigrateOptions::default()).unwrap();
    assert_eq!(
        run.applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        [2]
    );
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM users WHERE email IS NULL", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows, 1, "the adopted rows are kept");

    let mut changed = users();
    changed[0] = Migration::new(
        1,
        "create_users",
        "CREATE TABLE users(id INTEGER PRIMARY KEY);",
    );
    let s = status(&conn, Some(&Migrations::new(changed).unwrap())).unwrap();
    assert_eq!(s.migrations[0].state, MigrationState::Changed);
}

/// A baseline is refused, with nothing written, at a version the source
/// lacks, on a database whose schema does not hold what the migrations
/// create (each missing thing named), and on a database resilite has
/// already migrated.
#[test]
fn baseline_refuses_what_it_cannot_vouch_for_and_writes_nothing() {
    let (_dir, conn) = db();
    conn.execute_batch("CREATE TABLE users(id INTEGER PRIMARY KEY); PRAGMA user_version = 3;")
        .unwrap();
    let m = Migrations::new(users()).unwrap();
    let before = snapshot(&conn);

    let e = baseline(&conn, &m, 9).unwrap_err();
    assert_eq!(e.class, ErrorClass::BadInput);
    assert!(e.message.contains("there is no migration 9"), "{e}");

    let e = baseline(&conn, &m, 2).unwrap_err();
    assert_eq!(e.class, ErrorClass::BadInput);
    assert!(
        e.message
            .contains("does not hold what migrations 1 to 2 create")
            && e.message.contains("name")
            && e.message.contains("email"),
        "{e}"
    );
    assert_eq!(snapshot(&conn), before);
    assert!(history(&conn).unwrap().is_empty());
    assert!(conn.is_autocommit(), "the transaction was rolled back");

    let (_dir, conn) = db();
    apply(
        &conn,
        &Migrations::new(users()[..1].to_vec()).unwrap(),
        MigrateOptions::default(),
    )
    .unwrap();
    let e = baseline(&conn, &m, 2).unwrap_err();
    assert!(e.message.contains("already has a migration history"), "{e}");
    assert_eq!(history(&conn).unwrap().len(), 1);
}

/// A rebuild of a parent table runs with foreign keys off: its children
/// keep their rows (with them on, the DROP would cascade); rows left
/// breaking a key fail the migration.
#[test]
fn rebuilding_a_parent_table_keeps_its_children() {
    let (_dir, conn) = db();
    conn.execute_batch(
        "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE);
         INSERT INTO parent VALUES (1, 'a'); INSERT INTO child VALUES (1, 1);",
    )
    .unwrap();
    let rebuild = Migration::new(
        1,
        "rebuild_parent",
        "CREATE TABLE parent_new(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');
         INSERT INTO parent_new SELECT id, name FROM parent;
         DROP TABLE parent;
         ALTER TABLE parent_new RENAME TO parent;",
    );
    apply(
        &conn,
        &Migrations::new(vec![rebuild.clone()]).unwrap(),
        MigrateOptions::default(),
    )
    .unwrap();
    let children: i64 = conn
        .query_row("SELECT count(*) FROM child", [], |r| r.get(0))
        .unwrap();
    assert_eq!(children, 1);
    let orphaning = Migration::new(2, "orphan", "DELETE FROM parent;");
    let e = apply(
        &conn,
        &Migrations::new(vec![rebuild, orphaning]).unwrap(),
        MigrateOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Constraint, "{e}");
    assert!(
        e.message
            .contains("breaking a foreign key (child rowid 1 -> parent)"),
        "{e}"
    );
}

/// Rows that broke a foreign key before the migration do not fail it.
#[test]
fn violations_already_there_do_not_fail_a_migration() {
    let (_dir, conn) = db();
    conn.execute_batch(
        "PRAGMA foreign_keys=OFF;
         CREATE TABLE parent(id INTEGER PRIMARY KEY);
         CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));
         INSERT INTO child VALUES (1, 42);
         PRAGMA foreign_keys=ON;",
    )
    .unwrap();
    let m = Migrations::new(vec![Migration::new(
        1,
        "more",
        "ALTER TABLE child ADD COLUMN note TEXT; INSERT INTO parent VALUES (7);",
    )])
    .unwrap();
    let report = apply(&conn, &m, MigrateOptions::default()).unwrap();
    assert_eq!(report.applied.len(), 1);
    let parents: i64 = conn
        .query_row("SELECT count(*) FROM parent", [], |r| r.get(0))
        .unwrap();
    assert_eq!(parents, 1, "the script ran once in effect");
}

/// With an operation-log position in the database, each applied migration
/// moves it one past, inside its transaction; a dry run does not.
#[test]
fn each_migration_moves_the_op_log_position_past_the_log() {
    let (_dir, conn) = db();
    conn.execute_batch("CREATE TABLE _resilite_op_log (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL); INSERT INTO _resilite_op_log VALUES (1, 7);").unwrap();
    let ctx = RunContext {
        backup: Some("b".into()),
        barrier: Some(OpLogBarrier::default()),
    };
    let m = Migrations::new(users()).unwrap();
    let dry = run(
        &conn,
        &m,
        &MigrateOptions {
            dry_run: true,
            ..Default::default()
        },
        &ctx,
    )
    .unwrap();
    assert_eq!(dry.op_log_barrier, None);
    let report = run(&conn, &m, &MigrateOptions::default(), &ctx).unwrap();
    assert_eq!(report.op_log_barrier, Some((7, 9)));
    assert_eq!(crate::writer::op_log_position(&conn).unwrap(), Some(9));
    assert_eq!(history(&conn).unwrap()[0].backup.as_deref(), Some("b"));
}
