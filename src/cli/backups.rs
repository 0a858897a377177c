//! `resilite backups`: list the backups of a database file from the
//! journal's catalog, no server needed. A compressed backup's uncompressed
//! size, which the catalog has no column for, is read from its sidecar in
//! the backup directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::backup::{self, LocalDir};
use resilite_actors::connection::open_read_only;
use resilite_actors::journal;

use super::backup::size_text;

#[derive(Debug, Args)]
pub struct BackupsArgs {
    /// The SQLite database file (its journal is `<db>.journal`).
    #[arg(long)]
    db: PathBuf,
    /// Where the backups are (their sidecars give a compressed backup's
    /// uncompressed size); default: `backups/` beside the database.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print JSON (an array of backups, oldest first).
    #[arg(long)]
    json: bool,
}

pub fn run(args: BackupsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = crate::config::Config::for_database(&args.db);
    let journal_db = config.journal_db();
    let mut backups = if journal_db.path.is_file() {
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
    let dir = args.dir.unwrap_or_else(|| config.backup_dir());
    backup::fill_from_sidecars(&LocalDir::new(&dir), &mut backups);
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
        println!("{}  {}  {}", b.name, size_text(b), state);
    }
    Ok(ExitCode::SUCCESS)
}
