//! `GET /v1/migrations`: where the database stands against the configured
//! `schema.migrations_dir` (each migration applied, pending, changed,
//! missing or failed, what blocks a run, the history), or the history
//! alone when none is configured. Reads only; migrations are applied at
//! start and by `resilite migrate`, never over HTTP.

use axum::extract::State;
use axum::Json;
use resilite_actors::MigrationStatus;

use super::{ApiError, AppState};

/// The migration status (see the module doc).
pub(super) async fn status(State(s): State<AppState>) -> Result<Json<MigrationStatus>, ApiError> {
    Ok(Json(s.rt.configured_migration_status().await?))
}
