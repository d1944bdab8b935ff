//! The dataset catalog and grants, and the check every deploy makes: the team may read every
//! dataset its pipeline reads and write every one it writes. Datasets nobody registered yet
//! are registered to the deploying team on its first deploy.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Body, Segments};
use crate::auth::Principal;
use crate::catalog::{Use, denied, uses};
use crate::error::{ApiError, ApiResult};
use crate::store::{DatasetRecord, NewDataset};

/// `GET /api/v1/datasets`.
pub async fn list(State(app): State<App>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "datasets": app.store.datasets().await? })))
}

/// `GET /api/v1/datasets/{dataset}` (the name percent-encoded, e.g. `kafka:orders`).
pub async fn get(State(app): State<App>, Segments(name): Segments<String>) -> ApiResult<Json<DatasetRecord>> {
    Ok(Json(find(&app, &name).await?))
}

/// Body of `POST /api/v1/teams/{team}/datasets` and `PUT .../datasets/{dataset}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Describe {
    name: Option<String>,
    #[serde(default)]
    classification: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    schema: Value,
}

/// `POST /api/v1/teams/{team}/datasets`: registers a dataset owned by the team.
pub async fn register(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments(team): Segments<String>,
    Body(body): Body<Describe>,
) -> ApiResult<(StatusCode, Json<DatasetRecord>)> {
    let name =
        body.name.ok_or_else(|| ApiError::invalid("name", "a dataset needs a name, e.g. kafka:orders"))?;
    check_dataset_name(&name)?;
    check_classification(&body.classification)?;
    let new = NewDataset {
        name: &name,
        owner: &team,
        classification: &body.classification,
        description: &body.description,
        schema: body.schema,
        by: &principal.user,
    };
    app.store.register_dataset(&new).await?;
    Ok((StatusCode::CREATED, Json(find(&app, &name).await?)))
}

/// `PUT /api/v1/teams/{team}/datasets/{dataset}`: classification and description, by the owner.
pub async fn describe(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
    Body(body): Body<Describe>,
) -> ApiResult<Json<DatasetRecord>> {
    owned(&app, &team, &name).await?;
    check_classification(&body.classification)?;
    app.store.describe_dataset(&name, &body.classification, &body.description).await?;
    Ok(Json(find(&app, &name).await?))
}

/// `PUT /api/v1/teams/{team}/datasets/{dataset}/grants/{grantee}/{access}`.
pub async fn grant(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments((team, name, grantee, access)): Segments<(String, String, String, String)>,
) -> ApiResult<Json<DatasetRecord>> {
    owned(&app, &team, &name).await?;
    let using = access_of(&access)?;
    if !app.store.team_exists(&grantee).await? {
        return Err(ApiError::not_found(format!("team \"{grantee}\"")));
    }
    app.store.grant(&name, &grantee, using, &principal.user).await?;
    Ok(Json(find(&app, &name).await?))
}

/// `DELETE /api/v1/teams/{team}/datasets/{dataset}/grants/{grantee}/{access}`.
pub async fn revoke(
    State(app): State<App>,
    Segments((team, name, grantee, access)): Segments<(String, String, String, String)>,
) -> ApiResult<StatusCode> {
    owned(&app, &team, &name).await?;
    app.store.revoke(&name, &grantee, access_of(&access)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Before `team` runs `spec`: refuses (403, every dataset named with its spec path) unless the
/// team may read and write what the spec does; then registers the datasets not yet known, to
/// `team`.
pub async fn check_deploy(app: &App, team: &str, spec: &str, user: &str) -> ApiResult<()> {
    let Ok(parsed) = sluice_spec::parse(spec) else {
        return Err(ApiError::conflict("the deployed version no longer parses; save a new version"));
    };
    let mut refusals = Vec::new();
    let mut unknown = Vec::new();
    for used in uses(&parsed) {
        match app.store.dataset(&used.dataset).await? {
            Some(known) => {
                if let Some(reason) = denied(team, used.using, &known.known()) {
                    refusals.push(json!({ "path": used.path, "dataset": used.dataset, "message": reason }));
                }
            }
            None => unknown.push(used),
        }
    }
    if !refusals.is_empty() {
        let first = refusals[0]["message"].as_str().unwrap_or_default().to_string();
        return Err(ApiError::forbidden(format!(
            "the pipeline uses {} dataset(s) team \"{team}\" may not; first: {first}",
            refusals.len()
        ))
        .with_details(json!({ "errors": refusals })));
    }
    for used in unknown {
        let schema = match used.using {
            Use::Read => parsed
                .sources
                .iter()
                .find(|source| used.path == format!("sources[{}]", source_index(&parsed, &source.name)))
                .and_then(|source| source.schema.as_ref())
                .map(|fields| serde_json::to_value(fields).unwrap_or(Value::Null))
                .unwrap_or(Value::Null),
            Use::Write => Value::Null,
        };
        let new = NewDataset {
            name: &used.dataset,
            owner: team,
            classification: "",
            description: "registered on first deploy",
            schema,
            by: user,
        };
        match app.store.register_dataset(&new).await {
            // Registered by a concurrent deploy in the meantime: checked on the next deploy.
            Ok(()) | Err(ApiError { code: "conflict", .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn source_index(spec: &sluice_spec::Pipeline, name: &str) -> usize {
    spec.sources.iter().position(|source| source.name == name).unwrap_or(usize::MAX)
}

async fn find(app: &App, name: &str) -> ApiResult<DatasetRecord> {
    app.store.dataset(name).await?.ok_or_else(|| ApiError::not_found(format!("dataset \"{name}\"")))
}

async fn owned(app: &App, team: &str, name: &str) -> ApiResult<DatasetRecord> {
    let dataset = find(app, name).await?;
    if dataset.owner != team {
        return Err(ApiError::forbidden(format!(
            "dataset \"{name}\" belongs to team \"{}\"; only its admins manage it",
            dataset.owner
        )));
    }
    Ok(dataset)
}

fn access_of(text: &str) -> ApiResult<Use> {
    Use::parse(text)
        .ok_or_else(|| ApiError::invalid("access", format!("\"{text}\" is not an access; use read or write")))
}

fn check_dataset_name(name: &str) -> ApiResult<()> {
    match name.split_once(':') {
        Some((system, rest))
            if !system.is_empty() && !rest.is_empty() && system.chars().all(|c| c.is_ascii_lowercase()) =>
        {
            Ok(())
        }
        _ => Err(ApiError::invalid(
            "name",
            format!("\"{name}\" is not a dataset name; write <system>:<name>, e.g. kafka:orders"),
        )),
    }
}

fn check_classification(classification: &str) -> ApiResult<()> {
    if classification.len() > 32
        || !classification.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid(
            "classification",
            "a classification is a short lowercase word, e.g. pii",
        ));
    }
    Ok(())
}
