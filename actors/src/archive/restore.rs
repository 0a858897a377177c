//! Putting an archive's rows back into the database.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::file;
use super::record::{ArchiveRecord, ArchiveStatus};
use super::run::Host;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::journal::archives as catalog;
use crate::maintenance::now_ms;
use crate::schema::expected::quote;

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreCounts {
    /// The archive's id.
    pub id: i64,
    /// Rows inserted back.
    pub restored: u64,
    /// Rows skipped: their rowid or primary key is already in the table,
    /// or they changed after the archive was written and stayed in the
    /// database (the catalog's `kept_rowids`).
    pub skipped: u64,
}

/// Verify the archive of `record`, then insert each of its rows back into
/// its table (with its rowid, so its primary key) through the writer, in
/// one transaction; a row whose rowid or a unique key is already there is
/// skipped and counted. The archive is marked `restored` and kept.
/// Blocking. A damaged archive is refused (class `corruption`), nothing
/// inserted.
pub fn restore(record: &ArchiveRecord, host: &dyn Host) -> Result<RestoreCounts> {
    if record.file_deleted_at_ms.is_some() {
        return Err(Error::bad_input(format!(
            "archive {} cannot be restored: its file was deleted (archive_keep)",
            record.id
        )));
    }
    let plain = file::open_checked(record)?;
    let table = record.table.clone();
    let from = plain.clone();
    let kept: HashSet<i64> = record.kept_rowids.iter().copied().collect();
    let result = host.on_writer(Box::new(move |conn| {
        insert_rows(conn, &from, &table, &kept)
    }));
    let _ = std::fs::remove_file(&plain);
    let (restored, skipped) = result?;
    let counts = RestoreCounts {
        id: record.id,
        restored,
        skipped,
    };
    host.journal(vec![catalog::status_statement(
        &record.path,
        ArchiveStatus::Restored,
        Some(&format!(
            "{restored} rows restored, {skipped} skipped (already there)"
        )),
        now_ms(),
    )])?;
    host.event(Event::archive_restore(record, restored, skipped));
    Ok(counts)
}

/// Insert the rows of `table` in the SQLite file `from` into `conn`'s
/// table of that name, in one transaction, except the rowids in `kept`
/// (rows that changed after the archive was written and stayed in the
/// database: their old copy is never put back): (inserted, skipped).
fn insert_rows(
    conn: &Connection,
    from: &Path,
    table: &str,
    kept: &HashSet<i64>,
) -> Result<(u64, u64)> {
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = src.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<_>>()?;
    let list: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let list = list.join(", ");
    let marks: Vec<String> = (1..=columns.len() + 1).map(|i| format!("?{i}")).collect();
    let tx = conn.unchecked_transaction()?;
    let (mut restored, mut skipped) = (0, 0);
    {
        let mut insert = tx.prepare(&format!(
            "INSERT INTO {} (rowid, {list}) VALUES ({}) ON CONFLICT DO NOTHING",
            quote(table),
            marks.join(", ")
        ))?;
        let mut select = src.prepare(&format!(
            "SELECT rowid, {list} FROM {} ORDER BY rowid",
            quote(table)
        ))?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let values: Vec<rusqlite::types::Value> = (0..=columns.len())
                .map(|i| row.get(i))
                .collect::<rusqlite::Result<_>>()?;
            let rowid: i64 = row.get(0)?;
            if kept.contains(&rowid) {
                skipped += 1;
            } else if insert.execute(rusqlite::params_from_iter(values))? == 1 {
                restored += 1;
            } else {
                skipped += 1;
            }
        }
    }
    tx.commit()?;
    Ok((restored, skipped))
}
