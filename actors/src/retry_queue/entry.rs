//! A queue entry as the dead-letter commands show it, the counts of the
//! queue, and the typed values its rows hold: [`EntryStatus`] and
//! [`Resolution`]. Their names in the journal and in JSON are the same, and
//! come from one place each (`as_str`, serde, `FromSql`).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Where a queue entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    /// Waiting for its next attempt.
    Queued,
    /// Being replayed now (shown for entries in flight; their rows stay
    /// `queued`).
    Retrying,
    /// Replayed successfully.
    Succeeded,
    /// In the dead-letter queue.
    Dead,
}

impl EntryStatus {
    /// Every status, in the order the counts show them.
    pub const ALL: [EntryStatus; 4] = [
        EntryStatus::Queued,
        EntryStatus::Retrying,
        EntryStatus::Succeeded,
        EntryStatus::Dead,
    ];

    /// As stored in `status` and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Queued => "queued",
            EntryStatus::Retrying => "retrying",
            EntryStatus::Succeeded => "succeeded",
            EntryStatus::Dead => "dead",
        }
    }
}

/// How an operator closed a dead entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// Sent back to the queue (its status says how the replay went).
    Requeued,
    /// Not wanted any more.
    Discarded,
    /// Fixed by hand (the change was made some other way).
    Fixed,
}

impl Resolution {
    /// Every resolution.
    pub const ALL: [Resolution; 3] = [
        Resolution::Requeued,
        Resolution::Discarded,
        Resolution::Fixed,
    ];

    /// As stored in `resolution` and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Requeued => "requeued",
            Resolution::Discarded => "discarded",
            Resolution::Fixed => "fixed",
        }
    }
}

/// Reads a stored name back as its value (`T::ALL` by `as_str`).
fn from_name<T: Copy>(
    value: ValueRef<'_>,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> FromSqlResult<T> {
    let text = value.as_str()?;
    all.iter()
        .copied()
        .find(|v| name(*v) == text)
        .ok_or_else(|| FromSqlError::Other(format!("unknown queue value `{text}`").into()))
}

impl FromSql for EntryStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        from_name(value, &EntryStatus::ALL, EntryStatus::as_str)
    }
}

impl FromSql for Resolution {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        from_name(value, &Resolution::ALL, Resolution::as_str)
    }
}

impl From<EntryStatus> for Value {
    fn from(status: EntryStatus) -> Value {
        Value::from(status.as_str())
    }
}

impl From<Resolution> for Value {
    fn from(resolution: Resolution) -> Value {
        Value::from(resolution.as_str())
    }
}

/// One queue entry, as the DLQ commands show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The queue id.
    pub id: i64,
    /// `sql`, or an application payload kind.
    pub kind: String,
    /// The operation or payload (JSON).
    pub payload: serde_json::Value,
    /// 1 (most urgent) to 10.
    pub priority: i64,
    /// The ordering key, if any.
    pub ordering_key: Option<String>,
    /// Attempts so far.
    pub attempts: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// Where it stands.
    pub status: EntryStatus,
    /// When the next attempt is due (ms since the Unix epoch).
    pub next_retry_at_ms: i64,
    /// Every failure: `[{"at_ms", "class", "error"}, ...]`.
    pub errors: serde_json::Value,
    /// Why it is dead.
    pub dead_reason: Option<String>,
    /// Failed the same way again and again.
    pub poisoned: bool,
    /// First and last failure (ms since the Unix epoch).
    pub first_failure_at_ms: Option<i64>,
    /// Last failure.
    pub last_failure_at_ms: Option<i64>,
    /// When an operator requeued, discarded or marked it fixed.
    pub reviewed_at_ms: Option<i64>,
    /// How an operator closed it, if one did.
    pub resolution: Option<Resolution>,
    /// When it was queued.
    pub created_at_ms: i64,
}

/// Counts of the queue, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct QueueStats {
    /// Waiting for their next attempt.
    pub queued: i64,
    /// Being replayed now.
    pub retrying: i64,
    /// In the dead-letter queue, not yet discarded.
    pub dead: i64,
    /// Replayed successfully (kept for `succeeded_retention`).
    pub succeeded: i64,
}

/// A due entry: what its replay needs, its payload and error history
/// still as text (parsed only when used).
#[derive(Debug, Clone)]
pub struct Due {
    /// The queue id.
    pub id: i64,
    /// `sql`, or an application payload kind.
    pub kind: String,
    /// The operation or payload, JSON text.
    pub payload: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// The error history, JSON text.
    pub errors: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_resolution_names_are_the_same_in_json_and_sql() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for status in EntryStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
            let back: EntryStatus = conn
                .query_row("SELECT ?1", [status.as_str()], |r| r.get(0))
                .unwrap();
            assert_eq!(back, status);
        }
        for resolution in Resolution::ALL {
            let json = serde_json::to_value(resolution).unwrap();
            assert_eq!(json, resolution.as_str());
            let back: Resolution = conn
                .query_row("SELECT ?1", [resolution.as_str()], |r| r.get(0))
                .unwrap();
            assert_eq!(back, resolution);
        }
        let unknown = conn.query_row("SELECT 'lost'", [], |r| r.get::<_, EntryStatus>(0));
        assert!(unknown.is_err());
    }
}
