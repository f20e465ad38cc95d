//! The invariant checker against the builder (every built table passes, in every mode) and
//! against broken tables (each mutation is caught, with the violation that names it).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::time::Duration;

use ipnet::IpNet;
use shieldd::ruleset::build::{
    ALLOW_NETS_V4, ALLOW_V4, ALLOW_V6, DNS_V4, DNS_V6, PRIVATE_V4_SET, bypass_accept,
    established_accept,
};
use shieldd::ruleset::invariants::{Violation, check};
use shieldd::ruleset::{
    Chain, ChainPolicy, Counter, CtStates, Family, Hook, IpRange, Match, Mode, Policy, RejectKind,
    Rule, SetElement, SetKind, Table, Verdict, build,
};

const MODES: [Mode; 4] = [Mode::Up, Mode::Down, Mode::DownAll, Mode::Block];

fn nets(texts: &[&str]) -> Vec<IpNet> {
    texts.iter().map(|text| text.parse().unwrap()).collect()
}

fn policies(mode: Mode) -> Vec<Policy> {
    vec![
        Policy {
            mode,
            ..Policy::default()
        },
        Policy {
            allow: nets(&[
                "1.2.3.4/32",
                "192.168.1.5/24",
                "192.168.2.0/24",
                "2001:db8::/32",
            ]),
            deny: nets(&["8.8.8.8/32", "2001:db8:dead::/48"]),
            mode,
            host_ports: Vec::new(),
        },
        Policy {
            allow: nets(&["10.1.2.3/32", "fd00::1/128", "0.0.0.0/0", "::/0"]),
            deny: nets(&["10.1.2.3/32", "169.254.169.254/32"]),
            mode,
            host_ports: Vec::new(),
        },
        Policy {
            allow: nets(&["1.2.3.4/32"]),
            mode,
            host_ports: vec![8080, 3000],
            ..Policy::default()
        },
    ]
}

fn table(mode: Mode) -> Table {
    build(&Policy {
        allow: nets(&["1.2.3.4/32", "2001:db8::1/128"]),
        deny: nets(&["5.6.7.8/32", "2001:db8::dead/128"]),
        mode,
        host_ports: Vec::new(),
    })
}

fn output(table: &mut Table) -> &mut Chain {
    table
        .chains
        .iter_mut()
        .find(|c| c.name == "output")
        .unwrap()
}

fn input(table: &mut Table) -> &mut Chain {
    table.chains.iter_mut().find(|c| c.name == "input").unwrap()
}

/// Index of the rule of `chain` with the matches and verdict of `wanted` (log aside).
fn position(chain: &Chain, wanted: &Rule) -> usize {
    chain
        .rules
        .iter()
        .position(|rule| rule.matches == wanted.matches && rule.verdict == wanted.verdict)
        .unwrap()
}

fn accept_set(family: Family, set: &str) -> Rule {
    Rule {
        matches: vec![Match::DaddrInSet {
            family,
            set: set.to_owned(),
        }],
        log: None,
        counter: Some(Counter::default()),
        verdict: Verdict::Accept,
    }
}

/// Asserts that `table` fails the check in `mode` with a violation containing `expected`.
#[track_caller]
fn assert_violation(table: &Table, mode: Mode, expected: &str) {
    let violations = match check(table, mode) {
        Ok(()) => panic!("mutated table passed the check in {mode:?}; expected `{expected}`"),
        Err(violations) => violations,
    };
    assert!(
        violations
            .iter()
            .any(|Violation(message)| message.contains(expected)),
        "no violation contains `{expected}`; got: {violations:#?}"
    );
}

#[test]
fn built_tables_pass_in_every_mode() {
    for mode in MODES {
        for policy in policies(mode) {
            let table = build(&policy);
            assert_eq!(check(&table, mode), Ok(()), "{policy:?}");
        }
    }
}

/// What the kernel hands back after traffic: counters that counted, DNS-learnt elements.
#[test]
fn tables_with_run_time_state_pass() {
    for mode in MODES {
        let mut table = table(mode);
        for rule in &mut output(&mut table).rules {
            if let Some(counter) = &mut rule.counter {
                *counter = Counter {
                    packets: 7,
                    bytes: 420,
                };
            }
        }
        for set in &mut table.sets {
            let address = match set.name.as_str() {
                DNS_V4 => "93.184.215.14",
                DNS_V6 => "2606:2800:21f::1",
                _ => continue,
            };
            let address = address.parse().unwrap();
            set.elements.push(SetElement {
                range: IpRange {
                    start: address,
                    end: address,
                },
                timeout: Some(Duration::from_secs(300)),
            });
        }
        assert_eq!(check(&table, mode), Ok(()), "{mode:?}");
    }
}

#[test]
fn a_table_built_for_another_mode_fails() {
    // Down's bypass in mode up; up's missing bypass is merely stricter, so not the other way.
    assert_violation(&table(Mode::Down), Mode::Up, "accepts unconditionally");
    assert_violation(&table(Mode::Up), Mode::Block, "mode block");
    assert_violation(&table(Mode::DownAll), Mode::Down, "private rule");
}

#[test]
fn rejects_output_policy_accept() {
    let mut table = table(Mode::Up);
    output(&mut table).policy = ChainPolicy::Accept;
    assert_violation(
        &table,
        Mode::Up,
        "chain output: policy is accept, must be drop",
    );
}

#[test]
fn rejects_input_policy_accept() {
    let mut table = table(Mode::Down);
    input(&mut table).policy = ChainPolicy::Accept;
    assert_violation(
        &table,
        Mode::Down,
        "chain input: policy is accept, must be drop",
    );
}

#[test]
fn rejects_missing_terminal_reject() {
    let mut table = table(Mode::Up);
    output(&mut table).rules.pop();
    assert_violation(&table, Mode::Up, "terminal reject missing");
}

#[test]
fn rejects_terminal_without_tcp_reset() {
    let mut table = table(Mode::Up);
    let rules = &mut output(&mut table).rules;
    let tcp = rules.len() - 2;
    rules[tcp].verdict = Verdict::Reject(RejectKind::IcmpxAdminProhibited);
    assert_violation(&table, Mode::Up, "terminal reject missing");

    let mut table = self::table(Mode::Block);
    let rules = &mut output(&mut table).rules;
    rules.remove(rules.len() - 2);
    assert_violation(&table, Mode::Block, "terminal reject missing");
}

#[test]
fn rejects_accept_before_deny() {
    let mut table = table(Mode::Up);
    output(&mut table)
        .rules
        .insert(1, accept_set(Family::V4, ALLOW_V4));
    assert_violation(
        &table,
        Mode::Up,
        "rule 2 (`ip daddr @allow_v4 counter accept`) accepts before the deny rules",
    );
}

#[test]
fn rejects_established_before_deny() {
    let mut table = table(Mode::Down);
    let chain = output(&mut table);
    let established = chain.rules.remove(position(chain, &established_accept()));
    chain.rules.insert(1, established);
    assert_violation(
        &table,
        Mode::Down,
        "rule 2 (`ct state established,related accept`) accepts before the deny rules",
    );
}

#[test]
fn rejects_missing_private_range() {
    let mut table = table(Mode::Up);
    let private = table
        .sets
        .iter_mut()
        .find(|s| s.name == PRIVATE_V4_SET)
        .unwrap();
    let cgnat: std::net::IpAddr = "100.64.0.0".parse().unwrap();
    private
        .elements
        .retain(|element| element.range.start != cgnat);
    assert_violation(
        &table,
        Mode::Up,
        "set private_v4: private range 100.64.0.0/10 is not covered",
    );
    // Down --all does not reject private ranges: the same table passes there once its rules are
    // those of down --all.
    let mut down_all = self::table(Mode::DownAll);
    down_all.sets = table.sets.clone();
    assert_eq!(check(&down_all, Mode::DownAll), Ok(()));
}

#[test]
fn rejects_missing_input_chain() {
    let mut table = table(Mode::Up);
    table.chains.retain(|chain| chain.name != "input");
    assert_violation(&table, Mode::Up, "chain input: missing");
}

#[test]
fn rejects_missing_deny_v6_set() {
    let mut table = table(Mode::DownAll);
    table.sets.retain(|set| set.name != "deny_v6");
    assert_violation(&table, Mode::DownAll, "set deny_v6: missing");
    assert_violation(
        &table,
        Mode::DownAll,
        "references set deny_v6, which does not exist",
    );
}

#[test]
fn rejects_rule_with_set_of_wrong_family() {
    let mut table = table(Mode::Up);
    let chain = output(&mut table);
    let index = position(chain, &accept_set(Family::V6, ALLOW_V6));
    chain.rules[index].matches = vec![Match::DaddrInSet {
        family: Family::V4,
        set: ALLOW_V6.to_owned(),
    }];
    assert_violation(
        &table,
        Mode::Up,
        "matches ipv4 addresses against set allow_v6 of ipv6 addresses",
    );
}

#[test]
fn rejects_unconditional_accept_mid_chain() {
    for mode in [Mode::Up, Mode::Down] {
        let mut table = table(mode);
        let chain = output(&mut table);
        let after_established = position(chain, &established_accept()) + 1;
        chain.rules.insert(after_established, bypass_accept());
        assert_violation(&table, mode, "accepts unconditionally");
    }
}

/// A host-port accept is only ever for the host's loopback as rootless networking maps it: the
/// same shape towards any other address would bypass the allow sets.
#[test]
fn rejects_port_accept_to_an_address_that_is_not_the_host_loopback() {
    for mode in [Mode::Up, Mode::Down, Mode::DownAll] {
        let mut table = table(mode);
        let chain = output(&mut table);
        let after_established = position(chain, &established_accept()) + 1;
        chain.rules.insert(
            after_established,
            Rule {
                matches: vec![
                    Match::Daddr("93.184.216.34".parse().unwrap()),
                    Match::TcpDport(443),
                ],
                log: None,
                counter: Some(Counter::default()),
                verdict: Verdict::Accept,
            },
        );
        assert_violation(&table, mode, "is not a permitted accept");
    }
}

#[test]
fn rejects_block_with_established_accept() {
    let mut table = table(Mode::Block);
    output(&mut table).rules.insert(1, established_accept());
    assert_violation(&table, Mode::Block, "accepts established flows, mode block");

    let mut table = self::table(Mode::Block);
    input(&mut table).rules.insert(1, established_accept());
    assert_violation(&table, Mode::Block, "only loopback in mode block");
}

#[test]
fn rejects_missing_deny_rule() {
    let mut table = table(Mode::Up);
    let chain = output(&mut table);
    chain.rules.remove(5); // ip6 daddr @deny_v6 meta l4proto tcp … reset
    assert_violation(
        &table,
        Mode::Up,
        "deny rule `ip6 daddr @deny_v6 meta l4proto tcp … reject with tcp reset` missing",
    );
    let mut table = self::table(Mode::Up);
    output(&mut table).rules.remove(3); // ip daddr @deny_nets_v4 meta l4proto tcp … reset
    assert_violation(
        &table,
        Mode::Up,
        "deny rule `ip daddr @deny_nets_v4 meta l4proto tcp … reject with tcp reset` missing",
    );
}

#[test]
fn rejects_private_reject_before_allow() {
    let mut table = table(Mode::Up);
    let chain = output(&mut table);
    let allow = chain
        .rules
        .remove(position(chain, &accept_set(Family::V6, ALLOW_V6)));
    let len = chain.rules.len();
    chain.rules.insert(len - 2, allow);
    assert_violation(&table, Mode::Up, "comes before an allow rule");
}

#[test]
fn rejects_accept_of_a_non_allow_set() {
    let mut table = table(Mode::Up);
    let chain = output(&mut table);
    let len = chain.rules.len();
    chain
        .rules
        .insert(len - 2, accept_set(Family::V4, PRIVATE_V4_SET));
    assert_violation(&table, Mode::Up, "only allow and dns sets are accepted");
}

#[test]
fn rejects_input_accepting_new_connections() {
    let mut table = table(Mode::Up);
    input(&mut table).rules.push(Rule {
        matches: vec![Match::CtState(CtStates(CtStates::NEW))],
        log: None,
        counter: None,
        verdict: Verdict::Accept,
    });
    assert_violation(
        &table,
        Mode::Up,
        "chain input: rule 6 (`ct state new accept`) is not a permitted accept",
    );
}

#[test]
fn rejects_first_rule_other_than_loopback() {
    let mut table = table(Mode::Up);
    output(&mut table).rules.remove(0);
    assert_violation(&table, Mode::Up, "must be `oifname \"lo\" accept`");
}

#[test]
fn rejects_wrong_hook_and_priority() {
    let mut table = table(Mode::Up);
    output(&mut table).hook = Hook::Input;
    input(&mut table).priority = 10;
    assert_violation(
        &table,
        Mode::Up,
        "chain output: hooked to Input, must be hooked to Output",
    );
    assert_violation(&table, Mode::Up, "chain input: priority is 10, must be 0");
}

#[test]
fn rejects_unconditional_drop() {
    let mut table = table(Mode::Up);
    output(&mut table).rules.insert(
        1,
        Rule {
            matches: Vec::new(),
            log: None,
            counter: None,
            verdict: Verdict::Drop,
        },
    );
    assert_violation(&table, Mode::Up, "drops unconditionally");
}

#[test]
fn rejects_tcp_reset_without_tcp_match() {
    let mut table = table(Mode::Up);
    output(&mut table).rules[2].verdict = Verdict::Reject(RejectKind::TcpReset);
    assert_violation(&table, Mode::Up, "resets without matching tcp");
}

#[test]
fn rejects_dns_set_of_wrong_kind() {
    let mut table = table(Mode::Up);
    let dns = table.sets.iter_mut().find(|s| s.name == DNS_V4).unwrap();
    dns.kind = SetKind::Interval;
    assert_violation(
        &table,
        Mode::Up,
        "set dns_v4: is an interval set, must be a timeout set",
    );
}

#[test]
fn rejects_malformed_interval_elements() {
    let range = |start: &str, end: &str| SetElement {
        range: IpRange {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        },
        timeout: None,
    };
    let cases = [
        (
            vec![
                range("10.0.0.0", "10.0.0.9"),
                range("10.0.0.5", "10.0.0.20"),
            ],
            "is not sorted after",
        ),
        (
            vec![
                range("10.0.0.0", "10.0.0.9"),
                range("10.0.0.10", "10.0.0.20"),
            ],
            "is not sorted after",
        ),
        (
            vec![range("10.0.0.9", "10.0.0.9"), range("10.0.0.1", "10.0.0.1")],
            "is not sorted after",
        ),
        (
            vec![range("2001:db8::1", "2001:db8::1")],
            "is not an ipv4 address",
        ),
        (vec![range("10.0.0.9", "10.0.0.1")], "ends before it starts"),
    ];
    for (elements, expected) in cases {
        let mut table = table(Mode::Up);
        let allow = table
            .sets
            .iter_mut()
            .find(|s| s.name == ALLOW_NETS_V4)
            .unwrap();
        allow.elements = elements;
        assert_violation(&table, Mode::Up, expected);
    }
}

#[test]
fn rejects_ranges_and_timeouts_in_address_sets() {
    let range = |start: &str, end: &str| SetElement {
        range: IpRange {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        },
        timeout: None,
    };
    let mut table = table(Mode::Up);
    let allow = table.sets.iter_mut().find(|s| s.name == ALLOW_V4).unwrap();
    allow.elements = vec![range("10.0.0.1", "10.0.0.2")];
    assert_violation(&table, Mode::Up, "is a range in a hash set");

    let mut table = self::table(Mode::Up);
    let allow = table.sets.iter_mut().find(|s| s.name == ALLOW_V4).unwrap();
    let mut element = range("10.0.0.1", "10.0.0.1");
    element.timeout = Some(Duration::from_secs(5));
    allow.elements = vec![element];
    assert_violation(&table, Mode::Up, "has a timeout in a hash set");
}

#[test]
fn collects_every_violation() {
    let mut table = table(Mode::Up);
    output(&mut table).policy = ChainPolicy::Accept;
    input(&mut table).policy = ChainPolicy::Accept;
    table.sets.retain(|set| set.name != DNS_V6);
    let violations = check(&table, Mode::Up).unwrap_err();
    // Both policies, the missing set, and the rule that references it.
    assert_eq!(violations.len(), 4, "{violations:#?}");
}
