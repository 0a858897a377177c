//! A migration script, split into its statements, so that each runs on its
//! own and a failure names the statement that failed.
//!
//! The split follows SQLite's own `sqlite3_complete()` (`complete.c`): a
//! `;` ends a statement unless it is inside a string, a quoted name, a
//! comment, or the body of a `CREATE TRIGGER ... BEGIN ... END`. Each piece
//! runs with `execute_batch`, so a piece this split got wrong would still
//! run as SQLite reads it: only the naming of a failure would be coarser.

/// One statement of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScriptStatement<'a> {
    /// Its text, from its first token to its `;` (or the end of the
    /// script), comments before it left out.
    pub text: &'a str,
    /// The line of the script it starts on (1-based).
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Semi = 0,
    Space = 1,
    Other = 2,
    Explain = 3,
    Create = 4,
    Temp = 5,
    Trigger = 6,
    End = 7,
}

/// `sqlite3_complete()`'s state machine: states 0 (invalid), 1 (start),
/// 2 (normal), 3 (explain), 4 (create), 5 (trigger), 6 (semi), 7 (end);
/// a `;` that leads to state 1 ends a statement.
const TRANSITIONS: [[u8; 8]; 8] = [
    // SEMI SPACE OTHER EXPLAIN CREATE TEMP TRIGGER END
    [1, 0, 2, 3, 4, 2, 2, 2], // 0 invalid
    [1, 1, 2, 3, 4, 2, 2, 2], // 1 start
    [1, 2, 2, 2, 2, 2, 2, 2], // 2 normal
    [1, 3, 3, 2, 4, 2, 2, 2], // 3 explain
    [1, 4, 2, 2, 2, 4, 5, 2], // 4 create
    [6, 5, 5, 5, 5, 5, 5, 5], // 5 trigger
    [6, 6, 5, 5, 5, 5, 5, 7], // 6 semi
    [1, 7, 5, 5, 5, 5, 5, 5], // 7 end
];

/// The statements of `script`, in order; whitespace, comments and empty
/// statements (`;;`) are not statements.
pub(crate) fn split(script: &str) -> Vec<ScriptStatement<'_>> {
    let bytes = script.as_bytes();
    let mut statements = Vec::new();
    let mut state = 0u8;
    let mut at = 0;
    // Where the statement being read starts (its first token), if it has one.
    let mut first: Option<usize> = None;
    while at < bytes.len() {
        let (token, len) = token(bytes, at);
        let start = at;
        at += len;
        state = TRANSITIONS[state as usize][token as usize];
        match token {
            Token::Space => {}
            Token::Semi if state == 1 => {
                if let Some(begin) = first.take() {
                    statements.push(statement(script, begin, at));
                }
            }
            _ => {
                first.get_or_insert(start);
            }
        }
    }
    if let Some(begin) = first {
        statements.push(statement(script, begin, bytes.len()));
    }
    statements
}

/// The first statement of `script` that controls transactions (BEGIN,
/// COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE): `statement 2 (line 3): COMMIT;`.
/// A migration runs in a transaction resilite owns; a COMMIT in the script
/// would end it half-way.
pub(crate) fn transaction_control(script: &str) -> Option<String> {
    split(script).iter().enumerate().find_map(|(i, s)| {
        let word: String = s
            .text
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let controls = ["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"]
            .iter()
            .any(|k| word.eq_ignore_ascii_case(k));
        controls.then(|| {
            format!(
                "statement {} (line {}): {}",
                i + 1,
                s.line,
                crate::error::printable(s.text, 80)
            )
        })
    })
}

fn statement(script: &str, begin: usize, end: usize) -> ScriptStatement<'_> {
    ScriptStatement {
        text: script[begin..end].trim_end(),
        line: 1 + script[..begin].matches('\n').count(),
    }
}

/// SQLite's `IdChar`: letters, digits, `_`, `$` and every byte of a
/// multi-byte UTF-8 character.
fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The token at `at` and its length in bytes (at least 1). Token
/// boundaries fall on ASCII bytes, so slices at them are valid UTF-8.
fn token(bytes: &[u8], at: usize) -> (Token, usize) {
    let rest = &bytes[at..];
    let until = |from: usize, end: &[u8]| -> usize {
        rest[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(rest.len(), |p| from + p + end.len())
    };
    match rest[0] {
        b';' => (Token::Semi, 1),
        b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => (Token::Space, 1),
        b'/' if rest.get(1) == Some(&b'*') => (Token::Space, until(2, b"*/")),
        b'-' if rest.get(1) == Some(&b'-') => (Token::Space, until(2, b"\n")),
        b'[' => (Token::Other, until(1, b"]")),
        q @ (b'\'' | b'"' | b'`') => (Token::Other, until(1, &[q])),
        b if id_char(b) => {
            let len = rest.iter().position(|&b| !id_char(b)).unwrap_or(rest.len());
            let word = &rest[..len];
            let is = |k: &str| word.eq_ignore_ascii_case(k.as_bytes());
            let token = if is("create") {
                Token::Create
            } else if is("temp") || is("temporary") {
                Token::Temp
            } else if is("trigger") {
                Token::Trigger
            } else if is("end") {
                Token::End
            } else if is("explain") {
                Token::Explain
            } else {
                Token::Other
            };
            (token, len)
        }
        _ => (Token::Other, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<&str> {
        split(script).iter().map(|s| s.text).collect()
    }

    #[test]
    fn split_follows_sqlite_statement_boundaries() {
        assert_eq!(
            texts("CREATE TABLE a(x);\n-- a comment; with a semicolon\nINSERT INTO a VALUES ('x;y');  ;;\n/* c; */ SELECT 1"),
            ["CREATE TABLE a(x);", "INSERT INTO a VALUES ('x;y');", "SELECT 1"]
        );
        assert_eq!(
            texts("CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = CASE WHEN 1 THEN 2 END;\n  DELETE FROM b;\nEND;\nCREATE TABLE \"we;ird\"([x;] TEXT, `y;` TEXT);"),
            [
                "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE a SET x = CASE WHEN 1 THEN 2 END;\n  DELETE FROM b;\nEND;",
                "CREATE TABLE \"we;ird\"([x;] TEXT, `y;` TEXT);"
            ]
        );
        assert_eq!(
            texts("create temp trigger tt before delete on a begin select 1; end; create table trigger_log(é TEXT);"),
            [
                "create temp trigger tt before delete on a begin select 1; end;",
                "create table trigger_log(é TEXT);"
            ]
        );
        assert!(split("  -- nothing\n /* at all */ ;").is_empty());
        assert_eq!(
            transaction_control("CREATE TABLE a(x);\n-- done\ncommit;").as_deref(),
            Some("statement 2 (line 3): commit;")
        );
        assert_eq!(
            transaction_control("CREATE TABLE begin_at(x); UPDATE a SET x = 1;"),
            None
        );
        let lines: Vec<usize> = split("\n\nA;\n-- x\nB;").iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 5]);
    }

    /// Every piece is a whole statement as SQLite sees it: run one by one,
    /// they build what the script builds in one go.
    #[test]
    fn split_pieces_run_as_the_whole_script() {
        let script = "CREATE TABLE a(x); CREATE TABLE b(y);\nCREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES (new.x); END;\nINSERT INTO a VALUES (1);";
        let whole = rusqlite::Connection::open_in_memory().unwrap();
        whole.execute_batch(script).unwrap();
        let pieces = rusqlite::Connection::open_in_memory().unwrap();
        for s in split(script) {
            // `prepare` refuses a piece holding more than one statement.
            pieces.prepare(s.text).unwrap().execute([]).unwrap();
        }
        let count = |c: &rusqlite::Connection| -> i64 {
            c.query_row("SELECT count(*) FROM b", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&whole), 1);
        assert_eq!(count(&pieces), 1);
    }
}
