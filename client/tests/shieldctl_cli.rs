//! Runs the real `shieldctl` binary against an in-test tonic server with canned answers.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shield_proto::v1::shield_server::{Shield, ShieldServer};
use shield_proto::v1::{self, ContainerState, Mode};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

const RULESET: &str = "table inet shield {\n\tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n\t}\n}\n";

const WEB_ID: &str = "0123456789abcdef0123456789abcdef";

/// The target the fake daemon rejects, and its message.
const BAD_TARGET: &str = "10.0.0.300";
const BAD_TARGET_MESSAGE: &str = "invalid target \"10.0.0.300\": not a valid IP address or CIDR";

#[derive(Clone, Default)]
struct FakeDaemon {
    previews: Arc<Mutex<Vec<v1::PreviewRulesetRequest>>>,
    /// `("allow" | "deny", request)`, in arrival order.
    changes: Arc<Mutex<Vec<(&'static str, v1::ChangeRequest)>>>,
    modes: Arc<Mutex<Vec<v1::SetModeRequest>>>,
    logs: Arc<Mutex<Vec<v1::LogsRequest>>>,
    dns: Arc<Mutex<Vec<v1::GetDnsRequest>>>,
    forgets: Arc<Mutex<Vec<v1::ForgetRequest>>>,
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
        ..Default::default()
    }
}

/// The containers `get_container`, `allow`, `deny` and `set_mode` know, by name.
fn known(name: &str) -> Result<v1::Container, Status> {
    match name {
        "web" => Ok(container(WEB_ID, "web", ContainerState::Running, Mode::Up)),
        "dev" => Ok(container(
            "dddddddddddddddddddddddddddddddd",
            "dev",
            ContainerState::Running,
            Mode::DownAll,
        )),
        "old" => Ok(container(
            "fedcba9876543210fedcba9876543210",
            "old",
            ContainerState::Stopped,
            Mode::Block,
        )),
        _ => Err(Status::not_found(format!("no container matches {name:?}"))),
    }
}

/// The fake's answer for one target: `10.0.0.0/8` is already there; domains resolve (on allow).
fn target_change(action: &str, target: &str) -> v1::TargetChange {
    let kind = if target.contains('/') {
        "network"
    } else if target.parse::<std::net::IpAddr>().is_ok() {
        "address"
    } else {
        "domain"
    };
    let resolved = if kind == "domain" && action == "allow" {
        vec!["93.184.216.34".to_owned(), "2606:2800:220:1::".to_owned()]
    } else {
        vec![]
    };
    v1::TargetChange {
        target: target.to_owned(),
        kind: kind.to_owned(),
        changed: target != "10.0.0.0/8",
        resolved,
    }
}

fn event(ts: &str, name: &str, action: &str, target: &str, detail: &str) -> v1::AuditEvent {
    v1::AuditEvent {
        ts: ts.to_owned(),
        container: WEB_ID.to_owned(),
        name: name.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: detail.to_owned(),
    }
}

/// The three events the fake streams.
fn events() -> Vec<v1::AuditEvent> {
    vec![
        event(
            "2026-11-28T21:00:00.123456Z",
            "web",
            "attach",
            "",
            "profiles base,dev",
        ),
        event(
            "2026-11-28T21:00:01.000001Z",
            "web",
            "allow",
            "192.0.2.7",
            "",
        ),
        event(
            "2026-11-28T21:00:02.500000Z",
            "",
            "mode",
            "block",
            "up → block",
        ),
    ]
}

fn learnt(name: &str, addresses: &[(&str, u64)]) -> v1::LearntName {
    v1::LearntName {
        name: name.to_owned(),
        addresses: addresses
            .iter()
            .map(|(address, expires_in_ms)| v1::LearntAddress {
                address: (*address).to_owned(),
                expires_in_ms: *expires_in_ms,
            })
            .collect(),
    }
}

/// What `web`'s DNS proxy learnt. Out of name order on purpose: shieldctl sorts them itself.
fn web_names() -> Vec<v1::LearntName> {
    vec![
        learnt("pypi.org", &[("151.101.0.223", 299_000)]),
        learnt(
            "example.com",
            &[("93.184.216.34", 29_500), ("2606:2800:220:1::", 3_598_000)],
        ),
    ]
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::AuditEvent, Status>> + Send>>;

impl FakeDaemon {
    fn change(
        &self,
        action: &'static str,
        request: v1::ChangeRequest,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        self.changes.lock().unwrap().push((action, request.clone()));
        let after = known(&request.container)?;
        if request.targets.iter().any(|t| t == BAD_TARGET) {
            return Err(Status::invalid_argument(BAD_TARGET_MESSAGE));
        }
        Ok(Response::new(v1::ChangeResponse {
            container: Some(after),
            changes: request
                .targets
                .iter()
                .map(|target| target_change(action, target))
                .collect(),
            apply_micros: 42,
        }))
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
        let found = known(&request.into_inner().container)?;
        let ruleset = if found.state == i32::from(ContainerState::Running) {
            RULESET.to_owned()
        } else {
            String::new()
        };
        Ok(Response::new(v1::GetContainerResponse {
            container: Some(found),
            ruleset,
        }))
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

    async fn allow(
        &self,
        request: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        self.change("allow", request.into_inner())
    }

    async fn deny(
        &self,
        request: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        self.change("deny", request.into_inner())
    }

    async fn set_mode(
        &self,
        request: Request<v1::SetModeRequest>,
    ) -> Result<Response<v1::SetModeResponse>, Status> {
        let request = request.into_inner();
        self.modes.lock().unwrap().push(request.clone());
        let mut after = known(&request.container)?;
        let previous = after.mode;
        after.mode = request.mode;
        Ok(Response::new(v1::SetModeResponse {
            container: Some(after),
            previous,
        }))
    }

    /// `old` is stopped and can be forgotten; `web` and `dev` run; `--stopped` forgets `old`.
    async fn forget(
        &self,
        request: Request<v1::ForgetRequest>,
    ) -> Result<Response<v1::ForgetResponse>, Status> {
        let request = request.into_inner();
        self.forgets.lock().unwrap().push(request.clone());
        let names = if request.all_stopped {
            vec!["old".to_owned()]
        } else {
            request.containers.clone()
        };
        let mut forgotten = Vec::new();
        for name in &names {
            let known = known(name)?;
            if known.state == i32::from(ContainerState::Running) {
                return Err(Status::failed_precondition(format!(
                    "container {name} (0123456789ab) is running: stop it first"
                )));
            }
            forgotten.push(v1::ForgottenContainer {
                id: known.id,
                name: known.name,
            });
        }
        Ok(Response::new(v1::ForgetResponse { forgotten }))
    }

    type LogsStream = EventStream;

    /// Three events; then the end, or (with follow) an open stream that never sends again.
    async fn logs(
        &self,
        request: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let request = request.into_inner();
        self.logs.lock().unwrap().push(request.clone());
        if !request.container.is_empty() {
            known(&request.container)?;
        }
        let past = tokio_stream::iter(events().into_iter().map(Ok));
        let stream: EventStream = if request.follow {
            Box::pin(past.chain(tokio_stream::pending()))
        } else {
            Box::pin(past)
        };
        Ok(Response::new(stream))
    }

    /// `web` learnt two names; the others (`dev` running, `old` stopped) none.
    async fn get_dns(
        &self,
        request: Request<v1::GetDnsRequest>,
    ) -> Result<Response<v1::GetDnsResponse>, Status> {
        let request = request.into_inner();
        self.dns.lock().unwrap().push(request.clone());
        let found = known(&request.container)?;
        let names = if found.id == WEB_ID {
            web_names()
        } else {
            vec![]
        };
        Ok(Response::new(v1::GetDnsResponse {
            container: Some(found),
            names,
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
                "allowed": [],
                "denied": [],
                "allowed_domains": [],
                "denied_domains": [],
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
                "allowed": [],
                "denied": [],
                "allowed_domains": [],
                "denied_domains": [],
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

/// Runs shieldctl and checks that it succeeded with nothing on stderr; returns stdout.
fn succeeds(socket: &Path, args: &[&str]) -> String {
    let output = shieldctl(socket, args);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    assert!(output.stderr.is_empty(), "{args:?}: {}", stderr(&output));
    stdout(&output)
}

#[test]
fn allow_sends_every_target_in_one_request_in_order() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    let out = succeeds(
        &socket,
        &["allow", "web", "192.0.2.7", "10.0.0.0/8", "example.com"],
    );
    assert_eq!(
        out,
        "allowed 192.0.2.7 (address)\n\
         already allowed 10.0.0.0/8 (network)\n\
         allowed example.com (domain) → 93.184.216.34, 2606:2800:220:1::\n"
    );
    let changes = daemon.changes.lock().unwrap();
    let [(action, request)] = changes.as_slice() else {
        panic!("expected one request, got {}", changes.len());
    };
    assert_eq!(*action, "allow");
    assert_eq!(request.container, "web");
    assert_eq!(request.targets, ["192.0.2.7", "10.0.0.0/8", "example.com"]);
}

#[test]
fn deny_human_and_json() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    let out = succeeds(&socket, &["deny", "web", "2001:db8::1", "evil.example"]);
    assert_eq!(
        out,
        "denied 2001:db8::1 (address)\ndenied evil.example (domain)\n"
    );

    let out = succeeds(&socket, &["deny", "--json", "web", "10.0.0.0/8"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["action"], "deny");
    assert_eq!(value["container"]["id"], WEB_ID);
    assert_eq!(value["apply_micros"], 42);
    assert_eq!(
        value["changes"],
        serde_json::json!([
            {"target": "10.0.0.0/8", "kind": "network", "changed": false, "resolved": []}
        ])
    );

    let changes = daemon.changes.lock().unwrap();
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|(action, _)| *action == "deny"));
    assert_eq!(changes[0].1.targets, ["2001:db8::1", "evil.example"]);
}

#[test]
fn change_errors_show_the_daemons_message() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    let output = shieldctl(&socket, &["allow", "web", "192.0.2.7", BAD_TARGET]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        format!("shieldctl: {BAD_TARGET_MESSAGE}\n")
    );

    let output = shieldctl(&socket, &["deny", "nope", "192.0.2.7"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "shieldctl: no container matches \"nope\"\n"
    );

    // Missing targets: a usage error, and nothing reaches the daemon.
    let output = shieldctl(&socket, &["allow", "web"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("TARGET"), "{}", stderr(&output));
    assert_eq!(daemon.changes.lock().unwrap().len(), 2);
}

#[test]
fn mode_commands_send_the_mode_and_print_the_transition() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    assert_eq!(succeeds(&socket, &["block", "web"]), "web: up → block\n");
    assert_eq!(succeeds(&socket, &["down", "web"]), "web: up → down\n");
    assert_eq!(
        succeeds(&socket, &["down", "--all", "web"]),
        "web: up → down-all\n"
    );
    assert_eq!(succeeds(&socket, &["up", "web"]), "web: already up\n");
    assert_eq!(succeeds(&socket, &["up", "dev"]), "dev: down-all → up\n");

    let out = succeeds(&socket, &["block", "--json", "dev"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["previous"], "down-all");
    assert_eq!(value["mode"], "block");
    assert_eq!(value["container"]["name"], "dev");
    assert_eq!(value["container"]["mode"], "block");

    let modes: Vec<(String, i32)> = daemon
        .modes
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.container.clone(), r.mode))
        .collect();
    assert_eq!(
        modes,
        [
            ("web".to_owned(), i32::from(Mode::Block)),
            ("web".to_owned(), i32::from(Mode::Down)),
            ("web".to_owned(), i32::from(Mode::DownAll)),
            ("web".to_owned(), i32::from(Mode::Up)),
            ("dev".to_owned(), i32::from(Mode::Up)),
            ("dev".to_owned(), i32::from(Mode::Block)),
        ]
    );

    let output = shieldctl(&socket, &["up", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "shieldctl: no container matches \"nope\"\n"
    );
}

#[test]
fn forget_names_or_every_stopped_container() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    assert_eq!(
        succeeds(&socket, &["forget", "old"]),
        "forgot fedcba987654 (old)\n"
    );
    let out = succeeds(&socket, &["forget", "--stopped", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"forgotten": [{"id": "fedcba9876543210fedcba9876543210", "name": "old"}]})
    );

    // A running container: the daemon's refusal, exit status 1.
    let output = shieldctl(&socket, &["forget", "old", "web"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        "shieldctl: container web (0123456789ab) is running: stop it first\n"
    );

    let sent: Vec<(Vec<String>, bool)> = daemon
        .forgets
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.containers.clone(), r.all_stopped))
        .collect();
    assert_eq!(
        sent,
        [
            (vec!["old".to_owned()], false),
            (vec![], true),
            (vec!["old".to_owned(), "web".to_owned()], false),
        ]
    );

    // Nothing to forget, or both forms at once: usage errors, nothing sent.
    for args in [&["forget"][..], &["forget", "--stopped", "old"][..]] {
        let output = shieldctl(&socket, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains("Usage"), "{}", stderr(&output));
    }
    assert_eq!(daemon.forgets.lock().unwrap().len(), 3);
}

#[test]
fn state_is_one_word() {
    let (_dir, socket) = serve(FakeDaemon::default());
    assert_eq!(succeeds(&socket, &["state", "web"]), "up\n");
    assert_eq!(succeeds(&socket, &["state", "dev"]), "down_all\n");
    assert_eq!(succeeds(&socket, &["state", "old"]), "stopped\n");

    let out = succeeds(&socket, &["state", "--json", "old"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "container": "fedcba9876543210fedcba9876543210",
            "name": "old",
            "state": "stopped",
        })
    );

    let output = shieldctl(&socket, &["state", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        "shieldctl: no container matches \"nope\"\n"
    );
}

#[test]
fn show_lists_the_container() {
    let (_dir, socket) = serve(FakeDaemon::default());
    let out = succeeds(&socket, &["show", "web"]);
    assert!(out.starts_with(&format!(
        "id               {WEB_ID}\nname             web\n"
    )));
    assert!(out.contains("\nmode             up\n"), "{out}");
    let out = succeeds(&socket, &["show", "--json", "web"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["id"], WEB_ID);
    assert_eq!(value["denied"], serde_json::json!([]));
}

#[test]
fn logs_prints_the_stream_then_ends() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    let out = succeeds(&socket, &["logs"]);
    assert_eq!(
        out,
        "2026-11-28T21:00:00.123456Z web          attach  -                  profiles base,dev\n\
         2026-11-28T21:00:01.000001Z web          allow   192.0.2.7\n\
         2026-11-28T21:00:02.500000Z 0123456789ab mode    block              up → block\n"
    );

    let out = succeeds(&socket, &["logs", "web", "-n", "5", "--json"]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[1],
        serde_json::json!({
            "ts": "2026-11-28T21:00:01.000001Z",
            "container": WEB_ID,
            "name": "web",
            "action": "allow",
            "target": "192.0.2.7",
            "detail": "",
        })
    );

    let requests = daemon.logs.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (
            requests[0].container.as_str(),
            requests[0].last,
            requests[0].follow
        ),
        ("", 20, false)
    );
    assert_eq!(
        (
            requests[1].container.as_str(),
            requests[1].last,
            requests[1].follow
        ),
        ("web", 5, false)
    );
}

#[test]
fn logs_error_is_the_daemons_message() {
    let (_dir, socket) = serve(FakeDaemon::default());
    let output = shieldctl(&socket, &["logs", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        "shieldctl: no container matches \"nope\"\n"
    );
}

#[test]
fn logs_follow_runs_until_ctrl_c_and_exits_0() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    let mut child = Command::new(env!("CARGO_BIN_EXE_shieldctl"))
        .args(["logs", "--follow", "-n", "3", "--json"])
        .env_clear()
        .env("SHIELD_SOCKET", &socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    for expected in events() {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ts"], expected.ts);
    }
    // The stream stays open: the command is still running.
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none());
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
    let requests = daemon.logs.lock().unwrap();
    assert_eq!((requests[0].last, requests[0].follow), (3, true));
}

#[test]
fn dns_table_one_row_per_address() {
    let daemon = FakeDaemon::default();
    let (_dir, socket) = serve(daemon.clone());
    assert_eq!(
        succeeds(&socket, &["dns", "web"]),
        "NAME         ADDRESS            EXPIRES\n\
         example.com  93.184.216.34          29s\n\
         \x20            2606:2800:220:1::  59m 58s\n\
         pypi.org     151.101.0.223       4m 59s\n"
    );
    assert_eq!(
        succeeds(&socket, &["dns", "dev"]),
        "dev: no names learnt yet\n"
    );
    assert_eq!(
        succeeds(&socket, &["dns", "old"]),
        "old: no names learnt (the container is stopped)\n"
    );
    let requests: Vec<String> = daemon
        .dns
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.container.clone())
        .collect();
    assert_eq!(requests, ["web", "dev", "old"]);
}

#[test]
fn dns_json() {
    let (_dir, socket) = serve(FakeDaemon::default());
    let out = succeeds(&socket, &["dns", "--json", "web"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "container": WEB_ID,
            "name": "web",
            "state": "running",
            "names": [
                {"name": "example.com", "addresses": [
                    {"address": "93.184.216.34", "expires_in_ms": 29_500},
                    {"address": "2606:2800:220:1::", "expires_in_ms": 3_598_000},
                ]},
                {"name": "pypi.org", "addresses": [
                    {"address": "151.101.0.223", "expires_in_ms": 299_000},
                ]},
            ],
        })
    );

    let out = succeeds(&socket, &["dns", "old", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "container": "fedcba9876543210fedcba9876543210",
            "name": "old",
            "state": "stopped",
            "names": [],
        })
    );
}

#[test]
fn dns_unknown_container_is_the_daemons_message() {
    let (_dir, socket) = serve(FakeDaemon::default());
    for args in [&["dns", "nope"][..], &["dns", "--json", "nope"]] {
        let output = shieldctl(&socket, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert_eq!(
            stderr(&output),
            "shieldctl: no container matches \"nope\"\n"
        );
    }
}
