//! Resource samples over HTTP: `GET /v1/resources?limit=N`, the newest N
//! (default 60, at most 10000), newest first, as
//! `{"samples": [...]}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use resilite_actors::Error;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::runtime::resource_limit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResourcesQuery {
    limit: Option<usize>,
}

/// The newest resource samples.
pub(super) async fn list(
    State(s): State<AppState>,
    query: Result<Query<ResourcesQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| Error::bad_input(e.body_text()))?;
    let samples = s.rt.resource_samples(resource_limit(q.limit)?).await?;
    Ok(Json(serde_json::json!({ "samples": samples })))
}
