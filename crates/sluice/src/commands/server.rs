//! `sluice up` and `sluice server`: the control plane in this process, supervising pipelines as
//! local worker processes (this same binary, as `sluice run`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use sluice_control::api::Checker;
use sluice_control::oidc::OidcConfig;
use sluice_control::supervisor::RestartPolicy;
use sluice_control::{Config, ControlPlane, DEFAULT_TEAM};
use sluice_spec::Diagnostic;

use crate::plan::plan;

/// Arguments of `sluice server` (and `sluice up`).
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where pipelines' specs, checkpoints, savepoints and logs live, and the SQLite metadata.
    #[arg(long, default_value = "sluice-data")]
    pub data_dir: PathBuf,
    /// Metadata database: `sqlite://PATH` (default: `<data-dir>/sluice.db`) or
    /// `postgres://USER@HOST/DB` for production.
    #[arg(long)]
    pub database: Option<String>,
    /// Restarts of a failing worker before its pipeline is marked failed.
    #[arg(long, default_value_t = 5)]
    pub restart_budget: i64,
    /// How long a worker asked to stop may take (drain, final checkpoint) before it is killed.
    #[arg(long, default_value = "60s", value_parser = crate::commands::run::parse_duration_arg)]
    pub stop_timeout: std::time::Duration,
    /// A worker's log larger than this many MiB is rotated into `worker.log.1` (the previous
    /// rotation is dropped): at most twice this on disk per pipeline.
    #[arg(long, default_value_t = sluice_control::DEFAULT_WORKER_LOG_LIMIT >> 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub worker_log_max_mib: u64,
    /// Also accept JWTs from this OpenID Connect issuer (its `iss`).
    #[arg(long, requires = "oidc_jwks_url")]
    pub oidc_issuer: Option<String>,
    /// The issuer's JSON Web Key Set URL.
    #[arg(long, requires = "oidc_issuer")]
    pub oidc_jwks_url: Option<String>,
    /// The audience (`aud`) tokens must be for.
    #[arg(long)]
    pub oidc_audience: Option<String>,
    /// The claim naming the Sluice user.
    #[arg(long, default_value = "sub")]
    pub oidc_user_claim: String,
}

/// The demo pipeline `sluice up` deploys on first start.
const DEMO: &str = include_str!("../../../../examples/demo/pipeline.yaml");

/// Checks specs with the full planner: structure, connector options, SQL.
struct Planner;

impl Checker for Planner {
    fn check(&self, spec: &str, base_dir: &Path) -> Result<(), Vec<Diagnostic>> {
        // Team secrets reach workers only, as `SLUICE_SECRET_*` variables: that the control
        // plane's own environment lacks them is expected, not a problem of the spec.
        let missing_secret = |d: &Diagnostic| {
            d.missing_variable.as_deref().is_some_and(|name| name.starts_with("SLUICE_SECRET_"))
        };
        match plan(spec, base_dir) {
            Ok(_) => Ok(()),
            Err(diagnostics) if diagnostics.iter().all(missing_secret) => Ok(()),
            Err(diagnostics) => Err(diagnostics.into_iter().filter(|d| !missing_secret(d)).collect()),
        }
    }

    fn connectors(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = [
            sluice_connectors::source_connectors(),
            sluice_connectors::sink_connectors(),
            sluice_connectors::lookup_connectors(),
        ]
        .concat();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// Runs `sluice server`; with `demo`, `sluice up` (a demo pipeline deployed on first start).
pub fn server(args: ServerArgs, demo: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(serve(args, demo))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServerArgs, demo: bool) -> anyhow::Result<()> {
    let config = Config {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        database: args.database.clone(),
        worker_program: std::env::current_exe().context("finding this program to run workers")?,
        restart: RestartPolicy {
            budget: args.restart_budget,
            stop_timeout: args.stop_timeout,
            ..RestartPolicy::default()
        },
        worker_log_limit: args.worker_log_max_mib.saturating_mul(1 << 20),
        oidc: match (&args.oidc_issuer, &args.oidc_jwks_url) {
            (Some(issuer), Some(jwks_url)) => Some(OidcConfig {
                issuer: issuer.clone(),
                jwks_url: jwks_url.clone(),
                audience: args.oidc_audience.clone(),
                user_claim: args.oidc_user_claim.clone(),
            }),
            _ => None,
        },
    };
    let control = ControlPlane::open(config, Arc::new(Planner)).await?;
    let url = format!("http://{}", args.listen);
    if let Some(first) = control.bootstrap().await? {
        if demo {
            deploy_demo(&control).await?;
        }
        println!("First start: created platform admin \"{}\" in team \"{}\".", first.user, first.team);
        println!("Its API token is shown only this once; keep it:");
        println!();
        println!("    {}", first.token);
        println!();
        println!("    sluice login {url} --token {}", first.token);
        if demo {
            println!("    sluice pipelines list    # the demo pipeline \"demo-payments\" is running");
        }
    }
    // Last, so scripts can wait for this line.
    println!("Sluice is up: {url}/api/v1 (data in {})", args.data_dir.display());
    control.serve(shutdown_signal()).await?;
    // stdout may be gone by now (a closed terminal or pipe); that is no reason to fail.
    let _ = writeln!(
        std::io::stdout(),
        "control plane stopped; pipelines keep running and are adopted on the next start"
    );
    Ok(())
}

async fn deploy_demo(control: &ControlPlane) -> anyhow::Result<()> {
    let app = control.app();
    let base_dir = app.supervisor.pipeline_dir(DEFAULT_TEAM, "demo-payments");
    Planner.check(DEMO, &base_dir).map_err(|diagnostics| {
        anyhow::anyhow!(
            "the demo pipeline is not valid: {}",
            diagnostics.first().map(ToString::to_string).unwrap_or_default()
        )
    })?;
    let record = app
        .store
        .create_pipeline(DEFAULT_TEAM, "demo-payments", DEMO, 1, sluice_control::FIRST_ADMIN)
        .await?;
    let request = sluice_control::store::Request {
        desired: Some(sluice_control::store::Desired::Running),
        deployed_version: Some(record.latest_version),
        ..Default::default()
    };
    app.store.request(DEFAULT_TEAM, &record.name, &request).await?;
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
