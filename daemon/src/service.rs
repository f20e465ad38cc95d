//! The shield v1 gRPC service: requests in, registry and attach path, answers out.
//!
//! Every error leaves through [`ServiceError`] and its one mapping to a gRPC status.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shield_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::attach::{self, AttachError, Attachment};
use crate::config::Config;
use crate::netns::{HelperCommand, HelperPool};
use crate::oci::{self, OciError};
use crate::profiles::{ProfileError, ProfileStore, Source};
use crate::registry::{LookupError, Record, Registry, Running};
use crate::ruleset::{self, Mode, Policy};

/// Everything the service needs, shared by all requests.
#[derive(Debug)]
pub struct ShieldService {
    config: Config,
    profiles: ProfileStore,
    helpers: Arc<HelperPool>,
    registry: Registry,
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
    /// A profile is unknown or invalid.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// A container reference does not resolve.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The container could not be attached or verified.
    #[error("container {id}: {source}")]
    Attach {
        /// The container.
        id: String,
        /// What failed.
        #[source]
        source: AttachError,
    },
    /// A blocking task died (a bug: it panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let message = error_chain(&err);
        match err {
            ServiceError::BadRequest(_) | ServiceError::Oci(_) => Status::invalid_argument(message),
            ServiceError::Profile(ProfileError::Unknown { .. }) => Status::not_found(message),
            ServiceError::Profile(_) => Status::failed_precondition(message),
            ServiceError::Lookup(LookupError::NotFound(_)) => Status::not_found(message),
            ServiceError::Lookup(LookupError::Ambiguous { .. }) => {
                Status::invalid_argument(message)
            }
            ServiceError::Attach { .. } => Status::failed_precondition(message),
            ServiceError::Internal(_) => Status::internal(message),
        }
    }
}

/// `err` and its sources, joined with ": ", as a person reads them.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Transparent wrappers repeat their source's text; print each cause once.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl ShieldService {
    /// A service with no containers yet.
    pub fn new(
        config: Config,
        profiles: ProfileStore,
        helper: HelperCommand,
        socket: PathBuf,
    ) -> Self {
        Self {
            config,
            profiles,
            helpers: Arc::new(HelperPool::new(helper)),
            registry: Registry::default(),
            started: Instant::now(),
            socket,
        }
    }

    /// Starts the next attach's helper in the background, off every request path.
    pub fn replenish_helpers(&self) {
        let helpers = Arc::clone(&self.helpers);
        tokio::task::spawn_blocking(move || {
            if let Err(err) = helpers.replenish() {
                tracing::warn!(error = %error_chain(&err), "cannot start an idle namespace helper");
            }
        });
    }

    /// Policy for the given profiles (mode `mode`), plus the domains they name.
    fn policy_for(
        &self,
        profiles: &[String],
        mode: Mode,
    ) -> Result<(Policy, Vec<crate::profiles::DomainPattern>), ServiceError> {
        let entries = self.profiles.compose(profiles)?;
        let policy = Policy {
            allow: entries.nets,
            deny: Vec::new(),
            mode,
        };
        Ok((policy, entries.domains))
    }

    async fn container_created(&self, state: pb::OciState) -> Result<pb::Container, ServiceError> {
        let started = Instant::now();
        oci::validate_id(&state.id)?;
        if state.pid == 0 {
            return Err(OciError::MissingPid.into());
        }
        let name = oci::container_name(&state.id, &state.annotations)?;
        let profiles = oci::container_profiles(&state.annotations, &self.config.default_profiles)?;
        let (policy, domains) = self.policy_for(&profiles, Mode::Up)?;
        let table = ruleset::build(&policy);

        let helpers = Arc::clone(&self.helpers);
        let pid = state.pid;
        let mode = policy.mode;
        let attachment =
            tokio::task::spawn_blocking(move || attach::attach(&helpers, pid, &table, mode))
                .await
                .map_err(|err| ServiceError::Internal(err.to_string()))?
                .map_err(|source| ServiceError::Attach {
                    id: state.id.clone(),
                    source,
                })?;

        let record = Record {
            id: state.id.clone(),
            name,
            profiles,
            domains,
            policy,
            running: Some(Running {
                pid,
                attached_at: SystemTime::now(),
                attachment: Arc::new(Mutex::new(attachment)),
            }),
        };
        tracing::info!(
            container = %record.id,
            name = %record.name,
            pid,
            profiles = %record.profiles.join(":"),
            micros = started.elapsed().as_micros(),
            "container attached, ruleset verified"
        );
        let container = to_proto(&record);
        self.registry.insert(record);
        self.replenish_helpers();
        Ok(container)
    }

    fn container_stopped(&self, state: &pb::OciState) -> Result<bool, ServiceError> {
        oci::validate_id(&state.id)?;
        let Some(running) = self.registry.stop(&state.id) else {
            tracing::info!(container = %state.id, "poststop for a container shield never attached");
            return Ok(false);
        };
        // Closing a netlink socket can wait for an RCU grace period in the kernel (milliseconds):
        // release the sockets that pin the container's netns off the request path.
        tokio::task::spawn_blocking(move || drop(running));
        tracing::info!(container = %state.id, "container stopped, sockets released");
        Ok(true)
    }

    async fn read_ruleset(&self, record: &Record) -> Result<String, ServiceError> {
        let Some(running) = &record.running else {
            return Ok(String::new());
        };
        let attachment: Arc<Mutex<Attachment>> = Arc::clone(&running.attachment);
        let table = tokio::task::spawn_blocking(move || {
            let attachment = attachment
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            attach::read_back(&attachment)
        })
        .await
        .map_err(|err| ServiceError::Internal(err.to_string()))?
        .map_err(|source| ServiceError::Attach {
            id: record.id.clone(),
            source,
        })?;
        Ok(table
            .map(|table| ruleset::render(&table))
            .unwrap_or_default())
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

fn mode_from_proto(mode: i32) -> Result<Mode, ServiceError> {
    match pb::Mode::try_from(mode) {
        Ok(pb::Mode::Unspecified | pb::Mode::Up) => Ok(Mode::Up),
        Ok(pb::Mode::Down) => Ok(Mode::Down),
        Ok(pb::Mode::DownAll) => Ok(Mode::DownAll),
        Ok(pb::Mode::Block) => Ok(Mode::Block),
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

fn to_proto(record: &Record) -> pb::Container {
    let (state, pid, attached_at) = match &record.running {
        Some(running) => (
            pb::ContainerState::Running,
            running.pid,
            unix_seconds(running.attached_at),
        ),
        None => (pb::ContainerState::Stopped, 0, 0),
    };
    pb::Container {
        id: record.id.clone(),
        name: record.name.clone(),
        state: state.into(),
        profiles: record.profiles.clone(),
        mode: mode_to_proto(record.policy.mode).into(),
        pid,
        attached_at,
        allowed_addresses: saturating_u32(record.policy.allow.len()),
        domains: record.domains.iter().map(ToString::to_string).collect(),
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
        let known = self.container_stopped(&state)?;
        Ok(Response::new(pb::ContainerStoppedResponse { known }))
    }

    async fn list_containers(
        &self,
        _request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let containers = self.registry.all().iter().map(to_proto).collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn get_container(
        &self,
        request: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::GetContainerResponse>, Status> {
        let query = request.into_inner().container;
        let record = self.registry.find(&query).map_err(ServiceError::from)?;
        let ruleset = self.read_ruleset(&record).await?;
        Ok(Response::new(pb::GetContainerResponse {
            container: Some(to_proto(&record)),
            ruleset,
        }))
    }

    async fn preview_ruleset(
        &self,
        request: Request<pb::PreviewRulesetRequest>,
    ) -> Result<Response<pb::PreviewRulesetResponse>, Status> {
        let request = request.into_inner();
        let mode = mode_from_proto(request.mode)?;
        let profiles = if request.profiles.is_empty() {
            self.config.default_profiles.clone()
        } else {
            request.profiles
        };
        let (policy, _domains) = self.policy_for(&profiles, mode)?;
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
            .profiles
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
        let (running, stopped) = self.registry.counts();
        Ok(Response::new(pb::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            containers_running: saturating_u32(running),
            containers_stopped: saturating_u32(stopped),
            socket: self.socket.display().to_string(),
            uid: nix::unistd::geteuid().as_raw(),
        }))
    }
}
