//! Circuit breakers in the journal: tables `breaker_state` (the latest
//! state of each breaker, by name) and `breaker_transitions` (every change
//! of state, with why).

use rusqlite::Connection;

use crate::breaker::{BreakerSnapshot, BreakerState, Transition};
use crate::error::{Error, ErrorClass, Result};
use crate::value::{Statement, Value};

/// The statement that stores `snapshot` as the latest state of breaker
/// `name` in `breaker_state`.
pub fn state_statement(name: &str, snapshot: &BreakerSnapshot, at_ms: i64) -> Statement {
    Statement::new(
        "INSERT INTO breaker_state (name, state, consecutive_failures, trips, open_until_ms, \
         calls, failures, rejected, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (name) DO UPDATE SET state = excluded.state, \
         consecutive_failures = excluded.consecutive_failures, trips = excluded.trips, \
         open_until_ms = excluded.open_until_ms, calls = excluded.calls, \
         failures = excluded.failures, rejected = excluded.rejected, \
         updated_at_ms = excluded.updated_at_ms",
        [
            Value::from(name),
            Value::from(snapshot.state.as_str()),
            Value::Integer(snapshot.consecutive_failures.into()),
            Value::Integer(snapshot.trips.into()),
            snapshot.open_until_ms.map_or(Value::Null, Value::Integer),
            Value::from(snapshot.calls),
            Value::from(snapshot.failures),
            Value::from(snapshot.rejected),
            Value::Integer(at_ms),
        ],
    )
}

/// The statement that logs `transition` of breaker `name` in
/// `breaker_transitions`.
pub fn transition_statement(name: &str, transition: &Transition) -> Statement {
    Statement::new(
        "INSERT INTO breaker_transitions (at_ms, breaker, from_state, to_state, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        [
            Value::Integer(transition.at_ms),
            Value::from(name),
            Value::from(transition.from.as_str()),
            Value::from(transition.to.as_str()),
            Value::from(transition.reason.as_str()),
        ],
    )
}

/// A lifetime counter (stored as a non-negative INTEGER).
fn count(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
}

/// The breakers as last journaled, by name: what
/// [`BreakerArgs::restored`](crate::breaker::BreakerArgs::restored) takes at
/// startup, and what the database breaker continues from.
pub fn load(conn: &Connection) -> Result<Vec<BreakerSnapshot>> {
    let mut stmt = conn.prepare(
        "SELECT name, state, consecutive_failures, trips, open_until_ms, calls, failures, rejected \
         FROM breaker_state ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            BreakerSnapshot {
                name: None,
                state: BreakerState::Closed,
                consecutive_failures: r.get(2)?,
                trips: r.get(3)?,
                open_until_ms: r.get(4)?,
                calls: count(r, 5)?,
                failures: count(r, 6)?,
                rejected: count(r, 7)?,
            },
        ))
    })?;
    let mut snapshots = Vec::new();
    for row in rows {
        let (name, state, mut snapshot) = row?;
        snapshot.state = BreakerState::parse(&state).ok_or_else(|| {
            Error::classed(
                ErrorClass::Internal,
                format!("breaker_state holds unknown state `{state}` for breaker `{name}`"),
            )
        })?;
        snapshot.name = Some(name);
        snapshots.push(snapshot);
    }
    Ok(snapshots)
}

/// The statement deleting breaker transitions older than `cutoff_ms` (the
/// breakers' current state rows stay).
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM breaker_transitions WHERE at_ms < ?1",
        [Value::Integer(cutoff_ms)],
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::breaker::{Breaker, BreakerConfig};

    #[test]
    fn journal_rows_load_back_as_snapshots() {
        let conn = crate::journal::in_memory();
        let mut breaker = Breaker::named(
            "db",
            BreakerConfig {
                consecutive_failures: 1,
                ..BreakerConfig::default()
            },
        );
        let t = breaker.record(1_000, false, Duration::ZERO).unwrap();
        let mut forced = Breaker::named("api", BreakerConfig::default());
        let f = forced.force_open(2_000, "restore").unwrap();
        for (b, t) in [(&breaker, &t), (&forced, &f)] {
            let name = b.name().unwrap();
            for s in [
                state_statement(name, &b.snapshot(), t.at_ms),
                transition_statement(name, t),
            ] {
                conn.execute(&s.sql, rusqlite::params_from_iter(&s.params))
                    .unwrap();
            }
        }
        // A second upsert replaces the row.
        let s = state_statement("db", &breaker.snapshot(), 3_000);
        conn.execute(&s.sql, rusqlite::params_from_iter(&s.params))
            .unwrap();
        assert_eq!(
            load(&conn).unwrap(),
            vec![forced.snapshot(), breaker.snapshot()]
        );
        let transitions: i64 = conn
            .query_row("SELECT count(*) FROM breaker_transitions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(transitions, 2);
        // Pruning keeps what is newer than the cutoff, and every state row.
        let p = prune_statement(1_500);
        conn.execute(&p.sql, rusqlite::params_from_iter(&p.params))
            .unwrap();
        let at: Vec<i64> = conn
            .prepare("SELECT at_ms FROM breaker_transitions")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(at, [2_000]);
        assert_eq!(load(&conn).unwrap().len(), 2);
        let restored = Breaker::restore(BreakerConfig::default(), &load(&conn).unwrap()[0]);
        assert!(restored.is_forced_open());
    }
}
