//! The command line: one module per verb.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use resilite_actors::connection::explain_open_failure;

mod archive;
mod audit;
mod backup;
mod backups;
mod checkpoint;
mod dlq;
mod errors;
mod events;
mod fix;
mod health;
mod migrate;
mod migrations;
mod progress;
mod recover;
mod resources;
mod restore;
mod run;
mod slow_queries;
mod vacuum;
mod validate;
mod verify;

/// resilite: a supervised, actor-based resilience runtime for SQLite.
#[derive(Debug, Parser)]
#[command(name = "resilite", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the runtime and its HTTP API (health, execute, batch, query) and
    /// serve until SIGTERM or SIGINT, then drain every queued write,
    /// checkpoint the WAL and exit 0.
    Run(run::RunArgs),
    /// Inspect a database file (no server needed): integrity, WAL and file
    /// sizes, page utilization, free disk, with recommendations. Exit code
    /// 0 HEALTHY, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Health(health::HealthArgs),
    /// Checkpoint the WAL of a database file into the file itself.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Rebuild a database file to reclaim its free pages (needs no other
    /// writer; takes the write lock for its duration).
    Vacuum(vacuum::VacuumArgs),
    /// Review the dead-letter queue: list, show, requeue, discard, fixed.
    Dlq(dlq::DlqArgs),
    /// Take an online backup of a database file, verify it and record it in
    /// the journal's catalog. Exit 0 verified, 1 failed.
    Backup(backup::BackupArgs),
    /// List the backups of a database file recorded in its journal.
    Backups(backups::BackupsArgs),
    /// Verify a backup file (checksum, integrity_check, row counts) against
    /// its `.json` sidecar; with --trial-restore, also restore a copy on
    /// trial and check it opened read-write. Exit 0 ok, 1 failed.
    Verify(verify::VerifyArgs),
    /// Restore a backup file onto a database file no program has open:
    /// verified first, a `pre-restore` backup taken, the file replaced
    /// atomically. Asks unless --yes. Exit 0 restored, 1 refused or failed.
    Restore(restore::RestoreArgs),
    /// Recover a damaged database file no program has open: the newest
    /// verified backup put in its place (the damaged file kept beside it),
    /// the operation log replayed, integrity checked, the attempt recorded.
    /// Asks unless --yes. Exit 0 recovered, 1 not.
    Recover(recover::RecoverArgs),
    /// Apply the migrations of a directory (NNNN_name.up.sql, with optional
    /// NNNN_name.down.sql) to a database file no program has open, each in
    /// its own transaction, after a `pre-migration` backup; `--to N` rolls
    /// back, `--dry-run` only tries. `migrate repair` accepts changed
    /// applied migrations. Exit 0 done, 1 repair not confirmed, 2 error
    /// (the SQL error and the failed statement are printed).
    Migrate(migrate::MigrateArgs),
    /// List the migrations of a database file: applied, pending, changed,
    /// missing, failed. Exit 0 up to date, 1 pending, 2 errors.
    Migrations(migrations::MigrationsArgs),
    /// Compare a database file with an expected schema (TOML); --data runs
    /// its data rules too. Findings are recorded in the journal. Exit 0
    /// clean, 1 warnings, 2 errors, 3 could not validate.
    Validate(validate::ValidateArgs),
    /// Create what an expected schema declares and a database file lacks,
    /// never dropping data; --dedupe keep-oldest|keep-newest removes
    /// duplicates (recorded, --restore-removed puts them back); --dry-run
    /// changes nothing. Exit 0 done, 1 something cannot be fixed, 3 could
    /// not run.
    Fix(fix::FixArgs),
    /// What resilite did by itself, explained (breakers, retries given up,
    /// maintenance, backups, restores, recoveries, restarts), newest first,
    /// from the journal. Exit 0.
    Events(events::EventsArgs),
    /// The operation audit: writes with their status, tables and caller, newest first.
    Audit(audit::AuditArgs),
    /// The error log: each distinct error once, with how often and when it
    /// was seen, from the journal. Exit 0.
    Errors(errors::ErrorsArgs),
    /// The slow-query log: statements slower than `[audit] slow_threshold`,
    /// their plans, table scans and suggested indexes. Exit 0.
    SlowQueries(slow_queries::SlowQueriesArgs),
    /// Resource samples: memory, CPU, open files, file sizes, free disk,
    /// retry queue depth and write rate, newest first, from the journal.
    /// Exit 0.
    Resources(resources::ResourcesArgs),
    /// Archives of expired rows: list, verify, restore, run the
    /// `[[retention]]` policies. Exit 0 done; 1 when verify finds a damaged
    /// archive, restore is refused or fails, or a run fails.
    Archive(archive::ArchiveArgs),
}

/// Parse the command line and run the verb; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Health(args) => health::run(args),
        Command::Checkpoint(args) => checkpoint::run(args),
        Command::Vacuum(args) => vacuum::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Backups(args) => backups::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Recover(args) => recover::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Migrations(args) => migrations::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Fix(args) => fix::run(args),
        Command::Events(args) => events::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Errors(args) => errors::run(args),
        Command::SlowQueries(args) => slow_queries::run(args),
        Command::Resources(args) => resources::run(args),
        Command::Archive(args) => archive::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Open an existing database file read-write for a maintenance verb;
/// a missing file is an error, never silently created, and a path that
/// cannot work says what is wrong with it.
fn open_existing(
    path: &std::path::Path,
) -> Result<rusqlite::Connection, Box<dyn std::error::Error>> {
    if !path.is_file() {
        if let Some(problem) = explain_open_failure(path) {
            return Err(problem.message.into());
        }
        return Err(format!(
            "{} does not exist; pass an existing database with --db",
            path.display()
        )
        .into());
    }
    resilite_actors::connection::open_existing(path).map_err(|e| explained(path, e.into()).into())
}

/// `f` on the journal beside the database `db`, read-only; `T::default()`
/// when there is no journal yet.
fn read_journal<T: Default>(
    db: &std::path::Path,
    f: impl FnOnce(&rusqlite::Connection) -> resilite_actors::Result<T>,
) -> Result<T, Box<dyn std::error::Error>> {
    use resilite_actors::journal;
    let journal_db = crate::config::Config::for_database(db).journal_db();
    if !journal_db.path.is_file() {
        return Ok(T::default());
    }
    let read = resilite_actors::connection::open_read_only(&journal_db).and_then(|c| {
        journal::check_version(&c, &journal_db.path)?;
        f(&c)
    });
    Ok(read.map_err(|e| journal::explain_error(&journal_db.path, e))?)
}

/// `err`, met on `path`; when the path itself is the problem (read-only,
/// a directory...), the error that says so instead.
fn explained(path: &std::path::Path, err: resilite_actors::Error) -> resilite_actors::Error {
    use resilite_actors::ErrorClass;
    if matches!(err.class, ErrorClass::Transient | ErrorClass::Permission) {
        if let Some(mut problem) = explain_open_failure(path) {
            problem.detail = format!("{} ({})", err.detail, problem.detail);
            return problem;
        }
    }
    err
}

fn init_tracing() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let fixed = EnvFilter::try_from_env(crate::config::LOG_ENV)
        .or_else(|_| EnvFilter::try_from_default_env())
        .ok();
    let fixed_by_env = fixed.is_some();
    let filter = fixed.unwrap_or_else(|| EnvFilter::new(crate::config::DEFAULT_LOG_LEVEL));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        // Colours only for a person at a terminal, not in files and pipes.
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    // RESILITE_LOG (or RUST_LOG) wins over `[log] level`: the filter is
    // made reloadable only without them.
    if !fixed_by_env {
        crate::log_filter::install(Box::new(move |level| {
            let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())
        }));
    }
}
