//! `resilite migrate`: apply the migrations of a directory to a database
//! file no program has open (or roll back to `--to N`, or try them with
//! `--dry-run`); `resilite migrate repair`: accept applied migrations whose
//! up script changed or was removed; `resilite migrate baseline`: adopt a
//! database whose schema already holds migrations `1..=N`, recording them
//! as applied without running them.
//!
//! Before a run that has something to do (not a dry run, not a no-op) a
//! `pre-migration` backup is taken, verified and recorded in the journal's
//! catalog, as `resilite backup` does. When the database keeps an
//! operation-log position (a server ran it with `backup.op_log`), each
//! migration is a barrier in the log (recorded as a gap in the journal, so
//! no recovery replays across it) and a `post-migration` backup follows.
//!
//! Exit codes: 0 done (or nothing to do); 1 a repair not confirmed; 2 an
//! error: a migration failed (the SQL error and the statement are
//! printed; it was rolled back and later ones were not attempted), was
//! refused as destructive, or the run is blocked (a changed or missing
//! applied migration), or the files or the database cannot be used.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use resilite_actors::connection::open_read_write;
use resilite_actors::journal;
use resilite_actors::maintenance::now_ms;
use resilite_actors::migrate::{self, OpLogBarrier, RunContext};
use resilite_actors::{Error, MigrateOptions, MigrationReport, Migrations};

/// Exit code of an error.
const EXIT_ERROR: u8 = 2;
/// Exit code of a repair not confirmed.
const EXIT_CANCELLED: u8 = 1;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MigrateArgs {
    #[command(subcommand)]
    action: Option<MigrateAction>,
    /// The SQLite database file (not in use by any program).
    #[arg(long, required = true)]
    db: Option<PathBuf>,
    /// The migrations: NNNN_name.up.sql files, each with an optional
    /// NNNN_name.down.sql.
    #[arg(long, required = true)]
    dir: Option<PathBuf>,
    /// The version to reach (default: the latest). Below the current one,
    /// the migrations above it are rolled back by their down scripts.
    #[arg(long)]
    to: Option<u32>,
    /// Apply in a transaction that is rolled back: proves the migrations
    /// apply and prints the schema change; the file is not changed.
    #[arg(long)]
    dry_run: bool,
    /// Let migrations (and rollbacks) drop tables or columns, or lose rows
    /// in a table rebuild.
    #[arg(long)]
    allow_destructive: bool,
    /// Print the report (or the error) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Accept applied migrations whose up script changed or was removed:
    /// record the new checksum in the history (the old one is kept). Asks
    /// unless --yes. Exit 0 recorded (or nothing to repair), 1 not
    /// confirmed, 2 error.
    Repair(RepairArgs),
    /// Adopt a database whose schema another tool (or the application)
    /// made: record migrations 1 to --version as applied without running
    /// them, and set user_version to it. Only for a database with no
    /// migration history, and refused when its schema lacks a table,
    /// column, primary key or UNIQUE index those migrations create. Asks
    /// unless --yes. Exit 0 recorded, 1 not confirmed, 2 error.
    Baseline(BaselineArgs),
}

#[derive(Debug, Args)]
struct BaselineArgs {
    /// The SQLite database file (not in use by any program).
    #[arg(long)]
    db: PathBuf,
    /// The migrations, as `resilite migrate --dir` takes them.
    #[arg(long)]
    dir: PathBuf,
    /// The last migration the database's schema already holds.
    #[arg(long)]
    version: u32,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Args)]
struct RepairArgs {
    /// The SQLite database file (not in use by any program).
    #[arg(long)]
    db: PathBuf,
    /// The migrations, as `resilite migrate --dir` takes them.
    #[arg(long)]
    dir: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

pub fn run(args: MigrateArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let action = match &args.action {
        Some(MigrateAction::Repair(a)) => Some(repair(a)),
        Some(MigrateAction::Baseline(a)) => Some(baseline(a)),
        None => None,
    };
    if let Some(done) = action {
        return Ok(done.unwrap_or_else(|e| fail(&e, false)));
    }
    let (Some(db), Some(dir)) = (&args.db, &args.dir) else {
        return Err("pass --db PATH and --dir DIR".into());
    };
    let options = MigrateOptions {
        to: args.to,
        dry_run: args.dry_run,
        allow_destructive: args.allow_destructive,
    };
    match migrate(db, dir, &options) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(fail(&e, args.json)),
    }
}

/// Print `e` (the message, then its detail: the failed statement) and
/// give the error exit code.
fn fail(e: &Error, json: bool) -> ExitCode {
    if json {
        let body = serde_json::json!({ "error": e });
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    }
    eprintln!("error: {}", e.message);
    if !e.detail.is_empty() && e.detail != e.message {
        eprintln!("{}", e.detail);
    }
    ExitCode::from(EXIT_ERROR)
}

fn migrate(db: &Path, dir: &Path, options: &MigrateOptions) -> Result<MigrationReport, Error> {
    let source = Migrations::from_dir(dir)?;
    let conn = open(db)?;
    let steps = migrate::plan(&conn, &source, options)?;
    if steps.is_empty() {
        return migrate::run(&conn, &source, options, &RunContext::default());
    }
    let backup = if options.dry_run {
        None
    } else {
        let path = super::backup::take_verified(db, "pre-migration").map_err(|e| {
            Error::unavailable(format!(
                "the pre-migration backup failed, so no migration was applied: {e}"
            ))
        })?;
        println!("pre-migration backup: {}", path.display());
        path.file_name().map(|n| n.to_string_lossy().into_owned())
    };
    let config = crate::config::Config::for_database(db);
    let journal_db = config.journal_db();
    let journal = journal_db.path.is_file().then(|| journal_db.clone());
    let floor = log_floor(&conn, journal.as_ref());
    let ctx = RunContext {
        backup,
        barrier: Some(OpLogBarrier {
            journal,
            create: false,
        }),
    };
    let result = migrate::run(&conn, &source, options, &ctx);
    if !options.dry_run {
        // The barriers of the migrations that committed, failed run or not.
        let position = resilite_actors::writer::op_log_position(&conn)
            .ok()
            .flatten();
        if let (Some(floor), Some(position)) = (floor, position) {
            if position > floor {
                record_barrier(&config, floor, position);
                match super::backup::take_verified(db, "post-migration") {
                    Ok(path) => println!("post-migration backup: {}", path.display()),
                    Err(e) => eprintln!("warning: the post-migration backup failed: {e}; a recovery before the next backup restores the pre-migration one without replaying the operation log"),
                }
            }
        }
    }
    result
}

/// Refuse a missing file or one in use; open it read-write, changing no
/// setting of the file.
fn open(db: &Path) -> Result<rusqlite::Connection, Error> {
    if !db.is_file() {
        return Err(Error::bad_input(format!(
            "{} does not exist; pass an existing database with --db",
            db.display()
        )));
    }
    super::restore::ensure_not_in_use(db).map_err(|e| {
        Error::new(
            resilite_actors::ErrorClass::Unavailable,
            format!(
                "{} is in use: stop the program that has it open (a resilite server applies the migrations of schema.migrations_dir itself, at start); nothing was changed",
                db.display()
            ),
            e.to_string(),
        )
    })?;
    super::open_existing(db).map_err(|e| Error::unavailable(e.to_string()))
}

/// The highest operation-log number given for `db`, when it keeps a
/// position (what a barrier moves past); `None` when it keeps none.
fn log_floor(
    conn: &rusqlite::Connection,
    journal: Option<&resilite_actors::DbOptions>,
) -> Option<i64> {
    use resilite_actors::writer::{op_log_numbers_given, op_log_position};
    op_log_position(conn).ok().flatten()?;
    op_log_numbers_given(conn, journal).ok()
}

/// Record the barriers `(after, through]` as a gap in the journal's
/// operation log (no writer runs to do it). A failure is printed: the next
/// server start finds the position ahead of the log and records the gap.
fn record_barrier(config: &crate::config::Config, after: i64, through: i64) {
    let journal_db = config.journal_db();
    let gap = journal::op_log::Gap {
        after_seq: after,
        through_seq: through,
        at_ms: now_ms(),
        reason: "resilite migrate changed the database outside the operation log here: a recovery from a backup taken before this point restores that backup without replaying the log across it".into(),
    };
    let recorded = open_read_write(&journal_db)
        .and_then(|c| journal::migrate(&c).map(|()| c))
        .and_then(|c| journal::op_log::append(&c, now_ms(), 0, &[], &[gap]));
    if let Err(e) = recorded {
        eprintln!(
            "warning: the migration's mark in the operation log of {} was not recorded: {e}",
            journal_db.path.display()
        );
    }
}

fn print_report(report: &MigrationReport) {
    if report.is_noop() {
        println!(
            "nothing to do: the database is at version {}",
            report.to_version
        );
        return;
    }
    let verb = if report.dry_run {
        "would apply"
    } else {
        "applied"
    };
    for s in &report.applied {
        println!("{verb} {} {} ({} ms)", s.version, s.name, s.duration_ms);
    }
    let verb = if report.dry_run {
        "would roll back"
    } else {
        "rolled back"
    };
    for s in &report.rolled_back {
        println!("{verb} {} {} ({} ms)", s.version, s.name, s.duration_ms);
    }
    if report.dry_run {
        println!(
            "dry run: the database would go from version {} to {}; nothing was written",
            report.from_version, report.to_version
        );
    } else {
        println!(
            "the database is at version {} (was {})",
            report.to_version, report.from_version
        );
    }
    println!("schema change:");
    for line in report.schema.to_string().lines() {
        println!("  {line}");
    }
}

fn repair(args: &RepairArgs) -> Result<ExitCode, Error> {
    let source = Migrations::from_dir(&args.dir)?;
    let conn = open(&args.db)?;
    let repairs = migrate::repairs(&conn, &source)?;
    if repairs.is_empty() {
        println!("nothing to repair: every applied migration matches its file");
        return Ok(ExitCode::SUCCESS);
    }
    for r in &repairs {
        match &r.accepted {
            Some(now) => println!(
                "migration {} ({}): applied with checksum {}, the file now has {}",
                r.version,
                r.name,
                r.recorded.as_deref().unwrap_or("none"),
                now
            ),
            None => println!(
                "migration {} ({}): applied, no longer in {}",
                r.version,
                r.name,
                args.dir.display()
            ),
        }
    }
    let question = format!(
        "record these {} change(s) as accepted in the history of {}? (the schema is not changed)",
        repairs.len(),
        args.db.display()
    );
    if !(args.yes || confirmed(&question)) {
        eprintln!("repair cancelled; nothing was recorded");
        return Ok(ExitCode::from(EXIT_CANCELLED));
    }
    let done = migrate::repair(&conn, &source)?;
    println!(
        "recorded {} repair(s); `resilite migrate` can run again",
        done.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn baseline(args: &BaselineArgs) -> Result<ExitCode, Error> {
    let source = Migrations::from_dir(&args.dir)?;
    let conn = open(&args.db)?;
    let plan = migrate::baseline_plan(&conn, &source, args.version)?;
    for f in &plan.findings {
        println!("note ({}): {}", f.severity.as_str(), f.message);
    }
    let adopted: Vec<String> = plan
        .recorded
        .iter()
        .map(|(version, name)| format!("{version} {name}"))
        .collect();
    let question = format!(
        "the schema of {} holds what migrations {} create: record them as applied, without running them? (the schema is not changed)",
        args.db.display(),
        adopted.join(", ")
    );
    if !(args.yes || confirmed(&question)) {
        eprintln!("baseline cancelled; nothing was recorded");
        return Ok(ExitCode::from(EXIT_CANCELLED));
    }
    let report = migrate::baseline(&conn, &source, args.version)?;
    println!(
        "recorded {} migration(s) as applied; the database is at version {} (user_version was {}); `resilite migrate` applies the later ones",
        report.recorded.len(),
        report.version,
        report.previous_user_version
    );
    Ok(ExitCode::SUCCESS)
}

/// The operator's answer to `question` on the terminal; no terminal (or
/// no answer) is a no, said on stderr.
fn confirmed(question: &str) -> bool {
    super::restore::confirm(question).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        false
    })
}
