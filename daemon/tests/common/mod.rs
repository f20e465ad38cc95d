//! Shared fixture of the netlink tests and the element benchmark: a fresh network namespace
//! held by a `sleep` process, a netfilter socket inside it, and `nft` run in it as an oracle.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test fixture: not every user needs every helper, and failures should panic"
)]

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
use nix::unistd::Uid;

/// Panics (never skips) when not root: these tests create namespaces and program nftables.
pub fn require_root() {
    assert!(
        Uid::effective().is_root(),
        "these tests need root (they create network namespaces and program nftables); \
         run them as root, e.g. in CI"
    );
}

/// A fresh network namespace, held by a `sleep` process that is killed on drop.
pub struct Netns {
    child: Child,
}

impl Netns {
    /// Makes the namespace and waits until its process has entered it.
    pub fn new() -> Self {
        require_root();
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare --net sleep 600");
        let ns = Self { child };
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(ns.path())
            .ok()
            .is_none_or(|theirs| theirs == ours)
        {
            assert!(
                Instant::now() < deadline,
                "unshare never entered a new netns"
            );
            thread::sleep(Duration::from_millis(2));
        }
        ns
    }

    /// `/proc/PID/ns/net` of the holding process.
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.child.id())
    }

    /// A NETLINK_NETFILTER socket created inside the namespace by a thread that then exits
    /// (test code only: in the daemon, a helper process does this).
    pub fn socket(&self) -> OwnedFd {
        let ns = File::open(self.path()).unwrap();
        thread::spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns into the test netns");
            socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::NetlinkNetFilter,
            )
            .expect("netlink socket")
        })
        .join()
        .unwrap()
    }

    /// Runs `nft ARGS` inside the namespace; panics on failure; returns stdout.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .arg("nft")
            .args(args)
            .output()
            .expect("run nsenter nft");
        assert!(
            out.status.success(),
            "nft {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
