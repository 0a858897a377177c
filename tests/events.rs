//! Events with explanations: what resilite does by itself (a breaker
//! opening and closing, an operation dead-lettered, a backup, a recovery)
//! is recorded with a summary, its cause, resilite's decision and what the
//! operator must do; read through `rt.events`, `resilite events` and
//! `GET /v1/events`, newest first, a page at a time.

mod common;
mod server;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use resilite::{
    BreakerConfig, EnqueueOptions, Error, EventKind, EventQuery, EventRecord, Runtime, Severity,
};
use serde_json::Value;
use server::{resilite, text};

const TOKEN: &str = "s3cret-s3cret-s3cret";

/// Every event, newest first, read a page of `limit` at a time through the
/// `before` cursor.
async fn all_pages(rt: &Runtime, limit: usize) -> Vec<EventRecord> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = rt
            .events(EventQuery {
                limit: Some(limit),
                before,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert!(page.events.len() <= limit);
        all.extend(page.events);
        match page.next {
            Some(next) => before = Some(next),
            None => return all,
        }
    }
}

fn of_kind(events: &[EventRecord], kind: EventKind) -> &EventRecord {
    // The recovery holds the database breaker open too: the named one here.
    events
        .iter()
        .find(|e| e.event.kind == kind && !e.event.subject.starts_with("database"))
        .unwrap_or_else(|| panic!("no {kind} event in {events:#?}"))
}

/// A breaker opening, half-opening and closing, a dead-lettered operation,
/// a backup and a recovery each leave an event that explains itself; pages
/// read through the cursor hold every event once, newest first; the CLI
/// reads the same from the journal after shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_actions_are_recorded_as_explained_events() {
    let t = common::start_with(|c| {
        c.breakers.insert(
            "smtp".into(),
            BreakerConfig {
                consecutive_failures: 2,
                open_for: Duration::from_millis(100),
                half_open_calls: 1,
                ..BreakerConfig::default()
            },
        );
        c.retry.poll_interval = Duration::from_millis(50);
    })
    .await;
    let rt = &t.rt;
    rt.execute(resilite::Statement::sql("CREATE TABLE t(v)"))
        .await
        .unwrap();

    // The breaker opens after two failures, and closes after a trial call.
    let smtp = rt.breaker("smtp").unwrap();
    for _ in 0..2 {
        let _ = smtp
            .call(async { Err::<(), _>(Error::unavailable("smtp down")) })
            .await;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    smtp.call(async { Ok::<_, Error>(()) }).await.unwrap();
    assert!(smtp.flush().await.unwrap());

    // A payload its handler refuses for good is dead-lettered.
    rt.register_handler(
        "webhook",
        Arc::new(|_| Box::pin(async { Err(Error::bad_input("the URL is not valid")) })),
    );
    let id = rt
        .enqueue(
            "webhook",
            serde_json::json!({"url": "bad"}),
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while rt.dead_letters(false).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the entry was not dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A backup, then a recovery from it.
    let backup = rt.backup("manual").await.unwrap();
    rt.recover().await.unwrap();
    rt.flush_logs().await.unwrap();

    let events = all_pages(rt, 2).await;
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "each once"
    );
    assert_eq!(
        events,
        rt.events(EventQuery::default()).await.unwrap().events
    );
    for e in &events {
        let e = &e.event;
        assert!(
            !e.summary.is_empty() && !e.cause.is_empty() && !e.decision.is_empty(),
            "{e:?}"
        );
    }

    let opened = of_kind(&events, EventKind::BreakerOpened);
    assert_eq!(opened.event.subject, "smtp");
    assert_eq!(opened.event.severity, Severity::Warning);
    assert!(opened.event.summary.contains("smtp opened"), "{opened:?}");
    assert!(
        opened.event.cause.contains("2"),
        "the rule that fired: {opened:?}"
    );
    of_kind(&events, EventKind::BreakerHalfOpen);
    let closed = of_kind(&events, EventKind::BreakerClosed);
    assert!(closed.id > opened.id);

    let dead = of_kind(&events, EventKind::DeadLettered);
    assert_eq!(dead.event.subject, format!("queue entry {id}"));
    assert!(
        dead.event.cause.contains("the URL is not valid"),
        "{dead:?}"
    );
    let action = dead.event.operator_action.as_deref().unwrap();
    assert!(
        action.contains(&format!("resilite dlq show {id}")),
        "{action}"
    );

    let taken = of_kind(&events, EventKind::Backup);
    assert_eq!(taken.event.subject, backup.name);
    assert_eq!(taken.event.operator_action, None, "nothing to do");

    // The recovery paused writes by holding the database breaker open.
    let paused = events
        .iter()
        .find(|e| e.event.kind == EventKind::BreakerOpened && e.event.subject == "database")
        .expect("the database breaker's pause is an event");
    assert!(paused.event.cause.starts_with("forced open"), "{paused:?}");

    let recovered = of_kind(&events, EventKind::Recovery);
    assert_eq!(recovered.event.cause, "manual");
    assert!(recovered.event.operator_action.is_some(), "{recovered:?}");

    // Filters: kind, severity (that or worse).
    let backups = rt
        .events(EventQuery {
            kind: Some(EventKind::Backup),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(backups
        .events
        .iter()
        .all(|e| e.event.kind == EventKind::Backup));
    let warnings = rt
        .events(EventQuery {
            severity: Some(Severity::Warning),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(warnings
        .events
        .iter()
        .all(|e| e.event.severity >= Severity::Warning));
    assert!(warnings
        .events
        .iter()
        .any(|e| e.event.kind == EventKind::DeadLettered));

    let db = t.db_path();
    rt.shutdown().await.unwrap();

    // The CLI reads the same journal, read-only.
    let db_arg = db.to_str().unwrap();
    let out = resilite(&["events", "--db", db_arg, "--json", "--since", "1h"]);
    assert!(out.status.success(), "{}", text(&out));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "breaker_opened",
        "breaker_closed",
        "dead_lettered",
        "backup",
        "recovery",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let out = resilite(&["events", "--db", db_arg, "--kind", "backup", "--limit", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&backup.name), "{}", text(&out));
    let out = resilite(&["events", "--db", db_arg, "--kind", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not an event kind"), "{}", text(&out));
    let out = resilite(&["events", "--db", db_arg, "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not a duration"), "{}", text(&out));
}

async fn get(c: &Client, s: &server::Server, path: &str) -> (StatusCode, Value) {
    let r = c.get(s.url(path)).bearer_auth(TOKEN).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/events` needs the token, pages newest first through `next`,
/// filters by kind and refuses a bad parameter with 400 saying why.
#[tokio::test]
async fn http_events_are_token_protected_and_paginated() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, &format!("token = \"{TOKEN}\""));
    let c = Client::new();
    for label in ["one", "two", "three"] {
        let r = c
            .post(s.url("/v1/backups"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "label": label }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = c.get(s.url("/v1/events")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Events reach the journal within moments of the backups.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, page) = get(&c, &s, "/v1/events?kind=backup").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if page["events"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/events?kind=backup&limit=2&since=1h".to_string();
    loop {
        let (status, page) = get(&c, &s, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for e in page["events"].as_array().unwrap() {
            assert!(e["summary"].as_str().unwrap().starts_with("Backup "), "{e}");
            seen.push(e["id"].as_i64().unwrap());
        }
        match page["next"].as_i64() {
            Some(next) => path = format!("/v1/events?kind=backup&limit=2&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");

    let (status, body) = get(&c, &s, "/v1/events?severity=loud").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("info, warning or critical"),
        "{body}"
    );
    let (status, _) = get(&c, &s, "/v1/events?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
