//! The BackupActor: owns the backup directory and answers for the backup
//! catalog.
//!
//! It takes backups (on request, and on its schedule: when `interval` has
//! passed since the newest), verifies each right after taking it and
//! again when its last verification is older than `verify_every`, and
//! deletes old ones by retention ([`Retention`](super::Retention): the
//! newest `keep_last`, the daily, weekly and monthly generations, and the
//! newest verified one are kept). Every backup, verification and deletion is
//! recorded in the journal's catalog through the journal writer; the list
//! it answers is its own state, rebuilt from the catalog at each start.
//!
//! Messages: [`BackupMsg`]. One job runs at a time: a backup, a verify or
//! a tick waits for the one before it. The copying and checking run on
//! tokio's blocking pool.
//!
//! Failures: a backup or verification that fails is answered as an error
//! (or a failed [`Verification`]) and the actor goes on. It fails (and is
//! restarted by the supervisor) only when the catalog cannot be read at
//! start.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::BackupConfig;
use super::destination::{check_name, Destination, LocalDir};
use super::meta::{self, BackupInfo, Verification};
use super::restore::{self, Staged};
use super::take::TakeOptions;
use super::verify::VerifyOptions;
use super::{retention, take, verify};
use crate::connection::{read_blocking, DbOptions};
use crate::error::{Error, ErrorClass, Result};
use crate::error_log::{ErrorLog, DEFAULT_FLUSH_EVERY};
use crate::events::{Event, Events};
use crate::journal::backups as catalog;
use crate::maintenance::now_ms;
use crate::slot::{self, WriterSlot};
use crate::value::{Operation, Statement};

/// Longest time between two ticks (the schedule is checked this often).
pub const DEFAULT_TICK: Duration = Duration::from_secs(60);

/// Messages of the BackupActor.
pub enum BackupMsg {
    /// Take a backup now, labelled `label`, verify it and apply retention.
    Backup {
        /// Why it is taken (`manual`, `pre-migration`...).
        label: String,
        /// The new backup, verified.
        reply: RpcReplyPort<Result<BackupInfo>>,
    },
    /// The backups kept, oldest first.
    List(RpcReplyPort<Vec<BackupInfo>>),
    /// Verify the backup `name` (a catalog name, never a path) now.
    Verify {
        /// As `List` answers it.
        name: String,
        /// The outcome; `Err` if there is no such backup.
        reply: RpcReplyPort<Result<Verification>>,
    },
    /// Prepare a restore of the backup `name` (a catalog name, never a
    /// path): verify it now (the outcome recorded), take a `pre-restore`
    /// backup of the current file when it is readable, and stage a checked
    /// copy of the backup beside the database. The caller, once every
    /// connection to the database is closed, puts it in place with
    /// [`install`](super::install). Refused, the database untouched, when
    /// there is no such backup or it fails verification.
    Restore {
        /// As `List` answers it.
        name: String,
        /// The staged copy, and the name of the `pre-restore` backup (if
        /// one was taken).
        reply: RpcReplyPort<Result<(Staged, Option<String>)>>,
    },
    /// Prepare a recovery: verify the newest backup that passed its last
    /// verification again now (the outcome recorded), falling back to the
    /// next older one when it fails, and stage a checked copy beside the
    /// database. No `pre-restore` backup: the database is damaged (it is
    /// quarantined by the caller instead). `Err` with class `Unavailable`
    /// when no backup is verified.
    Recover(RpcReplyPort<Result<Staged>>),
    /// Do what is due: a scheduled backup, retention, verifications. Sent
    /// by its own timer.
    Tick,
    /// Take a new schedule, retention and verification settings (a
    /// reload); the backup directory and the database stay those it
    /// started with. Answers once in place.
    Reconfigure(Box<BackupConfig>, RpcReplyPort<()>),
}

/// How often the actor looks at what is due under `config`.
fn tick_of(config: &BackupConfig) -> Duration {
    let mut tick = DEFAULT_TICK.min(config.verify_every);
    if !config.interval.is_zero() {
        tick = tick.min(config.interval);
    }
    tick
}

/// What the BackupActor needs; cloned for each (re)start.
#[derive(Clone)]
pub struct BackupArgs {
    /// The schedule and where backups go.
    pub config: BackupConfig,
    /// The journal file (the catalog is read from it at start).
    pub journal_db: DbOptions,
    /// The journal writer: the catalog's rows are written through it.
    pub journal: watch::Receiver<WriterSlot>,
}

/// The BackupActor.
pub struct BackupActor;

/// Its state: the catalog, as it answers for it.
pub struct BackupState {
    args: BackupArgs,
    dest: Arc<dyn Destination>,
    backups: Vec<BackupInfo>,
    timer: Option<JoinHandle<()>>,
    /// Backups taken, failed, failing verification, deleted.
    events: Events,
    /// Failures, counted in the journal's error log.
    errors: ErrorLog,
}

impl Actor for BackupActor {
    type Msg = BackupMsg;
    type State = BackupState;
    type Arguments = BackupArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BackupMsg>,
        args: BackupArgs,
    ) -> Result<BackupState, ActorProcessingErr> {
        let mut backups = read_blocking(&args.journal_db, catalog::live).await?;
        let config = &args.config;
        let dest: Arc<dyn Destination> = Arc::new(LocalDir::new(config.dir.clone()));
        backups = {
            let dest = dest.clone();
            blocking(move || {
                meta::fill_from_sidecars(dest.as_ref(), &mut backups);
                Ok(backups)
            })
            .await?
        };
        let timer = myself.send_interval(tick_of(config), || BackupMsg::Tick);
        Ok(BackupState {
            events: Events::start(args.journal.clone()),
            errors: ErrorLog::start(args.journal.clone(), DEFAULT_FLUSH_EVERY),
            dest,
            args,
            backups,
            timer: Some(timer),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<BackupMsg>,
        msg: BackupMsg,
        state: &mut BackupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BackupMsg::Reconfigure(config, reply) => {
                let mut config = *config;
                config.db = state.args.config.db.clone();
                config.dir = state.args.config.dir.clone();
                if tick_of(&config) != tick_of(&state.args.config) {
                    if let Some(timer) = state.timer.take() {
                        timer.abort();
                    }
                    state.timer = Some(myself.send_interval(tick_of(&config), || BackupMsg::Tick));
                }
                state.args.config = config;
                let _ = reply.send(());
            }
            BackupMsg::Backup { label, reply } => {
                let result = state.backup(&label).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            BackupMsg::List(reply) => {
                let _ = reply.send(state.backups.clone());
            }
            BackupMsg::Verify { name, reply } => {
                let result = state.verify_named(&name).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            BackupMsg::Restore { name, reply } => {
                let result = state.prepare_restore(&name).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            BackupMsg::Recover(reply) => {
                let result = state.prepare_recovery().await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            BackupMsg::Tick => state.tick().await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BackupMsg>,
        state: &mut BackupState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }
}

impl BackupState {
    /// Take, record, verify, then apply retention.
    async fn backup(&mut self, label: &str) -> Result<BackupInfo> {
        let info = match self.backup_kept(label).await {
            Ok(info) => info,
            Err(e) => {
                let db = self.args.config.db.path.display().to_string();
                self.errors.record("backup", &e);
                self.events.record(Event::backup_failed(label, &db, &e));
                return Err(e);
            }
        };
        self.events.record(Event::backup(&info));
        self.retain().await;
        Ok(info)
    }

    /// See [`BackupMsg::Restore`].
    async fn prepare_restore(&mut self, name: &str) -> Result<(Staged, Option<String>)> {
        let verification = self.verify_named(name).await?;
        if !verification.passed {
            return Err(Error::new(
                ErrorClass::Corruption,
                format!(
                    "backup {name} failed verification: {}",
                    verification.errors.join("; ")
                ),
                "do not restore from it: pick another verified backup (GET /v1/backups); the database was not changed",
            ));
        }
        // The safety copy; retention waits for the next tick so that it
        // cannot delete the backup being restored meanwhile.
        let safety = match self.backup_kept("pre-restore").await {
            Ok(info) => Some(info.name),
            Err(e) if e.class == ErrorClass::Corruption => {
                tracing::warn!(error = %e, "the current database is not readable: restoring without a pre-restore backup");
                None
            }
            Err(e) => {
                return Err(Error::new(
                    e.class,
                    format!("the pre-restore backup of the current database failed: {e}"),
                    "nothing was restored and the database was not changed; fix the cause (disk space, the backup directory) and try again",
                ))
            }
        };
        let info = self
            .backups
            .iter()
            .find(|b| b.name == name)
            .cloned()
            .ok_or_else(|| Error::bad_input(format!("no backup named {name} in the catalog")))?;
        let dest = self.dest.clone();
        let target = self.args.config.db.path.clone();
        let staged = blocking(move || {
            let path = dest.read_path(&info.name)?;
            restore::prepare(&path, &info, &target)
        })
        .await?;
        tracing::info!(backup = %name, staged = %staged.path().display(), "restore: backup verified and staged");
        Ok((staged, safety))
    }

    /// See [`BackupMsg::Recover`].
    async fn prepare_recovery(&mut self) -> Result<Staged> {
        let mut candidates: Vec<BackupInfo> = self
            .backups
            .iter()
            .filter(|b| b.is_verified())
            .cloned()
            .collect();
        candidates.sort_by_key(|b| std::cmp::Reverse(b.created_at_ms));
        let mut refused = Vec::new();
        for info in candidates {
            let verification = self.verify_named(&info.name).await?;
            if !verification.passed {
                tracing::warn!(backup = %info.name, "recovery: backup fails verification now; trying an older one");
                refused.push(format!(
                    "{} ({})",
                    info.name,
                    verification.errors.join("; ")
                ));
                continue;
            }
            let dest = self.dest.clone();
            let target = self.args.config.db.path.clone();
            let name = info.name.clone();
            match blocking(move || {
                let path = dest.read_path(&info.name)?;
                restore::prepare(&path, &info, &target)
            })
            .await
            {
                Ok(staged) => return Ok(staged),
                Err(e) => refused.push(format!("{name} ({e})")),
            }
        }
        Err(Error::new(
            ErrorClass::Unavailable,
            if refused.is_empty() {
                "no verified backup to recover from".to_string()
            } else {
                format!(
                    "no verified backup to recover from: {} failed verification now",
                    refused.join(", ")
                )
            },
            "the damaged database was left in place and writes stay paused",
        ))
    }

    /// Take, record and verify a backup (no retention).
    async fn backup_kept(&mut self, label: &str) -> Result<BackupInfo> {
        let db = self.args.config.db.clone();
        let dest = self.dest.clone();
        let label = label.to_string();
        let options = TakeOptions {
            compress: self.args.config.compress,
            compress_level: self.args.config.compress_level,
        };
        let mut info =
            blocking(move || take::take_with(&db, dest.as_ref(), &label, &options, None)).await?;
        let verification = self.check(&info).await;
        info.apply(&verification);
        self.refresh_sidecar(&info).await;
        self.record(catalog::insert_statement(&info)).await?;
        metrics::counter!("resilite_backups_total", "outcome" => if info.is_verified() { "verified" } else { "failed" }).increment(1);
        self.backups.push(info.clone());
        if !info.is_verified() {
            return Err(Error::new(
                ErrorClass::Corruption,
                format!(
                    "backup {} was written but failed verification: {}",
                    info.name,
                    info.verify_errors.join("; ")
                ),
                "the copy is kept and recorded as failed; check the disk holding the backup directory",
            ));
        }
        Ok(info)
    }

    /// Verify the backup `name` and record the outcome.
    async fn verify_named(&mut self, name: &str) -> Result<Verification> {
        check_name(name)?;
        let Some(info) = self.backups.iter().find(|b| b.name == name).cloned() else {
            return Err(Error::bad_input(format!(
                "no backup named {name} in the catalog: list them with `resilite backups` or GET /v1/backups"
            )));
        };
        let verification = self.check(&info).await;
        if !verification.passed {
            self.events
                .record(Event::backup_verify_failed(&verification));
        }
        let mut updated = info;
        updated.apply(&verification);
        if let Some(b) = self.backups.iter_mut().find(|b| b.name == name) {
            *b = updated.clone();
        }
        // The catalog is what counts; the sidecar is refreshed best effort.
        self.refresh_sidecar(&updated).await;
        self.record(catalog::verified_statement(&verification))
            .await?;
        Ok(verification)
    }

    /// Rewrite the sidecar with `info` (its last verification); a failure
    /// is logged, the catalog holds the same.
    async fn refresh_sidecar(&self, info: &BackupInfo) {
        let dest = self.dest.clone();
        let info = info.clone();
        let name = info.name.clone();
        if let Err(e) = blocking(move || take::write_sidecar(dest.as_ref(), &info)).await {
            tracing::warn!(backup = %name, error = %e, "the backup's sidecar was not updated");
        }
    }

    /// Run the checks on a blocking thread (with a trial restore when
    /// `trial_restore` is on).
    async fn check(&self, info: &BackupInfo) -> Verification {
        let dest = self.dest.clone();
        let info = info.clone();
        let name = info.name.clone();
        let config = &self.args.config;
        let options = VerifyOptions {
            trial_restore: config.trial_restore.then(|| config.db.clone()),
        };
        let verification = blocking(move || match dest.read_path(&info.name) {
            Ok(path) => Ok(verify::verify_with(&path, &info, &options, None)),
            Err(e) => Ok(Verification {
                name: info.name.clone(),
                passed: false,
                errors: vec![e.message],
                verified_at_ms: now_ms(),
                duration_ms: 0,
            }),
        })
        .await;
        let verification = verification.unwrap_or_else(|e| Verification {
            name,
            passed: false,
            errors: vec![e.to_string()],
            verified_at_ms: now_ms(),
            duration_ms: 0,
        });
        if !verification.passed {
            metrics::counter!("resilite_backup_verify_failures_total").increment(1);
            tracing::warn!(backup = %verification.name, errors = ?verification.errors, "backup failed verification");
        }
        verification
    }

    /// Delete what retention says, each deletion recorded.
    ///
    /// No lock is needed to keep a deletion from pulling a backup out from
    /// under a verification or a restore that is reading it: all three run
    /// inside this actor's own handler, one message at a time. A verify
    /// (`verify_named`), a restore's or a recovery's verification and
    /// staged copy (`prepare_restore`, `prepare_recovery`) read the backup
    /// file and finish before the handler returns, and retention runs only
    /// from a handler (`backup`, `tick`), so it never overlaps them. What a
    /// restore installs afterwards is its own staged copy, not the backup.
    /// (A `resilite verify` or `restore` run by hand on the same directory
    /// is another process: a deletion meanwhile makes it fail with "not
    /// found", never read a part of a file.)
    async fn retain(&mut self) {
        for name in retention::to_delete(&self.backups, &self.args.config.retention) {
            let dest = self.dest.clone();
            let file = name.clone();
            let deleted = blocking(move || {
                dest.delete(&file)?;
                dest.delete(&super::meta::sidecar_name(&file))
            })
            .await;
            if let Err(e) = deleted {
                tracing::warn!(backup = %name, error = %e, "retention could not delete a backup");
                continue;
            }
            if let Err(e) = self
                .record(catalog::deleted_statement(&name, now_ms()))
                .await
            {
                tracing::warn!(backup = %name, error = %e, "the deletion of a backup was not recorded");
            }
            self.events.record(Event::backup_deleted(&name));
            self.backups.retain(|b| b.name != name);
        }
        self.trim_op_log().await;
    }

    /// Trim the operation log up to the position of the newest verified
    /// backup: recovery replays from there, never from before it.
    async fn trim_op_log(&self) {
        let newest_verified = self
            .backups
            .iter()
            .filter(|b| b.is_verified())
            .max_by(|a, b| (a.created_at_ms, &a.name).cmp(&(b.created_at_ms, &b.name)));
        let Some(seq) = newest_verified.and_then(|b| b.op_log_seq) else {
            return;
        };
        let trim = crate::journal::op_log::trim_statement(seq);
        if let Err(e) = slot::write(&self.args.journal, trim).await {
            tracing::warn!(seq, error = %e, "the operation log was not trimmed");
        }
    }

    /// The schedule: a backup when due, retention, verifications.
    async fn tick(&mut self) {
        let config = &self.args.config;
        let now = now_ms();
        let interval = config.interval.as_millis() as i64;
        let newest = self.backups.iter().map(|b| b.created_at_ms).max();
        if interval > 0 && newest.is_none_or(|at| now - at >= interval) {
            if let Err(e) = self.backup("scheduled").await {
                tracing::warn!(error = %e, "scheduled backup failed");
            }
        }
        self.retain().await;
        let every = self.args.config.verify_every.as_millis() as i64;
        let due: Vec<String> = self
            .backups
            .iter()
            .filter(|b| b.verified_at_ms.is_none_or(|at| now - at >= every))
            .map(|b| b.name.clone())
            .collect();
        for name in due {
            if let Err(e) = self.verify_named(&name).await {
                tracing::warn!(backup = %name, error = %e, "scheduled verification not recorded");
            }
        }
    }

    async fn record(&self, statement: Statement) -> Result<()> {
        slot::write(&self.args.journal, Operation::Statement(statement))
            .await
            .map(|_| ())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::classed(ErrorClass::Internal, e.to_string()))?
}
