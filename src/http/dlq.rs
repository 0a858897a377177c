//! The dead-letter queue over HTTP: `GET /v1/dlq` (`?all=true` includes
//! discarded entries), `GET /v1/dlq/{id}`, and `POST /v1/dlq/{id}/requeue`,
//! `/discard` and `/fixed`.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use resilite_actors::retry_queue::{Entry, Resolution};
use resilite_actors::Error;
use serde::Deserialize;

use super::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DlqQuery {
    #[serde(default)]
    all: bool,
}

/// The dead-letter queue; `?all=true` includes discarded entries.
pub(super) async fn list(
    State(s): State<AppState>,
    query: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| Error::bad_input(e.body_text()))?;
    let entries = s.rt.dead_letters(q.all).await?;
    Ok(Json(serde_json::json!({ "entries": entries })))
}

pub(super) async fn show(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Entry>, ApiError> {
    let id = entry_id(id)?;
    s.rt.queue_entry(id)
        .await?
        .map(Json)
        .ok_or_else(|| no_entry(id))
}

pub(super) async fn requeue(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = entry_id(id)?;
    match s.rt.requeue(Some(id)).await? {
        0 => Err(no_entry(id)),
        n => Ok(Json(serde_json::json!({ "requeued": n }))),
    }
}

pub(super) async fn discard(
    state: State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    resolve(state, id, Resolution::Discarded).await
}

pub(super) async fn fixed(
    state: State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    resolve(state, id, Resolution::Fixed).await
}

/// Close a dead entry: `{"discarded": id}` or `{"fixed": id}`.
async fn resolve(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    resolution: Resolution,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = entry_id(id)?;
    if !s.rt.resolve(id, resolution).await? {
        return Err(no_entry(id));
    }
    Ok(Json(serde_json::json!({ resolution.as_str(): id })))
}

fn entry_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    id.map(|Path(id)| id).map_err(|e| {
        Error::bad_input(format!(
            "the entry id must be an integer: {}",
            e.body_text()
        ))
        .into()
    })
}

fn no_entry(id: i64) -> ApiError {
    ApiError::not_found(format!(
        "no dead-letter entry {id}: list them with GET /v1/dlq"
    ))
}
