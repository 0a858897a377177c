//! The durable queue and dead-letter queue of a real `resilite run` process:
//! `"durable": true` answered 202 while another process holds the write
//! lock, a poison write dead-lettered, reviewed and fixed over HTTP and the
//! CLI, and a SIGKILL in the middle of a replay losing and duplicating
//! nothing.

mod server;

use server::resilite;

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret";
const FAST_RETRY: &str = "token = \"s3cret\"\n\n[writer]\nmax_retries = 1\nretry_base_delay = \"1ms\"\n\n[retry]\nbase_delay = \"50ms\"\nmax_delay = \"200ms\"\npoll_interval = \"50ms\"\nmax_attempts = 1000\n\n[breakers.database]\nopen_for = \"100ms\"\n";
const SHORT_BUSY: &[(&str, &str)] = &[("RESILITE_DATABASE_BUSY_TIMEOUT", "20ms")];

async fn call(
    c: &Client,
    s: &server::Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = match method {
        "GET" => c.get(s.url(path)),
        _ => c.post(s.url(path)),
    }
    .bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn hold_write_lock(db: &std::path::Path) -> rusqlite::Connection {
    let holder = rusqlite::Connection::open(db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    holder
}

/// Poll `check` for up to 60 s.
async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Durable writes over HTTP while another process holds the write lock
/// are answered 202 and land once it lets go; a poison write is
/// dead-lettered, reviewed and fixed over HTTP and the CLI.
///
/// Property 2: Graceful Degradation on Connection Failure. While another
/// process holds the lock, durable writes are answered 202 and kept, and
/// land once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_http_writes_poison_and_review_over_http_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start_with_env(&dir, FAST_RETRY, SHORT_BUSY);
    let c = Client::new();
    let db = s.db_path();
    let db_arg = db.to_str().unwrap();
    let (st, _) = call(
        &c,
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"sql": "CREATE TABLE u(v INTEGER UNIQUE)"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // Not durable: a write still applies at once when it can.
    let (st, body) = call(
        &c,
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"sql": "INSERT INTO u VALUES (0)", "durable": true})),
    )
    .await;
    assert_eq!(
        (st, body["rows_affected"].as_i64()),
        (StatusCode::OK, Some(1))
    );

    let holder = hold_write_lock(&db);
    let mut ids = Vec::new();
    for v in [1, 2, 6] {
        let (st, body) = call(&c, &s, "POST", "/v1/execute", Some(json!({"sql": "INSERT INTO u VALUES (?1)", "params": [v], "durable": true, "priority": 2}))).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "queued");
        ids.push(body["id"].as_i64().unwrap());
    }
    let (st, body) = call(&c, &s, "POST", "/v1/batch", Some(json!({"statements": [{"sql": "INSERT INTO u VALUES (3)"}, {"sql": "INSERT INTO u VALUES (4)"}], "durable": true}))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    // Without `durable` the caller gets the failure.
    let (st, body) = call(
        &c,
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"sql": "INSERT INTO u VALUES (5)"})),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["class"], "transient");
    // The holder commits the values of the single writes: poison.
    holder
        .execute_batch("INSERT INTO u VALUES (1), (2), (6); COMMIT")
        .unwrap();
    drop(holder);

    eventually(async || {
        call(&c, &s, "GET", "/v1/dlq", None).await.1["entries"]
            .as_array()
            .map_or(0, Vec::len)
            == 3
    })
    .await;
    let (_, dlq) = call(&c, &s, "GET", "/v1/dlq", None).await;
    let entries = dlq["entries"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids
    );
    assert!(
        entries[0]["dead_reason"]
            .as_str()
            .unwrap()
            .contains("UNIQUE"),
        "{dlq}"
    );
    let r = c.get(s.url("/v1/dlq")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the DLQ needs the token"
    );

    // The CLI sees the same queue in the journal.
    let out = resilite(&["dlq", "--db", db_arg, "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let out = resilite(&["dlq", "--db", db_arg, "show", &ids[0].to_string()]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["payload"]["statement"]["params"], json!([1]));
    let out = resilite(&["dlq", "--db", db_arg, "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNIQUE"));

    // Fix the data, requeue over HTTP; discard the second with the CLI;
    // the third was applied by hand: marked fixed.
    call(
        &c,
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"sql": "DELETE FROM u WHERE v = 1"})),
    )
    .await;
    let (st, body) = call(&c, &s, "POST", &format!("/v1/dlq/{}/requeue", ids[0]), None).await;
    assert_eq!(
        (st, body["requeued"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    let out = resilite(&["dlq", "--db", db_arg, "discard", &ids[1].to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (st, body) = call(&c, &s, "POST", &format!("/v1/dlq/{}/fixed", ids[2]), None).await;
    assert_eq!(
        (st, body["fixed"].as_i64()),
        (StatusCode::OK, Some(ids[2])),
        "{body}"
    );

    eventually(async || {
        call(&c, &s, "GET", &format!("/v1/dlq/{}", ids[0]), None)
            .await
            .1["status"]
            == "succeeded"
    })
    .await;
    let (_, dlq) = call(&c, &s, "GET", "/v1/dlq", None).await;
    assert_eq!(dlq["entries"], json!([]));
    let (_, all) = call(&c, &s, "GET", "/v1/dlq?all=true", None).await;
    let resolutions: Vec<&str> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resolution"].as_str().unwrap())
        .collect();
    assert_eq!(resolutions, ["discarded", "fixed"]);
    let (_, rows) = call(
        &c,
        &s,
        "POST",
        "/v1/query",
        Some(json!({"sql": "SELECT v FROM u ORDER BY v"})),
    )
    .await;
    assert_eq!(rows["rows"], json!([[0], [1], [2], [3], [4], [6]]));

    // Bad requests get clear errors.
    let (st, body) = call(&c, &s, "POST", "/v1/dlq/abc/requeue", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    let (st, body) = call(&c, &s, "POST", "/v1/dlq/999/discard", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, body) = call(&c, &s, "POST", "/v1/dlq/999/fixed", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, body) = call(
        &c,
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"sql": "INSERT INTO u VALUES (9)", "durable": true, "priority": 0})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    for verb in ["requeue", "discard", "fixed"] {
        let out = resilite(&["dlq", "--db", db_arg, verb, "12345"]);
        assert_eq!(out.status.code(), Some(1), "{verb}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no dead entry 12345"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_replay_loses_and_duplicates_nothing() {
    let n = server::soak("ENTRIES", 3000);
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let mut s = server::start_with_env(&dir, FAST_RETRY, SHORT_BUSY);
    let db = s.db_path();
    call(
        &c,
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"sql": "CREATE TABLE k(v INTEGER UNIQUE)"})),
    )
    .await;
    let holder = hold_write_lock(&db);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (c, url) = (c.clone(), s.url("/v1/execute"));
        tasks.push(tokio::spawn(async move {
            for v in (w..n).step_by(16) {
                let body =
                    json!({"sql": "INSERT INTO k VALUES (?1)", "params": [v], "durable": true});
                let r = c
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);

    // Kill once the replay is under way: a quarter of the entries recorded,
    // more committed to the database and not yet recorded.
    let journal = dir.path().join("data").join("app.db.journal");
    let progress = |sql: &str| -> i64 {
        rusqlite::Connection::open(&journal)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress("SELECT count(*) FROM retry_queue WHERE status = 'succeeded'") < n / 4 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    s.kill_hard();
    let done_at_kill = progress("SELECT count(*) FROM retry_queue WHERE status = 'succeeded'");
    println!("replayed before SIGKILL: {done_at_kill} of {n}");

    let s = server::start_with_env(&dir, FAST_RETRY, SHORT_BUSY);
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress("SELECT count(*) FROM retry_queue WHERE status = 'succeeded'") < n {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            let conn = rusqlite::Connection::open(&journal).unwrap();
            let mut st = conn.prepare("SELECT status, count(*), min(next_retry_at_ms), max(attempts) FROM retry_queue GROUP BY status").unwrap();
            let rows: Vec<(String, i64, i64, i64)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            panic!("replay did not finish after the restart; queue {rows:?}; server log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        progress("SELECT count(*) FROM retry_queue WHERE status IN ('retrying', 'dead', 'queued')"),
        0
    );
    let (_, rows) = call(
        &c,
        &s,
        "POST",
        "/v1/query",
        Some(json!({"sql": "SELECT count(*), count(DISTINCT v) FROM k"})),
    )
    .await;
    assert_eq!(
        rows["rows"],
        json!([[n, n]]),
        "every queued write exactly once"
    );
}
