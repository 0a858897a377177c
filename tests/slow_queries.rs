//! The slow-query log: a query slower than `[audit] slow_threshold` is
//! recorded once per normalised statement with a count, its query plan,
//! whether it scans a table without an index, and the index that would
//! serve it; read through `rt.slow_queries`, `resilite slow-queries` and
//! `GET /v1/slow-queries`.
//!
//! Timing is made deterministic by the threshold, not by the data: at
//! "1us" every answer is slow (a round trip through the read pool takes
//! longer), so whether a query is logged never depends on machine load;
//! at "0s" (off) and at "1h" none is.

mod common;
mod server;

use std::time::Duration;

use reqwest::{Client, StatusCode};
use resilite::{SlowKind, Statement, Value};
use serde_json::Value as Json;
use server::{resilite, text};

const TOKEN: &str = "s3cret-s3cret-s3cret";
const QUERY: &str = "SELECT id, total FROM orders WHERE customer = ?1";

async fn orders(rt: &resilite::Runtime) {
    rt.execute(Statement::sql(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL)",
    ))
    .await
    .unwrap();
    let rows = (0..200)
        .map(|i| {
            Statement::new(
                "INSERT INTO orders (customer, total) VALUES (?1, ?2)",
                [
                    Value::from(format!("c{}", i % 20)),
                    Value::Real(f64::from(i)),
                ],
            )
        })
        .collect();
    rt.batch(rows).await.unwrap();
}

/// A query on a column without an index is logged with SCAN in its plan
/// and an index on that column suggested, once per statement shape with a
/// count; once the index exists, the same statement's row shows a search
/// using it, no scan and no suggestion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanning_query_is_logged_with_its_plan_and_an_index_suggestion() {
    let t = common::start_with(|c| c.audit.slow_threshold = Duration::from_micros(1)).await;
    let rt = &t.rt;
    orders(rt).await;
    for customer in ["c1", "c2", "c3"] {
        rt.query(Statement::new(QUERY, [Value::from(customer)]))
            .await
            .unwrap();
    }
    rt.flush_logs().await.unwrap();
    let logged = rt.slow_queries().await.unwrap();
    let row = logged
        .iter()
        .find(|q| q.kind == SlowKind::Query)
        .unwrap_or_else(|| panic!("{logged:#?}"));
    assert_eq!(row.sql, "SELECT id, total FROM orders WHERE customer = ?");
    assert_eq!(row.count, 3);
    assert_eq!(row.rows, 10);
    assert!(row.max_ms > 0.0 && row.total_ms >= row.max_ms, "{row:?}");
    assert!(row.scan, "{row:?}");
    assert!(
        row.plan.iter().any(|l| l.contains("SCAN orders")),
        "{row:?}"
    );
    assert_eq!(
        row.suggestion.as_deref(),
        Some("CREATE INDEX orders_customer ON orders(customer)")
    );
    // The writes were slow too, at this threshold, each logged with its
    // own SQL (the writer gives every operation back with its outcome).
    for sql in [
        "CREATE TABLE orders",
        "INSERT INTO orders (customer, total)",
    ] {
        assert!(
            logged
                .iter()
                .any(|q| q.kind == SlowKind::Write && q.sql.starts_with(sql)),
            "no slow write {sql:?} in {logged:#?}"
        );
    }

    rt.execute(Statement::sql(
        "CREATE INDEX orders_customer ON orders(customer)",
    ))
    .await
    .unwrap();
    rt.query(Statement::new(QUERY, [Value::from("c4")]))
        .await
        .unwrap();
    rt.flush_logs().await.unwrap();
    let logged = rt.slow_queries().await.unwrap();
    let again = logged.iter().find(|q| q.hash == row.hash).unwrap();
    assert_eq!(again.count, 4, "one row per statement shape");
    assert!(!again.scan, "{again:?}");
    assert!(
        again
            .plan
            .iter()
            .any(|l| l.contains("USING INDEX orders_customer")),
        "{again:?}"
    );
    assert_eq!(again.suggestion, None);

    let db = t.db_path();
    rt.shutdown().await.unwrap();
    let out = resilite(&["slow-queries", "--db", db.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["hash"] == row.hash.as_str() && r["scan"] == false),
        "{rows}"
    );
    let out = resilite(&["slow-queries", "--db", db.to_str().unwrap()]);
    assert!(
        text(&out).contains("orders WHERE customer = ?"),
        "{}",
        text(&out)
    );
}

/// `slow_threshold = "0s"` turns the log off, and a threshold no query
/// reaches logs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_query_log_is_off_at_zero_and_quiet_under_its_threshold() {
    for threshold in [Duration::ZERO, Duration::from_secs(3600)] {
        let t = common::start_with(|c| c.audit.slow_threshold = threshold).await;
        orders(&t.rt).await;
        t.rt.query(Statement::new(QUERY, [Value::from("c1")]))
            .await
            .unwrap();
        t.rt.flush_logs().await.unwrap();
        assert!(
            t.rt.slow_queries().await.unwrap().is_empty(),
            "{threshold:?}"
        );
        t.rt.shutdown().await.unwrap();
    }
}

/// `GET /v1/slow-queries` needs the token and lists what was slow.
#[tokio::test]
async fn http_slow_queries_are_token_protected() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(
        &dir,
        &format!("token = \"{TOKEN}\"\n[audit]\nslow_threshold = \"1us\""),
    );
    let c = Client::new();
    let r = c
        .post(s.url("/v1/query"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(s.url("/v1/slow-queries")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .get(s.url("/v1/slow-queries"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Json = r.json().await.unwrap();
        let rows = body["slow_queries"].as_array().unwrap();
        if let Some(row) = rows.iter().find(|r| r["sql"] == "SELECT ?") {
            assert_eq!(row["kind"], "query");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
