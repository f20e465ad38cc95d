//! What the operator wants for one container, and how `allow` and `deny` change it. Pure.
//!
//! Effective policy = (profile addresses ∪ live allows) for the allow sets, live denies for the
//! deny sets. Deny wins in the kernel because the deny rules come first; allowing a target that
//! is denied lifts the deny, and denying a target that was live-allowed withdraws the allow.

use std::collections::HashSet;
use std::hash::Hash;

use ipnet::IpNet;

use crate::profiles::{DomainPattern, Entry, EntryError};
use crate::ruleset::{Mode, Policy};

/// Most targets one change may carry: a change is one netlink batch and one state write.
pub const MAX_TARGETS: usize = 1024;

/// One target of an `allow` or `deny`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An address (as /32 or /128) or a network, canonical.
    Net(IpNet),
    /// A domain pattern (enforced by DNS; an allow also lets its current addresses through).
    Domain(DomainPattern),
}

impl Target {
    /// `"address"`, `"network"` or `"domain"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Net(net) if net.prefix_len() == net.max_prefix_len() => "address",
            Self::Net(_) => "network",
            Self::Domain(_) => "domain",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Net(net) if net.prefix_len() == net.max_prefix_len() => net.addr().fmt(f),
            Self::Net(net) => net.fmt(f),
            Self::Domain(domain) => domain.fmt(f),
        }
    }
}

/// Why a list of targets is refused (nothing is changed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No target given.
    #[error("no target given: name at least one IP address, CIDR or domain")]
    Empty,
    /// More targets than one change may carry.
    #[error("{count} targets in one change; at most {MAX_TARGETS} are allowed (split the change)")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A target that is not an IP address, a CIDR or a domain.
    #[error("invalid target {target:?}: {reason}")]
    Invalid {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        #[source]
        reason: EntryError,
    },
}

/// Parses every target, or refuses the whole list.
pub fn parse_targets(raw: &[String]) -> Result<Vec<Target>, TargetError> {
    if raw.is_empty() {
        return Err(TargetError::Empty);
    }
    if raw.len() > MAX_TARGETS {
        return Err(TargetError::TooMany { count: raw.len() });
    }
    raw.iter()
        .map(|text| {
            let trimmed = text.trim();
            match Entry::parse(trimmed) {
                Ok(Entry::Net(net)) => Ok(Target::Net(net)),
                Ok(Entry::Domain(domain)) => Ok(Target::Domain(domain)),
                Err(reason) => Err(TargetError::Invalid {
                    target: trimmed.to_owned(),
                    reason,
                }),
            }
        })
        .collect()
}

/// The operator's live changes and the mode of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intent {
    /// Live-allowed addresses and networks, in the order they were allowed.
    pub allowed: Vec<IpNet>,
    /// Denied addresses and networks.
    pub denied: Vec<IpNet>,
    /// Live-allowed domains.
    pub allowed_domains: Vec<DomainPattern>,
    /// Denied domains.
    pub denied_domains: Vec<DomainPattern>,
    /// Enforcement mode.
    pub mode: Mode,
}

impl Intent {
    /// Allows `target`: lifts a deny of the same target. Returns whether anything changed.
    pub fn allow(&mut self, target: &Target) -> bool {
        self.allow_all(std::slice::from_ref(target))
            .first()
            .copied()
            .unwrap_or(false)
    }

    /// Denies `target`: withdraws a live allow of the same target. Returns whether anything
    /// changed.
    pub fn deny(&mut self, target: &Target) -> bool {
        self.deny_all(std::slice::from_ref(target))
            .first()
            .copied()
            .unwrap_or(false)
    }

    /// [`allow`](Self::allow) of each target in turn; whether each changed anything. One pass
    /// over the lists whatever the number of targets (a bulk allow of 100 000 addresses must
    /// not scan the list once per address).
    pub fn allow_all(&mut self, targets: &[Target]) -> Vec<bool> {
        bring_all(
            Move::new(&mut self.allowed, &mut self.denied),
            Move::new(&mut self.allowed_domains, &mut self.denied_domains),
            targets,
        )
    }

    /// [`deny`](Self::deny) of each target in turn; whether each changed anything. One pass over
    /// the lists, as for [`allow_all`](Self::allow_all).
    pub fn deny_all(&mut self, targets: &[Target]) -> Vec<bool> {
        bring_all(
            Move::new(&mut self.denied, &mut self.allowed),
            Move::new(&mut self.denied_domains, &mut self.allowed_domains),
            targets,
        )
    }

    /// The ruleset policy: profile addresses and live allows in the allow sets, denies in the
    /// deny sets.
    pub fn policy(&self, profile_nets: &[IpNet], host_ports: &[u16]) -> Policy {
        // A set for membership: with many thousands of live allows a list scan per entry would
        // make every change quadratic in the size of the policy.
        let mut seen: HashSet<IpNet> = profile_nets.iter().copied().collect();
        let mut allow = profile_nets.to_vec();
        allow.extend(self.allowed.iter().filter(|net| seen.insert(**net)));
        Policy {
            allow,
            deny: self.denied.clone(),
            mode: self.mode,
            host_ports: host_ports.to_vec(),
        }
    }

    /// Whether `domain` is denied (a denied name never has addresses in the dns sets).
    pub fn is_domain_denied(&self, domain: &DomainPattern) -> bool {
        self.denied_domains.contains(domain)
    }
}

/// Brings each target, in turn, where `nets` or `domains` (by its kind) move items to; whether
/// each changed anything.
fn bring_all(
    mut nets: Move<'_, IpNet>,
    mut domains: Move<'_, DomainPattern>,
    targets: &[Target],
) -> Vec<bool> {
    let changed = targets
        .iter()
        .map(|target| match target {
            Target::Net(net) => nets.bring(net),
            Target::Domain(domain) => domains.bring(domain),
        })
        .collect();
    nets.finish();
    domains.finish();
    changed
}

/// Items brought into one list (`into`, keeping its order) and out of the other (`out_of`),
/// with both indexed once, so that each item costs a hash lookup, not a list scan.
struct Move<'a, T: Eq + Hash + Clone> {
    into: &'a mut Vec<T>,
    out_of: &'a mut Vec<T>,
    /// What `into` holds, the items brought in included.
    held: HashSet<T>,
    /// What `out_of` still holds (built on first use: most changes withdraw nothing).
    remaining: Option<HashSet<T>>,
    withdrew: bool,
}

impl<'a, T: Eq + Hash + Clone> Move<'a, T> {
    fn new(into: &'a mut Vec<T>, out_of: &'a mut Vec<T>) -> Self {
        let held = into.iter().cloned().collect();
        Self {
            into,
            out_of,
            held,
            remaining: None,
            withdrew: false,
        }
    }

    /// Brings `item` in (if it is not there yet) and out of the other list; whether anything
    /// changed.
    fn bring(&mut self, item: &T) -> bool {
        let out_of = &*self.out_of;
        let withdrawn = !out_of.is_empty()
            && self
                .remaining
                .get_or_insert_with(|| out_of.iter().cloned().collect())
                .remove(item);
        self.withdrew |= withdrawn;
        let added = self.held.insert(item.clone());
        if added {
            self.into.push(item.clone());
        }
        withdrawn || added
    }

    /// Removes what was withdrawn from the other list, in one pass.
    fn finish(self) {
        if let (true, Some(remaining)) = (self.withdrew, &self.remaining) {
            self.out_of.retain(|item| remaining.contains(item));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(raw: &[&str]) -> Vec<Target> {
        parse_targets(&raw.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn targets_are_canonical() {
        let parsed = targets(&["2001:0db8::1", "192.168.1.5/24", "Example.COM"]);
        let shown: Vec<_> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["2001:db8::1", "192.168.1.0/24", "example.com"]);
        let kinds: Vec<_> = parsed.iter().map(Target::kind).collect();
        assert_eq!(kinds, ["address", "network", "domain"]);
    }

    #[test]
    fn bad_target_lists_are_refused_whole() {
        assert_eq!(parse_targets(&[]), Err(TargetError::Empty));
        let many = vec!["1.1.1.1".to_owned(); MAX_TARGETS + 1];
        assert!(matches!(
            parse_targets(&many),
            Err(TargetError::TooMany { .. })
        ));
        for bad in ["10.0.0.300", "10.0.0.0/33", "exa mple.com", ""] {
            let list = vec!["1.1.1.1".to_owned(), bad.to_owned()];
            let err = parse_targets(&list).unwrap_err();
            assert!(matches!(err, TargetError::Invalid { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn a_batch_is_the_same_as_its_targets_one_at_a_time() {
        let mut start = Intent::default();
        start.allow_all(&targets(&["192.0.2.1", "198.51.100.0/24", "a.example"]));
        start.deny_all(&targets(&["203.0.113.7", "2001:db8::1", "b.example"]));
        let batch = targets(&[
            "203.0.113.7",
            "192.0.2.1",
            "203.0.113.9",
            "b.example",
            "203.0.113.9",
            "2001:db8::1",
            "c.example",
            "192.0.2.1",
        ]);
        for deny in [false, true] {
            let mut together = start.clone();
            let mut singly = start.clone();
            let (changed, one_by_one): (Vec<bool>, Vec<bool>) = if deny {
                (
                    together.deny_all(&batch),
                    batch.iter().map(|t| singly.deny(t)).collect(),
                )
            } else {
                (
                    together.allow_all(&batch),
                    batch.iter().map(|t| singly.allow(t)).collect(),
                )
            };
            assert_eq!(changed, one_by_one, "deny: {deny}");
            assert_eq!(together, singly, "deny: {deny}");
        }
        // And what one at a time means, spelled out for the allow: the denies it lifts are gone,
        // the repeated targets changed nothing, the order of first allowing is kept.
        let mut allowed = start.clone();
        let changed = allowed.allow_all(&batch);
        assert_eq!(changed, [true, false, true, true, false, true, true, false]);
        assert!(allowed.denied.is_empty() && allowed.denied_domains.is_empty());
        let order: Vec<String> = allowed.allowed.iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            [
                "192.0.2.1/32",
                "198.51.100.0/24",
                "203.0.113.7/32",
                "203.0.113.9/32",
                "2001:db8::1/128"
            ]
        );
    }

    #[test]
    fn allow_and_deny_are_idempotent_and_lift_each_other() {
        let mut intent = Intent::default();
        let [addr, domain] = <[Target; 2]>::try_from(targets(&["192.0.2.1", "x.example"])).unwrap();
        assert!(intent.deny(&addr));
        assert!(!intent.deny(&addr), "a repeated deny is a no-op");
        assert!(intent.allow(&addr), "allowing lifts the deny");
        assert!(intent.denied.is_empty() && intent.allowed.len() == 1);
        assert!(!intent.allow(&addr), "a repeated allow is a no-op");
        assert!(intent.deny(&addr), "denying withdraws the live allow");
        assert!(intent.allowed.is_empty() && intent.denied.len() == 1);

        assert!(intent.allow(&domain));
        assert!(intent.deny(&domain));
        let Target::Domain(pattern) = &domain else {
            unreachable!()
        };
        assert!(intent.is_domain_denied(pattern));
        assert!(intent.allowed_domains.is_empty());
    }

    #[test]
    fn policy_combines_profile_and_live_allows_and_keeps_profile_denies() {
        let profile: Vec<IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
        let mut intent = Intent::default();
        intent.allow(&Target::Net("203.0.113.9/32".parse().unwrap()));
        intent.allow(&Target::Net("198.51.100.0/24".parse().unwrap()));
        // Denying an address a profile allows: the deny set carries it, the allow set keeps the
        // profile's network, and the kernel's rule order makes the deny win.
        intent.deny(&Target::Net("198.51.100.7/32".parse().unwrap()));
        let policy = intent.policy(&profile, &[]);
        assert_eq!(policy.allow.len(), 2);
        assert_eq!(
            policy.deny,
            vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]
        );
    }
}
