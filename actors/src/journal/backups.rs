//! The backup catalog: table `backups`, a row per backup taken, with its
//! last verification and, once retention removed it, when.

use rusqlite::Connection;

use crate::backup::{BackupInfo, Verification};
use crate::error::Result;
use crate::value::{Statement, Value};

/// The statement that records a new backup (sent to the journal writer).
pub fn insert_statement(info: &BackupInfo) -> Statement {
    Statement::new(
        "INSERT OR REPLACE INTO backups (name, label, created_at_ms, duration_ms, size, page_count, sha256, sqlite_version, user_version, row_counts, restarts, verified_at_ms, verified, verify_errors, op_log_seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        [
            Value::from(info.name.as_str()),
            Value::from(info.label.as_str()),
            Value::Integer(info.created_at_ms),
            Value::from(info.duration_ms),
            Value::from(info.size),
            Value::from(info.page_count),
            Value::from(info.sha256.as_str()),
            Value::from(info.sqlite_version.as_str()),
            Value::Integer(info.user_version),
            json(&info.row_counts),
            Value::Integer(info.restarts.into()),
            info.verified_at_ms.map_or(Value::Null, Value::Integer),
            info.verified.map_or(Value::Null, |v| Value::Integer(v.into())),
            json(&info.verify_errors),
            info.op_log_seq.map_or(Value::Null, Value::Integer),
        ],
    )
}

/// The statement that records a verification of a backup.
pub fn verified_statement(v: &Verification) -> Statement {
    Statement::new(
        "UPDATE backups SET verified_at_ms = ?2, verified = ?3, verify_errors = ?4 WHERE name = ?1",
        [
            Value::from(v.name.as_str()),
            Value::Integer(v.verified_at_ms),
            Value::Integer(v.passed.into()),
            json(&v.errors),
        ],
    )
}

/// The statement that records the deletion of a backup by retention.
pub fn deleted_statement(name: &str, at_ms: i64) -> Statement {
    Statement::new(
        "UPDATE backups SET deleted_at_ms = ?2 WHERE name = ?1",
        [Value::from(name), Value::Integer(at_ms)],
    )
}

/// The backups not deleted, oldest first.
pub fn live(conn: &Connection) -> Result<Vec<BackupInfo>> {
    let mut stmt = conn.prepare(
        "SELECT name, label, created_at_ms, duration_ms, size, page_count, sha256, sqlite_version, user_version, row_counts, restarts, verified_at_ms, verified, verify_errors, op_log_seq \
         FROM backups WHERE deleted_at_ms IS NULL ORDER BY created_at_ms, name",
    )?;
    let rows = stmt.query_map([], |r| {
        let counts: String = r.get(9)?;
        let errors: String = r.get(13)?;
        Ok(BackupInfo {
            name: r.get(0)?,
            label: r.get(1)?,
            created_at_ms: r.get(2)?,
            duration_ms: r.get::<_, i64>(3)? as u64,
            size: r.get::<_, i64>(4)? as u64,
            page_count: r.get::<_, i64>(5)? as u64,
            sha256: r.get(6)?,
            sqlite_version: r.get(7)?,
            user_version: r.get(8)?,
            row_counts: serde_json::from_str(&counts).unwrap_or_default(),
            restarts: r.get(10)?,
            verified_at_ms: r.get(11)?,
            verified: r.get::<_, Option<i64>>(12)?.map(|v| v != 0),
            verify_errors: serde_json::from_str(&errors).unwrap_or_default(),
            op_log_seq: r.get(14)?,
            // No column for it: the sidecar has it (see
            // `backup::fill_from_sidecars`).
            uncompressed_size: None,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Apply catalog statements on a journal connection of one's own (the CLI,
/// which has no journal writer), in one transaction.
pub fn apply(conn: &Connection, statements: &[Statement]) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    for s in statements {
        let params: Vec<&dyn rusqlite::ToSql> =
            s.params.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
        tx.execute(&s.sql, params.as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

/// `v` as JSON text.
fn json<T: serde::Serialize>(v: &T) -> Value {
    Value::from(serde_json::to_string(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::in_memory;

    #[test]
    fn catalog_records_verification_and_deletion() {
        let conn = in_memory();
        let mut info = BackupInfo {
            name: "app-x-manual.db".into(),
            label: "manual".into(),
            created_at_ms: 5,
            duration_ms: 1,
            size: 4096,
            page_count: 1,
            sha256: "ab".into(),
            sqlite_version: "3".into(),
            user_version: 2,
            row_counts: [("t".to_string(), 3)].into(),
            restarts: 0,
            verified_at_ms: None,
            verified: None,
            verify_errors: Vec::new(),
            op_log_seq: None,
            uncompressed_size: None,
        };
        apply(&conn, &[insert_statement(&info)]).unwrap();
        assert_eq!(live(&conn).unwrap(), [info.clone()]);
        let v = Verification {
            name: info.name.clone(),
            passed: false,
            errors: vec!["checksum".into()],
            verified_at_ms: 9,
            duration_ms: 1,
        };
        apply(&conn, &[verified_statement(&v)]).unwrap();
        info.apply(&v);
        assert_eq!(live(&conn).unwrap(), [info.clone()]);
        apply(&conn, &[deleted_statement(&info.name, 10)]).unwrap();
        assert!(live(&conn).unwrap().is_empty());
    }
}
