//! Where a database stands against a source of migrations: each migration
//! applied, pending, changed, missing or failed; the problems that block a
//! run; and the steps a run takes.
//!
//! What is applied is the fold of the history (see `history`): a version
//! is applied after a successful `apply` (or a `baseline`), until a
//! successful `rollback`;
//! its checksum is the one applied, or the last one a `repair` accepted.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::history::{self, HistoryAction, HistoryEntry};
use super::source::Migrations;
use crate::error::{Error, Result};

/// Where one migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    /// Applied, and its up script is as it was.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but its up script changed since (blocks `migrate`).
    Changed,
    /// Applied, but no longer in the source (blocks `migrate`).
    Missing,
    /// Not applied: its last attempt failed and was rolled back.
    Failed,
}

/// One migration, as the status lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationInfo {
    /// Its version.
    pub version: u32,
    /// Its name (the source's; the history's when it is not in the source).
    pub name: String,
    /// Where it stands.
    pub state: MigrationState,
    /// When it was applied (UTC), if it is.
    pub applied_at: Option<String>,
    /// The checksum recorded when it was applied (or accepted by a repair).
    pub checksum: Option<String>,
    /// The checksum of its up script in the source now.
    pub source_checksum: Option<String>,
    /// Whether a rollback can undo it (a down script in the source, or
    /// recorded when it was applied).
    pub has_down: bool,
    /// Its last failure: SQLite's error.
    pub error: Option<String>,
    /// Its last failure: the statement that failed.
    pub failed_statement: Option<String>,
}

/// Where a database stands: `PRAGMA user_version`, each migration (of the
/// source and of the history), the problems that block `migrate`, and
/// the whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStatus {
    /// `PRAGMA user_version`: the highest migration applied.
    pub user_version: i64,
    /// Where the migrations were read from: a directory, `embedded` (a
    /// list from the application), or `None` (the history alone).
    pub source: Option<String>,
    /// Every migration of the source and of the history, by version.
    pub migrations: Vec<MigrationInfo>,
    /// What blocks `migrate` (a changed or missing applied migration, one
    /// pending below an applied one, a `user_version` the history does not
    /// explain), one sentence each.
    pub problems: Vec<String>,
    /// The history table's rows, oldest first.
    pub history: Vec<HistoryEntry>,
}

impl MigrationStatus {
    /// The migrations in `state`.
    pub fn in_state(&self, state: MigrationState) -> impl Iterator<Item = &MigrationInfo> {
        self.migrations.iter().filter(move |m| m.state == state)
    }

    /// How many are pending (failed ones included: a run tries them again).
    pub fn pending(&self) -> usize {
        self.migrations
            .iter()
            .filter(|m| matches!(m.state, MigrationState::Pending | MigrationState::Failed))
            .count()
    }

    /// True when a run would be refused (see [`problems`](Self::problems)).
    pub fn is_blocked(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// One version as the history has it applied.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub name: String,
    pub checksum: Option<String>,
    pub applied_at: String,
    pub down_sql: Option<String>,
}

/// What the database holds: its history, folded, and `user_version`.
#[derive(Debug, Clone)]
pub(crate) struct Standing {
    pub history: Vec<HistoryEntry>,
    pub applied: BTreeMap<u32, Applied>,
    /// The last failure of versions not applied.
    pub failed: BTreeMap<u32, HistoryEntry>,
    pub user_version: i64,
}

impl Standing {
    pub(crate) fn read(conn: &Connection) -> Result<Standing> {
        let history = history::read(conn)?;
        let user_version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let mut applied = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for row in &history {
            match (row.action, row.success) {
                (HistoryAction::Apply | HistoryAction::Baseline, true) => {
                    failed.remove(&row.version);
                    applied.insert(
                        row.version,
                        Applied {
                            name: row.name.clone(),
                            checksum: row.checksum.clone(),
                            applied_at: row.applied_at.clone(),
                            down_sql: row.down_sql.clone(),
                        },
                    );
                }
                (HistoryAction::Apply, false) if !applied.contains_key(&row.version) => {
                    failed.insert(row.version, row.clone());
                }
                (HistoryAction::Rollback, true) => {
                    applied.remove(&row.version);
                }
                (HistoryAction::Repair, true) => {
                    if let Some(a) = applied.get_mut(&row.version) {
                        a.checksum = row.checksum.clone();
                    }
                }
                _ => {}
            }
        }
        Ok(Standing {
            history,
            applied,
            failed,
            user_version,
        })
    }

    /// The highest version applied, 0 when none is.
    pub(crate) fn version(&self) -> u32 {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }

    /// The status against `source` (`None`: the history alone).
    pub(crate) fn status(&self, source: Option<&Migrations>) -> MigrationStatus {
        let mut migrations = Vec::new();
        let mut problems = Vec::new();
        let mut versions: BTreeSet<u32> = self.applied.keys().copied().collect();
        versions.extend(self.failed.keys().copied());
        if let Some(source) = source {
            versions.extend(source.iter().map(|m| m.version()));
        }
        let highest = self.version();
        for version in versions {
            let in_source = source.and_then(|s| s.get(version));
            let applied = self.applied.get(&version);
            let failure = self.failed.get(&version);
            let name = in_source
                .map(|m| m.name().to_string())
                .or_else(|| applied.map(|a| a.name.clone()))
                .or_else(|| failure.map(|f| f.name.clone()))
                .unwrap_or_default();
            let source_checksum = in_source.map(|m| m.checksum());
            let state = match (applied, source) {
                (Some(a), Some(_)) if a.checksum != source_checksum => match in_source {
                    Some(m) => {
                        problems.push(format!(
                            "{} was applied with checksum {} but {} now has checksum {}: an applied migration must not change; put the applied script back, or accept the change with `resilite migrate repair`",
                            m.label(),
                            short(a.checksum.as_deref()),
                            m.script_name(false),
                            short(source_checksum.as_deref())
                        ));
                        MigrationState::Changed
                    }
                    None => {
                        problems.push(format!(
                            "migration {version} ({}) was applied but is no longer in {}: put it back, or accept its removal with `resilite migrate repair`",
                            a.name,
                            source_name(source)
                        ));
                        MigrationState::Missing
                    }
                },
                (Some(_), _) => MigrationState::Applied,
                (None, _) if failure.is_some() => MigrationState::Failed,
                (None, _) => MigrationState::Pending,
            };
            if applied.is_none() && version < highest && in_source.is_some() {
                problems.push(format!(
                    "migration {version} ({name}) is pending but migration {highest} is already applied: migrations apply in version order; give it a version above {highest}"
                ));
            }
            migrations.push(MigrationInfo {
                version,
                name,
                state,
                applied_at: applied.map(|a| a.applied_at.clone()),
                checksum: applied.and_then(|a| a.checksum.clone()),
                source_checksum,
                has_down: in_source.and_then(|m| m.down()).is_some()
                    || applied.is_some_and(|a| a.down_sql.is_some()),
                error: failure.and_then(|f| f.error.clone()),
                failed_statement: failure.and_then(|f| f.failed_statement.clone()),
            });
        }
        if self.user_version != i64::from(highest) {
            problems.push(if self.history.is_empty() {
                format!(
                    "PRAGMA user_version is {} but the database has no migration history: another tool (or the application) made its schema; resilite cannot tell which migrations it holds. Adopt it with `resilite migrate baseline --version N` (N: the last migration its schema holds), or set user_version back to 0 to apply every migration",
                    self.user_version
                )
            } else {
                format!(
                    "PRAGMA user_version is {} but the migration history has {}: something other than resilite's migrations set it; resilite cannot tell which migrations the schema holds (set user_version back to {highest} if the history is right)",
                    self.user_version,
                    if highest == 0 {
                        "no migration applied".to_string()
                    } else {
                        format!("migration {highest} as the highest applied")
                    }
                )
            });
        }
        MigrationStatus {
            user_version: self.user_version,
            source: source.map(|s| source_name(Some(s))),
            migrations,
            problems,
            history: self.history.clone(),
        }
    }
}

/// The status of the database at `conn` against `source` (`None`: the
/// history alone). Reads only.
pub fn status(conn: &Connection, source: Option<&Migrations>) -> Result<MigrationStatus> {
    Ok(Standing::read(conn)?.status(source))
}

/// One step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "version", rename_all = "lowercase")]
pub enum Step {
    /// Run the up script of this version.
    Apply(u32),
    /// Run the down script of this version.
    Rollback(u32),
}

/// The steps that take the database from where it stands to `to` (`None`:
/// the source's latest): pending migrations up to it in order, or applied
/// ones above it rolled back from the highest. Refused, with every problem
/// named, when the status is blocked.
pub(crate) fn steps(
    standing: &Standing,
    source: &Migrations,
    to: Option<u32>,
) -> Result<Vec<Step>> {
    let status = standing.status(Some(source));
    if status.is_blocked() {
        return Err(Error::bad_input(format!(
            "migrations are blocked, nothing was applied: {}",
            status.problems.join("; ")
        )));
    }
    let current = standing.version();
    let target = to.or(source.latest()).unwrap_or(0);
    if target < current {
        return Ok(standing
            .applied
            .keys()
            .rev()
            .filter(|v| **v > target)
            .map(|v| Step::Rollback(*v))
            .collect());
    }
    if target > current && source.get(target).is_none() {
        return Err(Error::bad_input(format!(
            "there is no migration {target} in {} (the latest is {})",
            source_name(Some(source)),
            source.latest().map_or("none".into(), |v| v.to_string())
        )));
    }
    Ok(source
        .iter()
        .map(|m| m.version())
        .filter(|v| *v > current && *v <= target && !standing.applied.contains_key(v))
        .map(Step::Apply)
        .collect())
}

/// The first 12 hex digits of a checksum, or `none`.
fn short(checksum: Option<&str>) -> String {
    checksum.map_or("none (accepted as removed)".into(), |c| {
        c.get(..12).unwrap_or(c).to_string()
    })
}

/// How a source is named in messages and the status.
pub(crate) fn source_name(source: Option<&Migrations>) -> String {
    match source.and_then(Migrations::dir) {
        Some(dir) => dir.display().to_string(),
        None if source.is_some() => "embedded".into(),
        None => "the history".into(),
    }
}
