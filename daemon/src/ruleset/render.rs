//! The renderer: [`Table`] → canonical `nft` text. Pure.
//!
//! The text is what `shieldctl rules` and `preview` show and what the golden tests pin down. It is
//! laid out like `nft list table inet shield` (tabs, one rule a line, a blank line between
//! blocks) so the two can be compared, and `nft -f` loads it into an empty namespace as exactly
//! the table it describes. It is never what the daemon applies: that goes through netlink.

use std::fmt::{self, Display, Formatter};
use std::net::IpAddr;
use std::time::Duration;

use super::build::{addr_bits, family_of};
use super::ir::{
    Chain, ChainPolicy, Counter, CtStates, Family, Hook, IpRange, L4Proto, Log, Match, RejectKind,
    Rule, Set, SetElement, SetKind, TABLE_NAME, Table, Verdict,
};

/// Renders `table` as `nft -f` input that creates table `inet shield`.
///
/// Only the `table inet shield { … }` block: a caller that wants to replace a loaded table
/// deletes it first.
pub fn render(table: &Table) -> String {
    NftTable(table).to_string()
}

/// Renders one rule as it appears inside its chain, e.g. `oifname "lo" accept`.
pub fn render_rule(rule: &Rule) -> String {
    NftRule(rule).to_string()
}

/// Renders an address range as `nft` writes a set element: a single address, a CIDR prefix when
/// the range is exactly one, `first-last` otherwise.
pub fn render_range(range: &IpRange) -> String {
    NftRange(range).to_string()
}

/// Renders a duration in `nft`'s syntax (`1h2m3s`, `1m500ms`), to the millisecond: the kernel
/// keeps set timeouts in milliseconds.
pub fn render_duration(duration: Duration) -> String {
    NftDuration(duration).to_string()
}

struct NftTable<'a>(&'a Table);

impl Display for NftTable<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {TABLE_NAME} {{")?;
        let sets = self.0.sets.iter().map(NftBlock::Set);
        let chains = self.0.chains.iter().map(NftBlock::Chain);
        for (index, block) in sets.chain(chains).enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{block}")?;
        }
        writeln!(f, "}}")
    }
}

/// A block inside the table, written with one tab of indentation.
enum NftBlock<'a> {
    Set(&'a Set),
    Chain(&'a Chain),
}

impl Display for NftBlock<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Set(set) => {
                writeln!(f, "\tset {} {{", set.name)?;
                let key = match set.family {
                    Family::V4 => "ipv4_addr",
                    Family::V6 => "ipv6_addr",
                };
                writeln!(f, "\t\ttype {key}")?;
                let flags = match set.kind {
                    SetKind::Hash => None,
                    SetKind::Interval => Some("interval"),
                    SetKind::Timeout => Some("timeout"),
                };
                if let Some(flags) = flags {
                    writeln!(f, "\t\tflags {flags}")?;
                }
                // `elements = { }` is a syntax error: an empty set has no elements line.
                if !set.elements.is_empty() {
                    write!(f, "\t\telements = {{ ")?;
                    for (index, element) in set.elements.iter().enumerate() {
                        if index > 0 {
                            write!(f, ", ")?;
                        }
                        write!(f, "{}", NftElement(element))?;
                    }
                    writeln!(f, " }}")?;
                }
                writeln!(f, "\t}}")
            }
            Self::Chain(chain) => {
                writeln!(f, "\tchain {} {{", chain.name)?;
                let hook = match chain.hook {
                    Hook::Output => "output",
                    Hook::Input => "input",
                };
                let policy = match chain.policy {
                    ChainPolicy::Accept => "accept",
                    ChainPolicy::Drop => "drop",
                };
                write!(f, "\t\ttype filter hook {hook} priority ")?;
                if chain.priority == 0 {
                    write!(f, "filter")?;
                } else {
                    write!(f, "{}", chain.priority)?;
                }
                writeln!(f, "; policy {policy};")?;
                for rule in &chain.rules {
                    writeln!(f, "\t\t{}", NftRule(rule))?;
                }
                writeln!(f, "\t}}")
            }
        }
    }
}

struct NftElement<'a>(&'a SetElement);

impl Display for NftElement<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", NftRange(&self.0.range))?;
        match self.0.timeout {
            Some(timeout) => write!(f, " timeout {}", NftDuration(timeout)),
            None => Ok(()),
        }
    }
}

struct NftRange<'a>(&'a IpRange);

impl Display for NftRange<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let IpRange { start, end } = *self.0;
        if start == end {
            return write!(f, "{}", NftAddr(start));
        }
        match prefix_len(self.0) {
            Some(len) => write!(f, "{}/{len}", NftAddr(start)),
            None => write!(f, "{}-{}", NftAddr(start), NftAddr(end)),
        }
    }
}

/// The prefix length of `range` if it is exactly one CIDR prefix.
fn prefix_len(range: &IpRange) -> Option<u32> {
    let family = family_of(range.start);
    if family != family_of(range.end) {
        return None;
    }
    let (start, end) = (addr_bits(range.start), addr_bits(range.end));
    let span = end.checked_sub(start)?;
    // A prefix spans 2^k - 1 past its start, and its start has those k bits clear. For the whole
    // IPv6 space `span + 1` wraps to 0, which still reads as a power of two.
    let is_prefix = span & span.wrapping_add(1) == 0 && start & span == 0;
    let width = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    is_prefix.then(|| width - span.count_ones())
}

/// An address as `nft` writes it; IPv6 in RFC 5952 form (Rust's `Display` for `Ipv6Addr`).
struct NftAddr(IpAddr);

impl Display for NftAddr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

struct NftDuration(Duration);

impl Display for NftDuration {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u128); 5] = [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ];
        let mut left = self.0.as_millis();
        if left == 0 {
            return write!(f, "0s");
        }
        for (unit, millis) in UNITS {
            let count = left / millis;
            if count > 0 {
                write!(f, "{count}{unit}")?;
                left %= millis;
            }
        }
        Ok(())
    }
}

struct NftRule<'a>(&'a Rule);

impl Display for NftRule<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let rule = self.0;
        for condition in &rule.matches {
            write!(f, "{} ", NftMatch(condition))?;
        }
        if let Some(Log { prefix, group }) = &rule.log {
            write!(f, "log prefix \"{prefix}\" group {group} ")?;
        }
        if let Some(Counter { packets, bytes }) = rule.counter {
            if packets == 0 && bytes == 0 {
                write!(f, "counter ")?;
            } else {
                write!(f, "counter packets {packets} bytes {bytes} ")?;
            }
        }
        match rule.verdict {
            Verdict::Accept => write!(f, "accept"),
            Verdict::Drop => write!(f, "drop"),
            Verdict::Reject(RejectKind::TcpReset) => write!(f, "reject with tcp reset"),
            Verdict::Reject(RejectKind::IcmpxAdminProhibited) => {
                write!(f, "reject with icmpx admin-prohibited")
            }
        }
    }
}

struct NftMatch<'a>(&'a Match);

impl Display for NftMatch<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.0 {
            Match::OifName(name) => write!(f, "oifname \"{name}\""),
            Match::IifName(name) => write!(f, "iifname \"{name}\""),
            Match::DaddrInSet { family, set } => write!(f, "{} daddr @{set}", ip_keyword(*family)),
            Match::Daddr(addr) => {
                write!(
                    f,
                    "{} daddr {}",
                    ip_keyword(family_of(*addr)),
                    NftAddr(*addr)
                )
            }
            Match::L4Proto(proto) => {
                let name = match proto {
                    L4Proto::Tcp => "tcp",
                    L4Proto::Udp => "udp",
                    L4Proto::Icmpv6 => "ipv6-icmp",
                };
                write!(f, "meta l4proto {name}")
            }
            Match::TcpDport(port) => write!(f, "tcp dport {port}"),
            Match::CtState(states) => write!(f, "ct state {}", NftCtStates(*states)),
            Match::Icmpv6Type(kind) => write!(f, "icmpv6 type {}", kind.keyword()),
        }
    }
}

/// The payload keyword of an address family.
fn ip_keyword(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// `ct state` bits, named in the order `nft list` prints them; bits without a name are written
/// as one hexadecimal number, which `nft` also accepts.
struct NftCtStates(CtStates);

impl Display for NftCtStates {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        /// `untracked` has no constant in the IR: the ruleset never names it.
        const UNTRACKED: u32 = 1 << 6;
        const NAMES: [(u32, &str); 5] = [
            (CtStates::INVALID, "invalid"),
            (CtStates::NEW, "new"),
            (CtStates::ESTABLISHED, "established"),
            (CtStates::RELATED, "related"),
            (UNTRACKED, "untracked"),
        ];
        let CtStates(mut left) = self.0;
        let mut separator = "";
        for (bit, name) in NAMES {
            if left & bit != 0 {
                write!(f, "{separator}{name}")?;
                separator = ",";
                left &= !bit;
            }
        }
        if left != 0 || separator.is_empty() {
            write!(f, "{separator}{left:#x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &str, end: &str) -> IpRange {
        IpRange {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    #[test]
    fn ranges_print_as_address_prefix_or_span() {
        assert_eq!(render_range(&range("1.2.3.4", "1.2.3.4")), "1.2.3.4");
        assert_eq!(
            render_range(&range("10.0.0.0", "10.255.255.255")),
            "10.0.0.0/8"
        );
        assert_eq!(
            render_range(&range("10.0.0.5", "10.0.0.9")),
            "10.0.0.5-10.0.0.9"
        );
        // The right size but not aligned: not a prefix.
        assert_eq!(
            render_range(&range("10.0.0.1", "10.0.0.2")),
            "10.0.0.1-10.0.0.2"
        );
        assert_eq!(
            render_range(&range("0.0.0.0", "255.255.255.255")),
            "0.0.0.0/0"
        );
        assert_eq!(
            render_range(&range("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            "::/0"
        );
        assert_eq!(
            render_range(&range("2001:db8::", "2001:db8:0:0:ffff:ffff:ffff:ffff")),
            "2001:db8::/64"
        );
        assert_eq!(render_range(&range("::1", "::1")), "::1");
        assert_eq!(
            render_range(&range("::ffff:0.0.0.0", "::ffff:255.255.255.255")),
            "::ffff:0.0.0.0/96"
        );
    }

    #[test]
    fn ipv6_is_canonical() {
        assert_eq!(
            render_range(&range(
                "2001:0DB8:0000:0000:0001:0000:0000:0001",
                "2001:db8::1:0:0:1"
            )),
            "2001:db8::1:0:0:1"
        );
    }

    #[test]
    fn durations_use_nft_units() {
        assert_eq!(render_duration(Duration::from_secs(30)), "30s");
        assert_eq!(render_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(render_duration(Duration::from_millis(60_500)), "1m500ms");
        assert_eq!(render_duration(Duration::from_secs(90_000)), "1d1h");
        assert_eq!(render_duration(Duration::from_micros(1500)), "1ms");
        assert_eq!(render_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn ct_states_print_in_nft_order() {
        let states = CtStates(CtStates::NEW | CtStates::INVALID | CtStates::RELATED);
        assert_eq!(NftCtStates(states).to_string(), "invalid,new,related");
        assert_eq!(NftCtStates(CtStates(0)).to_string(), "0x0");
        assert_eq!(
            NftCtStates(CtStates(CtStates::NEW | 0x100)).to_string(),
            "new,0x100"
        );
    }

    #[test]
    fn counters_print_values_only_when_non_zero() {
        let mut rule = Rule {
            matches: vec![
                Match::TcpDport(53),
                Match::Daddr("169.254.1.2".parse().unwrap()),
            ],
            log: None,
            counter: Some(Counter::default()),
            verdict: Verdict::Drop,
        };
        assert_eq!(
            render_rule(&rule),
            "tcp dport 53 ip daddr 169.254.1.2 counter drop"
        );
        rule.counter = Some(Counter {
            packets: 3,
            bytes: 180,
        });
        assert_eq!(
            render_rule(&rule),
            "tcp dport 53 ip daddr 169.254.1.2 counter packets 3 bytes 180 drop"
        );
    }
}
