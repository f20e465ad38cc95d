//! The shield v1 gRPC service: requests in, the container manager, answers out.
//!
//! Every error leaves through [`ServiceError`] and its one mapping to a gRPC status.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shield_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::audit::AuditEvent;
use crate::containers::{
    Change, ContainerError, Containers, ForgetWhich, LookupError, Snapshot, TargetOutcome,
    error_chain,
};
use crate::intent::{TargetError, parse_targets};
use crate::oci::{self, OciError};
use crate::profiles::{ProfileError, Source};
use crate::ruleset::{self, Mode, Policy};

/// Most past audit events one `Logs` call sends.
pub const MAX_LOG_EVENTS: u32 = 10_000;

/// Most containers one `Forget` may name.
pub const MAX_FORGET: usize = 1024;

/// The gRPC service over the container manager.
#[derive(Debug)]
pub struct ShieldService {
    containers: Arc<Containers>,
    started: Instant,
    socket: PathBuf,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The OCI state is not acceptable.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// The targets of a change are not acceptable.
    #[error(transparent)]
    Targets(#[from] TargetError),
    /// A profile is unknown or invalid.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The container operation failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The audit trail cannot be read.
    #[error("cannot read the audit trail")]
    Audit(#[source] crate::audit::AuditError),
}

impl From<LookupError> for ServiceError {
    fn from(err: LookupError) -> Self {
        Self::Container(err.into())
    }
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let message = error_chain(&err);
        match err {
            ServiceError::BadRequest(_) | ServiceError::Oci(_) | ServiceError::Targets(_) => {
                Status::invalid_argument(message)
            }
            ServiceError::Profile(ProfileError::Unknown { .. })
            | ServiceError::Container(ContainerError::Profile(ProfileError::Unknown { .. })) => {
                Status::not_found(message)
            }
            ServiceError::Profile(_) | ServiceError::Container(ContainerError::Profile(_)) => {
                Status::failed_precondition(message)
            }
            ServiceError::Container(ContainerError::Lookup(LookupError::NotFound(_))) => {
                Status::not_found(message)
            }
            ServiceError::Container(ContainerError::Lookup(LookupError::Ambiguous { .. })) => {
                Status::invalid_argument(message)
            }
            ServiceError::Container(
                ContainerError::Kernel { .. } | ContainerError::Running { .. },
            ) => Status::failed_precondition(message),
            ServiceError::Container(
                ContainerError::Store { .. }
                | ContainerError::Forget { .. }
                | ContainerError::Dns { .. }
                | ContainerError::Internal(_),
            )
            | ServiceError::Audit(_) => Status::internal(message),
        }
    }
}

impl ShieldService {
    /// A service over `containers`.
    pub fn new(containers: Arc<Containers>, socket: PathBuf) -> Self {
        Self {
            containers,
            started: Instant::now(),
            socket,
        }
    }

    /// Starts the next attach's helper in the background, off every request path.
    pub fn replenish_helpers(&self) {
        let helpers = Arc::clone(self.containers.helpers());
        tokio::task::spawn_blocking(move || {
            if let Err(err) = helpers.replenish() {
                tracing::warn!(error = %error_chain(&err), "cannot start an idle namespace helper");
            }
        });
    }

    async fn container_created(&self, state: pb::OciState) -> Result<pb::Container, ServiceError> {
        let started = Instant::now();
        oci::validate_id(&state.id)?;
        if state.pid == 0 {
            return Err(OciError::MissingPid.into());
        }
        let name = oci::container_name(&state.id, &state.annotations)?;
        let profiles = oci::container_profiles(
            &state.annotations,
            &self.containers.config().default_profiles,
        )?;
        let snapshot = {
            let (containers, id, name) =
                (Arc::clone(&self.containers), state.id.clone(), name.clone());
            to_completion(async move { containers.attach(&id, &name, profiles, state.pid).await })
                .await?
        };
        self.replenish_helpers();
        tracing::info!(
            container = %state.id,
            name = %name,
            pid = state.pid,
            profiles = %snapshot.state.profiles.join(":"),
            mode = crate::containers::mode_name(snapshot.state.intent.mode),
            micros = started.elapsed().as_micros(),
            "container attached, ruleset verified"
        );
        Ok(to_proto(&snapshot))
    }

    async fn change(
        &self,
        request: pb::ChangeRequest,
        change: Change,
    ) -> Result<pb::ChangeResponse, ServiceError> {
        let started = Instant::now();
        let targets = parse_targets(&request.targets)?;
        let (snapshot, outcomes) = {
            let (containers, container) = (Arc::clone(&self.containers), request.container.clone());
            to_completion(async move { containers.change(&container, targets, change).await })
                .await?
        };
        Ok(pb::ChangeResponse {
            container: Some(to_proto(&snapshot)),
            changes: outcomes.iter().map(change_to_proto).collect(),
            apply_micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        })
    }
}

fn change_to_proto(outcome: &TargetOutcome) -> pb::TargetChange {
    pb::TargetChange {
        target: outcome.target.to_string(),
        kind: outcome.target.kind().to_owned(),
        changed: outcome.changed,
        resolved: outcome
            .resolved
            .iter()
            .map(|learnt| learnt.addr.to_string())
            .collect(),
    }
}

fn mode_to_proto(mode: Mode) -> pb::Mode {
    match mode {
        Mode::Up => pb::Mode::Up,
        Mode::Down => pb::Mode::Down,
        Mode::DownAll => pb::Mode::DownAll,
        Mode::Block => pb::Mode::Block,
    }
}

fn mode_from_proto(mode: i32, unspecified: Option<Mode>) -> Result<Mode, ServiceError> {
    match pb::Mode::try_from(mode) {
        Ok(pb::Mode::Up) => Ok(Mode::Up),
        Ok(pb::Mode::Down) => Ok(Mode::Down),
        Ok(pb::Mode::DownAll) => Ok(Mode::DownAll),
        Ok(pb::Mode::Block) => Ok(Mode::Block),
        Ok(pb::Mode::Unspecified) => unspecified.ok_or_else(|| {
            ServiceError::BadRequest("a mode is required (up, down, down_all, block)".into())
        }),
        Err(_) => Err(ServiceError::BadRequest(format!("unknown mode {mode}"))),
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn saturating_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn strings<'a, T: ToString + 'a>(items: impl IntoIterator<Item = &'a T>) -> Vec<String> {
    items.into_iter().map(ToString::to_string).collect()
}

/// Networks in canonical text; a single address without its `/32` or `/128`.
fn nets<'a>(items: impl IntoIterator<Item = &'a ipnet::IpNet>) -> Vec<String> {
    items
        .into_iter()
        .map(|net| crate::intent::Target::Net(*net).to_string())
        .collect()
}

fn to_proto(snapshot: &Snapshot) -> pb::Container {
    let state = &snapshot.state;
    let (container_state, pid, attached_at) = match snapshot.running {
        Some((pid, attached_at)) => (pb::ContainerState::Running, pid, unix_seconds(attached_at)),
        None => (pb::ContainerState::Stopped, 0, 0),
    };
    pb::Container {
        id: state.id.clone(),
        name: state.name.clone(),
        state: container_state.into(),
        profiles: state.profiles.clone(),
        mode: mode_to_proto(state.intent.mode).into(),
        pid,
        attached_at,
        allowed_addresses: saturating_u32(snapshot.allowed_addresses),
        domains: strings(&snapshot.domains),
        allowed: nets(&state.intent.allowed),
        denied: nets(&state.intent.denied),
        allowed_domains: strings(&state.intent.allowed_domains),
        denied_domains: strings(&state.intent.denied_domains),
        lists_omitted: snapshot.lists_omitted,
    }
}

fn event_to_proto(event: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        ts: event.ts,
        container: event.container,
        name: event.name,
        action: event.action,
        target: event.target,
        detail: event.detail,
    }
}

fn required_state(state: Option<pb::OciState>) -> Result<pb::OciState, ServiceError> {
    state.ok_or_else(|| ServiceError::BadRequest("request has no OCI state".to_owned()))
}

#[tonic::async_trait]
impl pb::shield_server::Shield for ShieldService {
    async fn container_created(
        &self,
        request: Request<pb::ContainerCreatedRequest>,
    ) -> Result<Response<pb::ContainerCreatedResponse>, Status> {
        let started = Instant::now();
        let state = required_state(request.into_inner().state)?;
        let id = state.id.clone();
        let container = self.container_created(state).await.inspect_err(|err| {
            tracing::warn!(container = %id, error = %error_chain(err), "attach refused; the container must not start");
        })?;
        Ok(Response::new(pb::ContainerCreatedResponse {
            container: Some(container),
            attach_micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        }))
    }

    async fn container_stopped(
        &self,
        request: Request<pb::ContainerStoppedRequest>,
    ) -> Result<Response<pb::ContainerStoppedResponse>, Status> {
        let state = required_state(request.into_inner().state)?;
        oci::validate_id(&state.id).map_err(ServiceError::from)?;
        let known = {
            let (containers, id) = (Arc::clone(&self.containers), state.id.clone());
            to_completion(async move { containers.stopped(&id).await })
                .await
                .map_err(ServiceError::from)?
        };
        if known {
            tracing::info!(container = %state.id, "container stopped, sockets released");
        } else {
            tracing::info!(container = %state.id, "poststop for a container shield never attached");
        }
        Ok(Response::new(pb::ContainerStoppedResponse { known }))
    }

    async fn list_containers(
        &self,
        _request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let containers = self
            .containers
            .snapshots()
            .await
            .iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn get_container(
        &self,
        request: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::GetContainerResponse>, Status> {
        let query = request.into_inner().container;
        let (snapshot, ruleset) = self
            .containers
            .ruleset(&query)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::GetContainerResponse {
            container: Some(to_proto(&snapshot)),
            ruleset,
        }))
    }

    async fn preview_ruleset(
        &self,
        request: Request<pb::PreviewRulesetRequest>,
    ) -> Result<Response<pb::PreviewRulesetResponse>, Status> {
        let request = request.into_inner();
        let mode = mode_from_proto(request.mode, Some(Mode::Up))?;
        let profiles = if request.profiles.is_empty() {
            self.containers.config().default_profiles.clone()
        } else {
            request.profiles
        };
        let entries = self
            .containers
            .profiles()
            .compose(&profiles)
            .map_err(ServiceError::from)?;
        let policy = Policy {
            allow: entries.nets,
            deny: Vec::new(),
            mode,
            host_ports: self.containers.config().loopback_ports.clone(),
        };
        Ok(Response::new(pb::PreviewRulesetResponse {
            ruleset: ruleset::render(&ruleset::build(&policy)),
            profiles,
        }))
    }

    async fn list_profiles(
        &self,
        _request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        let profiles = self
            .containers
            .profiles()
            .list()
            .map_err(ServiceError::from)?
            .into_iter()
            .map(|profile| {
                let (source, path) = match profile.source {
                    Source::Bundled => ("bundled", String::new()),
                    Source::User(path) => ("user", path.display().to_string()),
                };
                pb::Profile {
                    name: profile.name,
                    source: source.to_owned(),
                    addresses: saturating_u32(profile.entries.nets.len()),
                    domains: saturating_u32(profile.entries.domains.len()),
                    path,
                }
            })
            .collect();
        Ok(Response::new(pb::ListProfilesResponse { profiles }))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let snapshots = self.containers.snapshots().await;
        let running = snapshots.iter().filter(|s| s.running.is_some()).count();
        Ok(Response::new(pb::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            containers_running: saturating_u32(running),
            containers_stopped: saturating_u32(snapshots.len() - running),
            socket: self.socket.display().to_string(),
            uid: nix::unistd::geteuid().as_raw(),
        }))
    }

    async fn allow(
        &self,
        request: Request<pb::ChangeRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        Ok(Response::new(
            self.change(request.into_inner(), Change::Allow).await?,
        ))
    }

    async fn deny(
        &self,
        request: Request<pb::ChangeRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        Ok(Response::new(
            self.change(request.into_inner(), Change::Deny).await?,
        ))
    }

    async fn set_mode(
        &self,
        request: Request<pb::SetModeRequest>,
    ) -> Result<Response<pb::SetModeResponse>, Status> {
        let request = request.into_inner();
        let mode = mode_from_proto(request.mode, None)?;
        let (snapshot, previous) = {
            let (containers, container) = (Arc::clone(&self.containers), request.container.clone());
            to_completion(async move { containers.set_mode(&container, mode).await })
                .await
                .map_err(ServiceError::from)?
        };
        Ok(Response::new(pb::SetModeResponse {
            container: Some(to_proto(&snapshot)),
            previous: mode_to_proto(previous).into(),
        }))
    }

    async fn forget(
        &self,
        request: Request<pb::ForgetRequest>,
    ) -> Result<Response<pb::ForgetResponse>, Status> {
        let request = request.into_inner();
        if request.all_stopped != request.containers.is_empty() {
            return Err(ServiceError::BadRequest(
                "name the containers to forget, or ask for every stopped one (not both)".into(),
            )
            .into());
        }
        if request.containers.len() > MAX_FORGET {
            return Err(ServiceError::BadRequest(format!(
                "{} containers in one request; at most {MAX_FORGET}",
                request.containers.len()
            ))
            .into());
        }
        let containers = Arc::clone(&self.containers);
        // Run to the end even if the client goes away: the removals are not undone.
        let forgotten = to_completion(async move {
            let which = if request.all_stopped {
                ForgetWhich::AllStopped
            } else {
                ForgetWhich::Named(&request.containers)
            };
            containers.forget(which).await
        })
        .await
        .map_err(ServiceError::from)?;
        Ok(Response::new(pb::ForgetResponse {
            forgotten: forgotten
                .into_iter()
                .map(|f| pb::ForgottenContainer {
                    id: f.id,
                    name: f.name,
                })
                .collect(),
        }))
    }

    async fn get_dns(
        &self,
        request: Request<pb::GetDnsRequest>,
    ) -> Result<Response<pb::GetDnsResponse>, Status> {
        let query = request.into_inner().container;
        let (snapshot, names) = self
            .containers
            .learnt_names(&query)
            .await
            .map_err(ServiceError::from)?;
        let names = names
            .into_iter()
            .map(|(name, addresses)| pb::LearntName {
                name,
                addresses: addresses
                    .into_iter()
                    .map(|(addr, left)| pb::LearntAddress {
                        address: addr.to_string(),
                        expires_in_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::GetDnsResponse {
            container: Some(to_proto(&snapshot)),
            names,
        }))
    }

    type LogsStream = ReceiverStream<Result<pb::AuditEvent, Status>>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let request = request.into_inner();
        let filter = if request.container.is_empty() {
            None
        } else {
            match self.containers.find(&request.container) {
                Ok((id, _)) => Some(id),
                // A forgotten container's trail stays: its full id still reads it.
                Err(LookupError::NotFound(_))
                    if oci::validate_id(&request.container).is_ok()
                        && self.containers.audit().path(&request.container).exists() =>
                {
                    Some(request.container.clone())
                }
                Err(err) => return Err(ServiceError::from(err).into()),
            }
        };
        let last = usize::try_from(request.last.min(MAX_LOG_EVENTS)).unwrap_or(usize::MAX);
        // Subscribe before reading the files, so that no event falls between the two.
        let mut live = request.follow.then(|| self.containers.audit().subscribe());
        let past = self
            .containers
            .audit()
            .last(filter.as_deref(), last)
            .map_err(ServiceError::Audit)?;
        let newest = past
            .last()
            .map(|event| event.ts.clone())
            .unwrap_or_default();
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for event in past {
                if sender.send(Ok(event_to_proto(event))).await.is_err() {
                    return;
                }
            }
            let Some(live) = live.as_mut() else {
                return;
            };
            loop {
                let event = match live.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a logs follower fell behind and missed events");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let wanted = filter.as_ref().is_none_or(|id| *id == event.container);
                // Events already sent from the files (recorded between subscribe and read).
                if !wanted || event.ts <= newest {
                    continue;
                }
                if sender.send(Ok(event_to_proto(event))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Runs an operation that changes a container to its end in a task of its own. A client that
/// goes away (a hook past its deadline, a ^C) drops its request; an attach or a change cut off
/// half-way would leave the kernel, the state file and the daemon's memory disagreeing.
async fn to_completion<T: Send + 'static>(
    work: impl Future<Output = Result<T, ContainerError>> + Send + 'static,
) -> Result<T, ContainerError> {
    tokio::spawn(work)
        .await
        .map_err(|err| ContainerError::Internal(format!("the operation's task failed: {err}")))?
}
