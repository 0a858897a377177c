//! Backups of the application database: taken online, verified, kept by
//! retention, catalogued in the journal.
//!
//! # Layout
//!
//! - `config`: [`BackupConfig`] and the `DEFAULT_*` constants.
//! - `destination`: the [`Destination`] interface (stage, put, list, read,
//!   delete; each method's contract stated) and [`LocalDir`].
//! - `meta`: [`BackupInfo`] (sidecar and catalog row), [`Verification`],
//!   naming.
//! - `compress`: zstd compression of backup files, streamed ([`Compress`]).
//! - `progress`: the [`Progress`] callback long work reports bytes to.
//! - `take`: the online copy (why it is read-only and stepwise: see there).
//! - `verify`: checksum, read-only open, `integrity_check`, row counts;
//!   optionally a trial restore ([`VerifyOptions`]).
//! - `retention`: which backups to delete ([`Retention`]: the newest
//!   `keep_last`, and daily, weekly, monthly generations).
//! - `restore`: check, stage and install a backup in place of the database.
//! - `actor`: the [`BackupActor`] and its messages [`BackupMsg`].

mod actor;
mod compress;
pub(crate) use compress::hex;
mod config;
mod destination;
mod meta;
mod progress;
mod restore;
mod retention;
mod take;
mod verify;

pub use actor::{BackupActor, BackupArgs, BackupMsg, BackupState, DEFAULT_TICK};
pub use compress::{
    compress_file, decompress_file, Compress, Decompressed, MAX_COMPRESS_LEVEL, MIN_COMPRESS_LEVEL,
    ZSTD_SUFFIX,
};
pub use config::{
    BackupConfig, DEFAULT_COMPRESS_LEVEL, DEFAULT_INTERVAL, DEFAULT_KEEP_GENERATIONS,
    DEFAULT_KEEP_LAST, DEFAULT_STEP_PAGES, DEFAULT_STEP_PAUSE, DEFAULT_VERIFY_EVERY,
};
pub use destination::{check_name, Destination, LocalDir, FILE_MODE};
pub use meta::{
    fill_from_sidecars, read_sidecar, sidecar_name, utc_stamp, BackupInfo, Verification,
};
pub use progress::Progress;
pub use restore::{
    install, prepare, prepare_with, remove_stale_staged, restore_file, staged_path, Staged,
};
pub use retention::{to_delete, Retention};
pub use take::{sha256, take, take_with, write_sidecar, TakeOptions, MAX_RESTARTS};
pub use verify::{verify, verify_with, VerifyOptions};
