//! Restore from the command line (no server) and over HTTP: `resilite
//! restore --db PATH BACKUP --yes` on a file, refusing a database in use,
//! a foreign backup and a missing confirmation; `POST /v1/restore` takes a
//! catalog name, never a path.

mod server;

use server::{resilite, text};

use std::path::Path;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-s3cret-s3cret";

fn make_db(path: &Path, rows: i64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(v);")
        .unwrap();
    for v in 0..rows {
        conn.execute("INSERT INTO t VALUES (?1)", [v]).unwrap();
    }
}

fn count(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

fn only_backup(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

#[test]
fn cli_restore_with_yes_and_its_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    make_db(&db, 3);
    let db_arg = db.to_str().unwrap();
    let out = resilite(&["backup", "--db", db_arg]);
    assert!(out.status.success(), "{}", text(&out));
    let backup = only_backup(&dir.path().join("data/backups"));
    let backup_arg = backup.to_str().unwrap();
    make_db(&db, 2);
    assert_eq!(count(&db), 5);

    // No --yes and no terminal: refused.
    let out = resilite(&["restore", "--db", db_arg, backup_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(count(&db), 5);

    // In use: refused.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder
        .query_row("SELECT count(*) FROM t", [], |_| Ok(()))
        .unwrap();
    let out = resilite(&["restore", "--db", db_arg, backup_arg, "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is in use"), "{}", text(&out));
    drop(holder);

    // Foreign: a backup of another database.
    let other = dir.path().join("other").join("orders.db");
    make_db(&other, 1);
    let out = resilite(&["backup", "--db", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let foreign = only_backup(&dir.path().join("other/backups"));
    let before = std::fs::read(&db).unwrap();
    let out = resilite(&[
        "restore",
        "--db",
        db_arg,
        foreign.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("another database"), "{}", text(&out));
    assert_eq!(std::fs::read(&db).unwrap(), before);

    let out = resilite(&["restore", "--db", db_arg, backup_arg, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pre-restore backup"), "{}", text(&out));
    assert_eq!(count(&db), 3);
    let out = resilite(&["backups", "--db", db_arg]);
    assert!(text(&out).contains("pre-restore"), "{}", text(&out));
}

async fn call(c: &Client, s: &server::Server, path: &str, body: Value) -> (StatusCode, Value) {
    let r = c
        .post(s.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn http_restore_takes_a_catalog_name_never_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, &format!("token = \"{TOKEN}\""));
    let c = Client::new();
    let (status, _) = call(&c, &s, "/v1/execute", json!({"sql": "CREATE TABLE t(v)"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, info) = call(&c, &s, "/v1/backups", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    let name = info["name"].as_str().unwrap().to_string();
    let (status, _) = call(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "INSERT INTO t VALUES (1)"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    for bad in ["../data/app.db", "/etc/passwd", "a/b.db", ".."] {
        let (status, body) = call(&c, &s, "/v1/restore", json!({ "backup": bad })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not a path"), "{bad}: {body}");
    }
    let (status, body) = call(&c, &s, "/v1/restore", json!({ "backup": name })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["restored"], name.as_str());
    let (status, rows) = call(
        &c,
        &s,
        "/v1/query",
        json!({"sql": "SELECT count(*) FROM t"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows["rows"][0][0], 0, "{rows}");

    let r = c
        .post(s.url("/v1/restore"))
        .json(&json!({ "backup": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
