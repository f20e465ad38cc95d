//! The containers the daemon manages: their intent (persisted), their kernel state (while they
//! run), and every operation on them.
//!
//! Changes to one container are serialised by its own lock, held from the first check to the
//! last write; different containers proceed in parallel. Each operation goes kernel first
//! (one verified batch), then disk; if the disk write fails the kernel is put back, so that what
//! the daemon reports, what the kernel enforces and what survives a restart never disagree.

mod dns;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex as SyncMutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::Either;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::attach::{self, AttachError, Attachment, Reattached, micros};
use crate::audit::{AuditEvent, AuditLog};
use crate::config::Config;
use crate::dns::names::{NamePolicy, Reason, Unlisted};
use crate::dns::proxy::{Proxy, ProxyHandle, ProxySettings};
use crate::dns::servers::UpstreamServers;
use crate::dns::upstream::Forwarder;
use crate::intent::{Applied, Direction, Intent, Target};
use crate::journal_sync::JournalSync;
use crate::learnt::LearntAddrs;
use crate::netns::HelperPool;
use crate::profiles::{DomainPattern, ProfileEntries, ProfileError, ProfileStore};
use crate::resolve::{HostResolver, Learnt};
use crate::ruleset::{
    self, ElementChanges, Family, IpRange, Mode, ProfileIndex, Set, SetElement, SetKind, Table,
};
use crate::store::{
    ContainerState, Durability, JournalAction, JournalEntry, JournalMark, Store, StoreError,
};

pub use dns::{ContainerGate, NamePolicyCell, name_policy};

/// Why an operation on a container failed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A container reference does not resolve.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// A profile is unknown or invalid.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The kernel side failed.
    #[error("container {id}")]
    Kernel {
        /// The container.
        id: String,
        /// What failed.
        #[source]
        source: AttachError,
    },
    /// The state could not be saved; the kernel was put back as it was.
    #[error("container {id}: cannot save its state (the change was undone)")]
    Store {
        /// The container.
        id: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The DNS proxy could not be started on the container's listeners.
    #[error("container {id}: cannot start its DNS proxy")]
    Dns {
        /// The container.
        id: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The container runs, and the operation is for stopped containers only.
    #[error("container {name} ({}) is running: stop it first", short_id(id))]
    Running {
        /// The container.
        id: String,
        /// Its display name.
        name: String,
    },
    /// A stopped container's state could not be removed; it is still known. Containers listed
    /// in `before` (earlier in id order) were forgotten.
    #[error(
        "container {id}: cannot remove its state (forgotten before it: {})",
        list_or_none(before)
    )]
    Forget {
        /// The container.
        id: String,
        /// The containers forgotten before the failure.
        before: Vec<String>,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// A blocking task died (a bug: it panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The first 12 characters of a container id, as `podman ps` shows it.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `a, b` or `none`, for error messages.
fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Whether `entries` lists `entry` for `id` (and not another entry made for the same id since).
fn lists(entries: &BTreeMap<String, Entry>, id: &str, entry: &Arc<Mutex<Container>>) -> bool {
    entries
        .get(id)
        .is_some_and(|listed| Arc::ptr_eq(&listed.container, entry))
}

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

/// Why a container reference does not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Nothing matches.
    #[error("no container matches {0:?} (see 'shieldctl ps')")]
    NotFound(String),
    /// An id prefix matches several containers.
    #[error("{query:?} matches {count} containers: give more of the id, or the name")]
    Ambiguous {
        /// What was asked for.
        query: String,
        /// How many matched.
        count: usize,
    },
}

/// A container as the daemon knows it.
#[derive(Debug, Default)]
pub struct Container {
    /// Persisted intent; `None` until the first successful attach (or restore) of this id.
    pub state: Option<ContainerState>,
    /// The composed profile entries the ruleset was built from.
    pub profile: ProfileEntries,
    /// The profile's addresses and networks, indexed for live changes.
    pub profile_index: ProfileIndex,
    /// Present while the container runs.
    pub running: Option<Running>,
}

impl Container {
    /// Records the profile the container's ruleset is built from.
    fn set_profile(&mut self, profile: ProfileEntries) {
        self.profile_index = ProfileIndex::new(&profile.nets);
        self.profile = profile;
    }
}

/// A running container's kernel side.
#[derive(Debug)]
pub struct Running {
    /// Pid of the container's init process.
    pub pid: u32,
    /// When the ruleset was last applied and verified on attach or restore.
    pub attached_at: SystemTime,
    /// Sockets inside the container's network namespace.
    pub attachment: Arc<Attachment>,
    /// Addresses learnt from DNS, in the dns sets.
    pub learnt: LearntAddrs,
    /// The names the container may resolve, as its DNS proxy reads them.
    pub names: Arc<NamePolicyCell>,
    /// The container's DNS proxy; dropping it stops the proxy and closes its sockets.
    pub dns: ProxyHandle,
}

/// A registry entry: the id and name for lookups, the container behind its own lock.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    container: Arc<Mutex<Container>>,
}

/// What one target of an allow or deny did.
#[derive(Clone, Debug)]
pub struct TargetOutcome {
    /// The target, canonical.
    pub target: Target,
    /// Whether the intent changed.
    pub changed: bool,
    /// For a domain allow: the addresses let through now.
    pub resolved: Vec<Learnt>,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Let the targets through.
    Allow,
    /// Forbid the targets.
    Deny,
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    fn journalled(self) -> JournalAction {
        match self {
            Self::Allow => JournalAction::Allow,
            Self::Deny => JournalAction::Deny,
        }
    }

    fn direction(self) -> Direction {
        match self {
            Self::Allow => Direction::Allow,
            Self::Deny => Direction::Deny,
        }
    }

    /// How durable the change's journal line must be before the change is answered. A deny
    /// must survive a power loss: losing it would reopen what it closed. An allow only widens
    /// (lifting a deny included), so losing it to a power loss fails closed; it is answered
    /// once written, which a crash of the daemon cannot undo, and synced a moment later
    /// ([`JournalSync`]).
    fn durability(self) -> Durability {
        match self {
            Self::Allow => Durability::Written,
            Self::Deny => Durability::Synced,
        }
    }
}

/// A snapshot of one container, for answers.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Persisted intent.
    pub state: ContainerState,
    /// Profile domains.
    pub domains: Vec<DomainPattern>,
    /// Number of entries in the allow sets' policy.
    pub allowed_addresses: usize,
    /// Whether the state's lists of live allows and denies were left out (answers to a
    /// change); its mode and everything else are there.
    pub lists_omitted: bool,
    /// `(pid, attached_at)` while running.
    pub running: Option<(u32, SystemTime)>,
}

/// Every container, and what operating on them needs.
#[derive(Debug)]
pub struct Containers {
    config: Config,
    profiles: ProfileStore,
    store: Store,
    journal_sync: Arc<JournalSync>,
    audit: AuditLog,
    helpers: Arc<HelperPool>,
    resolver: Option<HostResolver>,
    forwarder: Arc<Forwarder>,
    proxy: ProxySettings,
    entries: SyncMutex<BTreeMap<String, Entry>>,
}

impl Containers {
    /// A manager with no containers loaded yet (see [`Self::restore`]).
    pub fn new(
        config: Config,
        profiles: ProfileStore,
        store: Store,
        helpers: Arc<HelperPool>,
    ) -> Self {
        let resolver = match HostResolver::new(&config.dns) {
            Ok(resolver) => Some(resolver),
            Err(err) => {
                tracing::warn!(error = %err, "no host resolver: domain allows will not resolve at once");
                None
            }
        };
        let audit = AuditLog::new(&store);
        let servers = UpstreamServers::new(&config.dns).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "no upstream resolvers: allowed names will get SERVFAIL");
            UpstreamServers::fixed(Vec::new())
        });
        let forwarder = Arc::new(Forwarder::new(servers, config.dns.timeout));
        let proxy = ProxySettings::from_config(&config.dns);
        Self {
            config,
            profiles,
            journal_sync: JournalSync::new(store.clone()),
            store,
            audit,
            helpers,
            resolver,
            forwarder,
            proxy,
            entries: SyncMutex::new(BTreeMap::new()),
        }
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The profile store.
    pub fn profiles(&self) -> &ProfileStore {
        &self.profiles
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The helper pool.
    pub fn helpers(&self) -> &Arc<HelperPool> {
        &self.helpers
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // Entries are inserted whole, so a poisoned lock is still consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `id`, created (empty) if new.
    fn entry(&self, id: &str, name: &str) -> Arc<Mutex<Container>> {
        let mut entries = self.entries();
        let entry = entries.entry(id.to_owned()).or_insert_with(|| Entry {
            name: name.to_owned(),
            container: Arc::default(),
        });
        entry.name = name.to_owned();
        Arc::clone(&entry.container)
    }

    /// The entry for `id` (created if new), locked. An entry forgotten while this waited for
    /// its lock is not used (a container attached through it would be out of everyone's
    /// sight): the next one is taken.
    async fn lock_entry(
        &self,
        id: &str,
        name: &str,
    ) -> (Arc<Mutex<Container>>, OwnedMutexGuard<Container>) {
        loop {
            let entry = self.entry(id, name);
            let guard = Arc::clone(&entry).lock_owned().await;
            if self.is_listed(id, &entry) {
                return (entry, guard);
            }
        }
    }

    /// Whether `entry` is the one listed for `id`.
    fn is_listed(&self, id: &str, entry: &Arc<Mutex<Container>>) -> bool {
        lists(&self.entries(), id, entry)
    }

    /// Resolves an id, a name, or a unique id prefix to a known container.
    pub fn find(&self, query: &str) -> Result<(String, Arc<Mutex<Container>>), LookupError> {
        let entries = self.entries();
        if let Some(entry) = entries.get(query) {
            return Ok((query.to_owned(), Arc::clone(&entry.container)));
        }
        let by_name: Vec<_> = entries.iter().filter(|(_, e)| e.name == query).collect();
        let by_prefix: Vec<_> = entries
            .iter()
            .filter(|(id, _)| !query.is_empty() && id.starts_with(query))
            .collect();
        let matches = if by_name.is_empty() {
            by_prefix
        } else {
            by_name
        };
        match matches.as_slice() {
            [(id, entry)] => Ok(((*id).clone(), Arc::clone(&entry.container))),
            [] => Err(LookupError::NotFound(query.to_owned())),
            many => Err(LookupError::Ambiguous {
                query: query.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// Every container that has state, ordered by id.
    pub async fn snapshots(&self) -> Vec<Snapshot> {
        let containers: Vec<_> = self
            .entries()
            .values()
            .map(|entry| Arc::clone(&entry.container))
            .collect();
        let mut snapshots = Vec::with_capacity(containers.len());
        for container in containers {
            if let Some(snapshot) = snapshot(&*container.lock().await) {
                snapshots.push(snapshot);
            }
        }
        snapshots
    }

    fn record(&self, state: &ContainerState, action: &str, target: &str, detail: &str) {
        let event: AuditEvent = AuditLog::event(&state.id, &state.name, action, target, detail);
        self.record_all(state, vec![event]);
    }

    /// Records events of container `state` at once (one write to its trail).
    fn record_all(&self, state: &ContainerState, events: Vec<AuditEvent>) {
        if let Err(err) = self.audit.record_all(events) {
            tracing::warn!(container = %state.id, error = %err, "cannot write the audit trail");
        }
    }

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

    /// Takes `entry` off the list, if it is still the one listed for `id`.
    fn unlist(&self, id: &str, entry: &Arc<Mutex<Container>>) {
        let mut entries = self.entries();
        if lists(&entries, id, entry) {
            entries.remove(id);
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
        snapshot(container).ok_or_else(|| ContainerError::Internal("attached without state".into()))
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
        let proxy = Arc::new(Proxy::new(
            gate,
            Arc::clone(&self.forwarder),
            self.proxy.clone(),
        ));
        match proxy.serve(listeners) {
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

    /// Starts writing `state` on the blocking pool at once, for work that goes on meanwhile;
    /// the returned future gives the outcome.
    fn save_meanwhile(
        &self,
        state: &ContainerState,
    ) -> impl Future<Output = Result<(), ContainerError>> + use<> {
        let state = state.clone();
        self.store_meanwhile(&state.id.clone(), move |store| store.save(&state))
    }

    /// Appends `entry` to container `id`'s journal, for work that goes on meanwhile; the
    /// returned future gives the outcome. A line that must be synced is appended on the blocking
    /// pool (the `fdatasync` waits on the disk); one only written costs a few microseconds of
    /// page-cache write, less than the hop to another thread, and is appended here and now.
    fn journal_meanwhile(
        &self,
        id: &str,
        entry: JournalEntry,
        durability: Durability,
    ) -> impl Future<Output = Result<JournalMark, ContainerError>> + use<> {
        match durability {
            Durability::Written => Either::Left(std::future::ready(
                self.store
                    .append(id, &entry, durability)
                    .map_err(|source| ContainerError::Store {
                        id: id.to_owned(),
                        source,
                    }),
            )),
            Durability::Synced => {
                let owned_id = id.to_owned();
                Either::Right(
                    self.store_meanwhile(id, move |store| {
                        store.append(&owned_id, &entry, durability)
                    }),
                )
            }
        }
    }

    /// Runs `work` on the store on the blocking pool at once; the returned future gives its
    /// outcome, its error as container `id`'s.
    fn store_meanwhile<T, W>(
        &self,
        id: &str,
        work: W,
    ) -> impl Future<Output = Result<T, ContainerError>> + use<T, W>
    where
        T: Send + 'static,
        W: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        let id = id.to_owned();
        let working = tokio::task::spawn_blocking(move || work(&store));
        async move {
            working
                .await
                .map_err(|err| ContainerError::Internal(err.to_string()))?
                .map_err(|source| ContainerError::Store { id, source })
        }
    }

    /// Takes back a journalled change that failed in the kernel; whether it could (a failure
    /// is logged).
    async fn take_back(&self, id: &str, mark: JournalMark) -> bool {
        let store = self.store.clone();
        let owned_id = id.to_owned();
        let failure = match blocking(move || store.take_back(&owned_id, mark)).await {
            Ok(Ok(())) => return true,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::error!(container = %id, error = %failure, "cannot take back a change the kernel refused");
        false
    }

    /// Puts a container's record back as it was before a failed attach or change wrote it: the
    /// previous state, or none at all. Best effort (a failure is logged): what it would leave is
    /// a record of a change the client was told failed.
    async fn restore_record(&self, id: &str, before: Option<ContainerState>) {
        let store = self.store.clone();
        let owned_id = id.to_owned();
        let restored = blocking(move || match before {
            Some(state) => store.save(&state),
            None => store.remove(&owned_id),
        })
        .await;
        let failure = match restored {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::error!(container = %id, error = %failure, "cannot put back the record after a failure");
    }

    fn unlisted(&self) -> Unlisted {
        self.config.dns.unlisted
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

    fn find_exact(&self, id: &str) -> Result<(String, Arc<Mutex<Container>>), LookupError> {
        self.entries()
            .get(id)
            .map(|entry| (id.to_owned(), Arc::clone(&entry.container)))
            .ok_or_else(|| LookupError::NotFound(id.to_owned()))
    }

    /// Allows or denies `targets` on one container, as one atomic change.
    ///
    /// What it costs follows the size of the change, not of the container's lists: the intent
    /// is changed in place (and changed back on failure), the kernel is told only the touched
    /// elements, the change is journalled rather than the state rewritten, and the answer
    /// carries the container without its lists.
    pub async fn change(
        &self,
        query: &str,
        targets: Vec<Target>,
        change: Change,
    ) -> Result<(Snapshot, Vec<TargetOutcome>), ContainerError> {
        let (id, container) = self.find(query)?;
        let mut guard = container.lock_owned().await;
        if guard.state.is_none() {
            return Err(LookupError::NotFound(query.to_owned()).into());
        }
        let allows_domain = change == Change::Allow
            && targets
                .iter()
                .any(|target| matches!(target, Target::Domain(_)));
        // Resolved before anything changes: this waits on the network.
        let resolved = if allows_domain {
            self.resolve_allowed_domains(&id, &targets).await
        } else {
            vec![Vec::new(); targets.len()]
        };

        let container = &mut *guard;
        let Some(state) = container.state.as_mut() else {
            return Err(ContainerError::Internal("changed without state".into()));
        };
        let applied = state.intent.apply(change.direction(), &targets);
        let outcomes: Vec<TargetOutcome> = applied
            .moves
            .iter()
            .zip(resolved)
            .map(|(moved, resolved)| TargetOutcome {
                target: moved.target.clone(),
                changed: moved.changed(),
                resolved,
            })
            .collect();
        if !allows_domain && !applied.changed_anything() {
            // Every target is already as asked: nothing to apply, nothing to save. (A domain
            // allow still goes on: resolving again refreshes its addresses.)
            return Ok((brief_snapshot(container)?, outcomes));
        }

        // The change is answered once it is both in the kernel and in the journal (on disk for
        // a deny, see `Change::durability`). The two do not depend on each other, so the change
        // is journalled while the kernel works, and each is taken back if the other fails. A
        // domain allow that changed nothing still refreshes the kernel, but has nothing to
        // record.
        let started = Instant::now();
        let seq = state.journal_seq + 1;
        let journalling = applied.changed_anything().then(|| {
            self.journal_meanwhile(
                &id,
                JournalEntry {
                    seq,
                    action: change.journalled(),
                    targets: applied
                        .moves
                        .iter()
                        .filter(|moved| moved.changed())
                        .map(|moved| moved.target.to_string())
                        .collect(),
                },
                change.durability(),
            )
        });
        let kernel = match container.running.as_mut() {
            Some(running) => Some(
                apply_change(
                    &id,
                    running,
                    &container.profile,
                    &container.profile_index,
                    &state.intent,
                    &applied,
                    &outcomes,
                    self.unlisted(),
                )
                .await,
            ),
            None => None,
        };
        let kernel_done = started.elapsed();
        let journalled = match journalling {
            Some(journalling) => journalling.await.map(Some),
            None => Ok(None),
        };
        tracing::debug!(
            container = %id,
            kernel_micros = micros(kernel_done),
            kernel_and_journal_micros = micros(started.elapsed()),
            "change stages"
        );
        let mark = match (kernel, journalled) {
            (None | Some(Ok(_)), Ok(mark)) => mark,
            (Some(Err(err)), journalled) => {
                state.intent.undo(&applied);
                if let Ok(Some(mark)) = journalled
                    && !self.take_back(&id, mark).await
                {
                    // The line is still in the journal, and a restart would replay it: fold
                    // the state as it is (without the change) into the state file, which
                    // empties the journal. The line's number is used up.
                    state.journal_seq = seq;
                    self.compact_after(guard);
                }
                return Err(err);
            }
            (Some(Ok(undo)), Err(err)) => {
                state.intent.undo(&applied);
                if let Some(running) = container.running.as_mut() {
                    undo_change(&id, running, undo).await;
                }
                return Err(err);
            }
            (None, Err(err)) => {
                state.intent.undo(&applied);
                return Err(err);
            }
        };
        if mark.is_some() {
            state.journal_seq = seq;
            if change.durability() == Durability::Written {
                self.journal_sync.request(&id);
            }
        }
        let events = outcomes
            .iter()
            .filter(|outcome| outcome.changed)
            .map(|outcome| {
                let detail = match outcome.resolved.as_slice() {
                    [] => outcome.target.kind().to_owned(),
                    resolved => format!(
                        "{}; resolved now: {}",
                        outcome.target.kind(),
                        resolved
                            .iter()
                            .map(|learnt| learnt.addr.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                AuditLog::event(
                    &state.id,
                    &state.name,
                    change.action(),
                    &outcome.target.to_string(),
                    &detail,
                )
            })
            .collect();
        self.record_all(state, events);
        let snapshot = brief_snapshot(container)?;
        if mark.is_some_and(|mark| mark.compaction_due) {
            self.compact_after(guard);
        }
        Ok((snapshot, outcomes))
    }

    /// Folds the journal into the state file once the change has been answered. The
    /// container's lock is held until it is written: the next change waits for the fold
    /// instead of racing it.
    fn compact_after(&self, held: OwnedMutexGuard<Container>) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let Some(state) = &held.state else {
                return;
            };
            // Nothing is lost if this fails: the journal keeps every change, and the next
            // change tries again.
            if let Err(err) = store.save(state) {
                tracing::warn!(container = %state.id, error = %err, "cannot fold the change journal into the state file");
            }
        });
    }

    /// Resolves every domain the change allows (on the host's resolver) so that a name the
    /// container has already resolved works at once; the addresses of each target, in order
    /// (none for an address, a `*.` pattern or a failure). A failure is logged, not fatal: the
    /// allow itself stands and the DNS proxy lets the addresses through on the next query.
    async fn resolve_allowed_domains(&self, id: &str, targets: &[Target]) -> Vec<Vec<Learnt>> {
        let mut resolved = vec![Vec::new(); targets.len()];
        let Some(resolver) = &self.resolver else {
            return resolved;
        };
        for (target, addresses) in targets.iter().zip(&mut resolved) {
            let Target::Domain(domain) = target else {
                continue;
            };
            if domain.as_str().starts_with("*.") {
                continue;
            }
            match resolver.resolve(domain.as_str()).await {
                Ok(learnt) => *addresses = learnt,
                Err(err) => {
                    tracing::warn!(container = %id, domain = %domain, error = %err, "cannot resolve an allowed domain now");
                }
            }
        }
        resolved
    }

    /// Switches a container's mode: one full, verified table replacement while it runs.
    pub async fn set_mode(
        &self,
        query: &str,
        mode: Mode,
    ) -> Result<(Snapshot, Mode), ContainerError> {
        let (id, container) = self.find(query)?;
        let mut container = container.lock().await;
        let Some(state) = container.state.clone() else {
            return Err(LookupError::NotFound(query.to_owned()).into());
        };
        let previous = state.intent.mode;
        let mut new_state = state.clone();
        new_state.intent.mode = mode;
        let profile = container.profile.clone();
        let build = |intent: &Intent| {
            ruleset::build(&intent.policy(&profile.nets, &self.config.loopback_ports))
        };
        let names = Arc::new(name_policy(
            &profile.domains,
            &new_state.intent,
            self.unlisted(),
        ));
        let old_names = match container.running.as_mut() {
            Some(running) => {
                replace_table(&id, running, build(&new_state.intent), mode).await?;
                let old_names = running.names.current();
                running.names.replace(names);
                Some(old_names)
            }
            None => None,
        };
        if let Err(err) = self.save_meanwhile(&new_state).await {
            if let (Some(running), Some(old_names)) = (container.running.as_mut(), old_names) {
                match replace_table(&id, running, build(&state.intent), previous).await {
                    Ok(()) => running.names.replace(old_names),
                    Err(err) => {
                        tracing::error!(container = %id, error = %err, "cannot undo a mode change");
                    }
                }
            }
            return Err(err);
        }
        if previous != mode {
            let detail = format!("{} → {}", mode_name(previous), mode_name(mode));
            self.record(&new_state, "mode", mode_name(mode), &detail);
        }
        container.state = Some(new_state);
        let snapshot = snapshot(&container)
            .ok_or_else(|| ContainerError::Internal("mode change without state".into()))?;
        Ok((snapshot, previous))
    }

    /// The table the kernel holds for a running container now, rendered; empty when stopped.
    pub async fn ruleset(&self, query: &str) -> Result<(Snapshot, String), ContainerError> {
        let (id, container) = self.find(query)?;
        let container = container.lock().await;
        let snapshot =
            snapshot(&container).ok_or_else(|| LookupError::NotFound(query.to_owned()))?;
        let Some(running) = &container.running else {
            return Ok((snapshot, String::new()));
        };
        let attachment = Arc::clone(&running.attachment);
        let table = blocking(move || attach::read_back(&attachment))
            .await?
            .map_err(|source| ContainerError::Kernel { id, source })?;
        Ok((
            snapshot,
            table
                .map(|table| ruleset::render(&table))
                .unwrap_or_default(),
        ))
    }

    /// The names a running container's DNS proxy let through, with their addresses and the
    /// time each has left; empty when the container is stopped.
    pub async fn learnt_names(
        &self,
        query: &str,
    ) -> Result<(Snapshot, BTreeMap<String, Vec<(IpAddr, Duration)>>), ContainerError> {
        let (_, container) = self.find(query)?;
        let container = container.lock().await;
        let snapshot =
            snapshot(&container).ok_or_else(|| LookupError::NotFound(query.to_owned()))?;
        let names = container
            .running
            .as_ref()
            .map(|running| running.learnt.by_name(Instant::now()))
            .unwrap_or_default();
        Ok((snapshot, names))
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

/// Element changes up to this many are applied on the async thread itself. The kernel handles a
/// netlink request while it is sent, so the batch and its verifying lookups wait on nothing but
/// the CPU (tens of microseconds for a few elements, measured in `nft_changes`), less than a
/// hop to the blocking pool and back costs; larger changes take that hop.
const INLINE_ELEMENTS: usize = 16;

/// What a live change needs to be undone.
#[derive(Debug)]
struct Undo {
    changes: ElementChanges,
    learnt: LearntAddrs,
    names: Arc<NamePolicy>,
}

/// Applies the kernel side of an allow/deny to a running container, whose `intent` already
/// holds the change: the touched elements of the address and network sets plus the dns
/// elements the change adds or withdraws, in one verified batch; then puts the new name policy
/// in force for the container's DNS proxy.
#[allow(
    clippy::too_many_arguments,
    reason = "the parts of the container a change reads, borrowed apart from the one it writes"
)]
async fn apply_change(
    id: &str,
    running: &mut Running,
    profile: &ProfileEntries,
    profile_index: &ProfileIndex,
    intent: &Intent,
    applied: &Applied,
    outcomes: &[TargetOutcome],
    unlisted: Unlisted,
) -> Result<Undo, ContainerError> {
    let names = Arc::new(name_policy(&profile.domains, intent, unlisted));
    let now = Instant::now();
    let mut learnt = running.learnt.clone();
    let mut dns_adds = Vec::new();
    for outcome in outcomes {
        if let Target::Domain(domain) = &outcome.target {
            for address in &outcome.resolved {
                learnt.learn(domain.as_str(), address.addr, address.ttl, now);
                dns_adds.push((address.addr, Some(address.ttl)));
            }
        }
    }
    // Every name a deny now matches loses its addresses (a deny of `example.com` withdraws what
    // `api.example.com` resolved to), unless another name still allowed holds them too.
    let dns_removes: Vec<_> = learnt
        .forget_where(
            |name| matches!(names.decide(name).reason, Reason::Denied(_)),
            now,
        )
        .into_iter()
        .map(|addr| (addr, None))
        .collect();
    let mut changes = ruleset::live_changes(
        profile_index,
        &intent.allowed,
        &intent.denied,
        &applied.net_moves(),
    );
    changes.adds.extend(dns_sets(&dns_adds));
    changes.removes.extend(dns_sets(&dns_removes));
    let inverse = ElementChanges {
        adds: changes.removes.clone(),
        removes: changes.adds.clone(),
    };
    let attachment = Arc::clone(&running.attachment);
    let applied = if changes.len() <= INLINE_ELEMENTS {
        attach::apply_changes_verified(&attachment, &changes)
    } else {
        blocking(move || attach::apply_changes_verified(&attachment, &changes)).await?
    };
    applied.map_err(|source| ContainerError::Kernel {
        id: id.to_owned(),
        source,
    })?;
    let undo = Undo {
        changes: inverse,
        learnt: std::mem::replace(&mut running.learnt, learnt),
        names: running.names.current(),
    };
    running.names.replace(names);
    Ok(undo)
}

/// Puts the kernel back after a change whose record could not be written.
async fn undo_change(id: &str, running: &mut Running, undo: Undo) {
    let attachment = Arc::clone(&running.attachment);
    let changes = undo.changes;
    let outcome = blocking(move || attach::apply_changes_verified(&attachment, &changes)).await;
    match outcome {
        Ok(Ok(())) => {
            running.learnt = undo.learnt;
            running.names.replace(undo.names);
        }
        Ok(Err(err)) => {
            tracing::error!(container = %id, error = %error_chain(&err), "cannot undo a change the state store refused");
        }
        Err(err) => tracing::error!(container = %id, error = %err, "cannot undo a change"),
    }
}

/// Replaces a running container's whole table (mode changes), carrying the learnt dns
/// addresses over with the time they have left.
async fn replace_table(
    id: &str,
    running: &mut Running,
    table: Table,
    mode: Mode,
) -> Result<(), ContainerError> {
    let now = Instant::now();
    running.learnt.prune(now);
    let mut with_dns = table;
    let remaining: Vec<_> = running
        .learnt
        .remaining(now)
        .into_iter()
        .map(|(addr, left)| (addr, Some(left)))
        .collect();
    for set in dns_sets(&remaining) {
        if let Some(target) = with_dns.sets.iter_mut().find(|s| s.name == set.name) {
            target.elements = set.elements;
        }
    }
    let attachment = Arc::clone(&running.attachment);
    blocking(move || attach::apply_verified(&attachment, &with_dns, mode))
        .await?
        .map_err(|source| ContainerError::Kernel {
            id: id.to_owned(),
            source,
        })
}

/// The dns sets holding `elements` (`(address, timeout)`), one set per family that has any.
fn dns_sets(elements: &[(IpAddr, Option<Duration>)]) -> Vec<Set> {
    let mut sets: Vec<Set> = Vec::new();
    for (family, name) in [
        (Family::V4, ruleset::build::DNS_V4),
        (Family::V6, ruleset::build::DNS_V6),
    ] {
        let mut members: Vec<SetElement> = elements
            .iter()
            .filter(|(addr, _)| (family == Family::V4) == addr.is_ipv4())
            .map(|(addr, timeout)| SetElement {
                range: IpRange {
                    start: *addr,
                    end: *addr,
                },
                timeout: timeout.map(whole_millis),
            })
            .collect();
        members.sort_by_key(|element| element.range);
        members.dedup_by_key(|element| element.range);
        if !members.is_empty() {
            sets.push(Set {
                name: name.to_owned(),
                family,
                kind: SetKind::Timeout,
                elements: members,
            });
        }
    }
    sets
}

/// The kernel keeps timeouts in milliseconds; a sub-millisecond part would only make a
/// read-back differ from what was sent.
fn whole_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis().max(1)).unwrap_or(u64::MAX))
}

/// The dns elements of a kernel table with their timeouts.
fn dns_elements(table: &Table) -> Vec<(IpAddr, Duration)> {
    table
        .sets
        .iter()
        .filter(|set| set.kind == SetKind::Timeout)
        .flat_map(|set| &set.elements)
        .filter_map(|element| {
            element
                .timeout
                .map(|timeout| (element.range.start, timeout))
        })
        .collect()
}

/// Releases a container's sockets off the request path: closing a netlink socket can wait for
/// an RCU grace period in the kernel.
fn release(running: Option<Running>) {
    if let Some(running) = running {
        tokio::task::spawn_blocking(move || drop(running));
    }
}

/// Runs blocking kernel work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ContainerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ContainerError::Internal(err.to_string()))
}

fn snapshot(container: &Container) -> Option<Snapshot> {
    let state = container.state.as_ref()?;
    Some(snapshot_of(container, state.clone()))
}

/// The container as [`snapshot`] gives it, without its lists of live allows and denies (which
/// [`Snapshot::lists_omitted`] says): what the answer to a change carries, at a cost that does
/// not grow with them.
fn brief_snapshot(container: &Container) -> Result<Snapshot, ContainerError> {
    let state = container
        .state
        .as_ref()
        .ok_or_else(|| ContainerError::Internal("changed without state".into()))?;
    let brief = ContainerState {
        version: state.version,
        id: state.id.clone(),
        name: state.name.clone(),
        profiles: state.profiles.clone(),
        intent: Intent {
            mode: state.intent.mode,
            ..Intent::default()
        },
        process: state.process,
        journal_seq: state.journal_seq,
    };
    let mut snapshot = snapshot_of(container, brief);
    snapshot.allowed_addresses = container.profile.nets.len() + state.intent.allowed.len();
    snapshot.lists_omitted = true;
    Ok(snapshot)
}

fn snapshot_of(container: &Container, state: ContainerState) -> Snapshot {
    Snapshot {
        running: container
            .running
            .as_ref()
            .map(|running| (running.pid, running.attached_at)),
        domains: container.profile.domains.clone(),
        allowed_addresses: container.profile.nets.len() + state.intent.allowed.len(),
        lists_omitted: false,
        state,
    }
}

/// The mode as the CLI spells it in `state`.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Up => "up",
        Mode::Down => "down",
        Mode::DownAll => "down_all",
        Mode::Block => "block",
    }
}

/// `err` and its sources, joined with ": ", as a person reads them.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Transparent wrappers repeat their source's text; print each cause once.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
