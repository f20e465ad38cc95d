//! The real thing: rootless podman 4.3.1 (slirp4netns) as the test user, the hooks installed by
//! `shieldctl setup --user`, containers started with `shieldctl run`/`prepare`, the real
//! `shieldd` as the same user, and traffic from inside the containers (busybox `nc` and
//! `nslookup`) to a TCP listener on the host's loopback (reached as 10.0.2.2 through slirp4netns's
//! `allow_host_loopback`) and to a dnsmasq upstream on the host's loopback.
//!
//! Needs the machine prepared by `tests/podman/prepare-machine.sh` (run as root; `.ci/run` does
//! it): podman, crun, slirp4netns, the test user's subordinate ids, `/run/user/UID`, its storage
//! in [`PODMAN_HOME`] and the image [`IMAGE`]. Every test fails loudly without root or without
//! that preparation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shield_tests::bins;
use shield_tests::daemon::Daemon;
use shield_tests::dns::Dnsmasq;
use shield_tests::netns::Owner;
use shield_tests::podman::{IMAGE, PODMAN_HOME, user_command};

/// The host's loopback as slirp4netns shows it to a container.
const HOST: &str = "10.0.2.2";
/// What the host listener says to every connection.
const GREETING: &str = "shield-podman-ok";
/// The profile that allowlists the host (and a domain).
const OPEN: &str = "hostopen";
/// The profile that allowlists only a domain.
const CLOSED: &str = "hostclosed";
/// The allowlisted domain; dnsmasq answers it (and names below it) with [`HOST`].
const ALLOWED_DOMAIN: &str = "allowed.test";
/// A domain dnsmasq would answer too, but that no profile allows.
const OTHER_DOMAIN: &str = "other.test";

/// A TCP listener on host 127.0.0.1 that greets and counts every connection.
struct HostListener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl HostListener {
    fn start() -> HostListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind host listener");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(format!("{GREETING}\n").as_bytes());
            }
        });
        HostListener { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// One test's world: the listener, dnsmasq, the daemon as the test user, and that user's podman
/// pointed (through XDG variables) at the daemon's directories, with shield's hooks installed
/// there by `shieldctl setup --user`.
struct World {
    /// The listener the tests reach or not by policy; its port is not in `loopback_ports`.
    listener: HostListener,
    /// A listener whose port is in `loopback_ports`: every shielded container reaches it.
    port_listener: HostListener,
    user: Owner,
    // Containers are removed before the daemon stops and its directories go.
    containers: std::cell::RefCell<Vec<String>>,
    daemon: Option<Daemon>,
    _dns: Dnsmasq,
}

fn require_podman_machine() -> Owner {
    shield_tests::require_root();
    let user = Owner::test_user();
    let uid = user.uid();
    for (what, ok) in [
        ("podman".to_string(), Path::new("/usr/bin/podman").exists()),
        (
            format!("{PODMAN_HOME}/storage.conf"),
            Path::new(PODMAN_HOME).join("storage.conf").exists(),
        ),
        (
            format!("/run/user/{uid}"),
            Path::new(&format!("/run/user/{uid}")).is_dir(),
        ),
    ] {
        assert!(
            ok,
            "{what} is missing: prepare the machine with `bash tests/podman/prepare-machine.sh` \
             (as root; .ci/run does it)"
        );
    }
    user
}

impl World {
    fn new() -> World {
        let user = require_podman_machine();
        let listener = HostListener::start();
        let port_listener = HostListener::start();
        let dns = Dnsmasq::start(&[
            (ALLOWED_DOMAIN, HOST.parse().unwrap()),
            (OTHER_DOMAIN, HOST.parse().unwrap()),
        ]);
        let config = format!(
            "loopback_ports = [{}]\n{}",
            port_listener.port,
            dns.config_toml()
        );
        let daemon = Daemon::builder()
            .owner(user)
            .profile(OPEN, &format!("{HOST}\n{ALLOWED_DOMAIN}\n"))
            .profile(CLOSED, &format!("{ALLOWED_DOMAIN}\n"))
            .config(&config)
            .start();
        let world = World {
            listener,
            port_listener,
            user,
            containers: std::cell::RefCell::new(Vec::new()),
            daemon: Some(daemon),
            _dns: dns,
        };
        for dir in ["data", "tmp"] {
            let p = world.root().join(dir);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
            user.chown(&p);
        }
        assert!(
            world.podman(&["image", "exists", IMAGE]).status.success(),
            "image {IMAGE} is missing for the test user: prepare the machine with \
             `bash tests/podman/prepare-machine.sh`"
        );
        let out = world.shieldctl(&["setup", "--user"]);
        assert_success(&out, "shieldctl setup --user");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("warning"),
            "shieldctl setup --user warned: {stderr}"
        );
        world
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon")
    }

    fn root(&self) -> PathBuf {
        self.daemon().dir().to_path_buf()
    }

    /// `shieldctl --socket SOCKET ARGS…` as the test user (shield-hook sits next to it, so
    /// `setup` and `run` use that one).
    fn shieldctl(&self, args: &[&str]) -> Output {
        let mut cmd = user_command(self.daemon().bin(bins::SHIELDCTL), self.user, &self.root());
        cmd.arg("--socket").arg(self.daemon().socket()).args(args);
        cmd.output().expect("run shieldctl")
    }

    /// `shieldctl ARGS…`, which must succeed; its stdout.
    fn ctl(&self, args: &[&str]) -> String {
        let out = self.shieldctl(args);
        assert_success(&out, &format!("shieldctl {args:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = user_command("podman", self.user, &self.root());
        cmd.args(args);
        cmd.output().expect("run podman")
    }

    /// A container name unique to this test run.
    fn name(&self, what: &str) -> String {
        let name = format!("shield-e2e-{what}-{}", std::process::id());
        self.containers.borrow_mut().push(name.clone());
        // A leftover of an earlier, killed run of the same pid would make `run` fail.
        let _ = self.podman(&["rm", "-f", "-t", "0", &name]);
        name
    }

    /// `shieldctl run NAME --profiles PROFILE -- -d EXTRA… IMAGE sleep 600`: a shielded,
    /// detached container.
    fn run_shielded(&self, name: &str, profile: &str, extra: &[&str]) {
        let mut args = vec!["run", name, "--profiles", profile, "--", "-d"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "600"]);
        let out = self.shieldctl(&args);
        assert_success(&out, &format!("shieldctl {args:?}"));
    }

    /// `podman exec NAME ARGS…`.
    fn exec(&self, name: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", name];
        all.extend_from_slice(args);
        self.podman(&all)
    }

    /// Connects from inside `name` to `target` port `port` with busybox nc; returns whether the
    /// greeting came back and how long it took.
    fn connect(&self, name: &str, target: &str, port: u16) -> (bool, Duration, String) {
        let start = Instant::now();
        let out = self.exec(name, &["nc", "-w", "3", target, &port.to_string()]);
        let elapsed = start.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (text.contains(GREETING), elapsed, text)
    }

    fn assert_reaches(&self, name: &str, target: &str, why: &str) {
        let before = self.listener.accepted();
        let (ok, _, text) = self.connect(name, target, self.listener.port);
        assert!(
            ok,
            "{why}: {name} must reach {target}:{}; nc said: {text}\n{}",
            self.listener.port,
            self.daemon().log()
        );
        assert!(
            self.listener.accepted() > before,
            "{why}: listener saw nothing"
        );
    }

    /// The connect fails at once (a reset, not a timeout) and never reaches the listener.
    fn assert_refused(&self, name: &str, target: &str, why: &str) {
        let before = self.listener.accepted();
        let (ok, elapsed, text) = self.connect(name, target, self.listener.port);
        assert!(
            !ok,
            "{why}: {name} reached {target}:{} ({text})",
            self.listener.port
        );
        assert!(
            elapsed < Duration::from_millis(2500),
            "{why}: refusal took {elapsed:?} (must be a reset, not a timeout): {text}"
        );
        assert_eq!(
            self.listener.accepted(),
            before,
            "{why}: the listener accepted a connection"
        );
    }

    /// `shieldctl state NAME`.
    fn state(&self, name: &str) -> String {
        self.ctl(&["state", name]).trim().to_string()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let names: Vec<String> = self.containers.borrow().clone();
        for name in names {
            let _ = self.podman(&["rm", "-f", "-t", "0", &name]);
        }
    }
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An allowlisted host answers; the same listener is refused at once to a container whose
/// profile does not list the host, while the port in `loopback_ports` answers it.
#[test]
fn allowlisted_host_port_answers_and_others_are_refused() {
    let w = World::new();
    let open = w.name("open");
    let closed = w.name("closed");
    w.run_shielded(&open, OPEN, &[]);
    w.run_shielded(&closed, CLOSED, &[]);
    let inspect = w.podman(&["inspect", "--format", "{{.HostConfig.NetworkMode}}", &open]);
    assert!(
        String::from_utf8_lossy(&inspect.stdout).contains("slirp4netns"),
        "loopback_ports must give the container slirp4netns: {}",
        String::from_utf8_lossy(&inspect.stdout)
    );
    w.assert_reaches(&open, HOST, "profile allows the host");
    w.assert_refused(&closed, HOST, "profile does not allow the host");
    // `loopback_ports` opens exactly its port of the host, to every shielded container.
    let before = w.port_listener.accepted();
    let (ok, _, text) = w.connect(&closed, HOST, w.port_listener.port);
    assert!(
        ok && w.port_listener.accepted() > before,
        "a port in loopback_ports must answer: {text}"
    );
    // The control: the same network without shield reaches the listener, so the refusal above
    // is shield's doing.
    let plain = w.name("unshielded");
    let out = w.podman(&[
        "run",
        "-d",
        "--name",
        &plain,
        "--network",
        "slirp4netns:allow_host_loopback=true",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert_success(&out, "unshielded podman run");
    w.assert_reaches(&plain, HOST, "an unshielded container");
    assert_eq!(w.state(&open), "up");
}

/// The container's resolver is the proxy: an allowlisted name resolves (through the dnsmasq
/// upstream) and its address becomes reachable; another name is NXDOMAIN and its address stays
/// closed.
#[test]
fn dns_goes_through_the_proxy() {
    let w = World::new();
    let c = w.name("dns");
    w.run_shielded(&c, CLOSED, &[]);
    let resolv = w.exec(&c, &["cat", "/etc/resolv.conf"]);
    assert!(
        String::from_utf8_lossy(&resolv.stdout).contains("nameserver 127.0.0.1"),
        "resolv.conf: {}",
        String::from_utf8_lossy(&resolv.stdout)
    );
    let name = format!("www.{ALLOWED_DOMAIN}");
    w.assert_refused(&c, HOST, "before any DNS answer");
    let out = w.exec(&c, &["nslookup", "-type=a", &name]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains(HOST),
        "nslookup {name} must answer {HOST}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The learnt address is open now, by name.
    w.assert_reaches(&c, &name, "address learnt from an allowed answer");

    let other = format!("www.{OTHER_DOMAIN}");
    let out = w.exec(&c, &["nslookup", "-type=a", &other]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && text.contains("NXDOMAIN"),
        "nslookup {other} must be NXDOMAIN: {text}"
    );
}

/// `allow`, `deny`, `down`, `up` and `block` change what the running container reaches.
#[test]
fn live_changes_reach_the_running_container() {
    let w = World::new();
    let c = w.name("live");
    w.run_shielded(&c, CLOSED, &[]);
    w.assert_refused(&c, HOST, "profile does not allow the host");
    w.ctl(&["allow", &c, HOST]);
    w.assert_reaches(&c, HOST, "after allow");
    w.ctl(&["deny", &c, HOST]);
    w.assert_refused(&c, HOST, "after deny");
    w.ctl(&["allow", &c, HOST]);
    w.assert_reaches(&c, HOST, "allow lifts the deny");
    w.ctl(&["block", &c]);
    assert_eq!(w.state(&c), "block");
    w.assert_refused(&c, HOST, "mode block");
    w.ctl(&["up", &c]);
    w.assert_reaches(&c, HOST, "back up");
    let other = format!("www.{OTHER_DOMAIN}");
    assert!(
        !w.exec(&c, &["nslookup", "-type=a", &other])
            .status
            .success(),
        "mode up: a name no profile allows must not resolve"
    );
    w.ctl(&["deny", &c, HOST]);
    w.assert_refused(&c, HOST, "after the second deny");
    w.ctl(&["down", &c]);
    assert_eq!(w.state(&c), "down");
    w.assert_refused(&c, HOST, "mode down keeps denies");
    // Mode down resolves every name.
    let out = w.exec(&c, &["nslookup", "-type=a", &other]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(HOST),
        "mode down: {other} must resolve: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 10.0.2.2 is a private address: down --all lets it through once the deny is lifted.
    w.ctl(&["allow", &c, HOST]);
    w.ctl(&["down", "--all", &c]);
    assert_eq!(w.state(&c), "down_all");
    w.assert_reaches(&c, HOST, "mode down --all, deny lifted");
    w.ctl(&["deny", &c, HOST]);
    w.assert_refused(&c, HOST, "down --all keeps denies");
}

/// `podman stop` + `podman start` keep the live allow and the mode.
#[test]
fn stop_and_start_keep_live_changes_and_mode() {
    let w = World::new();
    let c = w.name("restart");
    w.run_shielded(&c, CLOSED, &[]);
    w.ctl(&["allow", &c, HOST]);
    w.ctl(&["block", &c]);
    w.assert_refused(&c, HOST, "blocked before the restart");
    assert_success(&w.podman(&["stop", "-t", "0", &c]), "podman stop");
    assert_success(&w.podman(&["start", &c]), "podman start");
    assert_eq!(w.state(&c), "block", "the mode survives podman stop/start");
    w.assert_refused(&c, HOST, "still blocked after the restart");
    w.ctl(&["up", &c]);
    w.assert_reaches(&c, HOST, "the live allow survives podman stop/start");
}

/// With the daemon stopped, an annotated container fails to start (126) before its command runs;
/// an un-annotated one is unaffected.
#[test]
fn a_stopped_daemon_fails_annotated_containers_closed() {
    let mut w = World::new();
    let name = w.name("closed-fail");
    let plain = w.name("plain");
    let prepared = w.ctl(&["--json", "prepare", &name, "--profiles", OPEN]);
    let doc: serde_json::Value = serde_json::from_str(&prepared).expect("prepare --json");
    let shield_args: Vec<String> = doc["args"]
        .as_array()
        .unwrap_or_else(|| panic!("prepare printed no args: {doc}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(
        shield_args
            .iter()
            .any(|a| a.starts_with("shield.profiles=")),
        "{shield_args:?}"
    );
    let marks = w.root().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    w.user.chown(&marks);
    let volume = format!("{}:/marks", marks.display());

    // Stopped, but its directories (containers.conf with the hooks, the hooks) stay.
    let status = w
        .daemon
        .as_mut()
        .expect("daemon")
        .kill_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "shieldd exited with {status} on SIGTERM");
    assert!(
        !w.daemon().socket().exists(),
        "shieldd left its socket behind"
    );

    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(shield_args.iter().map(String::as_str));
    args.extend_from_slice(&["-v", &volume, IMAGE, "touch", "/marks/shielded"]);
    let out = w.podman(&args);
    assert_eq!(
        out.status.code(),
        Some(126),
        "an annotated container must not start without the daemon: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !marks.join("shielded").exists(),
        "the annotated container's command ran"
    );

    let out = w.podman(&[
        "run",
        "--rm",
        "--name",
        &plain,
        "-v",
        &volume,
        IMAGE,
        "touch",
        "/marks/plain",
    ]);
    assert_success(&out, "un-annotated podman run");
    assert!(
        marks.join("plain").exists(),
        "the plain container did not run"
    );
}

/// Inside a shielded container NET_ADMIN is gone: the ruleset cannot be touched.
#[test]
fn containers_have_no_net_admin() {
    let w = World::new();
    let c = w.name("caps");
    w.run_shielded(&c, CLOSED, &[]);
    let status = w.exec(&c, &["cat", "/proc/self/status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    let cap_eff = text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no CapEff in {text}"));
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_NET_RAW: u64 = 1 << 13;
    assert_eq!(
        cap_eff & (CAP_NET_ADMIN | CAP_NET_RAW),
        0,
        "CapEff {cap_eff:x}"
    );
    for cmd in [
        &["ip", "link", "set", "lo", "down"][..],
        &["ip", "addr", "add", "10.9.9.9/32", "dev", "lo"],
    ] {
        let out = w.exec(&c, cmd);
        assert!(
            !out.status.success(),
            "{cmd:?} must fail without NET_ADMIN: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    w.assert_refused(&c, HOST, "the ruleset still holds");
}

/// `shieldctl run` refuses options that would undo the shield, and starts nothing.
#[test]
fn run_refuses_privileged_and_net_admin() {
    let w = World::new();
    let c = w.name("refused");
    for extra in [
        &["--privileged"][..],
        &["--cap-add", "NET_ADMIN"],
        &["--cap-add=NET_ADMIN"],
    ] {
        let mut args = vec!["run", c.as_str(), "--profiles", OPEN, "--"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "true"]);
        let out = w.shieldctl(&args);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && text.contains("refusing"),
            "shieldctl {args:?} must refuse: {}{text}",
            String::from_utf8_lossy(&out.stdout)
        );
        let exists = w.podman(&["container", "exists", &c]);
        assert_eq!(
            exists.status.code(),
            Some(1),
            "{extra:?}: a container was created"
        );
    }
}

/// A container in a nested user namespace (`--userns=keep-id`) is shielded too.
#[test]
fn keep_id_containers_are_shielded() {
    let w = World::new();
    let open = w.name("keepid-open");
    let closed = w.name("keepid-closed");
    w.run_shielded(&open, OPEN, &["--userns=keep-id"]);
    w.run_shielded(&closed, CLOSED, &["--userns=keep-id"]);
    let id = w.exec(&closed, &["id", "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        w.user.uid().to_string(),
        "keep-id runs as the user's uid"
    );
    w.assert_reaches(&open, HOST, "keep-id, host allowed");
    w.assert_refused(&closed, HOST, "keep-id, host not allowed");
    let out = w.exec(
        &closed,
        &["nslookup", "-type=a", &format!("www.{OTHER_DOMAIN}")],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN")
            || String::from_utf8_lossy(&out.stderr).contains("NXDOMAIN"),
        "keep-id: the DNS proxy answers: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
