//! Helpers shared by the live-control and restart tests: attach and release a container through
//! the real hook, read what `shieldctl` says about it (`state`, `ps --json`, `logs --json`), and
//! traffic assertions with the messages those tests need.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{Daemon, find_container};
use crate::hook::{Stage, oci_state};
use crate::netns::{Owner, TestNet};
use crate::probe::{Outcome, Proto};

/// The profile name the live-control tests attach with.
pub const PROFILE: &str = "live";

/// A profile that allowlists peer A and the first IPv6 peer, nothing else.
pub fn profile(net: &TestNet) -> String {
    format!(
        "# live-control test profile\n{}\n{}\n",
        net.peer_a(),
        net.peer_v6()
    )
}

/// A daemon as `owner` with the [`PROFILE`] profile of `net`.
pub fn daemon_for(owner: Owner, net: &TestNet) -> Daemon {
    Daemon::builder()
        .owner(owner)
        .profile(PROFILE, &profile(net))
        .start()
}

/// Runs the createRuntime hook for container `id` (profile [`PROFILE`], name `name`) whose
/// process is `pid`; panics unless it succeeds.
pub fn attach(daemon: &Daemon, id: &str, name: &str, pid: u32) {
    daemon
        .hook(Stage::CreateRuntime, Some(pid))
        .stdin(oci_state(
            id,
            Some(pid),
            &[("shield.profiles", PROFILE), ("shield.name", name)],
        ))
        .run()
        .assert_success();
}

/// Runs the poststop hook for container `id`; panics unless it succeeds.
pub fn release(daemon: &Daemon, id: &str, name: &str) {
    daemon
        .hook(Stage::Poststop, None)
        .stdin(oci_state(
            id,
            None,
            &[("shield.profiles", PROFILE), ("shield.name", name)],
        ))
        .run()
        .assert_success();
}

/// `shieldctl state CONTAINER`: one word.
pub fn state(daemon: &Daemon, container: &str) -> String {
    daemon.ctl(&["state", container]).trim().to_string()
}

/// Waits (10 s at most) until `shieldctl state CONTAINER` prints `want` (after a daemon restart
/// the re-attach may still be running when the socket listens).
pub fn wait_state(daemon: &Daemon, container: &str, want: &str) {
    let start = std::time::Instant::now();
    let last = loop {
        let out = daemon.ctl_as(daemon.owner(), &["state", container]);
        let last = format!(
            "exit {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == want {
            return;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break last;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    panic!("shieldctl state {container} never printed {want:?} within 10 s; last: {last}");
}

/// The container `id` as `shieldctl --json ps` shows it.
pub fn view(daemon: &Daemon, id: &str) -> Value {
    let ps = daemon.ctl_json(&["ps"]);
    find_container(&ps, id)
        .unwrap_or_else(|| panic!("{id} missing from shieldctl --json ps: {ps}"))
        .clone()
}

/// The string list `key` of a container view (`allowed`, `denied`, `allowed_domains`,
/// `denied_domains`), sorted; panics when the view lacks it. A host prefix (`/32`, `/128`) is
/// written as the bare address, so the lists compare with what the test typed.
pub fn strings(container: &Value, key: &str) -> Vec<String> {
    let Some(list) = container.get(key).and_then(Value::as_array) else {
        panic!("shieldctl --json ps shows no list {key:?} for the container: {container}");
    };
    let mut v: Vec<String> = list
        .iter()
        .map(|s| {
            let s = s
                .as_str()
                .unwrap_or_else(|| panic!("{key}: not a string: {s}"));
            host_as_address(s)
        })
        .collect();
    v.sort();
    v
}

/// `10.0.0.1/32` → `10.0.0.1`, `fd00::1/128` → `fd00::1`; anything else unchanged.
pub fn host_as_address(s: &str) -> String {
    match s.split_once('/') {
        Some((addr, "32")) if addr.parse::<std::net::Ipv4Addr>().is_ok() => addr.to_string(),
        Some((addr, "128")) if addr.parse::<std::net::Ipv6Addr>().is_ok() => addr.to_string(),
        _ => s.to_string(),
    }
}

/// `shieldctl --json logs -n N [CONTAINER]`: one JSON object per line.
pub fn audit(daemon: &Daemon, container: Option<&str>, n: usize) -> Vec<Value> {
    let n = n.to_string();
    let mut args = vec!["--json", "logs", "-n", n.as_str()];
    args.extend(container);
    let out = daemon.ctl(&args);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("shieldctl --json logs printed a line that is not JSON ({e}): {l:?}")
            })
        })
        .collect()
}

/// Panics unless TCP and UDP to `addr` both pass.
pub fn assert_passes(net: &TestNet, addr: IpAddr, when: &str) {
    for proto in [Proto::Tcp, Proto::Udp] {
        let p = net.probe(proto, addr);
        assert!(
            p.is_ok(),
            "{when}: {proto:?} to {addr} must pass, got {}",
            p.line
        );
    }
}

/// Panics unless TCP to `addr` is refused at once (a reset) and UDP fails: what a deny and a
/// private-range reject do.
pub fn assert_refused(net: &TestNet, addr: IpAddr, when: &str) {
    let p = net.probe(Proto::Tcp, addr);
    assert_eq!(
        p.outcome,
        Outcome::Refused,
        "{when}: TCP to {addr} must be refused with a reset, got {}",
        p.line
    );
    assert!(
        p.elapsed < Duration::from_millis(500),
        "{when}: TCP to {addr} must be refused in well under a second, took {:?}",
        p.elapsed
    );
    let p = net.probe(Proto::Udp, addr);
    assert!(
        !p.is_ok(),
        "{when}: UDP to {addr} must fail, got {}",
        p.line
    );
}

/// Panics if a TCP connection to `addr` succeeds (any failure counts: `block` drops, which
/// takes the probe's 3 s watchdog).
pub fn assert_no_tcp(net: &TestNet, addr: IpAddr, when: &str) {
    let p = net.probe(Proto::Tcp, addr);
    assert!(
        !p.is_ok(),
        "{when}: TCP to {addr} must fail, got {}",
        p.line
    );
}

/// Panics unless TCP and UDP to the container's own loopback listeners pass.
pub fn assert_loopback(net: &TestNet, when: &str) {
    for addr in ["127.0.0.1", "::1"] {
        assert_passes(net, addr.parse().expect("loopback address"), when);
    }
}
