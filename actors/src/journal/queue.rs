//! The retry queue and dead-letter queue: table `retry_queue`.
//!
//! Writes are [`Statement`]s, so they go through the journal writer (group
//! commit, retries, supervision) or, for the `resilite dlq` command that
//! runs without a server, through [`apply`] on a connection of its own.
//! Reads take a connection. Statuses and resolutions are bound and read as
//! [`EntryStatus`] and [`Resolution`], never spelled here.

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::retry_queue::{Due, Entry, EntryStatus, QueueStats, Resolution, SQL_KIND};
use crate::value::{Statement, Value};

/// A new entry, as [`enqueue`] stores it.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// `sql`, or an application payload kind.
    pub kind: &'a str,
    /// The operation or payload, JSON text.
    pub payload: String,
    /// 1 (most urgent) to 10.
    pub priority: u8,
    /// Entries with the same key are replayed one at a time, in order.
    pub ordering_key: Option<&'a str>,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When the first replay is due (ms since the Unix epoch).
    pub next_retry_at_ms: i64,
    /// The failure that sent it to the queue, if any.
    pub cause: Option<&'a Error>,
    /// Now (ms since the Unix epoch).
    pub now_ms: i64,
}

/// The statement that queues `new` (its id is the last insert rowid).
pub fn enqueue(new: NewEntry<'_>) -> Statement {
    let cause = new.cause;
    let errors = match cause {
        Some(e) => {
            serde_json::json!([{ "at_ms": new.now_ms, "class": e.class, "error": e.detail }])
                .to_string()
        }
        None => "[]".to_string(),
    };
    Statement::new(
        "INSERT INTO retry_queue (kind, payload, priority, ordering_key, max_attempts, next_retry_at_ms, \
         last_error_class, last_error, errors, status, first_failure_at_ms, last_failure_at_ms, created_at_ms, updated_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?12, ?10, ?10, ?11, ?11)",
        [
            Value::from(new.kind),
            Value::Text(new.payload),
            Value::Integer(new.priority.into()),
            new.ordering_key.map_or(Value::Null, Value::from),
            Value::Integer(new.max_attempts.into()),
            Value::Integer(new.next_retry_at_ms),
            cause.map_or(Value::Null, |e| Value::Text(e.class.as_str().into())),
            cause.map_or(Value::Null, |e| Value::Text(e.detail.clone())),
            Value::Text(errors),
            cause.map_or(Value::Null, |_| Value::Integer(new.now_ms)),
            Value::Integer(new.now_ms),
            EntryStatus::Queued.into(),
        ],
    )
}

/// The statements that send dead entry `id` (or every unresolved dead
/// entry) back to the queue, due now, with its attempts reset.
pub fn requeue(id: Option<i64>, now_ms: i64) -> Vec<Statement> {
    let filter = match id {
        Some(_) => "id = ?5 AND status = ?2",
        None => "status = ?2 AND resolution IS NULL",
    };
    let mut params = vec![
        Value::Integer(now_ms),
        EntryStatus::Dead.into(),
        EntryStatus::Queued.into(),
        Resolution::Requeued.into(),
    ];
    params.extend(id.map(Value::Integer));
    vec![Statement::new(
        format!(
            "UPDATE retry_queue SET status = ?3, attempts = 0, next_retry_at_ms = ?1, \
             reviewed_at_ms = ?1, resolution = ?4, dead_reason = NULL, updated_at_ms = ?1 WHERE {filter}"
        ),
        params,
    )]
}

/// The statements that close dead entry `id` with `resolution` (the entry
/// is kept in the journal); `Requeued` sends it back to the queue.
pub fn resolve(id: i64, resolution: Resolution, now_ms: i64) -> Vec<Statement> {
    if resolution == Resolution::Requeued {
        return requeue(Some(id), now_ms);
    }
    vec![Statement::new(
        "UPDATE retry_queue SET reviewed_at_ms = ?1, resolution = ?2, updated_at_ms = ?1 \
         WHERE id = ?3 AND status = ?4",
        [
            Value::Integer(now_ms),
            resolution.into(),
            Value::Integer(id),
            EntryStatus::Dead.into(),
        ],
    )]
}

/// The statement that sends rows an earlier version left `retrying` back
/// to the queue (run when the queue starts: nothing is in flight then).
pub fn reset_retrying(now_ms: i64) -> Statement {
    Statement::new(
        "UPDATE retry_queue SET status = ?2, updated_at_ms = ?1 WHERE status = ?3",
        [
            Value::Integer(now_ms),
            EntryStatus::Queued.into(),
            EntryStatus::Retrying.into(),
        ],
    )
}

/// The statement that records entries `ids` replayed successfully.
pub fn succeeded(ids: &[i64], now_ms: i64) -> Statement {
    Statement::new(
        "UPDATE retry_queue SET status = ?3, attempts = attempts + 1, updated_at_ms = ?1 \
         WHERE id IN (SELECT value FROM json_each(?2))",
        [
            Value::Integer(now_ms),
            Value::Text(ids_json(ids)),
            EntryStatus::Succeeded.into(),
        ],
    )
}

/// A failed replay of one entry, as [`failed`] records it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The entry.
    pub id: i64,
    /// `Queued` (tried again at `next_retry_at_ms`) or `Dead`.
    pub status: EntryStatus,
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_retry_at_ms: i64,
    /// The error.
    pub error: Error,
    /// The whole error history, JSON text.
    pub errors: String,
    /// Failed the same way again and again.
    pub poisoned: bool,
    /// Why it is dead.
    pub dead_reason: Option<String>,
    /// Now (ms since the Unix epoch).
    pub now_ms: i64,
}

/// The statement that records `failure`: the entry back in the queue with
/// its next due time, or in the dead-letter queue.
pub fn failed(failure: Failure) -> Statement {
    Statement::new(
        "UPDATE retry_queue SET status = ?1, attempts = ?2, next_retry_at_ms = ?3, last_error_class = ?4, \
         last_error = ?5, errors = ?6, poisoned = ?7, dead_reason = ?8, \
         first_failure_at_ms = coalesce(first_failure_at_ms, ?9), last_failure_at_ms = ?9, \
         resolution = NULL, updated_at_ms = ?9 WHERE id = ?10",
        [
            failure.status.into(),
            Value::Integer(failure.attempts),
            Value::Integer(failure.next_retry_at_ms),
            Value::Text(failure.error.class.as_str().into()),
            Value::Text(failure.error.detail),
            Value::Text(failure.errors),
            Value::Integer(failure.poisoned.into()),
            failure.dead_reason.map_or(Value::Null, Value::Text),
            Value::Integer(failure.now_ms),
            Value::Integer(failure.id),
        ],
    )
}

/// The statement that deletes succeeded entries last updated before
/// `before_ms`.
pub fn prune_succeeded(before_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM retry_queue WHERE status = ?2 AND updated_at_ms < ?1",
        [Value::Integer(before_ms), EntryStatus::Succeeded.into()],
    )
}

const ENTRY_COLUMNS: &str =
    "id, kind, payload, priority, ordering_key, attempts, max_attempts, status, \
    next_retry_at_ms, errors, dead_reason, poisoned, first_failure_at_ms, last_failure_at_ms, \
    reviewed_at_ms, resolution, created_at_ms";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    };
    Ok(Entry {
        id: r.get(0)?,
        kind: r.get(1)?,
        payload: json(2)?,
        priority: r.get(3)?,
        ordering_key: r.get(4)?,
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        status: r.get(7)?,
        next_retry_at_ms: r.get(8)?,
        errors: json(9)?,
        dead_reason: r.get(10)?,
        poisoned: r.get(11)?,
        first_failure_at_ms: r.get(12)?,
        last_failure_at_ms: r.get(13)?,
        reviewed_at_ms: r.get(14)?,
        resolution: r.get(15)?,
        created_at_ms: r.get(16)?,
    })
}

/// The dead-letter queue, oldest first; discarded entries only with `all`.
pub fn dead_letters(conn: &Connection, all: bool) -> Result<Vec<Entry>> {
    let filter = if all { "" } else { " AND resolution IS NULL" };
    let mut stmt = conn.prepare(&format!(
        "SELECT {ENTRY_COLUMNS} FROM retry_queue WHERE status = ?1{filter} ORDER BY id"
    ))?;
    let rows = stmt.query_map([EntryStatus::Dead.as_str()], entry)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One entry by id, whatever its status (as its row has it: entries in
/// flight are `queued` here).
pub fn entry_by_id(conn: &Connection, id: i64) -> Result<Option<Entry>> {
    Ok(conn
        .query_row(
            &format!("SELECT {ENTRY_COLUMNS} FROM retry_queue WHERE id = ?1"),
            [id],
            entry,
        )
        .optional()?)
}

/// Counts by status as the rows have them (each an index range count, not
/// a table scan); the queue actor adds the entries in flight.
pub fn counts(conn: &Connection) -> Result<QueueStats> {
    let count = |status: EntryStatus, unresolved: bool| -> Result<i64> {
        let sql = if unresolved {
            "SELECT count(*) FROM retry_queue WHERE status = ?1 AND resolution IS NULL"
        } else {
            "SELECT count(*) FROM retry_queue WHERE status = ?1"
        };
        Ok(conn
            .prepare_cached(sql)?
            .query_row([status.as_str()], |r| r.get(0))?)
    };
    Ok(QueueStats {
        queued: count(EntryStatus::Queued, false)?,
        retrying: count(EntryStatus::Retrying, false)?,
        dead: count(EntryStatus::Dead, true)?,
        succeeded: count(EntryStatus::Succeeded, false)?,
    })
}

/// Due entries, most urgent first; of the entries sharing an ordering key,
/// only the oldest unfinished one. Without `sql`, only application payloads.
/// `busy` are in flight: their rows still say `queued` until their outcome
/// is recorded.
pub fn due(
    conn: &Connection,
    now_ms: i64,
    limit: usize,
    sql: bool,
    busy: &[i64],
) -> Result<Vec<Due>> {
    let kinds = if sql { "" } else { "AND kind != ?6 " };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, kind, payload, attempts, max_attempts, errors \
         FROM retry_queue q \
         WHERE status = ?4 AND next_retry_at_ms <= ?1 {kinds}\
           AND id NOT IN (SELECT value FROM json_each(?3)) \
           AND (ordering_key IS NULL OR NOT EXISTS ( \
                SELECT 1 FROM retry_queue o WHERE o.ordering_key = q.ordering_key AND o.id < q.id \
                AND (o.status = ?4 OR o.status = ?5))) \
         ORDER BY priority, next_retry_at_ms, id LIMIT ?2"
    ))?;
    let mut params = vec![
        Value::Integer(now_ms),
        Value::Integer(limit as i64),
        Value::Text(ids_json(busy)),
        EntryStatus::Queued.into(),
        EntryStatus::Retrying.into(),
    ];
    if !sql {
        params.push(Value::from(SQL_KIND));
    }
    let rows = stmt.query_map(rusqlite::params_from_iter(&params), |r| {
        Ok(Due {
            id: r.get(0)?,
            kind: r.get(1)?,
            payload: r.get(2)?,
            attempts: r.get(3)?,
            max_attempts: r.get(4)?,
            errors: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Run `statements` in one transaction on `conn` (a journal opened
/// read-write, for a command that runs without a server); rows changed.
pub fn apply(conn: &mut Connection, statements: &[Statement]) -> Result<usize> {
    let tx = conn.transaction()?;
    let mut changed = 0;
    for s in statements {
        changed += tx.execute(&s.sql, rusqlite::params_from_iter(&s.params))?;
    }
    tx.commit()?;
    Ok(changed)
}

/// Ids as the JSON array `json_each` reads.
pub fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A journal in memory holding `entries` (priority, due offset in ms,
    /// ordering key, status).
    fn queue_of(entries: &[(u8, i64, Option<u8>, u8)]) -> Connection {
        let conn = crate::journal::in_memory();
        for (priority, due_in, key, status) in entries {
            let status = [
                EntryStatus::Queued,
                EntryStatus::Queued,
                EntryStatus::Retrying,
                EntryStatus::Succeeded,
                EntryStatus::Dead,
            ][*status as usize % 5];
            conn.execute(
                "INSERT INTO retry_queue (kind, payload, priority, ordering_key, max_attempts, next_retry_at_ms, status, created_at_ms, updated_at_ms) \
                 VALUES ('sql', '{}', ?1, ?2, 10, ?3, ?4, 0, 0)",
                rusqlite::params![priority, key.map(|k| format!("k{k}")), 1_000 + due_in, status.as_str()],
            )
            .unwrap();
        }
        conn
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn due_entries_come_by_priority_then_due_time_and_one_per_ordering_key(
            entries in prop::collection::vec((1u8..=10, -500i64..500, prop::option::of(0u8..4), 0u8..5), 0..60),
            limit in 1usize..80,
            busy in prop::collection::btree_set(1i64..60, 0..10),
        ) {
            let conn = queue_of(&entries);
            let now = 1_000;
            let busy: Vec<i64> = busy.into_iter().collect();
            let got: Vec<Entry> = due(&conn, now, limit, true, &busy)
                .unwrap()
                .iter()
                .map(|d| entry_by_id(&conn, d.id).unwrap().unwrap())
                .collect();
            prop_assert!(got.len() <= limit);
            for e in &got {
                prop_assert_eq!(e.status.as_str(), "queued");
                prop_assert!(e.next_retry_at_ms <= now);
                prop_assert!(!busy.contains(&e.id), "entry {} is in flight", e.id);
            }
            // Sorted by (priority, next_retry_at, id).
            let keys: Vec<_> = got.iter().map(|e| (e.priority, e.next_retry_at_ms, e.id)).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            prop_assert_eq!(&keys, &sorted);
            // An entry with an ordering key comes only when no older entry
            // with that key is waiting or being replayed.
            let unfinished = |key: &str, before: i64| entries.iter().enumerate().any(|(i, (_, _, k, st))| {
                let id = i as i64 + 1;
                id < before && k.map(|k| format!("k{k}")).as_deref() == Some(key) && st % 5 <= 2
            });
            for e in &got {
                if let Some(key) = &e.ordering_key {
                    prop_assert!(!unfinished(key, e.id), "entry {} jumped the queue of {}", e.id, key);
                }
            }
            // Nothing due and eligible is left out when there was room.
            if got.len() < limit {
                let eligible = entries.iter().enumerate().filter(|(i, (_, due_in, k, st))| {
                    let id = *i as i64 + 1;
                    st % 5 <= 1 && 1_000 + due_in <= now && !busy.contains(&id)
                        && k.is_none_or(|k| !unfinished(&format!("k{k}"), id))
                }).count();
                prop_assert_eq!(got.len(), eligible);
            }
        }
    }
}
