//! `resilite vacuum`: rebuild the database file to reclaim free pages.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::open_existing;

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// The SQLite database file.
    #[arg(long)]
    db: PathBuf,
}

pub fn run(args: VacuumArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let conn = open_existing(&args.db)?;
    let size = |c: &rusqlite::Connection| -> rusqlite::Result<i64> {
        c.query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get(0),
        )
    };
    let before = size(&conn)?;
    let started = Instant::now();
    conn.execute_batch("VACUUM")?;
    let after = size(&conn)?;
    println!(
        "vacuum: {before} -> {after} bytes ({} reclaimed) in {:.2?}",
        before - after,
        started.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}
