//! Connections: a team's reusable connector profiles (a Kafka cluster, a database, an HTTP
//! endpoint). Nodes name one with `connection: NAME`; the store resolves it into the spec
//! whenever a spec is checked, deployed or started (see [`sluice_spec::resolve_connections`]).
//!
//! Secrets stay out of connections: options refer to them as `SLUICE_SECRET_<NAME>` (in
//! `url_env`) or `${env:SLUICE_SECRET_<NAME>}` (in templated values), and a secret's value
//! written into a connection is refused.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_spec::Diagnostic;

use super::{App, Body, Segments};
use crate::auth::{Principal, check_name};
use crate::error::{ApiError, ApiResult};
use crate::secrets::secret_references;
use crate::store::{ConnectionRecord, PipelineRecord};

/// `GET /api/v1/teams/{team}/connections`.
pub async fn list(State(app): State<App>, Segments(team): Segments<String>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "connections": app.store.connections(&team).await? })))
}

/// `GET /api/v1/teams/{team}/connections/{connection}`, with the pipelines that use it.
pub async fn get(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<Json<Value>> {
    let record = find(&app, &team, &name).await?;
    let used_by: Vec<String> = users(&app, &team, &name).await?.into_iter().map(|(p, _)| p.name).collect();
    let mut body = serde_json::to_value(record).map_err(|e| ApiError::internal(e.to_string()))?;
    body["used_by"] = json!(used_by);
    Ok(Json(body))
}

/// Body of `POST .../connections` (with `name`) and `PUT .../connections/{connection}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionBody {
    name: Option<String>,
    connector: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    options: Value,
}

/// `POST /api/v1/teams/{team}/connections`.
pub async fn create(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments(team): Segments<String>,
    Body(body): Body<ConnectionBody>,
) -> ApiResult<(StatusCode, Json<ConnectionRecord>)> {
    let Some(name) = body.name.clone() else {
        return Err(ApiError::invalid("name", "a new connection needs a `name`"));
    };
    let options = check(&app, &team, &name, &body).await?;
    let record = app
        .store
        .create_connection(&team, &name, &body.connector, &body.description, &options, &principal.user)
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// `PUT /api/v1/teams/{team}/connections/{connection}`: creates it, or replaces it once every
/// pipeline version in use that names it still checks with the new settings.
pub async fn put(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments((team, name)): Segments<(String, String)>,
    Body(body): Body<ConnectionBody>,
) -> ApiResult<(StatusCode, Json<ConnectionRecord>)> {
    if let Some(other) = body.name.as_deref().filter(|other| *other != name) {
        return Err(ApiError::invalid(
            "name",
            format!(
                "the body names connection \"{other}\" but the path names \"{name}\"; a rename is a new connection"
            ),
        ));
    }
    let options = check(&app, &team, &name, &body).await?;
    let user = &principal.user;
    if app.store.connection(&team, &name).await?.is_none() {
        let record = app
            .store
            .create_connection(&team, &name, &body.connector, &body.description, &options, user)
            .await?;
        return Ok((StatusCode::CREATED, Json(record)));
    }
    let mut profiles = app.store.connection_profiles(&team).await?;
    profiles.insert(
        name.clone(),
        sluice_spec::Connection { connector: body.connector.clone(), options: options.clone() },
    );
    let mut broken = Vec::new();
    for (pipeline, versions) in users(&app, &team, &name).await? {
        for version in versions {
            let Some(spec) = app.store.version(&team, &pipeline.name, version).await? else { continue };
            let checked = match sluice_spec::resolve_connections(&spec.spec, &profiles) {
                Ok(resolved) => super::pipelines::check_resolved(&app, &team, resolved).await.map(|_| ()),
                Err(diagnostics) => Err(diagnostics),
            };
            if let Err(errors) = checked {
                broken.push(json!({ "pipeline": pipeline.name, "version": version, "errors": errors }));
            }
        }
    }
    if !broken.is_empty() {
        let first = &broken[0];
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "connection_breaks_pipelines",
            message: format!(
                "with these settings, {} pipeline version(s) using connection \"{name}\" would no longer be valid; \
                 first: pipeline \"{}\" version {}: {}",
                broken.len(),
                first["pipeline"].as_str().unwrap_or_default(),
                first["version"],
                first["errors"][0]["message"].as_str().unwrap_or_default(),
            ),
            details: Some(json!({ "pipelines": broken })),
        });
    }
    let record =
        app.store.update_connection(&team, &name, &body.connector, &body.description, &options, user).await?;
    Ok((StatusCode::OK, Json(record)))
}

/// `DELETE /api/v1/teams/{team}/connections/{connection}`: refused while a pipeline's latest or
/// deployed version names it.
pub async fn delete(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    find(&app, &team, &name).await?;
    let users: Vec<String> = users(&app, &team, &name).await?.into_iter().map(|(p, _)| p.name).collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "connection \"{name}\" is used by pipeline(s) {}; change their specs (or delete them) first",
            users.join(", ")
        ))
        .with_details(json!({ "used_by": users })));
    }
    app.store.delete_connection(&team, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn find(app: &App, team: &str, name: &str) -> ApiResult<ConnectionRecord> {
    app.store
        .connection(team, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("connection \"{name}\" of team \"{team}\"")))
}

/// The versions of `pipeline` that may run: the deployed one and the latest.
pub(super) fn versions_in_use(pipeline: &PipelineRecord) -> Vec<i64> {
    let mut versions = vec![pipeline.latest_version];
    versions.extend(pipeline.deployed_version.filter(|v| *v != pipeline.latest_version));
    versions
}

/// The team's pipelines whose latest or deployed version names connection `name`, with those
/// versions.
async fn users(app: &App, team: &str, name: &str) -> ApiResult<Vec<(PipelineRecord, Vec<i64>)>> {
    let mut found = Vec::new();
    for pipeline in app.store.pipelines(Some(team)).await? {
        let mut naming = Vec::new();
        for version in versions_in_use(&pipeline) {
            if let Some(spec) = app.store.version(team, &pipeline.name, version).await?
                && sluice_spec::connections_used(&spec.spec).iter().any(|(_, used)| used == name)
            {
                naming.push(version);
            }
        }
        if !naming.is_empty() {
            found.push((pipeline, naming));
        }
    }
    Ok(found)
}

/// Checks a connection's name, connector and options; returns the options.
async fn check(app: &App, team: &str, name: &str, body: &ConnectionBody) -> ApiResult<Map<String, Value>> {
    check_name("connection", name).map_err(|message| ApiError::invalid("name", message))?;
    let known = app.checker.connectors();
    if !known.contains(&body.connector.as_str()) {
        let diagnostic = Diagnostic::new("connector", format!("unknown connector \"{}\"", body.connector))
            .suggest_closest(&body.connector, known.iter().copied());
        let hint = diagnostic.suggestion.unwrap_or_else(|| format!("known connectors: {}", known.join(", ")));
        return Err(ApiError::invalid("connector", format!("{}; {hint}", diagnostic.message)));
    }
    let options = match &body.options {
        Value::Null => Map::new(),
        Value::Object(options) => options.clone(),
        _ => return Err(ApiError::invalid("options", "`options` must be an object of connector options")),
    };
    let secrets = app.store.secrets(team).await?;
    let envs: Vec<&str> = secrets.iter().map(|s| s.env.as_str()).collect();
    let mut problems = Vec::new();
    strings(&Value::Object(options.clone()), "options", &mut |path, text| {
        for reference in secret_references(text) {
            if !envs.contains(&reference) {
                let have = if envs.is_empty() { "none".to_string() } else { envs.join(", ") };
                problems.push(
                    Diagnostic::new(path, format!("{reference} names no secret of team \"{team}\"")).suggest(
                        format!(
                            "create the secret first (PUT /api/v1/teams/{team}/secrets/<name> gives \
                             SLUICE_SECRET_<NAME>); the team's secrets: {have}"
                        ),
                    ),
                );
            }
        }
    });
    let redactor = app.supervisor.redactor(team).await?;
    strings(&Value::Object(options.clone()), "options", &mut |path, text| {
        if redactor.redact(text) != text {
            problems.push(
                Diagnostic::new(path, "this is the value of one of the team's secrets, which connections never hold")
                    .suggest("refer to the secret instead: SLUICE_SECRET_<NAME> in `url_env`, ${env:SLUICE_SECRET_<NAME>} in templated options"),
            );
        }
    });
    if let Some(first) = problems.first() {
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_connection",
            message: format!("the connection has {} problem(s); first: {first}", problems.len()),
            details: Some(json!({ "errors": problems })),
        });
    }
    Ok(options)
}

/// Calls `visit` with the path and text of every string in `value`.
fn strings(value: &Value, path: &str, visit: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::String(text) => visit(path, text),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                strings(item, &format!("{path}[{index}]"), visit);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                strings(item, &format!("{path}.{key}"), visit);
            }
        }
        _ => {}
    }
}
