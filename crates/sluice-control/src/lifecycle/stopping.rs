//! `stopping`: the worker was asked to stop; it drains, takes a final checkpoint and exits.

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        Event::WorkerFinished | Event::WorkerStopped | Event::WorkerCrashed { .. } => Some(State::Stopped),
        _ => None,
    }
}
