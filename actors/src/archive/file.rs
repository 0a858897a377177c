//! Archive files: a SQLite file holding one table (its `CREATE TABLE` as
//! the application database has it) and a batch of its rows with their
//! rowids, zstd-compressed (the backups' streaming code), stored through
//! the backups' [`LocalDir`] (temporary name, fsync, rename, directory
//! fsync, mode 0600); and their verification.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::record::ArchiveRecord;
use crate::backup::{compress_file, decompress_file, sha256, Destination, LocalDir};
use crate::error::{Error, ErrorClass, Result};
use crate::schema::expected::quote;

/// The rows of one batch: `table`'s rows with rowid between `first` and
/// `last` that match `filter` (SQL over the table's columns, with `params`).
pub(crate) struct Batch<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub first: i64,
    pub last: i64,
    pub filter: &'a str,
    pub cutoff_ms: i64,
}

/// A stored archive file.
#[derive(Debug)]
pub(crate) struct Written {
    pub path: PathBuf,
    pub rows: u64,
    pub min_value: Option<String>,
    pub max_value: Option<String>,
    pub uncompressed_size: u64,
    pub stored_size: u64,
    pub sha256: String,
}

/// What a verification found: the file is sound and holds what the
/// catalog says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveCheck {
    /// The archive's id.
    pub id: i64,
    /// Rows in the file.
    pub rows: u64,
    /// SHA-256 (hex) of the stored file, as recorded.
    pub sha256: String,
}

/// The kinds of scratch file beside an archive `name`, each named
/// `.<name>.<kind>`: the plain copy being written (`plain`), the copy a
/// verification decompresses (`check`), and [`LocalDir`]'s staged file
/// before its rename (`tmp`).
pub(crate) const SCRATCH_KINDS: [&str; 3] = ["plain", "check", "tmp"];

/// A temporary file in `dir` beside the archive `name`: never listed (its
/// name starts with `.`), removed by the next run if left behind. `what`
/// is one of [`SCRATCH_KINDS`].
pub(crate) fn scratch(dir: &Path, name: &str, what: &str) -> PathBuf {
    debug_assert!(SCRATCH_KINDS.contains(&what));
    dir.join(format!(".{name}.{what}"))
}

/// `table`'s `CREATE TABLE` statement and its insertable columns, from the
/// live schema of `conn`; a clear error when the table or `column` is
/// missing or the table has no rowid.
pub(crate) fn table_shape(
    conn: &Connection,
    table: &str,
    column: &str,
) -> Result<(String, Vec<String>)> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let Some(sql) = sql else {
        return Err(Error::bad_input(format!(
            "retention policy for table `{table}`: the database has no table `{table}`; fix `[[retention]] table` (or create the table)"
        )));
    };
    if sql.to_ascii_uppercase().contains("WITHOUT ROWID") {
        return Err(Error::bad_input(format!(
            "retention policy for table `{table}`: the table is WITHOUT ROWID; resilite archives tables with rowids only"
        )));
    }
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<_>>()?;
    if !columns.iter().any(|c| c == column) {
        return Err(Error::bad_input(format!(
            "retention policy for table `{table}`: the table has no column `{column}` (it has {}); fix `[[retention]] column`",
            columns.join(", ")
        )));
    }
    Ok((sql, columns))
}

/// Write the rows of `batch` read from `src` (in one read transaction) to
/// the archive `name` in `dest`, compressed at `level`. Blocking.
pub(crate) fn write(
    src: &Connection,
    batch: &Batch<'_>,
    dest: &LocalDir,
    name: &str,
    level: i32,
) -> Result<Written> {
    let (create, columns) = table_shape(src, batch.table, batch.column)?;
    std::fs::create_dir_all(dest.dir())
        .map_err(|e| Error::from(e).during("create archive directory", dest.dir()))?;
    let plain = scratch(dest.dir(), name, "plain");
    let _ = std::fs::remove_file(&plain);
    let result = (|| {
        let out = Connection::open(&plain)
            .map_err(|e| Error::from(e).during("create archive", &plain))?;
        out.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
        out.execute_batch(&create)?;
        let list: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let list = list.join(", ");
        let marks: Vec<String> = (1..=columns.len() + 1).map(|i| format!("?{i}")).collect();
        let tx = out.unchecked_transaction()?;
        let mut rows = 0u64;
        {
            let mut insert = tx.prepare(&format!(
                "INSERT INTO main.{} (rowid, {list}) VALUES ({})",
                quote(batch.table),
                marks.join(", ")
            ))?;
            let mut select = src.prepare(&format!(
                "SELECT rowid, {list} FROM {} WHERE rowid BETWEEN ?1 AND ?2 AND {} ORDER BY rowid",
                quote(batch.table),
                batch.filter
            ))?;
            let mut found =
                select.query(rusqlite::params![batch.first, batch.last, batch.cutoff_ms])?;
            while let Some(row) = found.next()? {
                let values: Vec<rusqlite::types::Value> = (0..=columns.len())
                    .map(|i| row.get(i))
                    .collect::<rusqlite::Result<_>>()?;
                insert.execute(rusqlite::params_from_iter(values))?;
                rows += 1;
            }
        }
        tx.commit()?;
        let (min_value, max_value) = out.query_row(
            &format!(
                "SELECT CAST(min({c}) AS TEXT), CAST(max({c}) AS TEXT) FROM main.{t}",
                c = quote(batch.column),
                t = quote(batch.table)
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        drop(out);
        let staged = dest.stage(name)?;
        let uncompressed_size = compress_file(&plain, &staged, level)?;
        let stored_size = dest.put(name, &staged)?;
        let path = dest.dir().join(name);
        let sha256 = sha256(&path)?;
        Ok(Written {
            path,
            rows,
            min_value,
            max_value,
            uncompressed_size,
            stored_size,
            sha256,
        })
    })();
    let _ = std::fs::remove_file(&plain);
    result
}

/// Decompress the archive of `record` to a scratch file beside it and check
/// it: the stored file's SHA-256, the frame's own checksum, an SQLite file
/// that passes `quick_check`, and the row count and rowid range the catalog
/// recorded. Returns the scratch file (the caller removes it). A file that
/// fails is an error of class `corruption` saying what differs.
pub(crate) fn open_checked(record: &ArchiveRecord) -> Result<PathBuf> {
    let path = Path::new(&record.path);
    let damaged = |what: String| {
        Error::new(
            ErrorClass::Corruption,
            format!(
                "archive {} ({}) failed verification: {what}; the file is damaged: it is not restored and its rows stay where they are",
                record.id,
                path.display()
            ),
            what.clone(),
        )
    };
    if !path.is_file() {
        return Err(damaged("the file is missing".into()));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let plain = scratch(dir, &name, "check");
    let result = (|| {
        let d = decompress_file(path, &plain).map_err(|e| damaged(e.message))?;
        if d.stored_sha256 != record.sha256 {
            return Err(damaged(format!(
                "SHA-256 {} differs from the recorded {}",
                d.stored_sha256, record.sha256
            )));
        }
        let conn = Connection::open_with_flags(&plain, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| damaged(format!("not an SQLite file: {e}")))?;
        let ok: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| damaged(format!("not a sound SQLite file: {e}")))?;
        if ok != "ok" {
            return Err(damaged(format!("quick_check: {ok}")));
        }
        let (rows, first, last): (i64, Option<i64>, Option<i64>) = conn
            .query_row(
                &format!(
                    "SELECT count(*), min(rowid), max(rowid) FROM {}",
                    quote(&record.table)
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| damaged(format!("table `{}` cannot be read: {e}", record.table)))?;
        if rows as u64 != record.rows
            || first != Some(record.first_rowid)
            || last != Some(record.last_rowid)
        {
            return Err(damaged(format!(
                "it holds {rows} rows, rowids {first:?}..{last:?}; the catalog says {} rows, rowids {}..{}",
                record.rows, record.first_rowid, record.last_rowid
            )));
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(plain),
        Err(e) => {
            let _ = std::fs::remove_file(&plain);
            Err(e)
        }
    }
}

/// Verify the archive of `record` (see the checks of a run's verification:
/// SHA-256, decompression, `quick_check`, row count and rowid range).
/// Blocking. A damaged file is an error of class `corruption`.
pub fn verify_file(record: &ArchiveRecord) -> Result<ArchiveCheck> {
    let plain = open_checked(record)?;
    let _ = std::fs::remove_file(&plain);
    Ok(ArchiveCheck {
        id: record.id,
        rows: record.rows,
        sha256: record.sha256.clone(),
    })
}

/// Delete the archive file `path` durably (a missing file is fine).
pub(crate) fn delete(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    LocalDir::new(dir).delete(&name)
}
