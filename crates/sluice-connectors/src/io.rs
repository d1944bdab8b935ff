//! [`IoRuntime`]: the small tokio runtime a reader or writer of an async client (NATS, MQTT)
//! owns, and blocking on it from timely worker threads, which are not async.

use std::future::Future;

use sluice_runtime::{Error, Result};

/// A one-thread tokio runtime that drives a connector's client in the background (its
/// connection, acknowledgements, reconnects) while a timely worker calls in synchronously.
#[derive(Debug)]
pub(crate) struct IoRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl IoRuntime {
    /// Starts the runtime; `name` names its thread (e.g. `sluice-nats`).
    pub(crate) fn start(name: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| Error::external(format!("starting the {name} client runtime"), e))?;
        Ok(Self { runtime: Some(runtime) })
    }

    /// The runtime's handle, to spawn background tasks on.
    pub(crate) fn handle(&self) -> Result<&tokio::runtime::Handle> {
        Ok(self.runtime()?.handle())
    }

    /// Makes the runtime current on this thread until the guard is dropped, for clients
    /// whose constructors spawn tasks.
    pub(crate) fn enter(&self) -> Result<tokio::runtime::EnterGuard<'_>> {
        Ok(self.runtime()?.enter())
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        self.runtime.as_ref().ok_or_else(|| Error::internal("a connector's runtime was used after shutdown"))
    }

    /// Runs `future` to completion, blocking the calling thread. From inside another runtime
    /// (where blocking would panic) it blocks a scoped helper thread instead.
    pub(crate) fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self.runtime()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(runtime.block_on(future));
        }
        std::thread::scope(|scope| scope.spawn(|| runtime.block_on(future)).join())
            .map_err(|_| Error::internal("a connector's client task panicked"))
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Never blocks, so it is safe wherever the last handle goes, even inside a runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
