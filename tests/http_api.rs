//! The HTTP API of a real `resilite run` process: round-trips, the token,
//! bad input that gets a clear JSON error without harming the server,
//! SIGTERM that drains every acknowledged write, server-side errors
//! logged with their detail, and callers' errors logged at debug with
//! theirs.

mod server;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn post(c: &Client, s: &server::Server, path: &str, body: Value) -> (StatusCode, Value) {
    let r = c.post(s.url(path)).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

fn assert_error(body: &Value, class: &str) {
    let e = &body["error"];
    assert_eq!(e["class"], class, "{body}");
    assert!(!e["message"].as_str().unwrap_or("").is_empty(), "{body}");
}

#[tokio::test]
async fn http_execute_batch_query_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "");
    let c = Client::new();
    let (st, _) = post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, r REAL, s TEXT, b BLOB)"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = post(&c, &s, "/v1/execute", json!({"sql": "INSERT INTO t(n, r, s, b) VALUES (?1, ?2, ?3, ?4)", "params": [42, 2.5, null, {"base64": "AQID"}]})).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"rows_affected": 1, "last_insert_rowid": 1}));
    let (st, body) = post(
        &c,
        &s,
        "/v1/batch",
        json!({"statements": [
            {"sql": "INSERT INTO t(n) VALUES (?1)", "params": [7]},
            {"sql": "UPDATE t SET s = 'x' WHERE n = 42"}
        ]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["last_insert_rowid"], 2);
    assert_eq!(body["results"][1]["rows_affected"], 1);
    // An atomic batch with one failing statement leaves nothing behind.
    let (st, body) = post(
        &c,
        &s,
        "/v1/batch",
        json!({"statements": [
            {"sql": "INSERT INTO t(n) VALUES (100)"},
            {"sql": "INSERT INTO missing VALUES (1)"}
        ]}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&body, "sql");
    let (st, body) = post(
        &c,
        &s,
        "/v1/query",
        json!({"sql": "SELECT id, n, r, s, b FROM t ORDER BY id"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["columns"], json!(["id", "n", "r", "s", "b"]));
    assert_eq!(
        body["rows"],
        json!([[1, 42, 2.5, "x", {"base64": "AQID"}], [2, 7, null, null, null]])
    );
}

#[tokio::test]
async fn http_token_is_required_on_v1_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "token = \"s3cret\"");
    let c = Client::new();
    let body = json!({"sql": "SELECT 1"});
    let r = c.post(s.url("/v1/query")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Bearer"));
    let r = c
        .post(s.url("/v1/query"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(s.url("/v1/query"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let health = r.json::<Value>().await.unwrap();
    assert_eq!(health["runtime"], json!({"status": "healthy"}), "{health}");
    assert!(
        ["HEALTHY", "PENDING"].contains(&health["status"].as_str().unwrap()),
        "{health}"
    );
}

/// Malformed JSON, wrong types, a body too large, unknown routes and
/// failing SQL each get a JSON error with class and message, and the
/// server goes on serving.
///
/// Property 8: User-Friendly Error Messages. Every failed request gets a
/// JSON error with its class and a message saying what is wrong.
#[tokio::test]
async fn http_bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "max_body_bytes = 1024");
    let c = Client::new();
    post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "CREATE TABLE u(v TEXT UNIQUE)"}),
    )
    .await;
    post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "INSERT INTO u VALUES ('a')"}),
    )
    .await;

    let r = c
        .post(s.url("/v1/execute"))
        .header("content-type", "application/json")
        .body("{\"sql\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_error(&r.json().await.unwrap(), "bad_input");

    let cases = [
        (
            json!({"sql": "INSERT INTO u VALUES (?1)", "params": [true]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
        ),
        (
            json!({"sql": "INSERT INTO u VALUES (?1)", "params": [[1]]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
        ),
        (
            json!({"sql": "INSRT INTO u VALUES (1)"}),
            StatusCode::BAD_REQUEST,
            "sql",
        ),
        (
            json!({"sql": "INSERT INTO nope VALUES (1)"}),
            StatusCode::BAD_REQUEST,
            "sql",
        ),
        (
            json!({"sql": "INSERT INTO u VALUES (?1)", "params": [1, 2]}),
            StatusCode::BAD_REQUEST,
            "bad_input",
        ),
        (
            json!({"sql": "INSERT INTO u VALUES ('a')"}),
            StatusCode::CONFLICT,
            "constraint",
        ),
        (
            json!({"sql": "INSERT INTO u VALUES ('b')", "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_input",
        ),
    ];
    for (body, status, class) in cases {
        let (st, reply) = post(&c, &s, "/v1/execute", body.clone()).await;
        assert_eq!(st, status, "{body} -> {reply}");
        assert_error(&reply, class);
    }
    let (st, reply) = post(&c, &s, "/v1/query", json!({"sql": "DELETE FROM u"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&reply, "bad_input");
    let big = "x".repeat(4096);
    let (st, reply) = post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "INSERT INTO u VALUES (?1)", "params": [big]}),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&reply, "bad_input");
    let r = c.get(s.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Still serving, and none of the bad requests changed anything.
    let (st, _) = post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "INSERT INTO u VALUES ('b')"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (_, rows) = post(
        &c,
        &s,
        "/v1/query",
        json!({"sql": "SELECT v FROM u ORDER BY v"}),
    )
    .await;
    assert_eq!(rows["rows"], json!([["a"], ["b"]]));
    let r = c.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sigterm_drains_every_acknowledged_write_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = server::start(&dir, "");
    let c = Client::new();
    post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "CREATE TABLE k(id INTEGER PRIMARY KEY)"}),
    )
    .await;
    let mut tasks = Vec::new();
    for task in 0..8i64 {
        let (c, url) = (c.clone(), s.url("/v1/execute"));
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..100_000i64 {
                let id = task * 1_000_000 + i;
                match c
                    .post(&url)
                    .json(&json!({"sql": "INSERT INTO k VALUES (?1)", "params": [id]}))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == StatusCode::OK => acked.push(id),
                    _ => break, // the server is going away
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let status = tokio::task::block_in_place(|| s.terminate());
    assert!(status.success(), "exit status {status:?}");
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 10,
        "some writes were acknowledged before SIGTERM"
    );
    // Both WALs were checkpointed into their files before the exit.
    for file in [s.db_path(), s.db_path().with_extension("db.journal")] {
        let mut wal = file.clone().into_os_string();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
        assert_eq!(
            wal_bytes,
            0,
            "{} left behind",
            std::path::Path::new(&wal).display()
        );
    }
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    let mut present = conn.prepare("SELECT 1 FROM k WHERE id = ?1").unwrap();
    for id in &acked {
        assert!(
            present.exists([id]).unwrap(),
            "acknowledged write {id} lost"
        );
    }
}

/// A write that fails on the server's side (another process holds the
/// write lock) is answered 503 `transient`, and the server's log has the
/// technical detail: the writer's lines (the retry with its delay, then
/// the failure) and the request's line, with the class and SQLite's
/// message.
///
/// Property 9: Detailed Technical Logging. An SQLite error the server
/// cannot resolve is logged with its class and SQLite's own message. (A
/// caller's error, 4xx, is answered with its detail but not logged.)
#[tokio::test]
async fn http_server_errors_are_logged_with_their_detail() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start_with_env(
        &dir,
        "",
        &[
            ("RESILITE_DATABASE_BUSY_TIMEOUT", "20ms"),
            ("RESILITE_WRITER_MAX_RETRIES", "1"),
            ("RESILITE_WRITER_RETRY_BASE_DELAY", "5ms"),
        ],
    );
    let c = Client::new();
    let (st, _) = post(&c, &s, "/v1/execute", json!({"sql": "CREATE TABLE l(v)"})).await;
    assert_eq!(st, StatusCode::OK);
    let holder = rusqlite::Connection::open(s.db_path()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (st, body) = post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "INSERT INTO l VALUES ('logged')"}),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "transient");
    let detail = body["error"]["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("database is locked"), "{body}");
    holder.execute_batch("COMMIT").unwrap();

    let log_has = |needles: &[&str]| {
        std::fs::read_to_string(dir.path().join("stderr.log"))
            .unwrap()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(log_has(&["request failed", "Transient", &detail])
        && log_has(&[
            "transient write failure; retrying batch",
            "database is locked",
        ])
        && log_has(&["write batch failed", "Transient", &detail]))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the log lacks the error's detail {detail:?}:\n{}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A caller's errors (a UNIQUE constraint on /v1/execute, an SQL syntax
/// error on /v1/query and /v1/execute, its SQL spread over two lines) are
/// answered with their detail and logged at `debug` on one line each, with
/// the class, SQLite's extended code and that detail: SQLite's message and
/// the start of the SQL, its newline escaped. The error log counts them
/// too (`resilite errors`).
///
/// Property 9: Detailed Technical Logging. Every SQLite error answered to
/// a caller is logged, a caller's at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_caller_errors_are_logged_at_debug_with_their_detail() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start_with_env(&dir, "", &[("RESILITE_LOG", "debug")]);
    let c = Client::new();
    let (st, _) = post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "CREATE TABLE u(k INTEGER PRIMARY KEY)"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let insert = json!({"sql": "INSERT INTO u VALUES (1)"});
    assert_eq!(
        post(&c, &s, "/v1/execute", insert.clone()).await.0,
        StatusCode::OK
    );
    let (st, dup) = post(&c, &s, "/v1/execute", insert).await;
    assert_eq!(st, StatusCode::CONFLICT, "{dup}");
    assert_error(&dup, "constraint");
    let (st, bad_query) = post(&c, &s, "/v1/query", json!({"sql": "SELEC k\nFROM u"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{bad_query}");
    assert_error(&bad_query, "sql");
    let (st, bad_write) = post(
        &c,
        &s,
        "/v1/execute",
        json!({"sql": "INSERT INTO u VALUE (2)"}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{bad_write}");
    assert_error(&bad_write, "sql");

    let detail = |body: &Value| body["error"]["detail"].as_str().unwrap().to_string();
    let (dup, bad_query, bad_write) = (detail(&dup), detail(&bad_query), detail(&bad_write));
    assert!(dup.contains("UNIQUE constraint failed: u.k"), "{dup}");
    assert!(
        bad_query.contains("syntax error") && bad_query.contains(r"SELEC k\nFROM u"),
        "the SQL's start, its newline escaped: {bad_query}"
    );
    assert!(bad_write.contains("syntax error"), "{bad_write}");
    let log_has = |needles: &[&str]| {
        std::fs::read_to_string(dir.path().join("stderr.log"))
            .unwrap()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
    };
    let expected: [&[&str]; 3] = [
        &[
            "DEBUG",
            "write answered a caller's error",
            "Constraint",
            "code=Some(1555)",
            &dup,
        ],
        &[
            "DEBUG",
            "query answered a caller's error",
            "class=Sql",
            "code=Some(1)",
            &bad_query,
        ],
        &[
            "DEBUG",
            "write answered a caller's error",
            "class=Sql",
            "code=Some(1)",
            &bad_write,
        ],
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !expected.iter().all(|needles| log_has(needles)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the log lacks a caller's error with its detail:\n{}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        !log.lines().any(|l| l.starts_with("FROM u")),
        "the caller's newline never starts a log line of its own:\n{log}"
    );

    // The error log counts them too, one signature each.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = server::resilite(&["errors", "--db", s.db_path().to_str().unwrap(), "--json"]);
        let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let classes: Vec<&str> = listed.iter().filter_map(|e| e["class"].as_str()).collect();
        if classes.iter().filter(|c| **c == "sql").count() == 2 && classes.contains(&"constraint") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server::text(&out)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
