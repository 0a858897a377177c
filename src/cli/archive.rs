//! `resilite archive`: the archives of expired rows, no server needed.
//!
//! - `list --db PATH [--json]`: the archive catalog. Exit 0.
//! - `verify --db PATH ID`: check archive ID (SHA-256, decompression,
//!   `quick_check`, row count and rowid range). Exit 0 sound, 1 not.
//! - `restore --db PATH ID [--yes]`: verify, then put its rows back
//!   (rows whose key is already there are skipped and counted). Asks
//!   unless --yes. Exit 0 restored, 1 refused or failed.
//! - `run --db PATH --config C`: one archive run of the config's
//!   `[[retention]]` policies (completing what an interrupted run left
//!   first). Exit 0 done, 1 failed.
//!
//! These verbs open the database read-write themselves: run them while no
//! runtime serves the database (a running runtime has `POST /v1/archives/…`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use resilite_actors::archive::{self, ArchiveRecord, Host, WriterJob};
use resilite_actors::connection::open_read_write;
use resilite_actors::journal;
use resilite_actors::{Event, Result, Statement};
use rusqlite::Connection;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// List the archives recorded in the journal, oldest first.
    List {
        /// The SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// The config file (for `database.journal_path`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON (an array of archives).
        #[arg(long)]
        json: bool,
    },
    /// Verify an archive file against its catalog row.
    Verify {
        /// The SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// The config file (for `database.journal_path`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The archive's id, as `resilite archive list` shows it.
        id: i64,
    },
    /// Put an archive's rows back into the database.
    Restore {
        /// The SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// The config file (for `database.journal_path`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The archive's id, as `resilite archive list` shows it.
        id: i64,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Run the retention policies of a config file once.
    Run {
        /// The SQLite database file (default: the config's `database.path`).
        #[arg(long)]
        db: Option<PathBuf>,
        /// The config file with the `[[retention]]` policies.
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn run(args: ArchiveArgs) -> std::result::Result<ExitCode, Box<dyn std::error::Error>> {
    match args.command {
        ArchiveCommand::List { db, config, json } => {
            let config = load(&db, config.as_deref())?;
            let host = CliHost::open(&config)?;
            let list = host.catalog()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                println!("no archives of {}", db.display());
            }
            for a in &list {
                println!(
                    "{:>5}  {:<9} {:<16} {:>8} rows  rowids {}..{}  {} .. {}  {} bytes ({:.1}x)  {}{}",
                    a.id,
                    a.status.as_str(),
                    a.table,
                    a.rows,
                    a.first_rowid,
                    a.last_rowid,
                    a.min_value.as_deref().unwrap_or("-"),
                    a.max_value.as_deref().unwrap_or("-"),
                    a.stored_size,
                    a.ratio,
                    a.path,
                    if a.file_deleted_at_ms.is_some() { " (file deleted)" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ArchiveCommand::Verify { db, config, id } => {
            let config = load(&db, config.as_deref())?;
            let host = CliHost::open(&config)?;
            let record = host.get(id)?;
            match archive::verify_file(&record) {
                Ok(check) => {
                    println!(
                        "archive {id} ({}): verified, {} rows, sha256 {}",
                        record.path, check.rows, check.sha256
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {}", e.message);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ArchiveCommand::Restore {
            db,
            config,
            id,
            yes,
        } => {
            let config = load(&db, config.as_deref())?;
            let host = CliHost::open(&config)?;
            let record = host.get(id)?;
            let question = format!(
                "put the {} rows of archive {id} back into table {} of {}?",
                record.rows,
                record.table,
                db.display()
            );
            if !yes && !super::restore::confirm(&question)? {
                eprintln!("restore cancelled; the database was not changed");
                return Ok(ExitCode::FAILURE);
            }
            let counts = archive::restore(&record, &host)?;
            println!(
                "archive {id}: {} rows restored, {} skipped (already there)",
                counts.restored, counts.skipped
            );
            Ok(ExitCode::SUCCESS)
        }
        ArchiveCommand::Run { db, config } => {
            let mut loaded = Config::load(&config)?;
            if let Some(db) = db {
                loaded.database.path = db;
            }
            if !loaded.database.path.is_file() {
                return Err(format!(
                    "{} does not exist; pass an existing database with --db",
                    loaded.database.path.display()
                )
                .into());
            }
            if loaded.retention.is_empty() {
                println!(
                    "{} has no [[retention]] policy: nothing to do",
                    config.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let host = CliHost::open(&loaded)?;
            let report = archive::run(
                &loaded.app_db(),
                &loaded.retention,
                &loaded.archive_options(),
                &host,
            );
            let report = match report {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            if report.resumed + report.orphans_removed + report.scratch_removed > 0 {
                println!(
                    "completed {} archives an interrupted run left; removed {} unrecorded files and {} temporary files",
                    report.resumed, report.orphans_removed, report.scratch_removed
                );
            }
            for t in &report.tables {
                println!(
                    "{}: {} rows archived in {} files, {} rows purged",
                    t.table, t.archived_rows, t.archives, t.purged_rows
                );
            }
            if report.kept_rows > 0 {
                println!(
                    "{} archived rows changed after their archive was written: they stayed in the database with their change (see `resilite events --kind archive`)",
                    report.kept_rows
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Defaults for `db`, or the config file's settings with `db` as database.
fn load(
    db: &Path,
    config: Option<&Path>,
) -> std::result::Result<Config, Box<dyn std::error::Error>> {
    let mut c = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    c.database.path = db.to_path_buf();
    Ok(c)
}

/// The CLI's own connections: the database read-write (its writer, while
/// no runtime serves it) and the journal.
struct CliHost {
    app: Option<Connection>,
    journal: Connection,
    journal_path: PathBuf,
}

impl CliHost {
    fn open(config: &Config) -> std::result::Result<CliHost, Box<dyn std::error::Error>> {
        let journal_db = config.journal_db();
        let journal = open_read_write(&journal_db)
            .and_then(|c| journal::migrate(&c).map(|()| c))
            .map_err(|e| journal::explain_error(&journal_db.path, e))?;
        let app = if config.database.path.is_file() {
            Some(super::open_existing(&config.database.path)?)
        } else {
            None
        };
        Ok(CliHost {
            app,
            journal,
            journal_path: journal_db.path,
        })
    }

    fn get(&self, id: i64) -> Result<ArchiveRecord> {
        journal::archives::get(&self.journal, id)
            .map_err(|e| journal::explain_error(&self.journal_path, e))
    }
}

impl Host for CliHost {
    fn on_writer(&self, job: WriterJob) -> Result<(u64, u64)> {
        match &self.app {
            Some(conn) => job(conn),
            None => Err(resilite_actors::Error::bad_input(
                "the database does not exist; pass an existing database with --db",
            )),
        }
    }

    fn journal(&self, statements: Vec<Statement>) -> Result<()> {
        journal::archives::apply(&self.journal, &statements)
    }

    fn catalog(&self) -> Result<Vec<ArchiveRecord>> {
        journal::archives::list(&self.journal)
    }

    fn event(&self, event: Event) {
        if let Err(e) = journal::events::insert(&self.journal, &event) {
            tracing::warn!(detail = %e.detail, "could not record an event in the journal");
        }
        tracing::info!(kind = %event.kind, "{}", event.summary);
    }
}
