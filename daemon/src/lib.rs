//! shieldd: the shield daemon.
//!
//! One user daemon programs a default-deny nftables ruleset into every shielded container's
//! network namespace, through a netlink socket created inside that namespace by a short-lived
//! helper process ([`netns`]), and serves the shield gRPC API on a Unix socket ([`server`]).
//!
//! The ruleset is built by a pure function ([`ruleset`]), encoded and read back over netlink
//! ([`nft`]), and verified before a container may start ([`attach`]). Under systemd it takes its
//! socket from socket activation and reports readiness ([`activation`]), and logs to the journal
//! ([`logging`]).

pub mod activation;
pub mod attach;
pub mod audit;
pub mod config;
pub mod containers;
pub mod dns;
pub mod intent;
pub mod journal_sync;
pub mod learnt;
pub mod logging;
pub mod netns;
pub mod nft;
pub mod oci;
pub mod process;
pub mod profiles;
pub mod resolve;
pub mod ruleset;
pub mod server;
pub mod service;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UnixListener;

/// What the daemon runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Settings from `config.toml`.
    pub config: config::Config,
    /// Configuration and state directories.
    pub dirs: config::Dirs,
    /// The socket path `listener` is bound to.
    pub socket: PathBuf,
    /// Who created the socket, and so removes it.
    pub socket_owner: SocketOwner,
    /// How to start the namespace helper (normally this very binary).
    pub helper: netns::HelperCommand,
    /// Whom to tell that the daemon is ready, and that it is stopping.
    pub lifecycle: Arc<dyn activation::Lifecycle>,
}

/// Who created the daemon's socket file, and so removes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketOwner {
    /// The daemon bound it ([`server::bind`]) and removes it on shutdown.
    Daemon,
    /// The service manager passed it (socket activation): it stays, for the service manager to
    /// keep listening on and to start the daemon again on the next connection.
    ServiceManager,
}

/// Re-attaches the containers that kept running, tells `options.lifecycle` that the daemon is
/// ready, and serves the API on `listener` until `shutdown` completes (telling the lifecycle it
/// is stopping); then removes the socket if the daemon owns it.
pub async fn run(
    options: Options,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), server::ServerError> {
    let peers = server::PeerPolicy {
        uid: nix::unistd::geteuid().as_raw(),
        allow_root: options.config.allow_root,
    };
    let profiles = profiles::ProfileStore::new(options.dirs.profiles());
    let store = store::Store::open(&options.dirs.state).map_err(server::ServerError::State)?;
    let helpers = Arc::new(netns::HelperPool::new(options.helper));
    let containers = Arc::new(
        containers::Containers::new(options.config, profiles, store, helpers)
            .map_err(server::ServerError::DnsThreads)?,
    );
    // Containers that kept running while the daemon was down are re-attached and verified
    // before the first request is served.
    containers.restore().await;
    let service = service::ShieldService::new(containers, options.socket.clone());
    service.replenish_helpers();
    // The listener already queues connections; from here on they are answered.
    options.lifecycle.ready();
    let lifecycle = Arc::clone(&options.lifecycle);
    let shutdown = async move {
        shutdown.await;
        lifecycle.stopping();
    };
    let served = server::serve(service, listener, peers, shutdown).await;
    if options.socket_owner == SocketOwner::Daemon
        && let Err(err) = std::fs::remove_file(&options.socket)
    {
        tracing::warn!(socket = %options.socket.display(), error = %err, "could not remove the socket");
    }
    served
}
