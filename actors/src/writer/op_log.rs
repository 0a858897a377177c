//! The application writer's side of the operation log: a connection of its
//! own on the journal, the sequence numbers, and the op-log position kept
//! in the application database.
//!
//! # What is written, and when
//!
//! Each group commit that committed at least one operation gives its
//! successful operations the next sequence numbers, in the order they were
//! applied (failed ones get none and are not logged; an `Operation::Once`
//! keeps its key). Inside the application transaction, before COMMIT, the
//! last of those numbers is written to `_resilite_op_log` (one row) of the
//! **application database**: so every copy of the database (a backup, the
//! file itself) says exactly which prefix of the log it holds. The
//! operations are appended to the journal's `op_log` as one row, in one
//! journal transaction, after COMMIT returned (or, at `synchronous` FULL,
//! beside it, marked pending until its outcome is known: see
//! `writer::complete`), and only then are the callers answered: an
//! acknowledged write is always in the log (or inside a recorded gap,
//! below). A crash between the two commits loses no acknowledged write
//! (nobody was answered) and is found at the next open: a database
//! position ahead of the log is a range recorded as a gap; a pending row
//! after the position (its commit never completed) is removed, and one the
//! database holds is confirmed.
//!
//! The append, and what happens when it fails, are the completion
//! stage's (see `writer::complete`): there the log's rows, the audit's
//! records and any gaps are one journal transaction per group commit, one
//! row for all of its operations.
//!
//! # Limits
//!
//! With `op_log = false` nothing is logged and the database's position is
//! not advanced; turning the log on again continues the numbering with no
//! gap recorded for what was committed meanwhile, so only backups taken
//! after the log was turned back on replay completely.
//!
//! # Replay
//!
//! A recovery re-applies the log after a backup's position with
//! [`WriterMsg::Replay`](super::WriterMsg::Replay): those operations keep
//! their numbers (the database's position follows them) and are not
//! logged again, so the log stays one history of the database's
//! operations, and a second recovery from the same backup replays each
//! operation once.

use std::path::PathBuf;

use rusqlite::Connection;

use crate::connection::{open_read_write, DbOptions};
use crate::error::Result;
use crate::journal::op_log::{self as journal_log, Gap};
use crate::maintenance::now_ms;

/// The application database's table holding the last sequence number it
/// committed (one row, `id = 1`).
pub const POSITION_TABLE: &str = "_resilite_op_log";

/// The sequence number the database at `conn` holds the operation log up
/// to (every logged operation up to it is in the database, none after it):
/// `None` when no operation was ever logged for it.
pub fn position(conn: &Connection) -> Result<Option<i64>> {
    if !conn.table_exists(None, POSITION_TABLE)? {
        return Ok(None);
    }
    Ok(conn
        .query_row("SELECT seq FROM _resilite_op_log WHERE id = 1", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?)
}

/// Write `seq` as the database's position, inside the open transaction.
pub(super) fn write_position(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    const SET: &str = "INSERT INTO _resilite_op_log (id, seq) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq";
    match conn.prepare_cached(SET).and_then(|mut s| s.execute([seq])) {
        Err(_) if conn.table_exists(None, POSITION_TABLE).ok() == Some(false) => {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS _resilite_op_log (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL)",
            )?;
            conn.prepare_cached(SET)?.execute([seq]).map(drop)
        }
        other => other.map(drop),
    }
}

/// Move the database `app`'s position past every sequence number given so
/// far, inside the caller's open transaction: a **barrier**. resilite's own
/// work that changes the database outside the log (a schema migration or
/// rollback) calls it in its transaction. The new position is a number no
/// operation has; the writer (after a
/// [`WriterMsg::Call`](super::WriterMsg::Call) job), or the CLI when no
/// writer runs, records the range as a gap, so a recovery from a
/// backup taken before the change (a `pre-migration` backup) restores it
/// without replaying the log across it: the operations after it were
/// written against the changed schema. A crash between the commit and the
/// gap's record is found as a gap at the next open, as any position ahead
/// of the log is.
///
/// The numbers given so far: the database's position, and the journal's
/// highest known number when `journal` is given and readable (the position
/// lags behind it after a restore of an older copy). `create`: make the
/// position table when the database has none (the log is on); without it,
/// a database that never had a position is left alone (nothing to replay).
/// The position before and after, or `None` when nothing was done.
pub fn barrier(
    app: &Connection,
    journal: Option<&DbOptions>,
    create: bool,
) -> Result<Option<(i64, i64)>> {
    if !create && !app.table_exists(None, POSITION_TABLE)? {
        return Ok(None);
    }
    let from = numbers_given(app, journal)?;
    write_position(app, from + 1)?;
    Ok(Some((from, from + 1)))
}

/// The highest operation-log number given for the database `app`: its
/// position, or the journal's highest known number (when `journal` is given
/// and readable) if that is higher. What a [`barrier`] moves past.
pub fn numbers_given(app: &Connection, journal: Option<&DbOptions>) -> Result<i64> {
    let held = position(app)?.unwrap_or(0);
    let logged = match journal {
        Some(j) if j.path.is_file() => crate::connection::open_read_only(j)
            .and_then(|c| journal_log::highest_known_seq(&c))
            .unwrap_or_else(|e| {
                tracing::warn!(path = %j.path.display(), detail = %e.detail, "the operation log's numbers could not be read; the database's position alone is used");
                0
            }),
        _ => 0,
    };
    Ok(held.max(logged))
}

/// Why a barrier (see [`barrier`]) is a gap in the log.
const BARRIER_REASON: &str = "resilite changed the database outside the operation log here (a schema migration or rollback): a recovery from a backup taken before this point restores that backup without replaying the log across it";
/// Why a position found ahead of the log at open is a gap.
const AHEAD_REASON: &str = "the database holds operations that never reached the log (a crash between the database's commit and the log's, or a failed append)";

/// The writer's journal connection and where the sequence stands.
pub(super) struct OpLog {
    conn: Connection,
    path: PathBuf,
    /// The last sequence number given to a committed operation.
    last: i64,
    /// Gaps not yet recorded in the journal.
    pending: Vec<Gap>,
}

impl OpLog {
    /// Open the journal at `opts` (with its pragmas and busy timeout) and
    /// find where the sequence stands, from the log and from the database
    /// `app`. The journal must be migrated already (its writer starts first).
    pub(super) fn open(opts: &DbOptions, app: &Connection) -> Result<OpLog> {
        let conn =
            open_read_write(opts).map_err(|e| e.during("open the operation log", &opts.path))?;
        let held = position(app)?.unwrap_or(0);
        let removed = journal_log::settle(&conn, held)
            .map_err(|e| e.during("settle the operation log", &opts.path))?;
        if removed > 0 {
            tracing::warn!(
                removed,
                position = held,
                "the operation log held rows written beside a commit that never completed (the process ended during it); removed, as the database does not hold them"
            );
        }
        let mut log = OpLog {
            conn,
            path: opts.path.clone(),
            last: 0,
            pending: Vec::new(),
        };
        log.resync(app)?;
        Ok(log)
    }

    /// Find where the sequence stands again (at open, and when the
    /// database file was replaced): never lower than before, and past both
    /// the log's newest number and the database's position. A database
    /// ahead of the log had operations committed that were never logged
    /// (a crash between the two commits, or an append that failed): a gap.
    pub(super) fn resync(&mut self, app: &Connection) -> Result<()> {
        self.resync_as(app, AHEAD_REASON)
    }

    /// After resilite's own work on the database (a
    /// [`WriterMsg::Call`](super::WriterMsg::Call) job): a position it
    /// moved past the log is a [`barrier`], recorded as a gap at once.
    pub(super) fn after_own_work(&mut self, app: &Connection) {
        if let Err(e) = self.resync_as(app, BARRIER_REASON) {
            tracing::warn!(detail = %e.detail, "the operation log could not look at the database after resilite's own work on it");
        }
    }

    /// [`resync`](Self::resync), a gap found recorded with `reason`.
    fn resync_as(&mut self, app: &Connection, reason: &str) -> Result<()> {
        let logged = journal_log::highest_known_seq(&self.conn)
            .map_err(|e| e.during("read the operation log", &self.path))?;
        let held = position(app)?.unwrap_or(0);
        if held > logged && held > self.last {
            let gap = Gap {
                after_seq: logged.max(self.last),
                through_seq: held,
                at_ms: now_ms(),
                reason: reason.into(),
            };
            if reason == AHEAD_REASON {
                tracing::error!(
                    after = gap.after_seq,
                    through = gap.through_seq,
                    "operation log gap found at open"
                );
            } else {
                tracing::info!(
                    after = gap.after_seq,
                    through = gap.through_seq,
                    reason,
                    "operation log barrier recorded as a gap"
                );
            }
            self.pending.push(gap);
        }
        self.last = self.last.max(logged).max(held);
        Ok(())
    }

    /// The last sequence number given.
    pub(super) fn last(&self) -> i64 {
        self.last
    }

    /// Number `committed` operations just committed (the numbers after
    /// [`OpLog::last`]): the first one's, `None` when there are none.
    pub(super) fn number(&mut self, committed: usize) -> Option<i64> {
        if committed == 0 {
            return None;
        }
        self.last += committed as i64;
        Some(self.last - committed as i64 + 1)
    }

    /// The gaps found and not yet handed over to be recorded.
    pub(super) fn take_gaps(&mut self) -> Vec<Gap> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Operation, Statement, Value};

    /// What the completion stage does with a batch of one: number it, and
    /// append it with the gaps found.
    fn log_one(log: &mut OpLog, v: i64) {
        let op = Operation::Statement(Statement::new(
            "INSERT INTO t VALUES (?1)",
            [Value::Integer(v)],
        ));
        let first = log.number(1).unwrap();
        let gaps = log.take_gaps();
        journal_log::append(&log.conn, now_ms(), first, &[&op], &gaps).unwrap();
    }

    /// A database whose position is ahead of the log (a crash between the
    /// two commits) is a gap found at open; numbering goes on after it.
    #[test]
    fn a_database_ahead_of_the_log_is_a_gap_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions::new(dir.path().join("journal.db"));
        crate::journal::migrate(&open_read_write(&opts).unwrap()).unwrap();
        let app = Connection::open_in_memory().unwrap();
        assert_eq!(position(&app).unwrap(), None);
        write_position(&app, 5).unwrap();
        assert_eq!(position(&app).unwrap(), Some(5));
        let mut log = OpLog::open(&opts, &app).unwrap();
        assert_eq!(log.last(), 5);
        assert_eq!(log.number(0), None, "nothing committed, no number used");
        log_one(&mut log, 1);
        assert_eq!(journal_log::newest_seq(&log.conn).unwrap(), Some(6));
        let gaps = journal_log::gaps(&log.conn).unwrap();
        assert_eq!((gaps[0].after_seq, gaps[0].through_seq), (0, 5));
        // Opened again (a restart, or the file replaced by an older copy):
        // never a number given before.
        write_position(&app, 2).unwrap();
        log.resync(&app).unwrap();
        assert_eq!(log.last(), 6);
        let mut again = OpLog::open(&opts, &app).unwrap();
        assert_eq!(again.last(), 6);
        log_one(&mut again, 2);
        assert_eq!(journal_log::newest_seq(&again.conn).unwrap(), Some(7));
        assert_eq!(journal_log::gaps(&again.conn).unwrap().len(), 1);
    }

    /// Rows written beside a commit (pending) are settled at open against
    /// the database's position: the one the database holds is kept and
    /// confirmed, the one after it (the process ended during that commit)
    /// is removed and its numbers are given again; committed rows are
    /// never touched, even past the position (a restored older copy).
    #[test]
    fn pending_rows_are_kept_or_removed_at_open_by_the_database_position() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions::new(dir.path().join("journal.db"));
        let journal = open_read_write(&opts).unwrap();
        crate::journal::migrate(&journal).unwrap();
        let row = |first: i64, values: &[i64], pending: bool| {
            journal_log::insert_values(&journal, first, values, pending)
        };
        row(1, &[1, 2], false);
        row(3, &[3], true);
        row(4, &[4, 5], true);
        let app = Connection::open_in_memory().unwrap();
        write_position(&app, 3).unwrap();

        let mut log = OpLog::open(&opts, &app).unwrap();
        let seqs = |c: &Connection| -> Vec<i64> {
            journal_log::after(c, 0, 10)
                .unwrap()
                .iter()
                .map(|o| o.seq)
                .collect()
        };
        assert_eq!(seqs(&journal), [1, 2, 3]);
        let pending = journal_log::pending(&journal).unwrap();
        assert_eq!(pending, 0);
        assert_eq!(log.last(), 3, "the removed row's numbers are given again");
        assert_eq!(log.number(1), Some(4));

        // A database older than the log (a restored copy): committed rows
        // after its position stay, for a recovery to replay.
        write_position(&app, 1).unwrap();
        OpLog::open(&opts, &app).unwrap();
        assert_eq!(seqs(&journal), [1, 2, 3]);
    }
}
