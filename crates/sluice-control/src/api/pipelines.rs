//! Pipelines: specs and versions, and the requests that drive their lifecycle. Handlers record
//! what users want and wake the supervisor; the supervisor makes it so and records the events.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Body, Params, Segments, SpecBody, datasets};
use crate::auth::{Principal, check_name};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{Event, State as Lifecycle, next};
use sluice_state::protocol::ManifestState;
use sluice_state::{CheckpointStore, Manifest, StoreOptions};

use crate::store::{Desired, Pending, PipelineEvent, PipelineRecord, Request, VersionRecord};
use crate::worker_log;

/// Most worker threads a pipeline may ask for.
pub const MAX_PARALLELISM: i64 = 256;

/// `GET /api/v1/teams/{team}/pipelines`.
pub async fn list(State(app): State<App>, Segments(team): Segments<String>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "pipelines": app.store.pipelines(Some(&team)).await? })))
}

/// `POST /api/v1/teams/{team}/validate`.
pub async fn validate(
    State(app): State<App>,
    Segments(team): Segments<String>,
    spec: SpecBody,
) -> ApiResult<Json<Value>> {
    let errors = match check(&app, &team, &spec.text).await? {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics,
    };
    Ok(Json(json!({ "valid": errors.is_empty(), "errors": errors })))
}

/// `POST /api/v1/teams/{team}/pipelines`.
pub async fn create(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments(team): Segments<String>,
    spec: SpecBody,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    let name = check(&app, &team, &spec.text).await?.map_err(invalid_spec)?;
    let parallelism = parallelism(spec.parallelism.unwrap_or(1))?;
    let record = app.store.create_pipeline(&team, &name, &spec.text, parallelism, &principal.user).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// `GET /api/v1/teams/{team}/pipelines/{pipeline}`.
pub async fn get(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<Json<PipelineRecord>> {
    Ok(Json(find(&app, &team, &name).await?))
}

/// `PUT /api/v1/teams/{team}/pipelines/{pipeline}`: a new version; the running one is kept
/// until it is deployed.
pub async fn update(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments((team, name)): Segments<(String, String)>,
    spec: SpecBody,
) -> ApiResult<Json<Value>> {
    find(&app, &team, &name).await?;
    let spec_name = check(&app, &team, &spec.text).await?.map_err(invalid_spec)?;
    if spec_name != name {
        return Err(ApiError::invalid(
            "spec.name",
            format!(
                "the spec is named \"{spec_name}\" but this is pipeline \"{name}\"; a rename is a new pipeline"
            ),
        ));
    }
    let version = app.store.add_version(&team, &name, &spec.text, &principal.user).await?;
    Ok(Json(json!({ "team": team, "name": name, "version": version })))
}

/// `DELETE /api/v1/teams/{team}/pipelines/{pipeline}`: also deletes its checkpoints, savepoints
/// and logs.
pub async fn remove(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    let pipeline = find(&app, &team, &name).await?;
    if pipeline.actual.worker.is_some() || pipeline.desired == Desired::Running {
        return Err(ApiError::conflict(format!(
            "pipeline \"{name}\" is {} (wanted {:?}); stop it first",
            pipeline.actual.state, pipeline.desired
        )));
    }
    app.store.delete_pipeline(&team, &name).await?;
    let dir = app.supervisor.pipeline_dir(&team, &name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|error| {
            ApiError::internal(format!("deleted, but removing its files failed: {error}"))
        })?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET .../versions`.
pub async fn versions(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<Json<Vec<VersionRecord>>> {
    find(&app, &team, &name).await?;
    Ok(Json(app.store.versions(&team, &name).await?))
}

/// `GET .../versions/{version}`.
pub async fn version(
    State(app): State<App>,
    Segments((team, name, version)): Segments<(String, String, i64)>,
) -> ApiResult<Json<VersionRecord>> {
    let found = app.store.version(&team, &name, version).await?;
    Ok(Json(found.ok_or_else(|| ApiError::not_found(format!("version {version} of pipeline \"{name}\"")))?))
}

/// Body of `POST .../deploy`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    version: Option<i64>,
    parallelism: Option<i64>,
}

/// `POST .../deploy`.
pub async fn deploy(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments((team, name)): Segments<(String, String)>,
    Body(body): Body<Deploy>,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    let pipeline = find(&app, &team, &name).await?;
    let version = body.version.unwrap_or(pipeline.latest_version);
    let Some(spec) = app.store.version(&team, &name, version).await? else {
        return Err(ApiError::invalid(
            "version",
            format!("pipeline \"{name}\" has no version {version} (latest is {})", pipeline.latest_version),
        ));
    };
    let resolved = app.store.resolve_spec(&team, &spec.spec).await?.map_err(invalid_spec)?;
    datasets::check_deploy(&app, &team, &resolved, &principal.user).await?;
    let mut request = Request {
        desired: Some(Desired::Running),
        deployed_version: Some(version),
        parallelism: body.parallelism.map(parallelism).transpose()?,
        ..Request::default()
    };
    if pipeline.actual.state.has_worker() {
        // A new version (or the same one again) replaces the running worker.
        expect(&pipeline, Event::Restart)?;
        request.pending = Some(Some(Pending::Restart));
    }
    act(&app, &pipeline, request).await
}

/// `POST .../start`: runs the deployed version (the latest if none was deployed).
pub async fn start(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    let pipeline = find(&app, &team, &name).await?;
    expect(&pipeline, Event::Deploy)?;
    let request = Request {
        desired: Some(Desired::Running),
        deployed_version: Some(pipeline.deployed_version.unwrap_or(pipeline.latest_version)),
        pending: Some(None),
        ..Request::default()
    };
    act(&app, &pipeline, request).await
}

/// `POST .../stop`.
pub async fn stop(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    stop_with(app, team, name, Event::Stop, Pending::Stop).await
}

/// `POST .../savepoint`: stops with a savepoint; resume from it with `POST .../resume`.
pub async fn savepoint(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    stop_with(app, team, name, Event::StopWithSavepoint, Pending::Savepoint).await
}

async fn stop_with(
    app: App,
    team: String,
    name: String,
    event: Event,
    pending: Pending,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    let pipeline = find(&app, &team, &name).await?;
    if pipeline.desired == Desired::Stopped && next(pipeline.actual.state, event).is_none() {
        return Err(ApiError::conflict(format!(
            "pipeline \"{name}\" is {}: nothing to stop",
            pipeline.actual.state
        )));
    }
    let request =
        Request { desired: Some(Desired::Stopped), pending: Some(Some(pending)), ..Request::default() };
    act(&app, &pipeline, request).await
}

/// Body of `POST .../resume`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    savepoint: Option<String>,
}

/// `POST .../resume`.
pub async fn resume(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    Segments((team, name)): Segments<(String, String)>,
    Body(body): Body<Resume>,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    let pipeline = find(&app, &team, &name).await?;
    expect(&pipeline, Event::Deploy)?;
    check_deployed(&app, &pipeline, &principal).await?;
    let savepoint = body.savepoint.or_else(|| pipeline.actual.last_savepoint.clone()).ok_or_else(|| {
        ApiError::invalid(
            "savepoint",
            format!("pipeline \"{name}\" has no savepoint yet; stop it with POST .../savepoint first"),
        )
    })?;
    if !savepoint.contains("://") && !std::path::Path::new(&savepoint).exists() {
        return Err(ApiError::invalid("savepoint", format!("no savepoint at {savepoint}")));
    }
    let request = Request {
        desired: Some(Desired::Running),
        deployed_version: Some(pipeline.deployed_version.unwrap_or(pipeline.latest_version)),
        resume_from: Some(Some(savepoint)),
        pending: Some(None),
        ..Request::default()
    };
    act(&app, &pipeline, request).await
}

/// Body of `POST .../rescale`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rescale {
    parallelism: i64,
}

/// `POST .../rescale`: a running pipeline stops with a final checkpoint and restarts at the new
/// parallelism (keyed state is redistributed); a stopped one uses it on its next start.
pub async fn rescale(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
    Body(body): Body<Rescale>,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    let pipeline = find(&app, &team, &name).await?;
    let parallelism = parallelism(body.parallelism)?;
    let mut request = Request { parallelism: Some(parallelism), ..Request::default() };
    if pipeline.actual.state.has_worker() {
        expect(&pipeline, Event::Rescale)?;
        request.pending = Some(Some(Pending::Rescale));
    }
    act(&app, &pipeline, request).await
}

/// `POST .../restart`.
pub async fn restart(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    let pipeline = find(&app, &team, &name).await?;
    expect(&pipeline, Event::Restart)?;
    act(&app, &pipeline, Request { pending: Some(Some(Pending::Restart)), ..Request::default() }).await
}

/// Paging of events and logs.
#[derive(Deserialize)]
pub struct Tail {
    limit: Option<i64>,
}

/// `GET .../events`.
pub async fn events(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
    Params(tail): Params<Tail>,
) -> ApiResult<Json<Vec<PipelineEvent>>> {
    find(&app, &team, &name).await?;
    Ok(Json(app.store.events(&team, &name, tail.limit.unwrap_or(100).clamp(1, 10_000)).await?))
}

/// `GET .../logs?limit=N`: the last N lines (200 by default) of the worker's log.
pub async fn logs(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
    Params(tail): Params<Tail>,
) -> ApiResult<impl IntoResponse> {
    find(&app, &team, &name).await?;
    let dir = app.supervisor.pipeline_dir(&team, &name);
    let limit = tail.limit.unwrap_or(200).clamp(1, 100_000) as usize;
    let tail = worker_log::tail(&dir, limit, MAX_LOG_READ)
        .map_err(|error| ApiError::internal(format!("reading the worker log: {error}")))?;
    let tail = app.supervisor.redactor(&team).await?.redact(&tail);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], tail))
}

/// Most of each worker log file read to serve its tail.
const MAX_LOG_READ: u64 = 4 << 20;

/// The dataset check for starting the version a pipeline runs (grants may have changed since it
/// was deployed).
async fn check_deployed(app: &App, pipeline: &PipelineRecord, principal: &Principal) -> ApiResult<()> {
    let version = pipeline.deployed_version.unwrap_or(pipeline.latest_version);
    let spec = app
        .store
        .version(&pipeline.team, &pipeline.name, version)
        .await?
        .ok_or_else(|| ApiError::internal(format!("version {version} is missing")))?;
    let resolved = app.store.resolve_spec(&pipeline.team, &spec.spec).await?.map_err(invalid_spec)?;
    datasets::check_deploy(app, &pipeline.team, &resolved, &principal.user).await
}

/// `GET .../checkpoints`: the checkpoints in the pipeline's store, newest first, with size,
/// duration and per-operator alignment (incomplete ones say why), and the savepoints written.
pub async fn checkpoints(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<Json<Value>> {
    find(&app, &team, &name).await?;
    let dir = app.supervisor.pipeline_dir(&team, &name);
    let mut checkpoints = Vec::new();
    if dir.join("checkpoints").exists() {
        let listing = open_store(&dir.join("checkpoints"))?
            .list()
            .await
            .map_err(|error| ApiError::internal(format!("listing checkpoints: {error}")))?;
        for listed in listing.checkpoints.iter().rev() {
            checkpoints.push(match &listed.manifest {
                ManifestState::Valid(manifest) => summary(manifest),
                ManifestState::Missing => json!({ "checkpoint": listed.id, "complete": false, "reason": "no manifest (in progress or abandoned)" }),
                ManifestState::Torn { reason } => json!({ "checkpoint": listed.id, "complete": false, "reason": reason }),
            });
        }
    }
    let mut savepoints = Vec::new();
    for entry in std::fs::read_dir(dir.join("savepoints")).into_iter().flatten().flatten() {
        let path = entry.path();
        let latest = open_store(&path)?.latest_complete().await.ok().flatten();
        if let Some(manifest) = latest {
            let mut summary = summary(&manifest);
            summary["path"] = json!(path.display().to_string());
            savepoints.push(summary);
        }
    }
    savepoints.sort_by_key(|s| std::cmp::Reverse(s["created_at_ms"].as_i64()));
    Ok(Json(json!({ "checkpoints": checkpoints, "savepoints": savepoints })))
}

fn open_store(path: &std::path::Path) -> ApiResult<CheckpointStore> {
    CheckpointStore::open(&path.display().to_string(), &StoreOptions::default())
        .map_err(|error| ApiError::internal(format!("opening {}: {error}", path.display())))
}

fn summary(manifest: &Manifest) -> Value {
    let operators: Vec<Value> = manifest
        .parts
        .iter()
        .map(|part| {
            json!({
                "node": part.node, "worker": part.worker, "bytes": part.bytes,
                "duration_ms": part.duration_ms, "alignment_ms": part.alignment_ms,
            })
        })
        .collect();
    json!({
        "checkpoint": manifest.checkpoint,
        "complete": true,
        "kind": manifest.kind,
        "created_at_ms": manifest.created_at_ms,
        "workers": manifest.workers,
        "finished": manifest.finished,
        "duration_ms": manifest.duration_ms,
        "bytes": manifest.parts.iter().map(|part| part.bytes).sum::<u64>(),
        "parts": operators,
    })
}

async fn find(app: &App, team: &str, name: &str) -> ApiResult<PipelineRecord> {
    app.store
        .pipeline(team, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pipeline \"{name}\" in team \"{team}\"")))
}

/// 409 unless `event` applies to the pipeline's current state.
fn expect(pipeline: &PipelineRecord, event: Event) -> ApiResult<()> {
    let busy = pipeline.pending.is_some() && pipeline.actual.state == Lifecycle::Running;
    if next(pipeline.actual.state, event).is_none() || busy {
        let what = pipeline.pending.map(|p| format!(" with a pending {p:?} request")).unwrap_or_default();
        return Err(ApiError::conflict(format!(
            "pipeline \"{}\" is {}{what}: cannot {event:?} now",
            pipeline.name, pipeline.actual.state
        ))
        .with_details(json!({ "state": pipeline.actual.state })));
    }
    Ok(())
}

async fn act(
    app: &App,
    pipeline: &PipelineRecord,
    request: Request,
) -> ApiResult<(StatusCode, Json<PipelineRecord>)> {
    app.store.request(&pipeline.team, &pipeline.name, &request).await?;
    app.supervisor.wake();
    Ok((StatusCode::ACCEPTED, Json(find(app, &pipeline.team, &pipeline.name).await?)))
}

fn parallelism(value: i64) -> ApiResult<i64> {
    if (1..=MAX_PARALLELISM).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            "parallelism",
            format!("parallelism must be between 1 and {MAX_PARALLELISM}, not {value}"),
        ))
    }
}

fn invalid_spec(diagnostics: Vec<sluice_spec::Diagnostic>) -> ApiError {
    let summary = diagnostics.first().map(ToString::to_string).unwrap_or_default();
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_spec",
        message: format!("the spec has {} problem(s); first: {summary}", diagnostics.len()),
        details: Some(json!({ "errors": diagnostics })),
    }
}

/// The spec's pipeline name if the whole spec, with its connections resolved, is valid; its
/// diagnostics otherwise.
async fn check(app: &App, team: &str, text: &str) -> ApiResult<Result<String, Vec<sluice_spec::Diagnostic>>> {
    Ok(match app.store.resolve_spec(team, text).await? {
        Ok(resolved) => check_resolved(app, team, resolved).await,
        Err(diagnostics) => Err(diagnostics),
    })
}

/// Like [`check`], for a spec whose connections are resolved already.
pub(super) async fn check_resolved(
    app: &App,
    team: &str,
    text: String,
) -> Result<String, Vec<sluice_spec::Diagnostic>> {
    let (spec, diagnostics) = sluice_spec::parse_partial(&text);
    let Some(spec) = spec.filter(|_| diagnostics.is_empty()) else { return Err(diagnostics) };
    if let Err(message) = check_name("pipeline", &spec.name) {
        return Err(vec![sluice_spec::Diagnostic::new("name", message)]);
    }
    let base_dir = app.supervisor.pipeline_dir(team, &spec.name);
    let checker = app.checker.clone();
    let checked = tokio::task::spawn_blocking(move || checker.check(&text, &base_dir)).await;
    match checked {
        Ok(Ok(())) => Ok(spec.name),
        Ok(Err(diagnostics)) => Err(diagnostics),
        Err(error) => Err(vec![sluice_spec::Diagnostic::new("", format!("the spec check crashed: {error}"))]),
    }
}
