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

/// The public (documentation-range) peer addresses are reachable; a held connection reports
/// round trips while it lives and breaks when a rule starts dropping its packets; a container
/// restart rewires a fresh namespace to the same peer.
#[test]
fn held_connections_public_addresses_and_container_restart() {
    shield_tests::require_root();
    let mut net = TestNet::new(Owner::Root);
    for addr in [net.peer_public_v4(), net.peer_public_v6()] {
        for proto in [Proto::Tcp, Proto::Udp] {
            let p = net.probe(proto, addr);
            assert!(p.is_ok(), "{proto:?} to {addr}: {}", p.line);
        }
    }
    let old = net.restart_container();
    assert_ne!(net.pid(), old);
    nft::assert_untouched(&net.container, "the restarted container");
    everything_connects(&net);
    let p = net.probe(Proto::Tcp, net.peer_public_v6());
    assert!(p.is_ok(), "after the restart: {}", p.line);
    // (Held connections come last: one cut by a drop rule leaves an orphaned socket that keeps
    // retransmitting, and the namespace alive, for minutes.)
    let mut held = net.hold(net.peer_a());
    let mut held6 = net.hold(net.peer_v6());
    held.assert_alive(Duration::from_millis(1200), "no ruleset");
    load(
        &net.container,
        "table inet cut {\n chain output { type filter hook output priority 0; policy accept;\n \
         ip daddr 10.200.0.0/16 drop\n ip6 daddr fd00:200::/32 drop\n }\n}\n",
    );
    let (took, detail) = held.wait_broken(Duration::from_secs(5), "after the drop rule");
    assert!(took < Duration::from_secs(2), "{took:?} {detail}");
    held6.wait_broken(Duration::from_secs(5), "after the drop rule (IPv6)");
}

/// The dnsmasq fixture answers the names it was given, with the configured TTL, and nothing else.
#[test]
fn dnsmasq_answers_fixed_names() {
    shield_tests::require_root();
    let dns = shield_tests::dns::Dnsmasq::start(&[
        ("allowed.test", "10.200.9.3".parse().unwrap()),
        ("allowed.test", "fd00:200:9::3".parse().unwrap()),
    ]);
    let dig = |qtype: &str, name: &str| {
        let out = std::process::Command::new("dig")
            .args(["@127.0.0.1", "-p", &dns.port().to_string()])
            .args(["+noall", "+answer", "+time=2", "+tries=1", qtype, name])
            .output()
            .expect("run dig (package bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let a = dig("A", "allowed.test");
    assert!(a.contains("10.200.9.3") && a.contains("600"), "{a}");
    assert!(dig("AAAA", "allowed.test").contains("fd00:200:9::3"));
    assert!(dig("A", "other.test").trim().is_empty());
    assert!(
        dns.config_toml()
            .contains(&format!("127.0.0.1:{}", dns.port()))
    );
}

/// A daemon killed with SIGKILL leaves its directories; a new one starts on them.
#[test]
fn daemon_restarts_on_the_same_directories() {
    shield_tests::require_root();
    let mut daemon = shield_tests::daemon::Daemon::builder().start();
    let first = daemon.pid();
    let status = daemon.kill_with(nix::sys::signal::Signal::SIGKILL);
    assert!(!status.success());
    daemon.restart();
    assert_ne!(daemon.pid(), first);
    daemon.ctl(&["ps"]);
    let status = daemon.kill_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}\n{}", daemon.log());
    daemon.restart();
    daemon.stop();
}
