//! Live control of a running (or stopped) container: allows and denies of addresses,
//! networks and domains, each one verified netlink batch and one journal line, and mode changes,
//! each a whole new table and a saved state.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedMutexGuard;

use super::dns::dns_sets;
use super::{
    Container, ContainerError, Containers, LookupError, Running, Snapshot, blocking,
    brief_snapshot, error_chain, mode_name, name_policy, snapshot,
};
use crate::attach::{self, micros};
use crate::audit::AuditLog;
use crate::dns::names::{NamePolicy, Reason, Unlisted};
use crate::intent::{Applied, Direction, Intent, Target};
use crate::learnt::{ElementsFor, LearntAddrs};
use crate::profiles::ProfileEntries;
use crate::resolve::Learnt;
use crate::ruleset::{self, ElementChanges, Mode, ProfileIndex, Table};
use crate::store::{Durability, JournalAction, JournalEntry};

/// Element changes up to this many are applied on the async thread itself. The kernel handles a
/// netlink request while it is sent, so the batch and its verifying lookups wait on nothing but
/// the CPU (tens of microseconds for a few elements, measured in `nft_changes`), less than a
/// hop to the blocking pool and back costs; larger changes take that hop.
const INLINE_ELEMENTS: usize = 16;

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
    /// ([`JournalSync`](crate::journal_sync::JournalSync)).
    fn durability(self) -> Durability {
        match self {
            Self::Allow => Durability::Written,
            Self::Deny => Durability::Synced,
        }
    }
}

impl Containers {
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
}

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
    let mut touched = BTreeSet::new();
    for outcome in outcomes {
        if let Target::Domain(domain) = &outcome.target {
            for address in &outcome.resolved {
                learnt.learn(domain.as_str(), address.addr, address.ttl, now);
                touched.insert(address.addr);
            }
        }
    }
    // Every name a deny now matches loses its addresses (a deny of `example.com` withdraws what
    // `api.example.com` resolved to), unless another name still allowed holds them too, and then
    // only for that name's time.
    touched.extend(learnt.forget_where(
        |name| matches!(names.decide(name).reason, Reason::Denied(_)),
        now,
    ));
    let mut changes = ruleset::live_changes(
        profile_index,
        &intent.allowed,
        &intent.denied,
        &applied.net_moves(),
    );
    let mut inverse = ElementChanges {
        adds: changes.removes.clone(),
        removes: changes.adds.clone(),
    };
    // Every dns element the change touches is written as the new record says; the old record
    // says how to put it back: an allowed address a DNS answer already let through for longer
    // keeps its time, and an undo restores each element with the time it had.
    let (forward, backward) = (
        learnt.elements_for(touched.iter().copied(), now),
        running.learnt.elements_for(touched.iter().copied(), now),
    );
    extend_dns(&mut changes, &forward);
    extend_dns(&mut inverse, &backward);
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

/// Adds the dns-set side of `elements` to `changes`.
fn extend_dns(changes: &mut ElementChanges, elements: &ElementsFor) {
    let adds: Vec<_> = elements
        .adds
        .iter()
        .map(|&(addr, timeout)| (addr, Some(timeout)))
        .collect();
    let removes: Vec<_> = elements.removes.iter().map(|&addr| (addr, None)).collect();
    changes.adds.extend(dns_sets(&adds));
    changes.removes.extend(dns_sets(&removes));
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
