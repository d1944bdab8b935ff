//! `recovering`: the worker died; a new one starts from the latest checkpoint after a backoff.

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        Event::RetryDue | Event::Deploy => Some(State::Deploying),
        Event::Stop | Event::StopWithSavepoint => Some(State::Stopped),
        _ => None,
    }
}
