//! The command line: one module per verb.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod run;

/// resilite: a supervised, actor-based resilience runtime for SQLite.
#[derive(Debug, Parser)]
#[command(name = "resilite", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the runtime and its HTTP API (health, execute, batch, query) and
    /// serve until SIGTERM or SIGINT, then drain every queued write,
    /// checkpoint the WAL and exit 0.
    Run(run::RunArgs),
}

/// Parse the command line and run the verb; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env(crate::config::LOG_ENV)
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
