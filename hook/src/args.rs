//! The hook's command line, parsed by hand: `STAGE --socket ABS_PATH [--timeout DURATION]`.
//!
//! No argument-parsing crate: the hook runs on every container start and should stay small.
//! The runtime passes the arguments from the hooks.d JSON; the environment is not used at all
//! (at `poststop` it holds only `PWD`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The usage line, shown with every usage error and by `--help`.
pub const USAGE: &str = "shield-hook createRuntime|poststop --socket ABS_PATH [--timeout DURATION]";

/// Deadline for the whole call (connect included) when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The OCI hook stage the runtime runs the hook for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `createRuntime`: the container's namespaces exist, its process has not started.
    CreateRuntime,
    /// `poststop`: the container is gone.
    Poststop,
}

impl Stage {
    /// The stage as the OCI spec spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateRuntime => "createRuntime",
            Self::Poststop => "poststop",
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--help`: print the usage.
    Help,
    /// Forward the OCI state of `stage` to the daemon.
    Run(Args),
}

/// A valid hook invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Which stage this is.
    pub stage: Stage,
    /// Absolute path of the daemon's socket.
    pub socket: PathBuf,
    /// Deadline for connecting and getting the daemon's answer.
    pub timeout: Duration,
}

/// A command line the hook cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// No stage argument.
    #[error("missing stage (createRuntime or poststop)")]
    MissingStage,
    /// A stage the hook does not handle.
    #[error("unknown stage {0:?} (expected createRuntime or poststop)")]
    UnknownStage(String),
    /// `--socket` was not given.
    #[error("missing --socket ABS_PATH")]
    MissingSocket,
    /// `--socket` is relative: the hook's working directory is the bundle, never the daemon's.
    #[error("--socket must be an absolute path, got {0:?}")]
    RelativeSocket(PathBuf),
    /// An option without its value.
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    /// An option given twice.
    #[error("{0} given more than once")]
    Repeated(&'static str),
    /// `--timeout` is not a positive duration.
    #[error("bad --timeout {value:?}: {reason} (examples: 5s, 300ms, 1m)")]
    BadTimeout {
        /// The value given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An argument the hook does not know.
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
}

/// Parses the arguments after the program name.
pub fn parse<I>(argv: I) -> Result<Command, ArgsError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut stage = None;
    let mut socket: Option<PathBuf> = None;
    let mut timeout = None;
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        let text = arg.to_string_lossy();
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
            _ => (text.to_string(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--socket" => {
                if socket.is_some() {
                    return Err(ArgsError::Repeated("--socket"));
                }
                // Keep the raw bytes of the path: it need not be UTF-8.
                let value = match inline {
                    Some(_) => os_suffix(&arg, "--socket=".len()),
                    None => argv.next().ok_or(ArgsError::MissingValue("--socket"))?,
                };
                socket = Some(PathBuf::from(value));
            }
            "--timeout" => {
                if timeout.is_some() {
                    return Err(ArgsError::Repeated("--timeout"));
                }
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => argv
                        .next()
                        .ok_or(ArgsError::MissingValue("--timeout"))?
                        .to_string_lossy()
                        .into_owned(),
                };
                timeout = Some(parse_timeout(&value)?);
            }
            "createRuntime" if stage.is_none() => stage = Some(Stage::CreateRuntime),
            "poststop" if stage.is_none() => stage = Some(Stage::Poststop),
            other if other.starts_with('-') || stage.is_some() => {
                return Err(ArgsError::Unexpected(text.into_owned()));
            }
            other => return Err(ArgsError::UnknownStage(other.to_owned())),
        }
    }
    let stage = stage.ok_or(ArgsError::MissingStage)?;
    let socket = socket.ok_or(ArgsError::MissingSocket)?;
    if !socket.is_absolute() {
        return Err(ArgsError::RelativeSocket(socket));
    }
    Ok(Command::Run(Args {
        stage,
        socket,
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
    }))
}

/// The bytes of `arg` after its first `skip` bytes (an ASCII `--flag=` prefix).
fn os_suffix(arg: &OsString, skip: usize) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = arg.as_bytes();
    OsString::from_vec(bytes.get(skip..).unwrap_or_default().to_vec())
}

fn parse_timeout(value: &str) -> Result<Duration, ArgsError> {
    let bad = |reason: String| ArgsError::BadTimeout {
        value: value.to_owned(),
        reason,
    };
    let timeout = humantime::parse_duration(value).map_err(|error| bad(error.to_string()))?;
    if timeout.is_zero() {
        return Err(bad("must be more than zero".to_owned()));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, ArgsError> {
        parse(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> Args {
        match parse_strs(args) {
            Ok(Command::Run(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_runtime_with_default_timeout() {
        let args = run(&["createRuntime", "--socket", "/run/shield/shieldd.sock"]);
        assert_eq!(args.stage, Stage::CreateRuntime);
        assert_eq!(args.socket, PathBuf::from("/run/shield/shieldd.sock"));
        assert_eq!(args.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn poststop_with_timeout_in_any_order() {
        let args = run(&["--timeout", "300ms", "--socket=/s.sock", "poststop"]);
        assert_eq!(args.stage, Stage::Poststop);
        assert_eq!(args.socket, PathBuf::from("/s.sock"));
        assert_eq!(args.timeout, Duration::from_millis(300));
        let args = run(&["poststop", "--socket", "/s.sock", "--timeout=2s"]);
        assert_eq!(args.timeout, Duration::from_secs(2));
    }

    #[test]
    fn missing_socket() {
        assert_eq!(
            parse_strs(&["createRuntime"]),
            Err(ArgsError::MissingSocket)
        );
        assert_eq!(
            parse_strs(&["createRuntime", "--socket"]),
            Err(ArgsError::MissingValue("--socket"))
        );
    }

    #[test]
    fn relative_socket() {
        assert_eq!(
            parse_strs(&["createRuntime", "--socket", "run/shieldd.sock"]),
            Err(ArgsError::RelativeSocket(PathBuf::from("run/shieldd.sock")))
        );
    }

    #[test]
    fn bad_timeout() {
        for value in ["soon", "5", "-1s", "0s", ""] {
            let result = parse_strs(&["poststop", "--socket", "/s", "--timeout", value]);
            assert!(
                matches!(result, Err(ArgsError::BadTimeout { .. })),
                "{value:?}: {result:?}"
            );
        }
        assert_eq!(
            parse_strs(&["poststop", "--socket", "/s", "--timeout"]),
            Err(ArgsError::MissingValue("--timeout"))
        );
    }

    #[test]
    fn unknown_or_missing_stage() {
        assert_eq!(
            parse_strs(&["prestart", "--socket", "/s"]),
            Err(ArgsError::UnknownStage("prestart".to_owned()))
        );
        assert_eq!(
            parse_strs(&["createruntime", "--socket", "/s"]),
            Err(ArgsError::UnknownStage("createruntime".to_owned()))
        );
        assert_eq!(
            parse_strs(&["--socket", "/s"]),
            Err(ArgsError::MissingStage)
        );
        assert_eq!(parse_strs(&[]), Err(ArgsError::MissingStage));
    }

    #[test]
    fn unexpected_and_repeated_arguments() {
        assert_eq!(
            parse_strs(&["poststop", "--socket", "/s", "--verbose"]),
            Err(ArgsError::Unexpected("--verbose".to_owned()))
        );
        assert_eq!(
            parse_strs(&["poststop", "createRuntime", "--socket", "/s"]),
            Err(ArgsError::Unexpected("createRuntime".to_owned()))
        );
        assert_eq!(
            parse_strs(&["poststop", "--socket", "/a", "--socket", "/b"]),
            Err(ArgsError::Repeated("--socket"))
        );
    }

    #[test]
    fn help() {
        assert_eq!(parse_strs(&["--help"]), Ok(Command::Help));
        assert_eq!(parse_strs(&["poststop", "-h"]), Ok(Command::Help));
    }

    #[test]
    fn non_utf8_socket_path_is_kept() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(b"--socket=/tmp/\xff.sock".to_vec());
        let Ok(Command::Run(args)) = parse([OsString::from("poststop"), raw]) else {
            panic!("should parse");
        };
        assert_eq!(
            args.socket,
            PathBuf::from(OsString::from_vec(b"/tmp/\xff.sock".to_vec()))
        );
    }
}
