//! The helper side: body of the hidden `shieldd nshelper` subcommand.
//!
//! [`create_sockets`](super::create_sockets) starts the daemon's own binary as `shieldd
//! nshelper` with one end of a socketpair on stdin. This process is single-threaded (`main`
//! dispatches here before anything can start a thread), which is what lets it `setns` into a
//! user namespace at all. It reads one request, enters the user namespace (if given) and then the
//! network namespace, creates the sockets, passes them back in one message and exits. Every
//! failure is reported over the socketpair as text saying what to check; stderr gets a copy, for
//! the case where the channel itself is broken.

use std::fmt::Display;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockProtocol, SockType, SockaddrStorage, bind, getsockopt,
    listen, setsockopt, socket, sockopt,
};

use super::namespace::NamespaceId;
use super::transport::{self, Received, RecvError};
use super::wire::{self, HelperReply, HelperRequest, PROTOCOL_VERSION, SocketKind};

/// Runs the `shieldd nshelper` subcommand and returns its exit code: 0 when the sockets were
/// passed back, 1 when an error was reported, 2 when not started by the daemon.
///
/// Must be called from `main` before any thread exists (before tokio, tracing writers, …):
/// the kernel refuses `setns(CLONE_NEWUSER)` in a multithreaded process. Never panics.
pub fn helper_main() -> ExitCode {
    let stdin = io::stdin();
    let channel = stdin.as_fd();
    if !is_seqpacket_socket(channel) {
        report_locally(&format!(
            "shieldd {} is internal: the daemon starts it with a socket on stdin",
            super::HELPER_SUBCOMMAND
        ));
        return ExitCode::from(2);
    }

    // A panic must still produce a reply, or the daemon would only see the channel close.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| serve(channel)));
    let (reply, sockets) = match outcome {
        Ok(Ok((netns, sockets))) => (
            HelperReply::Ready {
                netns,
                sockets: sockets.len(),
            },
            sockets,
        ),
        Ok(Err(message)) => (
            HelperReply::Failed {
                message: wire::truncate_message(message),
            },
            Vec::new(),
        ),
        Err(_) => (
            HelperReply::Failed {
                message: "the namespace helper panicked (a bug: its stderr has the details)"
                    .to_owned(),
            },
            Vec::new(),
        ),
    };

    let bytes = match wire::encode(&reply) {
        Ok(bytes) => bytes,
        Err(e) => {
            report_locally(&e);
            return ExitCode::FAILURE;
        }
    };
    let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(AsFd::as_fd).collect();
    if let Err(e) = transport::send(channel, &bytes, &fds) {
        report_locally(&format!("cannot send the reply to the daemon: {e}"));
        return ExitCode::FAILURE;
    }
    match reply {
        HelperReply::Ready { .. } => ExitCode::SUCCESS,
        HelperReply::Failed { message } => {
            report_locally(&message);
            ExitCode::FAILURE
        }
    }
}

/// Reads the request, enters the namespaces, creates the sockets.
fn serve(channel: BorrowedFd<'_>) -> Result<(NamespaceId, Vec<OwnedFd>), String> {
    let (data, mut fds) = match transport::recv(channel) {
        Ok(Received::Message { data, fds }) => (data, fds),
        Ok(Received::Closed) => {
            return Err("the daemon closed the channel without a request".into());
        }
        Err(RecvError::Truncated) => return Err("the request was too large".into()),
        Err(RecvError::Os(e)) => return Err(format!("cannot read the request: {e}")),
    };
    let request: HelperRequest = wire::decode(&data)?;
    if request.version != PROTOCOL_VERSION {
        return Err(format!(
            "request has protocol version {}, this helper speaks {PROTOCOL_VERSION} (was the shieldd \
             binary replaced while the daemon runs? restart the daemon)",
            request.version
        ));
    }
    if fds.len() != request.fd_count() {
        return Err(format!(
            "request came with {} namespace fds, expected {}",
            fds.len(),
            request.fd_count()
        ));
    }
    let plan = request.sockets.plan()?;

    // Once in the container's user namespace, its processes (root there) would pass ptrace
    // checks against us; non-dumpable keeps them out of our memory and /proc/PID/fd, where the
    // sockets are. (Same reason runc's nsexec does it.)
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot make the helper non-dumpable: {e}"))?;

    // fds are [netns, userns?] (wire::HelperRequest); the order of entry matters: the network
    // namespace only accepts us once we hold CAP_SYS_ADMIN in its owning user namespace.
    let user = if request.enter_user { fds.pop() } else { None };
    let netns = fds
        .pop()
        .ok_or("request came without a network namespace fd")?;
    if let Some(user) = user {
        setns(&user, CloneFlags::CLONE_NEWUSER).map_err(|e| match e {
            // A bare EINVAL here usually means a multithreaded process: say so when it is. (Only
            // on failure: reading /proc/self/status costs more than the rest of the helper.)
            Errno::EINVAL => multithreaded().unwrap_or_else(|| {
                failure(
                    "cannot enter the container's user namespace",
                    e,
                    "the helper must be single-threaded and not chrooted",
                )
            }),
            _ => failure("cannot enter the container's user namespace", e, match e {
                Errno::EPERM => {
                    "only the user that owns the container's user namespace (or root) may enter it: \
                     is the daemon running as the container's user?"
                }
                _ => "",
            }),
        })?;
    }
    setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|e| {
        failure("cannot enter the container's network namespace", e, match e {
            Errno::EPERM => {
                "the daemon lacks CAP_SYS_ADMIN over it: a rootless container can only be attached \
                 by a daemon running as its user"
            }
            _ => "",
        })
    })?;
    drop(netns);

    let observed = NamespaceId::of_path("/proc/self/ns/net")
        .map_err(|e| format!("cannot stat /proc/self/ns/net after entering: {e}"))?;
    let sockets = plan
        .iter()
        .map(|kind| create(*kind))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((observed, sockets))
}

/// Why setns(CLONE_NEWUSER) refuses this process, if it is because it has several threads
/// (the kernel only says EINVAL).
fn multithreaded() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    match thread_count(&status)? {
        1 => None,
        n => Some(format!(
            "the helper has {n} threads, but entering a user namespace needs a single-threaded \
             process (shieldd main must dispatch `{}` before starting any thread)",
            super::HELPER_SUBCOMMAND
        )),
    }
}

/// Creates one socket of the plan, in the current (container) network namespace.
fn create(kind: SocketKind) -> Result<OwnedFd, String> {
    match kind {
        SocketKind::Nftables | SocketKind::Nflog => {
            let fd = socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::NetlinkNetFilter,
            )
            .map_err(|e| {
                let hint = if e == Errno::EPROTONOSUPPORT {
                    "is nfnetlink built into the kernel?"
                } else {
                    ""
                };
                failure(&format!("cannot create {kind}"), e, hint)
            })?;
            if kind == SocketKind::Nftables {
                // Once here rather than before every operation: the daemon's waits on this
                // socket are bounded by it (see `nft::set_reply_timeout`).
                crate::nft::set_reply_timeout(fd.as_fd())
                    .map_err(|e| format!("cannot prepare {kind}: {e}"))?;
            }
            Ok(fd)
        }
        SocketKind::DnsUdp(addr) => {
            dns_socket(addr, SockType::Datagram).map_err(|e| bind_failure(kind, e))
        }
        SocketKind::DnsTcp(addr) => {
            dns_socket(addr, SockType::Stream).map_err(|e| bind_failure(kind, e))
        }
    }
}

/// A DNS socket bound to `addr` (and listening, for TCP).
///
/// `IP_FREEBIND` lets the bind succeed before the container's loopback is up (a fresh network
/// namespace has no 127.0.0.1 until `lo` goes up, and no ::1 without IPv6): the socket receives
/// as soon as the address exists. `SO_REUSEADDR` on TCP keeps a re-attach after a daemon restart
/// from being refused because of connections in TIME_WAIT.
fn dns_socket(addr: SocketAddr, kind: SockType) -> Result<OwnedFd, Errno> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if kind == SockType::Stream {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    if kind == SockType::Stream {
        listen(&fd, Backlog::new(128)?)?;
    }
    Ok(fd)
}

fn bind_failure(kind: SocketKind, e: Errno) -> String {
    let hint = match e {
        Errno::EADDRINUSE => "is another DNS server listening in the container?",
        Errno::EACCES => "a port below 1024 needs root in the container's user namespace",
        _ => "",
    };
    failure(&format!("cannot create {kind}"), e, hint)
}

/// `what: cause (hint)`, the shape of every helper error.
fn failure(what: &str, cause: impl Display, hint: &str) -> String {
    if hint.is_empty() {
        format!("{what}: {cause}")
    } else {
        format!("{what}: {cause} ({hint})")
    }
}

/// Whether `fd` is a `SOCK_SEQPACKET` socket, i.e. we were started by the daemon.
fn is_seqpacket_socket(fd: BorrowedFd<'_>) -> bool {
    getsockopt(&fd, sockopt::SockType).is_ok_and(|ty| ty == SockType::SeqPacket)
}

/// The `Threads:` field of `/proc/self/status`.
fn thread_count(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Last resort when the daemon cannot be told: stderr, which the daemon captures.
#[allow(
    clippy::print_stderr,
    reason = "the helper's stderr is captured by the daemon"
)]
fn report_locally(message: &str) {
    eprintln!("shieldd {}: {message}", super::HELPER_SUBCOMMAND);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_count_parses_proc_status() {
        let status = "Name:\tshieldd\nUmask:\t0022\nThreads:\t3\nSigQ:\t0/1\n";
        assert_eq!(thread_count(status), Some(3));
        assert_eq!(thread_count("Name:\tx\n"), None);
        assert_eq!(thread_count("Threads:\tmany\n"), None);
    }

    #[test]
    fn failure_text_has_hint_only_when_given() {
        assert_eq!(
            failure("cannot x", Errno::EPERM, ""),
            "cannot x: EPERM: Operation not permitted"
        );
        assert_eq!(
            failure("cannot x", "boom", "check y"),
            "cannot x: boom (check y)"
        );
    }
}
