//! Verifying a backup: proof that it is the file that was written and that
//! it opens as a sound database holding what was recorded.
//!
//! The checks, each failure one line of [`Verification::errors`]: the
//! file's SHA-256 is the recorded one; it opens read-only; `PRAGMA
//! integrity_check` answers `ok`; the rows per table are those recorded.
//!
//! A **compressed** backup (`.db.zst`) is checked the same way: the
//! SHA-256 of the stored (compressed) file, then it is decompressed
//! (streamed) into a new temporary directory (under `TMPDIR`, mode 0600)
//! and the database there is opened read-only and checked; its size must
//! be the recorded [`BackupInfo::uncompressed_size`] and the zstd frame's
//! own checksum must hold. The temporary copy is removed afterwards.
//!
//! With a **trial restore** ([`VerifyOptions::trial_restore`]) the backup
//! is also restored on trial: copied (mode 0600) into a new temporary
//! directory (under `TMPDIR`, default `/tmp`), opened read-write there as
//! the runtime opens its database after a restore (`journal_mode=WAL`, the
//! configured `synchronous` and busy timeout, foreign keys on), checked
//! with `PRAGMA integrity_check` through that connection, and the write
//! lock taken and released (`BEGIN IMMEDIATE; ROLLBACK`). The read-only
//! checks cannot see a file that reads well but cannot be written (a
//! header that makes SQLite treat it as read-only, a journal mode that
//! cannot be set). The copy and its directory are removed afterwards; the
//! backup itself is never opened read-write.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;

use super::compress::decompress_metered;
use super::destination::FILE_MODE;
use super::meta::{BackupInfo, Verification};
use super::progress::{Meter, Progress};
use super::take::{file_len, open_backup, row_counts, sha256_metered};
use crate::connection::{open_read_write, DbOptions};
use crate::maintenance::now_ms;

/// What a verification does beyond the standard checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyOptions {
    /// Restore a copy on trial (see the module documentation), opened
    /// with these options; their `path` is ignored (the copy's is used).
    /// `None`: no trial restore.
    pub trial_restore: Option<DbOptions>,
}

/// Verify the backup file at `path` against `info` with the standard
/// checks; blocking. Never an error: what went wrong is in the answer.
pub fn verify(path: &Path, info: &BackupInfo) -> Verification {
    verify_with(path, info, &VerifyOptions::default(), None)
}

/// Verify the backup file at `path` against `info`, with `options`;
/// blocking. Never an error: what went wrong is in the answer.
/// `progress` is told the bytes hashed, decompressed and copied.
pub fn verify_with(
    path: &Path,
    info: &BackupInfo,
    options: &VerifyOptions,
    progress: Option<Progress<'_>>,
) -> Verification {
    let meter = Meter::new(progress, verify_bytes(path, info, options));
    verify_metered(path, info, options, &meter)
}

/// The bytes [`verify_with`] reads from files (its progress total): the
/// stored file once to hash it, once more to decompress it or to copy it
/// for a trial restore.
pub(crate) fn verify_bytes(path: &Path, info: &BackupInfo, options: &VerifyOptions) -> u64 {
    let stored = file_len(path).unwrap_or(info.size);
    if info.is_compressed() || options.trial_restore.is_some() {
        2 * stored
    } else {
        stored
    }
}

/// [`verify_with`], its passes counted by `meter`.
pub(crate) fn verify_metered(
    path: &Path,
    info: &BackupInfo,
    options: &VerifyOptions,
    meter: &Meter<'_>,
) -> Verification {
    let started = Instant::now();
    let mut errors = Vec::new();
    match sha256_metered(path, meter) {
        Ok(sum) if sum == info.sha256 => {}
        Ok(sum) => errors.push(format!(
            "checksum mismatch: the file's SHA-256 is {sum}, {} was recorded: the file changed after it was written",
            info.sha256
        )),
        Err(e) => errors.push(format!("cannot read the file: {e}")),
    }
    // A compressed backup is checked through a decompressed copy.
    let mut scratch = None;
    let plain = if info.is_compressed() {
        match decompress_to_scratch(path, info, meter) {
            Ok((dir, plain)) => {
                scratch = Some(dir);
                Some(plain)
            }
            Err(e) => {
                errors.push(e);
                None
            }
        }
    } else {
        Some(path.to_path_buf())
    };
    let Some(plain) = plain else {
        return Verification {
            name: info.name.clone(),
            passed: false,
            errors,
            verified_at_ms: now_ms(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
    };
    match open_backup(&plain) {
        Err(e) => errors.push(format!("does not open read-only: {e}")),
        Ok(conn) => {
            if let Err(e) = integrity_ok(&conn) {
                errors.push(e);
            }
            match row_counts(&conn) {
                Ok(counts) if counts == info.row_counts => {}
                Ok(counts) => errors.push(format!(
                    "row counts {counts:?} differ from the recorded {:?}",
                    info.row_counts
                )),
                Err(e) => errors.push(format!("cannot count rows: {e}")),
            }
        }
    }
    if let Some(db) = &options.trial_restore {
        // The decompressed copy is already a private scratch file: it is
        // opened read-write in place; an uncompressed backup is copied.
        let tried = if scratch.is_some() {
            trial_open(&plain, db)
        } else {
            trial_restore(&plain, db, meter)
        };
        if let Err(e) = tried {
            errors.push(format!("trial restore: {e}"));
        }
    }
    drop(scratch);
    Verification {
        name: info.name.clone(),
        passed: errors.is_empty(),
        errors,
        verified_at_ms: now_ms(),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// `PRAGMA integrity_check` answers `ok`; otherwise what it found.
fn integrity_ok(conn: &Connection) -> Result<(), String> {
    let lines: Result<Vec<String>, _> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match lines {
        Ok(lines) if lines == ["ok"] => Ok(()),
        Ok(lines) => Err(format!("integrity_check: {}", lines.join("; "))),
        Err(e) => Err(format!("integrity_check failed: {e}")),
    }
}

/// A new private temporary directory (under `TMPDIR`), removed when
/// dropped.
fn scratch_dir(purpose: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(&format!("resilite-{purpose}-"))
        .tempdir()
        .map_err(|e| {
            format!(
                "cannot create a temporary directory under {} ({e}): set TMPDIR to a directory with room for a copy of the database",
                std::env::temp_dir().display()
            )
        })
}

/// Decompress the backup at `path` into a scratch directory; the directory
/// and the database file in it. Checks the size against
/// `info.uncompressed_size` when recorded.
fn decompress_to_scratch(
    path: &Path,
    info: &BackupInfo,
    meter: &Meter<'_>,
) -> Result<(tempfile::TempDir, PathBuf), String> {
    let dir = scratch_dir("verify")?;
    let plain = dir.path().join("backup.db");
    let done = decompress_metered(path, &plain, meter).map_err(|e| e.to_string())?;
    if let Some(expected) = info.uncompressed_size {
        if done.size != expected {
            return Err(format!(
                "decompresses to {} bytes, {expected} were recorded: the file changed after it was written",
                done.size
            ));
        }
    }
    Ok((dir, plain))
}

/// Copy the database file at `path` into a new temporary directory, open
/// the copy read-write with `db`'s options and check it there; the
/// directory is removed on return.
fn trial_restore(path: &Path, db: &DbOptions, meter: &Meter<'_>) -> Result<(), String> {
    let dir = scratch_dir("trial-restore")?;
    let copy = dir.path().join("restored.db");
    let copied = (|| -> std::io::Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&copy)?;
        let n = std::io::copy(&mut meter.reader(File::open(path)?), &mut out)?;
        meter.pass_done(n);
        out.sync_all()
    })();
    copied.map_err(|e| format!("cannot copy the backup to {} ({e})", copy.display()))?;
    trial_open(&copy, db)
}

/// Open the private copy at `copy` read-write with `db`'s options (as the
/// runtime opens its database), check it there and close it.
fn trial_open(copy: &Path, db: &DbOptions) -> Result<(), String> {
    let options = DbOptions {
        path: copy.to_path_buf(),
        ..db.clone()
    };
    let conn = open_read_write(&options)
        .map_err(|e| format!("the restored copy does not open read-write: {e}"))?;
    integrity_ok(&conn)?;
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(|e| format!("the restored copy takes no write lock: {e}"))?;
    conn.close()
        .map_err(|(_, e)| format!("the restored copy does not close: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{sha256, take, Destination, LocalDir};
    use crate::connection::{open_read_write, DbOptions};

    #[test]
    fn verify_passes_then_fails_on_one_changed_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let db = DbOptions::new(tmp.path().join("app.db"));
        let conn = open_read_write(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3); PRAGMA user_version = 7",
        )
        .unwrap();
        let dest = LocalDir::new(tmp.path().join("backups"));
        let info = take(&db, &dest, "manual").unwrap();
        assert_eq!(info.row_counts["t"], 3);
        assert_eq!(info.user_version, 7);
        assert_eq!(
            dest.list().unwrap(),
            [info.name.clone(), info.sidecar_name()]
        );
        let path = dest.read_path(&info.name).unwrap();
        assert_eq!(crate::backup::read_sidecar(&path).unwrap(), info);
        let ok = verify(&path, &info);
        assert!(ok.passed, "{:?}", ok.errors);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let bad = verify(&path, &info);
        assert!(!bad.passed);
        assert!(
            bad.errors[0].contains("checksum mismatch"),
            "{:?}",
            bad.errors
        );
    }

    /// A trial restore passes on a sound backup and leaves it untouched;
    /// it catches a file that reads well but cannot be opened read-write
    /// (write version 3 in the header: SQLite treats it as read-only),
    /// which the standard checks pass.
    #[test]
    fn verify_with_trial_restore_catches_a_file_that_cannot_be_written() {
        let tmp = tempfile::tempdir().unwrap();
        let db = DbOptions::new(tmp.path().join("app.db"));
        open_read_write(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        let dest = LocalDir::new(tmp.path().join("backups"));
        let mut info = take(&db, &dest, "manual").unwrap();
        let path = dest.read_path(&info.name).unwrap();
        let trial = VerifyOptions {
            trial_restore: Some(db.clone()),
        };
        let ok = verify_with(&path, &info, &trial, None);
        assert!(ok.passed, "{:?}", ok.errors);
        // The backup itself was not opened read-write: same bytes, no -wal.
        assert_eq!(sha256(&path).unwrap(), info.sha256);
        assert!(!tmp
            .path()
            .join("backups")
            .join(format!("{}-wal", info.name))
            .exists());

        // Write version 3 (byte 18 of the header), recorded as written.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[18] = 3;
        std::fs::write(&path, bytes).unwrap();
        info.sha256 = sha256(&path).unwrap();
        let standard = verify(&path, &info);
        assert!(standard.passed, "{:?}", standard.errors);
        let failed = verify_with(&path, &info, &trial, None);
        assert!(!failed.passed);
        assert_eq!(failed.errors.len(), 1, "{:?}", failed.errors);
        assert!(
            failed.errors[0]
                .starts_with("trial restore: the restored copy does not open read-write"),
            "{:?}",
            failed.errors
        );
    }
}
