//! An archive run: complete what an interrupted run left, then apply each
//! retention policy in bounded batches (see the module doc for the phases).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::file::{self, Batch};
use super::policy::{check_identifier, ArchiveOptions, RetentionPolicy};
use super::record::{ArchiveRecord, ArchiveStatus};
use crate::backup::{utc_stamp, LocalDir};
use crate::connection::{open_read_only, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::events::Event;
use crate::journal::archives as catalog;
use crate::maintenance::now_ms;
use crate::schema::expected::quote;
use crate::value::Statement;

/// Environment variable naming a point at which an archive run aborts the
/// process (`after_write`, `after_record`, `after_verify`,
/// `after_delete_batch`), for the crash tests. Unset: never.
pub const FAULT_ENV: &str = "RESILITE_FAULT_ARCHIVE";

/// How every archive file's name ends.
const ARCHIVE_SUFFIX: &str = ".db.zst";

/// Work run on the application database's writing connection (the
/// runtime's writer, or the CLI's own connection), answering two counts
/// whose meaning is the job's.
pub type WriterJob = Box<dyn FnOnce(&Connection) -> Result<(u64, u64)> + Send + 'static>;

/// How a run reaches what it does not own.
pub trait Host {
    /// Run `job` on the application database's writing connection, after
    /// every write sent before it, between transactions.
    fn on_writer(&self, job: WriterJob) -> Result<(u64, u64)>;
    /// Apply `statements` to the journal, in one transaction, durably.
    fn journal(&self, statements: Vec<Statement>) -> Result<()>;
    /// The archive catalog, oldest first.
    fn catalog(&self) -> Result<Vec<ArchiveRecord>>;
    /// Record `event`.
    fn event(&self, event: Event);
}

/// What one run did for one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReport {
    /// The policy's table.
    pub table: String,
    /// Rows moved to archives.
    pub archived_rows: u64,
    /// Archive files written.
    pub archives: u64,
    /// Rows deleted by a purge-only policy.
    pub purged_rows: u64,
    /// Rows archived but left in the database because they changed after
    /// their archive was written (their change is kept; they are not
    /// counted as archived).
    pub kept_rows: u64,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Per policy, in config order.
    pub tables: Vec<TableReport>,
    /// Archives an interrupted run left that this one completed.
    pub resumed: u64,
    /// Archive files without a catalog row (a run stopped before recording
    /// them; their rows were still in the database) that were removed.
    pub orphans_removed: u64,
    /// Temporary files a stopped run left beside its archives, removed.
    #[serde(default)]
    pub scratch_removed: u64,
    /// Archive files deleted because `archive_keep` passed.
    pub files_expired: u64,
    /// Rows of this run's archives (resumed ones included) left in the
    /// database because they changed after the file was written.
    pub kept_rows: u64,
}

/// Abort the process at `point` when [`FAULT_ENV`] names it.
fn fault(point: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == point) {
        eprintln!("{FAULT_ENV}={point}: aborting");
        std::process::abort();
    }
}

/// One archive run on the database `db`: resume, then each policy, then
/// delete archive files past their `archive_keep`. Blocking. Stops at the
/// first error (recorded as an `archive_failed` event); what it completed
/// stays completed.
pub fn run(
    db: &DbOptions,
    policies: &[RetentionPolicy],
    opts: &ArchiveOptions,
    host: &dyn Host,
) -> Result<RunReport> {
    recorded(db, host, || {
        let opts = absolute(opts)?;
        let mut report = resume_steps(db, &opts, host, "before the run's policies")?;
        let src = open_read_only(db)?;
        let stem = stem(&db.path);
        for policy in policies {
            let table = if policy.archive {
                archive_table(&src, &stem, policy, &opts, host)?
            } else {
                purge_table(&src, policy, &opts, host)?
            };
            report.kept_rows += table.kept_rows;
            report.tables.push(table);
        }
        report.files_expired = expire_files(host)?;
        Ok(report)
    })
}

/// Only what an interrupted run on `db` left (the first step of [`run`]),
/// for the runtime's start: scratch files and archive files no catalog
/// row lists are removed, `written`/`verified` archives are verified and
/// their rows still in the database deleted. No policy is applied: no
/// new row is archived, no file expired. Blocking; an error is recorded
/// as an `archive_failed` event. When it did anything, an
/// `archive_resumed` event says what.
pub fn resume(db: &DbOptions, opts: &ArchiveOptions, host: &dyn Host) -> Result<RunReport> {
    recorded(db, host, || {
        resume_steps(db, &absolute(opts)?, host, "at start")
    })
}

/// `steps`' result, an error recorded as an `archive_failed` event.
fn recorded(
    db: &DbOptions,
    host: &dyn Host,
    steps: impl FnOnce() -> Result<RunReport>,
) -> Result<RunReport> {
    let result = steps();
    if let Err(e) = &result {
        host.event(Event::archive_failed(&db.path.display().to_string(), e));
    }
    result
}

/// `opts` with an absolute directory: the catalog keeps absolute paths,
/// and a later run may have another working directory.
fn absolute(opts: &ArchiveOptions) -> Result<ArchiveOptions> {
    let mut opts = opts.clone();
    opts.dir = std::path::absolute(&opts.dir)
        .map_err(|e| Error::from(e).during("resolve archive directory", &opts.dir))?;
    Ok(opts)
}

/// Remove what an interrupted run left in the archive directory, then
/// complete the `written`/`verified` archives; an `archive_resumed` event
/// (saying `when`) if there was anything.
fn resume_steps(
    db: &DbOptions,
    opts: &ArchiveOptions,
    host: &dyn Host,
    when: &str,
) -> Result<RunReport> {
    let mut report = RunReport::default();
    let catalog = host.catalog()?;
    let known: HashSet<&str> = catalog.iter().map(|r| r.path.as_str()).collect();
    let left = remove_leftovers(&opts.dir, &stem(&db.path), &known)?;
    report.orphans_removed = left.orphans;
    report.scratch_removed = left.scratch;
    for record in host.catalog()? {
        if matches!(
            record.status,
            ArchiveStatus::Written | ArchiveStatus::Verified
        ) {
            report.kept_rows += complete(record, host)?;
            report.resumed += 1;
        }
    }
    if report.resumed + report.orphans_removed + report.scratch_removed > 0 {
        host.event(Event::archive_resumed(
            &db.path.display().to_string(),
            &report,
            when,
        ));
    }
    Ok(report)
}

/// The file stem archives of `db` are named after.
fn stem(db: &Path) -> String {
    db.file_stem()
        .map(|s| s.to_string_lossy().replace(['.', '/'], "_"))
        .unwrap_or_else(|| "db".into())
}

/// Whether `name` is an archive file name of the database whose stem is
/// `stem`, exactly as [`archive_table`] names them:
/// `<stem>-<table>-<UTC stamp>-<first rowid>.db.zst`. The table is an
/// identifier and the stamp has no `-`, so the name splits one way only:
/// a file of another database whose stem merely starts with `<stem>-`
/// (`app-old-logs-...` beside `app`) never matches.
fn is_archive_of(name: &str, stem: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(ARCHIVE_SUFFIX))
    else {
        return false;
    };
    let Some((table, rest)) = rest.split_once('-') else {
        return false;
    };
    let Some((stamp, first)) = rest.split_once('-') else {
        return false;
    };
    check_identifier(table).is_ok()
        && is_utc_stamp(stamp)
        && first.parse::<i64>().is_ok_and(|n| n.to_string() == first)
}

/// Whether `s` is a time as [`utc_stamp`] writes it: `20260131T120000.123Z`.
fn is_utc_stamp(s: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let Some((date, time)) = s.split_once('T') else {
        return false;
    };
    let Some((hms, ms)) = time.strip_suffix('Z').and_then(|t| t.split_once('.')) else {
        return false;
    };
    date.len() >= 8 && date.bytes().all(|b| b.is_ascii_digit()) && digits(hms, 6) && digits(ms, 3)
}

/// Whether `name` is a scratch file beside an archive of the database
/// whose stem is `stem` (see [`file::SCRATCH_KINDS`]).
fn is_scratch_of(name: &str, stem: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.rsplit_once('.'))
        .is_some_and(|(archive, kind)| {
            file::SCRATCH_KINDS.contains(&kind) && is_archive_of(archive, stem)
        })
}

/// What [`remove_leftovers`] removed.
struct Leftovers {
    orphans: u64,
    scratch: u64,
}

/// Remove scratch files, and archive files of this database whose path is
/// not `known` to the catalog (written by a run that stopped before
/// recording them: their rows are still in the database). Files of other
/// databases in the same directory are never touched (see
/// [`is_archive_of`]).
fn remove_leftovers(dir: &Path, stem: &str, known: &HashSet<&str>) -> Result<Leftovers> {
    let mut removed = Leftovers {
        orphans: 0,
        scratch: 0,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::from(e).during("list archives", dir)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::from(e).during("list archives", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if is_scratch_of(&name, stem) {
            // A stopped run's temporary copy: never a catalogued archive.
            std::fs::remove_file(&path)
                .map_err(|e| Error::from(e).during("remove scratch file", &path))?;
            tracing::info!(file = %path.display(), "removed a temporary file an archive run left");
            removed.scratch += 1;
        } else if is_archive_of(&name, stem) && !known.contains(path.to_string_lossy().as_ref()) {
            file::delete(&path)?;
            tracing::warn!(file = %path.display(), "removed an archive file no catalog row lists (a run stopped before recording it; its rows are still in the database)");
            removed.orphans += 1;
        }
    }
    Ok(removed)
}

/// Verify the archive of `record` if it is not yet, then delete its rows
/// still in the database that are identical to their archived copy; record
/// each step. Answers how many rows changed since the file was written and
/// so stayed in the database.
fn complete(mut record: ArchiveRecord, host: &dyn Host) -> Result<u64> {
    let plain = match file::open_checked(&record) {
        Ok(plain) => plain,
        Err(e) => {
            // Its rows are deleted only once the file is verified: they
            // stay in the database; the file is kept for a look, marked
            // failed.
            host.journal(vec![catalog::status_statement(
                &record.path,
                ArchiveStatus::Failed,
                Some(&e.message),
                now_ms(),
            )])?;
            return Err(e);
        }
    };
    let result: Result<()> = (|| {
        if record.status == ArchiveStatus::Written {
            host.journal(vec![catalog::status_statement(
                &record.path,
                ArchiveStatus::Verified,
                None,
                now_ms(),
            )])?;
            fault("after_verify");
            record.status = ArchiveStatus::Verified;
        }
        let kept = Arc::new(Mutex::new(Vec::new()));
        host.on_writer(delete_job(&record, &plain, kept.clone()))?;
        fault("after_delete_batch");
        record.kept_rowids = std::mem::take(&mut *kept.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(())
    })();
    let _ = std::fs::remove_file(&plain);
    result?;
    host.journal(vec![
        catalog::kept_statement(&record.path, &record.kept_rowids),
        catalog::status_statement(&record.path, ArchiveStatus::Purged, None, now_ms()),
    ])?;
    if !record.kept_rowids.is_empty() {
        tracing::warn!(archive = %record.path, kept = record.kept_rowids.len(), "rows changed after they were archived stayed in the database");
    }
    host.event(Event::archive(&record));
    Ok(record.kept_rowids.len() as u64)
}

/// The job deleting the rows of `record` from the database, in one
/// transaction: each row of the verified archive copy `plain` whose live
/// row has the same rowid and the same value in every archived column.
/// The rowids of rows still there but different (changed after the file
/// was written) go to `kept`; rows already gone (deleted by an earlier
/// attempt that stopped before recording it, or by the application) are
/// in the archive only. Answers (rows deleted, rows kept).
fn delete_job(record: &ArchiveRecord, plain: &Path, kept: Arc<Mutex<Vec<i64>>>) -> WriterJob {
    let table = record.table.clone();
    let plain = plain.to_path_buf();
    Box::new(move |conn| {
        let src = Connection::open_with_flags(&plain, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| Error::from(e).during("open archive copy", &plain))?;
        let mut info = src.prepare(&format!("PRAGMA table_info({})", quote(&table)))?;
        let columns: Vec<String> = info
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<_>>()?;
        let list: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let same: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} IS ?{}", quote(c), i + 2))
            .collect();
        let tx = conn.unchecked_transaction()?;
        let (mut deleted, mut changed) = (0u64, Vec::new());
        {
            let mut delete = tx.prepare(&format!(
                "DELETE FROM {} WHERE rowid = ?1 AND {}",
                quote(&table),
                same.join(" AND ")
            ))?;
            let mut exists =
                tx.prepare(&format!("SELECT 1 FROM {} WHERE rowid = ?1", quote(&table)))?;
            let mut select = src.prepare(&format!(
                "SELECT rowid, {} FROM {} ORDER BY rowid",
                list.join(", "),
                quote(&table)
            ))?;
            let mut rows = select.query([])?;
            while let Some(row) = rows.next()? {
                let values: Vec<rusqlite::types::Value> = (0..=columns.len())
                    .map(|i| row.get(i))
                    .collect::<rusqlite::Result<_>>()?;
                let rowid: i64 = row.get(0)?;
                if delete.execute(rusqlite::params_from_iter(values))? == 1 {
                    deleted += 1;
                } else if exists.exists([rowid])? {
                    changed.push(rowid);
                }
            }
        }
        tx.commit()?;
        let n = changed.len() as u64;
        *kept.lock().unwrap_or_else(|p| p.into_inner()) = changed;
        Ok((deleted, n))
    })
}

/// Move the expired rows of `policy`'s table to archives, a batch at a
/// time.
fn archive_table(
    src: &Connection,
    stem: &str,
    policy: &RetentionPolicy,
    opts: &ArchiveOptions,
    host: &dyn Host,
) -> Result<TableReport> {
    file::table_shape(src, &policy.table, &policy.column)?;
    let mut report = TableReport {
        table: policy.table.clone(),
        ..TableReport::default()
    };
    let now = now_ms();
    let cutoff_ms = now.saturating_sub(i64::try_from(policy.keep.as_millis()).unwrap_or(i64::MAX));
    let filter = policy.format.expired_sql(&policy.column, 3);
    let dest = LocalDir::new(&opts.dir);
    let mut after = i64::MIN;
    loop {
        let tx = src.unchecked_transaction()?;
        let range: (i64, Option<i64>, Option<i64>) = tx.query_row(
            &format!(
                "SELECT count(*), min(rowid), max(rowid) FROM (SELECT rowid FROM {} WHERE rowid > ?1 AND ?2 IS NOT NULL AND {filter} ORDER BY rowid LIMIT {})",
                quote(&policy.table),
                opts.batch_rows.max(1)
            ),
            rusqlite::params![after, 0, cutoff_ms],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (count, Some(first), Some(last)) = range else {
            break;
        };
        let created_at_ms = now_ms();
        let name = format!(
            "{stem}-{}-{}-{first}{ARCHIVE_SUFFIX}",
            policy.table,
            utc_stamp(created_at_ms)
        );
        let batch = Batch {
            table: &policy.table,
            column: &policy.column,
            first,
            last,
            filter: &filter,
            cutoff_ms,
        };
        let written = file::write(&tx, &batch, &dest, &name, opts.compress_level)?;
        drop(tx);
        if written.rows != count as u64 {
            let _ = file::delete(&written.path);
            return Err(Error::classed(
                ErrorClass::Internal,
                format!(
                    "archive {name}: wrote {} rows, selected {count}",
                    written.rows
                ),
            ));
        }
        fault("after_write");
        let record = ArchiveRecord {
            id: 0,
            path: written.path.to_string_lossy().into_owned(),
            table: policy.table.clone(),
            column: policy.column.clone(),
            format: policy.format,
            cutoff_ms,
            min_value: written.min_value,
            max_value: written.max_value,
            first_rowid: first,
            last_rowid: last,
            rows: written.rows,
            uncompressed_size: written.uncompressed_size,
            stored_size: written.stored_size,
            ratio: 0.0,
            sha256: written.sha256,
            created_at_ms,
            created_at: String::new(),
            expires_at_ms: policy.archive_keep.map(|k| {
                created_at_ms.saturating_add(i64::try_from(k.as_millis()).unwrap_or(i64::MAX))
            }),
            status: ArchiveStatus::Written,
            detail: None,
            file_deleted_at_ms: None,
            kept_rowids: Vec::new(),
        };
        host.journal(vec![catalog::insert_statement(&record)])?;
        fault("after_record");
        let kept = complete(record, host)?;
        report.archived_rows += count as u64 - kept;
        report.kept_rows += kept;
        report.archives += 1;
        after = last;
    }
    Ok(report)
}

/// Delete the expired rows of a purge-only `policy`'s table, a batch at a
/// time, and record a `purge` event.
fn purge_table(
    src: &Connection,
    policy: &RetentionPolicy,
    opts: &ArchiveOptions,
    host: &dyn Host,
) -> Result<TableReport> {
    file::table_shape(src, &policy.table, &policy.column)?;
    let cutoff_ms =
        now_ms().saturating_sub(i64::try_from(policy.keep.as_millis()).unwrap_or(i64::MAX));
    let mut purged = 0;
    loop {
        let sql = format!(
            "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE ?1 IS NOT NULL AND ?2 IS NOT NULL AND {f} LIMIT {n})",
            t = quote(&policy.table),
            f = policy.format.expired_sql(&policy.column, 3),
            n = opts.batch_rows.max(1)
        );
        let (deleted, _) = host.on_writer(Box::new(move |conn| {
            let n = conn.execute(&sql, rusqlite::params![0, 0, cutoff_ms])?;
            Ok((n as u64, 0))
        }))?;
        purged += deleted;
        if deleted == 0 {
            break;
        }
    }
    if purged > 0 {
        host.event(Event::purge(&policy.table, purged, policy.keep));
    }
    Ok(TableReport {
        table: policy.table.clone(),
        purged_rows: purged,
        ..TableReport::default()
    })
}

/// Delete the files of purged or restored archives past `archive_keep`;
/// the count.
fn expire_files(host: &dyn Host) -> Result<u64> {
    let now = now_ms();
    let mut deleted = 0;
    for r in host.catalog()? {
        let due = r.expires_at_ms.is_some_and(|at| at <= now)
            && r.file_deleted_at_ms.is_none()
            && matches!(r.status, ArchiveStatus::Purged | ArchiveStatus::Restored);
        if due {
            file::delete(Path::new(&r.path))?;
            host.journal(vec![catalog::file_deleted_statement(&r.path, now)])?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::Destination;

    const STAMP: &str = "20260131T120000.123Z";

    #[test]
    fn archive_names_match_their_own_database_only() {
        assert!(is_archive_of(&format!("app-logs-{STAMP}-1.db.zst"), "app"));
        assert!(is_archive_of(&format!("app-logs-{STAMP}--7.db.zst"), "app"));
        assert!(is_archive_of(
            &format!("app-old-logs-{STAMP}-1.db.zst"),
            "app-old"
        ));
        for foreign in [
            // `app-old.db` beside `app.db`: its stem starts with `app-`.
            format!("app-old-logs-{STAMP}-1.db.zst"),
            format!("app-logs-x-{STAMP}-1.db.zst"),
            format!("app-t-{STAMP}-logs-{STAMP}-1.db.zst"),
            format!("app-logs-{STAMP}-+1.db.zst"),
            format!("app-logs-{STAMP}-01.db.zst"),
            format!("app-logs-{STAMP}-1.db"),
            "app-logs-20260131-1.db.zst".to_string(),
            format!("app-9logs-{STAMP}-1.db.zst"),
            format!("apps-logs-{STAMP}-1.db.zst"),
            "app-notes.txt".to_string(),
        ] {
            assert!(!is_archive_of(&foreign, "app"), "{foreign}");
        }
    }

    #[test]
    fn scratch_names_are_the_three_kinds_beside_own_archives() {
        let own = format!("app-logs-{STAMP}-1.db.zst");
        for kind in file::SCRATCH_KINDS {
            assert!(is_scratch_of(&format!(".{own}.{kind}"), "app"));
            assert!(!is_scratch_of(
                &format!(".app-old-logs-{STAMP}-1.db.zst.{kind}"),
                "app"
            ));
        }
        assert!(!is_scratch_of(&format!(".{own}.other"), "app"));
        assert!(!is_scratch_of(&format!("{own}.plain"), "app"));
        // The staging file of the destination the archives are written through.
        let tmp = tempfile::tempdir().unwrap();
        let staged = LocalDir::new(tmp.path()).stage(&own).unwrap();
        let staged = staged.file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_scratch_of(&staged, "app"), "{staged}");
    }

    /// In a directory two databases share (`app.db`, `app-old.db`), the
    /// leftovers of `app` are removed and no file of `app-old` is, even
    /// unrecorded ones or its scratch files.
    #[test]
    fn leftovers_of_one_database_never_take_anothers_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let names = [
            format!("app-logs-{STAMP}-1.db.zst"),
            format!(".app-logs-{STAMP}-2.db.zst.plain"),
            format!("app-old-logs-{STAMP}-1.db.zst"),
            format!(".app-old-logs-{STAMP}-2.db.zst.tmp"),
            format!("app-logs-{STAMP}-3.db.zst"),
        ];
        for n in &names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        // The third of `app`'s files is catalogued: it stays.
        let known = dir.join(&names[4]).to_string_lossy().into_owned();
        let removed = remove_leftovers(dir, "app", &HashSet::from([known.as_str()])).unwrap();
        assert_eq!((removed.orphans, removed.scratch), (1, 1));
        let left: HashSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let expected: HashSet<String> = names[2..].iter().cloned().collect();
        assert_eq!(left, expected);
    }
}
