//! The audit trail over HTTP: `GET /v1/events` (`?since=1h&kind=..&severity=..&limit=..&before=<id>`,
//! newest first, `next` is the `before` of the next page), `GET /v1/errors`,
//! `POST /v1/errors/{signature}/resolve`, `GET /v1/slow-queries` and
//! `GET /v1/audit` (`?since=1h&status=..&table=..&limit=..&before=<id>`, the
//! operation audit, paged like the events).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use resilite_actors::{AuditPage, Error, EventPage};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::runtime::{audit_query, event_query};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    since: Option<String>,
    kind: Option<String>,
    severity: Option<String>,
    limit: Option<usize>,
    before: Option<i64>,
}

/// One page of events, newest first.
pub(super) async fn events(
    State(s): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(q) = query.map_err(|e| Error::bad_input(e.body_text()))?;
    let query = event_query(
        q.since.as_deref(),
        q.kind.as_deref(),
        q.severity.as_deref(),
        q.limit,
        q.before,
    )?;
    Ok(Json(s.rt.events(query).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    since: Option<String>,
    status: Option<String>,
    table: Option<String>,
    limit: Option<usize>,
    before: Option<i64>,
}

/// One page of the operation audit, newest first.
pub(super) async fn operations(
    State(s): State<AppState>,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(q) = query.map_err(|e| Error::bad_input(e.body_text()))?;
    let query = audit_query(
        q.since.as_deref(),
        q.status.as_deref(),
        q.table.as_deref(),
        q.limit,
        q.before,
    )?;
    Ok(Json(s.rt.audit(query).await?))
}

/// The error log, most recently seen first.
pub(super) async fn errors(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let errors = s.rt.errors().await?;
    Ok(Json(serde_json::json!({ "errors": errors })))
}

/// Mark an error signature resolved.
pub(super) async fn resolve(
    State(s): State<AppState>,
    signature: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(signature) = signature.map_err(|e| Error::bad_input(e.body_text()))?;
    if s.rt.resolve_error(&signature).await? {
        Ok(Json(serde_json::json!({ "resolved": signature })))
    } else {
        Err(ApiError::not_found(format!(
            "no error signature {signature} in the error log: list them with GET /v1/errors"
        )))
    }
}

/// The slow-query log, slowest in total first.
pub(super) async fn slow_queries(
    State(s): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let queries = s.rt.slow_queries().await?;
    Ok(Json(serde_json::json!({ "slow_queries": queries })))
}
