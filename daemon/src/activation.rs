//! systemd integration: the API socket passed by socket activation (`LISTEN_PID`/`LISTEN_FDS`,
//! see `sd_listen_fds(3)`) and the readiness protocol of `Type=notify` services (`sd_notify(3)`).
//!
//! Both are optional: a daemon started by hand binds its own socket and tells nobody.

use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::sys::socket::{AddressFamily, SockType, SockaddrLike as _, SockaddrStorage};

/// The variables of the socket activation protocol; all are removed once read, so that no child
/// process mistakes them for its own.
const LISTEN_VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// The first passed descriptor (`SD_LISTEN_FDS_START`): the only one shieldd takes.
pub const FIRST_LISTEN_FD: RawFd = 3;

/// Why the daemon cannot use what the service manager passed.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A protocol variable is not a decimal number.
    #[error("socket activation: {name}={value:?} is not a number")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// Not exactly one descriptor was passed.
    #[error(
        "socket activation: LISTEN_FDS={0}, but shieldd serves exactly one socket; \
         give its .socket unit exactly one ListenStream="
    )]
    SocketCount(u32),
    /// The descriptor cannot be taken (e.g. it is not open).
    #[error("socket activation: cannot take fd {FIRST_LISTEN_FD}")]
    Take(#[source] std::io::Error),
    /// The descriptor cannot be inspected, e.g. because it is not a socket at all.
    #[error("socket activation: fd {FIRST_LISTEN_FD} is not a usable socket")]
    Inspect(#[source] nix::errno::Errno),
    /// The descriptor is a socket, but not one the API can be served on.
    #[error(
        "socket activation: fd {FIRST_LISTEN_FD} is {0}, not a listening AF_UNIX stream socket \
         bound to a path; the .socket unit must say ListenStream=/absolute/path"
    )]
    WrongSocket(&'static str),
}

/// What the socket activation variables ask of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenRequest {
    /// Nothing was passed, or it was passed to another process (`LISTEN_PID` is not ours, e.g.
    /// a wrapper's): the daemon binds its own socket.
    NotActivated,
    /// One socket was passed to this process, at [`FIRST_LISTEN_FD`].
    OneSocket,
}

/// Decides, from the values of `LISTEN_PID` and `LISTEN_FDS`, whether this process (`own_pid`)
/// was passed its socket, with the rules of `sd_listen_fds(3)`: both must be set and the pid must
/// be ours. Then exactly one descriptor is acceptable.
pub fn listen_request(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    own_pid: u32,
) -> Result<ListenRequest, ActivationError> {
    let (Some(listen_pid), Some(listen_fds)) = (listen_pid, listen_fds) else {
        return Ok(ListenRequest::NotActivated);
    };
    if number("LISTEN_PID", listen_pid)? != own_pid {
        return Ok(ListenRequest::NotActivated);
    }
    match number("LISTEN_FDS", listen_fds)? {
        1 => Ok(ListenRequest::OneSocket),
        count => Err(ActivationError::SocketCount(count)),
    }
}

fn number(name: &'static str, value: &str) -> Result<u32, ActivationError> {
    value.parse().map_err(|_| ActivationError::NotANumber {
        name,
        value: value.to_owned(),
    })
}

/// The listening socket the service manager passed, and the path it is bound to.
#[derive(Debug)]
pub struct ActivatedSocket {
    /// The socket, non-blocking and close-on-exec.
    pub listener: UnixListener,
    /// Where it is bound (what clients connect to, and what `GetStatus` reports).
    pub path: PathBuf,
}

/// Takes the socket passed by socket activation, if it was passed to this process, and removes
/// the `LISTEN_*` variables in every case.
///
/// # Safety
///
/// Must be called before the process starts any thread (it changes the environment), and before
/// anything else may have claimed descriptor 3 (when the variables name this process, descriptor
/// 3 belongs to them, and this function takes ownership of it).
#[allow(
    unsafe_code,
    reason = "removing environment variables and adopting an inherited descriptor are unsafe"
)]
pub unsafe fn take_activated_socket() -> Result<Option<ActivatedSocket>, ActivationError> {
    let read = |name| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned());
    let request = listen_request(
        read("LISTEN_PID").as_deref(),
        read("LISTEN_FDS").as_deref(),
        std::process::id(),
    );
    // Marks fd 3 close-on-exec (the namespace helpers must not inherit it), and fails if it is
    // not open; asked only when the variables name this process.
    let passed = match request {
        Ok(ListenRequest::OneSocket) => Some(sd_notify::listen_fds()),
        _ => None,
    };
    for name in LISTEN_VARIABLES {
        // SAFETY: the caller guarantees that no other thread exists, so nothing reads the
        // environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    let Some(passed) = passed else {
        return request.map(|_| None);
    };
    let fds: Vec<RawFd> = passed.map_err(ActivationError::Take)?.collect();
    if fds != [FIRST_LISTEN_FD] {
        // listen_request has checked the same variables; this guards against a disagreement.
        return Err(ActivationError::SocketCount(
            u32::try_from(fds.len()).unwrap_or(u32::MAX),
        ));
    }
    // SAFETY: the service manager passed descriptor 3 to this very process (LISTEN_PID), it is
    // open (listen_fds could set its flags), and the caller guarantees that nothing else in the
    // process has claimed it; from here on this OwnedFd is its only owner.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(FIRST_LISTEN_FD) };
    listener_from_fd(fd).map(Some)
}

/// Checks that `fd` (the passed descriptor) is a listening AF_UNIX stream socket bound to a
/// path, and makes it non-blocking (as tokio requires); the socket is closed if it does not
/// qualify.
fn listener_from_fd(fd: OwnedFd) -> Result<ActivatedSocket, ActivationError> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt};
    let kind = getsockopt(&fd, sockopt::SockType).map_err(ActivationError::Inspect)?;
    let address =
        getsockname::<SockaddrStorage>(fd.as_raw_fd()).map_err(ActivationError::Inspect)?;
    if address.family() != Some(AddressFamily::Unix) {
        return Err(ActivationError::WrongSocket("not an AF_UNIX socket"));
    }
    if kind != SockType::Stream {
        return Err(ActivationError::WrongSocket("not a stream socket"));
    }
    if !getsockopt(&fd, sockopt::AcceptConn).map_err(ActivationError::Inspect)? {
        return Err(ActivationError::WrongSocket("not listening"));
    }
    let path = address
        .as_unix_addr()
        .and_then(|unix| unix.path())
        .map(std::path::Path::to_path_buf)
        .ok_or(ActivationError::WrongSocket(
            "an abstract or unnamed AF_UNIX socket",
        ))?;
    let listener = UnixListener::from(fd);
    listener
        .set_nonblocking(true)
        .map_err(ActivationError::Take)?;
    Ok(ActivatedSocket { listener, path })
}

/// Whom the daemon tells that it has started serving and that it is stopping.
pub trait Lifecycle: std::fmt::Debug + Send + Sync {
    /// Startup is complete: the containers that kept running are re-attached and requests are
    /// about to be served.
    fn ready(&self);
    /// Shutdown has begun: no new requests are served, in-flight ones are finished.
    fn stopping(&self);
}

/// Tells nobody: a daemon started by hand, or in tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unsupervised;

impl Lifecycle for Unsupervised {
    fn ready(&self) {}
    fn stopping(&self) {}
}

/// Tells systemd, through `$NOTIFY_SOCKET` (`READY=1`, `STOPPING=1`); does nothing when the
/// variable is unset, i.e. when not run as a `Type=notify` service.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemdNotify;

impl SystemdNotify {
    fn send(state: sd_notify::NotifyState<'_>) {
        if let Err(err) = sd_notify::notify(std::slice::from_ref(&state)) {
            // The daemon works without it; systemd will time the start out, which says more.
            tracing::warn!(state = %state, error = %err, "cannot notify the service manager");
        }
    }
}

impl Lifecycle for SystemdNotify {
    fn ready(&self) {
        Self::send(sd_notify::NotifyState::Ready);
    }

    fn stopping(&self) {
        Self::send(sd_notify::NotifyState::Stopping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_activated_without_both_variables() {
        for (pid, fds) in [(None, None), (Some("7"), None), (None, Some("1"))] {
            assert_eq!(
                listen_request(pid, fds, 7).unwrap(),
                ListenRequest::NotActivated
            );
        }
    }

    #[test]
    fn variables_meant_for_another_process_are_ignored() {
        assert_eq!(
            listen_request(Some("8"), Some("1"), 7).unwrap(),
            ListenRequest::NotActivated
        );
        // Even a count shieldd could not serve: it is not ours to judge.
        assert_eq!(
            listen_request(Some("8"), Some("2"), 7).unwrap(),
            ListenRequest::NotActivated
        );
    }

    #[test]
    fn one_socket_for_this_process() {
        assert_eq!(
            listen_request(Some("7"), Some("1"), 7).unwrap(),
            ListenRequest::OneSocket
        );
    }

    #[test]
    fn any_other_count_is_an_error() {
        for count in ["0", "2", "17"] {
            let err = listen_request(Some("7"), Some(count), 7).unwrap_err();
            assert!(
                matches!(err, ActivationError::SocketCount(n) if n.to_string() == count),
                "{err:?}"
            );
            assert!(err.to_string().contains("exactly one socket"), "{err}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let err = listen_request(Some("seven"), Some("1"), 7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "socket activation: LISTEN_PID=\"seven\" is not a number"
        );
        let err = listen_request(Some("7"), Some("-1"), 7).unwrap_err();
        assert!(
            matches!(
                err,
                ActivationError::NotANumber {
                    name: "LISTEN_FDS",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_listening_unix_stream_socket_is_taken_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let socket = listener_from_fd(OwnedFd::from(listener)).unwrap();
        assert_eq!(socket.path, path);
        // Non-blocking, as tokio requires: accept with nobody waiting returns at once.
        let err = socket.listener.accept().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }

    fn wrong_socket(fd: OwnedFd) -> &'static str {
        match listener_from_fd(fd) {
            Err(ActivationError::WrongSocket(what)) => what,
            other => panic!("expected WrongSocket, got {other:?}"),
        }
    }

    #[test]
    fn a_datagram_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind(dir.path().join("d")).unwrap();
        assert_eq!(wrong_socket(socket.into()), "not a stream socket");
    }

    #[test]
    fn a_bound_but_not_listening_socket_is_refused() {
        use nix::sys::socket::{SockFlag, UnixAddr, bind, socket};
        let dir = tempfile::tempdir().unwrap();
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(
            fd.as_raw_fd(),
            &UnixAddr::new(&dir.path().join("b")).unwrap(),
        )
        .unwrap();
        assert_eq!(wrong_socket(fd), "not listening");
    }

    #[test]
    fn a_tcp_listener_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(wrong_socket(listener.into()), "not an AF_UNIX socket");
    }

    #[test]
    fn an_abstract_socket_is_refused() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("shieldd-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        assert_eq!(
            wrong_socket(listener.into()),
            "an abstract or unnamed AF_UNIX socket"
        );
    }

    #[test]
    fn a_file_is_not_a_socket() {
        let file = tempfile::tempfile().unwrap();
        let err = listener_from_fd(file.into()).unwrap_err();
        assert!(
            matches!(err, ActivationError::Inspect(nix::errno::Errno::ENOTSOCK)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "socket activation: fd 3 is not a usable socket"
        );
    }
}
