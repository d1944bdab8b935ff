//! `deploying`: its spec is written and a worker process is being started.

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        Event::WorkerStarted => Some(State::Running),
        Event::SpawnFailed => Some(State::Failed),
        // Nothing runs yet, so there is nothing to stop.
        Event::Stop | Event::StopWithSavepoint => Some(State::Stopped),
        _ => None,
    }
}
