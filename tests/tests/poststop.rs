//! Poststop: the daemon releases the container (the sockets it held inside the container's
//! namespace are closed, `ps` shows it stopped), with the empty environment runtimes give
//! poststop hooks; an unreachable daemon is not an error at poststop.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::BTreeSet;
use std::time::Duration;

use shield_tests::daemon::{Daemon, container_state, find_container};
use shield_tests::hook::{Hook, Stage, oci_state};
use shield_tests::netns::{Owner, TestNet};
use shield_tests::nft;

/// Sockets the daemon holds that live in the container's network namespace.
fn held(daemon: &Daemon, net: &TestNet) -> BTreeSet<u64> {
    let mine = daemon.socket_inodes();
    nft::netns_socket_inodes(&net.container)
        .intersection(&mine)
        .copied()
        .collect()
}

fn poststop_releases(owner: Owner) {
    shield_tests::require_root();
    let net = TestNet::new(owner);
    let daemon = Daemon::builder()
        .owner(owner)
        .profile("e2e", &format!("{}\n", net.peer_a()))
        .start();
    assert!(held(&daemon, &net).is_empty(), "sockets held before attach");
    let id = shield_tests::fresh_container_id();
    let annotations = [("shield.profiles", "e2e"), ("shield.name", "job")];
    daemon
        .hook(Stage::CreateRuntime, Some(net.pid()))
        .stdin(oci_state(&id, Some(net.pid()), &annotations))
        .run()
        .assert_success();
    let ps = daemon.ctl_json(&["ps"]);
    let c = find_container(&ps, &id).unwrap_or_else(|| panic!("{id} missing from ps: {ps}"));
    assert_eq!(container_state(c), "running", "{c}");
    assert!(
        !held(&daemon, &net).is_empty(),
        "a running container's sockets (netlink at least) are held by the daemon"
    );

    // Poststop: no pid, only PWD in the environment (the Hook fixture clears the rest).
    let run = daemon
        .hook(Stage::Poststop, None)
        .stdin(oci_state(&id, None, &annotations))
        .run();
    run.assert_success();

    let ps = daemon.ctl_json(&["ps"]);
    let c = find_container(&ps, &id).unwrap_or_else(|| panic!("{id} missing from ps: {ps}"));
    assert_eq!(container_state(c), "stopped", "{c}");
    shield_tests::wait_for(
        "the daemon to close the container's sockets",
        Duration::from_secs(2),
        || held(&daemon, &net).is_empty().then_some(()),
    );
    daemon.stop();
}

#[test]
fn rootful_poststop_releases_the_container() {
    poststop_releases(Owner::Root);
}

#[test]
fn rootless_poststop_releases_the_container() {
    poststop_releases(Owner::test_user());
}

#[test]
fn poststop_without_daemon_succeeds() {
    shield_tests::require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("shieldd.sock");
    let id = shield_tests::fresh_container_id();
    let run = Hook::new(Stage::Poststop, &sock)
        .stdin(oci_state(&id, None, &[("shield.profiles", "e2e")]))
        .run();
    run.assert_success();
    assert!(
        !run.stderr.trim().is_empty(),
        "poststop with no daemon should say so on stderr"
    );
}

#[test]
fn poststop_of_unknown_container_succeeds() {
    shield_tests::require_root();
    let mut daemon = Daemon::builder().start();
    let id = shield_tests::fresh_container_id();
    let run = daemon
        .hook(Stage::Poststop, None)
        .stdin(oci_state(&id, None, &[("shield.profiles", "e2e")]))
        .run();
    run.assert_success();
    assert!(daemon.is_running());
    daemon.stop();
}
