//! `resilite recover`: recover a database file from its newest verified
//! backup, no server running: the damaged file kept as
//! `<db>.damaged-<UTC time>`, the backup put in its place, the operation
//! log replayed after it, `integrity_check` run, the attempt recorded in
//! the journal (`recoveries`). The same as `POST /v1/recover` and
//! `Runtime::recover` on a running server.
//!
//! Refused, the database untouched, when the database is in use, when
//! there is no verified backup, or without `--yes` when stdin is not a
//! terminal. Exit 0 recovered, 1 not.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use resilite_actors::connection::DbOptions;

use crate::config::Config;
use crate::Runtime;

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The SQLite database file to recover.
    #[arg(long)]
    db: PathBuf,
    /// The config file the server runs with (for `database.journal_path`
    /// and `backup.dir`); default: the defaults beside the database.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

pub fn run(args: RecoverArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !args.db.is_file() {
        return Err(format!(
            "{} does not exist; pass an existing database with --db",
            args.db.display()
        )
        .into());
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.database.path = args.db.clone();
    // A recovery applies no migration: the file is brought back as it was.
    config.schema.migrations_dir = None;
    super::restore::ensure_not_in_use(&args.db)?;
    let question = format!(
        "replace {} with its newest verified backup (the current file is kept beside it)?",
        args.db.display()
    );
    if !args.yes && !super::restore::confirm(&question)? {
        eprintln!("recovery cancelled; the database was not changed");
        return Ok(ExitCode::FAILURE);
    }
    // Nothing else runs: no scheduled backup, and the replay finds the
    // log whatever the server's setting.
    config.backup.interval = Duration::ZERO;
    config.backup.op_log = true;
    let readable = !crate::startup::is_damaged(&DbOptions::new(&args.db));
    // An unreadable file is recovered by the start itself; a readable one
    // on request (and not also by the health check's own trigger).
    config.backup.auto_recover = !readable;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(recover(config, readable))
}

async fn recover(config: Config, readable: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let rt = Runtime::start(config).await?;
    let result = if readable {
        rt.recover_with("cli").await.map(drop)
    } else {
        Ok(())
    };
    let last = rt.recoveries().await?.pop();
    rt.shutdown().await?;
    result?;
    let Some(record) = last else {
        return Err("no recovery was recorded".into());
    };
    for step in &record.steps {
        println!("  {step}");
    }
    println!("{}", record.explanation);
    Ok(if record.outcome == "recovered" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
