//! A container's life under shield: attached at createRuntime (its ruleset applied and verified,
//! its DNS proxy started), released at poststop, re-attached after a daemon restart, forgotten on
//! request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::Mutex;

use super::dns::dns_elements;
use super::{
    Container, ContainerError, ContainerGate, Containers, NamePolicyCell, Running, Snapshot,
    blocking, brief_snapshot, error_chain, mode_name, name_policy, release,
};
use crate::attach::{self, AttachError, Attachment, Reattached, micros};
use crate::dns::proxy::{Proxy, ProxyHandle};
use crate::intent::Intent;
use crate::learnt::LearntAddrs;
use crate::profiles::ProfileEntries;
use crate::ruleset;
use crate::store::ContainerState;

/// Which containers [`Containers::forget`] forgets.
#[derive(Clone, Copy, Debug)]
pub enum ForgetWhich<'a> {
    /// These (ids, unique id prefixes or names); every one must be stopped.
    Named(&'a [String]),
    /// Every stopped container.
    AllStopped,
}

/// A container [`Containers::forget`] forgot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forgotten {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
}

impl Containers {
    /// Attaches a container at createRuntime: its stored intent (a restart keeps every live
    /// change and the mode) or a fresh one, applied and verified in its namespace.
    pub async fn attach(
        &self,
        id: &str,
        name: &str,
        profiles: Vec<String>,
        pid: u32,
    ) -> Result<Snapshot, ContainerError> {
        let profile = self.profiles.compose(&profiles)?;
        let (entry, mut container) = self.lock_entry(id, name).await;
        let attached = self
            .attach_locked(&entry, &mut container, id, name, profiles, profile, pid)
            .await;
        if attached.is_err() && container.state.is_none() {
            // A container shield never attached leaves no trace: a leftover entry would make
            // later lookups of its name ambiguous.
            self.unlist(id, &entry);
        }
        attached
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the pieces of one attach, split from `attach` only to unlock on every path"
    )]
    async fn attach_locked(
        &self,
        entry: &Arc<Mutex<Container>>,
        container: &mut Container,
        id: &str,
        name: &str,
        profiles: Vec<String>,
        profile: ProfileEntries,
        pid: u32,
    ) -> Result<Snapshot, ContainerError> {
        let started = Instant::now();
        let stored = match container.state.clone() {
            Some(state) => Some(state),
            None => self
                .store
                .load(id)
                .map_err(|source| ContainerError::Store {
                    id: id.to_owned(),
                    source,
                })?,
        };
        let restarted = stored.is_some();
        let stored_before = stored.clone();
        let mut state = stored.unwrap_or_else(|| ContainerState::new(id, name, profiles.clone()));
        state.name = name.to_owned();
        state.profiles = profiles;
        let table = ruleset::build(
            &state
                .intent
                .policy(&profile.nets, &self.config.loopback_ports),
        );

        // A createRuntime without poststop (the runtime crashed) leaves old sockets: release.
        release(container.running.take());
        let kernel_error = |source| ContainerError::Kernel {
            id: id.to_owned(),
            source,
        };
        let (namespace, identity) = attach::open(pid).map_err(kernel_error)?;
        state.process = Some(identity);
        // Without a record of it, a restart could not restore this container, so the start
        // waits for it; but the record and the ruleset do not depend on each other, so the
        // record (an fsync, 1-2 ms on this kind of disk) is written while the kernel works.
        let saving = self.save_meanwhile(&state);
        let helpers = Arc::clone(&self.helpers);
        let mode = state.intent.mode;
        let attached = blocking(move || attach::attach(&helpers, &namespace, &table, mode))
            .await
            .and_then(|attached| attached.map_err(kernel_error))
            .and_then(|attachment| {
                self.start_dns(entry, id, name, &profile, &state.intent, attachment)
            });
        let kernel_done = Instant::now();
        let saved = saving.await;
        // On any failure the start is refused. A table that made it into the kernel stays,
        // enforcing, until the namespace goes away.
        let (attachment, names, dns) = match (attached, saved) {
            (Ok(running), Ok(())) => running,
            (Err(err), saved) => {
                // Put the record back as it was: a container that never ran under shield leaves
                // no state, a restarted one keeps its previous record.
                if saved.is_ok() {
                    self.restore_record(id, stored_before).await;
                }
                return Err(err);
            }
            (Ok((attachment, _, dns)), Err(err)) => {
                drop(dns);
                tokio::task::spawn_blocking(move || drop(attachment));
                return Err(err);
            }
        };
        let detail = format!(
            "pid {pid}, profiles {}, mode {}{}",
            state.profiles.join(":"),
            mode_name(state.intent.mode),
            if restarted {
                ", restarted with its stored policy"
            } else {
                ""
            }
        );
        let save_done = Instant::now();
        self.record(&state, "attach", "", &detail);
        tracing::debug!(
            container = %id,
            kernel_micros = micros(kernel_done - started),
            save_wait_micros = micros(save_done - kernel_done),
            audit_micros = micros(save_done.elapsed()),
            "attach timings"
        );
        container.state = Some(state);
        container.set_profile(profile);
        container.running = Some(Running {
            pid,
            attached_at: SystemTime::now(),
            attachment,
            learnt: LearntAddrs::default(),
            names,
            dns,
        });
        // Without the lists: the hook needs none of them, and they grow with the container's
        // live changes (an answer past the client's limit would stop the container starting).
        brief_snapshot(container)
    }

    /// Starts the DNS proxy of a container just attached, on the listeners of `attachment`.
    fn start_dns(
        &self,
        entry: &Arc<Mutex<Container>>,
        id: &str,
        name: &str,
        profile: &ProfileEntries,
        intent: &Intent,
        mut attachment: Attachment,
    ) -> Result<(Arc<Attachment>, Arc<NamePolicyCell>, ProxyHandle), ContainerError> {
        let listeners = attachment.take_dns_listeners();
        let attachment = Arc::new(attachment);
        let names = Arc::new(NamePolicyCell::new(name_policy(
            &profile.domains,
            intent,
            self.unlisted(),
        )));
        let gate = ContainerGate::new(id, name, entry, &attachment, &names, self.audit.clone());
        let thread = self.dns_threads.pick();
        let proxy = Arc::new(Proxy::new(
            gate,
            Arc::clone(&thread.forwarder),
            self.proxy.clone(),
        ));
        match proxy.serve(listeners, &thread.runtime) {
            Ok(dns) => Ok((attachment, names, dns)),
            Err(source) => {
                tokio::task::spawn_blocking(move || drop(attachment));
                Err(ContainerError::Dns {
                    id: id.to_owned(),
                    source,
                })
            }
        }
    }

    /// Forgets stopped containers: their state and change journal leave the disk and they
    /// leave the daemon, so a later container with the same id starts from its profiles alone.
    /// Their audit trails stay, with a last `forget` event.
    ///
    /// Containers named in `which` are all checked first: an unknown, ambiguous or running one
    /// is an error, and nothing is forgotten. (A store failure midway is reported with the
    /// containers already forgotten.)
    pub async fn forget(&self, which: ForgetWhich<'_>) -> Result<Vec<Forgotten>, ContainerError> {
        let chosen: BTreeMap<String, Arc<Mutex<Container>>> = match which {
            ForgetWhich::Named(queries) => queries
                .iter()
                .map(|query| self.find(query))
                .collect::<Result<_, _>>()?,
            ForgetWhich::AllStopped => self
                .entries()
                .iter()
                .map(|(id, entry)| (id.clone(), Arc::clone(&entry.container)))
                .collect(),
        };
        // Every chosen container is locked (in id order; no other path holds two container
        // locks at once) before anything is removed: none can start meanwhile.
        let mut held = Vec::with_capacity(chosen.len());
        for (id, entry) in chosen {
            let guard = Arc::clone(&entry).lock_owned().await;
            let Some(state) = guard.state.as_ref() else {
                // Forgotten meanwhile (or never attached): nothing to do.
                continue;
            };
            if guard.running.is_some() {
                match which {
                    ForgetWhich::Named(_) => {
                        return Err(ContainerError::Running {
                            name: state.name.clone(),
                            id,
                        });
                    }
                    ForgetWhich::AllStopped => continue,
                }
            }
            held.push((id, entry, guard));
        }
        let mut forgotten: Vec<Forgotten> = Vec::with_capacity(held.len());
        for (id, entry, mut guard) in held {
            let store = self.store.clone();
            let removing = id.clone();
            let removed = tokio::task::spawn_blocking(move || store.remove(&removing))
                .await
                .map_err(|err| {
                    ContainerError::Internal(format!("the removal's task failed: {err}"))
                })?;
            if let Err(source) = removed {
                return Err(ContainerError::Forget {
                    id,
                    before: forgotten.into_iter().map(|f| f.id).collect(),
                    source,
                });
            }
            let Some(state) = guard.state.take() else {
                continue;
            };
            self.record(
                &state,
                "forget",
                "",
                "stopped container forgotten: its intent removed",
            );
            self.audit.close(&id);
            *guard = Container::default();
            self.unlist(&id, &entry);
            tracing::info!(container = %id, name = %state.name, "container forgotten");
            forgotten.push(Forgotten {
                id,
                name: state.name,
            });
        }
        Ok(forgotten)
    }

    /// Records a container's stop (poststop): its sockets are released, its intent kept.
    /// Returns `false` when the id is unknown.
    pub async fn stopped(&self, id: &str) -> Result<bool, ContainerError> {
        let Ok((_, container)) = self.find_exact(id) else {
            return Ok(false);
        };
        let mut container = container.lock_owned().await;
        let Some(mut state) = container.state.clone() else {
            return Ok(false);
        };
        release(container.running.take());
        state.process = None;
        self.record(&state, "detach", "", "container stopped, sockets released");
        self.audit.close(id);
        container.state = Some(state.clone());
        // The stop is recorded after the answer: the runtime waits for this hook, and nothing
        // rides on the record (a stale process identity is harmless, because a restore checks
        // the process start time). The container's lock is held until it is written, so no
        // later change or restart of this container can overtake it.
        let store = self.store.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let _held = container;
            if let Err(source) = store.save(&state) {
                tracing::warn!(container = %id, error = %source, "cannot record the stop");
            }
        });
        Ok(true)
    }

    /// Loads every stored container at start-up: the ones still running (same process) are
    /// re-attached and verified, the others are recorded as stopped.
    pub async fn restore(&self) {
        let (states, errors) = self.store.load_all();
        for error in errors {
            tracing::error!(error = %error, "cannot load a container's state; it is left as it is");
        }
        for state in states {
            let id = state.id.clone();
            if let Err(err) = self.restore_one(state).await {
                tracing::error!(container = %id, error = %error_chain(&err), "cannot restore container");
            }
        }
    }

    async fn restore_one(&self, mut state: ContainerState) -> Result<(), ContainerError> {
        let entry = self.entry(&state.id, &state.name);
        let mut container = entry.lock().await;
        let profile = match self.profiles.compose(&state.profiles) {
            Ok(profile) => profile,
            Err(err) => {
                // The kernel keeps enforcing the table it has; the container is known, so that
                // the operator sees it, but shield cannot rebuild its policy until the profile
                // is fixed.
                container.state = Some(state);
                return Err(err.into());
            }
        };
        let Some(identity) = state.process else {
            container.state = Some(state);
            container.set_profile(profile);
            return Ok(());
        };
        let expected = ruleset::build(
            &state
                .intent
                .policy(&profile.nets, &self.config.loopback_ports),
        );
        let helpers = Arc::clone(&self.helpers);
        let mode = state.intent.mode;
        let outcome =
            blocking(move || attach::reattach(&helpers, identity, &expected, mode)).await?;
        match outcome {
            Ok((attachment, kernel, how)) => {
                let mut learnt = LearntAddrs::default();
                let now = Instant::now();
                for (addr, timeout) in dns_elements(&kernel) {
                    // The original name is not in the kernel; the address stays until its
                    // element expires, and a deny of a name cannot withdraw it before then.
                    learnt.learn("(restored)", addr, timeout, now);
                }
                let detail = match how {
                    Reattached::Adopted => "daemon restarted; kernel table verified and kept",
                    Reattached::Reapplied => {
                        "daemon restarted; kernel table differed and was re-applied"
                    }
                };
                let (attachment, names, dns) = match self.start_dns(
                    &entry,
                    &state.id,
                    &state.name,
                    &profile,
                    &state.intent,
                    attachment,
                ) {
                    Ok(started) => started,
                    Err(err) => {
                        // The kernel keeps enforcing the verified table; without a proxy the
                        // container's names do not resolve, which fails closed.
                        container.state = Some(state);
                        container.set_profile(profile);
                        return Err(err);
                    }
                };
                self.record(&state, "restore", "", detail);
                tracing::info!(container = %state.id, pid = identity.pid, ?how, "container restored");
                container.running = Some(Running {
                    pid: identity.pid,
                    attached_at: SystemTime::now(),
                    attachment,
                    learnt,
                    names,
                    dns,
                });
            }
            Err(AttachError::ProcessGone { .. } | AttachError::Namespace(_)) => {
                state.process = None;
                if let Err(err) = self.store.save(&state) {
                    tracing::warn!(container = %state.id, error = %err, "cannot record the stop");
                }
                self.record(&state, "stopped", "", "stopped while the daemon was down");
                self.audit.close(&state.id);
            }
            Err(source) => {
                container.state = Some(state.clone());
                container.set_profile(profile);
                return Err(ContainerError::Kernel {
                    id: state.id,
                    source,
                });
            }
        }
        container.state = Some(state);
        container.set_profile(profile);
        Ok(())
    }
}
