//! Running migrations: apply, roll back, dry run, on one connection that
//! is between transactions (the writer's, through `WriterHandle::call`, or
//! the CLI's own on a file no program has open).
//!
//! A run reads the history first (so two runs one after the other, or
//! queued on the writer, apply each migration once) and works out its
//! steps (see `status`). Each step is one transaction (`BEGIN IMMEDIATE`):
//! the script, statement by statement (each in a savepoint, so a dropped
//! table's rows can be counted as they were, see `schema`); `PRAGMA
//! foreign_key_check` (no new violation: when it finds any, the script is
//! undone to a savepoint, the check run on the database as it was, and the
//! script run again; a sound database is checked once); the schema before and after
//! compared, and the transaction rolled back if anything would be lost
//! without `allow_destructive`; `PRAGMA user_version`; the history row;
//! COMMIT. Foreign keys are off while a run goes (SQLite's advice for
//! schema changes: with them on, dropping a table in a rebuild would delete
//! through `ON DELETE CASCADE`); the check stands in for them, and the
//! connection's setting is put back after.
//!
//! A failure rolls its transaction back, then is recorded in a transaction
//! of its own (never in a dry run), and the run stops there. A dry run
//! runs every step in one transaction and rolls it back: no byte of the
//! database changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::history::{self, HistoryAction, NewEntry};
use super::schema::{SchemaChange, Shape, Tracker};
use super::script::{split, ScriptStatement};
use super::source::Migrations;
use super::status::{steps, Standing, Step};
use crate::connection::DbOptions;
use crate::error::{printable, Error, ErrorClass, Result};

/// Most characters of a failed statement kept in an error or the history.
const MAX_STATEMENT_CHARS: usize = 4000;
/// The savepoint each statement of a script runs in.
const STATEMENT_SAVEPOINT: &str = "resilite_migration_statement";
/// The savepoint a script runs in (undone to look at the foreign keys as
/// they were).
const SCRIPT_SAVEPOINT: &str = "resilite_migration_script";

/// What a run does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateOptions {
    /// The version to reach: `None`, the latest; below the current one,
    /// the migrations above it are rolled back (their down scripts, from
    /// the highest).
    pub to: Option<u32>,
    /// Run the steps in a transaction that is rolled back: proves they
    /// apply and shows the schema change; nothing is written.
    pub dry_run: bool,
    /// Let a step lose tables, columns or rows (see [`SchemaChange::lost`]);
    /// without it such a step is refused and rolled back. Rollbacks follow
    /// the same rule: undoing a `CREATE TABLE` loses the table.
    pub allow_destructive: bool,
}

/// The operation log's side of a run (see `writer::op_log::barrier`).
#[derive(Debug, Clone, Default)]
pub struct OpLogBarrier {
    /// The journal, to read the highest sequence number given.
    pub journal: Option<DbOptions>,
    /// Make the database's position table if it has none (the log is on).
    pub create: bool,
}

/// What a run is given besides its options.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// The `pre-migration` backup taken before the run, by name: recorded
    /// in each history row.
    pub backup: Option<String>,
    /// Mark the operation log in each step's transaction (not in a dry run).
    pub barrier: Option<OpLogBarrier>,
}

/// One migration a run applied or rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// Its version.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// How long its script ran, in milliseconds.
    pub duration_ms: u64,
    /// What it did to the schema.
    pub schema: SchemaChange,
}

/// What a run did (in a dry run: would do).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MigrationReport {
    /// `PRAGMA user_version` before.
    pub from_version: i64,
    /// `PRAGMA user_version` after (in a dry run: it would be).
    pub to_version: i64,
    /// A dry run: nothing was written.
    pub dry_run: bool,
    /// Migrations applied, in order.
    pub applied: Vec<StepReport>,
    /// Migrations rolled back, in order (highest first).
    pub rolled_back: Vec<StepReport>,
    /// What the whole run did to the schema.
    pub schema: SchemaChange,
    /// The `pre-migration` backup taken before, by name.
    pub backup: Option<String>,
    /// The `post-migration` backup taken after (with the operation log on),
    /// by name.
    pub post_backup: Option<String>,
    /// The operation log's position before and after the run's barriers
    /// (see `writer::op_log::barrier`), when it has them.
    pub op_log_barrier: Option<(i64, i64)>,
}

impl MigrationReport {
    /// True when the run had nothing to do.
    pub fn is_noop(&self) -> bool {
        self.applied.is_empty() && self.rolled_back.is_empty()
    }
}

/// The steps a run with `options` would take now on the database at
/// `conn`; refused when the status is blocked. Reads only.
pub fn plan(conn: &Connection, source: &Migrations, options: &MigrateOptions) -> Result<Vec<Step>> {
    let standing = Standing::read(conn)?;
    let steps = steps(&standing, source, options.to)?;
    // A rollback that cannot take its first step does nothing: say so now
    // (before a backup is taken for it).
    if let Some(Step::Rollback(first)) = steps.first() {
        if down_script(&standing, source, *first).is_none() {
            let path = std::path::Path::new(conn.path().unwrap_or(""));
            return Err(no_down(&standing, source, *first, &[], path));
        }
    }
    Ok(steps)
}

/// Run the migrations of `source` on `conn` (between transactions) as
/// `options` say (see the module doc). A failure's error names the
/// migration, the script, the statement and SQLite's error; the steps
/// before it stay done.
pub fn run(
    conn: &Connection,
    source: &Migrations,
    options: &MigrateOptions,
    ctx: &RunContext,
) -> Result<MigrationReport> {
    let standing = Standing::read(conn)?;
    let steps = steps(&standing, source, options.to)?;
    let mut report = MigrationReport {
        from_version: standing.user_version,
        to_version: standing.user_version,
        dry_run: options.dry_run,
        backup: ctx.backup.clone(),
        ..MigrationReport::default()
    };
    if steps.is_empty() {
        return Ok(report);
    }
    let foreign_keys: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    if foreign_keys {
        conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    }
    let mut runner = Runner {
        conn,
        source,
        options,
        ctx,
        applied: standing.applied.keys().copied().collect(),
        standing: &standing,
        report: &mut report,
    };
    let result = runner.run(&steps);
    if foreign_keys {
        let _ = conn.execute_batch("PRAGMA foreign_keys = ON");
    }
    result.map(|()| report)
}

struct Runner<'a> {
    conn: &'a Connection,
    source: &'a Migrations,
    options: &'a MigrateOptions,
    ctx: &'a RunContext,
    standing: &'a Standing,
    /// The versions applied as the run goes.
    applied: BTreeSet<u32>,
    report: &'a mut MigrationReport,
}

/// A step ready to run.
struct Prepared<'a> {
    version: u32,
    name: String,
    action: HistoryAction,
    script: &'a str,
    script_name: String,
    checksum: Option<String>,
    down: Option<&'a str>,
}

/// Why a step did not go through.
struct StepFailure {
    error: Box<Error>,
    /// Record it in the history (a failed statement, a broken check; not a
    /// destructive step refused, which changed nothing).
    record: bool,
    statement: Option<String>,
}

impl From<Error> for StepFailure {
    fn from(error: Error) -> Self {
        StepFailure {
            error: Box::new(error),
            record: true,
            statement: None,
        }
    }
}

impl From<rusqlite::Error> for StepFailure {
    fn from(e: rusqlite::Error) -> Self {
        Error::from(e).into()
    }
}

impl<'a> Runner<'a> {
    fn run(&mut self, steps: &[Step]) -> Result<()> {
        let dry = self.options.dry_run;
        if dry {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        let result = (|| {
            for (i, step) in steps.iter().enumerate() {
                let prepared = self.prepare(*step)?;
                self.step(&prepared, &steps[i + 1..])?;
            }
            Ok(())
        })();
        if dry {
            rollback(self.conn);
        }
        result
    }

    /// The script of `step`, or why it cannot run (a rollback of a
    /// migration with no down script stops before it).
    fn prepare(&self, step: Step) -> Result<Prepared<'a>> {
        match step {
            Step::Apply(version) => {
                let source: &'a Migrations = self.source;
                let m = source.get(version).ok_or_else(|| {
                    Error::classed(
                        ErrorClass::Internal,
                        format!("migration {version} left the source"),
                    )
                })?;
                Ok(Prepared {
                    version,
                    name: m.name().to_string(),
                    action: HistoryAction::Apply,
                    script: m.up(),
                    script_name: m.script_name(false),
                    checksum: Some(m.checksum()),
                    down: m.down(),
                })
            }
            Step::Rollback(version) => {
                let standing: &'a Standing = self.standing;
                let source: &'a Migrations = self.source;
                let applied = &standing.applied[&version];
                let in_source = source.get(version);
                let done: Vec<u32> = self.report.rolled_back.iter().map(|s| s.version).collect();
                let down = down_script(standing, source, version)
                    .ok_or_else(|| no_down(standing, source, version, &done, self.path()))?;
                Ok(Prepared {
                    version,
                    name: applied.name.clone(),
                    action: HistoryAction::Rollback,
                    script: down,
                    script_name: in_source
                        .filter(|m| m.down().is_some())
                        .map(|m| m.script_name(true))
                        .unwrap_or_else(|| {
                            format!(
                                "the down script of migration {version} recorded in the history"
                            )
                        }),
                    checksum: applied.checksum.clone(),
                    down: Some(down),
                })
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        self.conn
            .path()
            .map(std::path::Path::new)
            .unwrap_or(std::path::Path::new(""))
    }

    /// One step, in its own transaction (in a dry run, in the run's).
    fn step(&mut self, p: &Prepared<'_>, later: &[Step]) -> Result<()> {
        let dry = self.options.dry_run;
        if !dry {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        let started = Instant::now();
        let outcome = self.attempt(p);
        let duration_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(schema) => {
                if !dry {
                    if let Err(e) = self.conn.execute_batch("COMMIT") {
                        rollback(self.conn);
                        return Err(Error::from(e).during("migrate", self.path()));
                    }
                }
                let report = StepReport {
                    version: p.version,
                    name: p.name.clone(),
                    duration_ms,
                    schema: schema.clone(),
                };
                self.report.to_version = i64::from(self.version_after(p));
                match p.action {
                    HistoryAction::Rollback => self.report.rolled_back.push(report),
                    _ => self.report.applied.push(report),
                }
                self.report.schema.extend(schema);
                self.note_applied(p);
                Ok(())
            }
            Err(failure) => {
                if !dry {
                    rollback(self.conn);
                }
                let mut error = *failure.error;
                let before: Vec<String> = match p.action {
                    HistoryAction::Rollback => &self.report.rolled_back,
                    _ => &self.report.applied,
                }
                .iter()
                .map(|s| format!("{} ({})", s.version, s.name))
                .collect();
                if !before.is_empty() && !dry {
                    error.message.push_str(&format!(
                        "; done before it in this run: {}; the database is at version {}",
                        before.join(", "),
                        self.report.to_version
                    ));
                }
                if !later.is_empty() {
                    error.message.push_str(match p.action {
                        HistoryAction::Rollback => "; the rollback stopped there",
                        _ => "; later migrations were not attempted",
                    });
                }
                if failure.record && !dry {
                    if let Err(e) =
                        self.record_failure(p, &error, failure.statement.as_deref(), duration_ms)
                    {
                        error.detail.push_str(&format!(
                            "; the failure could not be recorded in the history: {e}"
                        ));
                    }
                }
                Err(error.during("migrate", self.path()))
            }
        }
    }

    /// The version the database is at once `p` is done.
    fn version_after(&self, p: &Prepared<'_>) -> u32 {
        match p.action {
            HistoryAction::Rollback => self
                .applied
                .iter()
                .copied()
                .filter(|v| *v != p.version)
                .max()
                .unwrap_or(0),
            _ => p
                .version
                .max(self.applied.iter().copied().max().unwrap_or(0)),
        }
    }

    fn note_applied(&mut self, p: &Prepared<'_>) {
        match p.action {
            HistoryAction::Rollback => {
                self.applied.remove(&p.version);
            }
            _ => {
                self.applied.insert(p.version);
            }
        }
    }

    /// The body of a step's transaction: everything but BEGIN and COMMIT.
    fn attempt(&mut self, p: &Prepared<'_>) -> std::result::Result<SchemaChange, StepFailure> {
        let conn = self.conn;
        history::ensure(conn)?;
        if let (Some(barrier), false) = (&self.ctx.barrier, self.options.dry_run) {
            if let Some((from, to)) =
                crate::writer::op_log_barrier(conn, barrier.journal.as_ref(), barrier.create)?
            {
                let first = self.report.op_log_barrier.map_or(from, |(f, _)| f);
                self.report.op_log_barrier = Some((first, to));
            }
        }
        let size_before = size(conn)?;
        let start = Shape::read(conn)?;
        conn.execute_batch(&format!("SAVEPOINT {SCRIPT_SAVEPOINT}"))?;
        let mut tracker = Tracker::new(start.clone());
        let mut end = self.run_script(p, start.clone(), &mut tracker)?;
        let mut fk_after = fk_violations(conn)?;
        let mut fk_before = BTreeSet::new();
        if !fk_after.is_empty() {
            // Rows break a key: were they there before? (Looked at only
            // now, so that a sound database is checked once.) Undo the
            // script, look, and run it again.
            conn.execute_batch(&format!("ROLLBACK TO {SCRIPT_SAVEPOINT}"))?;
            fk_before = fk_violations(conn)?;
            tracker = Tracker::new(start.clone());
            end = self.run_script(p, start, &mut tracker)?;
            fk_after = fk_violations(conn)?;
        }
        conn.execute_batch(&format!("RELEASE {SCRIPT_SAVEPOINT}"))?;
        let new: Vec<&FkViolation> = fk_after.difference(&fk_before).collect();
        if !new.is_empty() {
            return Err(StepFailure::from(Error::new(
                ErrorClass::Constraint,
                format!(
                    "{} leaves {} row(s) breaking a foreign key ({}); it was rolled back",
                    self.label(p),
                    new.len(),
                    new.iter()
                        .take(5)
                        .map(|v| format!("{} rowid {} -> {}", v.table, v.rowid.map_or("?".into(), |r| r.to_string()), v.parent))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "PRAGMA foreign_key_check after the script found rows it did not find before; foreign keys are off while migrations run, so the script must keep them itself",
            )));
        }
        let mut rows_now = BTreeMap::new();
        for table in tracker.rebuilt(&end) {
            let n = count_rows(conn, &table)?;
            rows_now.insert(table, n);
        }
        let change = tracker.change(&end, &rows_now);
        let lost = change.lost();
        if !lost.is_empty() && !self.options.allow_destructive {
            return Err(StepFailure {
                error: Box::new(Error::new(
                    ErrorClass::Forbidden,
                    format!(
                        "{} would lose {}: refused (destructive changes need --allow-destructive, or allow_destructive = true in [schema]); nothing of it was applied",
                        self.label(p),
                        lost.join(", ")
                    ),
                    format!("what it would change:\n{change}"),
                )),
                record: false,
                statement: None,
            });
        }
        let version = self.version_after(p);
        conn.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        let size_after = size(conn)?;
        history::insert(
            conn,
            &NewEntry {
                version: p.version,
                name: &p.name,
                action: p.action,
                success: true,
                checksum: p.checksum.as_deref(),
                duration_ms: 0,
                down_sql: p.down,
                size_before: Some(size_before),
                size_after: Some(size_after),
                backup: self.ctx.backup.as_deref(),
                ..NewEntry::default()
            },
        )?;
        Ok(change)
    }

    /// The script, statement by statement, each in a savepoint; the
    /// schema at its end. A statement that drops a table of the start is
    /// rolled back to its savepoint once, the table's rows counted, and
    /// run again.
    fn run_script(
        &self,
        p: &Prepared<'_>,
        start: Shape,
        tracker: &mut Tracker,
    ) -> std::result::Result<Shape, StepFailure> {
        let conn = self.conn;
        let statements = split(p.script);
        let mut before = start;
        for (i, s) in statements.iter().enumerate() {
            let version = schema_version(conn)?;
            conn.execute_batch(&format!("SAVEPOINT {STATEMENT_SAVEPOINT}"))?;
            self.execute(p, i, s)?;
            if schema_version(conn)? != version {
                let mut after = Shape::read(conn)?;
                let dropped = tracker.dropped_by(&before, &after);
                let mut rows = BTreeMap::new();
                if !dropped.is_empty() {
                    conn.execute_batch(&format!("ROLLBACK TO {STATEMENT_SAVEPOINT}"))?;
                    for table in dropped {
                        let n = count_rows(conn, &table)?;
                        rows.insert(table, n);
                    }
                    self.execute(p, i, s)?;
                    after = Shape::read(conn)?;
                }
                tracker.step(&before, &after, &rows);
                before = after;
            }
            conn.execute_batch(&format!("RELEASE {STATEMENT_SAVEPOINT}"))?;
            if conn.is_autocommit() {
                return Err(Error::classed(
                    ErrorClass::Internal,
                    format!(
                        "statement {} of {} ended the migration's transaction",
                        i + 1,
                        p.script_name
                    ),
                )
                .into());
            }
        }
        Ok(before)
    }

    /// Run statement `i` of `p`; its failure names it.
    fn execute(
        &self,
        p: &Prepared<'_>,
        i: usize,
        s: &ScriptStatement<'_>,
    ) -> std::result::Result<(), StepFailure> {
        self.conn.execute_batch(s.text).map_err(|e| {
            let mut error = Error::from(e);
            let sqlite = error.detail.clone();
            let statement = printable(s.text, MAX_STATEMENT_CHARS);
            error.message = format!(
                "{} failed at statement {} of {} (line {}): {sqlite}; it was rolled back",
                self.label(p),
                i + 1,
                p.script_name,
                s.line
            );
            error.detail = format!("statement: {statement}");
            StepFailure {
                error: Box::new(error),
                record: true,
                statement: Some(s.text.chars().take(MAX_STATEMENT_CHARS).collect()),
            }
        })
    }

    fn label(&self, p: &Prepared<'_>) -> String {
        match p.action {
            HistoryAction::Rollback => {
                format!("the rollback of migration {} ({})", p.version, p.name)
            }
            _ => format!("migration {} ({})", p.version, p.name),
        }
    }

    /// Record a failed step, after its transaction was rolled back, in a
    /// transaction of its own.
    fn record_failure(
        &self,
        p: &Prepared<'_>,
        error: &Error,
        statement: Option<&str>,
        duration_ms: u64,
    ) -> Result<()> {
        let conn = self.conn;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let written = (|| {
            history::ensure(conn)?;
            let size = size(conn)?;
            history::insert(
                conn,
                &NewEntry {
                    version: p.version,
                    name: &p.name,
                    action: p.action,
                    success: false,
                    checksum: p.checksum.as_deref(),
                    duration_ms: duration_ms as i64,
                    error: Some(&error.message),
                    failed_statement: statement,
                    down_sql: p.down,
                    size_before: Some(size),
                    size_after: Some(size),
                    backup: self.ctx.backup.as_deref(),
                    ..NewEntry::default()
                },
            )?;
            conn.execute_batch("COMMIT")?;
            Ok(())
        })();
        if written.is_err() {
            rollback(conn);
        }
        written
    }
}

/// The down script that undoes applied `version`: the source's, or the
/// one recorded when it was applied.
fn down_script<'a>(
    standing: &'a Standing,
    source: &'a Migrations,
    version: u32,
) -> Option<&'a str> {
    source.get(version).and_then(|m| m.down()).or(standing
        .applied
        .get(&version)?
        .down_sql
        .as_deref())
}

/// The error of a rollback that stops before `version`, which has no down
/// script, after rolling back `done`.
fn no_down(
    standing: &Standing,
    source: &Migrations,
    version: u32,
    done: &[u32],
    path: &std::path::Path,
) -> Error {
    let name = standing
        .applied
        .get(&version)
        .map_or("", |a| a.name.as_str());
    let missing_file = source
        .get(version)
        .and_then(|m| m.up_file())
        .and_then(|up| up.file_name())
        .map(|up| {
            let up = up.to_string_lossy();
            format!(
                " (no {} beside {up})",
                up.replace(super::UP_SUFFIX, super::DOWN_SUFFIX)
            )
        })
        .unwrap_or_default();
    let done = if done.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = done.iter().map(u32::to_string).collect();
        format!(" (rolled back: {})", list.join(", "))
    };
    Error::new(
        ErrorClass::BadInput,
        format!(
            "the rollback stopped before migration {version} ({name}): it has no down script{missing_file}; the database is at version {version}{done}"
        ),
        "write a down script for it to roll back further, or restore the pre-migration backup",
    )
    .during("migrate", path)
}

/// Roll back whatever transaction is open on `conn`.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA schema_version", [], |r| r.get(0))
}

/// The database's size as the open transaction sees it.
fn size(conn: &Connection) -> rusqlite::Result<i64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(pages * page_size)
}

fn count_rows(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    let quoted = table.replace('"', "\"\"");
    conn.query_row(&format!("SELECT count(*) FROM \"{quoted}\""), [], |r| {
        r.get(0)
    })
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FkViolation {
    table: String,
    rowid: Option<i64>,
    parent: String,
    fkid: i64,
}

/// Every row breaking a foreign key (none looked for when no table
/// declares one).
fn fk_violations(conn: &Connection) -> rusqlite::Result<BTreeSet<FkViolation>> {
    let declares: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND sql LIKE '%REFERENCES%')",
        [],
        |r| r.get(0),
    )?;
    if !declares {
        return Ok(BTreeSet::new());
    }
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let rows = stmt.query_map([], |r| {
        Ok(FkViolation {
            table: r.get(0)?,
            rowid: r.get(1)?,
            parent: r.get(2)?,
            fkid: r.get(3)?,
        })
    })?;
    rows.collect()
}
