//! Runs the real `shieldctl` binary's podman commands (`setup`, `prepare`, `run`, `doctor`)
//! against temporary HOME/XDG directories, a fake `shield-hook`, a fake `podman` script that
//! records its arguments, and (for `run`) an in-test daemon that answers `GetStatus`.
//!
//! podman itself is not needed. `CONTAINERS_CONF` points at the user's `containers.conf`: podman
//! reads the user's file only when rootless, and these tests may run as root, so this makes
//! podman's view (and shieldctl's, which follows podman's rules) the same for every uid.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};

use shield_proto::v1;
use shield_proto::v1::shield_server::{Shield, ShieldServer};
use shieldctl::containers_conf::{DEFAULT_HOOKS_DIRS, hooks_dir};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// A daemon that answers only `GetStatus`.
#[derive(Clone, Default)]
struct StatusOnly;

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::AuditEvent, Status>> + Send>>;

fn fake<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("fake"))
}

#[tonic::async_trait]
impl Shield for StatusOnly {
    async fn container_created(
        &self,
        _: Request<v1::ContainerCreatedRequest>,
    ) -> Result<Response<v1::ContainerCreatedResponse>, Status> {
        fake()
    }
    async fn container_stopped(
        &self,
        _: Request<v1::ContainerStoppedRequest>,
    ) -> Result<Response<v1::ContainerStoppedResponse>, Status> {
        fake()
    }
    async fn list_containers(
        &self,
        _: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        fake()
    }
    async fn get_container(
        &self,
        _: Request<v1::GetContainerRequest>,
    ) -> Result<Response<v1::GetContainerResponse>, Status> {
        fake()
    }
    async fn preview_ruleset(
        &self,
        _: Request<v1::PreviewRulesetRequest>,
    ) -> Result<Response<v1::PreviewRulesetResponse>, Status> {
        fake()
    }
    async fn list_profiles(
        &self,
        _: Request<v1::ListProfilesRequest>,
    ) -> Result<Response<v1::ListProfilesResponse>, Status> {
        fake()
    }
    async fn get_status(
        &self,
        _: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        Ok(Response::new(v1::GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        }))
    }
    async fn allow(
        &self,
        _: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        fake()
    }
    async fn deny(
        &self,
        _: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        fake()
    }
    async fn set_mode(
        &self,
        _: Request<v1::SetModeRequest>,
    ) -> Result<Response<v1::SetModeResponse>, Status> {
        fake()
    }
    type LogsStream = EventStream;
    async fn logs(&self, _: Request<v1::LogsRequest>) -> Result<Response<EventStream>, Status> {
        fake()
    }
    async fn get_dns(
        &self,
        _: Request<v1::GetDnsRequest>,
    ) -> Result<Response<v1::GetDnsResponse>, Status> {
        fake()
    }

    async fn forget(
        &self,
        _: Request<v1::ForgetRequest>,
    ) -> Result<Response<v1::ForgetResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves the fake daemon at `socket` from a background thread.
fn serve(socket: &Path) {
    let listener = UnixListener::bind(socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(ShieldServer::new(StatusOnly))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
    });
}

/// A user's world in a temporary directory.
struct World {
    _root: tempfile::TempDir,
    root: PathBuf,
    /// Holds `shield-hook`; `podman` too when [`World::fake_podman`] was called.
    bin: PathBuf,
    socket: PathBuf,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        write_script(&bin.join("shield-hook"), "#!/bin/sh\nexit 0\n");
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        Self {
            _root: dir,
            socket: run.join("shieldd.sock"),
            root,
            bin,
        }
    }

    fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    fn config(&self) -> PathBuf {
        self.home().join(".config")
    }
    fn conf(&self) -> PathBuf {
        self.config().join("containers/containers.conf")
    }
    fn hooks_dir(&self) -> PathBuf {
        self.home().join(".local/share/shield/hooks.d")
    }
    fn hook(&self) -> PathBuf {
        self.bin.join("shield-hook")
    }
    fn podman_log(&self) -> PathBuf {
        self.root.join("podman.argv")
    }

    /// A `podman` that prints `version` for `--version` and otherwise records its argv.
    fn fake_podman(&self, version: &str) {
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'podman version {version}'; exit 0; fi\nprintf '%s\\n' \"$@\" > '{}'\nexit 0\n",
            self.podman_log().display()
        );
        write_script(&self.bin.join("podman"), &script);
    }

    /// What the fake podman was run with (`None`: it never ran `podman run`).
    fn podman_argv(&self) -> Option<Vec<String>> {
        std::fs::read_to_string(self.podman_log())
            .ok()
            .map(|text| text.lines().map(str::to_owned).collect())
    }

    /// Runs shieldctl as this user, with a clean environment.
    fn shieldctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_shieldctl"))
            .args(args)
            .env_clear()
            .env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.root.join("run"))
            .env("SHIELD_SOCKET", &self.socket)
            .env("SHIELD_HOOK", self.hook())
            .env("CONTAINERS_CONF", self.conf())
            // Only the test's own bin directory: a podman installed on the machine must not
            // answer for the fake one, nor be found where a test wants none.
            .env("PATH", &self.bin)
            .output()
            .unwrap()
    }

    fn setup(&self) {
        let output = self.shieldctl(&["setup", "--user"]);
        assert!(output.status.success(), "{}", stderr(&output));
    }

    fn resolv_conf(&self) -> PathBuf {
        self.home().join(".local/state/shield/resolv.conf")
    }
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap()
}

const USER_CONF: &str = "# my podman settings\n[containers]\n# logs\nlog_size_max = 1048576 # bytes\n\n[engine]\n# my runtime\nruntime = \"crun\"\n";

#[test]
fn setup_user_keeps_the_defaults_and_the_users_file_then_restores_it() {
    let world = World::new();
    std::fs::create_dir_all(world.conf().parent().unwrap()).unwrap();
    std::fs::write(world.conf(), USER_CONF).unwrap();

    let output = world.shieldctl(&["setup", "--user"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stderr(&output), "", "no warning expected");
    let text = stdout(&output);
    for (action, file) in [
        ("created", "shield-createruntime.json"),
        ("created", "shield-poststop.json"),
        ("updated", "containers.conf"),
    ] {
        assert!(
            text.lines()
                .any(|line| line.starts_with(action) && line.contains(file)),
            "{action} {file} in:\n{text}"
        );
    }

    for (file, stage) in [
        ("shield-createruntime.json", "createRuntime"),
        ("shield-poststop.json", "poststop"),
    ] {
        let hook: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(world.hooks_dir().join(file)).unwrap())
                .unwrap();
        assert_eq!(
            hook,
            serde_json::json!({
                "version": "1.0.0",
                "hook": {
                    "path": world.hook().to_str().unwrap(),
                    "args": ["shield-hook", stage, "--socket", world.socket.to_str().unwrap()]
                },
                "when": {"annotations": {"^shield\\.profiles$": ".*"}},
                "stages": [stage]
            })
        );
    }

    let conf = std::fs::read_to_string(world.conf()).unwrap();
    for line in USER_CONF.lines() {
        assert!(conf.contains(line), "{line:?} lost from:\n{conf}");
    }
    assert_eq!(
        hooks_dir(&world.conf(), &conf).unwrap().unwrap(),
        [
            DEFAULT_HOOKS_DIRS[0],
            DEFAULT_HOOKS_DIRS[1],
            world.hooks_dir().to_str().unwrap()
        ]
    );

    // A second setup changes nothing and says so.
    let again = world.shieldctl(&["setup", "--user", "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let report = json(&again);
    assert_eq!(report["changed"], false);
    assert_eq!(report["scope"], "user");
    assert!(
        report["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|change| change["action"] == "unchanged"),
        "{report}"
    );
    let human = world.shieldctl(&["setup", "--user"]);
    assert!(
        stdout(&human).contains("nothing to change"),
        "{}",
        stdout(&human)
    );
    assert_eq!(std::fs::read_to_string(world.conf()).unwrap(), conf);

    let removed = world.shieldctl(&["setup", "--user", "--remove"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(
        stdout(&removed).contains("restored"),
        "{}",
        stdout(&removed)
    );
    assert_eq!(std::fs::read(world.conf()).unwrap(), USER_CONF.as_bytes());
    assert!(!world.hooks_dir().exists());
    assert!(!world.home().join(".local").exists());

    let again = world.shieldctl(&["setup", "--user", "--remove"]);
    assert!(again.status.success());
    assert_eq!(stdout(&again), "nothing to remove\n");
}

#[test]
fn setup_user_without_a_conf_creates_it_and_remove_deletes_it() {
    let world = World::new();
    let output = world.shieldctl(&["setup", "--user", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["changed"], true);
    assert_eq!(report["hooks_dir"], world.hooks_dir().to_str().unwrap());
    assert_eq!(report["warnings"], serde_json::json!([]));
    let conf = std::fs::read_to_string(world.conf()).unwrap();
    assert_eq!(
        hooks_dir(&world.conf(), &conf).unwrap().unwrap(),
        [
            DEFAULT_HOOKS_DIRS[0],
            DEFAULT_HOOKS_DIRS[1],
            world.hooks_dir().to_str().unwrap()
        ]
    );

    let removed = world.shieldctl(&["setup", "--user", "--remove", "--json"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(json(&removed)["changed"], true);
    // Everything setup created is gone, the home directory itself stays.
    assert!(world.home().is_dir());
    assert_eq!(std::fs::read_dir(world.home()).unwrap().count(), 0);
}

#[test]
fn setup_refuses_a_missing_hook_binary() {
    let world = World::new();
    std::fs::remove_file(world.hook()).unwrap();
    let output = world.shieldctl(&["setup", "--user"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--hook PATH"),
        "{}",
        stderr(&output)
    );
    assert!(!world.conf().exists());
}

fn expected_args(world: &World, profiles: &str) -> Vec<String> {
    [
        "--name",
        "web",
        "--annotation",
        "shield.name=web",
        "--annotation",
        &format!("shield.profiles={profiles}"),
        "--cap-drop",
        "NET_ADMIN",
        "--cap-drop",
        "NET_RAW",
        "--volume",
        &format!("{}:/etc/resolv.conf:ro", world.resolv_conf().display()),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn prepare_refuses_without_hooks_naming_setup() {
    let world = World::new();
    let output = world.shieldctl(&["prepare", "web"]);
    assert!(!output.status.success());
    assert_eq!(stdout(&output), "");
    assert!(
        stderr(&output).contains("run `shieldctl setup`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn prepare_refuses_hooks_for_another_socket_or_binary() {
    let world = World::new();
    world.setup();
    let other = world.root.join("other.sock");
    let output = Command::new(env!("CARGO_BIN_EXE_shieldctl"))
        .args(["--socket", other.to_str().unwrap(), "prepare", "web"])
        .env_clear()
        .env("HOME", world.home())
        .env("SHIELD_HOOK", world.hook())
        .env("CONTAINERS_CONF", world.conf())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(world.socket.to_str().unwrap()),
        "{message}"
    );
    assert!(message.contains("shieldctl setup"), "{message}");

    let second = world.bin.join("second-hook");
    write_script(&second, "#!/bin/sh\n");
    let output = world.shieldctl(&["prepare", "web", "--hook", second.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("runs"), "{}", stderr(&output));
    assert!(stderr(&output).contains("shieldctl setup"));
}

#[test]
fn prepare_prints_the_arguments_for_a_new_name() {
    let world = World::new();
    world.setup();
    let output = world.shieldctl(&["prepare", "web"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{}\n", expected_args(&world, "").join(" "))
    );
    assert_eq!(
        std::fs::read_to_string(world.resolv_conf())
            .unwrap()
            .lines()
            .last(),
        Some("nameserver 127.0.0.1")
    );

    let output = world.shieldctl(&[
        "prepare",
        "web",
        "--profiles",
        "dev-standard,pypi",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let view = json(&output);
    assert_eq!(view["name"], "web");
    assert_eq!(
        view["profiles"],
        serde_json::json!(["dev-standard", "pypi"])
    );
    assert_eq!(view["network"], "default");
    assert_eq!(view["host_address"], serde_json::Value::Null);
    assert_eq!(
        view["args"],
        serde_json::json!(expected_args(&world, "dev-standard:pypi"))
    );

    let output = world.shieldctl(&["prepare", "bad name"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("invalid container name"));
}

#[test]
fn prepare_adds_the_host_loopback_network_for_the_podman_version() {
    let world = World::new();
    world.setup();
    let config = world.config().join("shield/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "default_profiles = [\"x\"]\nloopback_ports = [8080]\n",
    )
    .unwrap();

    let network = |output: &Output| {
        assert!(output.status.success(), "{}", stderr(output));
        let view = json(output);
        let args: Vec<String> = serde_json::from_value(view["args"].clone()).unwrap();
        let at = args.iter().position(|arg| arg == "--network").unwrap();
        (
            view["network"].clone(),
            args[at + 1].clone(),
            view["host_address"].clone(),
        )
    };
    let (plan, value, host) =
        network(&world.shieldctl(&["prepare", "web", "--json", "--podman-version", "4.3.1"]));
    assert_eq!(plan, "slirp4netns");
    assert_eq!(
        value,
        "slirp4netns:allow_host_loopback=true,cidr=10.0.2.0/24"
    );
    assert_eq!(host, "10.0.2.2");
    let (plan, value, host) =
        network(&world.shieldctl(&["prepare", "web", "--json", "--podman-version", "5.2.0"]));
    assert_eq!(plan, "pasta");
    assert_eq!(value, "pasta:--map-host-loopback,169.254.1.2");
    assert_eq!(host, "169.254.1.2");

    // No podman at all: slirp4netns is assumed, and stderr says so.
    let output = world.shieldctl(&["prepare", "web", "--json"]);
    assert!(
        stderr(&output).contains("podman not found"),
        "{}",
        stderr(&output)
    );
    assert_eq!(network(&output).0, "slirp4netns");
    // The installed podman's version decides.
    world.fake_podman("4.9.3");
    assert_eq!(
        network(&world.shieldctl(&["prepare", "web", "--json"])).0,
        "pasta"
    );
}

#[test]
fn run_refuses_every_argument_that_undoes_the_shield() {
    let world = World::new();
    world.fake_podman("4.3.1");
    let cases: &[(&[&str], &str)] = &[
        (&["--name", "x", "img"], "--name"),
        (&["--name=x", "img"], "--name"),
        (&["--network", "host", "img"], "--network"),
        (&["--network=host", "img"], "--network"),
        (&["--net", "host", "img"], "--net"),
        (&["--net=none", "img"], "--net"),
        (&["--hooks-dir", "/x", "img"], "--hooks-dir"),
        (&["--hooks-dir=/x", "img"], "--hooks-dir"),
        (
            &["--annotation", "shield.profiles=x", "img"],
            "--annotation",
        ),
        (&["--annotation=shield.name=y", "img"], "--annotation"),
        (&["--cap-add", "NET_ADMIN", "img"], "--cap-add"),
        (&["--cap-add=net_raw", "img"], "--cap-add"),
        (&["--cap-add", "CAP_NET_RAW", "img"], "--cap-add"),
        (&["--cap-add=ALL", "img"], "--cap-add"),
        (&["--privileged", "img"], "--privileged"),
        (
            &["--security-opt", "seccomp=unconfined", "img"],
            "--security-opt",
        ),
        (&["--security-opt=label=disable", "img"], "--security-opt"),
        (&["--pod", "p", "img"], "--pod"),
        (&["--pod=p", "img"], "--pod"),
        (&["--userns", "host", "img"], "--userns"),
        (&["--userns=host", "img"], "--userns"),
        (&["-v", "/x:/etc/resolv.conf", "img"], "-v"),
        (&["--volume=/x:/etc/resolv.conf:ro", "img"], "--volume"),
        (
            &["--mount", "type=bind,src=/x,dst=/etc/resolv.conf", "img"],
            "--mount",
        ),
        (&["--dns", "1.1.1.1", "img"], "--dns"),
        (&["--dns=1.1.1.1", "img"], "--dns"),
        (
            &["-it", "--rm", "--privileged", "img", "sh"],
            "--privileged",
        ),
    ];
    for (args, flag) in cases {
        let mut argv = vec!["run", "web", "--"];
        argv.extend_from_slice(args);
        let output = world.shieldctl(&argv);
        assert!(!output.status.success(), "{args:?} was accepted");
        let message = stderr(&output);
        assert!(
            message.starts_with(&format!("shieldctl: refusing {flag}: ")),
            "{args:?}: {message}"
        );
    }
    assert_eq!(world.podman_argv(), None, "podman must not have run");
}

#[test]
fn run_refuses_without_hooks_or_daemon() {
    let world = World::new();
    world.fake_podman("4.3.1");
    serve(&world.socket);
    let output = world.shieldctl(&["run", "web", "--", "alpine"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("shieldctl setup"),
        "{}",
        stderr(&output)
    );

    // Hooks for a socket where no daemon listens.
    let world = World::new();
    world.fake_podman("4.3.1");
    world.setup();
    let output = world.shieldctl(&["run", "web", "--", "alpine"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("cannot reach shieldd"), "{message}");
    assert!(
        message.contains(world.socket.to_str().unwrap()),
        "{message}"
    );
    assert_eq!(world.podman_argv(), None, "podman must not have run");
}

#[test]
fn run_execs_podman_with_shield_arguments_then_the_users() {
    let world = World::new();
    world.fake_podman("4.3.1");
    serve(&world.socket);
    world.setup();
    let output = world.shieldctl(&[
        "run",
        "web",
        "--profiles",
        "dev-standard",
        "--",
        "--rm",
        "-it",
        "alpine",
        "sh",
        "-c",
        "echo --privileged",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut expected = vec!["run".to_owned()];
    expected.extend(expected_args(&world, "dev-standard"));
    expected.extend(["--rm", "-it", "alpine", "sh", "-c", "echo --privileged"].map(str::to_owned));
    assert_eq!(world.podman_argv().unwrap(), expected);
    assert!(world.resolv_conf().is_file());
}

#[test]
fn run_with_loopback_ports_asks_podman_its_version() {
    let world = World::new();
    world.fake_podman("4.3.1");
    serve(&world.socket);
    world.setup();
    let config = world.config().join("shield/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "loopback_ports = [5432]\n").unwrap();
    let output = world.shieldctl(&["run", "db", "--", "alpine"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let argv = world.podman_argv().unwrap();
    let at = argv.iter().position(|arg| arg == "--network").unwrap();
    assert_eq!(
        argv[at + 1],
        "slirp4netns:allow_host_loopback=true,cidr=10.0.2.0/24"
    );
    assert_eq!(argv.last().unwrap(), "alpine");
}

#[test]
fn doctor_reports_each_finding_and_fails_without_podman() {
    let world = World::new();
    let output = world.shieldctl(&["doctor"]);
    assert!(!output.status.success());
    let text = stdout(&output);
    assert!(text.starts_with("STATUS"), "{text}");
    let podman_line = text.lines().find(|line| line.contains("podman ")).unwrap();
    assert!(podman_line.starts_with("FAIL"), "{text}");
    assert!(text.contains("fix: shieldctl setup"), "{text}");
    assert!(
        stderr(&output).contains("check(s) failed"),
        "{}",
        stderr(&output)
    );

    let output = world.shieldctl(&["doctor", "--json"]);
    assert!(!output.status.success());
    let view = json(&output);
    assert_eq!(view["ok"], false);
    let findings = view["findings"].as_array().unwrap();
    let checks: Vec<&str> = findings
        .iter()
        .map(|finding| finding["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        [
            "podman",
            "hooks",
            "daemon",
            "socket",
            "nf_tables",
            "subids",
            "cgroups",
            "tun"
        ]
    );
    assert_eq!(findings[0]["status"], "fail");
    assert!(findings[0]["fix"].as_str().unwrap().contains("podman"));
}

#[test]
fn doctor_sees_installed_hooks_and_a_live_daemon() {
    let world = World::new();
    world.fake_podman("4.3.1");
    serve(&world.socket);
    world.setup();
    let output = world.shieldctl(&["doctor", "--json"]);
    let view = json(&output);
    let status = |check: &str| {
        view["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|finding| finding["check"] == check)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("podman"), "ok", "{view}");
    assert_eq!(status("hooks"), "ok", "{view}");
    assert_eq!(status("daemon"), "ok", "{view}");
    // Whether the whole verdict is ok depends on this machine (cgroups, tun, nf_tables).
    assert_eq!(output.status.success(), view["ok"] == true);
}
