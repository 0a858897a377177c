//! Backups from the command line (no server) and over HTTP: `resilite
//! backup`, `backups`, `verify` with their exit codes, and the
//! token-protected `/v1/backups` routes, which take names, never paths.

mod server;

use server::{resilite, text};

use std::path::Path;
use std::process::Command;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-s3cret-s3cret";

fn make_db(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (1), (2), (3);",
    )
    .unwrap();
}

#[test]
fn cli_backup_backups_and_verify_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    make_db(&db);
    let db_arg = db.to_str().unwrap();

    let out = resilite(&["backup", "--db", db_arg, "--label", "nightly"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("verified"), "{}", text(&out));

    let out = resilite(&["backups", "--db", db_arg, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["label"], "nightly");
    assert_eq!(listed[0]["verified"], true);
    assert_eq!(listed[0]["row_counts"]["t"], 3);
    let name = listed[0]["name"].as_str().unwrap();
    let file = dir.path().join("data").join("backups").join(name);
    let out = resilite(&["backups", "--db", db_arg]);
    assert!(text(&out).contains(name), "{}", text(&out));

    let out = resilite(&["verify", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = resilite(&["verify", "--trial-restore", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("trial restore"), "{}", text(&out));

    // It opens in the stock sqlite3 shell, when one is installed.
    match Command::new("sqlite3")
        .arg(&file)
        .arg("PRAGMA integrity_check")
        .output()
    {
        Ok(out) => assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "{}",
            text(&out)
        ),
        Err(_) => eprintln!("sqlite3 is not installed: the shell check is skipped"),
    }

    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let out = resilite(&["verify", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("checksum mismatch"), "{}", text(&out));

    // --dir elsewhere.
    let other = dir.path().join("elsewhere");
    let out = resilite(&["backup", "--db", db_arg, "--dir", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 2);

    // Failures say what and how to fix.
    let missing = dir.path().join("missing.db");
    let out = resilite(&["backup", "--db", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("does not exist; pass an existing database with --db"),
        "{}",
        text(&out)
    );
    let out = resilite(&["backup", "--db", db_arg, "--label", "../x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("invalid backup label"),
        "{}",
        text(&out)
    );
    let out = resilite(&["verify", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

async fn call(
    c: &Client,
    s: &server::Server,
    post: bool,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = if post {
        c.post(s.url(path))
    } else {
        c.get(s.url(path))
    }
    .bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn http_backups_take_list_verify_and_refuse_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(&dir, &format!("token = \"{TOKEN}\""));
    let c = Client::new();
    let (status, info) = call(
        &c,
        &s,
        true,
        "/v1/backups",
        Some(json!({"label": "pre-migration"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["verified"], true);
    let name = info["name"].as_str().unwrap().to_string();
    assert!(name.ends_with("-pre-migration.db"), "{name}");

    let (status, listed) = call(&c, &s, false, "/v1/backups", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["backups"][0]["name"], name.as_str());

    let (status, v) = call(&c, &s, true, &format!("/v1/backups/{name}/verify"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["passed"], true);

    for bad in ["..%2Fapp.db", "..x.db", "a%2Fb.db", "%2Fetc%2Fpasswd"] {
        let (status, body) = call(&c, &s, true, &format!("/v1/backups/{bad}/verify"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not a path"), "{bad}: {body}");
    }
    let (status, body) = call(&c, &s, true, "/v1/backups", Some(json!({"label": "a b"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Token-protected.
    let r = c.get(s.url("/v1/backups")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// `resilite backups` shows each backup's stored size and, for a
/// compressed one, the size of the database inside (from its sidecar), in
/// text and JSON; without the sidecar it says the size is unknown.
#[test]
fn cli_backups_lists_stored_and_uncompressed_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    make_db(&db);
    let db_arg = db.to_str().unwrap();
    for compress in ["none", "zstd"] {
        let out = resilite(&["backup", "--db", db_arg, "--compress", compress]);
        assert!(out.status.success(), "{}", text(&out));
    }

    let out = resilite(&["backups", "--db", db_arg, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (plain, zst) = (&listed[0], &listed[1]);
    assert!(plain["name"].as_str().unwrap().ends_with(".db"), "{plain}");
    assert!(zst["name"].as_str().unwrap().ends_with(".db.zst"), "{zst}");
    assert_eq!(plain.get("uncompressed_size"), None, "{plain}");
    // The same database both times: the compressed one holds as many bytes
    // as the plain one stores, in fewer.
    let plain_size = plain["size"].as_u64().unwrap();
    let zst_size = zst["size"].as_u64().unwrap();
    assert_eq!(zst["uncompressed_size"].as_u64(), Some(plain_size), "{zst}");
    assert!(zst_size < plain_size, "{zst}");

    let out = resilite(&["backups", "--db", db_arg]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].ends_with(&format!("  {plain_size} bytes  verified")),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with(&format!(
            "  {zst_size} bytes (zstd; {plain_size} uncompressed)  verified"
        )),
        "{stdout}"
    );

    // Looked for elsewhere, the sidecar is not found: the stored size is
    // still shown, the other one said to be unknown.
    let elsewhere = dir.path().join("elsewhere");
    let out = resilite(&[
        "backups",
        "--db",
        db_arg,
        "--dir",
        elsewhere.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "  {zst_size} bytes (zstd; uncompressed size unknown: sidecar not read)"
        )),
        "{stdout}"
    );
}

/// `GET /v1/backups` lists a compressed backup with its stored and
/// uncompressed sizes.
#[tokio::test]
async fn http_backups_list_shows_uncompressed_size() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start_with_env(
        &dir,
        &format!("token = \"{TOKEN}\""),
        &[("RESILITE_BACKUP_COMPRESS", "zstd")],
    );
    let c = Client::new();
    let (status, info) = call(&c, &s, true, "/v1/backups", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    let (status, listed) = call(&c, &s, false, "/v1/backups", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = &listed["backups"][0];
    assert_eq!(listed["name"], info["name"]);
    assert!(
        listed["name"].as_str().unwrap().ends_with(".db.zst"),
        "{listed}"
    );
    let size = listed["size"].as_u64().unwrap();
    let plain = listed["uncompressed_size"].as_u64().unwrap();
    assert_eq!(
        plain,
        4096 * listed["page_count"].as_u64().unwrap(),
        "{listed}"
    );
    assert!(size > 0 && size < plain, "{listed}");
}

/// `resilite verify --trial-restore` catches a backup that passes the
/// standard checks but cannot be opened read-write (write version 3 in
/// its header, with the sidecar's checksum matching it).
#[test]
fn cli_verify_trial_restore_fails_a_backup_that_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    make_db(&db);
    let out = resilite(&["backup", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let backups = dir.path().join("data").join("backups");
    let name = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".db"))
        .unwrap();
    let file = backups.join(&name);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[18] = 3;
    std::fs::write(&file, bytes).unwrap();
    let sidecar = backups.join(format!("{name}.json"));
    let mut info: Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    info["sha256"] = resilite_actors::backup::sha256(&file).unwrap().into();
    std::fs::write(&sidecar, serde_json::to_vec(&info).unwrap()).unwrap();

    let out = resilite(&["verify", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = resilite(&["verify", "--trial-restore", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("trial restore: the restored copy does not open read-write"),
        "{}",
        text(&out)
    );
}

fn rows(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// `resilite backup --compress zstd` writes a `.db.zst`; `resilite verify`
/// (with and without a trial restore) and `resilite restore` take it; one
/// changed byte fails verification (exit 1) and the restore is refused,
/// the database untouched.
#[test]
fn cli_compressed_backup_verify_restore_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    make_db(&db);
    let db_arg = db.to_str().unwrap();
    let out = resilite(&[
        "backup",
        "--db",
        db_arg,
        "--compress",
        "zstd",
        "--compress-level",
        "5",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("uncompressed"), "{}", text(&out));
    let backups = dir.path().join("data").join("backups");
    let name = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".db.zst"))
        .expect("a .db.zst backup");
    let file = backups.join(&name);
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(backups.join(format!("{name}.json"))).unwrap())
            .unwrap();
    assert!(sidecar["uncompressed_size"].as_u64().unwrap() > sidecar["size"].as_u64().unwrap());

    for args in [vec!["verify"], vec!["verify", "--trial-restore"]] {
        let mut args = args;
        args.push(file.to_str().unwrap());
        let out = resilite(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }

    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("INSERT INTO t VALUES (4)", [])
        .unwrap();
    assert_eq!(rows(&db), 4);
    let out = resilite(&["restore", "--db", db_arg, file.to_str().unwrap(), "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rows(&db), 3);

    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let out = resilite(&["verify", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("checksum mismatch"), "{}", text(&out));
    let before = std::fs::read(&db).unwrap();
    let out = resilite(&["restore", "--db", db_arg, file.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("failed verification"), "{}", text(&out));
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the database was not changed"
    );

    let out = resilite(&["backup", "--db", db_arg, "--compress", "gzip"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--compress"), "{}", text(&out));
    let out = resilite(&[
        "backup",
        "--db",
        db_arg,
        "--compress",
        "zstd",
        "--compress-level",
        "30",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--compress-level"), "{}", text(&out));
}

/// Run `resilite args` under a pseudo-terminal (util-linux `script`), so
/// that stderr is a terminal; what the terminal showed, or `None` when
/// `script` is not installed.
fn on_a_terminal(args: &[&str]) -> Option<String> {
    let line = std::iter::once(env!("CARGO_BIN_EXE_resilite"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .ok()?;
    assert!(out.status.success(), "{}", text(&out));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `backup`, `verify` and `restore` draw a progress bar on stderr for a
/// large file (16 MiB or more) when stderr is a terminal, and none when it
/// is piped or for a small file.
#[test]
fn cli_progress_bar_only_on_a_terminal_and_for_large_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(v);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4400)
         INSERT INTO t SELECT randomblob(4000) FROM n;
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
    drop(conn);
    assert!(std::fs::metadata(&db).unwrap().len() > 17 << 20);
    let db_arg = db.to_str().unwrap();
    // A bar: its text, and the carriage return and line clearing it is
    // redrawn with (logs have colours, but neither of those).
    let bar_marks = |s: &str| s.contains('\r') || s.contains("\x1b[2K") || s.contains("eta ");

    // Piped: no bar, whatever the size.
    let out = resilite(&["backup", "--db", db_arg]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!bar_marks(&err), "{err:?}");
    let backups = dir.path().join("data").join("backups");
    let file = backups.join(
        std::fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .find(|n| n.ends_with(".db"))
            .unwrap(),
    );
    let file_arg = file.to_str().unwrap();
    for args in [
        vec!["verify", file_arg],
        vec!["restore", "--db", db_arg, file_arg, "--yes"],
    ] {
        let out = resilite(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!bar_marks(&err), "{args:?}: {err:?}");
    }

    // On a terminal: a bar for each verb on the large file.
    let Some(shown) = on_a_terminal(&["verify", file_arg]) else {
        eprintln!("script is not installed: the terminal check is skipped");
        return;
    };
    assert!(
        shown.contains("verify [") && shown.contains("MiB"),
        "{shown:?}"
    );
    assert!(shown.contains(": ok"), "{shown:?}");
    let shown = on_a_terminal(&["backup", "--db", db_arg, "--compress", "zstd"]).unwrap();
    assert!(
        shown.contains("backup [") && shown.contains("verify ["),
        "{shown:?}"
    );
    let shown = on_a_terminal(&["restore", "--db", db_arg, file_arg, "--yes"]).unwrap();
    assert!(
        shown.contains("verify [") && shown.contains("pre-restore ["),
        "{shown:?}"
    );

    // A small file: no bar even on a terminal.
    let small = dir.path().join("small").join("app.db");
    make_db(&small);
    let shown = on_a_terminal(&["backup", "--db", small.to_str().unwrap()]).unwrap();
    assert!(!shown.contains("eta "), "{shown:?}");
}
