//! Network namespaces made by the test: [`NsProcess`] holds one, [`TestNet`] joins two.
//!
//! Namespaces are held by processes (a `sleep`), not by names under `/run/netns`: the pid is what
//! goes into the OCI state, killing the process frees the namespace (and the veth end in it), and
//! nothing is left behind in the host's namespace list. Every holder is killed on drop, also
//! when the test panics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::bins;
use crate::probe::{self, HeldConnection, Probe, Proto};

/// Who owns a namespace or runs a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Root in the initial user namespace (a rootful container, a rootful daemon).
    Root,
    /// An unprivileged user (a rootless container, a rootless daemon).
    User {
        /// Host uid.
        uid: u32,
        /// Host gid.
        gid: u32,
    },
}

/// Name of the unprivileged account the rootless tests run as, when it exists (`.ci/run` creates
/// it). Without it they use [`FALLBACK_UID`], which needs no passwd entry.
pub const TEST_USER: &str = "shieldtest";
/// Uid and gid of the rootless tests when [`TEST_USER`] does not exist.
pub const FALLBACK_UID: u32 = 64_200;

impl Owner {
    /// The unprivileged test user: [`TEST_USER`] if it exists, else uid/gid [`FALLBACK_UID`].
    pub fn test_user() -> Owner {
        match nix::unistd::User::from_name(TEST_USER) {
            Ok(Some(u)) => Owner::User {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            },
            _ => Owner::User {
                uid: FALLBACK_UID,
                gid: FALLBACK_UID,
            },
        }
    }

    /// Makes `cmd` run as this owner (for [`Owner::User`]: uid, gid, no supplementary groups).
    pub fn apply(&self, cmd: &mut Command) {
        if let Owner::User { uid, gid } = *self {
            // std clears the supplementary groups (setgroups(0)) when a uid is set.
            cmd.uid(uid).gid(gid);
        }
    }

    /// Gives `path` to this owner (no-op for root).
    pub fn chown(&self, path: &Path) {
        if let Owner::User { uid, gid } = *self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    /// The host uid.
    pub fn uid(&self) -> u32 {
        match *self {
            Owner::Root => 0,
            Owner::User { uid, .. } => uid,
        }
    }
}

fn own_netns_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .expect("stat /proc/self/ns/net")
        .ino()
}

/// A long-running `sleep` that holds a fresh network namespace.
///
/// Rootful: `unshare --net sleep` as root. Rootless: `unshare --user --map-root-user --net sleep`
/// run as the unprivileged user, so the namespace is owned by that user's user namespace, exactly
/// as rootless podman makes it. Killed (and reaped) on drop.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    owner: Owner,
}

impl NsProcess {
    /// Makes a fresh network namespace owned by `owner` and waits until the holder is in it.
    pub fn spawn(owner: Owner) -> NsProcess {
        let mut cmd = Command::new("unshare");
        match owner {
            Owner::Root => cmd.args(["--net", "--", "sleep", "3600"]),
            Owner::User { .. } => {
                cmd.args(["--user", "--map-root-user", "--net", "--", "sleep", "3600"])
            }
        };
        owner.apply(&mut cmd);
        cmd.current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn unshare");
        Self::wait_ready(child, owner, own_netns_inode())
    }

    /// Adds a second holder to the network namespace of `pid` (`nsenter --net sleep`, as root),
    /// so that the namespace outlives the process `pid`.
    pub fn join(pid: u32) -> NsProcess {
        let target = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .expect("stat target netns")
            .ino();
        let child = Command::new("nsenter")
            .args(["--target", &pid.to_string(), "--net", "--", "sleep", "3600"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter");
        let me = Self::wait_ready(child, Owner::Root, own_netns_inode());
        assert_eq!(me.netns_inode(), target, "joined the wrong namespace");
        me
    }

    fn wait_ready(mut child: Child, owner: Owner, host_inode: u64) -> NsProcess {
        let pid = child.id();
        crate::wait_for(
            "the namespace holder to start",
            Duration::from_secs(10),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "namespace holder exited ({status}) before it was ready: {}",
                        err.trim()
                    );
                }
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                let ino = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?.ino();
                (comm.trim() == "sleep" && ino != host_inode).then_some(())
            },
        );
        NsProcess { child, owner }
    }

    /// The holder's pid (in the initial pid namespace): what the OCI state calls `pid`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Who made the namespace.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// `/proc/PID/ns/net`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// Inode of the network namespace (identifies it).
    pub fn netns_inode(&self) -> u64 {
        std::fs::metadata(self.netns_path())
            .expect("stat netns")
            .ino()
    }

    /// A command that runs `program` inside this network namespace only (as root, no user
    /// namespace: root may enter any network namespace).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.pid().to_string(), "--net", "--"])
            .arg(program)
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ip -batch -` with `script` inside the namespace; panics on failure.
    pub fn ip_batch(&self, script: &str) {
        let mut child = self
            .command("ip")
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write ip script");
        let out = child.wait_with_output().expect("wait ip");
        assert!(
            out.status.success(),
            "ip -batch failed in netns of {}: {}\nscript:\n{script}",
            self.pid(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills and reaps the holder now (the namespace goes away unless something else holds it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The port of the TCP and UDP echo listeners in the peer namespace.
pub const ECHO_PORT: u16 = 7777;

static NEXT_INDEX: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair: a "container" (what shield protects) and a "peer"
/// (the outside world, with echo listeners).
///
/// Addressing, with `x` = [`TestNet::index`] (1..=250, different for each `TestNet` of a process;
/// the namespaces are private, so equal subnets in two tests never meet):
///
/// | where | interface | addresses |
/// |---|---|---|
/// | container | `eth0` | `10.200.x.2/24`, `fd00:200:x::2/64` |
/// | peer | `veth0` | A `10.200.x.1`, B `10.200.x.3`, `fd00:200:x::1`, `fd00:200:x::3` |
/// | peer | `veth0` | public `203.0.113.x/32`, `2001:db8:200:x::1/128` (routed on-link from the container) |
///
/// (`x` is written in hex in the IPv6 addresses, as [`Ipv6Addr`] segments are.)
///
/// TCP and UDP echo listeners run in the peer on [`ECHO_PORT`] of all six addresses. A, B and the
/// ULA addresses are private (RFC 1918, ULA), so a default-deny ruleset lets through exactly the
/// ones it allowlists, and mode `down` still refuses them; the two public ones (documentation
/// ranges, outside every private range) are what `down` lets through. IPv6 addresses are `nodad`, usable at once. Loopback is up on both sides, and the
/// container has its own echo listeners on `127.0.0.1` and `::1` (port [`ECHO_PORT`]).
#[derive(Debug)]
pub struct TestNet {
    index: u8,
    server: Child,
    loopback_server: Child,
    /// The "container": its pid goes into the OCI state.
    pub container: NsProcess,
    /// The peer namespace (always root-owned).
    pub peer: NsProcess,
}

impl TestNet {
    /// Makes both namespaces (the container's owned by `owner`), the veth pair, the addresses and
    /// the echo listeners.
    pub fn new(owner: Owner) -> TestNet {
        let n = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
        let index = u8::try_from(n % 250 + 1).expect("index fits");
        let container = NsProcess::spawn(owner);
        let peer = NsProcess::spawn(Owner::Root);
        wire(&container, &peer, index);
        let (server, loopback_server) = start_servers(&container, &peer, index);
        TestNet {
            index,
            server,
            loopback_server,
            container,
            peer,
        }
    }

    /// A container restart as podman does it: the container's process and its namespace are
    /// gone (the veth pair with them), then a fresh namespace, owned by the same owner, is wired
    /// to the same peer with the same addresses. Returns the old pid.
    ///
    /// Panics if the old namespace outlives its holder for 5 s (something else keeps it alive:
    /// a daemon that never released it, or an orphaned TCP socket still retransmitting into a
    /// drop rule; the peer's `veth0` would still exist).
    pub fn restart_container(&mut self) -> u32 {
        let old = self.pid();
        let owner = self.container.owner();
        let _ = self.loopback_server.kill();
        let _ = self.loopback_server.wait();
        let _ = self.server.kill();
        let _ = self.server.wait();
        self.container.kill();
        crate::wait_for(
            "the old container namespace (and the peer's veth0) to go away",
            Duration::from_secs(5),
            || {
                let out = self
                    .peer
                    .command("ip")
                    .args(["link", "show", "dev", "veth0"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("run ip link show");
                (!out.success()).then_some(())
            },
        );
        self.container = NsProcess::spawn(owner);
        wire(&self.container, &self.peer, self.index);
        let (server, loopback_server) = start_servers(&self.container, &self.peer, self.index);
        self.server = server;
        self.loopback_server = loopback_server;
        old
    }

    /// The `x` of the subnets.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The container's pid (for the OCI state).
    pub fn pid(&self) -> u32 {
        self.container.pid()
    }

    /// The container's own IPv4 address.
    pub fn container_v4(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 200, self.index, 2))
    }

    /// Peer address A (the one tests allowlist).
    pub fn peer_a(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 200, self.index, 1))
    }

    /// Peer address B (never allowlisted; private, so the private-range reject catches it).
    pub fn peer_b(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 200, self.index, 3))
    }

    /// The peer's IPv6 address that tests allowlist.
    pub fn peer_v6(&self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0x200,
            u16::from(self.index),
            0,
            0,
            0,
            0,
            1,
        ))
    }

    /// The peer's other IPv6 address (never allowlisted; ULA, private).
    pub fn peer_v6_b(&self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0x200,
            u16::from(self.index),
            0,
            0,
            0,
            0,
            3,
        ))
    }

    /// A peer address outside every private and special-purpose range (`203.0.113.x`, a
    /// documentation network, routed on-link from the container: it never leaves the two
    /// namespaces). Only an allowlist or a bypass mode (`down`) lets it through.
    pub fn peer_public_v4(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, self.index))
    }

    /// The IPv6 counterpart of [`TestNet::peer_public_v4`]: `2001:db8:200:x::1`.
    pub fn peer_public_v6(&self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x200,
            u16::from(self.index),
            0,
            0,
            0,
            1,
        ))
    }

    /// A /24 that holds [`TestNet::peer_public_v4`] and nothing else of the test's.
    pub fn public_net_v4(&self) -> String {
        "203.0.113.0/24".to_string()
    }

    /// A /64 that holds [`TestNet::peer_public_v6`].
    pub fn public_net_v6(&self) -> String {
        format!("2001:db8:200:{:x}::/64", self.index)
    }

    /// All four peer addresses.
    pub fn peer_addrs(&self) -> [IpAddr; 4] {
        [
            self.peer_a(),
            self.peer_b(),
            self.peer_v6(),
            self.peer_v6_b(),
        ]
    }

    /// Runs a probe from inside the container namespace to `addr`:[`ECHO_PORT`].
    pub fn probe(&self, proto: Proto, addr: IpAddr) -> Probe {
        probe::run(&self.container, proto, addr, ECHO_PORT)
    }

    /// Opens a long-lived TCP connection from the container to `addr`:[`ECHO_PORT`].
    pub fn hold(&self, addr: IpAddr) -> HeldConnection {
        probe::hold(&self.container, addr, ECHO_PORT)
    }

    /// Kills the container process but keeps its namespace alive with another holder (which
    /// then becomes [`TestNet::container`]); returns the dead pid. For "the netns vanished
    /// before the hook ran": the pid in the OCI state is gone, the namespace can still be
    /// inspected.
    pub fn kill_container_process(&mut self) -> u32 {
        let holder = NsProcess::join(self.container.pid());
        let mut old = std::mem::replace(&mut self.container, holder);
        let dead = old.pid();
        old.kill();
        dead
    }
}

/// Joins `container` and `peer` with a veth pair and gives both their addresses (see
/// [`TestNet`]).
fn wire(container: &NsProcess, peer: &NsProcess, x: u8) {
    // Created directly inside the two namespaces: no name ever exists in the host namespace,
    // so parallel tests cannot collide.
    let out = Command::new("ip")
        .args(["link", "add", "eth0", "netns", &container.pid().to_string()])
        .args([
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            &peer.pid().to_string(),
        ])
        .output()
        .expect("run ip link add");
    assert!(
        out.status.success(),
        "ip link add veth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    container.ip_batch(&format!(
        "link set lo up\n\
         link set eth0 up\n\
         addr add 10.200.{x}.2/24 dev eth0\n\
         addr add fd00:200:{x:x}::2/64 dev eth0 nodad\n\
         route add 203.0.113.{x}/32 dev eth0\n\
         route add 2001:db8:200:{x:x}::1/128 dev eth0\n"
    ));
    peer.ip_batch(&format!(
        "link set lo up\n\
         link set veth0 up\n\
         addr add 10.200.{x}.1/24 dev veth0\n\
         addr add 10.200.{x}.3/24 dev veth0\n\
         addr add fd00:200:{x:x}::1/64 dev veth0 nodad\n\
         addr add fd00:200:{x:x}::3/64 dev veth0 nodad\n\
         addr add 203.0.113.{x}/32 dev veth0\n\
         addr add 2001:db8:200:{x:x}::1/128 dev veth0 nodad\n"
    ));
}

/// The peer's echo listeners (all its addresses) and the container's loopback ones.
fn start_servers(container: &NsProcess, peer: &NsProcess, x: u8) -> (Child, Child) {
    let server = echo_server(
        peer,
        &[
            format!("10.200.{x}.1"),
            format!("10.200.{x}.3"),
            format!("fd00:200:{x:x}::1"),
            format!("fd00:200:{x:x}::3"),
            format!("203.0.113.{x}"),
            format!("2001:db8:200:{x:x}::1"),
        ],
    );
    let loopback_server = echo_server(container, &["127.0.0.1".into(), "::1".into()]);
    (server, loopback_server)
}

/// Starts `probe serve ECHO_PORT ADDRS…` inside the namespace of `ns` and waits for `ready`.
fn echo_server(ns: &NsProcess, addrs: &[String]) -> Child {
    let mut server = ns
        .command(bins::bin_dir().join(bins::PROBE))
        .arg("serve")
        .arg(ECHO_PORT.to_string())
        .args(addrs)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn probe serve (is the probe binary built?)");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read from probe serve");
    if line.trim() != "ready" {
        let _ = server.kill();
        let _ = server.wait();
        panic!(
            "echo listeners did not start in netns of {}: {line:?}",
            ns.pid()
        );
    }
    server
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = self.loopback_server.kill();
        let _ = self.loopback_server.wait();
        // `container` and `peer` kill themselves; the veth pair dies with its namespaces.
    }
}
