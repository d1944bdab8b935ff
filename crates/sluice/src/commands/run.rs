//! `sluice run`: plan a spec and execute it in this process (optionally as one of several
//! processes in timely's cluster mode), with a live status line and a summary at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sluice_control::supervisor::{ExitStatus, Outcome};
use sluice_runtime::checkpoint::{CheckpointOptions, RestoreFrom};
use sluice_runtime::{RunOptions, Runtime, Topology};
use sluice_spec::StateBackendKind;
use sluice_state::{CheckpointKind, StoreOptions};

use crate::metrics_file::MetricsFile;
use crate::plan::{Planned, plan_file, resolve, state_backend};
use crate::report::{LiveStatus, print_summary};

/// Arguments of `sluice run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline spec (YAML).
    pub pipeline: PathBuf,
    /// Worker threads in this process (default: the number of cores).
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,
    /// Number of processes in the cluster (each started with the same spec and `--peers`).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index, `0..processes`.
    #[arg(long, default_value_t = 0)]
    pub process_id: usize,
    /// `host:port` of every process, comma-separated, in process order.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Epochs a source may run ahead of the slowest sink (bounds memory).
    #[arg(long, default_value_t = 4)]
    pub max_epochs_in_flight: u64,
    /// No live status line and no summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Take checkpoints in this directory or `s3://bucket/prefix` (overrides the spec's
    /// `checkpoints.location`; enables checkpoints if the spec has none).
    #[arg(long, value_name = "LOCATION")]
    pub checkpoint_dir: Option<String>,
    /// Time between checkpoints, e.g. `1s` or `10s` (overrides the spec).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub checkpoint_interval: Option<Duration>,
    /// Ignore existing checkpoints and start from the beginning.
    #[arg(long, conflicts_with = "from_savepoint")]
    pub fresh: bool,
    /// Resume from the savepoint at this directory or `s3://` URL instead of the latest
    /// checkpoint.
    #[arg(long, value_name = "LOCATION")]
    pub from_savepoint: Option<String>,
    /// When stopped (Ctrl-C or SIGTERM), also write the final checkpoint as a savepoint here.
    #[arg(long, value_name = "LOCATION")]
    pub stop_with_savepoint: Option<String>,
    /// Keep keyed state in `memory` or `rocksdb` (overrides the spec's `state.backend`).
    #[arg(long, value_name = "BACKEND")]
    pub state_backend: Option<StateBackendKind>,
    /// On exit, write `{"outcome": "finished"|"stopped"|"failed", "message"}` to this file (how
    /// the control plane's supervisor learns how a worker ended).
    #[arg(long, value_name = "PATH")]
    pub status_file: Option<PathBuf>,
    /// While running, rewrite this JSON file every second (and once more at the end) with each
    /// node's counters, rates and busy fraction (how the control plane serves live metrics).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

/// Parses a duration argument such as `1s` or `500ms`.
pub(crate) fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    sluice_spec::parse_duration(text)
}

impl RunArgs {
    /// The topology these arguments ask for, checked.
    pub fn topology(&self) -> anyhow::Result<Topology> {
        let workers = match self.workers {
            Some(0) => bail!("--workers must be at least 1"),
            Some(workers) => workers,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        if self.processes == 0 {
            bail!("--processes must be at least 1");
        }
        if self.processes == 1 && self.peers.is_empty() {
            return Ok(Topology::Local { workers });
        }
        if self.peers.len() != self.processes {
            bail!(
                "--peers lists {} address(es) but --processes is {}; give one host:port per process, e.g. --peers 127.0.0.1:7001,127.0.0.1:7002",
                self.peers.len(),
                self.processes
            );
        }
        if self.process_id >= self.processes {
            bail!(
                "--process-id {} is out of range for --processes {} (use 0..{})",
                self.process_id,
                self.processes,
                self.processes
            );
        }
        Ok(Topology::Cluster { workers, process: self.process_id, addresses: self.peers.clone() })
    }
}

/// Runs `sluice run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let status_file = args.status_file.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let result = run_pipeline(args, stop.clone());
    if let Some(path) = status_file {
        let (outcome, message) = match &result {
            Ok(code) if *code == ExitCode::SUCCESS && stop.load(Ordering::SeqCst) => {
                (Outcome::Stopped, String::new())
            }
            Ok(code) if *code == ExitCode::SUCCESS => (Outcome::Finished, String::new()),
            Ok(_) => (Outcome::Failed, "the pipeline failed; see the log".to_string()),
            Err(error) => (Outcome::Failed, format!("{error:#}")),
        };
        let status = serde_json::to_string(&ExitStatus { outcome, message })?;
        std::fs::write(&path, status)
            .with_context(|| format!("writing the status file {}", path.display()))?;
    }
    result
}

fn run_pipeline(args: RunArgs, stop: Arc<AtomicBool>) -> anyhow::Result<ExitCode> {
    let topology = args.topology()?;
    let mut planned = match plan_file(&args.pipeline) {
        Ok(planned) => planned,
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                eprintln!("{}: {diagnostic}", args.pipeline.display());
            }
            eprintln!("pipeline is not valid; nothing was run (check it with `sluice validate`)");
            return Ok(ExitCode::FAILURE);
        }
    };
    let name = planned.spec.name.clone();
    if let Some(backend) = args.state_backend {
        planned.graph.state_backend = state_backend(backend, &planned.spec.state, &planned.base_dir);
    }
    let checkpoints = checkpoint_options(&args, &planned)?;
    let runtime = Runtime::new(planned.graph).context("preparing the pipeline")?;
    install_stop_handler(stop.clone(), checkpoints.is_some())?;
    let options = RunOptions {
        topology: topology.clone(),
        max_epochs_in_flight: args.max_epochs_in_flight,
        stop,
        checkpoints,
    };
    let status = (!args.quiet).then(|| LiveStatus::start(runtime.metrics().clone()));
    let finished = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        if matches!(topology, Topology::Cluster { .. }) {
            scope.spawn(|| leave_cluster_after_failure(&runtime, &name, &finished));
        }
        // Dropped when the run ends, which tells the metrics writer to write its last snapshot.
        let (run_ends, ended) = std::sync::mpsc::channel::<()>();
        if let Some(path) = &args.metrics_file {
            let (Topology::Local { workers } | Topology::Cluster { workers, .. }) = &topology;
            let writer = MetricsFile::new(path.clone(), *workers);
            scope.spawn(|| writer.run(&runtime, ended));
        }
        let result = runtime.run(&options);
        finished.store(true, Ordering::SeqCst);
        drop(run_ends);
        result
    });
    drop(status);
    match result {
        Ok(report) => {
            if !args.quiet {
                print_summary(&name, &topology, &report);
            }
            let final_checkpoint = report.checkpoints.last().filter(|m| m.kind == CheckpointKind::Final);
            if let (Some(savepoint), Some(last)) = (&args.stop_with_savepoint, final_checkpoint) {
                eprintln!(
                    "savepoint of checkpoint {} written to {savepoint}; resume with --from-savepoint {savepoint}",
                    last.checkpoint
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: pipeline \"{name}\" failed: {}", error.report());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The checkpoint settings from the spec and the command line; `None` when neither asks for
/// checkpoints.
fn checkpoint_options(args: &RunArgs, planned: &Planned) -> anyhow::Result<Option<CheckpointOptions>> {
    let spec = planned.spec.checkpoints.as_ref();
    if spec.is_none() && args.checkpoint_dir.is_none() {
        if args.from_savepoint.is_some() || args.stop_with_savepoint.is_some() {
            bail!(
                "savepoints need checkpoints: add a `checkpoints:` section to the spec or pass --checkpoint-dir"
            );
        }
        return Ok(None);
    }
    let location = args
        .checkpoint_dir
        .clone()
        .or_else(|| spec.map(|spec| spec.location.clone()))
        .unwrap_or_else(|| format!("checkpoints/{}", planned.spec.name));
    let interval = args
        .checkpoint_interval
        .or_else(|| spec.map(|spec| Duration::from_millis(spec.interval_ms)))
        .unwrap_or(Duration::from_millis(sluice_spec::DEFAULT_CHECKPOINT_INTERVAL_MS));
    if interval < Duration::from_millis(sluice_spec::MIN_CHECKPOINT_INTERVAL_MS) {
        bail!("--checkpoint-interval must be at least 1s");
    }
    let local = |location: String| {
        if location.contains("://") {
            location
        } else {
            resolve(&planned.base_dir, &location).display().to_string()
        }
    };
    let restore = match (&args.from_savepoint, args.fresh) {
        (Some(path), _) => RestoreFrom::Savepoint(local(path.clone())),
        (None, true) => RestoreFrom::Nothing,
        (None, false) => RestoreFrom::Latest,
    };
    let store = StoreOptions {
        endpoint: spec.and_then(|spec| spec.endpoint.clone()),
        region: spec.and_then(|spec| spec.region.clone()),
        ..StoreOptions::default()
    };
    Ok(Some(CheckpointOptions {
        location: local(location),
        store,
        interval,
        retain: spec.map_or(sluice_spec::DEFAULT_CHECKPOINTS_RETAINED, |spec| spec.retain),
        restore,
        savepoint: args.stop_with_savepoint.clone().map(local),
    }))
}

/// How long a failed cluster process tries to drain before it leaves the cluster.
const DRAIN_AFTER_FAILURE: Duration = Duration::from_secs(3);

/// A failure stops this process's sources only; its peers keep theirs running, so it can never
/// drain. After a grace period, report the failure and exit: the peers then see the connection
/// close and stop too, instead of everyone waiting forever.
fn leave_cluster_after_failure(runtime: &Runtime, name: &str, finished: &AtomicBool) {
    let mut failed_at: Option<Instant> = None;
    while !finished.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(report) = runtime.failure() {
            let since = *failed_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= DRAIN_AFTER_FAILURE && !finished.load(Ordering::SeqCst) {
                eprintln!("error: pipeline \"{name}\" failed: {report}");
                eprintln!("leaving the cluster so that the other processes stop too");
                std::process::exit(1);
            }
        }
    }
}

/// First Ctrl-C or SIGTERM: stop gracefully (sources end, sinks commit). Second: exit now.
fn install_stop_handler(stop: Arc<AtomicBool>, checkpointing: bool) -> anyhow::Result<()> {
    let message = if checkpointing {
        "stopping gracefully: taking a final checkpoint and committing sinks (press Ctrl-C again to exit now)"
    } else {
        "stopping gracefully: draining and committing sinks (press Ctrl-C again to exit now)"
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(mut terminate) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                for _ in 0..2 {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = terminate.recv() => {}
                    }
                    if stop.swap(true, Ordering::SeqCst) {
                        eprintln!("\nstopping now");
                        std::process::exit(130);
                    }
                    eprintln!("\n{message}");
                }
            });
        })
        .context("starting the signal handler")?;
    Ok(())
}
