//! Sluice's control plane: the REST API over a metadata store (SQLite by default, PostgreSQL
//! for production), pipeline lifecycle and supervision of local worker processes, teams as
//! tenants with roles, hashed API tokens and an audit log.
//!
//! `sluice up` and `sluice server` in the binary start it with [`ControlPlane::serve`].

pub mod api;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod lifecycle;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod registry;
pub mod secrets;
pub mod store;
pub mod supervisor;
pub mod worker_log;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::api::{App, Checker};
use crate::auth::Role;
use crate::oidc::{OidcConfig, Verifier};
use crate::secrets::SecretKey;
use crate::store::Store;
use crate::supervisor::{RestartPolicy, Supervisor};

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Pipeline files (specs, checkpoints, savepoints, logs) and, by default, the SQLite file.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; `sqlite://<data_dir>/sluice.db` when `None`.
    pub database: Option<String>,
    /// The program workers run as (`sluice` itself).
    pub worker_program: PathBuf,
    /// How failed workers restart.
    pub restart: RestartPolicy,
    /// A worker log larger than this many bytes is rotated (one rotated file is kept).
    pub worker_log_limit: u64,
    /// Accept JWTs of this identity provider as well as API tokens.
    pub oidc: Option<OidcConfig>,
}

/// The credentials created on first start.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The admin user's name.
    pub user: String,
    /// Its token, shown once.
    pub token: String,
    /// The team created for it.
    pub team: String,
}

/// A control plane, ready to serve.
pub struct ControlPlane {
    app: App,
    listen: SocketAddr,
}

/// The default [`Config::worker_log_limit`]: 64 MiB.
pub const DEFAULT_WORKER_LOG_LIMIT: u64 = 64 << 20;

/// Name of the first admin user and of the team created with it.
pub const FIRST_ADMIN: &str = "admin";
/// The team a new platform starts with.
pub const DEFAULT_TEAM: &str = "default";

impl ControlPlane {
    /// Opens the store (migrating it) and prepares the API; nothing is served yet.
    pub async fn open(config: Config, checker: Arc<dyn Checker>) -> anyhow::Result<ControlPlane> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
        let data_dir = config.data_dir.canonicalize().context("resolving the data directory")?;
        let database = config
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("sluice.db").display()));
        let store = Store::connect(&database).await?;
        let secrets = Arc::new(SecretKey::load(&data_dir)?);
        let supervisor = Supervisor::new(
            store.clone(),
            data_dir.clone(),
            config.worker_program.clone(),
            config.restart,
            config.worker_log_limit,
            secrets.clone(),
        );
        Ok(ControlPlane {
            app: App { store, supervisor, checker, data_dir, secrets, oidc: config.oidc.map(Verifier::new) },
            listen: config.listen,
        })
    }

    /// The shared state of the API (for tests through the router).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// On first start (no platform admin yet): creates the admin user, the default team and a
    /// token, and returns them.
    pub async fn bootstrap(&self) -> anyhow::Result<Option<Bootstrap>> {
        let store = &self.app.store;
        if store.has_platform_admin().await? {
            return Ok(None);
        }
        store.create_user(FIRST_ADMIN, true).await?;
        if !store.team_exists(DEFAULT_TEAM).await? {
            store.create_team(DEFAULT_TEAM, "created on first start").await?;
        }
        store.bind_role(DEFAULT_TEAM, FIRST_ADMIN, Role::Admin).await?;
        let (_, token) = store.issue_token(FIRST_ADMIN, "created on first start").await?;
        Ok(Some(Bootstrap { user: FIRST_ADMIN.into(), token, team: DEFAULT_TEAM.into() }))
    }

    /// Serves the API and supervises pipelines until `shutdown` resolves. Workers keep running
    /// after it returns; the next start adopts them.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("listening on {} (is another server running there?)", self.listen))?;
        let supervisor = tokio::spawn(self.app.supervisor.clone().run());
        let router = api::router(self.app);
        let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving the API");
        supervisor.abort();
        served
    }
}
