//! A team's secrets: set, list (names only) and delete. No endpoint returns a value.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Body, Segments};
use crate::auth::{Principal, check_name};
use crate::error::{ApiError, ApiResult};
use crate::secrets::{MIN_SECRET_LEN, env_name, secret_references};

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

/// `DELETE /api/v1/teams/{team}/secrets/{secret}`: refused while a connection, or the latest or
/// deployed version of a pipeline, names it (their workers would fail at their next start).
pub async fn delete(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    let env = env_name(&name);
    let names = |text: &str| secret_references(text).contains(&env.as_str());
    let mut users = Vec::new();
    for connection in app.store.connections(&team).await? {
        if names(&Value::Object(connection.options).to_string()) {
            users.push(format!("connection {}", connection.name));
        }
    }
    for pipeline in app.store.pipelines(Some(&team)).await? {
        for version in super::connections::versions_in_use(&pipeline) {
            if let Some(spec) = app.store.version(&team, &pipeline.name, version).await?
                && names(&spec.spec)
            {
                users.push(format!("pipeline {} (version {version})", pipeline.name));
            }
        }
    }
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "secret \"{name}\" ({env}) is used by {}; change those first",
            users.join(", ")
        ))
        .with_details(json!({ "used_by": users })));
    }
    app.store.delete_secret(&team, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
