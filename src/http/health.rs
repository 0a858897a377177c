//! The health routes: `GET /health` (liveness), `GET /ready` (readiness),
//! `GET /health/detailed` (the latest report) and `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use resilite_actors::health::{HealthReport, HealthStatus};
use resilite_actors::Error;
use serde::{Serialize, Serializer};

use super::{ApiError, AppState};
use crate::runtime::Status;

/// The `/health` body: the latest check's status and rule, and the
/// runtime's own state.
#[derive(Debug, Serialize)]
struct Liveness {
    /// The latest check's status; `PENDING` before the first one finished.
    #[serde(serialize_with = "status_or_pending")]
    status: Option<HealthStatus>,
    rule: String,
    checked_at_ms: Option<i64>,
    runtime: Status,
}

/// Liveness: 200 unless the latest check is CRITICAL or UNKNOWN or an actor
/// failed past its restart limit (503).
pub(super) async fn liveness(State(s): State<AppState>) -> Response {
    let runtime = s.rt.status();
    let latest = s.rt.latest_health();
    let mut body = Liveness {
        status: latest.as_ref().map(|r| r.status),
        rule: latest.as_ref().map_or_else(
            || "the first health check has not finished yet".into(),
            |r| r.rule.clone(),
        ),
        checked_at_ms: latest.as_ref().map(|r| r.checked_at_ms),
        runtime,
    };
    let mut live = !matches!(
        body.status,
        Some(HealthStatus::Critical | HealthStatus::Unknown)
    );
    let down = match &body.runtime {
        Status::Failed(reason) => Some(reason.clone()),
        Status::Stopped => Some("resilite is shut down".into()),
        Status::Healthy | Status::Restarting => None,
    };
    if let Some(reason) = down {
        live = false;
        body.status = Some(HealthStatus::Critical);
        body.rule = reason;
    }
    let code = if live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// A status as its name (`HEALTHY`...), or `PENDING` when there is none yet.
fn status_or_pending<S: Serializer>(
    status: &Option<HealthStatus>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match status {
        Some(status) => status.serialize(serializer),
        None => serializer.serialize_str("PENDING"),
    }
}

/// Readiness: 200 while the runtime takes writes, else 503 with the reason.
pub(super) async fn ready(State(s): State<AppState>) -> Response {
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
pub(super) async fn detailed(State(s): State<AppState>) -> Result<Json<HealthReport>, ApiError> {
    Ok(Json(s.rt.health().await?))
}

/// Prometheus text format.
pub(super) async fn metrics() -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NotReady;

    #[test]
    fn liveness_status_is_named_or_pending() {
        let body = |status| {
            let live = Liveness {
                status,
                rule: String::new(),
                checked_at_ms: None,
                runtime: Status::Healthy,
            };
            serde_json::to_value(live).unwrap()["status"].clone()
        };
        assert_eq!(body(None), "PENDING");
        assert_eq!(body(Some(HealthStatus::Healthy)), "HEALTHY");
        assert_eq!(body(Some(HealthStatus::Critical)), "CRITICAL");
    }

    #[test]
    fn not_ready_serializes_as_its_reason() {
        let reason = NotReady::DatabaseBreakerOpen { trips: 2 };
        assert_eq!(
            serde_json::json!({ "ready": false, "reason": reason }),
            serde_json::json!({
                "ready": false,
                "reason": "the database circuit breaker is open (2 trip(s)): writes fail fast until it closes"
            })
        );
        assert_eq!(
            serde_json::to_value(NotReady::Restarting).unwrap(),
            "a writer is restarting"
        );
    }
}
