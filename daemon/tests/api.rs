//! The gRPC API served in-process by `shieldd::run` on a temporary socket: everything that does
//! not need a container namespace, and every bad request the daemon must refuse without acting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shield_proto::v1 as pb;
use shield_proto::v1::shield_client::ShieldClient;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

struct Daemon {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    async fn start(profiles: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dirs = shieldd::config::Dirs {
            config: dir.path().join("config"),
            state: dir.path().join("state"),
        };
        std::fs::create_dir_all(dirs.profiles()).unwrap();
        for (name, text) in profiles {
            std::fs::write(dirs.profiles().join(format!("{name}.txt")), text).unwrap();
        }
        let socket = dir.path().join("run/shieldd.sock");
        let listener = shieldd::server::bind(&socket).await.unwrap();
        let options = shieldd::Options {
            config: shieldd::config::Config::default(),
            dirs,
            socket: socket.clone(),
            socket_owner: shieldd::SocketOwner::Daemon,
            helper: shieldd::netns::HelperCommand::new(PathBuf::from(env!(
                "CARGO_BIN_EXE_shieldd"
            ))),
            lifecycle: std::sync::Arc::new(shieldd::activation::Unsupervised),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            shieldd::run(options, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            dir,
            socket,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> ShieldClient<Channel> {
        shield_proto::client::connect(&self.socket, Duration::from_secs(5))
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("daemon stops within 5 s")
            .unwrap();
        assert!(!self.socket.exists(), "socket removed on shutdown");
        drop(self.dir);
    }
}

fn state(id: &str, pid: u32, annotations: &[(&str, &str)]) -> pb::OciState {
    pb::OciState {
        id: id.to_owned(),
        pid,
        bundle: "/".to_owned(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        status: "created".to_owned(),
    }
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn socket_and_directory_are_private() {
    let daemon = Daemon::start(&[]).await;
    assert_eq!(mode_of(&daemon.socket), 0o600);
    assert_eq!(mode_of(daemon.socket.parent().unwrap()), 0o700);
    daemon.stop().await;
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_is_refused() {
    let daemon = Daemon::start(&[]).await;
    let err = shieldd::server::bind(&daemon.socket).await.unwrap_err();
    assert!(err.to_string().contains("already listening"), "{err}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shieldd.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    shieldd::server::bind(&socket).await.unwrap();
}

#[tokio::test]
async fn status_profiles_and_preview() {
    let daemon = Daemon::start(&[("mine", "192.0.2.7\nmine.example\n")]).await;
    let mut client = daemon.client().await;

    let status = client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        (status.containers_running, status.containers_stopped),
        (0, 0)
    );
    assert_eq!(status.socket, daemon.socket.display().to_string());

    let profiles = client
        .list_profiles(pb::ListProfilesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mine = profiles.profiles.iter().find(|p| p.name == "mine").unwrap();
    assert_eq!(
        (mine.source.as_str(), mine.addresses, mine.domains),
        ("user", 1, 1)
    );
    for bundled in [
        "base",
        "dev-standard",
        "dev-python",
        "dev-node",
        "nvidia-hpc",
    ] {
        assert!(
            profiles.profiles.iter().any(|p| p.name == bundled),
            "{bundled}"
        );
    }

    let preview = client
        .preview_ruleset(pb::PreviewRulesetRequest {
            profiles: vec!["mine".to_owned()],
            mode: pb::Mode::Up.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        preview.ruleset.starts_with("table inet shield {"),
        "{}",
        preview.ruleset
    );
    assert!(
        preview.ruleset.contains("elements = { 192.0.2.7 }"),
        "{}",
        preview.ruleset
    );
    assert!(preview.ruleset.contains("policy drop;"));

    let defaults = client
        .preview_ruleset(pb::PreviewRulesetRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(defaults.profiles, ["dev-standard"]);
    daemon.stop().await;
}

/// A raw channel to the daemon's socket, for the services beside the shield API.
async fn raw_channel(socket: &Path) -> Channel {
    let socket = socket.to_owned();
    tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let daemon = Daemon::start(&[]).await;
    let channel = raw_channel(&daemon.socket).await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "shield.v1.Shield".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);

    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("reflection did not list services");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"shield.v1.Shield"), "{names:?}");
    daemon.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let daemon = Daemon::start(&[("bad", "ok.example\n10.0.0.300\n")]).await;
    let mut client = daemon.client().await;
    let me = std::process::id();
    let cases: Vec<(pb::ContainerCreatedRequest, Code, &str)> = vec![
        (
            pb::ContainerCreatedRequest { state: None },
            Code::InvalidArgument,
            "no OCI state",
        ),
        (
            pb::ContainerCreatedRequest {
                state: Some(state("", me, &[])),
            },
            Code::InvalidArgument,
            "invalid container id",
        ),
        (
            pb::ContainerCreatedRequest {
                state: Some(state("../../etc", me, &[])),
            },
            Code::InvalidArgument,
            "invalid container id",
        ),
        (
            pb::ContainerCreatedRequest {
                state: Some(state("abc", 0, &[])),
            },
            Code::InvalidArgument,
            "no pid",
        ),
        (
            pb::ContainerCreatedRequest {
                state: Some(state("abc", me, &[("shield.profiles", "nope")])),
            },
            Code::NotFound,
            "unknown profile \"nope\"",
        ),
        (
            pb::ContainerCreatedRequest {
                state: Some(state("abc", me, &[("shield.profiles", "../x")])),
            },
            Code::InvalidArgument,
            "invalid profile name",
        ),
        (
            pb::ContainerCreatedRequest {
                state: Some(state("abc", me, &[("shield.profiles", "bad")])),
            },
            Code::FailedPrecondition,
            "bad.txt:2:",
        ),
        (
            pb::ContainerCreatedRequest {
                state: Some(state("abc", me, &[("shield.name", "bad name;")])),
            },
            Code::InvalidArgument,
            "invalid container name",
        ),
        (
            pb::ContainerCreatedRequest {
                state: Some(state("abc", u32::MAX, &[])),
            },
            Code::FailedPrecondition,
            "does not exist",
        ),
    ];
    for (request, code, text) in cases {
        let status = client.container_created(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {}", status.message());
        assert!(
            status.message().contains(text),
            "{request:?}: {}",
            status.message()
        );
    }
    let containers = client
        .list_containers(pb::ListContainersRequest {})
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(
        containers.is_empty(),
        "refused requests recorded nothing: {containers:?}"
    );

    let unknown = client
        .get_container(pb::GetContainerRequest {
            container: "nothing".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown
            .message()
            .contains("no container matches \"nothing\"")
    );

    let stopped = client
        .container_stopped(pb::ContainerStoppedRequest {
            state: Some(state("never-seen", 0, &[])),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stopped.known);
    daemon.stop().await;
}

#[tokio::test]
async fn refused_attaches_leave_no_trace() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    for id in ["ghost1", "ghost2"] {
        let refused = client
            .container_created(pb::ContainerCreatedRequest {
                // No such process: refused after the daemon has looked the container up.
                state: Some(state(id, u32::MAX, &[("shield.name", "web")])),
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{}",
            refused.message()
        );
    }
    // Two refused containers named "web" must not make the name ambiguous.
    let lookup = client
        .get_container(pb::GetContainerRequest {
            container: "web".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(lookup.code(), Code::NotFound, "{}", lookup.message());
    daemon.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    let huge = "x".repeat(shieldd::server::MAX_REQUEST_BYTES + 1);
    let status = client
        .container_created(pb::ContainerCreatedRequest {
            state: Some(state("abc", 1, &[("shield.name", &huge)])),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());
    daemon.stop().await;
}
