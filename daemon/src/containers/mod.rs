//! The containers the daemon manages: their intent (persisted), their kernel state (while they
//! run), and every operation on them.
//!
//! Changes to one container are serialised by its own lock, held from the first check to the
//! last write; different containers proceed in parallel. An operation is answered once the
//! kernel holds it (one verified batch) and the disk does (written while the kernel works); if
//! either fails the other is put back, so that what the daemon reports, what the kernel enforces
//! and what survives a restart never disagree.
//!
//! Here: the registry of containers, lookups, answers and the store helpers the operations
//! share. The operations: `lifecycle` (attach, stop, restore after a daemon restart, forget),
//! `live` (allow, deny, modes), and `dns` (what the DNS proxy of a running container
//! consults and lets through).

mod dns;
mod lifecycle;
mod live;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex as SyncMutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::Either;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::attach::{self, AttachError, Attachment};
use crate::audit::{AuditEvent, AuditLog};
use crate::config::Config;
use crate::dns::names::Unlisted;
use crate::dns::proxy::{ProxyHandle, ProxySettings};
use crate::dns::servers::UpstreamServers;
use crate::dns::threads::DnsThreads;
use crate::dns::upstream::Forwarder;
use crate::intent::Intent;
use crate::journal_sync::JournalSync;
use crate::learnt::LearntAddrs;
use crate::netns::HelperPool;
use crate::profiles::{DomainPattern, ProfileEntries, ProfileError, ProfileStore};
use crate::resolve::HostResolver;
use crate::ruleset::{self, Mode, ProfileIndex};
use crate::store::{ContainerState, Durability, JournalEntry, JournalMark, Store, StoreError};

pub use dns::{ContainerGate, NamePolicyCell, name_policy};
pub use lifecycle::{ForgetWhich, Forgotten};
pub use live::{Change, TargetOutcome};

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
    dns_threads: DnsThreads,
    proxy: ProxySettings,
    entries: SyncMutex<BTreeMap<String, Entry>>,
}

impl Containers {
    /// A manager with no containers loaded yet (see [`Self::restore`]). Fails only when the
    /// threads that will serve the containers' DNS cannot be started.
    pub fn new(
        config: Config,
        profiles: ProfileStore,
        store: Store,
        helpers: Arc<HelperPool>,
    ) -> std::io::Result<Self> {
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
        let forwarder = Forwarder::new(servers, config.dns.timeout);
        let dns_threads = DnsThreads::start(DnsThreads::default_count(), &forwarder)?;
        let proxy = ProxySettings::from_config(&config.dns);
        Ok(Self {
            config,
            profiles,
            journal_sync: JournalSync::new(store.clone()),
            store,
            audit,
            helpers,
            resolver,
            dns_threads,
            proxy,
            entries: SyncMutex::new(BTreeMap::new()),
        })
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

    /// Takes `entry` off the list, if it is still the one listed for `id`.
    fn unlist(&self, id: &str, entry: &Arc<Mutex<Container>>) {
        let mut entries = self.entries();
        if lists(&entries, id, entry) {
            entries.remove(id);
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

    fn find_exact(&self, id: &str) -> Result<(String, Arc<Mutex<Container>>), LookupError> {
        self.entries()
            .get(id)
            .map(|entry| (id.to_owned(), Arc::clone(&entry.container)))
            .ok_or_else(|| LookupError::NotFound(id.to_owned()))
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
/// [`Snapshot::lists_omitted`] says): what the answers to an attach and a change carry, at a
/// cost that does not grow with them.
fn brief_snapshot(container: &Container) -> Result<Snapshot, ContainerError> {
    let state = container
        .state
        .as_ref()
        .ok_or_else(|| ContainerError::Internal("a container without state".into()))?;
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
