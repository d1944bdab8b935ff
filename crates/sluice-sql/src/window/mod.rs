//! Stateful aggregation in streaming SQL.
//!
//! - [`tvf`]: Flink's window table-valued functions (`TUMBLE`, `HOP`, `SESSION`) found in the
//!   SQL text and registered as tables; also used by window joins.
//! - [`planner`]: cuts a final query ending in GROUP BY into a stateless part before the
//!   aggregation, the aggregation, and a stateless part after it.
//! - [`aggregate`]: the [`aggregate::Aggregation`] processor: windowed aggregation emitted when
//!   the watermark passes a window's end, or an updating aggregation emitted per epoch.
//! - [`groups`]: dense group ids for keys and DataFusion's accumulators over them.
//! - [`stored`]: an updating aggregation's state in RocksDB (`state.backend: rocksdb`).

pub(crate) mod aggregate;
pub(crate) mod groups;
pub(crate) mod planner;
pub(crate) mod stored;
pub(crate) mod tvf;

use datafusion::logical_expr::LogicalPlan;
use sluice_spec::Diagnostic;

pub(crate) use planner::plan_aggregation;

use crate::diagnose::Context;
use tvf::WindowTvf;

/// Rejects a stateless query that reads a window call whose window columns are placeholders
/// (HOP, SESSION): only an aggregation grouped by the window can use those.
pub(crate) fn check_placeholders(
    plan: &LogicalPlan,
    windows: &[WindowTvf],
    at: &Context<'_>,
) -> Result<(), Vec<Diagnostic>> {
    match windows.iter().find(|w| !w.computes_columns() && w.reads(plan)) {
        None => Ok(()),
        Some(window) => {
            let name = window.kind.name();
            Err(vec![
                Diagnostic::new(
                    "",
                    format!(
                        "{name} windows can only be aggregated: a row may belong to several {name} \
                         windows (or its session is known only later), so they have no per-row \
                         window_start and window_end"
                    ),
                )
                .at(window.position.0, window.position.1)
                .suggest(format!(
                    "aggregate in the final query: SELECT window_start, window_end, ... FROM {name}(...) \
                     GROUP BY window_start, window_end{}",
                    if at.statement == 0 { "" } else { " (not inside a view)" }
                )),
            ])
        }
    }
}

#[cfg(test)]
mod tests;
