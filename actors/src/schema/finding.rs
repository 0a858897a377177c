//! Findings: what validation found, each with its severity, and the
//! report that gathers them (as text, as JSON, as an exit code).
//!
//! Severities, and why:
//!
//! | finding | severity |
//! | --- | --- |
//! | a required table is missing | error |
//! | an optional table is missing | warning |
//! | a column is missing | error (statements naming it fail) |
//! | a column exists that the file does not declare | info |
//! | a column's type has another affinity | warning (values convert differently) |
//! | a column's type differs, same affinity | info |
//! | NOT NULL differs | warning |
//! | DEFAULT differs | warning |
//! | the primary key differs | error (rows are identified differently) |
//! | an index is missing | warning; a UNIQUE one: error (uniqueness is not enforced) |
//! | an index is not UNIQUE where it should be, or covers other columns | error (unique), else warning |
//! | duplicates of a `unique` set, NULLs in a `not_null` column, a `check` made false, a dangling `foreign_keys` value, a `PRAGMA foreign_key_check` violation | error |
//! | a WITHOUT ROWID table with data rules (they scan by rowid) | warning |
//!
//! Exit codes of `resilite validate`: 0 no warning or error (info
//! findings allowed), 1 warnings only, 2 at least one error.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingSeverity {
    /// Worth knowing; nothing to do.
    Info,
    /// Something may go wrong; have a look.
    Warning,
    /// The database is not what the application expects.
    Error,
}

impl FindingSeverity {
    /// The name as serialized: `info`, `warning`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingSeverity::Info => "info",
            FindingSeverity::Warning => "warning",
            FindingSeverity::Error => "error",
        }
    }
}

/// What is wrong, with its particulars. Serialized with a `rule` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Problem {
    /// The table does not exist.
    MissingTable {
        /// Declared `required`.
        required: bool,
    },
    /// A declared column does not exist.
    MissingColumn {
        /// The column.
        column: String,
    },
    /// A column exists that the file does not declare.
    ExtraColumn {
        /// The column.
        column: String,
    },
    /// The declared type differs.
    ColumnType {
        /// The column.
        column: String,
        /// As declared in the file.
        expected: String,
        /// As the database has it.
        actual: String,
    },
    /// NOT NULL differs.
    Nullability {
        /// The column.
        column: String,
        /// The file declares NOT NULL.
        expected_not_null: bool,
    },
    /// The DEFAULT differs.
    Default {
        /// The column.
        column: String,
        /// As declared in the file.
        expected: Option<String>,
        /// As the database has it.
        actual: Option<String>,
    },
    /// The primary key differs.
    PrimaryKey {
        /// As declared in the file.
        expected: Vec<String>,
        /// As the database has it.
        actual: Vec<String>,
    },
    /// A declared index does not exist.
    MissingIndex {
        /// The index.
        index: String,
        /// Its columns.
        columns: Vec<String>,
        /// Declared UNIQUE.
        unique: bool,
    },
    /// The index exists but is not UNIQUE.
    IndexNotUnique {
        /// The index.
        index: String,
    },
    /// The index exists on other columns (or is partial).
    IndexColumns {
        /// The index.
        index: String,
        /// As declared in the file.
        expected: Vec<String>,
        /// As the database has it (`?` for an expression).
        actual: Vec<String>,
    },
    /// Rows share a value of a `unique` column set.
    Duplicate {
        /// The column set.
        columns: Vec<String>,
        /// The shared value, one per column.
        value: Vec<Value>,
        /// The rows holding it, oldest first.
        rowids: Vec<i64>,
        /// How many rows hold it.
        count: u64,
        /// The oldest row (kept by `keep-oldest`).
        oldest: i64,
        /// The newest row (kept by `keep-newest`).
        newest: i64,
    },
    /// Rows hold NULL in a `not_null` column.
    NotNull {
        /// The column.
        column: String,
        /// The rows (the first ones, when `count` is larger).
        rowids: Vec<i64>,
        /// How many rows.
        count: u64,
    },
    /// Rows make a `check` expression false.
    Check {
        /// The check's name.
        name: String,
        /// Its expression.
        expr: String,
        /// The rows (the first ones, when `count` is larger).
        rowids: Vec<i64>,
        /// How many rows.
        count: u64,
    },
    /// Rows refer to a parent row that does not exist (a declared
    /// `foreign_keys` rule).
    ForeignKey {
        /// The referring column.
        column: String,
        /// `table(column)`.
        references: String,
        /// The rows (the first ones, when `count` is larger).
        rowids: Vec<i64>,
        /// The missing values (distinct, the first ones).
        values: Vec<Value>,
        /// How many rows.
        count: u64,
    },
    /// `PRAGMA foreign_key_check` reports rows of this table.
    ForeignKeyCheck {
        /// The parent table.
        parent: String,
        /// The foreign key's id in `pragma_foreign_key_list`.
        fkid: i64,
        /// The rows (the first ones, when `count` is larger).
        rowids: Vec<i64>,
        /// How many rows.
        count: u64,
    },
    /// A WITHOUT ROWID table: its data rules were not checked.
    WithoutRowid,
}

impl Problem {
    /// The rule's name, as serialized.
    pub fn rule(&self) -> &'static str {
        match self {
            Problem::MissingTable { .. } => "missing_table",
            Problem::MissingColumn { .. } => "missing_column",
            Problem::ExtraColumn { .. } => "extra_column",
            Problem::ColumnType { .. } => "column_type",
            Problem::Nullability { .. } => "nullability",
            Problem::Default { .. } => "default",
            Problem::PrimaryKey { .. } => "primary_key",
            Problem::MissingIndex { .. } => "missing_index",
            Problem::IndexNotUnique { .. } => "index_not_unique",
            Problem::IndexColumns { .. } => "index_columns",
            Problem::Duplicate { .. } => "duplicate",
            Problem::NotNull { .. } => "not_null",
            Problem::Check { .. } => "check",
            Problem::ForeignKey { .. } => "foreign_key",
            Problem::ForeignKeyCheck { .. } => "foreign_key_check",
            Problem::WithoutRowid => "without_rowid",
        }
    }

    /// Found by scanning rows (`--data`), not by reading the schema.
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Problem::Duplicate { .. }
                | Problem::NotNull { .. }
                | Problem::Check { .. }
                | Problem::ForeignKey { .. }
                | Problem::ForeignKeyCheck { .. }
                | Problem::WithoutRowid
        )
    }

    /// The column, index or rule the finding is about, if one.
    pub fn field(&self) -> Option<String> {
        match self {
            Problem::MissingColumn { column }
            | Problem::ExtraColumn { column }
            | Problem::ColumnType { column, .. }
            | Problem::Nullability { column, .. }
            | Problem::Default { column, .. }
            | Problem::NotNull { column, .. }
            | Problem::ForeignKey { column, .. } => Some(column.clone()),
            Problem::MissingIndex { index, .. }
            | Problem::IndexNotUnique { index }
            | Problem::IndexColumns { index, .. } => Some(index.clone()),
            Problem::Duplicate { columns, .. }
            | Problem::PrimaryKey {
                expected: columns, ..
            } => Some(columns.join(",")),
            Problem::Check { name, .. } => Some(name.clone()),
            Problem::ForeignKeyCheck { parent, fkid, .. } => Some(format!("{parent}#{fkid}")),
            Problem::MissingTable { .. } | Problem::WithoutRowid => None,
        }
    }

    /// The rows it is about (data findings).
    pub fn rowids(&self) -> &[i64] {
        match self {
            Problem::Duplicate { rowids, .. }
            | Problem::NotNull { rowids, .. }
            | Problem::Check { rowids, .. }
            | Problem::ForeignKey { rowids, .. }
            | Problem::ForeignKeyCheck { rowids, .. } => rowids,
            _ => &[],
        }
    }

    /// How many rows (data findings), else 0.
    pub fn count(&self) -> u64 {
        match self {
            Problem::Duplicate { count, .. }
            | Problem::NotNull { count, .. }
            | Problem::Check { count, .. }
            | Problem::ForeignKey { count, .. }
            | Problem::ForeignKeyCheck { count, .. } => *count,
            _ => 0,
        }
    }

    /// The value it is about: a duplicate's shared value, a dangling
    /// reference's missing values.
    pub fn value(&self) -> Option<&[Value]> {
        match self {
            Problem::Duplicate { value, .. } => Some(value),
            Problem::ForeignKey { values, .. } => Some(values),
            _ => None,
        }
    }
}

/// One thing validation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: FindingSeverity,
    /// The table it is about.
    pub table: String,
    /// What is wrong.
    #[serde(flatten)]
    pub problem: Problem,
    /// What is wrong, in a sentence, with what to do.
    pub message: String,
}

impl Finding {
    /// What identifies this finding from one run to the next: the table,
    /// the rule and its subject (a duplicate's value included), so that a
    /// finding seen again updates the open one instead of adding another.
    pub fn key(&self) -> String {
        let value = self
            .problem
            .value()
            .filter(|_| matches!(self.problem, Problem::Duplicate { .. }))
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .unwrap_or_default();
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{value}",
            self.table.to_lowercase(),
            self.problem.rule(),
            self.problem.field().unwrap_or_default().to_lowercase()
        )
    }
}

/// What a validation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaReport {
    /// Every finding, errors first.
    pub findings: Vec<Finding>,
    /// Tables declared.
    pub tables: usize,
    /// The data rules were checked too.
    pub data: bool,
    /// Rows scanned by the data checks.
    pub rows_scanned: u64,
    /// The worst severity found; `None` when nothing was found.
    pub worst: Option<FindingSeverity>,
}

impl SchemaReport {
    /// A report of `findings`, sorted errors first.
    pub fn new(mut findings: Vec<Finding>, tables: usize, data: bool, rows_scanned: u64) -> Self {
        findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.table.cmp(&b.table))
        });
        let worst = findings.iter().map(|f| f.severity).max();
        SchemaReport {
            findings,
            tables,
            data,
            rows_scanned,
            worst,
        }
    }

    /// The findings of `severity`.
    pub fn of(&self, severity: FindingSeverity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// Whether an error was found.
    pub fn has_errors(&self) -> bool {
        self.worst == Some(FindingSeverity::Error)
    }

    /// 0 no warning or error, 1 warnings only, 2 errors.
    pub fn exit_code(&self) -> u8 {
        match self.worst {
            Some(FindingSeverity::Error) => 2,
            Some(FindingSeverity::Warning) => 1,
            _ => 0,
        }
    }

    /// The errors, one per line (for an error message).
    pub fn errors_text(&self) -> String {
        self.of(FindingSeverity::Error)
            .map(|f| format!("{}: {}", f.table, f.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The report for a terminal.
    pub fn to_text(&self) -> String {
        let count = |s| self.of(s).count();
        let mut out = format!(
            "schema: {} table(s) declared{}: {} error(s), {} warning(s), {} info\n",
            self.tables,
            if self.data {
                format!(", {} row(s) scanned", self.rows_scanned)
            } else {
                String::new()
            },
            count(FindingSeverity::Error),
            count(FindingSeverity::Warning),
            count(FindingSeverity::Info)
        );
        for f in &self.findings {
            out.push_str(&format!(
                "{:<7} {} [{}] {}\n",
                f.severity.as_str().to_uppercase(),
                f.table,
                f.problem.rule(),
                f.message
            ));
        }
        out
    }
}
