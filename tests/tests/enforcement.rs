//! The enforcement path end to end: real `shield-hook` → real `shieldd` → a default-deny
//! ruleset in a namespace the test made, checked with real traffic and with `nft` as an
//! independent oracle. Rootful (daemon as root) and rootless (daemon as an unprivileged user,
//! container namespace made by that user with `unshare --user --map-root-user --net`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::net::IpAddr;
use std::time::Duration;

use shield_tests::daemon::{Daemon, container_state, find_container};
use shield_tests::hook::{Stage, oci_state};
use shield_tests::netns::{Owner, TestNet};
use shield_tests::nft;
use shield_tests::probe::{Outcome, Proto};

/// A user profile that allowlists peer A and the first IPv6 peer (and a domain, which allows
/// nothing until the DNS proxy exists).
fn profile(net: &TestNet) -> String {
    format!(
        "# shield end-to-end test profile\n\n{a}\n{v6}/128   # canonicalised to the address\nexample.test\n",
        a = net.peer_a(),
        v6 = net.peer_v6(),
    )
}

fn assert_ok(net: &TestNet, proto: Proto, addr: IpAddr, when: &str) {
    let p = net.probe(proto, addr);
    assert!(
        p.is_ok(),
        "{when}: {proto:?} to {addr} must pass, got {}",
        p.line
    );
}

fn assert_blocked(net: &TestNet, addr: IpAddr) {
    let p = net.probe(Proto::Tcp, addr);
    assert_eq!(
        p.outcome,
        Outcome::Refused,
        "TCP to {addr} must be refused with a reset (ECONNREFUSED), got {}",
        p.line
    );
    assert!(
        p.elapsed < Duration::from_millis(500),
        "a blocking TCP connect to {addr} must fail in well under a second, took {:?}",
        p.elapsed
    );
    let p = net.probe(Proto::Udp, addr);
    assert!(!p.is_ok(), "UDP to {addr} must fail, got {}", p.line);
}

fn enforcement(owner: Owner) {
    shield_tests::require_root();
    let net = TestNet::new(owner);
    let mut builder = Daemon::builder()
        .owner(owner)
        .profile("e2e", &profile(&net));
    if owner != Owner::Root {
        builder = builder.default_socket();
    }
    let daemon = builder.start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().nth(2),
        Some(owner.uid().to_string().as_str()),
        "daemon runs as the wrong uid: {uid}"
    );

    for addr in net.peer_addrs() {
        for proto in [Proto::Tcp, Proto::Udp] {
            assert_ok(&net, proto, addr, "before attach");
        }
    }
    nft::assert_untouched(&net.container, "before attach");

    let id = shield_tests::fresh_container_id();
    let state = oci_state(
        &id,
        Some(net.pid()),
        &[("shield.profiles", "e2e"), ("shield.name", "web")],
    );
    let run = daemon
        .hook(Stage::CreateRuntime, Some(net.pid()))
        .stdin(state)
        .run();
    run.assert_success();

    // The oracle: what nft itself lists inside the namespace.
    let table = nft::list_table(&net.container).expect("table inet shield after attach");
    for hook in ["output", "input"] {
        let chain = table
            .base_chain(hook)
            .unwrap_or_else(|| panic!("no base chain on hook {hook}: {:?}", table.chains));
        assert_eq!(
            chain.policy.as_deref(),
            Some("drop"),
            "{hook} chain: {chain:?}"
        );
    }
    for chain in table.chains.iter().filter(|c| c.hook.is_some()) {
        assert_eq!(
            chain.policy.as_deref(),
            Some("drop"),
            "base chain {chain:?}"
        );
    }
    assert_eq!(table.set("allow_v4"), [net.peer_a().to_string()]);
    assert_eq!(table.set("allow_v6"), [net.peer_v6().to_string()]);
    for set in ["deny_v4", "deny_v6", "dns_v4", "dns_v6"] {
        assert!(
            table.set(set).is_empty(),
            "{set} must be empty: {:?}",
            table.set(set)
        );
    }

    // Traffic.
    for addr in [net.peer_a(), net.peer_v6()] {
        for proto in [Proto::Tcp, Proto::Udp] {
            assert_ok(&net, proto, addr, "after attach (allowlisted)");
        }
    }
    for addr in ["127.0.0.1", "::1"] {
        assert_ok(
            &net,
            Proto::Tcp,
            addr.parse().unwrap(),
            "after attach (loopback)",
        );
        assert_ok(
            &net,
            Proto::Udp,
            addr.parse().unwrap(),
            "after attach (loopback)",
        );
    }
    // B is not allowlisted and private (10.200.x.3), as is the second ULA address.
    assert_blocked(&net, net.peer_b());
    assert_blocked(&net, net.peer_v6_b());

    // What the daemon says.
    let ps = daemon.ctl_json(&["ps"]);
    let c = find_container(&ps, &id).unwrap_or_else(|| panic!("{id} missing from ps: {ps}"));
    assert_eq!(container_state(c), "running", "{c}");
    assert_eq!(c["name"], "web", "{c}");
    let rules = daemon.ctl(&["rules", "web"]);
    assert!(
        rules.contains("table inet shield"),
        "shieldctl rules web: {rules}"
    );
    assert!(
        rules.contains(&net.peer_a().to_string()),
        "shieldctl rules web: {rules}"
    );

    daemon.stop();
    // A dead daemon fails closed: the rules stay.
    assert_blocked(&net, net.peer_b());
    assert_ok(&net, Proto::Tcp, net.peer_a(), "after the daemon stopped");
}

#[test]
fn rootful_attach_enforces_the_allowlist() {
    enforcement(Owner::Root);
}

#[test]
fn rootless_attach_enforces_the_allowlist() {
    enforcement(Owner::test_user());
}

/// `shieldctl preview` prints exactly what `nft -f` loads, and its table is the one an attach
/// produces for the same profiles.
#[test]
fn preview_loads_with_nft() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let daemon = Daemon::builder().profile("e2e", &profile(&net)).start();
    let text = daemon.ctl(&["preview", "--profiles", "e2e"]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let out = net
        .container
        .command("nft")
        .arg("-f")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft -f of shieldctl preview failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = nft::list_table(&net.container).expect("table loaded from preview");
    assert_eq!(table.set("allow_v4"), [net.peer_a().to_string()]);
    assert_eq!(table.set("allow_v6"), [net.peer_v6().to_string()]);
    assert_eq!(
        table.base_chain("output").unwrap().policy.as_deref(),
        Some("drop")
    );
    assert_blocked(&net, net.peer_b());
    assert_ok(&net, Proto::Tcp, net.peer_a(), "preview ruleset");
    daemon.stop();
}
