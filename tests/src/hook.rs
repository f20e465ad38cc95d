//! Running the real `shield-hook` binary as a runtime would: OCI state on stdin, exit status,
//! stderr and wall time back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bins;
use crate::netns::Owner;

/// The OCI hook stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `createRuntime`: the container's namespaces exist, its process has not started.
    CreateRuntime,
    /// `poststop`: the container is gone (no pid, empty environment).
    Poststop,
}

impl Stage {
    /// The hook's first argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::CreateRuntime => "createRuntime",
            Stage::Poststop => "poststop",
        }
    }
}

/// An OCI state document as crun passes it to a hook (`pid` only for `createRuntime`).
pub fn oci_state(id: &str, pid: Option<u32>, annotations: &[(&str, &str)]) -> String {
    let mut state = serde_json::json!({
        "ociVersion": "1.0.2",
        "id": id,
        "bundle": "/tmp",
        "status": if pid.is_some() { "created" } else { "stopped" },
        "annotations": annotations
            .iter()
            .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let Some(pid) = pid {
        state["pid"] = pid.into();
        state["root"] = "/tmp".into();
    }
    state.to_string()
}

/// What one hook run did.
#[derive(Debug)]
pub struct HookRun {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time from spawning the hook to its exit.
    pub elapsed: Duration,
}

impl HookRun {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics unless the hook succeeded.
    pub fn assert_success(&self) {
        assert!(
            self.success(),
            "shield-hook failed ({}): {}",
            self.status,
            self.stderr.trim()
        );
    }

    /// Panics unless the hook failed (non-zero exit) and printed exactly one non-empty line
    /// on stderr; returns that line.
    pub fn assert_failed_one_line(&self, case: &str) -> String {
        assert!(
            !self.success(),
            "{case}: shield-hook must fail, it exited 0 (stderr: {:?})",
            self.stderr
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{case}: shield-hook must print exactly one line on stderr, got {:?}",
            self.stderr
        );
        lines[0].to_string()
    }
}

/// A `shield-hook` invocation, built up and then [`Hook::run`].
#[derive(Clone, Debug)]
pub struct Hook {
    bin: PathBuf,
    stage: Stage,
    socket: PathBuf,
    timeout: Option<String>,
    stdin: Vec<u8>,
    owner: Owner,
    userns_of: Option<u32>,
    runtime_dir: Option<PathBuf>,
}

impl Hook {
    /// The hook for `stage` against `socket`, run as root, with an empty stdin.
    pub fn new(stage: Stage, socket: &Path) -> Hook {
        Hook {
            bin: bins::bin(bins::SHIELD_HOOK),
            stage,
            socket: socket.to_path_buf(),
            timeout: None,
            stdin: Vec::new(),
            owner: Owner::Root,
            userns_of: None,
            runtime_dir: None,
        }
    }

    /// Uses another hook binary (a copy the owner can execute).
    pub fn bin(mut self, bin: &Path) -> Hook {
        self.bin = bin.to_path_buf();
        self
    }

    /// The OCI state (or any bytes) on stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Hook {
        self.stdin = bytes.into();
        self
    }

    /// Passes `--timeout VALUE`.
    pub fn timeout(mut self, value: &str) -> Hook {
        self.timeout = Some(value.to_string());
        self
    }

    /// Runs the hook as `owner`; for a rootless runtime, `userns_of` names a process whose user
    /// namespace the hook joins first (`nsenter --user --preserve-credentials`), as rootless podman
    /// runs hooks as uid 0 of its user namespace, in the host network namespace.
    pub fn as_owner(mut self, owner: Owner, userns_of: Option<u32>) -> Hook {
        self.owner = owner;
        self.userns_of = userns_of;
        self
    }

    /// `XDG_RUNTIME_DIR` in the hook's environment (createRuntime only; poststop gets only PWD).
    pub fn runtime_dir(mut self, dir: &Path) -> Hook {
        self.runtime_dir = Some(dir.to_path_buf());
        self
    }

    /// Runs it and waits for its exit.
    pub fn run(&self) -> HookRun {
        let mut cmd = match self.userns_of {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args([
                    "--target",
                    &pid.to_string(),
                    "--user",
                    "--preserve-credentials",
                    "--",
                ])
                .arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg(self.stage.as_str())
            .arg("--socket")
            .arg(&self.socket);
        if let Some(t) = &self.timeout {
            cmd.args(["--timeout", t]);
        }
        let cwd = std::env::temp_dir();
        cmd.env_clear().env("PWD", &cwd).current_dir(&cwd);
        if self.stage == Stage::CreateRuntime {
            cmd.env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
            if let Some(dir) = &self.runtime_dir {
                cmd.env("XDG_RUNTIME_DIR", dir);
            }
        }
        self.owner.apply(&mut cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("spawn shield-hook");
        if let Some(mut stdin) = child.stdin.take() {
            // The hook may exit before reading (bad arguments): EPIPE is its answer, not ours.
            let _ = stdin.write_all(&self.stdin);
        }
        let out = child.wait_with_output().expect("wait shield-hook");
        let elapsed = start.elapsed();
        HookRun {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        }
    }
}
