//! The bounds of the HTTP API of a real `resilite run` process: slow,
//! idle and half-open clients cannot hold the server, every error has a
//! JSON body of bounded size, and integers SQLite cannot store are refused
//! instead of being stored as something else.

mod server;

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(s: &server::Server) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Wait up to `within` for the server to close `conn` (reading and
/// dropping anything it answers first); how long that took.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + within).into(), conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// One response read from `conn` within `within`: status and body.
async fn read_response(conn: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if data.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + len]);
                return Some((status, body.into_owned()));
            }
        }
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

fn assert_error(body: &Value, class: &str) {
    let e = &body["error"];
    assert_eq!(e["class"], class, "{body}");
    assert!(!e["message"].as_str().unwrap_or("").is_empty(), "{body}");
}

async fn post_text(c: &Client, s: &server::Server, path: &str, body: &str) -> (StatusCode, Value) {
    let r = c
        .post(s.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// A client that sends half a request head, or a head and half a body, or
/// nothing after its last request, is cut off after `header_timeout`,
/// `body_timeout` and `idle_timeout`, and the server goes on serving.
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(
        &dir,
        "header_timeout = \"1500ms\"\nbody_timeout = \"400ms\"\nidle_timeout = \"300ms\"",
    );

    // Half a head: closed by header_timeout, not sooner by idle_timeout.
    let mut half_head = connect(&s).await;
    half_head
        .write_all(b"POST /v1/execute HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A whole head and half the declared body: 408 with a JSON body.
    let mut half_body = connect(&s).await;
    half_body
        .write_all(b"POST /v1/query HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"sql\": ")
        .await
        .unwrap();
    let sent = Instant::now();
    let (status, body) = read_response(&mut half_body, Duration::from_secs(5))
        .await
        .expect("an answer to a body that never arrives");
    assert_eq!(status, 408, "{body}");
    assert_error(&serde_json::from_str(&body).unwrap(), "timeout");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );

    let took = closed_within(&mut half_head, Duration::from_secs(6))
        .await
        .expect("a half-sent head is cut off");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // A keep-alive connection idle after its request: closed by idle_timeout.
    let mut idle = connect(&s).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = read_response(&mut idle, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let took = closed_within(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(took < Duration::from_millis(1200), "closed after {took:?}");

    let r = Client::new().get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// With `max_connections = 2`, two silent connections keep a third one
/// waiting; as soon as one of them closes, the third is served.
#[tokio::test]
async fn connections_past_max_connections_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "max_connections = 2");
    let mut held = vec![connect(&s).await, connect(&s).await];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect(&s).await;
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_response(&mut third, Duration::from_millis(700))
            .await
            .is_none(),
        "a connection past max_connections was served"
    );
    drop(held.pop());
    let freed = Instant::now();
    let (status, _) = read_response(&mut third, Duration::from_secs(5))
        .await
        .expect("served once a slot is free");
    assert_eq!(status, 200);
    assert!(
        freed.elapsed() < Duration::from_secs(2),
        "{:?}",
        freed.elapsed()
    );
}

/// 250 clients that connect and stall (silent, half a head, or a head and
/// half a body) under the default settings do not delay `/health` or a
/// write for anyone else.
#[tokio::test]
async fn hundreds_of_stalled_connections_do_not_stall_health_or_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "");
    let mut stalled = Vec::new();
    for i in 0..250 {
        let mut conn = connect(&s).await;
        let partial: &[u8] = match i % 3 {
            0 => b"",
            1 => b"POST /v1/execute HTTP/1.1\r\nHost: x\r\ncontent-ty",
            _ => b"POST /v1/execute HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n{\"sql\":",
        };
        conn.write_all(partial).await.unwrap();
        stalled.push(conn);
    }
    let c = Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = c.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for sql in ["CREATE TABLE t(v)", "INSERT INTO t VALUES (1)"] {
        let r = c
            .post(s.url("/v1/execute"))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{sql}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    drop(stalled);
}

/// A body declared larger than `max_body_bytes` is refused with 413 and a
/// JSON error before the client sends a byte of it.
#[tokio::test]
async fn a_declared_oversized_body_gets_413_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "max_body_bytes = 1024");
    let mut conn = connect(&s).await;
    conn.write_all(b"POST /v1/execute HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut conn, Duration::from_secs(5))
        .await
        .expect("an answer without the body");
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_error(&body, "bad_input");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes"),
        "{body}"
    );
}

/// 401, 404, 405 and 415 answer with the JSON error body like every other
/// error, and a 401 is of class `unauthorized`.
#[tokio::test]
async fn every_error_status_has_a_json_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "token = \"s3cret\"");
    let c = Client::new();
    let r = c
        .post(s.url("/v1/query"))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_error(&r.json().await.unwrap(), "unauthorized");

    let r = c
        .get(s.url("/v1/execute"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    assert_error(&r.json().await.unwrap(), "bad_input");

    let r = c
        .post(s.url("/v1/execute"))
        .bearer_auth("s3cret")
        .header("content-type", "text/plain")
        .body("{\"sql\": \"SELECT 1\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&r.json().await.unwrap(), "bad_input");

    let r = c.get(s.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_error(&r.json().await.unwrap(), "bad_input");
}

/// Integers outside SQLite's 64-bit range are refused with 400 on every
/// endpoint and nothing is written; the extremes of the range are stored
/// exactly.
#[tokio::test]
async fn integers_outside_i64_are_refused_and_the_range_is_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "");
    let c = Client::new();
    let (st, _) = post_text(&c, &s, "/v1/execute", r#"{"sql": "CREATE TABLE t(v)"}"#).await;
    assert_eq!(st, StatusCode::OK);
    for n in [
        "99999999999999999999999",
        "9223372036854775808",
        "-9223372036854775809",
    ] {
        let bodies = [
            (
                "/v1/execute",
                format!(r#"{{"sql": "INSERT INTO t VALUES (?1)", "params": [{n}]}}"#),
            ),
            (
                "/v1/execute",
                format!(
                    r#"{{"sql": "INSERT INTO t VALUES (?1)", "params": [{n}], "durable": true}}"#
                ),
            ),
            (
                "/v1/batch",
                format!(
                    r#"{{"statements": [{{"sql": "INSERT INTO t VALUES (1)"}}, {{"sql": "INSERT INTO t VALUES (?1)", "params": [{n}]}}]}}"#
                ),
            ),
            (
                "/v1/query",
                format!(r#"{{"sql": "SELECT ?1", "params": [{n}]}}"#),
            ),
        ];
        for (path, body) in bodies {
            let (st, reply) = post_text(&c, &s, path, &body).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{path} {body} -> {reply}");
            assert_error(&reply, "bad_input");
            assert!(
                reply["error"]["message"].as_str().unwrap().contains(n),
                "{reply}"
            );
        }
    }
    let (_, rows) = post_text(&c, &s, "/v1/query", r#"{"sql": "SELECT count(*) FROM t"}"#).await;
    assert_eq!(rows["rows"], json!([[0]]), "nothing was written");

    let (st, reply) = post_text(
        &c,
        &s,
        "/v1/batch",
        r#"{"statements": [{"sql": "INSERT INTO t VALUES (?1)", "params": [-9223372036854775808]}, {"sql": "INSERT INTO t VALUES (?1)", "params": [9223372036854775807]}]}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{reply}");
    let (_, rows) = post_text(
        &c,
        &s,
        "/v1/query",
        r#"{"sql": "SELECT v, typeof(v) FROM t ORDER BY v"}"#,
    )
    .await;
    assert_eq!(
        rows["rows"],
        json!([[i64::MIN, "integer"], [i64::MAX, "integer"]])
    );
}

/// A 900 KB bad statement gets an error of at most a few KB, not its own
/// text echoed back twice.
#[tokio::test]
async fn a_huge_bad_statement_gets_a_small_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "max_body_bytes = 2097152");
    let sql = format!("SELEC {}", "x".repeat(900 * 1024));
    let r = Client::new()
        .post(s.url("/v1/execute"))
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert!(text.len() < 16 * 1024, "{} bytes", text.len());
    assert_error(&serde_json::from_str(&text).unwrap(), "sql");
}
