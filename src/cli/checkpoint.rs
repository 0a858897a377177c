//! `resilite checkpoint`: move the WAL back into the database file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::writer::{checkpoint, CheckpointMode};

use super::open_existing;

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The SQLite database file.
    #[arg(long)]
    db: PathBuf,
    /// passive: no waiting; full: wait for readers; restart / truncate:
    /// also restart (truncate) the WAL.
    #[arg(long, value_enum, default_value = "truncate")]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    Passive,
    Full,
    Restart,
    Truncate,
}

pub fn run(args: CheckpointArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let conn = open_existing(&args.db)?;
    let mode = match args.mode {
        Mode::Passive => CheckpointMode::Passive,
        Mode::Full => CheckpointMode::Full,
        Mode::Restart => CheckpointMode::Restart,
        Mode::Truncate => CheckpointMode::Truncate,
    };
    let outcome = checkpoint(&conn, mode)?;
    if outcome.wal_frames < 0 {
        println!(
            "{} is not in WAL mode: nothing to checkpoint",
            args.db.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "checkpoint {:?}: {} of {} WAL frames checkpointed{}",
        mode,
        outcome.checkpointed_frames,
        outcome.wal_frames,
        if outcome.busy {
            " (busy: a reader or writer kept it from finishing)"
        } else {
            ""
        }
    );
    Ok(if outcome.busy {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
