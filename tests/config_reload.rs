//! Hot reload of the configuration: through the library
//! (`rt.reload_config()`), over HTTP (`POST /v1/config/reload`) and by
//! SIGHUP to a real `resilite run` process.

mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use reqwest::{Client, StatusCode};
use resilite::{Config, ErrorClass, EventKind, EventQuery, Runtime, Statement, Value};
use serde_json::{json, Value as Json};

/// A config file for `dir` with `extra` TOML after `[database]`.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let db = dir.join("data").join("app.db");
    std::fs::write(&path, format!("[database]\npath = {db:?}\n\n{extra}\n")).unwrap();
    path
}

/// A runtime started from the config file in `dir`.
async fn start_from_file(dir: &Path, extra: &str) -> Runtime {
    let path = write_config(dir, extra);
    let rt = Runtime::start(Config::load(&path).unwrap()).await.unwrap();
    rt.execute(Statement::new(
        "CREATE TABLE IF NOT EXISTS t(v INTEGER)",
        Vec::<Value>::new(),
    ))
    .await
    .unwrap();
    rt
}

/// A write and a read both answer.
async fn serves(rt: &Runtime) {
    rt.execute(Statement::new(
        "INSERT INTO t(v) VALUES (1)",
        Vec::<Value>::new(),
    ))
    .await
    .expect("writes are served");
    rt.query(Statement::new(
        "SELECT count(*) FROM t",
        Vec::<Value>::new(),
    ))
    .await
    .expect("reads are served");
}

/// A query that takes a few milliseconds.
fn slowish() -> Statement {
    Statement::new(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT count(*) FROM c",
        Vec::<Value>::new(),
    )
}

/// A syntax error, a bad value and an unknown key are each refused with
/// the reason; the config in effect is unchanged, the runtime keeps
/// serving writes and reads, and a `config_rejected` event records it.
#[tokio::test]
async fn reload_refuses_an_invalid_file_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start_from_file(dir.path(), "[health]\ninterval = \"10s\"").await;
    let before = rt.config();
    for (text, reason) in [
        ("[health\ninterval = \"3s\"", "invalid TOML"),
        ("[health]\ninterval = \"1ms\"", "health.interval"),
        ("[health]\nintervall = \"3s\"", "intervall"),
    ] {
        write_config(dir.path(), text);
        let err = rt.reload_config().await.expect_err(text);
        assert_eq!(err.class, ErrorClass::BadInput, "{text}");
        assert!(err.detail.contains(reason), "{text}: {}", err.detail);
        assert!(
            err.detail.contains("keeps the one in effect"),
            "{}",
            err.detail
        );
        assert_eq!(
            *rt.config(),
            *before,
            "{text}: the config in effect changed"
        );
        serves(&rt).await;
    }
    rt.flush_logs().await.unwrap();
    let page = rt
        .events(EventQuery {
            kind: Some(EventKind::ConfigRejected),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 3, "{:?}", page.events);
    rt.shutdown().await.unwrap();
}

/// Lowering `[audit] slow_threshold` by a reload makes a query that was not
/// logged as slow be logged; the answer lists it as applied and a changed
/// `database.busy_timeout` as needing a restart (kept at its running value).
#[tokio::test]
async fn reload_applies_a_lower_slow_threshold_and_lists_restart_only_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start_from_file(dir.path(), "[audit]\nslow_threshold = \"1h\"").await;
    rt.query(slowish()).await.unwrap();
    rt.flush_logs().await.unwrap();
    assert!(rt.slow_queries().await.unwrap().is_empty());

    let path = dir.path().join("config.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[database]\n", "[database]\nbusy_timeout = \"9s\"\n");
    std::fs::write(&path, text.replace("\"1h\"", "\"1ms\"")).unwrap();
    let report = rt.reload_config().await.unwrap();
    let keys: Vec<(&str, bool, bool)> = report
        .changes
        .iter()
        .map(|c| (c.key.as_str(), c.applied, c.needs_restart))
        .collect();
    assert_eq!(
        keys,
        [
            ("audit.slow_threshold", true, false),
            ("database.busy_timeout", false, true)
        ]
    );
    assert_eq!(report.needs_restart, ["database.busy_timeout"]);
    assert_eq!(rt.config().audit.slow_threshold, Duration::from_millis(1));
    assert_eq!(rt.config().database.busy_timeout, Duration::from_secs(5));

    rt.query(slowish()).await.unwrap();
    rt.flush_logs().await.unwrap();
    assert_eq!(rt.slow_queries().await.unwrap().len(), 1);
    let page = rt
        .events(EventQuery {
            kind: Some(EventKind::ConfigChange),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert!(page.events[0]
        .event
        .cause
        .contains("audit.slow_threshold: 1h → 1ms"));
    rt.shutdown().await.unwrap();
}

/// A runtime started from a `Config` value takes `reload_config_from`, and
/// refuses `reload_config` (no file) saying what to use instead.
#[tokio::test]
async fn reload_from_a_value_applies_breaker_and_health_settings() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(Config::for_database(dir.path().join("app.db")))
        .await
        .unwrap();
    let err = rt.reload_config().await.unwrap_err();
    assert!(err.detail.contains("reload_config_from"), "{}", err.detail);
    let mut new = (*rt.config()).clone();
    new.health.interval = Duration::from_secs(2);
    new.retry.max_attempts = 3;
    new.breakers
        .entry("smtp".into())
        .or_default()
        .consecutive_failures = 1;
    let report = rt.reload_config_from(new.clone()).await.unwrap();
    assert!(report.needs_restart.is_empty());
    assert_eq!(*rt.config(), new);
    // The smtp breaker now opens on the first failure.
    let smtp = rt.breaker("smtp").unwrap();
    let failed = smtp.call(async { Err::<(), _>("down") }).await;
    assert!(failed.is_err());
    let snapshot = smtp.state().await.unwrap();
    assert_eq!(snapshot.state, resilite::BreakerState::Open);
    rt.shutdown().await.unwrap();
}

fn server_config(dir: &Path, token: &str, extra: &str) {
    let db = dir.join("data").join("app.db");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[database]\npath = {db:?}\nsynchronous = \"full\"\n\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\n{extra}\n"
        ),
    )
    .unwrap();
}

fn hup(s: &server::Server) {
    let pid = nix::unistd::Pid::from_raw(s.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

async fn execute(c: &Client, s: &server::Server, token: &str) -> StatusCode {
    c.post(s.url("/v1/execute"))
        .bearer_auth(token)
        .json(&json!({"sql": "CREATE TABLE IF NOT EXISTS t(v)", "params": []}))
        .send()
        .await
        .unwrap()
        .status()
}

/// SIGHUP with a bad file: the process keeps running and serving, and its
/// log says why; POST /v1/config/reload answers 400 with the reason. SIGHUP
/// with a good file: the new token is in force over HTTP; a changed
/// `http.listen` is reported as needing a restart.
#[tokio::test]
async fn sighup_and_http_reload_on_a_real_process() {
    const OLD: &str = "old-token-0123456789abcdef";
    const NEW: &str = "new-token-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let mut s = server::start(&dir, &format!("token = \"{OLD}\""));
    let c = Client::new();
    assert_eq!(execute(&c, &s, OLD).await, StatusCode::OK);

    std::fs::write(
        dir.path().join("config.toml"),
        "[health]\ninterval = \"nope\"\n",
    )
    .unwrap();
    hup(&s);
    let log = dir.path().join("stderr.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("configuration reload refused") {
            assert!(text.contains("health.interval"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal in the log:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.child.try_wait().unwrap().is_none(), "the process exited");
    assert_eq!(execute(&c, &s, OLD).await, StatusCode::OK);
    let r = c
        .post(s.url("/v1/config/reload"))
        .bearer_auth(OLD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Json = r.json().await.unwrap();
    assert!(body.to_string().contains("health.interval"), "{body}");

    server_config(dir.path(), NEW, "");
    hup(&s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while execute(&c, &s, NEW).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "the new token was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(execute(&c, &s, OLD).await, StatusCode::UNAUTHORIZED);

    // Over HTTP: a restart-only key is reported, and not applied.
    let db = dir.path().join("data").join("app.db");
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[database]\npath = {db:?}\nsynchronous = \"full\"\n\n[http]\nlisten = \"127.0.0.1:1\"\ntoken = \"{NEW}\"\n"),
    )
    .unwrap();
    let r = c
        .post(s.url("/v1/config/reload"))
        .bearer_auth(NEW)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Json = r.json().await.unwrap();
    assert_eq!(body["needs_restart"], json!(["http.listen"]), "{body}");
    assert_eq!(body["changes"][0]["applied"], json!(false), "{body}");
    assert_eq!(execute(&c, &s, NEW).await, StatusCode::OK);
    assert!(s.terminate().success());
}

/// One step of a reload sequence: a valid change of live keys, or a file
/// that must be refused.
#[derive(Debug, Clone)]
enum Step {
    Valid {
        interval_s: u64,
        slow_ms: u64,
        attempts: u32,
        failures: u32,
    },
    Invalid(&'static str),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..60, 1u64..5000, 1u32..50, 1u32..20).prop_map(|(i, s, a, f)| Step::Valid {
            interval_s: i,
            slow_ms: s,
            attempts: a,
            failures: f,
        }),
        prop_oneof![
            Just("[health\n"),
            Just("[health]\ninterval = \"1ms\""),
            Just("[retry]\nmax_attempts = 0"),
            Just("[breakers.database]\nconsecutive_failures = 0"),
            Just("[audit]\nslow_treshold = \"1s\""),
            Just("[nosuch]\nkey = 1"),
        ]
        .prop_map(Step::Invalid),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Property 16 (Configuration Hot Reload): for any configuration
    /// change, the new configuration is applied without a restart. Over
    /// random sequences of valid and invalid files, each valid one is in
    /// effect (`rt.config()`) after its reload, each invalid one is refused
    /// and leaves the config in effect as it was, and the runtime serves
    /// writes and reads throughout.
    #[test]
    fn property_16_configuration_hot_reload(steps in proptest::collection::vec(step(), 1..6)) {
        let tokio = tokio::runtime::Runtime::new().unwrap();
        tokio.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let rt = start_from_file(dir.path(), "").await;
            for step in steps {
                let before = rt.config();
                match step {
                    Step::Valid { interval_s, slow_ms, attempts, failures } => {
                        write_config(dir.path(), &format!(
                            "[health]\ninterval = \"{interval_s}s\"\nquick_check_every = \"1h\"\n\n[retry]\nmax_attempts = {attempts}\n\n[audit]\nslow_threshold = \"{slow_ms}ms\"\n\n[breakers.database]\nconsecutive_failures = {failures}"
                        ));
                        rt.reload_config().await.expect("a valid file is applied");
                        let now = rt.config();
                        assert_eq!(now.health.interval, Duration::from_secs(interval_s));
                        assert_eq!(now.retry.max_attempts, attempts);
                        assert_eq!(now.audit.slow_threshold, Duration::from_millis(slow_ms));
                        assert_eq!(now.breakers["database"].consecutive_failures, failures);
                        assert_eq!(now.database.path, before.database.path);
                    }
                    Step::Invalid(text) => {
                        write_config(dir.path(), text);
                        let err = rt.reload_config().await.expect_err(text);
                        assert_eq!(err.class, ErrorClass::BadInput);
                        assert_eq!(*rt.config(), *before, "{}", text);
                    }
                }
                serves(&rt).await;
            }
            rt.shutdown().await.unwrap();
        });
    }
}
