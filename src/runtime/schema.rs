//! Schema validation, fixes and dedupe on the running database, and the
//! check of `[schema] file` at start (`schema.on_start`).
//!
//! Validation reads through a read-only connection of its own (the data
//! checks under the statement gate's bounds, `readers.query_timeout` per
//! query). Everything that changes the database goes through the writer
//! (`WriterHandle::call`: after every write sent before it, one
//! transaction); what it did is recorded through the journal writer.

use resilite_actors::connection::read_blocking;
use resilite_actors::journal::findings::{self, Scope, StoredFinding};
use resilite_actors::maintenance::now_ms;
use resilite_actors::schema::{self, dedupe, fix, DataBounds, Restored};
use resilite_actors::{
    slot, Error, ErrorClass, ExpectedSchema, FindingSeverity, FixOptions, FixReport, Operation,
    Result, SchemaReport, Statement, ValidateOptions, WriterHandle,
};

use super::Runtime;
use crate::config::OnStart;

impl Runtime {
    /// Compare the database with `schema` (and, with `options.data`, run
    /// its data rules), record the findings in the journal (a finding seen
    /// again updates the open one) and answer them.
    pub async fn validate(
        &self,
        schema: &ExpectedSchema,
        options: ValidateOptions,
    ) -> Result<SchemaReport> {
        let bounds = DataBounds {
            timeout: self.config().readers.query_timeout,
            ..DataBounds::default()
        };
        let owned = schema.clone();
        let report = read_blocking(&self.config().app_db(), move |conn| {
            schema::validate(conn, &owned, options, bounds)
        })
        .await?;
        let mut scopes = vec![Scope::Structure];
        if options.data {
            scopes.push(Scope::Data);
        }
        self.journal_batch(
            findings::record_statements(&report.findings, &scopes, now_ms()),
            "schema findings",
        )
        .await?;
        Ok(report)
    }

    /// Create what `schema` declares and the database lacks (tables,
    /// columns where SQLite can add them, indexes), never dropping or
    /// rewriting anything; with `options.dedupe`, first remove the
    /// duplicates of the declared `unique` sets, each removed row recorded
    /// in full in the journal ([`restore_removed`](Runtime::restore_removed)
    /// puts them back). `options.dry_run`: say what would be done, change
    /// nothing. Each change is logged in the journal.
    pub async fn fix(&self, schema: &ExpectedSchema, options: FixOptions) -> Result<FixReport> {
        let owned = schema.clone();
        if options.dry_run {
            return read_blocking(&self.config().app_db(), move |conn| {
                dry_run(conn, &owned, options)
            })
            .await;
        }
        let writer = self.writer_handle().await?;
        let mut report = FixReport {
            dry_run: false,
            steps: Vec::new(),
            dedupe: options.dedupe,
            removed: Vec::new(),
            batch: None,
        };
        if let Some(keep) = options.dedupe {
            let s = owned.clone();
            let planned = writer
                .call(move |conn| dedupe::plan(conn, &s, keep))
                .await?;
            if !planned.is_empty() {
                let at = now_ms();
                let batch = findings::run_id(at);
                // Recorded before anything is deleted: a row is never gone
                // without its copy in the journal.
                self.journal_batch(
                    findings::removed_statements(&batch, &planned, at),
                    "removed rows",
                )
                .await?;
                let rows = planned.clone();
                match writer.call(move |conn| dedupe::delete(conn, &rows)).await {
                    Ok(deleted) => {
                        self.journal_batch(
                            findings::dedupe_done_statements(&batch, &planned, &deleted, now_ms()),
                            "the dedupe log",
                        )
                        .await?;
                        tracing::info!(batch = %batch, removed = deleted.len(), "dedupe removed duplicate rows");
                        report.removed = deleted;
                        report.batch = Some(batch);
                    }
                    Err(e) => {
                        let _ = self
                            .journal_batch(
                                findings::dedupe_failed_statements(&batch),
                                "the dedupe log",
                            )
                            .await;
                        return Err(e);
                    }
                }
            }
        }
        let steps = writer.call(move |conn| fix::run(conn, &owned)).await?;
        self.journal_batch(findings::fix_statements(&steps, now_ms()), "the fix log")
            .await?;
        report.steps = steps;
        Ok(report)
    }

    /// Put back the rows dedupe removed and not yet put back (from the
    /// journal, with their rowids), through the writer in one transaction;
    /// a row whose rowid exists again is skipped.
    pub async fn restore_removed(&self) -> Result<Restored> {
        let rows = self.read_journal(findings::removed_rows).await?;
        if rows.is_empty() {
            return Ok(Restored::default());
        }
        let writer = self.writer_handle().await?;
        let restored = writer
            .call(move |conn| dedupe::restore(conn, &rows))
            .await?;
        self.journal_batch(
            findings::restored_statements(&restored.restored, &restored.skipped, now_ms()),
            "restored rows",
        )
        .await?;
        Ok(restored)
    }

    /// The schema findings recorded in the journal, open ones only unless
    /// `all`, oldest first.
    pub async fn schema_findings(&self, all: bool) -> Result<Vec<StoredFinding>> {
        self.read_journal(move |c| findings::findings(c, all)).await
    }

    /// Mark the journal's finding `id` as seen by an operator (kept while
    /// the same finding is found again); `false` when there is no such
    /// finding.
    pub async fn acknowledge_finding(&self, id: i64) -> Result<bool> {
        let outcome = slot::write(
            &self.inner.journal,
            Operation::Statement(findings::acknowledge_statement(id)),
        )
        .await?;
        Ok(outcome.iter().any(|o| o.rows_affected > 0))
    }

    /// The schema file of `[schema] file`, read now.
    pub fn configured_schema(&self) -> Result<ExpectedSchema> {
        let Some(file) = &self.config().schema.file else {
            return Err(Error::bad_input(
                "no schema file is configured: set [schema] file in the config",
            ));
        };
        ExpectedSchema::from_toml_file(file)
    }

    /// `schema.on_start`: validate the configured schema file; strict
    /// refuses on an error finding, lenient fixes what it can and goes on.
    /// Readiness waits for it.
    pub(super) async fn check_schema_at_start(&self) -> Result<()> {
        let mode = self.config().schema.on_start();
        if mode == OnStart::Off || self.config().schema.file.is_none() {
            return Ok(());
        }
        let schema = self.configured_schema()?;
        let file = self.config().schema.file.clone().unwrap_or_default();
        let report = self.validate(&schema, ValidateOptions::default()).await?;
        for f in report
            .findings
            .iter()
            .filter(|f| f.severity > FindingSeverity::Info)
        {
            tracing::warn!(table = %f.table, rule = f.problem.rule(), severity = f.severity.as_str(), "schema: {}", f.message);
        }
        match mode {
            OnStart::Strict if report.has_errors() => {
                return Err(Error::new(
                    ErrorClass::BadInput,
                    format!(
                        "the database does not match the schema file {} (schema.on_start = \"strict\"): {}; fix it (`resilite fix --db <db> --schema {}`), or start with schema.on_start = \"lenient\" to fix what can be fixed at start",
                        file.display(),
                        report.errors_text(),
                        file.display()
                    ),
                    serde_json::to_string(&report.findings).unwrap_or_default(),
                ));
            }
            OnStart::Lenient if report.worst > Some(FindingSeverity::Info) => {
                let fixed = self.fix(&schema, FixOptions::default()).await?;
                for step in &fixed.steps {
                    match &step.reason {
                        None => {
                            tracing::info!(table = %step.table, action = step.action.as_str(), target = %step.target, "schema fixed at start: {}", step.sql.as_deref().unwrap_or_default())
                        }
                        Some(why) => {
                            tracing::warn!(table = %step.table, action = step.action.as_str(), target = %step.target, "schema: cannot fix at start: {why}")
                        }
                    }
                }
                let after = self.validate(&schema, ValidateOptions::default()).await?;
                if after.has_errors() {
                    tracing::warn!(
                        "schema: started with errors that fix cannot repair (schema.on_start = \"lenient\"): {}",
                        after.errors_text()
                    );
                }
            }
            _ => {}
        }
        self.schema_validated();
        Ok(())
    }

    async fn writer_handle(&self) -> Result<WriterHandle> {
        slot::running(&mut self.inner.app.clone())
            .await
            .map(|w| w.handle)
    }

    /// Apply `statements` to the journal in one transaction.
    async fn journal_batch(&self, statements: Vec<Statement>, what: &str) -> Result<()> {
        if statements.is_empty() {
            return Ok(());
        }
        slot::write(&self.inner.journal, Operation::Batch(statements))
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "{what} could not be recorded in the journal");
                e
            })
    }
}

/// What a fix would do, read only.
fn dry_run(
    conn: &rusqlite::Connection,
    schema: &ExpectedSchema,
    options: FixOptions,
) -> Result<FixReport> {
    let removed = match options.dedupe {
        Some(keep) => dedupe::plan(conn, schema, keep)?,
        None => Vec::new(),
    };
    Ok(FixReport {
        dry_run: true,
        steps: fix::plan(conn, schema)?,
        dedupe: options.dedupe,
        removed,
        batch: None,
    })
}
