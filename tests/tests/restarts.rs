//! Restarts that lose nothing: a container restart (poststop, then createRuntime with the same id
//! in a fresh namespace) and a daemon restart (SIGTERM or SIGKILL, then a new daemon on the same
//! directories) re-apply every live change and the mode; while the daemon is down the kernel
//! keeps enforcing; a container that stopped meanwhile shows `stopped`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use nix::sys::signal::Signal;
use shield_proto::v1::{ChangeRequest, ContainerCreatedRequest, OciState};
use shield_tests::control::{
    PROFILE, assert_loopback, assert_no_tcp, assert_passes, assert_refused, attach, daemon_for,
    release, state, strings, view, wait_state,
};
use shield_tests::daemon::{Daemon, container_state};
use shield_tests::netns::{NsProcess, Owner, TestNet};
use shield_tests::nft;

/// Panics unless the profile-allowed peer A is denied (traffic, oracle, daemon's view) while
/// the rest of the profile still works.
fn assert_a_denied(daemon: Option<&Daemon>, net: &TestNet, id: &str, when: &str) {
    assert_refused(net, net.peer_a(), when);
    assert_passes(
        net,
        net.peer_v6(),
        &format!("{when} (the rest of the profile)"),
    );
    let t = nft::list_table(&net.container).unwrap_or_else(|| panic!("{when}: no table"));
    assert!(
        t.covers("allow_v4", net.peer_a()),
        "{when}: the profile's allow is still in allow_v4: {:?}",
        t.set("allow_v4")
    );
    assert!(
        t.covers("deny_v4", net.peer_a()),
        "{when}: deny_v4 must hold A: {:?}",
        t.set("deny_v4")
    );
    if let Some(daemon) = daemon {
        let c = view(daemon, id);
        assert_eq!(
            strings(&c, "denied"),
            [net.peer_a().to_string()],
            "{when}: {c}"
        );
    }
}

/// A deny of an address a profile allows wins, and keeps winning after a container restart, a
/// daemon restart (SIGTERM) and a `down` → `up` cycle.
fn profile_allow_denied(owner: Owner) {
    shield_tests::require_root();
    let mut net = TestNet::new(owner);
    let mut daemon = daemon_for(owner, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "web", net.pid());
    assert_passes(&net, net.peer_a(), "the profile allows A");
    daemon.ctl(&["deny", &id, &net.peer_a().to_string()]);
    assert_a_denied(Some(&daemon), &net, &id, "after deny A");

    // Container restart: same id, a fresh namespace, a new pid.
    release(&daemon, &id, "web");
    let old = net.restart_container();
    assert_ne!(old, net.pid());
    nft::assert_untouched(&net.container, "the restarted container's fresh namespace");
    attach(&daemon, &id, "web", net.pid());
    assert_eq!(state(&daemon, &id), "up");
    assert_a_denied(Some(&daemon), &net, &id, "after a container restart");

    // Daemon restart (SIGTERM); the kernel enforces while it is down.
    let status = daemon.kill_with(Signal::SIGTERM);
    assert!(status.success(), "shieldd after SIGTERM: {status}");
    assert_a_denied(None, &net, &id, "while the daemon is down");
    daemon.restart();
    wait_state(&daemon, &id, "up");
    assert_a_denied(Some(&daemon), &net, &id, "after a daemon restart");
    assert_eq!(container_state(&view(&daemon, &id)), "running");

    // down → up: the deny wins in every mode.
    daemon.ctl(&["down", &id]);
    assert_refused(&net, net.peer_a(), "down: the deny wins");
    daemon.ctl(&["down", "--all", &id]);
    assert_refused(&net, net.peer_a(), "down --all: the deny wins");
    daemon.ctl(&["up", &id]);
    assert_a_denied(Some(&daemon), &net, &id, "after down → up");

    // Allowing it lifts the deny; the profile's allow is back in force.
    daemon.ctl(&["allow", &id, &net.peer_a().to_string()]);
    assert_passes(&net, net.peer_a(), "after allow A");
    daemon.stop();
}

#[test]
fn rootful_profile_allow_denied_stays_denied_across_restarts() {
    profile_allow_denied(Owner::Root);
}

#[test]
fn rootless_profile_allow_denied_stays_denied_across_restarts() {
    profile_allow_denied(Owner::test_user());
}

/// A container restart re-applies the mode and every live change (allow, deny, CIDR).
#[test]
fn container_restart_reapplies_mode_and_live_changes() {
    shield_tests::require_root();
    let mut net = TestNet::new(Owner::Root);
    let daemon = daemon_for(Owner::Root, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "again", net.pid());
    let public_net = net.public_net_v4();
    daemon.ctl(&["allow", &id, &net.peer_b().to_string(), &public_net]);
    daemon.ctl(&["deny", &id, &net.peer_v6().to_string()]);
    daemon.ctl(&["block", &id]);
    assert_no_tcp(&net, net.peer_b(), "block");

    release(&daemon, &id, "again");
    net.restart_container();
    attach(&daemon, &id, "again", net.pid());
    assert_eq!(
        state(&daemon, &id),
        "block",
        "the mode survives a container restart"
    );
    assert_no_tcp(&net, net.peer_a(), "block, after the container restart");
    assert_loopback(&net, "block, after the container restart");

    daemon.ctl(&["up", &id]);
    assert_passes(&net, net.peer_a(), "up: profile");
    assert_passes(&net, net.peer_b(), "up: live allow");
    assert_passes(&net, net.peer_public_v4(), "up: live CIDR allow");
    assert_refused(&net, net.peer_v6(), "up: live deny of a profile allow");
    assert_refused(&net, net.peer_v6_b(), "up: never allowed");
    daemon.stop();
}

/// A container restart with more live intent than tonic's default answer limit (4 MiB): the
/// attach is answered without the container's lists (the hook needs none of them, and they grow
/// with every change), and `shieldctl` still lists them all.
#[test]
fn a_restart_with_more_live_intent_than_4_mib_is_answered_briefly() {
    shield_tests::require_root();
    let mut net = TestNet::new(Owner::Root);
    let daemon = daemon_for(Owner::Root, &net);
    let id = shield_tests::fresh_container_id();
    attach(&daemon, &id, "large", net.pid());
    // Denied domains of ~200 characters (a deny resolves nothing and touches no kernel set):
    // 24 × 1 024 of them, ~5 MB of lists.
    let (calls, per_call) = (24, 1024);
    let domain = |call: usize, n: usize| {
        let filler = |c: char| c.to_string().repeat(60);
        format!(
            "n{call}x{n}.{}.{}.{}.large.test",
            filler('a'),
            filler('b'),
            filler('c')
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt
        .block_on(shield_proto::client::connect(
            daemon.socket(),
            Duration::from_secs(5),
        ))
        .unwrap();
    for call in 0..calls {
        let request = ChangeRequest {
            container: id.clone(),
            targets: (0..per_call).map(|n| domain(call, n)).collect(),
        };
        rt.block_on(client.deny(request)).unwrap();
    }

    release(&daemon, &id, "large");
    net.restart_container();
    // The createRuntime the hook sends, made here to see its answer.
    let state = OciState {
        id: id.clone(),
        pid: net.pid(),
        bundle: "/tmp".into(),
        annotations: [
            ("shield.profiles".to_owned(), PROFILE.to_owned()),
            ("shield.name".to_owned(), "large".to_owned()),
        ]
        .into(),
        status: "creating".into(),
    };
    let answer = rt
        .block_on(client.container_created(ContainerCreatedRequest { state: Some(state) }))
        .expect("the attach after the restart")
        .into_inner();
    let container = answer.container.expect("the attached container");
    assert!(container.lists_omitted, "{container:?}");
    assert!(container.denied_domains.is_empty());
    // The connection lives on the runtime: closed here, or the daemon's graceful stop waits on it.
    drop(client);
    drop(rt);

    let denied = strings(&view(&daemon, &id), "denied_domains");
    assert_eq!(denied.len(), calls * per_call);
    assert!(denied.contains(&domain(calls - 1, per_call - 1)));
    daemon.stop();
}

/// The daemon is killed with SIGKILL: a blocked container stays blocked while it is down; the new
/// daemon re-attaches the running container (its mode and live changes intact, `allow` works
/// again) and shows the one that stopped meanwhile as `stopped`.
fn sigkill(owner: Owner) {
    shield_tests::require_root();
    let net = TestNet::new(owner);
    let mut gone = NsProcess::spawn(owner);
    let mut daemon = daemon_for(owner, &net);
    let (kept_id, gone_id) = (
        shield_tests::fresh_container_id(),
        shield_tests::fresh_container_id(),
    );
    attach(&daemon, &kept_id, "kept", net.pid());
    attach(&daemon, &gone_id, "gone", gone.pid());
    daemon.ctl(&["allow", "kept", &net.peer_b().to_string()]);
    assert_passes(&net, net.peer_b(), "live allow");
    daemon.ctl(&["block", "kept"]);
    assert_eq!(state(&daemon, "kept"), "block");
    assert_no_tcp(&net, net.peer_a(), "block");
    // The last change before the kill is an allow: it is answered once written to the journal,
    // before it is synced, and a crash of the daemon must not lose it.
    daemon.ctl(&["allow", "kept", &net.peer_v6_b().to_string()]);
    assert_no_tcp(&net, net.peer_v6_b(), "block, allowed");

    let status = daemon.kill_with(Signal::SIGKILL);
    assert!(!status.success(), "SIGKILL: {status}");
    // The kernel keeps enforcing without the daemon.
    assert_no_tcp(&net, net.peer_a(), "block, daemon dead");
    assert_no_tcp(&net, net.peer_b(), "block, daemon dead");
    assert_loopback(&net, "block, daemon dead");
    let t = nft::list_table(&net.container).expect("the table outlives the daemon");
    assert!(t.covers("allow_v4", net.peer_b()));
    // The other container stops while nobody watches.
    gone.kill();

    daemon.restart();
    wait_state(&daemon, &kept_id, "block");
    wait_state(&daemon, &gone_id, "stopped");
    assert_eq!(container_state(&view(&daemon, &kept_id)), "running");
    assert_eq!(container_state(&view(&daemon, &gone_id)), "stopped");
    assert_no_tcp(&net, net.peer_a(), "block, after the restart");

    daemon.ctl(&["up", "kept"]);
    assert_eq!(state(&daemon, "kept"), "up");
    assert_passes(&net, net.peer_a(), "up after the restart: profile");
    assert_passes(&net, net.peer_b(), "up after the restart: live allow kept");
    assert_passes(
        &net,
        net.peer_v6_b(),
        "up after the restart: the allow made just before the kill",
    );
    assert_refused(
        &net,
        net.peer_public_v4(),
        "up after the restart: never allowed",
    );
    daemon.ctl(&["allow", "kept", &net.peer_public_v4().to_string()]);
    assert_passes(&net, net.peer_public_v4(), "a new allow after the restart");
    daemon.ctl(&["deny", "kept", &net.peer_b().to_string()]);
    assert_refused(&net, net.peer_b(), "a new deny after the restart");
    // A change to a stopped container's live state is refused or recorded, never applied to a
    // namespace; it must not bring the container back.
    let _ = daemon.ctl_as(owner, &["allow", &gone_id, &net.peer_b().to_string()]);
    assert_eq!(state(&daemon, &gone_id), "stopped");
    daemon.stop();
}

#[test]
fn rootful_sigkill_keeps_enforcing_and_reattaches() {
    sigkill(Owner::Root);
}

#[test]
fn rootless_sigkill_keeps_enforcing_and_reattaches() {
    sigkill(Owner::test_user());
}
