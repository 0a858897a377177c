//! `resilite validate`: compare a database file with an expected schema
//! (a TOML file, or the schema a directory of migrations produces), and
//! with `--data` run its data rules; no server needed. The
//! findings are recorded in the journal beside the database (created if
//! needed), a finding seen again updating the open one.
//!
//! Exit codes: 0 no warning or error (info findings allowed), 1 warnings
//! only, 2 at least one error, 3 it could not validate (a bad schema
//! file, a missing or unreadable database).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use resilite_actors::connection::{open_read_only, open_read_write, DbOptions};
use resilite_actors::journal::{self, findings};
use resilite_actors::maintenance::now_ms;
use resilite_actors::migrate::Migrations;
use resilite_actors::schema::{self, DataBounds, ExpectedSchema, ValidateOptions};
use resilite_actors::Statement;

use super::explained;

/// Exit code when validation could not run.
pub(super) const COULD_NOT_RUN: u8 = 3;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The SQLite database file.
    #[arg(long)]
    db: PathBuf,
    /// The expected schema (TOML: tables, columns, indexes, data rules).
    #[arg(
        long,
        required_unless_present = "migrations",
        conflicts_with = "migrations"
    )]
    schema: Option<PathBuf>,
    /// Or: the schema a directory of migrations produces (their up scripts
    /// applied to an empty scratch database), every table required.
    #[arg(long)]
    migrations: Option<PathBuf>,
    /// Also run the data rules (unique, not_null, check, foreign_keys) and
    /// PRAGMA foreign_key_check, scanning the tables in batches.
    #[arg(long)]
    data: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The journal file, when not beside the database.
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// Exit 0 clean, 1 warnings, 2 errors, 3 could not validate.
pub fn run(args: ValidateArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match validate(&args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(COULD_NOT_RUN))
        }
    }
}

fn validate(args: &ValidateArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let expected = match (&args.schema, &args.migrations) {
        (Some(file), _) => ExpectedSchema::from_toml_file(file)?,
        (None, Some(dir)) => ExpectedSchema::from_migrations(&Migrations::from_dir(dir)?)?,
        (None, None) => return Err("pass --schema FILE or --migrations DIR".into()),
    };
    let conn = open_db_read_only(&args.db)?;
    let options = ValidateOptions { data: args.data };
    let report = schema::validate(&conn, &expected, options, DataBounds::default())
        .map_err(|e| explained(&args.db, e))?;
    drop(conn);
    let mut scopes = vec![findings::Scope::Structure];
    if args.data {
        scopes.push(findings::Scope::Data);
    }
    let journal = journal_path(&args.db, args.journal.as_deref());
    if let Err(e) = record(
        &journal,
        &findings::record_statements(&report.findings, &scopes, now_ms()),
    ) {
        eprintln!("warning: the findings were not recorded in the journal: {e}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// A read-only connection to an existing database (nothing is created).
pub(super) fn open_db_read_only(
    db: &Path,
) -> Result<rusqlite::Connection, Box<dyn std::error::Error>> {
    if !db.is_file() {
        return Err(format!(
            "{} does not exist; pass an existing database with --db",
            db.display()
        )
        .into());
    }
    Ok(open_read_only(&DbOptions::new(db)).map_err(|e| explained(db, e))?)
}

/// The journal: `--journal`, or the one beside the database.
pub(super) fn journal_path(db: &Path, journal: Option<&Path>) -> PathBuf {
    journal
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::Config::for_database(db).journal_path())
}

/// Apply `statements` to the journal (created and migrated if needed) in
/// one transaction, as the other verbs record (there is no journal writer
/// without a server).
pub(super) fn record(
    journal: &Path,
    statements: &[Statement],
) -> Result<(), Box<dyn std::error::Error>> {
    if statements.is_empty() {
        return Ok(());
    }
    let options = DbOptions::new(journal);
    let conn = open_read_write(&options)
        .and_then(|c| journal::migrate(&c).map(|()| c))
        .map_err(|e| journal::explain_error(journal, e))?;
    journal::backups::apply(&conn, statements).map_err(|e| journal::explain_error(journal, e))?;
    Ok(())
}
