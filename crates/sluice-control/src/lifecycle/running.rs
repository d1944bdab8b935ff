//! `running`: a worker process runs the deployed version.

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        // A restart is a graceful stop (final checkpoint) followed by a new deploy.
        Event::Stop | Event::Restart => Some(State::Stopping),
        Event::StopWithSavepoint => Some(State::Savepointing),
        Event::Rescale => Some(State::Rescaling),
        // The sources ended (bounded input) or someone outside the platform stopped it.
        Event::WorkerFinished | Event::WorkerStopped => Some(State::Stopped),
        Event::WorkerCrashed { budget_left: true } => Some(State::Recovering),
        Event::WorkerCrashed { budget_left: false } => Some(State::Failed),
        _ => None,
    }
}
