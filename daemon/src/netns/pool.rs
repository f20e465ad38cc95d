//! One helper kept started ahead of time, so that an attach does not wait for an exec.
//!
//! Each helper still serves exactly one request and exits: the pool only moves the start-up of
//! the next helper off the attach path. Blocking, like [`create_sockets`](super::create_sockets).

use std::sync::{Mutex, PoisonError};

use super::NetnsError;
use super::namespace::ContainerNamespace;
use super::spawn::{ExitingHelper, HelperCommand, IdleHelper};
use super::wire::{ContainerSockets, SocketRequest};

/// Helpers for the daemon: at most one idle helper waits for the next attach, and helpers that
/// have served wait here to be reaped.
#[derive(Debug)]
pub struct HelperPool {
    command: HelperCommand,
    idle: Mutex<Option<IdleHelper>>,
    exiting: Mutex<Vec<ExitingHelper>>,
}

impl HelperPool {
    /// A pool that starts helpers with `command`; it starts none until [`Self::replenish`].
    pub fn new(command: HelperCommand) -> Self {
        Self {
            command,
            idle: Mutex::new(None),
            exiting: Mutex::new(Vec::new()),
        }
    }

    /// How helpers are started.
    pub fn command(&self) -> &HelperCommand {
        &self.command
    }

    /// Creates the requested sockets inside `ns` with the idle helper, or with a fresh one when
    /// none is waiting (concurrent attaches, or a helper that died while idle).
    pub fn create_sockets(
        &self,
        ns: &ContainerNamespace,
        request: &SocketRequest,
    ) -> Result<ContainerSockets, NetnsError> {
        let served = match self
            .take_idle()
            .map(|idle| idle.create_sockets(ns, request))
        {
            // A helper that died while it waited (killed by someone, OOM) is no reason to fail
            // the attach: a fresh one gives the real answer.
            Some(Err(NetnsError::HelperDied { .. })) | None => {
                IdleHelper::spawn(&self.command)?.create_sockets(ns, request)
            }
            Some(outcome) => outcome,
        };
        let (sockets, exiting) = served?;
        self.exiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(exiting);
        Ok(sockets)
    }

    /// Reaps the helpers that have served and starts an idle helper if none waits. Call it off
    /// the request path, after an attach.
    pub fn replenish(&self) -> Result<(), NetnsError> {
        let exiting =
            std::mem::take(&mut *self.exiting.lock().unwrap_or_else(PoisonError::into_inner));
        for helper in exiting {
            if let Err(err) = helper.reap() {
                tracing::warn!(error = %err, "a namespace helper misbehaved after handing over its sockets");
            }
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.is_none() {
            *idle = Some(IdleHelper::spawn(&self.command)?);
        }
        Ok(())
    }

    fn take_idle(&self) -> Option<IdleHelper> {
        // Only an Option is swapped under the lock, so a poisoned lock is still consistent.
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
