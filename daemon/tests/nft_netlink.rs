//! The netlink layer (`shieldd::nft`) against the real kernel, with `nft` as an independent
//! oracle.
//!
//! Every test makes its own network namespace (`unshare --net sleep 60`), opens a
//! `NETLINK_NETFILTER` socket inside it from a short-lived thread that `setns`es and exits, and
//! programs/reads table `inet shield` through that socket the way the daemon does. These tests
//! need root; without it they fail with a message saying so, they never skip.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step is a failed test"
)]

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use common::Netns;
use ipnet::IpNet;
use shieldd::nft::{self, NftError};
use shieldd::ruleset::ir::{
    Chain, ChainPolicy, Counter, CtStates, Family, Hook, Icmpv6Type, IpRange, L4Proto, LOG_GROUP,
    Log, Match, RejectKind, Rule, Set, SetElement, SetKind, Table, Verdict,
};
use shieldd::ruleset::{Mode, Policy, build, render};

/// Checks specific to this file, on the shared namespace fixture.
trait NetnsExt {
    fn nft_load(&self, text: &str);
    fn listing(&self) -> String;
}

impl NetnsExt for Netns {
    /// Loads `text` with `nft -f`.
    fn nft_load(&self, text: &str) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        self.nft(&["-f", file.path().to_str().unwrap()]);
    }

    /// `nft list table inet shield`, without the parts that vary (counter values, expiry).
    fn listing(&self) -> String {
        normalize(&self.nft(&["list", "table", "inet", "shield"]))
    }
}

fn normalize(listing: &str) -> String {
    let mut out = String::new();
    for line in listing.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut kept: Vec<String> = Vec::new();
        let mut i = 0;
        while let Some(word) = words.get(i) {
            match *word {
                // `counter packets N bytes M` → `counter`
                "packets" if kept.last().is_some_and(|w| w == "counter") => i += 4,
                // `expires 4m59s996ms,` → keep only the punctuation
                "expires" => {
                    let tail: String = words
                        .get(i + 1)
                        .map(|v| v.chars().filter(|c| matches!(c, ',' | '}')).collect())
                        .unwrap_or_default();
                    if let Some(last) = kept.last_mut() {
                        last.push_str(&tail);
                    }
                    i += 2;
                }
                w => {
                    kept.push(w.to_owned());
                    i += 1;
                }
            }
        }
        out.push_str(indent);
        out.push_str(&kept.join(" "));
        out.push('\n');
    }
    out
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(start: &str, end: &str) -> SetElement {
    SetElement {
        range: IpRange {
            start: v4(start),
            end: v4(end),
        },
        timeout: None,
    }
}

fn single(addr: &str, timeout: Option<Duration>) -> SetElement {
    SetElement {
        range: IpRange {
            start: v4(addr),
            end: v4(addr),
        },
        timeout,
    }
}

fn set(name: &str, family: Family, kind: SetKind, elements: Vec<SetElement>) -> Set {
    Set {
        name: name.to_owned(),
        family,
        kind,
        elements,
    }
}

fn rule(matches: Vec<Match>, log: Option<&str>, verdict: Verdict) -> Rule {
    Rule {
        matches,
        log: log.map(|prefix| Log {
            prefix: prefix.to_owned(),
            group: LOG_GROUP,
        }),
        counter: log.map(|_| Counter::default()),
        verdict,
    }
}

fn in_set(family: Family, set: &str) -> Match {
    Match::DaddrInSet {
        family,
        set: set.to_owned(),
    }
}

const TCP_RESET: Verdict = Verdict::Reject(RejectKind::TcpReset);
const ICMPX: Verdict = Verdict::Reject(RejectKind::IcmpxAdminProhibited);

/// A table with every rule shape the builder emits, and then some.
fn representative() -> Table {
    use Family::{V4, V6};
    use SetKind::{Interval, Timeout};
    let mut output = vec![rule(
        vec![Match::OifName("lo".into())],
        None,
        Verdict::Accept,
    )];
    for (family, deny) in [(V4, "deny_v4"), (V6, "deny_v6")] {
        output.push(rule(
            vec![in_set(family, deny), Match::L4Proto(L4Proto::Tcp)],
            Some("SHIELD_DENIED"),
            TCP_RESET,
        ));
        output.push(rule(
            vec![in_set(family, deny)],
            Some("SHIELD_DENIED"),
            ICMPX,
        ));
    }
    output.push(rule(
        vec![Match::CtState(CtStates::ESTABLISHED_RELATED)],
        None,
        Verdict::Accept,
    ));
    for kind in [
        Icmpv6Type::RouterSolicit,
        Icmpv6Type::RouterAdvert,
        Icmpv6Type::NeighborSolicit,
        Icmpv6Type::NeighborAdvert,
    ] {
        output.push(rule(vec![Match::Icmpv6Type(kind)], None, Verdict::Accept));
    }
    for (family, name) in [
        (V4, "allow_v4"),
        (V6, "allow_v6"),
        (V4, "dns_v4"),
        (V6, "dns_v6"),
    ] {
        output.push(rule(
            vec![in_set(family, name)],
            Some("SHIELD_ALLOWED"),
            Verdict::Accept,
        ));
    }
    output.push(rule(
        vec![Match::Daddr(v4("169.254.1.2")), Match::TcpDport(8080)],
        None,
        Verdict::Accept,
    ));
    output.push(rule(
        vec![Match::Daddr(v4("fe80::1"))],
        None,
        Verdict::Accept,
    ));
    output.push(rule(
        vec![Match::L4Proto(L4Proto::Udp)],
        None,
        Verdict::Drop,
    ));
    output.push(rule(
        vec![Match::L4Proto(L4Proto::Tcp)],
        Some("SHIELD_BLOCKED"),
        TCP_RESET,
    ));
    output.push(rule(vec![], Some("SHIELD_BLOCKED"), ICMPX));
    output.push(rule(vec![], Some("SHIELD_BYPASS"), Verdict::Accept));
    let input = vec![
        rule(vec![Match::IifName("lo".into())], None, Verdict::Accept),
        rule(
            vec![Match::CtState(CtStates::ESTABLISHED_RELATED)],
            None,
            Verdict::Accept,
        ),
        rule(
            vec![Match::Icmpv6Type(Icmpv6Type::NeighborAdvert)],
            None,
            Verdict::Accept,
        ),
    ];
    Table {
        sets: vec![
            set(
                "allow_v4",
                V4,
                Interval,
                vec![
                    range("1.2.3.4", "1.2.3.4"),
                    range("10.0.0.0", "10.255.255.255"),
                    range("192.168.1.5", "192.168.1.9"),
                    range("240.0.0.0", "255.255.255.255"),
                ],
            ),
            set(
                "allow_v6",
                V6,
                Interval,
                vec![
                    range("::1", "::1"),
                    range("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
                    range("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                ],
            ),
            set(
                "dns_v4",
                V4,
                Timeout,
                vec![
                    single("5.6.7.8", Some(Duration::from_secs(300))),
                    single("5.6.7.9", None),
                ],
            ),
            set(
                "dns_v6",
                V6,
                Timeout,
                vec![single("2001:db8::5", Some(Duration::from_secs(3600)))],
            ),
            set(
                "deny_v4",
                V4,
                Interval,
                vec![
                    range("0.0.0.0", "0.255.255.255"),
                    range("203.0.113.0", "203.0.113.255"),
                ],
            ),
            set("deny_v6", V6, Interval, vec![]),
        ],
        chains: vec![
            Chain {
                name: "output".into(),
                hook: Hook::Output,
                priority: 0,
                policy: ChainPolicy::Drop,
                rules: output,
            },
            Chain {
                name: "input".into(),
                hook: Hook::Input,
                priority: 0,
                policy: ChainPolicy::Drop,
                rules: input,
            },
        ],
    }
}

/// The same table as [`representative`], written by hand in nft syntax.
const REPRESENTATIVE_NFT: &str = r#"table inet shield {
	set allow_v4 { type ipv4_addr; flags interval; elements = { 1.2.3.4, 10.0.0.0/8, 192.168.1.5-192.168.1.9, 240.0.0.0-255.255.255.255 } }
	set allow_v6 { type ipv6_addr; flags interval; elements = { ::1, 2001:db8::/32, ff00::/8 } }
	set dns_v4 { type ipv4_addr; flags timeout; elements = { 5.6.7.8 timeout 300s, 5.6.7.9 } }
	set dns_v6 { type ipv6_addr; flags timeout; elements = { 2001:db8::5 timeout 1h } }
	set deny_v4 { type ipv4_addr; flags interval; elements = { 0.0.0.0/8, 203.0.113.0/24 } }
	set deny_v6 { type ipv6_addr; flags interval; }
	chain output {
		type filter hook output priority 0; policy drop;
		oifname "lo" accept
		ip daddr @deny_v4 meta l4proto tcp log prefix "SHIELD_DENIED" group 100 counter reject with tcp reset
		ip daddr @deny_v4 log prefix "SHIELD_DENIED" group 100 counter reject with icmpx admin-prohibited
		ip6 daddr @deny_v6 meta l4proto tcp log prefix "SHIELD_DENIED" group 100 counter reject with tcp reset
		ip6 daddr @deny_v6 log prefix "SHIELD_DENIED" group 100 counter reject with icmpx admin-prohibited
		ct state established,related accept
		icmpv6 type nd-router-solicit accept
		icmpv6 type nd-router-advert accept
		icmpv6 type nd-neighbor-solicit accept
		icmpv6 type nd-neighbor-advert accept
		ip daddr @allow_v4 log prefix "SHIELD_ALLOWED" group 100 counter accept
		ip6 daddr @allow_v6 log prefix "SHIELD_ALLOWED" group 100 counter accept
		ip daddr @dns_v4 log prefix "SHIELD_ALLOWED" group 100 counter accept
		ip6 daddr @dns_v6 log prefix "SHIELD_ALLOWED" group 100 counter accept
		ip daddr 169.254.1.2 tcp dport 8080 accept
		ip6 daddr fe80::1 accept
		meta l4proto udp drop
		meta l4proto tcp log prefix "SHIELD_BLOCKED" group 100 counter reject with tcp reset
		log prefix "SHIELD_BLOCKED" group 100 counter reject with icmpx admin-prohibited
		log prefix "SHIELD_BYPASS" group 100 counter accept
	}
	chain input {
		type filter hook input priority 0; policy drop;
		iifname "lo" accept
		ct state established,related accept
		icmpv6 type nd-neighbor-advert accept
	}
}
"#;

fn applied(ns: &Netns, table: &Table) -> OwnedFd {
    let sock = ns.socket();
    nft::apply(sock.as_fd(), table).expect("apply");
    sock
}

#[test]
fn read_table_of_an_empty_namespace_is_none() {
    let ns = Netns::new();
    let sock = ns.socket();
    assert_eq!(nft::read_table(sock.as_fd()).unwrap(), None);
}

#[test]
fn applied_table_reads_back_equal() {
    let ns = Netns::new();
    let table = representative();
    let sock = applied(&ns, &table);
    let read = nft::read_table(sock.as_fd())
        .unwrap()
        .expect("table exists");
    assert_eq!(read, table);
    // The same socket keeps working for a second read.
    assert_eq!(nft::read_table(sock.as_fd()).unwrap(), Some(table));
}

#[test]
fn applied_table_lists_like_nft_loads_it() {
    let ours = Netns::new();
    applied(&ours, &representative());
    let theirs = Netns::new();
    theirs.nft_load(REPRESENTATIVE_NFT);
    let (a, b) = (ours.listing(), theirs.listing());
    assert_eq!(a, b, "ours:\n{a}\nnft -f:\n{b}");
    // And a table loaded by nft lifts to the same IR.
    let sock = theirs.socket();
    assert_eq!(
        nft::read_table(sock.as_fd()).unwrap(),
        Some(representative())
    );
}

#[test]
fn json_oracle_sees_drop_policy_and_elements() {
    let ns = Netns::new();
    applied(&ns, &representative());
    let json: serde_json::Value =
        serde_json::from_str(&ns.nft(&["-j", "list", "table", "inet", "shield"])).unwrap();
    let items = json["nftables"].as_array().unwrap();
    let chains: Vec<_> = items.iter().filter_map(|i| i.get("chain")).collect();
    assert_eq!(chains.len(), 2);
    for chain in &chains {
        assert_eq!(chain["policy"], "drop", "{chain}");
        assert_eq!(chain["type"], "filter");
    }
    let allow = items
        .iter()
        .filter_map(|i| i.get("set"))
        .find(|s| s["name"] == "allow_v4")
        .unwrap();
    let elems = serde_json::to_string(&allow["elem"]).unwrap();
    for want in [
        r#""1.2.3.4""#,
        r#"{"prefix":{"addr":"10.0.0.0","len":8}}"#,
        r#"{"range":["192.168.1.5","192.168.1.9"]}"#,
        r#"{"prefix":{"addr":"240.0.0.0","len":4}}"#,
    ] {
        assert!(elems.contains(want), "{want} missing from {elems}");
    }
    let dns = items
        .iter()
        .filter_map(|i| i.get("set"))
        .find(|s| s["name"] == "dns_v4")
        .unwrap();
    let timed = dns["elem"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.get("elem"))
        .unwrap();
    assert_eq!(timed["val"], "5.6.7.8");
    assert_eq!(timed["timeout"], 300);
}

#[test]
fn applying_twice_replaces_the_table() {
    let ns = Netns::new();
    let first = representative();
    let sock = applied(&ns, &first);
    let mut second = representative();
    second.sets[0].elements = vec![range("8.8.8.8", "8.8.8.8")];
    second.chains[0].rules.truncate(3);
    nft::apply(sock.as_fd(), &second).unwrap();
    assert_eq!(nft::read_table(sock.as_fd()).unwrap(), Some(second));
    let listing = ns.listing();
    assert!(
        !listing.contains("1.2.3.4"),
        "old element survived:\n{listing}"
    );
    assert!(
        !listing.contains("SHIELD_BYPASS"),
        "old rule survived:\n{listing}"
    );
    assert!(listing.contains("8.8.8.8"));
}

#[test]
fn refused_batch_names_the_message_and_keeps_the_old_table() {
    let ns = Netns::new();
    let good = representative();
    let sock = applied(&ns, &good);
    let mut bad = representative();
    bad.chains[0].rules.truncate(1);
    // Overlapping intervals: the kernel refuses them.
    bad.sets[0].elements = vec![
        range("10.0.0.0", "10.0.0.255"),
        range("10.0.0.5", "10.0.1.5"),
    ];
    let err = nft::apply(sock.as_fd(), &bad).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NftError::Refused { .. }), "{err:?}");
    assert!(
        text.starts_with("kernel refused \"add elements") && text.contains("of set allow_v4"),
        "{text}"
    );
    // Atomicity: the previous table is intact, rules and elements alike.
    assert_eq!(nft::read_table(sock.as_fd()).unwrap(), Some(good.clone()));
    // And the socket is clean for the next batch.
    nft::apply(sock.as_fd(), &good).unwrap();
}

#[test]
fn refusal_of_a_set_names_it() {
    let ns = Netns::new();
    let sock = ns.socket();
    let mut bad = representative();
    // Same name, another kind: an existing set of other flags is refused.
    let mut twin = bad.sets[0].clone();
    twin.kind = SetKind::Timeout;
    twin.elements.clear();
    bad.sets.push(twin);
    let err = nft::apply(sock.as_fd(), &bad).unwrap_err().to_string();
    assert_eq!(
        err,
        "kernel refused \"add set allow_v4\": File exists (os error 17)"
    );
    assert_eq!(nft::read_table(sock.as_fd()).unwrap(), None);
}

#[test]
fn a_rule_added_behind_our_back_is_seen() {
    let ns = Netns::new();
    let table = representative();
    let sock = applied(&ns, &table);
    ns.nft(&[
        "add", "rule", "inet", "shield", "output", "ip", "daddr", "9.9.9.9", "accept",
    ]);
    match nft::read_table(sock.as_fd()) {
        Ok(read) => assert_ne!(read, Some(table)),
        Err(NftError::Lift { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn an_unknown_rule_fails_the_read() {
    for (extra, wanted) in [
        (&["udp", "dport", "53", "accept"][..], "payload load"),
        (&["meta", "mark", "set", "1"][..], "immediate data load"),
        (&["ct", "mark", "set", "1"][..], "immediate data load"),
        (
            &["meta", "mark", "1", "accept"][..],
            "unexpected meta load key 3",
        ),
        (
            &["ip", "daddr", "!=", "@allow_v4", "accept"][..],
            "inverted set lookup",
        ),
        (
            &["limit", "rate", "10/second", "accept"][..],
            "expression \"limit\"",
        ),
    ] {
        let ns = Netns::new();
        let sock = applied(&ns, &representative());
        let mut args = vec!["insert", "rule", "inet", "shield", "output"];
        args.extend_from_slice(extra);
        ns.nft(&args);
        let err = nft::read_table(sock.as_fd()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, NftError::Lift { .. }), "{extra:?}: {err:?}");
        assert!(
            text.contains("rule 1 (handle")
                && text.contains("of chain output")
                && text.contains(wanted),
            "{extra:?}: {text}"
        );
    }
}

#[test]
fn changed_elements_and_policy_are_seen() {
    let ns = Netns::new();
    let table = representative();
    let sock = applied(&ns, &table);
    ns.nft(&[
        "add", "element", "inet", "shield", "allow_v4", "{", "9.9.9.9", "}",
    ]);
    assert_ne!(nft::read_table(sock.as_fd()).unwrap(), Some(table.clone()));

    let ns = Netns::new();
    let sock = applied(&ns, &table);
    ns.nft(&[
        "chain", "inet", "shield", "output", "{", "policy", "accept", ";", "}",
    ]);
    let read = nft::read_table(sock.as_fd()).unwrap().unwrap();
    assert_eq!(read.chains[0].policy, ChainPolicy::Accept);

    let ns = Netns::new();
    let sock = applied(&ns, &table);
    ns.nft(&[
        "add", "table", "inet", "shield", "{", "flags", "dormant", ";", "}",
    ]);
    let err = nft::read_table(sock.as_fd()).unwrap_err().to_string();
    assert!(err.contains("dormant"), "{err}");
}

#[test]
fn element_changes_add_refresh_and_remove() {
    let ns = Netns::new();
    let mut table = representative();
    let sock = applied(&ns, &table);
    let dns = |elements| set("dns_v4", Family::V4, SetKind::Timeout, elements);
    let allow = |elements| set("allow_v4", Family::V4, SetKind::Interval, elements);
    // Add a new address, refresh an existing one (no EEXIST), add and remove intervals.
    nft::apply_element_changes(
        sock.as_fd(),
        &[
            dns(vec![
                single("7.7.7.7", Some(Duration::from_secs(60))),
                single("5.6.7.8", Some(Duration::from_secs(600))),
            ]),
            allow(vec![range("172.16.0.0", "172.31.255.255")]),
        ],
        &[allow(vec![range("192.168.1.5", "192.168.1.9")])],
    )
    .unwrap();
    table.sets[2].elements = vec![
        single("5.6.7.8", Some(Duration::from_secs(600))),
        single("5.6.7.9", None),
        single("7.7.7.7", Some(Duration::from_secs(60))),
    ];
    table.sets[0].elements = vec![
        range("1.2.3.4", "1.2.3.4"),
        range("10.0.0.0", "10.255.255.255"),
        range("172.16.0.0", "172.31.255.255"),
        range("240.0.0.0", "255.255.255.255"),
    ];
    assert_eq!(nft::read_table(sock.as_fd()).unwrap(), Some(table.clone()));
    // An address inside an existing interval is refused, and nothing of the batch applies.
    let err = nft::apply_element_changes(
        sock.as_fd(),
        &[
            dns(vec![single("8.8.8.8", None)]),
            allow(vec![range("10.1.2.3", "10.1.2.3")]),
        ],
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("of set allow_v4"), "{err}");
    assert_eq!(nft::read_table(sock.as_fd()).unwrap(), Some(table));
}

#[test]
fn large_sets_are_chunked() {
    let ns = Netns::new();
    let mut table = representative();
    // 3000 disjoint /32 ranges: several element messages in one batch.
    table.sets[0].elements = (0..3000u32)
        .map(|i| {
            let addr = IpAddr::from((0x0b00_0000 + i * 2).to_be_bytes());
            SetElement {
                range: IpRange {
                    start: addr,
                    end: addr,
                },
                timeout: None,
            }
        })
        .collect();
    let sock = applied(&ns, &table);
    assert_eq!(nft::read_table(sock.as_fd()).unwrap(), Some(table));
}

/// Policies covering every mode, with and without allow/deny entries of both families.
fn policies() -> Vec<Policy> {
    let nets = |list: &[&str]| {
        list.iter()
            .map(|n| n.parse::<IpNet>().unwrap())
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    for mode in [Mode::Up, Mode::Down, Mode::DownAll, Mode::Block] {
        out.push(Policy {
            allow: Vec::new(),
            deny: Vec::new(),
            mode,
            host_ports: Vec::new(),
        });
        out.push(Policy {
            allow: nets(&[
                "1.1.1.1/32",
                "10.0.0.0/8",
                "192.168.0.0/16",
                "2606:4700::/32",
                "::1/128",
            ]),
            deny: nets(&["10.1.0.0/16", "203.0.113.7/32", "2001:db8::/32"]),
            mode,
            host_ports: Vec::new(),
        });
    }
    out
}

#[test]
fn built_tables_list_like_their_rendering() {
    for policy in policies() {
        let table = build(&policy);
        assert!(!table.chains.is_empty(), "ruleset::build is still a stub");
        let ours = Netns::new();
        let sock = applied(&ours, &table);
        assert_eq!(
            nft::read_table(sock.as_fd()).unwrap(),
            Some(table.clone()),
            "{policy:?}"
        );
        let theirs = Netns::new();
        theirs.nft_load(&render(&table));
        let (a, b) = (ours.listing(), theirs.listing());
        assert_eq!(a, b, "{policy:?}\nours:\n{a}\nnft -f:\n{b}");
    }
}
