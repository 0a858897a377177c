//! `resilite resources`: the resource samples (memory, CPU, open files,
//! file sizes, free disk, retry queue depth, write rate), newest first,
//! from the journal beside the database (read-only; no server needed).
//!
//! Exit codes: 0 listed (also when there are none), 1 bad flags or an
//! unreadable journal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::journal::resources::list;

use crate::runtime::resource_limit;

#[derive(Debug, Args)]
pub struct ResourcesArgs {
    /// The SQLite database file (its journal is `<db>.journal`).
    #[arg(long)]
    db: PathBuf,
    /// At most this many, newest first (default 60, at most 10000).
    #[arg(long)]
    limit: Option<usize>,
    /// Print JSON (an array, newest first).
    #[arg(long)]
    json: bool,
}

pub fn run(args: ResourcesArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let limit = resource_limit(args.limit)?;
    let samples = super::read_journal(&args.db, |c| list(c, limit))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&samples)?);
        return Ok(ExitCode::SUCCESS);
    }
    if samples.is_empty() {
        println!(
            "no resource samples recorded for {} (one is taken every [health] resource_interval while resilite runs)",
            args.db.display()
        );
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let shown = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for s in &samples {
        println!(
            "{} rss {} MiB cpu {} fds {} db {:.2} MiB wal {:.2} MiB journal {:.2} MiB free {} MiB queue {} writes/s {}",
            s.at,
            shown(s.rss_bytes.map(|b| format!("{:.1}", mib(b)))),
            shown(s.cpu_pct.map(|p| format!("{p:.1}%"))),
            shown(s.open_fds.map(|n| n.to_string())),
            mib(s.db_bytes),
            mib(s.wal_bytes),
            mib(s.journal_bytes),
            shown(s.disk_free_bytes.map(|b| format!("{:.0}", mib(b)))),
            shown(s.queue_depth.map(|n| n.to_string())),
            shown(s.write_rate.map(|r| format!("{r:.1}"))),
        );
    }
    Ok(ExitCode::SUCCESS)
}
