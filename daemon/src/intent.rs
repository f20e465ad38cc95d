//! What the operator wants for one container, and how `allow` and `deny` change it. Pure.
//!
//! Effective policy = (profile addresses ∪ live allows) for the allow sets, live denies for the
//! deny sets. Deny wins in the kernel because the deny rules come first; allowing a target that
//! is denied lifts the deny, and denying a target that was live-allowed withdraws the allow.

use std::hash::Hash;

use indexmap::IndexSet;
use ipnet::IpNet;

use crate::profiles::{DomainPattern, Entry, EntryError};
use crate::ruleset::{Mode, NetMoves, Policy};

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

/// Whether a change lets targets through or forbids them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Allow: into the allowed lists, out of the denied ones.
    Allow,
    /// Deny: into the denied lists, out of the allowed ones.
    Deny,
}

/// The operator's live changes and the mode of one container.
///
/// The lists are indexed, so that a change costs what it touches, not what the lists hold (a
/// container may carry 100 000 live allows). They keep the order in which their items arrived,
/// except that an item leaving a list gives its place to that list's last item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intent {
    /// Live-allowed addresses and networks.
    pub allowed: IndexSet<IpNet>,
    /// Denied addresses and networks.
    pub denied: IndexSet<IpNet>,
    /// Live-allowed domains.
    pub allowed_domains: IndexSet<DomainPattern>,
    /// Denied domains.
    pub denied_domains: IndexSet<DomainPattern>,
    /// Enforcement mode.
    pub mode: Mode,
}

/// What one target of a change did to the lists: enough to undo it, and to tell the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    /// The target.
    pub target: Target,
    /// Where it stood in the list it left (denied for an allow, allowed for a deny), if it was
    /// there.
    pub withdrawn_from: Option<usize>,
    /// Whether it was added at the end of the list it went to (it was not there yet).
    pub added: bool,
}

impl Moved {
    /// Whether the target changed anything.
    pub fn changed(&self) -> bool {
        self.withdrawn_from.is_some() || self.added
    }
}

/// One change as it was applied, target by target, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Allow or deny.
    pub direction: Direction,
    /// One entry per target.
    pub moves: Vec<Moved>,
}

impl Applied {
    /// Whether any target changed anything.
    pub fn changed_anything(&self) -> bool {
        self.moves.iter().any(Moved::changed)
    }

    /// The addresses and networks the change moved between the live lists.
    pub fn net_moves(&self) -> NetMoves {
        let mut moves = NetMoves::default();
        let (into, out_of) = match self.direction {
            Direction::Allow => (&mut moves.allowed_in, &mut moves.denied_out),
            Direction::Deny => (&mut moves.denied_in, &mut moves.allowed_out),
        };
        for moved in &self.moves {
            if let Target::Net(net) = moved.target {
                if moved.added {
                    into.push(net);
                }
                if moved.withdrawn_from.is_some() {
                    out_of.push(net);
                }
            }
        }
        moves
    }
}

impl Intent {
    /// Allows `target`: lifts a deny of the same target. Returns whether anything changed.
    pub fn allow(&mut self, target: &Target) -> bool {
        self.apply(Direction::Allow, std::slice::from_ref(target))
            .changed_anything()
    }

    /// Denies `target`: withdraws a live allow of the same target. Returns whether anything
    /// changed.
    pub fn deny(&mut self, target: &Target) -> bool {
        self.apply(Direction::Deny, std::slice::from_ref(target))
            .changed_anything()
    }

    /// [`allow`](Self::allow) of each target in turn; whether each changed anything.
    pub fn allow_all(&mut self, targets: &[Target]) -> Vec<bool> {
        let applied = self.apply(Direction::Allow, targets);
        applied.moves.iter().map(Moved::changed).collect()
    }

    /// [`deny`](Self::deny) of each target in turn; whether each changed anything.
    pub fn deny_all(&mut self, targets: &[Target]) -> Vec<bool> {
        let applied = self.apply(Direction::Deny, targets);
        applied.moves.iter().map(Moved::changed).collect()
    }

    /// Allows or denies each target in turn, and says what each did, for
    /// [`undo`](Self::undo) and for the kernel's share of the change. Each target costs a hash
    /// lookup.
    pub fn apply(&mut self, direction: Direction, targets: &[Target]) -> Applied {
        let moves = targets
            .iter()
            .map(|target| {
                let (withdrawn_from, added) = match (direction, target) {
                    (Direction::Allow, Target::Net(net)) => {
                        bring(&mut self.allowed, &mut self.denied, net)
                    }
                    (Direction::Deny, Target::Net(net)) => {
                        bring(&mut self.denied, &mut self.allowed, net)
                    }
                    (Direction::Allow, Target::Domain(domain)) => {
                        bring(&mut self.allowed_domains, &mut self.denied_domains, domain)
                    }
                    (Direction::Deny, Target::Domain(domain)) => {
                        bring(&mut self.denied_domains, &mut self.allowed_domains, domain)
                    }
                };
                Moved {
                    target: target.clone(),
                    withdrawn_from,
                    added,
                }
            })
            .collect();
        Applied { direction, moves }
    }

    /// Takes back `applied`, which must be the last change applied: every list is as it was
    /// before, order included.
    pub fn undo(&mut self, applied: &Applied) {
        for moved in applied.moves.iter().rev() {
            match (applied.direction, &moved.target) {
                (Direction::Allow, Target::Net(net)) => {
                    put_back(&mut self.allowed, &mut self.denied, net, moved);
                }
                (Direction::Deny, Target::Net(net)) => {
                    put_back(&mut self.denied, &mut self.allowed, net, moved);
                }
                (Direction::Allow, Target::Domain(domain)) => {
                    put_back(
                        &mut self.allowed_domains,
                        &mut self.denied_domains,
                        domain,
                        moved,
                    );
                }
                (Direction::Deny, Target::Domain(domain)) => {
                    put_back(
                        &mut self.denied_domains,
                        &mut self.allowed_domains,
                        domain,
                        moved,
                    );
                }
            }
        }
    }

    /// The ruleset policy: profile addresses and live allows in the allow sets, denies in the
    /// deny sets.
    pub fn policy(&self, profile_nets: &[IpNet], host_ports: &[u16]) -> Policy {
        let mut allow = profile_nets.to_vec();
        allow.extend(self.allowed.iter().copied());
        Policy {
            allow,
            deny: self.denied.iter().copied().collect(),
            mode: self.mode,
            host_ports: host_ports.to_vec(),
        }
    }

    /// Whether `domain` is denied (a denied name never has addresses in the dns sets).
    pub fn is_domain_denied(&self, domain: &DomainPattern) -> bool {
        self.denied_domains.contains(domain)
    }
}

/// Brings `item` into `into` (at the end, unless it is there) and out of `out_of`; where it
/// stood in `out_of`, and whether it was added.
///
/// Leaving a list moves that list's last item into the freed place: shifting every later item
/// instead would make a removal cost what the list holds.
fn bring<T: Eq + Hash + Clone>(
    into: &mut IndexSet<T>,
    out_of: &mut IndexSet<T>,
    item: &T,
) -> (Option<usize>, bool) {
    let withdrawn_from = out_of.swap_remove_full(item).map(|(index, _)| index);
    let added = into.insert(item.clone());
    (withdrawn_from, added)
}

/// Undoes one [`bring`] of `item`.
fn put_back<T: Eq + Hash + Clone>(
    into: &mut IndexSet<T>,
    out_of: &mut IndexSet<T>,
    item: &T,
    moved: &Moved,
) {
    if moved.added {
        // The last item added, unless the caller broke the contract; then wherever it is.
        if into.last() == Some(item) {
            into.pop();
        } else {
            into.shift_remove(item);
        }
    }
    if let Some(index) = moved.withdrawn_from {
        // The removal moved the last item to `index`: put `item` at the end, then swap the two
        // back.
        let (last, _) = out_of.insert_full(item.clone());
        if index < last {
            out_of.swap_indices(index, last);
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
        // The profile's network and the live allows (a live allow of the same network is
        // listed twice: the builder merges).
        let allowed: std::collections::BTreeSet<IpNet> = policy.allow.iter().copied().collect();
        assert_eq!(
            allowed,
            ["198.51.100.0/24", "203.0.113.9/32"]
                .map(|net| net.parse::<IpNet>().unwrap())
                .into()
        );
        assert_eq!(
            policy.deny,
            vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]
        );
    }
}
