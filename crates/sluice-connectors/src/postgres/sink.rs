//! Writing to a PostgreSQL table.
//!
//! Without checkpoints, buffered rows are written at the end of every epoch, when `batch_size`
//! rows are buffered, and at the end, each time in one transaction: at-least-once.
//!
//! With checkpoints (exactly-once), rows are buffered until a checkpoint covers them.
//! [`SinkWriter::prepare`] returns them, Arrow IPC-encoded, so that they are saved inside the
//! checkpoint, together with those prepared for earlier checkpoints and not committed yet.
//! [`SinkWriter::commit`] writes each prepared set in one transaction that also inserts its row
//! `(run, worker, checkpoint)` into [`COMMITS_TABLE`]; a set whose row is already there was
//! written before and is skipped. After a crash, worker 0 of the next run commits every set the
//! restored checkpoint prepared the same way, so a set is written exactly once however often it
//! is replayed.
//!
//! `run` is a random id drawn by each writer when it opens: checkpoint ids alone would repeat
//! when a pipeline starts over without its checkpoints, and its new rows would then be taken for
//! rows already written.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};
use sluice_runtime::connector::{Sink, SinkContext, SinkWriter};
use sluice_runtime::{Error, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::types::{Prepared, Wire, column_type};
use super::{Database, TableName, WriteMode, database_error, quote};

/// The bookkeeping table (in the target table's schema) that records which prepared sets of
/// rows were written.
pub const COMMITS_TABLE: &str = "sluice_sink_commits";

/// The checked options of a PostgreSQL sink.
pub(crate) struct SinkConfig {
    pub sink: String,
    pub url: PgConnectOptions,
    pub table: TableName,
    pub mode: WriteMode,
    pub key: Vec<String>,
    pub create_table: bool,
    pub batch_size: usize,
}

/// The configured PostgreSQL sink, shared by all workers.
pub struct PostgresSink {
    config: SinkConfig,
    /// Connected and checked by the first writer to open.
    target: Mutex<Option<Arc<Target>>>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("PostgresSink")
            .field("table", &self.config.table)
            .field("mode", &self.config.mode)
            .finish()
    }
}

impl PostgresSink {
    pub(crate) fn new(config: SinkConfig) -> Self {
        Self { config, target: Mutex::new(None) }
    }

    /// The target, connected and checked against `schema` once per sink.
    fn target(&self, schema: &SchemaRef, checkpointing: bool) -> Result<Arc<Target>> {
        let mut slot = self
            .target
            .lock()
            .map_err(|_| Error::internal("a thread panicked while opening the PostgreSQL sink"))?;
        if let Some(target) = slot.as_ref() {
            if target.schema != *schema {
                return Err(Error::internal("writers of one PostgreSQL sink opened with different schemas"));
            }
            return Ok(target.clone());
        }
        let target = Arc::new(Target::open(&self.config, schema, checkpointing)?);
        *slot = Some(target.clone());
        Ok(target)
    }
}

impl Sink for PostgresSink {
    fn open(&self, context: SinkContext) -> Result<Box<dyn SinkWriter>> {
        let target = self.target(&context.schema, context.checkpointing)?;
        if context.checkpointing
            && context.worker.index == 0
            && let Some(states) = &context.restore
        {
            for (worker, bytes) in states.iter().enumerate() {
                let sets = decode_prepared(bytes).map_err(|error| {
                    Error::user(format!(
                        "cannot restore PostgreSQL sink \"{}\" from the checkpoint: what worker {worker} \
                         prepared is not a PostgreSQL sink's ({}); the checkpoint was taken with another \
                         sink, so start without it (--fresh)",
                        self.config.sink,
                        error.report()
                    ))
                })?;
                for set in sets {
                    target.commit_set(&set)?;
                }
            }
        }
        Ok(Box::new(PostgresWriter {
            target,
            worker: context.worker.index,
            checkpointing: context.checkpointing,
            run: format!("{:016x}", rand::random::<u64>()),
            buffer: Vec::new(),
            buffered_rows: 0,
            pending: Vec::new(),
            last_checkpoint: None,
        }))
    }
}

/// A table the stream was checked against, with the statements that write to it.
struct Target {
    db: Database,
    schema: SchemaRef,
    sink: String,
    table: TableName,
    wires: Vec<Wire>,
    /// `INSERT INTO t (...) SELECT ... FROM UNNEST(...) [ON CONFLICT ...]`.
    insert_sql: String,
    /// Indexes of the key columns, for upsert: rows of one statement must have distinct keys.
    upsert_key: Option<Vec<usize>>,
    /// `INSERT INTO sluice_sink_commits ... ON CONFLICT DO NOTHING`.
    record_sql: String,
    batch_size: usize,
}

impl Target {
    /// Connects, creates the tables it must, and checks the table against `schema`.
    fn open(config: &SinkConfig, schema: &SchemaRef, checkpointing: bool) -> Result<Self> {
        let db = Database::connect(&config.url, 8)?;
        let at = format!("PostgreSQL table {} at {}", config.table, db.address);
        let mut wires = Vec::new();
        let mut unsupported = Vec::new();
        for field in schema.fields() {
            match Wire::of(field.data_type()) {
                Some(wire) => wires.push(wire),
                None => unsupported.push(format!("\"{}\" ({})", field.name(), field.data_type())),
            }
        }
        if !unsupported.is_empty() {
            return Err(Error::user(format!(
                "{at}: cannot write columns of these types to PostgreSQL: {}; cast them in SQL first",
                unsupported.join(", ")
            )));
        }
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let missing_keys: Vec<&String> = config.key.iter().filter(|k| !names.contains(&k.as_str())).collect();
        if !missing_keys.is_empty() {
            return Err(Error::user(format!(
                "{at}: key column(s) {missing_keys:?} are not columns of the stream (its columns: {})",
                names.join(", ")
            )));
        }
        let commits = config.table.sibling(COMMITS_TABLE);
        let setup = setup_sql(config, schema, checkpointing, &commits);
        db.run(async {
            let mut tx = db.pool().begin().await?;
            // Creating tables concurrently (several processes) fails; take turns.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sluice postgres sink setup'))")
                .execute(&mut *tx)
                .await?;
            for statement in setup {
                sqlx::query(AssertSqlSafe(statement)).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?
        .map_err(|e| database_error(format!("{at}: creating tables"), e))?;
        let columns = table_columns(&db, &config.table).map_err(|e| e.context(&at))?;
        if columns.is_empty() {
            return Err(Error::user(format!(
                "{at} does not exist; create it, or set `create_table: true` to create it from the stream's schema"
            )));
        }
        check_columns(schema, &wires, &columns).map_err(|message| Error::user(format!("{at}: {message}")))?;
        if config.mode == WriteMode::Upsert {
            check_unique_key(&db, &config.table, &config.key).map_err(|e| e.context(&at))?;
        }
        let upsert_key = (config.mode == WriteMode::Upsert)
            .then(|| config.key.iter().filter_map(|k| names.iter().position(|n| n == k)).collect());
        Ok(Target {
            insert_sql: insert_sql(config, schema, &wires),
            record_sql: format!(
                "INSERT INTO {} (run, worker, checkpoint, sink, target, rows) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT DO NOTHING",
                commits.quoted()
            ),
            db,
            schema: schema.clone(),
            sink: config.sink.clone(),
            table: config.table.clone(),
            wires,
            upsert_key,
            batch_size: config.batch_size,
        })
    }

    /// Writes `batches` in one transaction.
    fn write_now(&self, batches: &[RecordBatch]) -> Result<()> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let chunks = self.chunks(batches)?;
        self.db
            .run(async {
                let mut tx = self.db.pool().begin().await?;
                for chunk in &chunks {
                    self.insert(&mut tx, chunk).await?;
                }
                tx.commit().await
            })?
            .map_err(|e| database_error(format!("writing {rows} rows to {}", self.table), e))
    }

    /// Writes a prepared set in one transaction with its row in the bookkeeping table, unless
    /// that row says it was written already. Returns whether it wrote.
    fn commit_set(&self, set: &PreparedSet) -> Result<bool> {
        let rows: usize = set.batches.iter().map(RecordBatch::num_rows).sum();
        let chunks = self.chunks(&set.batches)?;
        let written = self
            .db
            .run(async {
                let mut tx = self.db.pool().begin().await?;
                let recorded = sqlx::query(AssertSqlSafe(self.record_sql.as_str()))
                    .bind(&set.run)
                    .bind(set.worker as i64)
                    .bind(set.checkpoint as i64)
                    .bind(&self.sink)
                    .bind(self.table.to_string())
                    .bind(rows as i64)
                    .execute(&mut *tx)
                    .await?;
                if recorded.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for chunk in &chunks {
                    self.insert(&mut tx, chunk).await?;
                }
                tx.commit().await?;
                Ok(true)
            })?
            .map_err(|e| {
                database_error(
                    format!("writing the {rows} rows of checkpoint {} to {}", set.checkpoint, self.table),
                    e,
                )
            })?;
        if !written {
            tracing::debug!(sink = %self.sink, checkpoint = set.checkpoint, worker = set.worker, "rows already written");
        }
        Ok(written)
    }

    /// `batches` cut into statements of at most `batch_size` rows; for upsert, with the last
    /// row of each key only (a statement may not update a row twice).
    fn chunks(&self, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let mut chunks = Vec::new();
        for batch in batches {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let length = self.batch_size.min(batch.num_rows() - offset);
                let chunk = batch.slice(offset, length);
                chunks.push(match &self.upsert_key {
                    Some(key) => last_row_per_key(&chunk, key)?,
                    None => chunk,
                });
                offset += length;
            }
        }
        Ok(chunks)
    }

    async fn insert(&self, connection: &mut PgConnection, batch: &RecordBatch) -> sqlx::Result<()> {
        let prepared: Vec<Prepared> = match self
            .wires
            .iter()
            .zip(batch.columns())
            .map(|(wire, column)| Prepared::new(*wire, column))
            .collect::<Result<_>>()
        {
            Ok(prepared) => prepared,
            Err(error) => return Err(sqlx::Error::Encode(Box::new(error))),
        };
        let mut query = sqlx::query(AssertSqlSafe(self.insert_sql.as_str()));
        for column in &prepared {
            query = column.bind(query);
        }
        query.execute(connection).await.map(drop)
    }
}

/// The statements that create the bookkeeping table (with checkpoints) and the target table (if
/// asked).
fn setup_sql(
    config: &SinkConfig,
    schema: &SchemaRef,
    checkpointing: bool,
    commits: &TableName,
) -> Vec<String> {
    let mut statements = Vec::new();
    if checkpointing {
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (run text NOT NULL, worker bigint NOT NULL, checkpoint bigint NOT NULL, \
             sink text NOT NULL, target text NOT NULL, rows bigint NOT NULL, \
             committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run, worker, checkpoint))",
            commits.quoted()
        ));
    }
    if config.create_table {
        let mut columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|field| {
                let data_type = column_type(field.data_type()).unwrap_or_else(|| "text".into());
                let null = if field.is_nullable() { "" } else { " NOT NULL" };
                format!("{} {data_type}{null}", quote(field.name()))
            })
            .collect();
        if !config.key.is_empty() {
            let key: Vec<String> = config.key.iter().map(|k| quote(k)).collect();
            columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            config.table.quoted(),
            columns.join(", ")
        ));
    }
    statements
}

/// `INSERT INTO t (a, b) SELECT c0, c1 FROM UNNEST($1::int8[], $2::text[]) AS u(c0, c1)`, with
/// `ON CONFLICT (key) DO UPDATE` for upsert.
fn insert_sql(config: &SinkConfig, schema: &SchemaRef, wires: &[Wire]) -> String {
    let columns: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
    let values: Vec<String> = wires.iter().enumerate().map(|(i, w)| w.value_sql(&format!("c{i}"))).collect();
    let parameters: Vec<String> =
        wires.iter().enumerate().map(|(i, w)| format!("${}::{}", i + 1, w.array_type())).collect();
    let aliases: Vec<String> = (0..wires.len()).map(|i| format!("c{i}")).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS u({})",
        config.table.quoted(),
        columns.join(", "),
        values.join(", "),
        parameters.join(", "),
        aliases.join(", ")
    );
    if config.mode == WriteMode::Upsert {
        let key: Vec<String> = config.key.iter().map(|k| quote(k)).collect();
        let updates: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| !config.key.contains(f.name()))
            .map(|f| format!("{0} = EXCLUDED.{0}", quote(f.name())))
            .collect();
        if updates.is_empty() {
            sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")));
        } else {
            sql.push_str(&format!(" ON CONFLICT ({}) DO UPDATE SET {}", key.join(", "), updates.join(", ")));
        }
    }
    sql
}

/// A column of the target table.
#[derive(Debug, Clone)]
pub(crate) struct TableColumn {
    pub name: String,
    /// The type as `regtype` names it, without modifiers (`numeric`, `character varying`).
    pub base_type: String,
    /// The type with its modifiers (`numeric(12,2)`).
    pub formatted: String,
    pub not_null: bool,
    /// Whether it gets a value when an insert leaves it out (a default, identity or generated).
    pub has_default: bool,
}

/// The columns of `relation` (a quoted name or `pg_temp` view), in order; empty if it does not
/// exist.
pub(crate) async fn columns_of(
    connection: &mut PgConnection,
    relation: &str,
) -> sqlx::Result<Vec<TableColumn>> {
    let rows = sqlx::query(
        "SELECT a.attname::text, a.atttypid::regtype::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
         (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') \
         FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(relation)
    .fetch_all(&mut *connection)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(TableColumn {
                name: row.try_get(0)?,
                base_type: row.try_get(1)?,
                formatted: row.try_get(2)?,
                not_null: row.try_get(3)?,
                has_default: row.try_get(4)?,
            })
        })
        .collect()
}

fn table_columns(db: &Database, table: &TableName) -> Result<Vec<TableColumn>> {
    db.run(async {
        let mut connection = db.pool().acquire().await?;
        columns_of(&mut connection, &table.quoted()).await
    })?
    .map_err(|e| database_error("reading the table's columns", e))
}

/// Every mismatch between the stream and the table, in one message.
fn check_columns(schema: &SchemaRef, wires: &[Wire], columns: &[TableColumn]) -> Result<(), String> {
    let mut problems = Vec::new();
    for (field, wire) in schema.fields().iter().zip(wires) {
        match columns.iter().find(|c| c.name == *field.name()) {
            None => problems.push(format!("the table has no column \"{}\"", field.name())),
            Some(column) if !wire.fits(&column.base_type) => problems.push(format!(
                "column \"{}\" is {} in the table but {} in the stream (which needs {})",
                field.name(),
                column.formatted,
                field.data_type(),
                column_type(field.data_type()).unwrap_or_default()
            )),
            Some(_) => {}
        }
    }
    for column in columns {
        if column.not_null && !column.has_default && schema.field_with_name(&column.name).is_err() {
            problems.push(format!(
                "column \"{}\" is NOT NULL without a default, and the stream has no such column",
                column.name
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let table: Vec<String> = columns.iter().map(|c| format!("{} {}", c.name, c.formatted)).collect();
    Err(format!(
        "the table does not match the stream: {}. The table has ({}); change the table or the query",
        problems.join("; "),
        table.join(", ")
    ))
}

/// Upsert needs a primary key or unique index on exactly the key columns.
fn check_unique_key(db: &Database, table: &TableName, key: &[String]) -> Result<()> {
    let indexes: Vec<Vec<String>> = db
        .run(async {
            sqlx::query_scalar(
                "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL \
                 GROUP BY i.indexrelid",
            )
            .bind(table.quoted())
            .fetch_all(db.pool())
            .await
        })?
        .map_err(|e| database_error("reading the table's unique indexes", e))?;
    let mut wanted = key.to_vec();
    wanted.sort();
    if indexes.contains(&wanted) {
        return Ok(());
    }
    let key: Vec<String> = key.iter().map(|k| quote(k)).collect();
    Err(Error::user(format!(
        "`mode: upsert` needs a primary key or unique index on exactly ({0}), and the table has none; \
         add one: ALTER TABLE {1} ADD PRIMARY KEY ({0})",
        key.join(", "),
        table.quoted()
    )))
}

/// The rows of `batch` whose key (columns `key`) does not appear again later in it.
fn last_row_per_key(batch: &RecordBatch, key: &[usize]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = key.iter().map(|i| batch.column(*i).clone()).collect();
    let converter =
        RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())?;
    let rows = converter.convert_columns(&columns)?;
    let mut last = std::collections::HashMap::with_capacity(batch.num_rows());
    for index in 0..batch.num_rows() {
        last.insert(rows.row(index), index as u32);
    }
    if last.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    let mut keep: Vec<u32> = last.into_values().collect();
    keep.sort_unstable();
    Ok(take_record_batch(batch, &UInt32Array::from(keep))?)
}

/// Rows prepared for one checkpoint by one writer.
#[derive(Debug)]
struct PreparedSet {
    run: String,
    worker: usize,
    checkpoint: u64,
    batches: Vec<RecordBatch>,
}

/// The header of a prepared set in [`SinkWriter::prepare`]'s bytes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetHeader {
    run: String,
    worker: usize,
    checkpoint: u64,
    /// Length of the Arrow IPC stream that follows.
    bytes: u64,
}

/// Marks the bytes of prepared sets: `MAGIC`, then per set a u32 header length, the JSON
/// header, and the Arrow IPC stream of its rows.
const MAGIC: &[u8] = b"sluice-postgres-sink-1\n";

fn encode_prepared(sets: &[PreparedSet], schema: &SchemaRef) -> Result<Vec<u8>> {
    let mut out = MAGIC.to_vec();
    for set in sets {
        let mut ipc = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut ipc, schema)?;
            for batch in &set.batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        let header = SetHeader {
            run: set.run.clone(),
            worker: set.worker,
            checkpoint: set.checkpoint,
            bytes: ipc.len() as u64,
        };
        let header = serde_json::to_vec(&header)
            .map_err(|e| Error::internal(format!("encoding a prepared set's header: {e}")))?;
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&ipc);
    }
    Ok(out)
}

fn decode_prepared(bytes: &[u8]) -> Result<Vec<PreparedSet>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
        return Err(Error::user("it does not start with the PostgreSQL sink's marker"));
    };
    let truncated = || Error::user("it is truncated");
    let mut sets = Vec::new();
    while !rest.is_empty() {
        let length = rest.get(..4).ok_or_else(truncated)?;
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let header = rest.get(4..4 + length).ok_or_else(truncated)?;
        let header: SetHeader = serde_json::from_slice(header)
            .map_err(|e| Error::user(format!("a set's header is invalid: {e}")))?;
        let start = 4 + length;
        let end =
            usize::try_from(header.bytes).ok().and_then(|b| start.checked_add(b)).ok_or_else(truncated)?;
        let ipc = rest.get(start..end).ok_or_else(truncated)?;
        let reader = StreamReader::try_new(Cursor::new(ipc), None)?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        sets.push(PreparedSet {
            run: header.run,
            worker: header.worker,
            checkpoint: header.checkpoint,
            batches,
        });
        rest = &rest[end..];
    }
    Ok(sets)
}

struct PostgresWriter {
    target: Arc<Target>,
    worker: usize,
    checkpointing: bool,
    /// This writer's random id in the bookkeeping table.
    run: String,
    /// Rows not yet written (without checkpoints) or not yet prepared (with).
    buffer: Vec<RecordBatch>,
    buffered_rows: usize,
    /// Prepared and not yet committed, in checkpoint order.
    pending: Vec<PreparedSet>,
    last_checkpoint: Option<u64>,
}

impl PostgresWriter {
    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.target.write_now(&self.buffer)?;
        self.buffer.clear();
        self.buffered_rows = 0;
        Ok(())
    }
}

impl SinkWriter for PostgresWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.buffer.push(batch.clone());
        self.buffered_rows += batch.num_rows();
        if !self.checkpointing && self.buffered_rows >= self.target.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    fn epoch_complete(&mut self, _epoch: u64) -> Result<()> {
        if self.checkpointing { Ok(()) } else { self.flush() }
    }

    fn finish(&mut self) -> Result<()> {
        if !self.checkpointing {
            return self.flush();
        }
        // Normally nothing is left after the final commit; whatever is, is the end of the output.
        if self.buffer.is_empty() && self.pending.is_empty() {
            return Ok(());
        }
        let checkpoint = self.last_checkpoint.map_or(0, |c| c + 1);
        self.prepare(checkpoint)?;
        self.commit(checkpoint)
    }

    fn transactional(&self) -> bool {
        true
    }

    fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        if !self.checkpointing {
            return Err(Error::internal("prepare called on a PostgreSQL sink opened without checkpointing"));
        }
        if !self.buffer.is_empty() {
            self.pending.push(PreparedSet {
                run: self.run.clone(),
                worker: self.worker,
                checkpoint,
                batches: std::mem::take(&mut self.buffer),
            });
            self.buffered_rows = 0;
        }
        self.last_checkpoint = Some(checkpoint);
        encode_prepared(&self.pending, &self.target.schema)
    }

    fn commit(&mut self, checkpoint: u64) -> Result<()> {
        while self.pending.first().is_some_and(|set| set.checkpoint <= checkpoint) {
            // Removed only once written, so that a retry can finish the job.
            self.target.commit_set(&self.pending[0])?;
            self.pending.remove(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn upsert_statements_keep_the_last_row_of_each_key() {
        let kept = last_row_per_key(&batch(&[1, 2, 1, 3, 2], &["a", "b", "c", "d", "e"]), &[0]).unwrap();
        assert_eq!(kept, batch(&[1, 3, 2], &["c", "d", "e"]));
    }

    #[test]
    fn prepared_sets_survive_encoding() {
        let sets = vec![
            PreparedSet { run: "r1".into(), worker: 2, checkpoint: 7, batches: vec![batch(&[1], &["a"])] },
            PreparedSet {
                run: "r1".into(),
                worker: 2,
                checkpoint: 8,
                batches: vec![batch(&[2, 3], &["b", "c"])],
            },
        ];
        let bytes = encode_prepared(&sets, &batch(&[], &[]).schema()).unwrap();
        let decoded = decode_prepared(&bytes).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!((decoded[1].run.as_str(), decoded[1].worker, decoded[1].checkpoint), ("r1", 2, 8));
        assert_eq!(decoded[1].batches, sets[1].batches);
        assert!(decode_prepared(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode_prepared(b"{\"checkpoint\": 1}").is_err());
        assert!(decode_prepared(b"").unwrap().is_empty());
    }
}
