//! Migrations through the runtime: `rt.migrate` on the writer's
//! connection, `rt.migration_status`, the migrations of
//! `schema.migrations_dir` at start, the operation log across a
//! migration, and the properties (applied automatically at start; a
//! failure rolled back and logged; a rollback to k equal to applying 1..k).

mod common;

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use resilite::{
    CheckpointMode, ErrorClass, HistoryAction, Maintenance, MigrateOptions, Migration,
    MigrationState, Migrations, Runtime, Statement, Value,
};
use resilite_actors::migrate::{self as engine, RunContext};

use common::{config_in, open_direct, start_with};

/// A database's content as the tests compare it: the schema (type, name,
/// table, SQL with whitespace and double quotes removed), every row of
/// every table, and `user_version`; resilite's own `_resilite_*` tables
/// left out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    schema: Vec<(String, String, String, String)>,
    rows: Vec<String>,
    user_version: i64,
}

fn snapshot(db: &Path) -> Snapshot {
    let c = open_direct(db);
    let mut stmt = c
        .prepare(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema
             WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_resilite\\_%' ESCAPE '\\'
             ORDER BY type, name",
        )
        .unwrap();
    let schema: Vec<(String, String, String, String)> = stmt
        .query_map([], |r| {
            let sql: String = r.get(3)?;
            let sql: String = sql
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '"')
                .collect();
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, sql))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut rows = Vec::new();
    for (kind, name, _, _) in &schema {
        if kind != "table" {
            continue;
        }
        let mut stmt = c
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .unwrap();
        let width = stmt.column_count();
        let mut q = stmt.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let values: Vec<rusqlite::types::Value> =
                (0..width).map(|i| r.get(i).unwrap()).collect();
            rows.push(format!("{name}: {values:?}"));
        }
    }
    let user_version = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    Snapshot {
        schema,
        rows,
        user_version,
    }
}

/// Write `migrations` to `dir` as `NNNN_name.up.sql` / `.down.sql` files.
fn write_dir(dir: &Path, migrations: &[Migration]) {
    std::fs::create_dir_all(dir).unwrap();
    for m in migrations {
        let stem = format!("{:04}_{}", m.version(), m.name());
        std::fs::write(dir.join(format!("{stem}.up.sql")), m.up()).unwrap();
        if let Some(down) = m.down() {
            std::fs::write(dir.join(format!("{stem}.down.sql")), down).unwrap();
        }
    }
}

fn blog() -> Vec<Migration> {
    vec![
        Migration::new(
            1,
            "create_users",
            "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n",
        )
        .with_down("DROP TABLE users;\n"),
        Migration::new(
            2,
            "add_email",
            "ALTER TABLE users ADD COLUMN email TEXT;\nCREATE INDEX users_email ON users(email);\n",
        )
        .with_down("DROP INDEX users_email;\nALTER TABLE users DROP COLUMN email;\n"),
        Migration::new(
            3,
            "create_posts",
            "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), body TEXT);\n",
        )
        .with_down("DROP TABLE posts;\n"),
    ]
}

fn migrations(list: Vec<Migration>) -> Migrations {
    Migrations::new(list).unwrap()
}

async fn backups_labelled(rt: &Runtime, label: &str) -> usize {
    rt.backups()
        .await
        .unwrap()
        .iter()
        .filter(|b| b.label == label)
        .count()
}

fn history(db: &Path) -> Vec<resilite::HistoryEntry> {
    engine::history(&open_direct(db)).unwrap()
}

/// `rt.migrate` applies the pending migrations in order after a verified
/// `pre-migration` backup (in the catalog, named in each history row);
/// running it again is a no-op with no second backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_pending_migrations_once_after_a_pre_migration_backup() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    let m = migrations(blog());
    let report = t.rt.migrate(&m, MigrateOptions::default()).await.unwrap();
    assert_eq!(
        report.applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!((report.from_version, report.to_version), (0, 3));
    assert_eq!(report.schema.tables_added, ["users", "posts"]);
    let backup = report.backup.clone().expect("a pre-migration backup");
    assert_eq!(backups_labelled(&t.rt, "pre-migration").await, 1);
    let catalog = t.rt.backups().await.unwrap();
    let taken = catalog.iter().find(|b| b.name == backup).unwrap();
    assert_eq!(taken.verified, Some(true));
    assert_eq!(taken.user_version, 0, "taken before the migrations");
    let rows = history(&t.db_path());
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r.success && r.backup.as_deref() == Some(backup.as_str())));

    let again = t.rt.migrate(&m, MigrateOptions::default()).await.unwrap();
    assert!(again.is_noop());
    assert_eq!((again.from_version, again.to_version), (3, 3));
    assert_eq!(
        backups_labelled(&t.rt, "pre-migration").await,
        1,
        "a no-op takes no backup"
    );
    assert_eq!(history(&t.db_path()).len(), 3);
    let status = t.rt.migration_status(&m).await.unwrap();
    assert_eq!(status.user_version, 3);
    assert_eq!(status.pending(), 0);
    assert!(status.problems.is_empty(), "{:?}", status.problems);
    t.rt.shutdown().await.unwrap();
}

/// A database the application made before it used migrations (its
/// `users` table and rows, a `user_version` of its own) is refused by
/// `rt.migrate` with advice to baseline; `rt.baseline_migrations` records
/// migration 1 as applied without running it, after which `rt.migrate`
/// applies 2 and 3 alone and the rows are kept. A second baseline is
/// refused and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_adopts_a_database_the_application_made_then_migrate_continues() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    open_direct(&t.db_path())
        .execute_batch(
            "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL); INSERT INTO users(name) VALUES ('ada'); PRAGMA user_version = 12;",
        )
        .unwrap();
    let m = migrations(blog());
    let e =
        t.rt.migrate(&m, MigrateOptions::default())
            .await
            .unwrap_err();
    assert!(e.message.contains("baseline"), "{e}");

    let report = t.rt.baseline_migrations(&m, 1).await.unwrap();
    assert_eq!(report.recorded, [(1, "create_users".to_string())]);
    assert_eq!(report.previous_user_version, 12);
    let run = t.rt.migrate(&m, MigrateOptions::default()).await.unwrap();
    assert_eq!(
        run.applied.iter().map(|s| s.version).collect::<Vec<_>>(),
        [2, 3]
    );
    let rows =
        t.rt.query(Statement::sql("SELECT name FROM users"))
            .await
            .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Text("ada".into())]]);
    let actions: Vec<_> = history(&t.db_path()).iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            HistoryAction::Baseline,
            HistoryAction::Apply,
            HistoryAction::Apply
        ]
    );

    let e = t.rt.baseline_migrations(&m, 3).await.unwrap_err();
    assert!(e.message.contains("already has a migration history"), "{e}");
    assert_eq!(history(&t.db_path()).len(), 3);
    t.rt.shutdown().await.unwrap();
}

/// A migration failing at its third statement, after a DDL and a DML
/// statement of its own: the database is exactly as before it (schema,
/// rows, user_version); the history records the failure and the statement;
/// the migration after it is not attempted.
///
/// Property 5: Migration Rollback on Failure. All changes of the failed
/// migration are rolled back, and the error (SQLite's message and the
/// failing statement) is logged in the history and returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_failing_halfway_leaves_the_database_exactly_as_before() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    let mut list = blog();
    list.push(Migration::new(
        4,
        "broken",
        "CREATE TABLE tags(t TEXT);\nUPDATE users SET name = 'changed';\nINSERT INTO posts(user_id, body) VALUES (1, NULL, 'too many');\nCREATE TABLE never(x);\n",
    ));
    list.push(Migration::new(5, "after", "CREATE TABLE after_broken(x);"));
    let m = migrations(list);
    t.rt.migrate(
        &m,
        MigrateOptions {
            to: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    t.rt.execute(Statement::new(
        "INSERT INTO users(name, email) VALUES (?1, ?2)",
        [Value::from("ada"), Value::from("ada@example.org")],
    ))
    .await
    .unwrap();
    let before = snapshot(&t.db_path());
    let e =
        t.rt.migrate(&m, MigrateOptions::default())
            .await
            .unwrap_err();
    assert_eq!(e.class, ErrorClass::Sql);
    assert!(
        e.message
            .contains("migration 4 (broken) failed at statement 3"),
        "{e}"
    );
    assert!(e.message.contains("3 values for 2 columns"), "{e}");
    assert!(
        e.message.contains("later migrations were not attempted"),
        "{e}"
    );
    assert!(
        e.detail
            .contains("INSERT INTO posts(user_id, body) VALUES (1, NULL, 'too many');"),
        "{e}"
    );
    assert_eq!(snapshot(&t.db_path()), before);
    let rows = history(&t.db_path());
    let failed = rows.last().unwrap();
    assert_eq!(
        (failed.version, failed.action, failed.success),
        (4, HistoryAction::Apply, false)
    );
    assert_eq!(
        failed.failed_statement.as_deref(),
        Some("INSERT INTO posts(user_id, body) VALUES (1, NULL, 'too many');")
    );
    assert!(failed
        .error
        .as_deref()
        .unwrap()
        .contains("3 values for 2 columns"));
    assert!(rows.iter().all(|r| r.version != 5), "5 was not attempted");
    let status = t.rt.migration_status(&m).await.unwrap();
    let states: Vec<_> = status
        .migrations
        .iter()
        .map(|m| (m.version, m.state))
        .collect();
    assert_eq!(
        states[3..],
        [(4, MigrationState::Failed), (5, MigrationState::Pending)]
    );
    t.rt.shutdown().await.unwrap();
}

/// An applied migration whose file was edited is reported and blocks
/// `migrate` (nothing applied, not even the next one); the same file with
/// CRLF line endings is no edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_an_edited_applied_migration_blocks_and_crlf_does_not() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    let dir = t.dir.path().join("migrations");
    write_dir(&dir, &blog()[..2]);
    t.rt.migrate(
        &Migrations::from_dir(&dir).unwrap(),
        MigrateOptions::default(),
    )
    .await
    .unwrap();
    write_dir(&dir, &blog());
    let up = dir.join("0001_create_users.up.sql");
    let text = std::fs::read_to_string(&up).unwrap();
    std::fs::write(&up, text.replace('\n', "\r\n")).unwrap();
    let status =
        t.rt.migration_status(&Migrations::from_dir(&dir).unwrap())
            .await
            .unwrap();
    assert!(status.problems.is_empty(), "{:?}", status.problems);
    std::fs::write(&up, text.replace("TEXT NOT NULL", "TEXT")).unwrap();
    let m = Migrations::from_dir(&dir).unwrap();
    let status = t.rt.migration_status(&m).await.unwrap();
    assert_eq!(status.migrations[0].state, MigrationState::Changed);
    let e =
        t.rt.migrate(&m, MigrateOptions::default())
            .await
            .unwrap_err();
    assert!(e.message.contains("migrations are blocked"), "{e}");
    assert!(
        e.message
            .contains("0001_create_users.up.sql now has checksum"),
        "{e}"
    );
    assert!(e.message.contains("resilite migrate repair"), "{e}");
    assert_eq!(snapshot(&t.db_path()).user_version, 2, "3 was not applied");
    std::fs::remove_file(&up).unwrap();
    std::fs::remove_file(dir.join("0001_create_users.down.sql")).unwrap();
    let e =
        t.rt.migrate(
            &Migrations::from_dir(&dir).unwrap(),
            MigrateOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("migration 1 (create_users) was applied but is no longer in"),
        "{e}"
    );
    t.rt.shutdown().await.unwrap();
}

/// DROP TABLE, DROP COLUMN and a table rebuild that loses a column are
/// refused without `allow_destructive`, naming what would be lost, with
/// nothing changed; with it they apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_destructive_changes_unless_allowed() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    t.rt.migrate(&migrations(blog()), MigrateOptions::default())
        .await
        .unwrap();
    t.rt.execute(Statement::sql(
        "INSERT INTO users(name, email) VALUES ('a', 'a@x')",
    ))
    .await
    .unwrap();
    let cases = [
        ("DROP TABLE posts;", "table posts"),
        (
            "DROP INDEX users_email; ALTER TABLE users DROP COLUMN email;",
            "column users.email",
        ),
        (
            "CREATE TABLE users_new(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO users_new SELECT id, name FROM users;
             DROP TABLE users;
             ALTER TABLE users_new RENAME TO users;",
            "column users.email",
        ),
    ];
    for (script, lost) in cases {
        let mut list = blog();
        list.push(Migration::new(4, "destructive", script));
        let m = migrations(list);
        let before = snapshot(&t.db_path());
        let e =
            t.rt.migrate(&m, MigrateOptions::default())
                .await
                .unwrap_err();
        assert_eq!(e.class, ErrorClass::Forbidden, "{e}");
        assert!(e.message.contains(&format!("would lose {lost}")), "{e}");
        assert!(e.message.contains("--allow-destructive"), "{e}");
        assert_eq!(snapshot(&t.db_path()), before, "{script}: nothing changed");
    }
    // A rebuild that keeps every column and row is no loss.
    let mut list = blog();
    list.push(Migration::new(
        4,
        "rebuild_users",
        "CREATE TABLE users_new(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, CHECK (length(name) > 0));
         INSERT INTO users_new SELECT id, name, email FROM users;
         DROP TABLE users;
         ALTER TABLE users_new RENAME TO users;
         CREATE INDEX users_email ON users(email);",
    ));
    let report =
        t.rt.migrate(&migrations(list.clone()), MigrateOptions::default())
            .await
            .unwrap();
    assert_eq!(report.schema.tables_rebuilt, ["users"]);
    list.push(Migration::new(5, "drop_posts", "DROP TABLE posts;"));
    let report =
        t.rt.migrate(
            &migrations(list),
            MigrateOptions {
                allow_destructive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.schema.tables_removed, ["posts"]);
    assert_eq!(snapshot(&t.db_path()).user_version, 5);
    t.rt.shutdown().await.unwrap();
}

/// `to: Some(N)` runs the down scripts from the highest: the schema is the
/// one of version N again (rolling back drops tables: destructive, so the
/// flag is needed). A migration without a down script stops the rollback
/// before it, saying which and where the database is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_rolls_back_to_a_version_and_stops_before_one_without_down() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    let m = migrations(blog());
    t.rt.migrate(
        &m,
        MigrateOptions {
            to: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let at_one = snapshot(&t.db_path());
    t.rt.migrate(&m, MigrateOptions::default()).await.unwrap();
    let back = MigrateOptions {
        to: Some(1),
        allow_destructive: true,
        ..Default::default()
    };
    let report = t.rt.migrate(&m, back.clone()).await.unwrap();
    assert_eq!(
        report
            .rolled_back
            .iter()
            .map(|s| s.version)
            .collect::<Vec<_>>(),
        [3, 2]
    );
    assert_eq!(snapshot(&t.db_path()), at_one);
    let rows = history(&t.db_path());
    assert_eq!(
        rows.iter()
            .filter(|r| r.action == HistoryAction::Rollback)
            .map(|r| r.version)
            .collect::<Vec<_>>(),
        [3, 2]
    );
    // 2 loses its down script: back from 3, the rollback stops before 2.
    let mut list = blog();
    list[1] = Migration::new(2, "add_email", list[1].up());
    let m = migrations(list);
    t.rt.migrate(&m, MigrateOptions::default()).await.unwrap();
    let e = t.rt.migrate(&m, back).await.unwrap_err();
    assert!(
        e.message.contains("the rollback stopped before migration 2 (add_email): it has no down script; the database is at version 2 (rolled back: 3)"),
        "{e}"
    );
    assert_eq!(snapshot(&t.db_path()).user_version, 2);
    t.rt.shutdown().await.unwrap();
}

/// A dry run proves the migrations apply and reports the schema change,
/// writing nothing: the schema, rows, user_version and history are as
/// before, and no backup is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_dry_run_reports_the_change_and_writes_nothing() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    let m = migrations(blog());
    t.rt.migrate(
        &m,
        MigrateOptions {
            to: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let before = (snapshot(&t.db_path()), history(&t.db_path()));
    let report =
        t.rt.migrate(
            &m,
            MigrateOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(report.dry_run);
    assert_eq!((report.from_version, report.to_version), (1, 3));
    assert_eq!(report.schema.columns_added, ["users.email"]);
    assert_eq!(report.schema.tables_added, ["posts"]);
    assert_eq!(report.schema.indexes_added, ["users_email"]);
    assert_eq!(report.backup, None);
    assert_eq!((snapshot(&t.db_path()), history(&t.db_path())), before);
    assert_eq!(
        backups_labelled(&t.rt, "pre-migration").await,
        1,
        "only the first run's"
    );
    t.rt.shutdown().await.unwrap();
}

/// Two `rt.migrate` calls at once: each migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrate_calls_apply_each_migration_once() {
    let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
    let m = migrations(blog());
    let (a, b) = tokio::join!(
        t.rt.migrate(&m, MigrateOptions::default()),
        t.rt.migrate(&m, MigrateOptions::default())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.applied.len() + b.applied.len(), 3, "{a:?} {b:?}");
    let applied: Vec<u32> = history(&t.db_path()).iter().map(|r| r.version).collect();
    assert_eq!(applied, [1, 2, 3]);
    assert_eq!(backups_labelled(&t.rt, "pre-migration").await, 1);
    t.rt.shutdown().await.unwrap();
}

/// `schema.migrations_dir`: `Runtime::start` applies the pending
/// migrations before it returns (ready then); a failing migration, or an
/// applied one whose file changed, fails the start with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_applies_the_configured_migrations_or_fails_with_their_error() {
    let dir = tempfile::tempdir().unwrap();
    let migrations_dir = dir.path().join("migrations");
    write_dir(&migrations_dir, &blog()[..2]);
    let mut config = config_in(&dir);
    config.backup.interval = Duration::ZERO;
    config.schema.migrations_dir = Some(migrations_dir.clone());
    let rt = Runtime::start(config.clone()).await.unwrap();
    assert_eq!(rt.ready(), Ok(()));
    let status = rt.configured_migration_status().await.unwrap();
    assert_eq!(status.user_version, 2);
    assert_eq!(
        status.source.as_deref(),
        Some(migrations_dir.to_str().unwrap())
    );
    rt.execute(Statement::sql(
        "INSERT INTO users(name, email) VALUES ('a', 'a@x')",
    ))
    .await
    .unwrap();
    rt.shutdown().await.unwrap();

    write_dir(
        &migrations_dir,
        &[Migration::new(
            3,
            "broken",
            "CREATE TABLE x(y);\nINSERT INTO nowhere VALUES (1);",
        )],
    );
    let Err(e) = Runtime::start(config.clone()).await else {
        panic!("the start must fail")
    };
    assert!(e.message.contains("did not apply at start"), "{e}");
    assert!(e.message.contains("migration 3 (broken) failed at statement 2 of 0003_broken.up.sql (line 2): no such table: nowhere"), "{e}");
    assert_eq!(e.detail, "statement: INSERT INTO nowhere VALUES (1);");
    std::fs::remove_file(migrations_dir.join("0003_broken.up.sql")).unwrap();

    std::fs::write(
        migrations_dir.join("0002_add_email.up.sql"),
        "ALTER TABLE users ADD COLUMN mail TEXT;",
    )
    .unwrap();
    let Err(e) = Runtime::start(config.clone()).await else {
        panic!("the start must fail")
    };
    assert!(
        e.message
            .contains("migration 2 (add_email) was applied with checksum"),
        "{e}"
    );
    // The failed starts stopped their runtime: a new one starts (the file
    // put back as it was applied).
    write_dir(&migrations_dir, &blog()[1..2]);
    let rt = Runtime::start(config).await.unwrap();
    assert_eq!(snapshot(&rt.config().database.path).rows.len(), 1);
    rt.shutdown().await.unwrap();
}

/// With the operation log on, a migration is a barrier in the log: it
/// moves the database's position one past the log, and the writer records
/// that as a gap, so that no recovery from a backup taken before it
/// replays the log across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_is_a_barrier_the_writer_records_in_the_operation_log() {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v)"))
        .await
        .unwrap();
    for v in 0..4 {
        t.rt.execute(Statement::new(
            "INSERT INTO t VALUES (?1)",
            [Value::from(v)],
        ))
        .await
        .unwrap();
    }
    // The engine on the writer's connection, as `rt.migrate` runs it
    // (without its backups, which trim the log).
    let handle = common::writer_handle(&t.rt).await;
    let journal = t.rt.config().journal_db();
    let m = migrations(blog());
    let report = handle
        .call(move |c| {
            let ctx = RunContext {
                backup: None,
                barrier: Some(engine::OpLogBarrier {
                    journal: Some(journal),
                    create: true,
                }),
            };
            engine::run(c, &m, &MigrateOptions::default(), &ctx)
        })
        .await
        .unwrap();
    assert_eq!(
        report.op_log_barrier,
        Some((5, 8)),
        "one number per migration"
    );
    t.rt.execute(Statement::new(
        "INSERT INTO t VALUES (?1)",
        [Value::from(9)],
    ))
    .await
    .unwrap();
    let log = open_direct(&t.rt.config().journal_path());
    let gaps = resilite_actors::journal::op_log::gaps(&log).unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].after_seq, gaps[0].through_seq), (5, 8));
    assert!(
        gaps[0].reason.contains("schema migration"),
        "{}",
        gaps[0].reason
    );
    let seqs: Vec<i64> = resilite_actors::journal::op_log::after(&log, 0, 100)
        .unwrap()
        .iter()
        .map(|o| o.seq)
        .collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4, 5, 9],
        "numbering goes on past the barrier"
    );
    drop(handle);
    t.rt.shutdown().await.unwrap();
}

/// With the operation log on, `rt.migrate` is followed by a
/// `post-migration` backup: a recovery replays the writes after the
/// migration on the new schema. With that backup damaged, the recovery
/// falls back to the `pre-migration` one and restores it as it was,
/// without replaying the log onto its older schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_migration_replays_on_the_new_schema_only() {
    let t = start_with(|c| {
        c.backup.interval = Duration::ZERO;
        c.backup.op_log = true;
        c.backup.auto_recover = false;
    })
    .await;
    let m = migrations(blog()[..1].to_vec());
    t.rt.migrate(&m, MigrateOptions::default()).await.unwrap();
    for i in 0..20 {
        t.rt.execute(Statement::new(
            "INSERT INTO users(name) VALUES (?1)",
            [Value::from(format!("u{i}"))],
        ))
        .await
        .unwrap();
    }
    let m = migrations(blog());
    let report = t.rt.migrate(&m, MigrateOptions::default()).await.unwrap();
    let (pre, post) = (
        report.backup.clone().unwrap(),
        report.post_backup.clone().unwrap(),
    );
    let catalog = t.rt.backups().await.unwrap();
    let seq = |name: &str| {
        catalog
            .iter()
            .find(|b| b.name == name)
            .unwrap()
            .op_log_seq
            .unwrap()
    };
    assert_eq!(
        seq(&post),
        seq(&pre) + 2,
        "two migrations, two barrier numbers"
    );
    for i in 0..20 {
        t.rt.execute(Statement::new(
            "INSERT INTO posts(user_id, body) VALUES (?1, ?2)",
            [Value::from(i + 1), Value::from(format!("p{i}"))],
        ))
        .await
        .unwrap();
    }

    corrupt(&t.db_path(), &t.rt).await;
    let done = t.rt.recover().await.unwrap();
    assert_eq!(done.restored, post);
    assert_eq!((done.replayed, done.replay_skipped.clone()), (20, None));
    let posts =
        t.rt.query(Statement::sql("SELECT count(*) FROM posts"))
            .await
            .unwrap();
    assert_eq!(posts.rows, vec![vec![Value::Integer(20)]]);

    let backup_dir = t.db_path().parent().unwrap().join("backups");
    let mut bytes = std::fs::read(backup_dir.join(&post)).unwrap();
    let at = bytes.len() / 2;
    bytes[at..at + 64].iter_mut().for_each(|b| *b ^= 0xFF);
    std::fs::write(backup_dir.join(&post), bytes).unwrap();
    corrupt(&t.db_path(), &t.rt).await;
    let done = t.rt.recover().await.unwrap();
    assert_eq!(done.restored, pre);
    assert_eq!(done.replayed, 0);
    assert!(done.replay_skipped.is_some(), "{done:?}");
    let now = snapshot(&t.db_path());
    assert_eq!(now.user_version, 1);
    assert_eq!(now.rows.len(), 20, "the users of the pre-migration backup");
    t.rt.shutdown().await.unwrap();
}

/// Checkpoint, then overwrite the start of the `users` table's root page.
async fn corrupt(db: &Path, rt: &Runtime) {
    rt.maintain(Maintenance::Checkpoint(CheckpointMode::Truncate))
        .await
        .unwrap();
    let (root, page_size): (i64, i64) = {
        let c = open_direct(db);
        let root = c
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 'users'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (
            root,
            c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap(),
        )
    };
    let mut bytes = std::fs::read(db).unwrap();
    let at = ((root - 1) * page_size) as usize;
    bytes[at..at + 64].iter_mut().for_each(|b| *b = 0xFF);
    std::fs::write(db, &bytes).unwrap();
}

// ---- Properties -------------------------------------------------------

/// Generated migrations: each a few changes on the schema built so far
/// (a table created, a column added, an index, a table renamed, rows
/// inserted), its down script undoing them in reverse order.
fn generated(choices: &[Vec<(u8, usize)>]) -> Vec<Migration> {
    let mut tables: Vec<String> = Vec::new();
    let mut n = 0;
    let mut list = Vec::new();
    for (i, changes) in choices.iter().enumerate() {
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for &(kind, pick) in changes {
            n += 1;
            let kind = if tables.is_empty() { 0 } else { kind };
            let t = if tables.is_empty() {
                String::new()
            } else {
                tables[pick % tables.len()].clone()
            };
            match kind {
                0 => {
                    up.push(format!(
                        "CREATE TABLE t{n}(id INTEGER PRIMARY KEY, a TEXT);"
                    ));
                    down.push(format!("DROP TABLE t{n};"));
                    tables.push(format!("t{n}"));
                }
                1 => {
                    up.push(format!("ALTER TABLE {t} ADD COLUMN c{n} INTEGER;"));
                    down.push(format!("ALTER TABLE {t} DROP COLUMN c{n};"));
                }
                2 => {
                    up.push(format!("CREATE INDEX i{n} ON {t}(a);"));
                    down.push(format!("DROP INDEX i{n};"));
                }
                3 => {
                    up.push(format!("ALTER TABLE {t} RENAME TO r{n};"));
                    down.push(format!("ALTER TABLE r{n} RENAME TO {t};"));
                    let at = tables.iter().position(|x| *x == t).unwrap();
                    tables[at] = format!("r{n}");
                }
                _ => {
                    up.push(format!("INSERT INTO {t}(a) VALUES ('row {n}');"));
                    down.push(format!("DELETE FROM {t} WHERE a = 'row {n}';"));
                }
            }
        }
        down.reverse();
        list.push(
            Migration::new(i as u32 + 1, format!("m{}", i + 1), up.join("\n"))
                .with_down(down.join("\n")),
        );
    }
    list
}

fn choices() -> impl Strategy<Value = Vec<Vec<(u8, usize)>>> {
    prop::collection::vec(prop::collection::vec((0u8..5, 0usize..8), 1..4), 1..6)
}

/// The database at `db` (created) with `list` applied through the engine
/// on a connection of its own: the reference the runtime is compared with.
fn reference(db: &Path, list: &[Migration]) -> Snapshot {
    let conn = rusqlite::Connection::open(db).unwrap();
    if !list.is_empty() {
        engine::run(
            &conn,
            &migrations(list.to_vec()),
            &MigrateOptions::default(),
            &RunContext::default(),
        )
        .unwrap();
    }
    drop(conn);
    snapshot(db)
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(16),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property: migrations 1..N rolled back to k equal 1..k. Applying
    /// generated migrations 1..N through the runtime, then `to: Some(k)`,
    /// gives the schema (sqlite_schema rows, normalised), rows and
    /// user_version of applying 1..k alone.
    #[test]
    fn migrations_rolled_back_to_k_equal_migrations_applied_to_k(
        choices in choices(),
        k_pick in 0usize..8,
    ) {
        let list = generated(&choices);
        let k = k_pick % (list.len() + 1);
        let dir = tempfile::tempdir().unwrap();
        let expected = reference(&dir.path().join("reference.db"), &list[..k]);
        let got = tokio().block_on(async {
            let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
            let m = migrations(list.clone());
            t.rt.migrate(&m, MigrateOptions::default()).await.unwrap();
            let back = MigrateOptions { to: Some(k as u32), allow_destructive: true, ..Default::default() };
            let report = t.rt.migrate(&m, back).await.unwrap();
            assert_eq!(report.rolled_back.len(), list.len() - k);
            t.rt.shutdown().await.unwrap();
            snapshot(&t.db_path())
        });
        prop_assert_eq!(got, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(8),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property 4: Automatic Migration Application. For any generated
    /// migrations 1..N and a database already at any k of them, a runtime
    /// started with `schema.migrations_dir` applies k+1..N before it is
    /// ready: the database equals one with 1..N applied, each migration
    /// applied once.
    #[test]
    fn start_applies_every_pending_migration_for_any_starting_version(
        choices in choices(),
        k_pick in 0usize..8,
    ) {
        let list = generated(&choices);
        let k = k_pick % (list.len() + 1);
        let dir = tempfile::tempdir().unwrap();
        let expected = reference(&dir.path().join("reference.db"), &list);
        let mut config = config_in(&dir);
        config.backup.interval = Duration::ZERO;
        std::fs::create_dir_all(config.database.path.parent().unwrap()).unwrap();
        reference(&config.database.path, &list[..k]);
        write_dir(&dir.path().join("migrations"), &list);
        config.schema.migrations_dir = Some(dir.path().join("migrations"));
        let (got, applied) = tokio().block_on(async {
            let rt = Runtime::start(config.clone()).await.unwrap();
            assert_eq!(rt.ready(), Ok(()));
            rt.shutdown().await.unwrap();
            let applied: Vec<u32> = history(&config.database.path)
                .iter()
                .filter(|r| r.action == HistoryAction::Apply)
                .map(|r| r.version)
                .collect();
            (snapshot(&config.database.path), applied)
        });
        prop_assert_eq!(got, expected);
        prop_assert_eq!(applied, (1..=list.len() as u32).collect::<Vec<_>>());
    }

    /// Property 5: Migration Rollback on Failure. For any generated
    /// migrations with a failing statement (unknown table, syntax error,
    /// NOT NULL constraint) placed after any number of good statements of
    /// migration f: the run stops at f, the database is exactly as after
    /// 1..f-1 (schema, rows, user_version), the history logs f's failure
    /// with the failing statement, and no later migration is attempted.
    #[test]
    fn a_failing_migration_is_rolled_back_whole_and_logged_with_its_statement(
        choices in choices(),
        f_pick in 0usize..8,
        at_pick in 0usize..8,
        failure in 0u8..3,
    ) {
        let mut list = generated(&choices);
        let f = f_pick % list.len();
        let bad = match failure {
            0 => "INSERT INTO no_such_table VALUES (1);",
            1 => "CREATE TABLE (broken;",
            _ => "INSERT INTO must_fill(v) VALUES (NULL);",
        };
        let mut statements: Vec<String> = list[f].up().lines().map(String::from).collect();
        statements.insert(0, "CREATE TABLE must_fill(v TEXT NOT NULL);".into());
        let at = 1 + at_pick % statements.len();
        statements.insert(at, bad.to_string());
        list[f] = Migration::new(f as u32 + 1, format!("m{}", f + 1), statements.join("\n"));
        let dir = tempfile::tempdir().unwrap();
        let expected = reference(&dir.path().join("reference.db"), &list[..f]);
        let (got, rows, error) = tokio().block_on(async {
            let t = start_with(|c| c.backup.interval = Duration::ZERO).await;
            let m = migrations(list.clone());
            let error = t.rt.migrate(&m, MigrateOptions::default()).await.unwrap_err();
            t.rt.shutdown().await.unwrap();
            (snapshot(&t.db_path()), history(&t.db_path()), error)
        });
        prop_assert_eq!(got, expected);
        let failed = rows.last().unwrap();
        prop_assert_eq!((failed.version, failed.success), (f as u32 + 1, false));
        prop_assert_eq!(failed.failed_statement.as_deref(), Some(bad));
        prop_assert!(rows.iter().all(|r| r.version <= f as u32 + 1));
        let needle = format!("statement {} ", at + 1);
        prop_assert!(error.message.contains(&needle), "{}", error);
        prop_assert!(error.detail.contains(bad), "{}", error);
    }
}
