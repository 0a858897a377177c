//! `resilite audit`: the operation audit (`[audit] level`), newest first,
//! from the journal beside the database (read-only; no server needed).
//!
//! Exit codes: 0 listed (also when there are none), 1 bad flags or an
//! unreadable journal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::journal::audit::page;
use resilite_actors::AuditPage;

use crate::runtime::audit_query;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The SQLite database file (its journal is `<db>.journal`).
    #[arg(long)]
    db: PathBuf,
    /// Only operations this recent: 30m, 1h, 7days.
    #[arg(long)]
    since: Option<String>,
    /// Only operations with this status: committed, rolled_back, failed, queued.
    #[arg(long)]
    status: Option<String>,
    /// Only operations that inserted into, updated or deleted from this table.
    #[arg(long)]
    table: Option<String>,
    /// At most this many (default 100).
    #[arg(long)]
    limit: Option<usize>,
    /// Only operations older than this id (the `next` of a previous page).
    #[arg(long)]
    before: Option<i64>,
    /// Print JSON: `{"records": [...], "next": <id or null>}`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: AuditArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let query = audit_query(
        args.since.as_deref(),
        args.status.as_deref(),
        args.table.as_deref(),
        args.limit,
        args.before,
    )?;
    let AuditPage { records, next } = super::read_journal(&args.db, |c| page(c, &query))?;
    if args.json {
        let page = AuditPage { records, next };
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        println!("no operations recorded for {}", args.db.display());
    }
    for r in &records {
        let at = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.at_ms.max(0) as u64),
        );
        let batch = r.batch.map_or_else(|| "-".to_owned(), |b| b.to_string());
        println!(
            "#{} {at} {} {} batch {batch} rows {} {}us tables [{}]",
            r.id,
            r.status.as_str(),
            r.kind.as_str(),
            r.rows,
            r.duration_us,
            r.tables.join(", ")
        );
        let c = &r.context;
        if c.request_id.is_some() || c.caller.is_some() || c.client.is_some() {
            println!(
                "  request {} caller {} client {}",
                c.request_id.as_deref().unwrap_or("-"),
                c.caller.as_deref().unwrap_or("-"),
                c.client.as_deref().unwrap_or("-")
            );
        }
        if let (Some(class), Some(error)) = (&r.error_class, &r.error) {
            println!("  {class}: {error}");
        }
        if let Some(id) = r.queue_id {
            println!("  retry queue entry {id}");
        }
    }
    if let Some(next) = next {
        println!("(older operations: --before {next})");
    }
    Ok(ExitCode::SUCCESS)
}
