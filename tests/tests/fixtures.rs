//! The fixtures checked against themselves, without the daemon: the namespaces connect, the
//! probes tell an allowed peer from a TCP reset and from an ICMP reject, and the `nft` oracle
//! reads what was loaded. If these fail, no other end-to-end result means anything.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use shield_tests::netns::{NsProcess, Owner, TestNet};
use shield_tests::nft;
use shield_tests::probe::{Outcome, Proto};

/// A hand-written stand-in for shield's ruleset: drop policy, A and the first IPv6 address
/// allowed, reject TCP with a reset and the rest with icmpx (or only icmpx when `tcp_reset` is
/// false).
fn handmade_ruleset(net: &TestNet, tcp_reset: bool) -> String {
    let reset = if tcp_reset {
        "meta l4proto tcp reject with tcp reset\n"
    } else {
        ""
    };
    format!(
        "table inet shield {{\n\
           set allow_v4 {{ type ipv4_addr; flags interval; elements = {{ {a} }} }}\n\
           set allow_v6 {{ type ipv6_addr; flags interval; elements = {{ {v6} }} }}\n\
           chain output {{ type filter hook output priority 0; policy drop;\n\
             oifname \"lo\" accept\n\
             ct state established,related accept\n\
             icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept\n\
             ip daddr @allow_v4 accept\n\
             ip6 daddr @allow_v6 accept\n\
             {reset}\
             reject with icmpx admin-prohibited\n\
           }}\n\
           chain input {{ type filter hook input priority 0; policy drop;\n\
             iifname \"lo\" accept\n\
             ct state established,related accept\n\
             icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept\n\
           }}\n\
         }}\n",
        a = net.peer_a(),
        v6 = net.peer_v6(),
    )
}

fn load(ns: &NsProcess, ruleset: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ruleset).unwrap();
    let out = ns
        .command("nft")
        .arg("-f")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn everything_connects(net: &TestNet) {
    for addr in net.peer_addrs() {
        for proto in [Proto::Tcp, Proto::Udp] {
            let p = net.probe(proto, addr);
            assert!(
                p.is_ok(),
                "{proto:?} to {addr} before any ruleset: {}",
                p.line
            );
        }
    }
}

fn probes_see_the_ruleset(owner: Owner) {
    shield_tests::require_root();
    let net = TestNet::new(owner);
    nft::assert_untouched(&net.container, "fresh namespace");
    assert!(nft::list_table(&net.container).is_none());
    everything_connects(&net);

    load(&net.container, &handmade_ruleset(&net, true));
    let table = nft::list_table(&net.container).expect("table loaded");
    assert!(
        nft::list_ruleset(&net.container).contains("table inet shield"),
        "the untouched-namespace oracle must see a loaded table"
    );
    assert_eq!(
        table.base_chain("output").unwrap().policy.as_deref(),
        Some("drop")
    );
    assert_eq!(
        table.base_chain("input").unwrap().policy.as_deref(),
        Some("drop")
    );
    assert_eq!(table.set("allow_v4"), [net.peer_a().to_string()]);
    assert_eq!(table.set("allow_v6"), [net.peer_v6().to_string()]);

    for addr in [net.peer_a(), net.peer_v6()] {
        for proto in [Proto::Tcp, Proto::Udp] {
            let p = net.probe(proto, addr);
            assert!(p.is_ok(), "{proto:?} to allowed {addr}: {}", p.line);
        }
    }
    for addr in [net.peer_b(), net.peer_v6_b()] {
        let p = net.probe(Proto::Tcp, addr);
        assert_eq!(p.outcome, Outcome::Refused, "TCP to {addr}: {}", p.line);
        assert!(
            p.elapsed < Duration::from_millis(500),
            "TCP reset took {:?}",
            p.elapsed
        );
        let p = net.probe(Proto::Udp, addr);
        assert!(!p.is_ok(), "UDP to blocked {addr}: {}", p.line);
    }
}

#[test]
fn rootful_namespaces_connect_and_probes_see_a_ruleset() {
    probes_see_the_ruleset(Owner::Root);
}

#[test]
fn rootless_namespaces_connect_and_probes_see_a_ruleset() {
    shield_tests::require_root();
    let owner = Owner::test_user();
    let net = TestNet::new(owner);
    let status = std::fs::read_to_string(format!("/proc/{}/status", net.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(1) == Some(&owner.uid().to_string()),
        "container process must run as the test user: {uid_line}"
    );
    let own = std::fs::read_link("/proc/self/ns/user").unwrap();
    let theirs = std::fs::read_link(format!("/proc/{}/ns/user", net.pid())).unwrap();
    assert_ne!(
        own, theirs,
        "rootless container must have its own user namespace"
    );
    drop(net);
    probes_see_the_ruleset(owner);
}

/// Why the "fails in well under a second" check matters: with icmpx alone, a blocking TCP
/// connect waits for a SYN retransmit (~1 s). The check must be able to tell.
#[test]
fn icmp_reject_alone_makes_a_blocking_connect_slow() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    load(&net.container, &handmade_ruleset(&net, false));
    let p = net.probe(Proto::Tcp, net.peer_b());
    assert_ne!(p.outcome, Outcome::Ok, "{}", p.line);
    assert!(
        p.elapsed >= Duration::from_millis(500),
        "expected a slow failure without tcp reset, got {} after {:?}",
        p.line,
        p.elapsed
    );
}

#[test]
fn netns_survives_its_first_process() {
    shield_tests::require_root();
    let mut net = TestNet::new(Owner::Root);
    let inode = net.container.netns_inode();
    let dead = net.kill_container_process();
    assert!(!std::path::Path::new(&format!("/proc/{dead}")).exists());
    assert_eq!(net.container.netns_inode(), inode);
    assert!(net.probe(Proto::Tcp, net.peer_a()).is_ok());
}
