//! Error classification: every SQLite and IO error is mapped to a class that
//! decides what happens next (retry in place, fail the caller, start
//! recovery), with a message for users and the technical detail for logs.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;
use serde::{Deserialize, Serialize};

/// What kind of failure an error is; decides retry, failure or recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// Busy, locked, IO error, disk full: may succeed if tried again later.
    Transient,
    /// A UNIQUE, NOT NULL, CHECK or FOREIGN KEY constraint failed.
    Constraint,
    /// Invalid SQL, or SQL that does not match the schema.
    Sql,
    /// The database file is damaged.
    Corruption,
    /// The file or directory cannot be written or read.
    Permission,
    /// The request itself is wrong: parameter count, types, size.
    BadInput,
    /// A statement the gate refuses: transaction control, ATTACH, VACUUM,
    /// a pragma outside the allow-list, a TEMP object.
    Forbidden,
    /// A statement or query ran longer than its time bound and was stopped.
    Timeout,
    /// The request lacks the bearer token, or carries a wrong one.
    Unauthorized,
    /// The runtime cannot take the request: shut down, or failed past its
    /// restart limit.
    Unavailable,
    /// A bug in resilite; the detail says where.
    Internal,
}

impl ErrorClass {
    /// True when trying the same operation again later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorClass::Transient)
    }

    /// True when the same operation may succeed once the database is back
    /// (transient, unavailable, permission): what the durable queue keeps
    /// retrying. Other classes fail the same way every time.
    pub fn is_retryable_later(self) -> bool {
        matches!(
            self,
            ErrorClass::Transient | ErrorClass::Unavailable | ErrorClass::Permission
        )
    }

    /// True for an error the caller's own request caused (a constraint,
    /// SQL, bad input, a refused statement, its time bound, a missing
    /// token: the HTTP API's 4xx answers); false for a failure on
    /// resilite's or the database's side.
    pub fn is_caller_error(self) -> bool {
        matches!(
            self,
            ErrorClass::Constraint
                | ErrorClass::Sql
                | ErrorClass::BadInput
                | ErrorClass::Forbidden
                | ErrorClass::Timeout
                | ErrorClass::Unauthorized
        )
    }

    /// The class as it is serialized: `transient`, `constraint`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Constraint => "constraint",
            ErrorClass::Sql => "sql",
            ErrorClass::Corruption => "corruption",
            ErrorClass::Permission => "permission",
            ErrorClass::BadInput => "bad_input",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Unauthorized => "unauthorized",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Internal => "internal",
        }
    }

    /// The user-facing explanation of this class, with what to do.
    pub fn user_message(self) -> &'static str {
        match self {
            ErrorClass::Transient => {
                "the database is busy or temporarily unavailable; nothing was applied, try again later"
            }
            ErrorClass::Constraint => {
                "the statement violates a constraint (UNIQUE, NOT NULL, CHECK or FOREIGN KEY); nothing was applied"
            }
            ErrorClass::Sql => {
                "the SQL is invalid or does not match the database schema; fix the statement"
            }
            ErrorClass::Corruption => {
                "the database file is corrupt; restore it from a verified backup"
            }
            ErrorClass::Permission => {
                "the database cannot be accessed (read-only file or directory, or permission denied); fix its permissions"
            }
            ErrorClass::BadInput => "the request is invalid",
            ErrorClass::Forbidden => {
                "the statement is not allowed: callers send statements, never transaction control, ATTACH, VACUUM or pragmas that change the connection"
            }
            ErrorClass::Timeout => "the statement ran longer than its time bound and was stopped; nothing was applied",
            ErrorClass::Unauthorized => {
                "missing or wrong bearer token: send `Authorization: Bearer <http.token>`"
            }
            ErrorClass::Unavailable => "resilite is not accepting this request",
            ErrorClass::Internal => "internal error in resilite",
        }
    }
}

/// An error returned to callers: its class, a user-facing message and the
/// technical detail (SQLite's own message, the SQL, the path); and, where
/// resilite was doing work of its own on a file, what (`op`) and on which
/// file (`path`), as fields a program can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}: {detail}")]
pub struct Error {
    /// What kind of failure this is.
    pub class: ErrorClass,
    /// What went wrong and what to do, for the person reading it.
    pub message: String,
    /// The technical detail, for logs.
    pub detail: String,
    /// What resilite was doing: `open`, `checkpoint`, `vacuum`, `optimize`,
    /// `write probe`, `migrate journal`... Absent for a caller's statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The file it was working on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// SQLite's extended result code, when SQLite reported the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

/// Results across resilite.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of a class with its own message.
    pub fn new(class: ErrorClass, message: impl Into<String>, detail: impl Into<String>) -> Self {
        Error {
            class,
            message: message.into(),
            detail: detail.into(),
            op: None,
            path: None,
            code: None,
        }
    }

    /// This error, met while doing `op` on the file `path`. Keeps what an
    /// inner step already recorded.
    pub fn during(mut self, op: &str, path: &Path) -> Self {
        self.op.get_or_insert_with(|| op.to_string());
        self.path.get_or_insert_with(|| path.to_path_buf());
        self
    }

    /// An error whose message is the class's standard user message.
    pub fn classed(class: ErrorClass, detail: impl Into<String>) -> Self {
        Error::new(class, class.user_message(), detail)
    }

    /// The request was invalid; `message` says what and how to fix it.
    pub fn bad_input(message: impl Into<String>) -> Self {
        let message = message.into();
        Error::new(ErrorClass::BadInput, message.clone(), message)
    }

    /// The runtime cannot take requests; `detail` says why.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Error::classed(ErrorClass::Unavailable, detail)
    }

    /// Log this error on one line saying `what` happened, with its class,
    /// SQLite's extended result code and the technical detail (SQLite's
    /// message and the start of the SQL), control characters escaped so
    /// that a caller's text never starts a line of its own. A caller's
    /// error ([`ErrorClass::is_caller_error`]) at `debug`: the caller gets
    /// the same detail and it is theirs to fix; any other at `warn`.
    pub fn log(&self, what: &str) {
        let detail = printable(&self.detail, MAX_LOGGED_DETAIL);
        if self.class.is_caller_error() {
            tracing::debug!(class = ?self.class, code = ?self.code, %detail, "{what}");
        } else {
            tracing::warn!(class = ?self.class, code = ?self.code, %detail, "{what}");
        }
    }

    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        self.class.is_transient()
    }

    /// Classify a rusqlite error, keeping the SQL that caused it in the detail.
    pub fn from_sqlite(err: rusqlite::Error, sql: &str) -> Self {
        let mut e = Error::from(err);
        if !sql.is_empty() {
            e.detail = format!("{}; sql: {}", e.detail, printable(sql, MAX_SQL_IN_DETAIL));
        }
        e
    }
}

/// Classify an SQLite result code.
pub fn classify_code(code: ErrorCode) -> ErrorClass {
    match code {
        ErrorCode::DatabaseBusy
        | ErrorCode::DatabaseLocked
        | ErrorCode::SystemIoFailure
        | ErrorCode::DiskFull
        | ErrorCode::OutOfMemory
        | ErrorCode::SchemaChanged
        | ErrorCode::FileLockingProtocolFailed
        | ErrorCode::CannotOpen => ErrorClass::Transient,
        ErrorCode::ConstraintViolation => ErrorClass::Constraint,
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => ErrorClass::Corruption,
        ErrorCode::PermissionDenied | ErrorCode::ReadOnly => ErrorClass::Permission,
        // Only resilite's statement gate denies or interrupts statements.
        ErrorCode::AuthorizationForStatementDenied => ErrorClass::Forbidden,
        ErrorCode::OperationInterrupted => ErrorClass::Timeout,
        ErrorCode::TooBig | ErrorCode::TypeMismatch | ErrorCode::ParameterOutOfRange => {
            ErrorClass::BadInput
        }
        ErrorCode::InternalMalfunction | ErrorCode::ApiMisuse | ErrorCode::NoLargeFileSupport => {
            ErrorClass::Internal
        }
        // SQLITE_ERROR: syntax errors, unknown tables or columns.
        _ => ErrorClass::Sql,
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        // SQLite's message may quote the caller's SQL: bounded and printable.
        let detail = printable(&err.to_string(), MAX_DETAIL);
        let code = match &err {
            E::SqliteFailure(f, _) | E::SqlInputError { error: f, .. } => Some(f.extended_code),
            _ => None,
        };
        let mut e = match &err {
            E::SqliteFailure(f, _) if f.code == ErrorCode::TooBig => Error::new(
                ErrorClass::BadInput,
                "a string, blob or row is larger than the configured limit (readers.max_response_bytes); \
                 store or read it in smaller pieces, or raise the limit",
                detail,
            ),
            E::SqliteFailure(f, _) => Error::classed(classify_code(f.code), detail),
            E::SqlInputError { .. } => Error::classed(ErrorClass::Sql, detail),
            E::InvalidParameterCount(given, expected) => Error::new(
                ErrorClass::BadInput,
                format!("the statement takes {expected} parameter(s) but {given} were given"),
                detail,
            ),
            E::ExecuteReturnedResults => Error::new(
                ErrorClass::BadInput,
                "the statement returns rows; send it as a query",
                detail,
            ),
            E::MultipleStatement => Error::new(
                ErrorClass::BadInput,
                "send one SQL statement per request item; use a batch for several",
                detail,
            ),
            E::InvalidParameterName(_)
            | E::NulError(_)
            | E::ToSqlConversionFailure(_)
            | E::InvalidColumnType(..)
            | E::InvalidQuery
            | E::InvalidPath(_) => Error::new(ErrorClass::BadInput, detail.clone(), detail),
            _ => Error::classed(ErrorClass::Internal, detail),
        };
        e.code = code;
        e
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let class = match err.kind() {
            K::PermissionDenied | K::ReadOnlyFilesystem => ErrorClass::Permission,
            K::NotFound | K::InvalidInput | K::InvalidData => ErrorClass::BadInput,
            _ => ErrorClass::Transient,
        };
        Error::classed(class, err.to_string())
    }
}

/// Most characters of a caller's SQL quoted in an error's detail.
const MAX_SQL_IN_DETAIL: usize = 200;
/// Most characters of SQLite's own message kept in an error's detail.
const MAX_DETAIL: usize = 1000;
/// Most characters of an error's detail in a log line: SQLite's message
/// and the SQL, with room for escapes.
const MAX_LOGGED_DETAIL: usize = 2 * (MAX_DETAIL + MAX_SQL_IN_DETAIL);

/// `s` fit for a log line or an error body: control characters escaped
/// (a newline in a caller's SQL cannot forge a log line) and at most `max`
/// characters, with what was cut said.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 32));
    for (n, c) in s.chars().enumerate() {
        if n == max {
            let rest = s.chars().count() - n;
            out.push_str(&format!("… ({rest} more characters)"));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_maps_sqlite_failures_to_classes() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(x INTEGER PRIMARY KEY)")
            .unwrap();
        let sql_err = conn.execute("INSERT INTO nope VALUES (1)", []).unwrap_err();
        assert_eq!(Error::from(sql_err).class, ErrorClass::Sql);
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let dup = conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        assert_eq!(Error::from(dup).class, ErrorClass::Constraint);
        let count = conn
            .execute("INSERT INTO t VALUES (?1)", [1, 2])
            .unwrap_err();
        let e = Error::from(count);
        assert_eq!(e.class, ErrorClass::BadInput);
        assert!(e.message.contains("takes 1 parameter"), "{e}");
        assert!(classify_code(ErrorCode::DatabaseBusy).is_transient());
        assert!(classify_code(ErrorCode::DiskFull).is_transient());
        assert_eq!(
            classify_code(ErrorCode::DatabaseCorrupt),
            ErrorClass::Corruption
        );
        assert_eq!(classify_code(ErrorCode::ReadOnly), ErrorClass::Permission);
    }

    #[test]
    fn printable_escapes_control_characters_and_bounds_length() {
        assert_eq!(printable("a\nb\tc", 10), "a\\nb\\tc");
        let long = "x".repeat(5000);
        let cut = printable(&long, 100);
        assert!(cut.starts_with(&"x".repeat(100)));
        assert!(cut.ends_with("(4900 more characters)"), "{cut}");
    }
}
