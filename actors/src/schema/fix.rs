//! Structural fixes: create what the expected schema declares and the
//! database lacks (tables, columns, indexes). Never drops or rewrites
//! anything: an undeclared column stays, a column with another type or
//! key stays as it is and is reported.
//!
//! A column is added with `ALTER TABLE ADD COLUMN` where SQLite allows
//! it: not part of the primary key, NOT NULL only with a non-NULL
//! default, and a constant default (not `CURRENT_TIMESTAMP` or an
//! expression in parentheses). A UNIQUE index that existing duplicates
//! would make fail is not tried: its step lists the duplicates.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::data::duplicates;
use super::expected::{quote, ColumnSpec, ExpectedSchema, IndexSpec, TableSpec};
use super::live::{self, LiveTable};
use crate::error::{Error, Result};
use crate::value::Value;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixAction {
    /// CREATE TABLE.
    CreateTable,
    /// ALTER TABLE ADD COLUMN.
    AddColumn,
    /// CREATE [UNIQUE] INDEX.
    CreateIndex,
}

impl FixAction {
    /// The name as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            FixAction::CreateTable => "create_table",
            FixAction::AddColumn => "add_column",
            FixAction::CreateIndex => "create_index",
        }
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Would be applied (a dry run).
    Planned,
    /// Applied and committed.
    Applied,
    /// SQLite cannot do it in place; `reason` says why and what to do.
    CannotFix,
    /// Existing rows keep it from applying (duplicates for a UNIQUE index).
    Blocked,
}

impl StepStatus {
    /// The name as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Planned => "planned",
            StepStatus::Applied => "applied",
            StepStatus::CannotFix => "cannot_fix",
            StepStatus::Blocked => "blocked",
        }
    }
}

/// A duplicate that blocks a UNIQUE index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockingDuplicate {
    /// The shared value, one per column.
    pub value: Vec<Value>,
    /// The rows holding it.
    pub rowids: Vec<i64>,
}

/// One change a fix makes, or would make, or cannot make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixStep {
    /// The table.
    pub table: String,
    /// What it does.
    pub action: FixAction,
    /// The column or index (the table for CREATE TABLE).
    pub target: String,
    /// The SQL it runs (none when it cannot run).
    pub sql: Option<String>,
    /// Where it stands.
    pub status: StepStatus,
    /// Why it cannot run, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The duplicates keeping a UNIQUE index from being created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<BlockingDuplicate>,
}

/// The steps for `schema` on the database of `conn`: every missing table
/// (with its indexes), column and index; statuses `planned`,
/// `cannot_fix` or `blocked`. Reads only.
pub fn plan(conn: &Connection, schema: &ExpectedSchema) -> Result<Vec<FixStep>> {
    let live = live::read(conn)?;
    let mut steps = Vec::new();
    for (name, spec) in &schema.tables {
        match live.get(&name.to_lowercase()) {
            None => {
                steps.push(FixStep {
                    table: name.clone(),
                    action: FixAction::CreateTable,
                    target: name.clone(),
                    sql: Some(create_table_sql(name, spec)),
                    status: StepStatus::Planned,
                    reason: None,
                    duplicates: Vec::new(),
                });
                for idx in &spec.indexes {
                    steps.push(index_step(name, idx, Vec::new()));
                }
            }
            Some(table) => plan_table(conn, name, spec, table, &mut steps)?,
        }
    }
    Ok(steps)
}

fn plan_table(
    conn: &Connection,
    name: &str,
    spec: &TableSpec,
    table: &LiveTable,
    steps: &mut Vec<FixStep>,
) -> Result<()> {
    let mut added = Vec::new();
    for col in &spec.columns {
        if table.column(&col.name).is_some() {
            continue;
        }
        let sql = format!(
            "ALTER TABLE {} ADD COLUMN {}",
            quote(name),
            column_def(col, false)
        );
        let (status, reason) = match cannot_add(col) {
            Some(why) => (StepStatus::CannotFix, Some(why)),
            None => {
                added.push(col.name.to_lowercase());
                (StepStatus::Planned, None)
            }
        };
        steps.push(FixStep {
            table: name.to_string(),
            action: FixAction::AddColumn,
            target: col.name.clone(),
            sql: (status == StepStatus::Planned).then_some(sql),
            status,
            reason,
            duplicates: Vec::new(),
        });
    }
    for idx in &spec.indexes {
        if table.index(&idx.name).is_some()
            || table
                .indexes
                .iter()
                .any(|i| i.covers(&idx.columns) && (i.unique || !idx.unique))
        {
            continue;
        }
        let missing: Vec<&String> = idx
            .columns
            .iter()
            .filter(|c| table.column(c).is_none() && !added.contains(&c.to_lowercase()))
            .collect();
        if !missing.is_empty() {
            let mut step = index_step(name, idx, Vec::new());
            step.sql = None;
            step.status = StepStatus::CannotFix;
            step.reason = Some(format!(
                "its column(s) {} cannot be added automatically (see above)",
                missing
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            steps.push(step);
            continue;
        }
        // Columns being added hold only their default: duplicates can only
        // be among existing columns.
        let blocking = if idx.unique && idx.columns.iter().all(|c| table.column(c).is_some()) {
            duplicates(conn, &table.name, &idx.columns, None)?
                .into_iter()
                .map(|g| BlockingDuplicate {
                    value: g.value,
                    rowids: g.rowids,
                })
                .collect()
        } else {
            Vec::new()
        };
        steps.push(index_step(name, idx, blocking));
    }
    Ok(())
}

fn index_step(table: &str, idx: &IndexSpec, duplicates: Vec<BlockingDuplicate>) -> FixStep {
    let sql = format!(
        "CREATE {}INDEX {} ON {} ({})",
        if idx.unique { "UNIQUE " } else { "" },
        quote(&idx.name),
        quote(table),
        idx.columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if duplicates.is_empty() {
        return FixStep {
            table: table.to_string(),
            action: FixAction::CreateIndex,
            target: idx.name.clone(),
            sql: Some(sql),
            status: StepStatus::Planned,
            reason: None,
            duplicates,
        };
    }
    let shown = duplicates
        .iter()
        .take(10)
        .map(|d| {
            format!(
                "{} in rows {}",
                serde_json::to_string(&d.value).unwrap_or_default(),
                d.rowids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    FixStep {
        table: table.to_string(),
        action: FixAction::CreateIndex,
        target: idx.name.clone(),
        sql: None,
        status: StepStatus::Blocked,
        reason: Some(format!(
            "{} value(s) of ({}) are held by more than one row: {shown}{}; remove the extra rows (`resilite fix --dedupe keep-oldest|keep-newest` with `unique` declared for these columns) and run fix again",
            duplicates.len(),
            idx.columns.join(", "),
            if duplicates.len() > 10 { "; ..." } else { "" }
        )),
        duplicates,
    }
}

/// Why SQLite cannot add `col` with ALTER TABLE ADD COLUMN, if it cannot.
fn cannot_add(col: &ColumnSpec) -> Option<String> {
    if col.primary_key {
        return Some(
            "it is part of the PRIMARY KEY, which ALTER TABLE ADD COLUMN cannot add: the table must be rebuilt (a migration)"
                .into(),
        );
    }
    let default = col.default.as_ref().map(|d| d.sql());
    let null_default = default
        .as_deref()
        .is_none_or(|d| d.eq_ignore_ascii_case("null"));
    if col.not_null && null_default {
        return Some(
            "it is NOT NULL without a default, which ALTER TABLE ADD COLUMN cannot add to existing rows: declare a default, or add it with a migration"
                .into(),
        );
    }
    if let Some(d) = default.as_deref() {
        let upper = d.trim().to_uppercase();
        if upper.starts_with('(') || upper.starts_with("CURRENT_") {
            return Some(format!(
                "its default {d} is not a constant, which ALTER TABLE ADD COLUMN refuses: use a constant default, or add it with a migration"
            ));
        }
    }
    None
}

fn column_def(col: &ColumnSpec, with_pk: bool) -> String {
    let mut def = quote(&col.name);
    if !col.ty.trim().is_empty() {
        def.push(' ');
        def.push_str(col.ty.trim());
    }
    if with_pk {
        def.push_str(" PRIMARY KEY");
    }
    if col.not_null {
        def.push_str(" NOT NULL");
    }
    if let Some(d) = &col.default {
        let sql = d.sql();
        let upper = sql.to_uppercase();
        // A default that is not a literal or keyword needs parentheses.
        let bare = sql.starts_with('\'')
            || sql.starts_with('(')
            || sql.parse::<f64>().is_ok()
            || matches!(
                upper.as_str(),
                "NULL" | "TRUE" | "FALSE" | "CURRENT_TIME" | "CURRENT_DATE" | "CURRENT_TIMESTAMP"
            );
        def.push_str(" DEFAULT ");
        if bare {
            def.push_str(&sql);
        } else {
            def.push_str(&format!("({sql})"));
        }
    }
    def
}

/// The CREATE TABLE statement of `spec`.
pub fn create_table_sql(name: &str, spec: &TableSpec) -> String {
    let pk = spec.primary_key();
    let single = pk.len() == 1;
    let mut defs: Vec<String> = spec
        .columns
        .iter()
        .map(|c| column_def(c, single && c.primary_key))
        .collect();
    if pk.len() > 1 {
        defs.push(format!(
            "PRIMARY KEY ({})",
            pk.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        ));
    }
    format!("CREATE TABLE {} ({})", quote(name), defs.join(", "))
}

/// Apply the `planned` steps of `steps` on `conn` in one transaction,
/// marking them `applied`; on a failure nothing is applied and the error
/// names the step.
pub fn apply(conn: &Connection, steps: &mut [FixStep]) -> Result<()> {
    if !steps.iter().any(|s| s.status == StepStatus::Planned) {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    for step in steps.iter().filter(|s| s.status == StepStatus::Planned) {
        let sql = step.sql.as_deref().unwrap_or_default();
        tx.execute_batch(sql).map_err(|e| {
            let e = Error::from_sqlite(e, sql);
            Error::new(
                e.class,
                format!(
                    "fix failed at {} {} on {}: {}; nothing was changed",
                    step.action.as_str(),
                    step.target,
                    step.table,
                    e.message
                ),
                e.detail,
            )
        })?;
    }
    tx.commit()?;
    for step in steps.iter_mut().filter(|s| s.status == StepStatus::Planned) {
        step.status = StepStatus::Applied;
    }
    Ok(())
}

/// Plan and apply on `conn` (the writer's connection, or one of the
/// CLI's own), in one transaction.
pub fn run(conn: &Connection, schema: &ExpectedSchema) -> Result<Vec<FixStep>> {
    let mut steps = plan(conn, schema)?;
    apply(conn, &mut steps)?;
    Ok(steps)
}

/// Steps by table, for a summary.
pub fn count_by_status(steps: &[FixStep]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for s in steps {
        *counts.entry(s.status.as_str()).or_default() += 1;
    }
    counts
}
