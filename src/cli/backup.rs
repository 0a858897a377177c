//! `resilite backup`: take a verified backup of a database file, no server
//! needed, and record it in the journal's catalog.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::backup::{
    self, Compress, LocalDir, TakeOptions, VerifyOptions, DEFAULT_COMPRESS_LEVEL,
    MAX_COMPRESS_LEVEL, MIN_COMPRESS_LEVEL,
};
use resilite_actors::connection::{open_read_write, DbOptions};
use resilite_actors::journal;

use super::explained;
use super::progress::Bar;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The SQLite database file.
    #[arg(long)]
    db: PathBuf,
    /// Why it is taken: 1 to 64 letters, digits, `-` or `_`.
    #[arg(long, default_value = "manual")]
    label: String,
    /// Where to write it; default: `backups/` beside the database.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// `none`: a `.db` file as SQLite wrote it; `zstd`: a zstd-compressed
    /// `.db.zst` file.
    #[arg(long, default_value = "none", value_parser = ["none", "zstd"])]
    compress: String,
    /// The zstd level with `--compress zstd`: 1 to 19.
    #[arg(long, default_value_t = DEFAULT_COMPRESS_LEVEL,
          value_parser = clap::value_parser!(i32).range(MIN_COMPRESS_LEVEL as i64..=MAX_COMPRESS_LEVEL as i64))]
    compress_level: i32,
}

pub fn run(args: BackupArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !args.db.is_file() {
        return Err(format!(
            "{} does not exist; pass an existing database with --db",
            args.db.display()
        )
        .into());
    }
    let config = crate::config::Config::for_database(&args.db);
    let dir = args.dir.unwrap_or_else(|| config.backup_dir());
    let dest = LocalDir::new(&dir);
    let options = TakeOptions {
        compress: if args.compress == "zstd" {
            Compress::Zstd
        } else {
            Compress::None
        },
        compress_level: args.compress_level,
    };
    let bar = Bar::new("backup");
    let taken = backup::take_with(
        &DbOptions::new(&args.db),
        &dest,
        &args.label,
        &options,
        Some(&|done, total| bar.report(done, total)),
    );
    drop(bar);
    let mut info = taken.map_err(|e| explained(&args.db, e))?;
    let path = dir.join(&info.name);
    let bar = Bar::new("verify");
    let verification = backup::verify_with(
        &path,
        &info,
        &VerifyOptions::default(),
        Some(&|done, total| bar.report(done, total)),
    );
    drop(bar);
    info.apply(&verification);
    backup::write_sidecar(&dest, &info)?;
    record(&config, &info)?;
    if !verification.passed {
        eprintln!(
            "error: backup {} was written but failed verification: {}; check the disk holding {}",
            path.display(),
            verification.errors.join("; "),
            dir.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let rows: u64 = info.row_counts.values().sum();
    println!(
        "backup {}: {}, {} pages, {} rows in {} tables, {} ms; verified",
        path.display(),
        size_text(&info),
        info.page_count,
        rows,
        info.row_counts.len(),
        info.duration_ms
    );
    Ok(ExitCode::SUCCESS)
}

/// The stored size of a backup, and for a compressed one the size of the
/// database inside (`unknown` when its sidecar was not found).
pub(super) fn size_text(info: &resilite_actors::BackupInfo) -> String {
    match (info.is_compressed(), info.uncompressed_size) {
        (false, _) => format!("{} bytes", info.size),
        (true, Some(plain)) => format!("{} bytes (zstd; {plain} uncompressed)", info.size),
        (true, None) => format!(
            "{} bytes (zstd; uncompressed size unknown: sidecar not read)",
            info.size
        ),
    }
}

/// Take a backup of `db` labelled `label` into its default backup
/// directory, verify it, write its sidecar and record it in the journal's
/// catalog, as `resilite backup` does: a verb's own backup (`resilite
/// migrate`'s `pre-migration`). The backup's path; an error when it could
/// not be taken or failed verification.
pub(super) fn take_verified(
    db: &std::path::Path,
    label: &str,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let config = crate::config::Config::for_database(db);
    let dir = config.backup_dir();
    let dest = LocalDir::new(&dir);
    let mut info = backup::take_with(
        &DbOptions::new(db),
        &dest,
        label,
        &TakeOptions::default(),
        None,
    )
    .map_err(|e| explained(db, e))?;
    let path = dir.join(&info.name);
    let verification = backup::verify_with(&path, &info, &VerifyOptions::default(), None);
    info.apply(&verification);
    backup::write_sidecar(&dest, &info)?;
    record(&config, &info)?;
    if !verification.passed {
        return Err(format!(
            "the {label} backup {} failed verification: {}",
            path.display(),
            verification.errors.join("; ")
        )
        .into());
    }
    Ok(path)
}

/// Record the backup in the journal's catalog (the journal beside the
/// database, created and migrated if needed).
pub(super) fn record(
    config: &crate::config::Config,
    info: &resilite_actors::BackupInfo,
) -> Result<(), Box<dyn std::error::Error>> {
    let journal_db = config.journal_db();
    let conn = open_read_write(&journal_db)
        .and_then(|c| journal::migrate(&c).map(|()| c))
        .map_err(|e| journal::explain_error(&journal_db.path, e))?;
    journal::backups::apply(&conn, &[journal::backups::insert_statement(info)])
        .map_err(|e| journal::explain_error(&journal_db.path, e))?;
    Ok(())
}
