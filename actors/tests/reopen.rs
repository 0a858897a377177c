//! The writer and the read pool close and reopen on the same path while
//! their handles stay valid, so a file can be swapped underneath them (what
//! a restore does): driven through the writer's messages and the pool's API.

use std::path::Path;

use ractor::Actor;
use resilite_actors::{
    DbOptions, ErrorClass, Operation, ReadPool, ReadPoolConfig, Statement, Value, WriterActor,
    WriterConfig, WriterMsg,
};

fn insert(v: &str) -> Operation {
    Operation::Statement(Statement::new(
        "INSERT INTO t(v) VALUES (?1)",
        [Value::from(v)],
    ))
}

fn database_holding(path: &Path, v: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE t(v TEXT)").unwrap();
    conn.execute("INSERT INTO t(v) VALUES (?1)", [v]).unwrap();
}

/// A swapped file is what the writer and the readers see after reopening;
/// while closed, a write is refused and never applied, and no connection
/// holds the old file (its -wal and -shm are gone).
///
/// Property 1: Connection Recovery Behavior. The writer and the read pool
/// drop their connections and open new ones on the same path, their
/// handles valid throughout, and then see the file now there.
#[tokio::test]
async fn writer_and_readers_reopen_on_a_swapped_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let (writer, _) = WriterActor::spawn(None, WriterActor, WriterConfig::new(DbOptions::new(&db)))
        .await
        .unwrap();
    let handle = ractor::call!(writer, WriterMsg::Handle).unwrap();
    let write = |op| {
        let handle = handle.clone();
        async move { handle.write(op).await.unwrap() }
    };
    write(Operation::Statement(Statement::sql(
        "CREATE TABLE t(v TEXT)",
    )))
    .await
    .unwrap();
    write(insert("old")).await.unwrap();
    let readers = ReadPool::start(ReadPoolConfig {
        db: DbOptions::new(&db),
        pool_size: 2,
        max_rows: 100,
        max_response_bytes: 1 << 20,
        query_timeout: std::time::Duration::from_secs(5),
    })
    .unwrap();
    let all = || readers.query(Statement::sql("SELECT v FROM t ORDER BY rowid"));
    assert_eq!(all().await.unwrap().rows, vec![vec![Value::from("old")]]);

    readers.close().await.unwrap();
    ractor::call!(writer, WriterMsg::Close).unwrap().unwrap();
    let refused = write(insert("lost")).await.unwrap_err();
    assert_eq!(refused.class, ErrorClass::Unavailable, "{refused}");
    assert_eq!(all().await.unwrap_err().class, ErrorClass::Unavailable);
    for side in ["app.db-wal", "app.db-shm"] {
        assert!(
            !dir.path().join(side).exists(),
            "{side} left by a closed connection"
        );
    }

    let replacement = dir.path().join("replacement.db");
    database_holding(&replacement, "new");
    std::fs::rename(&replacement, &db).unwrap();

    ractor::call!(writer, WriterMsg::Open).unwrap().unwrap();
    readers.open();
    write(insert("after")).await.unwrap();
    assert_eq!(
        all().await.unwrap().rows,
        vec![vec![Value::from("new")], vec![Value::from("after")]]
    );
    drop(handle);
    writer.stop_and_wait(None, None).await.unwrap();
}
