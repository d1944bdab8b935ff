//! `sluice bench kafka`: Kafka → SQL filter → Kafka through a local broker.
//!
//! Starts a `tansu` broker on loopback (with SQLite storage in a temporary folder), fills a
//! topic with ~200-byte JSON records, then measures in this process:
//! - **throughput**: the pipeline reads the whole topic (`stop_at: latest`), keeps about half the
//!   records and writes them to another topic; records/s and MB/s of input, median over runs,
//!   with the ratio to a baseline measured in the same command (the same topic read into a
//!   blackhole, no SQL and no producer). The same again with the records as Avro in a schema
//!   registry's wire format, read and written through a Sluice team's registry (a `sluice
//!   server` started on loopback);
//! - **latency**: a producer writes records stamped with their send time at a fixed rate while
//!   the pipeline runs unbounded; a consumer of the output topic records arrival minus send
//!   time; p50/p99/max over the run.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_connectors::testing::Tansu;
use sluice_runtime::{RunOptions, Runtime, Topology};

use crate::plan::plan;

/// What `sluice bench kafka` measures.
#[derive(Debug, Clone, Copy)]
pub struct KafkaBench {
    /// Records in the throughput topic.
    pub records: u64,
    /// Runs per throughput measurement.
    pub runs: usize,
    /// Workers.
    pub workers: usize,
    /// Records per second of the latency run.
    pub rate: u64,
    /// Length of the latency run.
    pub seconds: u64,
}

/// Partitions of the benchmark topics.
const PARTITIONS: u32 = 4;

/// A registry's base URL and an API token for it.
type Registry<'a> = (&'a str, &'a str);

/// The payload format options of the Kafka source and sink: JSON, or Avro through `registry`.
fn format_options(registry: Option<Registry<'_>>) -> String {
    match registry {
        None => String::new(),
        // The token stays in this process: the spec is never written anywhere.
        Some((url, token)) => format!(", format: avro, registry: {{url: \"{url}\", token: \"{token}\"}}"),
    }
}

fn spec(
    brokers: &str,
    input: &str,
    output: Option<&str>,
    bounded: bool,
    registry: Option<Registry<'_>>,
) -> String {
    let stop = if bounded { ", stop_at: latest" } else { "" };
    let format = format_options(registry);
    let (processors, sink) = match output {
        Some(topic) => (
            "processors:\n  - name: big\n    inputs: [events]\n    sql: SELECT * FROM events WHERE amount >= 500\n"
                .to_owned(),
            format!(
                "  - {{name: out, connector: kafka, inputs: [big], options: {{brokers: \"{brokers}\", topic: {topic}, key: user{format}}}}}"
            ),
        ),
        None => (String::new(), "  - {name: out, connector: blackhole, inputs: [events]}".to_owned()),
    };
    format!(
        r#"
name: bench-kafka
epoch_ms: 100
sources:
  - name: events
    connector: kafka
    options: {{brokers: "{brokers}", topic: {input}{stop}{format}}}
    schema:
      - {{name: id, type: int64, nullable: false}}
      - {{name: user, type: string, nullable: false}}
      - {{name: amount, type: int64, nullable: false}}
      - {{name: sent_us, type: int64, nullable: false}}
      - {{name: note, type: string, nullable: false}}
{processors}sinks:
{sink}
"#
    )
}

/// The fields of record `id`: user, amount and note.
fn fields(id: u64) -> (String, u64, String) {
    (format!("user-{:05}", id % 10_000), (id * 7_919) % 1_000, "x".repeat(110))
}

/// A ~200-byte JSON record.
fn record(id: u64, sent_us: u64) -> String {
    let (user, amount, note) = fields(id);
    format!(r#"{{"id":{id},"user":"{user}","amount":{amount},"sent_us":{sent_us:>16},"note":"{note}"}}"#)
}

/// The Avro writer schema of [`avro_record`].
const AVRO_SCHEMA: &str = r#"{"type": "record", "name": "Event", "fields": [{"name": "id", "type": "long"},
    {"name": "user", "type": "string"}, {"name": "amount", "type": "long"},
    {"name": "sent_us", "type": "long"}, {"name": "note", "type": "string"}]}"#;

/// Record `id` in the registry's wire format: the byte 0, the schema id (4 bytes, big-endian),
/// then the Avro binary encoding of an [`AVRO_SCHEMA`] record, written from the specification.
fn avro_record(schema_id: u32, id: u64, sent_us: u64) -> Vec<u8> {
    fn long(value: i64, out: &mut Vec<u8>) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        while zigzag >= 0x80 {
            out.push((zigzag as u8 & 0x7f) | 0x80);
            zigzag >>= 7;
        }
        out.push(zigzag as u8);
    }
    fn string(text: &str, out: &mut Vec<u8>) {
        long(text.len() as i64, out);
        out.extend_from_slice(text.as_bytes());
    }
    let (user, amount, note) = fields(id);
    let mut out = vec![0];
    out.extend_from_slice(&schema_id.to_be_bytes());
    long(id as i64, &mut out);
    string(&user, &mut out);
    long(amount as i64, &mut out);
    long(sent_us as i64, &mut out);
    string(&note, &mut out);
    out
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn producer(brokers: &str) -> anyhow::Result<BaseProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()
        .context("creating the benchmark producer")
}

/// Produces `count` records as fast as the broker takes them, JSON or (with a schema id) in
/// the registry's wire format; returns the seconds it took.
fn fill(brokers: &str, topic: &str, count: u64, schema_id: Option<u32>) -> anyhow::Result<f64> {
    let producer = producer(brokers)?;
    let started = Instant::now();
    for id in 0..count {
        let payload = match schema_id {
            None => record(id, 0).into_bytes(),
            Some(schema_id) => avro_record(schema_id, id, 0),
        };
        let mut pending = BaseRecord::<[u8], [u8]>::to(topic).payload(payload.as_slice());
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((_, returned)) => {
                    pending = returned;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).context("the broker did not acknowledge the records")?;
    Ok(started.elapsed().as_secs_f64())
}

/// Registers [`AVRO_SCHEMA`] under `subject` in the registry at `url`; returns its id.
fn register(url: &str, token: &str, subject: &str) -> anyhow::Result<u32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer: serde_json::Value = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{url}/subjects/{subject}/versions"))
            .bearer_auth(token)
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(serde_json::json!({ "schema": AVRO_SCHEMA }).to_string())
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "registering the benchmark schema answered {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    })?;
    answer["id"].as_u64().and_then(|id| u32::try_from(id).ok()).context("the registry answered no schema id")
}

fn run_pipeline(spec: &str, workers: usize, stop: Arc<AtomicBool>) -> anyhow::Result<f64> {
    let planned = plan(spec, std::path::Path::new(".")).map_err(|diagnostics| {
        anyhow::anyhow!(
            "benchmark spec is invalid: {}",
            diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )
    })?;
    let runtime = Runtime::new(planned.graph)?;
    let options = RunOptions {
        topology: Topology::Local { workers },
        max_epochs_in_flight: 4,
        stop,
        checkpoints: None,
    };
    let started = Instant::now();
    runtime.run(&options)?;
    Ok(started.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the benchmark and prints its tables.
pub fn bench(config: KafkaBench) -> anyhow::Result<ExitCode> {
    let Some(broker) = Tansu::start() else {
        bail!("the Kafka benchmark needs the tansu broker; run .ci/run once to install it")
    };
    let brokers = broker.brokers();
    for topic in ["bench-in", "bench-out", "bench-in-avro", "bench-out-avro", "latency-in", "latency-out"] {
        broker.create_topic(topic, PARTITIONS);
    }
    let bytes_per_record = record(0, 0).len() as f64;
    let avro_bytes_per_record = avro_record(0, 0, 0).len() as f64;
    println!(
        "Kafka benchmark: tansu broker at {brokers} (SQLite storage), topics of {PARTITIONS} partitions, \
         {bytes_per_record}-byte JSON records (the same as {avro_bytes_per_record}-byte Avro ones), {} worker(s)",
        config.workers
    );
    // The registry: a `sluice server` on loopback, its default team's registry.
    let data = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (server, token) = super::bench_control::start_server(data.path(), port, None)?;
    let server = KillOnDrop(server);
    let registry = format!("http://127.0.0.1:{port}/api/v1/teams/default/registry");
    let schema_id = register(&registry, &token, "bench-in-avro-value")?;
    for (topic, schema_id) in [("bench-in", None), ("bench-in-avro", Some(schema_id))] {
        let fill_seconds = fill(&brokers, topic, config.records, schema_id)?;
        println!(
            "filled {topic} with {} records in {fill_seconds:.1} s ({:.0} records/s into the broker)",
            config.records,
            config.records as f64 / fill_seconds
        );
    }
    let cases = [
        ("kafka → blackhole (baseline)", "bench-in", None, None, bytes_per_record),
        ("kafka → filter → kafka", "bench-in", Some("bench-out"), None, bytes_per_record),
        (
            "the same, Avro + registry",
            "bench-in-avro",
            Some("bench-out-avro"),
            Some((registry.as_str(), token.as_str())),
            avro_bytes_per_record,
        ),
    ];
    println!("\n{:<30} {:>14} {:>10} {:>8}", "pipeline", "records/s", "MB/s", "ratio");
    let mut baseline = None;
    for (name, input, output, registry, bytes) in cases {
        let spec = spec(&brokers, input, output, true, registry);
        let mut seconds = (0..config.runs.max(1))
            .map(|_| run_pipeline(&spec, config.workers, Arc::default()))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        let rate = config.records as f64 / median(&mut seconds);
        let base = *baseline.get_or_insert(rate);
        println!("{name:<30} {rate:>14.0} {:>10.1} {:>8.2}", rate * bytes / 1e6, rate / base);
    }
    drop(server);
    latency(&brokers, config)?;
    Ok(ExitCode::SUCCESS)
}

/// The latency run: a fixed-rate producer, the pipeline, and a consumer of its output.
fn latency(brokers: &str, config: KafkaBench) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let pipeline = {
        let spec = spec(brokers, "latency-in", Some("latency-out"), false, None);
        let stop = stop.clone();
        let workers = config.workers;
        std::thread::spawn(move || run_pipeline(&spec, workers, stop))
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-bench-latency")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .context("creating the latency consumer")?;
    consumer.subscribe(&["latency-out"]).context("subscribing to latency-out")?;
    let producer = producer(brokers)?;
    // Let the pipeline's consumer start before timing anything.
    std::thread::sleep(Duration::from_secs(2));
    let total = config.rate * config.seconds;
    let expected = (0..total).filter(|id| (id * 7_919) % 1_000 >= 500).count();
    let started = Instant::now();
    let mut latencies_us = Vec::with_capacity(expected);
    let mut sent = 0;
    let deadline = Duration::from_secs(config.seconds + 30);
    while latencies_us.len() < expected && started.elapsed() < deadline {
        let due = (started.elapsed().as_secs_f64() * config.rate as f64) as u64;
        while sent < due.min(total) {
            let payload = record(sent, now_us());
            let pending = BaseRecord::<[u8], [u8]>::to("latency-in").payload(payload.as_bytes());
            if producer.send(pending).is_err() {
                break;
            }
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        while let Some(message) = consumer.poll(Duration::from_millis(1)) {
            let message = message.context("consuming latency-out")?;
            let arrived = now_us();
            let sent_us = message
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|v| v["sent_us"].as_u64())
                .context("a latency-out record without sent_us")?;
            latencies_us.push(arrived.saturating_sub(sent_us));
        }
    }
    stop.store(true, Ordering::Relaxed);
    pipeline.join().map_err(|_| anyhow::anyhow!("the latency pipeline panicked"))??;
    if latencies_us.len() < expected {
        bail!("only {} of {expected} records reached latency-out within {deadline:?}", latencies_us.len());
    }
    latencies_us.sort_unstable();
    let at = |q: f64| latencies_us[((latencies_us.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "\nend-to-end latency at {} records/s for {} s ({} records through the filter): p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms (epochs of 100 ms)",
        config.rate,
        config.seconds,
        latencies_us.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

/// A child process killed when dropped, also when the benchmark fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
