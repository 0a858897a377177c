//! `resilite migrations`: where a database file stands against a directory
//! of migrations (each applied, pending, changed, missing or failed, and
//! what blocks `resilite migrate`), or its history alone without `--dir`.
//! Reads only; the database may be in use.
//!
//! Exit codes: 0 every migration applied, nothing wrong; 1 warnings
//! (migrations pending); 2 errors (a changed, missing or failed migration,
//! a `user_version` the history does not explain, files that cannot be
//! used).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::connection::{open_read_only, DbOptions};
use resilite_actors::migrate;
use resilite_actors::{Error, MigrationState, MigrationStatus, Migrations};

#[derive(Debug, Args)]
pub struct MigrationsArgs {
    /// The SQLite database file.
    #[arg(long)]
    db: PathBuf,
    /// The migrations (NNNN_name.up.sql, NNNN_name.down.sql); without it,
    /// the history recorded in the database alone.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the status (or the error) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: MigrationsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let status = match status(&args) {
        Ok(s) => s,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "error": e }))?
                );
            }
            eprintln!("error: {}", e.message);
            return Ok(ExitCode::from(2));
        }
    };
    let failed = status.in_state(MigrationState::Failed).count() > 0;
    let code = if status.is_blocked() || failed {
        2
    } else if status.pending() > 0 {
        1
    } else {
        0
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::from(code));
    }
    println!(
        "{}: user_version {}; migrations: {}",
        args.db.display(),
        status.user_version,
        status
            .source
            .as_deref()
            .unwrap_or("the history alone (no --dir)")
    );
    if status.migrations.is_empty() {
        println!("  no migration");
    }
    for m in &status.migrations {
        let state = match m.state {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Changed => "CHANGED",
            MigrationState::Missing => "MISSING",
            MigrationState::Failed => "FAILED",
        };
        let mut line = format!("  {:>6}  {:<30} {state}", m.version, m.name);
        if let Some(at) = &m.applied_at {
            line.push_str(&format!("  {at}"));
        }
        if let Some(e) = &m.error {
            line.push_str(&format!("  {e}"));
        }
        println!("{line}");
    }
    for p in &status.problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::from(code))
}

fn status(args: &MigrationsArgs) -> Result<MigrationStatus, Error> {
    if !args.db.is_file() {
        return Err(Error::bad_input(format!(
            "{} does not exist; pass an existing database with --db",
            args.db.display()
        )));
    }
    let source = args.dir.as_ref().map(Migrations::from_dir).transpose()?;
    let conn = open_read_only(&DbOptions::new(&args.db))?;
    migrate::status(&conn, source.as_ref())
}
