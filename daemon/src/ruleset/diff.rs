//! The difference between two tables, as set element changes. Pure.
//!
//! A live `allow` or `deny` rebuilds the container's [`Table`] from its new policy and applies
//! only what changed: when the two tables differ in set elements alone, [`element_changes`] says
//! which elements leave and which arrive, set by set, in the shape the netlink layer's element
//! batch takes; anything structural (another mode, so other rules; other sets) is `None`, and the
//! caller replaces the whole table instead.
//!
//! Interval sets are normalised by the builder (sorted, merged, never overlapping or adjacent),
//! so each side is a canonical list of ranges and a plain element-set difference of the two lists
//! is exactly the kernel change: removing `10.0.0.0/25` from `{10.0.0.0/24}` removes the range
//! `10.0.0.0/24` and adds `10.0.0.128/25` (a split); allowing `10.0.0.128/25` next to
//! `10.0.0.0/25` removes the `/25` and adds the merged `/24`. Applied in one batch the kernel
//! never holds an intermediate state.
//!
//! Timeout sets (`dns_v4`, `dns_v6`) are left out of the comparison: their elements are the
//! addresses the DNS proxy learnt at run time, which the builder never knows (it always builds
//! them empty), so a rebuilt table says nothing about them. The daemon adds and removes those
//! elements itself; diffing them here would delete every learnt address on each `allow`.

use std::cmp::Ordering;

use super::ir::{Set, SetElement, SetKind, Table};

/// Set element changes that turn one table into another.
///
/// Each [`Set`] names a set of the table (name, family, kind) and holds only the elements to
/// change, in ascending order; sets without a change are left out. `removes` are applied before
/// `adds`, in the same batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElementChanges {
    /// Elements to delete, per set.
    pub removes: Vec<Set>,
    /// Elements to add, per set.
    pub adds: Vec<Set>,
}

impl ElementChanges {
    /// Whether nothing changes (the two tables hold the same elements).
    pub fn is_empty(&self) -> bool {
        self.removes.is_empty() && self.adds.is_empty()
    }

    /// How many elements are removed and added, in all sets together.
    pub fn len(&self) -> usize {
        self.removes
            .iter()
            .chain(&self.adds)
            .map(|set| set.elements.len())
            .sum()
    }
}

/// The element changes that turn `old` into `new`, or `None` when they differ in more than the
/// elements of their interval sets.
///
/// `Some` requires the same sets (name, family, kind) in the same order and identical chains;
/// timeout sets are ignored (see the module documentation). An unchanged table gives an empty
/// [`ElementChanges`].
pub fn element_changes(old: &Table, new: &Table) -> Option<ElementChanges> {
    if old.chains != new.chains || old.sets.len() != new.sets.len() {
        return None;
    }
    let mut changes = ElementChanges::default();
    for (before, after) in old.sets.iter().zip(&new.sets) {
        if before.name != after.name || before.family != after.family || before.kind != after.kind {
            return None;
        }
        if before.kind == SetKind::Timeout {
            continue;
        }
        let (gone, came) = difference(&before.elements, &after.elements);
        if !gone.is_empty() {
            changes.removes.push(with_elements(before, gone));
        }
        if !came.is_empty() {
            changes.adds.push(with_elements(after, came));
        }
    }
    Some(changes)
}

fn with_elements(set: &Set, elements: Vec<SetElement>) -> Set {
    Set {
        name: set.name.clone(),
        family: set.family,
        kind: set.kind,
        elements,
    }
}

/// Ordering of canonical elements: by range (start, then end), then timeout.
fn order(a: &SetElement, b: &SetElement) -> Ordering {
    a.range.cmp(&b.range).then(a.timeout.cmp(&b.timeout))
}

/// `(old \ new, new \ old)` of two element lists, each in ascending order.
///
/// One merge pass, linear in the two lengths. Lists the builder made are sorted already; should
/// one not be, it is sorted first, so the result is right either way.
pub(super) fn difference(
    old: &[SetElement],
    new: &[SetElement],
) -> (Vec<SetElement>, Vec<SetElement>) {
    let sorted = |list: &[SetElement]| {
        let mut list = list.to_vec();
        if !list.is_sorted_by(|a, b| order(a, b) != Ordering::Greater) {
            list.sort_by(order);
        }
        list
    };
    let (old, new) = (sorted(old), sorted(new));
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => match order(a, b) {
                Ordering::Less => {
                    gone.push(*a);
                    i += 1;
                }
                Ordering::Greater => {
                    came.push(*b);
                    j += 1;
                }
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
            },
            (Some(a), None) => {
                gone.push(*a);
                i += 1;
            }
            (None, Some(b)) => {
                came.push(*b);
                j += 1;
            }
            (None, None) => return (gone, came),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::net::IpAddr;
    use std::time::Duration;

    use ipnet::IpNet;

    use super::*;
    use crate::ruleset::build::{
        ALLOW_NETS_V4, ALLOW_V4, ALLOW_V6, DENY_V4, DNS_V4, Mode, Policy, build,
    };
    use crate::ruleset::ir::{Family, IpRange};

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy {
            allow: nets(allow),
            deny: nets(deny),
            mode: Mode::Up,
            host_ports: Vec::new(),
        }
    }

    fn range(start: &str, end: &str) -> SetElement {
        SetElement {
            range: IpRange {
                start: start.parse::<IpAddr>().unwrap(),
                end: end.parse::<IpAddr>().unwrap(),
            },
            timeout: None,
        }
    }

    /// An interval set (`*_nets_*`) or, by its name, a hash set of addresses.
    fn set(name: &str, family: Family, elements: Vec<SetElement>) -> Set {
        let kind = if name.contains("_nets_") || name.starts_with("private") {
            SetKind::Interval
        } else {
            SetKind::Hash
        };
        Set {
            name: name.to_owned(),
            family,
            kind,
            elements,
        }
    }

    fn changes(old: &Policy, new: &Policy) -> ElementChanges {
        element_changes(&build(old), &build(new)).unwrap()
    }

    #[test]
    fn same_policy_changes_nothing() {
        let p = policy(&["192.0.2.1/32", "2001:db8::/32"], &["203.0.113.0/24"]);
        let c = changes(&p, &p);
        assert!(c.is_empty());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn adding_addresses_and_a_cidr() {
        let old = policy(&["192.0.2.1/32"], &[]);
        let new = policy(
            &[
                "192.0.2.1/32",
                "192.0.2.9/32",
                "198.51.100.0/24",
                "2001:db8::1/128",
            ],
            &[],
        );
        let c = changes(&old, &new);
        assert!(c.removes.is_empty());
        assert_eq!(
            c.adds,
            vec![
                set(ALLOW_V4, Family::V4, vec![range("192.0.2.9", "192.0.2.9")]),
                set(
                    ALLOW_V6,
                    Family::V6,
                    vec![range("2001:db8::1", "2001:db8::1")]
                ),
                set(
                    ALLOW_NETS_V4,
                    Family::V4,
                    vec![range("198.51.100.0", "198.51.100.255")]
                ),
            ]
        );
    }

    #[test]
    fn removing_an_address() {
        let old = policy(&["192.0.2.1/32", "192.0.2.9/32"], &[]);
        let new = policy(&["192.0.2.1/32"], &[]);
        let c = changes(&old, &new);
        assert!(c.adds.is_empty());
        assert_eq!(
            c.removes,
            vec![set(
                ALLOW_V4,
                Family::V4,
                vec![range("192.0.2.9", "192.0.2.9")]
            )]
        );
    }

    /// Removing part of a range splits it: the old range leaves, the rest arrives.
    #[test]
    fn removing_part_of_a_range_splits_it() {
        let old = set(
            ALLOW_NETS_V4,
            Family::V4,
            vec![range("10.0.0.0", "10.0.0.255")],
        );
        let new = set(
            ALLOW_NETS_V4,
            Family::V4,
            vec![range("10.0.0.128", "10.0.0.255")],
        );
        let nets = 2;
        let mut t_old = build(&Policy::default());
        assert_eq!(t_old.sets[nets].name, ALLOW_NETS_V4);
        let mut t_new = t_old.clone();
        t_old.sets[nets] = old.clone();
        t_new.sets[nets] = new.clone();
        let c = element_changes(&t_old, &t_new).unwrap();
        assert_eq!(c.removes, vec![old]);
        assert_eq!(c.adds, vec![new]);

        // A hole in the middle: one range leaves, two arrive.
        let mut t_hole = t_new.clone();
        t_hole.sets[nets] = set(
            ALLOW_NETS_V4,
            Family::V4,
            vec![
                range("10.0.0.0", "10.0.0.4"),
                range("10.0.0.6", "10.0.0.255"),
            ],
        );
        let c = element_changes(&t_old, &t_hole).unwrap();
        assert_eq!(c.removes[0].elements, vec![range("10.0.0.0", "10.0.0.255")]);
        assert_eq!(
            c.adds[0].elements,
            vec![
                range("10.0.0.0", "10.0.0.4"),
                range("10.0.0.6", "10.0.0.255")
            ]
        );
    }

    /// Allowing the neighbour of a range merges them: the old range leaves, the merged arrives.
    #[test]
    fn adding_a_neighbour_merges_ranges() {
        let old = policy(&["10.0.0.0/25"], &[]);
        let new = policy(&["10.0.0.0/25", "10.0.0.128/25"], &[]);
        let c = changes(&old, &new);
        assert_eq!(
            c.removes,
            vec![set(
                ALLOW_NETS_V4,
                Family::V4,
                vec![range("10.0.0.0", "10.0.0.127")]
            )]
        );
        assert_eq!(
            c.adds,
            vec![set(
                ALLOW_NETS_V4,
                Family::V4,
                vec![range("10.0.0.0", "10.0.0.255")]
            )]
        );
        // And back: the merged range splits again.
        let back = changes(&new, &old);
        assert_eq!(back.removes, c.adds);
        assert_eq!(back.adds, c.removes);
    }

    /// A CIDR over addresses already allowed goes to the network set; the addresses stay in
    /// theirs (a hash set does not mind what the interval set also covers).
    #[test]
    fn a_cidr_over_addresses_leaves_them() {
        let old = policy(&["10.0.0.1/32", "10.0.0.7/32", "10.9.0.0/16"], &[]);
        let new = policy(
            &["10.0.0.1/32", "10.0.0.7/32", "10.9.0.0/16", "10.0.0.0/24"],
            &[],
        );
        let c = changes(&old, &new);
        assert!(c.removes.is_empty(), "{c:?}");
        assert_eq!(
            c.adds,
            vec![set(
                ALLOW_NETS_V4,
                Family::V4,
                vec![range("10.0.0.0", "10.0.0.255")]
            )]
        );
    }

    /// Deny and un-deny in one change: both sets change, in one `ElementChanges`.
    #[test]
    fn deny_and_allow_together() {
        let old = policy(&["192.0.2.1/32"], &["203.0.113.5/32"]);
        let new = policy(&["192.0.2.1/32", "203.0.113.5/32"], &["192.0.2.1/32"]);
        let c = changes(&old, &new);
        assert_eq!(
            c.removes,
            vec![set(
                DENY_V4,
                Family::V4,
                vec![range("203.0.113.5", "203.0.113.5")]
            )]
        );
        assert_eq!(
            c.adds,
            vec![
                set(
                    ALLOW_V4,
                    Family::V4,
                    vec![range("203.0.113.5", "203.0.113.5")]
                ),
                set(DENY_V4, Family::V4, vec![range("192.0.2.1", "192.0.2.1")]),
            ]
        );
        assert_eq!(c.len(), 3);
    }

    /// Timeout sets are the daemon's business: elements in them never show up as changes.
    #[test]
    fn timeout_sets_are_ignored() {
        let old = build(&policy(&["192.0.2.1/32"], &[]));
        let mut new = old.clone();
        let dns = new.sets.iter_mut().find(|s| s.name == DNS_V4).unwrap();
        dns.elements.push(SetElement {
            range: IpRange {
                start: "198.51.100.7".parse().unwrap(),
                end: "198.51.100.7".parse().unwrap(),
            },
            timeout: Some(Duration::from_secs(60)),
        });
        assert!(element_changes(&old, &new).unwrap().is_empty());
        assert!(element_changes(&new, &old).unwrap().is_empty());
    }

    #[test]
    fn another_mode_is_structural() {
        let up = policy(&["192.0.2.1/32"], &[]);
        for mode in [Mode::Down, Mode::DownAll, Mode::Block] {
            let other = Policy { mode, ..up.clone() };
            assert_eq!(
                element_changes(&build(&up), &build(&other)),
                None,
                "{mode:?}"
            );
        }
    }

    #[test]
    fn other_sets_are_structural() {
        let base = build(&policy(&["192.0.2.1/32"], &[]));

        let mut missing = base.clone();
        missing.sets.pop();
        assert_eq!(element_changes(&base, &missing), None);
        assert_eq!(element_changes(&missing, &base), None);

        let mut renamed = base.clone();
        renamed.sets[0].name = "allow_v4_new".to_owned();
        assert_eq!(element_changes(&base, &renamed), None);

        let mut rekinded = base.clone();
        rekinded.sets[0].kind = SetKind::Timeout;
        assert_eq!(element_changes(&base, &rekinded), None);

        let mut refamilied = base.clone();
        refamilied.sets[0].family = Family::V6;
        assert_eq!(element_changes(&base, &refamilied), None);

        let mut reordered = base.clone();
        reordered.sets.swap(0, 1);
        assert_eq!(element_changes(&base, &reordered), None);
    }

    #[test]
    fn other_rules_are_structural() {
        let base = build(&Policy::default());
        let mut fewer = base.clone();
        fewer.chains[0].rules.pop();
        assert_eq!(element_changes(&base, &fewer), None);

        let mut priority = base.clone();
        priority.chains[1].priority = 10;
        assert_eq!(element_changes(&base, &priority), None);
    }

    /// Unsorted input (not from the builder) still gives the right difference.
    #[test]
    fn unsorted_lists_are_sorted_first() {
        let a = vec![range("10.0.0.9", "10.0.0.9"), range("10.0.0.1", "10.0.0.1")];
        let b = vec![range("10.0.0.1", "10.0.0.1"), range("10.0.0.5", "10.0.0.5")];
        let (gone, came) = difference(&a, &b);
        assert_eq!(gone, vec![range("10.0.0.9", "10.0.0.9")]);
        assert_eq!(came, vec![range("10.0.0.5", "10.0.0.5")]);
    }

    /// Diffing is linear: 100 000 elements each side take well under a second even unoptimised.
    #[test]
    fn large_sets_diff_in_one_pass() {
        let many: Vec<IpNet> = (0u32..100_000)
            .map(|i| IpNet::from(IpAddr::from((0x0b00_0000 + 2 * i).to_be_bytes())))
            .collect();
        let old = build(&Policy {
            allow: many.clone(),
            ..Policy::default()
        });
        let mut more = many;
        more.push("203.0.113.1/32".parse().unwrap());
        let new = build(&Policy {
            allow: more,
            ..Policy::default()
        });
        let c = element_changes(&old, &new).unwrap();
        assert!(c.removes.is_empty());
        assert_eq!(
            c.adds[0].elements,
            vec![range("203.0.113.1", "203.0.113.1")]
        );
    }
}
