//! The `postgres` connector: a PostgreSQL table as a sink (insert or upsert by key, batched,
//! exactly-once with checkpoints) and as a lookup table for enrichment joins (cached, with a
//! time to live).
//!
//! Each configured sink or lookup owns a small tokio runtime and a connection pool: sink writers
//! and lookups are called synchronously from timely workers and block on it (`Database::run`).
//! The URL's password never appears in messages or logs: they name the
//! database as `postgres://user@host:port/database`.
//!
//! Rows travel as one array parameter per column (`INSERT ... SELECT ... FROM UNNEST($1, $2,
//! ...)`), so a statement of any number of rows has as many parameters as columns. Type
//! mappings are in [`types`].

mod lookup;
mod sink;
pub mod types;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sluice_runtime::connector::Sink;
use sluice_runtime::processor::LookupTable;
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::lookup_cache::CacheSettings;
use crate::{LookupRequest, SinkRequest, arrow_schema, options};

pub use crate::lookup_cache::{CACHE_OPTIONS, CacheOptions};

pub use lookup::PostgresLookup;
pub use sink::{COMMITS_TABLE, PostgresSink};

/// How the sink writes rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Plain `INSERT`: every row is a new row.
    #[default]
    Insert,
    /// `INSERT ... ON CONFLICT (key) DO UPDATE`: the last row written for a key is its value.
    Upsert,
}

/// Options of the `postgres` sink.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkOptions {
    /// `postgres://user:password@host:port/database`. This or `url_env` is required.
    pub url: Option<String>,
    /// The name of an environment variable holding the URL, to keep passwords out of specs.
    pub url_env: Option<String>,
    /// The table written to, `name` or `schema.name`, used exactly as written (case-sensitive,
    /// quoted). Required.
    pub table: Option<String>,
    /// `insert` (default) or `upsert`.
    pub mode: Option<WriteMode>,
    /// The columns identifying a row: the conflict target of `upsert` (required there) and the
    /// primary key of a table created by `create_table`.
    pub key: Option<Vec<String>>,
    /// Create the table (`CREATE TABLE IF NOT EXISTS`) from the stream's schema, with `key` as
    /// its primary key; default `false`.
    pub create_table: Option<bool>,
    /// Rows per statement; default 5,000.
    pub batch_size: Option<usize>,
}

/// Option names of the `postgres` sink.
pub const SINK_OPTIONS: &[&str] = &["url", "url_env", "table", "mode", "key", "create_table", "batch_size"];

/// Options of the `postgres` lookup table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresLookupOptions {
    /// As for the sink.
    pub url: Option<String>,
    /// As for the sink.
    pub url_env: Option<String>,
    /// The table rows are looked up in. This or `query` is required.
    pub table: Option<String>,
    /// A `SELECT` whose rows are looked up in, instead of a table.
    pub query: Option<String>,
    /// The column rows are looked up by. Required.
    pub key: Option<String>,
    /// Caching, checked as [`CacheOptions`] (kept raw so that its keys are checked one by one).
    pub cache: Option<serde_json::Value>,
}

/// Option names of the `postgres` lookup table.
pub const LOOKUP_OPTIONS: &[&str] = &["url", "url_env", "table", "query", "key", "cache"];

/// Rows per statement by default.
const DEFAULT_BATCH_SIZE: usize = 5_000;

/// Builds the PostgreSQL sink from its request. Checks the options only; the database is first
/// contacted when a worker opens the sink.
pub fn build_sink(request: &SinkRequest) -> Result<Arc<dyn Sink>, Vec<Diagnostic>> {
    let options = options::parse::<PostgresSinkOptions>(request.options, SINK_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let url = connect_options(options.url.as_deref(), options.url_env.as_deref(), &mut diagnostics);
    let table = match options.table.as_deref() {
        Some(table) => TableName::parse(table)
            .map_err(|message| diagnostics.push(Diagnostic::new("options.table", message)))
            .ok(),
        None => {
            diagnostics.push(options::missing("options", "table"));
            None
        }
    };
    let mode = options.mode.unwrap_or_default();
    if let Some(key) = &options.key {
        if key.is_empty() {
            diagnostics.push(Diagnostic::new("options.key", "must name at least one column"));
        }
        for (index, column) in key.iter().enumerate() {
            if key[..index].contains(column) {
                diagnostics.push(Diagnostic::new(
                    format!("options.key[{index}]"),
                    format!("column \"{column}\" is named twice"),
                ));
            }
        }
    } else if mode == WriteMode::Upsert {
        diagnostics.push(
            Diagnostic::new("options.key", "`mode: upsert` needs `key`")
                .suggest("list the columns that identify a row, e.g. `key: [id]`"),
        );
    }
    if options.batch_size == Some(0) {
        diagnostics.push(Diagnostic::new("options.batch_size", "must be at least 1"));
    }
    match (url, table) {
        (Some(url), Some(table)) if diagnostics.is_empty() => {
            Ok(Arc::new(PostgresSink::new(sink::SinkConfig {
                sink: request.name.to_owned(),
                url,
                table,
                mode,
                key: options.key.unwrap_or_default(),
                create_table: options.create_table.unwrap_or(false),
                batch_size: options.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            })))
        }
        _ => Err(diagnostics),
    }
}

/// Builds the PostgreSQL lookup table from its request: connects, reads the table's (or the
/// query's) columns for the schema unless one is declared, and checks the key.
pub fn build_lookup(request: &LookupRequest) -> Result<Arc<dyn LookupTable>, Vec<Diagnostic>> {
    let options = options::parse::<PostgresLookupOptions>(request.options, LOOKUP_OPTIONS, "options")?;
    let mut diagnostics = Vec::new();
    let url = connect_options(options.url.as_deref(), options.url_env.as_deref(), &mut diagnostics);
    let source = match (options.table.as_deref(), options.query.as_deref()) {
        (Some(_), Some(_)) => {
            diagnostics.push(Diagnostic::new("options.query", "give either `table` or `query`, not both"));
            None
        }
        (Some(table), None) => match TableName::parse(table) {
            Ok(table) => Some(lookup::Rows::Table(table)),
            Err(message) => {
                diagnostics.push(Diagnostic::new("options.table", message));
                None
            }
        },
        (None, Some(query)) if query.trim().is_empty() => {
            diagnostics.push(Diagnostic::new("options.query", "is empty"));
            None
        }
        (None, Some(query)) => Some(lookup::Rows::Query(query.trim().trim_end_matches(';').to_owned())),
        (None, None) => {
            diagnostics.push(
                Diagnostic::new("options.table", "missing required option \"table\"")
                    .suggest("name a table, or give a `query` whose rows are looked up in"),
            );
            None
        }
    };
    if options.key.is_none() {
        diagnostics.push(options::missing("options", "key"));
    }
    let cache = CacheSettings::check(options.cache.as_ref(), &mut diagnostics);
    let (Some(url), Some(source), Some(key)) = (url, source, options.key) else {
        return Err(diagnostics);
    };
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    let declared = request.schema.map(arrow_schema);
    let config = lookup::LookupConfig { url, source, key, declared, cache };
    PostgresLookup::open(config).map(|table| Arc::new(table) as Arc<dyn LookupTable>)
}

/// The connection options from `url` or the variable `url_env` names; problems are added to
/// `diagnostics`. Messages never quote the URL, which may hold a password.
fn connect_options(
    url: Option<&str>,
    url_env: Option<&str>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<PgConnectOptions> {
    let (text, path) = options::url_or_env(
        url,
        url_env,
        "database URL",
        "postgres://user@host:5432/db",
        "postgres://user:password@host:5432/db",
        diagnostics,
    )?;
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        diagnostics.push(
            Diagnostic::new(path, "not a PostgreSQL URL: it must start with postgres:// or postgresql://")
                .suggest("e.g. postgres://user@host:5432/db"),
        );
        return None;
    }
    match PgConnectOptions::from_str(&text) {
        Ok(options) => Some(options.application_name("sluice")),
        Err(error) => {
            diagnostics.push(Diagnostic::new(path, format!("not a valid PostgreSQL URL: {error}")));
            None
        }
    }
}

/// `postgres://user@host:port/database`: the URL without its password, for messages and logs.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

/// A table name, `name` or `schema.name`, quoted for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    /// Splits `text` at its dot, if any; both parts are used exactly as written.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let valid = |part: &str| !part.is_empty() && !part.contains('\0');
        match parts.as_slice() {
            [name] if valid(name) => Ok(Self { schema: None, name: (*name).to_owned() }),
            [schema, name] if valid(schema) && valid(name) => {
                Ok(Self { schema: Some((*schema).to_owned()), name: (*name).to_owned() })
            }
            _ => Err(format!("\"{text}\" is not a table name; write `name` or `schema.name`")),
        }
    }

    /// The name quoted for SQL: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.name)),
            None => quote(&self.name),
        }
    }

    /// Another table in the same schema.
    fn sibling(&self, name: &str) -> TableName {
        TableName { schema: self.schema.clone(), name: name.to_owned() }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `"name"`, with inner quotes doubled.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection pool with the runtime that drives it, for callers that are not async.
pub(crate) struct Database {
    runtime: Option<tokio::runtime::Runtime>,
    pool: PgPool,
    /// The URL without its password.
    pub(crate) address: String,
}

impl Database {
    /// Starts a runtime and connects up to `max_connections` connections (one at once, to
    /// fail early with a clear message if the database cannot be reached).
    pub(crate) fn connect(options: &PgConnectOptions, max_connections: u32) -> Result<Self> {
        let address = describe(options);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::external("starting the PostgreSQL client runtime", e))?;
        // One connection first: the pool would retry until its timeout, this fails at once.
        let first = block_on(&runtime, options.connect()).map_err(|e| {
            Error::external(
                format!("cannot connect to PostgreSQL at {address}; check that it runs and the URL is right"),
                e,
            )
        })?;
        let pool = {
            let _inside = runtime.enter();
            PgPoolOptions::new()
                .max_connections(max_connections)
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy_with(options.clone())
        };
        drop(first);
        Ok(Self { runtime: Some(runtime), pool, address })
    }

    /// The pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `future` to completion on this database's runtime, blocking the calling thread.
    pub(crate) fn run<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let Some(runtime) = &self.runtime else {
            return Err(Error::internal("the PostgreSQL runtime was used after being shut down"));
        };
        Ok(block_on(runtime, future))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Never blocks, so it is safe wherever the last handle goes, even inside a runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Blocks on `future`; from inside another runtime (where blocking on this one would panic),
/// through a scoped thread.
pub(crate) fn block_on<F>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(future);
    }
    std::thread::scope(|scope| match scope.spawn(|| runtime.block_on(future)).join() {
        Ok(output) => output,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A database error as a runtime error: what PostgreSQL said (with its detail and hint) is the
/// user's to fix, unless it is about connections, resources or concurrency, where a retry may
/// help.
pub(crate) fn database_error(context: impl Into<String>, error: sqlx::Error) -> Error {
    let context = context.into();
    let sqlx::Error::Database(database) = &error else {
        return Error::external(context, error);
    };
    let code = database.code().map(|code| code.into_owned()).unwrap_or_default();
    let mut message = format!("{context}: PostgreSQL says: {}", database.message());
    if let Some(postgres) = database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        if let Some(detail) = postgres.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = postgres.hint() {
            message.push_str(&format!("; {hint}"));
        }
    }
    // Connection exceptions, transaction rollbacks (serialization, deadlock), insufficient
    // resources, operator intervention, system errors.
    if ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class)) {
        Error::external(message, error)
    } else {
        Error::user(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_split_and_quoted() {
        assert_eq!(TableName::parse("orders").unwrap().quoted(), "\"orders\"");
        assert_eq!(TableName::parse("Sales.my\"t").unwrap().quoted(), "\"Sales\".\"my\"\"t\"");
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a.").is_err());
        assert!(TableName::parse("").is_err());
    }

    #[test]
    fn addresses_never_show_the_password() {
        let options = PgConnectOptions::from_str("postgres://ann:s3cret@db.example:6543/sales").unwrap();
        assert_eq!(describe(&options), "postgres://ann@db.example:6543/sales");
    }
}
