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
    /// /run/shield/shieldd.sock as root].
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
    match daemon(Args::parse()) {
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

fn daemon(args: Args) -> anyhow::Result<()> {
    init_tracing();
    let dirs = shieldd::config::Dirs::from_env()?;
    let config = shieldd::config::Config::load(&dirs.config_file())?;
    let socket = match args.socket {
        Some(path) => std::path::absolute(path).context("cannot resolve --socket")?,
        None => shield_proto::paths::default_socket_path()
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
        let listener = shieldd::server::bind(&socket).await?;
        tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "shieldd listening");
        let options = shieldd::Options {
            config,
            dirs,
            socket,
            helper,
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

/// Logs to stderr; level from `SHIELD_LOG` (e.g. `info`, `shieldd=debug`), `info` by default.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHIELD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
