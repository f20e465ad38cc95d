//! The OCI runtime state the runtime writes on the hook's stdin: read with a size bound, parsed,
//! and validated for the stage.
//!
//! Only the fields shield uses are kept (`id`, `pid`, `bundle`, `status`, `annotations`); others
//! (`ociVersion`, `root`, ...) are ignored. The `poststop` state has no `pid` (the process is gone),
//! so everything is keyed by `id`.

use std::collections::HashMap;
use std::io::Read;

use serde::Deserialize;
use shield_proto::v1;

use crate::args::Stage;

/// Largest state accepted on stdin. Real states are a few KiB; more is a misconfiguration.
pub const MAX_STATE_BYTES: usize = 64 * 1024;

/// Longest container id accepted (podman's are 64 hex digits).
pub const MAX_ID_LEN: usize = 128;

/// The validated state of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciState {
    /// Container id: non-empty, at most [`MAX_ID_LEN`] characters of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// Init pid: always `Some(> 0)` at createRuntime; whatever valid pid the runtime gave (often
    /// none) at poststop.
    pub pid: Option<u32>,
    /// Bundle directory (may be empty).
    pub bundle: String,
    /// OCI status string.
    pub status: String,
    /// OCI annotations.
    pub annotations: HashMap<String, String>,
}

impl OciState {
    /// The state as the daemon's API carries it (pid 0 when absent).
    pub fn into_proto(self) -> v1::OciState {
        v1::OciState {
            id: self.id,
            pid: self.pid.unwrap_or(0),
            bundle: self.bundle,
            annotations: self.annotations,
            status: self.status,
        }
    }

    /// The first 12 characters of the id, as podman shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// Why the state on stdin is not usable.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading stdin failed.
    #[error("cannot read stdin: {0}")]
    Read(std::io::Error),
    /// Nothing on stdin.
    #[error("stdin is empty")]
    Empty,
    /// More than [`MAX_STATE_BYTES`] on stdin.
    #[error("more than {} KiB on stdin", MAX_STATE_BYTES / 1024)]
    TooLarge,
    /// Not JSON, or fields of the wrong type.
    #[error("{0}")]
    Json(serde_json::Error),
    /// `id` is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error("bad container id {0}: expected 1 to 128 characters of [A-Za-z0-9_.-]")]
    BadId(String),
    /// createRuntime without a pid.
    #[error("no pid (createRuntime needs the container's init pid)")]
    MissingPid,
    /// A pid that cannot be a process: zero, negative, or beyond the pid range.
    #[error("bad pid {0} (expected a positive process id)")]
    BadPid(i64),
}

/// The fields shield uses, as they come; [`validate`] turns them into an [`OciState`].
#[derive(Debug, Deserialize)]
struct RawState {
    id: String,
    pid: Option<i64>,
    bundle: Option<String>,
    status: Option<String>,
    annotations: Option<HashMap<String, String>>,
}

/// Reads at most [`MAX_STATE_BYTES`] from `input` and parses them for `stage`.
pub fn read(input: impl Read, stage: Stage) -> Result<OciState, StateError> {
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_STATE_BYTES).unwrap_or(u64::MAX);
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(StateError::Read)?;
    if bytes.len() > MAX_STATE_BYTES {
        return Err(StateError::TooLarge);
    }
    parse(&bytes, stage)
}

/// Parses and validates one state document for `stage`.
pub fn parse(bytes: &[u8], stage: Stage) -> Result<OciState, StateError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(StateError::Empty);
    }
    let raw: RawState = serde_json::from_slice(bytes).map_err(StateError::Json)?;
    validate(raw, stage)
}

fn validate(raw: RawState, stage: Stage) -> Result<OciState, StateError> {
    if !valid_id(&raw.id) {
        return Err(StateError::BadId(printable(&raw.id)));
    }
    let pid = match (stage, raw.pid) {
        (Stage::CreateRuntime, None) => return Err(StateError::MissingPid),
        (Stage::CreateRuntime, Some(pid)) => {
            Some(positive_pid(pid).ok_or(StateError::BadPid(pid))?)
        }
        // At poststop the pid is informational at most: never fail a cleanup over it.
        (Stage::Poststop, pid) => pid.and_then(positive_pid),
    };
    Ok(OciState {
        id: raw.id,
        pid,
        bundle: raw.bundle.unwrap_or_default(),
        status: raw.status.unwrap_or_default(),
        annotations: raw.annotations.unwrap_or_default(),
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

fn positive_pid(pid: i64) -> Option<u32> {
    u32::try_from(pid).ok().filter(|&pid| pid > 0)
}

/// A bounded, quoted, escaped rendering of an untrusted id for an error line.
fn printable(id: &str) -> String {
    const SHOWN: usize = 40;
    let mut shown: String = id.chars().take(SHOWN).collect();
    if id.chars().count() > SHOWN {
        shown.push('…');
    }
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123abcd4567ef890123abcd4567ef890123abcd4567ef890123abcd4567ef89";

    fn create_state() -> String {
        format!(
            r#"{{"ociVersion":"1.0.2-dev","id":"{ID}","status":"created","pid":4242,
            "root":"/var/lib/containers/storage/overlay/x/merged",
            "bundle":"/run/user/1000/containers/overlay-containers/{ID}/userdata",
            "annotations":{{"shield.profiles":"base:dev","shield.name":"web","io.podman.annotations.autoremove":"FALSE"}}}}"#
        )
    }

    #[test]
    fn valid_create_runtime_state() {
        let state = parse(create_state().as_bytes(), Stage::CreateRuntime).unwrap();
        assert_eq!(state.id, ID);
        assert_eq!(state.pid, Some(4242));
        assert_eq!(state.status, "created");
        assert!(state.bundle.ends_with("/userdata"));
        assert_eq!(state.annotations["shield.profiles"], "base:dev");
        assert_eq!(state.short_id(), "0123abcd4567");
        let proto = state.into_proto();
        assert_eq!(proto.pid, 4242);
        assert_eq!(proto.annotations["shield.name"], "web");
    }

    #[test]
    fn valid_poststop_state_without_pid() {
        let json = format!(
            r#"{{"ociVersion":"1.0.2-dev","id":"{ID}","status":"stopped","bundle":"/b","annotations":{{"shield.profiles":"base"}}}}"#
        );
        let state = parse(json.as_bytes(), Stage::Poststop).unwrap();
        assert_eq!(state.pid, None);
        assert_eq!(state.into_proto().pid, 0);
    }

    #[test]
    fn poststop_ignores_a_useless_pid() {
        for pid in ["0", "-1", "99999999999"] {
            let json = format!(r#"{{"id":"c1","pid":{pid}}}"#);
            assert_eq!(parse(json.as_bytes(), Stage::Poststop).unwrap().pid, None);
        }
    }

    #[test]
    fn minimal_state_defaults_the_rest() {
        let state = parse(br#"{"id":"c1","pid":7}"#, Stage::CreateRuntime).unwrap();
        assert_eq!(state.bundle, "");
        assert!(state.annotations.is_empty());
        let state = parse(
            br#"{"id":"c1","pid":7,"annotations":null}"#,
            Stage::CreateRuntime,
        )
        .unwrap();
        assert!(state.annotations.is_empty());
    }

    #[test]
    fn missing_pid_at_create_runtime() {
        let err = parse(br#"{"id":"c1","status":"created"}"#, Stage::CreateRuntime).unwrap_err();
        assert!(matches!(err, StateError::MissingPid), "{err:?}");
    }

    #[test]
    fn pid_zero_negative_or_huge() {
        for (pid, expected) in [("0", 0), ("-5", -5), ("4294967296", 4_294_967_296)] {
            let json = format!(r#"{{"id":"c1","pid":{pid}}}"#);
            let err = parse(json.as_bytes(), Stage::CreateRuntime).unwrap_err();
            assert!(
                matches!(err, StateError::BadPid(p) if p == expected),
                "{err:?}"
            );
        }
    }

    #[test]
    fn garbage() {
        for input in [&b"not json"[..], b"{", b"[]", b"\xff\xfe", b"null", b"{}"] {
            let err = parse(input, Stage::Poststop).unwrap_err();
            assert!(matches!(err, StateError::Json(_)), "{input:?}: {err:?}");
        }
        let err = parse(b" \n", Stage::Poststop).unwrap_err();
        assert!(matches!(err, StateError::Empty), "{err:?}");
    }

    #[test]
    fn wrong_types() {
        for json in [
            r#"{"id":42,"pid":1}"#,
            r#"{"id":"c1","pid":"1"}"#,
            r#"{"id":"c1","pid":1.5}"#,
            r#"{"id":"c1","pid":1,"annotations":["a"]}"#,
            r#"{"id":"c1","pid":1,"annotations":{"a":1}}"#,
            r#"{"id":"c1","pid":1,"bundle":true}"#,
        ] {
            let err = parse(json.as_bytes(), Stage::CreateRuntime).unwrap_err();
            assert!(matches!(err, StateError::Json(_)), "{json}: {err:?}");
        }
    }

    #[test]
    fn bad_id_characters() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        for id in ["", "../etc", "a b", "a/b", "ab\\u0000", "é", long.as_str()] {
            let json = format!(r#"{{"id":"{id}","pid":1}}"#);
            let err = parse(json.as_bytes(), Stage::CreateRuntime).unwrap_err();
            assert!(matches!(err, StateError::BadId(_)), "{id:?}: {err:?}");
        }
        let ok = "A-z_0.9".to_owned() + &"x".repeat(MAX_ID_LEN - 7);
        let json = format!(r#"{{"id":"{ok}","pid":1}}"#);
        assert!(parse(json.as_bytes(), Stage::CreateRuntime).is_ok());
    }

    #[test]
    fn bad_id_is_shown_bounded_and_escaped() {
        let id = format!("x\n{}", "y".repeat(500));
        let json = serde_json::json!({"id": id, "pid": 1}).to_string();
        let message = parse(json.as_bytes(), Stage::CreateRuntime)
            .unwrap_err()
            .to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn oversized_input() {
        let padding = " ".repeat(MAX_STATE_BYTES);
        let json = format!(r#"{{"id":"c1","pid":1}}{padding}"#);
        let err = read(json.as_bytes(), Stage::CreateRuntime).unwrap_err();
        assert!(matches!(err, StateError::TooLarge), "{err:?}");
        // Exactly at the bound is fine.
        let body = r#"{"id":"c1","pid":1}"#;
        let json = format!("{body}{}", " ".repeat(MAX_STATE_BYTES - body.len()));
        assert!(read(json.as_bytes(), Stage::CreateRuntime).is_ok());
    }
}
