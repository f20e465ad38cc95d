//! Runs a parsed command against the daemon and hands the result to [`Output`].
//!
//! One function per command; the podman commands are in [`crate::integration`]. The daemon
//! connection is opened on first use ([`Session`]), so commands that need no daemon (`setup`,
//! `prepare`) never try to reach it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shield_proto::client;
use shield_proto::v1::{self, shield_client::ShieldClient};
use tonic::transport::Channel;

use crate::cli::{ChangeArgs, Cli, Command, ForgetArgs, LogsArgs, ModeArg, PreviewArgs};
use crate::error::CtlError;
use crate::integration;
use crate::output::{self, Format, Output};
use crate::view::{
    ChangeAction, ChangeView, ContainerList, ContainerView, DnsView, ForgetView, LogEventView,
    ModeChangeView, ModeView, PreviewView, ProfileList, ProfileView, RulesView, StateReport,
    StatusView,
};

/// Time allowed to connect to the daemon.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for one unary call, and for a `logs` stream without `--follow` (a followed
/// stream has none).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cli`, writing results to `out`.
pub async fn run<W: Write>(cli: &Cli, out: &mut Output<W>) -> Result<(), CtlError> {
    let socket = socket_path(cli.socket.as_deref());
    if let Command::Doctor(args) = &cli.command {
        // doctor reports a missing socket path as a finding instead of failing on it.
        return integration::doctor(socket, args, out).await;
    }
    let socket = socket?;
    let mut session = Session::new(socket.clone());
    match &cli.command {
        Command::Status => status(&mut session, out).await,
        Command::Ps => ps(&mut session, out).await,
        Command::Rules { container } => rules(&mut session, out, container).await,
        Command::Preview(args) => preview(&mut session, out, args).await,
        Command::Profiles => profiles(&mut session, out).await,
        Command::Show { container } => show(&mut session, out, container).await,
        Command::Allow(args) => change(&mut session, out, ChangeAction::Allow, args).await,
        Command::Deny(args) => change(&mut session, out, ChangeAction::Deny, args).await,
        Command::Up { container } => set_mode(&mut session, out, container, ModeArg::Up).await,
        Command::Down(args) => set_mode(&mut session, out, &args.container, args.mode()).await,
        Command::Block { container } => {
            set_mode(&mut session, out, container, ModeArg::Block).await
        }
        Command::State { container } => state(&mut session, out, container).await,
        Command::Logs(args) => logs(&mut session, out, args).await,
        Command::Dns { container } => dns(&mut session, out, container).await,
        Command::Forget(args) => forget(&mut session, out, args).await,
        Command::Setup(args) => integration::setup(&socket, args, out),
        Command::Prepare(args) => integration::prepare(&socket, args, out),
        Command::Run(args) => integration::run(&mut session, &socket, args).await,
        Command::Doctor(args) => integration::doctor(Ok(socket), args, out).await,
    }
}

/// The socket to use: `--socket` / `SHIELD_SOCKET` (clap folds the two), else the default.
pub fn socket_path(given: Option<&Path>) -> Result<PathBuf, CtlError> {
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => shield_proto::paths::default_socket_path().ok_or(CtlError::NoSocketPath),
    }
}

/// The daemon's socket and, once used, the connection to it.
#[derive(Debug)]
pub struct Session {
    socket: PathBuf,
    client: Option<ShieldClient<Channel>>,
}

impl Session {
    /// A session for the daemon at `socket`; nothing is connected yet.
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            client: None,
        }
    }

    /// The connection, opened on first use.
    pub async fn client(&mut self) -> Result<ShieldClient<Channel>, CtlError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = client::connect(&self.socket, CONNECT_TIMEOUT)
            .await
            .map_err(CtlError::Unreachable)?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// A unary request bounded by [`CALL_TIMEOUT`].
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// Turns a failed call's status into the error to show.
    pub fn failed(&self, status: tonic::Status) -> CtlError {
        CtlError::from_status(status, &self.socket, CALL_TIMEOUT)
    }
}

async fn status<W: Write>(session: &mut Session, out: &mut Output<W>) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let response = client
        .get_status(session.request(v1::GetStatusRequest {}))
        .await
        .map_err(|status| session.failed(status))?;
    out.emit(&StatusView::from(response.into_inner()))
}

async fn ps<W: Write>(session: &mut Session, out: &mut Output<W>) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let response = client
        .list_containers(session.request(v1::ListContainersRequest {}))
        .await
        .map_err(|status| session.failed(status))?;
    let containers = response.into_inner().containers;
    out.emit(&ContainerList(
        containers.into_iter().map(ContainerView::from).collect(),
    ))
}

async fn rules<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    container: &str,
) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let request = v1::GetContainerRequest {
        container: container.to_owned(),
    };
    let response = client
        .get_container(session.request(request))
        .await
        .map_err(|status| session.failed(status))?;
    let view = RulesView::from(response.into_inner());
    if view.ruleset.is_empty() && out.format() == Format::Human {
        let who = view
            .container
            .as_ref()
            .map_or_else(|| container.to_owned(), describe);
        output::notice(&format!(
            "container {who} is not running: the kernel holds no ruleset for it"
        ));
        return Ok(());
    }
    out.emit(&view)
}

async fn preview<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    args: &PreviewArgs,
) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let mode = v1::Mode::from(args.mode);
    let request = v1::PreviewRulesetRequest {
        profiles: args.profiles.clone(),
        mode: mode.into(),
    };
    let response = client
        .preview_ruleset(session.request(request))
        .await
        .map_err(|status| session.failed(status))?
        .into_inner();
    out.emit(&PreviewView {
        profiles: response.profiles,
        mode: ModeView::from(i32::from(mode)),
        ruleset: response.ruleset,
    })
}

async fn profiles<W: Write>(session: &mut Session, out: &mut Output<W>) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let response = client
        .list_profiles(session.request(v1::ListProfilesRequest {}))
        .await
        .map_err(|status| session.failed(status))?;
    let profiles = response.into_inner().profiles;
    out.emit(&ProfileList(
        profiles.into_iter().map(ProfileView::from).collect(),
    ))
}

/// The container the daemon resolves `container` to (`GetContainer`).
async fn get_container(session: &mut Session, container: &str) -> Result<ContainerView, CtlError> {
    let mut client = session.client().await?;
    let request = v1::GetContainerRequest {
        container: container.to_owned(),
    };
    let response = client
        .get_container(session.request(request))
        .await
        .map_err(|status| session.failed(status))?;
    response
        .into_inner()
        .container
        .map(ContainerView::from)
        .ok_or(CtlError::Incomplete("the container"))
}

async fn show<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    container: &str,
) -> Result<(), CtlError> {
    let view = get_container(session, container).await?;
    out.emit(&view)
}

async fn state<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    container: &str,
) -> Result<(), CtlError> {
    let view = get_container(session, container).await?;
    out.emit(&StateReport::from(&view))
}

/// `forget CONTAINER…` / `forget --stopped`.
async fn forget<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    args: &ForgetArgs,
) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let request = session.request(v1::ForgetRequest {
        containers: args.containers.clone(),
        all_stopped: args.stopped,
    });
    let response = client
        .forget(request)
        .await
        .map_err(|status| session.failed(status))?;
    out.emit(&ForgetView::from(response.into_inner()))
}

/// `allow` / `deny`: every target in one request, which the daemon applies atomically.
async fn change<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    action: ChangeAction,
    args: &ChangeArgs,
) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let request = session.request(v1::ChangeRequest {
        container: args.container.clone(),
        targets: args.targets.clone(),
    });
    let answer = match action {
        ChangeAction::Allow => client.allow(request).await,
        ChangeAction::Deny => client.deny(request).await,
    };
    let response = answer.map_err(|status| session.failed(status))?;
    out.emit(&ChangeView::new(action, response.into_inner()))
}

/// `up` / `down [--all]` / `block`.
async fn set_mode<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    container: &str,
    mode: ModeArg,
) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let mode = v1::Mode::from(mode);
    let request = v1::SetModeRequest {
        container: container.to_owned(),
        mode: mode.into(),
    };
    let response = client
        .set_mode(session.request(request))
        .await
        .map_err(|status| session.failed(status))?;
    out.emit(&ModeChangeView::new(
        container,
        ModeView::from(i32::from(mode)),
        response.into_inner(),
    ))
}

/// `dns`: the names the container's DNS proxy let through (none while it is stopped).
async fn dns<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    container: &str,
) -> Result<(), CtlError> {
    let mut client = session.client().await?;
    let request = v1::GetDnsRequest {
        container: container.to_owned(),
    };
    let response = client
        .get_dns(session.request(request))
        .await
        .map_err(|status| session.failed(status))?
        .into_inner();
    let found = response
        .container
        .map(ContainerView::from)
        .ok_or(CtlError::Incomplete("the container"))?;
    out.emit(&DnsView::new(&found, response.names))
}

/// `logs`: prints the stream until the daemon ends it, the reader goes away, or (with
/// `--follow`) SIGINT or SIGTERM arrives, which ends the command successfully.
async fn logs<W: Write>(
    session: &mut Session,
    out: &mut Output<W>,
    args: &LogsArgs,
) -> Result<(), CtlError> {
    // Installed before the call, so that Ctrl-C while waiting for the first event ends cleanly.
    let mut stop = if args.follow {
        Some(Interrupt::new().map_err(CtlError::Signal)?)
    } else {
        None
    };
    let mut client = session.client().await?;
    let message = v1::LogsRequest {
        container: args.container.clone().unwrap_or_default(),
        last: args.lines,
        follow: args.follow,
    };
    let request = if args.follow {
        tonic::Request::new(message)
    } else {
        session.request(message)
    };
    let mut stream = client
        .logs(request)
        .await
        .map_err(|status| session.failed(status))?
        .into_inner();
    loop {
        let next = match &mut stop {
            Some(stop) => tokio::select! {
                next = stream.message() => next,
                () = stop.recv() => return Ok(()),
            },
            None => stream.message().await,
        };
        let Some(event) = next.map_err(|status| session.failed(status))? else {
            return Ok(());
        };
        out.emit_line(&LogEventView::from(event))?;
        if out.is_closed() {
            return Ok(());
        }
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, caught so that `logs --follow` can end cleanly on either.
struct Interrupt {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves when either signal arrives.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// `0123456789ab (web)`, or the short id alone.
fn describe(container: &ContainerView) -> String {
    if container.name.is_empty() {
        container.short_id().to_owned()
    } else {
        format!("{} ({})", container.short_id(), container.name)
    }
}
