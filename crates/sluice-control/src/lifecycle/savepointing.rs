//! `savepointing`: the worker was asked to stop and write a savepoint.

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        Event::WorkerFinished | Event::WorkerStopped => Some(State::Stopped),
        // The savepoint was not written; the latest checkpoint remains.
        Event::WorkerCrashed { .. } => Some(State::Failed),
        _ => None,
    }
}
