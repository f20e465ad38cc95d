//! The daemon side: start `shieldd nshelper`, hand it the namespaces, take the sockets back.
//!
//! Blocking (a process spawn and a few syscalls, ~1-2 ms): call [`create_sockets`] from
//! `spawn_blocking`. The calling thread never changes namespace; only the helper does. Every
//! path reaps the helper: a hung one is killed at the deadline.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
use nix::sys::time::TimeVal;

use super::namespace::ContainerNamespace;
use super::transport::{self, Received, RecvError};
use super::wire::{
    self, ContainerSockets, HelperReply, HelperRequest, PROTOCOL_VERSION, SocketRequest,
};
use super::{HELPER_SUBCOMMAND, NetnsError};

/// How to start the helper: the daemon's own executable, run as `EXE nshelper`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperCommand {
    /// The executable to run (a shieldd binary whose `main` dispatches `nshelper`).
    pub exe: PathBuf,
    /// Deadline for the whole exchange, from spawn to the helper's exit.
    pub timeout: Duration,
}

impl HelperCommand {
    /// Default deadline: generous against a ~1-2 ms round trip, short against the hook's.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Runs `exe` with the default deadline.
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        Self {
            exe: exe.into(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Runs the very binary of this process, via `/proc/self/exe`.
    ///
    /// Preferred over a path from `std::env::current_exe()`: if a package upgrade replaces
    /// shieldd on disk, a running daemon keeps starting helpers from its own (possibly deleted)
    /// image, so daemon and helper always speak the same protocol version.
    pub fn this_binary() -> Self {
        Self::new("/proc/self/exe")
    }
}

/// Creates the requested sockets inside `ns` by running a fresh helper (blocking).
///
/// On success the helper has verifiably entered `ns` (its observed netns is checked against
/// [`ContainerNamespace::netns_id`]) and exited 0.
pub fn create_sockets(
    helper: &HelperCommand,
    ns: &ContainerNamespace,
    request: &SocketRequest,
) -> Result<ContainerSockets, NetnsError> {
    let (sockets, exiting) = IdleHelper::spawn(helper)?.create_sockets(ns, request)?;
    exiting.reap()?;
    Ok(sockets)
}

/// A helper process that has started and waits for its one request.
///
/// Starting the helper (exec, dynamic linking, runtime start-up) is most of its cost; a helper
/// started ahead of time takes that off the attach path. It still serves exactly one request
/// and exits, and it exits by itself if the daemon goes away (its channel reads EOF).
#[derive(Debug)]
pub struct IdleHelper {
    channel: OwnedFd,
    process: HelperProcess,
}

impl IdleHelper {
    /// Starts a helper that waits for a request.
    pub fn spawn(helper: &HelperCommand) -> Result<Self, NetnsError> {
        // Both ends close-on-exec: ours must not leak into concurrently spawned helpers (or the
        // EOF that tells us a helper died would never come); theirs becomes the helper's stdin,
        // and dup2 onto fd 0 clears the flag there.
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| channel_error("create the socketpair", e))?;
        let process = HelperProcess::spawn(helper, theirs)?;
        Ok(Self {
            channel: ours,
            process,
        })
    }

    /// Sends the request and takes the sockets back (blocking). The deadline runs from now.
    ///
    /// The helper is still exiting when this returns: the sockets are already checked, so the
    /// caller may reap it later, off its critical path.
    pub fn create_sockets(
        self,
        ns: &ContainerNamespace,
        request: &SocketRequest,
    ) -> Result<(ContainerSockets, ExitingHelper), NetnsError> {
        let Self {
            channel: ours,
            mut process,
        } = self;
        let plan = request
            .plan()
            .map_err(|reason| NetnsError::InvalidRequest { reason })?;
        let deadline = Instant::now() + process.timeout;
        let message = HelperRequest {
            version: PROTOCOL_VERSION,
            enter_user: ns.user().is_some(),
            sockets: request.clone(),
        };
        let bytes = wire::encode(&message).map_err(|reason| NetnsError::Protocol { reason })?;
        let sockets = exchange(&ours, &mut process, deadline, ns, &bytes, &plan)?;
        Ok((sockets, ExitingHelper { process }))
    }
}

fn exchange(
    ours: &OwnedFd,
    process: &mut HelperProcess,
    deadline: Instant,
    ns: &ContainerNamespace,
    bytes: &[u8],
    plan: &[wire::SocketKind],
) -> Result<ContainerSockets, NetnsError> {
    let mut fds: Vec<BorrowedFd<'_>> = vec![ns.netns()];
    fds.extend(ns.user());
    if let Err(e) = send_retrying(ours, bytes, &fds) {
        // EPIPE/ECONNRESET: the helper is already gone, and its exit status says more.
        return Err(match e {
            Errno::EPIPE | Errno::ECONNRESET => process.died(deadline),
            e => channel_error("send the request", e),
        });
    }

    let (data, received) = match recv_until(ours, deadline) {
        Ok(Received::Message { data, fds }) => (data, fds),
        // ECONNRESET: the helper exited with our request still unread.
        Ok(Received::Closed) | Err(RecvError::Os(Errno::ECONNRESET)) => {
            return Err(process.died(deadline));
        }
        Err(RecvError::Os(Errno::EAGAIN)) => return Err(process.timed_out()),
        Err(RecvError::Os(e)) => return Err(channel_error("receive the reply", e)),
        Err(RecvError::Truncated) => {
            return Err(NetnsError::Protocol {
                reason: "the reply did not fit the buffers".into(),
            });
        }
    };

    let (observed, count) = match wire::decode::<HelperReply>(&data) {
        Ok(HelperReply::Ready { netns, sockets }) => (netns, sockets),
        Ok(HelperReply::Failed { message }) => {
            process.finish(deadline)?;
            return Err(NetnsError::Helper { message });
        }
        Err(reason) => return Err(NetnsError::Protocol { reason }),
    };
    if count != received.len() {
        return Err(NetnsError::Protocol {
            reason: format!(
                "the reply announces {count} sockets but carries {}",
                received.len()
            ),
        });
    }
    if observed != ns.netns_id() {
        return Err(NetnsError::WrongNamespace {
            expected: ns.netns_id(),
            got: observed,
        });
    }
    wire::assemble(plan, received, observed).map_err(|reason| NetnsError::Protocol { reason })
}

/// Sends the request, again when a signal interrupted the call before anything was sent.
fn send_retrying(ours: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
    loop {
        match transport::send(ours.as_fd(), bytes, fds) {
            Err(Errno::EINTR) => {}
            result => return result,
        }
    }
}

/// Receives the reply, waiting at most until `deadline`.
///
/// A receive with `SO_RCVTIMEO` set is never restarted by the kernel (`SA_RESTART` does not
/// apply, see signal(7)), so any signal handled by the daemon would otherwise fail the attach:
/// retry with the time that is left.
fn recv_until(ours: &OwnedFd, deadline: Instant) -> Result<Received, RecvError> {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(RecvError::Os(Errno::EAGAIN));
        }
        setsockopt(ours, sockopt::ReceiveTimeout, &timeval(remaining)).map_err(RecvError::Os)?;
        match transport::recv(ours.as_fd()) {
            Err(RecvError::Os(Errno::EINTR)) => {}
            result => return result,
        }
    }
}

/// A helper that has handed over its sockets and is exiting; [`Self::reap`] collects its status.
#[derive(Debug)]
pub struct ExitingHelper {
    process: HelperProcess,
}

impl ExitingHelper {
    /// Waits for the helper's exit (killing it at its deadline) and checks that it exited 0.
    pub fn reap(mut self) -> Result<(), NetnsError> {
        let deadline = Instant::now() + self.process.timeout;
        let status = self.process.finish(deadline)?;
        if status.success() {
            Ok(())
        } else {
            Err(NetnsError::Protocol {
                reason: format!("the helper sent its sockets but then exited with {status}"),
            })
        }
    }
}

/// A running helper; reaped on every path (killed first if still running when dropped).
#[derive(Debug)]
struct HelperProcess {
    child: Child,
    exe: PathBuf,
    timeout: Duration,
    reaped: bool,
}

impl HelperProcess {
    fn spawn(helper: &HelperCommand, stdin: OwnedFd) -> Result<Self, NetnsError> {
        // The Command owns the helper's end of the socketpair until it is dropped, so it stays a
        // temporary here: if we kept a copy, the helper's exit would never read as EOF.
        let child = Command::new(&helper.exe)
            .arg0(OsStr::new("shieldd"))
            .arg(HELPER_SUBCOMMAND)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // The helper reads nothing from its environment; do not hand it the daemon's.
            .env_clear()
            .spawn()
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => NetnsError::HelperNotFound {
                    exe: helper.exe.clone(),
                },
                _ => NetnsError::Spawn {
                    exe: helper.exe.clone(),
                    source,
                },
            })?;
        Ok(Self {
            child,
            exe: helper.exe.clone(),
            timeout: helper.timeout,
            reaped: false,
        })
    }

    /// Waits for the helper to exit, killing it at the deadline.
    fn finish(&mut self, deadline: Instant) -> Result<ExitStatus, NetnsError> {
        // The helper exits right after replying; poll briefly rather than block forever on a
        // hung one. Starts at 50 µs so the common case adds almost nothing.
        let mut pause = Duration::from_micros(50);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Ok(status);
                }
                Ok(None) => {}
                Err(e) => return Err(channel_error("wait for the helper", e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timed_out());
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// The error for a helper that closed the channel without a reply: its status and stderr.
    fn died(&mut self, deadline: Instant) -> NetnsError {
        let status = match self.finish(deadline) {
            Ok(status) => status.to_string(),
            Err(e) => return e,
        };
        let mut stderr = String::new();
        if let Some(pipe) = self.child.stderr.as_mut() {
            let mut bytes = Vec::new();
            // The helper has exited, so this reads to EOF at once; a read error only loses
            // detail.
            let _ = pipe
                .take(wire::MAX_ERROR_TEXT as u64)
                .read_to_end(&mut bytes);
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if !text.is_empty() {
                stderr = format!(": {text}");
            }
        }
        NetnsError::HelperDied {
            exe: self.exe.clone(),
            status,
            stderr,
        }
    }

    fn timed_out(&mut self) -> NetnsError {
        self.kill();
        NetnsError::Timeout {
            timeout: self.timeout,
        }
    }

    fn kill(&mut self) {
        if !self.reaped {
            // Errors mean it already exited; wait() reaps it either way.
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for HelperProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn channel_error(step: &'static str, source: impl Into<io::Error>) -> NetnsError {
    NetnsError::Channel {
        step,
        source: source.into(),
    }
}

/// `SO_RCVTIMEO` value for `remaining`; zero would mean "no timeout", so at least 1 µs.
fn timeval(remaining: Duration) -> TimeVal {
    let secs = libc::time_t::try_from(remaining.as_secs()).unwrap_or(libc::time_t::MAX);
    let micros = libc::suseconds_t::from(remaining.subsec_micros());
    if secs == 0 && micros == 0 {
        TimeVal::new(0, 1)
    } else {
        TimeVal::new(secs, micros)
    }
}
