//! Key expressions for keyed exchange: SQL scalar expressions hashed per row, identically on
//! every worker and process.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::ExprWithAlias;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use sluice_runtime::processor::KeyHasher;
use sluice_runtime::{Error, Result};
use sluice_spec::Diagnostic;

use crate::diagnose::{Context, clean, planning_error, syntax_error};
use crate::text::SqlText;

/// The hash state every process uses; fixed so equal keys hash equally everywhere.
const KEY_HASH_STATE: RandomState = RandomState::with_seed(0x51_u64);

/// Compiles `expr`, one or more comma-separated SQL scalar expressions over `schema`, into a
/// hasher of each row's key. Diagnostics have an empty path and positions inside `expr`.
pub fn compile_key(expr: &str, schema: &SchemaRef) -> Result<Arc<dyn KeyHasher>, Vec<Diagnostic>> {
    let text = SqlText::new(expr);
    let syntax = |error| vec![syntax_error(&error, text.end())];
    let mut parser = Parser::new(&GenericDialect {}).try_with_sql(expr).map_err(syntax)?;
    let parsed = parser.parse_comma_separated(Parser::parse_expr).map_err(syntax)?;
    parser.expect_token(&Token::EOF).map_err(syntax)?;

    let at = Context { text: &text, statement: 0, tables: &[] };
    let state = SessionContext::new_with_config(crate::session_config()).state();
    let df_schema = DFSchema::try_from(schema.as_ref().clone())
        .map_err(|error| vec![Diagnostic::new("", clean(&error.message()))])?;
    let mut exprs = Vec::with_capacity(parsed.len());
    for sql_expr in parsed {
        let logical = state
            .create_logical_expr_from_sql_expr(ExprWithAlias { expr: sql_expr, alias: None }, &df_schema)
            .map_err(|error| vec![planning_error(&error, &at)])?;
        if is_stateful(&logical) {
            return Err(vec![Diagnostic::new(
                "",
                "a key must be computed from a single row; aggregate and window functions are \
                 not allowed",
            )]);
        }
        let physical = state
            .create_physical_expr(logical, &df_schema)
            .map_err(|error| vec![planning_error(&error, &at)])?;
        exprs.push(physical);
    }
    Ok(Arc::new(KeyExprs { exprs }))
}

fn is_stateful(expr: &Expr) -> bool {
    let mut stateful = false;
    let _ = expr.apply(|expr| {
        stateful = matches!(expr, Expr::AggregateFunction(_) | Expr::WindowFunction(_));
        Ok(if stateful { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    stateful
}

/// Compiled key expressions.
struct KeyExprs {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl KeyHasher for KeyExprs {
    fn hash_rows(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<()> {
        let rows = batch.num_rows();
        hashes.clear();
        hashes.resize(rows, 0);
        let hashed = self
            .exprs
            .iter()
            .map(|expr| expr.evaluate(batch)?.into_array(rows))
            .collect::<DfResult<Vec<ArrayRef>>>()
            .and_then(|arrays| hash_columns(&arrays, hashes));
        hashed.map_err(|error| {
            Error::user(format!("key expression failed on a batch: {}", clean(&error.find_root().message())))
        })
    }
}

/// The hash of the key of a row that has no key columns (a global aggregation).
pub(crate) const NO_KEY_HASH: u64 = 0;

/// Writes one hash per row of `columns` (the key columns, all of one length) into `hashes`,
/// the way every key hasher of this crate does.
pub(crate) fn hash_columns(columns: &[ArrayRef], hashes: &mut Vec<u64>) -> DfResult<()> {
    let rows = columns.first().map_or(0, |c| c.len());
    hashes.clear();
    hashes.resize(rows, 0);
    create_hashes(columns, &KEY_HASH_STATE, hashes).map(|_| ())
}

/// Every row has the same key: all rows meet on one worker.
pub(crate) struct ConstantKey;

impl KeyHasher for ConstantKey {
    fn hash_rows(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<()> {
        hashes.clear();
        hashes.resize(batch.num_rows(), NO_KEY_HASH);
        Ok(())
    }
}

/// Keys computed by a stateless query that gives exactly one row per row of input `input`.
pub(crate) struct QueryKey {
    query: crate::processor::StatelessQuery,
    input: usize,
}

impl QueryKey {
    /// Hashes the columns `query` computes from batches of input `input`.
    pub(crate) fn new(query: crate::processor::StatelessQuery, input: usize) -> Self {
        Self { query, input }
    }
}

impl KeyHasher for QueryKey {
    fn hash_rows(&self, batch: &RecordBatch, hashes: &mut Vec<u64>) -> Result<()> {
        let failed = |error: &DataFusionError| {
            Error::user(format!("GROUP BY key failed on a batch: {}", clean(&error.find_root().message())))
        };
        let keys = self.query.run(self.input, batch).map_err(|e| failed(&e))?;
        let columns: Vec<ArrayRef> = match keys.as_slice() {
            [] => Vec::new(),
            [one] => one.columns().to_vec(),
            several => {
                let joined = arrow::compute::concat_batches(&several[0].schema(), several)
                    .map_err(|e| failed(&DataFusionError::from(e)))?;
                joined.columns().to_vec()
            }
        };
        let rows = columns.first().map_or(0, |c| c.len());
        if rows != batch.num_rows() {
            return Err(Error::internal(format!(
                "GROUP BY key query gave {rows} rows for a batch of {}",
                batch.num_rows()
            )));
        }
        hash_columns(&columns, hashes).map_err(|e| failed(&e))
    }
}
