//! How long a stream join keeps a row, read off its condition: until the watermark passes the
//! row's window end (window join), until no partner within the time bounds can arrive (interval
//! join), or until its key goes quiet for `state_ttl` (regular join).

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, IntervalMonthDayNanoType};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, ExprSchemable, Join, Operator};
use datafusion::physical_expr::PhysicalExpr;
use sluice_spec::Diagnostic;

use super::diagnostic;
use crate::diagnose::{Context, planning_error};

/// Name of the column a window TVF adds for the end of a row's window.
const WINDOW_END: &str = "window_end";

/// When a stream join's rows stop being able to match.
pub(crate) enum Timing {
    /// Both sides equal on `window_end`: a row's partners all arrive before the watermark
    /// passes its window's end.
    Window {
        /// Each side's `window_end`, over the side's schema.
        end: [Arc<dyn PhysicalExpr>; 2],
    },
    /// `lower <= left time - right time <= upper`, in milliseconds.
    Interval {
        /// Each side's event time, over the side's schema.
        time: [Arc<dyn PhysicalExpr>; 2],
        /// Smallest allowed difference.
        lower: i64,
        /// Largest allowed difference.
        upper: i64,
    },
    /// No time bound: state is bounded by `state_ttl` only.
    Unbounded,
}

impl Timing {
    /// The timing of `join`.
    pub(crate) fn of(state: &SessionState, join: &Join, at: &Context<'_>) -> Result<Self, Vec<Diagnostic>> {
        let physical = |expr: &Expr, schema: &DFSchema| {
            state.create_physical_expr(expr.clone(), schema).map_err(|e| vec![planning_error(&e, at)])
        };
        for (left, right) in &join.on {
            if let (Expr::Column(l), Expr::Column(r)) = (left, right)
                && l.name == WINDOW_END
                && r.name == WINDOW_END
            {
                let end = [physical(left, join.left.schema())?, physical(right, join.right.schema())?];
                return Ok(Timing::Window { end });
            }
        }
        let Some(filter) = &join.filter else {
            return Ok(Timing::Unbounded);
        };
        let mut bounds = Vec::new();
        for conjunct in split_conjunction(filter) {
            collect_bounds(conjunct, join, &mut bounds);
        }
        let mut lowers = bounds.iter().filter(|b| b.lower);
        let found = lowers.find_map(|lower| {
            let upper = bounds.iter().find(|b| !b.lower && b.left == lower.left && b.right == lower.right)?;
            Some((lower, upper))
        });
        let Some((lower, upper)) = found else {
            if !bounds.is_empty() && !matches!(join.join_type, datafusion::logical_expr::JoinType::Inner) {
                let message = "an interval join needs a lower and an upper bound on the time difference \
                               of its sides";
                return Err(vec![diagnostic(at, message, &["BETWEEN"]).suggest(
                    "write a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts + INTERVAL '5' SECOND",
                )]);
            }
            return Ok(Timing::Unbounded);
        };
        if lower.offset > upper.offset {
            let message = "the interval join's lower bound is above its upper bound, so no rows can match";
            return Err(vec![diagnostic(at, message, &["BETWEEN"])]);
        }
        let time = [physical(&lower.left, join.left.schema())?, physical(&lower.right, join.right.schema())?];
        Ok(Timing::Interval { time, lower: lower.offset, upper: upper.offset })
    }
}

/// `left - right >= offset` (lower) or `left - right <= offset` (upper), in milliseconds.
struct Bound {
    left: Expr,
    right: Expr,
    offset: i64,
    lower: bool,
}

fn collect_bounds(conjunct: &Expr, join: &Join, bounds: &mut Vec<Bound>) {
    match conjunct {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let lower = match op {
                Operator::Gt | Operator::GtEq => true,
                Operator::Lt | Operator::LtEq => false,
                _ => return,
            };
            bounds.extend(bound(left, right, lower, join));
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            bounds.extend(bound(expr, low, true, join));
            bounds.extend(bound(expr, high, false, join));
        }
        _ => {}
    }
}

/// The bound `a >= b` (`lower`) or `a <= b`, if `a` and `b` are times of different sides plus
/// constant intervals.
fn bound(a: &Expr, b: &Expr, lower: bool, join: &Join) -> Option<Bound> {
    let (a_term, a_offset) = offset_term(a);
    let (b_term, b_offset) = offset_term(b);
    let a_left = side_of(a_term, join)?;
    let b_left = side_of(b_term, join)?;
    if a_left == b_left {
        return None;
    }
    // a + x >= b + y with a on the left: left - right >= y - x; on the right the inequality flips.
    Some(if a_left {
        Bound { left: a_term.clone(), right: b_term.clone(), offset: b_offset - a_offset, lower }
    } else {
        Bound { left: b_term.clone(), right: a_term.clone(), offset: a_offset - b_offset, lower: !lower }
    })
}

/// `term + offset` with the offset of a constant interval added or subtracted, in milliseconds.
fn offset_term(expr: &Expr) -> (&Expr, i64) {
    if let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr {
        let sign = match op {
            Operator::Plus => 1,
            Operator::Minus => -1,
            _ => return (expr, 0),
        };
        if let Some(millis) = interval_millis(right) {
            return (left, sign * millis);
        }
        if let (Some(millis), 1) = (interval_millis(left), sign) {
            return (right, millis);
        }
    }
    (expr, 0)
}

/// A constant interval of fixed length, in milliseconds.
fn interval_millis(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else { return None };
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            let (_, days, nanos) = IntervalMonthDayNanoType::to_parts(*v);
            Some(i64::from(days) * 86_400_000 + nanos / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        ScalarValue::DurationSecond(Some(v)) => Some(v * 1_000),
        ScalarValue::DurationMillisecond(Some(v)) => Some(*v),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(v / 1_000),
        ScalarValue::DurationNanosecond(Some(v)) => Some(v / 1_000_000),
        _ => None,
    }
}

/// Whether a time term reads only the left side (true) or only the right (false).
fn side_of(term: &Expr, join: &Join) -> Option<bool> {
    let columns = term.column_refs();
    if columns.is_empty() {
        return None;
    }
    let (left, right) = (join.left.schema(), join.right.schema());
    let is_time =
        |schema: &DFSchema| matches!(term.get_type(schema), Ok(DataType::Timestamp(_, _) | DataType::Int64));
    if columns.iter().all(|c| left.has_column(c)) && is_time(left) {
        Some(true)
    } else if columns.iter().all(|c| right.has_column(c)) && is_time(right) {
        Some(false)
    } else {
        None
    }
}

/// Event times (milliseconds) of `expr` over `batch`'s rows.
pub(crate) fn times(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &arrow::array::RecordBatch,
) -> DfResult<Vec<Option<i64>>> {
    let values: ArrayRef = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    crate::window::tvf::event_times(&values)
}
