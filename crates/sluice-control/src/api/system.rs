//! Health, the OpenAPI document and the audit log.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Params};
use crate::error::ApiResult;
use crate::openapi;
use crate::store::AuditEntry;

/// `GET /api/v1/health`.
pub async fn health(State(app): State<App>) -> ApiResult<Json<Value>> {
    // Answers only when the metadata store does.
    app.store.has_platform_admin().await?;
    Ok(Json(json!({ "status": "ok" })))
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Json<Value> {
    Json(openapi::document())
}

/// Paging of the audit log.
#[derive(Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/audit`.
pub async fn audit(
    State(app): State<App>,
    Params(query): Params<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(app.store.audit_log(query.before, limit).await?))
}
