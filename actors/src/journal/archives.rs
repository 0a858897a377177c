//! The archive catalog: table `archives`, a row per archive file of expired
//! rows (see [`crate::archive`]), with its phase; and its pruning.

use rusqlite::Connection;

use super::AT_TEXT;
use crate::archive::{ArchiveRecord, ArchiveStatus, TimeFormat};
use crate::error::{Error, ErrorClass, Result};
use crate::value::{Statement, Value};

const COLUMNS: &str = "id, path, tbl, col, format, cutoff_ms, min_value, max_value, first_rowid, last_rowid, rows, uncompressed_size, stored_size, sha256, created_at_ms, created_at, expires_at_ms, status, detail, file_deleted_at_ms, kept_rowids";

/// The statement recording a new archive (its `id` is assigned by the
/// journal; the path is its key until then).
pub fn insert_statement(r: &ArchiveRecord) -> Statement {
    Statement::new(
        format!(
            "INSERT INTO archives (created_at_ms, created_at, path, tbl, col, format, cutoff_ms, min_value, max_value, first_rowid, last_rowid, rows, uncompressed_size, stored_size, sha256, expires_at_ms, status, detail, updated_at_ms) \
             VALUES (?1, {AT_TEXT}, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?1)"
        ),
        [
            Value::Integer(r.created_at_ms),
            Value::from(r.path.as_str()),
            Value::from(r.table.as_str()),
            Value::from(r.column.as_str()),
            Value::from(r.format.as_str()),
            Value::Integer(r.cutoff_ms),
            r.min_value.as_deref().map_or(Value::Null, Value::from),
            r.max_value.as_deref().map_or(Value::Null, Value::from),
            Value::Integer(r.first_rowid),
            Value::Integer(r.last_rowid),
            Value::from(r.rows),
            Value::from(r.uncompressed_size),
            Value::from(r.stored_size),
            Value::from(r.sha256.as_str()),
            r.expires_at_ms.map_or(Value::Null, Value::Integer),
            Value::from(r.status.as_str()),
            r.detail.as_deref().map_or(Value::Null, Value::from),
        ],
    )
}

/// The statement moving the archive at `path` to `status`, with `detail`.
pub fn status_statement(
    path: &str,
    status: ArchiveStatus,
    detail: Option<&str>,
    at_ms: i64,
) -> Statement {
    Statement::new(
        "UPDATE archives SET status = ?2, detail = coalesce(?3, detail), updated_at_ms = ?4 WHERE path = ?1",
        [
            Value::from(path),
            Value::from(status.as_str()),
            detail.map_or(Value::Null, Value::from),
            Value::Integer(at_ms),
        ],
    )
}

/// The statement recording the rowids of the archive at `path` whose rows
/// changed after it was written and so stayed in the database.
pub fn kept_statement(path: &str, kept_rowids: &[i64]) -> Statement {
    let kept = if kept_rowids.is_empty() {
        Value::Null
    } else {
        Value::from(
            serde_json::to_string(kept_rowids)
                .unwrap_or_default()
                .as_str(),
        )
    };
    Statement::new(
        "UPDATE archives SET kept_rowids = ?2 WHERE path = ?1",
        [Value::from(path), kept],
    )
}

/// The statement recording that the file of the archive at `path` was
/// deleted (`archive_keep`).
pub fn file_deleted_statement(path: &str, at_ms: i64) -> Statement {
    Statement::new(
        "UPDATE archives SET file_deleted_at_ms = ?2, updated_at_ms = ?2 WHERE path = ?1",
        [Value::from(path), Value::Integer(at_ms)],
    )
}

/// The statement deleting the catalog rows of archives whose file was
/// deleted before `cutoff_ms` (the journal's own retention).
pub fn prune_statement(cutoff_ms: i64) -> Statement {
    Statement::new(
        "DELETE FROM archives WHERE file_deleted_at_ms IS NOT NULL AND file_deleted_at_ms < ?1",
        [Value::Integer(cutoff_ms)],
    )
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArchiveRecord> {
    let format: String = r.get(4)?;
    let status: String = r.get(17)?;
    let uncompressed: i64 = r.get(11)?;
    let stored: i64 = r.get(12)?;
    Ok(ArchiveRecord {
        id: r.get(0)?,
        path: r.get(1)?,
        table: r.get(2)?,
        column: r.get(3)?,
        format: TimeFormat::parse(&format).unwrap_or_default(),
        cutoff_ms: r.get(5)?,
        min_value: r.get(6)?,
        max_value: r.get(7)?,
        first_rowid: r.get(8)?,
        last_rowid: r.get(9)?,
        rows: r.get::<_, i64>(10)? as u64,
        uncompressed_size: uncompressed as u64,
        stored_size: stored as u64,
        ratio: if stored > 0 {
            uncompressed as f64 / stored as f64
        } else {
            0.0
        },
        sha256: r.get(13)?,
        created_at_ms: r.get(14)?,
        created_at: r.get(15)?,
        expires_at_ms: r.get(16)?,
        status: ArchiveStatus::parse(&status).unwrap_or(ArchiveStatus::Failed),
        detail: r.get(18)?,
        file_deleted_at_ms: r.get(19)?,
        kept_rowids: r
            .get::<_, Option<String>>(20)?
            .and_then(|k| serde_json::from_str(&k).ok())
            .unwrap_or_default(),
    })
}

/// Every archive in the catalog, oldest first. A journal from before the
/// catalog has none.
pub fn list(conn: &Connection) -> Result<Vec<ArchiveRecord>> {
    if !super::has_table(conn, "archives")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM archives ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The archive `id`; `bad_input` naming how to find one when there is
/// none.
pub fn get(conn: &Connection, id: i64) -> Result<ArchiveRecord> {
    let found = if super::has_table(conn, "archives")? {
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM archives WHERE id = ?1"))?;
        let mut rows = stmt.query_map([id], from_row)?;
        rows.next().transpose()?
    } else {
        None
    };
    found.ok_or_else(|| {
        Error::new(
            ErrorClass::BadInput,
            format!("there is no archive {id}: `resilite archive list --db <db>` (or GET /v1/archives) lists the archives and their ids"),
            format!("archive id {id}"),
        )
    })
}

/// Apply catalog statements on a journal connection of one's own (the CLI),
/// in one transaction.
pub fn apply(conn: &Connection, statements: &[Statement]) -> Result<()> {
    super::backups::apply(conn, statements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::in_memory;

    /// A recorded archive reads back as written, moves through its
    /// statuses, and is pruned only once its file was deleted long enough
    /// ago.
    #[test]
    fn catalog_records_phases_and_prunes_deleted_files_only() {
        let conn = in_memory();
        let mut r = ArchiveRecord {
            id: 0,
            path: "/a/app-logs-x-1.db.zst".into(),
            table: "logs".into(),
            column: "created_at".into(),
            format: TimeFormat::UnixMs,
            cutoff_ms: 10,
            min_value: Some("1".into()),
            max_value: Some("9".into()),
            first_rowid: 1,
            last_rowid: 9,
            rows: 9,
            uncompressed_size: 8192,
            stored_size: 1024,
            ratio: 8.0,
            sha256: "ab".into(),
            created_at_ms: 0,
            created_at: String::new(),
            expires_at_ms: None,
            status: ArchiveStatus::Written,
            detail: None,
            file_deleted_at_ms: None,
            kept_rowids: Vec::new(),
        };
        apply(&conn, &[insert_statement(&r)]).unwrap();
        let got = list(&conn).unwrap();
        r.id = got[0].id;
        r.created_at = "1970-01-01T00:00:00.000Z".into();
        assert_eq!(got, [r.clone()]);
        apply(
            &conn,
            &[status_statement(&r.path, ArchiveStatus::Purged, None, 5)],
        )
        .unwrap();
        assert_eq!(get(&conn, r.id).unwrap().status, ArchiveStatus::Purged);
        apply(&conn, &[kept_statement(&r.path, &[3, 5])]).unwrap();
        let kept = get(&conn, r.id).unwrap();
        assert_eq!(
            (kept.kept_rowids.as_slice(), kept.archived_rows()),
            (&[3, 5][..], 7)
        );
        apply(&conn, &[prune_statement(100)]).unwrap();
        assert_eq!(list(&conn).unwrap().len(), 1);
        apply(&conn, &[file_deleted_statement(&r.path, 50)]).unwrap();
        apply(&conn, &[prune_statement(100)]).unwrap();
        assert!(list(&conn).unwrap().is_empty());
        assert_eq!(get(&conn, 7).unwrap_err().class, ErrorClass::BadInput);
    }
}
