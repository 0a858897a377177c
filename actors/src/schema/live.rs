//! The live schema of a database, read with `pragma_table_list`,
//! `pragma_table_info`, `pragma_index_list` and `pragma_index_info` (pragmas
//! the statement gate lets any reader run).

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::error::Result;

/// A table as the database has it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTable {
    /// Its name, as created.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<LiveColumn>,
    /// Its indexes, those SQLite made for constraints included.
    pub indexes: Vec<LiveIndex>,
    /// A WITHOUT ROWID table (data checks and dedupe work by rowid).
    pub without_rowid: bool,
}

/// A column as `pragma_table_info` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveColumn {
    /// Its name.
    pub name: String,
    /// Its declared type, as written.
    pub ty: String,
    /// Declared NOT NULL.
    pub not_null: bool,
    /// Its DEFAULT, as SQL text.
    pub default: Option<String>,
    /// Its place in the primary key (1-based), 0 when not in it.
    pub pk: i64,
}

/// An index as `pragma_index_list` and `pragma_index_info` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveIndex {
    /// Its name.
    pub name: String,
    /// UNIQUE.
    pub unique: bool,
    /// `c` (CREATE INDEX), `u` (a UNIQUE constraint) or `pk`.
    pub origin: String,
    /// A partial index (with WHERE).
    pub partial: bool,
    /// Its columns in order; `None` for an expression.
    pub columns: Vec<Option<String>>,
}

impl LiveTable {
    /// The column `name` (SQLite names ignore case).
    pub fn column(&self, name: &str) -> Option<&LiveColumn> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The index `name`.
    pub fn index(&self, name: &str) -> Option<&LiveIndex> {
        self.indexes
            .iter()
            .find(|i| i.name.eq_ignore_ascii_case(name))
    }

    /// Its primary key columns in key order.
    pub fn primary_key(&self) -> Vec<String> {
        let mut pk: Vec<&LiveColumn> = self.columns.iter().filter(|c| c.pk > 0).collect();
        pk.sort_by_key(|c| c.pk);
        pk.into_iter().map(|c| c.name.clone()).collect()
    }
}

impl LiveIndex {
    /// Whether its columns are `columns` (in order, names ignoring case),
    /// and it is a whole-table index.
    pub fn covers(&self, columns: &[String]) -> bool {
        !self.partial
            && self.columns.len() == columns.len()
            && self
                .columns
                .iter()
                .zip(columns)
                .all(|(a, b)| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b)))
    }
}

/// Every table of the main database (SQLite's own excepted), by name in
/// lower case.
pub fn read(conn: &Connection) -> Result<BTreeMap<String, LiveTable>> {
    let mut tables = BTreeMap::new();
    let mut list = conn.prepare(
        "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let names: Vec<(String, bool)> = list
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut info = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1) ORDER BY cid",
    )?;
    let mut index_list = conn.prepare(
        "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1) ORDER BY seq",
    )?;
    let mut index_info = conn.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?;
    for (name, without_rowid) in names {
        let columns = info
            .query_map([&name], |r| {
                Ok(LiveColumn {
                    name: r.get(0)?,
                    ty: r.get(1)?,
                    not_null: r.get(2)?,
                    default: r.get(3)?,
                    pk: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let listed: Vec<(String, bool, String, bool)> = index_list
            .query_map([&name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut indexes = Vec::new();
        for (index, unique, origin, partial) in listed {
            let columns = index_info
                .query_map([&index], |r| r.get::<_, Option<String>>(0))?
                .collect::<rusqlite::Result<_>>()?;
            indexes.push(LiveIndex {
                name: index,
                unique,
                origin,
                partial,
                columns,
            });
        }
        tables.insert(
            name.to_lowercase(),
            LiveTable {
                name,
                columns,
                indexes,
                without_rowid,
            },
        );
    }
    Ok(tables)
}
