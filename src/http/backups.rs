//! Backups over HTTP: `POST /v1/backups` (`{"label": "..."}`, optional,
//! default `manual`), `GET /v1/backups`, `POST /v1/backups/{name}/verify`,
//! `POST /v1/restore` (`{"backup": "<name>"}`), `POST /v1/recover`,
//! `GET /v1/recoveries`.
//! A backup is named as the catalog lists it, never by a path: a name with
//! `/` or `..` is refused with 400.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use resilite_actors::backup::check_name;
use resilite_actors::{BackupInfo, Error, Verification};
use serde::Deserialize;

use super::{ApiError, AppState, JsonBody};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupRequest {
    #[serde(default = "manual")]
    label: String,
}

fn manual() -> String {
    "manual".into()
}

/// Take a backup now, verify it, apply retention.
pub(super) async fn take(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<BackupRequest>,
) -> Result<Json<BackupInfo>, ApiError> {
    Ok(Json(s.rt.backup(&req.label).await?))
}

/// The backups kept, oldest first.
pub(super) async fn list(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let backups = s.rt.backups().await?;
    Ok(Json(serde_json::json!({ "backups": backups })))
}

/// Verify one backup now.
pub(super) async fn verify(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Verification>, ApiError> {
    let Path(name) = name.map_err(|e| Error::bad_input(e.body_text()))?;
    check_name(&name)?;
    Ok(Json(s.rt.verify_backup(&name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreRequest {
    backup: String,
}

/// Restore the backup named in the body (a catalog name, never a path)
/// onto the database, online.
pub(super) async fn restore(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<RestoreRequest>,
) -> Result<Json<crate::RestoreOutcome>, ApiError> {
    check_name(&req.backup)?;
    Ok(Json(s.rt.restore(&req.backup).await?))
}

/// Recover the database now from the newest verified backup (the damaged
/// file kept aside, the operation log replayed).
pub(super) async fn recover(
    State(s): State<AppState>,
) -> Result<Json<crate::RecoveryOutcome>, ApiError> {
    Ok(Json(s.rt.recover_with("http").await?))
}

/// Every recovery attempt, oldest first.
pub(super) async fn recoveries(
    State(s): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let recoveries = s.rt.recoveries().await?;
    Ok(Json(serde_json::json!({ "recoveries": recoveries })))
}
