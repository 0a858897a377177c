//! `resilite backups`: list the backups of a database file from the
//! journal's catalog, no server needed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::connection::open_read_only;
use resilite_actors::journal;

#[derive(Debug, Args)]
pub struct BackupsArgs {
    /// The SQLite database file (its journal is `<db>.journal`).
    #[arg(long)]
    db: PathBuf,
    /// Print JSON (an array of backups, oldest first).
    #[arg(long)]
    json: bool,
}

pub fn run(args: BackupsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = crate::config::Config::for_database(&args.db);
    let journal_db = config.journal_db();
    let backups = if journal_db.path.is_file() {
        open_read_only(&journal_db)
            .and_then(|c| {
                // A journal from before the catalog has no backups.
                if journal::check_version(&c, &journal_db.path)? < 6 {
                    return Ok(Vec::new());
                }
                journal::backups::live(&c)
            })
            .map_err(|e| journal::explain_error(&journal_db.path, e))?
    } else {
        Vec::new()
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&backups)?);
        return Ok(ExitCode::SUCCESS);
    }
    if backups.is_empty() {
        println!(
            "no backups of {} (take one with `resilite backup --db {}`)",
            args.db.display(),
            args.db.display()
        );
    }
    for b in &backups {
        let state = match b.verified {
            Some(true) => "verified".to_string(),
            Some(false) => format!("FAILED: {}", b.verify_errors.join("; ")),
            None => "not verified".to_string(),
        };
        println!("{}  {} bytes  {}", b.name, b.size, state);
    }
    Ok(ExitCode::SUCCESS)
}
