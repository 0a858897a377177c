//! `resilite health`: inspect a database file without a running server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::connection::explain_open_failure;
use resilite_actors::health::{inspect, HealthConfig};
use resilite_actors::{DbOptions, ErrorClass};

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The SQLite database file to inspect.
    #[arg(long)]
    db: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Run the full integrity_check instead of quick_check.
    #[arg(long)]
    full: bool,
    /// Take the thresholds from this config file's [health] section
    /// (default: the built-in thresholds). Either way the environment's
    /// RESILITE_HEALTH_<KEY> variables override them.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Exit code 0 HEALTHY, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
pub fn run(args: HealthArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let thresholds = match &args.config {
        Some(path) => crate::Config::load(path)?.health,
        None => defaults_with_env_overrides()?,
    };
    // A path that cannot be a database file (a directory, under a file)
    // says why, beside the UNKNOWN report.
    if let Some(problem) = explain_open_failure(&args.db) {
        if problem.class == ErrorClass::BadInput {
            eprintln!("error: {}", problem.message);
        }
    }
    let report = inspect(&DbOptions::new(&args.db), args.full, &thresholds);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::from(report.status.exit_code()))
}

/// The built-in thresholds with the environment's `RESILITE_HEALTH_<KEY>`
/// overrides, as a config file's would have them (the other sections'
/// variables belong to a server's config, not to this command).
fn defaults_with_env_overrides() -> Result<HealthConfig, crate::config::ConfigError> {
    let prefix = format!("{}HEALTH_", crate::config::ENV_PREFIX);
    let health_vars = std::env::vars().filter(|(k, _)| k.starts_with(&prefix));
    Ok(crate::Config::parse("", health_vars)?.health)
}
