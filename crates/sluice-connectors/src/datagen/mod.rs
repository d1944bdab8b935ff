//! The `datagen` source: random rows for a declared schema, shaped per field by `fields`
//! (ranges, string lengths, value lists, null rates, sequences).
//!
//! Row `i` depends only on the seed and `i`; rows form a fixed set of replayable splits of
//! chunks, assigned to workers (see `schedule`), so the union over workers does not depend on
//! their number, nor on where the pipeline was stopped and resumed.

mod column;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use serde_json::Value;
use sluice_runtime::Result;
use sluice_runtime::connector::{
    Source, SourceBatch, SourceContext, SourceOutput, SourceReader, SourceStatus, SplitState,
};
use sluice_spec::Diagnostic;

use crate::schedule::{Schedule, Step};
use crate::{SourceRequest, arrow_schema, options};
use column::ColumnPlan;

/// Options of the `datagen` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatagenOptions {
    /// Total rows over all workers; unbounded when absent.
    pub count: Option<u64>,
    /// Rows per second over all workers; as fast as possible when absent.
    pub rows_per_second: Option<u64>,
    /// Seed of the random values; the same seed gives the same rows.
    pub seed: Option<u64>,
    /// Per-column settings ([`FieldOptions`]), by column name.
    pub fields: Option<BTreeMap<String, Value>>,
}

/// Option names of the `datagen` source.
pub const OPTIONS: &[&str] = &["count", "rows_per_second", "seed", "fields"];

/// How one column is generated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldOptions {
    /// Smallest value (numbers; dates and timestamps also as text). Default 0, or 2024-01-01.
    pub min: Option<Value>,
    /// Largest value. Default 1,000,000 (capped by the type), 1.0 for floats, or 2024-12-31.
    pub max: Option<Value>,
    /// Length of strings and binaries; default 8.
    pub length: Option<u64>,
    /// Values to pick from uniformly, instead of a range.
    pub values: Option<Vec<Value>>,
    /// Fraction of nulls, 0 to 1; nullable fields only. Default 0.
    pub null_rate: Option<f64>,
    /// Row number + `min` (wrapping after `max`) instead of random values.
    pub sequence: Option<bool>,
}

/// Option names under `fields.<column>`.
pub const FIELD_OPTIONS: &[&str] = &["min", "max", "length", "values", "null_rate", "sequence"];

/// Builds the source from its request.
pub fn build(request: &SourceRequest) -> Result<Arc<dyn Source>, Vec<Diagnostic>> {
    let options = options::parse::<DatagenOptions>(request.options, OPTIONS, "options");
    let Some(fields) = request.schema else {
        let mut diagnostics = vec![
            Diagnostic::new("schema", "the datagen source needs a schema")
                .suggest("declare `schema:` with the fields to generate"),
        ];
        diagnostics.extend(options.err().unwrap_or_default());
        return Err(diagnostics);
    };
    let options = options?;
    let schema = arrow_schema(fields);
    let mut diagnostics = Vec::new();
    if options.rows_per_second == Some(0) {
        diagnostics.push(Diagnostic::new("options.rows_per_second", "must be at least 1"));
    }
    let settings = options.fields.clone().unwrap_or_default();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for name in settings.keys() {
        if !names.contains(&name.as_str()) {
            diagnostics.push(
                Diagnostic::new(format!("options.fields.{name}"), format!("unknown column \"{name}\""))
                    .suggest_closest(name, names.iter().copied()),
            );
        }
    }
    let mut plans = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        let path = format!("options.fields.{}", field.name());
        let field_options = match settings.get(field.name()) {
            Some(value) => options::parse::<FieldOptions>(value, FIELD_OPTIONS, &path),
            None => Ok(FieldOptions::default()),
        };
        match field_options.and_then(|o| ColumnPlan::new(index, field, &o, &path)) {
            Ok(plan) => plans.push(plan),
            Err(errors) => diagnostics.extend(errors),
        }
    }
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    Ok(Arc::new(DatagenSource { options, schema, plans: Arc::new(plans) }))
}

/// The configured `datagen` source.
pub struct DatagenSource {
    options: DatagenOptions,
    schema: SchemaRef,
    plans: Arc<Vec<ColumnPlan>>,
}

impl Source for DatagenSource {
    fn outputs(&self) -> Vec<SourceOutput> {
        vec![SourceOutput { name: String::new(), schema: self.schema.clone() }]
    }

    fn open(&self, context: SourceContext) -> Result<Box<dyn SourceReader>> {
        let schedule = Schedule::new(
            context.worker,
            self.options.count,
            self.options.rows_per_second,
            context.restore.as_deref().map(Vec::as_slice),
        )?;
        Ok(Box::new(DatagenReader {
            schedule,
            seed: self.options.seed.unwrap_or(0),
            schema: self.schema.clone(),
            plans: self.plans.clone(),
            context,
        }))
    }

    fn replayable(&self) -> bool {
        true
    }
}

struct DatagenReader {
    schedule: Schedule,
    seed: u64,
    schema: SchemaRef,
    plans: Arc<Vec<ColumnPlan>>,
    context: SourceContext,
}

impl SourceReader for DatagenReader {
    fn poll(&mut self, max_rows: usize, out: &mut Vec<SourceBatch>) -> Result<SourceStatus> {
        if self.context.stop.load(Ordering::Relaxed) {
            return Ok(SourceStatus::Finished);
        }
        match self.schedule.step(max_rows) {
            Step::Done => Ok(SourceStatus::Finished),
            Step::Wait(delay) => Ok(SourceStatus::Idle(delay.min(Duration::from_millis(100)))),
            Step::Rows { split, rows } => {
                let columns = self
                    .plans
                    .iter()
                    .map(|plan| plan.generate(self.seed, rows.start, rows.end))
                    .collect::<Result<Vec<_>, _>>()?;
                let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
                out.push(SourceBatch { output: 0, split, batch });
                Ok(SourceStatus::Ready)
            }
        }
    }

    fn splits(&self) -> usize {
        self.schedule.splits()
    }

    fn snapshot(&mut self) -> Result<Vec<SplitState>> {
        Ok(self.schedule.snapshot())
    }
}
