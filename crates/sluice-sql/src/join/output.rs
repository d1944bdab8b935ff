//! What happens to matched pairs: the residual join condition, then the filters and projections
//! written above the join, all evaluated a batch at a time with physical expressions.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array, new_null_array,
};
use arrow::compute::{filter_record_batch, prep_null_mask_filter, take};
use arrow::datatypes::SchemaRef;
use datafusion::common::Result as DfResult;
use datafusion::common::cast::as_boolean_array;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Join, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;

/// A filter or projection above the join.
enum Step {
    Filter(Arc<dyn PhysicalExpr>),
    Project { exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef },
}

/// Turns pairs of rows into output rows.
pub(crate) struct Output {
    /// Both sides' columns, left first, as DataFusion's join schema has them.
    joined: SchemaRef,
    /// How many of `joined`'s columns belong to the left side.
    left_columns: usize,
    /// The join condition beyond the key equalities.
    residual: Option<Arc<dyn PhysicalExpr>>,
    /// Filters and projections above the join, innermost first.
    steps: Vec<Step>,
    /// Schema of the processor's output.
    schema: SchemaRef,
}

impl Output {
    /// Plans the residual of `join` and the nodes `top` above it (outermost first).
    pub(crate) fn plan(state: &SessionState, join: &Join, top: &[&LogicalPlan]) -> DfResult<Self> {
        let residual = match &join.filter {
            Some(filter) => Some(state.create_physical_expr(filter.clone(), &join.schema)?),
            None => None,
        };
        let mut steps = Vec::new();
        for node in top.iter().rev() {
            match node {
                LogicalPlan::Filter(filter) => {
                    steps.push(Step::Filter(
                        state.create_physical_expr(filter.predicate.clone(), filter.input.schema())?,
                    ));
                }
                LogicalPlan::Projection(projection) => {
                    let exprs = projection
                        .expr
                        .iter()
                        .map(|e| state.create_physical_expr(e.clone(), projection.input.schema()))
                        .collect::<DfResult<_>>()?;
                    steps.push(Step::Project { exprs, schema: Arc::new(node.schema().as_arrow().clone()) });
                }
                _ => {}
            }
        }
        let joined = Arc::new(join.schema.as_arrow().clone());
        let schema = match top.first() {
            Some(node) => Arc::new(node.schema().as_arrow().clone()),
            None => Arc::clone(&joined),
        };
        let left_columns = join.left.schema().fields().len();
        Ok(Self { joined, left_columns, residual, steps, schema })
    }

    /// Schema of the processor's output.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// A batch of joined rows from each side's columns (the same number of rows).
    pub(crate) fn pairs(&self, left: Vec<ArrayRef>, right: Vec<ArrayRef>) -> DfResult<RecordBatch> {
        let rows = left.first().or(right.first()).map_or(0, |c| c.len());
        let mut columns = left;
        columns.extend(right);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(Arc::clone(&self.joined), columns, &options)?)
    }

    /// Joined rows of side `side`'s `columns` with NULLs for the other side.
    pub(crate) fn unmatched(&self, side: usize, columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
        let rows = columns.first().map_or(0, |c| c.len());
        let fields = self.joined.fields();
        let (left, right) = fields.split_at(self.left_columns);
        let nulls = |fields: &[arrow::datatypes::FieldRef]| {
            fields.iter().map(|f| new_null_array(f.data_type(), rows)).collect::<Vec<_>>()
        };
        match side {
            0 => self.pairs(columns, nulls(right)),
            _ => self.pairs(nulls(left), columns),
        }
    }

    /// Which pairs of `joined` satisfy the residual condition (NULL counts as false).
    pub(crate) fn residual(&self, joined: &RecordBatch) -> DfResult<BooleanArray> {
        let Some(residual) = &self.residual else {
            return Ok(BooleanArray::from(vec![true; joined.num_rows()]));
        };
        let mask = residual.evaluate(joined)?.into_array(joined.num_rows())?;
        let mask = as_boolean_array(&mask)?;
        Ok(if mask.null_count() > 0 { prep_null_mask_filter(mask) } else { mask.clone() })
    }

    /// Runs the steps above the join on `joined` and appends the result to `out` if not empty.
    pub(crate) fn emit(&self, mut batch: RecordBatch, out: &mut Vec<RecordBatch>) -> DfResult<()> {
        for step in &self.steps {
            if batch.num_rows() == 0 {
                return Ok(());
            }
            batch = match step {
                Step::Filter(predicate) => {
                    let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                    filter_record_batch(&batch, as_boolean_array(&mask)?)?
                }
                Step::Project { exprs, schema } => crate::processor::project(exprs, schema, &batch)?,
            };
        }
        if batch.num_rows() > 0 {
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            out.push(RecordBatch::try_new_with_options(self.schema(), batch.columns().to_vec(), &options)?);
        }
        Ok(())
    }
}

/// Rows `indices` of every column of `batch`.
pub(crate) fn take_rows(batch: &RecordBatch, indices: &[u32]) -> DfResult<Vec<ArrayRef>> {
    let indices = UInt32Array::from(indices.to_vec());
    Ok(batch.columns().iter().map(|c| take(c, &indices, None)).collect::<Result<_, _>>()?)
}
