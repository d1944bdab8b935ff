//! Grouping state: [`KeyIndex`] gives each distinct key (a row of the GROUP BY key columns in
//! Arrow's row format) a dense id, and [`AccumulatorSet`] holds DataFusion's
//! `GroupsAccumulator`s of every aggregate for dense group ids. Both work a batch at a time:
//! one row conversion, one hash pass and one `update_batch` per aggregate, with no allocation
//! per row.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use arrow::compute::take;
use arrow::row::{Row, RowConverter, Rows};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

/// No group.
pub(crate) const NONE: u32 = u32::MAX;

/// The keys are hashes already; hashing them again would waste time.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Dense ids for distinct keys, with each key's hash (which decides its key group).
pub(crate) struct KeyIndex {
    /// First id with a given hash; later ones are chained through `next`.
    first: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    next: Vec<u32>,
    hashes: Vec<u64>,
    rows: Rows,
}

impl KeyIndex {
    /// An empty index for keys converted by `converter`.
    pub(crate) fn new(converter: &RowConverter) -> Self {
        Self {
            first: HashMap::default(),
            next: Vec::new(),
            hashes: Vec::new(),
            rows: converter.empty_rows(0, 0),
        }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The id of `row` (with hash `hash`), added if new.
    pub(crate) fn intern(&mut self, hash: u64, row: Row<'_>) -> u32 {
        let mut id = self.first.get(&hash).copied().unwrap_or(NONE);
        while id != NONE {
            if self.rows.row(id as usize) == row {
                return id;
            }
            id = self.next[id as usize];
        }
        let id = self.hashes.len() as u32;
        let previous = self.first.insert(hash, id).unwrap_or(NONE);
        self.next.push(previous);
        self.hashes.push(hash);
        self.rows.push(row);
        id
    }

    /// The hash of key `id`.
    pub(crate) fn hash(&self, id: u32) -> u64 {
        self.hashes[id as usize]
    }

    /// The row of key `id`.
    pub(crate) fn row(&self, id: u32) -> Row<'_> {
        self.rows.row(id as usize)
    }

    /// Keeps the keys whose `keep` is true, renumbered densely in order.
    pub(crate) fn retain(&mut self, converter: &RowConverter, keep: &[bool]) {
        let mut kept = KeyIndex::new(converter);
        for id in (0..self.len()).filter(|id| keep[*id]) {
            kept.intern(self.hashes[id], self.rows.row(id));
        }
        *self = kept;
    }

    /// Approximate memory use in bytes.
    pub(crate) fn size(&self) -> usize {
        self.rows.size() + self.hashes.capacity() * 12 + self.first.capacity() * 16
    }
}

/// The aggregates of a query: how to make their accumulators, and which columns of the
/// pre-aggregation batch are each one's arguments.
pub(crate) struct Aggregates {
    /// One per aggregate, in output order.
    pub(crate) exprs: Vec<Arc<AggregateFunctionExpr>>,
    /// For each aggregate, its argument columns in the pre-aggregation batch.
    pub(crate) arguments: Vec<Vec<usize>>,
}

impl Aggregates {
    fn accumulator(expr: &Arc<AggregateFunctionExpr>) -> DfResult<Box<dyn GroupsAccumulator>> {
        if expr.groups_accumulator_supported() {
            expr.create_groups_accumulator()
        } else {
            let expr = Arc::clone(expr);
            Ok(Box::new(GroupsAccumulatorAdapter::new(move || expr.create_accumulator())))
        }
    }

    /// Fresh accumulators, one per aggregate.
    pub(crate) fn create(self: &Arc<Self>) -> DfResult<AccumulatorSet> {
        let accumulators = self.exprs.iter().map(Self::accumulator).collect::<DfResult<_>>()?;
        Ok(AccumulatorSet { aggregates: Arc::clone(self), accumulators, groups: 0 })
    }

    /// Number of state columns of all aggregates together.
    pub(crate) fn state_width(&self) -> DfResult<usize> {
        self.exprs.iter().map(|expr| expr.state_fields().map(|f| f.len())).sum()
    }

    /// State fields of all aggregates together.
    pub(crate) fn state_fields(&self) -> DfResult<Vec<arrow::datatypes::FieldRef>> {
        let mut fields = Vec::new();
        for expr in &self.exprs {
            fields.extend(expr.state_fields()?);
        }
        Ok(fields)
    }
}

/// The accumulators of every aggregate over the same dense group ids.
pub(crate) struct AccumulatorSet {
    aggregates: Arc<Aggregates>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    groups: usize,
}

impl AccumulatorSet {
    /// Adds the rows of `batch` (the pre-aggregation batch) where `filter` is true (all rows
    /// when `None`) to the groups in `group_indices` (one per row).
    pub(crate) fn update(
        &mut self,
        columns: &[ArrayRef],
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        groups: usize,
    ) -> DfResult<()> {
        self.groups = self.groups.max(groups);
        let mut values = Vec::new();
        for (accumulator, arguments) in self.accumulators.iter_mut().zip(&self.aggregates.arguments) {
            values.clear();
            values.extend(arguments.iter().map(|column| Arc::clone(&columns[*column])));
            accumulator.update_batch(&values, group_indices, filter, self.groups)?;
        }
        Ok(())
    }

    /// The final values of every group, leaving the set empty.
    pub(crate) fn evaluate_all(&mut self) -> DfResult<Vec<ArrayRef>> {
        self.groups = 0;
        self.accumulators.iter_mut().map(|a| a.evaluate(EmitTo::All)).collect()
    }

    /// The state of every group (all aggregates' state columns side by side), keeping it.
    pub(crate) fn state(&mut self) -> DfResult<Vec<ArrayRef>> {
        let state = self.take_state()?;
        self.merge(&state, &(0..self.groups).collect::<Vec<_>>(), self.groups)?;
        Ok(state)
    }

    fn take_state(&mut self) -> DfResult<Vec<ArrayRef>> {
        let mut state = Vec::new();
        for accumulator in &mut self.accumulators {
            state.extend(accumulator.state(EmitTo::All)?);
        }
        Ok(state)
    }

    /// Merges state columns (as [`AccumulatorSet::state`] returns them) into the groups in
    /// `group_indices` (one per state row).
    pub(crate) fn merge(
        &mut self,
        state: &[ArrayRef],
        group_indices: &[usize],
        groups: usize,
    ) -> DfResult<()> {
        self.groups = self.groups.max(groups);
        let mut offset = 0;
        for (accumulator, expr) in self.accumulators.iter_mut().zip(&self.aggregates.exprs) {
            let width = expr.state_fields()?.len();
            accumulator.merge_batch(&state[offset..offset + width], group_indices, self.groups)?;
            offset += width;
        }
        Ok(())
    }

    /// The final values of the groups `groups`, in that order, keeping every group.
    pub(crate) fn values_of(&mut self, groups: &[u32]) -> DfResult<Vec<ArrayRef>> {
        if groups.len() == self.groups && groups.iter().enumerate().all(|(i, g)| *g as usize == i) {
            let state = self.state()?;
            let mut copy = self.aggregates.create()?;
            copy.merge(&state, &(0..self.groups).collect::<Vec<_>>(), self.groups)?;
            return copy.evaluate_all();
        }
        let state = self.state()?;
        let indices = UInt32Array::from(groups.to_vec());
        let picked =
            state.iter().map(|column| take(column, &indices, None)).collect::<Result<Vec<_>, _>>()?;
        let mut copy = self.aggregates.create()?;
        copy.merge(&picked, &(0..groups.len()).collect::<Vec<_>>(), groups.len())?;
        copy.evaluate_all()
    }

    /// Renumbers the groups: group `g` becomes `mapping[g]` (groups mapped to the same id are
    /// merged; [`NONE`] drops the group); `groups` is the new number of groups.
    pub(crate) fn remap(&mut self, mapping: &[u32], groups: usize) -> DfResult<()> {
        let state = self.take_state()?;
        let kept: Vec<u32> = (0..mapping.len() as u32).filter(|g| mapping[*g as usize] != NONE).collect();
        let targets: Vec<usize> = kept.iter().map(|g| mapping[*g as usize] as usize).collect();
        let indices = UInt32Array::from(kept);
        let picked =
            state.iter().map(|column| take(column, &indices, None)).collect::<Result<Vec<_>, _>>()?;
        let mut fresh = self.aggregates.create()?;
        fresh.merge(&picked, &targets, groups)?;
        fresh.groups = groups;
        *self = fresh;
        Ok(())
    }

    /// Approximate memory use in bytes.
    pub(crate) fn size(&self) -> usize {
        self.accumulators.iter().map(|a| a.size()).sum()
    }
}
