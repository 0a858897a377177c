//! `cargo run --example axum_embedded` then
//! `curl -XPOST localhost:3000/notes -d 'buy milk'` and `curl localhost:3000/notes`.
//!
//! An axum service that embeds resilite: every write goes through the
//! single supervised writer (group commit, retries), reads use the pool.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use resilite::{Config, Runtime, Statement, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::start(Config::for_database("./data/notes.db")).await?;
    rt.execute(Statement::sql(
        "CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    ))
    .await?;

    let app = Router::new()
        .route("/notes", get(list).post(add))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("notes service on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Commit what is queued and checkpoint before exiting.
    rt.shutdown().await?;
    Ok(())
}

async fn add(State(rt): State<Runtime>, body: String) -> Result<String, (StatusCode, String)> {
    let out = rt
        .execute(Statement::new(
            "INSERT INTO notes(body) VALUES (?1)",
            [Value::from(body)],
        ))
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.message))?;
    Ok(format!("note {} saved\n", out.last_insert_rowid))
}

async fn list(State(rt): State<Runtime>) -> Result<Json<Vec<Vec<Value>>>, (StatusCode, String)> {
    let result = rt
        .query(Statement::sql("SELECT id, body FROM notes ORDER BY id"))
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.message))?;
    Ok(Json(result.rows))
}
