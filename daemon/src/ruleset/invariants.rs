//! The invariant checker: proves the fail-closed properties of a [`Table`]. Pure.
//!
//! It runs on what the builder made, before anything is applied, and on what the kernel holds
//! afterwards (where counters have counted and the dns sets have filled). It therefore does not
//! compare against [`build`](super::build::build): it states, independently, what every shield
//! table must look like in a mode, so that a builder bug or a tampered kernel table is caught
//! rather than reproduced.
//!
//! The checks are positive where it matters: an accept rule is fine only if it has one of the
//! few permitted shapes, in the right place; anything else that accepts is a violation.

use std::fmt;

use super::build::{
    ACCEPT_SETS, DENY_NETS_V4, DENY_NETS_V6, DENY_V4, DENY_V6, HOST_LOOPBACK, INPUT_CHAIN,
    LOOPBACK, Mode, OUTPUT_CHAIN, PREFIX_BLOCKED, PRIVATE_V4_SET, PRIVATE_V6_SET, SET_SPECS,
    addr_bits, family_of, merge_ranges, net_range, private_nets,
};
use super::ir::{
    Chain, ChainPolicy, CtStates, Family, Hook, Icmpv6Type, IpRange, L4Proto, LOG_GROUP, Match,
    RejectKind, Rule, Set, SetKind, Table, Verdict,
};
use super::render::{render_range, render_rule};

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

/// Checks every invariant of a ruleset in `mode`; returns all violations found.
pub fn check(table: &Table, mode: Mode) -> Result<(), Vec<Violation>> {
    let mut checker = Checker {
        table,
        mode,
        violations: Vec::new(),
    };
    checker.check_sets();
    checker.check_rules_everywhere();
    if let Some(output) = checker.base_chain(OUTPUT_CHAIN, Hook::Output) {
        checker.check_output(output);
    }
    if let Some(input) = checker.base_chain(INPUT_CHAIN, Hook::Input) {
        checker.check_input(input);
    }
    if checker.violations.is_empty() {
        Ok(())
    } else {
        Err(checker.violations)
    }
}

/// Neighbour-discovery messages the output chain may let out.
const OUTPUT_ND: [Icmpv6Type; 3] = [
    Icmpv6Type::RouterSolicit,
    Icmpv6Type::NeighborSolicit,
    Icmpv6Type::NeighborAdvert,
];

/// Neighbour-discovery messages the input chain may let in.
const INPUT_ND: [Icmpv6Type; 3] = [
    Icmpv6Type::RouterAdvert,
    Icmpv6Type::NeighborSolicit,
    Icmpv6Type::NeighborAdvert,
];

/// The permitted shapes of an accept rule (its matches; log and counter do not matter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accept<'a> {
    /// `oifname "lo"`.
    LoopbackOut,
    /// `iifname "lo"`.
    LoopbackIn,
    /// `ct state` with only `established` and/or `related`.
    Established,
    /// `icmpv6 type TYPE`.
    NeighbourDiscovery(Icmpv6Type),
    /// `ip daddr @SET` / `ip6 daddr @SET`.
    DaddrInSet(&'a str),
    /// `ip daddr ADDR tcp dport PORT`: a port of the host reached over loopback networking.
    HostPort,
    /// No match at all: the bypass of modes `down` and `down --all`.
    Everything,
}

/// The permitted shape of `rule` if it is an accept, `None` for any other accept.
fn accept_shape(rule: &Rule) -> Option<Accept<'_>> {
    match rule.matches.as_slice() {
        [Match::OifName(name)] if name == LOOPBACK => Some(Accept::LoopbackOut),
        [Match::IifName(name)] if name == LOOPBACK => Some(Accept::LoopbackIn),
        [Match::CtState(CtStates(states))]
            if *states != 0 && states & !CtStates::ESTABLISHED_RELATED.0 == 0 =>
        {
            Some(Accept::Established)
        }
        [Match::Icmpv6Type(kind)] => Some(Accept::NeighbourDiscovery(*kind)),
        [Match::DaddrInSet { set, .. }] => Some(Accept::DaddrInSet(set)),
        // Only the host's loopback as rootless networking maps it: an accept of a port at any
        // other address would bypass the allow sets.
        [Match::Daddr(addr), Match::TcpDport(_)] if HOST_LOOPBACK.contains(addr) => {
            Some(Accept::HostPort)
        }
        [] => Some(Accept::Everything),
        _ => None,
    }
}

/// Whether `rule` is `[ip|ip6] daddr @SET [meta l4proto tcp] … reject with …` for `set` of
/// `family`, with a TCP match exactly when the reject is a reset.
fn rejects_set(rule: &Rule, family: Family, set: &str, kind: RejectKind) -> bool {
    let daddr_in = |m: &Match| matches!(m, Match::DaddrInSet { family: f, set: s } if *f == family && s == set);
    let shape = match (kind, rule.matches.as_slice()) {
        (RejectKind::TcpReset, [lookup, Match::L4Proto(L4Proto::Tcp)]) => daddr_in(lookup),
        (RejectKind::IcmpxAdminProhibited, [lookup]) => daddr_in(lookup),
        _ => false,
    };
    shape && rule.verdict == Verdict::Reject(kind)
}

/// The four rules that reject what heads for `v4`/`v6` (TCP with a reset, the rest with ICMP).
fn reject_rules(v4: &'static str, v6: &'static str) -> [(Family, &'static str, RejectKind); 4] {
    [
        (Family::V4, v4, RejectKind::TcpReset),
        (Family::V4, v4, RejectKind::IcmpxAdminProhibited),
        (Family::V6, v6, RejectKind::TcpReset),
        (Family::V6, v6, RejectKind::IcmpxAdminProhibited),
    ]
}

/// Whether `rule` is the terminal reject of `kind`, logged as blocked.
fn is_terminal(rule: &Rule, kind: RejectKind) -> bool {
    let matches_ok = match kind {
        RejectKind::TcpReset => rule.matches == [Match::L4Proto(L4Proto::Tcp)],
        RejectKind::IcmpxAdminProhibited => rule.matches.is_empty(),
    };
    let log_ok = rule
        .log
        .as_ref()
        .is_some_and(|log| log.prefix == PREFIX_BLOCKED && log.group == LOG_GROUP);
    matches_ok && log_ok && rule.verdict == Verdict::Reject(kind)
}

/// Human name of a family, for messages.
fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// Human name of a set kind, for messages.
fn kind_name(kind: SetKind) -> &'static str {
    match kind {
        SetKind::Hash => "a hash",
        SetKind::Interval => "an interval",
        SetKind::Timeout => "a timeout",
    }
}

/// Human name of a mode, for messages (as `shieldctl` spells it).
struct ModeName(Mode);

impl fmt::Display for ModeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Mode::Up => "up",
            Mode::Down => "down",
            Mode::DownAll => "down --all",
            Mode::Block => "block",
        })
    }
}

/// A rule and its 1-based position, for messages: ``rule 3 (`ct state … accept`)``.
struct At<'a>(usize, &'a Rule);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} (`{}`)", self.0 + 1, render_rule(self.1))
    }
}

struct Checker<'a> {
    table: &'a Table,
    mode: Mode,
    violations: Vec<Violation>,
}

impl<'a> Checker<'a> {
    fn violation(&mut self, message: String) {
        self.violations.push(Violation(message));
    }

    /// Every set shield declares exists with its family and kind, and every set's elements are
    /// well-formed; in modes that reject private ranges, the private sets cover them all.
    fn check_sets(&mut self) {
        for spec in SET_SPECS {
            match self.table.set(spec.name) {
                None => self.violation(format!("set {}: missing", spec.name)),
                Some(set) => {
                    if set.family != spec.family {
                        self.violation(format!(
                            "set {}: holds {} addresses, must hold {}",
                            set.name,
                            family_name(set.family),
                            family_name(spec.family),
                        ));
                    }
                    if set.kind != spec.kind {
                        self.violation(format!(
                            "set {}: is {} set, must be {} set",
                            set.name,
                            kind_name(set.kind),
                            kind_name(spec.kind)
                        ));
                    }
                }
            }
        }
        for set in &self.table.sets {
            self.check_elements(set);
        }
        if matches!(self.mode, Mode::Up | Mode::Down) {
            for (name, family) in [(PRIVATE_V4_SET, Family::V4), (PRIVATE_V6_SET, Family::V6)] {
                if let Some(set) = self.table.set(name) {
                    self.check_private_coverage(set, family);
                }
            }
        }
    }

    /// Elements match the set's family; interval elements are sorted, apart (neither overlapping
    /// nor adjacent) and permanent; hash elements are permanent single addresses; timeout
    /// elements are single addresses.
    fn check_elements(&mut self, set: &Set) {
        let mut previous: Option<&IpRange> = None;
        for element in &set.elements {
            let range = &element.range;
            let shown = render_range(range);
            if family_of(range.start) != set.family || family_of(range.end) != set.family {
                self.violation(format!(
                    "set {}: element {shown} is not an {} address",
                    set.name,
                    family_name(set.family)
                ));
                continue;
            }
            if addr_bits(range.start) > addr_bits(range.end) {
                self.violation(format!(
                    "set {}: element {shown} ends before it starts",
                    set.name
                ));
                continue;
            }
            match set.kind {
                SetKind::Interval => {
                    if element.timeout.is_some() {
                        self.violation(format!(
                            "set {}: element {shown} has a timeout in an interval set",
                            set.name
                        ));
                    }
                    if let Some(before) = previous {
                        // Adjacent elements share a key in the kernel's interval encoding.
                        let apart = addr_bits(before.end)
                            .checked_add(1)
                            .is_some_and(|after| after < addr_bits(range.start));
                        if !apart {
                            self.violation(format!(
                                "set {}: element {shown} is not sorted after, apart from, {}",
                                set.name,
                                render_range(before)
                            ));
                        }
                    }
                    previous = Some(range);
                }
                SetKind::Hash | SetKind::Timeout => {
                    if range.start != range.end {
                        self.violation(format!(
                            "set {}: element {shown} is a range in {} set",
                            set.name,
                            kind_name(set.kind)
                        ));
                    }
                    if set.kind == SetKind::Hash && element.timeout.is_some() {
                        self.violation(format!(
                            "set {}: element {shown} has a timeout in a hash set",
                            set.name
                        ));
                    }
                }
            }
        }
    }

    /// Every private range of `family` lies inside the elements of `set`.
    fn check_private_coverage(&mut self, set: &Set, family: Family) {
        let held: Vec<IpRange> =
            merge_ranges(&set.elements.iter().map(|e| e.range).collect::<Vec<_>>());
        for net in private_nets().filter(|net| family_of(net.addr()) == family) {
            let wanted = net_range(net);
            let covered = held.iter().any(|range| {
                family_of(range.start) == family
                    && addr_bits(range.start) <= addr_bits(wanted.start)
                    && addr_bits(wanted.end) <= addr_bits(range.end)
            });
            if !covered {
                self.violation(format!(
                    "set {}: private range {net} is not covered, mode {} must reject it",
                    set.name,
                    ModeName(self.mode)
                ));
            }
        }
    }

    /// Checks that hold for the rules of every chain: set references resolve to a set of the
    /// rule's family, resets only answer TCP, and nothing drops or accepts unconditionally
    /// (except the bypass, checked where it belongs).
    fn check_rules_everywhere(&mut self) {
        for chain in &self.table.chains {
            for (index, rule) in chain.rules.iter().enumerate() {
                for condition in &rule.matches {
                    if let Match::DaddrInSet { family, set } = condition {
                        self.check_reference(chain, index, rule, *family, set);
                    }
                }
                let is_tcp = rule
                    .matches
                    .iter()
                    .any(|m| matches!(m, Match::L4Proto(L4Proto::Tcp) | Match::TcpDport(_)));
                if rule.verdict == Verdict::Reject(RejectKind::TcpReset) && !is_tcp {
                    self.violation(format!(
                        "chain {}: {} resets without matching tcp",
                        chain.name,
                        At(index, rule)
                    ));
                }
                if rule.matches.is_empty() && rule.verdict == Verdict::Drop {
                    self.violation(format!(
                        "chain {}: {} drops unconditionally, shadowing every rule after it",
                        chain.name,
                        At(index, rule)
                    ));
                }
            }
        }
    }

    fn check_reference(
        &mut self,
        chain: &Chain,
        index: usize,
        rule: &Rule,
        family: Family,
        name: &str,
    ) {
        match self.table.set(name) {
            None => self.violation(format!(
                "chain {}: {} references set {name}, which does not exist",
                chain.name,
                At(index, rule)
            )),
            Some(set) if set.family != family => self.violation(format!(
                "chain {}: {} matches {} addresses against set {name} of {} addresses",
                chain.name,
                At(index, rule),
                family_name(family),
                family_name(set.family)
            )),
            Some(_) => {}
        }
    }

    /// The chain called `name`, if it exists as a filter base chain on `hook` at priority 0 with
    /// policy drop; reports what is wrong otherwise. A chain on the wrong hook is not returned:
    /// its rules would be checked against the wrong expectations.
    fn base_chain(&mut self, name: &str, hook: Hook) -> Option<&'a Chain> {
        let Some(chain) = self.table.chain(name) else {
            self.violation(format!("chain {name}: missing"));
            return None;
        };
        if chain.policy != ChainPolicy::Drop {
            self.violation(format!("chain {name}: policy is accept, must be drop"));
        }
        if chain.priority != 0 {
            self.violation(format!(
                "chain {name}: priority is {}, must be 0 (filter)",
                chain.priority
            ));
        }
        if chain.hook != hook {
            self.violation(format!(
                "chain {name}: hooked to {:?}, must be hooked to {hook:?}",
                chain.hook
            ));
            return None;
        }
        Some(chain)
    }

    fn check_output(&mut self, chain: &Chain) {
        let rules = &chain.rules;
        let name = &chain.name;
        match rules.first() {
            Some(first) if is_accept(first) && accept_shape(first) == Some(Accept::LoopbackOut) => {
            }
            Some(first) => self.violation(format!(
                "chain {name}: {} must be `oifname \"{LOOPBACK}\" accept`",
                At(0, first)
            )),
            None => self.violation(format!("chain {name}: has no rules")),
        }

        // Where the deny rules end: no accept but loopback may come before that.
        let deny_end = if self.mode == Mode::Block {
            None
        } else {
            let addresses = self.find_all(chain, reject_rules(DENY_V4, DENY_V6), "deny");
            let networks = self.find_all(chain, reject_rules(DENY_NETS_V4, DENY_NETS_V6), "deny");
            addresses.into_iter().chain(networks).max()
        };
        // Where the tail (terminal rejects or bypass) begins.
        let tail_start = self.check_output_tail(chain);

        let mut last_allow = None;
        for (index, rule) in rules.iter().enumerate() {
            if !is_accept(rule) {
                continue;
            }
            let at = At(index, rule);
            if index > 0 && deny_end.is_some_and(|end| index < end) {
                self.violation(format!("chain {name}: {at} accepts before the deny rules"));
            }
            let Some(shape) = accept_shape(rule) else {
                self.violation(format!("chain {name}: {at} is not a permitted accept"));
                continue;
            };
            if self.mode == Mode::Block && shape != Accept::LoopbackOut {
                let what = if shape == Accept::Established {
                    "accepts established flows"
                } else {
                    "accepts more than loopback"
                };
                self.violation(format!(
                    "chain {name}: {at} {what}, mode block must drop everything but loopback"
                ));
                continue;
            }
            match shape {
                Accept::LoopbackOut | Accept::Established | Accept::HostPort => {}
                Accept::LoopbackIn => self.violation(format!(
                    "chain {name}: {at} matches the input interface in the output chain"
                )),
                Accept::NeighbourDiscovery(kind) if OUTPUT_ND.contains(&kind) => {}
                Accept::NeighbourDiscovery(_) => self.violation(format!(
                    "chain {name}: {at} lets out an icmpv6 type that is not neighbour discovery"
                )),
                Accept::DaddrInSet(set) if ACCEPT_SETS.iter().any(|(_, name)| *name == set) => {
                    last_allow = Some(index);
                }
                Accept::DaddrInSet(set) => self.violation(format!(
                    "chain {name}: {at} accepts set {set}, only allow and dns sets are accepted"
                )),
                Accept::Everything => {
                    let bypass =
                        matches!(self.mode, Mode::Down | Mode::DownAll) && index + 1 == rules.len();
                    if !bypass {
                        self.violation(format!(
                            "chain {name}: {at} accepts unconditionally, permitted only as the \
                             last rule in mode down"
                        ));
                    }
                }
            }
        }

        if matches!(self.mode, Mode::Up | Mode::Down) {
            let private = self.find_all(
                chain,
                reject_rules(PRIVATE_V4_SET, PRIVATE_V6_SET),
                "private",
            );
            let private_rules = rules
                .iter()
                .enumerate()
                .filter(|(index, _)| private.contains(index));
            for (index, rule) in private_rules {
                let at = At(index, rule);
                if last_allow.is_some_and(|allow| index < allow) {
                    self.violation(format!(
                        "chain {name}: {at} comes before an allow rule, allowlisted private \
                         addresses would be rejected"
                    ));
                }
                if tail_start.is_some_and(|tail| index > tail) {
                    self.violation(format!(
                        "chain {name}: {at} comes after the end of the chain"
                    ));
                }
            }
        }
    }

    /// Checks the last rules of the output chain for the mode, and returns where they start:
    /// the terminal reject pair in modes up and block, the bypass (if present) in the others.
    fn check_output_tail(&mut self, chain: &Chain) -> Option<usize> {
        let rules = &chain.rules;
        match self.mode {
            Mode::Up | Mode::Block => match rules.as_slice() {
                [.., tcp, rest]
                    if is_terminal(tcp, RejectKind::TcpReset)
                        && is_terminal(rest, RejectKind::IcmpxAdminProhibited) =>
                {
                    Some(rules.len() - 2)
                }
                _ => {
                    self.violation(format!(
                        "chain {}: terminal reject missing, in mode {} the chain must end \
                             with `meta l4proto tcp log prefix \"{PREFIX_BLOCKED}\" group \
                             {LOG_GROUP} counter reject with tcp reset` then `log prefix \
                             \"{PREFIX_BLOCKED}\" group {LOG_GROUP} counter reject with icmpx \
                             admin-prohibited`",
                        chain.name,
                        ModeName(self.mode)
                    ));
                    None
                }
            },
            Mode::Down | Mode::DownAll => {
                let last = rules.last()?;
                let is_bypass = is_accept(last) && last.matches.is_empty();
                is_bypass.then(|| rules.len() - 1)
            }
        }
    }

    /// Positions of the reject rules `wanted` in `chain`; reports the missing ones.
    fn find_all(
        &mut self,
        chain: &Chain,
        wanted: [(Family, &'static str, RejectKind); 4],
        what: &str,
    ) -> Vec<usize> {
        let mut found = Vec::new();
        for (family, set, kind) in wanted {
            let position = chain
                .rules
                .iter()
                .position(|rule| rejects_set(rule, family, set, kind));
            match position {
                Some(index) => found.push(index),
                None => {
                    let proto = match kind {
                        RejectKind::TcpReset => " meta l4proto tcp",
                        RejectKind::IcmpxAdminProhibited => "",
                    };
                    let ip = match family {
                        Family::V4 => "ip",
                        Family::V6 => "ip6",
                    };
                    self.violation(format!(
                        "chain {}: {what} rule `{ip} daddr @{set}{proto} … {}` missing",
                        chain.name,
                        reject_text(kind)
                    ));
                }
            }
        }
        found
    }

    fn check_input(&mut self, chain: &Chain) {
        let name = &chain.name;
        for (index, rule) in chain.rules.iter().enumerate() {
            if !is_accept(rule) {
                continue;
            }
            let at = At(index, rule);
            let permitted = match accept_shape(rule) {
                Some(Accept::LoopbackIn) => true,
                Some(Accept::Established) => self.mode != Mode::Block,
                Some(Accept::NeighbourDiscovery(kind)) => {
                    self.mode != Mode::Block && INPUT_ND.contains(&kind)
                }
                _ => false,
            };
            if !permitted {
                let allowed = if self.mode == Mode::Block {
                    "only loopback in mode block"
                } else {
                    "only loopback, established/related and neighbour discovery"
                };
                self.violation(format!(
                    "chain {name}: {at} is not a permitted accept ({allowed})"
                ));
            }
        }
    }
}

fn is_accept(rule: &Rule) -> bool {
    rule.verdict == Verdict::Accept
}

fn reject_text(kind: RejectKind) -> &'static str {
    match kind {
        RejectKind::TcpReset => "reject with tcp reset",
        RejectKind::IcmpxAdminProhibited => "reject with icmpx admin-prohibited",
    }
}
