//! Health, readiness and metrics over HTTP on a real `resilite run` process:
//! liveness and readiness answers, the token on `/health/detailed`, and
//! `/metrics` parsed as Prometheus text with counters that move with traffic;
//! and a property test of those counts on a runtime in this process (the
//! only one here: the metrics recorder is global to the process).

mod common;
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

/// `/health`, `/ready` and the token-protected `/health/detailed` of a
/// fresh server: HEALTHY, ready, integrity ok, probe figures and every
/// actor listed.
///
/// Property 10: Health Monitoring Data Collection. The connection status
/// (liveness, readiness, actor states) and the performance figures
/// (probe latencies, sizes) are collected and served over HTTP.
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

/// `/metrics` parses as Prometheus text; write, read, latency and batch
/// figures move with 50 writes and a read; the startup check's figures
/// are exported.
///
/// Property 10: Health Monitoring Data Collection. Operations are counted
/// and timed in the exported metrics of a real `resilite run` process (the
/// property test below checks the counts exactly, by outcome).
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

/// An operation of the monitoring property test.
#[derive(Debug, Clone)]
enum Op {
    Insert(i64),
    /// A UNIQUE violation (a constraint error).
    Duplicate,
    /// A table that does not exist (an SQL error).
    BadSql,
    Batch(i64, i64),
    /// A batch whose second statement violates UNIQUE: nothing applied.
    FailingBatch(i64),
    Read,
    /// A column that does not exist.
    BadRead,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        3 => any::<i64>().prop_map(Op::Insert),
        1 => Just(Op::Duplicate),
        1 => Just(Op::BadSql),
        1 => (any::<i64>(), any::<i64>()).prop_map(|(a, b)| Op::Batch(a, b)),
        1 => any::<i64>().prop_map(Op::FailingBatch),
        2 => Just(Op::Read),
        1 => Just(Op::BadRead),
    ]
}

/// The figures the property compares, from `/metrics` and the handle.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Seen {
    committed: f64,
    failed: f64,
    commits: f64,
    reads_ok: f64,
    reads_failed: f64,
}

async fn seen(c: &Client, base: &str) -> Seen {
    let r = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let m = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    let writer = ("writer", "writer");
    let get = |name: &str, labels: &[(&str, &str)]| sample(&m, name, labels).unwrap_or(0.0);
    Seen {
        committed: get("resilite_writes_total", &[writer, ("outcome", "committed")]),
        failed: get("resilite_writes_total", &[writer, ("outcome", "failed")]),
        commits: get("resilite_commit_duration_seconds", &[writer]),
        reads_ok: get("resilite_reads_total", &[("outcome", "ok")]),
        reads_failed: get("resilite_reads_total", &[("outcome", "failed")]),
    }
}

/// One case: `ops` one after the other on a runtime in this process,
/// `/metrics` served on 127.0.0.1 and scraped before and after.
async fn monitored(ops: Vec<Op>) {
    let t = common::start().await;
    let rt = &t.rt;
    rt.execute(resilite::Statement::sql("CREATE TABLE t(v INTEGER UNIQUE)"))
        .await
        .unwrap();
    rt.execute(resilite::Statement::sql("INSERT INTO t VALUES (-1)"))
        .await
        .unwrap();
    // The startup check (its write probe is a write) is over.
    while rt.latest_health().is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(resilite::http::serve(rt.clone(), listener, async {
        let _ = stopped.await;
    }));
    let c = Client::new();
    let before = seen(&c, &base).await;
    let stats_before = rt.writer_stats().await.unwrap();
    let breaker_before = rt.database_breaker();

    let stmt = |sql: &str, v: i64| resilite::Statement::new(sql, [resilite::Value::Integer(v)]);
    let ins = |v: i64| stmt("INSERT OR IGNORE INTO t VALUES (?1)", v);
    let mut want = Seen::default();
    for op in &ops {
        let ok = match *op {
            Op::Insert(v) => rt.execute(ins(v)).await.is_ok(),
            Op::Duplicate => rt
                .execute(resilite::Statement::sql("INSERT INTO t VALUES (-1)"))
                .await
                .is_ok(),
            Op::BadSql => rt
                .execute(stmt("INSERT INTO nowhere VALUES (?1)", 1))
                .await
                .is_ok(),
            Op::Batch(a, b) => rt.batch(vec![ins(a), ins(b)]).await.is_ok(),
            Op::FailingBatch(v) => rt
                .batch(vec![ins(v), stmt("INSERT INTO t VALUES (?1)", -1)])
                .await
                .is_ok(),
            Op::Read => rt
                .query(resilite::Statement::sql("SELECT count(*) FROM t"))
                .await
                .is_ok(),
            Op::BadRead => rt
                .query(resilite::Statement::sql("SELECT nope FROM t"))
                .await
                .is_ok(),
        };
        let expected = !matches!(
            op,
            Op::Duplicate | Op::BadSql | Op::FailingBatch(_) | Op::BadRead
        );
        assert_eq!(ok, expected, "{op:?}");
        match (op, ok) {
            (Op::Read | Op::BadRead, true) => want.reads_ok += 1.0,
            (Op::Read | Op::BadRead, false) => want.reads_failed += 1.0,
            (_, true) => want.committed += 1.0,
            (_, false) => want.failed += 1.0,
        }
    }

    let after = seen(&c, &base).await;
    let stats = rt.writer_stats().await.unwrap();
    let breaker = rt.database_breaker();
    let moved = Seen {
        committed: after.committed - before.committed,
        failed: after.failed - before.failed,
        commits: after.commits - before.commits,
        reads_ok: after.reads_ok - before.reads_ok,
        reads_failed: after.reads_failed - before.reads_failed,
    };
    // Error rates: every operation counted once, by outcome.
    assert_eq!(
        Seen {
            commits: 0.0,
            ..moved
        },
        want,
        "/metrics moved by {moved:?} for {ops:?}"
    );
    assert_eq!(
        stats.committed - stats_before.committed,
        want.committed as u64
    );
    assert_eq!(stats.failed - stats_before.failed, want.failed as u64);
    // Performance: one commit-duration observation per commit.
    assert_eq!(moved.commits, (stats.commits - stats_before.commits) as f64);
    // The database breaker saw every write; SQL and constraint errors
    // are not failures of the database.
    let writes = (want.committed + want.failed) as u64;
    assert_eq!(breaker.calls - breaker_before.calls, writes, "{breaker:?}");
    assert_eq!(breaker.failures, breaker_before.failures, "{breaker:?}");
    // Connection status: live, ready, probes measured, actors running.
    let r = c.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report = rt.check_now().await.unwrap();
    assert!(report.figures.read_probe_ms > 0.0, "{report:?}");
    assert!(report.figures.write_probe_ms.unwrap() > 0.0, "{report:?}");
    assert!(report
        .actors
        .iter()
        .all(|a| a.state == resilite::SlotState::Running));

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    rt.shutdown().await.unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: common::cases(6),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Property 10: Health Monitoring Data Collection. For any sequence of
    /// writes, batches and reads, some failing, `/metrics` (served on
    /// 127.0.0.1 and parsed as Prometheus text) counts each one once by
    /// outcome (`resilite_writes_total`, `resilite_reads_total`: the error
    /// rates), records the duration of every commit, agrees with the
    /// writer's own counts and the `database` breaker's, and the health
    /// report has its probe latencies and every actor running.
    #[test]
    fn metrics_count_every_operation_by_outcome(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(monitored(ops));
    }
}
