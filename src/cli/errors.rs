//! `resilite errors`: the error log, each distinct error once with its
//! count, from the journal beside the database (read-only; no server
//! needed).
//!
//! Exit codes: 0 listed (also when there are none), 1 an unreadable journal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::journal::errors::list;

#[derive(Debug, Args)]
pub struct ErrorsArgs {
    /// The SQLite database file (its journal is `<db>.journal`).
    #[arg(long)]
    db: PathBuf,
    /// Print JSON (an array, most recently seen first).
    #[arg(long)]
    json: bool,
}

pub fn run(args: ErrorsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let errors = super::read_journal(&args.db, list)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&errors)?);
        return Ok(ExitCode::SUCCESS);
    }
    if errors.is_empty() {
        println!("no errors recorded for {}", args.db.display());
    }
    for e in &errors {
        println!(
            "{} {:>8}x {} {} ({}){}",
            e.signature,
            e.count,
            e.severity,
            e.class,
            e.component,
            if e.resolved { " resolved" } else { "" }
        );
        println!("  {}", e.message);
    }
    Ok(ExitCode::SUCCESS)
}
