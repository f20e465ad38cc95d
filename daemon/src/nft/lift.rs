//! What the kernel holds ([`super::kernel`]) → our IR. Pure.
//!
//! The inverse of [`super::encode`], and deliberately narrow: it recognises exactly the
//! expression sequences shield writes (which are the ones `nft` writes for the same text) and
//! fails on anything else, naming the chain, the rule and the expression. A rule it cannot
//! understand is never skipped, because the invariant checker can only vouch for what it sees:
//! an unknown rule ahead of the drop policy could accept anything.

use std::net::IpAddr;
use std::time::Duration;

use super::encode::daddr_field;
use super::error::NftError;
use super::kernel::{
    CMP_EQ, CMP_NEQ, CT_STATE, ELEM_F_INTERVAL_END, Expr, HOOK_INPUT, HOOK_OUTPUT,
    ICMPX_ADMIN_PROHIBITED, IFNAMSIZ, KChain, KElem, KSet, KTable, META_IIFNAME, META_L4PROTO,
    META_NFPROTO, META_OIFNAME, NFPROTO_IPV4, NFPROTO_IPV6, PAYLOAD_NETWORK, PAYLOAD_TRANSPORT,
    REG_1, REJECT_ICMPX_UNREACH, REJECT_TCP_RST, SET_F_INTERVAL, SET_F_TIMEOUT, TYPE_IPV4_ADDR,
    TYPE_IPV6_ADDR, VERDICT_ACCEPT, VERDICT_DROP,
};
use crate::ruleset::ir::{
    Chain, ChainPolicy, Counter, CtStates, Family, Hook, Icmpv6Type, IpRange, L4Proto, Log, Match,
    RejectKind, Rule, Set, SetElement, SetKind, Table, Verdict,
};

/// `NF_ACCEPT` / `NF_DROP` as chain policies.
const POLICY_ACCEPT: u32 = 1;
const POLICY_DROP: u32 = 0;

/// Lifts a whole table.
pub fn lift_table(k: &KTable) -> Result<Table, NftError> {
    if k.flags != 0 {
        return Err(NftError::lift(
            "table inet shield",
            format!("table flags {:#x} (dormant or not ours)", k.flags),
        ));
    }
    let sets = k
        .sets
        .iter()
        .map(|(set, elems)| lift_set(set, elems))
        .collect::<Result<Vec<_>, _>>()?;
    let mut chains = k
        .chains
        .iter()
        .map(lift_chain)
        .collect::<Result<Vec<_>, _>>()?;
    for rule in &k.rules {
        let Some(chain) = chains.iter_mut().find(|c| c.name == rule.chain) else {
            return Err(NftError::lift(
                format!("rule handle {}", rule.handle),
                format!("its chain {} was not listed", rule.chain),
            ));
        };
        let location = format!(
            "rule {} (handle {}) of chain {}",
            chain.rules.len().saturating_add(1),
            rule.handle,
            chain.name
        );
        let lifted =
            lift_rule(&rule.exprs, &sets).map_err(|reason| NftError::lift(location, reason))?;
        chain.rules.push(lifted);
    }
    Ok(Table { sets, chains })
}

fn lift_chain(k: &KChain) -> Result<Chain, NftError> {
    let location = || format!("chain {}", k.name);
    let hook = match k.hook {
        Some(HOOK_OUTPUT) => Hook::Output,
        Some(HOOK_INPUT) => Hook::Input,
        Some(other) => return Err(NftError::lift(location(), format!("hook {other}"))),
        None => return Err(NftError::lift(location(), "not a base chain")),
    };
    if k.chain_type.as_deref() != Some("filter") {
        return Err(NftError::lift(
            location(),
            format!("chain type {:?}", k.chain_type),
        ));
    }
    let policy = match k.policy {
        Some(POLICY_DROP) => ChainPolicy::Drop,
        Some(POLICY_ACCEPT) => ChainPolicy::Accept,
        other => return Err(NftError::lift(location(), format!("policy {other:?}"))),
    };
    Ok(Chain {
        name: k.name.clone(),
        hook,
        priority: k.priority,
        policy,
        rules: Vec::new(),
    })
}

/// Lifts one set with its elements (interval elements back into ranges).
pub fn lift_set(k: &KSet, elems: &[KElem]) -> Result<Set, NftError> {
    let location = || format!("set {}", k.name);
    let family = match (k.key_type, k.key_len) {
        (TYPE_IPV4_ADDR, 4) => Family::V4,
        (TYPE_IPV6_ADDR, 16) => Family::V6,
        (t, l) => {
            return Err(NftError::lift(
                location(),
                format!("key type {t} length {l}"),
            ));
        }
    };
    if k.is_map {
        return Err(NftError::lift(location(), "a map, not a set"));
    }
    if let Some(ms) = k.default_timeout_ms {
        return Err(NftError::lift(
            location(),
            format!("default timeout {ms} ms"),
        ));
    }
    let kind = match k.flags {
        0 => SetKind::Hash,
        SET_F_INTERVAL => SetKind::Interval,
        SET_F_TIMEOUT => SetKind::Timeout,
        other => return Err(NftError::lift(location(), format!("set flags {other:#x}"))),
    };
    let mut keyed = Vec::with_capacity(elems.len());
    for e in elems {
        if let Some(extra) = &e.extra {
            return Err(NftError::lift(location(), format!("element with {extra}")));
        }
        let addr = addr_of(&e.key, family).ok_or_else(|| {
            NftError::lift(location(), format!("element key of {} bytes", e.key.len()))
        })?;
        keyed.push((addr, e));
    }
    let elements = match kind {
        SetKind::Hash => lift_hash_elems(&keyed).map_err(|r| NftError::lift(location(), r))?,
        SetKind::Timeout => {
            lift_timeout_elems(&keyed).map_err(|r| NftError::lift(location(), r))?
        }
        SetKind::Interval => {
            lift_interval_elems(&mut keyed).map_err(|r| NftError::lift(location(), r))?
        }
    };
    Ok(Set {
        name: k.name.clone(),
        family,
        kind,
        elements,
    })
}

fn lift_hash_elems(keyed: &[(IpAddr, &KElem)]) -> Result<Vec<SetElement>, String> {
    if let Some((addr, _)) = keyed.iter().find(|(_, e)| e.timeout_ms.is_some()) {
        return Err(format!(
            "element {addr} with a timeout in a set without timeouts"
        ));
    }
    lift_timeout_elems(keyed)
}

fn lift_timeout_elems(keyed: &[(IpAddr, &KElem)]) -> Result<Vec<SetElement>, String> {
    let mut out = Vec::with_capacity(keyed.len());
    for (addr, e) in keyed {
        if e.flags != 0 {
            return Err(format!("element {addr} with flags {:#x}", e.flags));
        }
        out.push(SetElement {
            range: IpRange {
                start: *addr,
                end: *addr,
            },
            timeout: e.timeout_ms.map(Duration::from_millis),
        });
    }
    out.sort_by_key(|e| e.range.start);
    Ok(out)
}

fn lift_interval_elems(keyed: &mut [(IpAddr, &KElem)]) -> Result<Vec<SetElement>, String> {
    for (addr, e) in keyed.iter() {
        if e.flags & !ELEM_F_INTERVAL_END != 0 {
            return Err(format!("element {addr} with flags {:#x}", e.flags));
        }
        if e.timeout_ms.is_some() {
            return Err(format!("interval element {addr} with a timeout"));
        }
    }
    // At one address an end (closing the range below) sorts before a start.
    keyed.sort_by_key(|(addr, e)| (*addr, e.flags & ELEM_F_INTERVAL_END == 0));
    let mut out: Vec<SetElement> = Vec::new();
    let mut open: Option<IpAddr> = None;
    for (addr, e) in keyed.iter() {
        if e.flags & ELEM_F_INTERVAL_END != 0 {
            match open.take() {
                Some(start) => {
                    let end = predecessor(*addr)
                        .filter(|end| *end >= start)
                        .ok_or_else(|| {
                            format!("interval end {addr} does not follow its start {start}")
                        })?;
                    out.push(SetElement {
                        range: IpRange { start, end },
                        timeout: None,
                    });
                }
                // nft's leading end element at the zero address.
                None if addr.is_unspecified() && out.is_empty() => {}
                None => return Err(format!("interval end {addr} without a start")),
            }
        } else {
            if let Some(start) = open {
                return Err(format!("interval start {addr} while {start} is still open"));
            }
            open = Some(*addr);
        }
    }
    if let Some(start) = open {
        let end = top(start);
        out.push(SetElement {
            range: IpRange { start, end },
            timeout: None,
        });
    }
    Ok(out)
}

fn addr_of(key: &[u8], family: Family) -> Option<IpAddr> {
    match family {
        Family::V4 => <[u8; 4]>::try_from(key).ok().map(IpAddr::from),
        Family::V6 => <[u8; 16]>::try_from(key).ok().map(IpAddr::from),
    }
}

fn predecessor(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => u32::from(a)
            .checked_sub(1)
            .map(|n| IpAddr::from(n.to_be_bytes())),
        IpAddr::V6(a) => u128::from(a)
            .checked_sub(1)
            .map(|n| IpAddr::from(n.to_be_bytes())),
    }
}

fn top(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::from([0xff; 4]),
        IpAddr::V6(_) => IpAddr::from([0xff; 16]),
    }
}

/// A cursor over a rule's expressions that reports where it stopped understanding them.
struct Cursor<'a> {
    exprs: &'a [Expr],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Expr> {
        self.exprs.get(self.pos)
    }

    fn peek_at(&self, ahead: usize) -> Option<&'a Expr> {
        self.exprs.get(self.pos.saturating_add(ahead))
    }

    fn next(&mut self) -> Option<&'a Expr> {
        let e = self.exprs.get(self.pos);
        if e.is_some() {
            self.pos = self.pos.saturating_add(1);
        }
        e
    }

    /// Error text for the expression at the cursor (1-based position, as humans count).
    fn unexpected(&self, wanted: &str) -> String {
        let position = self.pos.saturating_add(1);
        match self.peek() {
            Some(Expr::Unsupported { what }) => format!("{what} at position {position}"),
            Some(e) => format!(
                "unexpected {} at position {position} (wanted {wanted})",
                describe(e)
            ),
            None => format!("rule ends at position {position} (wanted {wanted})"),
        }
    }

    /// Takes `cmp OP reg 1 DATA`.
    fn cmp(&mut self, op: u32, wanted: &str) -> Result<&'a [u8], String> {
        match self.peek() {
            Some(Expr::Cmp {
                sreg: REG_1,
                op: o,
                data,
            }) if *o == op => {
                self.pos = self.pos.saturating_add(1);
                Ok(data)
            }
            _ => Err(self.unexpected(wanted)),
        }
    }

    /// Takes `cmp eq reg 1 VALUE` for a one-byte value.
    fn cmp_byte(&mut self, wanted: &str) -> Result<u8, String> {
        let data = self.cmp(CMP_EQ, wanted)?;
        match data {
            [b] => Ok(*b),
            _ => {
                self.pos = self.pos.saturating_sub(1);
                Err(self.unexpected(wanted))
            }
        }
    }

    /// Takes `payload load LEN @ BASE + OFFSET => reg 1`.
    fn payload(&mut self, base: u32, offset: u32, len: u32, wanted: &str) -> Result<(), String> {
        match self.peek() {
            Some(Expr::Payload {
                base: b,
                offset: o,
                len: l,
                dreg: REG_1,
            }) if (*b, *o, *l) == (base, offset, len) => {
                self.pos = self.pos.saturating_add(1);
                Ok(())
            }
            _ => Err(self.unexpected(wanted)),
        }
    }
}

fn describe(e: &Expr) -> String {
    match e {
        Expr::Meta { key, dreg } => format!("meta load key {key} => reg {dreg}"),
        Expr::Ct { key, dreg } => format!("ct load key {key} => reg {dreg}"),
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            format!("payload load {len}b @ base {base} + {offset} => reg {dreg}")
        }
        Expr::Cmp { sreg, op, data } => format!("cmp op {op} reg {sreg} {data:02x?}"),
        Expr::Bitwise { .. } => "bitwise".to_owned(),
        Expr::Lookup { set, .. } => format!("lookup set {set}"),
        Expr::Log { prefix, group } => format!("log prefix {prefix:?} group {group:?}"),
        Expr::Counter { .. } => "counter".to_owned(),
        Expr::Verdict(v) => format!("verdict {v}"),
        Expr::Reject { kind, code } => format!("reject type {kind} code {code:?}"),
        Expr::Unsupported { what } => what.clone(),
    }
}

/// Lifts one rule's expressions; the error is the reason (the caller adds the location).
pub fn lift_rule(exprs: &[Expr], sets: &[Set]) -> Result<Rule, String> {
    let mut c = Cursor { exprs, pos: 0 };
    let mut matches = Vec::new();
    loop {
        match c.peek() {
            Some(Expr::Meta {
                key: META_NFPROTO,
                dreg: REG_1,
            }) => {
                c.next();
                let proto = c.cmp_byte("a meta nfproto value")?;
                matches.push(after_nfproto(&mut c, proto, sets)?);
            }
            Some(Expr::Meta {
                key: META_L4PROTO,
                dreg: REG_1,
            }) => {
                c.next();
                let number = c.cmp_byte("a meta l4proto value")?;
                let proto = L4Proto::from_number(number)
                    .ok_or_else(|| format!("meta l4proto {number} is not one shield names"))?;
                if proto == L4Proto::Tcp
                    && matches!(
                        c.peek(),
                        Some(Expr::Payload {
                            base: PAYLOAD_TRANSPORT,
                            offset: 2,
                            len: 2,
                            dreg: REG_1
                        })
                    )
                {
                    c.next();
                    let data = c.cmp(CMP_EQ, "a tcp dport value")?;
                    let port = <[u8; 2]>::try_from(data)
                        .map_err(|_| "tcp dport compared with other than 2 bytes".to_owned())?;
                    matches.push(Match::TcpDport(u16::from_be_bytes(port)));
                } else {
                    matches.push(Match::L4Proto(proto));
                }
            }
            Some(Expr::Meta {
                key: key @ (META_OIFNAME | META_IIFNAME),
                dreg: REG_1,
            }) => {
                let key = *key;
                c.next();
                let data = c.cmp(CMP_EQ, "an interface name")?;
                let name = ifname(data).ok_or_else(|| {
                    format!("interface name {data:02x?} is not {IFNAMSIZ} zero-padded bytes")
                })?;
                matches.push(if key == META_OIFNAME {
                    Match::OifName(name)
                } else {
                    Match::IifName(name)
                });
            }
            Some(Expr::Ct {
                key: CT_STATE,
                dreg: REG_1,
            }) => {
                c.next();
                let mask = match c.peek() {
                    Some(Expr::Bitwise {
                        sreg: REG_1,
                        dreg: REG_1,
                        mask,
                        xor,
                    }) if mask.len() == 4 && xor.iter().all(|b| *b == 0) && xor.len() == 4 => {
                        c.next();
                        mask.clone()
                    }
                    _ => return Err(c.unexpected("a ct state mask")),
                };
                let data = c.cmp(CMP_NEQ, "ct state != 0")?;
                if data != [0, 0, 0, 0] {
                    return Err(format!("ct state compared with {data:02x?}"));
                }
                let mask = <[u8; 4]>::try_from(mask.as_slice())
                    .map_err(|_| "ct state mask of other than 4 bytes".to_owned())?;
                matches.push(Match::CtState(CtStates(u32::from_ne_bytes(mask))));
            }
            _ => break,
        }
    }
    let log = match c.peek() {
        Some(Expr::Log {
            prefix: Some(prefix),
            group: Some(group),
        }) => {
            c.next();
            Some(Log {
                prefix: prefix.clone(),
                group: *group,
            })
        }
        _ => None,
    };
    let counter = match c.peek() {
        Some(Expr::Counter { packets, bytes }) => {
            c.next();
            Some(Counter {
                packets: *packets,
                bytes: *bytes,
            })
        }
        _ => None,
    };
    let verdict = match c.peek() {
        Some(Expr::Verdict(VERDICT_ACCEPT)) => Verdict::Accept,
        Some(Expr::Verdict(VERDICT_DROP)) => Verdict::Drop,
        Some(Expr::Reject {
            kind: REJECT_TCP_RST,
            code: None | Some(0),
        }) => Verdict::Reject(RejectKind::TcpReset),
        Some(Expr::Reject {
            kind: REJECT_ICMPX_UNREACH,
            code: Some(ICMPX_ADMIN_PROHIBITED),
        }) => Verdict::Reject(RejectKind::IcmpxAdminProhibited),
        _ => return Err(c.unexpected("a match, log, counter or verdict")),
    };
    c.next();
    if c.peek().is_some() {
        return Err(c.unexpected("nothing after the verdict"));
    }
    Ok(Rule {
        matches,
        log,
        counter,
        verdict,
    })
}

/// What follows `meta nfproto PROTO`: an address match, or (IPv6) an ICMPv6 type match.
fn after_nfproto(c: &mut Cursor<'_>, proto: u8, sets: &[Set]) -> Result<Match, String> {
    let family = match proto {
        NFPROTO_IPV4 => Family::V4,
        NFPROTO_IPV6 => Family::V6,
        other => return Err(format!("meta nfproto {other} is neither ipv4 nor ipv6")),
    };
    if family == Family::V6
        && matches!(
            c.peek(),
            Some(Expr::Meta {
                key: META_L4PROTO,
                dreg: REG_1
            })
        )
        && matches!(c.peek_at(1), Some(Expr::Cmp { data, .. }) if data.as_slice() == [L4Proto::Icmpv6.number()])
    {
        c.next();
        c.cmp_byte("meta l4proto ipv6-icmp")?;
        c.payload(PAYLOAD_TRANSPORT, 0, 1, "the icmpv6 type load")?;
        let number = c.cmp_byte("an icmpv6 type")?;
        return Icmpv6Type::from_number(number)
            .map(Match::Icmpv6Type)
            .ok_or_else(|| format!("icmpv6 type {number} is not one shield names"));
    }
    let (_, offset, len) = daddr_field(family);
    c.payload(PAYLOAD_NETWORK, offset, len, "a destination address load")?;
    match c.peek() {
        Some(Expr::Lookup {
            sreg: REG_1, set, ..
        }) => {
            c.next();
            match sets.iter().find(|s| &s.name == set) {
                Some(s) if s.family == family => Ok(Match::DaddrInSet {
                    family,
                    set: set.clone(),
                }),
                Some(_) => Err(format!("lookup in set {set} of the other family")),
                None => Err(format!("lookup in unknown set {set}")),
            }
        }
        Some(Expr::Cmp {
            sreg: REG_1,
            op: CMP_EQ,
            data,
        }) if data.len() == len as usize => {
            c.next();
            addr_of(data, family)
                .map(Match::Daddr)
                .ok_or_else(|| "destination address of the wrong length".to_owned())
        }
        _ => Err(c.unexpected("a set lookup or an address compare")),
    }
}

/// A zero-padded `IFNAMSIZ`-byte name, as nft compares it.
fn ifname(data: &[u8]) -> Option<String> {
    if data.len() != IFNAMSIZ {
        return None;
    }
    let end = data.iter().position(|b| *b == 0)?;
    let (name, padding) = data.split_at(end);
    if name.is_empty() || padding.iter().any(|b| *b != 0) {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::encode::{rule_exprs, set_elements, set_header};
    use crate::ruleset::ir::{Chain, LOG_GROUP};

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table_with(rules: Vec<Rule>, sets: Vec<Set>) -> Table {
        Table {
            sets,
            chains: vec![Chain {
                name: "output".into(),
                hook: Hook::Output,
                priority: 0,
                policy: ChainPolicy::Drop,
                rules,
            }],
        }
    }

    fn interval(name: &str, family: Family, ranges: &[(&str, &str)]) -> Set {
        Set {
            name: name.into(),
            family,
            kind: SetKind::Interval,
            elements: ranges
                .iter()
                .map(|(a, b)| SetElement {
                    range: IpRange {
                        start: addr(a),
                        end: addr(b),
                    },
                    timeout: None,
                })
                .collect(),
        }
    }

    #[test]
    fn every_rule_shape_round_trips() {
        let sets = vec![interval("deny_v6", Family::V6, &[])];
        let log = Some(Log {
            prefix: "SHIELD_DENIED".into(),
            group: LOG_GROUP,
        });
        let rules = vec![
            Rule {
                matches: vec![Match::OifName("lo".into())],
                log: None,
                counter: None,
                verdict: Verdict::Accept,
            },
            Rule {
                matches: vec![
                    Match::DaddrInSet {
                        family: Family::V6,
                        set: "deny_v6".into(),
                    },
                    Match::L4Proto(L4Proto::Tcp),
                ],
                log: log.clone(),
                counter: Some(Counter::default()),
                verdict: Verdict::Reject(RejectKind::TcpReset),
            },
            Rule {
                matches: vec![Match::CtState(CtStates::ESTABLISHED_RELATED)],
                log: None,
                counter: None,
                verdict: Verdict::Accept,
            },
            Rule {
                matches: vec![Match::Icmpv6Type(Icmpv6Type::NeighborSolicit)],
                log: None,
                counter: None,
                verdict: Verdict::Accept,
            },
            Rule {
                matches: vec![Match::Daddr(addr("10.0.2.2")), Match::TcpDport(443)],
                log: None,
                counter: None,
                verdict: Verdict::Drop,
            },
            Rule {
                matches: vec![Match::L4Proto(L4Proto::Udp), Match::IifName("eth0".into())],
                log,
                counter: Some(Counter::default()),
                verdict: Verdict::Reject(RejectKind::IcmpxAdminProhibited),
            },
        ];
        let table = table_with(rules.clone(), sets.clone());
        for rule in &rules {
            let exprs = rule_exprs(&table, rule, "test").unwrap();
            assert_eq!(lift_rule(&exprs, &sets).as_ref(), Ok(rule));
        }
    }

    #[test]
    fn unknown_or_trailing_expressions_fail() {
        let rule = Rule {
            matches: vec![],
            log: None,
            counter: None,
            verdict: Verdict::Accept,
        };
        let table = table_with(vec![rule.clone()], vec![]);
        let mut exprs = rule_exprs(&table, &rule, "test").unwrap();
        exprs.insert(
            0,
            Expr::Unsupported {
                what: "expression \"limit\"".into(),
            },
        );
        let err = lift_rule(&exprs, &[]).unwrap_err();
        assert_eq!(err, "expression \"limit\" at position 1");
        exprs.remove(0);
        exprs.push(Expr::Verdict(VERDICT_DROP));
        assert!(
            lift_rule(&exprs, &[])
                .unwrap_err()
                .contains("nothing after the verdict")
        );
    }

    #[test]
    fn interval_elements_round_trip() {
        for set in [
            interval(
                "a",
                Family::V4,
                &[
                    ("0.0.0.0", "0.0.0.255"),
                    ("1.2.3.4", "1.2.3.4"),
                    ("1.2.3.6", "1.2.3.9"),
                    ("240.0.0.0", "255.255.255.255"),
                ],
            ),
            interval("b", Family::V4, &[("1.2.3.4", "1.2.3.4")]),
            interval(
                "c",
                Family::V6,
                &[("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")],
            ),
            interval("d", Family::V6, &[]),
        ] {
            let mut elems = set_elements(&set).unwrap();
            // The kernel dumps in its own order.
            elems.reverse();
            assert_eq!(lift_set(&set_header(&set), &elems).unwrap(), set);
        }
    }

    #[test]
    fn dangling_interval_elements_fail() {
        let set = interval("a", Family::V4, &[("1.2.3.4", "1.2.3.4")]);
        let mut elems = set_elements(&set).unwrap();
        // Drop the start: its end element now closes nothing.
        elems.retain(|e| e.flags != 0 || e.key != [1, 2, 3, 4]);
        assert!(lift_set(&set_header(&set), &elems).is_err());
    }
}
