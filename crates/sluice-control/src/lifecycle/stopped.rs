//! `stopped`: no worker runs; it was stopped, or its sources ended.

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        Event::Deploy => Some(State::Deploying),
        _ => None,
    }
}
