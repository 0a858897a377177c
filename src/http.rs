//! The HTTP API of `resilite run`. Handlers only translate between JSON and
//! the runtime handle; errors are `{"error": {"class", "message", "detail"}}`.
//!
//! Routes: `GET /health` (liveness), `GET /ready` (readiness), `GET /metrics`
//! (Prometheus), `GET /health/detailed`, `POST /v1/execute`, `POST /v1/batch`,
//! `POST /v1/query`, `GET /v1/dlq`, `GET /v1/dlq/{id}`,
//! `POST /v1/dlq/{id}/requeue`, `POST /v1/dlq/{id}/discard`, `POST /v1/dlq/{id}/fixed`. `/health/detailed` and `/v1/*` require
//! `Authorization: Bearer <token>` when a token is configured (config
//! validation requires one off loopback).

use std::future::Future;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use resilite_actors::health::{HealthReport, HealthStatus};
use resilite_actors::retry_queue::{EnqueueOptions, Entry, Resolution};
use resilite_actors::{Error, ErrorClass, Operation, QueryResult, Statement, WriteOutcome};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::runtime::{Durable, Runtime, Status};

#[derive(Clone)]
struct AppState {
    rt: Runtime,
    token: Option<String>,
}

/// The `/v1/execute` request body: a statement, and whether to queue it
/// durably if the database cannot take it now.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteRequest {
    sql: String,
    #[serde(default)]
    params: Vec<resilite_actors::Value>,
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    ordering_key: Option<String>,
}

/// The `/v1/batch` request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    statements: Vec<Statement>,
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    ordering_key: Option<String>,
}

/// Queue options from a request's `priority` and `ordering_key`.
fn enqueue_options(priority: Option<u8>, ordering_key: Option<String>) -> EnqueueOptions {
    let defaults = EnqueueOptions::default();
    EnqueueOptions {
        priority: priority.unwrap_or(defaults.priority),
        ordering_key,
        max_attempts: None,
    }
}

/// 202 with the queue id of a write stored for replay.
fn queued(id: i64) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "status": "queued", "id": id })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqQuery {
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Serialize)]
struct BatchResponse {
    results: Vec<WriteOutcome>,
}

/// The router of the HTTP API over `rt`.
pub fn router(rt: Runtime) -> Router {
    let state = AppState {
        token: rt.config().http.token.clone(),
        rt: rt.clone(),
    };
    let protected = Router::new()
        .route("/health/detailed", get(health_detailed))
        .route("/v1/execute", post(execute))
        .route("/v1/batch", post(batch))
        .route("/v1/query", post(query))
        .route("/v1/dlq", get(dlq_list))
        .route("/v1/dlq/{id}", get(dlq_show))
        .route("/v1/dlq/{id}/requeue", post(dlq_requeue))
        .route("/v1/dlq/{id}/discard", post(dlq_discard))
        .route("/v1/dlq/{id}/fixed", post(dlq_fixed))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(rt.config().http.max_body_bytes))
        .with_state(state)
}

/// Serve the API on `listener` until `shutdown` completes, then let
/// in-flight requests finish.
pub async fn serve(
    rt: Runtime,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(rt))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The `/health` body: the latest check's status and rule, and the
/// runtime's own state.
#[derive(Debug, Serialize)]
struct Liveness {
    status: &'static str,
    rule: String,
    checked_at_ms: Option<i64>,
    runtime: Status,
}

/// Liveness: 200 unless the latest check is CRITICAL or UNKNOWN or an actor
/// failed past its restart limit (503).
async fn health(State(s): State<AppState>) -> Response {
    let runtime = s.rt.status();
    let latest = s.rt.latest_health();
    let mut body = Liveness {
        status: latest.as_ref().map_or("PENDING", |r| r.status.as_str()),
        rule: latest.as_ref().map_or_else(
            || "the first health check has not finished yet".into(),
            |r| r.rule.clone(),
        ),
        checked_at_ms: latest.as_ref().map(|r| r.checked_at_ms),
        runtime,
    };
    let mut live = !matches!(body.status, "CRITICAL" | "UNKNOWN");
    let down = match &body.runtime {
        Status::Failed(reason) => Some(reason.clone()),
        Status::Stopped => Some("resilite is shut down".into()),
        Status::Healthy | Status::Restarting => None,
    };
    if let Some(reason) = down {
        live = false;
        body.status = HealthStatus::Critical.as_str();
        body.rule = reason;
    }
    let code = if live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Readiness: 200 while the runtime takes writes, else 503 with the reason.
async fn ready(State(s): State<AppState>) -> Response {
    match s.rt.ready() {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

/// Every check, figure, recommendation and actor state of the latest check.
async fn health_detailed(State(s): State<AppState>) -> Result<Json<HealthReport>, ApiError> {
    Ok(Json(s.rt.health().await?))
}

/// Prometheus text format.
async fn metrics() -> Response {
    match crate::metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => ApiError {
            status: StatusCode::NOT_FOUND,
            error: Error::unavailable(
                "metrics are not exported: the application installed its own metrics recorder",
            ),
        }
        .into_response(),
    }
}

async fn execute(
    State(s): State<AppState>,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let stmt = Statement::new(req.sql, req.params);
    if !req.durable {
        return Ok(Json(s.rt.execute(stmt).await?).into_response());
    }
    let options = enqueue_options(req.priority, req.ordering_key);
    match s
        .rt
        .execute_durable(Operation::Statement(stmt), options)
        .await?
    {
        Durable::Applied { mut results } => Ok(Json(results.pop()).into_response()),
        Durable::Queued { id } => Ok(queued(id)),
    }
}

async fn batch(
    State(s): State<AppState>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    if req.statements.is_empty() {
        return Err(Error::bad_input("`statements` is empty: send at least one statement").into());
    }
    if !req.durable {
        let results = s.rt.batch(req.statements).await?;
        return Ok(Json(BatchResponse { results }).into_response());
    }
    let options = enqueue_options(req.priority, req.ordering_key);
    match s
        .rt
        .execute_durable(Operation::Batch(req.statements), options)
        .await?
    {
        Durable::Applied { results } => Ok(Json(BatchResponse { results }).into_response()),
        Durable::Queued { id } => Ok(queued(id)),
    }
}

/// The dead-letter queue; `?all=true` includes discarded entries.
async fn dlq_list(
    State(s): State<AppState>,
    query: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| Error::bad_input(e.body_text()))?;
    let entries = s.rt.dead_letters(q.all).await?;
    Ok(Json(serde_json::json!({ "entries": entries })))
}

async fn dlq_show(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Entry>, ApiError> {
    let id = entry_id(id)?;
    s.rt.queue_entry(id)
        .await?
        .map(Json)
        .ok_or_else(|| no_entry(id))
}

async fn dlq_requeue(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = entry_id(id)?;
    match s.rt.requeue(Some(id)).await? {
        0 => Err(no_entry(id)),
        n => Ok(Json(serde_json::json!({ "requeued": n }))),
    }
}

async fn dlq_discard(
    state: State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    dlq_resolve(state, id, Resolution::Discarded).await
}

async fn dlq_fixed(
    state: State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    dlq_resolve(state, id, Resolution::Fixed).await
}

/// Close a dead entry: `{"discarded": id}` or `{"fixed": id}`.
async fn dlq_resolve(
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
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: Error::bad_input(format!(
            "no dead-letter entry {id}: list them with GET /v1/dlq"
        )),
    }
}

async fn query(
    State(s): State<AppState>,
    body: Result<Json<Statement>, JsonRejection>,
) -> Result<Json<QueryResult>, ApiError> {
    let Json(stmt) = body?;
    Ok(Json(s.rt.query(stmt).await?))
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: Error::bad_input(
            "no such route: use GET /health, /ready, /metrics, /health/detailed, /v1/dlq, or POST /v1/execute, /v1/batch, /v1/query",
        ),
    }
}

async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            let error = Error::classed(ErrorClass::Unauthorized, "unauthorized");
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                error,
            }
            .into_response();
        }
    }
    next.run(req).await
}

/// Compare secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error as the API returns it.
struct ApiError {
    status: StatusCode,
    error: Error,
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = match error.class {
            ErrorClass::BadInput | ErrorClass::Sql => StatusCode::BAD_REQUEST,
            ErrorClass::Constraint => StatusCode::CONFLICT,
            ErrorClass::Forbidden => StatusCode::FORBIDDEN,
            ErrorClass::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorClass::Transient | ErrorClass::Unavailable | ErrorClass::Permission => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, error }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than http.max_body_bytes".to_string()
        } else {
            format!("the request body is not valid: {}", rejection.body_text())
        };
        ApiError {
            status,
            error: Error::new(ErrorClass::BadInput, message, rejection.body_text()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(class = ?self.error.class, detail = %self.error.detail, "request failed");
        }
        (
            self.status,
            Json(serde_json::json!({ "error": self.error })),
        )
            .into_response()
    }
}
