//! `sluice bench control`: the control plane as a separate `sluice server` process on
//! loopback, measured from this process: latency percentiles and throughput of list, get and
//! create under concurrent clients, time from deploy to the first output record of a small
//! pipeline, and the server's memory idle and after the load. Once per metadata database.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// What to measure.
pub struct ControlBench {
    /// `sqlite`, or a PostgreSQL URL whose server gets a scratch database per run.
    pub databases: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// Seconds per operation.
    pub seconds: u64,
}

/// A small pipeline whose first record reaches the worker's log (stdout sink) at once.
const PIPELINE: &str = "name: NAME
sources:
  - name: src
    connector: datagen
    schema: [{name: n, type: int64, nullable: false}]
    options: {rows_per_second: 1000, seed: 1}
processors:
  - {name: keep, inputs: [src], sql: 'SELECT n FROM src WHERE n % 2 = 0'}
sinks:
  - {name: out, connector: stdout, inputs: [keep], options: {format: jsonl}}
";

/// Runs the benchmark.
pub fn bench(config: ControlBench) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    println!(
        "Control plane: `sluice server` on loopback, {} concurrent clients, {} s per operation",
        config.clients, config.seconds
    );
    println!("{:<10} {:<8} {:>10} {:>10} {:>10}", "database", "op", "req/s", "p50 ms", "p99 ms");
    for database in &config.databases {
        runtime.block_on(one_database(database, &config))?;
    }
    Ok(())
}

async fn one_database(database: &str, config: &ControlBench) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (label, url, scratch) = if database == "sqlite" {
        ("sqlite", None, None)
    } else if database.starts_with("postgres") {
        let name =
            format!("sluice_bench_{}", sluice_control::auth::random_hex(6).map_err(anyhow::Error::msg)?);
        admin(database, &format!("CREATE DATABASE {name}")).await?;
        let base = database.rsplit_once('/').map_or(database, |(base, _)| base);
        ("postgres", Some(format!("{base}/{name}")), Some(name))
    } else {
        bail!("--databases takes `sqlite` or a postgres:// URL, not \"{database}\"");
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (mut server, token) = start_server(data.path(), port, url.as_deref())?;
    let base = format!("http://127.0.0.1:{port}/api/v1/teams/default/pipelines");
    let client = reqwest::Client::builder().pool_max_idle_per_host(config.clients).build()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mib(server.id());

    // Some pipelines to list and get.
    for i in 0..50 {
        let spec = PIPELINE.replace("NAME", &format!("seed-{i}"));
        let response = client
            .post(&base)
            .bearer_auth(&token)
            .header("content-type", "application/yaml")
            .body(spec)
            .send()
            .await?;
        if response.status() != 201 {
            bail!("creating a pipeline answered {}: {}", response.status(), response.text().await?);
        }
    }
    let counter = Arc::new(AtomicUsize::new(0));
    for op in ["list", "get", "create"] {
        let deadline = Instant::now() + Duration::from_secs(config.seconds);
        let mut tasks = Vec::new();
        for _ in 0..config.clients {
            let (client, token, base, counter) =
                (client.clone(), token.clone(), base.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let request = match op {
                        "list" => client.get(&base),
                        "get" => client.get(format!("{base}/seed-7")),
                        _ => {
                            let name = format!("load-{}", counter.fetch_add(1, Ordering::Relaxed));
                            client
                                .post(&base)
                                .header("content-type", "application/yaml")
                                .body(PIPELINE.replace("NAME", &name))
                        }
                    };
                    let start = Instant::now();
                    let response = request.bearer_auth(&token).send().await?;
                    let ok = response.status().is_success();
                    let _ = response.bytes().await?;
                    if !ok {
                        bail!("{op} failed");
                    }
                    latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "{label:<10} {op:<8} {:>10.0} {:>10.2} {:>10.2}",
            latencies.len() as f64 / config.seconds as f64,
            at(0.5),
            at(0.99)
        );
    }
    let loaded = rss_mib(server.id());

    // Deploy → first output record (in the worker's log, from the stdout sink).
    let response = client
        .post(&base)
        .bearer_auth(&token)
        .header("content-type", "application/yaml")
        .body(PIPELINE.replace("NAME", "first-output"))
        .send()
        .await?;
    if response.status() != 201 {
        bail!("creating the timed pipeline answered {}", response.status());
    }
    let log = data.path().join("teams/default/pipelines/first-output/worker.log");
    let start = Instant::now();
    let response = client.post(format!("{base}/first-output/deploy")).bearer_auth(&token).send().await?;
    if response.status() != 202 {
        bail!("deploy answered {}", response.status());
    }
    let first_output = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().any(|line| line.starts_with('{')) {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("no output 30 s after deploy; worker log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = client.post(format!("{base}/first-output/stop")).bearer_auth(&token).send().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{label:<10} deploy → first output record {:.0} ms; server RSS {idle:.1} MiB idle, {loaded:.1} MiB after the load",
        first_output.as_secs_f64() * 1000.0
    );
    let _ = server.kill();
    let _ = server.wait();
    if let Some(name) = scratch {
        admin(database, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    }
    Ok(())
}

/// Starts `sluice server` on `port` with its data in `data` (and metadata in `database`, else
/// SQLite); returns the process and the admin token it printed.
pub(crate) fn start_server(
    data: &Path,
    port: u16,
    database: Option<&str>,
) -> anyhow::Result<(Child, String)> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(data);
    if let Some(database) = database {
        command.args(["--database", database]);
    }
    let mut child =
        command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("starting sluice server")?;
    let mut token = None;
    let lines = BufReader::new(child.stdout.take().context("server stdout")?).lines();
    for line in lines {
        let line = line?;
        if let Some(found) = line.split_whitespace().find(|word| word.starts_with("slc_")) {
            token.get_or_insert_with(|| found.to_string());
        }
        if line.starts_with("Sluice is up") {
            break;
        }
    }
    let token = token.context("the server printed no token")?;
    Ok((child, token))
}

async fn admin(url: &str, statement: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url)
        .await
        .with_context(|| format!("connecting to {}", sluice_control::store::redact_url(url)))?;
    sqlx::query(sqlx::AssertSqlSafe(statement.to_string())).execute(&pool).await?;
    Ok(())
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
