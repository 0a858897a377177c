//! The HTTP API of `resilite run`. Handlers only translate between JSON and
//! the runtime handle; errors are `{"error": {"class", "message", "detail"}}`.
//!
//! Routes: `GET /health` (liveness), `GET /ready` (readiness), `GET /metrics`
//! (Prometheus), `GET /health/detailed`, `POST /v1/execute`, `POST /v1/batch`,
//! `POST /v1/query`, `GET /v1/dlq`, `GET /v1/dlq/{id}`,
//! `POST /v1/dlq/{id}/requeue`, `POST /v1/dlq/{id}/discard`, `POST /v1/dlq/{id}/fixed`. `/health/detailed` and `/v1/*` require
//! `Authorization: Bearer <token>` when a token is configured (config
//! validation requires one off loopback).
//!
//! Every bound a caller could otherwise break is set here or in
//! `server`: request bodies over `http.max_body_bytes` are refused (413,
//! before the body is read when Content-Length declares it), a body must
//! arrive within `http.body_timeout` (408), integers outside i64 are
//! refused (400), and every 4xx/5xx carries the JSON error body, with its
//! message and detail cut to a few KB.
//!
//! Not covered: a request hyper cannot parse (malformed or oversized
//! head) is answered by hyper itself, with an empty body, and the
//! connection is closed.

mod health;
mod server;

use std::future::Future;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use resilite_actors::retry_queue::{EnqueueOptions, Entry, Resolution};
use resilite_actors::{Error, ErrorClass, Operation, QueryResult, Statement, WriteOutcome};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

use crate::runtime::{Durable, Runtime};

#[derive(Clone)]
struct AppState {
    rt: Runtime,
    token: Option<String>,
    body_timeout: Duration,
}

/// A statement as the API receives it: the parameters stay raw JSON text
/// until [`statement`] has checked them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    sql: String,
    #[serde(default)]
    params: Vec<Box<RawValue>>,
}

impl RawStatement {
    fn check(self) -> Result<Statement, ApiError> {
        statement(self.sql, self.params)
    }
}

/// A statement from its SQL and raw JSON parameters.
///
/// serde_json reads an integer literal too large for u64 as a float, so
/// `99999999999999999999999` would be stored silently as a REAL. Each
/// parameter's literal is checked first: a JSON number without `.`, `e` or
/// `E` must fit SQLite's 64-bit signed INTEGER (400 otherwise). Then it is
/// converted to a [`resilite_actors::Value`] (422 for a value of no SQLite
/// type, as for any body of the wrong shape).
fn statement(sql: String, raw: Vec<Box<RawValue>>) -> Result<Statement, ApiError> {
    let mut params = Vec::with_capacity(raw.len());
    for (i, raw) in raw.iter().enumerate() {
        let text = raw.get().trim();
        let is_integer = text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            && !text.contains(['.', 'e', 'E']);
        if is_integer && text.parse::<i64>().is_err() {
            return Err(Error::bad_input(format!(
                "params[{i}]: integer {text} does not fit SQLite's 64-bit signed INTEGER ({} to {}); send it as text, or as a real with a decimal point",
                i64::MIN,
                i64::MAX
            ))
            .into());
        }
        let value = serde_json::from_str(text).map_err(|e| ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: Error::bad_input(format!("params[{i}]: {e}")),
        })?;
        params.push(value);
    }
    Ok(Statement::new(sql, params))
}

/// A JSON request body that must arrive within `http.body_timeout`.
///
/// The deadline covers the whole body, from the end of the headers to the
/// last byte. (tower-http's `RequestBodyTimeoutLayer` restarts its timer
/// on every chunk, so a client sending a byte at a time could hold a
/// connection for as long as it likes.) Only receiving the body is timed:
/// the write that follows has its own bound, `writer.statement_timeout`.
struct JsonBody<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match tokio::time::timeout(state.body_timeout, Json::<T>::from_request(req, state)).await
        {
            Ok(Ok(Json(body))) => Ok(JsonBody(body)),
            Ok(Err(rejection)) => Err(rejection.into()),
            Err(_) => Err(ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                error: Error::new(
                    ErrorClass::Timeout,
                    format!(
                        "the request body did not arrive within http.body_timeout ({}); nothing was applied",
                        humantime::format_duration(state.body_timeout)
                    ),
                    "body_timeout",
                ),
            }),
        }
    }
}

/// The `/v1/execute` request body: a statement, and whether to queue it
/// durably if the database cannot take it now.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteRequest {
    sql: String,
    #[serde(default)]
    params: Vec<Box<RawValue>>,
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
    statements: Vec<RawStatement>,
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
    let http = &rt.config().http;
    let max_body_bytes = http.max_body_bytes;
    let state = AppState {
        token: http.token.clone(),
        body_timeout: http.body_timeout,
        rt: rt.clone(),
    };
    let protected = Router::new()
        .route("/health/detailed", get(health::detailed))
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
        .route("/health", get(health::liveness))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .merge(protected)
        .fallback(not_found)
        // Both limits are max_body_bytes: tower-http answers 413 from a
        // declared Content-Length before reading the body; axum's stops a
        // chunked body at the limit (its own default would be 2 MB).
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Serve the API on `listener` until `shutdown` completes, then let
/// in-flight requests finish. Connections are bounded by the `[http]`
/// settings (see the `server` module).
pub async fn serve(
    rt: Runtime,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = rt.config().http.clone();
    server::serve(router(rt), listener, &http, shutdown).await
}

async fn execute(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let stmt = statement(req.sql, req.params)?;
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
    JsonBody(req): JsonBody<BatchRequest>,
) -> Result<Response, ApiError> {
    if req.statements.is_empty() {
        return Err(Error::bad_input("`statements` is empty: send at least one statement").into());
    }
    let statements = req
        .statements
        .into_iter()
        .map(RawStatement::check)
        .collect::<Result<Vec<_>, _>>()?;
    if !req.durable {
        let results = s.rt.batch(statements).await?;
        return Ok(Json(BatchResponse { results }).into_response());
    }
    let options = enqueue_options(req.priority, req.ordering_key);
    match s
        .rt
        .execute_durable(Operation::Batch(statements), options)
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
    JsonBody(stmt): JsonBody<RawStatement>,
) -> Result<Json<QueryResult>, ApiError> {
    Ok(Json(s.rt.query(stmt.check()?).await?))
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: Error::bad_input(
            "no such route: use GET /health, /ready, /metrics, /health/detailed, /v1/dlq, or POST /v1/execute, /v1/batch, /v1/query",
        ),
    }
}

/// Give every error response that is not JSON yet (axum's 405, tower-http's
/// 413, ...) the API's JSON error body.
async fn json_errors(method: Method, uri: Uri, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let reason = status.canonical_reason().unwrap_or("error");
    let (class, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorClass::BadInput,
            // axum adds the Allow header after this layer has run.
            format!(
                "{method} is not allowed on {}: the Allow header lists the methods it takes",
                uri.path()
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            ErrorClass::BadInput,
            "the request body is larger than http.max_body_bytes".to_string(),
        ),
        StatusCode::REQUEST_TIMEOUT => (
            ErrorClass::Timeout,
            "the request did not arrive in time".to_string(),
        ),
        StatusCode::UNAUTHORIZED => (
            ErrorClass::Unauthorized,
            ErrorClass::Unauthorized.user_message().to_string(),
        ),
        s if s.is_client_error() => (
            ErrorClass::BadInput,
            format!("the request is invalid: {reason}"),
        ),
        _ => (ErrorClass::Internal, format!("internal error: {reason}")),
    };
    ApiError {
        status,
        error: Error::new(class, message, format!("{} {reason}", status.as_u16())),
    }
    .into_response()
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

/// The most bytes of an error's message, and of its detail, in a response.
const MAX_ERROR_TEXT: usize = 4096;

/// `text` cut to at most `max` bytes (at a character boundary), with a
/// marker saying how much was left out.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… ({more} bytes more)"));
    text
}

impl IntoResponse for ApiError {
    /// The JSON error body, its message and detail cut to
    /// [`MAX_ERROR_TEXT`] bytes each, so that a huge bad request never
    /// comes back as a huge answer.
    fn into_response(self) -> Response {
        let mut error = self.error;
        error.message = bounded(error.message, MAX_ERROR_TEXT);
        error.detail = bounded(error.detail, MAX_ERROR_TEXT);
        if self.status.is_server_error() {
            tracing::warn!(class = ?error.class, detail = %error.detail, "request failed");
        }
        (self.status, Json(serde_json::json!({ "error": error }))).into_response()
    }
}
