//! Our IR → the kernel's objects ([`super::kernel`]). Pure.
//!
//! Every rule shape the builder emits becomes exactly the expression sequence `nft` itself
//! generates for the same text (checked against `nft --debug=netlink`), so that a table applied
//! by shield lists identically to one loaded with `nft -f`: in an `inet` table a `meta nfproto`
//! guard precedes every `ip`/`ip6` payload match, interface names compare 16 zero-padded bytes,
//! `tcp dport` and `icmpv6 type` carry their `meta l4proto` dependency, `ct state` is a masked
//! compare. Set elements follow nft too: an interval `a-b` is a start element `a` plus an end
//! element `b + 1` flagged `NFT_SET_ELEM_INTERVAL_END` (none when `b` is the top address), and
//! a non-empty interval set starts with an end element at the zero address.

use std::net::IpAddr;

use super::error::NftError;
use super::kernel::{
    CMP_EQ, CMP_NEQ, CT_STATE, ELEM_F_INTERVAL_END, Expr, ICMPX_ADMIN_PROHIBITED, IFNAMSIZ, KElem,
    KSet, META_IIFNAME, META_L4PROTO, META_NFPROTO, META_OIFNAME, NFPROTO_IPV4, NFPROTO_IPV6,
    PAYLOAD_NETWORK, PAYLOAD_TRANSPORT, REG_1, REJECT_ICMPX_UNREACH, REJECT_TCP_RST,
    SET_F_INTERVAL, SET_F_TIMEOUT, TYPE_IPV4_ADDR, TYPE_IPV6_ADDR, VERDICT_ACCEPT, VERDICT_DROP,
};
use crate::ruleset::ir::{
    Family, L4Proto, Match, RejectKind, Rule, Set, SetElement, SetKind, Table, Verdict,
};

/// nft's set user data: `NFTNL_UDATA_SET_KEYBYTEORDER` = big endian (TLV type 0, length 4).
pub const SET_USERDATA: [u8; 6] = [0, 4, 2, 0, 0, 0];

/// nft's element user data for an interval that reaches the top address:
/// `NFTNL_UDATA_SET_ELEM_FLAGS` = `NFTNL_SET_ELEM_F_INTERVAL_OPEN` (TLV type 1, length 4).
pub const OPEN_INTERVAL_USERDATA: [u8; 6] = [1, 4, 1, 0, 0, 0];

/// The kernel set id of `table.sets[index]` within one batch (ids start at 1, like nft's).
pub fn set_id(index: usize) -> u32 {
    u32::try_from(index).map_or(u32::MAX, |i| i.saturating_add(1))
}

/// The kernel description of a set (without elements).
pub fn set_header(set: &Set) -> KSet {
    let (key_type, key_len) = key_type(set.family);
    KSet {
        name: set.name.clone(),
        flags: match set.kind {
            SetKind::Hash => 0,
            SetKind::Interval => SET_F_INTERVAL,
            SetKind::Timeout => SET_F_TIMEOUT,
        },
        key_type,
        key_len,
        default_timeout_ms: None,
        is_map: false,
    }
}

/// nft data type and key length of a family's addresses.
pub const fn key_type(family: Family) -> (u32, u32) {
    match family {
        Family::V4 => (TYPE_IPV4_ADDR, 4),
        Family::V6 => (TYPE_IPV6_ADDR, 16),
    }
}

/// The kernel elements of a whole set, as `nft` would send them for a freshly created set.
pub fn set_elements(set: &Set) -> Result<Vec<KElem>, NftError> {
    let mut out = Vec::with_capacity(set.elements.len().saturating_mul(2).saturating_add(1));
    if set.kind == SetKind::Interval
        && let Some(first) = set.elements.first()
        && !is_zero(first.range.start)
    {
        out.push(plain_elem(zero(set.family), ELEM_F_INTERVAL_END));
    }
    for element in &set.elements {
        out.extend(element_elems(set, element)?);
    }
    Ok(out)
}

/// The kernel elements (one, or a start and an end) of one IR element of `set`.
///
/// Also what a later incremental add or delete of single elements sends.
pub fn element_elems(set: &Set, element: &SetElement) -> Result<Vec<KElem>, NftError> {
    let what = || {
        format!(
            "element {}-{} of set {}",
            element.range.start, element.range.end, set.name
        )
    };
    let start = element.range.start;
    let end = element.range.end;
    if family_of(start) != set.family || family_of(end) != set.family {
        return Err(NftError::encode(
            what(),
            "address family differs from the set's",
        ));
    }
    if start > end {
        return Err(NftError::encode(what(), "range ends before it starts"));
    }
    match set.kind {
        SetKind::Hash => {
            if start != end {
                return Err(NftError::encode(
                    what(),
                    "a hash set holds single addresses",
                ));
            }
            if element.timeout.is_some() {
                return Err(NftError::encode(what(), "hash set elements never expire"));
            }
            Ok(vec![plain_elem(start, 0)])
        }
        SetKind::Timeout => {
            if start != end {
                return Err(NftError::encode(
                    what(),
                    "a timeout set holds single addresses",
                ));
            }
            let timeout_ms = match element.timeout {
                None => None,
                Some(timeout) if timeout.is_zero() => {
                    return Err(NftError::encode(
                        what(),
                        "a zero timeout does not mean never",
                    ));
                }
                // Whole milliseconds, rounded up so that a sub-millisecond timeout stays one.
                Some(timeout) => {
                    Some(u64::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
                }
            };
            Ok(vec![KElem {
                timeout_ms,
                ..plain_elem(start, 0)
            }])
        }
        SetKind::Interval => {
            if element.timeout.is_some() {
                return Err(NftError::encode(
                    what(),
                    "interval set elements never expire",
                ));
            }
            Ok(match successor(end) {
                Some(after) => vec![plain_elem(start, 0), plain_elem(after, ELEM_F_INTERVAL_END)],
                None => vec![KElem {
                    userdata: OPEN_INTERVAL_USERDATA.to_vec(),
                    ..plain_elem(start, 0)
                }],
            })
        }
    }
}

fn plain_elem(key: IpAddr, flags: u32) -> KElem {
    KElem {
        key: octets(key),
        flags,
        timeout_ms: None,
        userdata: Vec::new(),
        extra: None,
    }
}

/// Network-order bytes of an address.
pub fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The family of an address.
pub const fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn zero(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::from([0u8; 4]),
        Family::V6 => IpAddr::from([0u8; 16]),
    }
}

fn is_zero(addr: IpAddr) -> bool {
    addr.is_unspecified()
}

/// `addr + 1`, or `None` at the top address.
pub fn successor(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => u32::from(a)
            .checked_add(1)
            .map(|n| IpAddr::from(n.to_be_bytes())),
        IpAddr::V6(a) => u128::from(a)
            .checked_add(1)
            .map(|n| IpAddr::from(n.to_be_bytes())),
    }
}

/// The expressions of one rule of `table`; `location` names it for errors.
pub fn rule_exprs(table: &Table, rule: &Rule, location: &str) -> Result<Vec<Expr>, NftError> {
    let mut out = Vec::new();
    for m in &rule.matches {
        match_exprs(table, m, location, &mut out)?;
    }
    if let Some(log) = &rule.log {
        if log.prefix.len() > 127 || log.prefix.contains('\0') {
            return Err(NftError::encode(
                location,
                "a log prefix is at most 127 bytes without NUL",
            ));
        }
        out.push(Expr::Log {
            prefix: Some(log.prefix.clone()),
            group: Some(log.group),
        });
    }
    if rule.counter.is_some() {
        out.push(Expr::Counter {
            packets: 0,
            bytes: 0,
        });
    }
    out.push(match rule.verdict {
        Verdict::Accept => Expr::Verdict(VERDICT_ACCEPT),
        Verdict::Drop => Expr::Verdict(VERDICT_DROP),
        Verdict::Reject(RejectKind::TcpReset) => Expr::Reject {
            kind: REJECT_TCP_RST,
            code: Some(0),
        },
        Verdict::Reject(RejectKind::IcmpxAdminProhibited) => Expr::Reject {
            kind: REJECT_ICMPX_UNREACH,
            code: Some(ICMPX_ADMIN_PROHIBITED),
        },
    });
    Ok(out)
}

fn match_exprs(
    table: &Table,
    m: &Match,
    location: &str,
    out: &mut Vec<Expr>,
) -> Result<(), NftError> {
    match m {
        Match::OifName(name) => ifname(META_OIFNAME, name, location, out)?,
        Match::IifName(name) => ifname(META_IIFNAME, name, location, out)?,
        Match::DaddrInSet { family, set } => {
            let Some(index) = table.sets.iter().position(|s| &s.name == set) else {
                return Err(NftError::encode(location, format!("no set named {set}")));
            };
            if table.sets.get(index).map(|s| s.family) != Some(*family) {
                return Err(NftError::encode(
                    location,
                    format!("set {set} has the other family"),
                ));
            }
            daddr_load(*family, out);
            out.push(Expr::Lookup {
                sreg: REG_1,
                set: set.clone(),
                set_id: Some(set_id(index)),
            });
        }
        Match::Daddr(addr) => {
            daddr_load(family_of(*addr), out);
            out.push(cmp(CMP_EQ, octets(*addr)));
        }
        Match::L4Proto(proto) => l4proto(*proto, out),
        Match::TcpDport(port) => {
            l4proto(L4Proto::Tcp, out);
            out.push(Expr::Payload {
                base: PAYLOAD_TRANSPORT,
                offset: 2,
                len: 2,
                dreg: REG_1,
            });
            out.push(cmp(CMP_EQ, port.to_be_bytes().to_vec()));
        }
        Match::CtState(states) => {
            out.push(Expr::Ct {
                key: CT_STATE,
                dreg: REG_1,
            });
            out.push(Expr::Bitwise {
                sreg: REG_1,
                dreg: REG_1,
                mask: states.0.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            });
            out.push(cmp(CMP_NEQ, vec![0; 4]));
        }
        Match::Icmpv6Type(kind) => {
            nfproto(NFPROTO_IPV6, out);
            l4proto(L4Proto::Icmpv6, out);
            out.push(Expr::Payload {
                base: PAYLOAD_TRANSPORT,
                offset: 0,
                len: 1,
                dreg: REG_1,
            });
            out.push(cmp(CMP_EQ, vec![kind.number()]));
        }
    }
    Ok(())
}

fn cmp(op: u32, data: Vec<u8>) -> Expr {
    Expr::Cmp {
        sreg: REG_1,
        op,
        data,
    }
}

fn meta(key: u32) -> Expr {
    Expr::Meta { key, dreg: REG_1 }
}

fn nfproto(proto: u8, out: &mut Vec<Expr>) {
    out.push(meta(META_NFPROTO));
    out.push(cmp(CMP_EQ, vec![proto]));
}

fn l4proto(proto: L4Proto, out: &mut Vec<Expr>) {
    out.push(meta(META_L4PROTO));
    out.push(cmp(CMP_EQ, vec![proto.number()]));
}

/// `meta nfproto` guard plus the destination address load of `family`.
fn daddr_load(family: Family, out: &mut Vec<Expr>) {
    let (proto, offset, len) = daddr_field(family);
    nfproto(proto, out);
    out.push(Expr::Payload {
        base: PAYLOAD_NETWORK,
        offset,
        len,
        dreg: REG_1,
    });
}

/// `(nfproto, offset, length)` of the destination address in the network header.
pub const fn daddr_field(family: Family) -> (u8, u32, u32) {
    match family {
        Family::V4 => (NFPROTO_IPV4, 16, 4),
        Family::V6 => (NFPROTO_IPV6, 24, 16),
    }
}

fn ifname(key: u32, name: &str, location: &str, out: &mut Vec<Expr>) -> Result<(), NftError> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(NftError::encode(
            location,
            format!(
                "interface name {name:?} is not 1 to {} bytes without NUL",
                IFNAMSIZ - 1
            ),
        ));
    }
    let mut data = name.as_bytes().to_vec();
    data.resize(IFNAMSIZ, 0);
    out.push(meta(key));
    out.push(cmp(CMP_EQ, data));
    Ok(())
}
