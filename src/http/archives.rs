//! Archives over HTTP: `GET /v1/archives` (the catalog),
//! `POST /v1/archives/run` (run the `[[retention]]` policies now),
//! `POST /v1/archives/{id}/verify`, `POST /v1/archives/{id}/restore`.
//! An archive is named by its catalog id, never by a path.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use resilite_actors::archive::{ArchiveCheck, RestoreCounts, RunReport};
use resilite_actors::Error;

use super::{ApiError, AppState};

/// The archive catalog, oldest first.
pub(super) async fn list(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let archives = s.rt.archives().await?;
    Ok(Json(serde_json::json!({ "archives": archives })))
}

/// One archive run now.
pub(super) async fn run(State(s): State<AppState>) -> Result<Json<RunReport>, ApiError> {
    Ok(Json(s.rt.archive_now().await?))
}

fn id(path: Result<Path<String>, PathRejection>) -> Result<i64, Error> {
    let Path(id) = path.map_err(|e| Error::bad_input(e.body_text()))?;
    id.parse().map_err(|_| {
        Error::bad_input(format!(
            "`{id}` is not an archive id: use the numeric `id` GET /v1/archives lists"
        ))
    })
}

/// Verify one archive now.
pub(super) async fn verify(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ArchiveCheck>, ApiError> {
    Ok(Json(s.rt.verify_archive(id(path)?).await?))
}

/// Put one archive's rows back.
pub(super) async fn restore(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RestoreCounts>, ApiError> {
    Ok(Json(s.rt.restore_archive(id(path)?).await?))
}
