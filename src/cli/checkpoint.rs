//! `resilite checkpoint`: move the WAL back into the database file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::maintenance::{self, Maintenance};
use resilite_actors::CheckpointMode;

use super::{explained, open_existing};

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
    let run = maintenance::run(&conn, &args.db, Maintenance::Checkpoint(mode))
        .map_err(|e| explained(&args.db, e))?;
    let Some(outcome) = run.checkpoint else {
        return Err("the checkpoint reported nothing".into());
    };
    if outcome.wal_frames < 0 {
        println!(
            "{} is not in WAL mode: nothing to checkpoint",
            args.db.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "checkpoint {}: {} of {} WAL frames checkpointed, {} bytes reclaimed in {:.1} ms{}",
        mode.as_str(),
        outcome.checkpointed_frames,
        outcome.wal_frames,
        run.bytes_reclaimed(),
        run.duration_ms,
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
