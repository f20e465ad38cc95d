//! Connecting to `shieldd` over its Unix socket, shared by `shield-hook` and `shieldctl`.
//!
//! gRPC over a Unix socket needs a custom connector: the URI is a placeholder
//! (`http://localhost`, which is also the `:authority` the daemon's h2 server accepts) and the
//! connector opens the socket. The first stream is opened here, before tonic sees it, so that
//! the reason a connection fails (no socket file, permission, stale socket) reaches the caller as
//! a typed [`ConnectError`] instead of a string buried in a transport error chain.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::v1::shield_client::ShieldClient;

/// The largest answer a client takes. The daemon is trusted (the same uid), and an answer that
/// lists a container grows with its live changes (~2 MB for 100 000 allowed addresses): tonic's
/// default of 4 MiB would make `shieldctl ps` fail on such a container.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// Why [`connect`] failed. Every variant names the socket path it looked at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// There is no file at the socket path: the daemon is not running (or another path is meant).
    #[error("cannot reach shieldd at {}: no such file", .path.display())]
    NotFound {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket or a directory above it belongs to someone else.
    #[error("cannot reach shieldd at {}: permission denied", .path.display())]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket file exists but nobody listens on it: a stale socket, the daemon is gone.
    #[error("cannot reach shieldd at {}: connection refused", .path.display())]
    Refused {
        /// The socket path.
        path: PathBuf,
    },
    /// The connection (socket and HTTP/2 handshake) did not complete in time.
    #[error("no answer from shieldd at {} within {}", .path.display(), humantime::format_duration(*.timeout))]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The time allowed.
        timeout: Duration,
    },
    /// Any other error of `connect(2)` (path too long, not a directory, ...).
    #[error("cannot reach shieldd at {}", .path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What `connect(2)` said.
        #[source]
        source: io::Error,
    },
    /// The socket accepted the connection but no gRPC channel could be set up on it.
    #[error("cannot open a gRPC channel to shieldd at {}", .path.display())]
    Transport {
        /// The socket path.
        path: PathBuf,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
}

impl ConnectError {
    /// The socket path that was tried.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::PermissionDenied { path }
            | Self::Refused { path }
            | Self::Timeout { path, .. }
            | Self::Io { path, .. }
            | Self::Transport { path, .. } => path,
        }
    }

    /// True when no daemon is running at the path (no socket file, or a stale one).
    pub fn daemon_absent(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::Refused { .. })
    }

    /// What the user should check, as a short phrase to put after the error.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => {
                "is shieldd running? start it with 'shieldd &' or 'systemctl --user start shieldd.socket'"
            }
            Self::Refused { .. } => {
                "stale socket: shieldd is not running; start it with 'shieldd &' or 'systemctl --user start shieldd.socket'"
            }
            Self::PermissionDenied { .. } => {
                "the socket belongs to another user: use the daemon's user, or point --socket at your own daemon"
            }
            Self::Timeout { .. } => {
                "something accepted the connection but did not answer: check shieldd's log"
            }
            Self::Io { .. } => "check the socket path",
            Self::Transport { .. } => {
                "shieldd closed the connection: is this uid allowed to use the daemon? check shieldd's log"
            }
        }
    }

    fn from_io(path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => Self::NotFound { path },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { path },
            io::ErrorKind::ConnectionRefused => Self::Refused { path },
            _ => Self::Io { path, source },
        }
    }
}

/// Connects to the daemon's socket at `path`; `timeout` bounds the whole connection set-up.
///
/// The channel reconnects by itself (to the same path) if the daemon restarts later.
pub async fn connect(
    path: &Path,
    timeout: Duration,
) -> Result<ShieldClient<Channel>, ConnectError> {
    match tokio::time::timeout(timeout, connect_unbounded(path, timeout)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ConnectError::Timeout {
            path: path.to_path_buf(),
            timeout,
        }),
    }
}

async fn connect_unbounded(
    path: &Path,
    timeout: Duration,
) -> Result<ShieldClient<Channel>, ConnectError> {
    let transport = |source| ConnectError::Transport {
        path: path.to_path_buf(),
        source,
    };
    let first = UnixStream::connect(path)
        .await
        .map_err(|error| ConnectError::from_io(path, error))?;
    // The connector hands out the stream opened above once; later (re)connections open new ones.
    let first = Arc::new(Mutex::new(Some(first)));
    let socket = path.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let opened = first.lock().ok().and_then(|mut slot| slot.take());
        let socket = socket.clone();
        async move {
            let stream = match opened {
                Some(stream) => stream,
                None => UnixStream::connect(&socket).await?,
            };
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::try_from("http://localhost")
        .map_err(transport)?
        .connect_timeout(timeout)
        .connect_with_connector(connector)
        .await
        .map_err(transport)?;
    Ok(ShieldClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES))
}

/// True when `status` was made on this side (connection lost, reset, h2 error) rather than sent by
/// the daemon. A status the daemon sends carries no source error; a local one always does.
pub fn is_transport_error(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// True when `status` was made on this side because the request's own timeout
/// ([`tonic::Request::set_timeout`]) expired before the daemon answered.
pub fn is_deadline_expired(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn missing_socket_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.sock");
        let err = connect(&path, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, ConnectError::NotFound { .. }), "{err:?}");
        assert!(err.daemon_absent());
        assert_eq!(err.path(), path);
        assert_eq!(
            err.to_string(),
            format!("cannot reach shieldd at {}: no such file", path.display())
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stale_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = connect(&path, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
        assert!(err.daemon_absent());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn listener_connects_lazily_without_answer() {
        // A listener that never answers still completes connect(2) and the h2 preface; the
        // deadline of the call that follows is the caller's business.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mute.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let result = connect(&path, Duration::from_millis(300)).await;
        match result {
            Ok(_) | Err(ConnectError::Timeout { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn timeout_display_is_humane() {
        let err = ConnectError::Timeout {
            path: PathBuf::from("/run/x.sock"),
            timeout: Duration::from_millis(300),
        };
        assert_eq!(
            err.to_string(),
            "no answer from shieldd at /run/x.sock within 300ms"
        );
        assert!(!err.daemon_absent());
    }
}
