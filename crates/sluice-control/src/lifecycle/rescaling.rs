//! `rescaling`: the worker was asked to stop so that a new one starts at another parallelism
//! from its final checkpoint (keyed state is redistributed by key group on restore).

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        Event::WorkerFinished | Event::WorkerStopped => Some(State::Deploying),
        Event::WorkerCrashed { budget_left: true } => Some(State::Recovering),
        Event::WorkerCrashed { budget_left: false } => Some(State::Failed),
        _ => None,
    }
}
