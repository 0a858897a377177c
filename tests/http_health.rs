//! Health, readiness and metrics over HTTP on a real `resilite run` process:
//! liveness and readiness answers, the token on `/health/detailed`, and
//! `/metrics` parsed as Prometheus text with counters that move with traffic.

mod server;

use prometheus_parse::{Scrape, Value as Metric};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn get(c: &Client, s: &server::Server, path: &str) -> (StatusCode, String) {
    let r = c.get(s.url(path)).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn execute(c: &Client, s: &server::Server, body: Value) {
    let r = c
        .post(s.url("/v1/execute"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_ready_and_detailed_report_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "token = \"s3cret\"\n\n[health]\ninterval = \"200ms\"");
    let c = Client::new();
    // `/health/detailed` answers with the first check (run at startup, or
    // now if it has not finished): after it, `/health` is no longer PENDING.
    let (code, body) = get(&c, &s, "/health/detailed").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let detailed: Value = c
        .get(s.url("/health/detailed"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let (code, body) = get(&c, &s, "/health").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "HEALTHY", "{health}");
    assert_eq!(health["runtime"]["status"], "healthy");

    let (code, body) = get(&c, &s, "/ready").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"ready": true})
    );

    assert_eq!(detailed["status"], "HEALTHY", "{detailed}");
    assert_eq!(detailed["integrity"], "ok");
    assert!(detailed["figures"]["write_probe_ms"].as_f64().unwrap() > 0.0);
    assert!(detailed["figures"]["page_size"].as_i64().unwrap() > 0);
    let actors: Vec<&str> = detailed["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        actors,
        [
            "journal-writer",
            "writer",
            "retry-queue",
            "breakers",
            "backup",
            "health"
        ]
    );
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
            // The +Inf bucket holds the number of observations.
            Metric::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Metric::Summary(_) => f64::NAN,
        })
}

async fn scrape(c: &Client, s: &server::Server) -> Scrape {
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = r.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

#[tokio::test]
async fn metrics_parse_as_prometheus_and_move_with_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, "");
    let c = Client::new();
    execute(&c, &s, json!({"sql": "CREATE TABLE m(v INTEGER)"})).await;
    let committed = [("writer", "writer"), ("outcome", "committed")];
    let before = scrape(&c, &s).await;
    let writes_before = sample(&before, "resilite_writes_total", &committed).unwrap_or(0.0);
    let latency_before = sample(&before, "resilite_write_duration_seconds", &[]).unwrap_or(0.0);

    for i in 0..50 {
        execute(
            &c,
            &s,
            json!({"sql": "INSERT INTO m VALUES (?1)", "params": [i]}),
        )
        .await;
    }
    let r = c
        .post(s.url("/v1/query"))
        .json(&json!({"sql": "SELECT count(*) FROM m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let after = scrape(&c, &s).await;
    let writes_after = sample(&after, "resilite_writes_total", &committed).unwrap();
    assert!(
        writes_after >= writes_before + 50.0,
        "writes {writes_before} -> {writes_after}"
    );
    let latency_after = sample(&after, "resilite_write_duration_seconds", &[]).unwrap();
    // Latencies are sampled (one write in 8 per thread).
    assert!(
        latency_after > latency_before,
        "{latency_before} -> {latency_after}"
    );
    assert!(sample(&after, "resilite_reads_total", &[("outcome", "ok")]).unwrap() >= 1.0);
    assert!(
        sample(
            &after,
            "resilite_commit_batch_size",
            &[("writer", "writer")]
        )
        .unwrap()
            >= 1.0
    );
    // Figures of the startup health check.
    assert_eq!(sample(&after, "resilite_health_status", &[]), Some(0.0));
    assert!(sample(&after, "resilite_db_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&after, "resilite_write_probe_seconds", &[]).unwrap() > 0.0);
}
