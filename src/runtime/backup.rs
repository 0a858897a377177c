//! Backups, answered by the BackupActor.

use ractor::ActorRef;
use resilite_actors::backup::{self, check_name, BackupMsg};
use resilite_actors::slot;
use resilite_actors::{
    BackupInfo, Error, ErrorClass, RecoveryRecord, Result, Statement, Value, Verification,
    WriterMsg,
};

use super::Runtime;

impl Runtime {
    /// Take a backup of the database now, labelled `label` (1 to 64
    /// letters, digits, `-`, `_`), verify it and apply retention. The new
    /// backup; an error if it could not be written or failed verification.
    pub async fn backup(&self, label: &str) -> Result<BackupInfo> {
        let backup = slot::running(&mut self.inner.backup.clone()).await?;
        let label = label.to_string();
        ractor::call!(backup, |reply| BackupMsg::Backup { label, reply })
            .map_err(|e| Error::unavailable(format!("the backup actor did not answer: {e}")))?
    }

    /// The backups kept, oldest first, with their last verification.
    pub async fn backups(&self) -> Result<Vec<BackupInfo>> {
        let backup = slot::running(&mut self.inner.backup.clone()).await?;
        ractor::call!(backup, BackupMsg::List)
            .map_err(|e| Error::unavailable(format!("the backup actor did not answer: {e}")))
    }

    /// Verify the backup `name` (as [`backups`](Runtime::backups) lists
    /// it; never a path) now, and record the outcome.
    pub async fn verify_backup(&self, name: &str) -> Result<Verification> {
        let backup = slot::running(&mut self.inner.backup.clone()).await?;
        let name = name.to_string();
        ractor::call!(backup, |reply| BackupMsg::Verify { name, reply })
            .map_err(|e| Error::unavailable(format!("the backup actor did not answer: {e}")))?
    }
}

impl Runtime {
    /// Restore the backup `name` (as [`backups`](Runtime::backups) lists
    /// it; never a path) onto the database, online.
    ///
    /// The sequence: pause writes (the `database` breaker held open:
    /// durable writes queue, others fail fast `unavailable`); the
    /// BackupActor verifies the backup, takes a `pre-restore` backup of
    /// the current file and stages a checked copy beside it; the read pool
    /// and the writer close; the copy is renamed over the database; the
    /// writer and the read pool open again; `PRAGMA integrity_check` runs
    /// through a read; writes resume and the queue replays.
    ///
    /// Refused with the database untouched (and writes resumed) when the
    /// backup is missing, fails verification or belongs to another
    /// database. If a step after the close fails, the writer and the read
    /// pool are opened on whatever file is there and the breaker stays
    /// open: the error says what failed; call
    /// [`resume_writes`](Runtime::resume_writes) once it is dealt with.
    pub async fn restore(&self, name: &str) -> Result<RestoreOutcome> {
        check_name(name)?;
        let started_at_ms = resilite_actors::maintenance::now_ms();
        let started = std::time::Instant::now();
        let result = self.restore_steps(name, started).await;
        let (outcome, explanation) = match &result {
            Ok(done) => (
                "restored",
                format!(
                    "Backup {name} was restored onto the database{}; writes resumed.",
                    done.pre_restore
                        .as_ref()
                        .map(|p| format!(" (the file before it is backup {p})"))
                        .unwrap_or_default()
                ),
            ),
            Err(e) => ("failed", format!("{} {}", e.message, e.detail)),
        };
        self.journal_recovery(&RecoveryRecord {
            started_at_ms,
            trigger: format!("restore of backup {name}"),
            steps: Vec::new(),
            outcome: outcome.into(),
            duration_ms: started.elapsed().as_millis() as i64,
            explanation,
        })
        .await;
        result
    }

    async fn restore_steps(
        &self,
        name: &str,
        started: std::time::Instant,
    ) -> Result<RestoreOutcome> {
        let backup = slot::running(&mut self.inner.backup.clone()).await?;
        let writer = self.writer().await?;
        tracing::info!(backup = %name, "restore: pausing writes");
        self.pause_writes(&format!("restore of backup {name} in progress"));
        let owned = name.to_string();
        let prepared = ractor::call!(backup, |reply| BackupMsg::Restore { name: owned, reply })
            .map_err(|e| Error::unavailable(format!("the backup actor did not answer: {e}")))
            .and_then(|r| r);
        let (staged, pre_restore) = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(backup = %name, error = %e, "restore refused; writes resume");
                self.resume_writes();
                return Err(e);
            }
        };
        tracing::info!(backup = %name, pre_restore = ?pre_restore, "restore: closing the read pool and the writer");
        let target = self.config().app_db().path;
        let replaced = async {
            self.close_database(&writer).await?;
            tracing::info!(backup = %name, "restore: replacing the database file");
            let target = target.clone();
            tokio::task::spawn_blocking(move || backup::install(staged, &target))
                .await
                .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?
        }
        .await;
        tracing::info!(backup = %name, "restore: opening the writer and the read pool");
        let opened = self.open_database(&writer).await;
        let checked = match (&replaced, &opened) {
            (Ok(_), Ok(())) => self.integrity_check().await,
            _ => Ok(()),
        };
        let failure = replaced
            .as_ref()
            .err()
            .map(|e| ("replacing the file", e.clone()))
            .or_else(|| opened.clone().err().map(|e| ("opening the writer", e)))
            .or_else(|| checked.clone().err().map(|e| ("the integrity check", e)));
        if let Some((step, e)) = failure {
            tracing::error!(backup = %name, step, error = %e, "restore failed; writes stay paused");
            return Err(Error::new(
                e.class,
                format!("restore of backup {name} failed at {step}: {e}"),
                format!(
                    "writes stay paused (the database breaker is open; durable writes are queued); the database is {}; check it (`resilite health`), then resume writes or restore another backup{}",
                    if replaced.is_ok() { "the restored file" } else { "the file as it was" },
                    pre_restore
                        .as_ref()
                        .map(|p| format!(" (the file before the restore is backup {p})"))
                        .unwrap_or_default()
                ),
            ));
        }
        self.resume_writes();
        self.file_replaced().await;
        metrics::counter!("resilite_restores_total").increment(1);
        let info = replaced.expect("checked above");
        tracing::info!(backup = %name, ms = started.elapsed().as_millis() as u64, "restore done; writes resumed");
        Ok(RestoreOutcome {
            restored: info.name,
            pre_restore,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Close the read pool, then the application writer: no connection of
    /// resilite's holds the database file (its file may then be replaced).
    pub(super) async fn close_database(&self, writer: &ActorRef<WriterMsg>) -> Result<()> {
        self.inner.readers.close().await?;
        call_writer(writer, WriterMsg::Close).await
    }

    /// Open the application writer and the read pool again on the same
    /// path; the read pool takes queries again even when the writer fails.
    pub(super) async fn open_database(&self, writer: &ActorRef<WriterMsg>) -> Result<()> {
        let opened = call_writer(writer, WriterMsg::Open).await;
        self.inner.readers.open();
        opened
    }

    /// `PRAGMA integrity_check` through the read pool: `ok` or an error.
    pub(super) async fn integrity_check(&self) -> Result<()> {
        let result = self
            .inner
            .readers
            .query(Statement::sql("PRAGMA integrity_check"))
            .await?;
        let ok = matches!(result.rows.as_slice(), [row] if matches!(row.first(), Some(Value::Text(t)) if t == "ok"));
        if ok {
            return Ok(());
        }
        Err(Error::new(
            ErrorClass::Corruption,
            "the restored database fails integrity_check",
            format!("{:?}", result.rows),
        ))
    }
}

pub(super) async fn call_writer(
    writer: &ractor::ActorRef<WriterMsg>,
    msg: fn(ractor::RpcReplyPort<Result<()>>) -> WriterMsg,
) -> Result<()> {
    ractor::call!(writer, msg)
        .map_err(|e| Error::unavailable(format!("the writer did not answer: {e}")))?
}

/// What [`Runtime::restore`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreOutcome {
    /// The backup now in place.
    pub restored: String,
    /// The `pre-restore` backup of the file before (none when that file
    /// could not be read).
    pub pre_restore: Option<String>,
    /// How long the whole restore took, pause to resume.
    pub duration_ms: u64,
}
