//! Automatic recovery: a damaged database replaced by the newest verified
//! backup, the operation log replayed on top of it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use resilite_actors::backup::{self, utc_stamp, BackupMsg, Destination, LocalDir};
use resilite_actors::connection::{open_read_only, open_read_write};
use resilite_actors::journal;
use resilite_actors::journal::backups as catalog;
use resilite_actors::journal::op_log as log;
use resilite_actors::journal::recoveries::{self, RecoveryRecord};
use resilite_actors::maintenance::{now_ms, sibling};
use resilite_actors::slot;
use resilite_actors::{Error, ErrorClass, Event, Operation, Result, WriterMsg};

use super::Runtime;
use crate::config::Config;

/// Operations read from the log at a time during a replay.
const REPLAY_CHUNK: usize = 1000;

/// What [`Runtime::recover`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryOutcome {
    /// The backup restored.
    pub restored: String,
    /// Where the damaged file was moved (kept, never deleted).
    pub quarantined: PathBuf,
    /// Operations of the log replayed on top of the backup.
    pub replayed: u64,
    /// Why no replay happened, when none did (`None` when it did).
    pub replay_skipped: Option<String>,
    /// The steps taken, in order.
    pub steps: Vec<String>,
    /// How long the whole recovery took, pause to resume.
    pub duration_ms: u64,
}

/// A failed attempt: its outcome label and the error.
struct Failed {
    outcome: &'static str,
    error: Error,
}

impl Failed {
    fn new(outcome: &'static str, error: Error) -> Failed {
        Failed { outcome, error }
    }
}

impl Runtime {
    /// Recover the database from damage, online. The sequence: the
    /// BackupActor verifies the newest verified backup again and stages a
    /// checked copy; writes pause (the `database` breaker held open:
    /// durable writes queue); the read pool and the writer close; the
    /// damaged file (with its `-wal` and `-shm`) is kept as
    /// `<db>.damaged-<UTC time>` (hard links); the copy is renamed over
    /// the database, so the path always names a whole file;
    /// the writer and the read pool open again; the operation log after
    /// the backup's position is replayed through the writer, in order
    /// (skipped, and said so, when the log is off, the backup has no
    /// position or a gap lies after it); `PRAGMA integrity_check`; writes
    /// resume. Every attempt is recorded in the journal's `recoveries`.
    ///
    /// With no verified backup the file is left in place, untouched, and
    /// the error says what to do; if it fails `integrity_check`, writes
    /// stay paused (reads are served where the file allows), otherwise
    /// they go on.
    pub async fn recover(&self) -> Result<RecoveryOutcome> {
        self.recover_with("manual").await
    }

    /// Every recovery attempt recorded in the journal, oldest first: what
    /// started it, the steps, the outcome and an explanation.
    pub async fn recoveries(&self) -> Result<Vec<RecoveryRecord>> {
        self.read_journal(recoveries::list).await
    }

    /// [`recover`](Self::recover), recorded with `trigger` as its cause.
    pub async fn recover_with(&self, trigger: &str) -> Result<RecoveryOutcome> {
        if self.inner.recovering.swap(true, Ordering::AcqRel) {
            return Err(Error::unavailable(
                "a recovery is already in progress: wait for it to end (its outcome is recorded in the journal's recoveries table)",
            ));
        }
        let started_at_ms = now_ms();
        let started = Instant::now();
        let mut steps = Vec::new();
        let result = self.recover_steps(&mut steps).await;
        if result.is_ok() {
            self.file_replaced().await;
        }
        self.inner.recovering.store(false, Ordering::Release);
        let duration_ms = started.elapsed().as_millis() as u64;
        let (outcome, explanation) = match &result {
            Ok(done) => (
                "recovered",
                format!(
                    "Recovery of {db} ({trigger}): the file was kept as {q} (for inspection) and backup {b} was restored in its place{replay}; the integrity check passed and writes resumed. Nothing to do now; delete {q} once you no longer need it.",
                    db = self.db_path().display(),
                    q = done.quarantined.display(),
                    b = done.restored,
                    replay = match &done.replay_skipped {
                        None => format!(", then {} logged operations written after that backup were replayed", done.replayed),
                        Some(why) => format!(", but the operation log was not replayed ({why}): writes made after that backup are lost from the database"),
                    }
                ),
            ),
            Err(f) => (f.outcome, format!("{} {}", f.error.message, f.error.detail)),
        };
        self.record_recovery(RecoveryRecord {
            started_at_ms,
            trigger: trigger.to_string(),
            steps: steps.clone(),
            outcome: outcome.to_string(),
            duration_ms: duration_ms as i64,
            explanation,
        })
        .await;
        match result {
            Ok(mut done) => {
                done.steps = steps;
                done.duration_ms = duration_ms;
                tracing::info!(backup = %done.restored, replayed = done.replayed, ms = duration_ms, "recovery done; writes resumed");
                Ok(done)
            }
            Err(f) => {
                tracing::error!(outcome, error = %f.error, "recovery did not complete; writes stay paused");
                Err(f.error)
            }
        }
    }

    /// Record a recovery attempt in the journal and count it.
    async fn record_recovery(&self, record: RecoveryRecord) {
        metrics::counter!("resilite_recoveries_total", "outcome" => record.outcome.clone())
            .increment(1);
        self.journal_recovery(&record).await;
    }

    /// Write a recovery or restore attempt to the journal's `recoveries`.
    pub(super) async fn journal_recovery(&self, record: &RecoveryRecord) {
        let db = self.db_path().display().to_string();
        self.record_event(Event::recovery(record, &db));
        if let Err(e) = slot::write(&self.inner.journal, recoveries::insert_statement(record)).await
        {
            tracing::error!(error = %e, "the attempt could not be recorded in the journal");
        }
    }

    fn db_path(&self) -> PathBuf {
        self.config().app_db().path
    }

    async fn recover_steps(
        &self,
        steps: &mut Vec<String>,
    ) -> std::result::Result<RecoveryOutcome, Failed> {
        let fail = |e: Error| Failed::new("failed", e);
        let db = self.db_path();
        let backup = slot::running(&mut self.inner.backup.clone())
            .await
            .map_err(fail)?;
        let writer = self.writer().await.map_err(fail)?;
        // Staging reads only the backup: writes go on meanwhile (what they
        // commit is in the operation log, replayed after the backup).
        let staged = ractor::call!(backup, BackupMsg::Recover)
            .map_err(|e| Error::unavailable(format!("the backup actor did not answer: {e}")))
            .and_then(|r| r);
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                steps.push(format!("found no backup to restore: {}", e.message));
                return Err(Failed::new(
                    "no-backup",
                    self.no_backup(&db, &e, steps).await,
                ));
            }
        };
        self.pause_writes("recovery in progress");
        steps
            .push("paused writes (the database breaker is held open; durable writes queue)".into());
        let info = staged.info.clone();
        steps.push(format!(
            "verified backup {} again and staged a copy of it",
            info.name
        ));
        if let Err(e) = self.close_database(&writer).await {
            self.reopen(&writer).await;
            return Err(fail(e.during("close the database for recovery", &db)));
        }
        steps.push("closed the read pool and the writer".into());
        let stamp = utc_stamp(now_ms());
        let moved = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || -> Result<PathBuf> {
                let quarantined = quarantine(&db, &stamp)?;
                if let Err(e) = backup::install(staged, &db) {
                    unquarantine(&quarantined);
                    return Err(e);
                }
                Ok(quarantined)
            })
            .await
            .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))
            .and_then(|r| r)
        };
        let quarantined = match moved {
            Ok(q) => q,
            Err(e) => {
                self.reopen(&writer).await;
                return Err(fail(Error::new(
                    e.class,
                    format!("recovery of {} failed while replacing the file: {e}", db.display()),
                    "the damaged database is in place again and writes stay paused; fix the cause (disk space, permissions) and recover again",
                )));
            }
        };
        steps.push(format!(
            "kept the damaged file as {} and put backup {} in its place",
            quarantined.display(),
            info.name
        ));
        if let Err(e) = self.open_database(&writer).await {
            return Err(fail(Error::new(
                e.class,
                format!("recovery: the writer did not open the restored file: {e}"),
                "writes stay paused; check the database file, then resume writes",
            )));
        }
        steps.push("opened the writer and the read pool".into());
        let (replayed, replay_skipped) = match self.replay(info.op_log_seq).await {
            Ok(r) => r,
            Err(e) => {
                steps.push(format!("the replay of the operation log failed: {e}"));
                return Err(fail(Error::new(
                    e.class,
                    format!("recovery: backup {} was restored but the replay of the operation log failed: {e}", info.name),
                    format!("writes stay paused; the damaged file is kept at {}; check the database, then resume writes", quarantined.display()),
                )));
            }
        };
        steps.push(match &replay_skipped {
            None => format!("replayed {replayed} logged operations after the backup"),
            Some(why) => format!("did not replay the operation log: {why}"),
        });
        if let Err(e) = self.integrity_check().await {
            steps.push(format!("the integrity check failed: {e}"));
            return Err(fail(Error::new(
                ErrorClass::Corruption,
                format!("recovery: the recovered database fails integrity_check: {e}"),
                format!("writes stay paused; the damaged file is kept at {}; restore another backup (`resilite restore`)", quarantined.display()),
            )));
        }
        steps.push("integrity_check: ok".into());
        self.resume_writes();
        steps.push("resumed writes".into());
        Ok(RecoveryOutcome {
            restored: info.name,
            quarantined,
            replayed,
            replay_skipped,
            steps: Vec::new(),
            duration_ms: 0,
        })
    }

    /// Replay the operation log after `from` through the writer (past the
    /// breaker, which is held open), a chunk per transaction; the replayed
    /// operations keep their numbers and are not logged again. The count,
    /// or why nothing was replayed.
    async fn replay(&self, from: Option<i64>) -> Result<(u64, Option<String>)> {
        if !self.config().backup.op_log {
            return Ok((
                0,
                Some("the operation log is off (backup.op_log = false)".into()),
            ));
        }
        let Some(from) = from else {
            return Ok((
                0,
                Some("the backup records no operation-log position".into()),
            ));
        };
        let gaps = self.read_journal(log::gaps).await?;
        if let Some(gap) = gaps.iter().find(|g| g.through_seq > from) {
            return Ok((
                0,
                Some(format!(
                    "the log has a gap after the backup (operations {} to {} are missing: {})",
                    gap.after_seq + 1,
                    gap.through_seq,
                    gap.reason
                )),
            ));
        }
        let writer = self.writer().await?;
        let mut next = from;
        let mut replayed = 0;
        loop {
            let ops = self
                .read_journal(move |c| log::after(c, next, REPLAY_CHUNK))
                .await?;
            let (Some(first), Some(last)) = (ops.first(), ops.last()) else {
                break;
            };
            if replayed == 0 && first.seq > from + 1 {
                return Ok((
                    0,
                    Some(format!(
                        "the log starts at operation {}, after the backup's position {from} (trimmed)",
                        first.seq
                    )),
                ));
            }
            let (count, last) = (ops.len() as u64, last.seq);
            ractor::call!(writer, |reply| WriterMsg::Replay { ops, reply })
                .map_err(|e| Error::unavailable(format!("the writer did not answer: {e}")))??;
            next = last;
            replayed += count;
        }
        Ok((replayed, None))
    }

    /// The error of a recovery with no backup to restore. A database that
    /// fails `integrity_check` stays as it is with writes paused (reads
    /// served where the file allows); a sound one was not touched and
    /// writes go on.
    async fn no_backup(&self, db: &Path, e: &Error, steps: &mut Vec<String>) -> Error {
        let message = format!(
            "recovery of {} is not possible: {}.",
            db.display(),
            e.message
        );
        if self.integrity_check().await.is_ok() {
            steps.push("integrity_check: ok; nothing was changed".into());
            return Error::new(
                ErrorClass::Unavailable,
                message,
                format!(
                    "{db} passes integrity_check and was not changed; writes go on. Take a backup (`POST /v1/backups`) so that a recovery has one to restore.",
                    db = db.display()
                ),
            );
        }
        self.pause_writes("damaged database, no backup to recover from");
        steps.push(
            "found the database damaged: paused writes (the database breaker is held open; durable writes queue)"
                .into(),
        );
        Error::new(
            ErrorClass::Unavailable,
            message,
            format!(
                "The damaged database {db} was left in place, untouched, and writes stay paused (durable writes are queued; reads are served where the file allows). {}; then resume writes.",
                salvage_advice(db),
                db = db.display()
            ),
        )
    }

    /// Open the writer and the read pool again after a failed step.
    async fn reopen(&self, writer: &ractor::ActorRef<WriterMsg>) {
        if let Err(e) = self.open_database(writer).await {
            tracing::error!(error = %e, "recovery: the writer did not open again");
        }
    }
}

/// Keep the damaged `db` (with its `-wal` and `-shm`) as
/// `<db>.damaged-<stamp>`: hard links (a copy where the filesystem has
/// none), so the database path always names a whole file: a crash during
/// a recovery leaves the damaged file in place or the restored one, never
/// none and never a mix. The new path. Blocking.
pub fn quarantine(db: &Path, stamp: &str) -> Result<PathBuf> {
    let to = sibling(db, &format!(".damaged-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        let (from, kept) = (sibling(db, suffix), sibling(&to, suffix));
        if !suffix.is_empty() && !from.exists() {
            continue;
        }
        std::fs::hard_link(&from, &kept)
            .or_else(|_| std::fs::copy(&from, &kept).map(drop))
            .map_err(|e| Error::from(e).during("quarantine", &from))?;
    }
    Ok(to)
}

/// Drop the quarantined names of a recovery that did not replace the file
/// (the damaged file is still at the database path).
fn unquarantine(quarantined: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(quarantined, suffix));
    }
}

/// A recovery begun before the actors started: the database file could
/// not be opened, and the newest verified backup was put in its place.
/// The runtime finishes it once started ([`Runtime::finish_early_recovery`]).
pub(super) struct EarlyRecovery {
    started_at_ms: i64,
    started: Instant,
    cause: String,
    info: resilite_actors::BackupInfo,
    quarantined: PathBuf,
    steps: Vec<String>,
}

/// Before start: when the database at `config`'s path cannot be read as a
/// database (`cause`: the startup check's error; a damaged journal is not
/// this), put the newest verified backup that passes verification again
/// in its place, the damaged file kept as `<db>.damaged-<UTC time>`.
/// Blocking. With no such backup the file is untouched and the error says
/// so (and is recorded in the journal when it can be).
pub(super) fn replace_before_start(config: &Config, cause: Error) -> Result<EarlyRecovery> {
    let db = config.app_db();
    if !crate::startup::is_damaged(&db) {
        return Err(cause); // the database reads: the journal was the problem
    }
    let started_at_ms = now_ms();
    let started = Instant::now();
    let mut steps = vec![format!(
        "found the database unreadable at start: {}",
        cause.message
    )];
    let candidates = std::fs::metadata(config.journal_path())
        .ok()
        .and_then(|_| open_read_only(&config.journal_db()).ok())
        .and_then(|c| catalog::live(&c).ok())
        .unwrap_or_default();
    let mut candidates: Vec<_> = candidates.into_iter().filter(|b| b.is_verified()).collect();
    candidates.sort_by_key(|b| std::cmp::Reverse(b.created_at_ms));
    let dest = LocalDir::new(config.backup_dir());
    let mut refused = Vec::new();
    for info in candidates {
        let staged = dest
            .read_path(&info.name)
            .and_then(|path| backup::prepare(&path, &info, &db.path));
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                refused.push(format!("{} ({})", info.name, e.message));
                continue;
            }
        };
        steps.push(format!(
            "verified backup {} again and staged a copy of it",
            info.name
        ));
        let quarantined = quarantine(&db.path, &utc_stamp(now_ms()))?;
        if let Err(e) = backup::install(staged, &db.path) {
            unquarantine(&quarantined);
            return Err(e);
        }
        steps.push(format!(
            "kept the damaged file as {} and put backup {} in its place",
            quarantined.display(),
            info.name
        ));
        return Ok(EarlyRecovery {
            started_at_ms,
            started,
            cause: cause.message.clone(),
            info,
            quarantined,
            steps,
        });
    }
    let why = if refused.is_empty() {
        "there is no verified backup".to_string()
    } else {
        format!("no backup passes verification now: {}", refused.join("; "))
    };
    steps.push(format!("found no backup to restore: {why}"));
    let error = Error::new(
        ErrorClass::Corruption,
        format!(
            "{} (recovery at start is not possible: {why})",
            cause.message
        ),
        format!(
            "the damaged database {db} was left in place, untouched. {}. ({})",
            salvage_advice(&db.path),
            cause.detail,
            db = db.path.display()
        ),
    );
    record_directly(
        config,
        &RecoveryRecord {
            started_at_ms,
            trigger: format!("automatic at start: {}", cause.message),
            steps,
            outcome: "no-backup".into(),
            duration_ms: started.elapsed().as_millis() as i64,
            explanation: format!("{} {}", error.message, error.detail),
        },
    );
    Err(error)
}

/// Record a recovery attempt made with no runtime running (the journal
/// writer is not started): on a connection of its own, when the journal
/// exists and takes it.
fn record_directly(config: &Config, record: &RecoveryRecord) {
    if !config.journal_path().is_file() {
        return;
    }
    let db = config.database.path.display().to_string();
    let written = open_read_write(&config.journal_db()).and_then(|c| {
        let Operation::Statement(s) = recoveries::insert_statement(record) else {
            return Ok(());
        };
        c.execute(&s.sql, rusqlite::params_from_iter(&s.params))?;
        // The events table appears with its journal version.
        if journal::has_table(&c, "events")? {
            journal::events::insert(&c, &Event::recovery(record, &db))?;
        }
        Ok(())
    });
    if let Err(e) = written {
        tracing::error!(error = %e, "the recovery attempt could not be recorded in the journal");
    }
}

impl Runtime {
    /// Finish a recovery begun before start: with writes paused, replay the
    /// operation log after the backup, check integrity, resume, and record
    /// the attempt. A failure leaves writes paused (reads are served) and
    /// is logged and recorded; the runtime runs on.
    pub(super) async fn finish_early_recovery(&self, early: EarlyRecovery) {
        let EarlyRecovery {
            started_at_ms,
            started,
            cause,
            info,
            quarantined,
            mut steps,
        } = early;
        self.pause_writes("recovery at start: replaying the operation log");
        let finished = async {
            let (replayed, skipped) = self.replay(info.op_log_seq).await?;
            steps.push(match &skipped {
                None => format!("replayed {replayed} logged operations after the backup"),
                Some(why) => format!("did not replay the operation log: {why}"),
            });
            self.integrity_check().await?;
            steps.push("integrity_check: ok".into());
            Ok::<_, Error>(skipped)
        }
        .await;
        let (outcome, explanation) = match &finished {
            Ok(skipped) => {
                self.resume_writes();
                steps.push("resumed writes".into());
                ("recovered", format!(
                    "At start, the database {db} could not be read ({cause}). It was kept as {q} and backup {b} was put in its place{replay}; the integrity check passed. Nothing to do now; delete {q} once you no longer need it.",
                    db = self.db_path().display(),
                    q = quarantined.display(),
                    b = info.name,
                    replay = match skipped {
                        None => ", then the operation log after it was replayed".to_string(),
                        Some(why) => format!(", but the operation log was not replayed ({why}): writes made after that backup are lost from the database"),
                    }
                ))
            }
            Err(e) => {
                steps.push(format!("failed: {e}"));
                ("failed", format!(
                    "At start, the database could not be read and backup {} was put in its place, but finishing the recovery failed: {e}. Writes stay paused; the damaged file is kept at {}; check the database, then resume writes or restore another backup.",
                    info.name,
                    quarantined.display()
                ))
            }
        };
        self.record_recovery(RecoveryRecord {
            started_at_ms,
            trigger: format!("automatic at start: {cause}"),
            steps,
            outcome: outcome.into(),
            duration_ms: started.elapsed().as_millis() as i64,
            explanation,
        })
        .await;
        match finished {
            Ok(_) => tracing::info!(backup = %info.name, "recovery at start done; writes resumed"),
            Err(e) => {
                tracing::error!(error = %e, "recovery at start did not complete; writes stay paused")
            }
        }
    }
}

/// What to do with a damaged database no backup can replace.
fn salvage_advice(db: &Path) -> String {
    format!(
        "What to do: copy {db} (with its -wal and -shm) somewhere safe; try `sqlite3 {db} .recover` on the copy to salvage rows; or restore a backup you trust (`resilite restore`)",
        db = db.display()
    )
}
