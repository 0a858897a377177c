//! Hostile clients against a real `resilite run` process: statements that
//! try to take over the writer's transaction, reach other files, change the
//! connection's settings, shadow tables, run forever, answer too much, or
//! lie through their error messages. Each is refused (or bounded) for its
//! own caller only.
//!
//! One server per family of cases. After every case [`Family::case`]
//! checks the invariants: every row acknowledged to a well-behaved caller
//! (five of them insert concurrently with each hostile request) is on disk
//! exactly once, no request created a file it named, the database passes
//! `PRAGMA integrity_check`, and the server still answers a read and a
//! write within a second.

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Longest wait for any one hostile request: a server that hangs fails the
/// case instead of the whole run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Well-behaved callers inserting next to each hostile request.
const BYSTANDERS: i64 = 5;
/// Inserts each of them makes per case.
const INSERTS_EACH: i64 = 3;

/// One server, its well-behaved callers' acknowledged rows, and a separate
/// directory ("outside") that hostile requests name paths in.
struct Family {
    s: server::Server,
    _dir: TempDir,
    outside: TempDir,
    c: Client,
    acked: Arc<Mutex<Vec<i64>>>,
    next_key: Arc<AtomicI64>,
}

/// A hostile request's answer.
struct Reply {
    status: StatusCode,
    body: Value,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut body = self.body.to_string();
        if body.len() > 2000 {
            let mut end = 2000;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
            body.push_str("...");
        }
        write!(f, "{} {body}", self.status)
    }
}

impl Reply {
    fn class(&self) -> &str {
        self.body["error"]["class"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl Family {
    /// A server with `env` overrides, the well-behaved callers' table
    /// `good(k)` (no key constraint: a duplicate would show) and the
    /// hostile callers' own table `h(v)`.
    async fn start(env: &[(&str, &str)]) -> Family {
        let dir = tempfile::tempdir().unwrap();
        // A short commit delay makes the hostile request and the
        // well-behaved ones share group commits.
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "RESILITE_WRITER_BATCH_WAIT") {
            env.push(("RESILITE_WRITER_BATCH_WAIT", "2ms"));
        }
        let s = server::start_with_env(&dir, "", &env);
        let fam = Family {
            s,
            _dir: dir,
            outside: tempfile::tempdir().unwrap(),
            c: Client::builder().timeout(CLIENT_TIMEOUT).build().unwrap(),
            acked: Arc::default(),
            next_key: Arc::new(AtomicI64::new(1)),
        };
        for sql in ["CREATE TABLE good(k INTEGER NOT NULL)", "CREATE TABLE h(v)"] {
            let r = fam.x(sql).await;
            assert_eq!(r.status, StatusCode::OK, "{sql}: {r:?}");
        }
        fam
    }

    /// A path in the outside directory, as SQL text.
    fn outside(&self, name: &str) -> String {
        self.outside.path().join(name).display().to_string()
    }

    fn data_dir(&self) -> PathBuf {
        self.s.dir.join("data")
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        post_with(&self.c, &self.s.url(path), body).await
    }

    async fn get(&self, path: &str) -> Reply {
        let r = self.c.get(self.s.url(path)).send().await.unwrap();
        let status = r.status();
        let body = r.json().await.unwrap_or(Value::Null);
        Reply { status, body }
    }

    /// `POST /v1/execute`.
    async fn x(&self, sql: &str) -> Reply {
        self.post("/v1/execute", json!({ "sql": sql })).await
    }

    /// `POST /v1/query`.
    async fn q(&self, sql: &str) -> Reply {
        self.post("/v1/query", json!({ "sql": sql })).await
    }

    /// `POST /v1/batch`.
    async fn b(&self, sqls: &[&str]) -> Reply {
        let statements: Vec<Value> = sqls.iter().map(|s| json!({ "sql": s })).collect();
        self.post("/v1/batch", json!({ "statements": statements }))
            .await
    }

    /// A batch that wraps `sql` between two inserts of `marker` into `h`;
    /// after its refusal no row with that marker may exist.
    async fn b_wrapped(&self, sql: &str, marker: &str) -> Reply {
        let ins = format!("INSERT INTO h VALUES ('{}')", marker.replace('\'', "''"));
        self.b(&[&ins, sql, &ins]).await
    }

    /// One well-behaved insert; panics unless it is acknowledged.
    fn good_insert(&self) -> impl Future<Output = i64> + Send + 'static {
        good_insert(
            self.c.clone(),
            self.s.url("/v1/execute"),
            self.acked.clone(),
            self.next_key.clone(),
        )
    }

    /// Run `hostile` while five well-behaved callers insert, then check the
    /// invariants. `name` says which case failed.
    async fn case<T>(&self, name: &str, hostile: impl Future<Output = T>) -> T {
        let bystanders: Vec<_> = (0..BYSTANDERS)
            .map(|_| {
                let insert = (
                    self.c.clone(),
                    self.s.url("/v1/execute"),
                    self.acked.clone(),
                    self.next_key.clone(),
                );
                tokio::spawn(async move {
                    for _ in 0..INSERTS_EACH {
                        good_insert(
                            insert.0.clone(),
                            insert.1.clone(),
                            insert.2.clone(),
                            insert.3.clone(),
                        )
                        .await;
                    }
                })
            })
            .collect();
        let out = hostile.await;
        for b in bystanders {
            if let Err(e) = b.await {
                panic!("case {name}: a well-behaved caller failed: {e}");
            }
        }
        self.check_invariants(name).await;
        out
    }

    /// After each case: every acknowledged row is present exactly once, no
    /// file a request named exists, the database is intact, and the server
    /// answers a read and a write within a second.
    async fn check_invariants(&self, name: &str) {
        let db = self.s.db_path();
        let acked: BTreeSet<i64> = self.acked.lock().unwrap().iter().copied().collect();
        let (counts, integrity) = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("open the database read-only");
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let mut st = conn
                .prepare("SELECT k, count(*) FROM main.good GROUP BY k")
                .unwrap();
            let counts: BTreeMap<i64, i64> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let integrity: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            (counts, integrity)
        })
        .await
        .unwrap();
        let missing: Vec<_> = acked.iter().filter(|k| !counts.contains_key(k)).collect();
        assert!(
            missing.is_empty(),
            "case {name}: acknowledged rows lost: {missing:?}"
        );
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            twice.is_empty(),
            "case {name}: rows present more than once: {twice:?}"
        );
        let unacked: Vec<_> = counts.keys().filter(|k| !acked.contains(k)).collect();
        assert!(
            unacked.is_empty(),
            "case {name}: rows nobody was told were written: {unacked:?}"
        );
        assert_eq!(integrity, "ok", "case {name}: integrity_check");

        let outside: Vec<_> = std::fs::read_dir(self.outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            outside.is_empty(),
            "case {name}: a request created files outside the server's directory: {outside:?}"
        );
        let strays = stray_files(&self.data_dir());
        assert!(
            strays.is_empty(),
            "case {name}: unexpected files in the data directory: {strays:?}"
        );

        let started = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(1), self.q("SELECT 1")).await;
        let read = read.unwrap_or_else(|_| panic!("case {name}: SELECT 1 took over 1 s"));
        assert_eq!(read.status, StatusCode::OK, "case {name}: {read:?}");
        assert_eq!(read.body["rows"], json!([[1]]), "case {name}");
        tokio::time::timeout(Duration::from_secs(1), self.good_insert())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "case {name}: a write took over 1 s ({:?} since the read began)",
                    started.elapsed()
                )
            });
    }

    /// Rows of the hostile callers' table `h` with value `marker`.
    async fn h_rows(&self, marker: &str) -> i64 {
        let r = self
            .post(
                "/v1/query",
                json!({"sql": "SELECT count(*) FROM h WHERE v = ?1", "params": [marker]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["rows"][0][0].as_i64().unwrap()
    }

    /// `sql` refused through execute, query and a wrapped batch, with the
    /// batch's other statements not applied; each send is its own case.
    async fn refused_everywhere(&self, sql: &str, needle: &str) {
        let r = self.case(&format!("Q {sql}"), self.q(sql)).await;
        assert_forbidden(&format!("Q {sql}"), &r, needle);
        self.refused_in_writes(sql, needle).await;
    }

    /// `sql` refused through execute and a wrapped batch (see
    /// [`Family::refused_everywhere`]).
    async fn refused_in_writes(&self, sql: &str, needle: &str) {
        let r = self.case(&format!("X {sql}"), self.x(sql)).await;
        assert_forbidden(&format!("X {sql}"), &r, needle);
        let marker = format!("batch around {sql}");
        let r = self
            .case(&format!("B {sql}"), self.b_wrapped(sql, &marker))
            .await;
        assert_forbidden(&format!("B {sql}"), &r, needle);
        assert_eq!(
            self.h_rows(&marker).await,
            0,
            "B {sql}: a refused batch applied part of itself"
        );
    }

    /// The server process's resident memory, in bytes.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.s.child.id()))
            .expect("read /proc/<pid>/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kb * 1024
    }
}

async fn post_with(c: &Client, url: &str, body: Value) -> Reply {
    let r = match c.post(url).json(&body).send().await {
        Ok(r) => r,
        Err(e) => panic!("{body}: no answer: {e}"),
    };
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

async fn good_insert(
    c: Client,
    url: String,
    acked: Arc<Mutex<Vec<i64>>>,
    next_key: Arc<AtomicI64>,
) -> i64 {
    let k = next_key.fetch_add(1, Ordering::Relaxed);
    let r = post_with(
        &c,
        &url,
        json!({"sql": "INSERT INTO good(k) VALUES (?1)", "params": [k]}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a well-behaved insert of {k} was not acknowledged: {r:?}"
    );
    acked.lock().unwrap().push(k);
    k
}

/// Files in the data directory other than the database, its WAL and
/// shared memory, and the journal's files.
fn stray_files(data: &Path) -> Vec<String> {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["app.db", "app.db-wal", "app.db-shm"].contains(&n.as_str())
                && !n.starts_with("app.db.journal")
        })
        .collect()
}

fn assert_forbidden(case: &str, r: &Reply, needle: &str) {
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "{case}: expected 403 forbidden, got {r:?}"
    );
    assert_eq!(r.class(), "forbidden", "{case}: {r:?}");
    let message = r.message().to_lowercase();
    let needle = needle.to_lowercase();
    // "PRAGMA <name>": both words, whatever is between them (a schema name).
    let named = match needle.strip_prefix("pragma ") {
        Some(name) => message.contains("pragma") && message.contains(name),
        None => message.contains(&needle),
    };
    assert!(named, "{case}: the message should name {needle:?}: {r:?}");
}

fn assert_class(case: &str, r: &Reply, status: StatusCode, class: &str) {
    assert_eq!(r.status, status, "{case}: {r:?}");
    assert_eq!(r.class(), class, "{case}: {r:?}");
    assert!(!r.message().is_empty(), "{case}: {r:?}");
}

const TRANSACTION_CONTROL: &[&str] = &[
    "BEGIN",
    "BEGIN DEFERRED",
    "BEGIN IMMEDIATE",
    "BEGIN EXCLUSIVE",
    "BEGIN TRANSACTION",
    "  begin ;",
    "COMMIT",
    "COMMIT TRANSACTION",
    "END",
    "END TRANSACTION",
    "/* c */ end",
    "ROLLBACK",
    "ROLLBACK TRANSACTION",
    "-- c\nROLLBACK",
    "SAVEPOINT sp",
    "savepoint \"quoted sp\"",
    "RELEASE sp",
    "RELEASE SAVEPOINT sp",
    "ROLLBACK TO sp",
    "ROLLBACK TRANSACTION TO SAVEPOINT sp",
];

/// Callers send statements, never transactions: every form of BEGIN,
/// COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE and ROLLBACK TO is refused
/// (403 `forbidden`, "transaction control") through execute, batch and
/// query, a batch holding one applies nothing, and a hostile
/// "open; others write; undo" sequence never takes other callers' writes
/// with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transaction_control_is_refused_everywhere() {
    let f = Family::start(&[]).await;
    for sql in TRANSACTION_CONTROL {
        f.refused_everywhere(sql, "transaction control").await;
    }
    // Open something, let five other callers write, then try to undo it.
    for (open, close) in [
        ("SAVEPOINT sp", "ROLLBACK TO sp"),
        ("SAVEPOINT sp", "RELEASE sp"),
        ("BEGIN", "ROLLBACK"),
        ("BEGIN EXCLUSIVE", "COMMIT"),
        ("BEGIN IMMEDIATE", "END TRANSACTION"),
    ] {
        let case = format!("{open}; five other callers' inserts; {close}");
        let (first, second) = f
            .case(&case, async {
                let first = f.x(open).await;
                let others: Vec<_> = (0..5).map(|_| tokio::spawn(f.good_insert())).collect();
                for o in others {
                    o.await.unwrap();
                }
                (first, f.x(close).await)
            })
            .await;
        assert_forbidden(&case, &first, "transaction control");
        assert_forbidden(&case, &second, "transaction control");
    }
    // Savepoints inside a batch.
    for stmts in [
        &[
            "SAVEPOINT a",
            "INSERT INTO h VALUES ('sp in batch')",
            "RELEASE a",
        ][..],
        &["INSERT INTO h VALUES ('sp in batch')", "ROLLBACK TO x"][..],
        &["INSERT INTO h VALUES ('sp in batch')", "COMMIT", "BEGIN"][..],
        &["INSERT INTO h VALUES ('sp in batch')", "END TRANSACTION"][..],
    ] {
        let case = format!("batch {stmts:?}");
        let r = f.case(&case, f.b(stmts)).await;
        assert_forbidden(&case, &r, "transaction control");
        assert_eq!(f.h_rows("sp in batch").await, 0, "{case} applied a part");
    }
}

/// A lone ROLLBACK is refused as transaction control (403), not reported as
/// SQLite's "cannot rollback - no transaction is active" or anything else
/// that leaks the writer's own transaction state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lone_rollback_is_forbidden_not_a_transaction_error() {
    let f = Family::start(&[]).await;
    for sql in ["ROLLBACK", "COMMIT", "END"] {
        let r = f.case(&format!("lone {sql}"), f.x(sql)).await;
        assert_forbidden(sql, &r, "transaction control");
        assert!(
            !r.message().contains("no transaction is active")
                && !r.body.to_string().contains("no transaction is active"),
            "{sql}: {r:?}"
        );
    }
}

/// ATTACH and DETACH are refused (403 `forbidden` naming them) through
/// execute, batch and query, and an ATTACH never creates the file it names,
/// outside or inside the server's data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_attach_and_detach_are_refused_and_create_no_file() {
    let f = Family::start(&[]).await;
    let inside = f.data_dir().join("evil.db").display().to_string();
    let attaches = [
        format!("ATTACH '{}' AS a", f.outside("a.db")),
        format!("ATTACH DATABASE '{}' AS a2", f.outside("a2.db")),
        format!("attach '{}' as a3", f.outside("a3.db")),
        format!("ATTACH 'file:{}?mode=rwc' AS u", f.outside("uri.db")),
        format!("ATTACH '{inside}' AS evil"),
        "ATTACH ':memory:' AS m".to_string(),
        "ATTACH '' AS anon".to_string(),
    ];
    for sql in &attaches {
        f.refused_everywhere(sql, "ATTACH").await;
    }
    for sql in [
        "DETACH main",
        "DETACH DATABASE temp",
        "DETACH a",
        "detach m",
    ] {
        f.refused_everywhere(sql, "DETACH").await;
    }
    // Attach then use it in one batch: nothing of it applied, no file.
    let stmts = [
        format!("ATTACH '{}' AS x", f.outside("x.db")),
        "CREATE TABLE x.stolen AS SELECT * FROM main.good".to_string(),
        "INSERT INTO h VALUES ('attach batch')".to_string(),
    ];
    let refs: Vec<&str> = stmts.iter().map(String::as_str).collect();
    let r = f.case("batch ATTACH + CREATE", f.b(&refs)).await;
    assert_forbidden("batch ATTACH + CREATE", &r, "ATTACH");
    assert_eq!(f.h_rows("attach batch").await, 0);
}

/// A statement naming a file that is not a database (ATTACH '/etc/passwd')
/// is the caller's mistake, not a sign the database is damaged: it is never
/// class `corruption`, never opens the `database` breaker, and writes keep
/// being acknowledged after many of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_attach_of_a_non_database_never_opens_the_breaker() {
    let f = Family::start(&[]).await;
    for i in 0..8 {
        let case = format!("ATTACH /etc/passwd #{i}");
        let r = f.case(&case, f.x("ATTACH '/etc/passwd' AS p")).await;
        assert_ne!(r.class(), "corruption", "{case}: {r:?}");
        assert_forbidden(&case, &r, "ATTACH");
        let ready = f.get("/ready").await;
        assert_eq!(ready.status, StatusCode::OK, "{case}: {ready:?}");
    }
    let r = f.q("ATTACH '/etc/passwd' AS p").await;
    assert_ne!(r.class(), "corruption", "Q ATTACH /etc/passwd: {r:?}");
    let health = f.get("/health/detailed").await;
    let database = health.body["breakers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["name"] == "database");
    if let Some(b) = database {
        assert_eq!(b["state"], "closed", "{health:?}");
    }
}

/// VACUUM (which would commit the writer's transaction or block everyone)
/// and `VACUUM INTO '<path>'` (which writes a copy of the data anywhere)
/// are refused through execute, batch and query, and no copy is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_vacuum_and_vacuum_into_are_refused_and_write_no_copy() {
    let f = Family::start(&[]).await;
    let inside = f.data_dir().join("copy.db").display().to_string();
    let statements = [
        "VACUUM".to_string(),
        "vacuum main".to_string(),
        format!("VACUUM INTO '{}'", f.outside("v.db")),
        format!("VACUUM main INTO '{}'", f.outside("v2.db")),
        format!("VACUUM INTO 'file:{}?mode=rwc'", f.outside("v3.db")),
        format!("VACUUM INTO '{inside}'"),
    ];
    for sql in &statements {
        f.refused_everywhere(sql, "VACUUM").await;
    }
    let into = format!("VACUUM INTO '{}'", f.outside("batch.db"));
    let r = f
        .case(
            "VACUUM INTO inside a batch",
            f.b(&["INSERT INTO h VALUES ('vacuum batch')", &into]),
        )
        .await;
    assert_forbidden("VACUUM INTO inside a batch", &r, "VACUUM");
    assert_eq!(f.h_rows("vacuum batch").await, 0);
}

/// Any PRAGMA outside the read-only allow-list is refused (403 naming
/// "PRAGMA <name>") through execute, batch and query, and none of them
/// changes the database (journal mode, user_version) or the connections;
/// allowed pragmas and ordinary DDL keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pragmas_outside_the_allow_list_are_refused() {
    let f = Family::start(&[]).await;
    let temp_dir = format!("PRAGMA temp_store_directory='{}'", f.outside(""));
    let pragmas: Vec<(String, &str)> = vec![
        ("PRAGMA query_only=1".into(), "query_only"),
        ("PRAGMA locking_mode=EXCLUSIVE".into(), "locking_mode"),
        ("PRAGMA writable_schema=ON".into(), "writable_schema"),
        ("PRAGMA main.writable_schema=1".into(), "writable_schema"),
        ("PRAGMA journal_mode=DELETE".into(), "journal_mode"),
        ("PRAGMA main.journal_mode=OFF".into(), "journal_mode"),
        ("PRAGMA user_version=7".into(), "user_version"),
        ("PRAGMA schema_version=99".into(), "schema_version"),
        ("PRAGMA foreign_keys=OFF".into(), "foreign_keys"),
        ("PRAGMA synchronous=OFF".into(), "synchronous"),
        ("pragma Synchronous = 0".into(), "synchronous"),
        (temp_dir, "temp_store_directory"),
        (
            "PRAGMA ignore_check_constraints=ON".into(),
            "ignore_check_constraints",
        ),
        ("PRAGMA recursive_triggers=ON".into(), "recursive_triggers"),
        ("PRAGMA cache_size=-2000000".into(), "cache_size"),
        ("PRAGMA mmap_size=1073741824".into(), "mmap_size"),
        ("PRAGMA busy_timeout=0".into(), "busy_timeout"),
        ("PRAGMA wal_checkpoint(TRUNCATE)".into(), "wal_checkpoint"),
        ("PRAGMA trusted_schema=ON".into(), "trusted_schema"),
    ];
    for (sql, name) in &pragmas {
        f.refused_everywhere(sql, &format!("PRAGMA {name}")).await;
    }

    // Nothing changed on disk.
    let conn = rusqlite::Connection::open_with_flags(
        f.s.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 0);
    drop(conn);

    // The read-only allow-list answers through query.
    for sql in [
        "PRAGMA table_info(good)",
        "PRAGMA index_list(good)",
        "PRAGMA foreign_key_check",
        "SELECT * FROM pragma_table_info('good')",
        "PRAGMA user_version",
    ] {
        let r = f.case(&format!("allowed Q {sql}"), f.q(sql)).await;
        assert_eq!(r.status, StatusCode::OK, "allowed {sql}: {r:?}");
    }
    let r = f.q("SELECT name FROM pragma_table_info('good')").await;
    assert_eq!(r.body["rows"], json!([["k"]]), "{r:?}");
    let r = f.q("PRAGMA user_version").await;
    assert_eq!(r.body["rows"], json!([[0]]), "{r:?}");

    // Ordinary DDL in main keeps working.
    for sql in [
        "CREATE TABLE d1(x INTEGER PRIMARY KEY, y TEXT)",
        "CREATE INDEX d1_y ON d1(y)",
        "CREATE VIEW d1_v AS SELECT y FROM d1",
        "CREATE TRIGGER d1_t AFTER INSERT ON d1 BEGIN INSERT INTO h VALUES ('trigger'); END",
        "INSERT INTO d1(y) VALUES ('a')",
        "DROP TRIGGER d1_t",
        "DROP VIEW d1_v",
        "DROP INDEX d1_y",
        "DROP TABLE d1",
    ] {
        let r = f.case(&format!("allowed X {sql}"), f.x(sql)).await;
        assert_eq!(r.status, StatusCode::OK, "allowed {sql}: {r:?}");
    }
    assert_eq!(f.h_rows("trigger").await, 1);
}

/// TEMP tables, views and triggers are refused (403 naming TEMP) through
/// execute and batch, and not run by query: on the shared writer connection a TEMP table
/// named like a real one would swallow every later caller's inserts, and a
/// TEMP trigger would run on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_temp_objects_are_refused_and_cannot_shadow_a_table() {
    let f = Family::start(&[]).await;
    for sql in [
        "CREATE TEMP TABLE good(k INTEGER)",
        "CREATE TEMPORARY TABLE good(k INTEGER)",
        "CREATE TABLE temp.good(k INTEGER)",
        "CREATE TEMP TABLE copy AS SELECT * FROM good",
        "CREATE TEMP VIEW v AS SELECT 1",
        "CREATE TEMP TRIGGER eat AFTER INSERT ON main.good BEGIN DELETE FROM main.good; END",
        "CREATE TEMPORARY TRIGGER eat2 BEFORE INSERT ON main.good BEGIN SELECT RAISE(IGNORE); END",
    ] {
        f.refused_in_writes(sql, "TEMP").await;
        // The read pool refuses it too: by the gate, or as a query that writes.
        let r = f.case(&format!("Q {sql}"), f.q(sql)).await;
        if r.status == StatusCode::FORBIDDEN {
            assert_forbidden(&format!("Q {sql}"), &r, "TEMP");
        } else {
            assert_class(
                &format!("Q {sql}"),
                &r,
                StatusCode::BAD_REQUEST,
                "bad_input",
            );
        }
    }
    // Other callers' inserts went to the real table (checked above); it is
    // the only `good` the writer sees.
    let r = f.q("SELECT count(*) FROM temp.sqlite_master").await;
    if r.status == StatusCode::OK {
        assert_eq!(r.body["rows"], json!([[0]]), "{r:?}");
    }
}

/// Every write statement and every query has a time bound: past
/// `writer.statement_timeout` / `readers.query_timeout` it is interrupted
/// and answered 408 `timeout`, an interrupted write (alone or in a batch)
/// applies nothing, and the writes of the callers waiting behind it are
/// acknowledged and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_long_statements_and_queries_are_interrupted() {
    let f = Family::start(&[
        ("RESILITE_WRITER_STATEMENT_TIMEOUT", "500ms"),
        ("RESILITE_READERS_QUERY_TIMEOUT", "500ms"),
    ])
    .await;
    let long_insert = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) \
                       INSERT INTO h SELECT x FROM c LIMIT 20000000";
    let started = Instant::now();
    let r = f.case("X long insert", f.x(long_insert)).await;
    assert_class("X long insert", &r, StatusCode::REQUEST_TIMEOUT, "timeout");
    assert!(started.elapsed() < Duration::from_secs(10), "{started:?}");
    let r = f.q("SELECT count(*) FROM h").await;
    assert_eq!(
        r.body["rows"],
        json!([[0]]),
        "the interrupted insert applied rows: {r:?}"
    );

    let r = f
        .case(
            "B insert + long insert",
            f.b(&["INSERT INTO h VALUES ('before the long one')", long_insert]),
        )
        .await;
    assert_class("B long insert", &r, StatusCode::REQUEST_TIMEOUT, "timeout");
    let r = f.q("SELECT count(*) FROM h").await;
    assert_eq!(
        r.body["rows"],
        json!([[0]]),
        "the interrupted batch applied rows: {r:?}"
    );

    let long_update =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 1000000000) \
                       UPDATE h SET v = (SELECT count(*) FROM c)";
    f.x("INSERT INTO h VALUES ('kept')").await;
    let r = f.case("X long update", f.x(long_update)).await;
    assert_class("X long update", &r, StatusCode::REQUEST_TIMEOUT, "timeout");
    assert_eq!(
        f.h_rows("kept").await,
        1,
        "the interrupted update changed a row"
    );

    for sql in [
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 1000000000) SELECT count(*) FROM c",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000) SELECT count(*) FROM c a, c b",
    ] {
        let started = Instant::now();
        let r = f.case(&format!("Q {sql}"), f.q(sql)).await;
        assert_class(sql, &r, StatusCode::REQUEST_TIMEOUT, "timeout");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sql}: answered after {:?}",
            started.elapsed()
        );
    }
}

/// A query whose HTTP client went away is interrupted: after four clients
/// (as many as the read pool has connections) gave up on endless queries
/// under a long `readers.query_timeout`, `SELECT 1` answers within about a
/// second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_abandoned_queries_do_not_hold_the_read_pool() {
    let f = Family::start(&[
        ("RESILITE_READERS_QUERY_TIMEOUT", "10m"),
        ("RESILITE_READERS_POOL_SIZE", "4"),
    ])
    .await;
    let impatient = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 1000000000) SELECT count(*) FROM c";
    let leavers: Vec<_> = (0..4)
        .map(|_| {
            let (c, url) = (impatient.clone(), f.s.url("/v1/query"));
            tokio::spawn(async move {
                let r = c.post(url).json(&json!({ "sql": sql })).send().await;
                assert!(r.is_err(), "the endless query answered: {r:?}");
            })
        })
        .collect();
    for l in leavers {
        l.await.unwrap();
    }
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(1500), f.q("SELECT 1"))
        .await
        .unwrap_or_else(|_| panic!("SELECT 1 waited behind abandoned queries for 1.5 s"));
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    f.case("after abandoned queries", async {}).await;
}

/// Every answer has a size bound: a query whose answer would exceed
/// `readers.max_response_bytes` fails 400 `bad_input` naming the key and
/// how to page, a single value larger than it (SQLITE_LIMIT_LENGTH) fails
/// before it is built, and the server's memory stays small throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_oversized_answers_are_refused_and_memory_stays_small() {
    let f = Family::start(&[("RESILITE_READERS_MAX_RESPONSE_BYTES", "1048576")]).await;
    let rss_limit = 300 * 1024 * 1024;

    let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 5000) \
                SELECT x, hex(zeroblob(300)) FROM c";
    let r = f.case("Q 3 MB answer", f.q(many)).await;
    assert_class("Q 3 MB answer", &r, StatusCode::BAD_REQUEST, "bad_input");
    assert!(
        r.message().contains("readers.max_response_bytes"),
        "the message names the key: {r:?}"
    );
    let m = r.message().to_lowercase();
    assert!(
        m.contains("limit") || m.contains("page") || m.contains("offset"),
        "the message says how to page: {r:?}"
    );
    // Under the bound still answers.
    let r = f
        .q(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 500) \
            SELECT x, hex(zeroblob(300)) FROM c",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "300 KB answer: {:?}", r.status);

    for sql in [
        "SELECT zeroblob(300000000)",
        "SELECT randomblob(2000000)",
        "SELECT length(zeroblob(300000000) || 'x')",
    ] {
        let r = f.case(&format!("Q {sql}"), f.q(sql)).await;
        assert_class(sql, &r, StatusCode::BAD_REQUEST, "bad_input");
        let rss = f.rss_bytes();
        assert!(rss < rss_limit, "{sql}: server RSS {rss} bytes");
    }
    for sql in [
        "INSERT INTO h VALUES (zeroblob(300000000))",
        "INSERT INTO h VALUES (randomblob(2000000))",
    ] {
        let r = f.case(&format!("X {sql}"), f.x(sql)).await;
        assert_class(sql, &r, StatusCode::BAD_REQUEST, "bad_input");
        let rss = f.rss_bytes();
        assert!(rss < rss_limit, "{sql}: server RSS {rss} bytes");
    }
    let r = f.q("SELECT count(*) FROM h").await;
    assert_eq!(r.body["rows"], json!([[0]]), "{r:?}");
}

/// Errors tell the truth: SQL that is only comments or whitespace is
/// `bad_input` (not an internal error); a DDL statement reports 0 rows
/// affected and rowid 0 even right after another caller's insert; an error
/// about 900 KB of SQL is answered in under 16 KB.
///
/// Property 8: User-Friendly Error Messages. Odd input is answered with
/// the class that fits it and a bounded body, never a misleading one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_errors_tell_the_truth() {
    let f = Family::start(&[]).await;
    for sql in [
        "-- nothing",
        "/* x */",
        "   \n\t ",
        ";",
        "-- a\n/* b */ ;",
        "",
    ] {
        let case = format!("X {sql:?}");
        let r = f.case(&case, f.x(sql)).await;
        assert_class(&case, &r, StatusCode::BAD_REQUEST, "bad_input");
        let case = format!("Q {sql:?}");
        let r = f.case(&case, f.q(sql)).await;
        assert_class(&case, &r, StatusCode::BAD_REQUEST, "bad_input");
        let case = format!("B {sql:?}");
        let r = f
            .case(&case, f.b(&["INSERT INTO h VALUES ('empty')", sql]))
            .await;
        assert_class(&case, &r, StatusCode::BAD_REQUEST, "bad_input");
        assert_eq!(f.h_rows("empty").await, 0, "{case} applied a part");
    }

    for (i, ddl) in [
        "CREATE TABLE ddl_a(x)",
        "CREATE INDEX good_k ON good(k)",
        "DROP INDEX good_k",
        "CREATE TABLE ddl_b AS SELECT 1 AS x WHERE 0",
    ]
    .into_iter()
    .enumerate()
    {
        let r = f
            .case(&format!("DDL {ddl}"), async {
                let k = f.good_insert().await;
                assert!(k > 0);
                f.x(ddl).await
            })
            .await;
        assert_eq!(r.status, StatusCode::OK, "{ddl}: {r:?}");
        assert_eq!(
            r.body,
            json!({"rows_affected": 0, "last_insert_rowid": 0}),
            "{ddl} (#{i}) reports another statement's effect"
        );
    }
    f.good_insert().await;
    let r = f.b(&["CREATE TABLE ddl_c(x)"]).await;
    assert_eq!(
        r.body["results"][0],
        json!({"rows_affected": 0, "last_insert_rowid": 0}),
        "{r:?}"
    );

    let filler = "a".repeat(900 * 1024);
    let big = format!("SELECT nope FROM good WHERE k = '{filler}'");
    for (path, body) in [
        ("/v1/execute", json!({ "sql": big })),
        ("/v1/query", json!({ "sql": big })),
        ("/v1/batch", json!({ "statements": [{ "sql": big }] })),
    ] {
        let case = format!("900 KB bad SQL to {path}");
        let r = f.case(&case, f.post(path, body)).await;
        assert_class(&case, &r, StatusCode::BAD_REQUEST, "sql");
        let len = r.body.to_string().len();
        assert!(len < 16 * 1024, "{case}: a {len}-byte error body");
    }
}

/// A caller cannot write lines into the server's log: SQL with newlines in
/// a comment, sent as failing queries, writes and comment-only statements,
/// never puts a line of its choosing at the start of a log line.
///
/// Property 9: Detailed Technical Logging. The caller's SQL reaches the
/// log only escaped, so the technical detail logged can be trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sql_cannot_forge_log_lines() {
    let f = Family::start(&[("RESILITE_LOG", "debug")]).await;
    const FORGED: &str = "2026-01-01T00:00:00Z ERROR forged line";
    let payloads = [
        format!("SELECT nope /*\n{FORGED}\n*/"),
        format!("INSERT INTO nowhere VALUES (1) /*\n{FORGED}\n*/"),
        format!("/*\n{FORGED}\n*/"),
        format!("-- x\n{FORGED}\n"),
        format!("ATTACH '/etc/passwd' AS p /*\r\n{FORGED}\r\n*/"),
    ];
    for sql in &payloads {
        f.case(&format!("Q {sql:?}"), f.q(sql)).await;
        f.case(&format!("X {sql:?}"), f.x(sql)).await;
        f.case(&format!("B {sql:?}"), f.b(&[sql])).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(f.s.dir.join("stderr.log")).unwrap();
    let forged: Vec<&str> = log
        .split(['\n', '\r'])
        .filter(|l| l.trim_start().starts_with(FORGED))
        .collect();
    assert!(
        forged.is_empty(),
        "a request forged {} log line(s); log:\n{log}",
        forged.len()
    );
}

/// A refused statement in a durable write is answered 403 at once and is
/// never queued: retrying it could not help, so neither the retry queue nor
/// the dead-letter queue gets an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_refused_durable_writes_are_not_queued() {
    let f = Family::start(&[]).await;
    let vacuum_into = format!("VACUUM INTO '{}'", f.outside("d.db"));
    let attach = format!("ATTACH '{}' AS d", f.outside("d2.db"));
    for (sql, needle) in [
        ("BEGIN", "transaction control"),
        ("ROLLBACK", "transaction control"),
        (attach.as_str(), "ATTACH"),
        (vacuum_into.as_str(), "VACUUM"),
        ("PRAGMA journal_mode=DELETE", "PRAGMA journal_mode"),
        ("CREATE TEMP TABLE good(k)", "TEMP"),
    ] {
        let case = format!("durable X {sql}");
        let r = f
            .case(
                &case,
                f.post("/v1/execute", json!({"sql": sql, "durable": true})),
            )
            .await;
        assert_forbidden(&case, &r, needle);
        let case = format!("durable B {sql}");
        let r = f
            .case(
                &case,
                f.post(
                    "/v1/batch",
                    json!({"statements": [{"sql": "INSERT INTO h VALUES ('durable')"}, {"sql": sql}], "durable": true}),
                ),
            )
            .await;
        assert_forbidden(&case, &r, needle);
        assert_eq!(f.h_rows("durable").await, 0, "{case} applied a part");
    }
    let dlq = f.get("/v1/dlq?all=true").await;
    assert_eq!(dlq.status, StatusCode::OK, "{dlq:?}");
    assert_eq!(dlq.body["entries"], json!([]), "{dlq:?}");
    let health = f.get("/health/detailed").await;
    let queue = &health.body["queue"];
    for field in ["queued", "retrying", "dead", "succeeded"] {
        assert_eq!(queue[field], 0, "queue {field}: {health:?}");
    }
}

/// Many hostile clients at once, each statement of every family sent
/// concurrently with well-behaved writers: each hostile one is refused and
/// every acknowledged write is kept exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_all_at_once_change_nothing_for_the_others() {
    let f = Family::start(&[]).await;
    let mut sqls: Vec<(String, &str)> = TRANSACTION_CONTROL
        .iter()
        .map(|s| (s.to_string(), "transaction control"))
        .collect();
    sqls.extend([
        (format!("ATTACH '{}' AS a", f.outside("all.db")), "ATTACH"),
        ("DETACH main".to_string(), "DETACH"),
        ("VACUUM".to_string(), "VACUUM"),
        (format!("VACUUM INTO '{}'", f.outside("all2.db")), "VACUUM"),
        (
            "PRAGMA writable_schema=ON".to_string(),
            "PRAGMA writable_schema",
        ),
        ("PRAGMA query_only=1".to_string(), "PRAGMA query_only"),
        (
            "PRAGMA locking_mode=EXCLUSIVE".to_string(),
            "PRAGMA locking_mode",
        ),
        ("CREATE TEMP TABLE good(k)".to_string(), "TEMP"),
    ]);
    let replies = f
        .case("all at once", async {
            let sends = sqls.iter().flat_map(|(sql, _)| {
                [
                    f.post("/v1/execute", json!({ "sql": sql })),
                    f.post("/v1/query", json!({ "sql": sql })),
                    f.post("/v1/batch", json!({"statements": [{"sql": "INSERT INTO h VALUES ('all')"}, {"sql": sql}]})),
                ]
            });
            let goods: Vec<_> = (0..20).map(|_| tokio::spawn(f.good_insert())).collect();
            let replies = futures_join_all(sends).await;
            for g in goods {
                g.await.unwrap();
            }
            replies
        })
        .await;
    for (i, r) in replies.iter().enumerate() {
        let (sql, needle) = &sqls[i / 3];
        assert_forbidden(&format!("{sql} (send {})", i % 3), r, needle);
    }
    assert_eq!(f.h_rows("all").await, 0);
}

/// Run futures concurrently on this task, answers in order.
async fn futures_join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut futs: Vec<_> = futs.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().map(Option::unwrap).collect()
}

/// Undoes `chattr +i` when dropped, so the temp dir can be removed even
/// when the test fails.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Option<Immutable> {
        let out = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Immutable(path.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "skipped: chattr +i failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: chattr is unavailable: {e}");
                None
            }
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// Health sees what writers see: when the database file cannot be written
/// (`chattr +i`), `/health` turns CRITICAL (503) within a few health
/// intervals and `/ready` answers 503; once it can be written again both
/// recover, and no acknowledged write was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_immutable_database_file_is_seen_by_health() {
    let f = Family::start(&[("RESILITE_HEALTH_INTERVAL", "200ms")]).await;
    f.case("before chattr", async {}).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = f.get("/health").await;
        if health.status == StatusCode::OK && health.body["status"] != "PENDING" {
            break;
        }
        assert!(Instant::now() < deadline, "{health:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(guard) = Immutable::set(&f.s.db_path()) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let health = f.get("/health").await;
        let ready = f.get("/ready").await;
        if health.status == StatusCode::SERVICE_UNAVAILABLE
            && health.body["status"] == "CRITICAL"
            && ready.status == StatusCode::SERVICE_UNAVAILABLE
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an immutable database file is not seen: /health {health:?}, /ready {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(guard);
    // Generous: a `database` breaker opened meanwhile stays open 30 s.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let health = f.get("/health").await;
        let ready = f.get("/ready").await;
        if health.status == StatusCode::OK && ready.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after chattr -i: /health {health:?}, /ready {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.case("after chattr -i", async {}).await;
}
