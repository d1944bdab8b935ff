//! `sluice bench nexmark`: Nexmark queries over the in-process generator into `blackhole`.
//!
//! Each measurement runs in a fresh child process (so its peak memory is its own), several
//! times; the table shows medians and the ratio to a baseline measured in the same command: the
//! generator alone feeding the blackhole (`gen`), at the same worker count.

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use sluice_runtime::{RunOptions, Runtime, Topology};

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
    /// Internal: run one measurement in this process and print it as JSON.
    #[arg(long, hide = true)]
    pub child: Option<Query>,
}

/// Benchmark workloads.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Workload {
    /// Nexmark q0–q2 (stateless queries over the bid stream).
    Nexmark,
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
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Gen => "gen",
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
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
        }
    }

    /// The pipeline spec of this query over `events` Nexmark events.
    fn spec(self, events: u64) -> String {
        let source = format!(
            "name: nexmark-{name}\nepoch_ms: 500\nsources:\n  - name: nexmark\n    connector: nexmark\n    options: {{events: {events}, seed: 7}}\n",
            name = self.name()
        );
        match self.sql() {
            None => format!(
                "{source}sinks:\n  - name: out\n    connector: blackhole\n    inputs: [nexmark.bid]\n"
            ),
            Some(sql) => format!(
                "{source}processors:\n  - name: query\n    inputs: [nexmark.bid]\n    sql: \"{sql}\"\nsinks:\n  - name: out\n    connector: blackhole\n    inputs: [query]\n"
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
}

/// Runs `sluice bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(query) = args.child {
        let workers = args.workers.first().copied().unwrap_or(1);
        let measurement = measure(query, args.events, workers)?;
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
        "{:<6} {:>7} {:>16} {:>16} {:>10} {:>10} {:>12}",
        "query", "workers", "events/s", "rows out/s", "seconds", "vs gen", "peak RSS MB"
    );
    for &workers in &args.workers {
        let mut baseline = None;
        for &query in &args.queries {
            let mut runs = (0..args.runs)
                .map(|_| measure_in_child(query, args.events, workers))
                .collect::<anyhow::Result<Vec<_>>>()?;
            runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            let median = &runs[runs.len() / 2];
            let rate = median.events as f64 / median.seconds;
            if query == Query::Gen {
                baseline = Some(rate);
            }
            let ratio = baseline.map_or("-".to_owned(), |base| format!("{:.2}", rate / base));
            let peak = runs.iter().map(|m| m.peak_rss_mb).fold(0.0, f64::max);
            println!(
                "{:<6} {:>7} {:>16} {:>16} {:>10.3} {:>10} {:>12.0}",
                query.name(),
                workers,
                count(rate as u64),
                count((median.rows_out as f64 / median.seconds) as u64),
                median.seconds,
                ratio,
                peak
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn measure_in_child(query: Query, events: u64, workers: usize) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("locating the sluice binary")?;
    let output = Command::new(exe)
        .args(["bench", "nexmark", "--child", query.name()])
        .args(["--events", &events.to_string(), "--workers", &workers.to_string()])
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

fn measure(query: Query, events: u64, workers: usize) -> anyhow::Result<Measurement> {
    let planned = plan(&query.spec(events), std::path::Path::new(".")).map_err(|diagnostics| {
        anyhow::anyhow!(
            "benchmark spec is invalid: {}",
            diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )
    })?;
    let runtime = Runtime::new(planned.graph)?;
    let options = RunOptions {
        topology: Topology::Local { workers },
        max_epochs_in_flight: 4,
        stop: Default::default(),
    };
    let started = Instant::now();
    let report = runtime.run(&options)?;
    let seconds = started.elapsed().as_secs_f64();
    let rows_out = report.operators.iter().find(|o| o.name == "out").map_or(0, |o| o.records_in);
    Ok(Measurement { seconds, events, rows_out, peak_rss_mb: peak_rss_mb() })
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
