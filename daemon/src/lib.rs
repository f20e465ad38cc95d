//! shieldd: the shield daemon.
//!
//! One user daemon programs a default-deny nftables ruleset into every shielded container's
//! network namespace, through a netlink socket created inside that namespace by a short-lived
//! helper process ([`netns`]), and serves the shield gRPC API on a Unix socket ([`server`]).
//!
//! The ruleset is built by a pure function ([`ruleset`]), encoded and read back over netlink
//! ([`nft`]), and verified before a container may start ([`attach`]).

pub mod attach;
pub mod config;
pub mod netns;
pub mod nft;
pub mod oci;
pub mod profiles;
pub mod registry;
pub mod ruleset;
pub mod server;
pub mod service;

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
    let service = service::ShieldService::new(
        options.config,
        profiles,
        options.helper,
        options.socket.clone(),
    );
    service.replenish_helpers();
    let served = server::serve(service, listener, peers, shutdown).await;
    if let Err(err) = std::fs::remove_file(&options.socket) {
        tracing::warn!(socket = %options.socket.display(), error = %err, "could not remove the socket");
    }
    served
}
