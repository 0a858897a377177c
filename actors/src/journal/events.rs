//! Events with explanations: table `events`, one row per automatic action
//! (see [`crate::events`]), read newest first a page at a time.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::AT_TEXT;
use crate::error::{Error, ErrorClass, Result};
use crate::events::{Event, EventKind, Severity};
use crate::value::{Statement, Value};

/// Events in one page when the caller names no limit.
pub const DEFAULT_PAGE: usize = 100;
/// Events in one page, at most.
pub const MAX_PAGE: usize = 1000;

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Its id: newer events have larger ids (the `before` cursor).
    pub id: i64,
    /// When (UTC, RFC 3339).
    pub at: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Which events to read: newest first, filtered, a page at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Only events at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only events of this kind.
    pub kind: Option<EventKind>,
    /// Only events of this severity or worse.
    pub severity: Option<Severity>,
    /// Only events older than this id (the `next` of the previous page).
    pub before: Option<i64>,
    /// At most this many (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

/// One page of events, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventRecord>,
    /// The `before` of the next (older) page; `None` on the last page.
    pub next: Option<i64>,
}

/// The statement recording `event`.
pub fn insert_statement(event: &Event) -> Statement {
    Statement::new(
        format!(
            "INSERT INTO events (at_ms, at, kind, severity, summary, cause, decision, operator_action, subject) \
             VALUES (?1, {AT_TEXT}, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        [
            Value::Integer(event.at_ms),
            Value::from(event.kind.as_str()),
            Value::from(event.severity.as_str()),
            Value::from(event.summary.as_str()),
            Value::from(event.cause.as_str()),
            Value::from(event.decision.as_str()),
            event
                .operator_action
                .as_deref()
                .map_or(Value::Null, Value::from),
            Value::from(event.subject.as_str()),
        ],
    )
}

/// Record `event` on a journal connection of one's own (the CLI, a
/// recovery before the runtime starts).
pub fn insert(conn: &Connection, event: &Event) -> Result<()> {
    let s = insert_statement(event);
    conn.execute(&s.sql, rusqlite::params_from_iter(&s.params))?;
    Ok(())
}

/// The statement deleting events older than `cutoff_ms`.
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM events WHERE at_ms < ?1",
        [Value::Integer(cutoff_ms)],
    )
}

/// One page of events matching `q`, newest first. A journal from before
/// the events table has none.
pub fn page(conn: &Connection, q: &EventQuery) -> Result<EventPage> {
    if !super::has_table(conn, "events")? {
        return Ok(EventPage {
            events: Vec::new(),
            next: None,
        });
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let severities: Vec<&str> = [Severity::Info, Severity::Warning, Severity::Critical]
        .into_iter()
        .filter(|s| q.severity.is_none_or(|min| *s >= min))
        .map(Severity::as_str)
        .collect();
    let mut stmt = conn.prepare(
        "SELECT id, at, at_ms, kind, severity, summary, cause, decision, operator_action, subject FROM events \
         WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR id < ?3) \
         AND severity IN (SELECT value FROM json_each(?4)) \
         ORDER BY id DESC LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![
            q.since_ms,
            q.kind.map(EventKind::as_str),
            q.before,
            serde_json::to_string(&severities).unwrap_or_else(|_| "[]".into()),
            (limit + 1) as i64
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, String>(9)?,
            ))
        },
    )?;
    let mut events = Vec::new();
    for row in rows {
        let (id, at, at_ms, kind, severity, summary, cause, decision, operator_action, subject) =
            row?;
        let unknown = |what: &str, v: &str| {
            Error::classed(
                ErrorClass::Internal,
                format!("events row {id} holds unknown {what} `{v}`"),
            )
        };
        events.push(EventRecord {
            id,
            at,
            event: Event {
                at_ms,
                kind: EventKind::parse(&kind).ok_or_else(|| unknown("kind", &kind))?,
                severity: Severity::parse(&severity)
                    .ok_or_else(|| unknown("severity", &severity))?,
                summary,
                cause,
                decision,
                operator_action,
                subject,
            },
        });
    }
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(EventPage { events, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::in_memory;

    fn event(kind: EventKind, severity: Severity, at_ms: i64) -> Event {
        let mut e = Event::new(kind, severity, "app.db", "s", "c", "d");
        e.at_ms = at_ms;
        e
    }

    /// Pages are newest first, the cursor leads to the older ones, and the
    /// filters hold.
    #[test]
    fn events_page_newest_first_with_filters() {
        let conn = in_memory();
        for i in 0..5 {
            insert(&conn, &event(EventKind::Backup, Severity::Info, 1_000 + i)).unwrap();
        }
        insert(
            &conn,
            &event(EventKind::BreakerOpened, Severity::Critical, 2_000).operator_action("fix"),
        )
        .unwrap();
        let first = page(
            &conn,
            &EventQuery {
                limit: Some(4),
                ..EventQuery::default()
            },
        )
        .unwrap();
        assert_eq!(first.events.len(), 4);
        assert_eq!(first.events[0].event.kind, EventKind::BreakerOpened);
        assert_eq!(
            first.events[0].event.operator_action.as_deref(),
            Some("fix")
        );
        assert!(first.events[0].at.starts_with("1970-01-01T00:00:02"));
        let second = page(
            &conn,
            &EventQuery {
                limit: Some(4),
                before: first.next,
                ..EventQuery::default()
            },
        )
        .unwrap();
        assert_eq!(second.events.len(), 2);
        assert_eq!(second.next, None);
        let critical = page(
            &conn,
            &EventQuery {
                severity: Some(Severity::Warning),
                ..EventQuery::default()
            },
        )
        .unwrap();
        assert_eq!(critical.events.len(), 1);
        let recent = page(
            &conn,
            &EventQuery {
                since_ms: Some(1_003),
                kind: Some(EventKind::Backup),
                ..EventQuery::default()
            },
        )
        .unwrap();
        assert_eq!(recent.events.len(), 2);
    }
}
