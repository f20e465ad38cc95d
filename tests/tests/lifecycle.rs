//! The daemon's own lifecycle, as a supervisor sees it: once its socket listens, SIGTERM and
//! SIGINT shut it down cleanly (exit status 0, socket removed), however soon they come.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use nix::sys::signal::Signal;
use shield_tests::daemon::Daemon;
use shield_tests::netns::Owner;

/// A signal right after the socket appears (a supervisor stopping a daemon it just started)
/// must already be handled: signal handlers go in before the socket is bound.
#[test]
fn signal_right_after_listening_is_a_clean_shutdown() {
    shield_tests::require_root();
    for round in 0..20 {
        let signal = if round % 2 == 0 {
            Signal::SIGTERM
        } else {
            Signal::SIGINT
        };
        Daemon::builder().start().stop_with(signal);
    }
}

#[test]
fn rootless_daemon_stops_cleanly() {
    shield_tests::require_root();
    let daemon = Daemon::builder()
        .owner(Owner::test_user())
        .default_socket()
        .start();
    std::thread::sleep(std::time::Duration::from_millis(100));
    daemon.stop_with(Signal::SIGINT);
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    shield_tests::require_root();
    let daemon = Daemon::builder().start();
    let out = std::process::Command::new(daemon.bin(shield_tests::bins::SHIELDD))
        .arg("--socket")
        .arg(daemon.socket())
        .env("XDG_RUNTIME_DIR", daemon.runtime_dir())
        .env("XDG_CONFIG_HOME", daemon.dir().join("config"))
        .env("XDG_STATE_HOME", daemon.dir().join("state"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a second shieldd on a live socket must refuse to start"
    );
    assert!(
        daemon.socket().exists(),
        "the second daemon must not remove the first one's socket"
    );
    let status = daemon.ctl(&["status"]);
    assert!(!status.is_empty(), "the first daemon still serves");
    daemon.stop();
}
