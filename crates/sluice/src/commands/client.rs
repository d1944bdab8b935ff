//! The CLI over the control plane's API: `sluice login`, `sluice pipelines ...`,
//! `sluice connections ...`, `sluice apply -f`. Credentials are saved by `login` in `~/.config/sluice/credentials.json`
//! (readable by the owner only); `SLUICE_URL` and `SLUICE_TOKEN` override them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where the CLI finds the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Credentials {
    url: String,
    token: String,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Output {
    /// A table for people.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Options every API command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// The team that owns the pipelines.
    #[arg(long, short = 't', default_value = "default", global = true)]
    pub team: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// Arguments of `sluice login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The control plane's URL, e.g. http://127.0.0.1:8080.
    pub url: String,
    /// An API token (`sluice up` prints one on first start).
    #[arg(long)]
    pub token: String,
}

/// `sluice pipelines ...`.
#[derive(Debug, Args)]
pub struct PipelinesArgs {
    #[command(subcommand)]
    command: PipelinesCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum PipelinesCommand {
    /// The team's pipelines and their states.
    List,
    /// One pipeline.
    Get { name: String },
    /// Run a version (the latest by default).
    Deploy {
        name: String,
        #[arg(long)]
        version: Option<i64>,
        #[arg(long)]
        parallelism: Option<i64>,
    },
    /// Start a stopped pipeline.
    Start { name: String },
    /// Stop gracefully.
    Stop { name: String },
    /// Stop with a savepoint.
    Savepoint { name: String },
    /// Resume from a savepoint (the newest by default).
    Resume {
        name: String,
        #[arg(long)]
        savepoint: Option<String>,
    },
    /// Change the parallelism.
    Rescale { name: String, parallelism: i64 },
    /// Restart.
    Restart { name: String },
    /// Lifecycle events.
    Events { name: String },
    /// Checkpoints and savepoints.
    Checkpoints { name: String },
    /// The running worker's latest metrics per node: records, rates, busy, lag, state.
    Metrics { name: String },
    /// The worker's log.
    Logs {
        name: String,
        #[arg(long, default_value_t = 200)]
        tail: u32,
    },
    /// Delete a stopped pipeline with its checkpoints and files.
    Delete { name: String },
}

/// `sluice connections ...`.
#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    #[command(subcommand)]
    command: ConnectionsCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum ConnectionsCommand {
    /// The team's connections.
    List,
    /// One connection, with the pipelines using it.
    Get { name: String },
    /// Delete a connection no pipeline uses.
    Delete { name: String },
}

/// `sluice datasets ...`.
#[derive(Debug, Args)]
pub struct DatasetsArgs {
    #[command(subcommand)]
    command: DatasetsCommand,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
}

#[derive(Debug, Subcommand)]
enum DatasetsCommand {
    /// The dataset catalog: every dataset with its owner, classification and grants.
    List,
    /// One dataset with its schema and grants.
    Get {
        /// The dataset, e.g. kafka:orders.
        name: String,
    },
    /// Register a dataset owned by a team (datasets are also registered when a pipeline that
    /// uses them is first deployed).
    Register {
        /// The dataset, `<system>:<name>`, e.g. kafka:orders.
        name: String,
        /// The team that owns it.
        #[arg(long, short = 't', default_value = "default")]
        team: String,
        /// E.g. pii.
        #[arg(long, default_value = "")]
        classification: String,
        /// What it holds.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Classify or describe a dataset (admins of the team that owns it); what is not given is
    /// kept.
    Describe {
        /// The dataset.
        name: String,
        /// E.g. pii; an empty value unclassifies it.
        #[arg(long)]
        classification: Option<String>,
        /// What it holds.
        #[arg(long)]
        description: Option<String>,
    },
    /// Grant a team reading and/or writing (admins of the team that owns the dataset).
    Grant(GrantArgs),
    /// Take a grant back.
    Revoke(GrantArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("access").required(true).multiple(true).args(["read", "write"])))]
struct GrantArgs {
    /// The dataset, e.g. kafka:orders.
    name: String,
    /// The team the grant is for.
    #[arg(long, short = 't')]
    team: String,
    /// Reading.
    #[arg(long)]
    read: bool,
    /// Writing.
    #[arg(long)]
    write: bool,
}

/// Arguments of `sluice apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A file, or a folder of `*.yaml`/`*.yml` files: pipeline specs, and connections (a mapping
    /// with `name`, `connector`, `description` and `options`), which are applied first.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Also deploy each pipeline that was created or changed.
    #[arg(long)]
    pub deploy: bool,
    #[command(flatten)]
    pub common: Common,
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; cannot find the saved credentials")?;
    Ok(PathBuf::from(home).join(".config/sluice/credentials.json"))
}

fn credentials() -> anyhow::Result<Credentials> {
    if let (Ok(url), Ok(token)) = (std::env::var("SLUICE_URL"), std::env::var("SLUICE_TOKEN")) {
        return Ok(Credentials { url, token });
    }
    let path = credentials_path()?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("not logged in ({} is missing): run `sluice login URL --token TOKEN`", path.display())
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid; run `sluice login` again", path.display()))
}

/// Runs `sluice login`: checks the token against the server, then saves it.
pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let credentials = Credentials { url: args.url.trim_end_matches('/').to_string(), token: args.token };
    let me = call(&credentials, "GET", "/api/v1/whoami", None)?;
    let path = credentials_path()?;
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    sluice_control::secrets::write_private(&path, &serde_json::to_string_pretty(&credentials)?)?;
    println!(
        "logged in to {} as {} (saved in {})",
        credentials.url,
        me["user"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `sluice pipelines ...`.
pub fn pipelines(args: PipelinesArgs) -> anyhow::Result<ExitCode> {
    let credentials = credentials()?;
    let base = format!("/api/v1/teams/{}/pipelines", args.common.team);
    let post = |name: &str, action: &str, body: Value| {
        call(&credentials, "POST", &format!("{base}/{name}/{action}"), Some(body))
    };
    let result = match args.command {
        PipelinesCommand::List => {
            let list = call(&credentials, "GET", &base, None)?;
            let rows = list["pipelines"].as_array().cloned().unwrap_or_default();
            return print_pipelines(&rows, args.common.output);
        }
        PipelinesCommand::Get { name } => call(&credentials, "GET", &format!("{base}/{name}"), None)?,
        PipelinesCommand::Deploy { name, version, parallelism } => {
            post(&name, "deploy", json!({ "version": version, "parallelism": parallelism }))?
        }
        PipelinesCommand::Start { name } => post(&name, "start", json!({}))?,
        PipelinesCommand::Stop { name } => post(&name, "stop", json!({}))?,
        PipelinesCommand::Savepoint { name } => post(&name, "savepoint", json!({}))?,
        PipelinesCommand::Resume { name, savepoint } => {
            post(&name, "resume", json!({ "savepoint": savepoint }))?
        }
        PipelinesCommand::Rescale { name, parallelism } => {
            post(&name, "rescale", json!({ "parallelism": parallelism }))?
        }
        PipelinesCommand::Restart { name } => post(&name, "restart", json!({}))?,
        PipelinesCommand::Events { name } => {
            let events = call(&credentials, "GET", &format!("{base}/{name}/events"), None)?;
            if matches!(args.common.output, Output::Table) {
                for event in events.as_array().into_iter().flatten() {
                    println!(
                        "{:>13}  {:>12} → {:<12}  {}",
                        event["at"],
                        event["from"].as_str().unwrap_or(""),
                        event["to"].as_str().unwrap_or(""),
                        event["reason"].as_str().unwrap_or("")
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            events
        }
        PipelinesCommand::Checkpoints { name } => {
            let listed = call(&credentials, "GET", &format!("{base}/{name}/checkpoints"), None)?;
            if matches!(args.common.output, Output::Table) {
                println!(
                    "{:>12} {:<10} {:>8} {:>12} {:>10}  FINISHED",
                    "CHECKPOINT", "KIND", "WORKERS", "BYTES", "MS"
                );
                for checkpoint in listed["checkpoints"].as_array().into_iter().flatten() {
                    println!(
                        "{:>12} {:<10} {:>8} {:>12} {:>10}  {}",
                        checkpoint["checkpoint"],
                        checkpoint["kind"].as_str().unwrap_or("incomplete"),
                        checkpoint["workers"],
                        checkpoint["bytes"],
                        checkpoint["duration_ms"],
                        checkpoint["finished"]
                    );
                }
                for savepoint in listed["savepoints"].as_array().into_iter().flatten() {
                    println!("savepoint {}", savepoint["path"].as_str().unwrap_or(""));
                }
                return Ok(ExitCode::SUCCESS);
            }
            listed
        }
        PipelinesCommand::Metrics { name } => {
            let metrics = call(&credentials, "GET", &format!("{base}/{name}/metrics"), None)?;
            if matches!(args.common.output, Output::Table) {
                print_metrics(&metrics);
                return Ok(ExitCode::SUCCESS);
            }
            return print_value(&metrics, args.common.output);
        }
        PipelinesCommand::Logs { name, tail } => {
            let text = call(&credentials, "GET", &format!("{base}/{name}/logs?limit={tail}"), None)?;
            println!("{}", text.as_str().unwrap_or_default());
            return Ok(ExitCode::SUCCESS);
        }
        PipelinesCommand::Delete { name } => {
            call(&credentials, "DELETE", &format!("{base}/{name}"), None)?;
            println!("deleted {name}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if result.get("name").is_some() && result.get("state").is_some() {
        return print_pipelines(&[result], args.common.output);
    }
    print_value(&result, args.common.output)
}

/// Runs `sluice connections ...`.
pub fn connections(args: ConnectionsArgs) -> anyhow::Result<ExitCode> {
    let credentials = credentials()?;
    let base = format!("/api/v1/teams/{}/connections", args.common.team);
    let result = match args.command {
        ConnectionsCommand::List => {
            let list = call(&credentials, "GET", &base, None)?;
            if !matches!(args.common.output, Output::Table) {
                return print_value(&list["connections"], args.common.output);
            }
            println!("{:<24} {:<10} {:<12}  DESCRIPTION", "NAME", "CONNECTOR", "UPDATED BY");
            for row in list["connections"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<10} {:<12}  {}",
                    row["name"].as_str().unwrap_or(""),
                    row["connector"].as_str().unwrap_or(""),
                    row["updated_by"].as_str().unwrap_or(""),
                    row["description"].as_str().unwrap_or("")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        ConnectionsCommand::Get { name } => call(&credentials, "GET", &format!("{base}/{name}"), None)?,
        ConnectionsCommand::Delete { name } => {
            call(&credentials, "DELETE", &format!("{base}/{name}"), None)?;
            println!("deleted connection {name}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let output = if matches!(args.common.output, Output::Table) { Output::Yaml } else { args.common.output };
    print_value(&result, output)
}

/// Runs `sluice datasets ...`. Grants and descriptions are changed through the owning team,
/// which is looked up first.
pub fn datasets(args: DatasetsArgs) -> anyhow::Result<ExitCode> {
    let credentials = credentials()?;
    let one = |name: &str| call(&credentials, "GET", &format!("/api/v1/datasets/{}", segment(name)), None);
    let owned = |name: &str| -> anyhow::Result<(Value, String)> {
        let dataset = one(name)?;
        let owner = dataset["owner"].as_str().context("the dataset has no owner")?.to_string();
        let path = format!("/api/v1/teams/{}/datasets/{}", segment(&owner), segment(name));
        Ok((dataset, path))
    };
    let dataset = match args.command {
        DatasetsCommand::List => {
            let list = call(&credentials, "GET", "/api/v1/datasets", None)?;
            let rows = list["datasets"].as_array().cloned().unwrap_or_default();
            return print_datasets(&rows, args.output);
        }
        DatasetsCommand::Get { name } => one(&name)?,
        DatasetsCommand::Register { name, team, classification, description } => {
            let body = json!({ "name": name, "classification": classification, "description": description });
            call(&credentials, "POST", &format!("/api/v1/teams/{}/datasets", segment(&team)), Some(body))?
        }
        DatasetsCommand::Describe { name, classification, description } => {
            let (current, path) = owned(&name)?;
            let body = json!({
                "classification": classification.as_deref().or(current["classification"].as_str()).unwrap_or(""),
                "description": description.as_deref().or(current["description"].as_str()).unwrap_or(""),
            });
            call(&credentials, "PUT", &path, Some(body))?
        }
        DatasetsCommand::Grant(grant) => {
            let (_, path) = owned(&grant.name)?;
            let mut dataset = Value::Null;
            for access in grant.accesses() {
                let path = format!("{path}/grants/{}/{access}", segment(&grant.team));
                dataset = call(&credentials, "PUT", &path, None)?;
            }
            dataset
        }
        DatasetsCommand::Revoke(grant) => {
            let (_, path) = owned(&grant.name)?;
            for access in grant.accesses() {
                call(
                    &credentials,
                    "DELETE",
                    &format!("{path}/grants/{}/{access}", segment(&grant.team)),
                    None,
                )?;
            }
            one(&grant.name)?
        }
    };
    if matches!(args.output, Output::Table) {
        return print_dataset(&dataset);
    }
    print_value(&dataset, args.output)
}

impl GrantArgs {
    fn accesses(&self) -> impl Iterator<Item = &'static str> {
        [(self.read, "read"), (self.write, "write")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, access)| access)
    }
}

/// `text` as one URL path segment: dataset names hold `/` (e.g. `file:/data/out`).
fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded += &format!("%{byte:02X}");
        }
    }
    encoded
}

fn print_datasets(rows: &[Value], output: Output) -> anyhow::Result<ExitCode> {
    if !matches!(output, Output::Table) {
        return print_value(&Value::Array(rows.to_vec()), output);
    }
    println!(
        "{:<40} {:<16} {:<14} {:<20} {:<20}  DESCRIPTION",
        "NAME", "OWNER", "CLASS", "READERS", "WRITERS"
    );
    for row in rows {
        println!(
            "{:<40} {:<16} {:<14} {:<20} {:<20}  {}",
            row["name"].as_str().unwrap_or(""),
            row["owner"].as_str().unwrap_or(""),
            row["classification"].as_str().filter(|c| !c.is_empty()).unwrap_or("-"),
            teams(&row["readers"]),
            teams(&row["writers"]),
            row["description"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_dataset(dataset: &Value) -> anyhow::Result<ExitCode> {
    let text = |key: &str| dataset[key].as_str().unwrap_or("").to_string();
    println!("name:           {}", text("name"));
    println!("owner:          {}", text("owner"));
    println!(
        "classification: {}",
        Some(text("classification")).filter(|c| !c.is_empty()).unwrap_or("-".into())
    );
    println!("description:    {}", text("description"));
    println!("readers:        {}", teams(&dataset["readers"]));
    println!("writers:        {}", teams(&dataset["writers"]));
    println!("registered by:  {}", text("registered_by"));
    for field in dataset["schema"].as_array().into_iter().flatten() {
        println!(
            "column:         {} {}",
            field["name"].as_str().unwrap_or("?"),
            field["type"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Team names, comma-separated, or `-`.
fn teams(list: &Value) -> String {
    let names: Vec<&str> = list.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if names.is_empty() { "-".to_string() } else { names.join(",") }
}

fn print_metrics(metrics: &Value) {
    let mut heading = format!(
        "pipeline {}: {}, run {}",
        metrics["pipeline"].as_str().unwrap_or("?"),
        metrics["state"].as_str().unwrap_or("?"),
        metrics["run"]
    );
    if let Some(age) = metrics["age_ms"].as_i64() {
        heading += &format!(
            ", snapshot {:.1} s old, up {:.1} s",
            age as f64 / 1000.0,
            metrics["uptime_ms"].as_f64().unwrap_or(0.0) / 1000.0
        );
    }
    if let Some(checkpoint) = metrics["checkpoint"]["id"].as_u64() {
        heading += &format!(", last checkpoint {checkpoint}");
    }
    println!("{heading}");
    if let Some(message) = metrics["message"].as_str() {
        println!("{message}");
    }
    let nodes = metrics["nodes"].as_array().cloned().unwrap_or_default();
    if nodes.is_empty() {
        return;
    }
    println!(
        "{:<20} {:<10} {:>14} {:>14} {:>10} {:>10} {:>6} {:>12} {:>10}",
        "NODE", "ROLE", "RECORDS IN", "RECORDS OUT", "IN/S", "OUT/S", "BUSY", "LAG", "STATE MB"
    );
    for node in &nodes {
        let number = |key: &str| node[key].as_f64().unwrap_or(0.0);
        println!(
            "{:<20} {:<10} {:>14} {:>14} {:>10.0} {:>10.0} {:>5.0}% {:>12} {:>10.1}",
            node["name"].as_str().unwrap_or(""),
            node["role"].as_str().unwrap_or(""),
            node["records_in"].to_string(),
            node["records_out"].to_string(),
            number("records_in_per_second"),
            number("records_out_per_second"),
            number("busy") * 100.0,
            node["lag"].to_string(),
            number("state_bytes") / 1e6
        );
    }
}

/// Runs `sluice apply -f`: creates or updates the connections first, then creates missing
/// pipelines and adds a version where a spec changed, leaving the rest alone (running it twice
/// changes nothing the second time).
pub fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let credentials = credentials()?;
    let mut specs = Vec::new();
    let connections = format!("/api/v1/teams/{}/connections", args.common.team);
    for file in spec_files(&args.file)? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let document: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
        if document.get("connector").is_none() {
            specs.push((file, text));
            continue;
        }
        let Some(name) = document["name"].as_str() else {
            bail!("{}: a connection needs a `name`", file.display());
        };
        let path = format!("{connections}/{name}");
        let wanted = json!({
            "connector": document["connector"],
            "description": document.get("description").cloned().unwrap_or(json!("")),
            "options": document.get("options").cloned().unwrap_or(json!({})),
        });
        let current = match try_call(&credentials, "GET", &path, None)? {
            (404, _) => None,
            (200, current) => Some(current),
            (status, error) => bail!("{}: {}", file.display(), describe(status, &error)),
        };
        let same = current.as_ref().is_some_and(|current| {
            ["connector", "description", "options"].iter().all(|key| current[key] == wanted[key])
        });
        if same {
            println!("{}: connection {name} unchanged", file.display());
            continue;
        }
        call(&credentials, "PUT", &path, Some(wanted)).with_context(|| file.display().to_string())?;
        let done = if current.is_some() { "updated" } else { "created" };
        println!("{}: connection {name} {done}", file.display());
    }
    let base = format!("/api/v1/teams/{}/pipelines", args.common.team);
    for (file, text) in specs {
        let name = sluice_spec::parse_partial(&text).0.map(|spec| spec.name).with_context(|| {
            format!("{}: not a pipeline spec (check it with `sluice validate`)", file.display())
        })?;
        let path = format!("{base}/{name}");
        let body = json!({ "spec": text });
        let changed = match try_call(&credentials, "GET", &path, None)? {
            (404, _) => {
                call(&credentials, "POST", &base, Some(body)).with_context(|| file.display().to_string())?;
                println!("{}: pipeline {name} created", file.display());
                true
            }
            (200, pipeline) => {
                let latest = pipeline["latest_version"].as_i64().unwrap_or(0);
                let current = call(&credentials, "GET", &format!("{path}/versions/{latest}"), None)?;
                if current["spec"].as_str() == Some(text.as_str()) {
                    println!("{}: pipeline {name} unchanged (version {latest})", file.display());
                    false
                } else {
                    let saved = call(&credentials, "PUT", &path, Some(body))
                        .with_context(|| file.display().to_string())?;
                    println!("{}: pipeline {name} updated to version {}", file.display(), saved["version"]);
                    true
                }
            }
            (status, error) => bail!("{}: {}", file.display(), describe(status, &error)),
        };
        if changed && args.deploy {
            call(&credentials, "POST", &format!("{path}/deploy"), Some(json!({})))?;
            println!("{}: pipeline {name} deployed", file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn spec_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .yaml or .yml files", path.display());
    }
    Ok(files)
}

/// Calls the API; a non-2xx answer is an error with the server's message.
fn call(credentials: &Credentials, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    match try_call(credentials, method, path, body)? {
        (status, value) if (200..300).contains(&status) => Ok(value),
        (status, error) => bail!("{}", describe(status, &error)),
    }
}

fn describe(status: u16, error: &Value) -> String {
    let mut text = format!("{status}: {}", error["error"]["message"].as_str().unwrap_or(&error.to_string()));
    for detail in error["error"]["details"]["errors"].as_array().into_iter().flatten() {
        text += &format!(
            "\n  {}: {}",
            detail["path"].as_str().unwrap_or(""),
            detail["message"].as_str().unwrap_or("")
        );
    }
    for pipeline in error["error"]["details"]["pipelines"].as_array().into_iter().flatten() {
        for detail in pipeline["errors"].as_array().into_iter().flatten() {
            text += &format!(
                "\n  pipeline {} version {}: {}: {}",
                pipeline["pipeline"].as_str().unwrap_or(""),
                pipeline["version"],
                detail["path"].as_str().unwrap_or(""),
                detail["message"].as_str().unwrap_or("")
            );
        }
    }
    text
}

fn try_call(
    credentials: &Credentials,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request =
            client.request(method, format!("{}{path}", credentials.url)).bearer_auth(&credentials.token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {}", credentials.url))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    })
}

fn print_pipelines(rows: &[Value], output: Output) -> anyhow::Result<ExitCode> {
    if !matches!(output, Output::Table) {
        return print_value(&Value::Array(rows.to_vec()), output);
    }
    println!(
        "{:<24} {:<13} {:<8} {:>7} {:>8} {:>8}  REASON",
        "NAME", "STATE", "DESIRED", "VERSION", "WORKERS", "RESTARTS"
    );
    for row in rows {
        println!(
            "{:<24} {:<13} {:<8} {:>7} {:>8} {:>8}  {}",
            row["name"].as_str().unwrap_or(""),
            row["state"].as_str().unwrap_or(""),
            row["desired"].as_str().unwrap_or(""),
            row["deployed_version"].as_i64().map_or("-".to_string(), |v| v.to_string()),
            row["parallelism"],
            row["restarts"],
            row["reason"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_value(value: &Value, output: Output) -> anyhow::Result<ExitCode> {
    match output {
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(ExitCode::SUCCESS)
}
