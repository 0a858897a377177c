//! The statement gate: what a caller's SQL may do on a connection resilite
//! opens, enforced by SQLite itself, never by reading the SQL text.
//!
//! Callers send statements, never transactions. The writer alone owns BEGIN,
//! COMMIT and the per-operation SAVEPOINTs, so a caller's transaction control
//! would reach into other callers' writes in the same group commit. While a
//! caller's statement is prepared and run ([`Gate::caller`]):
//!
//! - the **authorizer** refuses transaction control (BEGIN, COMMIT, END,
//!   ROLLBACK, SAVEPOINT, RELEASE), ATTACH and DETACH (and so `VACUUM INTO`,
//!   which attaches its target), TEMP tables, views, indexes and triggers
//!   (on the shared writer connection a TEMP table would shadow the real
//!   one for every later caller), and every PRAGMA outside [`READ_PRAGMAS`]
//!   and [`QUERY_PRAGMAS`];
//! - **limits**: `SQLITE_LIMIT_ATTACHED` is 0 and `SQLITE_LIMIT_LENGTH` is
//!   the configured largest value;
//! - the **progress handler** interrupts the statement past its time bound,
//!   or as soon as its caller went away.
//!
//! Every connection is opened with `SQLITE_DBCONFIG_DEFENSIVE` (no
//! writable_schema, no direct writes to shadow tables) and an untrusted
//! schema. resilite's own statements that the gate would refuse
//! (transactions, savepoints, checkpoints, VACUUM, `PRAGMA optimize`, the
//! write probe, the journal's migrations) run outside caller mode: they
//! never go through [`Gate::caller`]. Every operation a writer is sent runs
//! in caller mode, the journal writer's too: those are plain inserts,
//! updates and deletes, which pass.
//!
//! When the operation audit is on ([`Gate::set_audit`]), the authorizer
//! also notes the tables a caller statement inserts into, updates or
//! deletes from (its triggers' included: SQLite compiles them into the
//! statement). The authorizer runs when a statement is compiled, not each
//! time it runs, so the tables are kept per SQL text beside the statement
//! cache ([`Gate::note_tables`]).
//!
//! A refusal is an error of class `forbidden` (a time bound: `timeout`) that
//! fails only the statement that asked for it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{CachedStatement, Connection};

use crate::error::{Error, ErrorClass, Result};

/// Pragmas a caller may run with or without an argument: they only read.
pub const READ_PRAGMAS: &[&str] = &[
    "collation_list",
    "compile_options",
    "database_list",
    "foreign_key_check",
    "foreign_key_list",
    "function_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "module_list",
    "pragma_list",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// Pragmas a caller may query but not set (no `= value`).
pub const QUERY_PRAGMAS: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "busy_timeout",
    "cache_size",
    "data_version",
    "encoding",
    "foreign_keys",
    "freelist_count",
    "journal_mode",
    "page_count",
    "page_size",
    "schema_version",
    "synchronous",
    "user_version",
];

/// How often (in virtual machine instructions) the progress handler looks
/// at the clock and the caller.
const PROGRESS_EVERY: i32 = 1000;
/// SQLite's own default `SQLITE_LIMIT_ATTACHED`, for resilite's own work.
const DEFAULT_ATTACHED: i32 = 10;
/// SQL texts whose tables the audit keeps at most; past it, the map and
/// the statement cache are emptied together (so every statement is
/// compiled, and its tables seen, again).
const MAX_AUDITED_SQL: usize = 4096;

/// The time and size bounds of a caller's statements on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest run of one statement.
    pub timeout: Duration,
    /// The config key of `timeout`, named in the error.
    pub timeout_key: &'static str,
    /// Largest string or blob a statement may build.
    pub max_value_bytes: usize,
}

/// The gate of one connection. Install it once, right after opening.
pub struct Gate {
    shared: Arc<Shared>,
    bounds: Bounds,
    /// The connection's own `SQLITE_LIMIT_LENGTH`, restored after a caller.
    own_length: i32,
    /// The audit: the tables each SQL text changes, as its compilation
    /// showed them. Only the connection's own thread reaches these two.
    tables: RefCell<HashMap<String, Arc<[String]>>>,
    /// The audit: the tables changed by the operation running now, as
    /// each of its statements' compilation showed them.
    op_tables: RefCell<OpTables>,
}

/// The tables an operation's statements changed, one set per statement,
/// as [`Gate::take_tables`] gives them: most operations are one
/// statement, kept without a list of its own.
#[derive(Debug, Clone, Default)]
pub struct OpTables {
    first: Option<Arc<[String]>>,
    more: Vec<Arc<[String]>>,
}

impl OpTables {
    fn push(&mut self, tables: Arc<[String]>) {
        match self.first {
            None => self.first = Some(tables),
            Some(_) => self.more.push(tables),
        }
    }

    /// The sets, one per statement, in order.
    fn sets(&self) -> impl Iterator<Item = &Arc<[String]>> {
        self.first.iter().chain(&self.more)
    }

    /// The tables, each once, in the order first seen; nothing is copied.
    pub fn merged(&self) -> impl Iterator<Item = &str> {
        self.sets().enumerate().flat_map(move |(i, set)| {
            set.iter()
                .enumerate()
                .filter(move |&(j, t)| {
                    // Not already given: earlier in this set, or in one
                    // of the `i` sets before it.
                    !set[..j].contains(t) && !self.sets().take(i).any(|s| s.contains(t))
                })
                .map(|(_, t)| t.as_str())
        })
    }
}

#[derive(Default)]
struct Shared {
    /// True while a caller's statement is prepared or run.
    caller: AtomicBool,
    watch: Mutex<Option<Watch>>,
    /// Why the gate refused or stopped the running caller statement.
    refusal: Mutex<Option<Error>>,
    /// The audit is on: note the tables caller statements change.
    audit: AtomicBool,
    /// The tables the statement being compiled changes; `Some` once the
    /// authorizer was asked (the statement was compiled, not cached).
    seen: Mutex<Option<Vec<String>>>,
    /// `seen` may be `Some`: set by the authorizer, so that a statement
    /// taken from the cache (most) costs no lock of `seen`.
    seen_some: AtomicBool,
}

struct Watch {
    deadline: Instant,
    bounds: Bounds,
    cancelled: Option<Arc<AtomicBool>>,
}

/// Harden a newly opened connection, whoever will use it: defensive mode
/// (the schema cannot be corrupted through SQL) and an untrusted schema
/// (functions with side effects cannot run from views or triggers).
pub fn harden(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    Ok(())
}

impl Gate {
    /// Install the authorizer and the progress handler on `conn`.
    pub fn install(conn: &Connection, bounds: Bounds) -> Result<Gate> {
        let shared = Arc::new(Shared::default());
        let auth = shared.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| auth.authorize(&ctx)))?;
        let progress = shared.clone();
        conn.progress_handler(PROGRESS_EVERY, Some(move || progress.should_stop()))?;
        let own_length = conn.limit(Limit::SQLITE_LIMIT_LENGTH)?;
        Ok(Gate {
            shared,
            bounds,
            own_length,
            tables: RefCell::default(),
            op_tables: RefCell::default(),
        })
    }

    /// Turn the noting of changed tables on or off (the operation audit).
    pub fn set_audit(&self, on: bool) {
        self.shared.audit.store(on, Ordering::Release);
    }

    /// Whether changed tables are noted.
    pub fn auditing(&self) -> bool {
        self.shared.audit.load(Ordering::Acquire)
    }

    /// After the caller statement `sql` ran (auditing): add the tables it
    /// changes to the running operation's. Compiled just now, the
    /// authorizer saw them; taken from the statement cache, they are those
    /// seen when it was compiled.
    pub fn note_tables(&self, conn: &Connection, sql: &str) {
        let seen = self.shared.take_seen();
        let mut map = self.tables.borrow_mut();
        let tables = match seen {
            Some(seen) => {
                if map.len() >= MAX_AUDITED_SQL && !map.contains_key(sql) {
                    map.clear();
                    conn.flush_prepared_statement_cache();
                }
                let tables: Arc<[String]> = seen.into();
                map.insert(sql.to_owned(), tables.clone());
                tables
            }
            None => match map.get(sql) {
                Some(tables) => tables.clone(),
                None => return,
            },
        };
        drop(map);
        self.op_tables.borrow_mut().push(tables);
    }

    /// The tables the operation that just ran changed (auditing), and
    /// start the next operation's.
    pub fn take_tables(&self) -> OpTables {
        self.op_tables.take()
    }

    /// Run `f`, which prepares and runs one caller statement on `conn`,
    /// under the caller's rules and bounds. `cancelled`, when set, stops it
    /// (its caller went away). A refusal or a stop replaces `f`'s error with
    /// one that says what was refused and why.
    pub fn caller<T>(
        &self,
        conn: &Connection,
        cancelled: Option<&Arc<AtomicBool>>,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let bytes = i32::try_from(self.bounds.max_value_bytes).unwrap_or(i32::MAX);
        let _ = conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, bytes);
        let _ = conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0);
        *lock(&self.shared.watch) = Some(Watch {
            deadline: Instant::now() + self.bounds.timeout,
            bounds: self.bounds,
            cancelled: cancelled.cloned(),
        });
        if self.auditing() {
            self.shared.take_seen();
        }
        self.shared.caller.store(true, Ordering::Release);
        // Restores resilite's own mode even if `f` panics.
        let _restore = Restore { gate: self, conn };
        let result = f();
        let refusal = lock(&self.shared.refusal).take();
        match (result, refusal) {
            (Err(e), Some(mut refusal)) => {
                refusal.detail = format!("{}; SQLite: {}", refusal.detail, e.detail);
                Err(refusal)
            }
            (result, _) => result,
        }
    }
}

struct Restore<'a> {
    gate: &'a Gate,
    conn: &'a Connection,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let shared = &self.gate.shared;
        shared.caller.store(false, Ordering::Release);
        *lock(&shared.watch) = None;
        let _ = self
            .conn
            .set_limit(Limit::SQLITE_LIMIT_LENGTH, self.gate.own_length);
        let _ = self
            .conn
            .set_limit(Limit::SQLITE_LIMIT_ATTACHED, DEFAULT_ATTACHED);
    }
}

impl Shared {
    fn authorize(&self, ctx: &AuthContext<'_>) -> Authorization {
        if !self.caller.load(Ordering::Acquire) {
            return Authorization::Allow;
        }
        if self.audit.load(Ordering::Acquire) {
            self.note(ctx);
        }
        match refusal(ctx) {
            None => Authorization::Allow,
            Some(why) => {
                self.refuse(Error::new(
                    ErrorClass::Forbidden,
                    why,
                    "refused by the statement gate",
                ));
                Authorization::Deny
            }
        }
    }

    /// Note the table `ctx` changes, if it changes one of the
    /// application's (SQLite's own tables, changed by DDL, are left out).
    fn note(&self, ctx: &AuthContext<'_>) {
        let table = match ctx.action {
            AuthAction::Insert { table_name }
            | AuthAction::Update { table_name, .. }
            | AuthAction::Delete { table_name } => Some(table_name),
            _ => None,
        };
        let mut seen = lock(&self.seen);
        self.seen_some.store(true, Ordering::Release);
        let seen = seen.get_or_insert_with(Vec::new);
        if let Some(t) = table.filter(|t| !t.starts_with("sqlite_")) {
            if !seen.iter().any(|s| s == t) {
                seen.push(t.to_owned());
            }
        }
    }

    /// What the authorizer noted since it was last taken.
    fn take_seen(&self) -> Option<Vec<String>> {
        if !self.seen_some.load(Ordering::Acquire) {
            return None;
        }
        let mut seen = lock(&self.seen);
        self.seen_some.store(false, Ordering::Release);
        seen.take()
    }

    fn should_stop(&self) -> bool {
        if !self.caller.load(Ordering::Acquire) {
            return false;
        }
        let stop = match lock(&self.watch).as_ref() {
            Some(w)
                if w.cancelled
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Acquire)) =>
            {
                Some(Error::new(
                    ErrorClass::Unavailable,
                    "the caller went away; the statement was stopped and nothing of it was applied",
                    "cancelled",
                ))
            }
            Some(w) if Instant::now() >= w.deadline => {
                let Bounds {
                    timeout,
                    timeout_key: key,
                    ..
                } = w.bounds;
                Some(Error::new(
                    ErrorClass::Timeout,
                    format!(
                        "the statement ran longer than {key} ({timeout:?}) and was stopped; nothing of \
                         it was applied: make it cheaper (a WHERE, a LIMIT, an index) or raise {key}"
                    ),
                    "interrupted by the progress handler",
                ))
            }
            _ => None,
        };
        match stop {
            Some(e) => {
                self.refuse(e);
                true
            }
            None => false,
        }
    }

    /// Keep the first reason: a later one is a consequence of it.
    fn refuse(&self, e: Error) {
        lock(&self.refusal).get_or_insert(e);
    }
}

/// Prepare a caller's SQL through the connection's statement cache: exactly
/// one statement, not empty or only comments. Call it inside
/// [`Gate::caller`].
pub fn prepare<'c>(conn: &'c Connection, sql: &str) -> Result<CachedStatement<'c>> {
    let stmt = conn
        .prepare_cached(sql)
        .map_err(|e| Error::from_sqlite(e, sql))?;
    // SQLite compiles whitespace and comments to no statement at all; only
    // a statement without columns and parameters needs the (copying) look.
    if stmt.column_count() == 0 && stmt.parameter_count() == 0 && stmt.expanded_sql().is_none() {
        return Err(Error::bad_input(
            "the SQL text holds no statement (it is empty, or only whitespace and comments)",
        ));
    }
    Ok(stmt)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a caller may not do what `ctx` asks, or None when it may.
fn refusal(ctx: &AuthContext<'_>) -> Option<String> {
    use AuthAction as A;
    let reads = matches!(
        ctx.action,
        A::Read { .. } | A::Select | A::Function { .. } | A::Recursive
    );
    if !reads && ctx.database_name == Some("temp") {
        return Some(TEMP_REFUSAL.into());
    }
    Some(match ctx.action {
        A::Transaction { .. } | A::Savepoint { .. } => {
            "transaction control (BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE) is not allowed: \
             resilite runs every operation in its own transaction; send statements that must apply \
             together as one batch"
                .into()
        }
        A::Attach { .. } => {
            "ATTACH is not allowed (nor VACUUM INTO, which attaches its target): a caller's \
             statements reach only the application database; resilite vacuums and backs up \
             the database itself"
                .into()
        }
        A::Detach { .. } => "DETACH is not allowed: nothing is attached to detach".into(),
        A::Pragma {
            pragma_name,
            pragma_value,
        } => return pragma_refusal(pragma_name, pragma_value.is_some()),
        A::CreateTempIndex { .. }
        | A::CreateTempTable { .. }
        | A::CreateTempTrigger { .. }
        | A::CreateTempView { .. }
        | A::DropTempIndex { .. }
        | A::DropTempTable { .. }
        | A::DropTempTrigger { .. }
        | A::DropTempView { .. } => TEMP_REFUSAL.into(),
        A::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            "load_extension() is not allowed".into()
        }
        _ => return None,
    })
}

const TEMP_REFUSAL: &str = "TEMP tables, views, indexes and triggers are not allowed: \
    resilite's connections are shared by every caller, and a TEMP object would outlive the \
    request (a TEMP table shadows the real one for later callers); create it in the database";

/// The error of a caller's statement that failed while it ran. SQLite
/// refuses VACUUM inside the writer's transaction with a generic SQL error:
/// that one is told apart (see [`vacuum_refusal`]) and reported as refused.
pub fn run_error(conn: &Connection, sql: &str, e: rusqlite::Error) -> Error {
    let err = Error::from_sqlite(e, sql);
    if err.class != ErrorClass::Sql {
        return err;
    }
    vacuum_refusal(conn, sql).unwrap_or(err)
}

/// A VACUUM refused with its reason, when `sql` is one: compiled with
/// EXPLAIN (SQLite's own parser, no text matching) to look for its opcode.
/// Only called on a failure, to say what was refused and why.
pub fn vacuum_refusal(conn: &Connection, sql: &str) -> Option<Error> {
    let mut explain = conn.prepare(&format!("EXPLAIN {sql}")).ok()?;
    let mut rows = explain.query([]).ok()?;
    while let Ok(Some(row)) = rows.next() {
        if row.get_ref(1).ok()?.as_str().ok()? == "Vacuum" {
            return Some(Error::new(
                ErrorClass::Forbidden,
                "VACUUM is not allowed: resilite vacuums the database itself (health.auto_vacuum, \
                 `resilite vacuum`), between two group commits; VACUUM INTO would write a file \
                 outside the database",
                "refused by the statement gate",
            ));
        }
    }
    None
}

fn pragma_refusal(name: &str, sets_value: bool) -> Option<String> {
    let name = name.to_ascii_lowercase();
    let reads = READ_PRAGMAS.contains(&name.as_str());
    let queries = QUERY_PRAGMAS.contains(&name.as_str()) && !sets_value;
    if reads || queries {
        return None;
    }
    let action = if sets_value || !QUERY_PRAGMAS.contains(&name.as_str()) {
        "changes the connection or the file"
    } else {
        "is not on the allow-list"
    };
    Some(format!(
        "PRAGMA {name} is not allowed: it {action}, which resilite configures itself. Callers may \
         run {} and read {}",
        READ_PRAGMAS.join(", "),
        QUERY_PRAGMAS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gated() -> (Connection, Gate) {
        let conn = Connection::open_in_memory().unwrap();
        harden(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        let gate = Gate::install(
            &conn,
            Bounds {
                timeout: Duration::from_millis(200),
                timeout_key: "writer.statement_timeout",
                max_value_bytes: 1000,
            },
        )
        .unwrap();
        (conn, gate)
    }

    fn run(conn: &Connection, gate: &Gate, sql: &str) -> Result<usize> {
        conn.execute_batch("BEGIN").unwrap(); // as in the writer
        let result = run_in_transaction(conn, gate, sql);
        conn.execute_batch("ROLLBACK").unwrap();
        result
    }

    fn run_in_transaction(conn: &Connection, gate: &Gate, sql: &str) -> Result<usize> {
        gate.caller(conn, None, || {
            let mut stmt = prepare(conn, sql)?;
            let mut rows = stmt.raw_query();
            let mut n = 0;
            while rows.next().map_err(|e| run_error(conn, sql, e))?.is_some() {
                n += 1;
            }
            Ok(n)
        })
    }

    /// An operation's tables, each once, in the order first seen.
    #[test]
    fn gate_merges_an_operations_tables() {
        let set = |names: &[&str]| -> Arc<[String]> {
            names
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .into()
        };
        let sets = [
            set(&["a", "b"]),
            set(&["c", "a"]),
            set(&[]),
            set(&["b", "d", "c"]),
        ];
        let mut tables = OpTables::default();
        assert_eq!(tables.merged().count(), 0);
        for set in sets {
            tables.push(set);
        }
        assert_eq!(tables.merged().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
        let mut one = OpTables::default();
        one.push(set(&["b", "a", "b"]));
        assert_eq!(one.merged().collect::<Vec<_>>(), ["b", "a"]);
    }

    #[test]
    fn gate_refuses_what_reaches_past_the_callers_statement() {
        let (conn, gate) = gated();
        for sql in [
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT x",
            "RELEASE x",
            "ATTACH DATABASE 'elsewhere.db' AS e",
            "DETACH e",
            "PRAGMA writable_schema=ON",
            "PRAGMA query_only=1",
            "PRAGMA locking_mode=EXCLUSIVE",
            "PRAGMA user_version=3",
            "CREATE TEMP TABLE t(x)",
            "CREATE TABLE temp.u(x)",
            "VACUUM",
            "VACUUM INTO 'elsewhere.db'",
        ] {
            let e = run(&conn, &gate, sql).unwrap_err();
            assert_eq!(e.class, ErrorClass::Forbidden, "{sql}: {e}");
        }
        assert!(conn.is_autocommit());
        assert!(!std::path::Path::new("elsewhere.db").exists());
        for sql in ["", "  ", "-- nothing", "/* x */"] {
            let e = run(&conn, &gate, sql).unwrap_err();
            assert_eq!(e.class, ErrorClass::BadInput, "{sql:?}: {e}");
        }
    }

    #[test]
    fn gate_allows_reading_pragmas_and_ordinary_sql() {
        let (conn, gate) = gated();
        for sql in [
            "PRAGMA table_info(t)",
            "SELECT * FROM pragma_table_info('t')",
            "PRAGMA user_version",
            "PRAGMA foreign_key_check",
            "INSERT INTO t VALUES (1)",
            "CREATE INDEX ti ON t(x)",
        ] {
            run(&conn, &gate, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // resilite's own statements are not gated.
        conn.execute_batch("BEGIN; PRAGMA user_version=2; COMMIT")
            .unwrap();
    }

    #[test]
    fn gate_stops_a_statement_past_its_bound_and_a_value_past_its_size() {
        let (conn, gate) = gated();
        let started = Instant::now();
        let e = run(
            &conn,
            &gate,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c",
        )
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::Timeout, "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let e = run(&conn, &gate, "SELECT zeroblob(5000)").unwrap_err();
        assert_eq!(e.class, ErrorClass::BadInput, "{e}");
        // Outside caller mode, the limits are SQLite's own again.
        conn.query_row("SELECT length(zeroblob(5000))", [], |r| r.get::<_, i64>(0))
            .unwrap();
    }
}
