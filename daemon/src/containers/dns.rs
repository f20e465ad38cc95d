//! The container side of the DNS proxy: the name policy a running container's proxy consults,
//! and the gate through which the proxy lets learnt addresses into the container's dns sets.
//!
//! The name policy is read on every query without taking the container's lock; it is only ever
//! replaced under that lock, by the operation that changed the intent. Letting addresses
//! through does take the lock: it checks the policy again (a deny that arrived while the
//! answer was on its way wins), inserts the elements in one verified batch, and records which
//! name they were learnt for, all in one step with respect to allow, deny and mode changes.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::{Container, error_chain};
use crate::attach::{self, Attachment};
use crate::audit::AuditLog;
use crate::dns::names::{Decision, NamePolicy, Unlisted, Verdict};
use crate::dns::proxy::{DnsEvent, Gate, GateError};
use crate::intent::Intent;
use crate::profiles::DomainPattern;
use crate::ruleset::{self, Family, IpRange, Set, SetElement, SetKind, Table};

/// The name policy of one running container, swapped whole when its intent changes.
#[derive(Debug)]
pub struct NamePolicyCell {
    current: RwLock<Arc<NamePolicy>>,
}

impl NamePolicyCell {
    /// A cell holding `policy`.
    pub fn new(policy: NamePolicy) -> Self {
        Self {
            current: RwLock::new(Arc::new(policy)),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<NamePolicy> {
        // Only a whole Arc is ever swapped in, so a poisoned lock still holds a whole policy.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `policy` in force. Call it with the container's lock held.
    pub fn replace(&self, policy: Arc<NamePolicy>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = policy;
    }
}

/// The name policy of `intent`: the profile's domains and the live-allowed ones, minus the
/// denied ones, in the intent's mode.
pub fn name_policy(
    profile_domains: &[DomainPattern],
    intent: &Intent,
    unlisted: Unlisted,
) -> NamePolicy {
    let allowed: Vec<DomainPattern> = profile_domains
        .iter()
        .chain(&intent.allowed_domains)
        .cloned()
        .collect();
    let denied: Vec<DomainPattern> = intent.denied_domains.iter().cloned().collect();
    NamePolicy::new(&allowed, &denied, intent.mode, unlisted)
}

/// The gate of one running container, handed to its DNS proxy.
#[derive(Debug)]
pub struct ContainerGate {
    id: String,
    name: String,
    container: Weak<Mutex<Container>>,
    attachment: Weak<Attachment>,
    names: Arc<NamePolicyCell>,
    audit: AuditLog,
}

impl ContainerGate {
    /// The gate for the container behind `container`, attached through `attachment`.
    pub fn new(
        id: &str,
        name: &str,
        container: &Arc<Mutex<Container>>,
        attachment: &Arc<Attachment>,
        names: &Arc<NamePolicyCell>,
        audit: AuditLog,
    ) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            container: Arc::downgrade(container),
            attachment: Arc::downgrade(attachment),
            names: Arc::clone(names),
            audit,
        }
    }
}

impl Gate for ContainerGate {
    fn decide(&self, name: &str) -> Decision {
        self.names.current().decide(name)
    }

    async fn let_through(
        &self,
        name: &str,
        addresses: &[(IpAddr, Duration)],
    ) -> Result<(), GateError> {
        let container = self.container.upgrade().ok_or(GateError::Detached)?;
        let mut container = container.lock().await;
        let Some(running) = container.running.as_mut() else {
            return Err(GateError::Detached);
        };
        // A restart of the container re-attaches it with new sockets and a new proxy; this
        // proxy's answers must not touch the new attachment.
        if !std::ptr::eq(Arc::as_ptr(&running.attachment), self.attachment.as_ptr()) {
            return Err(GateError::Detached);
        }
        if running.names.current().decide(name).verdict != Verdict::Allow {
            return Err(GateError::NoLongerAllowed {
                name: name.to_owned(),
            });
        }
        // Re-adding an element sets its expiry afresh, so a shorter TTL in this answer must not
        // cut short an address that an earlier answer (maybe for another name, maybe still in
        // the client's cache) let through for longer.
        let now = Instant::now();
        let elements: Vec<_> = addresses
            .iter()
            .map(|&(addr, ttl)| {
                let left = running.learnt.element_timeout(addr, now);
                (addr, Some(left.map_or(ttl, |left| left.max(ttl))))
            })
            .collect();
        // One small batch on the container's own socket, run right here: the kernel answers
        // in microseconds, far less than handing the work to another thread would cost on every
        // DNS answer. It cannot be held up by other containers: nf_tables serialises commits
        // per network namespace, and in this one only the daemon can commit (the workload holds
        // no CAP_NET_ADMIN), under the container lock held here.
        attach::add_dns_elements(&running.attachment, &dns_sets(&elements))
            .map_err(|err| GateError::Kernel(error_chain(&err)))?;
        // The name holds each address for its own TTL only: were it recorded with the longer
        // time of the element, a deny of the other name could not cut the element back to it.
        for &(addr, ttl) in addresses {
            running.learnt.learn(name, addr, ttl, now);
        }
        Ok(())
    }

    fn record(&self, event: DnsEvent) {
        let detail = format!("{} {}: {}", event.record_type, event.verdict, event.detail);
        let event = AuditLog::event(&self.id, &self.name, "dns", &event.name, &detail);
        if let Err(err) = self.audit.record(event) {
            tracing::warn!(container = %self.id, error = %err, "cannot write the audit trail");
        }
    }
}

/// The dns sets holding `elements` (`(address, timeout)`), one set per family that has any.
pub(super) fn dns_sets(elements: &[(IpAddr, Option<Duration>)]) -> Vec<Set> {
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
pub(super) fn dns_elements(table: &Table) -> Vec<(IpAddr, Duration)> {
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
