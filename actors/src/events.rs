//! Events with explanations: every automatic action resilite takes (a
//! retry given up, a breaker opening, a checkpoint, a backup, a restore, a
//! recovery, an actor restarted) is recorded as an [`Event`] saying in
//! plain words what happened, why, what resilite decided and what, if
//! anything, the operator must do.
//!
//! An [`Event`] is built with the constructor of its kind. Who already
//! writes the journal in batches of its own (the breakers' announcer, the
//! retry queue's record, the supervisor's restart log) adds
//! [`Event::statement`] to that batch; everyone else records through an
//! [`Events`] sender: `try_send` on a bounded channel to a task that writes
//! them to the journal in order, so recording never waits on the journal.
//! Both count `resilite_events_total{kind,severity}` and log the summary.
//!
//! The SQL is in [`journal::events`](crate::journal::events).

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::archive::{ArchiveRecord, RunReport};
use crate::backup::{BackupInfo, Verification};
use crate::breaker::{BreakerState, Transition};
use crate::error::Error;
use crate::journal::recoveries::RecoveryRecord;
use crate::journal::RestartOutcome;
use crate::maintenance::{now_ms, Maintenance, MaintenanceRun};
use crate::slot::{self, WriterSlot};
use crate::value::{Operation, Statement};

/// Events queued behind a slow journal before new ones are dropped (and
/// said so in the log).
pub const DEFAULT_EVENT_QUEUE: usize = 1024;
/// Events written to the journal in one batch, at most.
const EVENT_BATCH: usize = 256;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A queued operation used up its attempts and went to the dead-letter queue.
    RetryGivenUp,
    /// A queued operation failed for good (a permanent error) and went to
    /// the dead-letter queue.
    DeadLettered,
    /// A circuit breaker opened.
    BreakerOpened,
    /// A circuit breaker let trial calls through.
    BreakerHalfOpen,
    /// A circuit breaker closed.
    BreakerClosed,
    /// The WAL was checkpointed.
    Checkpoint,
    /// The database was vacuumed.
    Vacuum,
    /// `PRAGMA optimize` ran.
    Optimize,
    /// A maintenance task failed.
    MaintenanceFailed,
    /// A backup was taken and verified.
    Backup,
    /// A backup could not be taken, or was written but failed verification.
    BackupFailed,
    /// A kept backup failed a later verification.
    BackupVerifyFailed,
    /// A backup was deleted by retention.
    BackupDeleted,
    /// A backup was restored onto the database.
    Restore,
    /// A restore failed.
    RestoreFailed,
    /// The database was recovered from a backup.
    Recovery,
    /// A recovery did not complete.
    RecoveryFailed,
    /// A failed actor was restarted by the supervisor.
    ActorRestarted,
    /// An actor failed past its restart limit.
    ActorEscalated,
    /// Expired rows were moved to a verified archive file.
    Archive,
    /// An archive run stopped on an error.
    ArchiveFailed,
    /// What an interrupted archive run left was completed (at start, or
    /// by the next run).
    ArchiveResumed,
    /// Expired rows were deleted by a purge-only retention policy.
    Purge,
    /// An archive's rows were put back into the database.
    ArchiveRestore,
    /// A configuration reload was applied.
    ConfigChange,
    /// A configuration reload was refused: the runtime keeps its config.
    ConfigRejected,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 26] = [
        EventKind::RetryGivenUp,
        EventKind::DeadLettered,
        EventKind::BreakerOpened,
        EventKind::BreakerHalfOpen,
        EventKind::BreakerClosed,
        EventKind::Checkpoint,
        EventKind::Vacuum,
        EventKind::Optimize,
        EventKind::MaintenanceFailed,
        EventKind::Backup,
        EventKind::BackupFailed,
        EventKind::BackupVerifyFailed,
        EventKind::BackupDeleted,
        EventKind::Restore,
        EventKind::RestoreFailed,
        EventKind::Recovery,
        EventKind::RecoveryFailed,
        EventKind::ActorRestarted,
        EventKind::ActorEscalated,
        EventKind::Archive,
        EventKind::ArchiveFailed,
        EventKind::ArchiveResumed,
        EventKind::Purge,
        EventKind::ArchiveRestore,
        EventKind::ConfigChange,
        EventKind::ConfigRejected,
    ];

    /// The kind as it is serialized: `breaker_opened`, `backup`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RetryGivenUp => "retry_given_up",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::BreakerOpened => "breaker_opened",
            EventKind::BreakerHalfOpen => "breaker_half_open",
            EventKind::BreakerClosed => "breaker_closed",
            EventKind::Checkpoint => "checkpoint",
            EventKind::Vacuum => "vacuum",
            EventKind::Optimize => "optimize",
            EventKind::MaintenanceFailed => "maintenance_failed",
            EventKind::Backup => "backup",
            EventKind::BackupFailed => "backup_failed",
            EventKind::BackupVerifyFailed => "backup_verify_failed",
            EventKind::BackupDeleted => "backup_deleted",
            EventKind::Restore => "restore",
            EventKind::RestoreFailed => "restore_failed",
            EventKind::Recovery => "recovery",
            EventKind::RecoveryFailed => "recovery_failed",
            EventKind::ActorRestarted => "actor_restarted",
            EventKind::ActorEscalated => "actor_escalated",
            EventKind::Archive => "archive",
            EventKind::ArchiveFailed => "archive_failed",
            EventKind::ArchiveResumed => "archive_resumed",
            EventKind::Purge => "purge",
            EventKind::ArchiveRestore => "archive_restore",
            EventKind::ConfigChange => "config_change",
            EventKind::ConfigRejected => "config_rejected",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much an event or an error needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record; nothing to do.
    Info,
    /// Worth a look; resilite copes for now.
    Warning,
    /// Needs the operator.
    Critical,
}

impl Severity {
    /// The severity as it is serialized: `info`, `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The severity named `s`, if any.
    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One automatic action, explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// How much it needs a person.
    pub severity: Severity,
    /// What happened, in a sentence a person understands.
    pub summary: String,
    /// Why it happened.
    pub cause: String,
    /// What resilite did about it.
    pub decision: String,
    /// What the operator must do, and how; `None` when nothing.
    pub operator_action: Option<String>,
    /// What it happened to: a file, a breaker name, a queue entry, an actor.
    pub subject: String,
}

impl Event {
    /// An event of `kind` about `subject`, now.
    pub fn new(
        kind: EventKind,
        severity: Severity,
        subject: impl Into<String>,
        summary: impl Into<String>,
        cause: impl Into<String>,
        decision: impl Into<String>,
    ) -> Event {
        Event {
            at_ms: now_ms(),
            kind,
            severity,
            summary: summary.into(),
            cause: cause.into(),
            decision: decision.into(),
            operator_action: None,
            subject: subject.into(),
        }
    }

    /// This event, with what the operator must do.
    pub fn operator_action(mut self, action: impl Into<String>) -> Event {
        self.operator_action = Some(action.into());
        self
    }

    /// A queue entry moved to the dead-letter queue: it used up its
    /// attempts (`gave_up`) or failed with a permanent error.
    pub fn dead_lettered(
        id: i64,
        kind: &str,
        attempts: i64,
        gave_up: bool,
        error: &Error,
    ) -> Event {
        let (event_kind, summary, cause) = if gave_up {
            (
                EventKind::RetryGivenUp,
                format!("Queued operation {id} ({kind}) was given up after {attempts} attempts."),
                format!(
                    "every attempt failed; the last with a {} error: {}",
                    error.class.as_str(),
                    error.detail
                ),
            )
        } else {
            (
                EventKind::DeadLettered,
                format!("Queued operation {id} ({kind}) failed for good and was set aside."),
                format!(
                    "a {} error, which trying again does not fix: {}",
                    error.class.as_str(),
                    error.detail
                ),
            )
        };
        Event::new(
            event_kind,
            Severity::Warning,
            format!("queue entry {id}"),
            summary,
            cause,
            "moved it to the dead-letter queue; it is not retried until someone requeues it",
        )
        .operator_action(format!(
            "look at it with `resilite dlq show {id} --db <db>` (or GET /v1/dlq/{id}); fix the cause, then requeue it (`resilite dlq requeue {id}`), mark it fixed, or discard it"
        ))
    }

    /// Breaker `name` went through `t`; while open it stays so until
    /// `open_until_ms`.
    pub fn breaker(name: &str, t: &Transition, open_until_ms: Option<i64>) -> Event {
        let mut event = match t.to {
            BreakerState::Open if t.reason.starts_with("forced open") => Event::new(
                EventKind::BreakerOpened,
                Severity::Warning,
                name,
                format!("Circuit breaker {name} was held open on purpose."),
                t.reason.clone(),
                if name == "database" {
                    "refuses writes until the work that holds it (a restore, a recovery, a pause) releases it; durable writes go to the retry queue and are replayed then"
                } else {
                    "refuses calls until it is released"
                },
            ),
            BreakerState::Open => {
                let until = open_until_ms
                    .map(|u| format!(" for {} ms", (u - t.at_ms).max(0)))
                    .unwrap_or_default();
                let event = Event::new(
                    EventKind::BreakerOpened,
                    if name == "database" {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    name,
                    format!("Circuit breaker {name} opened: calls through it are refused{until}."),
                    t.reason.clone(),
                    if name == "database" {
                        "writes are refused at once instead of waiting on a failing database; durable writes go to the retry queue and are replayed when it closes; trial writes are let through after the open period".to_string()
                    } else {
                        format!("calls through {name} fail fast instead of waiting on a failing dependency; trial calls are let through after the open period")
                    },
                );
                if name == "database" {
                    event.operator_action(
                        "check the database (`resilite health --db <db>`, GET /health/detailed): free disk space, file permissions, another process holding a lock; resilite closes the breaker by itself once writes succeed",
                    )
                } else {
                    event
                }
            }
            BreakerState::HalfOpen => Event::new(
                EventKind::BreakerHalfOpen,
                Severity::Info,
                name,
                format!("Circuit breaker {name} is half-open: a few trial calls go through."),
                t.reason.clone(),
                "lets trial calls through: it closes if they succeed and opens again if they fail",
            ),
            BreakerState::Closed => Event::new(
                EventKind::BreakerClosed,
                Severity::Info,
                name,
                format!("Circuit breaker {name} closed: calls go through again."),
                t.reason.clone(),
                "lets every call through again",
            ),
        };
        event.at_ms = t.at_ms;
        event
    }

    /// A maintenance run finished (`trigger`: `auto`, `manual`, ...).
    pub fn maintenance(run: &MaintenanceRun, trigger: &str, db: &str) -> Event {
        let kind = match run.task {
            Maintenance::Checkpoint(_) => EventKind::Checkpoint,
            Maintenance::Vacuum => EventKind::Vacuum,
            Maintenance::Optimize => EventKind::Optimize,
        };
        let busy = run.checkpoint.is_some_and(|c| c.busy);
        let summary = format!(
            "{} of {db} ran in {:.0} ms and reclaimed {} bytes{}.",
            run.task.name(),
            run.duration_ms,
            run.bytes_reclaimed(),
            if busy {
                ", but readers kept part of the WAL in use"
            } else {
                ""
            }
        );
        let cause = if trigger == "auto" {
            "the health checks found it due (WAL size, free pages or the schedule)".to_string()
        } else {
            format!("asked for ({trigger})")
        };
        Event::new(
            kind,
            Severity::Info,
            db,
            summary,
            cause,
            format!(
                "ran {} on the writer's connection, between two transactions",
                run.task.name()
            ),
        )
    }

    /// A maintenance task failed.
    pub fn maintenance_failed(task: Maintenance, trigger: &str, db: &str, error: &Error) -> Event {
        Event::new(
            EventKind::MaintenanceFailed,
            Severity::Warning,
            db,
            format!("{} of {db} failed.", task.name()),
            format!("{}: {}", error.message, error.detail),
            format!("left the database as it was ({trigger}); the next health check tries again when it is due"),
        )
        .operator_action("if it keeps failing, run `resilite health --db <db>` and follow its recommendations")
    }

    /// A backup was taken and verified.
    pub fn backup(info: &BackupInfo) -> Event {
        Event::new(
            EventKind::Backup,
            Severity::Info,
            info.name.clone(),
            format!(
                "Backup {} was taken ({} bytes) and verified.",
                info.name, info.size
            ),
            if info.label == "scheduled" {
                "the backup schedule (backup.interval) made it due".to_string()
            } else {
                format!("asked for (label {})", info.label)
            },
            "copied the database online, checked the copy and recorded it in the catalog",
        )
    }

    /// A backup could not be taken, or failed its verification.
    pub fn backup_failed(label: &str, db: &str, error: &Error) -> Event {
        Event::new(
            EventKind::BackupFailed,
            Severity::Critical,
            db,
            format!("A backup of {db} ({label}) failed."),
            format!("{}: {}", error.message, error.detail),
            "kept the backups there were; a failed copy is recorded as failed and never restored",
        )
        .operator_action("check the backup directory (free space, permissions, the disk), then take one with `resilite backup --db <db>` or POST /v1/backups")
    }

    /// A kept backup failed a later verification.
    pub fn backup_verify_failed(v: &Verification) -> Event {
        Event::new(
            EventKind::BackupVerifyFailed,
            Severity::Critical,
            v.name.clone(),
            format!("Backup {} failed verification.", v.name),
            v.errors.join("; "),
            "marked it failed in the catalog: restores and recoveries skip it",
        )
        .operator_action("check the disk holding the backup directory, and take a new backup (`resilite backup --db <db>`)")
    }

    /// Retention deleted a backup.
    pub fn backup_deleted(name: &str) -> Event {
        Event::new(
            EventKind::BackupDeleted,
            Severity::Info,
            name,
            format!("Backup {name} was deleted by retention."),
            "newer backups cover it under backup.keep_last and the generations kept",
            "deleted the file and its sidecar and marked it deleted in the catalog",
        )
    }

    /// The rows of `record` were moved to its archive file (less those
    /// that changed after it was written, kept in the database).
    pub fn archive(record: &ArchiveRecord) -> Event {
        let kept = &record.kept_rowids;
        let mut summary = format!(
            "{} rows of table {} (rowids {} to {}) were archived to {}.",
            record.archived_rows(),
            record.table,
            record.first_rowid,
            record.last_rowid,
            record.path
        );
        let mut decision = "wrote and verified the archive file, recorded it in the catalog, then deleted the rows from the database".to_string();
        if !kept.is_empty() {
            let shown: Vec<String> = kept.iter().take(20).map(|r| r.to_string()).collect();
            let more = if kept.len() > 20 { ", ..." } else { "" };
            summary.push_str(&format!(
                " {} rows (rowids {}{more}) changed after the archive was written and stayed in the database with their change.",
                kept.len(),
                shown.join(", ")
            ));
            decision.push_str(" that were identical to their archived copy; rows that changed were left in place, marked kept in the catalog, and a restore never puts their old copy back");
        }
        let event = Event::new(
            EventKind::Archive,
            if kept.is_empty() {
                Severity::Info
            } else {
                Severity::Warning
            },
            record.path.as_str(),
            summary,
            format!(
                "their {} was older than the retention policy keeps ({} to {})",
                record.column,
                record.min_value.as_deref().unwrap_or("?"),
                record.max_value.as_deref().unwrap_or("?")
            ),
            decision,
        );
        if kept.is_empty() {
            event
        } else {
            event.operator_action("nothing is lost; if the application still updates rows this old, lengthen the policy's `keep` so they are archived once they stop changing")
        }
    }

    /// An archive run on the database `db` stopped on `error`.
    pub fn archive_failed(db: &str, error: &Error) -> Event {
        Event::new(
            EventKind::ArchiveFailed,
            Severity::Warning,
            db,
            format!("An archive run on {db} stopped: {}", error.message),
            error.detail.clone(),
            "rows not yet archived stay in the database; the next run completes or retries what this one left",
        )
        .operator_action("fix the cause named above (a retention policy, the archive directory, the disk), then run `resilite archive run` or wait for the next scheduled run")
    }

    /// What an interrupted archive run on the database `db` left was
    /// completed `when` (`at start`, ...): `report`'s `resumed`,
    /// `kept_rows`, `orphans_removed` and `scratch_removed`.
    pub fn archive_resumed(db: &str, report: &RunReport, when: &str) -> Event {
        let mut done = Vec::new();
        if report.resumed > 0 {
            done.push(format!(
                "{} archive(s) recorded but not finished were verified and their rows still in the database deleted ({} changed row(s) kept)",
                report.resumed, report.kept_rows
            ));
        }
        if report.orphans_removed > 0 {
            done.push(format!(
                "{} archive file(s) written but never recorded were removed (their rows were still in the database)",
                report.orphans_removed
            ));
        }
        if report.scratch_removed > 0 {
            done.push(format!(
                "{} temporary file(s) were removed",
                report.scratch_removed
            ));
        }
        Event::new(
            EventKind::ArchiveResumed,
            Severity::Info,
            db,
            format!(
                "An interrupted archive run on {db} was completed {when}: {}.",
                done.join("; ")
            ),
            "an archive run stopped between two of its phases (the process was killed, crashed or lost power)",
            "completed the run's phases from where it stopped, so that every row is in the database or in one verified archive, never both; no new row was archived (that is the schedule's or `resilite archive run`'s job)",
        )
    }

    /// A purge-only policy deleted `rows` rows of `table` older than `keep`.
    pub fn purge(table: &str, rows: u64, keep: std::time::Duration) -> Event {
        Event::new(
            EventKind::Purge,
            Severity::Info,
            table,
            format!("{rows} expired rows of table {table} were deleted."),
            format!(
                "they were older than the retention policy keeps ({}), and the policy has archive = false",
                humantime_serde::re::humantime::format_duration(keep)
            ),
            "deleted them through the writer, in batches",
        )
    }

    /// The rows of `record` were put back: `restored` inserted, `skipped`
    /// already there.
    pub fn archive_restore(record: &ArchiveRecord, restored: u64, skipped: u64) -> Event {
        Event::new(
            EventKind::ArchiveRestore,
            Severity::Info,
            record.path.as_str(),
            format!(
                "Archive {} was restored into table {}: {restored} rows put back, {skipped} skipped.",
                record.id, record.table
            ),
            "an operator asked for it",
            "verified the archive, then inserted each row with its rowid; rows whose key was already there were skipped",
        )
    }

    /// The supervisor restarted or escalated `actor`.
    pub fn restart(actor: &str, reason: &str, in_window: u32, outcome: RestartOutcome) -> Event {
        match outcome {
            RestartOutcome::Restarted => Event::new(
                EventKind::ActorRestarted,
                Severity::Warning,
                actor,
                format!("Actor {actor} failed and was restarted ({in_window} failure(s) in the restart window)."),
                reason,
                "started a new instance with its state rebuilt from the journal; callers waited for it",
            ),
            RestartOutcome::Escalated => Event::new(
                EventKind::ActorEscalated,
                Severity::Critical,
                actor,
                format!("Actor {actor} failed {in_window} times within the restart window and was not restarted again."),
                reason,
                "stopped restarting it: the runtime reports it failed and refuses what needs it",
            )
            .operator_action("find the cause in the log and the journal's actor_restarts, fix it, then restart resilite"),
        }
    }

    /// A configuration reload from `source` (a file, or `a Config value`)
    /// was applied: `applied` lists the keys the runtime took (`key: old →
    /// new`, secrets hidden), `pending` those that need a restart.
    pub fn config_change(source: &str, applied: &[String], pending: &[String]) -> Event {
        let summary = if applied.is_empty() && pending.is_empty() {
            "The configuration was reloaded; nothing changed.".to_string()
        } else {
            format!(
                "The configuration was reloaded: {} key(s) applied, {} waiting for a restart.",
                applied.len(),
                pending.len()
            )
        };
        let mut cause = String::from(
            "a reload was asked for (SIGHUP, POST /v1/config/reload or rt.reload_config)",
        );
        if !applied.is_empty() {
            cause.push_str("; applied: ");
            cause.push_str(&applied.join(", "));
        }
        if !pending.is_empty() {
            cause.push_str("; need a restart: ");
            cause.push_str(&pending.join(", "));
        }
        let event = Event::new(
            EventKind::ConfigChange,
            Severity::Info,
            source,
            summary,
            cause,
            "sent every actor its new settings; keys that need a restart keep their running values",
        );
        if pending.is_empty() {
            event
        } else {
            event.operator_action("restart resilite to apply the keys that need a restart")
        }
    }

    /// A configuration reload from `source` was refused for `reason`.
    pub fn config_rejected(source: &str, reason: &str) -> Event {
        Event::new(
            EventKind::ConfigRejected,
            Severity::Warning,
            source,
            "A configuration reload was refused; the runtime keeps running on its current configuration.",
            reason,
            "kept the configuration in effect unchanged",
        )
        .operator_action("fix the file as the cause says, then reload again (SIGHUP or POST /v1/config/reload)")
    }

    /// A recovery or restore attempt, from its record.
    pub fn recovery(r: &RecoveryRecord, db: &str) -> Event {
        let restore = r.trigger.starts_with("restore of backup");
        let ok = matches!(r.outcome.as_str(), "recovered" | "restored");
        let (kind, severity, summary, decision) = match (restore, ok) {
            (true, true) => (
                EventKind::Restore,
                Severity::Warning,
                format!("A backup was restored onto {db} in {} ms.", r.duration_ms),
                "paused writes, took a pre-restore backup, replaced the file and resumed writes",
            ),
            (true, false) => (
                EventKind::RestoreFailed,
                Severity::Critical,
                format!("A restore onto {db} failed."),
                "stopped the restore where it failed (see the explanation)",
            ),
            (false, true) => (
                EventKind::Recovery,
                Severity::Warning,
                format!("{db} was recovered from a backup in {} ms.", r.duration_ms),
                "kept the damaged file aside, restored the newest verified backup, replayed the operation log and resumed writes",
            ),
            (false, false) => (
                EventKind::RecoveryFailed,
                Severity::Critical,
                format!("A recovery of {db} did not complete ({}).", r.outcome),
                "left the database as the explanation says; writes stay paused if the file fails its integrity check",
            ),
        };
        let mut event = Event::new(kind, severity, db, summary, r.trigger.clone(), decision);
        event.at_ms = r.started_at_ms;
        if ok {
            if !restore {
                event = event.operator_action(r.explanation.clone());
            }
        } else {
            event = event.operator_action(r.explanation.clone());
        }
        event
    }

    /// Count it and log it; what every recording does once.
    fn announce(&self) {
        metrics::counter!(
            "resilite_events_total",
            "kind" => self.kind.as_str(),
            "severity" => self.severity.as_str()
        )
        .increment(1);
        match self.severity {
            Severity::Info => {
                tracing::info!(kind = %self.kind, subject = %self.subject, "{}", self.summary)
            }
            Severity::Warning => {
                tracing::warn!(kind = %self.kind, subject = %self.subject, "{}", self.summary)
            }
            Severity::Critical => {
                tracing::error!(kind = %self.kind, subject = %self.subject, "{}", self.summary)
            }
        }
    }

    /// Count and log this event and return the statement recording it, for
    /// who writes the journal in batches of its own.
    pub fn statement(&self) -> Statement {
        self.announce();
        crate::journal::events::insert_statement(self)
    }
}

/// What the event task is sent.
enum Entry {
    Event(Box<Event>),
    Flush(oneshot::Sender<bool>),
}

/// Records events in the journal without waiting on it. Cloneable; the
/// task behind it ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Events {
    queue: Option<mpsc::Sender<Entry>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entry")
    }
}

impl Events {
    /// Start the task writing events through the journal writer in
    /// `journal`. Call it within a tokio runtime.
    pub fn start(journal: watch::Receiver<WriterSlot>) -> Events {
        let (queue, rx) = mpsc::channel(DEFAULT_EVENT_QUEUE);
        tokio::spawn(event_task(journal, rx));
        Events { queue: Some(queue) }
    }

    /// Events that are counted and logged but kept nowhere (an actor
    /// started alone, without a journal).
    pub fn none() -> Events {
        Events { queue: None }
    }

    /// Count, log and queue `event` for the journal; never waits.
    pub fn record(&self, event: Event) {
        event.announce();
        let Some(queue) = &self.queue else { return };
        if queue.try_send(Entry::Event(Box::new(event))).is_err() {
            tracing::warn!("the journal is behind; an event was not recorded");
        }
    }

    /// Resolves once every event recorded so far is in the journal: `true`,
    /// or `false` when one could not be written.
    pub fn flush(&self) -> impl Future<Output = bool> + Send + 'static {
        let queue = self.queue.clone();
        async move {
            let Some(queue) = queue else { return true };
            let (tx, rx) = oneshot::channel();
            queue.send(Entry::Flush(tx)).await.is_ok() && rx.await.unwrap_or(false)
        }
    }
}

/// Write queued events through the journal writer, in order, a batch at a
/// time, and answer flushes once what was queued before them is written.
async fn event_task(journal: watch::Receiver<WriterSlot>, mut rx: mpsc::Receiver<Entry>) {
    let mut queued = Vec::new();
    let mut all_written = true;
    while rx.recv_many(&mut queued, EVENT_BATCH).await > 0 {
        let mut statements = Vec::new();
        let mut flushes = Vec::new();
        for entry in queued.drain(..) {
            match entry {
                Entry::Event(e) => statements.push(crate::journal::events::insert_statement(&e)),
                Entry::Flush(reply) => flushes.push(reply),
            }
        }
        if !statements.is_empty() {
            if let Err(e) = slot::write(&journal, Operation::Batch(statements)).await {
                all_written = false;
                tracing::warn!(detail = %e.detail, "could not record events in the journal");
            }
        }
        if !flushes.is_empty() {
            for reply in flushes {
                let _ = reply.send(all_written);
            }
            all_written = true;
        }
    }
}
