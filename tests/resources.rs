//! Resource samples: every `[health] resource_interval` the runtime stores
//! what the process and its files use (memory, CPU, open files, database,
//! WAL and journal sizes, free disk, retry queue depth, write rate) in the
//! journal; read through `rt.resource_samples`, `GET /v1/resources` and
//! `resilite resources`, and published as gauges on `/metrics`.
//!
//! The interval is 100 ms here, so samples come quickly; tests poll for
//! them with a deadline rather than sleeping a fixed time.

mod common;
mod server;

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use resilite::{CheckpointMode, Maintenance, ResourceSample, Runtime, Statement, Value};
use serde_json::Value as Json;
use server::{resilite, text};

const TOKEN: &str = "s3cret-s3cret-s3cret";
const FAST: Duration = Duration::from_millis(100);

/// Poll `rt.resource_samples` until `done` holds for the newest ones.
async fn samples_until(
    rt: &Runtime,
    done: impl Fn(&[ResourceSample]) -> bool,
) -> Vec<ResourceSample> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let samples = rt.resource_samples(1000).await.unwrap();
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "{samples:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write_rows(rt: &Runtime, rows: usize) {
    rt.execute(Statement::sql(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)",
    ))
    .await
    .unwrap();
    for _ in 0..rows / 50 {
        let batch = (0..50)
            .map(|_| Statement::new("INSERT INTO t (v) VALUES (?1)", [Value::Blob(vec![7; 512])]))
            .collect();
        rt.batch(batch).await.unwrap();
    }
}

/// Samples appear in the journal with plausible figures: resident memory,
/// CPU time, open files, a journal, free disk, an empty retry queue; the
/// database size matches the file once writes have stopped, and a sample
/// taken across writes shows a positive write rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_are_stored_with_plausible_figures() {
    let t = common::start_with(|c| c.health.resource_interval = FAST).await;
    let rt = &t.rt;
    // Write for a while, so that at least one sample falls between writes.
    let writing_until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < writing_until {
        write_rows(rt, 200).await;
    }
    let samples = samples_until(rt, |s| {
        s.iter().any(|s| s.write_rate.is_some_and(|r| r > 0.0))
    })
    .await;
    let latest = &samples[0];
    assert!(latest.rss_bytes.is_some_and(|b| b > 1 << 20), "{latest:?}");
    assert!(latest.cpu_seconds.is_some_and(|s| s > 0.0), "{latest:?}");
    assert!(latest.open_fds.is_some_and(|n| n > 3), "{latest:?}");
    assert!(latest.journal_bytes > 0, "{latest:?}");
    assert!(latest.disk_free_bytes.is_some_and(|b| b > 0), "{latest:?}");
    assert_eq!(latest.queue_depth, Some(0), "{latest:?}");
    assert!(latest.cpu_pct.is_some_and(|p| p >= 0.0), "{latest:?}");
    assert!(latest.at.ends_with('Z'), "{latest:?}");
    assert!(samples.windows(2).all(|w| w[0].at_ms >= w[1].at_ms));

    // Writes stopped. The writer copies its WAL back only past 4000
    // pages, so the writes may all be in the WAL still: copy them into the
    // file. Two samples taken from now on see the file as it is, and no
    // write between them.
    rt.maintain(Maintenance::Checkpoint(CheckpointMode::Truncate))
        .await
        .unwrap();
    let stopped = resilite_now_ms();
    let after = samples_until(rt, |s| s.get(1).is_some_and(|s| s.at_ms > stopped)).await;
    let file = std::fs::metadata(t.db_path()).unwrap().len();
    let seen = after[0].db_bytes;
    assert!(file > 100_000, "the writes made a database of {file} bytes");
    assert!(
        seen.abs_diff(file) <= file / 10,
        "sampled {seen} bytes, the file has {file}"
    );
    assert_eq!(after[0].write_rate, Some(0.0), "{:?}", after[0]);
    rt.shutdown().await.unwrap();
}

fn resilite_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// At "0s" no sample is taken; a reload to 100 ms starts sampling at once,
/// and a reload back to "0s" stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_interval_takes_none_and_a_reload_turns_sampling_on_and_off() {
    let t = common::start_with(|c| c.health.resource_interval = Duration::ZERO).await;
    let rt = &t.rt;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(rt.resource_samples(10).await.unwrap().is_empty());

    let mut on = (*rt.config()).clone();
    on.health.resource_interval = FAST;
    rt.reload_config_from(on).await.unwrap();
    samples_until(rt, |s| s.len() >= 3).await;

    let mut off = (*rt.config()).clone();
    off.health.resource_interval = Duration::ZERO;
    rt.reload_config_from(off).await.unwrap();
    let stopped = rt.resource_samples(1000).await.unwrap().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = rt.resource_samples(1000).await.unwrap().len();
    assert!(later <= stopped + 1, "{stopped} samples, then {later}");

    let err = rt.resource_samples(0).await.unwrap_err();
    assert!(err.detail.contains("between 1 and"), "{}", err.detail);
    rt.shutdown().await.unwrap();
}

/// On a real `resilite run`: the gauges are on `/metrics`,
/// `GET /v1/resources` needs the token and lists the samples (a bad limit
/// is a 400 saying what is allowed), and `resilite resources` reads them
/// from the journal beside the running database, as JSON and as text.
#[tokio::test]
async fn gauges_http_and_cli_show_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(
        &dir,
        &format!("token = \"{TOKEN}\"\n[health]\nresource_interval = \"100ms\""),
    );
    let c = Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let r = c
            .get(s.url("/v1/resources?limit=5"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Json = r.json().await.unwrap();
        let samples = body["samples"].as_array().unwrap().clone();
        if samples.len() >= 3 {
            break samples;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(samples.len() <= 5);
    assert!(samples[0]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(samples[0]["open_fds"].as_u64().unwrap() > 0);

    let r = c.get(s.url("/v1/resources")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(s.url("/v1/resources?limit=0"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Json = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and"),
        "{body}"
    );

    let metrics = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for gauge in [
        "resilite_process_rss_bytes",
        "resilite_process_cpu_seconds_total",
        "resilite_process_open_fds",
        "resilite_journal_bytes",
        "resilite_write_rate",
        "resilite_process_cpu_percent",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(gauge) && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("{gauge} missing:\n{metrics}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 0.0, "{line}");
    }

    let db = s.db_path();
    let out = resilite(&[
        "resources",
        "--db",
        db.to_str().unwrap(),
        "--json",
        "--limit",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Vec<ResourceSample> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|s| s.rss_bytes.is_some_and(|b| b > 0)));

    let out = resilite(&["resources", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" rss "), "{}", text(&out));

    let out = resilite(&["resources", "--db", db.to_str().unwrap(), "--limit", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("between 1 and"), "{}", text(&out));
}
