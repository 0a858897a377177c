//! The expected schema: what the operator declares in a TOML file (tables,
//! their columns and indexes, and the data rules beside them), parsed with
//! serde and checked so that a mistake names the file and the place.
//!
//! ```toml
//! [tables.users]
//! required = true                    # default: true (a missing one is an error)
//! columns = [
//!   { name = "id", type = "INTEGER", primary_key = true },
//!   { name = "email", type = "TEXT", not_null = true },
//!   { name = "status", type = "TEXT", not_null = true, default = "'active'" },
//! ]
//! indexes = [{ name = "users_email", columns = ["email"], unique = true }]
//! unique = ["email"]                 # a column, or ["first", "last"] for a set
//! not_null = ["email"]
//! check = [{ name = "email_has_at", expr = "email LIKE '%@%'" }]
//! foreign_keys = [{ column = "team_id", references = "teams(id)" }]
//! order_by = "created_at"            # oldest/newest for dedupe; default: rowid
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorClass, Result};

/// The schema an application expects of its database.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedSchema {
    /// The tables, by name.
    #[serde(default)]
    pub tables: BTreeMap<String, TableSpec>,
}

/// One expected table, with its data rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// A missing required table is an error, a missing optional one a
    /// warning. Default: true.
    #[serde(default = "yes")]
    pub required: bool,
    /// Its columns, in order.
    #[serde(default)]
    pub columns: Vec<ColumnSpec>,
    /// Its indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexSpec>,
    /// Column sets that must be unique in practice, with or without a
    /// UNIQUE index: `"email"` or `["first", "last"]` each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique: Vec<ColumnSet>,
    /// Columns that must hold no NULL, with or without NOT NULL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_null: Vec<String>,
    /// Row rules: an SQL expression each row must not make false (as a
    /// CHECK constraint: NULL passes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub check: Vec<CheckSpec>,
    /// References each non-NULL value must find in its parent table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKeySpec>,
    /// The column that says which row of a duplicate group is oldest
    /// (lowest) and newest; default: the rowid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
}

fn yes() -> bool {
    true
}

/// One expected column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Its name.
    pub name: String,
    /// Its declared type (`INTEGER`, `TEXT`, `VARCHAR(80)`...); empty: none.
    #[serde(rename = "type", default)]
    pub ty: String,
    /// Declared NOT NULL.
    #[serde(default)]
    pub not_null: bool,
    /// Its DEFAULT, as SQL (`"'active'"`, `"0"`, `"CURRENT_TIMESTAMP"`) or
    /// a TOML number or boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultValue>,
    /// Part of the primary key (in column order).
    #[serde(default)]
    pub primary_key: bool,
}

/// A column's DEFAULT as the file gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DefaultValue {
    /// SQL text, as written after DEFAULT.
    Sql(String),
    /// An integer literal.
    Integer(i64),
    /// A real literal.
    Real(f64),
    /// `true` is 1, `false` 0.
    Bool(bool),
}

impl DefaultValue {
    /// The SQL text of this default.
    pub fn sql(&self) -> String {
        match self {
            DefaultValue::Sql(s) => s.trim().to_string(),
            DefaultValue::Integer(i) => i.to_string(),
            DefaultValue::Real(r) => format!("{r:?}"),
            DefaultValue::Bool(b) => i32::from(*b).to_string(),
        }
    }
}

/// One expected index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSpec {
    /// Its name.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<String>,
    /// A UNIQUE index.
    #[serde(default)]
    pub unique: bool,
}

/// A set of columns: one name, or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnSet {
    /// One column.
    One(String),
    /// Several columns, unique together.
    Many(Vec<String>),
}

impl ColumnSet {
    /// The columns of the set.
    pub fn columns(&self) -> Vec<String> {
        match self {
            ColumnSet::One(c) => vec![c.clone()],
            ColumnSet::Many(cs) => cs.clone(),
        }
    }
}

/// A named row rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Its name, as findings show it.
    pub name: String,
    /// An SQL expression over the row's columns.
    pub expr: String,
}

/// A reference a column's values must find.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForeignKeySpec {
    /// The referring column.
    pub column: String,
    /// `table(column)` it refers to.
    pub references: String,
}

impl ForeignKeySpec {
    /// The parent table and column of `references`; `None` when it is not
    /// written `table(column)`.
    pub fn parent(&self) -> Option<(String, String)> {
        let (table, rest) = self.references.trim().split_once('(')?;
        let column = rest.strip_suffix(')')?;
        let (table, column) = (table.trim(), column.trim());
        if table.is_empty() || column.is_empty() || column.contains(',') {
            return None;
        }
        Some((table.to_string(), column.to_string()))
    }
}

impl ExpectedSchema {
    /// Read and check the schema file at `path`. An error names the file,
    /// the place in it and what is wrong.
    pub fn from_toml_file(path: &Path) -> Result<ExpectedSchema> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorClass::BadInput,
                format!(
                    "cannot read schema file {}: {e}; check the path (schema.file, --schema)",
                    path.display()
                ),
                e.to_string(),
            )
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and check schema TOML text.
    pub fn from_toml_str(text: &str) -> Result<ExpectedSchema> {
        Self::parse(text, "schema")
    }

    fn parse(text: &str, file: &str) -> Result<ExpectedSchema> {
        let schema: ExpectedSchema = toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            Error::new(
                ErrorClass::BadInput,
                format!("{file}{place}: {}", e.message().trim()),
                e.to_string(),
            )
        })?;
        schema
            .check()
            .map_err(|m| Error::bad_input(format!("{file}: {m}")))?;
        Ok(schema)
    }

    /// The mistakes a file can make that serde cannot see: empty or
    /// repeated names, rules and indexes on undeclared columns, a
    /// reference not written `table(column)`.
    fn check(&self) -> std::result::Result<(), String> {
        for (name, t) in &self.tables {
            let at = format!("tables.{name}");
            if name.trim().is_empty() {
                return Err("a table name is empty".into());
            }
            if t.columns.is_empty() {
                return Err(format!(
                    "{at}: no columns: declare at least one, e.g. columns = [{{ name = \"id\", type = \"INTEGER\", primary_key = true }}]"
                ));
            }
            let mut seen = Vec::new();
            for (i, c) in t.columns.iter().enumerate() {
                if c.name.trim().is_empty() {
                    return Err(format!("{at}.columns[{i}]: the name is empty"));
                }
                let lower = c.name.to_lowercase();
                if seen.contains(&lower) {
                    return Err(format!(
                        "{at}.columns[{i}]: column `{}` is declared twice",
                        c.name
                    ));
                }
                seen.push(lower);
                if matches!(&c.default, Some(DefaultValue::Sql(s)) if s.trim().is_empty()) {
                    return Err(format!(
                        "{at}.columns[{i}]: `default` is empty: give SQL such as \"'text'\", \"0\" or \"CURRENT_TIMESTAMP\", or leave it out"
                    ));
                }
            }
            let known = |col: &str, place: String| -> std::result::Result<(), String> {
                if t.has_column(col) {
                    Ok(())
                } else {
                    Err(format!(
                        "{place}: column `{col}` is not declared in {at}.columns ({})",
                        t.columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            };
            for (i, idx) in t.indexes.iter().enumerate() {
                if idx.name.trim().is_empty() || idx.columns.is_empty() {
                    return Err(format!(
                        "{at}.indexes[{i}]: an index needs a name and at least one column"
                    ));
                }
                for c in &idx.columns {
                    known(c, format!("{at}.indexes[{i}]"))?;
                }
            }
            for (i, set) in t.unique.iter().enumerate() {
                if set.columns().is_empty() {
                    return Err(format!("{at}.unique[{i}]: an empty column list"));
                }
                for c in set.columns() {
                    known(&c, format!("{at}.unique[{i}]"))?;
                }
            }
            for (i, c) in t.not_null.iter().enumerate() {
                known(c, format!("{at}.not_null[{i}]"))?;
            }
            for (i, c) in t.check.iter().enumerate() {
                if c.name.trim().is_empty() || c.expr.trim().is_empty() {
                    return Err(format!(
                        "{at}.check[{i}]: a check needs a name and an expr, e.g. {{ name = \"price_positive\", expr = \"price >= 0\" }}"
                    ));
                }
            }
            for (i, fk) in t.foreign_keys.iter().enumerate() {
                known(&fk.column, format!("{at}.foreign_keys[{i}]"))?;
                if fk.parent().is_none() {
                    return Err(format!(
                        "{at}.foreign_keys[{i}]: references = {:?} is invalid: write it `table(column)`, e.g. \"users(id)\"",
                        fk.references
                    ));
                }
            }
            if let Some(order) = &t.order_by {
                known(order, format!("{at}.order_by"))?;
            }
        }
        Ok(())
    }

    /// The schema the migrations `source` produce: their up scripts applied
    /// in order to a scratch in-memory database, read back as
    /// [`from_database`](Self::from_database) reads one. A script that
    /// fails there is an error naming its migration.
    pub fn from_migrations(source: &crate::migrate::Migrations) -> Result<ExpectedSchema> {
        let scratch = Connection::open_in_memory()?;
        for m in source.iter() {
            scratch.execute_batch(m.up()).map_err(|e| {
                Error::new(
                    ErrorClass::BadInput,
                    format!(
                        "{} does not apply to an empty database, so no expected schema can be derived from the migrations",
                        m.label()
                    ),
                    e.to_string(),
                )
            })?;
        }
        Self::from_database(&scratch)
    }

    /// The schema of an existing database, as a file would declare it:
    /// every table (resilite's own `_resilite_*` tables and SQLite's
    /// excepted) required, its columns, and the indexes made by CREATE
    /// INDEX (not those SQLite makes for UNIQUE constraints, nor partial
    /// or expression indexes, which a file cannot declare). E.g. a
    /// scratch in-memory database built by the application's scripts.
    pub fn from_database(conn: &Connection) -> Result<ExpectedSchema> {
        let live = super::live::read(conn)?;
        let mut tables = BTreeMap::new();
        for t in live.into_values() {
            if t.name.starts_with("_resilite_") {
                continue;
            }
            let columns = t
                .columns
                .iter()
                .map(|c| ColumnSpec {
                    name: c.name.clone(),
                    ty: c.ty.clone(),
                    not_null: c.not_null,
                    default: c.default.clone().map(DefaultValue::Sql),
                    primary_key: c.pk > 0,
                })
                .collect();
            let indexes = t
                .indexes
                .iter()
                .filter(|i| i.origin == "c" && !i.partial && i.columns.iter().all(Option::is_some))
                .map(|i| IndexSpec {
                    name: i.name.clone(),
                    columns: i.columns.iter().flatten().cloned().collect(),
                    unique: i.unique,
                })
                .collect();
            tables.insert(
                t.name.clone(),
                TableSpec {
                    required: true,
                    columns,
                    indexes,
                    unique: Vec::new(),
                    not_null: Vec::new(),
                    check: Vec::new(),
                    foreign_keys: Vec::new(),
                    order_by: None,
                },
            );
        }
        Ok(ExpectedSchema { tables })
    }

    /// The schema as TOML text (what [`from_toml_str`](Self::from_toml_str) reads).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

impl TableSpec {
    /// Whether `name` is one of its columns (SQLite names ignore case).
    pub fn has_column(&self, name: &str) -> bool {
        self.columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Its primary key columns, in declaration order.
    pub fn primary_key(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.clone())
            .collect()
    }
}

/// `name` quoted as an SQL identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_file_mistakes_name_the_place() {
        let err = ExpectedSchema::from_toml_str(
            "[tables.users]\ncolumns = [{ name = \"id\", type = \"INTEGER\", colour = 1 }]\n",
        )
        .unwrap_err();
        assert!(err.message.contains("unknown field `colour`"), "{err}");
        assert!(err.message.contains("line 2"), "{err}");
        let err = ExpectedSchema::from_toml_str(
            "[tables.users]\ncolumns = [{ name = \"id\" }]\nindexes = [{ name = \"i\", columns = [\"email\"] }]\n",
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("tables.users.indexes[0]: column `email` is not declared"),
            "{err}"
        );
        let err = ExpectedSchema::from_toml_str(
            "[tables.t]\ncolumns = [{ name = \"u\" }]\nforeign_keys = [{ column = \"u\", references = \"users\" }]\n",
        )
        .unwrap_err();
        assert!(err.message.contains("write it `table(column)`"), "{err}");
        let err = ExpectedSchema::from_toml_str(
            "[tables.t]\nrequired = \"yes\"\ncolumns = [{ name = \"u\" }]\n",
        )
        .unwrap_err();
        assert!(err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn schema_round_trips_through_a_database() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL, status TEXT DEFAULT 'active');
             CREATE UNIQUE INDEX users_email ON users(email);",
        )
        .unwrap();
        let schema = ExpectedSchema::from_database(&conn).unwrap();
        let users = &schema.tables["users"];
        assert_eq!(users.primary_key(), ["id"]);
        assert_eq!(
            users.columns[2].default,
            Some(DefaultValue::Sql("'active'".into()))
        );
        assert!(users.indexes[0].unique);
        let again = ExpectedSchema::from_toml_str(&schema.to_toml()).unwrap();
        assert_eq!(again, schema);
    }
}
