//! `sluice`: the one binary. Subcommands are roles (`run` executes a pipeline in this process)
//! and tools (`validate`, `bench`). Glue only: parsing arguments, printing, exit codes; the work
//! lives in the library crates.

mod commands;
mod metrics_file;
mod plan;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sluice: self-serve stream processing. Pipelines of SQL between sources and sinks.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log as JSON lines instead of text (logs go to stderr; `RUST_LOG` sets the level).
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the platform: the control plane on 127.0.0.1:8080 with SQLite metadata and local
    /// checkpoints under `sluice-data/`, and a demo pipeline on first start.
    Up(commands::server::ServerArgs),
    /// Run the control plane (same as `up` without the demo), e.g. against PostgreSQL.
    Server(commands::server::ServerArgs),
    /// Save the control plane's URL and an API token for the commands below.
    Login(commands::client::LoginArgs),
    /// Manage pipelines on the control plane: list, get, deploy, start, stop, savepoint, ...
    Pipelines(commands::client::PipelinesArgs),
    /// Manage the team's connections (reusable connector profiles): list, get, delete.
    Connections(commands::client::ConnectionsArgs),
    /// The dataset catalog: list and inspect datasets, classify them, grant other teams access.
    Datasets(commands::client::DatasetsArgs),
    /// Create or update the connections and pipelines of a file or folder on the control plane
    /// (idempotent: unchanged ones are left alone).
    Apply(commands::client::ApplyArgs),
    /// Run a pipeline until its bounded sources end, or until Ctrl-C / SIGTERM.
    Run(commands::run::RunArgs),
    /// Check a pipeline spec without running it: YAML, structure, connector options, SQL.
    Validate(commands::validate::ValidateArgs),
    /// Measure throughput on built-in workloads.
    Bench(commands::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    report::explain_panics();
    let result = match cli.command {
        Command::Up(args) => commands::server::server(args, true),
        Command::Server(args) => commands::server::server(args, false),
        Command::Login(args) => commands::client::login(args),
        Command::Pipelines(args) => commands::client::pipelines(args),
        Command::Connections(args) => commands::client::connections(args),
        Command::Datasets(args) => commands::client::datasets(args),
        Command::Apply(args) => commands::client::apply(args),
        Command::Run(args) => commands::run::run(args),
        Command::Validate(args) => commands::validate::validate(args),
        Command::Bench(args) => commands::bench::bench(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
