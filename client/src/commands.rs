//! Runs a parsed command against the daemon and hands the result to [`Output`].
//!
//! One function per command. The daemon connection is opened on first use ([`Session`]), so
//! later commands that need no daemon (`setup`, `prepare`, `doctor` checks) never try to reach it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shield_proto::client;
use shield_proto::v1::{self, shield_client::ShieldClient};
use tonic::transport::Channel;

use crate::cli::{Cli, Command, PreviewArgs};
use crate::error::CtlError;
use crate::output::{self, Format, Output};
use crate::view::{
    ContainerList, ContainerView, ModeView, PreviewView, ProfileList, ProfileView, RulesView,
    StatusView,
};

/// Time allowed to connect to the daemon.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for one unary call (streams such as a future `watch` have none).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cli`, writing results to `out`.
pub async fn run<W: Write>(cli: &Cli, out: &mut Output<W>) -> Result<(), CtlError> {
    let mut session = Session::new(socket_path(cli.socket.as_deref())?);
    match &cli.command {
        Command::Status => status(&mut session, out).await,
        Command::Ps => ps(&mut session, out).await,
        Command::Rules { container } => rules(&mut session, out, container).await,
        Command::Preview(args) => preview(&mut session, out, args).await,
        Command::Profiles => profiles(&mut session, out).await,
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

/// `0123456789ab (web)`, or the short id alone.
fn describe(container: &ContainerView) -> String {
    if container.name.is_empty() {
        container.short_id().to_owned()
    } else {
        format!("{} ({})", container.short_id(), container.name)
    }
}
