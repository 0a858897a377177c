//! Schema validation: the schema an application expects (declared in a
//! TOML file, or derived from a database), compared with the live one;
//! data checks declared beside it; fixes that create what is missing,
//! never dropping data; dedupe with every removed row kept to be put back.
//!
//! Internal: `pub` for the `resilite` facade (the runtime's `validate` and
//! `fix`, start-up checks, the `validate` and `fix` verbs, HTTP); the
//! types applications use are re-exported from `resilite::`.
//!
//! # Layout
//!
//! - `expected`: [`ExpectedSchema`] and its parts, parsed from TOML with
//!   errors naming the file and the place; [`ExpectedSchema::from_database`].
//! - `live`: the live schema, read through the `pragma_*` table functions.
//! - `finding`: [`Finding`], [`FindingSeverity`], [`Problem`], [`SchemaReport`]
//!   (the severity of each finding is documented there).
//! - `compare`: structural validation.
//! - `data`: the data checks, bounded, read-only, under the statement gate.
//! - `fix`: creating missing tables, columns and indexes ([`FixStep`]).
//! - `dedupe`: removing duplicate rows and putting them back.
//!
//! The journal's side (findings, the fix log, removed rows) is
//! `journal::findings`.

pub mod compare;
pub mod data;
pub mod dedupe;
pub mod expected;
pub mod finding;
pub mod fix;
pub mod live;

pub use data::{DataBounds, DEFAULT_BATCH_ROWS, DEFAULT_CHECK_TIMEOUT};
pub use dedupe::{Keep, Removal, RemovedRow, Restored};
pub use expected::{
    CheckSpec, ColumnSet, ColumnSpec, DefaultValue, ExpectedSchema, ForeignKeySpec, IndexSpec,
    TableSpec,
};
pub use finding::{Finding, FindingSeverity, Problem, SchemaReport};
pub use fix::{BlockingDuplicate, FixAction, FixStep, StepStatus};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What [`validate`] checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateOptions {
    /// Run the data rules too (scans every table that has some).
    #[serde(default)]
    pub data: bool,
}

/// What a fix does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixOptions {
    /// Say what would be done; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Also remove the duplicates of the `unique` sets, keeping this row
    /// of each group.
    #[serde(default)]
    pub dedupe: Option<Keep>,
}

/// What a fix did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The structural steps.
    pub steps: Vec<FixStep>,
    /// The dedupe asked for, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<Keep>,
    /// The rows dedupe removed (dry: would remove), in full.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Removal>,
    /// The dedupe run's id in the journal (`schema_removed_rows.batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

impl FixReport {
    /// Whether a step could not be applied (cannot fix, or blocked).
    pub fn incomplete(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.status, StepStatus::CannotFix | StepStatus::Blocked))
    }

    /// The report for a terminal: each step with its SQL or its reason.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.steps.is_empty() {
            out.push_str("schema: nothing to create\n");
        }
        for s in &self.steps {
            let what = match (&s.sql, &s.reason) {
                (_, Some(reason)) => reason.clone(),
                (Some(sql), None) => format!("{sql};"),
                (None, None) => String::new(),
            };
            out.push_str(&format!(
                "{:<10} {} {} {}: {what}\n",
                s.status.as_str(),
                s.action.as_str(),
                s.table,
                s.target
            ));
        }
        if let Some(keep) = self.dedupe {
            out.push_str(&format!(
                "dedupe ({}): {} row(s) {}\n",
                keep.as_str(),
                self.removed.len(),
                if self.dry_run {
                    "would be removed"
                } else {
                    "removed and recorded in the journal"
                }
            ));
            for r in &self.removed {
                out.push_str(&format!(
                    "{} {} rowid {} ({} = {}; row {} kept): {}\n",
                    if self.dry_run {
                        "would remove"
                    } else {
                        "removed"
                    },
                    r.table,
                    r.rowid,
                    r.columns.join(", "),
                    serde_json::to_string(&r.value).unwrap_or_default(),
                    r.kept,
                    serde_json::to_string(&r.row).unwrap_or_default()
                ));
            }
        }
        out
    }
}

/// Validate the database of `conn` (open it read-only: the data checks
/// run their queries on it under the statement gate) against `schema`.
pub fn validate(
    conn: &Connection,
    schema: &ExpectedSchema,
    options: ValidateOptions,
    bounds: DataBounds,
) -> Result<SchemaReport> {
    let live = live::read(conn)?;
    let mut findings = compare::compare(schema, &live);
    let mut scanned = 0;
    if options.data {
        let (data, rows) = data::check(conn, schema, &live, bounds)?;
        findings.extend(data);
        scanned = rows;
    }
    Ok(SchemaReport::new(
        findings,
        schema.tables.len(),
        options.data,
        scanned,
    ))
}
