//! Recovery from the command line (no server), at start, and over HTTP:
//! `resilite recover --db PATH --yes` on a file whose header was zeroed;
//! a server whose file was damaged while it was down recovers as it
//! starts, replaying the operation log; `POST /v1/recover` and
//! `GET /v1/recoveries` are token-protected.

mod server;

use server::{resilite, text};

use std::path::Path;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-s3cret-s3cret";

fn make_db(path: &Path, rows: std::ops::Range<i64>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(v);")
        .unwrap();
    for v in rows {
        conn.execute("INSERT INTO t VALUES (?1)", [v]).unwrap();
    }
}

fn count(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// Zero the 100-byte header: SQLite no longer reads the file as a database.
fn zero_header(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[..100].fill(0);
    std::fs::write(path, bytes).unwrap();
}

fn damaged_copies(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("app.db.damaged-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .count()
}

/// `resilite recover`: asks unless --yes, puts the newest verified backup
/// in place of a file SQLite cannot read, keeps the damaged file; with no
/// backup it refuses and leaves the file as it was.
///
/// Property 13: Corruption Recovery. The operator is offered recovery from
/// the command line (confirmed or `--yes`), with no server running.
#[test]
fn cli_recover_replaces_an_unreadable_file_and_refuses_without_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let db_arg = db.to_str().unwrap();

    // No backup at all: refused, untouched.
    make_db(&db, 0..3);
    zero_header(&db);
    let before = std::fs::read(&db).unwrap();
    let out = resilite(&["recover", "--db", db_arg, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no verified backup"), "{}", text(&out));
    assert_eq!(std::fs::read(&db).unwrap(), before, "untouched");
    std::fs::remove_file(&db).unwrap();

    make_db(&db, 0..3);
    let out = resilite(&["backup", "--db", db_arg]);
    assert!(out.status.success(), "{}", text(&out));
    make_db(&db, 3..5);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    zero_header(&db);
    let before = std::fs::read(&db).unwrap();

    let out = resilite(&["recover", "--db", db_arg]);
    assert_eq!(out.status.code(), Some(1), "no --yes, no terminal");
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert_eq!(std::fs::read(&db).unwrap(), before, "untouched");

    let out = resilite(&["recover", "--db", db_arg, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("kept the damaged file"),
        "{}",
        text(&out)
    );
    assert_eq!(count(&db), 3, "the backup's rows");
    assert_eq!(damaged_copies(dir.path()), 1);
    let kept = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy().contains(".damaged-") && !p.to_string_lossy().ends_with("-wal")
        })
        .unwrap();
    assert_eq!(
        std::fs::read(kept).unwrap(),
        before,
        "the damaged file is kept as it was"
    );
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

async fn get(c: &Client, s: &server::Server, path: &str) -> (StatusCode, Value) {
    let r = c.get(s.url(path)).bearer_auth(TOKEN).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The file damaged while the server was down: the next start recovers
/// it (the backup, then the operation log replayed: every acknowledged
/// row is back) and records it; `POST /v1/recover` recovers on request.
///
/// Property 13: Corruption Recovery. A file found damaged at start is
/// restored before it is served, and recovery is offered over HTTP.
#[tokio::test]
async fn a_server_recovers_at_start_and_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RESILITE_BACKUP_OP_LOG", "true")];
    let token = format!("token = \"{TOKEN}\"");
    let mut s = server::start_with_env(&dir, &token, &env);
    let c = Client::new();
    let (status, _) = call(&c, &s, "/v1/execute", json!({"sql": "CREATE TABLE t(v)"})).await;
    assert_eq!(status, StatusCode::OK);
    let insert = |v: i64| json!({"sql": "INSERT INTO t VALUES (?1)", "params": [v]});
    for v in 0..10 {
        assert_eq!(
            call(&c, &s, "/v1/execute", insert(v)).await.0,
            StatusCode::OK
        );
    }
    let (status, info) = call(&c, &s, "/v1/backups", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    for v in 10..20 {
        assert_eq!(
            call(&c, &s, "/v1/execute", insert(v)).await.0,
            StatusCode::OK
        );
    }
    assert!(s.terminate().success());
    zero_header(&s.db_path());

    let s = server::start_with_env(&dir, &token, &env);
    let (status, rows) = call(
        &c,
        &s,
        "/v1/query",
        json!({"sql": "SELECT count(*) FROM t"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows["rows"][0][0], 20, "every acknowledged row: {rows}");
    let (status, log) = get(&c, &s, "/v1/recoveries").await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert_eq!(log["recoveries"][0]["outcome"], "recovered", "{log}");
    assert!(
        log["recoveries"][0]["trigger"]
            .as_str()
            .unwrap()
            .starts_with("automatic at start"),
        "{log}"
    );

    let r = c.post(s.url("/v1/recover")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, done) = call(&c, &s, "/v1/recover", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["restored"], info["name"], "{done}");
    assert_eq!(done["replayed"], 10, "{done}");
    let (_, rows) = call(
        &c,
        &s,
        "/v1/query",
        json!({"sql": "SELECT count(*) FROM t"}),
    )
    .await;
    assert_eq!(rows["rows"][0][0], 20, "{rows}");
    let (_, log) = get(&c, &s, "/v1/recoveries").await;
    assert_eq!(log["recoveries"][1]["trigger"], "http", "{log}");
}
