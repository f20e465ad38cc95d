//! Running podman: asking its version, and replacing shieldctl with `podman run`.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use crate::podman_args::PodmanVersion;

/// The podman program, found through PATH.
pub const PODMAN: &str = "podman";

/// What `podman --version` told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The version.
    Version(PodmanVersion),
    /// It answered something that is not a version.
    Unparsed(String),
    /// No podman in PATH.
    NotFound,
    /// It could not run, or failed.
    Failed(String),
}

impl Probe {
    /// The version, if known.
    pub fn version(&self) -> Option<PodmanVersion> {
        match self {
            Self::Version(version) => Some(*version),
            _ => None,
        }
    }
}

/// Runs `podman --version`.
pub fn probe() -> Probe {
    let output = Command::new(PODMAN)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match output {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Probe::NotFound,
        Err(error) => Probe::Failed(error.to_string()),
        Ok(output) if !output.status.success() => Probe::Failed(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            PodmanVersion::parse(&text).map_or(Probe::Unparsed(text), Probe::Version)
        }
    }
}

/// Replaces this process with `podman run SHIELD_ARGS USER_ARGS`; returns only on failure.
pub fn exec_run(shield_args: &[String], user_args: &[String]) -> io::Error {
    Command::new(PODMAN)
        .arg("run")
        .args(shield_args)
        .args(user_args)
        .exec()
}
