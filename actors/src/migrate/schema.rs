//! What a migration does to the schema, and whether it loses anything:
//! destructive-change detection from the schema itself, never from the
//! script's text.
//!
//! The schema is read before the migration and after every statement that
//! changed it (`PRAGMA schema_version` moved): tables with their columns
//! (`pragma_table_info`), indexes, views and triggers. Each table and
//! column present at the start is followed through the statements:
//!
//! - a statement that removes one table and adds one with the same
//!   columns renamed it (`ALTER TABLE a RENAME TO b`); one that removes
//!   one column and adds one at the same place renamed the column;
//! - a table removed otherwise was dropped, and its rows are counted as
//!   they were just before (the statement is run again inside a
//!   savepoint); a column removed otherwise was dropped.
//!
//! At the end, a dropped table whose name (or its name when it was
//! dropped) is borne by a table again was **rebuilt** (the usual
//! create-copy-drop-rename): it keeps the columns found there by name, and
//! keeps its rows if it holds at least as many. What is **lost**: a table
//! dropped and not rebuilt, a column dropped (or missing from the rebuilt
//! table), a rebuilt table holding fewer rows. A column renamed by a
//! rebuild (copied under another name) counts as lost: resilite cannot
//! tell a copy from a new column; allow it with `--allow-destructive`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The schema at one moment: tables (with their columns, in order),
/// indexes, views and triggers, SQLite's own `sqlite_*` objects left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Shape {
    tables: BTreeMap<String, Vec<String>>,
    indexes: BTreeSet<String>,
    views: BTreeSet<String>,
    triggers: BTreeSet<String>,
}

impl Shape {
    /// The schema of `conn`'s main database now.
    pub(crate) fn read(conn: &Connection) -> Result<Shape> {
        let mut shape = Shape::default();
        let mut stmt = conn.prepare(
            "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )?;
        let objects = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut columns = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
        for (kind, name) in objects {
            match kind.as_str() {
                "table" => {
                    let cols = columns
                        .query_map([&name], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    shape.tables.insert(name, cols);
                }
                "index" => {
                    shape.indexes.insert(name);
                }
                "view" => {
                    shape.views.insert(name);
                }
                "trigger" => {
                    shape.triggers.insert(name);
                }
                _ => {}
            }
        }
        Ok(shape)
    }
}

/// A table present at the start, followed through the statements.
#[derive(Debug, Clone)]
struct Tracked {
    original: String,
    /// Its name now; `None` once dropped.
    current: Option<String>,
    /// Its name when it was dropped, and its rows then.
    dropped: Option<(String, i64)>,
    /// Each original column and its name now (`None`: dropped).
    columns: Vec<(String, Option<String>)>,
}

/// Follows the tables and columns of the start through a migration's
/// statements (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    start: Shape,
    tables: Vec<Tracked>,
}

impl Tracker {
    pub(crate) fn new(start: Shape) -> Tracker {
        let tables = start
            .tables
            .iter()
            .map(|(name, cols)| Tracked {
                original: name.clone(),
                current: Some(name.clone()),
                dropped: None,
                columns: cols.iter().map(|c| (c.clone(), Some(c.clone()))).collect(),
            })
            .collect();
        Tracker { start, tables }
    }

    /// The tables of the start (by their names in `before`) that the
    /// statement which took the schema from `before` to `after` dropped
    /// (removed, and not by a rename): their rows must be counted as they
    /// were before it.
    pub(crate) fn dropped_by(&self, before: &Shape, after: &Shape) -> Vec<String> {
        let (removed, added) = table_diff(before, after);
        if is_rename(before, after, &removed, &added) {
            return Vec::new();
        }
        removed
            .into_iter()
            .filter(|name| {
                self.tables
                    .iter()
                    .any(|t| t.current.as_deref() == Some(name.as_str()))
            })
            .collect()
    }

    /// One statement took the schema from `before` to `after`; `rows`: the
    /// rows of the tables it dropped, as [`dropped_by`](Self::dropped_by)
    /// named them, counted before it.
    pub(crate) fn step(&mut self, before: &Shape, after: &Shape, rows: &BTreeMap<String, i64>) {
        let (removed, added) = table_diff(before, after);
        if is_rename(before, after, &removed, &added) {
            for t in &mut self.tables {
                if t.current.as_deref() == Some(removed[0].as_str()) {
                    t.current = Some(added[0].clone());
                }
            }
            return;
        }
        for name in &removed {
            for t in &mut self.tables {
                if t.current.as_deref() == Some(name.as_str()) {
                    t.current = None;
                    t.dropped = Some((name.clone(), rows.get(name).copied().unwrap_or(0)));
                }
            }
        }
        for (name, after_cols) in &after.tables {
            let Some(before_cols) = before.tables.get(name) else {
                continue;
            };
            if before_cols == after_cols {
                continue;
            }
            let gone: Vec<&String> = before_cols
                .iter()
                .filter(|c| !after_cols.contains(c))
                .collect();
            let new: Vec<&String> = after_cols
                .iter()
                .filter(|c| !before_cols.contains(c))
                .collect();
            let renamed = match (gone.as_slice(), new.as_slice()) {
                ([from], [to]) => {
                    let at = |cols: &[String], c: &String| cols.iter().position(|x| x == c);
                    (at(before_cols, from) == at(after_cols, to)).then_some((*from, *to))
                }
                _ => None,
            };
            for t in &mut self.tables {
                if t.current.as_deref() != Some(name.as_str()) {
                    continue;
                }
                for (_, current) in &mut t.columns {
                    let Some(c) = current.as_ref() else { continue };
                    if !gone.contains(&c) {
                        continue;
                    }
                    *current = renamed.map(|(_, to)| to.clone());
                }
            }
        }
    }

    /// The tables of the start that were dropped and whose name is borne
    /// by a table in `end` (rebuilt): the name they have there. Their rows
    /// are compared with [`change`](Self::change)'s `rows_now`.
    pub(crate) fn rebuilt(&self, end: &Shape) -> Vec<String> {
        self.tables
            .iter()
            .filter_map(|t| self.rebuilt_as(t, end))
            .collect()
    }

    fn rebuilt_as(&self, t: &Tracked, end: &Shape) -> Option<String> {
        let (dropped_as, _) = t.dropped.as_ref()?;
        // A name another table of the start bears now (renamed onto it) is
        // that table's, not a rebuild of this one.
        let taken = |name: &String| self.tables.iter().any(|o| o.current.as_ref() == Some(name));
        [&t.original, dropped_as]
            .into_iter()
            .find(|name| end.tables.contains_key(*name) && !taken(name))
            .cloned()
    }

    /// What the statements did, from the start to `end`. `rows_now`: the
    /// rows of the [`rebuilt`](Self::rebuilt) tables in `end`.
    pub(crate) fn change(&self, end: &Shape, rows_now: &BTreeMap<String, i64>) -> SchemaChange {
        let mut change = SchemaChange::default();
        let mut matched: BTreeSet<&str> = BTreeSet::new();
        for t in &self.tables {
            let (now, rebuilt) = match (&t.current, self.rebuilt_as(t, end)) {
                (Some(now), _) => (now.clone(), false),
                (None, Some(now)) => (now, true),
                (None, None) => {
                    change.tables_removed.push(t.original.clone());
                    continue;
                }
            };
            let Some(end_cols) = end.tables.get(&now) else {
                change.tables_removed.push(t.original.clone());
                continue;
            };
            matched.insert(
                end.tables
                    .get_key_value(&now)
                    .map(|(k, _)| k.as_str())
                    .unwrap_or(""),
            );
            if now != t.original {
                change.tables_renamed.push(Renamed {
                    from: t.original.clone(),
                    to: now.clone(),
                });
            }
            let mut kept: BTreeSet<&str> = BTreeSet::new();
            for (original, current) in &t.columns {
                match current {
                    Some(c) if end_cols.contains(c) => {
                        kept.insert(c.as_str());
                        if c != original {
                            change.columns_renamed.push(Renamed {
                                from: format!("{}.{original}", t.original),
                                to: format!("{now}.{c}"),
                            });
                        }
                    }
                    _ => change
                        .columns_removed
                        .push(format!("{}.{original}", t.original)),
                }
            }
            for c in end_cols {
                if !kept.contains(c.as_str()) {
                    change.columns_added.push(format!("{now}.{c}"));
                }
            }
            if rebuilt {
                change.tables_rebuilt.push(now.clone());
                let before = t.dropped.as_ref().map_or(0, |(_, rows)| *rows);
                let after = rows_now.get(&now).copied().unwrap_or(0);
                if after < before {
                    change.rows_lost.push(format!(
                        "{now}: {before} row(s) before, {after} after the rebuild"
                    ));
                }
            }
        }
        for name in end.tables.keys() {
            if !matched.contains(name.as_str()) {
                change.tables_added.push(name.clone());
            }
        }
        let (start, end) = (&self.start, end);
        change.indexes_added = end.indexes.difference(&start.indexes).cloned().collect();
        change.indexes_removed = start.indexes.difference(&end.indexes).cloned().collect();
        change.views_added = end.views.difference(&start.views).cloned().collect();
        change.views_removed = start.views.difference(&end.views).cloned().collect();
        change.triggers_added = end.triggers.difference(&start.triggers).cloned().collect();
        change.triggers_removed = start.triggers.difference(&end.triggers).cloned().collect();
        change
    }
}

fn table_diff(before: &Shape, after: &Shape) -> (Vec<String>, Vec<String>) {
    let removed = before
        .tables
        .keys()
        .filter(|t| !after.tables.contains_key(*t))
        .cloned()
        .collect();
    let added = after
        .tables
        .keys()
        .filter(|t| !before.tables.contains_key(*t))
        .cloned()
        .collect();
    (removed, added)
}

/// One table removed and one added with the same columns, by one statement.
fn is_rename(before: &Shape, after: &Shape, removed: &[String], added: &[String]) -> bool {
    matches!((removed, added), ([from], [to]) if before.tables[from] == after.tables[to])
}

/// A name that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renamed {
    /// The name before.
    pub from: String,
    /// The name after.
    pub to: String,
}

/// What migrations did (or, in a dry run, would do) to the schema. Columns
/// are named `table.column`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SchemaChange {
    /// Tables created.
    pub tables_added: Vec<String>,
    /// Tables dropped (and not rebuilt): lost.
    pub tables_removed: Vec<String>,
    /// Tables renamed.
    pub tables_renamed: Vec<Renamed>,
    /// Tables dropped and created again under their name (a rebuild).
    pub tables_rebuilt: Vec<String>,
    /// Columns added.
    pub columns_added: Vec<String>,
    /// Columns dropped, or missing from a rebuilt table: lost.
    pub columns_removed: Vec<String>,
    /// Columns renamed.
    pub columns_renamed: Vec<Renamed>,
    /// Rebuilt tables holding fewer rows than before: lost.
    pub rows_lost: Vec<String>,
    /// Indexes created.
    pub indexes_added: Vec<String>,
    /// Indexes dropped.
    pub indexes_removed: Vec<String>,
    /// Views created.
    pub views_added: Vec<String>,
    /// Views dropped.
    pub views_removed: Vec<String>,
    /// Triggers created.
    pub triggers_added: Vec<String>,
    /// Triggers dropped.
    pub triggers_removed: Vec<String>,
}

impl SchemaChange {
    /// What is lost: tables, columns and rows, as sentences' parts
    /// (`table posts`, `column users.email`, `rows of t: ...`).
    pub fn lost(&self) -> Vec<String> {
        let tables = self.tables_removed.iter().map(|t| format!("table {t}"));
        let columns = self.columns_removed.iter().map(|c| format!("column {c}"));
        let rows = self.rows_lost.iter().map(|r| format!("rows of {r}"));
        tables.chain(columns).chain(rows).collect()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == SchemaChange::default()
    }

    /// Add what a later migration of the same run did (a table added then
    /// dropped shows as both).
    pub(crate) fn extend(&mut self, other: SchemaChange) {
        let SchemaChange {
            tables_added,
            tables_removed,
            tables_renamed,
            tables_rebuilt,
            columns_added,
            columns_removed,
            columns_renamed,
            rows_lost,
            indexes_added,
            indexes_removed,
            views_added,
            views_removed,
            triggers_added,
            triggers_removed,
        } = other;
        self.tables_added.extend(tables_added);
        self.tables_removed.extend(tables_removed);
        self.tables_renamed.extend(tables_renamed);
        self.tables_rebuilt.extend(tables_rebuilt);
        self.columns_added.extend(columns_added);
        self.columns_removed.extend(columns_removed);
        self.columns_renamed.extend(columns_renamed);
        self.rows_lost.extend(rows_lost);
        self.indexes_added.extend(indexes_added);
        self.indexes_removed.extend(indexes_removed);
        self.views_added.extend(views_added);
        self.views_removed.extend(views_removed);
        self.triggers_added.extend(triggers_added);
        self.triggers_removed.extend(triggers_removed);
    }
}

/// One line per change: `+ table posts`, `- column users.email`,
/// `~ table a -> b`, `= table t rebuilt`, `! rows of ...`.
impl fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines: Vec<String> = Vec::new();
        let mut add = |sign: &str, kind: &str, names: &[String]| {
            lines.extend(names.iter().map(|n| format!("{sign} {kind} {n}")));
        };
        add("+", "table", &self.tables_added);
        add("-", "table", &self.tables_removed);
        add("=", "table rebuilt:", &self.tables_rebuilt);
        add("+", "column", &self.columns_added);
        add("-", "column", &self.columns_removed);
        add("!", "rows lost:", &self.rows_lost);
        add("+", "index", &self.indexes_added);
        add("-", "index", &self.indexes_removed);
        add("+", "view", &self.views_added);
        add("-", "view", &self.views_removed);
        add("+", "trigger", &self.triggers_added);
        add("-", "trigger", &self.triggers_removed);
        for (kind, renamed) in [
            ("table", &self.tables_renamed),
            ("column", &self.columns_renamed),
        ] {
            lines.extend(
                renamed
                    .iter()
                    .map(|r| format!("~ {kind} {} -> {}", r.from, r.to)),
            );
        }
        if lines.is_empty() {
            return f.write_str("no schema change");
        }
        f.write_str(&lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `script` statement by statement as the migration runner does,
    /// and what it did.
    fn change_of(setup: &str, script: &str) -> SchemaChange {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(setup).unwrap();
        let start = Shape::read(&conn).unwrap();
        let mut tracker = Tracker::new(start.clone());
        let mut before = start;
        for s in crate::migrate::script::split(script) {
            conn.execute_batch("SAVEPOINT s").unwrap();
            conn.execute_batch(s.text).unwrap();
            let after = Shape::read(&conn).unwrap();
            let dropped = tracker.dropped_by(&before, &after);
            let mut rows = BTreeMap::new();
            if !dropped.is_empty() {
                conn.execute_batch("ROLLBACK TO s").unwrap();
                for t in dropped {
                    let n: i64 = conn
                        .query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
                        .unwrap();
                    rows.insert(t, n);
                }
                conn.execute_batch(s.text).unwrap();
            }
            conn.execute_batch("RELEASE s").unwrap();
            tracker.step(&before, &after, &rows);
            before = after;
        }
        let mut now = BTreeMap::new();
        for t in tracker.rebuilt(&before) {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
                .unwrap();
            now.insert(t, n);
        }
        tracker.change(&before, &now)
    }

    const USERS: &str = "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT);
        INSERT INTO users(name, email) VALUES ('a', 'a@x'), ('b', 'b@x');
        CREATE TABLE posts(id INTEGER PRIMARY KEY, body TEXT);";

    #[test]
    fn drops_lose_and_additions_do_not() {
        let c = change_of(USERS, "DROP TABLE posts;");
        assert_eq!(c.lost(), ["table posts"]);
        let c = change_of(USERS, "ALTER TABLE users DROP COLUMN email;");
        assert_eq!(c.lost(), ["column users.email"]);
        let c = change_of(
            USERS,
            "ALTER TABLE users ADD COLUMN age INTEGER; CREATE TABLE tags(t TEXT); CREATE INDEX users_name ON users(name);",
        );
        assert!(c.lost().is_empty(), "{c}");
        assert_eq!(c.columns_added, ["users.age"]);
        assert_eq!(c.tables_added, ["tags"]);
        assert_eq!(c.indexes_added, ["users_name"]);
        // Dropped and added again: the data went with the drop.
        let c = change_of(
            USERS,
            "ALTER TABLE users DROP COLUMN email; ALTER TABLE users ADD COLUMN email TEXT;",
        );
        assert_eq!(c.lost(), ["column users.email"]);
    }

    #[test]
    fn renames_lose_nothing() {
        let c = change_of(
            USERS,
            "ALTER TABLE users RENAME TO people; ALTER TABLE people RENAME COLUMN email TO mail;",
        );
        assert!(c.lost().is_empty(), "{c}");
        assert_eq!(
            c.tables_renamed,
            [Renamed {
                from: "users".into(),
                to: "people".into()
            }]
        );
        assert_eq!(
            c.columns_renamed,
            [Renamed {
                from: "users.email".into(),
                to: "people.mail".into()
            }]
        );
    }

    #[test]
    fn a_rebuild_keeping_columns_and_rows_loses_nothing_one_losing_a_column_does() {
        let keep = "CREATE TABLE users_new(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', email TEXT);
            INSERT INTO users_new SELECT id, name, email FROM users;
            DROP TABLE users;
            ALTER TABLE users_new RENAME TO users;";
        let c = change_of(USERS, keep);
        assert!(c.lost().is_empty(), "{c}");
        assert_eq!(c.tables_rebuilt, ["users"]);
        let lose = "CREATE TABLE users_new(id INTEGER PRIMARY KEY, name TEXT);
            INSERT INTO users_new SELECT id, name FROM users;
            DROP TABLE users;
            ALTER TABLE users_new RENAME TO users;";
        assert_eq!(change_of(USERS, lose).lost(), ["column users.email"]);
        // Renamed away first, then copied and dropped: the same rebuild.
        let aside = "ALTER TABLE users RENAME TO users_old;
            CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT);
            INSERT INTO users SELECT * FROM users_old;
            DROP TABLE users_old;";
        assert!(change_of(USERS, aside).lost().is_empty());
        // Dropped and created empty under the same name: the rows are lost.
        let empty =
            "DROP TABLE users; CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT);";
        let c = change_of(USERS, empty);
        assert_eq!(
            c.lost(),
            ["rows of users: 2 row(s) before, 0 after the rebuild"]
        );
    }
}
