//! Our own representation of table `inet shield`.
//!
//! Everything that decides what a container may reach is expressed in these types first. The
//! builder produces them from policy, the renderer turns them into `nft` text, the netlink layer
//! encodes them into a batch and lifts what the kernel holds back into them, and the invariant
//! checker proves the fail-closed properties on either side. Nothing here does I/O.

use std::net::IpAddr;
use std::time::Duration;

/// Name of the table shield owns in every container's network namespace (family `inet`).
pub const TABLE_NAME: &str = "shield";

/// NFLOG group every shield log statement sends to.
pub const LOG_GROUP: u16 = 100;

/// A whole `inet` table: its sets and its chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Named sets, in declaration order.
    pub sets: Vec<Set>,
    /// Chains, in declaration order.
    pub chains: Vec<Chain>,
}

impl Table {
    /// The set called `name`, if the table has one.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|set| set.name == name)
    }

    /// The chain called `name`, if the table has one.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|chain| chain.name == name)
    }
}

/// Address family of a set's keys and of address matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `ipv4_addr`, matched with `ip daddr`.
    V4,
    /// `ipv6_addr`, matched with `ip6 daddr`.
    V6,
}

/// How a set stores its elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// No flags: a hash of single addresses, permanent. What one element costs the kernel to add
    /// or remove does not grow with the set (an interval set's commit does).
    Hash,
    /// `flags interval`: addresses and ranges, permanent.
    Interval,
    /// `flags timeout`: single addresses, each with its own timeout (DNS-learnt addresses).
    Timeout,
}

/// A named set of addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// Set name, unique in the table.
    pub name: String,
    /// Key type.
    pub family: Family,
    /// Storage kind (flags).
    pub kind: SetKind,
    /// Elements, sorted by start address, never overlapping or adjacent (interval sets are
    /// normalised by the builder because the kernel refuses overlaps).
    pub elements: Vec<SetElement>,
}

/// An inclusive address range; a single address has `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    /// First address in the range.
    pub start: IpAddr,
    /// Last address in the range (inclusive); same family as `start`.
    pub end: IpAddr,
}

/// One element of a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetElement {
    /// The addresses the element covers (a single address in timeout sets).
    pub range: IpRange,
    /// Element timeout (timeout sets only); `None` means the element never expires.
    pub timeout: Option<Duration>,
}

/// Netfilter hook a base chain is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Locally generated packets (egress from the container).
    Output,
    /// Packets addressed to the container.
    Input,
}

/// Policy of a base chain: what happens to a packet no rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainPolicy {
    /// Let it through (never used by the builder; present so a read-back can say so).
    Accept,
    /// Drop it.
    Drop,
}

/// A base chain of type `filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Chain name, unique in the table.
    pub name: String,
    /// Hook the chain is attached to.
    pub hook: Hook,
    /// Hook priority (0 = `filter`).
    pub priority: i32,
    /// Verdict for packets no rule decided.
    pub policy: ChainPolicy,
    /// Rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// One rule: all `matches` must hold, then the statements run in order: log, counter, verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Conditions, in evaluation order.
    pub matches: Vec<Match>,
    /// NFLOG statement, if any.
    pub log: Option<Log>,
    /// Counter statement, if any.
    pub counter: Option<Counter>,
    /// What happens to a packet that matched.
    pub verdict: Verdict,
}

/// A condition on a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// `oifname "NAME"`.
    OifName(String),
    /// `iifname "NAME"`.
    IifName(String),
    /// `ip daddr @SET` (V4) or `ip6 daddr @SET` (V6).
    DaddrInSet {
        /// Family of the address and of the set.
        family: Family,
        /// Name of a set in the same table.
        set: String,
    },
    /// `ip daddr ADDR` / `ip6 daddr ADDR`: one destination address.
    Daddr(IpAddr),
    /// `meta l4proto PROTO`.
    L4Proto(L4Proto),
    /// `tcp dport PORT` (implies `meta l4proto tcp`).
    TcpDport(u16),
    /// `ct state STATES`: true when the connection's state is any of the given ones.
    CtState(CtStates),
    /// `icmpv6 type TYPE` (implies `meta l4proto ipv6-icmp`).
    Icmpv6Type(Icmpv6Type),
}

/// Transport protocols the ruleset names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMPv6 (58).
    Icmpv6,
}

impl L4Proto {
    /// IANA protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmpv6 => 58,
        }
    }

    /// The protocol with IANA number `number`, if the ruleset can name it.
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            58 => Some(Self::Icmpv6),
            _ => None,
        }
    }
}

/// A set of conntrack states, as the kernel's `ct state` bit mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtStates(pub u32);

impl CtStates {
    /// `invalid`.
    pub const INVALID: u32 = 1;
    /// `established`.
    pub const ESTABLISHED: u32 = 1 << 1;
    /// `related`.
    pub const RELATED: u32 = 1 << 2;
    /// `new`.
    pub const NEW: u32 = 1 << 3;
    /// `established,related`.
    pub const ESTABLISHED_RELATED: Self = Self(Self::ESTABLISHED | Self::RELATED);
}

/// ICMPv6 message types the ruleset lets through (neighbour discovery).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv6Type {
    /// `nd-router-solicit` (133).
    RouterSolicit,
    /// `nd-router-advert` (134).
    RouterAdvert,
    /// `nd-neighbor-solicit` (135).
    NeighborSolicit,
    /// `nd-neighbor-advert` (136).
    NeighborAdvert,
}

impl Icmpv6Type {
    /// ICMPv6 type number.
    pub const fn number(self) -> u8 {
        match self {
            Self::RouterSolicit => 133,
            Self::RouterAdvert => 134,
            Self::NeighborSolicit => 135,
            Self::NeighborAdvert => 136,
        }
    }

    /// The type with number `number`, if it is one the ruleset names.
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            133 => Some(Self::RouterSolicit),
            134 => Some(Self::RouterAdvert),
            135 => Some(Self::NeighborSolicit),
            136 => Some(Self::NeighborAdvert),
            _ => None,
        }
    }

    /// The keyword `nft` uses for the type.
    pub const fn keyword(self) -> &'static str {
        match self {
            Self::RouterSolicit => "nd-router-solicit",
            Self::RouterAdvert => "nd-router-advert",
            Self::NeighborSolicit => "nd-neighbor-solicit",
            Self::NeighborAdvert => "nd-neighbor-advert",
        }
    }
}

/// `log prefix "PREFIX" group GROUP` (NFLOG).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    /// Prefix attached to every record (e.g. `SHIELD_BLOCKED`).
    pub prefix: String,
    /// NFLOG group.
    pub group: u16,
}

/// `counter`: the kernel's packet and byte counts (zero in a freshly built ruleset).
///
/// Two counters compare equal whatever their values: a ruleset read back from the kernel is the
/// same ruleset as the one built, however much traffic it has counted since.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

impl PartialEq for Counter {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Counter {}

/// What happens to a packet that matched a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Accept,
    /// Drop it silently.
    Drop,
    /// Reject it: the sender learns at once.
    Reject(RejectKind),
}

/// How a rejected packet is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    /// `reject with tcp reset` (only valid after `meta l4proto tcp`): a blocking `connect()`
    /// fails at once with ECONNREFUSED.
    TcpReset,
    /// `reject with icmpx admin-prohibited`.
    IcmpxAdminProhibited,
}
