//! `POST /v1/execute`, `POST /v1/batch` and `POST /v1/query`: the request
//! bodies, the check of their parameters (an integer must fit SQLite's
//! 64-bit INTEGER), and the handlers, which only call the runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use resilite_actors::retry_queue::EnqueueOptions;
use resilite_actors::{Error, Operation, QueryResult, Statement, WriteContext, WriteOutcome};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ApiError, AppState, JsonBody};
use crate::runtime::Durable;

/// A statement as the API receives it: the parameters stay raw JSON text
/// until [`statement`] has checked them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatement {
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

/// The `/v1/execute` request body: a statement, and whether to queue it
/// durably if the database cannot take it now.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecuteRequest {
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
pub(super) struct BatchRequest {
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

#[derive(Debug, Serialize)]
struct BatchResponse {
    results: Vec<WriteOutcome>,
}

pub(super) async fn execute(
    State(s): State<AppState>,
    Caller(context): Caller,
    JsonBody(req): JsonBody<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let stmt = statement(req.sql, req.params)?;
    if !req.durable {
        return Ok(Json(s.rt.execute_with(stmt, *context).await?).into_response());
    }
    let options = enqueue_options(req.priority, req.ordering_key);
    match s
        .rt
        .durable_with(Operation::Statement(stmt), options, Some(context))
        .await?
    {
        Durable::Applied { mut results } => Ok(Json(results.pop()).into_response()),
        Durable::Queued { id } => Ok(queued(id)),
    }
}

pub(super) async fn batch(
    State(s): State<AppState>,
    Caller(context): Caller,
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
        let results =
            s.rt.write_with(Operation::Batch(statements), *context)
                .await?;
        return Ok(Json(BatchResponse { results }).into_response());
    }
    let options = enqueue_options(req.priority, req.ordering_key);
    match s
        .rt
        .durable_with(Operation::Batch(statements), options, Some(context))
        .await?
    {
        Durable::Applied { results } => Ok(Json(BatchResponse { results }).into_response()),
        Durable::Queued { id } => Ok(queued(id)),
    }
}

pub(super) async fn query(
    State(s): State<AppState>,
    JsonBody(stmt): JsonBody<RawStatement>,
) -> Result<Json<QueryResult>, ApiError> {
    Ok(Json(s.rt.query(stmt.check()?).await?))
}

/// Longest `X-Request-Id` kept.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Who sent a write, for the operation audit: the `X-Request-Id` header
/// (or an id generated here, unique within this process) and the client's
/// address.
pub(super) struct Caller(Box<WriteContext>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let request_id = match parts.headers.get("x-request-id") {
            Some(value) => value
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES)
                .ok_or_else(|| {
                    Error::bad_input(format!(
                        "X-Request-Id must be 1 to {MAX_REQUEST_ID_BYTES} visible ASCII characters; send a shorter id or none (one is generated)"
                    ))
                })?
                .to_owned(),
            None => generated_request_id(),
        };
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string());
        Ok(Caller(Box::new(WriteContext {
            request_id: Some(request_id),
            caller: None,
            client,
        })))
    }
}

/// A request id unique within this process: its start time and a count.
fn generated_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<i64> = OnceLock::new();
    let start = START.get_or_init(resilite_actors::maintenance::now_ms);
    format!("{start:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
