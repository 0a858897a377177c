//! Idempotency keys of `Operation::Once`, in the application database's
//! table `_resilite_idempotency`: claimed in the same transaction as the
//! operation, expired after `retry.key_retention`.

use rusqlite::Connection;

use crate::value::Statement;

/// Insert `key` into `_resilite_idempotency` (created on first use); false
/// when it was there already.
pub(super) fn claim_key(conn: &Connection, key: &str) -> rusqlite::Result<bool> {
    const CLAIM: &str =
        "INSERT OR IGNORE INTO _resilite_idempotency (key, applied_at_ms) VALUES (?1, ?2)";
    let claim = || -> rusqlite::Result<usize> {
        conn.prepare_cached(CLAIM)?
            .execute(rusqlite::params![key, crate::maintenance::now_ms()])
    };
    let inserted = match claim() {
        Err(_) if conn.table_exists(None, "_resilite_idempotency").ok() == Some(false) => {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS _resilite_idempotency (key TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL) WITHOUT ROWID",
            )?;
            claim()?
        }
        other => other?,
    };
    Ok(inserted == 1)
}

/// The statement that deletes the idempotency keys claimed before
/// `before_ms` (their retention is over: the same key applies again). The
/// table exists once a key was claimed; before that it fails with "no
/// such table".
pub fn expire_keys_statement(before_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM _resilite_idempotency WHERE applied_at_ms < ?1",
        [crate::value::Value::Integer(before_ms)],
    )
}

/// The statement that deletes the keys `prefix` followed by each id of
/// `ids_json` (a JSON array), once their operations' success is recorded
/// elsewhere.
pub fn forget_keys_statement(prefix: &str, ids_json: String) -> Statement {
    Statement::new(
        "DELETE FROM _resilite_idempotency WHERE key IN \
         (SELECT ?1 || value FROM json_each(?2))",
        [
            crate::value::Value::from(prefix),
            crate::value::Value::Text(ids_json),
        ],
    )
}
