//! What `sluice run` prints on stderr: a one-line live status on a terminal, and a summary
//! table of every operator at the end.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_runtime::metrics::MetricsRegistry;
use sluice_runtime::{RunReport, Topology};

/// A background thread redrawing one status line on stderr while a pipeline runs; stops and
/// clears the line when dropped. Does nothing when stderr is not a terminal.
pub struct LiveStatus {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveStatus {
    /// Starts drawing from `metrics`.
    pub fn start(metrics: MetricsRegistry) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Self { done, thread: None };
        }
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-status".into())
            .spawn(move || draw(&metrics, &flag))
            .ok();
        Self { done, thread }
    }
}

impl Drop for LiveStatus {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            eprint!("\r\x1b[2K");
        }
    }
}

fn draw(metrics: &MetricsRegistry, done: &AtomicBool) {
    let started = Instant::now();
    let (mut last_in, mut last_at) = (0u64, Instant::now());
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let (records_in, records_out) = (metrics.source_records(), metrics.sink_records());
        let rate = (records_in - last_in) as f64 / last_at.elapsed().as_secs_f64().max(1e-9);
        (last_in, last_at) = (records_in, Instant::now());
        eprint!(
            "\r\x1b[2K{} in, {} out, {}/s, {:.1} s",
            count(records_in),
            count(records_out),
            count(rate as u64),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
}

/// Prints the end-of-run summary table to stderr.
pub fn print_summary(name: &str, topology: &Topology, report: &RunReport) {
    let seconds = report.elapsed.as_secs_f64();
    let shape = match topology {
        Topology::Local { workers } => format!("{workers} worker(s)"),
        Topology::Cluster { workers, process, addresses } => {
            format!("process {process} of {}, {workers} worker(s) each", addresses.len())
        }
    };
    eprintln!("pipeline \"{name}\" finished in {seconds:.2} s on {shape}");
    if let Some(restored) = &report.restored_from {
        eprintln!(
            "resumed from checkpoint {} ({:?}, {} parts, taken by {} worker(s))",
            restored.checkpoint,
            restored.kind,
            restored.parts.len(),
            restored.workers
        );
    }
    eprintln!(
        "{:<20} {:<10} {:>14} {:>14} {:>12} {:>12} {:>10} {:>10}",
        "node", "role", "records in", "records out", "MB in", "MB out", "busy s", "state MB"
    );
    for operator in &report.operators {
        eprintln!(
            "{:<20} {:<10} {:>14} {:>14} {:>12.1} {:>12.1} {:>10.2} {:>10.1}",
            operator.name,
            operator.role.as_str(),
            count(operator.records_in),
            count(operator.records_out),
            operator.bytes_in as f64 / 1e6,
            operator.bytes_out as f64 / 1e6,
            operator.busy.as_secs_f64(),
            operator.state_bytes as f64 / 1e6
        );
    }
    for node in &report.dead_letters {
        if node.dead_lettered + node.dropped > 0 {
            eprintln!(
                "bad records from \"{}\": {} sent to the dead-letter destination, {} dropped",
                node.node, node.dead_lettered, node.dropped
            );
        }
    }
    print_checkpoints(&report.checkpoints);
}

/// One line about the run's checkpoints and one per node about its parts in the last one.
fn print_checkpoints(checkpoints: &[sluice_state::Manifest]) {
    let Some(last) = checkpoints.last() else { return };
    let mut durations: Vec<u64> = checkpoints.iter().map(|m| m.duration_ms).collect();
    durations.sort_unstable();
    let size = |m: &sluice_state::Manifest| m.parts.iter().map(|p| p.bytes).sum::<u64>();
    eprintln!(
        "checkpoints: {} completed, median {} ms, largest {:.1} KB; last: {} ({:?}{})",
        checkpoints.len(),
        durations[durations.len() / 2],
        checkpoints.iter().map(size).max().unwrap_or(0) as f64 / 1024.0,
        last.checkpoint,
        last.kind,
        if last.finished { ", every source read to the end" } else { "" }
    );
    let mut nodes: Vec<&str> = Vec::new();
    for part in &last.parts {
        if !nodes.contains(&part.node.as_str()) {
            nodes.push(&part.node);
        }
    }
    for node in nodes {
        let parts: Vec<_> = last.parts.iter().filter(|p| p.node == node).collect();
        eprintln!(
            "  {node:<18} {:>10.1} KB in {} part(s), slowest write {} ms, longest alignment {} ms",
            parts.iter().map(|p| p.bytes).sum::<u64>() as f64 / 1024.0,
            parts.len(),
            parts.iter().map(|p| p.duration_ms).max().unwrap_or(0),
            parts.iter().map(|p| p.alignment_ms).max().unwrap_or(0)
        );
    }
}

/// `1234567` → `1,234,567`.
pub fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Replaces the panic message of timely's communication threads, which panic when a peer
/// process goes away, with an explanation and a fix; other panics keep the default report.
pub fn explain_panics() {
    let default = std::panic::take_hook();
    let explained = AtomicBool::new(false);
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let lost_peer = message.starts_with("timely communication error")
            || message.contains("MergeQueue poisoned")
            || message.starts_with("Send thread panic");
        if !lost_peer {
            default(info);
        } else if !explained.swap(true, Ordering::SeqCst) {
            eprintln!(
                "error: lost the connection to a peer process ({message}); a cluster cannot continue \
                 without all its processes: stop the others and start all of them again"
            );
        }
    }));
}
