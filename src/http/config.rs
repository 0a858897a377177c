//! The configuration route: `POST /v1/config/reload` reads the config file
//! the runtime was started from again and applies it
//! ([`Runtime::reload_config`](crate::Runtime::reload_config)): 200 with
//! the changed keys (applied, or waiting for a restart), 400 with the
//! reason when the file is refused (the runtime keeps its configuration).

use axum::extract::State;
use axum::Json;

use super::{ApiError, AppState};
use crate::runtime::ReloadReport;

/// Reload the configuration file; what changed.
pub(super) async fn reload(State(s): State<AppState>) -> Result<Json<ReloadReport>, ApiError> {
    Ok(Json(s.rt.reload_config().await?))
}
