//! The HTTP API of `resilite run`. Handlers only translate between JSON and
//! the runtime handle; errors are `{"error": {"class", "message", "detail"}}`.
//!
//! Routes: `GET /health` (liveness), `GET /ready` (readiness), `GET /metrics`
//! (Prometheus), `GET /health/detailed`, `POST /v1/execute`, `POST /v1/batch`,
//! `POST /v1/query`, `GET /v1/dlq`, `GET /v1/dlq/{id}`,
//! `POST /v1/dlq/{id}/requeue`, `POST /v1/dlq/{id}/discard`, `POST /v1/dlq/{id}/fixed`,
//! `GET /v1/backups`, `POST /v1/backups`, `POST /v1/backups/{name}/verify`,
//! `POST /v1/restore`, `POST /v1/recover`, `GET /v1/recoveries`, `GET /v1/migrations`,
//! `GET /v1/schema`, `POST /v1/schema/fix`, `GET /v1/schema/findings`,
//! `POST /v1/schema/findings/{id}/acknowledge`, `GET /v1/events`, `GET /v1/errors`,
//! `POST /v1/errors/{signature}/resolve`, `GET /v1/slow-queries`, `GET /v1/resources`, `GET /v1/archives`,
//! `POST /v1/archives/run`, `POST /v1/archives/{id}/verify`, `POST /v1/archives/{id}/restore`, `GET /v1/audit`. `/health/detailed` and `/v1/*` require
//! `Authorization: Bearer <token>` when a token is configured (config
//! validation requires one off loopback).
//!
//!
//! Every bound a caller could otherwise break is set in this module tree
//! or in `server`: request bodies over `http.max_body_bytes` are refused
//! (413, before the body is read when Content-Length declares it), a body
//! must arrive within `http.body_timeout` (408), integers outside i64 are
//! refused (400), and every 4xx/5xx carries the JSON error body, with its
//! message and detail cut to a few KB.
//!
//! Not covered: a request hyper cannot parse (malformed or oversized
//! head) is answered by hyper itself, with an empty body, and the
//! connection is closed.
//!
//! # Layout
//!
//! - this module: the router, its shared state, the bearer-token check and
//!   the JSON body extractor with its `http.body_timeout` deadline.
//! - `statements`: `/v1/execute`, `/v1/batch` and `/v1/query`, their
//!   request bodies and the check of integer parameters.
//! - `dlq`: the `/v1/dlq` routes over the dead-letter queue.
//! - `archives`: the `/v1/archives` routes (list, run, verify, restore).
//! - `backups`: the `/v1/backups` routes (take, list, verify), `/v1/restore`,
//!   `/v1/recover` and `/v1/recoveries`.
//! - `migrations`: `/v1/migrations`, the migration status.
//! - `schema`: `/v1/schema` (validate against `[schema] file`),
//!   `/v1/schema/fix` and `/v1/schema/findings`.
//! - `config`: `POST /v1/config/reload`, the hot reload of the config file.
//! - `audit`: the audit trail: `/v1/events`, `/v1/errors`,
//!   `/v1/slow-queries` and `/v1/audit`.
//! - `resources`: `/v1/resources`, the resource samples.
//! - `errors`: `ApiError` (status and JSON body), the layer that gives
//!   every error response that body, and the bound on its text.
//! - `health`: `/health`, `/ready`, `/health/detailed` and `/metrics`.
//! - `server`: the accept loop, connection bounds and graceful shutdown.

mod archives;
mod audit;
mod backups;
mod config;
mod dlq;
mod errors;
mod health;
mod migrations;
mod resources;
mod schema;
mod server;
mod statements;

use std::future::Future;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use resilite_actors::{Error, ErrorClass};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

use crate::runtime::Runtime;
use errors::{json_errors, ApiError};

#[derive(Clone)]
struct AppState {
    rt: Runtime,
    body_timeout: Duration,
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

/// The router of the HTTP API over `rt`.
pub fn router(rt: Runtime) -> Router {
    let http = &rt.config().http;
    let max_body_bytes = http.max_body_bytes;
    let state = AppState {
        body_timeout: http.body_timeout,
        rt: rt.clone(),
    };
    let protected = Router::new()
        .route("/health/detailed", get(health::detailed))
        .route("/v1/execute", post(statements::execute))
        .route("/v1/batch", post(statements::batch))
        .route("/v1/query", post(statements::query))
        .route("/v1/dlq", get(dlq::list))
        .route("/v1/dlq/{id}", get(dlq::show))
        .route("/v1/dlq/{id}/requeue", post(dlq::requeue))
        .route("/v1/dlq/{id}/discard", post(dlq::discard))
        .route("/v1/dlq/{id}/fixed", post(dlq::fixed))
        .route("/v1/archives", get(archives::list))
        .route("/v1/archives/run", post(archives::run))
        .route("/v1/archives/{id}/verify", post(archives::verify))
        .route("/v1/archives/{id}/restore", post(archives::restore))
        .route("/v1/backups", get(backups::list).post(backups::take))
        .route("/v1/backups/{name}/verify", post(backups::verify))
        .route("/v1/restore", post(backups::restore))
        .route("/v1/recover", post(backups::recover))
        .route("/v1/recoveries", get(backups::recoveries))
        .route("/v1/migrations", get(migrations::status))
        .route("/v1/schema", get(schema::validate))
        .route("/v1/schema/fix", post(schema::fix))
        .route("/v1/schema/findings", get(schema::findings))
        .route(
            "/v1/schema/findings/{id}/acknowledge",
            post(schema::acknowledge),
        )
        .route("/v1/events", get(audit::events))
        .route("/v1/errors", get(audit::errors))
        .route("/v1/errors/{signature}/resolve", post(audit::resolve))
        .route("/v1/slow-queries", get(audit::slow_queries))
        .route("/v1/resources", get(resources::list))
        .route("/v1/config/reload", post(config::reload))
        .route("/v1/audit", get(audit::operations))
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

async fn not_found() -> ApiError {
    ApiError::not_found(
            "no such route: use GET /health, /ready, /metrics, /health/detailed, /v1/dlq, /v1/backups, /v1/archives, /v1/recoveries, /v1/migrations, /v1/schema, /v1/schema/findings, /v1/events, /v1/errors, /v1/slow-queries, /v1/resources, /v1/audit, or POST /v1/execute, /v1/batch, /v1/query, /v1/config/reload, /v1/backups, /v1/backups/{name}/verify, /v1/archives/run, /v1/archives/{id}/verify, /v1/archives/{id}/restore, /v1/restore, /v1/recover, /v1/schema/fix, /v1/schema/findings/{id}/acknowledge, /v1/errors/{signature}/resolve",
        )
}

async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // The token in effect: a reload changes it for the next request.
    let config = s.rt.config();
    if let Some(expected) = &config.http.token {
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
