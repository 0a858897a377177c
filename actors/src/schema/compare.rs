//! Structural validation: the expected schema against the live one, table
//! by table, as findings (severities in [`finding`](super::finding)).

use std::collections::BTreeMap;

use super::expected::{ExpectedSchema, TableSpec};
use super::finding::{Finding, FindingSeverity, Problem};
use super::live::LiveTable;

/// Compare `expected` with the `live` tables (by lower-case name).
pub fn compare(expected: &ExpectedSchema, live: &BTreeMap<String, LiveTable>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (name, spec) in &expected.tables {
        match live.get(&name.to_lowercase()) {
            None => findings.push(missing_table(name, spec)),
            Some(table) => compare_table(name, spec, table, &mut findings),
        }
    }
    findings
}

fn missing_table(name: &str, spec: &TableSpec) -> Finding {
    let (severity, kind) = if spec.required {
        (FindingSeverity::Error, "required")
    } else {
        (FindingSeverity::Warning, "optional")
    };
    Finding {
        severity,
        table: name.to_string(),
        problem: Problem::MissingTable {
            required: spec.required,
        },
        message: format!("{kind} table {name} does not exist; `resilite fix` creates it"),
    }
}

fn compare_table(name: &str, spec: &TableSpec, table: &LiveTable, out: &mut Vec<Finding>) {
    let mut push = |severity, problem, message: String| {
        out.push(Finding {
            severity,
            table: name.to_string(),
            problem,
            message,
        })
    };
    for col in &spec.columns {
        let Some(live) = table.column(&col.name) else {
            push(
                FindingSeverity::Error,
                Problem::MissingColumn {
                    column: col.name.clone(),
                },
                format!(
                    "column {name}.{} does not exist; `resilite fix` adds it where SQLite allows",
                    col.name
                ),
            );
            continue;
        };
        if normalize_type(&col.ty) != normalize_type(&live.ty) {
            let same = affinity(&col.ty) == affinity(&live.ty);
            push(
                if same {
                    FindingSeverity::Info
                } else {
                    FindingSeverity::Warning
                },
                Problem::ColumnType {
                    column: col.name.clone(),
                    expected: col.ty.clone(),
                    actual: live.ty.clone(),
                },
                format!(
                    "column {name}.{} is declared {:?}, expected {:?}{}",
                    col.name,
                    live.ty,
                    col.ty,
                    if same {
                        " (same type affinity: values are stored alike)"
                    } else {
                        " (another type affinity: values are converted differently); fix cannot change a column's type"
                    }
                ),
            );
        }
        if col.not_null != live.not_null {
            push(
                FindingSeverity::Warning,
                Problem::Nullability {
                    column: col.name.clone(),
                    expected_not_null: col.not_null,
                },
                format!(
                    "column {name}.{} is {}, expected {}; fix cannot change it",
                    col.name,
                    if live.not_null {
                        "NOT NULL"
                    } else {
                        "nullable"
                    },
                    if col.not_null { "NOT NULL" } else { "nullable" }
                ),
            );
        }
        let expected_default = col.default.as_ref().map(|d| d.sql());
        if normalize_default(expected_default.as_deref())
            != normalize_default(live.default.as_deref())
        {
            push(
                FindingSeverity::Warning,
                Problem::Default {
                    column: col.name.clone(),
                    expected: expected_default.clone(),
                    actual: live.default.clone(),
                },
                format!(
                    "column {name}.{} has DEFAULT {}, expected {}; fix cannot change it",
                    col.name,
                    live.default.as_deref().unwrap_or("none"),
                    expected_default.as_deref().unwrap_or("none")
                ),
            );
        }
    }
    for live in &table.columns {
        if !spec.has_column(&live.name) {
            push(
                FindingSeverity::Info,
                Problem::ExtraColumn {
                    column: live.name.clone(),
                },
                format!(
                    "column {name}.{} is not declared in the schema file (kept: fix never drops a column)",
                    live.name
                ),
            );
        }
    }
    let (expected_pk, actual_pk) = (spec.primary_key(), table.primary_key());
    let same_pk = expected_pk.len() == actual_pk.len()
        && expected_pk
            .iter()
            .zip(&actual_pk)
            .all(|(a, b)| a.eq_ignore_ascii_case(b));
    // A missing column is already reported; its key part follows from it.
    let columns_present = expected_pk.iter().all(|c| table.column(c).is_some());
    if !same_pk && columns_present {
        push(
            FindingSeverity::Error,
            Problem::PrimaryKey {
                expected: expected_pk.clone(),
                actual: actual_pk.clone(),
            },
            format!(
                "table {name} has PRIMARY KEY ({}), expected ({}); fix cannot change a primary key (the table must be rebuilt, a migration)",
                actual_pk.join(", "),
                expected_pk.join(", ")
            ),
        );
    }
    for idx in &spec.indexes {
        let by_name = table.index(&idx.name);
        match by_name {
            None => {
                // The same columns under another name (a UNIQUE
                // constraint's index, say) serve the purpose.
                let covered = table
                    .indexes
                    .iter()
                    .any(|i| i.covers(&idx.columns) && (i.unique || !idx.unique));
                if !covered {
                    push(
                        if idx.unique { FindingSeverity::Error } else { FindingSeverity::Warning },
                        Problem::MissingIndex {
                            index: idx.name.clone(),
                            columns: idx.columns.clone(),
                            unique: idx.unique,
                        },
                        format!(
                            "{}index {} on {name}({}) does not exist; `resilite fix` creates it",
                            if idx.unique { "UNIQUE " } else { "" },
                            idx.name,
                            idx.columns.join(", ")
                        ),
                    );
                }
            }
            Some(live) if !live.covers(&idx.columns) => push(
                if idx.unique { FindingSeverity::Error } else { FindingSeverity::Warning },
                Problem::IndexColumns {
                    index: idx.name.clone(),
                    expected: idx.columns.clone(),
                    actual: live
                        .columns
                        .iter()
                        .map(|c| c.clone().unwrap_or_else(|| "?".into()))
                        .collect(),
                },
                format!(
                    "index {} is on other columns than ({}){}; fix cannot change it (drop it, then `resilite fix` creates it as declared)",
                    idx.name,
                    idx.columns.join(", "),
                    if live.partial { " or partial" } else { "" }
                ),
            ),
            Some(live) if idx.unique && !live.unique => push(
                FindingSeverity::Error,
                Problem::IndexNotUnique {
                    index: idx.name.clone(),
                },
                format!(
                    "index {} on {name}({}) is not UNIQUE: uniqueness is not enforced; fix cannot change it (drop it, then `resilite fix` creates it UNIQUE)",
                    idx.name,
                    idx.columns.join(", ")
                ),
            ),
            Some(_) => {}
        }
    }
}

/// A declared type as compared: upper case, spaces collapsed.
fn normalize_type(ty: &str) -> String {
    ty.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
        .replace(" (", "(")
}

/// A DEFAULT as compared: outer parentheses and spaces dropped, keywords
/// in upper case outside quotes.
fn normalize_default(d: Option<&str>) -> Option<String> {
    let mut s = d?.trim();
    while s.starts_with('(') && s.ends_with(')') && s.len() >= 2 {
        s = s[1..s.len() - 1].trim();
    }
    if s.eq_ignore_ascii_case("null") {
        return None;
    }
    if s.starts_with('\'') {
        return Some(s.to_string());
    }
    Some(s.split_whitespace().collect::<String>().to_uppercase())
}

/// SQLite's type affinity of a declared type (section 3.1 of its
/// datatype documentation).
pub fn affinity(ty: &str) -> &'static str {
    let t = ty.to_uppercase();
    if t.contains("INT") {
        "INTEGER"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "TEXT"
    } else if t.contains("BLOB") || t.trim().is_empty() {
        "BLOB"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "REAL"
    } else {
        "NUMERIC"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_defaults_compare_as_sqlite_reads_them() {
        assert_eq!(
            normalize_type("varchar (80)"),
            normalize_type("VARCHAR(80)")
        );
        assert_eq!(affinity("VARCHAR(80)"), "TEXT");
        assert_eq!(affinity("BIGINT"), "INTEGER");
        assert_eq!(normalize_default(Some("(0)")), normalize_default(Some("0")));
        assert_eq!(normalize_default(Some("NULL")), None);
        assert_ne!(
            normalize_default(Some("'a'")),
            normalize_default(Some("'A'"))
        );
        assert_eq!(
            normalize_default(Some("current_timestamp")),
            normalize_default(Some("CURRENT_TIMESTAMP"))
        );
    }
}
