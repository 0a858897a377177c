//! `resilite verify`: verify a backup file against the metadata written
//! beside it (`<file>.json`), no server needed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::backup;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backup file (its sidecar `<file>.json` must be beside it).
    backup: PathBuf,
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
    let v = backup::verify(&args.backup, &info);
    if v.passed {
        println!(
            "{}: ok (checksum, integrity_check, row counts) in {} ms",
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
