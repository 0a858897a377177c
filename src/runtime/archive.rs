//! Retention and archives, run by the runtime: `rt.archive_now()`, the
//! schedule (`[archive] interval`), what an interrupted run left completed
//! at start, `rt.archives()`, `rt.verify_archive`, `rt.restore_archive`.
//! A run is blocking work on its own thread; it deletes and restores rows
//! through the writer (`WriterHandle::call`), writes the catalog through
//! the journal writer and records events. One run or restore at a time.

use std::sync::Arc;

use resilite_actors::archive::{
    self, ArchiveCheck, ArchiveRecord, Host, RestoreCounts, RunReport, WriterJob,
};
use resilite_actors::journal;
use resilite_actors::slot;
use resilite_actors::{Error, Event, Operation, Result, Statement, WriterMsg};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::Runtime;

/// The runtime's ways to the writer, the journal and the events, for a
/// run on a blocking thread.
struct RuntimeHost {
    tokio: Handle,
    writer: resilite_actors::writer::WriterHandle,
    journal: watch::Receiver<slot::WriterSlot>,
    journal_db: resilite_actors::DbOptions,
    events: resilite_actors::events::Events,
}

impl Host for RuntimeHost {
    fn on_writer(&self, job: WriterJob) -> Result<(u64, u64)> {
        self.tokio.block_on(self.writer.call(job))
    }

    fn journal(&self, statements: Vec<Statement>) -> Result<()> {
        self.tokio
            .block_on(slot::write(&self.journal, Operation::Batch(statements)))
            .map(|_| ())
    }

    fn catalog(&self) -> Result<Vec<ArchiveRecord>> {
        let conn = resilite_actors::connection::open_read_only(&self.journal_db)?;
        journal::archives::list(&conn)
    }

    fn event(&self, event: Event) {
        self.events.record(event);
    }
}

impl Runtime {
    async fn archive_host(&self) -> Result<RuntimeHost> {
        let writer = self.writer().await?;
        let handle = ractor::call!(writer, WriterMsg::Handle)
            .map_err(|e| Error::unavailable(format!("the writer did not answer: {e}")))?;
        Ok(RuntimeHost {
            tokio: Handle::current(),
            writer: handle,
            journal: self.inner.journal.clone(),
            journal_db: self.config().journal_db(),
            events: self.inner.audit.events.clone(),
        })
    }

    /// `work` on a blocking thread with the runtime's host. The caller
    /// holds `archive_lock`: one archive run or restore at a time.
    async fn archive_work<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce(RuntimeHost) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let host = self.archive_host().await?;
        tokio::task::spawn_blocking(move || work(host))
            .await
            .map_err(|e| Error::unavailable(format!("the {what} ended abnormally: {e}")))?
    }

    /// Run the `[[retention]]` policies now: complete what an interrupted
    /// run left, then move expired rows to verified archives (or delete
    /// them, for `archive = false`). Waits for a run already going.
    pub async fn archive_now(&self) -> Result<RunReport> {
        let _one = self.inner.archive_lock.lock().await;
        let config = self.config();
        let (db, policies, opts) = (
            config.app_db(),
            config.retention.clone(),
            config.archive_options(),
        );
        self.archive_work("archive run", move |host| {
            archive::run(&db, &policies, &opts, &host)
        })
        .await
    }

    /// At start: complete what an interrupted archive run left (scratch and
    /// unrecorded files removed, recorded archives verified and their rows
    /// deleted), as the first step of every run does, without applying
    /// any policy. A failure is logged and recorded (`archive_failed`);
    /// the rows stay in the database and the next run tries again, so the
    /// start goes on.
    pub(super) async fn finish_archives_at_start(&self) {
        let _one = self.inner.archive_lock.lock().await;
        let config = self.config();
        let (db, opts) = (config.app_db(), config.archive_options());
        match self
            .archive_work("archive resume", move |host| {
                archive::resume(&db, &opts, &host)
            })
            .await
        {
            Ok(r) if r.resumed + r.orphans_removed + r.scratch_removed > 0 => tracing::info!(
                archives_completed = r.resumed,
                unrecorded_files_removed = r.orphans_removed,
                temporary_files_removed = r.scratch_removed,
                "completed what an interrupted archive run left"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                class = ?e.class,
                detail = %e.detail,
                "could not complete what an interrupted archive run left; its rows stay in the database and the next archive run tries again"
            ),
        }
    }

    /// The archive catalog, oldest first.
    pub async fn archives(&self) -> Result<Vec<ArchiveRecord>> {
        self.read_journal(journal::archives::list).await
    }

    /// Verify archive `id` now: SHA-256, decompression, `quick_check`, row
    /// count and rowid range; a damaged file is an error of class
    /// `corruption`.
    pub async fn verify_archive(&self, id: i64) -> Result<ArchiveCheck> {
        let record = self
            .read_journal(move |c| journal::archives::get(c, id))
            .await?;
        tokio::task::spawn_blocking(move || archive::verify_file(&record))
            .await
            .map_err(|e| Error::unavailable(format!("the verification ended abnormally: {e}")))?
    }

    /// Put the rows of archive `id` back into its table (verified first;
    /// rows whose key is already there are skipped and counted).
    pub async fn restore_archive(&self, id: i64) -> Result<RestoreCounts> {
        let _one = self.inner.archive_lock.lock().await;
        let record = self
            .read_journal(move |c| journal::archives::get(c, id))
            .await?;
        self.archive_work("restore", move |host| archive::restore(&record, &host))
            .await
    }
}

/// Run the policies every `[archive] interval` (none while it is zero or
/// there is no policy); a reload that changes the config starts the wait
/// again with the new settings. Ends with the runtime.
pub(super) fn schedule(rt: &Runtime) {
    let weak = Arc::downgrade(&rt.inner);
    let mut config = rt.inner.config.subscribe();
    tokio::spawn(async move {
        loop {
            let interval = {
                let c = config.borrow_and_update();
                (!c.retention.is_empty()).then_some(c.archive.interval)
            }
            .filter(|i| !i.is_zero());
            let due = match interval {
                Some(interval) => tokio::select! {
                    _ = tokio::time::sleep(interval) => true,
                    changed = config.changed() => if changed.is_err() { return } else { false },
                },
                None if config.changed().await.is_err() => return,
                None => false,
            };
            if !due {
                continue;
            }
            let Some(inner) = weak.upgrade() else { return };
            let rt = Runtime { inner };
            if let Err(e) = rt.archive_now().await {
                tracing::warn!(error = %e, "scheduled archive run failed; the next one retries");
            }
        }
    });
}
