//! `created`: the pipeline has versions but was never deployed.

use super::{Event, State};

pub(super) fn on(event: Event) -> Option<State> {
    match event {
        Event::Deploy => Some(State::Deploying),
        _ => None,
    }
}
