//! Where migrations come from, and their checksums.
//!
//! A source is either a directory of `NNNN_name.up.sql` files, each with an
//! optional `NNNN_name.down.sql` ([`Migrations::from_dir`]), or a list the
//! application builds ([`Migrations::new`]). Either way: versions are
//! unique, from 1 to 2^31 - 1 (`PRAGMA user_version` is a signed 32-bit
//! number), names are letters, digits, `_` and `-`, and an up script is not
//! empty. In a directory, a `.sql` file whose name does not match the
//! pattern, two files of one version, a down script without its up script
//! are errors naming the files; other files (a README) are ignored.
//!
//! The checksum of a migration is the SHA-256 of its up script with line
//! endings made `\n` (CRLF and CR both), in hex: a checkout that turned
//! `\n` into `\r\n` changes no checksum.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The suffix of an up script's file.
pub const UP_SUFFIX: &str = ".up.sql";
/// The suffix of a down script's file.
pub const DOWN_SUFFIX: &str = ".down.sql";

/// One migration: a version, a name, the script that applies it and,
/// optionally, the script that undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    version: u32,
    name: String,
    up: String,
    down: Option<String>,
    /// The files it was read from (up, down), when from a directory.
    files: Option<(PathBuf, Option<PathBuf>)>,
}

impl Migration {
    /// Migration `version` (1 and up), called `name` (letters, digits, `_`
    /// and `-`), applied by `up` (one or more SQL statements). Checked when
    /// put in a [`Migrations`].
    pub fn new(version: u32, name: impl Into<String>, up: impl Into<String>) -> Migration {
        Migration {
            version,
            name: name.into(),
            up: up.into(),
            down: None,
            files: None,
        }
    }

    /// This migration with `down`, the script that undoes it (run by a
    /// rollback, `migrate --to N`).
    pub fn with_down(mut self, down: impl Into<String>) -> Migration {
        self.down = Some(down.into());
        self
    }

    /// Its version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The script that applies it.
    pub fn up(&self) -> &str {
        &self.up
    }

    /// The script that undoes it, if it has one.
    pub fn down(&self) -> Option<&str> {
        self.down.as_deref()
    }

    /// The SHA-256 of the up script, line endings normalised (see the
    /// module doc), in hex.
    pub fn checksum(&self) -> String {
        checksum(&self.up)
    }

    /// The file of its up script, when it was read from a directory.
    pub fn up_file(&self) -> Option<&Path> {
        self.files.as_ref().map(|(up, _)| up.as_path())
    }

    /// The file of its down script, when it was read from a directory and
    /// has one.
    pub fn down_file(&self) -> Option<&Path> {
        self.files.as_ref().and_then(|(_, down)| down.as_deref())
    }

    /// Why a script of this migration cannot run in resilite's transaction
    /// (it controls transactions itself), naming the script and statement.
    fn transaction_control(&self) -> Option<String> {
        let mut scripts = vec![(false, self.up.as_str())];
        scripts.extend(self.down.as_deref().map(|d| (true, d)));
        scripts.into_iter().find_map(|(down, text)| {
            super::script::transaction_control(text).map(|at| {
                format!(
                    "{}, {at}: each migration runs in a transaction resilite owns; remove BEGIN, COMMIT and the like from the script",
                    self.script_name(down)
                )
            })
        })
    }

    /// `migration 3 (add_email)`, as errors name it.
    pub fn label(&self) -> String {
        format!("migration {} ({})", self.version, self.name)
    }

    /// Where its up script comes from, as errors name it: the file name,
    /// or `the up script of migration 3 (add_email)`.
    pub(crate) fn script_name(&self, down: bool) -> String {
        let file = if down {
            self.down_file()
        } else {
            self.up_file()
        };
        match file.and_then(Path::file_name) {
            Some(name) => name.to_string_lossy().into_owned(),
            None => format!(
                "the {} script of {}",
                if down { "down" } else { "up" },
                self.label()
            ),
        }
    }
}

/// The migrations of an application, in version order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Migrations {
    list: Vec<Migration>,
    dir: Option<PathBuf>,
}

impl Migrations {
    /// The migrations in `list`, which must be in increasing version order
    /// with no version twice; each version from 1 to 2^31 - 1, each name
    /// letters, digits, `_` and `-`, each up script not empty. A `bad_input`
    /// error names every migration that is not.
    pub fn new(list: Vec<Migration>) -> Result<Migrations> {
        let mut problems = Vec::new();
        for m in &list {
            problems.extend(check_version(m.version, &m.label()));
            problems.extend(check_name(&m.name, &m.label()));
            if m.up.trim().is_empty() {
                problems.push(format!("{}: the up script is empty", m.label()));
            }
            problems.extend(m.transaction_control());
        }
        for pair in list.windows(2) {
            if pair[1].version <= pair[0].version {
                problems.push(format!(
                    "{} comes after {}: versions must be unique and increasing",
                    pair[1].label(),
                    pair[0].label()
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::bad_input(format!(
                "the migrations cannot be used: {}",
                problems.join("; ")
            )));
        }
        Ok(Migrations { list, dir: None })
    }

    /// The migrations in the directory `dir`: `NNNN_name.up.sql`, each with
    /// an optional `NNNN_name.down.sql` (see the module doc). A `bad_input`
    /// error names every file that does not fit.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Migrations> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::bad_input(format!(
                "cannot read the migrations directory {}: {e}",
                dir.display()
            ))
            .during("read migrations", dir)
        })?;
        let mut ups: BTreeMap<u32, Vec<(String, PathBuf)>> = BTreeMap::new();
        let mut downs: BTreeMap<u32, Vec<(String, PathBuf)>> = BTreeMap::new();
        let mut problems = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                Error::bad_input(format!(
                    "cannot read the migrations directory {}: {e}",
                    dir.display()
                ))
            })?;
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let file = entry.file_name();
            let Some(file) = file.to_str() else {
                if file
                    .to_string_lossy()
                    .to_ascii_lowercase()
                    .ends_with(".sql")
                {
                    problems.push(format!("{}: the file name is not UTF-8", path.display()));
                }
                continue;
            };
            if !file.to_ascii_lowercase().ends_with(".sql") {
                continue; // a README, a .gitkeep: not a migration
            }
            match parse_file_name(file) {
                Ok((version, name, is_down)) => {
                    let into = if is_down { &mut downs } else { &mut ups };
                    into.entry(version).or_default().push((name, path));
                }
                Err(why) => problems.push(format!("{file}: {why}")),
            }
        }
        let mut list = Vec::new();
        for (version, files) in &ups {
            if files.len() > 1 {
                problems.push(format!(
                    "version {version} is used by more than one up script: {}",
                    file_names(files)
                ));
                continue;
            }
            let (name, up_path) = &files[0];
            let down = match downs.get(version).map(Vec::as_slice) {
                None => None,
                Some([(down_name, down_path)]) if down_name == name => Some(down_path),
                Some([(_, down_path)]) => {
                    problems.push(format!(
                        "{} does not match its up script {} (the names differ)",
                        file_name(down_path),
                        file_name(up_path)
                    ));
                    continue;
                }
                Some(more) => {
                    problems.push(format!(
                        "version {version} has more than one down script: {}",
                        file_names(more)
                    ));
                    continue;
                }
            };
            let up = match read_script(up_path) {
                Ok(up) => up,
                Err(why) => {
                    problems.push(why);
                    continue;
                }
            };
            let down_script = match down.map(|p| read_script(p)).transpose() {
                Ok(d) => d,
                Err(why) => {
                    problems.push(why);
                    continue;
                }
            };
            if up.trim().is_empty() {
                problems.push(format!("{}: the up script is empty", file_name(up_path)));
                continue;
            }
            let migration = Migration {
                version: *version,
                name: name.clone(),
                up,
                down: down_script,
                files: Some((up_path.clone(), down.cloned())),
            };
            match migration.transaction_control() {
                Some(why) => problems.push(why),
                None => list.push(migration),
            }
        }
        for (version, files) in &downs {
            if !ups.contains_key(version) {
                problems.push(format!(
                    "{} has no up script (expected {})",
                    file_names(files),
                    files
                        .iter()
                        .map(|(name, _)| format!("{version:04}_{name}{UP_SUFFIX}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::bad_input(format!(
                "the migrations in {} cannot be used: {}",
                dir.display(),
                problems.join("; ")
            ))
            .during("read migrations", dir));
        }
        Ok(Migrations {
            list,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// The migrations, in version order.
    pub fn iter(&self) -> std::slice::Iter<'_, Migration> {
        self.list.iter()
    }

    /// The migration of `version`, if there is one.
    pub fn get(&self, version: u32) -> Option<&Migration> {
        self.list
            .binary_search_by_key(&version, |m| m.version)
            .ok()
            .map(|i| &self.list[i])
    }

    /// The highest version, `None` when there is no migration.
    pub fn latest(&self) -> Option<u32> {
        self.list.last().map(|m| m.version)
    }

    /// How many migrations there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when there is no migration.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The directory they were read from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

impl<'a> IntoIterator for &'a Migrations {
    type Item = &'a Migration;
    type IntoIter = std::slice::Iter<'a, Migration>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The SHA-256 of `script` with CRLF and CR made LF, in lowercase hex.
pub fn checksum(script: &str) -> String {
    let normalised = script.replace("\r\n", "\n").replace('\r', "\n");
    Sha256::digest(normalised.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `NNNN_name.up.sql` or `NNNN_name.down.sql`: (version, name, is down).
fn parse_file_name(file: &str) -> std::result::Result<(u32, String, bool), String> {
    const PATTERN: &str = "does not match NNNN_name.up.sql or NNNN_name.down.sql (a version of digits, `_`, a name of letters, digits, `_` or `-`)";
    let (stem, is_down) = if let Some(stem) = file.strip_suffix(UP_SUFFIX) {
        (stem, false)
    } else if let Some(stem) = file.strip_suffix(DOWN_SUFFIX) {
        (stem, true)
    } else {
        return Err(PATTERN.into());
    };
    let Some((digits, name)) = stem.split_once('_') else {
        return Err(PATTERN.into());
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !valid_name(name) {
        return Err(PATTERN.into());
    }
    let version: u32 = digits
        .parse()
        .map_err(|_| format!("the version {digits} is too large"))?;
    let label = format!("version {version}");
    if let Some(why) = check_version(version, &label) {
        return Err(why);
    }
    Ok((version, name.to_string(), is_down))
}

fn check_version(version: u32, label: &str) -> Option<String> {
    (version == 0 || version > i32::MAX as u32).then(|| {
        format!(
            "{label}: a version is from 1 to {} (`PRAGMA user_version` is a signed 32-bit number; 0 means no migration)",
            i32::MAX
        )
    })
}

fn check_name(name: &str, label: &str) -> Option<String> {
    (!valid_name(name))
        .then(|| format!("{label}: a name is letters, digits, `_` or `-`, and not empty"))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn read_script(path: &Path) -> std::result::Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", file_name(path)))?;
    String::from_utf8(bytes).map_err(|_| format!("{}: the script is not UTF-8", file_name(path)))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

fn file_names(files: &[(String, PathBuf)]) -> String {
    let mut names: Vec<String> = files.iter().map(|(_, p)| file_name(p)).collect();
    names.sort();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn checksum_ignores_line_ending_style_only() {
        let lf = checksum("CREATE TABLE a(x);\nCREATE TABLE b(y);\n");
        assert_eq!(lf, checksum("CREATE TABLE a(x);\r\nCREATE TABLE b(y);\r\n"));
        assert_eq!(lf, checksum("CREATE TABLE a(x);\rCREATE TABLE b(y);\r"));
        assert_ne!(lf, checksum("CREATE TABLE a(x);\nCREATE TABLE b(z);\n"));
        assert_eq!(lf.len(), 64);
    }

    #[test]
    fn from_dir_reads_ups_and_downs_in_version_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "0002_add_email.up.sql",
            "ALTER TABLE users ADD COLUMN email TEXT;",
        );
        write(
            dir.path(),
            "0001_create_users.up.sql",
            "CREATE TABLE users(id INTEGER PRIMARY KEY);",
        );
        write(
            dir.path(),
            "0001_create_users.down.sql",
            "DROP TABLE users;",
        );
        write(dir.path(), "README.md", "not a migration");
        std::fs::create_dir(dir.path().join("old")).unwrap();
        let m = Migrations::from_dir(dir.path()).unwrap();
        let versions: Vec<(u32, &str, bool)> = m
            .iter()
            .map(|m| (m.version(), m.name(), m.down().is_some()))
            .collect();
        assert_eq!(
            versions,
            [(1, "create_users", true), (2, "add_email", false)]
        );
        assert_eq!(m.latest(), Some(2));
        assert_eq!(
            m.get(1).unwrap().script_name(true),
            "0001_create_users.down.sql"
        );
    }

    #[test]
    fn from_dir_names_every_file_that_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "0001_a.up.sql", "SELECT 1;");
        write(dir.path(), "001_b.up.sql", "SELECT 1;");
        write(dir.path(), "0002-bad.up.sql", "SELECT 1;");
        write(dir.path(), "0003_orphan.down.sql", "SELECT 1;");
        write(dir.path(), "0004_c.up.sql", "SELECT 1;");
        write(dir.path(), "0004_d.down.sql", "SELECT 1;");
        write(dir.path(), "0005_empty.up.sql", " \n");
        write(dir.path(), "init.sql", "SELECT 1;");
        let e = Migrations::from_dir(dir.path()).unwrap_err();
        for expected in [
            "version 1 is used by more than one up script: 0001_a.up.sql, 001_b.up.sql",
            "0002-bad.up.sql: does not match",
            "0003_orphan.down.sql has no up script (expected 0003_orphan.up.sql)",
            "0004_d.down.sql does not match its up script 0004_c.up.sql",
            "0005_empty.up.sql: the up script is empty",
            "init.sql: does not match",
        ] {
            assert!(
                e.message.contains(expected),
                "{expected:?} not in {}",
                e.message
            );
        }
        let missing = Migrations::from_dir(dir.path().join("nope")).unwrap_err();
        assert!(
            missing
                .message
                .contains("cannot read the migrations directory"),
            "{missing}"
        );
    }

    #[test]
    fn new_checks_order_versions_and_names() {
        assert!(Migrations::new(vec![
            Migration::new(1, "a", "SELECT 1"),
            Migration::new(2, "b", "SELECT 1").with_down("SELECT 2"),
        ])
        .is_ok());
        let e = Migrations::new(vec![
            Migration::new(2, "b", "SELECT 1"),
            Migration::new(2, "c", "SELECT 1"),
            Migration::new(0, "zero", "SELECT 1"),
            Migration::new(3, "sp ace", ""),
        ])
        .unwrap_err();
        for expected in [
            "migration 2 (c) comes after migration 2 (b)",
            "migration 0 (zero): a version is from 1",
            "migration 3 (sp ace): a name is letters",
            "migration 3 (sp ace): the up script is empty",
        ] {
            assert!(
                e.message.contains(expected),
                "{expected:?} not in {}",
                e.message
            );
        }
    }
}
