//! `resilite dlq`: review the dead-letter queue in a database's journal
//! (no server needed; a running server picks requeued entries up).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use resilite_actors::connection::{explain_open_failure, open_read_only, DbOptions};
use resilite_actors::journal::{self, queue};
use resilite_actors::maintenance::now_ms;
use resilite_actors::retry_queue::{Entry, Resolution};
use resilite_actors::Statement;

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// The application database; its journal is `<db>.journal`.
    #[arg(long)]
    db: PathBuf,
    /// The journal file, when not beside the database.
    #[arg(long)]
    journal: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the dead entries: id, kind, attempts, reason.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Include discarded entries.
        #[arg(long)]
        all: bool,
    },
    /// Show one entry with its payload and error history (JSON).
    Show { id: i64 },
    /// Send an entry (or every dead entry) back to the queue, due now.
    Requeue {
        id: Option<i64>,
        /// Requeue every dead entry not yet discarded.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Discard an entry: kept in the journal, marked discarded.
    Discard { id: i64 },
    /// Mark an entry fixed by hand: not replayed, kept in the journal.
    Fixed { id: i64 },
}

pub fn run(args: DlqArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let journal = args
        .journal
        .clone()
        .unwrap_or_else(|| crate::Config::for_database(&args.db).journal_path());
    if !journal.is_file() {
        if let Some(problem) = explain_open_failure(&journal) {
            return Err(format!("journal: {}", problem.message).into());
        }
        return Err(format!(
            "journal {} does not exist: pass the database with --db (or the journal with --journal)",
            journal.display()
        )
        .into());
    }
    let options = DbOptions::new(&journal);
    let read = || -> resilite_actors::Result<rusqlite::Connection> {
        let conn = open_read_only(&options).map_err(|e| journal::explain_error(&journal, e))?;
        journal::check_version(&conn, &journal)?;
        Ok(conn)
    };
    let on_journal = |e: resilite_actors::Error| journal::explain_error(&journal, e);
    match args.action {
        Action::List { json, all } => {
            let entries = queue::dead_letters(&read()?, all).map_err(on_journal)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print_table(&entries);
            }
        }
        Action::Show { id } => match queue::entry_by_id(&read()?, id).map_err(on_journal)? {
            Some(entry) => println!("{}", serde_json::to_string_pretty(&entry)?),
            None => return Err(format!("no queue entry {id}: see `resilite dlq list`").into()),
        },
        Action::Requeue { id, all } => {
            if id.is_none() && !all {
                return Err("give an entry id, or --all to requeue every dead entry".into());
            }
            let n = apply(&journal, &queue::requeue(id, now_ms()))?;
            if n == 0 {
                return Err(match id {
                    Some(id) => format!("no dead entry {id}: see `resilite dlq list`"),
                    None => "the dead-letter queue is empty".into(),
                }
                .into());
            }
            println!("requeued {n} entr{}", if n == 1 { "y" } else { "ies" });
        }
        Action::Discard { id } => resolve(&journal, id, Resolution::Discarded)?,
        Action::Fixed { id } => resolve(&journal, id, Resolution::Fixed)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Close dead entry `id` with `resolution`.
fn resolve(
    journal: &std::path::Path,
    id: i64,
    resolution: Resolution,
) -> Result<(), Box<dyn std::error::Error>> {
    if apply(journal, &queue::resolve(id, resolution, now_ms()))? == 0 {
        return Err(format!("no dead entry {id}: see `resilite dlq list`").into());
    }
    println!("entry {id}: {}", resolution.as_str());
    Ok(())
}

/// Run `statements` in one transaction on the journal (there is no
/// journal writer without a server); rows changed.
fn apply(
    journal: &std::path::Path,
    statements: &[Statement],
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut conn = super::open_existing(journal)?;
    journal::check_version(&conn, journal)?;
    queue::apply(&mut conn, statements)
        .map_err(|e| journal::explain_error(journal, super::explained(journal, e)).into())
}

fn print_table(entries: &[Entry]) {
    if entries.is_empty() {
        println!("the dead-letter queue is empty");
        return;
    }
    println!(
        "{:>8}  {:<12} {:>8}  {:<8} reason",
        "id", "kind", "attempts", "poisoned"
    );
    for e in entries {
        println!(
            "{:>8}  {:<12} {:>8}  {:<8} {}",
            e.id,
            e.kind,
            e.attempts,
            if e.poisoned { "yes" } else { "no" },
            e.dead_reason
                .as_deref()
                .or(e.resolution.map(Resolution::as_str))
                .unwrap_or("")
        );
    }
}
