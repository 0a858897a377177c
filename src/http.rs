//! The HTTP API of `resilite run`. Handlers only translate between JSON and
//! the runtime handle; errors are `{"error": {"class", "message", "detail"}}`.
//!
//! Routes: `GET /health` (liveness), `GET /ready` (readiness), `GET /metrics`
//! (Prometheus), `GET /health/detailed`, `POST /v1/execute`, `POST /v1/batch`,
//! `POST /v1/query`. `/health/detailed` and `/v1/*` require
//! `Authorization: Bearer <token>` when a token is configured (config
//! validation requires one off loopback).

use std::future::Future;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use resilite_actors::health::{HealthReport, HealthStatus};
use resilite_actors::{Error, ErrorClass, QueryResult, Statement, WriteOutcome};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::runtime::{Runtime, Status};

#[derive(Clone)]
struct AppState {
    rt: Runtime,
    token: Option<String>,
}

/// The `/v1/batch` request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    statements: Vec<Statement>,
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
    body: Result<Json<Statement>, JsonRejection>,
) -> Result<Json<WriteOutcome>, ApiError> {
    let Json(stmt) = body?;
    Ok(Json(s.rt.execute(stmt).await?))
}

async fn batch(
    State(s): State<AppState>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let Json(req) = body?;
    if req.statements.is_empty() {
        return Err(Error::bad_input("`statements` is empty: send at least one statement").into());
    }
    let results = s.rt.batch(req.statements).await?;
    Ok(Json(BatchResponse { results }))
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
            "no such route: use GET /health, /ready, /metrics, /health/detailed, or POST /v1/execute, /v1/batch, /v1/query",
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
            let error = Error::new(
                ErrorClass::BadInput,
                "missing or wrong bearer token: send `Authorization: Bearer <http.token>`",
                "unauthorized",
            );
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
