//! The real `shieldd`, started on temporary XDG directories, optionally as another uid.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bins;
use crate::hook::{Hook, Stage};
use crate::netns::Owner;

/// How to start a [`Daemon`].
#[derive(Clone, Debug)]
pub struct DaemonBuilder {
    owner: Owner,
    profiles: Vec<(String, String)>,
    config: Option<String>,
    default_socket: bool,
    log_level: Option<String>,
}

impl DaemonBuilder {
    /// `SHIELD_LOG` for the daemon (default: `SHIELD_TEST_LOG`, else `debug`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.to_string());
        self
    }

    /// Runs the daemon as `owner` (default root).
    pub fn owner(mut self, owner: Owner) -> Self {
        self.owner = owner;
        self
    }

    /// Writes user profile `$XDG_CONFIG_HOME/shield/profiles/NAME.txt`.
    pub fn profile(mut self, name: &str, content: &str) -> Self {
        self.profiles.push((name.to_string(), content.to_string()));
        self
    }

    /// Writes `$XDG_CONFIG_HOME/shield/config.toml`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_string());
        self
    }

    /// Starts the daemon without `--socket`: it must pick `$XDG_RUNTIME_DIR/shield/shieldd.sock`
    /// itself. Only for a non-root owner (root's default is the system-wide `/run/shield`).
    pub fn default_socket(mut self) -> Self {
        assert_ne!(
            self.owner,
            Owner::Root,
            "root's default socket is system-wide"
        );
        self.default_socket = true;
        self
    }

    /// Starts `shieldd` and waits until its socket listens (10 s at most).
    pub fn start(self) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("shield-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let owner = self.owner;
        let mkdir = |rel: &str| {
            let p = root.join(rel);
            fs::create_dir_all(&p).expect("mkdir");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod");
            owner.chown(&p);
            p
        };
        owner.chown(&root);
        let run = mkdir("run");
        mkdir("config");
        mkdir("config/shield");
        let profiles = mkdir("config/shield/profiles");
        mkdir("state");
        mkdir("home");
        for (name, content) in &self.profiles {
            let p = profiles.join(format!("{name}.txt"));
            fs::write(&p, content).expect("write profile");
            owner.chown(&p);
        }
        if let Some(toml) = &self.config {
            let p = root.join("config/shield/config.toml");
            fs::write(&p, toml).expect("write config");
            owner.chown(&p);
        }
        // A user may not be able to reach the build directory (a checkout under /root): give it
        // copies of the binaries in a directory it owns.
        let bin_dir = match owner {
            Owner::Root => bins::bin_dir(),
            Owner::User { .. } => {
                let b = root.join("bin");
                fs::create_dir_all(&b).expect("mkdir bin");
                fs::set_permissions(&b, fs::Permissions::from_mode(0o755)).expect("chmod");
                for name in [bins::SHIELDD, bins::SHIELD_HOOK, bins::SHIELDCTL] {
                    bins::place(name, &b.join(name));
                }
                b
            }
        };
        if owner == Owner::Root {
            // Check presence and freshness of all three up front.
            for name in [bins::SHIELDD, bins::SHIELD_HOOK, bins::SHIELDCTL] {
                bins::bin(name);
            }
        }
        let socket = run.join("shield/shieldd.sock");
        let log_path = root.join("shieldd.log");
        let log_level = self.log_level.clone().unwrap_or_else(|| {
            std::env::var("SHIELD_TEST_LOG").unwrap_or_else(|_| "debug".to_string())
        });
        let mut daemon = Daemon {
            child: None,
            socket,
            log_path,
            owner,
            bin_dir,
            default_socket: self.default_socket,
            log_level,
            dir,
        };
        daemon.launch();
        daemon
    }
}

/// A running `shieldd` on its own temporary directories:
/// `XDG_RUNTIME_DIR=DIR/run`, `XDG_CONFIG_HOME=DIR/config`, `XDG_STATE_HOME=DIR/state`,
/// socket `DIR/run/shield/shieldd.sock`, log (stdout+stderr) in `DIR/shieldd.log`.
///
/// Dropped: SIGTERM, then SIGKILL after 5 s; the log is printed if the test is panicking. Call
/// [`Daemon::stop`] to check a clean shutdown. [`Daemon::kill_with`] then [`Daemon::restart`]
/// restart it on the same directories (state and config kept, log appended).
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log_path: PathBuf,
    owner: Owner,
    bin_dir: PathBuf,
    default_socket: bool,
    log_level: String,
    // Last: removed after the process is gone.
    dir: tempfile::TempDir,
}

/// Whether a Unix socket bound at `path` is listening in this network namespace
/// (`/proc/net/unix`, flag `__SO_ACCEPTCON`), without connecting to it.
pub fn unix_socket_listening(path: &Path) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() >= 8 && cols[7] == want && cols[3] == "00010000"
    })
}

impl Daemon {
    /// Starts building a daemon (root, no profiles, no config).
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            owner: Owner::Root,
            profiles: Vec::new(),
            config: None,
            default_socket: false,
            log_level: None,
        }
    }

    /// Spawns `shieldd` on this daemon's directories (the log is appended to) and waits until
    /// its socket listens.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "shieldd is already running");
        let root = self.dir.path().to_path_buf();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let mut cmd = Command::new(self.bin_dir.join(bins::SHIELDD));
        if !self.default_socket {
            cmd.arg("--socket").arg(&self.socket);
        }
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", root.join("home"))
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_STATE_HOME", root.join("state"))
            .env("SHIELD_LOG", &self.log_level)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        self.owner.apply(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn shieldd"));
        self.wait_listening();
    }

    /// Sends `signal` and waits (10 s at most) until the daemon exits; returns its status without
    /// judging it (SIGKILL is a crash on purpose). The directories stay: [`Daemon::restart`]
    /// starts a new daemon on them.
    pub fn kill_with(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("shieldd is not running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("send signal");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("shieldd ignored {signal} for 10 s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts a new `shieldd` on the same directories (state, config, socket path) after
    /// [`Daemon::kill_with`], and waits until it listens.
    pub fn restart(&mut self) {
        self.launch();
    }

    /// `XDG_STATE_HOME`.
    pub fn state_home(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The directory of container `id`'s state: `$XDG_STATE_HOME/shield/containers/ID`.
    pub fn container_state_dir(&self, id: &str) -> PathBuf {
        self.state_home().join("shield/containers").join(id)
    }

    fn wait_listening(&mut self) {
        let start = Instant::now();
        loop {
            if unix_socket_listening(&self.socket) {
                return;
            }
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "shieldd exited ({status}) before listening on {}; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "shieldd did not listen on {} within 10 s; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Who runs it.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// The temporary root directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `XDG_RUNTIME_DIR`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The binary `name` as this daemon's owner can execute it.
    pub fn bin(&self, name: &str) -> PathBuf {
        match self.owner {
            Owner::Root => bins::dir_of(name).join(name),
            Owner::User { .. } => self.bin_dir.join(name),
        }
    }

    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// A hook for `stage` against this daemon, run the way this daemon's runtime would run it
    /// (rootless: as the owner inside the user namespace of `container_pid`, when given).
    pub fn hook(&self, stage: Stage, container_pid: Option<u32>) -> Hook {
        let hook = Hook::new(stage, &self.socket)
            .bin(&self.bin(bins::SHIELD_HOOK))
            .runtime_dir(&self.runtime_dir());
        match self.owner {
            Owner::Root => hook,
            owner @ Owner::User { .. } => hook.as_owner(owner, container_pid),
        }
    }

    /// Runs `shieldctl --socket SOCKET ARGS…` as `who`.
    pub fn ctl_as(&self, who: Owner, args: &[&str]) -> Output {
        let copy =
            (who != self.owner && who != Owner::Root).then(|| bins::public_copy(bins::SHIELDCTL));
        let bin = copy
            .as_ref()
            .map_or_else(|| self.bin(bins::SHIELDCTL), |(_, p)| p.clone());
        let mut cmd = Command::new(bin);
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .current_dir("/")
            .stdin(Stdio::null());
        who.apply(&mut cmd);
        cmd.output().expect("run shieldctl")
    }

    /// `shieldctl --socket SOCKET ARGS…` as a command to spawn (as the daemon's owner), for
    /// long-running ones such as `logs --follow`.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin(bins::SHIELDCTL));
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .current_dir("/")
            .stdin(Stdio::null());
        self.owner.apply(&mut cmd);
        cmd
    }

    /// Runs `shieldctl --socket SOCKET ARGS…`; panics unless it fails (non-zero exit) with a
    /// message. Returns stderr and stdout together.
    pub fn ctl_fails(&self, args: &[&str]) -> String {
        let out = self.ctl_as(self.owner, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !out.status.success(),
            "shieldctl {} must fail, it exited 0: {text}",
            abbreviate(args)
        );
        assert!(
            !text.trim().is_empty(),
            "shieldctl {} failed ({}) without a message",
            abbreviate(args),
            out.status
        );
        text
    }

    /// Runs `shieldctl --socket SOCKET ARGS…` as the daemon's owner; panics unless it succeeds.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_as(self.owner, args);
        assert!(
            out.status.success(),
            "shieldctl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `shieldctl --socket SOCKET --json ARGS…` and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("shieldctl --json {args:?} printed no JSON ({e}): {out}"))
    }

    /// Opens the socket directory and the socket to everyone, so that only the daemon's
    /// SO_PEERCRED check stands between another uid and the API.
    pub fn open_permissions(&self) {
        let mut p = self.socket.clone();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).expect("chmod socket");
        while p.pop() && p.starts_with(self.dir.path()) {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod dir");
        }
    }

    /// The inodes of the sockets the daemon holds open (`/proc/PID/fd/* -> socket:[N]`).
    pub fn socket_inodes(&self) -> std::collections::BTreeSet<u64> {
        let mut set = std::collections::BTreeSet::new();
        let Ok(entries) = fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return set;
        };
        for e in entries.flatten() {
            if let Ok(target) = fs::read_link(e.path())
                && let Some(n) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse().ok())
            {
                set.insert(n);
            }
        }
        set
    }

    /// SIGTERM, then waits (10 s at most); panics unless the daemon exits with status 0 and
    /// removes its socket.
    pub fn stop(self) -> ExitStatus {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }

    /// [`Daemon::stop`] with another signal (SIGINT must shut down as cleanly as SIGTERM).
    pub fn stop_with(mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("send signal");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("shieldd ignored {signal} for 10 s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            status.success(),
            "shieldd exited with {status} after {signal} (a daemon that listens must already \
             handle it); log:\n{}",
            self.log()
        );
        assert!(
            !self.socket.exists(),
            "shieldd left its socket {} behind after {signal}",
            self.socket.display()
        );
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            #[allow(clippy::print_stderr, reason = "shown by the test harness on failure")]
            {
                eprintln!(
                    "----- shieldd log ({}) -----\n{}",
                    self.log_path.display(),
                    self.log()
                );
            }
        }
    }
}

/// `args` for a message, cut short when a test passes a thousand targets.
fn abbreviate(args: &[&str]) -> String {
    if args.len() <= 12 {
        format!("{args:?}")
    } else {
        format!("{:?} … ({} arguments)", &args[..12], args.len())
    }
}

/// The container `id` in a `shieldctl --json ps` document (any object whose `id` is `id`, or a
/// prefix of it of at least 12 characters).
pub fn find_container<'a>(doc: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    match doc {
        serde_json::Value::Object(o) => {
            if let Some(serde_json::Value::String(s)) = o.get("id")
                && (s == id || (s.len() >= 12 && id.starts_with(s.as_str())))
            {
                return Some(doc);
            }
            o.values().find_map(|v| find_container(v, id))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|v| find_container(v, id)),
        _ => None,
    }
}

/// The state of a container object from `shieldctl --json`, lowercased
/// (`"running"`/`"stopped"`; the enum's name or number both work).
pub fn container_state(container: &serde_json::Value) -> String {
    match &container["state"] {
        serde_json::Value::String(s) => s
            .to_lowercase()
            .trim_start_matches("container_state_")
            .to_string(),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(1) => "running".into(),
            Some(2) => "stopped".into(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert!(!unix_socket_listening(&path));
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(unix_socket_listening(&path));
        drop(l);
        assert!(
            !unix_socket_listening(&path),
            "a stale socket file is not listening"
        );
    }

    #[test]
    fn finds_containers_in_ps_json() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let doc = serde_json::json!({"containers": [
            {"id": "ffff", "state": "CONTAINER_STATE_RUNNING"},
            {"id": id, "name": "web", "state": "CONTAINER_STATE_STOPPED"},
        ]});
        let c = find_container(&doc, id).unwrap();
        assert_eq!(c["name"], "web");
        assert_eq!(container_state(c), "stopped");
        let short = serde_json::json!([{"id": &id[..12], "state": 1}]);
        assert_eq!(
            container_state(find_container(&short, id).unwrap()),
            "running"
        );
        assert!(find_container(&doc, "abc").is_none());
    }
}
