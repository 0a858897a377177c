//! Retention and archives: rows of an application table older than a
//! policy's `keep` are moved, in bounded batches, to verified zstd-compressed
//! SQLite files (the archives) recorded in the journal's catalog, and only
//! then deleted; or, for a purge-only policy, deleted.
//!
//! # Layout
//!
//! - `policy`: [`RetentionPolicy`] (`[[retention]]`), [`TimeFormat`],
//!   [`ArchiveOptions`] (`[archive]`) and the `DEFAULT_*` constants.
//! - `record`: [`ArchiveRecord`] (a catalog row) and [`ArchiveStatus`].
//! - `file`: writing an archive file (temporary name, fsync, rename,
//!   directory fsync, mode 0600) and verifying one.
//! - `run`: an archive run ([`run`]): resume what a crash left, then each
//!   policy's batches; the resume alone ([`resume`], at the runtime's
//!   start); the [`Host`] through which it reaches the writer, the journal
//!   and the events.
//! - `restore`: putting an archive's rows back ([`restore`]).
//!
//! # Phases of one batch, and what a crash after each leaves
//!
//! 1. the archive file is written (temporary name, fsync, rename, directory
//!    fsync); a crash here leaves a file without a catalog row (or a
//!    temporary file): the next run removes it (the rows are still in the
//!    database);
//! 2. the catalog row is recorded `written`; 3. the file is verified and the
//!    row set `verified`; a crash after 2 or 3 leaves a row whose rows are
//!    still in the database: the next run verifies the file again and
//!    deletes them;
//! 4. the rows are deleted through the writer, in one transaction, each
//!    only where the live row is identical (rowid and every archived
//!    column) to its archived copy; a row changed since stays in the
//!    database with its change, and its rowid is recorded as kept (not
//!    archived; a restore skips it);
//!    5. the row is set `purged`; a crash between 4 and 5 leaves a
//!    `verified` row whose identical rows are gone: the next run deletes
//!    none, finds the same changed rows, and sets it `purged`.
//!
//! Rows are never in neither place; they are in both only between 1 and 4.
//!
//! What a crash left is completed by the next run, and by the runtime's
//! start ([`resume`]: the same steps, without applying any policy), which
//! records an `archive_resumed` event saying what it did. Only files named
//! as this database's archives (`<db stem>-<table>-<stamp>-<rowid>.db.zst`,
//! parsed exactly) and their scratch files are ever removed.

mod file;
mod policy;
mod record;
mod restore;
mod run;

pub use file::{verify_file, ArchiveCheck};
pub use policy::{
    check_identifier, ArchiveOptions, RetentionPolicy, TimeFormat, DEFAULT_BATCH_ROWS,
    DEFAULT_INTERVAL, MIN_KEEP,
};
pub use record::{ArchiveRecord, ArchiveStatus};
pub use restore::{restore, RestoreCounts};
pub use run::{resume, run, Host, RunReport, TableReport, WriterJob, FAULT_ENV};
