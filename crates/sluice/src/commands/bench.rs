//! `sluice bench nexmark`: Nexmark queries over the in-process generator into `blackhole`.
//!
//! Each measurement runs in a fresh child process (so its peak memory is its own), several
//! times; the table shows medians and the ratio to a baseline measured in the same command: the
//! generator alone feeding the blackhole (`gen`), at the same worker count and checkpoint
//! setting. With `--checkpoints`, every query also runs with checkpoints every given interval
//! (to a temporary local directory), and the table adds their count, median duration and size.
//! With `--state-backends memory,rocksdb`, every measurement runs with each state backend.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use sluice_runtime::checkpoint::{CheckpointOptions, RestoreFrom};
use sluice_runtime::processor::StateBackend;
use sluice_runtime::{RunOptions, Runtime, Topology};
use sluice_spec::StateBackendKind;
use sluice_state::StoreOptions;

use crate::plan::plan;
use crate::report::count;

/// Arguments of `sluice bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The workload.
    pub workload: Workload,
    /// Nexmark events per run (persons, auctions and bids together).
    #[arg(long, default_value_t = 20_000_000)]
    pub events: u64,
    /// Worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Queries to measure, comma-separated (`gen` is the generator alone).
    #[arg(long, value_delimiter = ',', default_value = "gen,q0,q1,q2")]
    pub queries: Vec<Query>,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Checkpoint settings to measure, comma-separated: `off` or an interval such as `10s`.
    #[arg(long, value_delimiter = ',', default_value = "off")]
    pub checkpoints: Vec<String>,
    /// State backends to measure, comma-separated: `memory`, `rocksdb`.
    #[arg(long, value_delimiter = ',', default_value = "memory")]
    pub state_backends: Vec<StateBackendKind>,
    /// Kafka: records in the throughput topic.
    #[arg(long, default_value_t = 500_000)]
    pub records: u64,
    /// Kafka: records per second produced during the latency run.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Kafka: length of the latency run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Control: concurrent API clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Control: metadata databases, comma-separated: `sqlite` and/or a PostgreSQL URL (a scratch
    /// database is created on that server and dropped after).
    #[arg(long, value_delimiter = ',', default_value = "sqlite")]
    pub databases: Vec<String>,
    /// Internal: run one measurement in this process and print it as JSON.
    #[arg(long, hide = true)]
    pub child: Option<Query>,
    /// Internal: run the restart pipeline with checkpoints in this folder.
    #[arg(long, hide = true)]
    pub restart_child: Option<String>,
}

/// Benchmark workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Nexmark queries over the generator.
    Nexmark,
    /// Restart from a checkpoint: a stateful Nexmark pipeline is killed with SIGKILL after a few
    /// checkpoints and started again; measures kill → first output record of the new process.
    Restart,
    /// Kafka → SQL filter → Kafka through a local `tansu` broker: throughput (records/s, MB/s)
    /// and end-to-end latency percentiles at a fixed rate. Uses the first `--workers` value.
    Kafka,
    /// The control plane (`sluice server` on loopback): list/get/create latency and throughput
    /// under `--clients` concurrent clients for `--seconds` each, deploy → first output record,
    /// and the server's memory; once per `--databases` entry.
    Control,
}

/// Nexmark queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Query {
    /// Baseline: generator straight into the blackhole, no processor.
    Gen,
    /// Pass-through.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection.
    Q2,
    /// Local item suggestion: a regular join of auctions and persons.
    Q3,
    /// Hot items: bids per auction in 10 s windows sliding every 2 s (HOP).
    Q5,
    /// Highest bid: the maximum price per 10 s tumbling window (TUMBLE).
    Q7,
    /// New users: persons who opened an auction in the same 10 s window (window join).
    Q8,
    /// Not a Nexmark query: bids and top price per auction, an updating aggregate (GROUP BY
    /// without a window) whose state grows with the number of auctions.
    Agg,
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Gen => "gen",
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Agg => "agg",
        }
    }

    /// The Nexmark outputs the query reads.
    fn inputs(self) -> &'static str {
        match self {
            Query::Q3 => "[nexmark.auction, nexmark.person]",
            Query::Q8 => "[nexmark.person, nexmark.auction]",
            _ => "[nexmark.bid]",
        }
    }

    fn sql(self) -> Option<&'static str> {
        match self {
            Query::Gen => None,
            Query::Q0 => Some("SELECT auction, bidder, price, date_time, extra FROM nexmark.bid"),
            Query::Q1 => {
                Some("SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM nexmark.bid")
            }
            Query::Q2 => Some("SELECT auction, price FROM nexmark.bid WHERE auction % 123 = 0"),
            Query::Q3 => Some(
                "SELECT P.name, P.city, P.state, A.id FROM nexmark.auction AS A \
                 INNER JOIN nexmark.person AS P ON A.seller = P.id \
                 WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')",
            ),
            Query::Q5 => Some(
                "SELECT auction, window_start, window_end, COUNT(*) AS num \
                 FROM TABLE(HOP(TABLE nexmark.bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) \
                 GROUP BY auction, window_start, window_end",
            ),
            Query::Q7 => Some(
                "SELECT window_start, window_end, MAX(price) AS maxprice \
                 FROM TABLE(TUMBLE(TABLE nexmark.bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) \
                 GROUP BY window_start, window_end",
            ),
            Query::Q8 => Some(
                "SELECT P.id, P.name, P.window_start FROM \
                 (SELECT * FROM TABLE(TUMBLE(TABLE nexmark.person, DESCRIPTOR(date_time), INTERVAL '10' SECOND))) P \
                 JOIN (SELECT * FROM TABLE(TUMBLE(TABLE nexmark.auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND))) A \
                 ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end",
            ),
            Query::Agg => {
                Some("SELECT auction, COUNT(*) AS bids, MAX(price) AS top FROM nexmark.bid GROUP BY auction")
            }
        }
    }

    /// The pipeline spec of this query over `events` Nexmark events.
    fn spec(self, events: u64) -> String {
        let source = format!(
            "name: nexmark-{name}\nepoch_ms: 200\nsources:\n  - name: nexmark\n    connector: nexmark\n    \
             options: {{events: {events}, seed: 7}}\n    watermark: {{column: date_time, max_out_of_orderness: 1s}}\n",
            name = self.name()
        );
        match self.sql() {
            None => format!(
                "{source}sinks:\n  - name: out\n    connector: blackhole\n    inputs: [nexmark.bid]\n"
            ),
            Some(sql) => format!(
                "{source}processors:\n  - name: query\n    inputs: {inputs}\n    sql: \"{sql}\"\n    \
                 state_ttl: 1h\nsinks:\n  - name: out\n    connector: blackhole\n    inputs: [query]\n",
                inputs = self.inputs()
            ),
        }
    }
}

/// One measurement, as a child prints it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Measurement {
    seconds: f64,
    events: u64,
    rows_out: u64,
    peak_rss_mb: f64,
    /// Checkpoints completed (periodic and final).
    checkpoints: usize,
    /// Median checkpoint duration, in milliseconds.
    checkpoint_ms: u64,
    /// Largest checkpoint, in bytes.
    checkpoint_bytes: u64,
}

/// Parses a `--checkpoints` entry: `off`, or an interval.
fn checkpoint_interval(setting: &str) -> anyhow::Result<Option<Duration>> {
    if setting == "off" {
        return Ok(None);
    }
    sluice_spec::parse_duration(setting)
        .map(Some)
        .map_err(|message| anyhow::anyhow!("--checkpoints {setting}: {message} (or write off)"))
}

/// Runs `sluice bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.workload == Workload::Kafka {
        return crate::commands::bench_kafka::bench(crate::commands::bench_kafka::KafkaBench {
            records: args.records,
            runs: args.runs,
            workers: args.workers.first().copied().unwrap_or(1),
            rate: args.rate,
            seconds: args.seconds,
        });
    }
    if args.workload == Workload::Control {
        crate::commands::bench_control::bench(crate::commands::bench_control::ControlBench {
            databases: args.databases.clone(),
            clients: args.clients.max(1),
            seconds: args.seconds.max(1),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(state) = &args.restart_child {
        return restart_child(state, args.workers.first().copied().unwrap_or(1));
    }
    if args.workload == Workload::Restart {
        return restart(&args);
    }
    let settings =
        args.checkpoints.iter().map(|s| checkpoint_interval(s)).collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(query) = args.child {
        let workers = args.workers.first().copied().unwrap_or(1);
        let backend = args.state_backends.first().copied().unwrap_or(StateBackendKind::Memory);
        let measurement = measure(query, args.events, workers, settings.first().copied().flatten(), backend)?;
        println!("{}", serde_json::to_string(&measurement)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.runs == 0 || args.workers.contains(&0) {
        bail!("--runs and --workers must be at least 1");
    }
    println!(
        "Nexmark, {} events per run, median of {} run(s) each, generator → query → blackhole",
        count(args.events),
        args.runs
    );
    println!(
        "{:<6} {:>7} {:>6} {:>7} {:>14} {:>14} {:>9} {:>7} {:>8} {:>6} {:>9} {:>10}",
        "query",
        "workers",
        "ckpt",
        "state",
        "events/s",
        "rows out/s",
        "seconds",
        "vs gen",
        "peak MB",
        "ckpts",
        "ckpt ms",
        "ckpt KB"
    );
    let mut combinations = Vec::new();
    for &workers in &args.workers {
        for (&interval, setting) in settings.iter().zip(&args.checkpoints) {
            for &backend in &args.state_backends {
                combinations.push((workers, interval, setting, backend));
            }
        }
    }
    for (workers, interval, setting, backend) in combinations {
        let mut baseline = None;
        for &query in &args.queries {
            let mut runs = (0..args.runs)
                .map(|_| measure_in_child(query, args.events, workers, setting, backend))
                .collect::<anyhow::Result<Vec<_>>>()?;
            runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            let median = &runs[runs.len() / 2];
            let rate = median.events as f64 / median.seconds;
            if query == Query::Gen {
                baseline = Some(rate);
            }
            let ratio = baseline.map_or("-".to_owned(), |base| format!("{:.2}", rate / base));
            let peak = runs.iter().map(|m| m.peak_rss_mb).fold(0.0, f64::max);
            let (checkpoints, ms, kb) = match interval {
                None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
                Some(_) => (
                    median.checkpoints.to_string(),
                    median.checkpoint_ms.to_string(),
                    format!("{:.0}", median.checkpoint_bytes as f64 / 1024.0),
                ),
            };
            println!(
                "{:<6} {:>7} {:>6} {:>7} {:>14} {:>14} {:>9.3} {:>7} {:>8.0} {:>6} {:>9} {:>10}",
                query.name(),
                workers,
                setting,
                backend.name(),
                count(rate as u64),
                count((median.rows_out as f64 / median.seconds) as u64),
                median.seconds,
                ratio,
                peak,
                checkpoints,
                ms,
                kb
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn measure_in_child(
    query: Query,
    events: u64,
    workers: usize,
    checkpoints: &str,
    backend: StateBackendKind,
) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("locating the sluice binary")?;
    let output = Command::new(exe)
        .args(["bench", "nexmark", "--child", query.name()])
        .args(["--events", &events.to_string(), "--workers", &workers.to_string()])
        .args(["--checkpoints", checkpoints, "--state-backends", backend.name()])
        .output()
        .context("starting a benchmark child process")?;
    if !output.status.success() {
        bail!(
            "benchmark {} with {workers} worker(s) failed: {}",
            query.name(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("reading the child's measurement")
}

fn measure(
    query: Query,
    events: u64,
    workers: usize,
    interval: Option<Duration>,
    backend: StateBackendKind,
) -> anyhow::Result<Measurement> {
    let mut planned = plan(&query.spec(events), std::path::Path::new(".")).map_err(|diagnostics| {
        anyhow::anyhow!(
            "benchmark spec is invalid: {}",
            diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )
    })?;
    let local_state = tempfile::tempdir().context("creating a state directory")?;
    if backend == StateBackendKind::RocksDb {
        planned.graph.state_backend = StateBackend::RocksDb { dir: local_state.path().to_owned() };
    }
    let runtime = Runtime::new(planned.graph)?;
    let state = tempfile::tempdir().context("creating a checkpoint directory")?;
    let checkpoints = interval.map(|interval| CheckpointOptions {
        location: state.path().display().to_string(),
        store: StoreOptions::default(),
        interval,
        retain: 2,
        restore: RestoreFrom::Nothing,
        savepoint: None,
    });
    let options = RunOptions {
        topology: Topology::Local { workers },
        max_epochs_in_flight: 4,
        stop: Default::default(),
        checkpoints,
    };
    let started = Instant::now();
    let report = runtime.run(&options)?;
    let seconds = started.elapsed().as_secs_f64();
    let rows_out = report.operators.iter().find(|o| o.name == "out").map_or(0, |o| o.records_in);
    let mut durations: Vec<u64> = report.checkpoints.iter().map(|m| m.duration_ms).collect();
    durations.sort_unstable();
    let checkpoint_bytes =
        report.checkpoints.iter().map(|m| m.parts.iter().map(|p| p.bytes).sum::<u64>()).max().unwrap_or(0);
    Ok(Measurement {
        seconds,
        events,
        rows_out,
        peak_rss_mb: peak_rss_mb(),
        checkpoints: durations.len(),
        checkpoint_ms: durations.get(durations.len() / 2).copied().unwrap_or(0),
        checkpoint_bytes,
    })
}

/// The restart workload: bids counted per auction in 10 s windows sliding every 2 s (state
/// that grows with the run), and the bids themselves, at 200,000 events/s, into blackholes.
const RESTART_SPEC: &str = r#"
name: restart
epoch_ms: 100
sources:
  - name: nexmark
    connector: nexmark
    options: {events_per_second: 200000, seed: 7}
    watermark: {column: date_time, max_out_of_orderness: 1s}
processors:
  - name: hot
    inputs: [nexmark.bid]
    sql: >
      SELECT auction, window_start, window_end, COUNT(*) AS num
      FROM TABLE(HOP(TABLE nexmark.bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
      GROUP BY auction, window_start, window_end
sinks:
  - {name: windows, connector: blackhole, inputs: [hot]}
  - {name: bids, connector: blackhole, inputs: [nexmark.bid]}
"#;

/// How long the first process runs before it is killed.
const RESTART_RUN: Duration = Duration::from_secs(6);

/// Runs `sluice bench restart`: `--runs` times, one process runs the restart workload with
/// checkpoints every second and is killed; a second one resumes. Reports the median of kill →
/// first record at a sink in the second process, with the restored checkpoint's size.
fn restart(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let workers = args.workers.first().copied().unwrap_or(1);
    println!(
        "Restart from a checkpoint: Nexmark 200k events/s, HOP 10 s/2 s count per auction, checkpoints every 1 s, \
         {workers} worker(s); killed with SIGKILL after {} s, then restarted",
        RESTART_RUN.as_secs()
    );
    let exe = std::env::current_exe().context("locating the sluice binary")?;
    let child = |state: &str| {
        Command::new(&exe)
            .args(["bench", "restart", "--restart-child", state, "--workers", &workers.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .context("starting a benchmark child process")
    };
    let mut samples = Vec::new();
    for _ in 0..args.runs {
        let state = tempfile::tempdir().context("creating a checkpoint directory")?;
        let location = state.path().display().to_string();
        let mut first = child(&location)?;
        std::thread::sleep(RESTART_RUN);
        first.kill().context("killing the first process")?;
        let killed = Instant::now();
        first.wait()?;
        let second = child(&location)?;
        let output = second.wait_with_output()?;
        let elapsed = killed.elapsed();
        let report: RestartReport =
            serde_json::from_slice(&output.stdout).context("reading the child's report")?;
        // The child reports how long after its own start the first record arrived; the rest of
        // `elapsed` after that is its shutdown, which is not part of the restart.
        let to_first_record =
            elapsed.saturating_sub(Duration::from_millis(report.exit_ms - report.first_record_ms));
        samples.push((to_first_record, report));
    }
    samples.sort_by_key(|(time, _)| *time);
    let (median, report) = &samples[samples.len() / 2];
    println!(
        "kill → first output record: median {} ms over {} run(s) (min {} ms, max {} ms); restored checkpoint {} of {:.0} KB, its manifest and source/sink positions loaded in {} ms (operator state streams in as workers start, inside the total)",
        median.as_millis(),
        samples.len(),
        samples[0].0.as_millis(),
        samples[samples.len() - 1].0.as_millis(),
        report.checkpoint,
        report.checkpoint_bytes as f64 / 1024.0,
        report.restore_ms
    );
    Ok(ExitCode::SUCCESS)
}

/// What the resumed process of the restart workload reports.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RestartReport {
    /// Since process start: when the first record reached a sink.
    first_record_ms: u64,
    /// Since process start: when the report was written (just before exiting).
    exit_ms: u64,
    /// How long loading the checkpoint took.
    restore_ms: u64,
    /// The checkpoint resumed from (0 when none).
    checkpoint: u64,
    /// Its size.
    checkpoint_bytes: u64,
}

/// One process of the restart workload: runs until killed or, when it resumed from a
/// checkpoint, until its first output record, which it reports.
fn restart_child(state: &str, workers: usize) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let planned = plan(RESTART_SPEC, std::path::Path::new(".")).map_err(|d| {
        anyhow::anyhow!(
            "restart spec is invalid: {}",
            d.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )
    })?;
    let runtime = std::sync::Arc::new(Runtime::new(planned.graph)?);
    let options = RunOptions {
        topology: Topology::Local { workers },
        max_epochs_in_flight: 4,
        stop: Default::default(),
        checkpoints: Some(CheckpointOptions {
            location: state.to_owned(),
            store: StoreOptions::default(),
            interval: Duration::from_secs(1),
            retain: 2,
            restore: RestoreFrom::Latest,
            savepoint: None,
        }),
    };
    let watcher = runtime.clone();
    std::thread::spawn(move || {
        loop {
            if watcher.metrics().sink_records() > 0 {
                let first_record_ms = started.elapsed().as_millis() as u64;
                if let Some((restored, loading)) = watcher.restored_from() {
                    let report = RestartReport {
                        first_record_ms,
                        exit_ms: started.elapsed().as_millis() as u64,
                        restore_ms: loading.as_millis() as u64,
                        checkpoint: restored.checkpoint,
                        checkpoint_bytes: restored.parts.iter().map(|p| p.bytes).sum(),
                    };
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    std::process::exit(0);
                }
                // The first process of a measurement: it runs until it is killed.
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    runtime.run(&options)?;
    Ok(ExitCode::SUCCESS)
}

/// Peak resident memory of this process (Linux `VmHWM`), in MB; 0 where unavailable.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
