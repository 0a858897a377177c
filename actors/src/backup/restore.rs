//! Restoring a backup onto the database path, in two steps so that the
//! current file stays untouched until the last one.
//!
//! 1. [`prepare`]: refuse a backup that belongs to another database (see
//!    below) or fails verification (checksum, read-only open,
//!    `integrity_check`, row counts: [`verify`](super::verify)); then copy
//!    it to a temporary name in the database's directory (mode 0600),
//!    fsync it and check the copy's SHA-256 against the recorded one. The
//!    answer, [`Staged`], owns that copy (dropped unused, it is removed),
//!    so retention may delete the backup afterwards without harm. A
//!    compressed backup (`.db.zst`) is decompressed into that copy
//!    instead, streamed; the compressed bytes read must hash to the
//!    recorded SHA-256, and the copy, read back after the fsync, to what
//!    was decompressed (its size the recorded uncompressed size).
//! 2. [`install`]: once no connection has the database open, remove its
//!    stale `-wal` and `-shm`, rename the copy over the database and fsync
//!    the directory. The rename is atomic: a crash leaves the old file or
//!    the new one, never a mix.
//!
//! # Which database a backup belongs to
//!
//! A backup is named `<dbname>-<UTC timestamp>-<label>.db` after the file
//! stem of the database it was copied from, and its sidecar records that
//! name. A backup belongs to the target when both the file's name and the
//! name in its sidecar start with `<target stem>-` (the target's stem
//! sanitized as when naming backups). So a backup of `orders.db` is never
//! restored onto `app.db`; to do that on purpose, copy the file first.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::compress::decompress_metered;
use super::destination::create_private;
use super::meta::{backup_name, read_sidecar, BackupInfo};
use super::progress::{Meter, Progress};
use super::take::{file_len, sha256_metered};
use super::verify::{verify_bytes, verify_metered, VerifyOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::maintenance::sibling;

/// A verified copy of a backup beside the database, ready to be renamed
/// over it by [`install`]. Dropped without being installed, it is removed.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    /// The backup it is a copy of.
    pub info: BackupInfo,
}

impl Staged {
    /// The temporary file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After install the path is gone; otherwise the copy is not wanted.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Refuse `backup` (the file, described by `info`) for the database at
/// `target` unless it belongs to it and passes verification; then copy it
/// beside `target` under a temporary name. Blocking. `target` is not
/// touched.
pub fn prepare(backup: &Path, info: &BackupInfo, target: &Path) -> Result<Staged> {
    prepare_with(backup, info, target, None)
}

/// [`prepare`], telling `progress` the bytes verified, copied (or
/// decompressed) and read back.
pub fn prepare_with(
    backup: &Path,
    info: &BackupInfo,
    target: &Path,
    progress: Option<Progress<'_>>,
) -> Result<Staged> {
    if !backup.is_file() {
        return Err(Error::bad_input(format!(
            "backup {} not found: list the backups with `resilite backups` and pick one that exists; the database was not changed",
            backup.display()
        )));
    }
    check_belongs(backup, info, target)?;
    let checks = VerifyOptions::default();
    let stored = file_len(backup)?;
    // Verify, then copy and read back (or decompress and read back).
    let staging = match info.uncompressed_size {
        Some(plain) if info.is_compressed() => stored + plain,
        _ => 2 * stored,
    };
    let meter = Meter::new(progress, verify_bytes(backup, info, &checks) + staging);
    let verification = verify_metered(backup, info, &checks, &meter);
    if !verification.passed {
        return Err(Error::new(
            ErrorClass::Corruption,
            format!(
                "backup {} failed verification: {}",
                backup.display(),
                verification.errors.join("; ")
            ),
            "do not restore from it: pick another verified backup (`resilite backups`); the database was not changed",
        ));
    }
    let staged = Staged {
        path: staged_path(target),
        info: info.clone(),
    };
    if info.is_compressed() {
        stage_decompressed(backup, info, &staged.path, &meter)?;
        return Ok(staged);
    }
    let copy = || -> std::io::Result<()> {
        let mut out = create_private(&staged.path)?;
        let n = std::io::copy(&mut meter.reader(File::open(backup)?), &mut out)?;
        meter.pass_done(n);
        out.sync_all()
    };
    copy().map_err(|e| Error::from(e).during("copy backup for restore", &staged.path))?;
    let sum = sha256_metered(&staged.path, &meter)?;
    if sum != info.sha256 {
        return Err(Error::new(
            ErrorClass::Corruption,
            format!(
                "the copy of backup {} at {} has SHA-256 {sum}, {} was recorded",
                info.name,
                staged.path.display(),
                info.sha256
            ),
            "the disk holding the database returned other bytes than were written; check it; the database was not changed",
        ));
    }
    Ok(staged)
}

/// Where [`prepare`] stages the copy for `target`: a hidden temporary
/// name beside it, `.<file name>.restore.tmp`.
pub fn staged_path(target: &Path) -> PathBuf {
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    parent_dir(target).join(format!(".{file_name}.restore.tmp"))
}

/// Remove a staged copy left by a restore or recovery that was killed
/// before [`install`] (the database itself is whole: old or new). Blocking.
pub fn remove_stale_staged(target: &Path) {
    let stale = staged_path(target);
    match std::fs::remove_file(&stale) {
        Ok(()) => {
            tracing::warn!(file = %stale.display(), "removed the copy staged by a restore or recovery that did not finish (the database file was not replaced by it)")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %stale.display(), error = %e, "could not remove a stale staged copy")
        }
    }
}

/// Decompress the compressed backup `backup` into `to` (mode 0600,
/// fsynced) and check it: the compressed bytes read are the recorded ones,
/// the file reads back as decompressed, its size is the recorded one.
fn stage_decompressed(
    backup: &Path,
    info: &BackupInfo,
    to: &Path,
    meter: &Meter<'_>,
) -> Result<()> {
    let done = decompress_metered(backup, to, meter)
        .map_err(|e| e.during("decompress backup for restore", to))?;
    meter.set_total(meter.done() + done.size);
    let unchanged = "the database was not changed";
    if done.stored_sha256 != info.sha256 {
        return Err(Error::new(
            ErrorClass::Corruption,
            format!(
                "backup {} changed while it was restored: its SHA-256 is now {}, {} was recorded",
                backup.display(),
                done.stored_sha256,
                info.sha256
            ),
            format!("check the disk holding the backup directory; {unchanged}"),
        ));
    }
    if info.uncompressed_size.is_some_and(|n| n != done.size) {
        return Err(Error::new(
            ErrorClass::Corruption,
            format!(
                "backup {} decompresses to {} bytes, {} were recorded",
                backup.display(),
                done.size,
                info.uncompressed_size.unwrap_or_default()
            ),
            format!("do not restore from it: pick another verified backup; {unchanged}"),
        ));
    }
    let sum = sha256_metered(to, meter)?;
    if sum != done.sha256 {
        return Err(Error::new(
            ErrorClass::Corruption,
            format!(
                "the decompressed copy of backup {} at {} has SHA-256 {sum}, {} was written",
                info.name,
                to.display(),
                done.sha256
            ),
            format!("the disk holding the database returned other bytes than were written; check it; {unchanged}"),
        ));
    }
    Ok(())
}

/// Put `staged` in place of the database at `target`: remove its stale
/// `-wal` and `-shm` (call this only once no connection has it open), rename,
/// fsync the directory. Blocking.
pub fn install(staged: Staged, target: &Path) -> Result<BackupInfo> {
    for suffix in ["-wal", "-shm"] {
        let side = sibling(target, suffix);
        match std::fs::remove_file(&side) {
            Ok(()) => {
                tracing::info!(file = %side.display(), "stale file of the old database removed")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::from(e).during("remove before restore", &side)),
        }
    }
    std::fs::rename(&staged.path, target)
        .map_err(|e| Error::from(e).during("rename the restored file over", target))?;
    let dir = parent_dir(target);
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::from(e).during("fsync directory", &dir))?;
    Ok(staged.info.clone())
}

/// Restore the backup file `backup` (its sidecar beside it) onto the
/// database at `target`, which no connection may have open: [`prepare`]
/// then [`install`]. Blocking.
pub fn restore_file(backup: &Path, target: &Path) -> Result<BackupInfo> {
    if !backup.is_file() {
        return Err(Error::bad_input(format!(
            "backup {} not found: pass a backup file as `resilite backups` lists it, with its directory; the database was not changed",
            backup.display()
        )));
    }
    let info = read_sidecar(backup)?;
    let staged = prepare(backup, &info, target)?;
    install(staged, target)
}

/// Refuse a backup of another database (see the module's documentation).
fn check_belongs(backup: &Path, info: &BackupInfo, target: &Path) -> Result<()> {
    // The prefix backups of `target` are named with.
    let stamp_and_label = backup_name(target, 0, "x");
    let prefix = stamp_and_label
        .strip_suffix("-19700101T000000.000Z-x.db")
        .unwrap_or(&stamp_and_label);
    let prefix = format!("{prefix}-");
    let file = backup
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file.starts_with(&prefix) && info.name.starts_with(&prefix) {
        return Ok(());
    }
    Err(Error::bad_input(format!(
        "backup {} (recorded as {}) belongs to another database: backups of {} are named {prefix}<time>-<label>.db; pick one of its own backups (`resilite backups --db {}`); the database was not changed",
        backup.display(),
        info.name,
        target.display(),
        target.display()
    )))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{take, Destination, LocalDir};
    use crate::connection::{open_read_write, DbOptions};

    fn db_with(path: &Path, rows: i64) {
        let conn = open_read_write(&DbOptions::new(path)).unwrap();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t(x)")
            .unwrap();
        for i in 0..rows {
            conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
    }

    #[test]
    fn restore_file_brings_back_rows_and_refuses_bad_backups() {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app.db");
        db_with(&app, 3);
        let dest = LocalDir::new(tmp.path().join("backups"));
        let info = take(&DbOptions::new(&app), &dest, "manual").unwrap();
        let path = dest.read_path(&info.name).unwrap();
        db_with(&app, 2);

        // Foreign: a backup of other.db.
        let other = tmp.path().join("other.db");
        db_with(&other, 1);
        let foreign = take(&DbOptions::new(&other), &dest, "manual").unwrap();
        let foreign_path = dest.read_path(&foreign.name).unwrap();
        let err = restore_file(&foreign_path, &app).unwrap_err();
        assert!(err.to_string().contains("another database"), "{err}");

        // Missing.
        let err = restore_file(&tmp.path().join("backups/app-nope.db"), &app).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");

        // Tampered.
        let copy = tmp.path().join("backups/app-copy.db");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&copy, bytes).unwrap();
        std::fs::copy(
            format!("{}.json", path.display()),
            format!("{}.json", copy.display()),
        )
        .unwrap();
        let err = restore_file(&copy, &app).unwrap_err();
        assert!(err.to_string().contains("failed verification"), "{err}");

        let restored = restore_file(&path, &app).unwrap();
        assert_eq!(restored.name, info.name);
        let conn = rusqlite::Connection::open(&app).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&app).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!tmp.path().join(".app.db.restore.tmp").exists());
    }
}
