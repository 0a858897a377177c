//! Text with its literals taken out, so that one error or one query seen
//! with different values is recognised as the same: numbers, quoted
//! strings and blobs become `?`, runs of `?, ?` one `?`, whitespace one
//! space. Used for the error log's signatures and the slow-query log's
//! hashes; the hash is the first 16 hex digits of a SHA-256.

use sha2::{Digest, Sha256};

/// `sql` with its literals replaced by `?`. Identifiers in double quotes
/// or brackets are kept (they name tables and columns).
pub fn sql(sql: &str) -> String {
    strip(sql, false)
}

/// An error message with its literals replaced by `?`; double-quoted text
/// is taken out too (SQLite quotes values there as well as names).
pub fn message(message: &str) -> String {
    strip(message, true)
}

/// The first 16 hex digits of the SHA-256 of `parts` joined by NUL.
pub fn hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    crate::backup::hex(&hasher.finalize()[..8])
}

fn strip(text: &str, double_quotes_are_values: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    while i < chars.len() {
        let c = chars[i];
        let prev_word = out.chars().last().is_some_and(word);
        if c == '\'' || (c == '"' && double_quotes_are_values) {
            // A quoted value; a doubled quote inside is part of it.
            let quote = c;
            i += 1;
            while i < chars.len() {
                if chars[i] == quote {
                    if chars.get(i + 1) == Some(&quote) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            // A blob literal: X'..'.
            if matches!(out.chars().last(), Some('x' | 'X'))
                && !out.chars().rev().nth(1).is_some_and(word)
            {
                out.pop();
            }
            out.push('?');
        } else if c.is_ascii_digit() && !prev_word {
            // A number (with a decimal part, an exponent or hex digits).
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            if !out.ends_with('?') {
                out.push('?');
            }
        } else if c == '?' {
            // A numbered parameter is a parameter.
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            out.push('?');
        } else if c.is_whitespace() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if !out.is_empty() {
                out.push(' ');
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    collapse_lists(out.trim_end())
}

/// `(?, ?, ?)` as `(?)`, so that lists of any length are one shape.
fn collapse_lists(text: &str) -> String {
    let mut out = text.to_string();
    for from in ["?, ?", "?,?"] {
        while out.contains(from) {
            out = out.replace(from, "?");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(
            sql("SELECT * FROM t1 WHERE a = 42 AND b = 'x''y' AND c IN (1, 2,3) AND d = X'00ff' AND e = ?3"),
            "SELECT * FROM t1 WHERE a = ? AND b = ? AND c IN (?) AND d = ? AND e = ?"
        );
        assert_eq!(
            sql("select  \"weird name\"\n from t where x > -1.5e3"),
            "select \"weird name\" from t where x > -?"
        );
        assert_eq!(
            message("UNIQUE constraint failed: t.id; sql: INSERT INTO t VALUES (17, \"a\")"),
            "UNIQUE constraint failed: t.id; sql: INSERT INTO t VALUES (?)"
        );
        assert_eq!(
            message("UNIQUE constraint failed: t.id; sql: INSERT INTO t VALUES (9)"),
            message("UNIQUE constraint failed: t.id; sql: INSERT INTO t VALUES (123456)")
        );
    }

    #[test]
    fn hashes_are_short_and_stable() {
        assert_eq!(hash(&["a", "b"]).len(), 16);
        assert_eq!(hash(&["a", "b"]), hash(&["a", "b"]));
        assert_ne!(hash(&["ab", ""]), hash(&["a", "b"]));
    }
}
