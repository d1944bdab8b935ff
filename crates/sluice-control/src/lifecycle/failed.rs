//! `failed`: no worker runs because it failed more often than the restart budget allows.

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        Event::Deploy => Some(State::Deploying),
        _ => None,
    }
}
