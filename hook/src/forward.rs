//! The hook's one gRPC call, connect included, under one deadline.

use std::path::PathBuf;
use std::time::Duration;

use shield_proto::client::{self, ConnectError};
use shield_proto::v1;
use tokio::time::Instant;

use crate::args::{Args, Stage};
use crate::state::OciState;

/// What the daemon said when it answered OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// createRuntime: the ruleset is applied and verified.
    Attached,
    /// poststop: released (`known`: the daemon had the container).
    Released {
        /// False when the daemon never knew the container.
        known: bool,
    },
}

/// Why the call did not end with an OK answer.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be made.
    Connect(ConnectError),
    /// The deadline passed before the daemon answered.
    NoAnswer {
        /// The socket.
        socket: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
    /// The daemon answered with an error status.
    Daemon(tonic::Status),
    /// The connection broke during the call (status made on this side).
    Lost {
        /// The socket.
        socket: PathBuf,
        /// The local status.
        status: tonic::Status,
    },
}

/// Sends `state` to the daemon for `args.stage` and waits for its answer until `args.timeout`.
pub async fn forward(args: &Args, state: OciState) -> Result<Answer, CallError> {
    let deadline = Instant::now() + args.timeout;
    let no_answer = || CallError::NoAnswer {
        socket: args.socket.clone(),
        timeout: args.timeout,
    };
    let call = async {
        let mut client = client::connect(&args.socket, args.timeout)
            .await
            .map_err(|error| match error {
                ConnectError::Timeout { .. } => no_answer(),
                other => CallError::Connect(other),
            })?;
        let state = Some(state.into_proto());
        let result = match args.stage {
            Stage::CreateRuntime => {
                let request = with_deadline(v1::ContainerCreatedRequest { state }, deadline);
                client
                    .container_created(request)
                    .await
                    .map(|_| Answer::Attached)
            }
            Stage::Poststop => {
                let request = with_deadline(v1::ContainerStoppedRequest { state }, deadline);
                client
                    .container_stopped(request)
                    .await
                    .map(|response| Answer::Released {
                        known: response.into_inner().known,
                    })
            }
        };
        result.map_err(|status| {
            if client::is_deadline_expired(&status) {
                no_answer()
            } else if client::is_transport_error(&status) {
                CallError::Lost {
                    socket: args.socket.clone(),
                    status,
                }
            } else {
                CallError::Daemon(status)
            }
        })
    };
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_elapsed| Err(no_answer()))
}

/// A request that tells the daemon how long the hook will wait (`grpc-timeout`).
fn with_deadline<T>(message: T, deadline: Instant) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    request
}
