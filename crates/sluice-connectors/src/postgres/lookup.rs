//! A PostgreSQL table (or the rows of a query) as a lookup table.
//!
//! The keys of one call that are not cached ([`LookupCache`]) are looked up with one statement
//! (`WHERE key = ANY($1)`). When keys repeat in the table, the last row PostgreSQL returns wins;
//! rows with a null key are never matched.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use sluice_runtime::processor::LookupTable;
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnectOptions;

use super::sink::columns_of;
use super::types::{Prepared, Read, Wire, arrow_type_of};
use super::{Database, TableName, database_error, quote};
use crate::lookup_cache::{CacheSettings, LookupCache};

/// Where looked-up rows come from.
#[derive(Debug, Clone)]
pub(crate) enum Rows {
    /// A table.
    Table(TableName),
    /// The rows of a `SELECT`.
    Query(String),
}

impl Rows {
    /// The SQL to select from.
    fn relation_sql(&self) -> String {
        match self {
            Rows::Table(table) => table.quoted(),
            Rows::Query(query) => format!("({query})"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Rows::Table(table) => format!("table {table}"),
            Rows::Query(_) => "the lookup query".to_owned(),
        }
    }
}

/// The checked options of a PostgreSQL lookup table.
pub(crate) struct LookupConfig {
    pub url: PgConnectOptions,
    pub source: Rows,
    pub key: String,
    /// The declared schema; read from the database when absent.
    pub declared: Option<SchemaRef>,
    pub cache: CacheSettings,
}

/// A PostgreSQL table (or query) read by key.
pub struct PostgresLookup {
    db: Database,
    schema: SchemaRef,
    key: String,
    key_wire: Wire,
    reads: Vec<Read>,
    select_sql: String,
    cache: LookupCache,
}

impl std::fmt::Debug for PostgresLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLookup").field("database", &self.db.address).field("key", &self.key).finish()
    }
}

impl PostgresLookup {
    /// Connects, reads the columns unless declared, and checks the key; problems are reported
    /// as diagnostics of the lookup node.
    pub(crate) fn open(config: LookupConfig) -> Result<Self, Vec<Diagnostic>> {
        let failed = |path: &str, error: Error| vec![Diagnostic::new(path, error.report())];
        let db = Database::connect(&config.url, 4).map_err(|e| failed("options.url", e))?;
        let inferred = infer_schema(&db, &config.source).map_err(|e| {
            let path =
                if matches!(config.source, Rows::Query(_)) { "options.query" } else { "options.table" };
            failed(path, e)
        })?;
        let schema = match &config.declared {
            None => inferred.clone(),
            Some(declared) => declared.clone(),
        };
        let mut diagnostics = Vec::new();
        let available: Vec<&str> = inferred.fields().iter().map(|f| f.name().as_str()).collect();
        let mut reads = Vec::new();
        for (index, field) in schema.fields().iter().enumerate() {
            if !available.contains(&field.name().as_str()) {
                diagnostics.push(
                    Diagnostic::new(
                        format!("schema[{index}]"),
                        format!("{} has no column \"{}\"", config.source.describe(), field.name()),
                    )
                    .suggest_closest(field.name(), available.iter().copied()),
                );
            }
            match Read::of(field.data_type()) {
                Some(read) => reads.push(read),
                None => diagnostics.push(Diagnostic::new(
                    format!("schema[{index}]"),
                    format!("a PostgreSQL lookup table cannot read columns of type {}", field.data_type()),
                )),
            }
        }
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let key_index = names.iter().position(|name| *name == config.key);
        let key_wire = key_index.and_then(|i| Wire::of(schema.field(i).data_type()));
        match (key_index, key_wire) {
            (None, _) => diagnostics.push(
                Diagnostic::new("options.key", format!("unknown column \"{}\"", config.key))
                    .suggest_closest(&config.key, names.iter().copied()),
            ),
            (Some(index), None) => diagnostics.push(Diagnostic::new(
                "options.key",
                format!("a key of type {} cannot be looked up", schema.field(index).data_type()),
            )),
            _ => {}
        }
        let (Some(key_index), Some(key_wire)) = (key_index, key_wire) else {
            return Err(diagnostics);
        };
        if !diagnostics.is_empty() {
            return Err(diagnostics);
        }
        let cache =
            LookupCache::new(schema.clone(), key_index, config.cache).map_err(|e| failed("schema", e))?;
        let select_sql = select_sql(&config, &schema, &reads, key_wire);
        Ok(Self { db, schema, key: config.key, key_wire, reads, select_sql, cache })
    }

    /// The rows of the distinct `keys`, straight from the database.
    fn fetch(&self, keys: &ArrayRef) -> Result<RecordBatch> {
        let prepared = Prepared::new(self.key_wire, keys)?;
        let rows = self
            .db
            .run(async {
                let query = prepared.bind(sqlx::query(AssertSqlSafe(self.select_sql.as_str())));
                query.fetch_all(self.db.pool()).await
            })?
            .map_err(|e| database_error(format!("looking up {} keys", keys.len()), e))?;
        let columns = self
            .reads
            .iter()
            .zip(self.schema.fields())
            .enumerate()
            .map(|(index, (read, field))| {
                read.column(&rows, index, field.data_type())
                    .map_err(|e| e.context(format!("column \"{}\"", field.name())))
            })
            .collect::<Result<Vec<_>>>()?;
        // Declared non-nullable columns may still hold nulls in the database: check, don't trust.
        let schema = Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(schema, columns)?;
        RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(|e| {
            Error::user(format!("a looked-up row has a null in a column declared `nullable: false`: {e}"))
        })
    }
}

/// `SELECT <reads> FROM <source> AS q WHERE q.key = ANY($1::T[])`.
fn select_sql(config: &LookupConfig, schema: &SchemaRef, reads: &[Read], key_wire: Wire) -> String {
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .zip(reads)
        .map(|(field, read)| read.select_sql(&format!("q.{}", quote(field.name()))))
        .collect();
    let parameter = format!("$1::{}", key_wire.array_type());
    let keys = match key_wire.value_sql("k") {
        same if same == "k" => parameter,
        value => format!("ARRAY(SELECT {value} FROM UNNEST({parameter}) AS u(k))"),
    };
    format!(
        "SELECT {} FROM {} AS q WHERE q.{} = ANY({keys})",
        columns.join(", "),
        config.source.relation_sql(),
        quote(&config.key)
    )
}

/// The columns of the table or query, as Arrow fields.
fn infer_schema(db: &Database, source: &Rows) -> Result<SchemaRef> {
    let columns = db
        .run(async {
            let mut tx = db.pool().begin().await?;
            let relation = match source {
                Rows::Table(table) => table.quoted(),
                Rows::Query(query) => {
                    // A temporary view shows the query's column types; rolled back below.
                    sqlx::query(AssertSqlSafe(format!(
                        "CREATE TEMPORARY VIEW sluice_lookup_probe AS {query}"
                    )))
                    .execute(&mut *tx)
                    .await?;
                    "pg_temp.sluice_lookup_probe".to_owned()
                }
            };
            let columns = columns_of(&mut tx, &relation).await?;
            tx.rollback().await?;
            Ok::<_, sqlx::Error>(columns)
        })?
        .map_err(|e| database_error(format!("reading the columns of {}", source.describe()), e))?;
    if columns.is_empty() {
        return Err(Error::user(format!(
            "{} does not exist (or has no columns) at {}",
            source.describe(),
            db.address
        )));
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, arrow_type_of(&c.base_type, &c.formatted), !c.not_null))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

impl LookupTable for PostgresLookup {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn key_column(&self) -> &str {
        &self.key
    }

    fn reuse_for(&self) -> Duration {
        Duration::ZERO
    }

    fn lookup(&self, keys: &dyn Array) -> Result<RecordBatch> {
        self.cache.lookup("PostgreSQL", keys, |missing| self.fetch(missing))
    }
}
