//! Streaming SQL processors, planned with DataFusion over Arrow.
//!
//! Owns: turning a processor's SQL into a [`SqlProcessor`] that transforms one batch at a time
//! ([`plan`]), turning key expressions into row hashers for keyed exchange ([`compile_key`]),
//! and reporting SQL mistakes as [`Diagnostic`]s positioned inside the SQL text.
//!
//! Only stateless SQL runs today (projections, filters, scalar functions, CASE, CAST, UNNEST,
//! UNION ALL, chained views): each output row depends on a single input row, so running the
//! query on each batch separately gives the same rows as running it on the whole stream.
//! Aggregates, windows, joins, ORDER BY and LIMIT are rejected with a diagnostic, never run.
//!
//! May depend on: DataFusion and Arrow, `sluice-spec` (diagnostics) and `sluice-runtime`
//! (the [`Processor`](sluice_runtime::processor::Processor) and
//! [`KeyHasher`](sluice_runtime::processor::KeyHasher) contracts); no connectors, no I/O.

mod check;
mod diagnose;
mod input;
mod key;
mod processor;
mod text;

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
pub use processor::SqlProcessor;

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

/// Plans `sql` over `inputs` (in the order the processor declares them).
///
/// `sql` holds one query, optionally preceded by `CREATE [TEMPORARY] VIEW` statements that the
/// query (or later views) may read. Every problem is returned as a diagnostic with an empty path
/// (the caller prefixes where the SQL sits in the spec) and a line and column inside `sql`.
pub fn plan(sql: &str, inputs: &[SqlInput]) -> Result<SqlProcessor, Vec<Diagnostic>> {
    let text = SqlText::new(sql);
    let tables: Vec<String> = inputs.iter().map(|input| input.table.clone()).collect();
    let context = session(inputs)?;
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
        check::check_syntax(&statement).map_err(|u| vec![u.diagnostic(&text, index)])?;
        let state = context.state();
        let logical = block_on(state.statement_to_plan(DfStatement::Statement(Box::new(statement))))
            .map_err(|error| vec![planning_error(&error, &at)])?;
        match logical {
            LogicalPlan::Ddl(DdlStatement::CreateView(view)) => {
                check::check_logical(&view.input).map_err(|u| vec![u.diagnostic(&text, index)])?;
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
                check::check_logical(&logical).map_err(|u| vec![u.diagnostic(&text, index)])?;
                let physical = block_on(state.create_physical_plan(&logical))
                    .map_err(|error| vec![planning_error(&error, &at)])?;
                check::check_physical(physical.as_ref()).map_err(|u| vec![u.diagnostic(&text, index)])?;
                return Ok(SqlProcessor::new(physical, inputs.len(), context.task_ctx()));
            }
        }
    }
    Err(vec![Diagnostic::new(
        "",
        "the SQL ends with CREATE VIEW; add a final SELECT whose rows are the processor's output",
    )])
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
