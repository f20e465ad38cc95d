//! Namespace entry against real namespaces and the real `shieldd nshelper` process.
//!
//! These tests need root: they create network and user namespaces and switch uids with
//! `setpriv`. Without root they fail with a message saying so; they never skip silently.
//!
//! The rootless scenarios run the daemon side as an unprivileged uid, the way shieldd runs in
//! production: the test binary re-executes itself under `setpriv` with [`CHILD_ENV`] set, running
//! only [`daemon_side`], which prints one `RESULT …` line for the parent to check.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed setup step is a failed test"
)]

use std::env;
use std::fs::{self, File};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, getsockname, recv, send, setsockopt, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};
use nix::unistd::Uid;
use shieldd::netns::{
    ContainerNamespace, HelperCommand, NamespaceId, NetnsError, SocketRequest, create_sockets,
};

/// The daemon binary, whose `main` dispatches `nshelper` to the helper.
const SHIELDD: &str = env!("CARGO_BIN_EXE_shieldd");
/// Set (to `pid:N` or `stdin`) when this binary runs as the unprivileged daemon side.
const CHILD_ENV: &str = "SHIELD_NETNS_TEST_CHILD";
/// The uid that owns the rootless "container" and runs the rootless daemon side.
const OWNER_UID: u32 = 65534;
/// Another unprivileged uid (no passwd entry needed), which must be refused.
const OTHER_UID: u32 = 64999;

fn require_root() {
    assert!(
        Uid::effective().is_root(),
        "the netns_helper tests need root (they create namespaces and switch uids with setpriv); \
         run them as root, e.g. `sudo -E cargo test -p shieldd --test netns_helper`"
    );
}

/// A stand-in container: `sleep` in a fresh network namespace (and user namespace, if
/// rootless), with loopback up as podman leaves it. Killed and reaped on drop.
struct Container {
    child: Child,
    pid: u32,
}

impl Container {
    /// Rootful: root in a new network namespace.
    fn rootful() -> Self {
        Self::start(Command::new("unshare").args(["--net", "--"]))
    }

    /// Rootless: `uid` in a new user namespace (mapped to root there) owning a new netns.
    fn rootless(uid: u32) -> Self {
        Self::start(setpriv(uid, "unshare").args(["--user", "--map-root-user", "--net", "--"]))
    }

    fn start(command: &mut Command) -> Self {
        let child = command
            .args(["sh", "-c", "ip link set lo up && exec sleep 60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let pid = child.id();
        let container = Self { child, pid };
        // unshare keeps the pid through exec; once it is `sleep`, all namespace setup is done.
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .as_deref()
            != Some("sleep\n")
        {
            assert!(
                Instant::now() < deadline,
                "container {pid} did not reach `sleep` within 5 s"
            );
            thread::sleep(Duration::from_millis(2));
        }
        container
    }

    fn netns_id(&self) -> NamespaceId {
        NamespaceId::of_path(format!("/proc/{}/ns/net", self.pid)).expect("stat container netns")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `setpriv` to an unprivileged uid/gid with no supplementary groups, then `program`.
fn setpriv(uid: u32, program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.args([
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
        "--".to_owned(),
        program.to_owned(),
    ]);
    command
}

/// Sends NFT_MSG_GETGEN on a NETLINK_NETFILTER socket: the cheapest nf_tables request that the
/// kernel answers only when the sender may use nf_tables in the socket's namespace.
/// Returns the reply's message type, or the errno of an NLMSG_ERROR reply.
fn nft_getgen(sock: &OwnedFd) -> Result<u16, nix::errno::Errno> {
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETGEN: u16 = 16;
    const NLMSG_ERROR: u16 = 2;
    let mut msg = Vec::new();
    msg.extend(20_u32.to_ne_bytes()); // nlmsg_len: header + nfgenmsg
    msg.extend(((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    msg.extend(1_u16.to_ne_bytes()); // NLM_F_REQUEST
    msg.extend(1_u32.to_ne_bytes()); // seq
    msg.extend(0_u32.to_ne_bytes()); // port id: kernel fills it in
    msg.extend([0_u8, 0, 0, 0]); // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 0
    setsockopt(sock, sockopt::ReceiveTimeout, &TimeVal::seconds(2)).unwrap();
    send(sock.as_raw_fd(), &msg, MsgFlags::empty()).unwrap();
    let mut reply = [0_u8; 8192];
    let n = recv(sock.as_raw_fd(), &mut reply, MsgFlags::empty()).unwrap();
    assert!(n >= 20, "short netlink reply ({n} bytes)");
    let ty = u16::from_ne_bytes([reply[4], reply[5]]);
    if ty == NLMSG_ERROR {
        let err = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        return Err(nix::errno::Errno::from_raw(-err));
    }
    Ok(ty)
}

/// NFT_MSG_NEWGEN, the answer to GETGEN.
const NFT_NEWGEN: u16 = (10 << 8) | 15;

fn assert_is_netlink(sock: &OwnedFd) {
    let addr: NetlinkAddr = getsockname(sock.as_raw_fd()).expect("getsockname");
    assert_eq!(
        nix::sys::socket::SockaddrLike::family(&addr),
        Some(AddressFamily::Netlink)
    );
}

fn own_netns() -> NamespaceId {
    NamespaceId::of_path("/proc/self/ns/net").unwrap()
}

/// Shows the whole error chain, as the daemon would log it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn rootful_container_sockets_live_in_its_netns() {
    require_root();
    let container = Container::rootful();
    let ns = ContainerNamespace::open(container.pid).unwrap();
    assert!(
        ns.user().is_none(),
        "a rootful container shares our user namespace"
    );
    assert_eq!(ns.netns_id(), container.netns_id());
    assert_ne!(ns.netns_id(), own_netns());

    let started = Instant::now();
    let sockets = create_sockets(&HelperCommand::new(SHIELDD), &ns, &SocketRequest::attach())
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    println!(
        "rootful round trip (nftables + nflog + 4 DNS sockets): {:?}",
        started.elapsed()
    );

    assert_eq!(
        sockets.netns,
        container.netns_id(),
        "helper observed the container's netns"
    );
    assert_ne!(sockets.netns, own_netns());
    assert_is_netlink(&sockets.nftables);
    // The daemon's waits on the nf_tables socket rely on the timeout the helper gave it
    // (checked before `nft_getgen`, which sets one of its own).
    let timeout = nix::sys::socket::getsockopt(&sockets.nftables, sockopt::ReceiveTimeout)
        .expect("SO_RCVTIMEO");
    assert_eq!(
        Duration::from_micros(u64::try_from(timeout.num_microseconds()).unwrap()),
        shieldd::nft::REPLY_TIMEOUT
    );
    assert_eq!(nft_getgen(&sockets.nftables), Ok(NFT_NEWGEN));
    let nflog = sockets.nflog.as_ref().expect("nflog requested");
    assert_is_netlink(nflog);

    let addrs: Vec<SocketAddr> = sockets
        .dns
        .iter()
        .map(|l| l.udp.local_addr().unwrap())
        .collect();
    assert_eq!(addrs, SocketRequest::DNS_LOOPBACK);
    for listener in &sockets.dns {
        assert_eq!(listener.tcp.local_addr().unwrap(), listener.addr);
    }

    // A datagram sent to 127.0.0.1:53 from inside the container arrives on our UDP socket.
    let udp = &sockets.dns[0].udp;
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let status = Command::new("nsenter")
        .args(["-t", &container.pid.to_string(), "-n", "bash", "-c"])
        .arg("printf ping >/dev/udp/127.0.0.1/53")
        .status()
        .unwrap();
    assert!(status.success());
    let mut buf = [0_u8; 16];
    let (n, from) = udp
        .recv_from(&mut buf)
        .expect("datagram from inside the container");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from.ip(), Ipv4Addr::LOCALHOST);
}

#[test]
fn round_trip_timing() {
    require_root();
    let container = Container::rootful();
    let ns = ContainerNamespace::open(container.pid).unwrap();
    let helper = HelperCommand::new(SHIELDD);
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let started = Instant::now();
            let sockets = create_sockets(&helper, &ns, &SocketRequest::nftables_only()).unwrap();
            let elapsed = started.elapsed();
            drop(sockets);
            elapsed
        })
        .collect();
    times.sort();
    println!(
        "nftables-only round trip over 20 runs: min {:?}, median {:?}, max {:?}",
        times[0], times[10], times[19]
    );
    assert!(
        times[10] < Duration::from_millis(100),
        "helper round trip is unexpectedly slow"
    );
}

#[test]
fn rootless_owner_enters_user_namespace_and_gets_working_sockets() {
    require_root();
    let container = Container::rootless(OWNER_UID);
    let out = daemon_side_as(OWNER_UID, &format!("pid:{}", container.pid), None);
    let result = result_line(&out);
    println!("{result}");
    assert!(
        result.starts_with("RESULT ok"),
        "rootless attach failed: {result}"
    );
    assert!(result.contains(" user_namespace=entered"), "{result}");
    assert!(
        result.contains(&format!(" netns={}", container.netns_id().ino)),
        "{result}"
    );
    assert!(result.contains(" getgen=ok"), "{result}");
    assert!(result.contains(" dns=127.0.0.1:53,[::1]:53"), "{result}");
}

#[test]
fn root_daemon_attaches_to_a_rootless_container() {
    require_root();
    // Root is not the owner, but holds every capability over its descendant user namespaces.
    let container = Container::rootless(OWNER_UID);
    let ns = ContainerNamespace::open(container.pid).unwrap();
    assert!(
        ns.user().is_some(),
        "the container's netns is owned by its own user namespace"
    );
    let sockets = create_sockets(
        &HelperCommand::new(SHIELDD),
        &ns,
        &SocketRequest::nftables_only(),
    )
    .unwrap();
    assert_eq!(sockets.netns, container.netns_id());
    assert_eq!(nft_getgen(&sockets.nftables), Ok(NFT_NEWGEN));
}

#[test]
fn rootless_other_user_is_refused_at_open() {
    require_root();
    let container = Container::rootless(OWNER_UID);
    let out = daemon_side_as(OTHER_UID, &format!("pid:{}", container.pid), None);
    let result = result_line(&out);
    println!("{result}");
    assert_eq!(
        result,
        format!(
            "RESULT error permission denied opening the network namespace of process {} (is the \
             container another user's? a rootless daemon can only attach to its own user's \
             containers)",
            container.pid
        )
    );
}

#[test]
fn rootless_other_user_with_the_namespace_fd_is_refused_by_the_helper() {
    require_root();
    // Even holding the namespace fd (here: handed over as stdin), another uid cannot enter.
    let container = Container::rootless(OWNER_UID);
    let netns = File::open(format!("/proc/{}/ns/net", container.pid)).unwrap();
    let out = daemon_side_as(OTHER_UID, "stdin", Some(netns.into()));
    let result = result_line(&out);
    println!("{result}");
    assert!(
        result.starts_with(
            "RESULT error namespace helper failed: cannot enter the container's user namespace: \
             EPERM: Operation not permitted (only the user that owns"
        ),
        "{result}"
    );
}

/// Runs [`daemon_side`] in a copy of this test process as `uid`, and returns its output.
fn daemon_side_as(uid: u32, target: &str, stdin: Option<OwnedFd>) -> Output {
    let me = env::current_exe().unwrap();
    let mut command = setpriv(uid, me.to_str().unwrap());
    command
        .args([
            "--exact",
            "daemon_side",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, target)
        .current_dir("/")
        .stdin(stdin.map_or_else(Stdio::null, Stdio::from));
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "daemon side as uid {uid} crashed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn result_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // libtest prints `test daemon_side ... ` on the same line, before our output.
        .find_map(|line| line.find("RESULT ").map(|at| &line[at..]))
        .unwrap_or_else(|| {
            panic!(
                "no RESULT line from the daemon side:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

/// Not a test of its own: the unprivileged daemon side of the rootless tests, which re-execute
/// this binary with [`CHILD_ENV`] set. Without it, there is nothing to do.
#[test]
#[ignore = "run by the rootless tests as an unprivileged uid; does nothing on its own"]
fn daemon_side() {
    let Ok(target) = env::var(CHILD_ENV) else {
        return;
    };
    assert!(
        !Uid::effective().is_root(),
        "the daemon side must run unprivileged"
    );
    let ns = if let Some(pid) = target.strip_prefix("pid:") {
        ContainerNamespace::open(pid.parse().unwrap())
    } else {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        ContainerNamespace::from_netns_fd(fd, "stdin")
    };
    let started = Instant::now();
    let result = ns.and_then(|ns| {
        create_sockets(&HelperCommand::new(SHIELDD), &ns, &SocketRequest::attach()).map(|s| (ns, s))
    });
    let elapsed = started.elapsed();
    match result {
        Ok((ns, sockets)) => {
            assert_eq!(sockets.netns, ns.netns_id());
            let getgen = match nft_getgen(&sockets.nftables) {
                Ok(NFT_NEWGEN) => "ok".to_owned(),
                other => format!("{other:?}"),
            };
            let dns: Vec<String> = sockets.dns.iter().map(|l| l.addr.to_string()).collect();
            println!(
                "RESULT ok uid={} user_namespace={} netns={} getgen={getgen} dns={} \
                 round_trip={elapsed:?}",
                Uid::effective(),
                if ns.user().is_some() {
                    "entered"
                } else {
                    "own"
                },
                sockets.netns.ino,
                dns.join(",")
            );
        }
        Err(e) => println!("RESULT error {}", chain(&e)),
    }
    std::io::stdout().flush().unwrap();
}

#[test]
fn nonexistent_pid_is_reported_as_such() {
    require_root();
    let err = ContainerNamespace::open(u32::MAX).unwrap_err();
    assert!(
        matches!(err, NetnsError::NoSuchProcess { pid: u32::MAX }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "process 4294967295 does not exist (did the container exit?)"
    );
}

#[test]
fn files_that_are_not_network_namespaces_are_refused() {
    require_root();
    for path in ["/dev/null", "/proc/self/ns/uts"] {
        let fd = OwnedFd::from(File::open(path).unwrap());
        let err = ContainerNamespace::from_netns_fd(fd, path).unwrap_err();
        assert!(
            matches!(err, NetnsError::NotANetworkNamespace { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("{path} is not a network namespace")
        );
    }
}

/// Documents the race: the container exits after `open` but before `create_sockets`. The
/// pinned fd keeps the namespace alive, so creation still succeeds in that (now empty)
/// namespace; the sockets keep it alive until dropped (poststop).
#[test]
fn pinned_namespace_outlives_its_process() {
    require_root();
    let mut container = Container::rootful();
    let pid = container.pid;
    let expected = container.netns_id();
    let ns = ContainerNamespace::open(pid).unwrap();
    container.stop();
    assert!(
        !fs::exists(format!("/proc/{pid}")).unwrap(),
        "process {pid} still exists"
    );

    let sockets = create_sockets(
        &HelperCommand::new(SHIELDD),
        &ns,
        &SocketRequest::nftables_only(),
    )
    .unwrap();
    assert_eq!(sockets.netns, expected);
    assert_eq!(nft_getgen(&sockets.nftables), Ok(NFT_NEWGEN));
}

/// [`create_sockets`] with a helper that is a script this test has just written. Another test's
/// thread may fork while the script is open for writing; until that child execs it holds the
/// write descriptor, and executing the script fails with ETXTBSY. That is the test's own race,
/// not the daemon's, so the start is tried again.
fn run_script(
    helper: &HelperCommand,
    ns: &ContainerNamespace,
    request: &SocketRequest,
) -> Result<shieldd::netns::ContainerSockets, NetnsError> {
    let mut tries = 0;
    loop {
        match create_sockets(helper, ns, request) {
            Err(NetnsError::Spawn { source, .. })
                if source.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 50 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[test]
fn wrong_helper_binaries_give_clear_errors() {
    require_root();
    let container = Container::rootful();
    let ns = ContainerNamespace::open(container.pid).unwrap();
    let request = SocketRequest::nftables_only();

    let missing = HelperCommand::new("/nonexistent/shieldd");
    let err = create_sockets(&missing, &ns, &request).unwrap_err();
    assert!(matches!(err, NetnsError::HelperNotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "namespace helper /nonexistent/shieldd does not exist (is the daemon binary path right?)"
    );

    // Some other program: exits without answering.
    let not_shieldd = HelperCommand::new("/bin/true");
    let err = create_sockets(&not_shieldd, &ns, &request).unwrap_err();
    assert!(matches!(err, NetnsError::HelperDied { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "namespace helper /bin/true exited without answering (exit status: 0) (is it a shieldd \
         binary of the same version?)"
    );

    // A program that writes to stderr and fails: its stderr is part of the message.
    let dir = tempfile::tempdir().unwrap();
    let noisy = dir.path().join("noisy");
    fs::write(
        &noisy,
        "#!/bin/sh\necho \"unknown subcommand $1\" >&2\nexit 3\n",
    )
    .unwrap();
    fs::set_permissions(&noisy, fs::Permissions::from_mode(0o755)).unwrap();
    let err = run_script(&HelperCommand::new(&noisy), &ns, &request).unwrap_err();
    assert!(
        err.to_string()
            .contains("(exit status: 3): unknown subcommand nshelper (is it"),
        "{err}"
    );

    // A program that hangs: killed at the deadline, and reaped.
    let hang = dir.path().join("hang");
    fs::write(&hang, "#!/bin/sh\nexec sleep 30\n").unwrap();
    fs::set_permissions(&hang, fs::Permissions::from_mode(0o755)).unwrap();
    let helper = HelperCommand {
        exe: hang,
        timeout: Duration::from_millis(200),
    };
    let started = Instant::now();
    let err = run_script(&helper, &ns, &request).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timeout not enforced"
    );
    assert!(matches!(err, NetnsError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "namespace helper did not finish within 200ms and was killed"
    );
}

#[test]
fn helper_reports_bind_failures() {
    require_root();
    let container = Container::rootful();
    let ns = ContainerNamespace::open(container.pid).unwrap();
    let helper = HelperCommand::new(SHIELDD);
    let dns = SocketAddr::from((Ipv4Addr::LOCALHOST, 5353));
    let request = SocketRequest {
        nflog: false,
        dns: vec![dns],
    };
    let held = create_sockets(&helper, &ns, &request).unwrap();
    let err = create_sockets(&helper, &ns, &request).unwrap_err();
    assert!(matches!(err, NetnsError::Helper { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "namespace helper failed: cannot create the DNS UDP socket on 127.0.0.1:5353: \
         EADDRINUSE: Address already in use (is another DNS server listening in the container?)"
    );
    drop(held);
}

/// A namespace whose loopback is still down (no 127.0.0.1, no ::1 yet) can be attached: the DNS
/// sockets are bound with IP_FREEBIND and receive once `lo` comes up.
#[test]
fn dns_listeners_bind_before_loopback_is_up() {
    require_root();
    let mut child = Command::new("unshare")
        .args(["--net", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let own = own_netns();
    let deadline = Instant::now() + Duration::from_secs(5);
    while NamespaceId::of_path(format!("/proc/{pid}/ns/net")).is_ok_and(|id| id == own) {
        assert!(
            Instant::now() < deadline,
            "unshare never entered its namespace"
        );
        thread::sleep(Duration::from_millis(2));
    }
    let ns = ContainerNamespace::open(pid).unwrap();
    let request = SocketRequest {
        nflog: false,
        dns: SocketRequest::DNS_LOOPBACK.to_vec(),
    };
    let sockets = create_sockets(&HelperCommand::new(SHIELDD), &ns, &request).unwrap();
    let status = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "bash", "-c"])
        .arg("ip link set lo up && printf ping >/dev/udp/127.0.0.1/53")
        .status()
        .unwrap();
    assert!(status.success());
    let udp = &sockets.dns[0].udp;
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0_u8; 16];
    let (n, _) = udp.recv_from(&mut buf).expect("datagram after lo came up");
    assert_eq!(&buf[..n], b"ping");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn helper_run_by_hand_refuses() {
    require_root();
    let out = Command::new(SHIELDD)
        .arg("nshelper")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "shieldd nshelper: shieldd nshelper is internal: the daemon starts it with a socket on stdin\n"
    );
}

/// Signals arriving while the daemon waits for the helper's reply must not fail the attach:
/// a receive with `SO_RCVTIMEO` is never restarted by the kernel, so the daemon retries it.
#[test]
fn signals_during_the_exchange_do_not_fail_it() {
    use nix::sys::pthread::{pthread_kill, pthread_self};
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    extern "C" fn ignore(_: libc::c_int) {}

    require_root();
    let container = Container::rootful();
    let ns = ContainerNamespace::open(container.pid).unwrap();
    let helper = HelperCommand::new(SHIELDD);
    // A handler without SA_RESTART, as any signal handling in the daemon may install.
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    #[allow(unsafe_code, reason = "installing a no-op signal handler")]
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    let previous = unsafe { sigaction(Signal::SIGUSR2, &action) }.unwrap();

    let target = pthread_self();
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut sent = 0_u32;
            while !done.load(Ordering::Relaxed) {
                pthread_kill(target, Signal::SIGUSR2).unwrap();
                sent += 1;
                thread::sleep(Duration::from_micros(20));
            }
            sent
        })
    };
    let results: Vec<Result<(), NetnsError>> = (0..50)
        .map(|_| create_sockets(&helper, &ns, &SocketRequest::nftables_only()).map(drop))
        .collect();
    done.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    #[allow(unsafe_code, reason = "restoring the previous signal disposition")]
    // SAFETY: restores what was installed before this test.
    unsafe { sigaction(Signal::SIGUSR2, &previous) }.unwrap();

    assert!(sent > 100, "only {sent} signals were sent");
    for result in results {
        result.expect("an attach under a stream of signals");
    }
}
