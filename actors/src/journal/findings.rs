//! Schema findings, the fix log and removed rows: tables
//! `schema_findings` (what validation found, open until a run no longer
//! finds it, with an acknowledged flag), `schema_fixes` (each change a fix
//! made) and `schema_removed_rows` (each row dedupe removed, in full, to
//! be put back).
//!
//! A finding is identified from run to run by its key (table, rule,
//! subject; a duplicate's value too): a run updates the open finding of
//! the same key instead of adding one, and resolves the open findings of
//! its scope (structure, or data) that it no longer finds.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::schema::{Finding, FixStep, Removal, RemovedRow, StepStatus};
use crate::value::{Statement, Value};

/// What a validation run covered: its findings resolve only open ones of
/// the same scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The tables, columns and indexes.
    Structure,
    /// The data rules.
    Data,
}

impl Scope {
    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Structure => "structure",
            Scope::Data => "data",
        }
    }
}

/// A finding as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFinding {
    /// Its id.
    pub id: i64,
    /// First found (ms since the Unix epoch).
    pub first_seen_at_ms: i64,
    /// Last found.
    pub last_seen_at_ms: i64,
    /// An operator has seen it.
    pub acknowledged: bool,
    /// When a run no longer found it; `None` while open.
    pub resolved_at_ms: Option<i64>,
    /// The finding as last found.
    pub finding: Finding,
}

/// An id for one run (of validation or dedupe), unique in this process
/// and across processes in practice.
pub fn run_id(at_ms: i64) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{at_ms}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The statements that record a run's `findings` of `scopes` at `at_ms`:
/// each upserted over the open finding of the same key, then the open
/// findings of those scopes that this run did not find resolved.
pub fn record_statements(findings: &[Finding], scopes: &[Scope], at_ms: i64) -> Vec<Statement> {
    let run = run_id(at_ms);
    let mut out = Vec::with_capacity(findings.len() + scopes.len());
    for f in findings {
        let scope = if f.problem.is_data() {
            Scope::Data
        } else {
            Scope::Structure
        };
        if !scopes.contains(&scope) {
            continue;
        }
        out.push(Statement::new(
            "INSERT INTO schema_findings (finding_key, scope, severity, tbl, rule, field, value, rowids, row_count, detail, first_seen_at_ms, last_seen_at_ms, run) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12) \
             ON CONFLICT (finding_key) WHERE resolved_at_ms IS NULL DO UPDATE SET \
             severity = excluded.severity, field = excluded.field, value = excluded.value, rowids = excluded.rowids, \
             row_count = excluded.row_count, detail = excluded.detail, last_seen_at_ms = excluded.last_seen_at_ms, run = excluded.run",
            [
                Value::from(f.key()),
                Value::from(scope.as_str()),
                Value::from(f.severity.as_str()),
                Value::from(f.table.as_str()),
                Value::from(f.problem.rule()),
                Value::from(f.problem.field()),
                Value::from(
                    f.problem
                        .value()
                        .map(|v| serde_json::to_string(v).unwrap_or_default()),
                ),
                json(&f.problem.rowids()),
                Value::from(f.problem.count()),
                json(f),
                Value::Integer(at_ms),
                Value::from(run.as_str()),
            ],
        ));
    }
    for scope in scopes {
        out.push(Statement::new(
            "UPDATE schema_findings SET resolved_at_ms = ?1 WHERE resolved_at_ms IS NULL AND scope = ?2 AND run <> ?3",
            [
                Value::Integer(at_ms),
                Value::from(scope.as_str()),
                Value::from(run.as_str()),
            ],
        ));
    }
    out
}

/// The statement that marks finding `id` acknowledged.
pub fn acknowledge_statement(id: i64) -> Statement {
    Statement::new(
        "UPDATE schema_findings SET acknowledged = 1 WHERE id = ?1",
        [Value::Integer(id)],
    )
}

/// The findings, open ones only unless `all`, oldest first.
pub fn findings(conn: &Connection, all: bool) -> Result<Vec<StoredFinding>> {
    let mut stmt = conn.prepare(
        "SELECT id, first_seen_at_ms, last_seen_at_ms, acknowledged, resolved_at_ms, detail FROM schema_findings \
         WHERE ?1 OR resolved_at_ms IS NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([all], |r| {
        let detail: String = r.get(5)?;
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            detail,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, first, last, acknowledged, resolved, detail) = row?;
        let Ok(finding) = serde_json::from_str::<Finding>(&detail) else {
            continue;
        };
        out.push(StoredFinding {
            id,
            first_seen_at_ms: first,
            last_seen_at_ms: last,
            acknowledged,
            resolved_at_ms: resolved,
            finding,
        });
    }
    Ok(out)
}

/// The statements that log the applied steps of a fix.
pub fn fix_statements(steps: &[FixStep], at_ms: i64) -> Vec<Statement> {
    steps
        .iter()
        .filter(|s| s.status == StepStatus::Applied)
        .map(|s| {
            fix_log(
                at_ms,
                &s.table,
                s.action.as_str(),
                &s.target,
                s.sql.as_deref(),
                "applied",
            )
        })
        .collect()
}

fn fix_log(
    at_ms: i64,
    table: &str,
    action: &str,
    target: &str,
    detail: Option<&str>,
    outcome: &str,
) -> Statement {
    Statement::new(
        "INSERT INTO schema_fixes (at_ms, tbl, action, target, detail, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [
            Value::Integer(at_ms),
            Value::from(table),
            Value::from(action),
            Value::from(target),
            Value::from(detail),
            Value::from(outcome),
        ],
    )
}

/// The fix log: (at_ms, table, action, target, detail, outcome), oldest first.
pub type FixLogRow = (i64, String, String, String, Option<String>, String);

/// The fix log, oldest first.
pub fn fix_log_rows(conn: &Connection) -> Result<Vec<FixLogRow>> {
    let mut stmt = conn.prepare(
        "SELECT at_ms, tbl, action, target, detail, outcome FROM schema_fixes ORDER BY id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The statements that record `removals` of dedupe run `batch`, before
/// the rows are deleted.
pub fn removed_statements(batch: &str, removals: &[Removal], at_ms: i64) -> Vec<Statement> {
    removals
        .iter()
        .map(|r| {
            Statement::new(
                "INSERT INTO schema_removed_rows (batch, removed_at_ms, tbl, row_id, unique_columns, value, kept, row_json) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                [
                    Value::from(batch),
                    Value::Integer(at_ms),
                    Value::from(r.table.as_str()),
                    Value::Integer(r.rowid),
                    json(&r.columns),
                    json(&r.value),
                    Value::Integer(r.kept),
                    json(&r.row),
                ],
            )
        })
        .collect()
}

/// The statements that close dedupe run `batch` once its delete ran:
/// the recorded rows it did not delete (changed since) are forgotten, and
/// the run is logged in the fix log.
pub fn dedupe_done_statements(
    batch: &str,
    planned: &[Removal],
    deleted: &[Removal],
    at_ms: i64,
) -> Vec<Statement> {
    let mut out: Vec<Statement> = planned
        .iter()
        .filter(|p| {
            !deleted
                .iter()
                .any(|d| d.table == p.table && d.rowid == p.rowid)
        })
        .map(|p| {
            Statement::new(
                "DELETE FROM schema_removed_rows WHERE batch = ?1 AND tbl = ?2 AND row_id = ?3",
                [
                    Value::from(batch),
                    Value::from(p.table.as_str()),
                    Value::Integer(p.rowid),
                ],
            )
        })
        .collect();
    let mut tables: Vec<&str> = deleted.iter().map(|d| d.table.as_str()).collect();
    tables.dedup();
    for table in tables {
        let n = deleted.iter().filter(|d| d.table == table).count();
        out.push(fix_log(
            at_ms,
            table,
            "dedupe",
            batch,
            Some(&format!(
                "{n} row(s) removed, recorded in schema_removed_rows"
            )),
            "applied",
        ));
    }
    out
}

/// The statements that forget dedupe run `batch` entirely (its delete
/// failed: nothing was removed).
pub fn dedupe_failed_statements(batch: &str) -> Vec<Statement> {
    vec![Statement::new(
        "DELETE FROM schema_removed_rows WHERE batch = ?1",
        [Value::from(batch)],
    )]
}

/// The removed rows not put back yet, oldest first.
pub fn removed_rows(conn: &Connection) -> Result<Vec<RemovedRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, batch, removed_at_ms, tbl, row_id, row_json FROM schema_removed_rows \
         WHERE restored_at_ms IS NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, batch, removed_at_ms, table, rowid, json) = row?;
        out.push(RemovedRow {
            id,
            batch,
            removed_at_ms,
            table,
            rowid,
            row: serde_json::from_str(&json).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The statements that mark removed rows `ids` as put back (or skipped:
/// their rowid existed again) at `at_ms`, and log it.
pub fn restored_statements(restored: &[i64], skipped: &[i64], at_ms: i64) -> Vec<Statement> {
    let mut out: Vec<Statement> = restored
        .iter()
        .chain(skipped)
        .map(|id| {
            Statement::new(
                "UPDATE schema_removed_rows SET restored_at_ms = ?2, restore_outcome = ?3 WHERE id = ?1",
                [
                    Value::Integer(*id),
                    Value::Integer(at_ms),
                    Value::from(if restored.contains(id) { "restored" } else { "skipped: rowid exists" }),
                ],
            )
        })
        .collect();
    if !restored.is_empty() || !skipped.is_empty() {
        out.push(fix_log(
            at_ms,
            "",
            "restore_removed",
            "",
            Some(&format!(
                "{} row(s) put back, {} skipped (their rowid exists again)",
                restored.len(),
                skipped.len()
            )),
            "applied",
        ));
    }
    out
}

/// The statements deleting, of the schema tables, what `[audit]
/// retention` no longer keeps (`cutoff_ms` and before): findings resolved
/// by then (an open finding stays whatever its age), fix-log entries, and
/// removed rows last touched by then (removed, or put back). A removed
/// row never put back goes too: the journal's copy is its only one, kept
/// for the retention and no longer.
pub fn prune_statements(cutoff_ms: i64) -> Vec<Statement> {
    [
        "DELETE FROM schema_findings WHERE resolved_at_ms IS NOT NULL AND resolved_at_ms < ?1",
        "DELETE FROM schema_fixes WHERE at_ms < ?1",
        "DELETE FROM schema_removed_rows WHERE coalesce(restored_at_ms, removed_at_ms) < ?1",
    ]
    .into_iter()
    .map(|sql| Statement::new(sql, [Value::Integer(cutoff_ms)]))
    .collect()
}

/// `v` as JSON text.
fn json<T: Serialize + ?Sized>(v: &T) -> Value {
    Value::from(serde_json::to_string(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::backups::apply;
    use crate::journal::in_memory;
    use crate::schema::{FindingSeverity as Severity, Problem};

    fn missing(table: &str) -> Finding {
        Finding {
            severity: Severity::Error,
            table: table.into(),
            problem: Problem::MissingTable { required: true },
            message: "gone".into(),
        }
    }

    /// Findings found again update the open one (no pile-up), keep its
    /// acknowledgement, and a finding no longer found is resolved.
    #[test]
    fn findings_found_again_update_the_open_one_and_resolve_when_gone() {
        let conn = in_memory();
        let scopes = [Scope::Structure];
        apply(
            &conn,
            &record_statements(&[missing("a"), missing("b")], &scopes, 1),
        )
        .unwrap();
        apply(&conn, &[acknowledge_statement(1)]).unwrap();
        apply(
            &conn,
            &record_statements(&[missing("a"), missing("b")], &scopes, 2),
        )
        .unwrap();
        let open = findings(&conn, false).unwrap();
        assert_eq!(open.len(), 2);
        assert!(open[0].acknowledged);
        assert_eq!((open[0].first_seen_at_ms, open[0].last_seen_at_ms), (1, 2));
        apply(&conn, &record_statements(&[missing("b")], &scopes, 3)).unwrap();
        let open = findings(&conn, false).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].finding.table, "b");
        // Data runs leave structural findings alone.
        apply(&conn, &record_statements(&[], &[Scope::Data], 4)).unwrap();
        assert_eq!(findings(&conn, false).unwrap().len(), 1);
        assert_eq!(findings(&conn, true).unwrap().len(), 2);
    }

    fn removal(rowid: i64) -> Removal {
        Removal {
            table: "t".into(),
            rowid,
            columns: vec!["k".into()],
            value: vec![Value::Integer(1)],
            kept: 1,
            row: [("k".to_string(), Value::Integer(1))].into(),
        }
    }

    /// The journal's pruning pass (`journal::prune_statements`), with
    /// records backdated before the cutoff: resolved findings, fix-log
    /// entries, removed rows and recovery attempts older than it go; an
    /// open finding stays whatever its age, and so does what was resolved,
    /// logged, removed, put back or tried since.
    #[test]
    fn prune_pass_takes_old_schema_records_and_recoveries_but_no_open_finding() {
        let conn = in_memory();
        let (old, cutoff, recent) = (10, 1_000, 2_000);
        let scopes = [Scope::Structure];
        let found = |names: &[&str], at| {
            let list: Vec<Finding> = names.iter().map(|n| missing(n)).collect();
            apply(&conn, &record_statements(&list, &scopes, at)).unwrap();
        };
        found(&["a", "b", "c"], old);
        found(&["b", "c"], old + 1); // a resolved long ago
        found(&["b"], recent); // c resolved lately; b open since `old`
        apply(
            &conn,
            &removed_statements("old-run", &[removal(1), removal(2)], old),
        )
        .unwrap();
        apply(
            &conn,
            &dedupe_done_statements(
                "old-run",
                &[removal(1), removal(2)],
                &[removal(1), removal(2)],
                old,
            ),
        )
        .unwrap();
        let first = removed_rows(&conn).unwrap()[0].id;
        // Row 1 put back lately (and logged); row 2 never.
        apply(&conn, &restored_statements(&[first], &[], recent)).unwrap();
        apply(&conn, &removed_statements("new-run", &[removal(3)], recent)).unwrap();
        for at in [old, recent] {
            let r = crate::journal::recoveries::RecoveryRecord {
                started_at_ms: at,
                trigger: "manual".into(),
                steps: Vec::new(),
                outcome: "recovered".into(),
                duration_ms: 1,
                explanation: "test".into(),
            };
            crate::journal::recoveries::insert(&conn, &r).unwrap();
        }

        apply(&conn, &crate::journal::prune_statements(cutoff, 100)).unwrap();

        let tables: Vec<String> = findings(&conn, true)
            .unwrap()
            .into_iter()
            .map(|f| f.finding.table)
            .collect();
        assert_eq!(tables, ["b", "c"], "a resolved before the cutoff is pruned");
        assert_eq!(findings(&conn, false).unwrap()[0].first_seen_at_ms, old);
        let fixes: Vec<(i64, String)> = fix_log_rows(&conn)
            .unwrap()
            .into_iter()
            .map(|f| (f.0, f.2))
            .collect();
        assert_eq!(fixes, [(recent, "restore_removed".to_string())]);
        let left: Vec<(i64, String)> = conn
            .prepare("SELECT row_id, batch FROM schema_removed_rows ORDER BY row_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            left,
            [(1, "old-run".to_string()), (3, "new-run".to_string())],
            "row 2, removed before the cutoff and never put back, is pruned"
        );
        let recoveries: Vec<i64> = crate::journal::recoveries::list(&conn)
            .unwrap()
            .into_iter()
            .map(|r| r.started_at_ms)
            .collect();
        assert_eq!(recoveries, [recent]);
    }
}
