//! A PostgreSQL table (or the rows of a query) as a lookup table.
//!
//! The keys of one call are looked up with one statement (`WHERE key = ANY($1)`). Found rows,
//! and keys without a row, are cached for the configured time to live in one cache shared by
//! all workers; when it is full, expired entries go first, then the older half. The table tells
//! callers not to cache on top ([`LookupTable::reuse_for`] is zero), so a row is never older
//! than the time to live. When keys repeat in the table, the last row PostgreSQL returns wins;
//! rows with a null key are never matched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array, make_array};
use arrow::compute::{cast, take};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use sluice_runtime::processor::LookupTable;
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgConnectOptions;

use super::sink::columns_of;
use super::types::{Prepared, Read, Wire, arrow_type_of};
use super::{Database, TableName, database_error, quote};

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
    pub ttl: Duration,
    pub max_entries: usize,
}

/// A PostgreSQL table (or query) read by key.
pub struct PostgresLookup {
    db: Database,
    schema: SchemaRef,
    key: String,
    key_index: usize,
    key_wire: Wire,
    reads: Vec<Read>,
    select_sql: String,
    ttl: Duration,
    max_entries: usize,
    /// Encodes keys (the key column's type) for the cache.
    keys: RowConverter,
    /// Encodes whole rows for the cache.
    rows: RowConverter,
    cache: Mutex<HashMap<OwnedRow, Cached>>,
}

/// A cached row, or the knowledge that the key has none.
struct Cached {
    row: Option<OwnedRow>,
    loaded: Instant,
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
        let converter =
            |fields: Vec<SortField>| RowConverter::new(fields).map_err(|e| failed("schema", Error::from(e)));
        let keys = converter(vec![SortField::new(schema.field(key_index).data_type().clone())])?;
        let rows =
            converter(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        let select_sql = select_sql(&config, &schema, &reads, key_wire);
        Ok(Self {
            db,
            schema,
            key: config.key,
            key_index,
            key_wire,
            reads,
            select_sql,
            ttl: config.ttl,
            max_entries: config.max_entries,
            keys,
            rows,
            cache: Mutex::new(HashMap::new()),
        })
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

    /// Makes room for `adding` entries: drops expired ones, then the older half if needed.
    fn make_room(&self, cache: &mut HashMap<OwnedRow, Cached>, adding: usize, now: Instant) {
        if cache.len() + adding <= self.max_entries {
            return;
        }
        cache.retain(|_, cached| now.duration_since(cached.loaded) < self.ttl);
        if cache.len() + adding <= self.max_entries {
            return;
        }
        let mut loaded: Vec<Instant> = cache.values().map(|c| c.loaded).collect();
        let middle = loaded.len() / 2;
        let (_, median, _) = loaded.select_nth_unstable(middle);
        let median = *median;
        cache.retain(|_, cached| cached.loaded > median);
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
        let key_type = self.schema.field(self.key_index).data_type();
        let keys: ArrayRef = make_array(keys.to_data());
        let keys = if keys.data_type() == key_type {
            keys
        } else {
            cast(&keys, key_type).map_err(|e| {
                Error::user(format!(
                    "cannot look up keys of type {} in PostgreSQL, whose key \"{}\" is of type {key_type}: {e}",
                    keys.data_type(),
                    self.key
                ))
            })?
        };
        let encoded = self.keys.convert_columns(std::slice::from_ref(&keys))?;
        let now = Instant::now();
        let mut found: Vec<OwnedRow> = Vec::new();
        let mut missing: Vec<u32> = Vec::new();
        {
            let cache = self.cache.lock().map_err(|_| poisoned())?;
            let mut seen = std::collections::HashSet::new();
            for index in 0..keys.len() {
                if keys.is_null(index) || !seen.insert(encoded.row(index)) {
                    continue;
                }
                match cache.get(&encoded.row(index).owned()) {
                    Some(cached) if now.duration_since(cached.loaded) < self.ttl => {
                        found.extend(cached.row.clone());
                    }
                    _ => missing.push(index as u32),
                }
            }
        }
        if !missing.is_empty() {
            let wanted = take(&keys, &UInt32Array::from(missing.clone()), None)?;
            let fetched = self.fetch(&wanted)?;
            let fetched_keys = self.keys.convert_columns(&[fetched.column(self.key_index).clone()])?;
            let fetched_rows = self.rows.convert_columns(fetched.columns())?;
            // The last row of a repeated key wins.
            let by_key: HashMap<_, usize> =
                (0..fetched.num_rows()).map(|i| (fetched_keys.row(i), i)).collect();
            let mut cache = self.cache.lock().map_err(|_| poisoned())?;
            if !self.ttl.is_zero() {
                self.make_room(&mut cache, missing.len(), now);
            }
            for index in missing {
                let key = encoded.row(index as usize);
                let row = by_key.get(&key).map(|i| fetched_rows.row(*i).owned());
                found.extend(row.clone());
                if !self.ttl.is_zero() {
                    cache.insert(key.owned(), Cached { row, loaded: now });
                }
            }
        }
        let columns = self.rows.convert_rows(found.iter().map(OwnedRow::row))?;
        if columns.is_empty() || found.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn poisoned() -> Error {
    Error::internal("a thread panicked while holding the PostgreSQL lookup cache")
}
