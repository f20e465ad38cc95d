//! Runs the real `shield-hook` binary the way a runtime does: empty environment, state on stdin.
//!
//! The daemon is replaced by an in-test tonic server with canned answers (the layer above is
//! faked; the hook itself is real).
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shield_proto::v1::shield_server::{Shield, ShieldServer};
use shield_proto::v1::{self, OciState};
use tonic::{Code, Request, Response, Status};

const ID: &str = "0123abcd4567ef890123abcd4567ef890123abcd4567ef890123abcd4567ef89";

fn create_state() -> String {
    format!(
        r#"{{"ociVersion":"1.0.2-dev","id":"{ID}","status":"created","pid":4242,"bundle":"/b",
        "annotations":{{"shield.profiles":"base","shield.name":"web"}}}}"#
    )
}

fn poststop_state() -> String {
    format!(r#"{{"ociVersion":"1.0.2-dev","id":"{ID}","status":"stopped","bundle":"/b"}}"#)
}

/// Runs the hook with an empty environment (as at poststop: not even PATH).
fn hook(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shield-hook"))
        .args(args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The hook may exit before reading everything (usage errors): ignore EPIPE.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().unwrap()
}

/// The single stderr line, checked to be exactly one line with the hook's prefix.
fn one_line(output: &Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr:?}");
    assert!(stderr.ends_with('\n'), "stderr: {stderr:?}");
    let line = stderr.trim_end().to_owned();
    assert!(line.starts_with("shield-hook: "), "{line}");
    line
}

fn socket_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn garbage_stdin_fails_with_one_line() {
    for stage in ["createRuntime", "poststop"] {
        let output = hook(&[stage, "--socket", "/nonexistent/shieldd.sock"], "garbage");
        assert_eq!(output.status.code(), Some(1), "{stage}");
        let line = one_line(&output);
        assert!(line.contains("invalid OCI state on stdin"), "{line}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn usage_errors_exit_2() {
    let output = hook(
        &["createRuntime", "--socket", "relative.sock"],
        &create_state(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(one_line(&output).contains("--socket must be an absolute path"));
    let output = hook(&["prestart", "--socket", "/s"], &create_state());
    assert_eq!(output.status.code(), Some(2));
    assert!(one_line(&output).contains("unknown stage"));
}

#[test]
fn no_socket_fails_create_runtime_but_not_poststop() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shieldd.sock");
    let output = hook(
        &["createRuntime", "--socket", socket_arg(&socket)],
        &create_state(),
    );
    assert_eq!(output.status.code(), Some(1));
    let line = one_line(&output);
    assert_eq!(
        line,
        format!(
            "shield-hook: cannot reach shieldd at {}: no such file (is shieldd running? \
             start it with 'shieldd &' or 'systemctl --user start shieldd.socket')",
            socket.display()
        )
    );

    let output = hook(
        &["poststop", "--socket", socket_arg(&socket)],
        &poststop_state(),
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(one_line(&output).contains("nothing left to protect for container 0123abcd4567"));
}

#[test]
fn listener_that_never_answers_hits_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shieldd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accept and hold every connection, never write a byte.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let output = hook(
        &[
            "createRuntime",
            "--socket",
            socket_arg(&socket),
            "--timeout",
            "300ms",
        ],
        &create_state(),
    );
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1));
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let line = one_line(&output);
    assert!(
        line.starts_with("shield-hook: no answer from shieldd within 300ms"),
        "{line}"
    );
}

#[test]
fn daemon_that_drops_connections_fails_create_runtime() {
    // What a daemon does with a peer whose uid it does not accept: close the stream at once.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shieldd.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    for (stage, state) in [
        ("createRuntime", create_state()),
        ("poststop", poststop_state()),
    ] {
        let output = hook(&[stage, "--socket", socket_arg(&socket)], &state);
        assert_eq!(output.status.code(), Some(1), "{stage}");
        let line = one_line(&output);
        assert!(line.contains(&socket.display().to_string()), "{line}");
        assert!(
            line.contains("is this uid allowed to use the daemon?"),
            "{line}"
        );
    }
}

/// What the fake daemon answers.
#[derive(Clone)]
enum Answer {
    Ok,
    Fail(Code, &'static str),
}

#[derive(Clone)]
struct FakeDaemon {
    answer: Answer,
    seen: Arc<Mutex<Vec<(&'static str, OciState)>>>,
}

impl FakeDaemon {
    fn answer(&self) -> Result<(), Status> {
        match &self.answer {
            Answer::Ok => Ok(()),
            Answer::Fail(code, message) => Err(Status::new(*code, *message)),
        }
    }

    fn record(&self, call: &'static str, state: Option<OciState>) {
        self.seen
            .lock()
            .unwrap()
            .push((call, state.unwrap_or_default()));
    }
}

#[tonic::async_trait]
impl Shield for FakeDaemon {
    async fn container_created(
        &self,
        request: Request<v1::ContainerCreatedRequest>,
    ) -> Result<Response<v1::ContainerCreatedResponse>, Status> {
        self.record("created", request.into_inner().state);
        self.answer()?;
        Ok(Response::new(v1::ContainerCreatedResponse::default()))
    }

    async fn container_stopped(
        &self,
        request: Request<v1::ContainerStoppedRequest>,
    ) -> Result<Response<v1::ContainerStoppedResponse>, Status> {
        self.record("stopped", request.into_inner().state);
        self.answer()?;
        Ok(Response::new(v1::ContainerStoppedResponse { known: true }))
    }

    async fn list_containers(
        &self,
        _: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_container(
        &self,
        _: Request<v1::GetContainerRequest>,
    ) -> Result<Response<v1::GetContainerResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn preview_ruleset(
        &self,
        _: Request<v1::PreviewRulesetRequest>,
    ) -> Result<Response<v1::PreviewRulesetResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_profiles(
        &self,
        _: Request<v1::ListProfilesRequest>,
    ) -> Result<Response<v1::ListProfilesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_status(
        &self,
        _: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn allow(
        &self,
        _: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn deny(
        &self,
        _: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn set_mode(
        &self,
        _: Request<v1::SetModeRequest>,
    ) -> Result<Response<v1::SetModeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type LogsStream = tokio_stream::Empty<Result<v1::AuditEvent, Status>>;

    async fn logs(
        &self,
        _: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_dns(
        &self,
        _: Request<v1::GetDnsRequest>,
    ) -> Result<Response<v1::GetDnsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn forget(
        &self,
        _: Request<v1::ForgetRequest>,
    ) -> Result<Response<v1::ForgetResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `daemon` on a fresh socket from a background thread; returns the socket path.
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

fn fake(answer: Answer) -> FakeDaemon {
    FakeDaemon {
        answer,
        seen: Arc::default(),
    }
}

#[test]
fn daemon_ok_exits_0_silently_and_forwards_the_state() {
    let daemon = fake(Answer::Ok);
    let (_dir, socket) = serve(daemon.clone());
    let output = hook(
        &["createRuntime", "--socket", socket_arg(&socket)],
        &create_state(),
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");

    let output = hook(
        &["poststop", "--socket", socket_arg(&socket)],
        &poststop_state(),
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");

    let seen = daemon.seen.lock().unwrap();
    let [(first, created), (second, stopped)] = seen.as_slice() else {
        panic!("expected two calls, got {}", seen.len());
    };
    assert_eq!((*first, *second), ("created", "stopped"));
    assert_eq!(created.id, ID);
    assert_eq!(created.pid, 4242);
    assert_eq!(created.status, "created");
    assert_eq!(created.bundle, "/b");
    assert_eq!(created.annotations["shield.profiles"], "base");
    assert_eq!(stopped.id, ID);
    assert_eq!(stopped.pid, 0);
}

#[test]
fn daemon_error_fails_with_its_message() {
    let (_dir, socket) = serve(fake(Answer::Fail(
        Code::FailedPrecondition,
        "ruleset verification failed: chain output has policy accept",
    )));
    let output = hook(
        &["createRuntime", "--socket", socket_arg(&socket)],
        &create_state(),
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        one_line(&output),
        "shield-hook: daemon refused container 0123abcd4567: \
         ruleset verification failed: chain output has policy accept"
    );

    let output = hook(
        &["poststop", "--socket", socket_arg(&socket)],
        &poststop_state(),
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        one_line(&output)
            .starts_with("shield-hook: daemon failed to release container 0123abcd4567: ")
    );
}
