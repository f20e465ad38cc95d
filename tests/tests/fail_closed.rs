//! Fail-closed: whatever goes wrong, `shield-hook createRuntime` exits non-zero with one line on
//! stderr (so the runtime does not start the container), and the container's namespace is left
//! untouched (no half-applied ruleset). The daemon survives every bad request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::process::{Child, Stdio};
use std::time::Duration;

use shield_tests::daemon::{Daemon, container_state, find_container};
use shield_tests::hook::{Hook, Stage, oci_state};
use shield_tests::netns::{Owner, TestNet};
use shield_tests::nft;

const PROFILE: &str = "10.200.0.1\n";

fn setup() -> (TestNet, Daemon) {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let daemon = Daemon::builder().profile("e2e", PROFILE).start();
    (net, daemon)
}

fn state_for(net: &TestNet, id: &str, profiles: &str) -> String {
    oci_state(
        id,
        Some(net.pid()),
        &[("shield.profiles", profiles), ("shield.name", "web")],
    )
}

/// The daemon is still alive and serving, and does not list `id` as running.
fn daemon_unharmed(daemon: &mut Daemon, id: &str) {
    assert!(
        daemon.is_running(),
        "the daemon died; log:\n{}",
        daemon.log()
    );
    let ps = daemon.ctl_json(&["ps"]);
    if let Some(c) = find_container(&ps, id) {
        assert_ne!(
            container_state(c),
            "running",
            "a failed attach is listed as running: {c}"
        );
    }
}

#[test]
fn daemon_not_running() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let dir = tempfile::tempdir().unwrap();
    // A stale socket file that nobody listens on (a daemon that crashed).
    let sock = dir.path().join("shieldd.sock");
    drop(UnixListener::bind(&sock).unwrap());
    let id = shield_tests::fresh_container_id();
    let run = Hook::new(Stage::CreateRuntime, &sock)
        .stdin(state_for(&net, &id, "e2e"))
        .run();
    run.assert_failed_one_line("daemon not running (stale socket)");
    nft::assert_untouched(&net.container, "daemon not running");
}

#[test]
fn wrong_socket_path() {
    let (net, mut daemon) = setup();
    let wrong = daemon.runtime_dir().join("shield/nope.sock");
    let id = shield_tests::fresh_container_id();
    let run = Hook::new(Stage::CreateRuntime, &wrong)
        .stdin(state_for(&net, &id, "e2e"))
        .run();
    let line = run.assert_failed_one_line("wrong socket path");
    assert!(
        line.contains(&wrong.display().to_string()),
        "the error should name the socket it tried: {line}"
    );
    nft::assert_untouched(&net.container, "wrong socket path");
    daemon_unharmed(&mut daemon, &id);
    daemon.stop();
}

#[test]
fn relative_socket_path_is_refused() {
    let (net, mut daemon) = setup();
    let id = shield_tests::fresh_container_id();
    let run = Hook::new(Stage::CreateRuntime, std::path::Path::new("shieldd.sock"))
        .stdin(state_for(&net, &id, "e2e"))
        .run();
    run.assert_failed_one_line("relative socket path");
    nft::assert_untouched(&net.container, "relative socket path");
    daemon_unharmed(&mut daemon, &id);
    daemon.stop();
}

#[test]
fn pid_does_not_exist() {
    let (net, mut daemon) = setup();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let id = shield_tests::fresh_container_id();
    let state = oci_state(&id, Some(pid), &[("shield.profiles", "e2e")]);
    let run = daemon.hook(Stage::CreateRuntime, None).stdin(state).run();
    run.assert_failed_one_line("pid does not exist");
    nft::assert_untouched(&net.container, "pid does not exist");
    daemon_unharmed(&mut daemon, &id);
    daemon.stop();
}

#[test]
fn garbage_json() {
    let (net, mut daemon) = setup();
    for (case, stdin) in [
        ("garbage", b"this is not JSON {".to_vec()),
        ("empty stdin", Vec::new()),
        ("JSON array", b"[1,2,3]".to_vec()),
        (
            "pid is a string",
            br#"{"ociVersion":"1.0.2","id":"abc","pid":"12","status":"created"}"#.to_vec(),
        ),
    ] {
        let run = daemon.hook(Stage::CreateRuntime, None).stdin(stdin).run();
        run.assert_failed_one_line(case);
    }
    nft::assert_untouched(&net.container, "garbage JSON");
    daemon_unharmed(&mut daemon, "abc");
    daemon.stop();
}

#[test]
fn missing_pid_or_id() {
    let (net, mut daemon) = setup();
    let id = shield_tests::fresh_container_id();
    let no_pid = oci_state(&id, None, &[("shield.profiles", "e2e")]);
    daemon
        .hook(Stage::CreateRuntime, None)
        .stdin(no_pid)
        .run()
        .assert_failed_one_line("missing pid");
    let no_id = format!(
        r#"{{"ociVersion":"1.0.2","pid":{},"status":"created","annotations":{{"shield.profiles":"e2e"}}}}"#,
        net.pid()
    );
    daemon
        .hook(Stage::CreateRuntime, None)
        .stdin(no_id)
        .run()
        .assert_failed_one_line("missing id");
    nft::assert_untouched(&net.container, "missing pid or id");
    daemon_unharmed(&mut daemon, &id);
    daemon.stop();
}

#[test]
fn oversized_state() {
    let (net, mut daemon) = setup();
    let id = shield_tests::fresh_container_id();
    // A valid document padded past any sane bound (8 MiB).
    let mut big = state_for(&net, &id, "e2e").into_bytes();
    big.extend(std::iter::repeat_n(b' ', 8 << 20));
    let run = daemon.hook(Stage::CreateRuntime, None).stdin(big).run();
    run.assert_failed_one_line("oversized OCI state");
    nft::assert_untouched(&net.container, "oversized state");
    daemon_unharmed(&mut daemon, &id);
    daemon.stop();
}

#[test]
fn netns_vanished() {
    let (mut net, mut daemon) = setup();
    // The container process dies before the hook runs; its namespace lives on through another
    // holder so that the test can check nothing was written into it.
    let dead = net.kill_container_process();
    let id = shield_tests::fresh_container_id();
    let state = oci_state(&id, Some(dead), &[("shield.profiles", "e2e")]);
    let run = daemon.hook(Stage::CreateRuntime, None).stdin(state).run();
    run.assert_failed_one_line("netns vanished");
    nft::assert_untouched(&net.container, "netns vanished");
    daemon_unharmed(&mut daemon, &id);
    daemon.stop();
}

#[test]
fn dns_port_taken_leaves_no_record() {
    let (net, mut daemon) = setup();
    // Something in the container's namespace already holds 127.0.0.1:53, so the helper cannot
    // make the DNS listeners: the attach fails after the daemon began writing the container's
    // record (it writes it while the kernel works), and the record must go again.
    let mut squatter = KillOnDrop(
        net.container
            .command(shield_tests::bins::bin_dir().join(shield_tests::bins::PROBE))
            .args(["serve", "53", "127.0.0.1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut ready = String::new();
    BufReader::new(squatter.0.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let id = shield_tests::fresh_container_id();
    let run = daemon
        .hook(Stage::CreateRuntime, None)
        .stdin(state_for(&net, &id, "e2e"))
        .run();
    run.assert_failed_one_line("port 53 taken");
    nft::assert_untouched(&net.container, "port 53 taken");
    daemon_unharmed(&mut daemon, &id);
    assert!(
        !daemon.container_state_dir(&id).join("state.json").exists(),
        "a container that never ran under shield left a record"
    );
    drop(squatter);
    daemon.stop();
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn unknown_profile() {
    let (net, mut daemon) = setup();
    for profiles in ["no-such-profile", "e2e:no-such-profile"] {
        let id = shield_tests::fresh_container_id();
        let run = daemon
            .hook(Stage::CreateRuntime, None)
            .stdin(state_for(&net, &id, profiles))
            .run();
        let line = run.assert_failed_one_line(&format!("unknown profile in {profiles:?}"));
        assert!(
            line.contains("no-such-profile"),
            "the error should name the unknown profile: {line}"
        );
        nft::assert_untouched(&net.container, "unknown profile");
        daemon_unharmed(&mut daemon, &id);
    }
    daemon.stop();
}

#[test]
fn bad_user_profile() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let mut daemon = Daemon::builder()
        .profile("broken", "10.200.0.1\nnot a valid entry!\n")
        .start();
    let id = shield_tests::fresh_container_id();
    let run = daemon
        .hook(Stage::CreateRuntime, None)
        .stdin(state_for(&net, &id, "broken"))
        .run();
    run.assert_failed_one_line("profile with a bad line");
    nft::assert_untouched(&net.container, "bad profile");
    daemon_unharmed(&mut daemon, &id);
    daemon.stop();
}

#[test]
fn daemon_never_answers() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // Accepts every connection and holds it open without ever writing a byte.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let id = shield_tests::fresh_container_id();
    let run = Hook::new(Stage::CreateRuntime, &sock)
        .timeout("300ms")
        .stdin(state_for(&net, &id, "e2e"))
        .run();
    run.assert_failed_one_line("daemon never answers");
    assert!(
        run.elapsed >= Duration::from_millis(250),
        "the hook gave up after {:?}, before its 300 ms deadline: {}",
        run.elapsed,
        run.stderr
    );
    assert!(
        run.elapsed < Duration::from_secs(2),
        "the hook ignored its 300 ms deadline: {:?}",
        run.elapsed
    );
    nft::assert_untouched(&net.container, "daemon never answers");
}

#[test]
fn bad_timeout_is_rejected() {
    let (net, mut daemon) = setup();
    let id = shield_tests::fresh_container_id();
    let run = daemon
        .hook(Stage::CreateRuntime, None)
        .timeout("soon")
        .stdin(state_for(&net, &id, "e2e"))
        .run();
    assert!(!run.success(), "--timeout soon must be rejected");
    nft::assert_untouched(&net.container, "bad timeout");
    daemon_unharmed(&mut daemon, &id);
    daemon.stop();
}
