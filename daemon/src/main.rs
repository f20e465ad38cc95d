//! `shieldd`: the daemon's entry point, a thin layer over the `shieldd` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

/// shield daemon: default-deny egress firewall for Podman containers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Socket to serve on [default: $XDG_RUNTIME_DIR/shield/shieldd.sock, or
    /// /run/shield/shieldd.sock as root]. Ignored when systemd passes the socket (socket
    /// activation).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

fn main() -> ExitCode {
    // The namespace helper must run before anything can start a thread: setns(CLONE_NEWUSER)
    // refuses multithreaded callers.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == shieldd::netns::HELPER_SUBCOMMAND)
    {
        return shieldd::netns::helper_main();
    }
    let args = Args::parse();
    // SAFETY: no thread has been started yet (the runtime is built later), and nothing has
    // opened a descriptor that could be mistaken for the passed one: this is the first thing the
    // daemon does after parsing its arguments.
    #[allow(unsafe_code, reason = "see take_activated_socket's safety contract")]
    let activated = unsafe { shieldd::activation::take_activated_socket() };
    shieldd::logging::init();
    match activated
        .map_err(anyhow::Error::from)
        .and_then(|activated| daemon(args, activated))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            #[allow(
                clippy::print_stderr,
                reason = "the daemon's last word, after logging is gone"
            )]
            {
                eprintln!("shieldd: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn daemon(
    args: Args,
    activated: Option<shieldd::activation::ActivatedSocket>,
) -> anyhow::Result<()> {
    let dirs = shieldd::config::Dirs::from_env()?;
    let config = shieldd::config::Config::load(&dirs.config_file())?;
    let socket = match (&activated, args.socket) {
        (Some(activated), requested) => {
            if requested.is_some() {
                tracing::warn!(socket = %activated.path.display(), "--socket ignored: serving the socket systemd passed");
            }
            activated.path.clone()
        }
        (None, Some(path)) => std::path::absolute(path).context("cannot resolve --socket")?,
        (None, None) => shield_proto::paths::default_socket_path()
            .context("XDG_RUNTIME_DIR is not set: set it or pass --socket PATH")?,
    };
    let helper = shieldd::netns::HelperCommand::this_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Handlers first: a SIGTERM that arrives as soon as the socket listens must still be a
        // clean shutdown, not the default action (death with the socket left behind).
        let shutdown = shutdown_signal()?;
        let (listener, socket_owner) = match activated {
            Some(activated) => (
                tokio::net::UnixListener::from_std(activated.listener)
                    .context("cannot serve the socket systemd passed")?,
                shieldd::SocketOwner::ServiceManager,
            ),
            None => (
                shieldd::server::bind(&socket).await?,
                shieldd::SocketOwner::Daemon,
            ),
        };
        tracing::info!(
            socket = %socket.display(),
            activated = socket_owner == shieldd::SocketOwner::ServiceManager,
            version = env!("CARGO_PKG_VERSION"),
            "shieldd listening"
        );
        let options = shieldd::Options {
            config,
            dirs,
            socket,
            socket_owner,
            helper,
            lifecycle: std::sync::Arc::new(shieldd::activation::SystemdNotify),
        };
        shieldd::run(options, listener, shutdown).await?;
        tracing::info!("shieldd stopped");
        anyhow::Ok(())
    })
}

/// Installs the SIGTERM and SIGINT handlers now; the returned future completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
    })
}
