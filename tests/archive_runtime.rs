//! Archives through the embedding API (`rt.archive_now`, `rt.archives`,
//! `rt.verify_archive`, `rt.restore_archive`) and over HTTP (the
//! token-protected `/v1/archives` routes), while the application keeps
//! writing to the same table: the archived rows leave the database, the
//! new ones stay, nothing is lost.

mod server;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::{Client, StatusCode};
use resilite::{Statement, Value};
use serde_json::{json, Value as Json};

const TOKEN: &str = "s3cret-s3cret-s3cret";
const ROWS: i64 = 20_000;
const POLICY: &str = "[[retention]]\ntable = \"logs\"\ncolumn = \"created_at\"\nkeep = \"30d\"\n[archive]\ninterval = \"0s\"\nbatch_rows = 10000\n";

/// `logs` with odd ids 40 days old (expired) and even ids an hour old.
fn make_logs(db: &Path) {
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE logs(id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, msg TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO logs SELECT i, strftime('%Y-%m-%dT%H:%M:%SZ', 'now', CASE i % 2 WHEN 1 THEN '-40 days' ELSE '-1 hours' END), 'message ' || i FROM n;",
    )
    .unwrap();
}

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

fn insert_recent(id: i64) -> Statement {
    Statement::new(
        "INSERT INTO logs VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), 'new')",
        [Value::Integer(id)],
    )
}

/// `rt.archive_now()` while the application inserts into the same table:
/// exactly the expired rows leave the database, every acknowledged insert
/// stays; `rt.archives()` lists the archive, `rt.verify_archive` passes,
/// `rt.restore_archive` brings the rows back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtime_archives_while_the_application_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    make_logs(&db);
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, format!("[database]\npath = {db:?}\n{POLICY}")).unwrap();
    let rt = resilite::Runtime::start(resilite::Config::load(&cfg).unwrap())
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (rt, stop) = (rt.clone(), stop.clone());
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut id = 1_000_000;
            while !stop.load(Ordering::Relaxed) || written.len() < 50 {
                rt.execute(insert_recent(id)).await.unwrap();
                written.push(id);
                id += 1;
            }
            written
        })
    };
    let report = rt.archive_now().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();

    assert_eq!(report.tables[0].archived_rows, (ROWS / 2) as u64);
    assert_eq!(report.kept_rows, 0);
    let mut expected: BTreeSet<i64> = (1..=ROWS).filter(|i| i % 2 == 0).collect();
    expected.extend(written.iter().copied());
    assert_eq!(ids(&db), expected, "expired rows left; every insert stayed");

    let archives = rt.archives().await.unwrap();
    assert_eq!(archives.len(), 1);
    assert_eq!(archives[0].status, resilite::ArchiveStatus::Purged);
    let check = rt.verify_archive(archives[0].id).await.unwrap();
    assert_eq!(check.rows, (ROWS / 2) as u64);
    let counts = rt.restore_archive(archives[0].id).await.unwrap();
    assert_eq!((counts.restored, counts.skipped), ((ROWS / 2) as u64, 0));
    expected.extend((1..=ROWS).filter(|i| i % 2 == 1));
    assert_eq!(ids(&db), expected, "the restore brought every row back");
    let err = rt.verify_archive(9999).await.unwrap_err();
    assert!(err.message.contains("there is no archive 9999"), "{err}");
    rt.shutdown().await.unwrap();
}

async fn call(
    c: &Client,
    s: &server::Server,
    post: bool,
    path: &str,
    token: bool,
) -> (StatusCode, Json) {
    let req = if post {
        c.post(s.url(path)).json(&json!({}))
    } else {
        c.get(s.url(path))
    };
    let req = if token { req.bearer_auth(TOKEN) } else { req };
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Json::Null))
}

/// The `/v1/archives` routes require the token (401 without); with it,
/// `POST /v1/archives/run` archives while writes arrive over
/// `/v1/execute` (the archived rows are gone, every acknowledged insert
/// stays), `GET /v1/archives` lists it, verify and restore answer their
/// counts, and a bad id is a 400 naming how to find one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_archive_routes_with_token_while_writes_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    make_logs(&db);
    let s = server::start(&dir, &format!("token = \"{TOKEN}\"\n{POLICY}"));
    let c = Client::new();
    for (post, path) in [
        (false, "/v1/archives"),
        (true, "/v1/archives/run"),
        (true, "/v1/archives/1/verify"),
        (true, "/v1/archives/1/restore"),
    ] {
        let (st, _) = call(&c, &s, post, path, false).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(
        ids(&db).len(),
        ROWS as usize,
        "nothing ran without the token"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, url, stop) = (c.clone(), s.url("/v1/execute"), stop.clone());
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut id = 1_000_000;
            while !stop.load(Ordering::Relaxed) || written.len() < 20 {
                let resp = c
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&json!({"sql": "INSERT INTO logs VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), 'new')", "params": [id]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                written.push(id);
                id += 1;
            }
            written
        })
    };
    let (st, report) = call(&c, &s, true, "/v1/archives/run", true).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{report}");
    assert_eq!(report["tables"][0]["archived_rows"], ROWS / 2, "{report}");
    let mut expected: BTreeSet<i64> = (1..=ROWS).filter(|i| i % 2 == 0).collect();
    expected.extend(written.iter().copied());
    assert_eq!(ids(&db), expected, "expired rows left; every insert stayed");

    let (st, list) = call(&c, &s, false, "/v1/archives", true).await;
    assert_eq!(st, StatusCode::OK);
    let archives = list["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 1, "{list}");
    assert_eq!(archives[0]["status"], "purged");
    let id = archives[0]["id"].as_i64().unwrap();
    let (st, check) = call(&c, &s, true, &format!("/v1/archives/{id}/verify"), true).await;
    assert_eq!(
        (st, check["rows"].as_i64()),
        (StatusCode::OK, Some(ROWS / 2)),
        "{check}"
    );
    let (st, counts) = call(&c, &s, true, &format!("/v1/archives/{id}/restore"), true).await;
    assert_eq!(st, StatusCode::OK, "{counts}");
    assert_eq!(
        (counts["restored"].as_i64(), counts["skipped"].as_i64()),
        (Some(ROWS / 2), Some(0))
    );
    expected.extend((1..=ROWS).filter(|i| i % 2 == 1));
    assert_eq!(ids(&db), expected, "the restore brought every row back");
    let (st, err) = call(&c, &s, true, "/v1/archives/abc/verify", true).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{err}");
    assert!(err.to_string().contains("GET /v1/archives"), "{err}");
}
