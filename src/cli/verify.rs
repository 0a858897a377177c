//! `resilite verify`: verify a backup file against the metadata written
//! beside it (`<file>.json`), no server needed; with `--trial-restore`,
//! also restore it on trial in a temporary directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::backup::{self, VerifyOptions};
use resilite_actors::connection::DbOptions;

use super::progress::Bar;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup file (its sidecar `<file>.json` must be beside it).
    backup: PathBuf,
    /// Also restore it on trial: copy it into a temporary directory
    /// (TMPDIR), open the copy read-write as the runtime would (WAL, its
    /// default pragmas) and run `PRAGMA integrity_check` there.
    #[arg(long)]
    trial_restore: bool,
}

pub fn run(args: VerifyArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !args.backup.is_file() {
        return Err(format!(
            "{} does not exist; pass a backup file as `resilite backups` lists it, with its directory",
            args.backup.display()
        )
        .into());
    }
    let info = backup::read_sidecar(&args.backup)?;
    let options = VerifyOptions {
        // The runtime's defaults; the path is the trial copy's.
        trial_restore: args.trial_restore.then(|| DbOptions::new(&args.backup)),
    };
    let bar = Bar::new("verify");
    let v = backup::verify_with(
        &args.backup,
        &info,
        &options,
        Some(&|done, total| bar.report(done, total)),
    );
    drop(bar);
    if v.passed {
        let trial = if args.trial_restore {
            ", trial restore"
        } else {
            ""
        };
        println!(
            "{}: ok (checksum, integrity_check, row counts{trial}) in {} ms",
            args.backup.display(),
            v.duration_ms
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "error: {} failed verification: {}; do not restore from it: use another backup (`resilite backups`)",
        args.backup.display(),
        v.errors.join("; ")
    );
    Ok(ExitCode::FAILURE)
}
