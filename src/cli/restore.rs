//! `resilite restore`: restore a backup file onto a database file, no
//! server running.
//!
//! Refused, the database untouched, when the database is in use (another
//! connection has it open: the runtime, a shell), when the backup is
//! missing, fails verification (checksum, integrity_check, row counts
//! against its `.json` sidecar) or belongs to another database. Without
//! `--yes` it asks on a terminal and refuses when stdin is not one. Before
//! replacing the file it takes a `pre-restore` backup of it (when it is
//! readable), recorded in the journal's catalog. Exit 0 restored, 1 not.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use resilite_actors::backup::{self, LocalDir, TakeOptions, VerifyOptions};
use resilite_actors::connection::DbOptions;

use super::progress::Bar;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The SQLite database file to replace.
    #[arg(long)]
    db: PathBuf,
    /// The backup file (its sidecar `<file>.json` must be beside it).
    backup: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

pub fn run(args: RestoreArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !args.db.is_file() {
        return Err(format!(
            "{} does not exist; pass an existing database with --db",
            args.db.display()
        )
        .into());
    }
    if !args.backup.is_file() {
        return Err(format!(
            "backup {} not found; pass a backup file as `resilite backups` lists it, with its directory; the database was not changed",
            args.backup.display()
        )
        .into());
    }
    ensure_not_in_use(&args.db)?;
    let info = backup::read_sidecar(&args.backup)?;
    let bar = Bar::new("verify");
    let staged = backup::prepare_with(
        &args.backup,
        &info,
        &args.db,
        Some(&|done, total| bar.report(done, total)),
    );
    drop(bar);
    let staged = staged?;
    let question = format!(
        "replace {} with the backup {}?",
        args.db.display(),
        args.backup.display()
    );
    if !args.yes && !confirm(&question)? {
        eprintln!("restore cancelled; the database was not changed");
        return Ok(ExitCode::FAILURE);
    }
    let config = crate::config::Config::for_database(&args.db);
    let dest = LocalDir::new(config.backup_dir());
    let bar = Bar::new("pre-restore");
    let taken = backup::take_with(
        &DbOptions::new(&args.db),
        &dest,
        "pre-restore",
        &TakeOptions::default(),
        Some(&|done, total| bar.report(done, total)),
    );
    drop(bar);
    match taken {
        Ok(mut pre) => {
            let path = config.backup_dir().join(&pre.name);
            let bar = Bar::new("verify");
            let verification = backup::verify_with(
                &path,
                &pre,
                &VerifyOptions::default(),
                Some(&|done, total| bar.report(done, total)),
            );
            drop(bar);
            pre.apply(&verification);
            backup::write_sidecar(&dest, &pre)?;
            super::backup::record(&config, &pre)?;
            println!("pre-restore backup of the current file: {}", path.display());
        }
        Err(e) if e.class == resilite_actors::ErrorClass::Corruption => {
            eprintln!("warning: the current database is not readable ({e}); restoring without a pre-restore backup");
        }
        Err(e) => {
            return Err(format!(
                "the pre-restore backup of {} failed: {e}; nothing was restored",
                args.db.display()
            )
            .into())
        }
    }
    ensure_not_in_use(&args.db)?;
    let restored = backup::install(staged, &args.db)?;
    let rows: u64 = restored.row_counts.values().sum();
    println!(
        "restored {} onto {}: {} rows in {} tables, user_version {}",
        args.backup.display(),
        args.db.display(),
        rows,
        restored.row_counts.len(),
        restored.user_version
    );
    Ok(ExitCode::SUCCESS)
}

/// Refuse when another connection has `db` open: an exclusive lock (with
/// `locking_mode=EXCLUSIVE`, which in WAL mode needs every other
/// connection gone) is not granted within a short wait. A file SQLite
/// cannot read as a database passes (nothing can be using it).
pub(super) fn ensure_not_in_use(db: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_millis(200))?;
    let locked = conn
        .query_row("PRAGMA locking_mode=EXCLUSIVE", [], |_| Ok(()))
        .and_then(|()| {
            conn.execute_batch("BEGIN EXCLUSIVE; SELECT count(*) FROM sqlite_schema; ROLLBACK;")
        });
    drop(conn);
    // A file SQLite cannot read as a database is no program's database.
    let unreadable = matches!(
        &locked,
        Err(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    );
    if unreadable {
        return Ok(());
    }
    locked.map_err(|e| {
        format!(
            "{} is in use ({e}): stop the resilite server or any program that has it open, or restore online with POST /v1/restore; the database was not changed",
            db.display()
        )
        .into()
    })
}

/// Ask `question` on the terminal; refuse when stdin is not one.
pub(super) fn confirm(question: &str) -> Result<bool, Box<dyn std::error::Error>> {
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "{question} Confirm on a terminal or pass --yes; the database was not changed"
        )
        .into());
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}
