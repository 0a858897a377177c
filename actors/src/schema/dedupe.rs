//! Dedupe: for each declared `unique` column set, keep one row of each
//! group sharing a value (the oldest or the newest: lowest or highest
//! rowid, or `order_by`) and remove the others, each recorded in full
//! (its rowid and every column, as JSON) so that it can be put back.
//!
//! The order is: plan (read the rows), record them in the journal, then
//! delete in one transaction only the rows that still hold what was
//! recorded. A crash between the two leaves recorded rows that were not
//! removed; putting them back skips a rowid that exists, so nothing is
//! doubled.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::data::duplicates;
use super::expected::{quote, ExpectedSchema};
use super::live;
use crate::error::{Error, ErrorClass, Result};
use crate::value::Value;

/// Which row of a duplicate group stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// The oldest (lowest rowid, or lowest `order_by`).
    KeepOldest,
    /// The newest (highest rowid, or highest `order_by`).
    KeepNewest,
}

impl Keep {
    /// The name as written: `keep-oldest`, `keep-newest`.
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::KeepOldest => "keep-oldest",
            Keep::KeepNewest => "keep-newest",
        }
    }
}

impl std::str::FromStr for Keep {
    type Err = Error;

    fn from_str(s: &str) -> Result<Keep> {
        match s {
            "keep-oldest" => Ok(Keep::KeepOldest),
            "keep-newest" => Ok(Keep::KeepNewest),
            other => Err(Error::bad_input(format!(
                "dedupe = {other:?} is invalid: use keep-oldest or keep-newest"
            ))),
        }
    }
}

/// A row dedupe removes (or would remove), in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removal {
    /// Its table.
    pub table: String,
    /// Its rowid.
    pub rowid: i64,
    /// The unique column set it duplicated.
    pub columns: Vec<String>,
    /// The value it shared with the row kept.
    pub value: Vec<Value>,
    /// The row kept in its place.
    pub kept: i64,
    /// Every column of the row, by name.
    pub row: BTreeMap<String, Value>,
}

/// The rows to remove for `schema`'s `unique` sets, keeping `keep` of
/// each group. Reads only.
pub fn plan(conn: &Connection, schema: &ExpectedSchema, keep: Keep) -> Result<Vec<Removal>> {
    let live = live::read(conn)?;
    let mut removals = Vec::new();
    for (name, spec) in &schema.tables {
        let Some(table) = live.get(&name.to_lowercase()) else {
            continue;
        };
        if spec.unique.is_empty() {
            continue;
        }
        if table.without_rowid {
            return Err(Error::bad_input(format!(
                "table {name} is WITHOUT ROWID: dedupe removes rows by rowid and cannot work on it"
            )));
        }
        let mut removed: BTreeSet<i64> = BTreeSet::new();
        for set in &spec.unique {
            let columns = set.columns();
            if !columns.iter().all(|c| table.column(c).is_some()) {
                continue;
            }
            let order = spec
                .order_by
                .as_deref()
                .filter(|o| table.column(o).is_some());
            for group in duplicates(conn, &table.name, &columns, order)? {
                // A row another set already removes neither stays nor goes twice.
                let rows: Vec<i64> = group
                    .rowids
                    .iter()
                    .copied()
                    .filter(|r| !removed.contains(r))
                    .collect();
                let kept = match keep {
                    Keep::KeepOldest => rows.first(),
                    Keep::KeepNewest => rows.last(),
                };
                let Some(&kept) = kept else { continue };
                for rowid in rows.into_iter().filter(|&r| r != kept) {
                    removed.insert(rowid);
                    removals.push(Removal {
                        table: table.name.clone(),
                        rowid,
                        columns: columns.clone(),
                        value: group.value.clone(),
                        kept,
                        row: BTreeMap::new(),
                    });
                }
            }
        }
    }
    fill_rows(conn, &mut removals)?;
    Ok(removals)
}

/// Read every column of each removal's row.
fn fill_rows(conn: &Connection, removals: &mut [Removal]) -> Result<()> {
    for r in removals.iter_mut() {
        let sql = format!("SELECT * FROM {} WHERE rowid = ?1", quote(&r.table));
        let mut stmt = conn.prepare_cached(&sql)?;
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let mut rows = stmt.query([r.rowid])?;
        if let Some(row) = rows.next()? {
            for (i, name) in names.iter().enumerate() {
                r.row.insert(name.clone(), Value::from(row.get_ref(i)?));
            }
        }
    }
    Ok(())
}

/// Delete the planned rows on `conn` in one transaction, each only if it
/// still holds what was planned (every column the same): the removals
/// applied. Rows changed since the plan are left alone.
pub fn delete(conn: &Connection, removals: &[Removal]) -> Result<Vec<Removal>> {
    let tx = conn.unchecked_transaction()?;
    let mut done = Vec::new();
    for r in removals {
        let mut sql = format!("DELETE FROM {} WHERE rowid = ?1", quote(&r.table));
        let mut params: Vec<&Value> = Vec::new();
        for (name, value) in &r.row {
            params.push(value);
            sql.push_str(&format!(" AND {} IS ?{}", quote(name), params.len() + 1));
        }
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&r.rowid];
        all.extend(params.iter().map(|v| *v as &dyn rusqlite::ToSql));
        let n = tx
            .execute(&sql, all.as_slice())
            .map_err(|e| Error::from_sqlite(e, &sql))?;
        if n == 1 {
            done.push(r.clone());
        }
    }
    tx.commit()?;
    Ok(done)
}

/// A removed row as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedRow {
    /// Its id in the journal.
    pub id: i64,
    /// The dedupe run that removed it.
    pub batch: String,
    /// When (ms since the Unix epoch).
    pub removed_at_ms: i64,
    /// Its table.
    pub table: String,
    /// Its rowid.
    pub rowid: i64,
    /// Every column, by name.
    pub row: BTreeMap<String, Value>,
}

/// What putting removed rows back did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Restored {
    /// Journal ids of the rows put back.
    pub restored: Vec<i64>,
    /// Journal ids of rows skipped: their rowid exists again.
    pub skipped: Vec<i64>,
}

/// Put `rows` back on `conn` in one transaction, with their rowids,
/// skipping a rowid that exists again.
pub fn restore(conn: &Connection, rows: &[RemovedRow]) -> Result<Restored> {
    let tx = conn.unchecked_transaction()?;
    let mut out = Restored::default();
    for r in rows {
        let t = quote(&r.table);
        let exists: bool = tx
            .query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE rowid = ?1)"),
                [r.rowid],
                |row| row.get(0),
            )
            .map_err(|e| {
                Error::new(
                    ErrorClass::Sql,
                    format!(
                        "removed row {} cannot be put back into {}: {e}",
                        r.rowid, r.table
                    ),
                    e.to_string(),
                )
            })?;
        if exists {
            out.skipped.push(r.id);
            continue;
        }
        let names: Vec<String> = r.row.keys().map(|k| quote(k)).collect();
        let marks: Vec<String> = (0..=names.len()).map(|i| format!("?{}", i + 1)).collect();
        let sql = format!(
            "INSERT INTO {t} (rowid{}{}) VALUES ({})",
            if names.is_empty() { "" } else { ", " },
            names.join(", "),
            marks.join(", ")
        );
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&r.rowid];
        params.extend(r.row.values().map(|v| v as &dyn rusqlite::ToSql));
        tx.execute(&sql, params.as_slice()).map_err(|e| {
            let e = Error::from_sqlite(e, &sql);
            Error::new(
                e.class,
                format!(
                    "removed row {} of {} cannot be put back: {}; nothing was restored",
                    r.rowid, r.table, e.message
                ),
                e.detail,
            )
        })?;
        out.restored.push(r.id);
    }
    tx.commit()?;
    Ok(out)
}
