//! The pipeline lifecycle as a state machine: pure code over events, one file per state. The
//! supervisor observes workers and the API records what users want; both turn what happened
//! into an [`Event`], and [`next`] says which state follows (or that the event does not apply).
//!
//! ```text
//! created ─deploy→ deploying ─worker started→ running ─stop→ stopping ─exited→ stopped
//!                      ↑                         │ ├─savepoint→ savepointing ─exited→ stopped
//!                      │                         │ ├─rescale→ rescaling ─exited→ deploying
//!                      └──retry due── recovering ←─crashed (budget left)   (budget spent → failed)
//! ```

mod created;
mod deploying;
mod failed;
mod recovering;
mod rescaling;
mod running;
mod savepointing;
mod stopped;
mod stopping;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Exists with at least one version; never deployed.
    Created,
    /// A worker is being started.
    Deploying,
    /// A worker is running.
    Running,
    /// The worker was asked to stop and write a savepoint.
    Savepointing,
    /// The worker was asked to stop so that it restarts at a new parallelism.
    Rescaling,
    /// The worker died; it restarts from the latest checkpoint after a backoff.
    Recovering,
    /// The worker was asked to stop (a final checkpoint is written).
    Stopping,
    /// No worker runs, by request or because the sources ended.
    Stopped,
    /// No worker runs because it failed more often than the restart budget allows.
    Failed,
}

impl State {
    /// Every state.
    pub const ALL: [State; 9] = [
        State::Created,
        State::Deploying,
        State::Running,
        State::Savepointing,
        State::Rescaling,
        State::Recovering,
        State::Stopping,
        State::Stopped,
        State::Failed,
    ];

    /// The state's name as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Deploying => "deploying",
            State::Running => "running",
            State::Savepointing => "savepointing",
            State::Rescaling => "rescaling",
            State::Recovering => "recovering",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    /// Whether a worker process may be running in this state.
    pub fn has_worker(self) -> bool {
        matches!(self, State::Running | State::Savepointing | State::Rescaling | State::Stopping)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.name() == text)
            .ok_or_else(|| format!("unknown state \"{text}\""))
    }
}

/// Something that happened to a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A user deployed, started or resumed it.
    Deploy,
    /// Its worker process started.
    WorkerStarted,
    /// Its worker could not be started.
    SpawnFailed,
    /// A user asked it to stop.
    Stop,
    /// A user asked it to stop and write a savepoint.
    StopWithSavepoint,
    /// A user changed its parallelism.
    Rescale,
    /// A user asked for a restart.
    Restart,
    /// The worker ended on its own because its sources ended.
    WorkerFinished,
    /// The worker ended after it was asked to stop.
    WorkerStopped,
    /// The worker died or failed; `budget_left` tells whether another restart is allowed.
    WorkerCrashed {
        /// Whether the restart budget allows another attempt.
        budget_left: bool,
    },
    /// A recovering pipeline's backoff is over.
    RetryDue,
}

/// The state after `event` in `state`, or `None` when the event does not apply there (an API
/// call answers that with 409 Conflict).
pub fn next(state: State, event: Event) -> Option<State> {
    match state {
        State::Created => created::on(event),
        State::Deploying => deploying::on(event),
        State::Running => running::on(event),
        State::Savepointing => savepointing::on(event),
        State::Rescaling => rescaling::on(event),
        State::Recovering => recovering::on(event),
        State::Stopping => stopping::on(event),
        State::Stopped => stopped::on(event),
        State::Failed => failed::on(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [Event; 12] = [
        Event::Deploy,
        Event::WorkerStarted,
        Event::SpawnFailed,
        Event::Stop,
        Event::StopWithSavepoint,
        Event::Rescale,
        Event::Restart,
        Event::WorkerFinished,
        Event::WorkerStopped,
        Event::WorkerCrashed { budget_left: true },
        Event::WorkerCrashed { budget_left: false },
        Event::RetryDue,
    ];

    #[test]
    fn the_happy_path_and_its_detours() {
        let walk =
            |events: &[Event]| events.iter().try_fold(State::Created, |state, event| next(state, *event));
        use Event::*;
        assert_eq!(walk(&[Deploy, WorkerStarted]), Some(State::Running));
        assert_eq!(walk(&[Deploy, WorkerStarted, Stop, WorkerStopped]), Some(State::Stopped));
        assert_eq!(walk(&[Deploy, WorkerStarted, StopWithSavepoint, WorkerStopped]), Some(State::Stopped));
        assert_eq!(walk(&[Deploy, WorkerStarted, WorkerFinished]), Some(State::Stopped));
        assert_eq!(
            walk(&[Deploy, WorkerStarted, Rescale, WorkerStopped, WorkerStarted]),
            Some(State::Running)
        );
        assert_eq!(
            walk(&[Deploy, WorkerStarted, WorkerCrashed { budget_left: true }, RetryDue, WorkerStarted]),
            Some(State::Running)
        );
        assert_eq!(walk(&[Deploy, WorkerStarted, WorkerCrashed { budget_left: false }]), Some(State::Failed));
        assert_eq!(
            walk(&[Deploy, WorkerStarted, WorkerCrashed { budget_left: false }, Deploy]),
            Some(State::Deploying)
        );
        assert_eq!(walk(&[Deploy, SpawnFailed]), Some(State::Failed));
    }

    #[test]
    fn users_cannot_stop_what_is_not_running_or_start_what_is() {
        for state in [State::Created, State::Stopped, State::Failed] {
            assert_eq!(next(state, Event::Stop), None, "{state}");
            assert_eq!(next(state, Event::Rescale), None, "{state}");
            assert_eq!(next(state, Event::Restart), None, "{state}");
        }
        for state in [State::Running, State::Stopping, State::Savepointing, State::Rescaling] {
            assert_eq!(next(state, Event::Deploy), None, "{state}");
        }
    }

    #[test]
    fn a_worker_exit_never_leaves_a_state_that_claims_a_worker() {
        // Whatever a worker's exit looks like, the state that follows has no worker, or is
        // deploying a new one.
        for state in State::ALL.into_iter().filter(|state| state.has_worker()) {
            for event in [
                Event::WorkerFinished,
                Event::WorkerStopped,
                Event::WorkerCrashed { budget_left: true },
                Event::WorkerCrashed { budget_left: false },
            ] {
                let after = next(state, event).unwrap_or_else(|| panic!("{state} ignores {event:?}"));
                assert!(!after.has_worker(), "{state} + {event:?} → {after}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for state in State::ALL {
            assert_eq!(state.name().parse::<State>(), Ok(state));
        }
        // Every event is handled somewhere: no dead variants.
        for event in EVENTS {
            assert!(State::ALL.into_iter().any(|state| next(state, event).is_some()), "{event:?}");
        }
    }
}
