//! Schema validation from the command line (`resilite validate`,
//! `resilite fix`, no server) with its exit codes, data checks on 100k
//! rows with planted violations, dedupe and putting rows back; and over
//! HTTP (`GET /v1/schema`, `POST /v1/schema/fix`) with `[schema]` in the
//! config of `resilite run`.

mod server;

use server::{resilite, text};

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const SCHEMA: &str = r#"
[tables.users]
columns = [
  { name = "id", type = "INTEGER", primary_key = true },
  { name = "email", type = "TEXT", not_null = true, default = "''" },
  { name = "status", type = "TEXT", default = "'active'" },
]
indexes = [{ name = "users_email", columns = ["email"], unique = true }]

[tables.orders]
columns = [
  { name = "id", type = "INTEGER", primary_key = true },
  { name = "user_id", type = "INTEGER" },
]

[tables.audit]
required = false
columns = [{ name = "id", type = "INTEGER", primary_key = true }, { name = "what", type = "TEXT" }]
"#;

fn make_db(path: &Path, sql: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// The (rule, table, field) of each finding of a `--json` report.
fn rules(report: &Value) -> BTreeSet<(String, String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let field = ["column", "index", "name"]
                .iter()
                .find_map(|k| f[*k].as_str())
                .unwrap_or("")
                .to_string();
            (
                f["rule"].as_str().unwrap().to_string(),
                f["table"].as_str().unwrap().to_string(),
                field,
            )
        })
        .collect()
}

fn set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// `validate` reports a missing required table, optional table, column
/// and index with their severities and exit code 2; `fix --dry-run`
/// changes no byte of the file; `fix` creates them, keeps the undeclared
/// column and its data, and `validate` is then clean (exit 0, the extra
/// column an info); an optional table alone is exit 1.
#[test]
fn cli_validate_exit_codes_fix_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    make_db(
        &db,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL DEFAULT '', legacy TEXT);
         INSERT INTO users(email, legacy) VALUES ('a@x', 'old data');",
    );
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let (db_arg, schema_arg) = (db.to_str().unwrap(), schema.to_str().unwrap());

    let out = resilite(&["validate", "--db", db_arg, "--schema", schema_arg, "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let report = json_of(&out);
    assert_eq!(
        rules(&report),
        set(&[
            ("missing_table", "orders", ""),
            ("missing_table", "audit", ""),
            ("missing_column", "users", "status"),
            ("missing_index", "users", "users_email"),
            ("extra_column", "users", "legacy"),
        ])
    );
    let severity = |rule: &str, table: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == rule && f["table"] == table)
            .map(|f| f["severity"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(severity("missing_table", "orders"), "error");
    assert_eq!(severity("missing_table", "audit"), "warning");
    assert_eq!(severity("extra_column", "users"), "info");
    let out = resilite(&["validate", "--db", db_arg, "--schema", schema_arg]);
    assert!(
        text(&out).contains("required table orders does not exist"),
        "{}",
        text(&out)
    );

    // A dry run prints the SQL and changes no byte.
    let before = std::fs::read(&db).unwrap();
    let out = resilite(&["fix", "--db", db_arg, "--schema", schema_arg, "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("CREATE TABLE \"orders\""),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("ALTER TABLE \"users\" ADD COLUMN \"status\" TEXT DEFAULT 'active'"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a dry run changed the file"
    );

    let out = resilite(&["fix", "--db", db_arg, "--schema", schema_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = resilite(&["validate", "--db", db_arg, "--schema", schema_arg, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        rules(&json_of(&out)),
        set(&[("extra_column", "users", "legacy")])
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let kept: (String, String) = conn
        .query_row("SELECT legacy, status FROM users", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(kept, ("old data".into(), "active".into()));
    // The fix log is in the journal beside the database.
    let journal = rusqlite::Connection::open(dir.path().join("app.db.journal")).unwrap();
    let applied: i64 = journal
        .query_row(
            "SELECT count(*) FROM schema_fixes WHERE outcome = 'applied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(applied, 4, "orders, audit, users.status, users_email");

    // Warnings only: exit 1.
    conn.execute_batch("DROP TABLE audit").unwrap();
    let out = resilite(&["validate", "--db", db_arg, "--schema", schema_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // A column SQLite cannot add is reported with why, exit 1, nothing changed.
    let pk = dir.path().join("pk.toml");
    std::fs::write(
        &pk,
        "[tables.users]\ncolumns = [{ name = \"id\", type = \"INTEGER\", primary_key = true }, { name = \"code\", type = \"TEXT\", not_null = true }]\n",
    )
    .unwrap();
    let out = resilite(&["fix", "--db", db_arg, "--schema", pk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("NOT NULL without a default"),
        "{}",
        text(&out)
    );

    // A bad schema file: exit 3, naming the file and the line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[tables.t]\ncolumns = [{ name = \"id\", colour = \"red\" }]\n",
    )
    .unwrap();
    let out = resilite(&[
        "validate",
        "--db",
        db_arg,
        "--schema",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("bad.toml (line 2): unknown field `colour`"),
        "{}",
        text(&out)
    );
}

const ROWS: i64 = 100_000;

const DATA_SCHEMA: &str = r#"
[tables.owners]
columns = [{ name = "id", type = "INTEGER", primary_key = true }]

[tables.items]
columns = [
  { name = "id", type = "INTEGER", primary_key = true },
  { name = "sku", type = "TEXT" },
  { name = "price", type = "REAL" },
  { name = "owner_id", type = "INTEGER" },
]
unique = ["sku"]
not_null = ["sku"]
check = [{ name = "price_not_negative", expr = "price >= 0" }]
foreign_keys = [{ column = "owner_id", references = "owners(id)" }]
"#;

/// The rowids of a data finding of `rule` in a `--json` report.
fn rowids(report: &Value, rule: &str) -> Vec<BTreeSet<i64>> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == rule)
        .map(|f| {
            f["rowids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        })
        .collect()
}

/// Data checks on 100k rows find exactly the planted duplicates, NULLs,
/// check and reference violations (exact rowid sets); a second run does
/// not pile up findings in the journal; a dedupe dry run changes no byte;
/// applied, dedupe removes exactly the planted extras and records each in
/// full; `--restore-removed` puts them back as they were.
#[test]
fn cli_data_checks_find_exactly_the_planted_rows_and_dedupe_restores() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    make_db(
        &db,
        "CREATE TABLE owners(id INTEGER PRIMARY KEY);
         CREATE TABLE items(id INTEGER PRIMARY KEY, sku TEXT, price REAL, owner_id INTEGER);",
    );
    // Planted: 40 duplicate groups (the sku of row 1000*g at rows 1000*g+1
    // and, every other group, 1000*g+2), NULL skus, negative prices and
    // owners that do not exist.
    let mut dup_groups: Vec<Vec<i64>> = Vec::new();
    let mut extras: BTreeSet<i64> = BTreeSet::new();
    for g in 1..=40i64 {
        let mut group = vec![1000 * g, 1000 * g + 1];
        if g % 2 == 0 {
            group.push(1000 * g + 2);
        }
        extras.extend(&group[1..]);
        dup_groups.push(group);
    }
    let nulls: BTreeSet<i64> = [7, 55_555, 99_999].into();
    let negative: BTreeSet<i64> = [3, 42, 77_777, 100_000].into();
    let dangling: BTreeSet<i64> = [11, 60_001].into();
    {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch("INSERT INTO owners(id) SELECT value FROM generate_series(1, 10)")
            .ok();
        for id in 1..=10 {
            tx.execute("INSERT OR IGNORE INTO owners(id) VALUES (?1)", [id])
                .unwrap();
        }
        {
            let mut insert = tx
                .prepare("INSERT INTO items(id, sku, price, owner_id) VALUES (?1, ?2, ?3, ?4)")
                .unwrap();
            for id in 1..=ROWS {
                let base = dup_groups
                    .iter()
                    .find(|g| g.contains(&id))
                    .map_or(id, |g| g[0]);
                let sku: Option<String> = (!nulls.contains(&id)).then(|| format!("sku-{base}"));
                let price = if negative.contains(&id) {
                    -1.5
                } else {
                    id as f64 / 10.0
                };
                let owner = if dangling.contains(&id) {
                    999
                } else {
                    id % 10 + 1
                };
                insert
                    .execute(rusqlite::params![id, sku, price, owner])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, DATA_SCHEMA).unwrap();
    let (db_arg, schema_arg) = (db.to_str().unwrap(), schema.to_str().unwrap());

    let validate = || {
        let out = resilite(&[
            "validate", "--db", db_arg, "--schema", schema_arg, "--data", "--json",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        json_of(&out)
    };
    let report = validate();
    assert_eq!(report["rows_scanned"], ROWS);
    let mut found = rowids(&report, "duplicate");
    found.sort();
    let mut expected: Vec<BTreeSet<i64>> = dup_groups
        .iter()
        .map(|g| g.iter().copied().collect())
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(rowids(&report, "not_null"), [nulls]);
    assert_eq!(rowids(&report, "check"), [negative]);
    assert_eq!(rowids(&report, "foreign_key"), [dangling]);
    let dup = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "duplicate" && f["oldest"] == 2000)
        .unwrap();
    assert_eq!(
        (dup["newest"].as_i64(), dup["count"].as_i64()),
        (Some(2002), Some(3))
    );
    assert_eq!(dup["value"], json!(["sku-2000"]));

    // Run again: the journal keeps one open finding per rule and value.
    validate();
    let journal = rusqlite::Connection::open(dir.path().join("app.db.journal")).unwrap();
    let open: i64 = journal
        .query_row(
            "SELECT count(*) FROM schema_findings WHERE resolved_at_ms IS NULL AND scope = 'data'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 40 + 3);
    drop(journal);

    // Dry run: the planned removals, no byte changed.
    let before = std::fs::read(&db).unwrap();
    let out = resilite(&[
        "fix",
        "--db",
        db_arg,
        "--schema",
        schema_arg,
        "--dedupe",
        "keep-oldest",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let planned: BTreeSet<i64> = json_of(&out)["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rowid"].as_i64().unwrap())
        .collect();
    assert_eq!(planned, extras);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a dry run changed the file"
    );

    let snapshot = |db: &Path| -> Vec<(i64, Option<String>, f64, i64)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, sku, price, owner_id FROM items ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let original = snapshot(&db);

    let out = resilite(&[
        "fix",
        "--db",
        db_arg,
        "--schema",
        schema_arg,
        "--dedupe",
        "keep-oldest",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let removed: BTreeSet<i64> = json_of(&out)["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rowid"].as_i64().unwrap())
        .collect();
    assert_eq!(removed, extras);
    let now = snapshot(&db);
    assert_eq!(now.len() as i64, ROWS - extras.len() as i64);
    assert!(now.iter().all(|r| !extras.contains(&r.0)));
    let journal = rusqlite::Connection::open(dir.path().join("app.db.journal")).unwrap();
    let recorded: String = journal
        .query_row(
            "SELECT row_json FROM schema_removed_rows WHERE row_id = 2002",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&recorded).unwrap(),
        json!({"id": 2002, "sku": "sku-2000", "price": 200.2, "owner_id": 3})
    );
    drop(journal);
    let report = validate();
    assert!(rowids(&report, "duplicate").is_empty());

    let out = resilite(&["fix", "--db", db_arg, "--restore-removed"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{} row(s) put back, 0 skipped", extras.len())),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(&db), original);
    let out = resilite(&["fix", "--db", db_arg, "--restore-removed"]);
    assert!(
        text(&out).contains("no removed row to put back"),
        "{}",
        text(&out)
    );
}

const TOKEN: &str = "s3cret-s3cret-s3cret";

/// `resilite run` with `[schema] file` (relative to the config file):
/// strict on a database missing a required table exits with the finding
/// and never listens (so never answers ready); lenient fixes it at start,
/// answers ready, and `GET /v1/schema`, `POST /v1/schema/fix` and the
/// findings (listed, acknowledged, resolved by the fix) work behind the
/// token.
#[tokio::test(flavor = "multi_thread")]
async fn server_checks_the_schema_at_start_and_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    make_db(
        &db,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL DEFAULT '');",
    );
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("schema.toml"), SCHEMA).unwrap();
    let config = conf_dir.join("config.toml");
    let write_config = |mode: &str| {
        std::fs::write(
            &config,
            format!(
                "[database]\npath = {db:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[schema]\nfile = \"schema.toml\"\non_start = \"{mode}\"\n"
            ),
        )
        .unwrap();
    };

    write_config("strict");
    let out = Command::new(env!("CARGO_BIN_EXE_resilite"))
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // It listens (so /ready can say 503 while the schema step runs), then
    // stops with the findings: it never serves as ready.
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("required table orders does not exist"),
        "{}",
        text(&out)
    );

    write_config("lenient");
    let mut child = Command::new(env!("CARGO_BIN_EXE_resilite"))
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("resilite listening on ")
        .expect(&line)
        .to_string();
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // 503 while the schema step (validate, fix) runs, then ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = client.get(format!("{base}/ready")).send().await.unwrap();
        if ready.status() == StatusCode::OK {
            break;
        }
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let unauthorized = client
        .get(format!("{base}/v1/schema"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let body: Value = client
        .get(format!("{base}/v1/schema?data=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["exit_code"], 0, "{body}");
    assert_eq!(body["report"]["data"], true, "{body}");

    // Drop an index; validation records the finding, an operator lists
    // and acknowledges it; the dry run plans the index, the fix creates it,
    // and the next validation resolves the finding.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP INDEX users_email")
        .unwrap();
    let get = |path: &str| {
        let sent = client
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send();
        async move { sent.await.unwrap().json::<Value>().await.unwrap() }
    };
    let body: Value = get("/v1/schema").await;
    assert_eq!(
        body["exit_code"], 2,
        "a missing UNIQUE index is an error: {body}"
    );
    let open: Value = get("/v1/schema/findings").await;
    let index_finding = |list: &Value| -> Value {
        list["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| {
                f["finding"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("users_email")
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    let finding = index_finding(&open);
    assert_eq!(finding["acknowledged"], false, "{open}");
    assert!(finding["resolved_at_ms"].is_null(), "{open}");
    let id = finding["id"].as_i64().unwrap();
    let acknowledge = |id: &str| {
        client
            .post(format!("{base}/v1/schema/findings/{id}/acknowledge"))
            .bearer_auth(TOKEN)
            .send()
    };
    let ack = acknowledge(&id.to_string()).await.unwrap();
    assert_eq!(ack.status(), StatusCode::OK);
    assert_eq!(ack.json::<Value>().await.unwrap()["acknowledged"], id);
    let open: Value = get("/v1/schema/findings").await;
    assert_eq!(index_finding(&open)["acknowledged"], true, "{open}");
    let unknown = acknowledge("999999").await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body = unknown.text().await.unwrap();
    assert!(body.contains("no schema finding 999999"), "{body}");
    let garbage = acknowledge("users").await.unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    let anonymous = client
        .post(format!("{base}/v1/schema/findings/{id}/acknowledge"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let dry: Value = client
        .post(format!("{base}/v1/schema/fix"))
        .bearer_auth(TOKEN)
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dry["steps"][0]["status"], "planned", "{dry}");
    assert_eq!(dry["steps"][0]["target"], "users_email", "{dry}");
    let done: Value = client
        .post(format!("{base}/v1/schema/fix"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["steps"][0]["status"], "applied", "{done}");
    let body: Value = get("/v1/schema").await;
    assert_eq!(body["exit_code"], 0, "{body}");
    let open: Value = get("/v1/schema/findings").await;
    assert!(
        index_finding(&open).is_null(),
        "resolved, so no longer open: {open}"
    );
    let all: Value = get("/v1/schema/findings?all=true").await;
    assert!(index_finding(&all)["resolved_at_ms"].is_i64(), "{all}");
    let bad = client
        .post(format!("{base}/v1/schema/fix"))
        .bearer_auth(TOKEN)
        .json(&json!({"dedupe": "keep-middle"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = bad.text().await.unwrap();
    assert!(body.contains("keep-oldest"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
}
