//! Plans a final query whose last step is a GROUP BY aggregation: the part before the
//! aggregation and the part after it (projections, HAVING) stay stateless and run with the
//! per-batch machinery; the aggregation itself becomes an [`Aggregation`] processor.
//!
//! The logical plan (type-coerced by DataFusion's analyzer) is cut at its `Aggregate` node:
//! - before: a projection of the event time, the GROUP BY keys and every aggregate argument
//!   over the aggregate's input, planned as a stateless query;
//! - the aggregate: DataFusion's aggregate functions, re-created over the projected columns,
//!   whose `GroupsAccumulator`s hold the state;
//! - after: the plan above the aggregate, reading the aggregate's output as an input table.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DataFusionError};
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::expr::{AggregateFunction, NullTreatment};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use futures::executor::block_on;
use sluice_runtime::processor::KeyHasher;
use sluice_spec::Diagnostic;

use super::aggregate::{Aggregation, AggregationPlan, OutputColumn, Windowing};
use super::groups::Aggregates;
use super::tvf::{WindowKind, WindowTvf};
use crate::diagnose::{Context, planning_error};
use crate::input::InputTable;
use crate::key::{ConstantKey, QueryKey};
use crate::processor::{SqlProcessor, StatelessQuery};
use crate::{PlanOptions, check};

/// Name of the table the part after the aggregation reads.
const AGGREGATE_TABLE: &str = "__sluice_aggregate";

/// The processor for `logical` if its last step is an aggregation, `None` if it has none
/// there (the caller plans it as a stateless query, which rejects aggregation elsewhere).
pub(crate) fn plan_aggregation(
    logical: &LogicalPlan,
    windows: &[WindowTvf],
    context: &SessionContext,
    inputs: usize,
    options: &PlanOptions,
    at: &Context<'_>,
) -> Result<Option<SqlProcessor>, Vec<Diagnostic>> {
    let state = context.state();
    let planning = |error: DataFusionError| vec![planning_error(&error, at)];
    let analyzed = state
        .analyzer()
        .execute_and_check(logical.clone(), state.config_options(), |_, _| {})
        .map_err(planning)?;
    let Some(aggregate) = final_aggregate(&analyzed) else {
        return Ok(None);
    };
    let unsupported = |message: String, words: &[&str]| {
        let position = at.text.find(at.statement, words).or_else(|| at.text.statement_start(at.statement));
        let diagnostic = Diagnostic::new("", message);
        vec![match position {
            Some((line, column)) => diagnostic.at(line, column),
            None => diagnostic,
        }]
    };
    check::check_logical(&aggregate.input).map_err(|u| vec![u.diagnostic(at.text, at.statement)])?;

    let read: Vec<&WindowTvf> = windows.iter().filter(|w| w.reads(&aggregate.input)).collect();
    if read.len() > 1 {
        return Err(unsupported(
            "an aggregation reads one window table function; joining windowed tables before \
             aggregating is not supported yet"
                .into(),
            &["FROM"],
        ));
    }
    let window = read.first().copied();
    let mut columns = Vec::new();
    let mut keys = Vec::new();
    for expr in &aggregate.group_expr {
        if matches!(expr, Expr::GroupingSet(_)) {
            return Err(unsupported(
                "GROUPING SETS, ROLLUP and CUBE are not supported; group by plain columns or \
                 expressions"
                    .into(),
                &["GROUP", "BY"],
            ));
        }
        match (window, window_column(expr)) {
            (Some(_), Some(true)) => columns.push(OutputColumn::WindowStart),
            (Some(_), Some(false)) => columns.push(OutputColumn::WindowEnd),
            _ => {
                columns.push(OutputColumn::Key(keys.len()));
                keys.push(expr.clone());
            }
        }
    }
    if let Some(window) = window {
        let has = |c: OutputColumn| columns.contains(&c);
        if !has(OutputColumn::WindowStart) || !has(OutputColumn::WindowEnd) {
            return Err(vec![
                Diagnostic::new(
                    "",
                    format!(
                        "an aggregation over {} must group by both window_start and window_end, \
                         so that each window gives its own rows",
                        window.kind.name()
                    ),
                )
                .suggest("write GROUP BY window_start, window_end, <your keys>".to_owned()),
            ]
            .into_iter()
            .map(|d| locate(d, at, &["GROUP", "BY"]))
            .collect());
        }
        if !window.computes_columns() {
            let reason = reads_window_columns(&aggregate.input, window)
                .or_else(|| keys.iter().find(|k| mentions_window_columns(k)).map(|_| "a GROUP BY key"))
                .or_else(|| {
                    aggregate.aggr_expr.iter().find(|e| mentions_window_columns(e)).map(|_| "an aggregate")
                });
            if let Some(place) = reason {
                return Err(unsupported(
                    format!(
                        "{place} uses window_start or window_end of {}, which are known only after \
                         aggregation; use them in the SELECT list or HAVING",
                        window.kind.name()
                    ),
                    &["window_start"],
                ));
            }
        }
        if let WindowKind::Session { partition_by, .. } = &window.kind {
            check_session_keys(partition_by, &keys).map_err(|m| unsupported(m, &["PARTITION", "BY"]))?;
        }
    }

    // The projection computed before the aggregation: time, keys, arguments; each once.
    let mut pre: Vec<Expr> = Vec::new();
    let mut slot = |expr: &Expr| -> usize {
        match pre.iter().position(|e| e == expr) {
            Some(index) => index,
            None => {
                pre.push(expr.clone());
                pre.len() - 1
            }
        }
    };
    let time = match window {
        Some(window) => {
            let (qualifier, field) =
                aggregate.input.schema().qualified_field_with_unqualified_name(&window.time_column).map_err(
                    |_| {
                        unsupported(
                            format!(
                                "the time column \"{}\" of {} must reach the aggregation; keep it in \
                             the columns the FROM clause selects",
                                window.time_column,
                                window.kind.name()
                            ),
                            &["FROM"],
                        )
                    },
                )?;
            Some(slot(&Expr::Column(Column::new(qualifier.cloned(), field.name()))))
        }
        None => None,
    };
    let key_slots: Vec<usize> = keys.iter().map(&mut slot).collect();
    let mut functions = Vec::new();
    for expr in &aggregate.aggr_expr {
        let function = match expr.clone().unalias() {
            Expr::AggregateFunction(function) => function,
            other => {
                return Err(unsupported(format!("unexpected aggregate expression {other}"), &[]));
            }
        };
        let name = function.func.name().to_uppercase();
        if function.params.filter.is_some() {
            return Err(unsupported(
                format!("FILTER (WHERE ...) on {name} is not supported yet; use a CASE expression inside it"),
                &["FILTER"],
            ));
        }
        if !function.params.order_by.is_empty() {
            return Err(unsupported(
                format!("ORDER BY inside {name}(...) is not supported yet: rows of a stream have no order"),
                &["ORDER", "BY"],
            ));
        }
        let arguments: Vec<usize> = function.params.args.iter().map(&mut slot).collect();
        functions.push((function, arguments));
    }

    let pre_exprs: Vec<Expr> =
        pre.iter().enumerate().map(|(i, e)| e.clone().alias(format!("__p{i}"))).collect();
    let pre_plan = LogicalPlanBuilder::from(aggregate.input.as_ref().clone())
        .project(pre_exprs)
        .and_then(|b| b.build())
        .map_err(planning)?;
    let pre_physical = block_on(state.create_physical_plan(&pre_plan)).map_err(planning)?;
    check::check_physical(pre_physical.as_ref()).map_err(|u| vec![u.diagnostic(at.text, at.statement)])?;
    let pre_schema = pre_physical.schema();
    let display = display_schema(&pre, &pre_schema);
    let pre_query = StatelessQuery::new(pre_physical, inputs, context.task_ctx());

    let mut exprs = Vec::new();
    let mut arguments = Vec::new();
    let group_count = aggregate.group_expr.len();
    for (index, (function, slots)) in functions.into_iter().enumerate() {
        let args: Vec<Arc<dyn PhysicalExpr>> = slots
            .iter()
            .map(|s| Arc::new(PhysicalColumn::new(&format!("__p{s}"), *s)) as Arc<dyn PhysicalExpr>)
            .collect();
        let name = aggregate.schema.field(group_count + index).name().clone();
        let built = aggregate_expr(&function, args, &pre_schema, name).map_err(planning)?;
        columns.push(OutputColumn::Aggregate(index));
        exprs.push(Arc::new(built));
        arguments.push(slots);
    }
    let aggregates = Arc::new(Aggregates { exprs, arguments });

    let (post_query, emitted) = plan_after(&analyzed, aggregate, context).map_err(planning)?;
    let key_hashers = key_hashers(aggregate, &keys, context, inputs).map_err(planning)?;
    let key_types = key_slots.iter().map(|s| pre_schema.field(*s).data_type().clone()).collect();
    let windowing = match window {
        Some(window) => Windowing::Window { kind: window.kind.clone(), time: window.time.clone() },
        None => Windowing::Updating,
    };
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let plan = AggregationPlan {
        pre: pre_query,
        time,
        keys: key_slots,
        key_types,
        aggregates,
        windowing,
        columns,
        emitted,
        post: post_query,
        key_hashers,
        allowed_lateness: millis(options.allowed_lateness),
        state_ttl: options.state_ttl.map(millis),
        display,
    };
    let processor = Aggregation::new(Arc::new(plan)).map_err(planning)?;
    Ok(Some(SqlProcessor::stateful(Box::new(processor))))
}

/// The aggregate the final query ends with, under projections, filters (HAVING) and aliases.
fn final_aggregate(plan: &LogicalPlan) -> Option<&Aggregate> {
    match plan {
        LogicalPlan::Aggregate(aggregate) => Some(aggregate),
        LogicalPlan::Projection(p) => final_aggregate(&p.input),
        LogicalPlan::Filter(f) => final_aggregate(&f.input),
        LogicalPlan::SubqueryAlias(s) => final_aggregate(&s.input),
        _ => None,
    }
}

/// `Some(true)` for `window_start`, `Some(false)` for `window_end`, `None` for other keys.
fn window_column(expr: &Expr) -> Option<bool> {
    match expr {
        Expr::Column(column) if column.name == "window_start" => Some(true),
        Expr::Column(column) if column.name == "window_end" => Some(false),
        _ => None,
    }
}

fn mentions_window_columns(expr: &Expr) -> bool {
    expr.column_refs().iter().any(|c| c.name == "window_start" || c.name == "window_end")
}

/// Where the plan between the aggregation and the window call reads the placeholder window
/// columns, if it does.
fn reads_window_columns(input: &LogicalPlan, window: &WindowTvf) -> Option<&'static str> {
    let mut found = None;
    let _ = input.apply(|node| {
        if matches!(node, LogicalPlan::SubqueryAlias(alias) if alias.alias == window.table) {
            return Ok(TreeNodeRecursion::Jump);
        }
        let _ = node.apply_expressions(|expr| {
            if mentions_window_columns(expr) {
                found = Some(if matches!(node, LogicalPlan::Filter(_)) {
                    "WHERE"
                } else {
                    "a column before the aggregation"
                });
            }
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// Sessions are tracked per GROUP BY key, so PARTITION BY must name exactly those columns.
fn check_session_keys(partition_by: &[String], keys: &[Expr]) -> Result<(), String> {
    let mut names = Vec::new();
    for key in keys {
        match key {
            Expr::Column(column) => names.push(column.name.clone()),
            _ => {
                return Err("a SESSION aggregation groups by window_start, window_end and plain \
                            columns, the session's PARTITION BY columns"
                    .into());
            }
        }
    }
    let mut wanted = partition_by.to_vec();
    wanted.sort();
    names.sort();
    if wanted != names {
        let keys = if names.is_empty() { "no key".to_owned() } else { names.join(", ") };
        let partition = if wanted.is_empty() { "nothing".to_owned() } else { wanted.join(", ") };
        return Err(format!(
            "SESSION is partitioned by {partition} but the aggregation groups by {keys} (besides \
             the window); sessions are tracked per group, so write SESSION(TABLE t PARTITION BY \
             {keys}, ...) with the same columns as GROUP BY"
        ));
    }
    Ok(())
}

fn locate(diagnostic: Diagnostic, at: &Context<'_>, words: &[&str]) -> Diagnostic {
    match at.text.find(at.statement, words).or_else(|| at.text.statement_start(at.statement)) {
        Some((line, column)) => diagnostic.at(line, column),
        None => diagnostic,
    }
}

fn aggregate_expr(
    function: &AggregateFunction,
    args: Vec<Arc<dyn PhysicalExpr>>,
    schema: &SchemaRef,
    name: String,
) -> datafusion::common::Result<datafusion::physical_expr::aggregate::AggregateFunctionExpr> {
    let ignore_nulls = matches!(function.params.null_treatment, Some(NullTreatment::IgnoreNulls));
    AggregateExprBuilder::new(Arc::clone(&function.func), args)
        .schema(Arc::clone(schema))
        .alias(name)
        .with_distinct(function.params.distinct)
        .with_ignore_nulls(ignore_nulls)
        .build()
}

/// Readable names for the pre-aggregation columns, for dead letters; constants (`COUNT(*)`
/// counts a literal 1) are left out, as `None`.
fn display_schema(pre: &[Expr], schema: &SchemaRef) -> Vec<Option<Field>> {
    let mut names: Vec<String> = Vec::new();
    let fields = pre.iter().zip(schema.fields()).map(|(expr, field)| {
        if matches!(expr, Expr::Literal(..)) {
            return None;
        }
        let base = match expr {
            Expr::Column(column) => column.name.clone(),
            other => other.schema_name().to_string(),
        };
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name.clone());
        Some(Field::new(name, field.data_type().clone(), true))
    });
    fields.collect()
}

/// The stateless query after the aggregation, and the schema of the batches it reads.
fn plan_after(
    analyzed: &LogicalPlan,
    aggregate: &Aggregate,
    context: &SessionContext,
) -> datafusion::common::Result<(StatelessQuery, SchemaRef)> {
    let fields: Vec<Field> = aggregate
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
        .collect();
    let emitted = Arc::new(Schema::new(fields));
    let source = provider_as_source(Arc::new(InputTable::new(0, Arc::clone(&emitted))));
    let exprs: Vec<Expr> = aggregate
        .schema
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            Expr::Column(Column::new(Some(AGGREGATE_TABLE), format!("c{i}")))
                .alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    let replacement = LogicalPlanBuilder::scan(AGGREGATE_TABLE, source, None)?.project(exprs)?.build()?;
    let after = analyzed
        .clone()
        .transform_down(|node| {
            Ok(if matches!(node, LogicalPlan::Aggregate(_)) {
                Transformed::new(replacement.clone(), true, TreeNodeRecursion::Jump)
            } else {
                Transformed::no(node)
            })
        })?
        .data;
    let state = context.state();
    let physical = block_on(state.create_physical_plan(&after))?;
    check::check_physical(physical.as_ref()).map_err(|_| {
        DataFusionError::Plan("the query after the aggregation must be projections and filters".into())
    })?;
    Ok((StatelessQuery::new(physical, 1, context.task_ctx()), emitted))
}

/// One hasher per input: the GROUP BY keys computed from the input's rows (filters left out,
/// so that every row gets a hash), or a constant when there is no key, when the input does
/// not feed the aggregation, or when the keys cannot be computed row by row (then one worker
/// aggregates everything).
fn key_hashers(
    aggregate: &Aggregate,
    keys: &[Expr],
    context: &SessionContext,
    inputs: usize,
) -> datafusion::common::Result<Vec<Arc<dyn KeyHasher>>> {
    let constant = || vec![Arc::new(ConstantKey) as Arc<dyn KeyHasher>; inputs];
    if keys.is_empty() {
        return Ok(constant());
    }
    let unfiltered = aggregate
        .input
        .as_ref()
        .clone()
        .transform_up(|node| {
            Ok(match node {
                LogicalPlan::Filter(filter) => Transformed::yes(filter.input.as_ref().clone()),
                other => Transformed::no(other),
            })
        })?
        .data;
    let exprs: Vec<Expr> = keys.iter().enumerate().map(|(i, k)| k.clone().alias(format!("__k{i}"))).collect();
    let Ok(plan) = LogicalPlanBuilder::from(unfiltered).project(exprs).and_then(|b| b.build()) else {
        return Ok(constant());
    };
    let state = context.state();
    let Ok(physical) = block_on(state.create_physical_plan(&plan)) else {
        return Ok(constant());
    };
    if check::check_physical(physical.as_ref()).is_err() {
        return Ok(constant());
    }
    let query = StatelessQuery::new(physical, inputs, context.task_ctx());
    let preserving: Vec<bool> = (0..inputs).map(|input| query.one_row_per_input_row(input)).collect();
    let reads: Vec<bool> = (0..inputs).map(|input| query.reads_input(input)).collect();
    if (0..inputs).any(|i| reads[i] && !preserving[i]) {
        return Ok(constant());
    }
    Ok((0..inputs)
        .map(|input| {
            if reads[input] {
                Arc::new(QueryKey::new(query.clone(), input)) as Arc<dyn KeyHasher>
            } else {
                Arc::new(ConstantKey) as Arc<dyn KeyHasher>
            }
        })
        .collect())
}
