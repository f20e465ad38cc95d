//! Runs the real `shieldctl` binary against an in-test tonic server with canned answers.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use shield_proto::v1::shield_server::{Shield, ShieldServer};
use shield_proto::v1::{self, ContainerState, Mode};
use tonic::{Request, Response, Status};

const RULESET: &str = "table inet shield {\n\tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n\t}\n}\n";

#[derive(Clone, Default)]
struct FakeDaemon {
    previews: Arc<Mutex<Vec<v1::PreviewRulesetRequest>>>,
}

fn container(id: &str, name: &str, state: ContainerState, mode: Mode) -> v1::Container {
    v1::Container {
        id: id.to_owned(),
        name: name.to_owned(),
        state: state.into(),
        profiles: vec!["base".to_owned(), "dev".to_owned()],
        mode: mode.into(),
        pid: 4242,
        attached_at: 1_700_000_000,
        allowed_addresses: 3,
        domains: vec!["example.com".to_owned()],
    }
}

#[tonic::async_trait]
impl Shield for FakeDaemon {
    async fn container_created(
        &self,
        _: Request<v1::ContainerCreatedRequest>,
    ) -> Result<Response<v1::ContainerCreatedResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn container_stopped(
        &self,
        _: Request<v1::ContainerStoppedRequest>,
    ) -> Result<Response<v1::ContainerStoppedResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_containers(
        &self,
        _: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        Ok(Response::new(v1::ListContainersResponse {
            containers: vec![
                container(
                    "0123456789abcdef0123456789abcdef",
                    "web",
                    ContainerState::Running,
                    Mode::Up,
                ),
                container(
                    "fedcba9876543210fedcba9876543210",
                    "",
                    ContainerState::Stopped,
                    Mode::DownAll,
                ),
            ],
        }))
    }

    async fn get_container(
        &self,
        request: Request<v1::GetContainerRequest>,
    ) -> Result<Response<v1::GetContainerResponse>, Status> {
        let wanted = request.into_inner().container;
        if wanted == "web" {
            return Ok(Response::new(v1::GetContainerResponse {
                container: Some(container(
                    "0123456789abcdef0123456789abcdef",
                    "web",
                    ContainerState::Running,
                    Mode::Up,
                )),
                ruleset: RULESET.to_owned(),
            }));
        }
        Err(Status::not_found(format!(
            "no container matches {wanted:?}"
        )))
    }

    async fn preview_ruleset(
        &self,
        request: Request<v1::PreviewRulesetRequest>,
    ) -> Result<Response<v1::PreviewRulesetResponse>, Status> {
        let request = request.into_inner();
        let profiles = if request.profiles.is_empty() {
            vec!["base".to_owned()]
        } else {
            request.profiles.clone()
        };
        self.previews.lock().unwrap().push(request);
        Ok(Response::new(v1::PreviewRulesetResponse {
            ruleset: RULESET.to_owned(),
            profiles,
        }))
    }

    async fn list_profiles(
        &self,
        _: Request<v1::ListProfilesRequest>,
    ) -> Result<Response<v1::ListProfilesResponse>, Status> {
        Ok(Response::new(v1::ListProfilesResponse {
            profiles: vec![v1::Profile {
                name: "base".to_owned(),
                source: "bundled".to_owned(),
                addresses: 0,
                domains: 4,
                path: String::new(),
            }],
        }))
    }

    async fn get_status(
        &self,
        _: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        Ok(Response::new(v1::GetStatusResponse {
            version: "0.1.0-fake".to_owned(),
            uptime_seconds: 3723,
            containers_running: 1,
            containers_stopped: 1,
            socket: "/run/fake/shieldd.sock".to_owned(),
            uid: 1000,
        }))
    }
}

/// Serves `daemon` on a fresh socket from a background thread.
fn serve(daemon: FakeDaemon) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shieldd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(ShieldServer::new(daemon))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
    });
    (dir, socket)
}

/// Runs shieldctl with a clean environment, the socket given through `SHIELD_SOCKET`.
fn shieldctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shieldctl"))
        .args(args)
        .env_clear()
        .env("SHIELD_SOCKET", socket)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn status_human() {
    let (_dir, socket) = serve(FakeDaemon::default());
    let output = shieldctl(&socket, &["status"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "version     0.1.0-fake\n\
         uptime      1h 2m 3s\n\
         containers  1 running, 1 stopped\n\
         socket      /run/fake/shieldd.sock\n\
         uid         1000\n"
    );
}

#[test]
fn ps_table_and_json() {
    let (_dir, socket) = serve(FakeDaemon::default());
    let output = shieldctl(&socket, &["ps"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "ID            NAME  STATE    MODE      PROFILES\n\
         0123456789ab  web   running  up        base,dev\n\
         fedcba987654  -     stopped  down-all  base,dev\n"
    );

    let output = shieldctl(&socket, &["ps", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        value,
        serde_json::json!([
            {
                "id": "0123456789abcdef0123456789abcdef",
                "name": "web",
                "state": "running",
                "mode": "up",
                "profiles": ["base", "dev"],
                "pid": 4242,
                "attached_at": 1_700_000_000,
                "allowed_addresses": 3,
                "domains": ["example.com"],
            },
            {
                "id": "fedcba9876543210fedcba9876543210",
                "name": "",
                "state": "stopped",
                "mode": "down-all",
                "profiles": ["base", "dev"],
                "pid": 4242,
                "attached_at": 1_700_000_000,
                "allowed_addresses": 3,
                "domains": ["example.com"],
            },
        ])
    );
}

#[test]
fn preview_prints_exactly_the_ruleset() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    let output = shieldctl(&socket, &["preview"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), RULESET);
    assert!(output.stderr.is_empty());

    let output = shieldctl(
        &socket,
        &[
            "preview",
            "--profiles",
            "a",
            "b",
            "--mode",
            "down-all",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"profiles": ["a", "b"], "mode": "down-all", "ruleset": RULESET})
    );

    let previews = daemon.previews.lock().unwrap();
    assert_eq!(previews.len(), 2);
    assert!(previews[0].profiles.is_empty());
    assert_eq!(previews[0].mode, i32::from(Mode::Up));
    assert_eq!(previews[1].profiles, ["a", "b"]);
    assert_eq!(previews[1].mode, i32::from(Mode::DownAll));
}

#[test]
fn rules_and_daemon_errors() {
    let (_dir, socket) = serve(FakeDaemon::default());
    let output = shieldctl(&socket, &["rules", "web"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), RULESET);

    let output = shieldctl(&socket, &["rules", "foo"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(stderr(&output), "shieldctl: no container matches \"foo\"\n");
}

#[test]
fn profiles_table() {
    let (_dir, socket) = serve(FakeDaemon::default());
    let output = shieldctl(&socket, &["profiles"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "NAME  SOURCE   ADDRESSES  DOMAINS\nbase  bundled          0        4\n"
    );
}

#[test]
fn unreachable_socket_says_where_and_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shieldd.sock");
    let output = shieldctl(&socket, &["status"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        format!(
            "shieldctl: cannot reach shieldd at {}: no such file (is shieldd running? \
             start it with 'shieldd &' or 'systemctl --user start shieldd.socket')\n",
            socket.display()
        )
    );

    // --socket wins over SHIELD_SOCKET.
    let other = dir.path().join("other.sock");
    let output = shieldctl(&socket, &["--socket", other.to_str().unwrap(), "ps"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&other.display().to_string()));
}
