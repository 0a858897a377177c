//! Migrations, run on the writer's connection: [`Runtime::migrate`],
//! [`Runtime::baseline_migrations`], [`Runtime::migration_status`], and
//! the migrations of
//! `schema.migrations_dir` at start.
//!
//! # The operation log across a migration
//!
//! A migration changes the database outside the operation log, so the log
//! cannot carry a recovery across it: operations logged after it were
//! written against the new schema and would be replayed onto a backup with
//! the old one. Each migration therefore moves the database's op-log
//! position past the log inside its own transaction (a **barrier**, see
//! `resilite_actors::writer::op_log_barrier`), and the writer records that
//! range as a gap in the journal. A recovery from a backup taken before the
//! migration (the `pre-migration` one) restores that backup and does not
//! replay the log across the gap, and says so; it never replays onto the
//! wrong schema. So that a recovery has a backup on the new schema to
//! replay from, a run that changed the database with the log on
//! (`backup.op_log = true`) is followed by a `post-migration` backup.
//! (Recording the migration in the log, for the replay to run it again,
//! was not done: a migration is not an operation the statement gate lets
//! through, since it sets `user_version` and may run any DDL.)

use std::sync::atomic::Ordering;
use std::sync::Arc;

use resilite_actors::connection::read_blocking;
use resilite_actors::migrate::{self, OpLogBarrier, RunContext};
use resilite_actors::slot;
use resilite_actors::{
    BaselineReport, Error, MigrateOptions, MigrationReport, MigrationStatus, Migrations, Result,
    WriterHandle,
};

use super::Runtime;

impl Runtime {
    /// Bring the database to `options.to` (the latest migration of
    /// `migrations` when `None`): apply the pending migrations in order, or
    /// roll back (their down scripts, highest first) the ones above it.
    ///
    /// Each migration runs on the writer's connection in its own
    /// transaction, with `PRAGMA user_version` and a row in the database's
    /// `_resilite_migrations` history; writes sent meanwhile wait behind
    /// it. Before a run that has something to do (never before a no-op),
    /// a `pre-migration` backup is taken; if that fails, nothing is
    /// applied. With the operation log on, a `post-migration` backup
    /// follows a run that changed something (see the module doc).
    ///
    /// Refused, nothing applied, when an applied migration's up script
    /// changed or left `migrations` (accept it with `resilite migrate
    /// repair`), a pending one sits below an applied one, or `user_version`
    /// disagrees with the history. A migration that fails is rolled back
    /// and recorded with its failing statement, and later ones are not
    /// attempted: the error names the migration, the statement and
    /// SQLite's error. A migration that would lose a table, a column or
    /// rows is refused unless `options.allow_destructive`. A dry run
    /// applies everything in a transaction that is rolled back.
    ///
    /// Runs are serialized, and each reads the history again on the
    /// writer's connection: two runs at once apply each migration once.
    pub async fn migrate(
        &self,
        migrations: &Migrations,
        options: MigrateOptions,
    ) -> Result<MigrationReport> {
        let _one = self.inner.migrate_lock.lock().await;
        let handle = slot::running(&mut self.inner.app.clone()).await?.handle;
        let source = Arc::new(migrations.clone());
        let (steps, version_before) = {
            let (source, options) = (source.clone(), options.clone());
            handle
                .call(move |c| Ok((migrate::plan(c, &source, &options)?, user_version(c)?)))
                .await?
        };
        if steps.is_empty() {
            return Ok(MigrationReport {
                from_version: version_before,
                to_version: version_before,
                dry_run: options.dry_run,
                ..MigrationReport::default()
            });
        }
        let backup = if options.dry_run {
            None
        } else {
            let taken = self.backup("pre-migration").await.map_err(|e| {
                Error::new(
                    e.class,
                    format!(
                        "the pre-migration backup failed, so no migration was applied: {}",
                        e.message
                    ),
                    e.detail,
                )
            })?;
            Some(taken.name)
        };
        let config = self.config();
        let ctx = RunContext {
            backup,
            barrier: Some(OpLogBarrier {
                journal: Some(config.journal_db()),
                create: config.backup.op_log,
            }),
        };
        let dry_run = options.dry_run;
        let result = {
            let source = source.clone();
            handle
                .call(move |c| migrate::run(c, &source, &options, &ctx))
                .await
        };
        let changed = match &result {
            Ok(report) => !report.is_noop() && !dry_run,
            Err(_) => !dry_run && self.version_now(&handle).await != Some(version_before),
        };
        metrics::counter!(
            "resilite_migration_runs_total",
            "outcome" => if result.is_ok() { "done" } else { "failed" }
        )
        .increment(1);
        let post_backup = if changed && config.backup.op_log {
            match self.backup("post-migration").await {
                Ok(b) => Some(b.name),
                Err(e) => {
                    tracing::warn!(error = %e, "the post-migration backup failed: a recovery before the next backup restores the pre-migration one without replaying the operation log");
                    None
                }
            }
        } else {
            None
        };
        match result {
            Ok(mut report) => {
                report.post_backup = post_backup;
                if !report.is_noop() {
                    tracing::info!(
                        from = report.from_version,
                        to = report.to_version,
                        applied = report.applied.len(),
                        rolled_back = report.rolled_back.len(),
                        dry_run,
                        "migrations done"
                    );
                }
                Ok(report)
            }
            Err(e) => {
                tracing::error!(error = %e, "migration failed");
                Err(e)
            }
        }
    }

    /// Adopt a database whose schema another tool (or the application's
    /// own `CREATE TABLE`s) made: record migrations `1..=version` of
    /// `migrations` as applied without running them, and set
    /// `user_version` to `version`, on the writer's connection in one
    /// transaction; later migrations then apply with
    /// [`migrate`](Runtime::migrate). `resilite migrate baseline` on a
    /// file.
    ///
    /// Refused, nothing written, when the database already has a
    /// migration history, when `version` is not in `migrations`, or when
    /// the schema lacks a table, column, primary key or UNIQUE index those
    /// migrations create; lesser differences come back in the report.
    pub async fn baseline_migrations(
        &self,
        migrations: &Migrations,
        version: u32,
    ) -> Result<BaselineReport> {
        let _one = self.inner.migrate_lock.lock().await;
        let handle = slot::running(&mut self.inner.app.clone()).await?.handle;
        let source = migrations.clone();
        let report = handle
            .call(move |c| migrate::baseline(c, &source, version))
            .await?;
        tracing::info!(
            version,
            previous_user_version = report.previous_user_version,
            "migrations recorded as applied without running them (baseline)"
        );
        Ok(report)
    }

    /// Where the database stands against `migrations`: each one applied,
    /// pending, changed, missing or failed, what blocks
    /// [`migrate`](Runtime::migrate), and the history. Reads only.
    pub async fn migration_status(&self, migrations: &Migrations) -> Result<MigrationStatus> {
        let source = migrations.clone();
        read_blocking(&self.config().app_db(), move |c| {
            migrate::status(c, Some(&source))
        })
        .await
    }

    /// The status against `schema.migrations_dir`, or the history alone
    /// when none is configured; a directory that cannot be read is the
    /// first problem, with the history's status. `GET /v1/migrations`.
    pub async fn configured_migration_status(&self) -> Result<MigrationStatus> {
        let db = self.config().app_db();
        let Some(dir) = self.config().schema.migrations_dir.clone() else {
            return read_blocking(&db, |c| migrate::status(c, None)).await;
        };
        match Migrations::from_dir(&dir) {
            Ok(source) => self.migration_status(&source).await,
            Err(e) => {
                let mut status = read_blocking(&db, |c| migrate::status(c, None)).await?;
                status.source = Some(dir.display().to_string());
                status.problems.insert(0, e.message);
                Ok(status)
            }
        }
    }

    /// At start: apply the migrations of `schema.migrations_dir`, if set
    /// (see [`start`](Runtime::start)); `ready` says so meanwhile.
    pub(crate) async fn migrate_at_start(&self) -> Result<()> {
        let Some(dir) = self.config().schema.migrations_dir.clone() else {
            return Ok(());
        };
        let options = MigrateOptions {
            allow_destructive: self.config().schema.allow_destructive,
            ..MigrateOptions::default()
        };
        let result = match Migrations::from_dir(&dir) {
            Ok(source) => self.migrate(&source, options).await,
            Err(e) => Err(e),
        };
        self.inner.migrating.store(false, Ordering::Release);
        match result {
            Ok(report) => {
                tracing::info!(
                    dir = %dir.display(),
                    version = report.to_version,
                    applied = report.applied.len(),
                    "migrations at start: the database is up to date"
                );
                Ok(())
            }
            Err(mut e) => {
                e.message = format!(
                    "the migrations in {} (schema.migrations_dir) did not apply at start: {}",
                    dir.display(),
                    e.message
                );
                Err(e)
            }
        }
    }

    /// `PRAGMA user_version` now, through the writer; `None` if it cannot
    /// be read.
    async fn version_now(&self, handle: &WriterHandle) -> Option<i64> {
        handle.call(user_version).await.ok()
    }
}

fn user_version(conn: &rusqlite::Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}
