//! The journal's schema, one entry per version, each frozen as it shipped:
//! a version's SQL is never edited once released. A table whose definition
//! changes is rebuilt by a later version, written out in full here (never
//! by referring to a constant that lives on). The test at the bottom builds
//! a journal at every old version, with rows, and migrates it.

/// Version N of the journal is `MIGRATIONS[..N]` applied in order; each
/// entry is a list of scripts run in one transaction.
pub(super) const MIGRATIONS: &[&[&str]] = &[
    // 1: the supervisor's restart log.
    &["CREATE TABLE actor_restarts (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        restarts_in_window INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('restarted', 'escalated'))
    );"],
    // 2: health history and the maintenance log.
    &["CREATE TABLE health_history (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        at TEXT NOT NULL,
        status TEXT NOT NULL,
        rule TEXT NOT NULL,
        integrity TEXT NOT NULL,
        full_integrity_check INTEGER NOT NULL,
        db_bytes INTEGER NOT NULL,
        wal_bytes INTEGER NOT NULL,
        shm_bytes INTEGER NOT NULL,
        page_count INTEGER NOT NULL,
        page_size INTEGER NOT NULL,
        freelist_count INTEGER NOT NULL,
        utilization_pct REAL NOT NULL,
        disk_free_bytes INTEGER NOT NULL,
        disk_free_pct REAL NOT NULL,
        read_probe_ms REAL NOT NULL,
        write_probe_ms REAL,
        foreign_key_violations INTEGER NOT NULL,
        actors_failed INTEGER NOT NULL,
        actor_restarts INTEGER NOT NULL,
        recommendations TEXT NOT NULL
    );
    CREATE INDEX health_history_at ON health_history (at_ms);
    CREATE TABLE maintenance_runs (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        at TEXT NOT NULL,
        task TEXT NOT NULL,
        mode TEXT,
        trigger TEXT NOT NULL,
        duration_ms REAL,
        bytes_before INTEGER,
        bytes_after INTEGER,
        bytes_reclaimed INTEGER,
        outcome TEXT NOT NULL CHECK (outcome IN ('done', 'busy', 'failed')),
        detail TEXT
    );
    CREATE INDEX maintenance_runs_at ON maintenance_runs (at_ms);"],
    // 3: the retry queue and dead-letter queue.
    &["CREATE TABLE retry_queue (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 10),
        ordering_key TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        next_retry_at_ms INTEGER NOT NULL,
        last_error_class TEXT,
        last_error TEXT,
        errors TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL CHECK (status IN ('queued', 'retrying', 'succeeded', 'dead')),
        poisoned INTEGER NOT NULL DEFAULT 0,
        first_failure_at_ms INTEGER,
        last_failure_at_ms INTEGER,
        dead_reason TEXT,
        reviewed_at_ms INTEGER,
        resolution TEXT CHECK (resolution IN ('requeued', 'discarded', 'fixed')),
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE INDEX retry_queue_due ON retry_queue (status, priority, next_retry_at_ms, id);
    CREATE INDEX retry_queue_ordering ON retry_queue (ordering_key, id) WHERE ordering_key IS NOT NULL;"],
    // 4: circuit breaker state and transitions.
    &["CREATE TABLE breaker_state (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('closed', 'open', 'halfopen')),
        consecutive_failures INTEGER NOT NULL,
        trips INTEGER NOT NULL,
        open_until_ms INTEGER,
        calls INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        rejected INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE TABLE breaker_transitions (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        breaker TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX breaker_transitions_at ON breaker_transitions (breaker, at_ms);"],
    // 5: the queue's checks without `IN (...)` lists, which SQLite evaluated
    // through a temporary b-tree on every insert and update.
    &[
        "DROP INDEX retry_queue_due; DROP INDEX retry_queue_ordering;
         ALTER TABLE retry_queue RENAME TO retry_queue_old;",
        "CREATE TABLE retry_queue (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 10),
        ordering_key TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        next_retry_at_ms INTEGER NOT NULL,
        last_error_class TEXT,
        last_error TEXT,
        errors TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL CHECK (status = 'queued' OR status = 'retrying' OR status = 'succeeded' OR status = 'dead'),
        poisoned INTEGER NOT NULL DEFAULT 0,
        first_failure_at_ms INTEGER,
        last_failure_at_ms INTEGER,
        dead_reason TEXT,
        reviewed_at_ms INTEGER,
        resolution TEXT CHECK (resolution = 'requeued' OR resolution = 'discarded' OR resolution = 'fixed'),
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE INDEX retry_queue_due ON retry_queue (status, priority, next_retry_at_ms, id);
    CREATE INDEX retry_queue_ordering ON retry_queue (ordering_key, id) WHERE ordering_key IS NOT NULL;",
        "INSERT INTO retry_queue SELECT * FROM retry_queue_old; DROP TABLE retry_queue_old;",
    ],
    // 6: the backup catalog.
    &["CREATE TABLE backups (
        name TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        size INTEGER NOT NULL,
        page_count INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        sqlite_version TEXT NOT NULL,
        user_version INTEGER NOT NULL,
        row_counts TEXT NOT NULL,
        restarts INTEGER NOT NULL DEFAULT 0,
        verified_at_ms INTEGER,
        verified INTEGER,
        verify_errors TEXT NOT NULL DEFAULT '[]',
        deleted_at_ms INTEGER
    );
    CREATE INDEX backups_created ON backups (created_at_ms);"],
    // 7: the operation log (every operation the application writer
    // committed, in commit order), its gaps, and the op-log position a
    // backup covers.
    &["CREATE TABLE op_log (
        seq INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        op TEXT NOT NULL
    );
    CREATE TABLE op_log_gaps (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        after_seq INTEGER NOT NULL,
        through_seq INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    ALTER TABLE backups ADD COLUMN op_log_seq INTEGER;"],
    // 8: the recovery log (every automatic or requested recovery attempt).
    &["CREATE TABLE recoveries (
        id INTEGER PRIMARY KEY,
        started_at_ms INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        steps TEXT NOT NULL DEFAULT '[]',
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        explanation TEXT NOT NULL
    );
    CREATE INDEX recoveries_started ON recoveries (started_at_ms);"],
    // 9: schema validation: findings (open until no longer found), the fix
    // log, and the rows dedupe removed, in full, to be put back.
    &["CREATE TABLE schema_findings (
        id INTEGER PRIMARY KEY,
        finding_key TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope = 'structure' OR scope = 'data'),
        severity TEXT NOT NULL CHECK (severity = 'info' OR severity = 'warning' OR severity = 'error'),
        tbl TEXT NOT NULL,
        rule TEXT NOT NULL,
        field TEXT,
        value TEXT,
        rowids TEXT NOT NULL DEFAULT '[]',
        row_count INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL,
        first_seen_at_ms INTEGER NOT NULL,
        last_seen_at_ms INTEGER NOT NULL,
        run TEXT NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        resolved_at_ms INTEGER
    );
    CREATE UNIQUE INDEX schema_findings_open ON schema_findings (finding_key) WHERE resolved_at_ms IS NULL;
    CREATE INDEX schema_findings_scope ON schema_findings (scope, resolved_at_ms);
    CREATE TABLE schema_fixes (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        tbl TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT,
        outcome TEXT NOT NULL
    );
    CREATE TABLE schema_removed_rows (
        id INTEGER PRIMARY KEY,
        batch TEXT NOT NULL,
        removed_at_ms INTEGER NOT NULL,
        tbl TEXT NOT NULL,
        row_id INTEGER NOT NULL,
        unique_columns TEXT NOT NULL,
        value TEXT NOT NULL,
        kept INTEGER NOT NULL,
        row_json TEXT NOT NULL,
        restored_at_ms INTEGER,
        restore_outcome TEXT
    );
    CREATE INDEX schema_removed_rows_batch ON schema_removed_rows (batch);"],
    // 10: the audit trail: events with explanations, the deduplicated error
    // log and the slow-query log.
    &["CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity = 'info' OR severity = 'warning' OR severity = 'critical'),
        summary TEXT NOT NULL,
        cause TEXT NOT NULL,
        decision TEXT NOT NULL,
        operator_action TEXT,
        subject TEXT NOT NULL
    );
    CREATE INDEX events_at ON events (at_ms);
    CREATE TABLE error_log (
        signature TEXT PRIMARY KEY,
        class TEXT NOT NULL,
        code INTEGER,
        message TEXT NOT NULL,
        example TEXT NOT NULL,
        component TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity = 'info' OR severity = 'warning' OR severity = 'critical'),
        count INTEGER NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        resolved INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX error_log_last_seen ON error_log (last_seen_ms);
    CREATE TABLE slow_queries (
        hash TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind = 'write' OR kind = 'query'),
        sql TEXT NOT NULL,
        count INTEGER NOT NULL,
        total_ms REAL NOT NULL,
        max_ms REAL NOT NULL,
        last_ms REAL NOT NULL,
        rows INTEGER NOT NULL,
        plan TEXT NOT NULL,
        scan INTEGER NOT NULL,
        suggestion TEXT,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    );
    CREATE INDEX slow_queries_last_seen ON slow_queries (last_seen_ms);"],
    // 11: retention and archives: the archive catalog, a row per archive file
    // of expired rows (see `archive`), with its phase; `kept_rowids`: its
    // rows that changed after it was written and so stayed (JSON array).
    &["CREATE TABLE archives (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        tbl TEXT NOT NULL,
        col TEXT NOT NULL,
        format TEXT NOT NULL,
        cutoff_ms INTEGER NOT NULL,
        min_value TEXT,
        max_value TEXT,
        first_rowid INTEGER NOT NULL,
        last_rowid INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        uncompressed_size INTEGER NOT NULL,
        stored_size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        expires_at_ms INTEGER,
        status TEXT NOT NULL CHECK (status IN ('written', 'verified', 'purged', 'restored', 'failed')),
        detail TEXT,
        updated_at_ms INTEGER NOT NULL,
        file_deleted_at_ms INTEGER,
        kept_rowids TEXT
    );
    CREATE INDEX archives_status ON archives (status);"],
    // 12: the operation audit: one row per audited write operation.
    &["CREATE TABLE audit_ops (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        batch INTEGER,
        kind TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('committed', 'rolled_back', 'failed', 'queued')),
        request_id TEXT,
        caller TEXT,
        client TEXT,
        tables TEXT NOT NULL,
        rows INTEGER NOT NULL,
        error_class TEXT,
        error TEXT,
        duration_us INTEGER NOT NULL,
        queue_id INTEGER
    );
    CREATE INDEX audit_ops_at ON audit_ops (at_ms);"],
    // 13: resource samples: the process's memory, CPU and descriptors, the
    // files' sizes, free disk, queue depth and write rate (see `resources`).
    &["CREATE TABLE resource_samples (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        at TEXT NOT NULL,
        rss_bytes INTEGER,
        cpu_seconds REAL,
        cpu_pct REAL,
        open_fds INTEGER,
        db_bytes INTEGER NOT NULL,
        wal_bytes INTEGER NOT NULL,
        journal_bytes INTEGER NOT NULL,
        disk_free_bytes INTEGER,
        queue_depth INTEGER,
        write_rate REAL
    );
    CREATE INDEX resource_samples_at ON resource_samples (at_ms);"],
    // 14: the operation log and the operation audit keep one row per
    // group commit: the JSON array of its operations (numbered `seq` to
    // `last_seq`) and of their records (ids `first_id` to `last_id`).
    &["ALTER TABLE op_log ADD COLUMN last_seq INTEGER;
    UPDATE op_log SET last_seq = seq, op = '[' || op || ']';
    CREATE TABLE audit_batches (
        first_id INTEGER PRIMARY KEY,
        last_id INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        batch INTEGER,
        records TEXT NOT NULL
    );
    INSERT INTO audit_batches (first_id, last_id, at_ms, batch, records)
        SELECT id, id, at_ms, batch, json_array(json_object(
            'kind', kind, 'status', status, 'request_id', request_id,
            'caller', caller, 'client', client, 'tables', json(tables),
            'rows', rows, 'error_class', error_class, 'error', error,
            'duration_us', duration_us, 'queue_id', queue_id))
        FROM audit_ops;
    DROP TABLE audit_ops;
    CREATE INDEX audit_batches_at ON audit_batches (at_ms);"],
    // 15: the operation log's rows written beside the database's commit,
    // before its outcome is known, are `pending` until it is (see
    // `journal::op_log`).
    &["ALTER TABLE op_log ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX op_log_pending ON op_log (seq) WHERE pending = 1;"],
];
