//! A team's secrets: set, list (names only) and delete. No endpoint returns a value.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Body, Segments};
use crate::auth::{Principal, check_name};
use crate::error::{ApiError, ApiResult};
use crate::secrets::{MIN_SECRET_LEN, env_name};

/// `GET /api/v1/teams/{team}/secrets`.
pub async fn list(State(app): State<App>, Segments(team): Segments<String>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "secrets": app.store.secrets(&team).await? })))
}

/// Body of `PUT /api/v1/teams/{team}/secrets/{secret}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    value: String,
}

/// `PUT /api/v1/teams/{team}/secrets/{secret}`: creates or replaces; answers with the
/// environment variable a spec names to use it.
pub async fn put(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments((team, name)): Segments<(String, String)>,
    Body(body): Body<SecretValue>,
) -> ApiResult<Json<Value>> {
    check_name("secret", &name).map_err(|message| ApiError::invalid("name", message))?;
    if body.value.len() < MIN_SECRET_LEN {
        return Err(ApiError::invalid("value", format!("a secret has at least {MIN_SECRET_LEN} characters")));
    }
    let sealed =
        app.secrets.seal(&team, &name, &body.value).map_err(|error| ApiError::internal(error.to_string()))?;
    app.store.put_secret(&team, &name, &sealed, &principal.user).await?;
    let env = env_name(&name);
    Ok(Json(json!({
        "name": name,
        "env": env,
        "usage": format!("name ${{env:{env}}} (HTTP options) or {env} (`url_env` options) in a spec"),
    })))
}

/// `DELETE /api/v1/teams/{team}/secrets/{secret}`.
pub async fn delete(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    app.store.delete_secret(&team, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
