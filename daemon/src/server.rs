//! The daemon's Unix socket: binding it safely, refusing other uids, serving the API on it.

use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use shield_proto::v1::shield_server::ShieldServer;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

use crate::service::ShieldService;

/// Largest request the daemon decodes; the API's requests are small, so anything bigger is abuse.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket directory cannot be created or secured.
    #[error("cannot prepare socket directory {}", .path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The socket directory belongs to another user: someone could swap the socket.
    #[error("socket directory {} is owned by uid {owner}, not by this user ({uid}); remove it or choose another --socket", .path.display())]
    DirectoryOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's uid.
        uid: u32,
    },
    /// Another daemon answers on the socket.
    #[error("another shieldd is already listening on {}", .0.display())]
    InUse(PathBuf),
    /// Binding the socket failed.
    #[error("cannot bind {}", .path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded API descriptor is unusable (a build defect).
    #[error("cannot serve gRPC reflection")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The state directory cannot be opened.
    #[error("cannot open the state directory")]
    State(#[source] crate::store::StoreError),
    /// The threads that serve the containers' DNS cannot be started.
    #[error("cannot start the DNS threads")]
    DnsThreads(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// Binds the daemon's socket at `path`: directory 0700 owned by us, socket 0600, a stale socket
/// from a dead daemon replaced, a live one left alone.
pub async fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let uid = nix::unistd::geteuid().as_raw();
    if let Some(dir) = path.parent() {
        secure_directory(dir, uid)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        // Nobody answers: the socket file is left over from a daemon that died.
        std::fs::remove_file(path).map_err(|source| ServerError::Bind {
            path: path.to_owned(),
            source,
        })?;
    }
    let listener = bind_private(path).map_err(|source| ServerError::Bind {
        path: path.to_owned(),
        source,
    })?;
    Ok(listener)
}

/// Binds a listening socket whose file is mode 0600 from the moment it exists.
///
/// Linux creates the socket file with the mode of the socket's inode (less the umask), so
/// `fchmod` before `bind` leaves no moment at which the file has a wider mode — without
/// touching the process-wide umask.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
    listen(&fd, Backlog::MAXCONN)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

fn secure_directory(dir: &Path, uid: u32) -> Result<(), ServerError> {
    let io_error = |source| ServerError::Directory {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_error)?;
    let metadata = std::fs::metadata(dir).map_err(io_error)?;
    if metadata.uid() != uid {
        return Err(ServerError::DirectoryOwner {
            path: dir.to_owned(),
            owner: metadata.uid(),
            uid,
        });
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_error)
}

/// Which peers may talk to the daemon.
#[derive(Clone, Copy, Debug)]
pub struct PeerPolicy {
    /// The daemon's own uid: always allowed.
    pub uid: u32,
    /// Whether uid 0 is allowed too.
    pub allow_root: bool,
}

impl PeerPolicy {
    fn admits(self, peer_uid: u32) -> bool {
        peer_uid == self.uid || (self.allow_root && peer_uid == 0)
    }
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    service: ShieldService,
    listener: UnixListener,
    peers: PeerPolicy,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let incoming = UnixListenerStream::new(listener).filter(move |stream| match stream {
        Ok(stream) => admit(stream, peers),
        // Accept errors (e.g. EMFILE) are passed on; tonic logs them and keeps accepting.
        Err(_) => true,
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ShieldServer<ShieldService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shield_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServerError::Reflection)?;
    let shield = ShieldServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);

    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(shield)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(ServerError::Serve)
}

/// Checks the peer's uid (SO_PEERCRED) before a single byte of the request is read.
fn admit(stream: &UnixStream, peers: PeerPolicy) -> bool {
    match stream.peer_cred() {
        Ok(cred) if peers.admits(cred.uid()) => true,
        Ok(cred) => {
            tracing::warn!(
                peer_uid = cred.uid(),
                peer_pid = cred.pid(),
                daemon_uid = peers.uid,
                "refused a connection from another uid"
            );
            false
        }
        Err(err) => {
            tracing::warn!(error = %err, "refused a connection whose credentials cannot be read");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_policy() {
        let own = PeerPolicy {
            uid: 1000,
            allow_root: false,
        };
        assert!(own.admits(1000));
        assert!(!own.admits(0));
        assert!(!own.admits(1001));
        let with_root = PeerPolicy {
            uid: 1000,
            allow_root: true,
        };
        assert!(with_root.admits(0));
        assert!(!with_root.admits(1001));
    }
}
