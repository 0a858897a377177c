//! `resilite events`: what resilite did by itself, explained, newest first,
//! from the journal beside the database (read-only; no server needed).
//!
//! Exit codes: 0 listed (also when there are none), 1 bad flags or an
//! unreadable journal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::journal::events::{page, EventPage};

use crate::runtime::event_query;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The SQLite database file (its journal is `<db>.journal`).
    #[arg(long)]
    db: PathBuf,
    /// Only events this recent: 30m, 1h, 7days.
    #[arg(long)]
    since: Option<String>,
    /// Only events of this kind (breaker_opened, dead_lettered, backup, recovery...).
    #[arg(long)]
    kind: Option<String>,
    /// Only events of this severity or worse: info, warning, critical.
    #[arg(long)]
    severity: Option<String>,
    /// At most this many (default 100).
    #[arg(long)]
    limit: Option<usize>,
    /// Only events older than this id (the `next` of a previous page).
    #[arg(long)]
    before: Option<i64>,
    /// Print JSON: `{"events": [...], "next": <id or null>}`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EventsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let query = event_query(
        args.since.as_deref(),
        args.kind.as_deref(),
        args.severity.as_deref(),
        args.limit,
        args.before,
    )?;
    let EventPage { events, next } = super::read_journal(&args.db, |c| page(c, &query))?;
    if args.json {
        let page = EventPage { events, next };
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        println!("no events recorded for {}", args.db.display());
    }
    for r in &events {
        let e = &r.event;
        println!(
            "#{} {} {} {} [{}]",
            r.id, r.at, e.severity, e.kind, e.subject
        );
        println!("  {}", e.summary);
        println!("  cause: {}", e.cause);
        println!("  decision: {}", e.decision);
        if let Some(action) = &e.operator_action {
            println!("  to do: {action}");
        }
    }
    if let Some(next) = next {
        println!("(older events: --before {next})");
    }
    Ok(ExitCode::SUCCESS)
}
