//! [`LookupJoin`]: enriches each row of a stream with the row of a [`LookupTable`] whose key
//! equals the row's join key. Keys are looked up once per batch (distinct keys only) through a
//! per-instance cache, so a hot key costs one lookup per [`LookupTable::reuse_for`] (60 s unless
//! the table says otherwise; a table that caches on its own says zero); misses are cached too.
//! The cache is not state: a restarted worker simply looks keys up again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::DataType;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, Join};
use sluice_runtime::processor::{LookupTable, Processor};
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use super::output::{Output, take_rows};
use super::{KeyExprs, Side, diagnostic, failed, through_side};
use crate::SqlLookup;
use crate::diagnose::Context;

/// How many keys one instance's cache holds; when full, the less recently used half goes.
pub(crate) const CACHE_CAPACITY: usize = 100_000;

/// A planned lookup join; shared by every worker's instance.
pub(crate) struct LookupJoinPlan {
    sides: [Side; 2],
    stream: usize,
    table: Arc<dyn LookupTable>,
    /// The join key that the table's key column equals, over the stream side's schema.
    probe: Arc<dyn datafusion::physical_expr::PhysicalExpr>,
    key_type: DataType,
    keys: KeyExprs,
    outer: bool,
    output: Output,
}

impl LookupJoinPlan {
    /// Plans a lookup join of side `stream` of `join` with `lookup` on the other side.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        join: &Join,
        sides: [Side; 2],
        stream: usize,
        lookup: &SqlLookup,
        keys: KeyExprs,
        outer: bool,
        output: Output,
        at: &Context<'_>,
    ) -> Result<Self, Vec<Diagnostic>> {
        let table = &lookup.source;
        let key_column = table.key_column().to_owned();
        let table_plan = if stream == 0 { &join.right } else { &join.left };
        let pair = join.on.iter().position(|(left, right)| {
            let key = if stream == 0 { right } else { left };
            let over_table = through_side(key.clone(), table_plan).ok().flatten();
            let column = match &over_table {
                Some(Expr::Cast(cast)) => cast.expr.as_ref(),
                Some(expr) => expr,
                None => return false,
            };
            matches!(column, Expr::Column(c) if c.name == key_column)
        });
        let Some(pair) = pair else {
            let message = format!(
                "a lookup join must match the key column \"{key_column}\" of lookup table \"{}\" \
                 with an equality in ON",
                lookup.table
            );
            return Err(vec![
                diagnostic(at, message, &["ON"])
                    .suggest(format!("add ON <stream column> = <alias>.{key_column}")),
            ]);
        };
        let key_type = match table.schema().field_with_name(&key_column) {
            Ok(field) => field.data_type().clone(),
            Err(_) => {
                let message = format!("lookup table \"{}\" has no key column \"{key_column}\"", lookup.table);
                return Err(vec![diagnostic(at, message, &[])]);
            }
        };
        let probe = Arc::clone(&keys[stream][pair]);
        Ok(Self { sides, stream, table: Arc::clone(table), probe, key_type, keys, outer, output })
    }
}

struct Cached {
    /// The table's row for the key, `None` when it has none.
    row: Option<RecordBatch>,
    loaded: Instant,
    used: u64,
}

/// One worker's instance of a lookup join.
pub(crate) struct LookupJoin {
    plan: Arc<LookupJoinPlan>,
    probe_converter: RowConverter,
    cache: HashMap<OwnedRow, Cached>,
    tick: u64,
}

impl LookupJoin {
    pub(crate) fn new(plan: Arc<LookupJoinPlan>) -> Self {
        let probe_converter = RowConverter::new(vec![SortField::new(plan.key_type.clone())])
            .expect("invariant: a lookup key column has a type Arrow's row format supports");
        Self { plan, probe_converter, cache: HashMap::new(), tick: 0 }
    }

    /// The table's rows for the distinct keys of `probe`, through the cache.
    fn table_rows(&mut self, probe: &ArrayRef) -> Result<Option<RecordBatch>> {
        let converted = |e| failed("lookup key", &DataFusionError::from(e));
        let keys = self.probe_converter.convert_columns(std::slice::from_ref(probe)).map_err(converted)?;
        self.tick += 1;
        let now = Instant::now();
        let reuse_for = self.plan.table.reuse_for();
        let mut seen = std::collections::HashSet::new();
        let mut missing = Vec::new();
        let mut rows = Vec::new();
        for index in 0..probe.len() {
            if probe.is_null(index) || !seen.insert(keys.row(index)) {
                continue;
            }
            match self.cache.get_mut(&keys.row(index).owned()) {
                Some(cached) if now.duration_since(cached.loaded) < reuse_for => {
                    cached.used = self.tick;
                    rows.extend(cached.row.clone());
                }
                _ => missing.push(index as u32),
            }
        }
        if !missing.is_empty() {
            let wanted = take(probe, &UInt32Array::from(missing.clone()), None).map_err(converted)?;
            let found = self.plan.table.lookup(wanted.as_ref())?;
            let key_column = found
                .column_by_name(self.plan.table.key_column())
                .ok_or_else(|| Error::internal("lookup table returned rows without its key column"))?;
            let key_column = cast(key_column, &self.plan.key_type).map_err(converted)?;
            let found_keys = self.probe_converter.convert_columns(&[key_column]).map_err(converted)?;
            let by_key: HashMap<_, usize> = (0..found.num_rows()).map(|i| (found_keys.row(i), i)).collect();
            let cached = !reuse_for.is_zero();
            if cached {
                self.make_room(missing.len());
            }
            for index in missing {
                let key = keys.row(index as usize);
                let row = by_key.get(&key).map(|i| found.slice(*i, 1));
                rows.extend(row.clone());
                if cached {
                    self.cache.insert(key.owned(), Cached { row, loaded: now, used: self.tick });
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        concat_batches(&self.plan.table.schema(), &rows).map(Some).map_err(converted)
    }

    /// Evicts the less recently used half of the cache if `adding` more keys would overflow it.
    fn make_room(&mut self, adding: usize) {
        if self.cache.len() + adding <= CACHE_CAPACITY {
            return;
        }
        let mut ticks: Vec<u64> = self.cache.values().map(|c| c.used).collect();
        let middle = ticks.len() / 2;
        let (_, median, _) = ticks.select_nth_unstable(middle);
        let median = *median;
        self.cache.retain(|_, cached| cached.used > median);
    }

    fn join_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let plan = Arc::clone(&self.plan);
        let (stream, table) = (plan.stream, 1 - plan.stream);
        let error = |e: DataFusionError| failed("SQL lookup join", &e);
        let probe =
            plan.probe.evaluate(&batch).and_then(|v| v.into_array(batch.num_rows())).map_err(error)?;
        let probe = cast(&probe, &plan.key_type).map_err(|e| error(e.into()))?;
        let mut matched = vec![false; batch.num_rows()];
        if let Some(found) = self.table_rows(&probe)? {
            let mut table_rows = Vec::new();
            for rows in self.plan.sides[table].rows(&found)? {
                table_rows.push(rows);
            }
            for rows in table_rows {
                self.emit_matches(&batch, &rows, &mut matched, out).map_err(error)?;
            }
        }
        if plan.outer {
            let unmatched: Vec<u32> =
                (0..batch.num_rows() as u32).filter(|r| !matched[*r as usize]).collect();
            if !unmatched.is_empty() {
                let columns = take_rows(&batch, &unmatched).map_err(error)?;
                let joined = plan.output.unmatched(stream, columns).map_err(error)?;
                plan.output.emit(joined, out).map_err(error)?;
            }
        }
        Ok(())
    }

    /// Joins stream rows `batch` with table rows `rows` on every key equality.
    fn emit_matches(
        &self,
        batch: &RecordBatch,
        rows: &RecordBatch,
        matched: &mut [bool],
        out: &mut Vec<RecordBatch>,
    ) -> DfResult<()> {
        let plan = &*self.plan;
        let (stream, table) = (plan.stream, 1 - plan.stream);
        let evaluate = |side: usize, batch: &RecordBatch| {
            plan.keys[side]
                .iter()
                .map(|key| key.evaluate(batch)?.into_array(batch.num_rows()))
                .collect::<DfResult<Vec<ArrayRef>>>()
        };
        let stream_keys = evaluate(stream, batch)?;
        let mut table_keys = evaluate(table, rows)?;
        for (table_key, stream_key) in table_keys.iter_mut().zip(&stream_keys) {
            if table_key.data_type() != stream_key.data_type() {
                *table_key = cast(table_key, stream_key.data_type())?;
            }
        }
        let fields = stream_keys.iter().map(|k| SortField::new(k.data_type().clone())).collect();
        let converter = RowConverter::new(fields)?;
        let (probe_rows, build_rows) =
            (converter.convert_columns(&stream_keys)?, converter.convert_columns(&table_keys)?);
        let nulls = |keys: &[ArrayRef], row: usize| keys.iter().any(|k| k.is_null(row));
        let mut build: HashMap<_, Vec<u32>> = HashMap::new();
        for row in (0..rows.num_rows()).filter(|r| !nulls(&table_keys, *r)) {
            build.entry(build_rows.row(row)).or_default().push(row as u32);
        }
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for row in (0..batch.num_rows()).filter(|r| !nulls(&stream_keys, *r)) {
            for partner in build.get(&probe_rows.row(row)).into_iter().flatten() {
                left.push(row as u32);
                right.push(*partner);
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        let (mine, theirs) = (take_rows(batch, &left)?, take_rows(rows, &right)?);
        let joined =
            if stream == 0 { plan.output.pairs(mine, theirs)? } else { plan.output.pairs(theirs, mine)? };
        let mask = plan.output.residual(&joined)?;
        for (index, row) in left.iter().enumerate() {
            matched[*row as usize] |= mask.value(index);
        }
        plan.output.emit(arrow::compute::filter_record_batch(&joined, &mask)?, out)
    }
}

impl Processor for LookupJoin {
    fn output_schema(&self) -> arrow::datatypes::SchemaRef {
        self.plan.output.schema()
    }

    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let stream = self.plan.stream;
        if self.plan.sides[stream].input != input {
            return Ok(());
        }
        for rows in self.plan.sides[stream].rows(&batch)? {
            self.join_batch(rows, out)?;
        }
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn Processor> {
        Box::new(Self::new(Arc::clone(&self.plan)))
    }
}
