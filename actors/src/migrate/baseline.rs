//! Baseline: adopt a database whose schema already holds migrations
//! `1..=N` (made by another tool, or by the application's own CREATE
//! statements) without running them. Each gets a `baseline` row in the
//! history with its up script's checksum, and `PRAGMA user_version`
//! becomes N; later migrations then apply as usual, and a changed
//! baselined script is caught as any applied one is.
//!
//! Only a database with no history can be baselined, and only when its
//! schema holds what those migrations create: their up scripts are applied
//! to a scratch in-memory database and the file is compared with it, as
//! `resilite validate --migrations` does. An error finding (a table,
//! column, primary key or UNIQUE index missing) refuses the baseline;
//! warnings are reported. The schema itself is never changed.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::history::{self, HistoryAction, NewEntry, HISTORY_TABLE};
use super::source::Migrations;
use super::status::{source_name, Standing};
use crate::error::{Error, Result};
use crate::schema::{self, DataBounds, ExpectedSchema, Finding, FindingSeverity, ValidateOptions};

/// What a baseline recorded (or, planned, would record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineReport {
    /// The version the database is now at.
    pub version: u32,
    /// `PRAGMA user_version` before.
    pub previous_user_version: i64,
    /// The migrations recorded (or, planned, to record) as applied,
    /// `(version, name)`, in order.
    pub recorded: Vec<(u32, String)>,
    /// Differences from what the migrations create that did not refuse it
    /// (warnings and info: another type spelling, a plain index missing).
    pub findings: Vec<Finding>,
}

/// What [`baseline`] would record, checked as it checks, writing nothing:
/// refused for the same reasons.
pub fn baseline_plan(
    conn: &Connection,
    source: &Migrations,
    version: u32,
) -> Result<BaselineReport> {
    let (report, _) = check(conn, source, version)?;
    Ok(report)
}

/// Record migrations `1..=version` of `source` as applied without running
/// them, in one transaction (`BEGIN IMMEDIATE`; the checks run again
/// inside it). Refused, with nothing written, when `version` is not in
/// `source`, when the database already has a migration history, or when
/// its schema lacks what those migrations create.
pub fn baseline(conn: &Connection, source: &Migrations, version: u32) -> Result<BaselineReport> {
    crate::journal::immediate(conn, || {
        let (report, adopted) = check(conn, source, version)?;
        // The history is empty: a table made by an older resilite (whose
        // CHECK does not know `baseline`) is made again.
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {HISTORY_TABLE}"))?;
        history::ensure(conn)?;
        for m in adopted.iter() {
            let checksum = m.checksum();
            history::insert(
                conn,
                &NewEntry {
                    version: m.version(),
                    name: m.name(),
                    action: HistoryAction::Baseline,
                    success: true,
                    checksum: Some(&checksum),
                    down_sql: m.down(),
                    ..NewEntry::default()
                },
            )?;
        }
        conn.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        Ok(report)
    })
}

/// The checks of a baseline at `version`: the report, and the migrations
/// it adopts.
fn check(
    conn: &Connection,
    source: &Migrations,
    version: u32,
) -> Result<(BaselineReport, Migrations)> {
    if source.get(version).is_none() {
        return Err(Error::bad_input(format!(
            "there is no migration {version} in {} (the latest is {}): baseline at a version the directory has",
            source_name(Some(source)),
            source.latest().map_or("none".into(), |v| v.to_string())
        )));
    }
    let standing = Standing::read(conn)?;
    if !standing.history.is_empty() {
        return Err(Error::bad_input(format!(
            "the database already has a migration history ({} row(s), version {}): a baseline is for a database resilite has never migrated; `resilite migrate` applies what is pending",
            standing.history.len(),
            standing.version()
        )));
    }
    let adopted = Migrations::new(
        source
            .iter()
            .filter(|m| m.version() <= version)
            .cloned()
            .collect(),
    )?;
    let expected = ExpectedSchema::from_migrations(&adopted)?;
    let report = schema::validate(
        conn,
        &expected,
        ValidateOptions::default(),
        DataBounds::default(),
    )?;
    let (errors, findings): (Vec<Finding>, Vec<Finding>) = report
        .findings
        .into_iter()
        .partition(|f| f.severity == FindingSeverity::Error);
    if !errors.is_empty() {
        let listed: Vec<&str> = errors.iter().map(|f| f.message.as_str()).collect();
        return Err(Error::bad_input(format!(
            "the database does not hold what migrations 1 to {version} create, so they cannot be recorded as applied; nothing was written: {}. Baseline at the version the schema does hold, or create what is missing (`resilite fix`) first",
            listed.join("; ")
        )));
    }
    let report = BaselineReport {
        version,
        previous_user_version: standing.user_version,
        recorded: adopted
            .iter()
            .map(|m| (m.version(), m.name().to_string()))
            .collect(),
        findings,
    };
    Ok((report, adopted))
}
