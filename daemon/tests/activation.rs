//! shieldd under systemd: the socket passed by socket activation (with the real
//! `systemd-socket-activate`), readiness and stopping notifications on `$NOTIFY_SOCKET`, and
//! refusing socket activation it cannot serve.
//!
//! The async tests run on a multi-threaded runtime: they block their thread while waiting for
//! the daemon to exit, and the gRPC client's connection task must meanwhile answer the daemon's
//! graceful shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shield_proto::v1 as pb;

const SHIELDD: &str = env!("CARGO_BIN_EXE_shieldd");
const DEADLINE: Duration = Duration::from_secs(20);

/// Temporary XDG directories for one daemon, its log, and a seeded state store.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "run", "config", "state"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let sandbox = Self { dir };
        // A container the daemon knew and that has stopped: restore() must load it before the
        // daemon declares itself ready.
        let store = shieldd::store::Store::open(&sandbox.path("state/shield")).unwrap();
        store
            .save(&shieldd::store::ContainerState::new(
                "c0ffee",
                "restored",
                vec!["base".to_owned()],
            ))
            .unwrap();
        sandbox
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// What the daemon would bind without `--socket` (as a user; root's is `/run/shield`).
    fn default_socket(&self) -> PathBuf {
        self.path("run/shield/shieldd.sock")
    }

    fn environment(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("HOME", self.path("home")),
            ("XDG_RUNTIME_DIR", self.path("run")),
            ("XDG_CONFIG_HOME", self.path("config")),
            ("XDG_STATE_HOME", self.path("state")),
            ("SHIELD_LOG", PathBuf::from("debug")),
        ]
    }

    /// `program` with a clean environment: PATH and the sandbox's directories only; output to
    /// the log file (a pipe nobody reads could fill up and stall the daemon).
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(self.environment())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(self.log_file())
            .stderr(self.log_file());
        cmd
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("log"))
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }
}

fn wait_until(what: &str, sandbox: &Sandbox, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}; log:\n{}",
            sandbox.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child, sandbox: &Sandbox) -> ExitStatus {
    let mut status = None;
    wait_until("the daemon exits", sandbox, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

fn terminate(child: &mut Child, sandbox: &Sandbox) -> ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_exit(child, sandbox)
}

/// Kills the child if a test fails before it has stopped it.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `GetStatus` on `socket`, connecting again until the daemon listens (it may not have bound its
/// socket yet).
async fn status(socket: &Path) -> pb::GetStatusResponse {
    let start = Instant::now();
    let mut client = loop {
        match shield_proto::client::connect(socket, DEADLINE).await {
            Ok(client) => break client,
            Err(err) if start.elapsed() > DEADLINE => {
                panic!("connect {}: {err}", socket.display())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    client
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// `systemd-socket-activate -l SOCKET shieldd [ARGS]`, passing the sandbox's environment (the
/// activator passes on only PATH, HOME, TERM and USER unless told with `-E`).
fn socket_activate(sandbox: &Sandbox, socket: &Path, shieldd_args: &[&Path]) -> Reaper {
    let mut cmd = sandbox.command("systemd-socket-activate");
    cmd.arg("--listen").arg(socket);
    for (name, value) in sandbox.environment() {
        cmd.arg(format!("--setenv={name}={}", value.display()));
    }
    cmd.arg(SHIELDD).args(shieldd_args);
    let child = cmd
        .spawn()
        .expect("spawn systemd-socket-activate (Debian package `systemd`; .ci/run installs it)");
    wait_until("systemd-socket-activate listens", sandbox, || {
        socket.exists()
    });
    Reaper(child)
}

async fn serves_the_passed_socket(extra_args: &[&Path]) -> Sandbox {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path("activated")).unwrap();
    let socket = sandbox.path("activated/shieldd.sock");
    let mut activator = socket_activate(&sandbox, &socket, extra_args);

    // The first connection makes the activator exec shieldd with the socket as fd 3.
    let status = status(&socket).await;
    assert_eq!(status.socket, socket.display().to_string());
    assert_eq!(status.containers_stopped, 1, "restored before serving");
    assert!(
        !sandbox.default_socket().exists() && !sandbox.path("run/shield").exists(),
        "an activated daemon binds no socket of its own"
    );

    // The activator has exec'd into shieldd: same pid.
    let exit = terminate(&mut activator.0, &sandbox);
    assert!(exit.success(), "{exit}; log:\n{}", sandbox.log());
    assert!(
        socket.exists(),
        "the socket belongs to the service manager and stays after shutdown"
    );
    let log = sandbox.log();
    assert!(log.contains("activated=true"), "{log}");
    sandbox
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_socket_systemd_passes() {
    serves_the_passed_socket(&[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_activated_socket_wins_over_socket_option() {
    let own = PathBuf::from("own.sock");
    let sandbox = serves_the_passed_socket(&[Path::new("--socket"), &own]).await;
    assert!(!sandbox.path("own.sock").exists());
    assert!(
        sandbox.log().contains("--socket ignored"),
        "{}",
        sandbox.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_after_restore_and_stopping_on_shutdown() {
    let sandbox = Sandbox::new();
    let notify_path = sandbox.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(DEADLINE)).unwrap();
    let socket = sandbox.path("own/shieldd.sock");
    let mut daemon = Reaper(
        sandbox
            .command(SHIELDD)
            .arg("--socket")
            .arg(&socket)
            .env("NOTIFY_SOCKET", &notify_path)
            .spawn()
            .unwrap(),
    );

    let mut buf = [0_u8; 256];
    let len = notify
        .recv(&mut buf)
        .unwrap_or_else(|err| panic!("no READY=1: {err}; log:\n{}", sandbox.log()));
    assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), "READY=1\n");
    // Ready means serving, with the stored containers already restored.
    let status = status(&socket).await;
    assert_eq!(status.containers_stopped, 1);
    assert_eq!(status.socket, socket.display().to_string());

    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let len = notify.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), "STOPPING=1\n");
    let exit = wait_exit(&mut daemon.0, &sandbox);
    assert!(exit.success(), "{exit}; log:\n{}", sandbox.log());
    assert!(!socket.exists(), "a socket the daemon bound is removed");
    // Nothing else was sent.
    notify.set_nonblocking(true).unwrap();
    assert!(notify.recv(&mut buf).is_err());
}

/// Runs `shieldd --socket own.sock` from `sh -c SCRIPT`, whose `exec "$0" "$@"` replaces the
/// shell (same pid, so `LISTEN_PID=$$` names shieldd); returns its exit status and the log.
fn run_under_shell(sandbox: &Sandbox, script: &str) -> (ExitStatus, String) {
    let mut child = Reaper(
        sandbox
            .command("sh")
            .arg("-c")
            .arg(script)
            .arg(SHIELDD)
            .arg("--socket")
            .arg(sandbox.path("own.sock"))
            .spawn()
            .unwrap(),
    );
    let exit = wait_exit(&mut child.0, sandbox);
    (exit, sandbox.log())
}

#[test]
fn two_passed_sockets_are_refused() {
    let sandbox = Sandbox::new();
    let (exit, log) = run_under_shell(&sandbox, r#"LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" "$@""#);
    assert_eq!(exit.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "shieldd: socket activation: LISTEN_FDS=2, but shieldd serves exactly one socket"
        ),
        "{log}"
    );
    assert!(
        !sandbox.path("own.sock").exists(),
        "no socket of its own either"
    );
}

#[test]
fn a_passed_descriptor_that_is_not_a_socket_is_refused() {
    let sandbox = Sandbox::new();
    let (exit, log) = run_under_shell(
        &sandbox,
        r#"exec 3</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#,
    );
    assert_eq!(exit.code(), Some(1), "{log}");
    assert!(
        log.contains("socket activation: fd 3 is not a usable socket: ENOTSOCK"),
        "{log}"
    );
    assert!(!sandbox.path("own.sock").exists());
}

#[test]
fn a_missing_descriptor_is_refused() {
    let sandbox = Sandbox::new();
    let (exit, log) = run_under_shell(
        &sandbox,
        r#"exec 3<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#,
    );
    assert_eq!(exit.code(), Some(1), "{log}");
    assert!(
        log.contains("socket activation: cannot take fd 3: Bad file descriptor"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_for_another_process_are_ignored() {
    let sandbox = Sandbox::new();
    let socket = sandbox.path("own.sock");
    // pid 1 is never shieldd here; LISTEN_FDS=2 would be an error were it meant for us.
    let mut daemon = Reaper(
        sandbox
            .command(SHIELDD)
            .arg("--socket")
            .arg(&socket)
            .env("LISTEN_PID", "1")
            .env("LISTEN_FDS", "2")
            .spawn()
            .unwrap(),
    );
    let status = status(&socket).await;
    assert_eq!(status.socket, socket.display().to_string());
    let exit = terminate(&mut daemon.0, &sandbox);
    assert!(exit.success(), "{exit}; log:\n{}", sandbox.log());
    assert!(!socket.exists(), "its own socket is removed on shutdown");
}

/// Records what `run` tells its lifecycle, in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<&'static str>>);

impl shieldd::activation::Lifecycle for Recorder {
    fn ready(&self) {
        self.0.lock().unwrap().push("ready");
    }
    fn stopping(&self) {
        self.0.lock().unwrap().push("stopping");
    }
}

impl Recorder {
    fn events(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

/// In process: `run` on a socket someone else bound (as systemd does) tells its lifecycle, and
/// leaves the socket file in place.
#[tokio::test(flavor = "multi_thread")]
async fn run_tells_its_lifecycle_and_leaves_a_passed_socket() {
    let sandbox = Sandbox::new();
    let socket = sandbox.path("passed.sock");
    let std_listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(std_listener).unwrap();
    let recorder = Arc::new(Recorder::default());
    let options = shieldd::Options {
        config: shieldd::config::Config::default(),
        dirs: shieldd::config::Dirs {
            config: sandbox.path("config/shield"),
            state: sandbox.path("state/shield"),
        },
        socket: socket.clone(),
        socket_owner: shieldd::SocketOwner::ServiceManager,
        helper: shieldd::netns::HelperCommand::new(PathBuf::from(SHIELDD)),
        lifecycle: Arc::clone(&recorder) as Arc<dyn shieldd::activation::Lifecycle>,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shieldd::run(options, listener, async {
        let _ = stopped.await;
    }));

    let status = status(&socket).await;
    assert_eq!(status.containers_stopped, 1);
    assert_eq!(recorder.events(), ["ready"]);

    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(recorder.events(), ["ready", "stopping"]);
    assert!(
        socket.exists(),
        "a passed socket is not the daemon's to remove"
    );
}

/// Runs the daemon with `JOURNAL_STREAM` set to `stream` until it answers, stops it, and
/// returns its stderr.
async fn log_with_journal_stream(stream: impl FnOnce(&Sandbox) -> String) -> String {
    let sandbox = Sandbox::new();
    let socket = sandbox.path("own.sock");
    let mut daemon = Reaper(
        sandbox
            .command(SHIELDD)
            .arg("--socket")
            .arg(&socket)
            .env("JOURNAL_STREAM", stream(&sandbox))
            .spawn()
            .unwrap(),
    );
    status(&socket).await;
    let exit = terminate(&mut daemon.0, &sandbox);
    assert!(exit.success(), "{exit}; log:\n{}", sandbox.log());
    sandbox.log()
}

#[tokio::test(flavor = "multi_thread")]
async fn stderr_that_is_the_journal_stream_logs_to_the_journal() {
    use std::os::unix::fs::MetadataExt as _;
    let log = log_with_journal_stream(|sandbox| {
        // The log file is the daemon's stderr: as if systemd had connected it to the journal.
        let stderr = sandbox.log_file().metadata().unwrap();
        format!("{}:{}", stderr.dev(), stderr.ino())
    })
    .await;
    if Path::new("/run/systemd/journal/socket").exists() {
        assert!(!log.contains("shieldd listening"), "went to stderr:\n{log}");
    } else {
        // No journald on this machine (CI, containers): the daemon still logs, to stderr.
        assert!(
            log.contains("cannot open the journal's socket; logging to stderr"),
            "{log}"
        );
        assert!(log.contains("shieldd listening"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_stream_that_is_not_stderr_is_ignored() {
    // Inherited from a parent whose stderr was the journal; this stderr is a file.
    let log = log_with_journal_stream(|_| "0:0".to_owned()).await;
    assert!(log.contains("shieldd listening"), "{log}");
    assert!(!log.contains("journal's socket"), "{log}");
}

/// The workspace's `systemd/` directory.
fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// `systemd-analyze verify` on the units, with `ExecStart=` pointed at the built binary (it
/// checks that the command exists): no unknown keys, no bad values.
#[test]
fn the_unit_files_verify() {
    for (units, user) in [(units_dir(), true), (units_dir().join("system"), false)] {
        let dir = tempfile::tempdir().unwrap();
        for name in ["shieldd.socket", "shieldd.service"] {
            let text = std::fs::read_to_string(units.join(name)).unwrap();
            let text = text.replace(
                "ExecStart=/usr/local/bin/shieldd",
                &format!("ExecStart={SHIELDD}"),
            );
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let runtime = dir.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        let mut cmd = Command::new("systemd-analyze");
        if user {
            cmd.arg("--user");
        }
        let output = cmd
            .args([
                "verify",
                "--man=no",
                "./shieldd.socket",
                "./shieldd.service",
            ])
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .expect("run systemd-analyze (Debian package `systemd`)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.trim().is_empty(),
            "{}: {}\n{stderr}",
            units.display(),
            output.status
        );
    }
}

/// The settings that would keep the daemon's helper out of the containers' namespaces are
/// absent: in every unit, a private user namespace, namespace restrictions, hidden processes and
/// syscall filters; in user units also every option that needs a mount namespace (which systemd
/// gives a user service only with a private user namespace).
#[test]
fn the_units_do_not_break_namespace_entry() {
    let everywhere = [
        "PrivateUsers=",
        "RestrictNamespaces=",
        "ProtectProc=",
        "SystemCallFilter=",
    ];
    let mount_namespace = [
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "PrivateDevices=",
        "PrivateNetwork=",
        "PrivateIPC=",
        "PrivateMounts=",
        "ProtectKernelTunables=",
        "ProtectKernelModules=",
        "ProtectKernelLogs=",
        "ProtectControlGroups=",
        "ProtectClock=",
        "ProtectHostname=",
        "ReadOnlyPaths=",
        "ReadWritePaths=",
        "InaccessiblePaths=",
        "TemporaryFileSystem=",
    ];
    let settings = |path: PathBuf| -> Vec<String> {
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let user = settings(units_dir().join("shieldd.service"));
    let system = settings(units_dir().join("system/shieldd.service"));
    for (lines, forbidden) in [
        (&user, [&everywhere[..], &mount_namespace[..]].concat()),
        (&system, everywhere.to_vec()),
    ] {
        for key in forbidden {
            assert!(
                !lines.iter().any(|line| line.starts_with(key)),
                "{key} must not be set"
            );
        }
    }
    // And what the service must be.
    for lines in [&user, &system] {
        for required in [
            "Type=notify",
            "NotifyAccess=main",
            "Restart=on-failure",
            "ExecStart=/usr/local/bin/shieldd",
            "NoNewPrivileges=yes",
        ] {
            assert!(
                lines.iter().any(|line| line == required),
                "{required} missing"
            );
        }
    }
}
