//! Streaming SQL processors, planned with DataFusion over Arrow.
//!
//! Owns: turning a processor's SQL into a [`SqlProcessor`] ([`plan`]), turning key expressions
//! into row hashers for keyed exchange ([`compile_key`]), and reporting SQL mistakes as
//! [`Diagnostic`]s positioned inside the SQL text.
//!
//! Stateless SQL (projections, filters, scalar functions, CASE, CAST, UNNEST, UNION ALL,
//! chained views) runs one batch at a time: each output row depends on a single input row.
//! A final query that ends in a GROUP BY aggregation runs as a stateful processor
//! (module `window`): windowed over Flink's `TUMBLE`, `HOP` and `SESSION` table-valued functions
//! (emitted when the watermark passes a window's end), or updating (an upsert stream keyed by
//! the GROUP BY columns). ORDER BY, LIMIT, window functions (OVER) and aggregation anywhere
//! else are rejected with a diagnostic, never run.
//!
//! May depend on: DataFusion and Arrow, `sluice-spec` (diagnostics) and `sluice-runtime`
//! (the [`Processor`](sluice_runtime::processor::Processor) and
//! [`KeyHasher`](sluice_runtime::processor::KeyHasher) contracts); no connectors, no I/O.

mod check;
mod diagnose;
mod input;
mod join;
mod key;
mod processor;
mod text;
mod window;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, TableProvider, view::ViewTable};
use datafusion::common::{DataFusionError, TableReference};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::executor::block_on;
pub use sluice_spec::Diagnostic;

pub use key::compile_key;
pub use processor::{SqlProcessor, WindowUse};

use crate::diagnose::{Context, planning_error, syntax_error};
use crate::text::SqlText;

/// One input of a SQL processor, as the SQL names it.
#[derive(Debug, Clone)]
pub struct SqlInput {
    /// Table name used in the SQL: `bids`, or schema-qualified like `nx.bid`.
    pub table: String,
    /// Schema of every batch that arrives on this input.
    pub schema: SchemaRef,
}

/// A table a processor's SQL may join with `FOR SYSTEM_TIME AS OF` (a lookup join).
#[derive(Clone)]
pub struct SqlLookup {
    /// Table name used in the SQL.
    pub table: String,
    /// Where rows are looked up.
    pub source: Arc<dyn sluice_runtime::processor::LookupTable>,
}

/// Settings of one processor that shape how its stateful SQL runs.
#[derive(Clone, Default)]
pub struct PlanOptions {
    /// How long after the watermark passed a window's end its late records are still
    /// accepted (and the window's result updated); later records go to dead letters.
    pub allowed_lateness: std::time::Duration,
    /// Keyed state of a non-windowed aggregation or join that is not updated for this long
    /// (in event time when the input has a watermark) is dropped, so state stays bounded.
    /// `None`: kept forever.
    pub state_ttl: Option<std::time::Duration>,
    /// Tables for lookup joins.
    pub lookups: Vec<SqlLookup>,
}

/// Plans `sql` over `inputs` (in the order the processor declares them).
///
/// `sql` holds one query, optionally preceded by `CREATE [TEMPORARY] VIEW` statements that the
/// query (or later views) may read. Every problem is returned as a diagnostic with an empty path
/// (the caller prefixes where the SQL sits in the spec) and a line and column inside `sql`.
///
/// Window table-valued functions (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL ...))`) are
/// rewritten into tables before parsing; `options` sets the allowed lateness
/// and state TTL of an aggregation.
pub fn plan(sql: &str, inputs: &[SqlInput], options: &PlanOptions) -> Result<SqlProcessor, Vec<Diagnostic>> {
    // Joins: `FOR SYSTEM_TIME AS OF` of lookup joins is blanked out before parsing.
    let sql = &join::blank_system_time(sql);
    let (rewritten, mut windows) = window::tvf::rewrite(sql).map_err(|d| vec![d])?;
    let sql = rewritten.as_str();
    let text = SqlText::new(sql);
    let tables: Vec<String> = inputs.iter().map(|input| input.table.clone()).collect();
    let context = session(inputs)?;
    // Joins: lookup tables are inputs `inputs.len()..` of the session.
    join::register_lookups(&context, inputs.len(), &options.lookups)?;
    let statements = parse(sql, &text)?;
    if statements.is_empty() {
        return Err(vec![Diagnostic::new(
            "",
            "the SQL has no query; write SELECT ... FROM one of the processor's inputs",
        )]);
    }
    let last = statements.len() - 1;
    for (index, statement) in statements.into_iter().enumerate() {
        let at = Context { text: &text, statement: index, tables: &tables };
        let statement = statement_kind(statement, index == last, &at)?;
        check::check_syntax(&statement, index == last).map_err(|u| vec![u.diagnostic(&text, index)])?;
        for window in windows.iter_mut().filter(|w| w.statement == index) {
            window.register(&context, &at).map_err(|d| vec![d])?;
        }
        let state = context.state();
        let logical = block_on(state.statement_to_plan(DfStatement::Statement(Box::new(statement))))
            .map_err(|error| vec![planning_error(&error, &at)])?;
        match logical {
            LogicalPlan::Ddl(DdlStatement::CreateView(view)) => {
                check::check_logical(&view.input).map_err(|u| vec![u.diagnostic(&text, index)])?;
                window::check_placeholders(&view.input, &windows, &at)?;
                if tables.iter().any(|table| TableReference::from(table.as_str()) == view.name)
                    || (!view.or_replace && context.table_exist(view.name.clone()).unwrap_or(false))
                {
                    let message = format!(
                        "a table or view named \"{}\" already exists; choose another name",
                        view.name
                    );
                    return Err(vec![at_statement(Diagnostic::new("", message), &text, index)]);
                }
                let table: Arc<dyn TableProvider> =
                    Arc::new(ViewTable::new(view.input.as_ref().clone(), view.definition.clone()));
                context
                    .register_table(view.name.clone(), table)
                    .map_err(|error| vec![planning_error(&error, &at)])?;
            }
            logical => {
                let uses = windows.iter().map(window::tvf::WindowTvf::usage).collect();
                return plan_query(&logical, &windows, &context, inputs.len(), options, &at)
                    .map(|processor| processor.with_windows(uses));
            }
        }
    }
    Err(vec![Diagnostic::new(
        "",
        "the SQL ends with CREATE VIEW; add a final SELECT whose rows are the processor's output",
    )])
}

/// Plans the final query: the one place that decides which kind of processor runs it.
fn plan_query(
    logical: &LogicalPlan,
    windows: &[window::tvf::WindowTvf],
    context: &SessionContext,
    inputs: usize,
    options: &PlanOptions,
    at: &Context<'_>,
) -> Result<SqlProcessor, Vec<Diagnostic>> {
    // Joins (interval, window and lookup joins) are dispatched here, before aggregation.
    if let Some(join) = join::plan(logical, context, inputs, options, at)? {
        return Ok(SqlProcessor::stateful(join));
    }
    if let Some(aggregation) = window::plan_aggregation(logical, windows, context, inputs, options, at)? {
        return Ok(aggregation);
    }
    check::check_logical(logical).map_err(|u| vec![u.diagnostic(at.text, at.statement)])?;
    window::check_placeholders(logical, windows, at)?;
    let state = context.state();
    let physical =
        block_on(state.create_physical_plan(logical)).map_err(|error| vec![planning_error(&error, at)])?;
    check::check_physical(physical.as_ref()).map_err(|u| vec![u.diagnostic(at.text, at.statement)])?;
    Ok(SqlProcessor::stateless(processor::StatelessQuery::new(physical, inputs, context.task_ctx())))
}

/// The session every processor plans in: one partition, no repartitioning or batch coalescing
/// (each batch is processed on its own), spans collected for diagnostics.
pub(crate) fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_repartition_joins(false)
        .with_repartition_aggregations(false)
        .with_repartition_windows(false)
        .with_repartition_sorts(false)
        .with_repartition_file_scans(false)
        .with_round_robin_repartition(false);
    let options = config.options_mut();
    options.execution.coalesce_batches = false;
    options.sql_parser.collect_spans = true;
    // Strings stay `Utf8` (what connectors produce) rather than becoming `Utf8View` on CAST.
    options.sql_parser.map_string_types_to_utf8view = false;
    config
}

fn session(inputs: &[SqlInput]) -> Result<SessionContext, Vec<Diagnostic>> {
    let context = SessionContext::new_with_config(session_config());
    let invalid = |table: &str, reason: String| {
        vec![Diagnostic::new("", format!("input table name \"{table}\" is not usable in SQL: {reason}"))]
    };
    for (index, input) in inputs.iter().enumerate() {
        let reference = TableReference::parse_str(&input.table);
        if let (Some(schema), Some(catalog)) = (reference.schema(), context.catalog("datafusion"))
            && catalog.schema(schema).is_none()
        {
            catalog
                .register_schema(schema, Arc::new(MemorySchemaProvider::new()))
                .map_err(|error| invalid(&input.table, diagnose::clean(&error.message())))?;
        }
        let table = Arc::new(input::InputTable::new(index, Arc::clone(&input.schema)));
        match context.register_table(reference, table) {
            Ok(None) => {}
            Ok(Some(_)) => return Err(invalid(&input.table, "it names two inputs".into())),
            Err(error) => return Err(invalid(&input.table, diagnose::clean(&error.message()))),
        }
    }
    Ok(context)
}

fn parse(sql: &str, text: &SqlText) -> Result<Vec<DfStatement>, Vec<Diagnostic>> {
    let to_diagnostic = |error: DataFusionError| match error.find_root() {
        DataFusionError::SQL(parser_error, _) => syntax_error(parser_error, text.end()),
        other => Diagnostic::new("", diagnose::clean(&other.message())),
    };
    let mut parser = DFParserBuilder::new(sql)
        .with_dialect(&GenericDialect {})
        .build()
        .map_err(|error| vec![to_diagnostic(error)])?;
    let statements = parser.parse_statements().map_err(|error| vec![to_diagnostic(error)])?;
    Ok(statements.into_iter().collect())
}

/// Accepts views before the last statement and a query as the last one.
fn statement_kind(
    statement: DfStatement,
    is_last: bool,
    at: &Context<'_>,
) -> Result<Statement, Vec<Diagnostic>> {
    let keyword = at.text.statement_keyword(at.statement).unwrap_or_else(|| "this".into());
    let statement = match statement {
        DfStatement::Statement(statement) => Some(*statement),
        _ => None,
    };
    let message = match (&statement, is_last) {
        (Some(Statement::Query(_)), true) => None,
        (Some(Statement::CreateView(view)), false) if !view.materialized => None,
        (Some(Statement::CreateView(_)), true) => Some(
            "the SQL ends with CREATE VIEW; add a final SELECT whose rows are the processor's \
             output"
                .to_owned(),
        ),
        (_, true) => Some(format!(
            "a SQL processor runs a query (SELECT ...) whose rows are its output; {keyword} \
             statements are not allowed"
        )),
        (_, false) => Some(format!(
            "only CREATE VIEW statements may come before the final query; {keyword} statements \
             are not allowed"
        )),
    };
    match (message, statement) {
        (None, Some(statement)) => Ok(statement),
        (message, _) => {
            let message = message.unwrap_or_else(|| "unsupported statement".into());
            Err(vec![at_statement(Diagnostic::new("", message), at.text, at.statement)])
        }
    }
}

fn at_statement(diagnostic: Diagnostic, text: &SqlText, statement: usize) -> Diagnostic {
    match text.statement_start(statement) {
        Some((line, column)) => diagnostic.at(line, column),
        None => diagnostic,
    }
}

#[cfg(test)]
mod tests;
