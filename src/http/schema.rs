//! The schema routes: `GET /v1/schema` answers the migration status (as
//! `GET /v1/migrations`) and validates the database against the
//! configured `[schema] file` now (`?data=true` runs the data rules too),
//! with the report and the journal's open findings;
//! `POST /v1/schema/fix` (`{"dry_run": true, "dedupe": "keep-oldest"}`,
//! both optional) fixes it, or says what a fix would do;
//! `GET /v1/schema/findings` (`?all=true` with the resolved ones) lists the
//! journal's findings without validating again, and
//! `POST /v1/schema/findings/{id}/acknowledge` marks one seen.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use resilite_actors::{Error, FixOptions, FixReport, ValidateOptions};
use serde::Deserialize;

use super::{ApiError, AppState, JsonBody};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SchemaQuery {
    #[serde(default)]
    data: bool,
}

/// The migration status; with a schema file, validate now: the report,
/// the schema file and the open findings.
pub(super) async fn validate(
    State(s): State<AppState>,
    query: Result<Query<SchemaQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| Error::bad_input(e.body_text()))?;
    let migrations = s.rt.configured_migration_status().await?;
    let mut answer = serde_json::json!({
        "migrations": migrations,
        "file": s.rt.config().schema.file,
        "exit_code": null,
        "report": null,
        "open_findings": [],
    });
    if s.rt.config().schema.file.is_some() {
        let schema = s.rt.configured_schema()?;
        let report =
            s.rt.validate(&schema, ValidateOptions { data: query.data })
                .await?;
        answer["exit_code"] = report.exit_code().into();
        answer["open_findings"] = serde_json::to_value(s.rt.schema_findings(false).await?)
            .map_err(|e| Error::classed(resilite_actors::ErrorClass::Internal, e.to_string()))?;
        answer["report"] = serde_json::to_value(report)
            .map_err(|e| Error::classed(resilite_actors::ErrorClass::Internal, e.to_string()))?;
    }
    Ok(Json(answer))
}

/// Fix the database (or, dry, say what would be done).
pub(super) async fn fix(
    State(s): State<AppState>,
    JsonBody(options): JsonBody<FixOptions>,
) -> Result<Json<FixReport>, ApiError> {
    let schema = s.rt.configured_schema()?;
    Ok(Json(s.rt.fix(&schema, options).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FindingsQuery {
    #[serde(default)]
    all: bool,
}

/// The journal's schema findings, oldest first: the open ones, or all.
pub(super) async fn findings(
    State(s): State<AppState>,
    query: Result<Query<FindingsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| Error::bad_input(e.body_text()))?;
    let findings = s.rt.schema_findings(query.all).await?;
    Ok(Json(serde_json::json!({ "findings": findings })))
}

/// Mark a finding seen by an operator.
pub(super) async fn acknowledge(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = id.map_err(|e| Error::bad_input(e.body_text()))?;
    if s.rt.acknowledge_finding(id).await? {
        Ok(Json(serde_json::json!({ "acknowledged": id })))
    } else {
        Err(ApiError::not_found(format!(
            "no schema finding {id}: list them with GET /v1/schema/findings?all=true"
        )))
    }
}
