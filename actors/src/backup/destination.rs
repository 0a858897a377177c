//! Where backups are kept: the [`Destination`] interface and its local
//! directory implementation, [`LocalDir`]. A destination stores named
//! files (a backup `<name>.db` or `<name>.db.zst` and its sidecar
//! `<name>.db.json` or `<name>.db.zst.json`); it knows
//! nothing about SQLite, so another backend (object storage) can be added
//! without touching the actor.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mode of every file a destination creates: owner read/write only (a
/// backup holds the whole database).
pub const FILE_MODE: u32 = 0o600;

/// Suffix of a file being written; never listed.
const TEMP_SUFFIX: &str = ".tmp";

/// A place that keeps backup files by name.
///
/// Names are plain file names: [`check_name`] refuses an empty name, one
/// with a `/` or `\`, one starting with `.`, and `..`. Every method refuses
/// such a name with `bad_input` before touching anything.
pub trait Destination: Send + Sync {
    /// A new, empty local file (mode 0600) to build the file `name` in,
    /// under a temporary name that [`list`](Self::list) never shows.
    /// Hand it to [`put`](Self::put) when it is complete.
    fn stage(&self, name: &str) -> Result<PathBuf>;

    /// Store the complete local file `staged` (from [`stage`](Self::stage))
    /// as `name`, replacing one of that name. Atomic and durable: once it
    /// returns `Ok`, `name` holds exactly those bytes and survives a power
    /// loss; until then a reader sees the old state, never a part. The
    /// staged file is consumed (moved or removed) either way. Returns the
    /// size in bytes.
    fn put(&self, name: &str, staged: &Path) -> Result<u64>;

    /// Store `bytes` as `name`, atomically and durably, like
    /// [`put`](Self::put).
    fn put_bytes(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// The names of the complete files, sorted; files being written are
    /// not listed. An absent destination lists nothing.
    fn list(&self) -> Result<Vec<String>>;

    /// A local path from which `name` can be read as it was stored (for
    /// the local directory, the file itself). `not found` (`bad_input`)
    /// when there is no such file.
    fn read_path(&self, name: &str) -> Result<PathBuf>;

    /// Delete `name`, durably. Deleting a name that does not exist is
    /// `Ok` (a deletion interrupted before being recorded can be redone).
    fn delete(&self, name: &str) -> Result<()>;
}

/// Refuse a name that is not a plain file name: it could reach outside the
/// destination.
pub fn check_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.contains('/')
        || name.contains('\\')
        || name.contains("..")
        || name.starts_with('.')
        || name.contains('\0');
    if bad {
        return Err(Error::bad_input(format!(
            "invalid backup name {name:?}: give the name of a backup as `resilite backups` lists it (e.g. app-20260101T000000.000Z-manual.db), not a path"
        )));
    }
    Ok(())
}

/// A directory on a local file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// Backups in `dir` (created when the first one is written).
    pub fn new(dir: impl Into<PathBuf>) -> LocalDir {
        LocalDir { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn create_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::from(e).during("create backup directory", &self.dir))
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}{TEMP_SUFFIX}"))
    }

    /// fsync the directory, so that a rename or deletion in it is durable.
    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::from(e).during("fsync backup directory", &self.dir))
    }

    fn create_new(path: &Path) -> Result<File> {
        create_private(path).map_err(|e| Error::from(e).during("create backup file", path))
    }
}

/// Create (or truncate) `path` for writing with mode 0600: a backup, or a
/// copy of one, holds the database's data.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

impl Destination for LocalDir {
    fn stage(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        self.create_dir()?;
        let temp = self.temp_path(name);
        LocalDir::create_new(&temp)?;
        Ok(temp)
    }

    fn put(&self, name: &str, staged: &Path) -> Result<u64> {
        check_name(name)?;
        self.create_dir()?;
        let target = self.dir.join(name);
        let result = (|| {
            let in_place = staged.parent() == Some(self.dir.as_path());
            let temp = if in_place {
                staged.to_path_buf()
            } else {
                let temp = self.temp_path(name);
                let mut out = LocalDir::create_new(&temp)?;
                let mut input =
                    File::open(staged).map_err(|e| Error::from(e).during("read", staged))?;
                std::io::copy(&mut input, &mut out)
                    .map_err(|e| Error::from(e).during("copy backup", &temp))?;
                temp
            };
            let file = File::open(&temp).map_err(|e| Error::from(e).during("open", &temp))?;
            file.sync_all()
                .map_err(|e| Error::from(e).during("fsync backup", &temp))?;
            let size = file
                .metadata()
                .map_err(|e| Error::from(e).during("stat", &temp))?
                .len();
            std::fs::rename(&temp, &target)
                .map_err(|e| Error::from(e).during("rename backup", &target))?;
            self.sync_dir()?;
            Ok(size)
        })();
        let _ = std::fs::remove_file(staged);
        result
    }

    fn put_bytes(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let temp = self.stage(name)?;
        let written = OpenOptions::new()
            .write(true)
            .open(&temp)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| Error::from(e).during("write", &temp));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        self.put(name, &temp).map(|_| ())
    }

    fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::from(e).during("list backups", &self.dir)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::from(e).during("list backups", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if check_name(&name).is_ok() && entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn read_path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        let path = self.dir.join(name);
        if !path.is_file() {
            return Err(Error::bad_input(format!(
                "backup {name} not found in {}: list them with `resilite backups`",
                self.dir.display()
            )));
        }
        Ok(path)
    }

    fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from(e).during("delete backup", &path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn local_dir_put_is_atomic_private_and_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = LocalDir::new(tmp.path().join("b"));
        assert!(dest.list().unwrap().is_empty());
        let staged = dest.stage("a.db").unwrap();
        std::fs::write(&staged, b"hello").unwrap();
        assert!(
            dest.list().unwrap().is_empty(),
            "a staged file is not listed"
        );
        assert_eq!(dest.put("a.db", &staged).unwrap(), 5);
        dest.put_bytes("a.db.json", b"{}").unwrap();
        assert_eq!(dest.list().unwrap(), ["a.db", "a.db.json"]);
        let path = dest.read_path("a.db").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        dest.delete("a.db").unwrap();
        dest.delete("a.db").unwrap();
        assert_eq!(dest.list().unwrap(), ["a.db.json"]);
    }

    #[test]
    fn local_dir_refuses_path_like_names() {
        let dest = LocalDir::new("/tmp/nowhere");
        for name in ["", "../x.db", "a/b.db", "..", ".hidden", "x/../y"] {
            assert!(dest.read_path(name).is_err(), "{name}");
            assert!(dest.delete(name).is_err(), "{name}");
        }
    }
}
