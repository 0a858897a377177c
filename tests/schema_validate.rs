//! Schema validation in the runtime: `[schema] file` checked at start
//! (strict refuses, lenient fixes and starts, readiness waits for it),
//! `rt.validate` with data checks, `rt.fix` with dedupe through the
//! writer, and `rt.restore_removed`, on real files.

mod common;

use std::path::Path;

use proptest::prelude::*;
use resilite::config::OnStart;
use resilite::{
    Config, ErrorClass, ExpectedSchema, FindingSeverity, FixOptions, Keep, Problem, Runtime,
    StepStatus, ValidateOptions,
};

const SCHEMA: &str = r#"
[tables.users]
columns = [
  { name = "id", type = "INTEGER", primary_key = true },
  { name = "email", type = "TEXT", not_null = true, default = "''" },
  { name = "status", type = "TEXT", default = "'active'" },
]
indexes = [{ name = "users_email", columns = ["email"], unique = true }]
unique = ["email"]

[tables.orders]
columns = [
  { name = "id", type = "INTEGER", primary_key = true },
  { name = "user_id", type = "INTEGER" },
  { name = "total", type = "REAL", not_null = true, default = 0 },
]
indexes = [{ name = "orders_user", columns = ["user_id"] }]
check = [{ name = "total_not_negative", expr = "total >= 0" }]
foreign_keys = [{ column = "user_id", references = "users(id)" }]

[tables.audit]
required = false
columns = [{ name = "id", type = "INTEGER", primary_key = true }, { name = "what", type = "TEXT" }]
"#;

/// A database at `dir/data/app.db` made by `sql`, and a config on it
/// checking `schema` at start with `mode`.
fn setup(dir: &Path, sql: &str, schema: &str, mode: OnStart) -> Config {
    let db = dir.join("data").join("app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
    let file = dir.join("schema.toml");
    std::fs::write(&file, schema).unwrap();
    let mut config = Config::for_database(&db);
    config.schema.file = Some(file);
    config.schema.on_start = Some(mode);
    config
}

/// A strict start on a database missing a required table, a column and a
/// UNIQUE index is refused; the error lists each of them, and no runtime
/// is left to answer ready.
#[tokio::test(flavor = "multi_thread")]
async fn strict_start_refuses_with_the_findings_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL DEFAULT '');",
        SCHEMA,
        OnStart::Strict,
    );
    let err = match Runtime::start(config.clone()).await {
        Ok(_) => panic!("a strict start must refuse a database missing a required table"),
        Err(e) => e,
    };
    assert_eq!(err.class, ErrorClass::BadInput, "{err}");
    for expected in [
        "required table orders does not exist",
        "UNIQUE index users_email on users(email) does not exist",
        "schema.on_start = \"strict\"",
    ] {
        assert!(err.message.contains(expected), "{expected:?} not in {err}");
    }
    // Warnings alone (the optional table) do not refuse a strict start.
    let orders = "CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER, total REAL NOT NULL DEFAULT 0);
                  CREATE INDEX orders_user ON orders(user_id);
                  CREATE UNIQUE INDEX users_email ON users(email);
                  ALTER TABLE users ADD COLUMN status TEXT DEFAULT 'active';";
    common::open_direct(&config.database.path)
        .execute_batch(orders)
        .unwrap();
    let rt = Runtime::start(config).await.expect("only warnings left");
    assert_eq!(rt.ready(), Ok(()));
    let open = rt.schema_findings(false).await.unwrap();
    assert!(
        open.iter()
            .all(|f| f.finding.severity < FindingSeverity::Error),
        "{open:?}"
    );
    rt.shutdown().await.unwrap();
}

/// A lenient start creates the missing tables, columns and indexes
/// through the writer, logs them, keeps an undeclared column and its
/// data, and starts ready; the database then validates clean.
#[tokio::test(flavor = "multi_thread")]
async fn lenient_start_fixes_what_it_can_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL DEFAULT '', legacy TEXT);
         INSERT INTO users(email, legacy) VALUES ('a@x', 'keep me');",
        SCHEMA,
        OnStart::Lenient,
    );
    let rt = Runtime::start(config).await.expect("lenient start");
    assert_eq!(rt.ready(), Ok(()));
    let schema = rt.configured_schema().unwrap();
    let report = rt
        .validate(&schema, ValidateOptions::default())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{}", report.to_text());
    assert!(report
        .findings
        .iter()
        .any(|f| matches!(&f.problem, Problem::ExtraColumn { column } if column == "legacy")));
    let rows = rt
        .query(resilite::Statement::sql("SELECT legacy, status FROM users"))
        .await
        .unwrap();
    assert_eq!(
        rows.rows,
        [[
            resilite::Value::from("keep me"),
            resilite::Value::from("active")
        ]]
    );
    rt.shutdown().await.unwrap();
    let journal = rusqlite::Connection::open(dir.path().join("data/app.db.journal")).unwrap();
    let logged: Vec<String> = journal
        .prepare("SELECT action || ' ' || target FROM schema_fixes ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for expected in [
        "create_table orders",
        "create_table audit",
        "add_column status",
        "create_index users_email",
        "create_index orders_user",
    ] {
        assert!(
            logged.iter().any(|l| l == expected),
            "{expected} not in {logged:?}"
        );
    }
}

/// `rt.validate` with data checks finds the planted rows; `rt.fix` with a
/// dedupe dry run changes nothing; applied, it removes the extras through
/// the writer and records them; `rt.restore_removed` puts them back.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_dedupe_removes_records_and_restores() {
    let t = common::start().await;
    let rt = &t.rt;
    for sql in [
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL DEFAULT '', status TEXT DEFAULT 'active')",
        "INSERT INTO users(id, email) VALUES (1, 'a'), (2, 'b'), (3, 'a'), (4, 'a'), (5, 'b'), (6, 'c')",
    ] {
        rt.execute(resilite::Statement::sql(sql)).await.unwrap();
    }
    let schema = ExpectedSchema::from_toml_str(
        r#"[tables.users]
columns = [
  { name = "id", type = "INTEGER", primary_key = true },
  { name = "email", type = "TEXT", not_null = true, default = "''" },
  { name = "status", type = "TEXT", default = "'active'" },
]
indexes = [{ name = "users_email", columns = ["email"], unique = true }]
unique = ["email"]
"#,
    )
    .unwrap();
    let report = rt
        .validate(&schema, ValidateOptions { data: true })
        .await
        .unwrap();
    let groups: Vec<(Vec<i64>, i64, i64)> = report
        .findings
        .iter()
        .filter_map(|f| match &f.problem {
            Problem::Duplicate {
                rowids,
                oldest,
                newest,
                ..
            } => Some((rowids.clone(), *oldest, *newest)),
            _ => None,
        })
        .collect();
    assert_eq!(groups, [(vec![1, 3, 4], 1, 4), (vec![2, 5], 2, 5)]);

    let dry = rt
        .fix(
            &schema,
            FixOptions {
                dry_run: true,
                dedupe: Some(Keep::KeepNewest),
            },
        )
        .await
        .unwrap();
    let mut planned: Vec<i64> = dry.removed.iter().map(|r| r.rowid).collect();
    planned.sort();
    assert_eq!(planned, [1, 2, 3]);
    assert_eq!(dry.steps[0].status, StepStatus::Blocked, "{dry:?}");
    let count = |rt: &Runtime| {
        let rt = rt.clone();
        async move {
            rt.query(resilite::Statement::sql("SELECT count(*) FROM users"))
                .await
                .unwrap()
                .rows[0][0]
                .clone()
        }
    };
    assert_eq!(count(rt).await, resilite::Value::Integer(6));

    let done = rt
        .fix(
            &schema,
            FixOptions {
                dry_run: false,
                dedupe: Some(Keep::KeepNewest),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.removed.len(), 3);
    // The duplicates gone, the UNIQUE index could be created.
    assert_eq!(done.steps[0].status, StepStatus::Applied, "{done:?}");
    assert_eq!(count(rt).await, resilite::Value::Integer(3));
    let after = rt
        .validate(&schema, ValidateOptions { data: true })
        .await
        .unwrap();
    assert_eq!(after.exit_code(), 0, "{}", after.to_text());

    // The index must go before the rows come back (they share emails).
    rt.execute(resilite::Statement::sql("DROP INDEX users_email"))
        .await
        .unwrap();
    let restored = rt.restore_removed().await.unwrap();
    assert_eq!((restored.restored.len(), restored.skipped.len()), (3, 0));
    let rows = rt
        .query(resilite::Statement::sql(
            "SELECT id, email FROM users ORDER BY id",
        ))
        .await
        .unwrap();
    let ids: Vec<resilite::Value> = rows.rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        ids,
        (1..=6).map(resilite::Value::Integer).collect::<Vec<_>>()
    );
    // Nothing is left to put back.
    assert_eq!(rt.restore_removed().await.unwrap().restored.len(), 0);
    t.rt.shutdown().await.unwrap();
}

/// What one case of the property drops from a database built to the
/// schema: a required table, an optional one, a column, an index.
#[derive(Debug, Clone, Copy)]
struct Drops {
    orders: bool,
    audit: bool,
    status: bool,
    index: bool,
}

fn build(drops: Drops) -> String {
    let mut sql =
        String::from("CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL DEFAULT ''");
    if !drops.status {
        sql.push_str(", status TEXT DEFAULT 'active'");
    }
    sql.push_str("); INSERT INTO users(email) VALUES ('a@x'), ('b@x');");
    if !drops.index {
        sql.push_str("CREATE UNIQUE INDEX users_email ON users(email);");
    }
    if !drops.orders {
        sql.push_str("CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER, total REAL NOT NULL DEFAULT 0); CREATE INDEX orders_user ON orders(user_id);");
    }
    if !drops.audit {
        sql.push_str("CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT);");
    }
    sql
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(6), ..ProptestConfig::default() })]

    /// Property 3: Schema Validation on Startup. For any database that
    /// differs from the schema file by any mix of a missing required
    /// table, optional table, column and UNIQUE index, start validates it:
    /// strict refuses exactly when an error is among them and names each
    /// error, lenient starts with all of it created (the rows kept) and
    /// the database then validates clean.
    #[test]
    fn startup_validation_detects_every_difference(
        orders in any::<bool>(), audit in any::<bool>(), status in any::<bool>(), index in any::<bool>()
    ) {
        let drops = Drops { orders, audit, status, index };
        let tokio = tokio::runtime::Runtime::new().unwrap();
        tokio.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = setup(dir.path(), &build(drops), SCHEMA, OnStart::Strict);
            let errors = orders || status || index;
            match Runtime::start(config.clone()).await {
                Ok(rt) => {
                    prop_assert!(!errors, "strict start accepted {drops:?}");
                    let open = rt.schema_findings(false).await.unwrap();
                    prop_assert_eq!(
                        open.iter().any(|f| matches!(f.finding.problem, Problem::MissingTable { required: false })),
                        audit
                    );
                    rt.shutdown().await.unwrap();
                }
                Err(e) => {
                    prop_assert!(errors, "strict start refused {drops:?}: {e}");
                    let named = [
                        (orders, "table orders does not exist"),
                        (status, "column users.status does not exist"),
                        (index, "index users_email on users(email) does not exist"),
                    ];
                    for (dropped, text) in named {
                        prop_assert_eq!(e.message.contains(text), dropped, "{}: {}", text, e);
                    }
                }
            }
            let mut lenient = config;
            lenient.schema.on_start = Some(OnStart::Lenient);
            let rt = Runtime::start(lenient).await.unwrap();
            prop_assert_eq!(rt.ready(), Ok(()));
            let schema = rt.configured_schema().unwrap();
            let report = rt.validate(&schema, ValidateOptions::default()).await.unwrap();
            prop_assert_eq!(report.exit_code(), 0, "{}", report.to_text());
            let users = rt.query(resilite::Statement::sql("SELECT count(*) FROM users")).await.unwrap();
            prop_assert_eq!(users.rows[0][0].clone(), resilite::Value::Integer(2));
            rt.shutdown().await.unwrap();
            Ok(())
        })?;
    }
}
