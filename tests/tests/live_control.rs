//! Live control end to end: `shieldctl allow|deny|up|down|block|state|logs` against the real
//! daemon, each change observed by real connects from inside the container namespace and by
//! `nft` as an independent oracle; concurrency (50 hooks at once, parallel allows and denies on
//! one container); bad input that must fail clearly and change nothing; the audit trail and the
//! state files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use shield_tests::control::{
    PROFILE, assert_loopback, assert_no_tcp, assert_passes, assert_refused, attach, audit,
    daemon_for, host_as_address, profile, release, state, strings, view,
};
use shield_tests::daemon::{Daemon, container_state, find_container};
use shield_tests::dns::Dnsmasq;
use shield_tests::netns::{NsProcess, Owner, TestNet};
use shield_tests::nft;

fn table(net: &TestNet) -> nft::Table {
    nft::list_table(&net.container).expect("table inet shield")
}

fn allow_deny_undeny(owner: Owner) {
    shield_tests::require_root();
    let net = TestNet::new(owner);
    let daemon = daemon_for(owner, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "live", net.pid());
    let short = &id[..12];

    assert_passes(&net, net.peer_a(), "profile allow");
    for addr in [
        net.peer_b(),
        net.peer_v6_b(),
        net.peer_public_v4(),
        net.peer_public_v6(),
    ] {
        assert_refused(&net, addr, "before any live change");
    }

    // An IPv4 and an IPv6 address, by full id, by id prefix and by name.
    for (addr, allow_set, deny_set, who) in [
        (net.peer_b(), "allow_v4", "deny_v4", id.as_str()),
        (net.peer_v6_b(), "allow_v6", "deny_v6", short),
    ] {
        let a = addr.to_string();
        let changed = |doc: &serde_json::Value| {
            let c = &doc["changes"][0];
            assert_eq!(c["kind"], "address", "{doc}");
            assert_eq!(
                host_as_address(c["target"].as_str().unwrap_or("")),
                a,
                "{doc}"
            );
            c["changed"]
                .as_bool()
                .unwrap_or_else(|| panic!("no changes[0].changed: {doc}"))
        };
        let answer = daemon.ctl_json(&["allow", who, &a]);
        assert!(changed(&answer), "first allow {a}");
        // The answer carries the container without its lists (they can be long); the mode and
        // the counts are there, and `ps` still lists everything.
        let container = &answer["container"];
        assert_eq!(container["mode"], "up", "{answer}");
        for list in ["allowed", "denied", "allowed_domains", "denied_domains"] {
            assert!(
                container.get(list).is_none(),
                "{list} in the answer: {answer}"
            );
        }
        assert!(strings(&view(&daemon, &id), "allowed").contains(&a));
        assert_passes(&net, addr, &format!("after allow {a}"));
        assert!(table(&net).covers(allow_set, addr), "{allow_set} lacks {a}");
        // Repeating is a no-op, not an error.
        assert!(
            !changed(&daemon.ctl_json(&["allow", who, &a])),
            "repeated allow {a}"
        );
        assert_passes(&net, addr, &format!("after a repeated allow {a}"));

        assert!(
            changed(&daemon.ctl_json(&["deny", "live", &a])),
            "first deny {a}"
        );
        assert_refused(&net, addr, &format!("after deny {a}"));
        assert!(table(&net).covers(deny_set, addr), "{deny_set} lacks {a}");
        assert!(
            !changed(&daemon.ctl_json(&["deny", "live", &a])),
            "repeated deny {a}"
        );
        assert_refused(&net, addr, &format!("after a repeated deny {a}"));
        assert_passes(&net, net.peer_a(), &format!("a deny of {a} leaves A alone"));

        // Un-deny: allowing a denied target lifts the deny.
        daemon.ctl(&["allow", who, &a]);
        assert_passes(&net, addr, &format!("after un-deny {a}"));
        assert!(
            !table(&net).covers(deny_set, addr),
            "{deny_set} still holds {a} after it was allowed again: {:?}",
            table(&net).set(deny_set)
        );
    }

    // CIDRs, IPv4 and IPv6 in one atomic change.
    let (net4, net6) = (net.public_net_v4(), net.public_net_v6());
    let (pub4, pub6) = (net.peer_public_v4(), net.peer_public_v6());
    daemon.ctl(&["allow", &id, &net4, &net6]);
    assert_passes(&net, pub4, &format!("after allow {net4}"));
    assert_passes(&net, pub6, &format!("after allow {net6}"));
    let t = table(&net);
    // Networks go to the interval sets, addresses to the hash sets.
    for (set, cidr) in [("allow_nets_v4", &net4), ("allow_nets_v6", &net6)] {
        assert!(t.set(set).contains(cidr), "{set}: {:?}", t.set(set));
    }
    daemon.ctl(&["deny", &id, &net4, &net6]);
    assert_refused(&net, pub4, &format!("after deny {net4}"));
    assert_refused(&net, pub6, &format!("after deny {net6}"));
    let t = table(&net);
    assert!(t.covers("deny_nets_v4", pub4) && t.covers("deny_nets_v6", pub6));
    daemon.ctl(&["allow", &id, &net4, &net6]);
    assert_passes(&net, pub4, &format!("after un-deny {net4}"));
    assert_passes(&net, pub6, &format!("after un-deny {net6}"));

    // What the daemon says matches.
    let c = view(&daemon, &id);
    let mut want = vec![
        net.peer_b().to_string(),
        net.peer_v6_b().to_string(),
        net4.clone(),
        net6.clone(),
    ];
    want.sort();
    assert_eq!(strings(&c, "allowed"), want, "{c}");
    assert!(strings(&c, "denied").is_empty(), "{c}");
    let t = table(&net);
    for set in ["deny_v4", "deny_v6", "deny_nets_v4", "deny_nets_v6"] {
        assert!(t.set(set).is_empty(), "{set}: {:?}", t.set(set));
    }
    assert_eq!(state(&daemon, &id), "up");
    daemon.stop();
}

#[test]
fn rootful_allow_deny_undeny_of_addresses_and_cidrs() {
    allow_deny_undeny(Owner::Root);
}

#[test]
fn rootless_allow_deny_undeny_of_addresses_and_cidrs() {
    allow_deny_undeny(Owner::test_user());
}

/// A domain allow resolves the name on the daemon's upstream (a real dnsmasq on loopback) and
/// lets the addresses through at once; a deny takes them out; allowing again lifts the deny.
#[test]
fn domain_allow_deny_undeny() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let (b, b6) = (net.peer_b(), net.peer_v6_b());
    let dns = Dnsmasq::start(&[("allowed.test", b), ("allowed.test", b6)]);
    let daemon = Daemon::builder()
        .profile(PROFILE, &profile(&net))
        .config(&dns.config_toml())
        .start();
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "dns", net.pid());
    assert_refused(&net, b, "before the domain allow");
    assert_refused(&net, b6, "before the domain allow");

    let out = daemon.ctl_json(&["allow", &id, "allowed.test"]);
    let text = out.to_string();
    assert!(
        text.contains(&b.to_string()),
        "the allow's answer must show what allowed.test resolved to ({b}): {out}"
    );
    assert_passes(&net, b, "after allow allowed.test");
    assert_passes(&net, b6, "after allow allowed.test (AAAA)");
    let t = table(&net);
    assert!(t.covers("dns_v4", b), "dns_v4: {:?}", t.set("dns_v4"));
    assert!(t.covers("dns_v6", b6), "dns_v6: {:?}", t.set("dns_v6"));
    assert_eq!(
        strings(&view(&daemon, &id), "allowed_domains"),
        ["allowed.test"]
    );
    // Repeating is a no-op.
    daemon.ctl(&["allow", &id, "allowed.test"]);
    assert_passes(&net, b, "after a repeated allow allowed.test");

    daemon.ctl(&["deny", &id, "allowed.test"]);
    assert_refused(&net, b, "after deny allowed.test");
    assert_refused(&net, b6, "after deny allowed.test");
    let t = table(&net);
    assert!(!t.covers("dns_v4", b), "dns_v4: {:?}", t.set("dns_v4"));
    assert!(!t.covers("dns_v6", b6), "dns_v6: {:?}", t.set("dns_v6"));
    let c = view(&daemon, &id);
    assert_eq!(strings(&c, "denied_domains"), ["allowed.test"], "{c}");
    assert!(strings(&c, "allowed_domains").is_empty(), "{c}");
    assert_passes(&net, net.peer_a(), "a domain deny leaves A alone");

    daemon.ctl(&["allow", &id, "allowed.test"]);
    assert_passes(&net, b, "after un-deny allowed.test");
    assert_passes(&net, b6, "after un-deny allowed.test");
    let c = view(&daemon, &id);
    assert!(strings(&c, "denied_domains").is_empty(), "{c}");
    assert!(
        dns.log_text().contains("query[A] allowed.test"),
        "the daemon never asked the upstream: {}",
        dns.log_text()
    );
    daemon.stop();
}

/// A deny cuts TCP connections opened before it (IPv4 and IPv6, one atomic change), and only
/// those.
#[test]
fn deny_cuts_established_connections() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let daemon = daemon_for(Owner::Root, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "cut", net.pid());
    let (b, b6) = (net.peer_b(), net.peer_v6_b());
    daemon.ctl(&["allow", &id, &b.to_string(), &b6.to_string()]);

    let mut to_b = net.hold(b);
    let mut to_b6 = net.hold(b6);
    let mut to_a = net.hold(net.peer_a());
    to_b.assert_alive(Duration::from_millis(1200), "before the deny");

    let start = Instant::now();
    daemon.ctl(&["deny", &id, &b.to_string(), &b6.to_string()]);
    let (took, detail) = to_b.wait_broken(Duration::from_secs(5), "after deny (IPv4)");
    let (took6, detail6) = to_b6.wait_broken(Duration::from_secs(5), "after deny (IPv6)");
    // Within the helper's echo wait (1 s) after the deny, plus the deny itself.
    for (what, t, d) in [("IPv4", took, detail), ("IPv6", took6, detail6)] {
        assert!(
            t < Duration::from_secs(3),
            "{what}: the connection broke only after {t:?} ({d})"
        );
    }
    to_a.assert_alive(
        Duration::from_millis(1500),
        "a deny of B must not cut the connection to A",
    );
    assert_refused(&net, b, "after the deny");
    assert_refused(&net, b6, "after the deny");
    eprintln!("deny → both connections broken in {:?}", start.elapsed());
    daemon.stop();
}

/// Each mode's traffic: `up` enforces; `down` bypasses but keeps private ranges and denies;
/// `down --all` keeps only denies; `block` drops everything but loopback and cuts established
/// flows; `up` restores the enforcing ruleset with the live changes in it.
#[test]
fn modes_shape_traffic() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let daemon = daemon_for(Owner::Root, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "modes", net.pid());
    let (a, b) = (net.peer_a(), net.peer_b());
    let (pub4, pub6) = (net.peer_public_v4(), net.peer_public_v6());
    // A public address that only a deny keeps out.
    daemon.ctl(&["deny", &id, &pub4.to_string()]);

    let up = |when: &str| {
        assert_eq!(state(&daemon, &id), "up", "{when}");
        assert_passes(&net, a, when);
        assert_refused(&net, b, when);
        assert_refused(&net, pub4, when);
        assert_refused(&net, pub6, when);
        assert_loopback(&net, when);
    };
    up("mode up");

    daemon.ctl(&["down", &id]);
    assert_eq!(state(&daemon, &id), "down");
    assert_passes(&net, a, "down: allowlisted");
    assert_passes(&net, pub6, "down: public, not allowlisted (bypass)");
    assert_refused(&net, b, "down: private ranges are still refused");
    assert_refused(&net, net.peer_v6_b(), "down: ULA is still refused");
    assert_refused(&net, pub4, "down: the deny still wins");

    daemon.ctl(&["down", "--all", &id]);
    assert_eq!(state(&daemon, &id), "down_all");
    assert_passes(&net, a, "down --all: allowlisted");
    assert_passes(&net, b, "down --all: private");
    assert_passes(&net, net.peer_v6_b(), "down --all: ULA");
    assert_passes(&net, pub6, "down --all: public");
    assert_refused(&net, pub4, "down --all: the deny still wins");

    let mut to_a = net.hold(a);
    let mut to_b = net.hold(b);
    daemon.ctl(&["block", &id]);
    assert_eq!(state(&daemon, &id), "block");
    to_a.wait_broken(Duration::from_secs(5), "block (connection to A)");
    to_b.wait_broken(Duration::from_secs(5), "block (connection to B)");
    assert_no_tcp(&net, a, "block: even the allowlist");
    assert_no_tcp(&net, pub6, "block: public");
    assert_loopback(&net, "block: loopback stays");

    daemon.ctl(&["up", &id]);
    up("back up");
    let t = table(&net);
    assert!(t.covers("deny_v4", pub4), "the deny survived the modes");
    assert_eq!(t.set("allow_v4"), [a.to_string()]);
    daemon.stop();
}

/// 50 containers whose hooks arrive at once all attach.
#[test]
fn fifty_concurrent_attaches() {
    shield_tests::require_root();
    const N: usize = 50;
    let daemon = Daemon::builder()
        .profile(PROFILE, "192.0.2.1\n2001:db8::1\n")
        .start();
    let namespaces: Vec<NsProcess> = (0..N).map(|_| NsProcess::spawn(Owner::Root)).collect();
    let ids: Vec<String> = (0..N).map(|_| shield_tests::fresh_container_id()).collect();
    let barrier = Arc::new(Barrier::new(N));
    let start = Instant::now();
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .zip(&ids)
            .enumerate()
            .map(|(i, (ns, id))| {
                let barrier = Arc::clone(&barrier);
                let daemon = &daemon;
                s.spawn(move || {
                    let hook = daemon
                        .hook(shield_tests::hook::Stage::CreateRuntime, Some(ns.pid()))
                        .stdin(shield_tests::hook::oci_state(
                            id,
                            Some(ns.pid()),
                            &[
                                ("shield.profiles", PROFILE),
                                ("shield.name", &format!("c{i}")),
                            ],
                        ));
                    barrier.wait();
                    hook.run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    let failed: Vec<String> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.success())
        .map(|(i, r)| format!("c{i}: {} {}", r.status, r.stderr.trim()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {N} concurrent attaches failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    let slowest = runs.iter().map(|r| r.elapsed).max().unwrap();
    eprintln!("{N} concurrent attaches: wall {wall:?}, slowest hook {slowest:?}");
    for (i, ns) in namespaces.iter().enumerate() {
        let t = nft::list_table(ns).unwrap_or_else(|| panic!("c{i}: no table"));
        assert_eq!(t.set("allow_v4"), ["192.0.2.1"], "c{i}");
        assert_eq!(
            t.base_chain("output").and_then(|c| c.policy.clone()),
            Some("drop".into()),
            "c{i}"
        );
    }
    let ps = daemon.ctl_json(&["ps"]);
    for id in &ids {
        let c = find_container(&ps, id).unwrap_or_else(|| panic!("{id} missing from ps"));
        assert_eq!(container_state(c), "running", "{c}");
    }
    // And 50 poststops at once.
    std::thread::scope(|s| {
        for (i, id) in ids.iter().enumerate() {
            let daemon = &daemon;
            s.spawn(move || release(daemon, id, &format!("c{i}")));
        }
    });
    let ps = daemon.ctl_json(&["ps"]);
    for id in &ids {
        let c = find_container(&ps, id).unwrap_or_else(|| panic!("{id} missing from ps"));
        assert_eq!(container_state(c), "stopped", "{c}");
    }
    daemon.stop();
}

/// 20 allows and 20 denies of distinct addresses, run at once on one container, all land; then
/// the opposite 40 at once (allowing a denied address lifts its deny), all land.
#[test]
fn concurrent_allow_and_deny_on_one_container() {
    shield_tests::require_root();
    let daemon = Daemon::builder().profile(PROFILE, "192.0.2.1\n").start();
    let ns = NsProcess::spawn(Owner::Root);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "busy", ns.pid());
    // Odd last octets: no two are adjacent, so the interval sets keep one element each.
    let first: Vec<String> = (0..20)
        .map(|i| format!("198.51.100.{}", 2 * i + 1))
        .collect();
    let second: Vec<String> = (0..20)
        .map(|i| format!("198.51.100.{}", 2 * i + 101))
        .collect();

    let run_all = |changes: Vec<(&'static str, String)>| {
        let barrier = Arc::new(Barrier::new(changes.len()));
        std::thread::scope(|s| {
            let handles: Vec<_> = changes
                .iter()
                .map(|(verb, addr)| {
                    let barrier = Arc::clone(&barrier);
                    let (daemon, id) = (&daemon, &id);
                    s.spawn(move || {
                        barrier.wait();
                        let out = daemon.ctl_as(Owner::Root, &[*verb, id.as_str(), addr.as_str()]);
                        (
                            format!("{verb} {addr}"),
                            out.status.success(),
                            String::from_utf8_lossy(&out.stderr).into_owned(),
                        )
                    })
                })
                .collect();
            let failed: Vec<String> = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|(_, ok, _)| !ok)
                .map(|(what, _, err)| format!("{what}: {}", err.trim()))
                .collect();
            assert!(
                failed.is_empty(),
                "concurrent changes failed:\n{}",
                failed.join("\n")
            );
        });
    };
    let check = |allowed: &[String], denied: &[String], when: &str| {
        let t = nft::list_table(&ns).expect("table");
        let mut want_allow: Vec<String> = allowed.to_vec();
        want_allow.push("192.0.2.1".into());
        let mut got_allow = t.set("allow_v4").to_vec();
        got_allow.sort();
        want_allow.sort();
        assert_eq!(got_allow, want_allow, "{when}: allow_v4");
        let mut got_deny = t.set("deny_v4").to_vec();
        got_deny.sort();
        let mut want_deny = denied.to_vec();
        want_deny.sort();
        assert_eq!(got_deny, want_deny, "{when}: deny_v4");
        let c = view(&daemon, &id);
        let mut want_allow = allowed.to_vec();
        want_allow.sort();
        assert_eq!(strings(&c, "allowed"), want_allow, "{when}: shieldctl view");
        assert_eq!(strings(&c, "denied"), want_deny, "{when}: shieldctl view");
    };

    let mut changes: Vec<(&'static str, String)> = Vec::new();
    for (a, d) in first.iter().zip(&second) {
        changes.push(("allow", a.clone()));
        changes.push(("deny", d.clone()));
    }
    run_all(changes);
    check(&first, &second, "after 20 allows and 20 denies at once");

    let mut changes: Vec<(&'static str, String)> = Vec::new();
    for (a, d) in first.iter().zip(&second) {
        changes.push(("deny", a.clone()));
        changes.push(("allow", d.clone()));
    }
    run_all(changes);
    check(&second, &first, "after the opposite 40 at once");
    daemon.stop();
}

/// Every bad input fails with a message naming the problem, and changes nothing.
/// A change the kernel refuses (its table deleted behind the daemon's back) fails, and the record
/// on disk is as it was: the daemon journals the change while the kernel works, and must take it
/// back.
#[test]
fn a_refused_change_leaves_the_state_as_it_was() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let daemon = daemon_for(Owner::Root, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "refused", net.pid());
    daemon.ctl(&["allow", &id, &net.peer_b().to_string()]);
    // The record: the state file and the journal of changes made since it was written.
    let dir = daemon.container_state_dir(&id);
    let record = || {
        ["state.json", "changes.jsonl"]
            .map(|name| std::fs::read_to_string(dir.join(name)).unwrap())
            .join("")
    };
    let before = record();
    assert!(before.contains(&net.peer_b().to_string()), "{before}");

    nft::delete_table(&net.container);
    let public = net.peer_public_v4().to_string();
    daemon.ctl_fails(&["allow", &id, &public]);
    let after = record();
    assert_eq!(after, before, "a refused change reached the record");
    assert!(!after.contains(&public));
    daemon.stop();
}

/// A change whose client goes away half-way (killed while the daemon resolves the domain it
/// allows, on an upstream that never answers) is still carried out whole: the daemon shows it
/// afterwards. Cut off with its request, it would leave kernel, state file and memory apart.
#[test]
fn a_change_whose_client_goes_away_is_carried_out() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    // Bound and never read: queries to it wait until the resolver gives up.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a silent upstream");
    let port = silent.local_addr().expect("its address").port();
    let daemon = Daemon::builder()
        .owner(Owner::Root)
        .profile(PROFILE, &profile(&net))
        .config(&format!(
            "[dns]\nupstream = [\"127.0.0.1:{port}\"]\ntimeout = \"1s\"\n"
        ))
        .start();
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "gone", net.pid());

    let mut client = daemon
        .ctl_command(&["allow", &id, "slow.test"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shieldctl");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        client.try_wait().expect("poll shieldctl").is_none(),
        "the allow ended before its domain could be resolved: the test needs a slow change"
    );
    client.kill().expect("kill shieldctl");
    client.wait().expect("reap shieldctl");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let domains = strings(&view(&daemon, &id), "allowed_domains");
        if domains.iter().any(|d| d == "slow.test") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the change went with its client: allowed domains {domains:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(silent);
    daemon.stop();
}

#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let daemon = daemon_for(Owner::Root, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "target", net.pid());
    let b = net.peer_b().to_string();
    let pub4 = net.peer_public_v4().to_string();
    daemon.ctl(&["allow", &id, &b]);
    daemon.ctl(&["deny", &id, &net.peer_v6_b().to_string()]);

    // Two more containers whose ids share the prefix "aaaa" (chosen here, podman's format).
    let tail = shield_tests::fresh_container_id();
    let twins: Vec<(String, NsProcess)> = ["aaaa1", "aaaa2"]
        .iter()
        .map(|p| {
            let ns = NsProcess::spawn(Owner::Root);
            (format!("{p}{}", &tail[..59]), ns)
        })
        .collect();
    for (i, (tid, ns)) in twins.iter().enumerate() {
        attach(&daemon, tid, &format!("twin{i}"), ns.pid());
    }

    let snapshot = || {
        let c = view(&daemon, &id);
        let mut all = vec![(
            table(&net).live_sets(),
            strings(&c, "allowed"),
            strings(&c, "denied"),
            state(&daemon, &id),
        )];
        for (tid, ns) in &twins {
            let c = view(&daemon, tid);
            all.push((
                nft::list_table(ns).expect("twin table").live_sets(),
                strings(&c, "allowed"),
                strings(&c, "denied"),
                state(&daemon, tid),
            ));
        }
        all
    };
    let before = snapshot();

    let many: Vec<String> = (0..1025)
        .map(|i| format!("198.18.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let mut too_many = vec!["allow", id.as_str()];
    too_many.extend(many.iter().map(String::as_str));
    let mut too_many_deny = too_many.clone();
    too_many_deny[0] = "deny";

    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "invalid IP",
            vec!["allow", &id, "10.0.0.300"],
            vec!["10.0.0.300"],
        ),
        (
            "invalid IP (deny)",
            vec!["deny", &id, "10.0.0.300"],
            vec!["10.0.0.300"],
        ),
        (
            "invalid CIDR",
            vec!["allow", &id, "10.0.0.0/33"],
            vec!["10.0.0.0/33"],
        ),
        (
            "invalid CIDR (deny)",
            vec!["deny", &id, "10.0.0.0/33"],
            vec!["10.0.0.0/33"],
        ),
        (
            "invalid domain",
            vec!["allow", &id, "exa mple.com"],
            vec!["exa mple.com"],
        ),
        (
            "invalid domain (deny)",
            vec!["deny", &id, "exa mple.com"],
            vec!["exa mple.com"],
        ),
        (
            "a valid target with an invalid one (atomic)",
            vec!["allow", &id, &pub4, "10.0.0.300"],
            vec!["10.0.0.300"],
        ),
        (
            "a valid deny with an invalid one (atomic)",
            vec!["deny", &id, &b, "10.0.0.0/33"],
            vec!["10.0.0.0/33"],
        ),
        (
            "unknown container",
            vec!["allow", "nosuchcontainer", &pub4],
            vec!["nosuchcontainer"],
        ),
        (
            "unknown container (deny)",
            vec!["deny", "nosuchcontainer", &b],
            vec!["nosuchcontainer"],
        ),
        (
            "unknown container (mode)",
            vec!["block", "nosuchcontainer"],
            vec!["nosuchcontainer"],
        ),
        (
            "unknown container (state)",
            vec!["state", "nosuchcontainer"],
            vec!["nosuchcontainer"],
        ),
        (
            "ambiguous id prefix",
            vec!["allow", "aaaa", &pub4],
            vec!["aaaa"],
        ),
        (
            "ambiguous id prefix (deny)",
            vec!["deny", "aaaa", &pub4],
            vec!["aaaa"],
        ),
        (
            "ambiguous id prefix (mode)",
            vec!["down", "aaaa"],
            vec!["aaaa"],
        ),
        ("empty target list", vec!["allow", &id], vec![]),
        ("empty target list (deny)", vec!["deny", &id], vec![]),
        ("too many targets", too_many, vec![]),
        ("too many targets (deny)", too_many_deny, vec![]),
    ];
    for (case, args, mentions) in &cases {
        let msg = daemon.ctl_fails(args);
        eprintln!("{case}: {}", msg.trim());
        let lower = msg.to_lowercase();
        for m in mentions {
            assert!(
                msg.contains(m),
                "{case}: the message must name {m:?}: {msg}"
            );
        }
        if case.starts_with("ambiguous") {
            assert!(
                ["ambiguous", "matches", "several", "more than one"]
                    .iter()
                    .any(|w| lower.contains(w)),
                "{case}: the message must say the prefix is ambiguous: {msg}"
            );
        }
        if case.starts_with("empty") {
            assert!(
                lower.contains("target"),
                "{case}: the message must say a target is missing: {msg}"
            );
        }
        if case.starts_with("too many") {
            assert!(
                lower.contains("1024") || lower.contains("too many"),
                "{case}: the message must give the limit: {msg}"
            );
        }
        assert_eq!(snapshot(), before, "{case}: nothing may change");
    }
    // The twins stay reachable by a unique prefix.
    daemon.ctl(&["allow", &twins[0].0[..5], &pub4]);
    assert!(
        nft::list_table(&twins[0].1)
            .unwrap()
            .covers("allow_v4", net.peer_public_v4())
    );
    // Traffic agrees with the unchanged sets.
    assert_passes(&net, net.peer_b(), "after the bad input");
    assert_refused(&net, net.peer_public_v4(), "after the bad input");
    assert_refused(&net, net.peer_v6_b(), "after the bad input");
    daemon.stop();
}

/// The audit trail records attach, allow, deny and mode changes with their targets, `--follow`
/// streams new events; the state lives in a 0600 file in a 0700 directory.
#[test]
fn audit_trail_and_state_files() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let daemon = daemon_for(Owner::Root, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "audited", net.pid());
    let b = net.peer_b().to_string();
    let pub4 = net.peer_public_v4().to_string();
    daemon.ctl(&["allow", &id, &b]);
    daemon.ctl(&["deny", &id, &pub4]);
    daemon.ctl(&["block", &id]);
    daemon.ctl(&["up", &id]);

    let events = audit(&daemon, Some(&id), 50);
    for e in &events {
        for key in ["ts", "container", "name", "action", "target", "detail"] {
            assert!(e.get(key).is_some(), "audit event without {key}: {e}");
        }
        assert_eq!(e["container"], id.as_str(), "{e}");
        assert_eq!(e["name"], "audited", "{e}");
        let ts = e["ts"].as_str().unwrap_or_default();
        assert!(
            ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
            "ts must be UTC ISO-8601: {e}"
        );
    }
    // In this order (other events may come between).
    let want: [(&str, &str); 5] = [
        ("attach", ""),
        ("allow", &b),
        ("deny", &pub4),
        ("mode", "block"),
        ("mode", "up"),
    ];
    let mut it = events.iter();
    for (action, target) in want {
        it.find(|e| e["action"] == action && e["target"].as_str().unwrap_or("").contains(target))
            .unwrap_or_else(|| {
                panic!(
                    "no {action} {target:?} event in order in the audit trail:\n{}",
                    events
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            });
    }
    let last_two = audit(&daemon, Some(&id), 2);
    assert_eq!(last_two.len(), 2, "-n 2: {last_two:?}");
    assert_eq!(last_two[1]["action"], "mode", "{last_two:?}");
    assert!(
        last_two[1]["target"].as_str().unwrap_or("").contains("up"),
        "{last_two:?}"
    );
    let everyone = audit(&daemon, None, 50);
    assert!(
        everyone
            .iter()
            .any(|e| e["container"] == id.as_str() && e["action"] == "deny"),
        "logs without a container shows every container's events: {everyone:?}"
    );

    // --follow sees a new event as it happens.
    let mut follow = daemon
        .ctl_command(&["--json", "logs", "--follow", "-n", "0", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn shieldctl logs --follow");
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Give the stream a moment to open, then change something.
    std::thread::sleep(Duration::from_millis(300));
    let pub6 = net.peer_public_v6().to_string();
    daemon.ctl(&["allow", &id, &pub6]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let e: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("logs --follow: not JSON ({err}): {line:?}"));
                if e["action"] == "allow" && e["target"].as_str().unwrap_or("").contains(&pub6) {
                    break true;
                }
                seen.push(line);
            }
            Err(_) => break false,
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        found,
        "logs --follow did not show the allow of {pub6}: {seen:?}"
    );

    // The state files.
    let dir = daemon.container_state_dir(&id);
    let file = dir.join("state.json");
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    for d in [
        dir.as_path(),
        dir.parent().unwrap(),
        dir.parent().unwrap().parent().unwrap(),
    ] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    // The live changes are in the state file or in the journal of changes since it was
    // written; both are JSON, each journal line one change.
    let journal = dir.join("changes.jsonl");
    assert_eq!(mode(&journal), 0o600, "{}", journal.display());
    let text = std::fs::read_to_string(&file).unwrap();
    let _: serde_json::Value = serde_json::from_str(&text).expect("state.json is JSON");
    let journal_text = std::fs::read_to_string(&journal).unwrap();
    for line in journal_text.lines() {
        let _: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("changes.jsonl: a line is not JSON ({e}): {line:?}"));
    }
    for needle in [&b, &pub4, &pub6] {
        assert!(
            text.contains(needle.as_str()) || journal_text.contains(needle.as_str()),
            "neither state.json nor changes.jsonl holds {needle}: {text}\n{journal_text}"
        );
    }
    let trail = dir.join("audit.jsonl");
    let trail_text =
        std::fs::read_to_string(&trail).unwrap_or_else(|e| panic!("{}: {e}", trail.display()));
    for line in trail_text.lines() {
        let _: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("audit.jsonl: a line is not JSON ({e}): {line:?}"));
    }
    daemon.stop();
}
