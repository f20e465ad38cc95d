//! Everything that makes a shieldctl command fail; each message says what to check.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use shield_proto::client::ConnectError;

/// A failed command. `Display` is the whole message (no source chain to append).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// No `--socket`, no `SHIELD_SOCKET`, and no `XDG_RUNTIME_DIR` to derive the default from.
    #[error(
        "cannot tell where shieldd's socket is: XDG_RUNTIME_DIR is not set (pass --socket PATH or set SHIELD_SOCKET)"
    )]
    NoSocketPath,
    /// The daemon cannot be reached.
    #[error("{} ({})", chain(.0), .0.hint())]
    Unreachable(ConnectError),
    /// The daemon answered with an error: its message says it all.
    #[error("{}", daemon_text(.0))]
    Daemon(tonic::Status),
    /// The connection broke during the call.
    #[error("lost the connection to shieldd at {}: {detail} (check shieldd's log)", .socket.display())]
    Lost {
        /// The socket.
        socket: PathBuf,
        /// What broke, as a chain of causes.
        detail: String,
    },
    /// The daemon did not answer in time.
    #[error("no answer from shieldd at {} within {} (is it stuck? check its log)", .socket.display(), humantime::format_duration(*.timeout))]
    NoAnswer {
        /// The socket.
        socket: PathBuf,
        /// The time allowed.
        timeout: Duration,
    },
    /// The daemon's answer lacks something the command needs (a daemon from another version?).
    #[error("shieldd's answer lacks {0} (are shieldd and shieldctl the same version?)")]
    Incomplete(&'static str),
    /// The signal handlers of `logs --follow` could not be installed.
    #[error("cannot catch Ctrl-C: {0}")]
    Signal(std::io::Error),
    /// JSON encoding failed (not expected for our views).
    #[error("cannot encode the output as JSON: {0}")]
    Json(serde_json::Error),
    /// Writing to stdout failed (other than a closed pipe, which ends quietly).
    #[error("cannot write the output: {0}")]
    Write(std::io::Error),
    /// An XDG directory cannot be derived.
    #[error(transparent)]
    Directory(#[from] crate::host::NoDirectory),
    /// `setup` failed.
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
    /// The installed hooks would not shield a container.
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HooksError),
    /// A podman argument `run` refuses.
    #[error(transparent)]
    Refused(#[from] crate::arg_guard::Refusal),
    /// A name or profile podman or shieldd would reject.
    #[error(transparent)]
    Args(#[from] crate::podman_args::ArgsError),
    /// A `containers.conf` podman reads is unusable.
    #[error(transparent)]
    ContainersConf(#[from] crate::containers_conf::ConfError),
    /// shield's `config.toml` is unusable.
    #[error(transparent)]
    Config(#[from] crate::shield_config::ConfigError),
    /// The hook binary or the socket cannot be made absolute.
    #[error(
        "cannot locate shield-hook or the socket: {0} (pass --hook PATH and an absolute --socket)"
    )]
    HookPath(std::io::Error),
    /// A file operation of `prepare` or `run` failed.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// To which path.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// podman is not installed.
    #[error("podman not found in PATH (install it; `shieldctl doctor` checks the rest)")]
    PodmanMissing,
    /// `podman run` could not be started.
    #[error("cannot run podman: {0}")]
    Exec(std::io::Error),
    /// `doctor` found problems (already printed).
    #[error("{0} check(s) failed: shielded containers will not work here until fixed")]
    DoctorFailed(usize),
}

impl CtlError {
    /// Classifies a failed call: the daemon's own answer, our deadline, or a broken connection.
    pub fn from_status(status: tonic::Status, socket: &std::path::Path, timeout: Duration) -> Self {
        if shield_proto::client::is_deadline_expired(&status) {
            Self::NoAnswer {
                socket: socket.to_path_buf(),
                timeout,
            }
        } else if shield_proto::client::is_transport_error(&status) {
            let mut detail = status.message().to_owned();
            append_sources(&mut detail, status.source());
            Self::Lost {
                socket: socket.to_path_buf(),
                detail,
            }
        } else {
            Self::Daemon(status)
        }
    }
}

fn daemon_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("shieldd answered {:?} without a message", status.code())
    } else {
        status.message().to_owned()
    }
}

fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    append_sources(&mut text, error.source());
    text
}

fn append_sources(text: &mut String, mut source: Option<&(dyn Error + 'static)>) {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn daemon_message_is_shown_as_is() {
        let error = CtlError::from_status(
            tonic::Status::not_found("no container matches \"foo\""),
            Path::new("/s"),
            Duration::from_secs(1),
        );
        assert_eq!(error.to_string(), "no container matches \"foo\"");
        let error = CtlError::Daemon(tonic::Status::internal(""));
        assert_eq!(
            error.to_string(),
            "shieldd answered Internal without a message"
        );
    }

    #[test]
    fn unreachable_names_the_path_and_how_to_start() {
        let error = CtlError::Unreachable(ConnectError::NotFound {
            path: PathBuf::from("/run/user/1000/shield/shieldd.sock"),
        });
        assert_eq!(
            error.to_string(),
            "cannot reach shieldd at /run/user/1000/shield/shieldd.sock: no such file \
             (is shieldd running? start it with 'shieldd &' or 'systemctl --user start shieldd.socket')"
        );
    }
}
