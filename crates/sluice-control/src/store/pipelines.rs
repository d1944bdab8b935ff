//! Pipelines, their versions and their lifecycle events.
//!
//! Two writers share a pipeline row without stepping on each other: the API writes what users
//! want (`desired`, `pending`, `deployed_version`, `parallelism`, `resume_from`, and bumps
//! `generation` on every request), the supervisor writes what is (`state`, the worker, restart
//! bookkeeping) and clears a request only if it is still the one it acted on.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Store, is_duplicate, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::State;

/// Whether users want the pipeline running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// A worker should run the deployed version.
    Running,
    /// No worker should run.
    Stopped,
}

impl Desired {
    fn name(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }
}

/// A request the supervisor has not acted on yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pending {
    /// Stop gracefully.
    Stop,
    /// Stop and write a savepoint.
    Savepoint,
    /// Stop and start again (e.g. a new version was deployed).
    Restart,
    /// Stop and start again at a new parallelism.
    Rescale,
}

impl Pending {
    fn name(self) -> &'static str {
        match self {
            Pending::Stop => "stop",
            Pending::Savepoint => "savepoint",
            Pending::Restart => "restart",
            Pending::Rescale => "rescale",
        }
    }

    fn parse(text: &str) -> Option<Pending> {
        [Pending::Stop, Pending::Savepoint, Pending::Restart, Pending::Rescale]
            .into_iter()
            .find(|p| p.name() == text)
    }
}

/// A worker process the supervisor started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Worker {
    /// Its process id.
    pub pid: i64,
    /// Its start time in clock ticks since boot, so a reused pid is not mistaken for it.
    pub start: i64,
    /// The pipeline generation it runs.
    pub generation: i64,
    /// When it started, ms since the epoch.
    pub started_at: i64,
}

/// What the supervisor observed of a pipeline and did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actual {
    /// Lifecycle state.
    pub state: State,
    /// Why it is in that state.
    pub reason: String,
    /// The running worker, if any.
    pub worker: Option<Worker>,
    /// How many workers were started so far.
    pub runs: i64,
    /// Restarts after failures since the last healthy run.
    pub restarts: i64,
    /// When a recovering pipeline restarts, ms since the epoch.
    pub retry_at: Option<i64>,
    /// The newest savepoint written.
    pub last_savepoint: Option<String>,
}

/// A pipeline: what users asked for and what the supervisor observed.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRecord {
    /// Owning team.
    pub team: String,
    /// Name, unique within the team (the spec's `name`).
    pub name: String,
    /// The newest version's number.
    pub latest_version: i64,
    /// The version that runs (or ran), once deployed.
    pub deployed_version: Option<i64>,
    /// Whether users want it running.
    pub desired: Desired,
    /// A request not yet acted on.
    pub pending: Option<Pending>,
    /// Worker threads.
    pub parallelism: i64,
    /// Bumped on every user request.
    pub generation: i64,
    /// Savepoint the next start resumes from.
    pub resume_from: Option<String>,
    /// What the supervisor observed.
    #[serde(flatten)]
    pub actual: Actual,
    /// Who created it.
    pub created_by: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

/// One version of a pipeline's spec.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRecord {
    /// Version number, from 1.
    pub version: i64,
    /// The spec text (YAML or JSON).
    pub spec: String,
    /// Who wrote it.
    pub created_by: String,
    /// When, ms since the epoch.
    pub created_at: i64,
}

/// A lifecycle transition.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineEvent {
    /// Sequence number.
    pub id: i64,
    /// When, ms since the epoch.
    pub at: i64,
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
    /// Why.
    pub reason: String,
}

/// What a user asks of a pipeline (API side).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// New desired state.
    pub desired: Option<Desired>,
    /// New pending request (`Some(None)` clears it).
    pub pending: Option<Option<Pending>>,
    /// New deployed version.
    pub deployed_version: Option<i64>,
    /// New parallelism.
    pub parallelism: Option<i64>,
    /// Savepoint the next start resumes from (`Some(None)` clears it).
    pub resume_from: Option<Option<String>>,
}

/// What the supervisor observed and did (supervisor side).
#[derive(Debug, Clone)]
pub struct Observed {
    /// The state before, as read.
    pub from: State,
    /// What is now.
    pub now: Actual,
    /// The request acted on, cleared if unchanged since.
    pub consumed_pending: Option<Pending>,
    /// The savepoint resumed from, cleared if unchanged since.
    pub consumed_resume: Option<String>,
    /// Set `desired` to stopped, unless a user asked for something since `generation`.
    pub stop_desired_at_generation: Option<i64>,
}

const COLUMNS: &str = "team, name, latest_version, deployed_version, desired, pending, parallelism, generation,
    resume_from, state, reason, worker_pid, worker_start, worker_generation, worker_started_at, runs, restarts,
    retry_at, last_savepoint, created_by, created_at, updated_at";

fn record(row: &AnyRow) -> ApiResult<PipelineRecord> {
    let desired: String = row.try_get("desired")?;
    let pending: Option<String> = row.try_get("pending")?;
    let state: String = row.try_get("state")?;
    let pid: Option<i64> = row.try_get("worker_pid")?;
    let worker = match pid {
        Some(pid) => Some(Worker {
            pid,
            start: row.try_get::<Option<i64>, _>("worker_start")?.unwrap_or_default(),
            generation: row.try_get::<Option<i64>, _>("worker_generation")?.unwrap_or_default(),
            started_at: row.try_get::<Option<i64>, _>("worker_started_at")?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(PipelineRecord {
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        latest_version: row.try_get("latest_version")?,
        deployed_version: row.try_get("deployed_version")?,
        desired: if desired == "running" { Desired::Running } else { Desired::Stopped },
        pending: pending.as_deref().and_then(Pending::parse),
        parallelism: row.try_get("parallelism")?,
        generation: row.try_get("generation")?,
        resume_from: row.try_get("resume_from")?,
        actual: Actual {
            state: state.parse().map_err(ApiError::internal)?,
            reason: row.try_get("reason")?,
            worker,
            runs: row.try_get("runs")?,
            restarts: row.try_get("restarts")?,
            retry_at: row.try_get("retry_at")?,
            last_savepoint: row.try_get("last_savepoint")?,
        },
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates pipeline `name` in `team` with `spec` as version 1.
    pub async fn create_pipeline(
        &self,
        team: &str,
        name: &str,
        spec: &str,
        parallelism: i64,
        user: &str,
    ) -> ApiResult<PipelineRecord> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO pipelines (team, name, latest_version, desired, parallelism, generation, state, reason,
                runs, restarts, created_by, created_at, updated_at)
             VALUES ($1, $2, 1, 'stopped', $3, 0, 'created', 'created', 0, 0, $4, $5, $5)",
        )
        .bind(team)
        .bind(name)
        .bind(parallelism)
        .bind(user)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|error| {
            if is_duplicate(&error) {
                ApiError::conflict(format!(
                    "pipeline \"{name}\" already exists in team \"{team}\"; update it with PUT to add a version"
                ))
            } else {
                error.into()
            }
        })?;
        insert_version(&mut tx, team, name, 1, spec, user, now).await?;
        tx.commit().await?;
        self.pipeline(team, name).await?.ok_or_else(|| ApiError::internal("pipeline vanished after create"))
    }

    /// Adds `spec` as the next version; returns its number.
    pub async fn add_version(&self, team: &str, name: &str, spec: &str, user: &str) -> ApiResult<i64> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT latest_version FROM pipelines WHERE team = $1 AND name = $2")
                .bind(team)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(latest) = latest else {
            return Err(ApiError::not_found(format!("pipeline \"{name}\" in team \"{team}\"")));
        };
        let version = latest + 1;
        insert_version(&mut tx, team, name, version, spec, user, now).await?;
        sqlx::query(
            "UPDATE pipelines SET latest_version = $1, updated_at = $2 WHERE team = $3 AND name = $4",
        )
        .bind(version)
        .bind(now)
        .bind(team)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Pipeline `name` of `team`.
    pub async fn pipeline(&self, team: &str, name: &str) -> ApiResult<Option<PipelineRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM pipelines WHERE team = $1 AND name = $2"
        )))
        .bind(team)
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// The pipelines of `team`, or of every team when `None`, by team and name.
    pub async fn pipelines(&self, team: Option<&str>) -> ApiResult<Vec<PipelineRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM pipelines WHERE $1 = '' OR team = $1 ORDER BY team, name"
        )))
        .bind(team.unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// The versions of a pipeline, oldest first.
    pub async fn versions(&self, team: &str, name: &str) -> ApiResult<Vec<VersionRecord>> {
        let rows = sqlx::query(
            "SELECT version, spec, created_by, created_at FROM pipeline_versions WHERE team = $1 AND name = $2 ORDER BY version",
        )
        .bind(team)
        .bind(name)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(version_record).collect()
    }

    /// One version of a pipeline (read alone: deploys and worker starts need only it).
    pub async fn version(&self, team: &str, name: &str, version: i64) -> ApiResult<Option<VersionRecord>> {
        let row = sqlx::query(
            "SELECT version, spec, created_by, created_at FROM pipeline_versions WHERE team = $1 AND name = $2 AND version = $3",
        )
        .bind(team)
        .bind(name)
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(version_record).transpose()
    }

    /// Records a user's request and bumps the generation; returns the new generation.
    pub async fn request(&self, team: &str, name: &str, request: &Request) -> ApiResult<i64> {
        let mut tx = self.pool().begin().await?;
        let generation: Option<i64> =
            sqlx::query_scalar("SELECT generation FROM pipelines WHERE team = $1 AND name = $2")
                .bind(team)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(generation) = generation else {
            return Err(ApiError::not_found(format!("pipeline \"{name}\" in team \"{team}\"")));
        };
        let generation = generation + 1;
        sqlx::query("UPDATE pipelines SET generation = $1, updated_at = $2 WHERE team = $3 AND name = $4")
            .bind(generation)
            .bind(now_ms())
            .bind(team)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        // Only these constant column names are ever formatted in.
        let set = |column: &str| {
            AssertSqlSafe(format!("UPDATE pipelines SET {column} = $1 WHERE team = $2 AND name = $3"))
        };
        if let Some(desired) = request.desired {
            sqlx::query(set("desired")).bind(desired.name()).bind(team).bind(name).execute(&mut *tx).await?;
        }
        if let Some(pending) = request.pending {
            sqlx::query(set("pending"))
                .bind(pending.map(Pending::name))
                .bind(team)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(version) = request.deployed_version {
            sqlx::query(set("deployed_version"))
                .bind(version)
                .bind(team)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(parallelism) = request.parallelism {
            sqlx::query(set("parallelism")).bind(parallelism).bind(team).bind(name).execute(&mut *tx).await?;
        }
        if let Some(resume_from) = &request.resume_from {
            sqlx::query(set("resume_from"))
                .bind(resume_from.clone())
                .bind(team)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(generation)
    }

    /// Records what the supervisor observed, with an event when the state changed.
    pub async fn observe(&self, team: &str, name: &str, observed: &Observed) -> ApiResult<()> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let now_actual = &observed.now;
        let worker = now_actual.worker;
        sqlx::query(
            "UPDATE pipelines SET state = $1, reason = $2, worker_pid = $3, worker_start = $4, worker_generation = $5,
                worker_started_at = $6, runs = $7, restarts = $8, retry_at = $9, last_savepoint = $10, updated_at = $11
             WHERE team = $12 AND name = $13",
        )
        .bind(now_actual.state.name())
        .bind(&now_actual.reason)
        .bind(worker.map(|w| w.pid))
        .bind(worker.map(|w| w.start))
        .bind(worker.map(|w| w.generation))
        .bind(worker.map(|w| w.started_at))
        .bind(now_actual.runs)
        .bind(now_actual.restarts)
        .bind(now_actual.retry_at)
        .bind(now_actual.last_savepoint.clone())
        .bind(now)
        .bind(team)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if let Some(pending) = observed.consumed_pending {
            sqlx::query("UPDATE pipelines SET pending = NULL WHERE team = $1 AND name = $2 AND pending = $3")
                .bind(team)
                .bind(name)
                .bind(pending.name())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(savepoint) = &observed.consumed_resume {
            sqlx::query(
                "UPDATE pipelines SET resume_from = NULL WHERE team = $1 AND name = $2 AND resume_from = $3",
            )
            .bind(team)
            .bind(name)
            .bind(savepoint)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(generation) = observed.stop_desired_at_generation {
            sqlx::query(
                "UPDATE pipelines SET desired = 'stopped' WHERE team = $1 AND name = $2 AND generation = $3",
            )
            .bind(team)
            .bind(name)
            .bind(generation)
            .execute(&mut *tx)
            .await?;
        }
        if observed.from != now_actual.state {
            sqlx::query(
                "INSERT INTO pipeline_events (team, name, at, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(team)
            .bind(name)
            .bind(now)
            .bind(observed.from.name())
            .bind(now_actual.state.name())
            .bind(&now_actual.reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` lifecycle events of a pipeline, oldest first.
    pub async fn events(&self, team: &str, name: &str, limit: i64) -> ApiResult<Vec<PipelineEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, from_state, to_state, reason FROM pipeline_events WHERE team = $1 AND name = $2
             ORDER BY id DESC LIMIT $3",
        )
        .bind(team)
        .bind(name)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut events = rows
            .iter()
            .map(|row| {
                Ok(PipelineEvent {
                    id: row.try_get(0)?,
                    at: row.try_get(1)?,
                    from: row.try_get(2)?,
                    to: row.try_get(3)?,
                    reason: row.try_get(4)?,
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }

    /// Deletes a pipeline with its versions and events.
    pub async fn delete_pipeline(&self, team: &str, name: &str) -> ApiResult<()> {
        let mut tx = self.pool().begin().await?;
        for table in ["pipeline_versions", "pipeline_events"] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE team = $1 AND name = $2")))
                .bind(team)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM pipelines WHERE team = $1 AND name = $2")
            .bind(team)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("pipeline \"{name}\" in team \"{team}\"")));
        }
        Ok(())
    }
}

fn version_record(row: &AnyRow) -> ApiResult<VersionRecord> {
    Ok(VersionRecord {
        version: row.try_get(0)?,
        spec: row.try_get(1)?,
        created_by: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    team: &str,
    name: &str,
    version: i64,
    spec: &str,
    user: &str,
    now: i64,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO pipeline_versions (team, name, version, spec, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(team)
    .bind(name)
    .bind(version)
    .bind(spec)
    .bind(user)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
