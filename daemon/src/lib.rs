//! shieldd: the shield daemon.
//!
//! One user daemon programs a default-deny nftables ruleset into every shielded container's
//! network namespace, through a netlink socket created inside that namespace by a short-lived
//! helper process ([`netns`]), and serves the shield gRPC API on a Unix socket ([`server`]).
//!
//! The ruleset is built by a pure function ([`ruleset`]), encoded and read back over netlink
//! ([`nft`]), and verified before a container may start ([`attach`]).

pub mod attach;
pub mod audit;
pub mod config;
pub mod containers;
pub mod dns;
pub mod intent;
pub mod learnt;
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

use tokio::net::UnixListener;

/// What the daemon runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Settings from `config.toml`.
    pub config: config::Config,
    /// Configuration and state directories.
    pub dirs: config::Dirs,
    /// The socket path `listener` is bound to (removed on shutdown).
    pub socket: PathBuf,
    /// How to start the namespace helper (normally this very binary).
    pub helper: netns::HelperCommand,
}

/// Serves the API on `listener` until `shutdown` completes, then removes the socket.
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
    let helpers = std::sync::Arc::new(netns::HelperPool::new(options.helper));
    let containers = std::sync::Arc::new(containers::Containers::new(
        options.config,
        profiles,
        store,
        helpers,
    ));
    // Containers that kept running while the daemon was down are re-attached and verified
    // before the first request is served.
    containers.restore().await;
    let service = service::ShieldService::new(containers, options.socket.clone());
    service.replenish_helpers();
    let served = server::serve(service, listener, peers, shutdown).await;
    if let Err(err) = std::fs::remove_file(&options.socket) {
        tracing::warn!(socket = %options.socket.display(), error = %err, "could not remove the socket");
    }
    served
}
