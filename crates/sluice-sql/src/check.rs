//! Which SQL a processor accepts. A stateless query sees one batch at a time and keeps nothing
//! between batches, so it may only be linear in its inputs: each output row depends on one
//! input row. The one stateful form is a GROUP BY aggregation as the last step of the final
//! query (planned by `crate::window`, which checks the parts around it with these same
//! checks). Everything else is rejected before it can give a wrong answer: first on the
//! syntax tree (for precise messages and positions), then on the logical plan (the
//! authoritative check), then on the physical plan (operators we know to be stateless).

use std::ops::ControlFlow;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::{
    self, GroupByExpr, Query, SetExpr, SetOperator, SetQuantifier, Spanned, Visit, Visitor,
};
use sluice_spec::Diagnostic;

use crate::text::{Position, SqlText};

/// What every rejection of a stateful construct says after naming it.
pub(crate) const STATELESS_ONLY: &str = "a SQL processor runs stateless SQL (projections, \
     filters, functions, CASE, CAST, UNNEST, UNION ALL) and one GROUP BY aggregation as the last \
     step of its final query, windowed with TUMBLE, HOP or SESSION or updating per key";

/// Functions whose value depends on when the query runs; DataFusion folds them into constants
/// at planning time, which would freeze them for the life of a stream.
const CLOCK_FUNCTIONS: [&str; 6] =
    ["now", "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime"];

/// A construct the processor cannot run, and the words that locate it in the statement.
#[derive(Debug)]
pub(crate) struct Unsupported {
    construct: String,
    words: Vec<String>,
    position: Option<Position>,
    plain: bool,
}

impl Unsupported {
    fn stateful(construct: impl Into<String>, words: &[&str]) -> Self {
        Self {
            construct: construct.into(),
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            position: None,
            plain: false,
        }
    }

    fn plain(message: impl Into<String>, words: &[&str]) -> Self {
        Self { plain: true, ..Self::stateful(message, words) }
    }

    /// The diagnostic, positioned at the construct inside statement `statement`.
    pub(crate) fn diagnostic(&self, text: &SqlText, statement: usize) -> Diagnostic {
        let message = if self.plain {
            self.construct.clone()
        } else {
            format!("{} is not supported yet: {STATELESS_ONLY}", self.construct)
        };
        let words: Vec<&str> = self.words.iter().map(String::as_str).collect();
        let at = self
            .position
            .or_else(|| if words.is_empty() { None } else { text.find(statement, &words) })
            .or_else(|| text.statement_start(statement));
        match at {
            Some((line, column)) => Diagnostic::new("", message).at(line, column),
            None => Diagnostic::new("", message),
        }
    }
}

/// Checks a parsed statement's syntax tree. `is_final` allows GROUP BY and HAVING in the
/// outermost SELECT (the final query's aggregation).
pub(crate) fn check_syntax(statement: &ast::Statement, is_final: bool) -> Result<(), Unsupported> {
    let allow_grouping = is_final && matches!(statement, ast::Statement::Query(_));
    match statement.visit(&mut SyntaxCheck { allow_grouping }) {
        ControlFlow::Break(unsupported) => Err(unsupported),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct SyntaxCheck {
    /// Whether the next query visited (the outermost one) may group.
    allow_grouping: bool,
}

impl Visitor for SyntaxCheck {
    type Break = Unsupported;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Unsupported> {
        if query.with.as_ref().is_some_and(|with| with.recursive) {
            return ControlFlow::Break(Unsupported::stateful("WITH RECURSIVE", &["RECURSIVE"]));
        }
        if query.order_by.is_some() {
            return ControlFlow::Break(Unsupported::stateful("ORDER BY", &["ORDER", "BY"]));
        }
        if let Some(limit) = &query.limit_clause {
            let has_limit = match limit {
                ast::LimitClause::LimitOffset { limit, .. } => limit.is_some(),
                ast::LimitClause::OffsetCommaLimit { .. } => true,
            };
            return ControlFlow::Break(if has_limit {
                Unsupported::stateful("LIMIT", &["LIMIT"])
            } else {
                Unsupported::stateful("OFFSET", &["OFFSET"])
            });
        }
        if query.fetch.is_some() {
            return ControlFlow::Break(Unsupported::stateful("FETCH", &["FETCH"]));
        }
        let allow_grouping = std::mem::take(&mut self.allow_grouping);
        check_set_expr(&query.body, allow_grouping)
    }

    fn pre_visit_expr(&mut self, expr: &ast::Expr) -> ControlFlow<Unsupported> {
        match expr {
            ast::Expr::Subquery(_) | ast::Expr::InSubquery { .. } | ast::Expr::Exists { .. } => {
                let start = expr.span().start;
                let mut unsupported = Unsupported::stateful(
                    "a subquery inside an expression (IN, EXISTS or a scalar subquery)",
                    &["SELECT"],
                );
                if start.line > 0 {
                    unsupported.position = Some((start.line as usize, start.column as usize));
                }
                ControlFlow::Break(unsupported)
            }
            ast::Expr::Function(function) if function.over.is_some() => {
                ControlFlow::Break(Unsupported::stateful("a window function (OVER)", &["OVER"]))
            }
            ast::Expr::Function(function) => {
                let name = function.name.to_string().to_lowercase();
                if CLOCK_FUNCTIONS.contains(&name.as_str()) {
                    let message = format!(
                        "{name} is not supported yet: it would be evaluated once, when the \
                         pipeline starts; use a timestamp column of the input instead"
                    );
                    ControlFlow::Break(Unsupported::plain(message, &[&name]))
                } else {
                    ControlFlow::Continue(())
                }
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

fn check_set_expr(body: &SetExpr, allow_grouping: bool) -> ControlFlow<Unsupported> {
    match body {
        SetExpr::SetOperation { op, set_quantifier, left, right } => {
            let keyword = op.to_string();
            match (op, set_quantifier) {
                (SetOperator::Union, SetQuantifier::All | SetQuantifier::AllByName) => {}
                (SetOperator::Union, _) => {
                    return ControlFlow::Break(Unsupported::stateful(
                        "UNION without ALL (it removes duplicate rows; UNION ALL keeps them)",
                        &["UNION"],
                    ));
                }
                _ => {
                    return ControlFlow::Break(Unsupported::stateful(keyword.clone(), &[&keyword]));
                }
            }
            check_set_expr(left, false)?;
            check_set_expr(right, false)
        }
        SetExpr::Select(select) => {
            if select.distinct.is_some() {
                return ControlFlow::Break(Unsupported::stateful("SELECT DISTINCT", &["DISTINCT"]));
            }
            let grouped = match &select.group_by {
                GroupByExpr::All(_) => true,
                GroupByExpr::Expressions(expressions, _) => !expressions.is_empty(),
            };
            if grouped && !allow_grouping {
                return ControlFlow::Break(Unsupported::stateful(
                    "GROUP BY inside a view, subquery or UNION",
                    &["GROUP", "BY"],
                ));
            }
            if select.having.is_some() && !allow_grouping {
                return ControlFlow::Break(Unsupported::stateful("HAVING", &["HAVING"]));
            }
            // Joins are checked on the logical plan, where `crate::join` takes the final query's.
            if !select.named_window.is_empty() || select.qualify.is_some() {
                return ControlFlow::Break(Unsupported::stateful("WINDOW", &["WINDOW"]));
            }
            ControlFlow::Continue(())
        }
        _ => ControlFlow::Continue(()),
    }
}

/// Checks a logical plan: the safety net behind [`check_syntax`].
pub(crate) fn check_logical(plan: &LogicalPlan) -> Result<(), Unsupported> {
    let mut found = None;
    let _ = plan.apply(|node| {
        found = logical_node(node);
        Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    match found {
        Some(unsupported) => Err(unsupported),
        None => Ok(()),
    }
}

fn logical_node(node: &LogicalPlan) -> Option<Unsupported> {
    let stateful = |construct: &str, words: &[&str]| Some(Unsupported::stateful(construct, words));
    match node {
        LogicalPlan::Aggregate(aggregate) => {
            if !aggregate.group_expr.is_empty() {
                return stateful("GROUP BY inside a view, subquery or UNION", &["GROUP", "BY"]);
            }
            let name = aggregate.aggr_expr.first().and_then(aggregate_name);
            match name {
                Some(name) => stateful(
                    &format!("the aggregate function {name}() inside a view, subquery or UNION"),
                    &[&name],
                ),
                None => stateful("aggregation inside a view, subquery or UNION", &[]),
            }
        }
        LogicalPlan::Window(_) => stateful("a window function (OVER)", &["OVER"]),
        LogicalPlan::Join(_) => stateful("a JOIN inside a view or before an aggregation", &["JOIN"]),
        LogicalPlan::Sort(_) => stateful("ORDER BY", &["ORDER", "BY"]),
        LogicalPlan::Limit(_) => stateful("LIMIT", &["LIMIT"]),
        LogicalPlan::Distinct(Distinct::All(input)) if matches!(**input, LogicalPlan::Union(_)) => {
            stateful("UNION without ALL", &["UNION"])
        }
        LogicalPlan::Distinct(_) => stateful("DISTINCT", &["DISTINCT"]),
        LogicalPlan::Subquery(_) => stateful("a subquery inside an expression", &["SELECT"]),
        LogicalPlan::RecursiveQuery(_) => stateful("WITH RECURSIVE", &["RECURSIVE"]),
        LogicalPlan::TableScan(scan) if scan.fetch.is_some() => stateful("LIMIT", &["LIMIT"]),
        LogicalPlan::Values(_) => Some(Unsupported::plain(
            "VALUES is not supported: a SQL processor's rows come from its inputs",
            &["VALUES"],
        )),
        LogicalPlan::EmptyRelation(empty) if empty.produce_one_row => Some(Unsupported::plain(
            "a SELECT without FROM is not supported: a SQL processor's rows come from its \
             inputs; add FROM with one of them",
            &["SELECT"],
        )),
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Union(_)
        | LogicalPlan::TableScan(_)
        | LogicalPlan::EmptyRelation(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Unnest(_)
        | LogicalPlan::Repartition(_) => expressions(node),
        other => {
            Some(Unsupported::plain(format!("{} is not supported in a SQL processor", other.display()), &[]))
        }
    }
}

/// Expressions that hide state or subqueries inside an otherwise stateless node.
fn expressions(node: &LogicalPlan) -> Option<Unsupported> {
    let mut found = None;
    let _ = node.apply_expressions(|expr| {
        expr.apply(|expr| {
            found = match expr {
                Expr::AggregateFunction(_) => Some(Unsupported::stateful("an aggregate function", &[])),
                Expr::WindowFunction(_) => Some(Unsupported::stateful("a window function (OVER)", &["OVER"])),
                Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) => {
                    Some(Unsupported::stateful("a subquery inside an expression", &["SELECT"]))
                }
                _ => None,
            };
            Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        })
    });
    found
}

fn aggregate_name(expr: &Expr) -> Option<String> {
    let mut name = None;
    let _ = expr.apply(|expr| {
        if let Expr::AggregateFunction(function) = expr {
            name = Some(function.func.name().to_owned());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    name
}

/// Operators known to process each batch on its own, without state or spawned tasks.
const STATELESS_OPERATORS: [&str; 8] = [
    "InputExec",
    "ProjectionExec",
    "FilterExec",
    "UnionExec",
    "UnnestExec",
    "EmptyExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
];

/// Checks that a physical plan uses only operators known to be stateless.
pub(crate) fn check_physical(plan: &dyn ExecutionPlan) -> Result<(), Unsupported> {
    if !STATELESS_OPERATORS.contains(&plan.name()) {
        return Err(Unsupported::stateful(format!("a query that needs the {} operator", plan.name()), &[]));
    }
    plan.children().into_iter().try_for_each(|child| check_physical(child.as_ref()))
}
