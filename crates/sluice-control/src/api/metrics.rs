//! Metrics: one pipeline's latest snapshot as JSON, and every pipeline's in the Prometheus text
//! format. Both read the snapshot file the current run's worker keeps up to date; nothing is
//! stored in the database.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{App, Segments};
use crate::error::{ApiError, ApiResult};
use crate::metrics::{MetricsSnapshot, PROMETHEUS_TEXT, exposition};
use crate::store::{PipelineRecord, now_ms};

/// `GET /api/v1/teams/{team}/pipelines/{pipeline}/metrics`: the latest snapshot of the current
/// run, how old it is and the pipeline's state; an empty node list and a `message` when there is
/// none yet.
pub async fn pipeline(
    State(app): State<App>,
    Segments((team, name)): Segments<(String, String)>,
) -> ApiResult<Json<Value>> {
    let pipeline = app
        .store
        .pipeline(&team, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pipeline \"{name}\" in team \"{team}\"")))?;
    let run = pipeline.actual.runs;
    let mut answer = json!({
        "team": team,
        "pipeline": name,
        "state": pipeline.actual.state,
        "run": run,
    });
    let snapshot = latest(&app, &pipeline).await.map_err(|error| {
        ApiError::internal(format!("reading the metrics of pipeline \"{name}\" in team \"{team}\": {error}"))
    })?;
    let Some(snapshot) = snapshot else {
        let message = if run == 0 {
            "no metrics yet: the pipeline has not run".to_string()
        } else {
            format!("no metrics yet: run {run} has not written its first snapshot")
        };
        answer["nodes"] = json!([]);
        answer["message"] = json!(message);
        return Ok(Json(answer));
    };
    answer["age_ms"] = json!((now_ms() - snapshot.at_ms).max(0));
    if !pipeline.actual.state.has_worker() {
        answer["message"] = json!(format!(
            "the pipeline is {}: these are the last metrics of run {run}",
            pipeline.actual.state
        ));
    }
    if let (Value::Object(answer), Value::Object(snapshot)) = (&mut answer, json!(snapshot)) {
        answer.extend(snapshot);
    }
    Ok(Json(answer))
}

/// `GET /api/v1/metrics`: every pipeline's state and restarts, and the node counters and gauges
/// of its current run's latest snapshot, in the Prometheus text format.
pub async fn prometheus(State(app): State<App>) -> ApiResult<impl IntoResponse> {
    let pipelines = app.store.pipelines(None).await?;
    let files: Vec<_> = pipelines
        .iter()
        .map(|p| (p.actual.runs > 0).then(|| app.supervisor.metrics_file(p, p.actual.runs)))
        .collect();
    let snapshots = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|file| {
                let file = file?;
                // One unreadable file must not cost every other pipeline its metrics.
                MetricsSnapshot::read(&file).unwrap_or_else(|error| {
                    tracing::warn!(%error, "skipping a metrics snapshot");
                    None
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|error| ApiError::internal(format!("reading metrics snapshots: {error}")))?;
    let text = exposition(&pipelines.into_iter().zip(snapshots).collect::<Vec<_>>());
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text))
}

/// The current run's latest snapshot, if it wrote one.
async fn latest(app: &App, pipeline: &PipelineRecord) -> std::io::Result<Option<MetricsSnapshot>> {
    if pipeline.actual.runs == 0 {
        return Ok(None);
    }
    let file = app.supervisor.metrics_file(pipeline, pipeline.actual.runs);
    tokio::task::spawn_blocking(move || MetricsSnapshot::read(&file)).await.map_err(std::io::Error::other)?
}
