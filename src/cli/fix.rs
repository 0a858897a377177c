//! `resilite fix`: create what an expected schema (TOML) declares and a
//! database file lacks (tables, columns where SQLite can add them,
//! indexes), never dropping or rewriting anything; with `--dedupe`, first
//! remove the duplicates of the declared `unique` sets, each removed row
//! recorded in full in the journal; `--restore-removed` puts them back.
//! `--dry-run` prints what would be done (the SQL, the rows) and changes
//! nothing. Works on a file no program has open; what it changes is
//! logged in the journal beside the database.
//!
//! Exit codes: 0 done (or, dry, planned), 1 something declared cannot be
//! fixed automatically (listed with why: a primary key column, NOT NULL
//! without a default, a UNIQUE index that duplicates block), 3 it could
//! not run (a bad schema file, a missing database, a database in use).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use resilite_actors::connection::{open_read_only, DbOptions};
use resilite_actors::journal::{self, findings};
use resilite_actors::maintenance::now_ms;
use resilite_actors::schema::{dedupe, fix, ExpectedSchema, FixReport, Keep};

use super::restore::ensure_not_in_use;
use super::validate::{journal_path, open_db_read_only, record, COULD_NOT_RUN};

#[derive(Debug, Args)]
pub struct FixArgs {
    /// The SQLite database file.
    #[arg(long)]
    db: PathBuf,
    /// The expected schema (TOML).
    #[arg(long, required_unless_present = "restore_removed")]
    schema: Option<PathBuf>,
    /// Print what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove the duplicates of the declared `unique` sets first, keeping
    /// the oldest or the newest row of each group (rowid, or `order_by`).
    #[arg(long, value_parser = ["keep-oldest", "keep-newest"])]
    dedupe: Option<String>,
    /// Put back the rows dedupe removed (from the journal), skipping a
    /// rowid that exists again.
    #[arg(long, conflicts_with_all = ["schema", "dedupe"])]
    restore_removed: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The journal file, when not beside the database.
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// Exit 0 done, 1 something cannot be fixed automatically, 3 could not run.
pub fn run(args: FixArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let result = if args.restore_removed {
        restore_removed(&args)
    } else {
        fix_schema(&args)
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(COULD_NOT_RUN))
        }
    }
}

fn fix_schema(args: &FixArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let file = args
        .schema
        .as_ref()
        .ok_or("pass the expected schema with --schema")?;
    let expected = ExpectedSchema::from_toml_file(file)?;
    let keep: Option<Keep> = args.dedupe.as_deref().map(str::parse).transpose()?;
    let journal = journal_path(&args.db, args.journal.as_deref());
    let report = if args.dry_run {
        let conn = open_db_read_only(&args.db)?;
        FixReport {
            dry_run: true,
            steps: fix::plan(&conn, &expected)?,
            dedupe: keep,
            removed: match keep {
                Some(keep) => dedupe::plan(&conn, &expected, keep)?,
                None => Vec::new(),
            },
            batch: None,
        }
    } else {
        open_db_read_only(&args.db)?;
        ensure_not_in_use(&args.db)?;
        let conn = super::open_existing(&args.db)?;
        let mut report = FixReport {
            dry_run: false,
            steps: Vec::new(),
            dedupe: keep,
            removed: Vec::new(),
            batch: None,
        };
        if let Some(keep) = keep {
            let planned = dedupe::plan(&conn, &expected, keep)?;
            if !planned.is_empty() {
                let at = now_ms();
                let batch = findings::run_id(at);
                // Recorded before anything is deleted.
                record(
                    &journal,
                    &findings::removed_statements(&batch, &planned, at),
                )?;
                match dedupe::delete(&conn, &planned) {
                    Ok(deleted) => {
                        record(
                            &journal,
                            &findings::dedupe_done_statements(&batch, &planned, &deleted, now_ms()),
                        )?;
                        report.removed = deleted;
                        report.batch = Some(batch);
                    }
                    Err(e) => {
                        record(&journal, &findings::dedupe_failed_statements(&batch))?;
                        return Err(e.into());
                    }
                }
            }
        }
        report.steps = fix::run(&conn, &expected)?;
        record(&journal, &findings::fix_statements(&report.steps, now_ms()))?;
        report
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.incomplete() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn restore_removed(args: &FixArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let journal = journal_path(&args.db, args.journal.as_deref());
    if !journal.is_file() {
        return Err(format!(
            "journal {} does not exist: no row was removed from {} by dedupe (pass the journal with --journal if it is elsewhere)",
            journal.display(),
            args.db.display()
        )
        .into());
    }
    let rows = {
        let conn = open_read_only(&DbOptions::new(&journal))
            .map_err(|e| journal::explain_error(&journal, e))?;
        journal::check_version(&conn, &journal)?;
        findings::removed_rows(&conn).map_err(|e| journal::explain_error(&journal, e))?
    };
    if args.dry_run {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!(
                "{} removed row(s) would be put back (unless their rowid exists again)",
                rows.len()
            );
            for r in &rows {
                println!(
                    "{} rowid {}: {}",
                    r.table,
                    r.rowid,
                    serde_json::to_string(&r.row).unwrap_or_default()
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no removed row to put back");
        return Ok(ExitCode::SUCCESS);
    }
    open_db_read_only(&args.db)?;
    ensure_not_in_use(&args.db)?;
    let conn = super::open_existing(&args.db)?;
    let restored = dedupe::restore(&conn, &rows)?;
    record(
        &journal,
        &findings::restored_statements(&restored.restored, &restored.skipped, now_ms()),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&restored)?);
    } else {
        println!(
            "{} row(s) put back, {} skipped (their rowid exists again)",
            restored.restored.len(),
            restored.skipped.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
