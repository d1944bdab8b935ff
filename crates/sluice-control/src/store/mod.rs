//! The metadata store: teams, users, tokens, role bindings, pipelines with their versions and
//! events, connections, secrets, datasets, the schema registry's subjects and schemas, and
//! the audit log. One schema and one set of queries for SQLite (the embedded
//! default) and PostgreSQL (production), through sqlx's `Any` driver; every query is written in
//! the SQL both understand.

mod access;
mod audit;
mod connections;
mod datasets;
mod pipelines;
mod registry;
mod secrets;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe};

pub use access::{Member, TokenInfo, UserInfo};
pub use audit::AuditEntry;
pub use connections::ConnectionRecord;
pub use datasets::{DatasetRecord, NewDataset};
pub use pipelines::{
    Actual, Desired, Observed, Pending, PipelineEvent, PipelineRecord, Request, VersionRecord, Worker,
};
pub use registry::{RegistryVersion, StoredSchema};
pub use secrets::SecretInfo;

/// Which database holds the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (the embedded default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The metadata store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Schema versions, applied in order; `{id}` is the backend's auto-increment primary key.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE teams (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        platform_admin BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE role_bindings (
        team TEXT NOT NULL,
        user_name TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (team, user_name)
    );
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT
    );
    CREATE TABLE pipelines (
        team TEXT NOT NULL,
        name TEXT NOT NULL,
        latest_version BIGINT NOT NULL,
        deployed_version BIGINT,
        desired TEXT NOT NULL,
        pending TEXT,
        parallelism BIGINT NOT NULL,
        generation BIGINT NOT NULL,
        resume_from TEXT,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        worker_pid BIGINT,
        worker_start BIGINT,
        worker_generation BIGINT,
        worker_started_at BIGINT,
        runs BIGINT NOT NULL,
        restarts BIGINT NOT NULL,
        retry_at BIGINT,
        last_savepoint TEXT,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (team, name)
    );
    CREATE TABLE pipeline_versions (
        team TEXT NOT NULL,
        name TEXT NOT NULL,
        version BIGINT NOT NULL,
        spec TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (team, name, version)
    );
    CREATE TABLE pipeline_events (
        id {id},
        team TEXT NOT NULL,
        name TEXT NOT NULL,
        at BIGINT NOT NULL,
        from_state TEXT NOT NULL,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX pipeline_events_by_pipeline ON pipeline_events (team, name, id);
    CREATE TABLE audit_log (
        id {id},
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        remote TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status BIGINT NOT NULL
    );",
    ),
    (
        2,
        "CREATE TABLE secrets (
        team TEXT NOT NULL,
        name TEXT NOT NULL,
        sealed TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (team, name)
    );",
    ),
    (
        3,
        "CREATE TABLE datasets (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        classification TEXT NOT NULL,
        description TEXT NOT NULL,
        schema_json TEXT NOT NULL,
        registered_by TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE dataset_grants (
        dataset TEXT NOT NULL,
        team TEXT NOT NULL,
        access TEXT NOT NULL,
        granted_by TEXT NOT NULL,
        granted_at BIGINT NOT NULL,
        PRIMARY KEY (dataset, team, access)
    );",
    ),
    (
        4,
        "CREATE TABLE connections (
        team TEXT NOT NULL,
        name TEXT NOT NULL,
        connector TEXT NOT NULL,
        description TEXT NOT NULL,
        options_json TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (team, name)
    );",
    ),
    (
        5,
        "CREATE TABLE registry_schemas (
        id {id},
        team TEXT NOT NULL,
        schema_type TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        schema_text TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX registry_schemas_by_fingerprint ON registry_schemas (team, schema_type, fingerprint);
    CREATE TABLE registry_versions (
        team TEXT NOT NULL,
        subject TEXT NOT NULL,
        version BIGINT NOT NULL,
        schema_id BIGINT NOT NULL,
        deleted BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (team, subject, version)
    );
    CREATE INDEX registry_versions_by_schema ON registry_versions (team, schema_id);
    CREATE TABLE registry_config (
        team TEXT NOT NULL,
        subject TEXT NOT NULL,
        compatibility TEXT NOT NULL,
        PRIMARY KEY (team, subject)
    );",
    ),
];

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`) and brings the schema up to date.
    /// A SQLite file is created if missing.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url, connections) = if let Some(path) = url.strip_prefix("sqlite://") {
            let separator = if path.contains('?') { '&' } else { '?' };
            // SQLite serializes writers; a few connections serve concurrent readers.
            (Backend::Sqlite, format!("sqlite://{path}{separator}mode=rwc"), 4)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string(), 10)
        } else {
            anyhow::bail!("unsupported database URL \"{url}\": use sqlite://PATH or postgres://USER@HOST/DB");
        };
        let pool =
            AnyPoolOptions::new().max_connections(connections).connect(&url).await.map_err(|error| {
                anyhow::anyhow!("cannot open the metadata database at {}: {error}", redact_url(&url))
            })?;
        let store = Store { pool, backend };
        if backend == Backend::Sqlite {
            // Readers do not block the writer, and a writer waits for another instead of failing.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&store.pool).await?;
        }
        store.migrate().await?;
        Ok(store)
    }

    /// The database in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let id = match self.backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        for (version, script) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if applied.is_some() {
                continue;
            }
            let script = script.replace("{id}", id);
            for statement in script.split(';').filter(|s| !s.trim().is_empty()) {
                sqlx::query(AssertSqlSafe(statement)).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// `url` without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Whether `error` is a unique-constraint violation (a duplicate name).
pub(crate) fn is_duplicate(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/meta"), "postgres://app:***@db:5432/meta");
        assert_eq!(redact_url("postgres://app@db/meta"), "postgres://app@db/meta");
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
