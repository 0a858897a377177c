//! `cargo bench --bench degrade` (`DEGRADE_FAULT_SECS=2` for a quick run;
//! `DEGRADE_LOG=warn` shows resilite's log on stderr).
//!
//! The runtime during and after an outage, in one run: a `Runtime` with
//! the bundled defaults (`config.toml`: `busy_timeout` 5 s, `open_for`
//! 30 s, `retry.durable_answer_within` 1 s, ...) under a steady write load,
//! while another process holds the database's write lock for T seconds
//! (`DEGRADE_FAULT_SECS`, default `2,10`):
//! - 32 tasks of durable single-row inserts (`rt.execute_durable`) and 32
//!   of plain ones (`rt.execute`), each task a write every 5 to 10 ms, each
//!   write a value of its own, every answer recorded;
//! - the lock: the `sqlite3` shell (`BEGIN EXCLUSIVE`, `COMMIT` after T
//!   seconds), or python3's `sqlite3` module when the shell is missing
//!   (`DEGRADE_LOCKER=python3` forces it). The holder keeps its
//!   connection open after the COMMIT until the case's figures are taken,
//!   then exits, and the bench checks the WAL and `-shm` are still there
//!   and the table still readable by a new connection (see
//!   docs/benchmarks.md: its exit has deleted them);
//! - answer times before, during and after the fault, the database
//!   breaker's states and the retry queue's, how long after the fault the
//!   retry queue is drained (empty, and every acknowledged durable value
//!   in the table), and whether any acknowledged durable write was lost or
//!   applied twice (the value column has no UNIQUE constraint, so a
//!   duplicate shows).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resilite::{
    BreakerState, Config, Durable, EnqueueOptions, ErrorClass, Operation, Runtime, Statement, Value,
};
use rusqlite::Connection;

const CREATE: &str =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, kind TEXT NOT NULL)";
const INSERT: &str = "INSERT INTO t(v, kind) VALUES (?1, ?2)";
const DURABLE_TASKS: usize = 32;
const PLAIN_TASKS: usize = 32;
/// Load at least this long after the fault.
const AFTER: Duration = Duration::from_secs(5);
/// A failure answered faster than this failed fast.
const FAIL_FAST: Duration = Duration::from_millis(5);
/// Target: the queue drained this soon after the fault ends.
const DRAIN_TARGET: Duration = Duration::from_secs(2);
/// Target: durable p99 at most `durable_answer_within` plus this (the
/// journal commit of the queued copy, scheduling).
const ANSWER_MARGIN: Duration = Duration::from_millis(100);
/// Longest wait for the queue to settle after the load stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

fn fault_secs() -> Vec<f64> {
    std::env::var("DEGRADE_FAULT_SECS")
        .unwrap_or_else(|_| "2,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// Load before the fault (`DEGRADE_BEFORE_SECS`, default 3): a whole
/// number of seconds starts the fault in step with the retry queue's
/// 1 s poll, which started with the runtime.
fn before() -> Duration {
    let s: f64 = std::env::var("DEGRADE_BEFORE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Seconds from `origin` to `t`, signed.
fn rel(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        (t - origin).as_secs_f64()
    } else {
        -(origin - t).as_secs_f64()
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

// ---------------------------------------------------------------- the lock

/// Another process holding the database's write lock.
#[derive(Clone, Copy, PartialEq)]
enum Locker {
    Shell,
    Python,
}

const PY_LOCKER: &str = "import sqlite3, sys\n\
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
c.execute('BEGIN EXCLUSIVE')\n\
print('locked', flush=True)\n\
sys.stdin.readline()\n\
c.execute('COMMIT')\n\
print('released', flush=True)\n\
sys.stdin.readline()\n";

impl Locker {
    fn pick() -> Locker {
        let forced = std::env::var("DEGRADE_LOCKER").unwrap_or_default();
        let shell = Command::new("sqlite3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if shell && forced != "python3" {
            Locker::Shell
        } else {
            Locker::Python
        }
    }

    fn describe(self) -> String {
        match self {
            Locker::Shell => {
                let version = Command::new("sqlite3")
                    .arg("--version")
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                format!(
                    "the sqlite3 shell {} (BEGIN EXCLUSIVE, COMMIT after T; its connection open until the case ends)",
                    version.split_whitespace().next().unwrap_or("?")
                )
            }
            Locker::Python => "python3's sqlite3 module (BEGIN EXCLUSIVE, COMMIT after T; its connection open until the case ends)".into(),
        }
    }

    fn spawn(self, db: &Path) -> (Child, ChildStdin, BufReader<ChildStdout>) {
        let mut cmd = match self {
            Locker::Shell => {
                let mut c = Command::new("sqlite3");
                c.arg("-batch").arg(db);
                c
            }
            Locker::Python => {
                let mut c = Command::new("python3");
                c.arg("-c").arg(PY_LOCKER).arg(db);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the lock holder");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        (child, stdin, stdout)
    }

    /// Hold the write lock for `hold`, then commit: (taken, released), as
    /// the process reported them, and the process, its connection still
    /// open (see [`Holder::exit`]).
    fn hold(self, db: &Path, hold: Duration) -> (Instant, Instant, Holder) {
        let (child, mut stdin, mut stdout) = self.spawn(db);
        let expect = |stdout: &mut BufReader<ChildStdout>, word: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read the lock holder");
            assert_eq!(line.trim(), word, "the lock holder's answer");
        };
        if self == Locker::Shell {
            stdin
                .write_all(b".timeout 30000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
                .expect("write to sqlite3");
            stdin.flush().expect("flush");
        }
        expect(&mut stdout, "locked");
        let taken = Instant::now();
        std::thread::sleep(hold);
        let release: &[u8] = match self {
            Locker::Shell => b"COMMIT;\nSELECT 'released';\n",
            Locker::Python => b"\n",
        };
        stdin.write_all(release).expect("release");
        stdin.flush().expect("flush");
        expect(&mut stdout, "released");
        let released = Instant::now();
        (taken, released, Holder { child, stdin })
    }
}

/// The lock holder after its COMMIT, its connection open.
struct Holder {
    child: Child,
    stdin: ChildStdin,
}

impl Holder {
    /// Close its connection and let it exit. A process whose last
    /// connection closes checkpoints and deletes the WAL and `-shm` when
    /// it gets the database file's EXCLUSIVE lock, i.e. when it believes
    /// itself the last connection: the bench keeps it open until the
    /// case's figures are taken, and checks the files afterwards.
    fn exit(mut self) {
        let _ = self.stdin.write_all(b"\n");
        drop(self.stdin);
        self.child.wait().expect("lock holder exit");
    }
}

/// After the holder exited, with the runtime still running: whether the
/// WAL and `-shm` are still there, and a new connection reads a row
/// written through the runtime after the exit.
async fn after_holder_exit(rt: &Runtime, db: &Path, holder: Holder) -> (String, bool) {
    tokio::task::spawn_blocking(move || holder.exit())
        .await
        .expect("holder exit");
    let exists = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if Path::new(&p).exists() {
            "present"
        } else {
            "DELETED"
        }
    };
    let (wal, shm) = (exists("-wal"), exists("-shm"));
    let written = rt.execute(insert(-1, "marker")).await;
    let read = Connection::open(db).and_then(|c| {
        c.query_row("SELECT count(*) FROM t WHERE v = -1", [], |r| {
            r.get::<_, i64>(0)
        })
    });
    let intact =
        matches!((&written, &read), (Ok(_), Ok(1))) && wal == "present" && shm == "present";
    let verdict = if intact { "intact" } else { "BROKEN" };
    let written = match written {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{} ({})", e.class.as_str(), e.detail),
    };
    let read = match read {
        Ok(n) => format!("{n} row"),
        Err(e) => e.to_string(),
    };
    (
        format!(
            "after the lock holder exited: -wal {wal}, -shm {shm}; a write through the runtime {written}; a new connection reads it: {read} => {verdict}"
        ),
        intact,
    )
}

// ---------------------------------------------------------------- the load

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Durable,
    Plain,
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Applied,
    Queued,
    Failed(ErrorClass),
}

#[derive(Clone, Copy)]
struct Write {
    kind: Kind,
    value: i64,
    start: Instant,
    answered: Instant,
    outcome: Outcome,
}

impl Write {
    fn latency(&self) -> Duration {
        self.answered - self.start
    }

    fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Applied | Outcome::Queued)
    }
}

fn insert(value: i64, kind: &str) -> Statement {
    Statement::new(INSERT, [Value::Integer(value), Value::Text(kind.into())])
}

/// One task's writes, a write every `period` (no catch-up after a slow
/// answer), until `stop`.
async fn load(
    rt: Runtime,
    kind: Kind,
    period: Duration,
    counter: Arc<AtomicI64>,
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
) -> Vec<Write> {
    let mut writes = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let value = counter.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let outcome = match kind {
            Kind::Durable => {
                let op = Operation::Statement(insert(value, "d"));
                match rt.execute_durable(op, EnqueueOptions::default()).await {
                    Ok(Durable::Applied { .. }) => Outcome::Applied,
                    Ok(Durable::Queued { .. }) => Outcome::Queued,
                    Err(e) => Outcome::Failed(e.class),
                }
            }
            Kind::Plain => match rt.execute(insert(value, "p")).await {
                Ok(_) => Outcome::Applied,
                Err(e) => Outcome::Failed(e.class),
            },
        };
        let answered = Instant::now();
        let w = Write {
            kind,
            value,
            start,
            answered,
            outcome,
        };
        if kind == Kind::Durable && w.acked() {
            acked.lock().expect("acked").push(value);
        }
        writes.push(w);
        next += period;
        if next < answered {
            next = answered;
        }
        tokio::time::sleep_until(next.into()).await;
    }
    writes
}

/// The database breaker's state every 5 ms: (when, new state) at each change.
async fn watch_breaker(rt: Runtime, stop: Arc<AtomicBool>) -> Vec<(Instant, BreakerState)> {
    let mut changes = vec![(Instant::now(), rt.database_breaker().state)];
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let state = rt.database_breaker().state;
        if changes.last().is_some_and(|(_, s)| *s != state) {
            changes.push((Instant::now(), state));
        }
    }
    changes
}

/// The retry queue every 10 ms: (when, queued + retrying, succeeded) at
/// each change.
async fn watch_queue(rt: Runtime, stop: Arc<AtomicBool>) -> Vec<(Instant, i64, i64)> {
    let mut changes: Vec<(Instant, i64, i64)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(s) = rt.queue_stats().await {
            let now = (s.queued + s.retrying, s.succeeded);
            if changes.last().is_none_or(|(_, b, r)| (*b, *r) != now) {
                changes.push((Instant::now(), now.0, now.1));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    changes
}

fn state_at(changes: &[(Instant, BreakerState)], t: Instant) -> BreakerState {
    changes
        .iter()
        .take_while(|(at, _)| *at <= t)
        .last()
        .map_or(BreakerState::Closed, |(_, s)| *s)
}

// ---------------------------------------------------------------- the table

/// The table as a connection of its own reads it, new rows only (rowids
/// only grow: one writer, no deletes): how often each value is present.
struct Table {
    conn: Connection,
    last_id: i64,
    counts: HashMap<i64, u32>,
}

impl Table {
    fn open(db: &Path) -> Table {
        let conn = Connection::open(db).expect("open reader");
        Table {
            conn,
            last_id: 0,
            counts: HashMap::new(),
        }
    }

    /// Read the rows committed since the last scan.
    fn scan(&mut self) -> rusqlite::Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, v FROM t WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query([self.last_id])?;
        while let Some(row) = rows.next()? {
            let (id, v): (i64, i64) = (row.get(0)?, row.get(1)?);
            self.last_id = id;
            *self.counts.entry(v).or_default() += 1;
        }
        Ok(())
    }

    fn present(&self, v: i64) -> u32 {
        self.counts.get(&v).copied().unwrap_or(0)
    }
}

/// Scan the table; an error (the bench's own reader, not resilite) is
/// reported and the rows are read at the next scan.
async fn scan(table: &Arc<Mutex<Table>>) -> bool {
    let table = table.clone();
    let result = tokio::task::spawn_blocking(move || table.lock().expect("table").scan())
        .await
        .expect("scan task");
    if let Err(e) = &result {
        eprintln!("table scan: {e}; read again at the next scan");
    }
    result.is_ok()
}

// ---------------------------------------------------------------- a case

struct Case {
    fault: Duration,
    taken: Instant,
    released: Instant,
    writes: Vec<Write>,
    breaker: Vec<(Instant, BreakerState)>,
    queue: Vec<(Instant, i64, i64)>,
    /// When the queue was first empty with every acknowledged durable
    /// value in the table.
    drained: Option<Instant>,
    /// Since when every durable value acknowledged so far has been in the
    /// table, at the time it drained.
    present_at: Option<Instant>,
    counts: HashMap<i64, u32>,
    dead: i64,
    succeeded: i64,
    left: i64,
    commits: u64,
    load_before: String,
    load_after: String,
    holder_exit: (String, bool),
}

async fn run_case(fault: Duration, locker: Locker) -> Case {
    let load_before = loadavg();
    let dir = tempfile::tempdir().expect("tempdir");
    let db: PathBuf = dir.path().join("app.db");
    let rt = Runtime::start(Config::for_database(&db))
        .await
        .expect("runtime");
    rt.execute(Statement::sql(CREATE)).await.expect("create");
    let table = Arc::new(Mutex::new(Table::open(&db)));

    let counter = Arc::new(AtomicI64::new(1));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..DURABLE_TASKS + PLAIN_TASKS {
        let kind = if i < DURABLE_TASKS {
            Kind::Durable
        } else {
            Kind::Plain
        };
        let period = Duration::from_millis(5 + (i % 6) as u64);
        tasks.push(tokio::spawn(load(
            rt.clone(),
            kind,
            period,
            counter.clone(),
            acked.clone(),
            stop.clone(),
        )));
    }
    let watcher = tokio::spawn(watch_breaker(rt.clone(), stop.clone()));
    let queue_watcher = tokio::spawn(watch_queue(rt.clone(), stop.clone()));

    tokio::time::sleep(before()).await;
    let db_for_lock = db.clone();
    let (taken, released, holder) =
        tokio::task::spawn_blocking(move || locker.hold(&db_for_lock, fault))
            .await
            .expect("lock holder");

    // Drained: the queue empty, and every durable value acknowledged so
    // far in the table. The load goes on for AFTER; the polling until
    // drained (or SETTLE_LIMIT).
    let mut drained = None;
    let mut present_at = None;
    let mut checked = 0; // acked[..checked] seen in the table
    loop {
        let now = Instant::now();
        if now >= released + AFTER {
            stop.store(true, Ordering::Relaxed);
        }
        if drained.is_some() && stop.load(Ordering::Relaxed) {
            break;
        }
        if now >= released + SETTLE_LIMIT {
            break;
        }
        if drained.is_none() {
            let snapshot: Vec<i64> = acked.lock().expect("acked").clone();
            let stats = rt.queue_stats().await.expect("queue stats");
            let scanned = scan(&table).await;
            let t = table.lock().expect("table");
            while checked < snapshot.len() && t.present(snapshot[checked]) > 0 {
                checked += 1;
            }
            let all = snapshot[checked..].iter().all(|v| t.present(*v) > 0);
            // The state held by the end of the check: its time, an upper
            // bound by a few milliseconds. `present_at` starts the last
            // run of checks that found every value (a durable write
            // queued later, not in flight, ends a run).
            if !scanned || !all {
                present_at = None;
            } else if present_at.is_none() {
                present_at = Some(Instant::now());
            }
            if scanned && stats.queued + stats.retrying == 0 && all {
                drained = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = Vec::new();
    for t in tasks {
        writes.extend(t.await.expect("load task"));
    }
    let breaker = watcher.await.expect("breaker watcher");
    let queue = queue_watcher.await.expect("queue watcher");

    // Settle: the queue empty (or SETTLE_LIMIT), then the table read.
    let settle_by = Instant::now() + SETTLE_LIMIT;
    let stats = loop {
        let s = rt.queue_stats().await.expect("queue stats");
        if s.queued + s.retrying == 0 || Instant::now() > settle_by {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut tries = 0;
    while !scan(&table).await {
        tries += 1;
        assert!(tries < 100, "the table cannot be read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = std::mem::take(&mut table.lock().expect("table").counts);
    let ws = rt.writer_stats().await.expect("writer stats");
    let holder_exit = after_holder_exit(&rt, &db, holder).await;
    rt.shutdown().await.expect("shutdown");
    Case {
        fault,
        taken,
        released,
        writes,
        breaker,
        queue,
        drained,
        present_at,
        counts,
        dead: stats.dead,
        succeeded: stats.succeeded,
        left: stats.queued + stats.retrying,
        commits: ws.commits,
        load_before,
        load_after: loadavg(),
        holder_exit,
    }
}

// ---------------------------------------------------------------- report

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Window {
    n: usize,
    applied: usize,
    queued: usize,
    failed: usize,
    failed_fast: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn window<'a>(writes: impl Iterator<Item = &'a Write>) -> Window {
    let ws: Vec<&Write> = writes.collect();
    let mut lat: Vec<Duration> = ws.iter().map(|w| w.latency()).collect();
    lat.sort_unstable();
    let failed: Vec<&&Write> = ws
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Failed(_)))
        .collect();
    Window {
        n: ws.len(),
        applied: ws.iter().filter(|w| w.outcome == Outcome::Applied).count(),
        queued: ws.iter().filter(|w| w.outcome == Outcome::Queued).count(),
        failed: failed.len(),
        failed_fast: failed.iter().filter(|w| w.latency() < FAIL_FAST).count(),
        p50: pct(&lat, 0.50),
        p99: pct(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
    }
}

/// What the summary needs of a case.
struct Summary {
    fault: f64,
    durable_p99: Duration,
    plain_p99: Duration,
    plain_max: Duration,
    fail_fast: Option<(usize, usize)>,
    drained: Option<Duration>,
    acked: usize,
    present: usize,
    lost: usize,
    duplicated: usize,
    intact: bool,
}

fn report(case: &Case, bound: Duration) -> Summary {
    let Case {
        taken, released, ..
    } = *case;
    let first = case.writes.iter().map(|w| w.start).min().unwrap_or(taken);
    let last = case
        .writes
        .iter()
        .map(|w| w.start)
        .max()
        .unwrap_or(released);
    println!(
        "fault T = {:.0} s: write lock held {:.2} s; load average {} before, {} after",
        case.fault.as_secs_f64(),
        (released - taken).as_secs_f64(),
        case.load_before,
        case.load_after
    );
    println!(
        "{:<24} {:>7} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "writes (by start)",
        "writes",
        "applied",
        "queued",
        "failed",
        "fail<5ms",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    let phases: [(&str, Instant, Instant); 3] = [
        ("before", first, taken),
        ("during the fault", taken, released),
        ("after", released, last + Duration::from_nanos(1)),
    ];
    for (kind, name) in [(Kind::Durable, "durable"), (Kind::Plain, "plain")] {
        for (phase, from, to) in phases {
            let w = window(
                case.writes
                    .iter()
                    .filter(|w| w.kind == kind && w.start >= from && w.start < to),
            );
            println!(
                "{:<24} {:>7} {:>8} {:>7} {:>7} {:>9} {:>9.1} {:>9.1} {:>9.1}",
                format!("{name}, {phase}"),
                w.n,
                w.applied,
                w.queued,
                w.failed,
                w.failed_fast,
                ms(w.p50),
                ms(w.p99),
                ms(w.max)
            );
        }
    }
    let during = |kind: Kind| {
        window(
            case.writes
                .iter()
                .filter(|w| w.kind == kind && w.start >= taken && w.start < released),
        )
    };
    let (d, p) = (during(Kind::Durable), during(Kind::Plain));

    // The breaker.
    let timeline: Vec<String> = case
        .breaker
        .iter()
        .skip(1)
        .map(|(at, s)| format!("{s:?} at {:+.2} s", rel(*at, taken)).to_lowercase())
        .collect();
    if timeline.is_empty() {
        println!(
            "database breaker: {:?} throughout",
            case.breaker.first().map_or(BreakerState::Closed, |c| c.1)
        );
    } else {
        println!(
            "database breaker (times from the fault's start; it ended at {:+.2} s): {}",
            rel(released, taken),
            timeline.join(", ")
        );
    }
    let while_open: Vec<&Write> = case
        .writes
        .iter()
        .filter(|w| {
            w.kind == Kind::Plain && state_at(&case.breaker, w.start) != BreakerState::Closed
        })
        .collect();
    let fail_fast = if case.breaker.len() > 1 {
        let fast = while_open
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Failed(_)) && w.latency() < FAIL_FAST)
            .count();
        println!(
            "plain writes started while the breaker was not closed: {}; failed fast (< {} ms): {} ({:.0}%)",
            while_open.len(),
            FAIL_FAST.as_millis(),
            fast,
            100.0 * fast as f64 / while_open.len().max(1) as f64
        );
        Some((fast, while_open.len()))
    } else {
        println!("plain writes failing fast once the breaker opened: n/a, it never opened");
        None
    };
    let mut classes: HashMap<&str, usize> = HashMap::new();
    for w in &case.writes {
        if let Outcome::Failed(c) = w.outcome {
            *classes.entry(c.as_str()).or_default() += 1;
        }
    }
    if !classes.is_empty() {
        let mut classes: Vec<_> = classes.into_iter().collect();
        classes.sort();
        let list: Vec<String> = classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!("failed writes by class: {}", list.join(", "));
    }

    // Drained, lost, duplicated.
    let drained = case.drained.map(|t| t.saturating_duration_since(released));
    let present_after = case.present_at.map_or("never".to_string(), |t| {
        format!(
            "{:.3} s",
            t.saturating_duration_since(released).as_secs_f64()
        )
    });
    match drained {
        Some(after) => println!(
            "drained (queue empty, every acknowledged durable value in the table) {:.3} s after the fault ended (target <= {} s: {}); every acknowledged value in the table (from then on) {present_after} after",
            after.as_secs_f64(),
            DRAIN_TARGET.as_secs(),
            verdict(after <= DRAIN_TARGET),
        ),
        None => println!(
            "drained: NOT within {} s of the fault's end (target <= {} s: NOT met); every acknowledged value in the table (from then on) {present_after} after",
            SETTLE_LIMIT.as_secs(),
            DRAIN_TARGET.as_secs(),
        ),
    }
    let first_queued = case.queue.iter().find(|(_, b, _)| *b > 0);
    let peak = case.queue.iter().max_by_key(|(_, b, _)| *b);
    let first_replayed = case.queue.iter().find(|(_, _, r)| *r > 0);
    let emptied = case
        .queue
        .iter()
        .rev()
        .take_while(|(_, b, _)| *b == 0)
        .last()
        .filter(|_| first_queued.is_some());
    let at = |e: Option<&(Instant, i64, i64)>| {
        e.map_or("-".to_string(), |(t, _, _)| {
            format!("{:+.2} s", rel(*t, taken))
        })
    };
    println!(
        "retry queue (times from the fault's start): first entry {}, peak {} entries at {}, first replay succeeded {}, empty for good {}",
        at(first_queued),
        peak.map_or(0, |p| p.1),
        at(peak),
        at(first_replayed),
        at(emptied)
    );
    let acked: Vec<&Write> = case
        .writes
        .iter()
        .filter(|w| w.kind == Kind::Durable && w.acked())
        .collect();
    let present_of = |v: i64| case.counts.get(&v).copied().unwrap_or(0);
    let present = acked.iter().filter(|w| present_of(w.value) > 0).count();
    let lost = acked.len() - present;
    let duplicated = case.counts.values().filter(|n| **n > 1).count();
    let plain_applied: Vec<&Write> = case
        .writes
        .iter()
        .filter(|w| w.kind == Kind::Plain && w.outcome == Outcome::Applied)
        .collect();
    let plain_missing = plain_applied
        .iter()
        .filter(|w| present_of(w.value) == 0)
        .count();
    let failed_present = case
        .writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Failed(_)) && present_of(w.value) > 0)
        .count();
    println!(
        "durable writes acknowledged {} (applied {}, queued {}), present afterwards {}, lost {} (target 0: {}), values present more than once {} (target 0: {})",
        acked.len(),
        acked.iter().filter(|w| w.outcome == Outcome::Applied).count(),
        acked.iter().filter(|w| w.outcome == Outcome::Queued).count(),
        present,
        lost,
        verdict(lost == 0),
        duplicated,
        verdict(duplicated == 0)
    );
    println!(
        "plain writes applied {} (missing {}); writes answered failed but present {}; queue afterwards: {} replayed, {} dead, {} left; writer: {} commits",
        plain_applied.len(),
        plain_missing,
        failed_present,
        case.succeeded,
        case.dead,
        case.left,
        case.commits
    );
    println!("{}", case.holder_exit.0);
    let target = bound + ANSWER_MARGIN;
    println!(
        "durable p99 during the fault {:.0} ms (target <= {} ms: {}); plain p99 {:.0} ms, max {:.0} ms\n",
        ms(d.p99),
        target.as_millis(),
        verdict(d.p99 <= target),
        ms(p.p99),
        ms(p.max)
    );
    Summary {
        fault: case.fault.as_secs_f64(),
        durable_p99: d.p99,
        plain_p99: p.p99,
        plain_max: p.max,
        fail_fast,
        drained,
        acked: acked.len(),
        present,
        lost,
        duplicated,
        intact: case.holder_exit.1,
    }
}

fn main() {
    // `DEGRADE_LOG=warn` (an `EnvFilter`): resilite's log on stderr.
    if let Ok(filter) = std::env::var("DEGRADE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let config = Config::default();
    let breaker = config
        .breakers
        .get(resilite::config::DATABASE_BREAKER)
        .cloned()
        .unwrap_or_default();
    let bound = config.retry.durable_answer_within;
    let locker = Locker::pick();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "writes during and after an outage: {DURABLE_TASKS} durable + {PLAIN_TASKS} plain tasks, a single-row insert every 5-10 ms each; {}s of load before the fault, {}s after; {cores} cores",
        before().as_secs_f64(),
        AFTER.as_secs()
    );
    println!(
        "bundled defaults: synchronous {:?}, busy_timeout {}, writer.max_retries {}, retry.durable_answer_within {}, retry.base_delay {}, retry.poll_interval {}; breaker: {} consecutive failures or slow calls >= {}, open_for {}",
        config.database.synchronous,
        humantime::format_duration(config.database.busy_timeout),
        config.writer.max_retries,
        humantime::format_duration(bound),
        humantime::format_duration(config.retry.base_delay),
        humantime::format_duration(config.retry.poll_interval),
        breaker.consecutive_failures,
        humantime::format_duration(breaker.slow_call),
        humantime::format_duration(breaker.open_for)
    );
    println!("the fault: {} holds the write lock\n", locker.describe());
    let mut summaries = Vec::new();
    for secs in fault_secs() {
        let case = rt.block_on(run_case(Duration::from_secs_f64(secs), locker));
        summaries.push(report(&case, bound));
    }
    println!(
        "{:>6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>7} {:>8} {:>5} {:>5}",
        "fault",
        "durable p99",
        "plain p99",
        "plain max",
        "fail fast",
        "drained",
        "acked",
        "present",
        "lost",
        "dup"
    );
    for s in &summaries {
        println!(
            "{:>5.0}s {:>10.0}ms {:>8.0}ms {:>8.0}ms {:>10} {:>10} {:>7} {:>8} {:>5} {:>5}",
            s.fault,
            ms(s.durable_p99),
            ms(s.plain_p99),
            ms(s.plain_max),
            s.fail_fast.map_or("n/a".into(), |(f, n)| format!(
                "{:.0}%",
                100.0 * f as f64 / n.max(1) as f64
            )),
            s.drained
                .map_or("never".into(), |d| format!("{:.3}s", d.as_secs_f64())),
            s.acked,
            s.present,
            s.lost,
            s.duplicated
        );
    }
    let target = bound + ANSWER_MARGIN;
    let all = |f: &dyn Fn(&Summary) -> bool| verdict(summaries.iter().all(f));
    println!(
        "targets: drained <= {} s after the fault: {}; durable p99 <= {} ms: {}; 0 lost: {}; 0 duplicated: {}",
        DRAIN_TARGET.as_secs(),
        all(&|s| s.drained.is_some_and(|d| d <= DRAIN_TARGET)),
        target.as_millis(),
        all(&|s| s.durable_p99 <= target),
        all(&|s| s.lost == 0),
        all(&|s| s.duplicated == 0)
    );
    let broken = summaries.iter().filter(|s| !s.intact).count();
    if broken > 0 {
        println!(
            "WARNING: in {broken} of {} cases the lock holder's exit deleted the WAL and -shm under the running runtime (see docs/benchmarks.md); the figures above were all taken before it exited",
            summaries.len()
        );
    }
}
