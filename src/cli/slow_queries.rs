//! `resilite slow-queries`: the slow-query log, from the journal beside
//! the database (read-only; no server needed).
//!
//! Exit codes: 0 listed (also when there are none), 1 an unreadable journal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::journal::slow_queries::list;

#[derive(Debug, Args)]
pub struct SlowQueriesArgs {
    /// The SQLite database file (its journal is `<db>.journal`).
    #[arg(long)]
    db: PathBuf,
    /// Print JSON (an array, slowest in total first).
    #[arg(long)]
    json: bool,
}

pub fn run(args: SlowQueriesArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let queries = super::read_journal(&args.db, list)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&queries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if queries.is_empty() {
        println!("no slow queries recorded for {}", args.db.display());
    }
    for q in &queries {
        println!(
            "{} {} {}x max {:.1} ms total {:.1} ms{}",
            q.hash,
            q.kind.as_str(),
            q.count,
            q.max_ms,
            q.total_ms,
            if q.scan { " SCAN" } else { "" }
        );
        println!("  {}", q.sql);
        for line in &q.plan {
            println!("    {line}");
        }
        if let Some(s) = &q.suggestion {
            println!("  suggestion: {s}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
