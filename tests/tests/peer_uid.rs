//! The socket belongs to the daemon's uid: directory 0700, socket 0600, and a peer with another
//! SO_PEERCRED uid is refused even when file permissions would let it in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use shield_tests::bins;
use shield_tests::daemon::Daemon;
use shield_tests::hook::{Hook, Stage, oci_state};
use shield_tests::netns::{Owner, TestNet};
use shield_tests::nft;

/// uid/gid `nobody`.
const NOBODY: Owner = Owner::User {
    uid: 65_534,
    gid: 65_534,
};

fn assert_private(daemon: &Daemon) {
    let sock = std::fs::metadata(daemon.socket()).unwrap();
    let dir = std::fs::metadata(daemon.socket().parent().unwrap()).unwrap();
    assert_eq!(sock.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(
        dir.permissions().mode() & 0o777,
        0o700,
        "socket directory mode"
    );
    assert_eq!(sock.uid(), daemon.owner().uid(), "socket owner");
    assert_eq!(dir.uid(), daemon.owner().uid(), "socket directory owner");
}

#[test]
fn rootful_socket_is_private() {
    shield_tests::require_root();
    let daemon = Daemon::builder().start();
    assert_private(&daemon);
    daemon.stop();
}

#[test]
fn rootless_socket_is_private_and_in_the_runtime_dir() {
    shield_tests::require_root();
    let owner = Owner::test_user();
    let daemon = Daemon::builder().owner(owner).default_socket().start();
    assert_eq!(
        daemon.socket(),
        daemon.runtime_dir().join("shield/shieldd.sock"),
        "default socket"
    );
    assert_private(&daemon);
    daemon.stop();
}

#[test]
fn another_uid_is_refused() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let mut daemon = Daemon::builder()
        .profile("e2e", &format!("{}\n", net.peer_a()))
        .start();
    daemon.open_permissions();

    let out = daemon.ctl_as(Owner::Root, &["status"]);
    assert!(
        out.status.success(),
        "the daemon's own uid must get in: {out:?}"
    );

    let out = daemon.ctl_as(NOBODY, &["status"]);
    assert!(
        !out.status.success(),
        "uid 65534 must be refused; shieldctl status printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The hook, as another uid, cannot get a container attached either.
    let (_keep, hook_bin) = bins::public_copy(bins::SHIELD_HOOK);
    let id = shield_tests::fresh_container_id();
    let run = Hook::new(Stage::CreateRuntime, daemon.socket())
        .bin(&hook_bin)
        .as_owner(NOBODY, None)
        .stdin(oci_state(
            &id,
            Some(net.pid()),
            &[("shield.profiles", "e2e")],
        ))
        .run();
    run.assert_failed_one_line("hook from another uid");
    nft::assert_untouched(&net.container, "hook from another uid");

    assert!(
        daemon.is_running(),
        "a refused peer must not take the daemon down"
    );
    let out = daemon.ctl_as(Owner::Root, &["status"]);
    assert!(
        out.status.success(),
        "the daemon still serves its own uid: {out:?}"
    );
    let log = daemon.log();
    assert!(
        log.contains("65534"),
        "the refusal should be logged with the peer's uid; log:\n{log}"
    );
    daemon.stop();
}

#[test]
fn root_is_refused_by_a_rootless_daemon() {
    shield_tests::require_root();
    let owner = Owner::test_user();
    let daemon = Daemon::builder().owner(owner).start();
    daemon.open_permissions();
    let out = daemon.ctl_as(owner, &["status"]);
    assert!(
        out.status.success(),
        "the daemon's own uid must get in: {out:?}"
    );
    let out = daemon.ctl_as(Owner::Root, &["status"]);
    assert!(
        !out.status.success(),
        "root is another uid for a rootless daemon (unless configured): {}",
        String::from_utf8_lossy(&out.stdout)
    );
    daemon.stop();
}
