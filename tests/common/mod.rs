//! Helpers shared by the runtime tests: a runtime on a fresh temp database.
#![allow(dead_code)]

use std::path::PathBuf;

use resilite::{Config, Runtime, Statement, Value};
use tempfile::TempDir;

/// The slowest probe the tests' configs accept before they warn (the
/// most `health.slow_read` and `health.slow_write` allow).
pub const HOST_DISK_SLOW: std::time::Duration = std::time::Duration::from_secs(600);

/// A runtime on `<tempdir>/data/app.db`, with the tempdir kept alive.
pub struct TestRuntime {
    pub rt: Runtime,
    pub dir: TempDir,
}

impl TestRuntime {
    pub fn db_path(&self) -> PathBuf {
        self.rt.config().database.path.clone()
    }
}

pub fn config_in(dir: &TempDir) -> Config {
    let mut config = Config::for_database(dir.path().join("data").join("app.db"));
    // The free space and the speed of the disk the tests run on are not
    // what they check (a CI disk under 10% free, or one stalled for 20 ms,
    // would make a report CRITICAL or WARNING); those rules have their own
    // tests in `tests/health.rs`.
    config.health.min_disk_free_pct = 0.0;
    config.health.slow_read = HOST_DISK_SLOW;
    config.health.slow_write = HOST_DISK_SLOW;
    config
}

pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestRuntime {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_in(&dir);
    edit(&mut config);
    let rt = Runtime::start(config).await.expect("runtime starts");
    TestRuntime { rt, dir }
}

pub async fn start() -> TestRuntime {
    start_with(|_| {}).await
}

/// The writer's handle (`WriterMsg::Handle`): writes sent straight to its
/// connection thread.
pub async fn writer_handle(rt: &Runtime) -> resilite::testing::WriterHandle {
    let writer = rt.writer().await.expect("the writer runs");
    ractor::call!(writer, resilite::testing::WriterMsg::Handle).expect("the writer answers")
}

pub fn insert(table: &str, v: impl Into<Value>) -> Statement {
    Statement::new(format!("INSERT INTO {table}(v) VALUES (?1)"), [v.into()])
}

/// Wait (up to `limit`) until no queue entry is queued or retrying; the
/// counts at that point (still unsettled ones if the limit passed).
pub async fn queue_settled(rt: &Runtime, limit: std::time::Duration) -> resilite::QueueStats {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let stats = rt.queue_stats().await.expect("queue stats");
        if stats.queued + stats.retrying == 0 || std::time::Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Open the database file directly (outside resilite) to check what is on disk.
pub fn open_direct(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("open database directly")
}

/// Wait (up to 10 s) until the application database holds no idempotency
/// key: every key a write claimed was forgotten once it was no longer
/// needed.
pub async fn assert_no_keys_left(db: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let keys: i64 = open_direct(db)
            .query_row("SELECT count(*) FROM _resilite_idempotency", [], |r| {
                r.get(0)
            })
            .unwrap();
        if keys == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{keys} idempotency keys left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Cases of a property test: `default` (sized to keep `cargo test`
/// short), or `PROPTEST_CASES` when set (e.g. `PROPTEST_CASES=100` for
/// the reliability design's 100 iterations per property).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
