//! Property test of service while the database takes no writes: another
//! process holds the write lock (the `database` breaker opens), the writer
//! failed past its restart limit, or writes are paused. Whatever the fault
//! and whatever is asked, over HTTP on 127.0.0.1 and through the handle,
//! everything that needs no write keeps answering; writes are refused at
//! once, durable writes are kept, and they land once the fault is gone.

mod common;

use std::time::Duration;

use proptest::prelude::*;
use reqwest::{Client, StatusCode};
use resilite::testing::WriterMsg;
use resilite::{BreakerConfig, Error, Statement, Status};
use serde_json::{json, Value};

use common::{insert, start_with};

/// Why the database takes no writes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Another process holds the write lock; two failed writes open the
    /// `database` breaker.
    HeldLock,
    /// The writer panicked past `supervisor.max_restarts`.
    WriterFailed,
    /// `rt.pause_writes(..)`, as a restore does.
    WritesPaused,
}

/// A request made during the fault.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Health,
    Ready,
    Metrics,
    Detailed,
    Query,
    DeadLetters,
    Backups,
    Recoveries,
    /// A call through a named breaker (a dependency that is not the database).
    Breaker,
    Write,
    DurableWrite,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::HeldLock),
        Just(Fault::WriterFailed),
        Just(Fault::WritesPaused)
    ]
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        Just(Ask::Health),
        Just(Ask::Ready),
        Just(Ask::Metrics),
        Just(Ask::Detailed),
        Just(Ask::Query),
        Just(Ask::DeadLetters),
        Just(Ask::Backups),
        Just(Ask::Recoveries),
        Just(Ask::Breaker),
        Just(Ask::Write),
        Just(Ask::DurableWrite),
    ]
}

/// Longest a request may take during the fault: far below what a request
/// stuck on the database would take.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let r = tokio::time::timeout(ANSWER_WITHIN, req.send())
        .await
        .expect("answered in time")
        .expect("a response");
    let status = r.status();
    (status, r.text().await.unwrap())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// One case: `fault`, then every request in `asks`, then the fault gone.
async fn continuity(fault: Fault, asks: Vec<Ask>) {
    let t = start_with(|c| {
        c.database.busy_timeout = Duration::from_millis(20);
        c.writer.max_retries = 0;
        c.supervisor.max_restarts = 1;
        c.retry.base_delay = Duration::from_millis(20);
        c.retry.poll_interval = Duration::from_millis(20);
        c.breakers.insert(
            "database".into(),
            BreakerConfig {
                consecutive_failures: 2,
                open_for: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
        );
    })
    .await;
    t.rt.execute(Statement::sql("CREATE TABLE t(v INTEGER)"))
        .await
        .unwrap();
    for v in 0..3 {
        t.rt.execute(insert("t", v)).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(resilite::http::serve(t.rt.clone(), listener, async {
        let _ = stopped.await;
    }));

    let mut holder = None;
    match fault {
        Fault::HeldLock => {
            let conn = common::open_direct(&t.db_path());
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            holder = Some(conn);
            for v in 0..2 {
                let err = t.rt.execute(insert("t", v)).await.unwrap_err();
                assert_eq!(err.class, resilite::ErrorClass::Transient, "{err}");
            }
        }
        Fault::WriterFailed => {
            for _ in 0..2 {
                let writer = t.rt.writer().await.unwrap();
                writer.send_message(WriterMsg::InjectPanic).unwrap();
                for _ in 0..500 {
                    match t.rt.writer().await {
                        Ok(w) if w.get_id() != writer.get_id() => break,
                        Err(_) => break,
                        _ => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
            assert!(
                matches!(t.rt.status(), Status::Failed(_)),
                "{:?}",
                t.rt.status()
            );
        }
        Fault::WritesPaused => t.rt.pause_writes("maintenance in progress"),
    }

    let c = Client::new();
    let url = |path: &str| format!("{base}{path}");
    let mut queued = 0;
    for ask in &asks {
        let case = format!("{fault:?} {ask:?}");
        match ask {
            Ask::Health => {
                let (code, body) = call(c.get(url("/health"))).await;
                let body = json_of(&body);
                assert!(body["status"].is_string(), "{case}: {body}");
                let failed = fault == Fault::WriterFailed;
                assert_eq!(
                    code == StatusCode::SERVICE_UNAVAILABLE,
                    failed,
                    "{case}: {body}"
                );
            }
            Ask::Ready => {
                let (code, body) = call(c.get(url("/ready"))).await;
                assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{case}: {body}");
                let body = json_of(&body);
                assert_eq!(body["ready"], false, "{case}: {body}");
                assert!(!body["reason"].is_null(), "{case}: {body}");
            }
            Ask::Metrics => {
                let (code, body) = call(c.get(url("/metrics"))).await;
                assert_eq!(code, StatusCode::OK, "{case}: {body}");
                let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.into())))
                    .expect("Prometheus text");
                assert!(
                    scrape
                        .samples
                        .iter()
                        .any(|s| s.metric == "resilite_writes_total"),
                    "{case}"
                );
            }
            Ask::Detailed => {
                let (code, body) = call(c.get(url("/health/detailed"))).await;
                assert_eq!(code, StatusCode::OK, "{case}: {body}");
                assert!(json_of(&body)["status"].is_string(), "{case}: {body}");
            }
            Ask::Query => {
                let req = c
                    .post(url("/v1/query"))
                    .json(&json!({"sql": "SELECT count(*) FROM t"}));
                let (code, body) = call(req).await;
                assert_eq!(code, StatusCode::OK, "{case}: {body}");
                assert_eq!(json_of(&body)["rows"], json!([[3]]), "{case}");
            }
            Ask::DeadLetters | Ask::Backups | Ask::Recoveries => {
                let (path, field) = match ask {
                    Ask::DeadLetters => ("/v1/dlq", "entries"),
                    Ask::Backups => ("/v1/backups", "backups"),
                    _ => ("/v1/recoveries", "recoveries"),
                };
                let (code, body) = call(c.get(url(path))).await;
                assert_eq!(code, StatusCode::OK, "{case}: {body}");
                assert!(json_of(&body)[field].is_array(), "{case}: {body}");
            }
            Ask::Breaker => {
                let mail = t.rt.breaker("mail").unwrap();
                let sent = tokio::time::timeout(
                    ANSWER_WITHIN,
                    mail.call(async { Ok::<_, Error>("sent") }),
                )
                .await
                .expect("answered in time");
                assert_eq!(sent.unwrap(), "sent", "{case}");
            }
            Ask::Write => {
                let req = c
                    .post(url("/v1/execute"))
                    .json(&json!({"sql": "INSERT INTO t VALUES (100)"}));
                let (code, body) = call(req).await;
                assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{case}: {body}");
                assert_eq!(json_of(&body)["error"]["class"], "unavailable", "{case}");
            }
            Ask::DurableWrite => {
                let req = c.post(url("/v1/execute")).json(
                    &json!({"sql": "INSERT INTO t VALUES (?1)", "params": [1000 + queued], "durable": true}),
                );
                let (code, body) = call(req).await;
                assert_eq!(code, StatusCode::ACCEPTED, "{case}: {body}");
                assert_eq!(json_of(&body)["status"], "queued", "{case}");
                queued += 1;
            }
        }
    }

    // Nothing was written meanwhile; every durable write is kept.
    let stats = t.rt.queue_stats().await.unwrap();
    assert_eq!(stats.queued + stats.retrying, queued, "{stats:?}");
    if fault != Fault::WriterFailed {
        // The fault goes: the queued writes land, each once.
        drop(holder.take());
        t.rt.resume_writes();
        let stats = common::queue_settled(&t.rt, Duration::from_secs(30)).await;
        assert_eq!(stats.succeeded, queued, "{stats:?}");
        let rows =
            t.rt.query(Statement::sql(
                "SELECT count(*), count(DISTINCT v) FROM t WHERE v >= 1000",
            ))
            .await
            .unwrap();
        let n = resilite::Value::Integer(queued);
        assert_eq!(rows.rows[0], vec![n.clone(), n]);
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let _ = t.rt.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::cases(6),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Property 14: Non-Database Command Continuity. For any fault that
    /// stops writes (a held lock, the writer failed past its restart limit,
    /// writes paused) and any sequence of requests, `/health`, `/ready`,
    /// `/metrics`, `/health/detailed`, reads, the DLQ, backup and recovery
    /// listings and calls through a named breaker all answer within 5 s
    /// with their usual body, writes are refused at once with
    /// `unavailable`.
    ///
    /// Property 2: Graceful Degradation on Connection Failure. In the same
    /// runs durable writes are answered 202 and kept in the journal's
    /// queue, and once the lock is released or writes resume they land,
    /// each once.
    #[test]
    fn whatever_stops_writes_everything_else_keeps_answering(
        fault in fault(),
        asks in prop::collection::vec(ask(), 1..16),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(continuity(fault, asks));
    }
}
