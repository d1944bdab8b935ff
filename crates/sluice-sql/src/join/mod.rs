//! Streaming joins of two relations: a query whose final step joins two stateless relations
//! (each a projection/filter of one input, or of a lookup table) and then only filters and
//! projects the joined rows.
//!
//! The optimized logical plan is cut at its `Join` node: each side is planned as a stateless
//! query over its input (the per-batch machinery of [`crate::processor`]), the equality pairs
//! of the join become the key rows are matched on (and exchanged by), the rest of the join
//! condition is a residual filter over matched pairs, and the filters and projections above the
//! join run over each batch of joined rows ([`output`]). What the join keeps depends on its
//! condition ([`timing`]):
//! - a window join (both sides equal on `window_end`) keeps a row until the watermark passes
//!   its window's end, and a LEFT join emits unmatched rows then;
//! - an interval join (`a.ts BETWEEN b.ts - INTERVAL ... AND b.ts + INTERVAL ...`) keeps a row
//!   until no row of the other side within the bounds can arrive;
//! - a regular join keeps rows until their key has not been updated for `state_ttl` (in RocksDB
//!   with `state.backend: rocksdb`, see [`stored`]);
//! - a lookup join ([`lookup`]) reads the other side from a [`LookupTable`] through a cache and
//!   keeps no state at all.
//!
//! [`LookupTable`]: sluice_runtime::processor::LookupTable

mod lookup;
mod output;
mod stored;
mod stream;
mod system_time;
mod timing;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DataFusionError, Result as DfResult, TableReference};
use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use futures::executor::block_on;
use sluice_runtime::processor::{KeyHasher, Processor};
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

pub(crate) use self::system_time::blank_system_time;
use crate::diagnose::{Context, clean, planning_error};
use crate::input::{InputExec, InputTable};
use crate::processor::StatelessQuery;
use crate::{PlanOptions, SqlLookup, check};

/// Plans the final query `logical` if it joins; `None` if it has no join (the caller plans it
/// another way). `inputs` is the number of the processor's inputs; lookup tables come after them.
pub(crate) fn plan(
    logical: &LogicalPlan,
    context: &SessionContext,
    inputs: usize,
    options: &PlanOptions,
    at: &Context<'_>,
) -> Result<Option<Box<dyn Processor>>, Vec<Diagnostic>> {
    let mut joins = false;
    let mut lookup = None;
    let _ = logical.apply(|node| {
        match node {
            LogicalPlan::Join(_) => joins = true,
            LogicalPlan::TableScan(scan) => {
                lookup = lookup.or(options
                    .lookups
                    .iter()
                    .find(|l| TableReference::parse_str(&l.table).table() == scan.table_name.table()));
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if joins {
        return plan_join(logical, context, inputs, options, at).map(Some);
    }
    match lookup {
        Some(lookup) => {
            let message = format!(
                "lookup table \"{}\" can only be read in a lookup join: FROM stream s JOIN {} FOR \
                 SYSTEM_TIME AS OF s.proc_time AS t ON s.k = t.k",
                lookup.table, lookup.table
            );
            Err(vec![diagnostic(at, message, &[&lookup.table])])
        }
        None => Ok(None),
    }
}

/// Registers each lookup table as input `inputs + index` of the session.
pub(crate) fn register_lookups(
    context: &SessionContext,
    inputs: usize,
    lookups: &[SqlLookup],
) -> Result<(), Vec<Diagnostic>> {
    for (index, lookup) in lookups.iter().enumerate() {
        let table = Arc::new(InputTable::new(inputs + index, lookup.source.schema()));
        let registered = context.register_table(TableReference::parse_str(&lookup.table), table);
        if !matches!(registered, Ok(None)) {
            let message = format!(
                "lookup table \"{}\" cannot be used in SQL: an input or another lookup table has \
                 that name",
                lookup.table
            );
            return Err(vec![Diagnostic::new("", message)]);
        }
    }
    Ok(())
}

/// A diagnostic positioned at the first of `words` in the statement (or at its start).
fn diagnostic(at: &Context<'_>, message: impl Into<String>, words: &[&str]) -> Diagnostic {
    let position = at.text.find(at.statement, words).or_else(|| at.text.statement_start(at.statement));
    match position {
        Some((line, column)) => Diagnostic::new("", message).at(line, column),
        None => Diagnostic::new("", message),
    }
}

fn plan_join(
    logical: &LogicalPlan,
    context: &SessionContext,
    inputs: usize,
    options: &PlanOptions,
    at: &Context<'_>,
) -> Result<Box<dyn Processor>, Vec<Diagnostic>> {
    let state = context.state();
    let planning = |error: DataFusionError| vec![planning_error(&error, at)];
    let optimized = state.optimize(logical).map_err(planning)?;
    let (top, join) = split_at_join(&optimized, at)?;
    let outer = outer_side(join, at)?;
    if join.on.is_empty() {
        let message = "a streaming join needs at least one equality between its two sides (ON a.k = \
                       b.k): without one, every row would have to be kept and compared with every \
                       other row";
        return Err(vec![
            diagnostic(at, message, &["ON"]).suggest("add an equality of a column of each side to ON"),
        ]);
    }
    let total_inputs = inputs + options.lookups.len();
    let sides =
        [plan_side(&state, &join.left, total_inputs, at)?, plan_side(&state, &join.right, total_inputs, at)?];
    let output = output::Output::plan(&state, join, &top).map_err(planning)?;
    let lookup_sides: Vec<bool> = sides.iter().map(|side| side.input >= inputs).collect();
    match (lookup_sides[0], lookup_sides[1]) {
        (true, true) => Err(vec![diagnostic(
            at,
            "a join needs at least one side that reads an input; both sides read lookup tables",
            &["JOIN"],
        )]),
        (false, false) => {
            if sides[0].input == sides[1].input {
                let message = "both sides of the join read the same input; a streaming join \
                               joins two different inputs";
                return Err(vec![
                    diagnostic(at, message, &["JOIN"])
                        .suggest("declare the stream twice in the processor's inputs, once per side"),
                ]);
            }
            let hashers = input_hashers(&state, join, inputs, &sides).map_err(planning)?;
            let timing = timing::Timing::of(&state, join, at)?;
            if outer.is_some() && matches!(timing, timing::Timing::Unbounded) {
                let message = "an outer join of two streams without a time bound is not supported: \
                               a row without a partner would have to be emitted with NULLs and later \
                               retracted when a partner arrives";
                return Err(vec![diagnostic(at, message, &["JOIN"]).suggest(
                    "join within a window (equal window_start and window_end from TUMBLE), add an \
                     interval condition (a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts + INTERVAL \
                     '5' SECOND), or use INNER JOIN",
                )]);
            }
            let keys = key_exprs(&state, join).map_err(planning)?;
            let plan = stream::StreamJoinPlan::new(sides, keys, timing, outer, output, hashers, options)
                .map_err(planning)?;
            Ok(Box::new(stream::StreamJoin::new(Arc::new(plan))))
        }
        (table_left, _) => {
            let (stream_side, table_side) = if table_left { (1, 0) } else { (0, 1) };
            if outer == Some(table_side) {
                let message = "the preserved side of an outer lookup join must be the stream, not \
                               the lookup table";
                return Err(vec![diagnostic(at, message, &["JOIN"]).suggest(
                    "write the stream first: FROM stream s LEFT JOIN table FOR SYSTEM_TIME AS OF ...",
                )]);
            }
            let lookup = &options.lookups[sides[table_side].input - inputs];
            let keys = key_exprs(&state, join).map_err(planning)?;
            let plan = lookup::LookupJoinPlan::new(
                join,
                sides,
                stream_side,
                lookup,
                keys,
                outer.is_some(),
                output,
                at,
            )?;
            Ok(Box::new(lookup::LookupJoin::new(Arc::new(plan))))
        }
    }
}

/// The filters and projections above the join (outermost first), and the join.
fn split_at_join<'a>(
    plan: &'a LogicalPlan,
    at: &Context<'_>,
) -> Result<(Vec<&'a LogicalPlan>, &'a Join), Vec<Diagnostic>> {
    let mut top = Vec::new();
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Join(join) => return Ok((top, join)),
            LogicalPlan::Projection(projection) => {
                top.push(node);
                node = &projection.input;
            }
            LogicalPlan::Filter(filter) => {
                top.push(node);
                node = &filter.input;
            }
            LogicalPlan::SubqueryAlias(alias) => {
                top.push(node);
                node = &alias.input;
            }
            other => {
                let (what, words): (String, &[&str]) = match other {
                    LogicalPlan::Aggregate(_) => ("aggregation (GROUP BY)".into(), &["GROUP", "BY"]),
                    LogicalPlan::Sort(_) => ("ORDER BY".into(), &["ORDER", "BY"]),
                    LogicalPlan::Limit(_) => ("LIMIT".into(), &["LIMIT"]),
                    LogicalPlan::Distinct(_) => ("DISTINCT".into(), &["DISTINCT"]),
                    LogicalPlan::Window(_) => ("a window function (OVER)".into(), &["OVER"]),
                    LogicalPlan::Union(_) => ("UNION".into(), &["UNION"]),
                    LogicalPlan::Unnest(_) => ("UNNEST".into(), &["UNNEST"]),
                    other => (other.display().to_string(), &[]),
                };
                let message = format!(
                    "{what} of joined rows is not supported yet: a query may join two relations and \
                     then only filter and project the joined rows"
                );
                return Err(vec![diagnostic(at, message, words)]);
            }
        }
    }
}

/// Which side keeps its unmatched rows (LEFT: 0, RIGHT: 1), `None` for an inner join.
fn outer_side(join: &Join, at: &Context<'_>) -> Result<Option<usize>, Vec<Diagnostic>> {
    match join.join_type {
        JoinType::Inner => Ok(None),
        JoinType::Left => Ok(Some(0)),
        JoinType::Right => Ok(Some(1)),
        JoinType::Full => Err(vec![diagnostic(
            at,
            "FULL OUTER JOIN is not supported yet in streaming SQL; use INNER or LEFT JOIN",
            &["FULL"],
        )]),
        other => Err(vec![diagnostic(
            at,
            format!(
                "a {other} join (from IN, EXISTS or SEMI/ANTI JOIN) is not supported in streaming \
                 SQL; use INNER or LEFT JOIN"
            ),
            &["JOIN"],
        )]),
    }
}

/// One side of a join: a stateless query over one input (or lookup table).
#[derive(Clone)]
pub(crate) struct Side {
    /// The input (or `inputs + lookup index`) the side reads.
    pub(crate) input: usize,
    /// The side's rows from a batch of that input.
    pub(crate) query: StatelessQuery,
    /// Schema of the side's rows.
    pub(crate) schema: SchemaRef,
}

impl Side {
    /// The side's rows for `batch` of its input.
    fn rows(&self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        self.query.run(self.input, batch).map_err(|error| failed("SQL join input", &error))
    }
}

fn plan_side(
    state: &SessionState,
    side: &LogicalPlan,
    inputs: usize,
    at: &Context<'_>,
) -> Result<Side, Vec<Diagnostic>> {
    let mut joins = false;
    let _ = side.apply(|node| {
        joins = matches!(node, LogicalPlan::Join(_));
        Ok(if joins { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    if joins {
        let message = "joining more than two relations in one query is not supported yet";
        return Err(vec![
            diagnostic(at, message, &["JOIN"])
                .suggest("join two of them in a view, then join the view in another processor"),
        ]);
    }
    check::check_logical(side).map_err(|u| vec![u.diagnostic(at.text, at.statement)])?;
    let physical = block_on(state.create_physical_plan(side)).map_err(|e| vec![planning_error(&e, at)])?;
    check::check_physical(physical.as_ref()).map_err(|u| vec![u.diagnostic(at.text, at.statement)])?;
    let mut read = Vec::new();
    leaves(&physical, &mut read);
    read.dedup();
    let [input] = read[..] else {
        let message = "each side of a join must read exactly one of the processor's inputs or lookup tables";
        return Err(vec![diagnostic(at, message, &["JOIN"])]);
    };
    let schema = physical.schema();
    let query = StatelessQuery::new(physical, inputs, state.task_ctx());
    Ok(Side { input, query, schema })
}

fn leaves(plan: &Arc<dyn ExecutionPlan>, read: &mut Vec<usize>) {
    match plan.downcast_ref::<InputExec>() {
        Some(leaf) => read.push(leaf.index()),
        None => plan.children().into_iter().for_each(|child| leaves(child, read)),
    }
}

/// The join's key expressions, per side, over the side's schema.
pub(crate) type KeyExprs = [Vec<Arc<dyn PhysicalExpr>>; 2];

fn key_exprs(state: &SessionState, join: &Join) -> DfResult<KeyExprs> {
    let (left, right): (Vec<&Expr>, Vec<&Expr>) = join.on.iter().map(|(l, r)| (l, r)).unzip();
    let physical = |exprs: Vec<&Expr>, schema: &DFSchema| {
        exprs.into_iter().map(|e| state.create_physical_expr(e.clone(), schema)).collect::<DfResult<Vec<_>>>()
    };
    Ok([physical(left, join.left.schema())?, physical(right, join.right.schema())?])
}

/// One key hasher per input: the join keys computed from the raw input rows, so that rows with
/// equal keys on both sides meet on one worker; inputs no side reads all go to one worker.
fn input_hashers(
    state: &SessionState,
    join: &Join,
    inputs: usize,
    sides: &[Side; 2],
) -> DfResult<Vec<Arc<dyn KeyHasher>>> {
    let unread: Arc<dyn KeyHasher> = Arc::new(InputKey { exprs: Vec::new() });
    let mut hashers = vec![unread; inputs];
    for (index, plan) in [&join.left, &join.right].into_iter().enumerate() {
        let mut exprs = Vec::new();
        for pair in &join.on {
            let key = if index == 0 { &pair.0 } else { &pair.1 };
            let computed = through_side(key.clone(), plan)?;
            let Some((over_input, schema)) = computed.zip(scanned_schema(plan)) else {
                return Err(DataFusionError::Plan(format!(
                    "the join key {key} cannot be computed from single rows of the input"
                )));
            };
            exprs
                .push(state.create_physical_expr(over_input, &DFSchema::try_from(schema.as_ref().clone())?)?);
        }
        hashers[sides[index].input] = Arc::new(InputKey { exprs });
    }
    Ok(hashers)
}

/// Schema of the whole table a side reads.
fn scanned_schema(plan: &LogicalPlan) -> Option<SchemaRef> {
    let mut schema = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            schema = Some(scan.source.schema());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    schema
}

/// `expr` over `plan`'s output rewritten over the columns of the input table `plan` reads, by
/// replacing every column with the expression that computes it; `None` when a step is not a
/// row-by-row projection or filter.
pub(crate) fn through_side(expr: Expr, plan: &LogicalPlan) -> DfResult<Option<Expr>> {
    let schema = plan.schema();
    let source = |index: usize| -> Option<Expr> {
        match plan {
            LogicalPlan::Projection(projection) => Some(projection.expr[index].clone().unalias_nested().data),
            LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) | LogicalPlan::Repartition(_) => {
                let input = plan.inputs()[0];
                Some(Expr::Column(Column::from(input.schema().qualified_field(index))))
            }
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() => {
                Some(Expr::Column(Column::new_unqualified(scan.projected_schema.field(index).name())))
            }
            _ => None,
        }
    };
    let mut complete = true;
    let rewritten = expr
        .transform(|expr| match &expr {
            Expr::Column(column) => match source(schema.index_of_column(column)?) {
                Some(replacement) => Ok(Transformed::yes(replacement)),
                None => {
                    complete = false;
                    Ok(Transformed::new(expr, false, TreeNodeRecursion::Stop))
                }
            },
            _ => Ok(Transformed::no(expr)),
        })?
        .data;
    if !complete {
        return Ok(None);
    }
    match plan {
        LogicalPlan::TableScan(_) => Ok(Some(rewritten)),
        _ => through_side(rewritten, plan.inputs()[0]),
    }
}

/// Hashes the join key of raw input rows.
struct InputKey {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl KeyHasher for InputKey {
    fn hash_rows(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<()> {
        let rows = batch.num_rows();
        if self.exprs.is_empty() {
            hashes.clear();
            hashes.resize(rows, 0);
            return Ok(());
        }
        let hashed = self
            .exprs
            .iter()
            .map(|expr| expr.evaluate(batch)?.into_array(rows))
            .collect::<DfResult<Vec<ArrayRef>>>()
            .and_then(|columns| crate::key::hash_columns(&columns, hashes));
        hashed.map_err(|error| failed("join key", &error))
    }
}

/// A user error for a join that failed on a batch.
pub(crate) fn failed(what: &str, error: &DataFusionError) -> Error {
    Error::user(format!("{what} failed on a batch: {}", clean(&error.find_root().message())))
}
