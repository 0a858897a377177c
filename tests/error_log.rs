//! The deduplicated error log: every error answered to a caller is counted
//! under its signature (class, SQLite code, message without its literal
//! values), so a burst of one error is one row with a count; read through
//! `rt.errors`, `resilite errors` and `GET /v1/errors`.

mod common;
mod server;

use std::time::Duration;

use reqwest::{Client, StatusCode};
use resilite::{ErrorClass, Severity, Statement};
use serde_json::Value;
use server::{resilite, text};

const TOKEN: &str = "s3cret-s3cret-s3cret";

/// 10,000 CHECK violations, each with another value in its SQL, make one
/// error-log row counted 10,000 (with SQLite's extended code); a failed
/// query is another row; a resolved signature seen again is open again;
/// the CLI reads the same rows after shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_error_is_one_row_with_its_count() {
    let t = common::start().await;
    let rt = &t.rt;
    rt.execute(Statement::sql("CREATE TABLE t(v INTEGER CHECK (v < 0))"))
        .await
        .unwrap();
    const N: u64 = 10_000;
    let values: Vec<u64> = (1..=N).collect();
    for chunk in values.chunks(500) {
        let writes = chunk.iter().copied().map(|i| {
            let rt = rt.clone();
            async move {
                rt.execute(Statement::sql(format!("INSERT INTO t VALUES ({i})")))
                    .await
            }
        });
        for result in futures_join(writes).await {
            assert_eq!(result.unwrap_err().class, ErrorClass::Constraint);
        }
    }
    let missing = rt.query(Statement::sql("SELECT * FROM nowhere")).await;
    assert_eq!(missing.unwrap_err().class, ErrorClass::Sql);
    rt.flush_logs().await.unwrap();

    let errors = rt.errors().await.unwrap();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let check = errors.iter().find(|e| e.class == "constraint").unwrap();
    assert_eq!(check.count, N);
    assert_eq!(check.code, Some(275), "SQLITE_CONSTRAINT_CHECK");
    assert_eq!(check.component, "write");
    assert_eq!(check.severity, Severity::Info);
    assert!(
        check.message.contains("CHECK constraint failed"),
        "{check:?}"
    );
    assert!(
        !check.message.contains("10000"),
        "literals are taken out: {check:?}"
    );
    assert!(
        check.example.contains("INSERT INTO t VALUES ("),
        "{check:?}"
    );
    assert!(check.first_seen_ms <= check.last_seen_ms);
    let query = errors.iter().find(|e| e.class == "sql").unwrap();
    assert_eq!((query.count, query.component.as_str()), (1, "query"));

    assert!(rt.resolve_error(&check.signature).await.unwrap());
    assert!(rt.errors().await.unwrap().iter().any(|e| e.resolved));
    assert!(
        !rt.resolve_error("00ff").await.unwrap(),
        "no such signature"
    );
    assert!(rt.resolve_error("../x").await.is_err());
    let _ = rt.execute(Statement::sql("INSERT INTO t VALUES (5)")).await;
    rt.flush_logs().await.unwrap();
    let again = rt.errors().await.unwrap();
    let check = again.iter().find(|e| e.class == "constraint").unwrap();
    assert_eq!(check.count, N + 1);
    assert!(!check.resolved, "seen again: open again");

    let db = t.db_path();
    rt.shutdown().await.unwrap();
    let out = resilite(&["errors", "--db", db.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .collect();
    assert!(counts.contains(&(N + 1)), "{rows}");
}

/// Run `futures` concurrently, their results in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Errors answered over HTTP are counted too; `GET /v1/errors` needs the
/// token, and `POST /v1/errors/{signature}/resolve` marks one resolved
/// (404 for an unknown signature).
#[tokio::test]
async fn http_errors_are_listed_and_resolved_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, &format!("token = \"{TOKEN}\""));
    let c = Client::new();
    for _ in 0..3 {
        let r = c
            .post(s.url("/v1/execute"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"sql": "INSERT INTO missing VALUES (1)"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let r = c.get(s.url("/v1/errors")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The counts reach the journal within a second or so.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let signature = loop {
        let r = c
            .get(s.url("/v1/errors"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        if let Some(row) = body["errors"].as_array().unwrap().first() {
            assert_eq!(row["count"], 3, "{body}");
            assert_eq!(row["class"], "sql");
            break row["signature"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let r = c
        .post(s.url(&format!("/v1/errors/{signature}/resolve")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(s.url("/v1/errors/abcdef/resolve"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
