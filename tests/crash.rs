//! Crash safety of a real process: `resilite run` is SIGKILLed in the middle
//! of a write load, again and again on the same database; every write it
//! acknowledged before the kill is there afterwards and the file is intact.

mod server;

use std::time::Duration;

use reqwest::{Client, StatusCode};
use resilite::{Operation, Value};
use resilite_actors::journal::op_log;
use serde_json::json;

const WRITERS: i64 = 16;
/// No scheduled backup: the operation log is never trimmed, so it can be
/// compared with the whole table.
const NO_BACKUPS: &str = "\n[backup]\ninterval = \"0s\"\n";

/// `resilite run` killed with SIGKILL under 16 writers, rounds in a row on
/// one database: every write acknowledged before a kill is there at the
/// end and `integrity_check` is ok.
///
/// Property 1: Connection Recovery Behavior. The hardest connection loss,
/// the process killed mid-write, is recovered by the next start: the
/// database reopens intact with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_mid_load_loses_no_acknowledged_write() {
    let rounds = server::soak("ROUNDS", 5);
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let mut acked: Vec<i64> = Vec::new();
    for round in 0..rounds {
        let mut s = server::start(&dir, NO_BACKUPS);
        let r = c
            .post(s.url("/v1/execute"))
            .json(&json!({"sql": "CREATE TABLE IF NOT EXISTS k(id INTEGER PRIMARY KEY, round INTEGER)"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let mut tasks = Vec::new();
        for task in 0..WRITERS {
            let (c, url) = (c.clone(), s.url("/v1/execute"));
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                for i in 0..1_000_000i64 {
                    let id = round * 100_000_000 + task * 1_000_000 + i;
                    let body =
                        json!({"sql": "INSERT INTO k VALUES (?1, ?2)", "params": [id, round]});
                    match c.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == StatusCode::OK => ok.push(id),
                        _ => break,
                    }
                }
                ok
            }));
        }
        // Kill at a different moment each round.
        tokio::time::sleep(Duration::from_millis(200 + 97 * (round % 10) as u64)).await;
        tokio::task::block_in_place(|| s.kill_hard());
        let mut this_round = 0;
        for t in tasks {
            let ok = t.await.unwrap();
            this_round += ok.len();
            acked.extend(ok);
        }
        println!("round {round}: {this_round} writes acknowledged before SIGKILL");
        assert!(
            this_round > 0,
            "round {round} acknowledged nothing: the test would prove nothing"
        );
    }
    let conn = rusqlite::Connection::open(dir.path().join("data").join("app.db")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mut present = conn.prepare("SELECT 1 FROM k WHERE id = ?1").unwrap();
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !present.exists([id]).unwrap())
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    println!(
        "{} acknowledged writes over {rounds} kills, none lost",
        acked.len()
    );
    drop(present);
    drop(conn);
    log_matches_the_database(&dir);
}

/// After the kills, one more start settles the operation log against the
/// file: every insert the database holds is in the log or inside a
/// recorded gap (a kill between the database's commit and the log's), and
/// the log holds no insert the database does not (a row written beside a
/// commit the kill interrupted), nothing left pending.
///
/// Property 17: Comprehensive Operation Logging, under SIGKILL.
fn log_matches_the_database(dir: &tempfile::TempDir) {
    // Listening means the writer opened (and settled the log) already.
    server::start(dir, NO_BACKUPS).kill_hard();
    let db = rusqlite::Connection::open(dir.path().join("data").join("app.db")).unwrap();
    let journal =
        rusqlite::Connection::open(dir.path().join("data").join("app.db.journal")).unwrap();
    let held: std::collections::HashSet<i64> = db
        .prepare("SELECT id FROM k")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let logged: Vec<(i64, i64)> = op_log::after(&journal, 0, usize::MAX >> 1)
        .unwrap()
        .into_iter()
        .filter_map(|o| match o.op {
            Operation::Statement(st) if st.sql.starts_with("INSERT INTO k") => match st.params[0] {
                Value::Integer(id) => Some((o.seq, id)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let phantoms: Vec<_> = logged.iter().filter(|(_, id)| !held.contains(id)).collect();
    assert!(
        phantoms.is_empty(),
        "logged but not in the database: {phantoms:?}"
    );
    let gaps = op_log::gaps(&journal).unwrap();
    let in_log: std::collections::HashSet<i64> = logged.iter().map(|(_, id)| *id).collect();
    let missing = held.iter().filter(|id| !in_log.contains(id)).count();
    let gap_ops: i64 = gaps.iter().map(|g| g.through_seq - g.after_seq).sum();
    assert!(
        missing as i64 <= gap_ops,
        "{missing} rows of the database are neither logged nor inside a gap ({gap_ops} operations in gaps)"
    );
    let pending = op_log::pending(&journal).unwrap();
    assert_eq!(pending, 0);
    println!(
        "log: {} inserts, {} gaps ({gap_ops} operations), no phantom",
        logged.len(),
        gaps.len()
    );
}
