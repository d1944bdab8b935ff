//! Supervision: runs each pipeline that should run as a local worker process (`sluice run`),
//! restarts a dead worker from its latest checkpoint with exponential backoff and a restart
//! budget, and drives the lifecycle from what it observes. Workers run in their own process
//! group and are found again by pid and start time, so restarting the control plane does not
//! stop them: on start it reconciles what runs with what should.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{Event, State, next};
use crate::secrets::{Redactor, SecretKey, env_name, secret_references};
use crate::store::{Desired, Observed, Pending, PipelineRecord, Store, Worker, now_ms};
use crate::worker_log;

/// How failed workers are restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Restarts allowed before the pipeline is marked failed.
    pub budget: i64,
    /// Wait before the first restart; doubles with each further one.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// A worker that ran this long resets the restart count.
    pub stable_after: Duration,
    /// A worker asked to stop that has not exited after this long is killed (its latest
    /// checkpoint stands).
    pub stop_timeout: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            budget: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The wait before restart number `attempt` (from 1).
    pub fn backoff(&self, attempt: i64) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.initial_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// How a worker's run ended, as it reports in its status file (`sluice run --status-file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Its sources ended and everything was committed.
    Finished,
    /// It was asked to stop and stopped gracefully (final checkpoint written).
    Stopped,
    /// It failed with an error.
    Failed,
}

/// The status file a worker writes when it exits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitStatus {
    /// How it ended.
    pub outcome: Outcome,
    /// Details, e.g. the error.
    #[serde(default)]
    pub message: String,
}

/// Runs and watches worker processes.
#[derive(Clone)]
pub struct Supervisor {
    store: Store,
    data_dir: PathBuf,
    program: PathBuf,
    policy: RestartPolicy,
    log_limit: u64,
    wake: Arc<Notify>,
    secrets: Arc<SecretKey>,
    /// When each stopping worker was asked to stop (ms since the epoch), by pipeline.
    stopping_since: Arc<Mutex<HashMap<(String, String), i64>>>,
}

/// How often the supervisor looks at every pipeline even when nothing woke it.
const TICK: Duration = Duration::from_millis(250);

impl Supervisor {
    /// A supervisor keeping pipeline files under `data_dir` and running `program` as workers,
    /// whose logs it rotates beyond `log_limit` bytes.
    pub fn new(
        store: Store,
        data_dir: PathBuf,
        program: PathBuf,
        policy: RestartPolicy,
        log_limit: u64,
        secrets: Arc<SecretKey>,
    ) -> Self {
        Self {
            store,
            data_dir,
            program,
            policy,
            log_limit,
            wake: Arc::new(Notify::new()),
            secrets,
            stopping_since: Arc::default(),
        }
    }

    /// The secrets of `team`, decrypted, as (name, value).
    async fn team_secrets(&self, team: &str) -> ApiResult<Vec<(String, String)>> {
        let sealed = self.store.sealed_secrets(team).await?;
        sealed
            .into_iter()
            .map(|(name, sealed)| {
                let value = self
                    .secrets
                    .open(team, &name, &sealed)
                    .map_err(|error| ApiError::internal(error.to_string()))?;
                Ok((name, value))
            })
            .collect()
    }

    /// Hides the secrets of `team` in text shown to users.
    pub async fn redactor(&self, team: &str) -> ApiResult<Redactor> {
        Ok(Redactor::new(self.team_secrets(team).await?.into_iter().map(|(_, value)| value)))
    }

    /// Asks for a reconcile pass now (after a user request).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The folder of a pipeline's files: specs, checkpoints, savepoints, logs.
    pub fn pipeline_dir(&self, team: &str, name: &str) -> PathBuf {
        pipeline_dir(&self.data_dir, team, name)
    }

    /// Reconciles forever.
    pub async fn run(self) {
        loop {
            if let Err(error) = self.reconcile_all().await {
                tracing::warn!(%error, "supervisor pass failed; retrying");
            }
            let _ = tokio::time::timeout(TICK, self.wake.notified()).await;
        }
    }

    /// One pass over every pipeline.
    pub async fn reconcile_all(&self) -> ApiResult<()> {
        for pipeline in self.store.pipelines(None).await? {
            // A stop observed and a start due happen in one pass: follow up until nothing changes.
            let mut current = pipeline;
            for _ in 0..3 {
                let (team, name) = (current.team.clone(), current.name.clone());
                if !self.reconcile(&current).await.unwrap_or_else(|error| {
                    tracing::warn!(%team, pipeline = %name, %error, "reconciling failed");
                    false
                }) {
                    break;
                }
                match self.store.pipeline(&team, &name).await? {
                    Some(next) => current = next,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Moves one pipeline one step towards what users want; returns whether anything changed.
    async fn reconcile(&self, p: &PipelineRecord) -> ApiResult<bool> {
        let now = now_ms();
        let mut observed = observed_from(p);
        match p.actual.worker {
            Some(worker) if alive(&worker) => {
                let dir = self.pipeline_dir(&p.team, &p.name);
                if let Err(error) = worker_log::rotate_if_larger(&dir, self.log_limit) {
                    tracing::warn!(team = %p.team, pipeline = %p.name, %error, "rotating the worker log failed");
                }
                if p.actual.restarts > 0
                    && now - worker.started_at >= self.policy.stable_after.as_millis() as i64
                {
                    observed.now.restarts = 0;
                }
                let request = match (p.desired, p.pending) {
                    (Desired::Stopped, Some(Pending::Savepoint)) => Some(Event::StopWithSavepoint),
                    (Desired::Stopped, _) => Some(Event::Stop),
                    (Desired::Running, Some(Pending::Restart)) if worker.generation != p.generation => {
                        Some(Event::Restart)
                    }
                    (Desired::Running, Some(Pending::Rescale)) if worker.generation != p.generation => {
                        Some(Event::Rescale)
                    }
                    _ => None,
                };
                let key = (p.team.clone(), p.name.clone());
                if matches!(p.actual.state, State::Stopping | State::Savepointing | State::Rescaling) {
                    // Asked to stop earlier (maybe by a previous control plane: then the clock
                    // starts now).
                    let since = *self
                        .stopping_since
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(key)
                        .or_insert(now);
                    let timeout = self.policy.stop_timeout;
                    if now - since >= timeout.as_millis() as i64 {
                        signal(worker.pid, rustix::process::Signal::KILL)?;
                        observed.now.reason = format!(
                            "worker {} did not stop within {} s; killed (its latest checkpoint stands)",
                            worker.pid,
                            timeout.as_secs()
                        );
                    }
                } else if let Some(event) = request.filter(|_| p.actual.state == State::Running) {
                    signal(worker.pid, rustix::process::Signal::TERM)?;
                    self.stopping_since.lock().unwrap_or_else(|e| e.into_inner()).insert(key, now);
                    observed.now.state = next(p.actual.state, event).unwrap_or(p.actual.state);
                    observed.now.reason =
                        format!("{} requested; worker {} asked to stop", describe(event), worker.pid);
                    if matches!(event, Event::Stop | Event::StopWithSavepoint) {
                        observed.consumed_pending = p.pending;
                    }
                }
            }
            Some(worker) => {
                self.stopping_since
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(p.team.clone(), p.name.clone()));
                let status = read_status(&self.status_file(p, p.actual.runs));
                observed.now.worker = None;
                let event = match status.as_ref().map(|s| s.outcome) {
                    Some(Outcome::Finished) => Event::WorkerFinished,
                    Some(Outcome::Stopped) => Event::WorkerStopped,
                    Some(Outcome::Failed) | None => {
                        observed.now.restarts = p.actual.restarts + 1;
                        Event::WorkerCrashed { budget_left: observed.now.restarts <= self.policy.budget }
                    }
                };
                if matches!(event, Event::WorkerFinished | Event::WorkerStopped) {
                    // The worker creates the folder when it starts; it holds a savepoint only
                    // once the final checkpoint was written there.
                    let savepoint = self.savepoint_dir(p, p.actual.runs);
                    if std::fs::read_dir(&savepoint).is_ok_and(|mut entries| entries.next().is_some()) {
                        observed.now.last_savepoint = Some(savepoint.display().to_string());
                    }
                }
                // A worker can only be recorded in a state that has one; anything else is
                // treated as a crash so the pipeline recovers.
                observed.now.state = next(p.actual.state, event).unwrap_or(State::Recovering);
                let detail = match &status {
                    // A worker's error may quote an option value; secrets never reach an event.
                    Some(status) if !status.message.is_empty() => {
                        format!(": {}", self.redactor(&p.team).await?.redact(&status.message))
                    }
                    Some(_) => String::new(),
                    None => " without reporting (killed or crashed)".to_string(),
                };
                observed.now.reason = format!("worker {} {}{detail}", worker.pid, exit_word(event));
                match observed.now.state {
                    State::Recovering => {
                        let wait = self.policy.backoff(observed.now.restarts);
                        observed.now.retry_at = Some(now + wait.as_millis() as i64);
                        observed.now.reason += &format!(
                            "; restart {} of {} from the latest checkpoint in {} ms",
                            observed.now.restarts,
                            self.policy.budget,
                            wait.as_millis()
                        );
                    }
                    State::Failed => {
                        observed.now.reason += &format!("; restart budget of {} spent", self.policy.budget);
                        observed.stop_desired_at_generation = Some(p.generation);
                    }
                    State::Stopped
                        if p.desired == Desired::Running && p.pending != Some(Pending::Restart) =>
                    {
                        // Bounded sources ended: done, not to be started again.
                        observed.stop_desired_at_generation = Some(p.generation);
                    }
                    _ => {}
                }
            }
            None => match p.desired {
                Desired::Running => {
                    let due = match p.actual.state {
                        State::Created | State::Stopped | State::Failed | State::Deploying => {
                            Some(Event::Deploy)
                        }
                        State::Recovering if p.actual.retry_at.is_none_or(|at| now >= at) => {
                            Some(Event::RetryDue)
                        }
                        State::Recovering => None,
                        // Recorded as running without a worker (e.g. the database was edited):
                        // start one.
                        _ => Some(Event::Deploy),
                    };
                    let Some(event) = due else { return Ok(false) };
                    self.start(p, event).await?;
                    return Ok(true);
                }
                Desired::Stopped => {
                    let Some(to) =
                        next(p.actual.state, Event::Stop).filter(|_| p.actual.state != State::Running)
                    else {
                        return Ok(false);
                    };
                    observed.now.state = to;
                    observed.now.reason = "stop requested; no worker was running".into();
                    observed.consumed_pending = p.pending;
                }
            },
        }
        let changed = observed.now != p.actual || observed.consumed_pending.is_some();
        if changed {
            self.store.observe(&p.team, &p.name, &observed).await?;
        }
        Ok(changed && observed.now.state != p.actual.state)
    }

    /// Deploys: writes the spec and starts a worker, recording both transitions.
    async fn start(&self, p: &PipelineRecord, event: Event) -> ApiResult<()> {
        let deploying = next(p.actual.state, event).unwrap_or(State::Deploying);
        let mut observed = observed_from(p);
        observed.now.state = deploying;
        observed.now.reason = match event {
            Event::RetryDue => format!("restarting after failure {}", p.actual.restarts),
            _ => format!("deploying version {}", p.deployed_version.unwrap_or(p.latest_version)),
        };
        self.store.observe(&p.team, &p.name, &observed).await?;
        let mut after = observed.clone();
        after.from = deploying;
        after.consumed_pending =
            p.pending.filter(|pending| matches!(pending, Pending::Restart | Pending::Rescale));
        after.consumed_resume = p.resume_from.clone();
        match self.spawn(p).await {
            Ok(worker) => {
                after.now.state = next(deploying, Event::WorkerStarted).unwrap_or(State::Running);
                after.now.worker = Some(worker);
                after.now.runs = p.actual.runs + 1;
                after.now.retry_at = None;
                after.now.reason = format!(
                    "worker {} runs version {} with {} worker thread(s){}",
                    worker.pid,
                    p.deployed_version.unwrap_or(p.latest_version),
                    p.parallelism,
                    p.resume_from.as_ref().map(|s| format!(" from savepoint {s}")).unwrap_or_default()
                );
            }
            Err(error) => {
                after.now.state = next(deploying, Event::SpawnFailed).unwrap_or(State::Failed);
                after.now.reason = format!("could not start a worker: {}", error.message);
                after.stop_desired_at_generation = Some(p.generation);
            }
        }
        self.store.observe(&p.team, &p.name, &after).await
    }

    async fn spawn(&self, p: &PipelineRecord) -> ApiResult<Worker> {
        let version = p.deployed_version.unwrap_or(p.latest_version);
        let spec = self
            .store
            .version(&p.team, &p.name, version)
            .await?
            .ok_or_else(|| ApiError::internal(format!("version {version} is missing")))?;
        let dir = self.pipeline_dir(&p.team, &p.name);
        let run = p.actual.runs + 1;
        let io = |what: &str, error: std::io::Error| ApiError::internal(format!("{what}: {error}"));
        for folder in [dir.join("runs"), dir.join("savepoints")] {
            std::fs::create_dir_all(&folder).map_err(|e| io(&format!("creating {}", folder.display()), e))?;
        }
        // Connections are read now: a changed connection reaches a pipeline when its worker starts.
        let spec = self.store.resolve_spec(&p.team, &spec.spec).await?.map_err(|diagnostics| {
            let first = diagnostics.first().map(ToString::to_string).unwrap_or_default();
            ApiError::internal(format!("the spec's connections no longer resolve: {first}"))
        })?;
        let spec_path = dir.join(format!("spec-v{version}.yaml"));
        std::fs::write(&spec_path, &spec).map_err(|e| io("writing the spec", e))?;
        let status = self.status_file(p, run);
        let _ = std::fs::remove_file(&status);
        prune_runs(&dir.join("runs"), run);
        let log = worker_log::open(&dir).map_err(|e| io("opening worker.log", e))?;
        let log_err = log.try_clone().map_err(|e| io("opening worker.log", e))?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("run")
            .arg(&spec_path)
            .arg("--quiet")
            .args(["--workers", &p.parallelism.to_string()])
            .arg("--checkpoint-dir")
            .arg(dir.join("checkpoints"))
            .arg("--stop-with-savepoint")
            .arg(self.savepoint_dir(p, run))
            .arg("--status-file")
            .arg(&status)
            .arg("--metrics-file")
            .arg(self.metrics_file(p, run));
        if let Some(savepoint) = &p.resume_from {
            command.arg("--from-savepoint").arg(savepoint);
        }
        // Only the secrets the spec names, and only in the worker's environment.
        let named = secret_references(&spec);
        for (name, value) in self.team_secrets(&p.team).await? {
            let env = env_name(&name);
            if named.contains(&env.as_str()) {
                command.env(env, value);
            }
        }
        command
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a Ctrl-C to the control plane does not reach its workers.
            .process_group(0)
            .kill_on_drop(false);
        let mut child =
            command.spawn().map_err(|e| io(&format!("starting {}", self.program.display()), e))?;
        let pid = child.id().ok_or_else(|| ApiError::internal("the worker exited at once"))?;
        let start = process_start(pid as i64).map(|(start, _)| start).unwrap_or_default();
        // Reap it when it exits (the supervisor reads its status file, not its exit code).
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(Worker { pid: pid as i64, start, generation: p.generation, started_at: now_ms() })
    }

    fn status_file(&self, p: &PipelineRecord, run: i64) -> PathBuf {
        self.pipeline_dir(&p.team, &p.name).join("runs").join(format!("{run}.status.json"))
    }

    /// The metrics snapshot the worker of run `run` (from 1) of `p` keeps up to date.
    pub fn metrics_file(&self, p: &PipelineRecord, run: i64) -> PathBuf {
        self.pipeline_dir(&p.team, &p.name).join("runs").join(format!("{run}.metrics.json"))
    }

    fn savepoint_dir(&self, p: &PipelineRecord, run: i64) -> PathBuf {
        self.pipeline_dir(&p.team, &p.name).join("savepoints").join(format!("run-{run}"))
    }
}

/// How many runs' status and metrics files are kept in a pipeline's `runs` folder.
const RUNS_KEPT: i64 = 20;

/// Removes the status and metrics files of runs older than the last [`RUNS_KEPT`] before run
/// `run` starts (savepoints are kept: they are the user's).
fn prune_runs(runs: &Path, run: i64) {
    let Ok(entries) = std::fs::read_dir(runs) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let number =
            name.to_str().and_then(|name| name.split('.').next()).and_then(|n| n.parse::<i64>().ok());
        if number.is_some_and(|number| number <= run - RUNS_KEPT) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The folder of a pipeline's files under `data_dir`.
pub fn pipeline_dir(data_dir: &Path, team: &str, name: &str) -> PathBuf {
    data_dir.join("teams").join(team).join("pipelines").join(name)
}

fn observed_from(p: &PipelineRecord) -> Observed {
    Observed {
        from: p.actual.state,
        now: p.actual.clone(),
        consumed_pending: None,
        consumed_resume: None,
        stop_desired_at_generation: None,
    }
}

fn describe(event: Event) -> &'static str {
    match event {
        Event::StopWithSavepoint => "stop with savepoint",
        Event::Rescale => "rescale",
        Event::Restart => "restart",
        _ => "stop",
    }
}

fn exit_word(event: Event) -> &'static str {
    match event {
        Event::WorkerFinished => "finished: its sources ended",
        Event::WorkerStopped => "stopped",
        _ => "failed",
    }
}

fn read_status(path: &Path) -> Option<ExitStatus> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Sends worker `pid` a signal: SIGTERM asks it to stop gracefully (it drains and takes a
/// final checkpoint), SIGKILL ends it.
fn signal(pid: i64, signal: rustix::process::Signal) -> ApiResult<()> {
    let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw);
    let Some(pid) = pid else { return Err(ApiError::internal("worker pid out of range")) };
    match rustix::process::kill_process(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(error) => Err(ApiError::internal(format!("signalling worker {pid:?}: {error}"))),
    }
}

/// Start time (clock ticks after boot) and state letter of process `pid`, from `/proc`.
pub fn process_start(pid: i64) -> Option<(i64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 22 overall is the 20th after the command name (state is the 1st).
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

/// Whether `worker` still runs: same pid, same start time, not a zombie.
pub fn alive(worker: &Worker) -> bool {
    matches!(process_start(worker.pid), Some((start, state)) if start == worker.start && state != 'Z' && state != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_runs_files_are_pruned_and_recent_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        for run in 1..=30 {
            std::fs::write(dir.path().join(format!("{run}.status.json")), "{}").unwrap();
            std::fs::write(dir.path().join(format!("{run}.metrics.json")), "{}").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a run's").unwrap();
        prune_runs(dir.path(), 31);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected: Vec<String> = (12..=30)
            .flat_map(|run| [format!("{run}.metrics.json"), format!("{run}.status.json")])
            .chain(["notes.txt".to_string()])
            .collect();
        expected.sort();
        assert_eq!(left, expected);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RestartPolicy::default();
        let waits: Vec<u64> = (1..=8).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.backoff(1000).as_secs(), 60);
    }

    #[test]
    fn this_process_is_alive_and_a_different_start_time_is_not() {
        let pid = i64::from(std::process::id());
        let (start, state) = process_start(pid).expect("own /proc entry");
        assert_ne!(state, 'Z');
        let me = Worker { pid, start, generation: 0, started_at: 0 };
        assert!(alive(&me));
        assert!(!alive(&Worker { start: start + 1, ..me }));
        assert!(!alive(&Worker { pid: i64::from(i32::MAX), ..me }));
    }
}
