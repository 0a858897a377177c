//! Data checks: the rules declared beside the schema (`unique`,
//! `not_null`, `check`, `foreign_keys`) and `PRAGMA foreign_key_check`,
//! run on a read-only connection under the statement gate's bounds.
//!
//! Row rules scan each table in batches of at most
//! [`DEFAULT_BATCH_ROWS`] rows (rowid ranges found by keyset, one query
//! per rule and batch), so no query holds a read snapshot over the whole
//! table. Duplicates are found with one grouped query per `unique` set.
//! Every query runs as a caller statement through the gate (no
//! transaction control, no pragma off the allow-list, stopped past its
//! time bound) on a connection opened read-only: a `check` expression,
//! though it comes from the operator's file, cannot write.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::Connection;

use super::expected::{quote, ExpectedSchema, TableSpec};
use super::finding::{Finding, FindingSeverity, Problem};
use super::live::LiveTable;
use crate::error::{Error, ErrorClass, Result};
use crate::gate::{Bounds, Gate};
use crate::value::Value;

/// Rows scanned by one query of a row rule.
pub const DEFAULT_BATCH_ROWS: i64 = 10_000;
/// Longest run of one data-check query (a batch, or one duplicate search).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Most rowids a finding lists (its `count` has them all).
pub const MAX_ROWIDS_PER_FINDING: usize = 1_000;
/// Most distinct values a dangling-reference finding lists.
const MAX_VALUES_PER_FINDING: usize = 100;
/// Largest value a data-check query may build.
const MAX_VALUE_BYTES: usize = 1 << 30;

/// The bounds of the data checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataBounds {
    /// Rows per batch of a row rule.
    pub batch_rows: i64,
    /// Longest run of one query.
    pub timeout: Duration,
}

impl Default for DataBounds {
    fn default() -> Self {
        DataBounds {
            batch_rows: DEFAULT_BATCH_ROWS,
            timeout: DEFAULT_CHECK_TIMEOUT,
        }
    }
}

/// A group of rows sharing a value of a unique column set.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateGroup {
    /// The shared value, one per column.
    pub value: Vec<Value>,
    /// Every row holding it, oldest first (`order_by`, then rowid).
    pub rowids: Vec<i64>,
}

/// The rows of `table` sharing a non-NULL value of `columns`, in groups,
/// each oldest first by `order_by` (then rowid). Plain SQL on `conn`: run
/// it under a gate for a caller's bounds.
pub fn duplicates(
    conn: &Connection,
    table: &str,
    columns: &[String],
    order_by: Option<&str>,
) -> Result<Vec<DuplicateGroup>> {
    let t = quote(table);
    let cols: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let list = cols.join(", ");
    let not_null = cols
        .iter()
        .map(|c| format!("{c} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let order = order_by
        .map(|o| format!("{}, ", quote(o)))
        .unwrap_or_default();
    let sql = format!(
        "SELECT dense_rank() OVER (ORDER BY {list}) AS _g, rowid, {list} FROM {t} \
         WHERE ({list}) IN (SELECT {list} FROM {t} WHERE {not_null} GROUP BY {list} HAVING count(*) > 1) \
         ORDER BY _g, {order}rowid"
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| Error::from_sqlite(e, &sql))?;
    let mut rows = stmt.query([])?;
    let mut groups: Vec<DuplicateGroup> = Vec::new();
    let mut current = None;
    while let Some(row) = rows.next()? {
        let g: i64 = row.get(0)?;
        let rowid: i64 = row.get(1)?;
        if current != Some(g) {
            current = Some(g);
            let value = (0..cols.len())
                .map(|i| row.get_ref(i + 2).map(Value::from))
                .collect::<rusqlite::Result<_>>()?;
            groups.push(DuplicateGroup {
                value,
                rowids: Vec::new(),
            });
        }
        if let Some(group) = groups.last_mut() {
            group.rowids.push(rowid);
        }
    }
    Ok(groups)
}

/// Run the data rules of `schema` on `conn` (open it read-only): the
/// findings and the rows scanned. A gate is installed on `conn`.
pub fn check(
    conn: &Connection,
    schema: &ExpectedSchema,
    live: &BTreeMap<String, LiveTable>,
    bounds: DataBounds,
) -> Result<(Vec<Finding>, u64)> {
    let gate = Gate::install(
        conn,
        Bounds {
            timeout: bounds.timeout,
            timeout_key: "the data check's time bound (readers.query_timeout)",
            max_value_bytes: MAX_VALUE_BYTES,
        },
    )?;
    let mut findings = Vec::new();
    let mut scanned = 0;
    for (name, spec) in &schema.tables {
        let Some(table) = live.get(&name.to_lowercase()) else {
            continue;
        };
        let has_rules = !spec.unique.is_empty()
            || !spec.not_null.is_empty()
            || !spec.check.is_empty()
            || !spec.foreign_keys.is_empty();
        if !has_rules {
            continue;
        }
        if table.without_rowid {
            findings.push(Finding {
                severity: FindingSeverity::Warning,
                table: name.clone(),
                problem: Problem::WithoutRowid,
                message: format!(
                    "table {name} is WITHOUT ROWID: its data rules were not checked (they scan by rowid)"
                ),
            });
            continue;
        }
        scanned += check_table(conn, &gate, name, spec, table, live, bounds, &mut findings)?;
    }
    findings.extend(foreign_key_check(conn, &gate)?);
    Ok((findings, scanned))
}

/// The running tally of one row rule over the batches.
struct Tally {
    rowids: Vec<i64>,
    count: u64,
    values: Vec<Value>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            rowids: Vec::new(),
            count: 0,
            values: Vec::new(),
        }
    }

    fn add(&mut self, rowid: i64, value: Option<Value>) {
        self.count += 1;
        if self.rowids.len() < MAX_ROWIDS_PER_FINDING {
            self.rowids.push(rowid);
        }
        if let Some(v) = value {
            if self.values.len() < MAX_VALUES_PER_FINDING && !self.values.contains(&v) {
                self.values.push(v);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_table(
    conn: &Connection,
    gate: &Gate,
    name: &str,
    spec: &TableSpec,
    table: &LiveTable,
    live: &BTreeMap<String, LiveTable>,
    bounds: DataBounds,
    findings: &mut Vec<Finding>,
) -> Result<u64> {
    let t = quote(&table.name);
    let present = |c: &str| table.column(c).is_some();
    // Rules on a column that does not exist are not run: the missing
    // column is a finding of its own.
    let not_null: Vec<&String> = spec.not_null.iter().filter(|c| present(c)).collect();
    let fks: Vec<_> = spec
        .foreign_keys
        .iter()
        .filter(|fk| present(&fk.column))
        .filter_map(|fk| {
            let (parent, column) = fk.parent()?;
            let exists = live
                .get(&parent.to_lowercase())
                .is_some_and(|p| p.column(&column).is_some());
            exists.then_some((fk, parent, column))
        })
        .collect();
    let mut null_tallies: Vec<Tally> = not_null.iter().map(|_| Tally::new()).collect();
    let mut check_tallies: Vec<Tally> = spec.check.iter().map(|_| Tally::new()).collect();
    let mut fk_tallies: Vec<Tally> = fks.iter().map(|_| Tally::new()).collect();

    let run = |sql: &str, lo: i64, hi: i64, tally: &mut Tally, place: &str| -> Result<()> {
        gate.caller(conn, None, || {
            let mut stmt = crate::gate::prepare(conn, sql)?;
            let mut rows = stmt
                .query([lo, hi])
                .map_err(|e| Error::from_sqlite(e, sql))?;
            while let Some(row) = rows.next().map_err(|e| Error::from_sqlite(e, sql))? {
                let value = if row.as_ref().column_count() > 1 {
                    Some(Value::from(row.get_ref(1)?))
                } else {
                    None
                };
                tally.add(row.get(0)?, value);
            }
            Ok(())
        })
        .map_err(|e| rule_failed(e, place))
    };

    let window = format!(
        "SELECT max(rowid), count(*) FROM (SELECT rowid FROM {t} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)"
    );
    let mut last = i64::MIN;
    let mut scanned = 0u64;
    loop {
        let (upper, n): (Option<i64>, i64) = gate
            .caller(conn, None, || {
                Ok(conn
                    .prepare_cached(&window)?
                    .query_row([last, bounds.batch_rows], |r| Ok((r.get(0)?, r.get(1)?)))?)
            })
            .map_err(|e| rule_failed(e, &format!("tables.{name}")))?;
        let Some(upper) = upper else { break };
        scanned += n as u64;
        for (col, tally) in not_null.iter().zip(null_tallies.iter_mut()) {
            let sql = format!(
                "SELECT rowid FROM {t} WHERE rowid > ?1 AND rowid <= ?2 AND {} IS NULL",
                quote(col)
            );
            run(
                &sql,
                last,
                upper,
                tally,
                &format!("tables.{name}.not_null {col}"),
            )?;
        }
        for (check, tally) in spec.check.iter().zip(check_tallies.iter_mut()) {
            let sql = format!(
                "SELECT rowid FROM {t} WHERE rowid > ?1 AND rowid <= ?2 AND NOT ({})",
                check.expr
            );
            run(
                &sql,
                last,
                upper,
                tally,
                &format!("tables.{name}.check {}", check.name),
            )?;
        }
        for ((fk, parent, column), tally) in fks.iter().zip(fk_tallies.iter_mut()) {
            let c = format!("{t}.{}", quote(&fk.column));
            let sql = format!(
                "SELECT rowid, {c} FROM {t} WHERE rowid > ?1 AND rowid <= ?2 AND {c} IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM {} AS _parent WHERE _parent.{} = {c})",
                quote(parent),
                quote(column)
            );
            run(
                &sql,
                last,
                upper,
                tally,
                &format!("tables.{name}.foreign_keys {}", fk.column),
            )?;
        }
        last = upper;
    }

    for (col, tally) in not_null.into_iter().zip(null_tallies) {
        if tally.count > 0 {
            findings.push(Finding {
                severity: FindingSeverity::Error,
                table: name.to_string(),
                message: format!(
                    "{} row(s) of {name} hold NULL in {col}, which must not be NULL",
                    tally.count
                ),
                problem: Problem::NotNull {
                    column: col.clone(),
                    rowids: tally.rowids,
                    count: tally.count,
                },
            });
        }
    }
    for (check, tally) in spec.check.iter().zip(check_tallies) {
        if tally.count > 0 {
            findings.push(Finding {
                severity: FindingSeverity::Error,
                table: name.to_string(),
                message: format!(
                    "{} row(s) of {name} break check {} ({})",
                    tally.count, check.name, check.expr
                ),
                problem: Problem::Check {
                    name: check.name.clone(),
                    expr: check.expr.clone(),
                    rowids: tally.rowids,
                    count: tally.count,
                },
            });
        }
    }
    for ((fk, _, _), tally) in fks.into_iter().zip(fk_tallies) {
        if tally.count > 0 {
            findings.push(Finding {
                severity: FindingSeverity::Error,
                table: name.to_string(),
                message: format!(
                    "{} row(s) of {name} have a {} that {} does not hold",
                    tally.count, fk.column, fk.references
                ),
                problem: Problem::ForeignKey {
                    column: fk.column.clone(),
                    references: fk.references.clone(),
                    rowids: tally.rowids,
                    values: tally.values,
                    count: tally.count,
                },
            });
        }
    }
    for set in &spec.unique {
        let columns = set.columns();
        if !columns.iter().all(|c| present(c)) {
            continue;
        }
        let order = spec.order_by.as_deref().filter(|o| present(o));
        let groups = gate
            .caller(conn, None, || {
                duplicates(conn, &table.name, &columns, order)
            })
            .map_err(|e| rule_failed(e, &format!("tables.{name}.unique {}", columns.join(","))))?;
        for g in groups {
            findings.push(duplicate_finding(name, &columns, g));
        }
    }
    Ok(scanned)
}

/// The finding of one duplicate group.
pub fn duplicate_finding(table: &str, columns: &[String], g: DuplicateGroup) -> Finding {
    let count = g.rowids.len() as u64;
    let (oldest, newest) = (
        g.rowids.first().copied().unwrap_or_default(),
        g.rowids.last().copied().unwrap_or_default(),
    );
    let shown = serde_json::to_string(&g.value).unwrap_or_default();
    let mut rowids = g.rowids;
    rowids.truncate(MAX_ROWIDS_PER_FINDING);
    Finding {
        severity: FindingSeverity::Error,
        table: table.to_string(),
        message: format!(
            "{count} rows of {table} share ({}) = {shown} (rowids {}); `resilite fix --dedupe keep-oldest|keep-newest` keeps one",
            columns.join(", "),
            rowids
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        problem: Problem::Duplicate {
            columns: columns.to_vec(),
            value: g.value,
            rowids,
            count,
            oldest,
            newest,
        },
    }
}

/// `PRAGMA foreign_key_check` over the whole database, a finding per
/// table and foreign key.
fn foreign_key_check(conn: &Connection, gate: &Gate) -> Result<Vec<Finding>> {
    let sql = "SELECT \"table\", rowid, parent, fkid FROM pragma_foreign_key_check ORDER BY \"table\", fkid, rowid";
    let rows: Vec<(String, Option<i64>, String, i64)> = gate
        .caller(conn, None, || {
            let mut stmt = crate::gate::prepare(conn, sql)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .map_err(|e| rule_failed(e, "PRAGMA foreign_key_check"))?;
    let mut grouped: BTreeMap<(String, String, i64), Tally> = BTreeMap::new();
    for (table, rowid, parent, fkid) in rows {
        grouped
            .entry((table, parent, fkid))
            .or_insert_with(Tally::new)
            .add(rowid.unwrap_or_default(), None);
    }
    Ok(grouped
        .into_iter()
        .map(|((table, parent, fkid), tally)| Finding {
            severity: FindingSeverity::Error,
            message: format!(
                "{} row(s) of {table} refer to rows of {parent} that do not exist (PRAGMA foreign_key_check, foreign key {fkid})",
                tally.count
            ),
            table,
            problem: Problem::ForeignKeyCheck {
                parent,
                fkid,
                rowids: tally.rowids,
                count: tally.count,
            },
        })
        .collect())
}

/// A rule's query failed: say which rule, keep the class.
fn rule_failed(e: Error, place: &str) -> Error {
    let class = if e.class == ErrorClass::Sql {
        ErrorClass::BadInput
    } else {
        e.class
    };
    Error::new(
        class,
        format!(
            "the data rule {place} could not be checked: {}; fix it in the schema file",
            e.message
        ),
        e.detail,
    )
}
