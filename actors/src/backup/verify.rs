//! Verifying a backup: proof that it is the file that was written and that
//! it opens as a sound database holding what was recorded.
//!
//! The checks, each failure one line of [`Verification::errors`]: the
//! file's SHA-256 is the recorded one; it opens read-only; `PRAGMA
//! integrity_check` answers `ok`; the rows per table are those recorded.

use std::path::Path;
use std::time::Instant;

use super::meta::{BackupInfo, Verification};
use super::take::{open_backup, row_counts, sha256};
use crate::maintenance::now_ms;

/// Verify the backup file at `path` against `info`; blocking. Never an
/// error: what went wrong is in the answer.
pub fn verify(path: &Path, info: &BackupInfo) -> Verification {
    let started = Instant::now();
    let mut errors = Vec::new();
    match sha256(path) {
        Ok(sum) if sum == info.sha256 => {}
        Ok(sum) => errors.push(format!(
            "checksum mismatch: the file's SHA-256 is {sum}, {} was recorded: the file changed after it was written",
            info.sha256
        )),
        Err(e) => errors.push(format!("cannot read the file: {e}")),
    }
    match open_backup(path) {
        Err(e) => errors.push(format!("does not open read-only: {e}")),
        Ok(conn) => {
            let integrity: Result<Vec<String>, _> = conn
                .prepare("PRAGMA integrity_check")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
            match integrity {
                Ok(lines) if lines == ["ok"] => {}
                Ok(lines) => errors.push(format!("integrity_check: {}", lines.join("; "))),
                Err(e) => errors.push(format!("integrity_check failed: {e}")),
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
    Verification {
        name: info.name.clone(),
        passed: errors.is_empty(),
        errors,
        verified_at_ms: now_ms(),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{take, Destination, LocalDir};
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
}
