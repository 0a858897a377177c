//! The operation audit over HTTP and the CLI: writes carry their
//! `X-Request-Id` and client address into `GET /v1/audit` (token-protected,
//! filtered, paged) and `resilite audit`.

mod server;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use server::{resilite, text};

const TOKEN: &str = "s3cret-s3cret-s3cret";

/// A write sent with `X-Request-Id` is recorded with it and the client's
/// address; one sent without gets a generated id; a failed one is found
/// by status; a bad status is a 400 that lists the statuses; the CLI reads
/// the same records from the journal after shutdown.
#[tokio::test]
async fn http_audit_records_request_ids_and_clients() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start_with_env(
        &dir,
        &format!("token = \"{TOKEN}\""),
        &[("RESILITE_AUDIT_LEVEL", "all")],
    );
    let c = Client::new();
    let exec = |sql: &str, id: Option<&str>| {
        let mut r = c
            .post(s.url("/v1/execute"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "sql": sql }));
        if let Some(id) = id {
            r = r.header("X-Request-Id", id);
        }
        r.send()
    };
    assert_eq!(
        exec("CREATE TABLE t(v INTEGER NOT NULL)", None)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        exec("INSERT INTO t VALUES (1)", Some("order-42"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_ne!(
        exec("INSERT INTO t VALUES (NULL)", Some("order-43"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let r = c.get(s.url("/v1/audit")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let get = |path: &str| c.get(s.url(path)).bearer_auth(TOKEN).send();
    let page: Value = get("/v1/audit?table=t&since=1h")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{page}");
    assert_eq!(records[1]["request_id"], "order-42");
    assert_eq!(records[1]["status"], "committed");
    assert!(
        records[1]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{page}"
    );
    let page: Value = get("/v1/audit?status=failed")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["records"][0]["request_id"], "order-43", "{page}");
    assert_eq!(page["records"][0]["error_class"], "constraint");
    let page: Value = get("/v1/audit?limit=1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = page["next"].as_i64().unwrap();
    let page: Value = get(&format!("/v1/audit?before={next}&limit=5"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let oldest = page["records"].as_array().unwrap().last().unwrap().clone();
    assert!(
        oldest["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "generated: {oldest}"
    );
    let r = get("/v1/audit?status=lost").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rolled_back"),
        "{body}"
    );

    let mut s = s;
    assert!(s.terminate().success());
    let db = s.db_path();
    let out = resilite(&[
        "audit",
        "--db",
        db.to_str().unwrap(),
        "--status",
        "failed",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1, "{page}");
    let out = resilite(&["audit", "--db", db.to_str().unwrap(), "--table", "t"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("order-42"), "{}", text(&out));
    let out = resilite(&["audit", "--db", db.to_str().unwrap(), "--since", "soon"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
