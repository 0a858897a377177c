//! The database's WAL checkpoints, off the connection thread.
//!
//! SQLite checkpoints a WAL inside the COMMIT that takes it past 1000
//! pages (`wal_autocheckpoint`): it copies the WAL back into the database
//! and syncs both files, a few milliseconds during which the writer, and
//! every write queued behind it, waits. With many callers that wait is
//! what their slowest answers are made of, and more, smaller group commits
//! (each rewrites the table's last page) make it come more often.
//!
//! Instead a WAL hook on the writer's connection notes the WAL's size, and
//! past [`checkpoint_pages`] a thread of its own checkpoints on a
//! connection of its own. PASSIVE: it takes no lock the writer waits for,
//! and the writer goes on committing. SQLite starts a WAL over from its
//! beginning only when a write begins with every frame copied back, which
//! a checkpoint beside a busy writer rarely leaves; so once the thread is
//! done, the writer copies the few frames appended since itself, between
//! two transactions, and its next write starts the WAL over. If the thread
//! falls behind (the WAL past [`BEHIND`] times that), the writer checkpoints
//! itself, as SQLite would have.
//!
//! The threshold depends on `synchronous`. At NORMAL (and OFF) it is 4000
//! pages, not SQLite's 1000: commits wait for no disk flush, and the
//! writer's short copy still syncs the WAL and the database (SQLite syncs
//! both whenever a checkpoint copies the last frame), 0.8-2.5 ms on the
//! development VM whatever the few pages it copies. Four times fewer
//! checkpoints stall the writer four times less often; the WAL grows to
//! about 16 MiB at the default page size before it starts over. At FULL
//! and EXTRA every commit already waits for a flush, and a checkpoint of
//! 4000 pages flushing the database delayed those more than the fewer
//! short copies saved (10-13% fewer writes/s with 64 callers), so the
//! threshold stays SQLite's.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::connection::{open_read_write, DbOptions, Synchronous};
use crate::error::{Error, Result};
use crate::maintenance::{self, CheckpointMode, CheckpointOutcome};

/// WAL pages past which the thread checkpoints a file written at
/// `synchronous` (see the module doc).
pub(super) fn checkpoint_pages(synchronous: Synchronous) -> i32 {
    match synchronous {
        Synchronous::Off | Synchronous::Normal => 4000,
        Synchronous::Full | Synchronous::Extra => 1000,
    }
}
/// WAL pages the thread may leave for the writer to copy.
const TAIL_PAGES: i64 = 32;
/// Most checkpoints the thread runs in a row for one nudge.
const CATCH_UP_ROUNDS: usize = 4;
/// How many times the thread's threshold the WAL may reach before the
/// writer checkpoints itself: the thread fell behind, or a reader keeps
/// the WAL from being copied back.
const BEHIND: i32 = 4;

/// Whose WAL a checkpointer watches: a writer's database, or the journal
/// its completion stage appends to (both may commit on one thread).
#[derive(Debug, Clone, Copy)]
pub(super) enum Wal {
    Database,
    Journal,
}

thread_local! {
    /// The WAL's size in pages after the last commit on this thread, one
    /// for each [`Wal`] (set by the connections' WAL hooks: a hook is a
    /// plain function, it can hold nothing of its own).
    static DATABASE_PAGES: Cell<i32> = const { Cell::new(0) };
    static JOURNAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

impl Wal {
    fn pages(self) -> &'static std::thread::LocalKey<Cell<i32>> {
        match self {
            Wal::Database => &DATABASE_PAGES,
            Wal::Journal => &JOURNAL_PAGES,
        }
    }

    fn hook(self) -> fn(&rusqlite::hooks::Wal, std::ffi::c_int) -> rusqlite::Result<()> {
        match self {
            Wal::Database => |_, pages| {
                DATABASE_PAGES.with(|p| p.set(pages));
                Ok(())
            },
            Wal::Journal => |_, pages| {
                JOURNAL_PAGES.with(|p| p.set(pages));
                Ok(())
            },
        }
    }
}

/// The checkpoint thread of one writer connection. Dropped before that
/// connection (a restore closes both).
pub(super) struct Checkpointer {
    wal: Wal,
    /// [`checkpoint_pages`] of the file.
    threshold: i32,
    /// Asks the thread for a checkpoint; `None` once stopping.
    nudge: Option<flume::Sender<()>>,
    /// The thread finished a checkpoint: the writer copies the rest.
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Take the checkpoints of `conn` (a connection that writes to the
    /// file at `opts`, whose WAL is `wal`) over from SQLite: a WAL hook
    /// replaces its automatic checkpoint, and a thread with its own
    /// connection does the copying. `None` when the file is not in WAL
    /// mode (there is nothing to checkpoint).
    pub(super) fn start(
        conn: &Connection,
        opts: &DbOptions,
        wal: Wal,
        name: &str,
    ) -> Result<Option<Checkpointer>> {
        if !opts.wal {
            return Ok(None);
        }
        let own = open_read_write(opts)
            .map_err(|e| e.during("open a checkpoint connection", &opts.path))?;
        let (nudge, nudged) = flume::bounded::<()>(1);
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        let path = opts.path.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}:checkpoint"))
            .spawn(move || {
                while nudged.recv().is_ok() {
                    if let Err(e) = catch_up(&own) {
                        tracing::warn!(path = %path.display(), detail = %e.detail, "checkpoint failed; the next one retries");
                    }
                    // Nudges that came while it ran are answered by it.
                    while nudged.try_recv().is_ok() {}
                    finished.store(true, Ordering::Release);
                }
            })
            .map_err(Error::from)?;
        wal.pages().with(|p| p.set(0));
        conn.wal_hook(Some(wal.hook()));
        Ok(Some(Checkpointer {
            wal,
            threshold: checkpoint_pages(opts.synchronous),
            nudge: Some(nudge),
            done,
            thread: Some(thread),
        }))
    }

    /// After a group commit on `conn`, between two transactions: copy the
    /// rest back once the thread is done, ask it for a checkpoint once the
    /// WAL is past the threshold, or checkpoint here if it fell behind.
    pub(super) fn after_commit(&self, conn: &Connection) {
        let pages = self.wal.pages().with(Cell::get);
        let here = self.done.swap(false, Ordering::AcqRel) || pages >= BEHIND * self.threshold;
        if !here && pages >= self.threshold {
            if let Some(nudge) = &self.nudge {
                let _ = nudge.try_send(());
            }
        }
        if here {
            if let Err(e) = passive(conn) {
                tracing::warn!(error = %e, "checkpoint failed; the next one retries");
            }
            self.wal.pages().with(|p| p.set(0));
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checkpoint, again while the writer appended more than [`TAIL_PAGES`]
/// meanwhile (each round has fewer to copy), so that what is left for the
/// writer to copy itself is short (a few rounds at most).
fn catch_up(conn: &Connection) -> Result<()> {
    for _ in 0..CATCH_UP_ROUNDS {
        let done = passive(conn)?;
        if done.busy || done.wal_frames - done.checkpointed_frames <= TAIL_PAGES {
            break;
        }
    }
    Ok(())
}

/// A PASSIVE checkpoint: it waits for no reader or writer.
fn passive(conn: &Connection) -> Result<CheckpointOutcome> {
    maintenance::checkpoint(conn, CheckpointMode::Passive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_pages(db: &std::path::Path) -> u64 {
        std::fs::metadata(maintenance::sibling(db, "-wal")).map_or(0, |m| m.len()) / 4096
    }

    /// With the checkpoints taken over (SQLite's own automatic checkpoint
    /// is off once the hook is in), 20,000 one-row commits leave a WAL of
    /// about the threshold's size, not of everything written: the thread
    /// copies the WAL back beside the writer, and the writer's short copy
    /// of the rest lets its next write start the WAL over. Left to the
    /// writer's fallback alone, the WAL would reach [`BEHIND`] times the
    /// threshold (16,093 pages with the thread's nudge disabled).
    #[test]
    fn the_wal_is_copied_back_beside_the_writer_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DbOptions::new(dir.path().join("app.db"));
        opts.synchronous = Synchronous::Normal;
        let conn = open_read_write(&opts).unwrap();
        conn.execute_batch("CREATE TABLE t(v BLOB)").unwrap();
        let checkpoints = Checkpointer::start(&conn, &opts, Wal::Database, "test")
            .unwrap()
            .unwrap();
        let mut largest = 0;
        for i in 0..20_000 {
            conn.execute("INSERT INTO t VALUES (zeroblob(1000))", [])
                .unwrap();
            checkpoints.after_commit(&conn);
            if i % 500 == 0 {
                largest = largest.max(wal_pages(&opts.path));
            }
        }
        largest = largest.max(wal_pages(&opts.path));
        drop(checkpoints);
        let limit = 3 * checkpoint_pages(opts.synchronous) as u64;
        assert!(
            largest < limit,
            "the WAL reached {largest} pages (limit {limit})"
        );
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 20_000);
    }

    /// A checkpointer stops its thread and closes its connection when it
    /// is dropped (a restore closes the database): the writer's connection
    /// is then the file's last, and closing it removes the WAL.
    #[test]
    fn dropping_it_closes_its_connection_before_the_writer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions::new(dir.path().join("app.db"));
        let conn = open_read_write(&opts).unwrap();
        conn.execute_batch("CREATE TABLE t(v)").unwrap();
        let checkpoints = Checkpointer::start(&conn, &opts, Wal::Database, "test")
            .unwrap()
            .unwrap();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        checkpoints.after_commit(&conn);
        drop(checkpoints);
        drop(conn);
        assert!(
            !maintenance::sibling(&opts.path, "-wal").exists(),
            "the WAL outlived every connection: the checkpointer's was still open"
        );
    }
}
