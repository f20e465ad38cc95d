//! Namespace entry: sockets that live inside a container's network namespace.
//!
//! This is step 3 of the attach path (DESIGN.md, "The attach path"). The daemon is a tokio
//! process, usually unprivileged: it can never `setns(CLONE_NEWUSER)` (the kernel refuses it in
//! any multithreaded process), and no tokio thread may change namespace (a pooled thread left in
//! a container's namespace would silently run later work there). So the daemon never enters a
//! namespace itself. Instead:
//!
//! 1. [`ContainerNamespace::open`] pins the container's network namespace by opening
//!    `/proc/PID/ns/net` while the hook guarantees the pid is live, and finds the user namespace
//!    that owns it (`NS_GET_USERNS`), unless that is the daemon's own (rootful).
//! 2. [`create_sockets`] re-executes the daemon binary as `shieldd nshelper` (see
//!    [`helper_main`]), a short-lived single-threaded process, and hands it both namespace fds
//!    over a `SOCK_SEQPACKET` socketpair on its stdin. The helper enters the user namespace, then
//!    the network namespace, creates the requested sockets, and passes them back with
//!    `SCM_RIGHTS` in one message.
//!
//! A socket keeps the namespace it was created in: the daemon programs nf_tables, reads NFLOG and
//! serves DNS for the container's whole life through these fds, without ever re-entering. The
//! owner of a user namespace holds every capability in it, so this works for a rootless daemon
//! on its own user's containers (and for nobody else: another uid gets `EPERM`).
//!
//! Layout: [`namespace`] (opening and identifying namespaces), [`wire`] (the pure request/reply
//! encoding and socket layout shared by both sides), `transport` (fd passing over the
//! socketpair), [`spawn`] (the daemon side), [`helper`] (the helper side).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub mod helper;
pub mod namespace;
pub mod pool;
pub mod spawn;
mod transport;
pub mod wire;

pub use helper::helper_main;
pub use namespace::{ContainerNamespace, NamespaceId};
pub use pool::HelperPool;
pub use spawn::{ExitingHelper, HelperCommand, IdleHelper, create_sockets};
pub use wire::{ContainerSockets, DnsListener, SocketRequest};

/// The subcommand (`argv[1]`) under which the daemon binary runs [`helper_main`].
pub const HELPER_SUBCOMMAND: &str = "nshelper";

/// Why a container's namespace could not be opened or its sockets created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// `/proc/PID` is gone (or the process is a zombie without namespaces).
    #[error("process {pid} does not exist (did the container exit?)")]
    NoSuchProcess {
        /// The container's pid, as given by the OCI state.
        pid: u32,
    },
    /// The kernel's ptrace access check refused `/proc/PID/ns/net`.
    #[error(
        "permission denied opening the network namespace of process {pid} (is the container \
         another user's? a rootless daemon can only attach to its own user's containers)"
    )]
    PermissionDenied {
        /// The container's pid.
        pid: u32,
    },
    /// The file is not an nsfs file of type network namespace.
    #[error("{what} is not a network namespace")]
    NotANetworkNamespace {
        /// What was opened, e.g. `/proc/1234/ns/net`.
        what: String,
    },
    /// Any other failure to open or inspect a namespace file.
    #[error("cannot open or inspect {what}")]
    Namespace {
        /// What was being opened or inspected.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `NS_GET_USERNS` failed: with `EPERM`, the owner lies outside the daemon's user namespace.
    #[error(
        "cannot get the user namespace that owns {what} (is the daemon itself running in a \
         nested user namespace that does not contain the container's?)"
    )]
    OwningUserNamespace {
        /// The network namespace file.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The [`SocketRequest`] cannot be served (caller bug).
    #[error("invalid socket request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// The helper executable does not exist.
    #[error("namespace helper {} does not exist (is the daemon binary path right?)", exe.display())]
    HelperNotFound {
        /// The path that was executed.
        exe: PathBuf,
    },
    /// The helper could not be started for another reason.
    #[error("cannot start the namespace helper {}", exe.display())]
    Spawn {
        /// The path that was executed.
        exe: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A local syscall on the daemon side of the socketpair failed.
    #[error("namespace helper channel: cannot {step}")]
    Channel {
        /// What the daemon was doing, e.g. `send the request`.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The helper ran and reported an error (its message says what to check).
    #[error("namespace helper failed: {message}")]
    Helper {
        /// The helper's message.
        message: String,
    },
    /// The helper exited (or closed the channel) without a reply.
    #[error(
        "namespace helper {} exited without answering ({status}){stderr} (is it a shieldd binary \
         of the same version?)",
        exe.display()
    )]
    HelperDied {
        /// The path that was executed.
        exe: PathBuf,
        /// Its exit status, as text.
        status: String,
        /// `": "` followed by the tail of its stderr, or empty.
        stderr: String,
    },
    /// The helper did not finish within [`HelperCommand::timeout`] and was killed.
    #[error("namespace helper did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The helper's reply was malformed (truncated, wrong fd count, undecodable).
    #[error("namespace helper protocol error: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The helper reports a network namespace other than the one it was handed.
    #[error("namespace helper entered network namespace {got}, expected {expected}")]
    WrongNamespace {
        /// The namespace the daemon opened.
        expected: NamespaceId,
        /// The namespace the helper observed after `setns`.
        got: NamespaceId,
    },
}
