//! The HTTP API of `resilite run`. Handlers only translate between JSON and
//! the runtime handle; errors are `{"error": {"class", "message", "detail"}}`.
//!
//! Routes: `GET /health`, `POST /v1/execute`, `POST /v1/batch`,
//! `POST /v1/query`. `/v1/*` requires `Authorization: Bearer <token>` when a
//! token is configured (config validation requires one off loopback).

use std::future::Future;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
    let v1 = Router::new()
        .route("/v1/execute", post(execute))
        .route("/v1/batch", post(batch))
        .route("/v1/query", post(query))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .merge(v1)
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

async fn health(State(s): State<AppState>) -> Response {
    let status = s.rt.status();
    let code = match status {
        Status::Healthy => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(status)).into_response()
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
            "no such route: use GET /health, POST /v1/execute, /v1/batch or /v1/query",
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
