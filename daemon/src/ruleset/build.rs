//! The builder: a container's policy → its [`Table`]. Pure.
//!
//! This is where shield decides what a container may reach, so it is a plain function of its
//! input: no I/O, no clock, no environment. The same policy always yields the same table, which is
//! what makes the golden tests and the read-back verification meaningful.
//!
//! The names and shapes defined here (set names, log prefixes, [`SET_SPECS`], the private ranges)
//! are shared with the invariant checker, which proves the properties this module promises.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::ir::{
    Chain, ChainPolicy, Counter, CtStates, Family, Hook, Icmpv6Type, IpRange, L4Proto, LOG_GROUP,
    Log, Match, RejectKind, Rule, Set, SetElement, SetKind, Table, Verdict,
};

/// Enforcement mode of a container.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Default-deny: only allowlisted destinations pass.
    #[default]
    Up,
    /// Bypass: new connections are accepted and logged; deny sets and private ranges still apply.
    Down,
    /// Bypass including private ranges; deny sets still apply.
    DownAll,
    /// Everything but loopback is dropped, established flows included.
    Block,
}

/// Everything the builder needs to know about one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Addresses and networks the container may reach (profiles and operator allows).
    pub allow: Vec<IpNet>,
    /// Addresses and networks the container may never reach; deny wins over allow.
    pub deny: Vec<IpNet>,
    /// Enforcement mode.
    pub mode: Mode,
    /// TCP ports of the host's loopback the container may reach through rootless networking
    /// (config `loopback_ports`), at the addresses of [`HOST_LOOPBACK`].
    pub host_ports: Vec<u16>,
}

/// Where rootless podman networking makes the host's loopback reachable: the slirp4netns
/// gateway (`allow_host_loopback=true`) and pasta's `--map-host-loopback` address. Both lie in
/// private ranges, so only the configured ports pass, before the private-range rejects.
pub const HOST_LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 1, 2)),
];

/// Name of the egress base chain.
pub const OUTPUT_CHAIN: &str = "output";
/// Name of the ingress base chain.
pub const INPUT_CHAIN: &str = "input";

/// Hash set of allowed IPv4 addresses (single addresses: profiles list mostly these, and an
/// operator allows them one at a time, so a change must not cost what the set holds).
pub const ALLOW_V4: &str = "allow_v4";
/// Hash set of allowed IPv6 addresses.
pub const ALLOW_V6: &str = "allow_v6";
/// Interval set of allowed IPv4 networks (prefixes shorter than /32).
pub const ALLOW_NETS_V4: &str = "allow_nets_v4";
/// Interval set of allowed IPv6 networks (prefixes shorter than /128).
pub const ALLOW_NETS_V6: &str = "allow_nets_v6";
/// Timeout set of IPv4 addresses learnt from DNS answers.
pub const DNS_V4: &str = "dns_v4";
/// Timeout set of IPv6 addresses learnt from DNS answers.
pub const DNS_V6: &str = "dns_v6";
/// Hash set of denied IPv4 addresses.
pub const DENY_V4: &str = "deny_v4";
/// Hash set of denied IPv6 addresses.
pub const DENY_V6: &str = "deny_v6";
/// Interval set of denied IPv4 networks.
pub const DENY_NETS_V4: &str = "deny_nets_v4";
/// Interval set of denied IPv6 networks.
pub const DENY_NETS_V6: &str = "deny_nets_v6";
/// Interval set of private and special-purpose IPv4 ranges ([`PRIVATE_V4`]).
pub const PRIVATE_V4_SET: &str = "private_v4";
/// Interval set of private and special-purpose IPv6 ranges ([`PRIVATE_V6`]).
pub const PRIVATE_V6_SET: &str = "private_v6";

/// Log prefix of packets cut by a deny set.
pub const PREFIX_DENIED: &str = "SHIELD_DENIED";
/// Log prefix of new connections accepted by an allow or dns set.
pub const PREFIX_ALLOWED: &str = "SHIELD_ALLOWED";
/// Log prefix of packets rejected because they head for a private range.
pub const PREFIX_PRIVATE: &str = "SHIELD_PRIVATE";
/// Log prefix of packets rejected by the terminal rules.
pub const PREFIX_BLOCKED: &str = "SHIELD_BLOCKED";
/// Log prefix of new connections accepted by the bypass rule (modes `down`, `down --all`).
pub const PREFIX_BYPASS: &str = "SHIELD_BYPASS";

/// Interface name of loopback, which is always reachable (the DNS proxy listens there).
pub const LOOPBACK: &str = "lo";

/// Name, key family and kind of one of the sets every shield table declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetSpec {
    /// Set name.
    pub name: &'static str,
    /// Key family.
    pub family: Family,
    /// Storage kind.
    pub kind: SetKind,
}

/// Every set of a shield table, in declaration order.
///
/// All of them exist in every mode, so that live updates (a DNS answer, an operator allow) never
/// have to know which mode the container is in.
pub const SET_SPECS: [SetSpec; 12] = [
    spec(ALLOW_V4, Family::V4, SetKind::Hash),
    spec(ALLOW_V6, Family::V6, SetKind::Hash),
    spec(ALLOW_NETS_V4, Family::V4, SetKind::Interval),
    spec(ALLOW_NETS_V6, Family::V6, SetKind::Interval),
    spec(DNS_V4, Family::V4, SetKind::Timeout),
    spec(DNS_V6, Family::V6, SetKind::Timeout),
    spec(DENY_V4, Family::V4, SetKind::Hash),
    spec(DENY_V6, Family::V6, SetKind::Hash),
    spec(DENY_NETS_V4, Family::V4, SetKind::Interval),
    spec(DENY_NETS_V6, Family::V6, SetKind::Interval),
    spec(PRIVATE_V4_SET, Family::V4, SetKind::Interval),
    spec(PRIVATE_V6_SET, Family::V6, SetKind::Interval),
];

const fn spec(name: &'static str, family: Family, kind: SetKind) -> SetSpec {
    SetSpec { name, family, kind }
}

/// The sets whose destinations the output chain rejects as denied, in rule order.
pub const DENY_SETS: [(Family, &str); 4] = [
    (Family::V4, DENY_V4),
    (Family::V4, DENY_NETS_V4),
    (Family::V6, DENY_V6),
    (Family::V6, DENY_NETS_V6),
];

/// The sets whose destinations the output chain accepts, in rule order.
pub const ACCEPT_SETS: [(Family, &str); 6] = [
    (Family::V4, ALLOW_V4),
    (Family::V4, ALLOW_NETS_V4),
    (Family::V6, ALLOW_V6),
    (Family::V6, ALLOW_NETS_V6),
    (Family::V4, DNS_V4),
    (Family::V6, DNS_V6),
];

/// Private and special-purpose IPv4 ranges a container may not reach unless allowlisted.
///
/// These are where the host, the container network and the cloud metadata services live: a
/// default-deny egress firewall that let them through would leak exactly what it guards.
pub const PRIVATE_V4: [Ipv4Net; 11] = [
    v4(0, 0, 0, 0, 8),      // "this network" (RFC 1122)
    v4(10, 0, 0, 0, 8),     // private (RFC 1918)
    v4(100, 64, 0, 0, 10),  // carrier-grade NAT (RFC 6598)
    v4(127, 0, 0, 0, 8),    // loopback, reached through an interface other than lo
    v4(169, 254, 0, 0, 16), // link-local, incl. cloud metadata and pasta's host address
    v4(172, 16, 0, 0, 12),  // private (RFC 1918)
    v4(192, 0, 0, 0, 24),   // IETF protocol assignments (RFC 6890)
    v4(192, 168, 0, 0, 16), // private (RFC 1918)
    v4(198, 18, 0, 0, 15),  // benchmarking (RFC 2544)
    v4(224, 0, 0, 0, 4),    // multicast
    v4(240, 0, 0, 0, 4),    // reserved, incl. limited broadcast
];

/// Private and special-purpose IPv6 ranges a container may not reach unless allowlisted.
pub const PRIVATE_V6: [Ipv6Net; 8] = [
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),        // unspecified
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128),        // loopback
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),    // IPv4-mapped: would bypass the v4 rules
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), // NAT64 (RFC 6052): reaches v4 space
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),     // discard-only (RFC 6666)
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),     // unique local (RFC 4193)
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),    // link-local
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),     // multicast
];

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> Ipv4Net {
    // `new_assert` in a const item: a bad prefix length fails the build, never at run time.
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix_len)
}

const fn v6(segments: [u16; 8], prefix_len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix_len)
}

/// [`PRIVATE_V4`] and [`PRIVATE_V6`] as one list of networks.
pub fn private_nets() -> impl Iterator<Item = IpNet> {
    PRIVATE_V4
        .into_iter()
        .map(IpNet::V4)
        .chain(PRIVATE_V6.into_iter().map(IpNet::V6))
}

/// Builds the table for `policy`.
///
/// Sets come in the order of [`SET_SPECS`]; the chains are `output` then `input`, both with
/// policy drop in every mode, so that whatever the rules miss is dropped.
pub fn build(policy: &Policy) -> Table {
    let private: Vec<IpNet> = private_nets().collect();
    let (allowed_networks, denied_networks) = (networks(&policy.allow), networks(&policy.deny));
    let sets = SET_SPECS
        .iter()
        .map(|spec| {
            let family = spec.family;
            // Addresses go to the hash sets, wider networks to the interval sets; an address
            // inside an allowed network is in both, which the kernel does not mind.
            let elements = match spec.name {
                ALLOW_V4 | ALLOW_V6 => address_elements(&policy.allow, family),
                ALLOW_NETS_V4 | ALLOW_NETS_V6 => interval_elements(&allowed_networks, family),
                DENY_V4 | DENY_V6 => address_elements(&policy.deny, family),
                DENY_NETS_V4 | DENY_NETS_V6 => interval_elements(&denied_networks, family),
                PRIVATE_V4_SET | PRIVATE_V6_SET => interval_elements(&private, family),
                // The dns sets start empty: the DNS proxy fills them at run time.
                _ => Vec::new(),
            };
            Set {
                name: spec.name.to_owned(),
                family,
                kind: spec.kind,
                elements,
            }
        })
        .collect();
    Table {
        sets,
        chains: vec![
            output_chain(policy.mode, &policy.host_ports),
            input_chain(policy.mode),
        ],
    }
}

/// The egress chain: where the policy is enforced.
fn output_chain(mode: Mode, host_ports: &[u16]) -> Chain {
    let mut rules = vec![plain(
        vec![Match::OifName(LOOPBACK.to_owned())],
        Verdict::Accept,
    )];
    match mode {
        Mode::Up => {
            rules.extend(filtering_rules(RejectPrivate::Yes, host_ports));
            rules.extend(terminal_rules());
        }
        Mode::Down => {
            rules.extend(filtering_rules(RejectPrivate::Yes, host_ports));
            rules.push(bypass_accept());
        }
        Mode::DownAll => {
            rules.extend(filtering_rules(RejectPrivate::No, host_ports));
            rules.push(bypass_accept());
        }
        // No established accept: block cuts the flows that are already open too.
        Mode::Block => rules.extend(terminal_rules()),
    }
    base_chain(OUTPUT_CHAIN, Hook::Output, rules)
}

/// Whether the output chain rejects the private ranges that are not allowlisted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RejectPrivate {
    Yes,
    No,
}

/// The output rules between the loopback accept and the end of the chain, in every mode but
/// block: deny, established, neighbour discovery, host-loopback ports, allow, private.
fn filtering_rules(reject_private: RejectPrivate, host_ports: &[u16]) -> Vec<Rule> {
    let mut rules = Vec::new();
    // Deny comes before `ct state established`, so that denying a destination also cuts the
    // connections to it that are already open.
    for (family, set) in DENY_SETS {
        rules.extend(reject_pair(family, set, PREFIX_DENIED));
    }
    rules.push(established_accept());
    rules.extend(
        [
            Icmpv6Type::RouterSolicit,
            Icmpv6Type::NeighborSolicit,
            Icmpv6Type::NeighborAdvert,
        ]
        .map(nd_accept),
    );
    let mut ports = host_ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        for host in HOST_LOOPBACK {
            rules.push(logged(
                vec![Match::Daddr(host), Match::TcpDport(port)],
                PREFIX_ALLOWED,
                Verdict::Accept,
            ));
        }
    }
    for (family, set) in ACCEPT_SETS {
        rules.push(logged(
            vec![daddr_in(family, set)],
            PREFIX_ALLOWED,
            Verdict::Accept,
        ));
    }
    // Private ranges come after the allow sets, so that an allowlisted private address (a
    // database on the host network, say) is accepted rather than rejected.
    if reject_private == RejectPrivate::Yes {
        rules.extend(reject_pair(Family::V4, PRIVATE_V4_SET, PREFIX_PRIVATE));
        rules.extend(reject_pair(Family::V6, PRIVATE_V6_SET, PREFIX_PRIVATE));
    }
    rules
}

/// The ingress chain: only replies to the container's own traffic, and neighbour discovery.
fn input_chain(mode: Mode) -> Chain {
    let mut rules = vec![plain(
        vec![Match::IifName(LOOPBACK.to_owned())],
        Verdict::Accept,
    )];
    if mode != Mode::Block {
        rules.push(established_accept());
        rules.extend(
            [
                Icmpv6Type::RouterAdvert,
                Icmpv6Type::NeighborSolicit,
                Icmpv6Type::NeighborAdvert,
            ]
            .map(nd_accept),
        );
    }
    base_chain(INPUT_CHAIN, Hook::Input, rules)
}

/// A filter base chain at priority 0 whose policy is drop.
fn base_chain(name: &str, hook: Hook, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_owned(),
        hook,
        priority: 0,
        policy: ChainPolicy::Drop,
        rules,
    }
}

/// The two rules that reject, logged with `prefix`, whatever heads for `set`: TCP with a reset,
/// the rest with ICMP. A reset makes a blocking `connect()` fail at once; with ICMP alone it waits
/// for a SYN retransmit first.
pub fn reject_pair(family: Family, set: &str, prefix: &str) -> [Rule; 2] {
    [
        logged(
            vec![daddr_in(family, set), Match::L4Proto(L4Proto::Tcp)],
            prefix,
            Verdict::Reject(RejectKind::TcpReset),
        ),
        logged(
            vec![daddr_in(family, set)],
            prefix,
            Verdict::Reject(RejectKind::IcmpxAdminProhibited),
        ),
    ]
}

/// The last two rules of the output chain in modes `up` and `block`: reject everything left,
/// so that a blocked connection fails fast instead of timing out on the drop policy.
pub fn terminal_rules() -> [Rule; 2] {
    [
        logged(
            vec![Match::L4Proto(L4Proto::Tcp)],
            PREFIX_BLOCKED,
            Verdict::Reject(RejectKind::TcpReset),
        ),
        logged(
            Vec::new(),
            PREFIX_BLOCKED,
            Verdict::Reject(RejectKind::IcmpxAdminProhibited),
        ),
    ]
}

/// The last rule of the output chain in modes `down` and `down --all`: accept and log.
pub fn bypass_accept() -> Rule {
    logged(Vec::new(), PREFIX_BYPASS, Verdict::Accept)
}

/// `ct state established,related accept`.
pub fn established_accept() -> Rule {
    plain(
        vec![Match::CtState(CtStates::ESTABLISHED_RELATED)],
        Verdict::Accept,
    )
}

/// `icmpv6 type TYPE accept`: IPv6 cannot reach even an allowed peer without neighbour
/// discovery.
fn nd_accept(kind: Icmpv6Type) -> Rule {
    plain(vec![Match::Icmpv6Type(kind)], Verdict::Accept)
}

fn daddr_in(family: Family, set: &str) -> Match {
    Match::DaddrInSet {
        family,
        set: set.to_owned(),
    }
}

/// A rule with log (NFLOG group [`LOG_GROUP`]) and counter statements.
fn logged(matches: Vec<Match>, prefix: &str, verdict: Verdict) -> Rule {
    Rule {
        matches,
        log: Some(Log {
            prefix: prefix.to_owned(),
            group: LOG_GROUP,
        }),
        counter: Some(Counter::default()),
        verdict,
    }
}

/// A rule with a verdict only.
fn plain(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule {
        matches,
        log: None,
        counter: None,
        verdict,
    }
}

/// The elements of an interval set of `family` holding `nets`: the networks of the other family
/// are left out, the rest normalised by [`merge_ranges`].
///
/// Host bits are ignored (`192.168.1.5/24` is `192.168.1.0/24`), as `nft` itself does.
pub fn interval_elements(nets: &[IpNet], family: Family) -> Vec<SetElement> {
    let ranges: Vec<IpRange> = nets
        .iter()
        .filter(|net| family_of(net.addr()) == family)
        .map(|net| net_range(*net))
        .collect();
    merge_ranges(&ranges)
        .into_iter()
        .map(|range| SetElement {
            range,
            timeout: None,
        })
        .collect()
}

/// The single addresses (/32, /128) of `family` among `nets`, as hash set elements: sorted, each
/// once.
pub fn address_elements(nets: &[IpNet], family: Family) -> Vec<SetElement> {
    let mut addrs: Vec<IpAddr> = nets
        .iter()
        .filter(|net| is_address(net) && family_of(net.addr()) == family)
        .map(IpNet::addr)
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs.into_iter().map(address_element).collect()
}

/// The hash set element of one address.
pub fn address_element(addr: IpAddr) -> SetElement {
    SetElement {
        range: IpRange {
            start: addr,
            end: addr,
        },
        timeout: None,
    }
}

/// Whether `net` is a single address (it goes to a hash set; anything wider to an interval set).
pub fn is_address(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// The networks (wider than one address) among `nets`.
pub fn networks(nets: &[IpNet]) -> Vec<IpNet> {
    nets.iter()
        .filter(|net| !is_address(net))
        .copied()
        .collect()
}

/// The addresses `net` covers, from its network address to its last address.
pub fn net_range(net: IpNet) -> IpRange {
    IpRange {
        start: net.network(),
        end: net.broadcast(),
    }
}

/// Sorts `ranges` and merges the overlapping and adjacent ones.
///
/// The kernel refuses overlapping elements in an interval set, and adjacent ones too (the end key
/// of one is the start key of the next). Ranges of different families are never merged (IPv4
/// sorts first); ranges with `start > end` or mixed families are malformed and dropped.
pub fn merge_ranges(ranges: &[IpRange]) -> Vec<IpRange> {
    let mut keyed: Vec<(Family, u128, u128)> =
        ranges.iter().filter_map(|r| range_key(*r)).collect();
    keyed.sort_unstable();
    let mut merged: Vec<(Family, u128, u128)> = Vec::with_capacity(keyed.len());
    for (family, start, end) in keyed {
        if let Some(last) = merged.last_mut() {
            // `checked_add` is `None` when `last` already ends at the family's last address, in
            // which case it covers everything after it as well.
            let touches = last.0 == family
                && last
                    .2
                    .checked_add(1)
                    .is_none_or(|after_last| start <= after_last);
            if touches {
                last.2 = last.2.max(end);
                continue;
            }
        }
        merged.push((family, start, end));
    }
    merged
        .into_iter()
        .map(|(family, start, end)| IpRange {
            start: addr_from_bits(family, start),
            end: addr_from_bits(family, end),
        })
        .collect()
}

/// Family of an address.
pub fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// `range` as (family, start, end) integers, if it is well-formed.
fn range_key(range: IpRange) -> Option<(Family, u128, u128)> {
    let family = family_of(range.start);
    let (start, end) = (addr_bits(range.start), addr_bits(range.end));
    (family == family_of(range.end) && start <= end).then_some((family, start, end))
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `family` whose integer value is `bits` (for IPv4, the low 32 bits).
fn addr_from_bits(family: Family, bits: u128) -> IpAddr {
    match family {
        // Only ever called with values that came from an IPv4 address, which fit.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn range(start: &str, end: &str) -> IpRange {
        IpRange {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    fn ranges_of(nets: &[&str], family: Family) -> Vec<IpRange> {
        let nets: Vec<IpNet> = nets.iter().map(|text| net(text)).collect();
        interval_elements(&nets, family)
            .into_iter()
            .map(|element| element.range)
            .collect()
    }

    #[test]
    fn host_bits_are_ignored() {
        assert_eq!(
            ranges_of(&["192.168.1.5/24"], Family::V4),
            [range("192.168.1.0", "192.168.1.255")]
        );
    }

    #[test]
    fn elements_are_sorted() {
        assert_eq!(
            ranges_of(&["9.9.9.9/32", "1.1.1.1/32", "5.0.0.0/8"], Family::V4),
            [
                range("1.1.1.1", "1.1.1.1"),
                range("5.0.0.0", "5.255.255.255"),
                range("9.9.9.9", "9.9.9.9"),
            ]
        );
    }

    #[test]
    fn overlapping_ranges_merge() {
        assert_eq!(
            ranges_of(&["10.0.0.0/8", "10.1.2.3/32", "10.200.0.0/16"], Family::V4),
            [range("10.0.0.0", "10.255.255.255")]
        );
        assert_eq!(
            ranges_of(
                &["2001:db8::/48", "2001:db8::/32", "2001:db8:1::1/128"],
                Family::V6
            ),
            [range(
                "2001:db8::",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
            )]
        );
    }

    #[test]
    fn partially_overlapping_ranges_merge() {
        let merged = merge_ranges(&[
            range("10.0.0.5", "10.0.0.9"),
            range("10.0.0.7", "10.0.0.20"),
        ]);
        assert_eq!(merged, [range("10.0.0.5", "10.0.0.20")]);
    }

    #[test]
    fn adjacent_ranges_merge() {
        assert_eq!(
            ranges_of(&["10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/32"], Family::V4),
            [range("10.0.0.0", "10.0.1.0")]
        );
    }

    #[test]
    fn ranges_one_address_apart_stay_separate() {
        assert_eq!(
            ranges_of(&["10.0.0.1/32", "10.0.0.3/32"], Family::V4),
            [range("10.0.0.1", "10.0.0.1"), range("10.0.0.3", "10.0.0.3")]
        );
    }

    #[test]
    fn duplicates_collapse() {
        assert_eq!(
            ranges_of(&["1.2.3.4/32", "1.2.3.4/32"], Family::V4),
            [range("1.2.3.4", "1.2.3.4")]
        );
    }

    #[test]
    fn families_are_split() {
        let nets = ["1.2.3.4/32", "2001:db8::1/128", "::ffff:1.2.3.4/128"];
        assert_eq!(ranges_of(&nets, Family::V4), [range("1.2.3.4", "1.2.3.4")]);
        assert_eq!(
            ranges_of(&nets, Family::V6),
            [
                range("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
                range("2001:db8::1", "2001:db8::1"),
            ]
        );
    }

    #[test]
    fn families_never_merge_across() {
        let merged = merge_ranges(&[
            range("::", "::1"),
            range("255.255.255.255", "255.255.255.255"),
        ]);
        assert_eq!(
            merged,
            [
                range("255.255.255.255", "255.255.255.255"),
                range("::", "::1")
            ]
        );
    }

    #[test]
    fn ranges_at_the_top_of_the_space_merge_without_overflow() {
        assert_eq!(
            ranges_of(&["0.0.0.0/0", "255.255.255.255/32"], Family::V4),
            [range("0.0.0.0", "255.255.255.255")]
        );
        let merged = merge_ranges(&[
            range("ffff::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            range("ffff:ffff::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ]);
        assert_eq!(
            merged,
            [range("ffff::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]
        );
    }

    #[test]
    fn malformed_ranges_are_dropped() {
        let merged = merge_ranges(&[range("10.0.0.9", "10.0.0.1"), range("10.0.0.1", "::1")]);
        assert_eq!(merged, []);
    }

    #[test]
    fn private_sets_hold_the_private_ranges_merged() {
        let table = build(&Policy::default());
        let private_v4 = table.set(PRIVATE_V4_SET).unwrap();
        // 0/8 .. 127/8 are not adjacent, but 224/4 and 240/4 are: one element.
        assert_eq!(private_v4.elements.len(), PRIVATE_V4.len() - 1);
        assert_eq!(
            private_v4.elements.last().unwrap().range,
            range("224.0.0.0", "255.255.255.255")
        );
        // ::/128 and ::1/128 are adjacent.
        let private_v6 = table.set(PRIVATE_V6_SET).unwrap();
        assert_eq!(private_v6.elements.len(), PRIVATE_V6.len() - 1);
    }

    #[test]
    fn build_is_deterministic_and_order_insensitive() {
        let policy = Policy {
            allow: vec![net("1.1.1.1/32"), net("2001:db8::/32"), net("8.8.8.0/24")],
            deny: vec![net("8.8.8.8/32")],
            mode: Mode::Up,
            host_ports: Vec::new(),
        };
        let mut shuffled = policy.clone();
        shuffled.allow.reverse();
        assert_eq!(build(&policy), build(&shuffled));
    }
}
