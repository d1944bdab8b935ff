//! The processor's inputs as DataFusion sees them: a table per input whose scan is a placeholder
//! leaf, [`InputExec`], that the processor later fills with the one batch being processed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, ReplaceChildrenOptions,
    SendableRecordBatchStream,
};

/// A table backed by input `index` of the processor.
#[derive(Debug)]
pub(crate) struct InputTable {
    index: usize,
    schema: SchemaRef,
}

impl InputTable {
    pub(crate) fn new(index: usize, schema: SchemaRef) -> Self {
        Self { index, schema }
    }
}

// `TableProvider` is declared with `#[async_trait]`; `scan` is written out in the form that macro
// expands to, so this crate needs no proc-macro dependency for one ready future.
impl TableProvider for InputTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn scan<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        _state: &'life1 dyn Session,
        projection: Option<&'life2 Vec<usize>>,
        _filters: &'life3 [Expr],
        _limit: Option<usize>,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<dyn ExecutionPlan>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        let leaf = InputExec::new(self.index, &self.schema, projection.cloned())
            .map(|leaf| Arc::new(leaf) as Arc<dyn ExecutionPlan>);
        Box::pin(std::future::ready(leaf))
    }
}

/// Leaf of a planned query: the rows of input `index`, projected to the columns the query reads.
/// Planned empty; [`InputExec::with_batch`] makes the copy that emits one batch.
#[derive(Debug, Clone)]
pub(crate) struct InputExec {
    index: usize,
    projection: Option<Vec<usize>>,
    batch: Option<RecordBatch>,
    properties: Arc<PlanProperties>,
}

impl InputExec {
    fn new(index: usize, schema: &SchemaRef, projection: Option<Vec<usize>>) -> Result<Self> {
        let projected = match &projection {
            Some(columns) => Arc::new(schema.project(columns)?),
            None => Arc::clone(schema),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        Ok(Self { index, projection, batch: None, properties: Arc::new(properties) })
    }

    /// Which of the processor's inputs this leaf reads.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Restricts a batch of the whole input to the columns this leaf outputs.
    pub(crate) fn project(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let projected = match &self.projection {
            Some(columns) => batch.project(columns)?,
            None => batch.clone(),
        };
        // The input's batch may carry a schema that differs in metadata only; downstream
        // operators expect exactly the planned one.
        // A query may read no column at all (`SELECT 'x' FROM t`); the row count still matters.
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(self.schema(), projected.columns().to_vec(), &options)?)
    }

    /// A copy of this leaf that emits `batch` (already projected), or nothing.
    pub(crate) fn with_batch(&self, batch: Option<RecordBatch>) -> Self {
        Self { batch, ..self.clone() }
    }
}

impl DisplayAs for InputExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "InputExec: input={}", self.index)
    }
}

impl ExecutionPlan for InputExec {
    fn name(&self) -> &str {
        "InputExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let batches = self.batch.iter().cloned().collect();
        Ok(Box::pin(MemoryStream::try_new(batches, self.schema(), None)?))
    }
}
