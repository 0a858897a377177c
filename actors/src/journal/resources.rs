//! Resource samples: table `resource_samples`, one row per sample of the
//! process and its files (see `health::resources`), taken every
//! `[health] resource_interval` and pruned with the audit trail
//! (`[audit] retention`).

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::value::{Statement, Value};

/// Samples listed when the caller names no limit.
pub const DEFAULT_LIST: usize = 60;
/// Samples listed at most.
pub const MAX_LIST: usize = 10_000;

/// What the process and its files used at one moment. A figure that could
/// not be read (no `/proc` on this system, an actor not answering) is
/// `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// When it was taken (ms since the Unix epoch).
    pub at_ms: i64,
    /// The same, as RFC 3339 text (empty before it is stored).
    pub at: String,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// CPU time used since the process started (user + system), seconds.
    pub cpu_seconds: Option<f64>,
    /// CPU used since the previous sample, percent of one core.
    pub cpu_pct: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The database file, bytes.
    pub db_bytes: u64,
    /// Its WAL, bytes.
    pub wal_bytes: u64,
    /// The journal file and its WAL, bytes.
    pub journal_bytes: u64,
    /// Free bytes on the database's filesystem.
    pub disk_free_bytes: Option<u64>,
    /// Retry queue entries waiting or being replayed.
    pub queue_depth: Option<i64>,
    /// Writes committed per second since the previous sample.
    pub write_rate: Option<f64>,
}

fn opt_u64(v: Option<u64>) -> Value {
    v.map_or(Value::Null, Value::from)
}

fn opt_f64(v: Option<f64>) -> Value {
    v.map_or(Value::Null, Value::Real)
}

/// The statement storing `s`.
pub fn insert_statement(s: &ResourceSample) -> Statement {
    Statement::new(
        format!(
            "INSERT INTO resource_samples (at_ms, at, rss_bytes, cpu_seconds, cpu_pct, open_fds, db_bytes, wal_bytes, journal_bytes, disk_free_bytes, queue_depth, write_rate) \
             VALUES (?1, {}, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            super::AT_TEXT
        ),
        [
            Value::Integer(s.at_ms),
            opt_u64(s.rss_bytes),
            opt_f64(s.cpu_seconds),
            opt_f64(s.cpu_pct),
            opt_u64(s.open_fds),
            Value::from(s.db_bytes),
            Value::from(s.wal_bytes),
            Value::from(s.journal_bytes),
            opt_u64(s.disk_free_bytes),
            s.queue_depth.map_or(Value::Null, Value::Integer),
            opt_f64(s.write_rate),
        ],
    )
}

/// The statement deleting samples taken before `cutoff_ms`.
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM resource_samples WHERE at_ms < ?1",
        [Value::Integer(cutoff_ms)],
    )
}

/// The newest `limit` samples, newest first. A journal from before the
/// table has none.
pub fn list(conn: &Connection, limit: usize) -> Result<Vec<ResourceSample>> {
    if !super::has_table(conn, "resource_samples")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT at_ms, at, rss_bytes, cpu_seconds, cpu_pct, open_fds, db_bytes, wal_bytes, journal_bytes, disk_free_bytes, queue_depth, write_rate \
         FROM resource_samples ORDER BY at_ms DESC, id DESC LIMIT ?1",
    )?;
    let limit = i64::try_from(limit.clamp(1, MAX_LIST)).unwrap_or(i64::MAX);
    let unsigned = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    let rows = stmt.query_map([limit], |r| {
        Ok(ResourceSample {
            at_ms: r.get(0)?,
            at: r.get(1)?,
            rss_bytes: unsigned(r.get(2)?),
            cpu_seconds: r.get(3)?,
            cpu_pct: r.get(4)?,
            open_fds: unsigned(r.get(5)?),
            db_bytes: unsigned(r.get(6)?).unwrap_or(0),
            wal_bytes: unsigned(r.get(7)?).unwrap_or(0),
            journal_bytes: unsigned(r.get(8)?).unwrap_or(0),
            disk_free_bytes: unsigned(r.get(9)?),
            queue_depth: r.get(10)?,
            write_rate: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64) -> ResourceSample {
        ResourceSample {
            at_ms,
            at: String::new(),
            rss_bytes: Some(10 << 20),
            cpu_seconds: Some(1.5),
            cpu_pct: None,
            open_fds: Some(12),
            db_bytes: 4096,
            wal_bytes: 0,
            journal_bytes: 8192,
            disk_free_bytes: None,
            queue_depth: Some(0),
            write_rate: Some(2.5),
        }
    }

    /// Stored samples read back as they were, newest first, with their
    /// time as text; pruning removes the older ones only.
    #[test]
    fn samples_round_trip_and_prune_by_age() {
        let conn = super::super::in_memory();
        for at in [1_000, 2_000, 3_000] {
            let s = insert_statement(&sample(at));
            conn.execute(&s.sql, rusqlite::params_from_iter(&s.params))
                .unwrap();
        }
        let listed = list(&conn, 10).unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].at_ms, 3_000);
        assert_eq!(listed[0].at, "1970-01-01T00:00:03.000Z");
        assert_eq!(
            ResourceSample {
                at: String::new(),
                ..listed[2].clone()
            },
            sample(1_000)
        );
        assert_eq!(list(&conn, 1).unwrap().len(), 1);

        let p = prune_statement(2_500);
        conn.execute(&p.sql, rusqlite::params_from_iter(&p.params))
            .unwrap();
        let left: Vec<i64> = list(&conn, 10).unwrap().iter().map(|s| s.at_ms).collect();
        assert_eq!(left, vec![3_000]);
    }
}
