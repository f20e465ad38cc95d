//! The element changes of one live change, computed from the change alone. Pure.
//!
//! [`element_changes`](super::diff::element_changes) of the tables built before and after a
//! change is what the kernel must be told; building two tables costs what the container's sets
//! hold (100 000 live allows is a case the daemon must carry), a change should cost what it
//! touches. So [`live_changes`] reaches the same result from the change itself:
//!
//! - an address goes to or leaves its hash set directly; the allow sets also hold the
//!   profile's addresses, so an address the profile allows is never added or removed there by a
//!   live change;
//! - only when a network moves are the interval sets of its family recomputed, from the
//!   networks alone (the profile's and the live ones: few, next to the addresses).
//!
//! The tests hold the two equal over many random changes.

use std::collections::HashSet;

use indexmap::IndexSet;
use ipnet::IpNet;

use super::build::{
    ALLOW_NETS_V4, ALLOW_NETS_V6, ALLOW_V4, ALLOW_V6, DENY_NETS_V4, DENY_NETS_V6, DENY_V4, DENY_V6,
    SET_SPECS, address_element, family_of, interval_elements, is_address,
};
use super::diff::{ElementChanges, difference};
use super::ir::{Family, Set, SetElement};

/// A profile's addresses and networks, indexed once per attach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileIndex {
    addresses: HashSet<IpNet>,
    networks: Vec<IpNet>,
}

impl ProfileIndex {
    /// The index of a profile's entries.
    pub fn new(nets: &[IpNet]) -> Self {
        let (addresses, networks) = nets
            .iter()
            .partition::<Vec<IpNet>, _>(|net| is_address(net));
        Self {
            addresses: addresses.into_iter().collect(),
            networks,
        }
    }
}

/// What one change moved between the live lists. Each item is in its list at most once: an
/// item `*_in` was not in the list before, an item `*_out` was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetMoves {
    /// Added to the live allows.
    pub allowed_in: Vec<IpNet>,
    /// Taken out of the live allows.
    pub allowed_out: Vec<IpNet>,
    /// Added to the denies.
    pub denied_in: Vec<IpNet>,
    /// Taken out of the denies.
    pub denied_out: Vec<IpNet>,
}

/// The element changes that `moves` make, given the profile and the live lists as they are
/// after the change: the same as [`element_changes`](super::diff::element_changes) of the
/// tables built before and after it (timeout sets left out, as there).
pub fn live_changes(
    profile: &ProfileIndex,
    allowed: &IndexSet<IpNet>,
    denied: &IndexSet<IpNet>,
    moves: &NetMoves,
) -> ElementChanges {
    let mut changes = ElementChanges::default();
    for spec in SET_SPECS {
        let family = spec.family;
        let not_in_profile = |net: &IpNet| !profile.addresses.contains(net);
        let (gone, came) = match spec.name {
            ALLOW_V4 | ALLOW_V6 => (
                addresses(&moves.allowed_out, family, not_in_profile),
                addresses(&moves.allowed_in, family, not_in_profile),
            ),
            DENY_V4 | DENY_V6 => (
                addresses(&moves.denied_out, family, |_| true),
                addresses(&moves.denied_in, family, |_| true),
            ),
            ALLOW_NETS_V4 | ALLOW_NETS_V6
                if moves_network(&moves.allowed_in, &moves.allowed_out, family) =>
            {
                networks_difference(
                    &profile.networks,
                    allowed,
                    &moves.allowed_in,
                    &moves.allowed_out,
                    family,
                )
            }
            DENY_NETS_V4 | DENY_NETS_V6
                if moves_network(&moves.denied_in, &moves.denied_out, family) =>
            {
                networks_difference(&[], denied, &moves.denied_in, &moves.denied_out, family)
            }
            _ => continue,
        };
        let set = |elements| Set {
            name: spec.name.to_owned(),
            family,
            kind: spec.kind,
            elements,
        };
        if !gone.is_empty() {
            changes.removes.push(set(gone));
        }
        if !came.is_empty() {
            changes.adds.push(set(came));
        }
    }
    changes
}

/// The hash set elements of the addresses of `family` in `nets` that `keep` keeps, sorted.
fn addresses(nets: &[IpNet], family: Family, keep: impl Fn(&IpNet) -> bool) -> Vec<SetElement> {
    let mut addrs: Vec<_> = nets
        .iter()
        .filter(|net| is_address(net) && family_of(net.addr()) == family && keep(net))
        .map(IpNet::addr)
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs.into_iter().map(address_element).collect()
}

/// Whether a network (not an address) of `family` moved.
fn moves_network(came: &[IpNet], went: &[IpNet], family: Family) -> bool {
    came.iter()
        .chain(went)
        .any(|net| !is_address(net) && family_of(net.addr()) == family)
}

/// `(gone, came)` of an interval set whose networks are `fixed` and the networks of `live`
/// (after the change), where `came_in` joined `live` and `went_out` left it.
fn networks_difference(
    fixed: &[IpNet],
    live: &IndexSet<IpNet>,
    came_in: &[IpNet],
    went_out: &[IpNet],
    family: Family,
) -> (Vec<SetElement>, Vec<SetElement>) {
    let joined: HashSet<&IpNet> = came_in.iter().collect();
    let live_networks = live.iter().filter(|net| !is_address(net));
    let after: Vec<IpNet> = fixed.iter().chain(live_networks.clone()).copied().collect();
    let before: Vec<IpNet> = fixed
        .iter()
        .chain(live_networks.filter(|net| !joined.contains(net)))
        .chain(went_out.iter().filter(|net| !is_address(net)))
        .copied()
        .collect();
    difference(
        &interval_elements(&before, family),
        &interval_elements(&after, family),
    )
}
