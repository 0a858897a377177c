//! Resource samples: what the process and its files use, taken by the
//! HealthActor every `[health] resource_interval` and stored in the
//! journal (its SQL is in [`crate::journal::resources`]). A sample holds
//! the process's figures (see `process`), the sizes of the database, its
//! WAL and the journal, the free disk of the database's filesystem, the
//! retry queue's depth, and the CPU share and write rate since the
//! previous sample. The figures are also published as gauges on
//! `/metrics`.

use std::path::Path;
use std::time::Instant;

use super::inspect::disk_free;
use super::process;
use crate::journal::resources::ResourceSample;
use crate::maintenance::{file_len, now_ms, sibling};
use crate::retry_queue::QueueStats;

/// What the previous sample needs to remember for the rates of the next.
#[derive(Debug, Clone, Copy)]
pub(super) struct Previous {
    at: Instant,
    cpu_seconds: Option<f64>,
    committed: Option<u64>,
}

impl Previous {
    /// Time since this sample was taken.
    pub(super) fn elapsed(&self) -> std::time::Duration {
        self.at.elapsed()
    }
}

/// What the sampler asks other actors for (`None` when one does not answer).
pub(super) struct Asked {
    /// The retry queue's figures.
    pub(super) queue: Option<QueueStats>,
    /// Operations the application writer has committed since it started.
    pub(super) committed: Option<u64>,
}

/// Take a sample of the process, the database `db` and the journal
/// `journal` now, with rates since `previous` (which becomes this one).
pub(super) fn take(
    db: &Path,
    journal: &Path,
    asked: Asked,
    previous: &mut Option<Previous>,
) -> ResourceSample {
    let now = Instant::now();
    let figures = process::read();
    let since = previous.map(|p| (p, now.duration_since(p.at).as_secs_f64()));
    let since = since.filter(|(_, secs)| *secs > 0.0);
    let cpu_pct = since.and_then(|(p, secs)| {
        let used = figures.cpu_seconds? - p.cpu_seconds?;
        Some((100.0 * used / secs).max(0.0))
    });
    let write_rate = since.and_then(|(p, secs)| {
        // A restarted writer counts from zero again: no rate then.
        let done = asked.committed?.checked_sub(p.committed?)?;
        Some(done as f64 / secs)
    });
    *previous = Some(Previous {
        at: now,
        cpu_seconds: figures.cpu_seconds,
        committed: asked.committed,
    });
    ResourceSample {
        at_ms: now_ms(),
        at: String::new(),
        rss_bytes: figures.rss_bytes,
        cpu_seconds: figures.cpu_seconds,
        cpu_pct,
        open_fds: figures.open_fds,
        db_bytes: file_len(db),
        wal_bytes: file_len(&sibling(db, "-wal")),
        journal_bytes: file_len(journal) + file_len(&sibling(journal, "-wal")),
        disk_free_bytes: disk_free(db).map(|(free, _)| free),
        queue_depth: asked.queue.map(|q| q.queued + q.retrying),
        write_rate,
    }
}

/// Publish `s` on `/metrics`. The database and WAL sizes, free disk and
/// the retry queue's depth are published by the health check and the
/// retry queue already (`resilite_db_bytes`, `resilite_wal_bytes`,
/// `resilite_disk_free_bytes`, `resilite_retry_queue_depth`); the sample
/// refreshes the first three too, so they move at the sampling rate.
pub(super) fn export_metrics(s: &ResourceSample) {
    if let Some(rss) = s.rss_bytes {
        metrics::gauge!("resilite_process_rss_bytes").set(rss as f64);
    }
    if let Some(cpu) = s.cpu_seconds {
        metrics::gauge!("resilite_process_cpu_seconds_total").set(cpu);
    }
    if let Some(pct) = s.cpu_pct {
        metrics::gauge!("resilite_process_cpu_percent").set(pct);
    }
    if let Some(fds) = s.open_fds {
        metrics::gauge!("resilite_process_open_fds").set(fds as f64);
    }
    if let Some(rate) = s.write_rate {
        metrics::gauge!("resilite_write_rate").set(rate);
    }
    if let Some(free) = s.disk_free_bytes {
        metrics::gauge!("resilite_disk_free_bytes").set(free as f64);
    }
    metrics::gauge!("resilite_journal_bytes").set(s.journal_bytes as f64);
    metrics::gauge!("resilite_db_bytes").set(s.db_bytes as f64);
    metrics::gauge!("resilite_wal_bytes").set(s.wal_bytes as f64);
}
