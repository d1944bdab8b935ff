//! [`SqlProcessor`], what [`crate::plan`] returns: a [`StatelessQuery`] that runs a planned
//! stateless query on one batch at a time, or a stateful processor (aggregation, joins).
//!
//! A stateless query:
//! Chains of projections and filters (the common case) are evaluated directly with their
//! physical expressions. Anything else (UNNEST, for instance) runs the physical plan with the
//! leaf of the batch's input holding that batch and every other leaf empty. Both are correct
//! because the plan is linear in its inputs; [`crate::check`] rejects everything else.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::common::cast::as_boolean_array;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::ProjectionRef;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, ExecutionPlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use sluice_runtime::processor::{
    EventTime, KeyGroupState, KeyHasher, Processor, ProcessorContext, SnapshotWriter,
};
use sluice_runtime::{Error, Result};

use crate::diagnose::clean;
use crate::input::InputExec;

/// A planned SQL processor; cheap to clone onto every worker.
///
/// Either a stateless query, which transforms each batch on its own, or a stateful processor
/// (see [`Processor::is_stateful`]) such as a windowed or updating aggregation; every
/// [`Processor`] hook is forwarded to the one it holds.
pub struct SqlProcessor {
    inner: Box<dyn Processor>,
    direct: bool,
    windows: Vec<WindowUse>,
}

/// A window table-valued function a processor's SQL calls: it groups rows by event time, so
/// the processor's input needs a watermark for its windows to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowUse {
    /// `TUMBLE`, `HOP` or `SESSION`.
    pub function: &'static str,
    /// Where the call starts in the SQL text (1-based).
    pub line: usize,
    /// Where the call starts in the SQL text (1-based).
    pub column: usize,
}

impl SqlProcessor {
    /// Wraps a stateless query.
    pub(crate) fn stateless(query: StatelessQuery) -> Self {
        let direct = query.is_direct();
        Self { inner: Box::new(query), direct, windows: Vec::new() }
    }

    /// Wraps a stateful processor (an aggregation, a join).
    pub(crate) fn stateful(processor: Box<dyn Processor>) -> Self {
        Self { inner: processor, direct: false, windows: Vec::new() }
    }

    /// Records the window functions the SQL calls.
    pub(crate) fn with_windows(mut self, windows: Vec<WindowUse>) -> Self {
        self.windows = windows;
        self
    }

    /// The window functions the SQL calls (TUMBLE, HOP, SESSION), in order.
    pub fn windows(&self) -> &[WindowUse] {
        &self.windows
    }

    /// Whether the plan runs as a direct chain of expressions (true) or through DataFusion's
    /// operators or a stateful processor (false); exposed for tests.
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

impl Clone for SqlProcessor {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone_box(), direct: self.direct, windows: self.windows.clone() }
    }
}

impl std::fmt::Debug for SqlProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlProcessor")
            .field("schema", &self.inner.output_schema())
            .field("direct", &self.direct)
            .field("stateful", &self.inner.is_stateful())
            .finish()
    }
}

impl Processor for SqlProcessor {
    fn output_schema(&self) -> SchemaRef {
        self.inner.output_schema()
    }

    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.inner.process(input, batch, out)
    }

    fn clone_box(&self) -> Box<dyn Processor> {
        Box::new(self.clone())
    }

    fn is_stateful(&self) -> bool {
        self.inner.is_stateful()
    }

    fn key_by(&self) -> Vec<Arc<dyn KeyHasher>> {
        self.inner.key_by()
    }

    fn open(&mut self, context: ProcessorContext) -> Result<()> {
        self.inner.open(context)
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.inner.on_watermark(watermark, out)
    }

    fn end_of_epoch(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.inner.end_of_epoch(out)
    }

    fn snapshot(&mut self, out: &mut dyn SnapshotWriter) -> Result<()> {
        self.inner.snapshot(out)
    }

    fn restore(&mut self, states: Vec<KeyGroupState>) -> Result<()> {
        self.inner.restore(states)
    }

    fn state_size(&self) -> usize {
        self.inner.state_size()
    }
}

/// A planned stateless query that runs on one batch at a time; cheap to clone.
#[derive(Clone)]
pub(crate) struct StatelessQuery {
    compiled: Arc<Compiled>,
}

struct Compiled {
    schema: SchemaRef,
    inputs: usize,
    program: Program,
    task: Arc<TaskContext>,
}

/// How a plan is run.
enum Program {
    /// Filters and projections over one input, evaluated directly.
    Chain { leaf: InputExec, steps: Vec<Step> },
    /// Several programs whose outputs are concatenated (UNION ALL).
    Union { schema: SchemaRef, branches: Vec<Program> },
    /// Any other stateless plan, executed by DataFusion per batch.
    Plan(Arc<dyn ExecutionPlan>),
}

enum Step {
    Filter { predicate: Arc<dyn PhysicalExpr>, projection: Option<ProjectionRef> },
    Project { exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef },
}

/// Evaluates a projection's expressions over `batch` into a batch of `schema` (which keeps the
/// row count even when there are no columns).
pub(crate) fn project(
    exprs: &[Arc<dyn PhysicalExpr>],
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> DfResult<RecordBatch> {
    let rows = batch.num_rows();
    let columns = exprs
        .iter()
        .map(|expr| expr.evaluate(batch)?.into_array(rows))
        .collect::<DfResult<Vec<ArrayRef>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?)
}

impl StatelessQuery {
    /// Wraps a checked, stateless physical plan over `inputs` inputs.
    pub(crate) fn new(plan: Arc<dyn ExecutionPlan>, inputs: usize, task: Arc<TaskContext>) -> Self {
        let program = compile(&plan).unwrap_or(Program::Plan(Arc::clone(&plan)));
        Self { compiled: Arc::new(Compiled { schema: plan.schema(), inputs, program, task }) }
    }

    /// Whether the plan runs as a direct chain of expressions.
    pub(crate) fn is_direct(&self) -> bool {
        !matches!(self.compiled.program, Program::Plan(_))
    }

    /// Runs the query on one batch of input `input`, returning its result batches.
    pub(crate) fn run(&self, input: usize, batch: &RecordBatch) -> DfResult<Vec<RecordBatch>> {
        let compiled = &*self.compiled;
        let mut out = Vec::new();
        compiled.program.run(input, batch, &compiled.task, &mut out)?;
        conform(&compiled.schema, &mut out)?;
        Ok(out)
    }

    /// Whether some leaf of the query reads input `input`.
    pub(crate) fn reads_input(&self, input: usize) -> bool {
        fn reads(plan: &Arc<dyn ExecutionPlan>, input: usize) -> bool {
            match plan.downcast_ref::<InputExec>() {
                Some(leaf) => leaf.index() == input,
                None => plan.children().into_iter().any(|child| reads(child, input)),
            }
        }
        self.compiled.program.reads(input, &reads)
    }

    /// Whether the query gives exactly one row per row of input `input`, in order: a chain of
    /// projections only.
    pub(crate) fn one_row_per_input_row(&self, input: usize) -> bool {
        self.compiled.program.one_row_per_row(input)
    }
}

impl Processor for StatelessQuery {
    fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.compiled.schema)
    }

    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let compiled = &*self.compiled;
        if input >= compiled.inputs {
            return Err(Error::internal(format!(
                "SQL processor got a batch on input {input} but has {} inputs",
                compiled.inputs
            )));
        }
        let start = out.len();
        compiled
            .program
            .run(input, &batch, &compiled.task, out)
            .and_then(|()| conform(&compiled.schema, &mut out[start..]))
            .map_err(|error| {
                out.truncate(start);
                Error::user(format!("SQL failed on a batch: {}", clean(&error.find_root().message())))
            })
    }

    fn clone_box(&self) -> Box<dyn Processor> {
        Box::new(self.clone())
    }
}

/// Gives every batch exactly `schema` (names and nullability as planned).
fn conform(schema: &SchemaRef, batches: &mut [RecordBatch]) -> DfResult<()> {
    for batch in batches {
        if batch.schema_ref() != schema {
            *batch = with_schema(schema, batch)?;
        }
    }
    Ok(())
}

fn with_schema(schema: &SchemaRef, batch: &RecordBatch) -> DfResult<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(Arc::clone(schema), batch.columns().to_vec(), &options)?)
}

/// The direct form of a plan, if it has one.
fn compile(plan: &Arc<dyn ExecutionPlan>) -> Option<Program> {
    if let Some(leaf) = plan.downcast_ref::<InputExec>() {
        return Some(Program::Chain { leaf: leaf.clone(), steps: Vec::new() });
    }
    if plan.is::<EmptyExec>() {
        return Some(Program::Union { schema: plan.schema(), branches: Vec::new() });
    }
    if let Some(union) = plan.downcast_ref::<UnionExec>() {
        let branches = union.inputs().iter().map(compile).collect::<Option<Vec<_>>>()?;
        return Some(Program::Union { schema: plan.schema(), branches });
    }
    let step = if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        if filter.fetch().is_some() {
            return None;
        }
        Step::Filter { predicate: Arc::clone(filter.predicate()), projection: filter.projection().clone() }
    } else if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let exprs = projection.expr().iter().map(|e| Arc::clone(&e.expr)).collect();
        Step::Project { exprs, schema: plan.schema() }
    } else {
        return None;
    };
    let child = plan.children().into_iter().next()?;
    match compile(child)? {
        Program::Chain { leaf, mut steps } => {
            steps.push(step);
            Some(Program::Chain { leaf, steps })
        }
        _ => None,
    }
}

impl Program {
    fn reads(&self, input: usize, plan_reads: &dyn Fn(&Arc<dyn ExecutionPlan>, usize) -> bool) -> bool {
        match self {
            Program::Chain { leaf, .. } => leaf.index() == input,
            Program::Union { branches, .. } => branches.iter().any(|b| b.reads(input, plan_reads)),
            Program::Plan(plan) => plan_reads(plan, input),
        }
    }

    fn one_row_per_row(&self, input: usize) -> bool {
        match self {
            Program::Chain { leaf, steps } => {
                leaf.index() == input && steps.iter().all(|s| matches!(s, Step::Project { .. }))
            }
            Program::Union { branches, .. } => {
                let mut reading = branches.iter().filter(|b| b.reads(input, &|_, _| true));
                matches!((reading.next(), reading.next()), (Some(only), None) if only.one_row_per_row(input))
            }
            Program::Plan(_) => false,
        }
    }

    fn run(
        &self,
        input: usize,
        batch: &RecordBatch,
        task: &Arc<TaskContext>,
        out: &mut Vec<RecordBatch>,
    ) -> DfResult<()> {
        match self {
            Program::Chain { leaf, steps } => {
                if leaf.index() != input {
                    return Ok(());
                }
                let mut batch = leaf.project(batch)?;
                for step in steps {
                    if batch.num_rows() == 0 {
                        return Ok(());
                    }
                    batch = step.apply(batch)?;
                }
                if batch.num_rows() > 0 {
                    out.push(batch);
                }
                Ok(())
            }
            Program::Union { schema, branches } => {
                for branch in branches {
                    let start = out.len();
                    branch.run(input, batch, task, out)?;
                    conform(schema, &mut out[start..])?;
                }
                Ok(())
            }
            Program::Plan(plan) => run_plan(plan, input, batch, task, out),
        }
    }
}

impl Step {
    fn apply(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        match self {
            Step::Filter { predicate, projection } => {
                let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                let batch = match projection {
                    Some(columns) => batch.project(columns)?,
                    None => batch,
                };
                Ok(filter_record_batch(&batch, as_boolean_array(&mask)?)?)
            }
            Step::Project { exprs, schema } => project(exprs, schema, &batch),
        }
    }
}

/// Runs the plan with `batch` in the leaves of input `input` and nothing in the others.
fn run_plan(
    plan: &Arc<dyn ExecutionPlan>,
    input: usize,
    batch: &RecordBatch,
    task: &Arc<TaskContext>,
    out: &mut Vec<RecordBatch>,
) -> DfResult<()> {
    let Some(plan) = substitute(plan, input, batch)? else {
        return Ok(());
    };
    for partition in 0..plan.output_partitioning().partition_count() {
        let mut stream = plan.execute(partition, Arc::clone(task))?;
        futures::executor::block_on(async {
            while let Some(result) = stream.next().await {
                let result = result?;
                if result.num_rows() > 0 {
                    out.push(result);
                }
            }
            Ok::<_, DataFusionError>(())
        })?;
    }
    Ok(())
}

/// A copy of `plan` whose leaves hold the batch (input `input`) or nothing; `None` when no leaf
/// reads input `input`, so nothing would come out.
fn substitute(
    plan: &Arc<dyn ExecutionPlan>,
    input: usize,
    batch: &RecordBatch,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(leaf) = plan.downcast_ref::<InputExec>() {
        if leaf.index() != input {
            return Ok(None);
        }
        let projected = leaf.project(batch)?;
        return Ok(Some(Arc::new(leaf.with_batch(Some(projected)))));
    }
    let mut reads_input = false;
    let mut children = Vec::new();
    for child in plan.children() {
        match substitute(child, input, batch)? {
            Some(child) => {
                reads_input = true;
                children.push(child);
            }
            // Executing a planned node again would pile up its metrics; an empty leaf is fresh.
            None => children.push(Arc::new(EmptyExec::new(child.schema()))),
        }
    }
    if !reads_input {
        return Ok(None);
    }
    let keep = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
    Arc::clone(plan).replace_children(children, keep).map(Some)
}
