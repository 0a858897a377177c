//! `resilite vacuum`: rebuild the database file to reclaim free pages.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::maintenance::{self, Maintenance};

use super::{explained, open_existing};

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// The SQLite database file.
    #[arg(long)]
    db: PathBuf,
}

pub fn run(args: VacuumArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let conn = open_existing(&args.db)?;
    let run = maintenance::run(&conn, &args.db, Maintenance::Vacuum)
        .map_err(|e| explained(&args.db, e))?;
    println!(
        "vacuum: {} -> {} bytes ({} reclaimed) in {:.1} ms",
        run.bytes_before,
        run.bytes_after,
        run.bytes_reclaimed(),
        run.duration_ms
    );
    Ok(ExitCode::SUCCESS)
}
