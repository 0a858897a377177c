//! The checks of `Runtime::start` before any actor runs: the journal is not
//! the database under another name, the application database opens and is
//! a database, then the journal opens and is one this binary can use. The
//! application database is checked first, so a database that is refused
//! never gets a journal; and when a check fails, the files and directories
//! this start created are removed again, leaving the disk as it was.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use resilite_actors::connection::open_read_write;
use resilite_actors::{journal, DbOptions, Error, ErrorClass, Result};

use crate::config::Config;

/// Run the checks on tokio's blocking pool.
pub(crate) async fn check(config: &Config) -> Result<()> {
    let app = config.app_db();
    let journal = config.journal_db();
    tokio::task::spawn_blocking(move || check_blocking(&app, &journal))
        .await
        .map_err(|e| Error::classed(ErrorClass::Internal, format!("startup checks: {e}")))?
}

fn check_blocking(app: &DbOptions, journal: &DbOptions) -> Result<()> {
    not_the_same_file(&app.path, &journal.path)?;
    resilite_actors::backup::remove_stale_staged(&app.path);
    let created = Created::before(&[&app.path, &journal.path]);
    let result = check_app(app).and_then(|()| check_journal(journal));
    if result.is_err() {
        created.remove();
    }
    result
}

fn check_app(db: &DbOptions) -> Result<()> {
    let opened = open_read_write(db).and_then(|conn| {
        // A file that is not a database may open; reading the schema tells.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| {
            let mut err = Error::from(e);
            err.detail = format!("{}: {}", db.path.display(), err.detail);
            err
        })
    });
    match opened {
        Ok(_) => Ok(()),
        Err(e) if e.class == ErrorClass::Corruption => Err(Error::new(
            ErrorClass::Corruption,
            format!(
                "{} is not an SQLite database, or is damaged: restore it from a verified backup, or set database.path to another file",
                db.path.display()
            ),
            e.detail,
        )),
        Err(e) => Err(name_key(e, "database.path")),
    }
}

/// Whether the file at `db` exists and SQLite cannot read it as a
/// database (corrupt, or not a database at all); opened read-only, so
/// nothing is created or changed.
pub(crate) fn is_damaged(db: &DbOptions) -> bool {
    db.path.is_file()
        && matches!(
            resilite_actors::connection::open_read_only(db).and_then(|c| Ok(c.query_row(
                "SELECT count(*) FROM sqlite_master",
                [],
                |r| r.get::<_, i64>(0)
            )?)),
            Err(e) if e.class == ErrorClass::Corruption
        )
}

fn check_journal(db: &DbOptions) -> Result<()> {
    journal::check(db).map_err(|e| name_key(e, "database.journal_path"))
}

/// A problem with the path itself says which config key holds it.
fn name_key(mut err: Error, key: &str) -> Error {
    if matches!(err.class, ErrorClass::BadInput | ErrorClass::Permission)
        && !err.message.contains(key)
    {
        err.message = format!("config key `{key}`: {}", err.message);
    }
    err
}

/// The journal must be its own file: not the database through a symlink,
/// a hard link or another spelling of the path, nor one of SQLite's files
/// beside the database.
fn not_the_same_file(db: &Path, journal: &Path) -> Result<()> {
    let same = match (fs::metadata(db), fs::metadata(journal)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => resolve(db) == resolve(journal),
    };
    let resolved = resolve(journal);
    let db_resolved = resolve(db);
    let sidecar = ["-wal", "-shm", "-journal"].into_iter().find(|suffix| {
        let mut p = db_resolved.clone().into_os_string();
        p.push(suffix);
        p == resolved.as_os_str()
    });
    if !same && sidecar.is_none() {
        return Ok(());
    }
    let what = match sidecar {
        Some(suffix) => format!("is the database's own {suffix} file"),
        None => "is the application database itself (through a symlink, a hard link or another spelling of the path)".into(),
    };
    Err(Error::new(
        ErrorClass::BadInput,
        format!(
            "config key `database.journal_path` = \"{}\" {what} ({}): the journal needs its own file; remove the key to use \"{}.journal\"",
            journal.display(),
            db.display(),
            db.display()
        ),
        format!(
            "{} resolves to {}",
            journal.display(),
            resolve(journal).display()
        ),
    ))
}

/// `path` with its symlinks followed, also when it (or the file a symlink
/// names) does not exist yet: the canonical form of the part that exists,
/// joined with the rest.
fn resolve(path: &Path) -> PathBuf {
    resolve_depth(path, 0)
}

fn resolve_depth(path: &Path, depth: usize) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(canonical) = fs::canonicalize(&path) {
        return canonical;
    }
    let parent = path.parent();
    if depth < 40 {
        // A symlink to a file that does not exist yet.
        if let Ok(target) = fs::read_link(&path) {
            let base = parent.unwrap_or(Path::new("/"));
            return resolve_depth(&base.join(target), depth + 1);
        }
    }
    match (parent, path.file_name()) {
        (Some(parent), Some(name)) if depth < 40 => resolve_depth(parent, depth + 1).join(name),
        _ => path,
    }
}

/// The files and directories a start may create that did not exist before.
struct Created {
    files: Vec<PathBuf>,
    /// Deepest first.
    dirs: Vec<PathBuf>,
}

impl Created {
    fn before(paths: &[&Path]) -> Created {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for path in paths {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                let file = PathBuf::from(file);
                if fs::symlink_metadata(&file).is_err() {
                    files.push(file);
                }
            }
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
                if fs::symlink_metadata(d).is_ok() {
                    break;
                }
                if !dirs.iter().any(|known| known == d) {
                    dirs.push(d.to_path_buf());
                }
                dir = d.parent();
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        Created { files, dirs }
    }

    /// Remove what was created since [`Created::before`]; a directory only
    /// when it is empty.
    fn remove(self) {
        for file in &self.files {
            if fs::symlink_metadata(file).is_ok_and(|m| m.is_file()) {
                if let Err(e) = fs::remove_file(file) {
                    tracing::warn!(file = %file.display(), error = %e, "could not remove a file this start created");
                }
            }
        }
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_follows_a_symlink_to_a_file_not_yet_created() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let link = dir.path().join("journal");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        assert_eq!(resolve(&link), resolve(&db));
        assert!(not_the_same_file(&db, &link).is_err());
        let spelled = dir.path().join("sub").join("..").join("app.db");
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(not_the_same_file(&db, &spelled).is_err());
        assert!(not_the_same_file(&db, &dir.path().join("app.db-wal")).is_err());
        assert!(not_the_same_file(&db, &dir.path().join("app.db.journal")).is_ok());
    }
}
