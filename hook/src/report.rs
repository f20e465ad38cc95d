//! How each outcome ends the hook: exit code and the one stderr line that says what failed and
//! what to check.
//!
//! The runtime shows (runc) or logs (crun) the hook's stderr when the container fails to start,
//! so the line is the whole user interface of the hook: one line, always starting with
//! `shield-hook: `, never more.

use std::error::Error;

use crate::args::{ArgsError, Stage, USAGE};
use crate::forward::{Answer, CallError};
use crate::state::{OciState, StateError};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for any failure: the runtime must not start the container.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a command line the hook cannot run with.
pub const EXIT_USAGE: u8 = 2;

/// How the process ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Process exit code.
    pub code: u8,
    /// The one line for stderr, without the `shield-hook: ` prefix and without newline.
    pub stderr: Option<String>,
    /// Text for stdout (only `--help`).
    pub stdout: Option<String>,
}

impl Exit {
    fn silent() -> Self {
        Self {
            code: EXIT_OK,
            stderr: None,
            stdout: None,
        }
    }

    fn line(code: u8, line: String) -> Self {
        Self {
            code,
            stderr: Some(one_line(&line)),
            stdout: None,
        }
    }

    /// `--help`.
    pub fn help() -> Self {
        Self {
            code: EXIT_OK,
            stderr: None,
            stdout: Some(format!("usage: {USAGE}\n")),
        }
    }

    /// The command line is unusable.
    pub fn usage(error: &ArgsError) -> Self {
        Self::line(EXIT_USAGE, format!("{error} (usage: {USAGE})"))
    }

    /// The OCI state on stdin is unusable.
    pub fn bad_state(error: &StateError) -> Self {
        Self::line(
            EXIT_FAILURE,
            format!(
                "invalid OCI state on stdin: {error} (the runtime must pass the container state as JSON; check the hooks.d entry)"
            ),
        )
    }

    /// The async runtime could not be built (out of threads or file descriptors).
    pub fn no_runtime(error: &std::io::Error) -> Self {
        Self::line(
            EXIT_FAILURE,
            format!("cannot start the async runtime: {error} (check the process limits)"),
        )
    }

    /// The end of the call to the daemon.
    pub fn from_call(stage: Stage, state: &OciState, result: Result<Answer, CallError>) -> Self {
        let error = match result {
            Ok(Answer::Attached | Answer::Released { .. }) => return Self::silent(),
            Err(error) => error,
        };
        let id = state.short_id();
        match (stage, error) {
            // Nothing runs at the socket: nobody holds sockets or tasks for the container, and its
            // kernel rules died with its network namespace.
            (Stage::Poststop, CallError::Connect(error)) if error.daemon_absent() => Self::line(
                EXIT_OK,
                format!(
                    "{}; shieldd is not running, nothing left to protect for container {id}",
                    chain(&error)
                ),
            ),
            (_, CallError::Connect(error)) => Self::line(
                EXIT_FAILURE,
                format!("{} ({})", chain(&error), error.hint()),
            ),
            (_, CallError::NoAnswer { socket, timeout }) => Self::line(
                EXIT_FAILURE,
                format!(
                    "no answer from shieldd within {} (socket {}; is shieldd stuck? check its log, or raise --timeout)",
                    humantime::format_duration(timeout),
                    socket.display()
                ),
            ),
            (Stage::CreateRuntime, CallError::Daemon(status)) => Self::line(
                EXIT_FAILURE,
                format!("daemon refused container {id}: {}", status_text(&status)),
            ),
            (Stage::Poststop, CallError::Daemon(status)) => Self::line(
                EXIT_FAILURE,
                format!(
                    "daemon failed to release container {id}: {}",
                    status_text(&status)
                ),
            ),
            (_, CallError::Lost { socket, status }) => Self::line(
                EXIT_FAILURE,
                format!(
                    "shieldd at {} dropped the connection: {} (is this uid allowed to use the daemon? check shieldd's log)",
                    socket.display(),
                    local_status_text(&status)
                ),
            ),
        }
    }
}

/// The status message, or its code when the daemon sent none.
fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

/// A status made on this side: its message and the errors underneath it.
fn local_status_text(status: &tonic::Status) -> String {
    append_sources(status_text(status), status.source())
}

/// `error` and its sources, joined by `: `.
fn chain(error: &dyn Error) -> String {
    append_sources(error.to_string(), error.source())
}

/// `text` followed by each error of the chain from `source` that it does not already end with.
fn append_sources(mut text: String, mut source: Option<&(dyn Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Guarantees one line whatever the daemon or the OS put into a message.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use shield_proto::client::ConnectError;

    use super::*;

    fn state() -> OciState {
        OciState {
            id: "0123abcd4567ef89".to_owned(),
            pid: Some(7),
            bundle: String::new(),
            status: String::new(),
            annotations: Default::default(),
        }
    }

    fn not_found() -> CallError {
        CallError::Connect(ConnectError::NotFound {
            path: PathBuf::from("/run/user/1000/shield/shieldd.sock"),
        })
    }

    #[test]
    fn success_is_silent() {
        let exit = Exit::from_call(Stage::CreateRuntime, &state(), Ok(Answer::Attached));
        assert_eq!(exit, Exit::silent());
    }

    #[test]
    fn unreachable_daemon_fails_create_runtime() {
        let exit = Exit::from_call(Stage::CreateRuntime, &state(), Err(not_found()));
        assert_eq!(exit.code, EXIT_FAILURE);
        assert_eq!(
            exit.stderr.unwrap(),
            "cannot reach shieldd at /run/user/1000/shield/shieldd.sock: no such file \
             (is shieldd running? start it with 'shieldd &' or 'systemctl --user start shieldd.socket')"
        );
    }

    #[test]
    fn unreachable_daemon_is_fine_at_poststop() {
        let exit = Exit::from_call(Stage::Poststop, &state(), Err(not_found()));
        assert_eq!(exit.code, EXIT_OK);
        assert!(
            exit.stderr
                .unwrap()
                .contains("nothing left to protect for container 0123abcd4567")
        );
    }

    #[test]
    fn permission_denied_fails_poststop_too() {
        let error = CallError::Connect(ConnectError::PermissionDenied {
            path: PathBuf::from("/s"),
        });
        let exit = Exit::from_call(Stage::Poststop, &state(), Err(error));
        assert_eq!(exit.code, EXIT_FAILURE);
    }

    #[test]
    fn daemon_error_carries_its_message_on_one_line() {
        let status = tonic::Status::failed_precondition("netns gone\nsecond line");
        let exit = Exit::from_call(
            Stage::CreateRuntime,
            &state(),
            Err(CallError::Daemon(status)),
        );
        assert_eq!(exit.code, EXIT_FAILURE);
        assert_eq!(
            exit.stderr.unwrap(),
            "daemon refused container 0123abcd4567: netns gone second line"
        );
        let status = tonic::Status::internal("");
        let exit = Exit::from_call(Stage::Poststop, &state(), Err(CallError::Daemon(status)));
        assert_eq!(exit.code, EXIT_FAILURE);
        assert_eq!(
            exit.stderr.unwrap(),
            "daemon failed to release container 0123abcd4567: Internal"
        );
    }

    #[test]
    fn deadline_line() {
        let error = CallError::NoAnswer {
            socket: PathBuf::from("/s.sock"),
            timeout: Duration::from_secs(5),
        };
        let exit = Exit::from_call(Stage::CreateRuntime, &state(), Err(error));
        assert!(
            exit.stderr
                .unwrap()
                .starts_with("no answer from shieldd within 5s (socket /s.sock;")
        );
    }

    #[test]
    fn usage_line() {
        let exit = Exit::usage(&ArgsError::MissingSocket);
        assert_eq!(exit.code, EXIT_USAGE);
        assert_eq!(
            exit.stderr.unwrap(),
            format!("missing --socket ABS_PATH (usage: {USAGE})")
        );
    }
}
