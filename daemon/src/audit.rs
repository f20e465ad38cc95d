//! The audit trail: what happened to each container, and when.
//!
//! Each container's directory in the store ([`crate::store`]) holds an `audit.jsonl`: one compact
//! JSON object per line, per event — attach, detach, allow, deny, mode change, restore after a
//! restart, stopped. `shieldctl logs` reads it back ([`AuditLog::last`]) and the live `Watch`
//! stream follows it ([`AuditLog::subscribe`]).
//!
//! Each line (or the lines of one change) is appended with a single `write(2)` on an `O_APPEND`
//! descriptor: the kernel appends it whole at the end of the file, so concurrent writers (tasks,
//! threads, even processes) never interleave their lines. A line torn by a crash or a full disk
//! is skipped when read.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::oci::{self, OciError};
use crate::store::Store;

/// Opens (creating it and its directory if needed) a container's trail for appending.
fn open_trail(dir: &Path, path: &Path) -> Result<OpenTrail, AuditError> {
    // The store normally made the directory; a detach after a failed attach may come first.
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(AuditError::io(dir, err)),
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| AuditError::io(path, err))?;
    let meta = file.metadata().map_err(|err| AuditError::io(path, err))?;
    Ok(OpenTrail {
        file,
        dev: meta.dev(),
        ino: meta.ino(),
        checked: Instant::now(),
    })
}

/// Name of the audit file in a container's directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// How many events a slow subscriber may fall behind before it misses some (it is told how many).
const CHANNEL_CAPACITY: usize = 1024;

/// How long an open trail is trusted to still be the file at its path. A trail rotated (moved
/// away) or deleted is noticed within this time; the lines written meanwhile stay in the moved
/// file. Checking on every line cost a `statx` per DNS answer.
const RECHECK_PATH: Duration = Duration::from_millis(100);

/// How much of a file [`AuditLog::last`] reads per step, from the end backwards.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The actions the daemon records.
pub mod action {
    /// The container was attached (its ruleset installed and verified).
    pub const ATTACH: &str = "attach";
    /// The container was detached.
    pub const DETACH: &str = "detach";
    /// A target was allowed.
    pub const ALLOW: &str = "allow";
    /// A target was denied.
    pub const DENY: &str = "deny";
    /// The mode changed.
    pub const MODE: &str = "mode";
    /// The container was re-attached after a daemon restart.
    pub const RESTORE: &str = "restore";
    /// The container was found stopped (after a daemon restart, or at poststop).
    pub const STOPPED: &str = "stopped";
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A container id that is not safe as a path component.
    #[error(transparent)]
    Id(#[from] OciError),
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel wrote only part of the lines (a full disk): the trail now holds a torn line,
    /// which readers skip.
    #[error("{}: short write ({written} of {len} bytes)", path.display())]
    ShortWrite {
        /// The audit file.
        path: PathBuf,
        /// Bytes written.
        written: usize,
        /// Bytes of the lines.
        len: usize,
    },
    /// The event could not be serialised (not expected to happen).
    #[error("cannot serialise audit event: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl AuditError {
    fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// UTC time, RFC 3339 with microseconds (`2026-11-28T21:00:00.123456Z`): fixed width, so
    /// string order is time order.
    pub ts: String,
    /// Container id.
    pub container: String,
    /// Container name.
    pub name: String,
    /// What happened: one of [`action`].
    pub action: String,
    /// What it happened to (an IP, CIDR, domain or mode); omitted when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Free-form detail.
    #[serde(default)]
    pub detail: String,
}

struct Inner {
    containers: PathBuf,
    events: broadcast::Sender<AuditEvent>,
    /// Open trail files by container id: the DNS proxy records every answer, and opening the
    /// file for each line would cost more than the answer itself. Each trail has its own lock,
    /// so containers do not wait for each other's writes.
    open: Mutex<HashMap<String, Arc<Mutex<Option<OpenTrail>>>>>,
}

/// An open `audit.jsonl`, which file it is (to notice it being moved away or deleted), and
/// when that was last checked.
struct OpenTrail {
    file: File,
    dev: u64,
    ino: u64,
    checked: Instant,
}

impl OpenTrail {
    /// Whether this is still the file at `path`, checked at most every [`RECHECK_PATH`].
    fn still_at(&mut self, path: &Path) -> bool {
        let now = Instant::now();
        if now.duration_since(self.checked) < RECHECK_PATH {
            return true;
        }
        let same =
            fs::metadata(path).is_ok_and(|meta| self.dev == meta.dev() && self.ino == meta.ino());
        if same {
            self.checked = now;
        }
        same
    }
}

/// The audit trail of every container: appends to the files and publishes to subscribers.
/// Cheap to clone; clones share the subscribers.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("containers", &self.inner.containers)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// The audit trail kept beside `store`'s container states.
    pub fn new(store: &Store) -> Self {
        Self::in_dir(store.containers_dir())
    }

    /// The audit trail under `containers_dir` (`STATE/containers`).
    pub fn in_dir(containers_dir: impl Into<PathBuf>) -> Self {
        let (events, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                containers: containers_dir.into(),
                events,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// An event stamped with the current time.
    pub fn event(
        container: &str,
        name: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> AuditEvent {
        AuditEvent {
            ts: timestamp(SystemTime::now()),
            container: container.to_owned(),
            name: name.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        }
    }

    /// `STATE/containers/<id>/audit.jsonl`.
    pub fn path(&self, container: &str) -> PathBuf {
        self.inner.containers.join(container).join(AUDIT_FILE)
    }

    /// Appends `event` to its container's trail, then publishes it to subscribers.
    ///
    /// An event with an invalid container id is refused outright. Otherwise it is published even
    /// if the append failed: the live stream should not lose what the file could not keep; the
    /// error is still returned, for the caller to log.
    pub fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.record_all(vec![event])
    }

    /// [`record`](Self::record) for several events at once, in order, with one `write(2)` per
    /// container (a change of 1 024 targets is 1 024 events: one write each cost ~4 ms).
    pub fn record_all(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        for event in &events {
            oci::validate_id(&event.container)?;
        }
        let mut appended = Ok(());
        for same_container in events.chunk_by(|a, b| a.container == b.container) {
            let written = self.append(same_container);
            if appended.is_ok() {
                appended = written;
            }
        }
        for event in events {
            // Err only means nobody is subscribed.
            let _ = self.inner.events.send(event);
        }
        appended
    }

    /// Closes the open trail of `container`, if any: a stopped container writes no more lines
    /// for a while (a restart reopens it), and a daemon that runs for months must not keep a
    /// descriptor for every container it ever saw.
    pub fn close(&self, container: &str) {
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(container);
    }

    /// Appends one line per event to their container's file (the id is already validated; the
    /// events all have the same container).
    fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let dir = self.inner.containers.join(&first.container);
        let path = dir.join(AUDIT_FILE);
        let mut lines = Vec::new();
        for event in events {
            serde_json::to_writer(&mut lines, event)?;
            lines.push(b'\n');
        }
        // A poisoned lock only means a writer panicked; the map and the trails stay whole.
        let slot = Arc::clone(
            self.inner
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(first.container.clone())
                .or_default(),
        );
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        // Reuse the open file while the path still names it: a trail moved away (rotated) or
        // deleted is reopened, so lines never go to a file nobody reads for long.
        let reusable = slot.as_mut().is_some_and(|trail| trail.still_at(&path));
        if !reusable {
            *slot = Some(open_trail(&dir, &path)?);
        }
        let Some(trail) = slot.as_mut() else {
            return Err(AuditError::io(
                &path,
                io::Error::other("trail file not open"),
            ));
        };
        // One write(2), not write_all: a retried remainder could land after another writer's line.
        let written = trail
            .file
            .write(&lines)
            .map_err(|err| AuditError::io(&path, err))?;
        if written != lines.len() {
            return Err(AuditError::ShortWrite {
                path,
                written,
                len: lines.len(),
            });
        }
        Ok(())
    }

    /// The last `n` events of `container`, oldest first; or, with `None`, the last `n` of all
    /// containers merged by time. An unknown container has no events. Malformed lines are skipped.
    ///
    /// Only the tail of each file is read, so the cost does not grow with the trail's length.
    pub fn last(&self, container: Option<&str>, n: usize) -> Result<Vec<AuditEvent>, AuditError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if let Some(id) = container {
            oci::validate_id(id)?;
            return tail(&self.path(id), n);
        }
        let entries = match fs::read_dir(&self.inner.containers) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(AuditError::io(&self.inner.containers, err)),
        };
        let mut all = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| AuditError::io(&self.inner.containers, err))?;
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            // Not a container directory the daemon made; nothing to read.
            if oci::validate_id(&id).is_err() {
                continue;
            }
            all.extend(tail(&self.path(&id), n)?);
        }
        // Stable: events with the same timestamp keep their order within a container.
        all.sort_by(|a, b| a.ts.cmp(&b.ts));
        let skip = all.len().saturating_sub(n);
        all.drain(..skip);
        Ok(all)
    }

    /// Receives every event recorded from now on. A receiver that falls more than 1024 events
    /// behind gets `RecvError::Lagged` and continues with the newest.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.inner.events.subscribe()
    }
}

/// `2026-11-28T21:00:00.123456Z`.
fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// The last `n` well-formed events of the file at `path` (none if it does not exist), in file
/// order, reading backwards from the end in chunks until `n` are found or the start is reached.
fn tail(path: &Path, n: usize) -> Result<Vec<AuditEvent>, AuditError> {
    let io_error = |err| AuditError::io(path, err);
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_error(err)),
    };
    let mut pos = file.metadata().map_err(io_error)?.len();
    // Newest first while collecting.
    let mut found = Vec::new();
    // Bytes after `pos` that are not yet part of a complete line (the start of the line is in a
    // chunk still to be read).
    let mut pending: Vec<u8> = Vec::new();
    while pos > 0 && found.len() < n {
        let step = TAIL_CHUNK.min(pos);
        pos -= step;
        let mut buf = vec![0; usize::try_from(step).unwrap_or(usize::MAX)];
        file.seek(SeekFrom::Start(pos)).map_err(io_error)?;
        file.read_exact(&mut buf).map_err(io_error)?;
        buf.extend_from_slice(&pending);
        // Everything before the first newline may continue in the previous chunk, unless this
        // chunk starts the file.
        let (partial_end, complete_from) = if pos == 0 {
            (0, 0)
        } else {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, i + 1),
                None => {
                    pending = buf;
                    continue;
                }
            }
        };
        for line in buf[complete_from..].rsplit(|&b| b == b'\n') {
            if found.len() == n {
                break;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // A torn or foreign line is skipped: one bad line must not hide the trail.
            if let Ok(event) = serde_json::from_slice::<AuditEvent>(line) {
                found.push(event);
            }
        }
        buf.truncate(partial_end);
        pending = buf;
    }
    found.reverse();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::in_dir(dir.path());
        (dir, log)
    }

    fn at(ts: &str, container: &str, action: &str) -> AuditEvent {
        AuditEvent {
            ts: ts.to_owned(),
            container: container.to_owned(),
            name: format!("name-{container}"),
            action: action.to_owned(),
            target: String::new(),
            detail: String::new(),
        }
    }

    #[test]
    fn line_format() {
        let (_dir, log) = log();
        let event = AuditLog::event("c1", "web", action::ALLOW, "1.2.3.4", "by operator");
        log.record(event.clone()).unwrap();
        log.record(AuditLog::event("c1", "web", action::ATTACH, "", ""))
            .unwrap();
        let text = fs::read_to_string(log.path("c1")).unwrap();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines
                .iter()
                .all(|l| l.ends_with("}\n") && !l[..l.len() - 1].contains('\n'))
        );

        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 6);
        for key in ["ts", "container", "name", "action", "target", "detail"] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        assert_eq!(first["container"], "c1");
        assert_eq!(first["name"], "web");
        assert_eq!(first["action"], "allow");
        assert_eq!(first["target"], "1.2.3.4");
        assert_eq!(first["detail"], "by operator");
        // Compact: no spaces outside strings.
        assert_eq!(lines[0].trim_end(), serde_json::to_string(&event).unwrap());

        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert!(second.get("target").is_none(), "{second}");
        assert_eq!(second["detail"], "");

        // The timestamp: UTC, microseconds, fixed width.
        let ts = first["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-28T21:00:00.123456Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
        humantime::parse_rfc3339(ts).unwrap();
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_234_567)),
            "1970-01-01T00:00:01.234567Z"
        );
    }

    #[test]
    fn file_modes() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, log) = log();
        log.record(AuditLog::event("c1", "web", action::ATTACH, "", ""))
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&log.path("c1")), 0o600);
        assert_eq!(mode(log.path("c1").parent().unwrap()), 0o700);
    }

    #[test]
    fn a_trail_moved_away_or_deleted_is_reopened() {
        let (_dir, log) = log();
        let path = log.path("c1");
        log.record(AuditLog::event("c1", "web", action::ALLOW, "1", ""))
            .unwrap();
        // Rotated: the old file keeps its line, the next one starts a new file.
        let rotated = path.with_extension("jsonl.1");
        fs::rename(&path, &rotated).unwrap();
        std::thread::sleep(RECHECK_PATH);
        log.record(AuditLog::event("c1", "web", action::ALLOW, "2", ""))
            .unwrap();
        assert_eq!(fs::read_to_string(&rotated).unwrap().lines().count(), 1);
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .contains("\"target\":\"2\"")
        );
        // Deleted: recreated.
        fs::remove_file(&path).unwrap();
        std::thread::sleep(RECHECK_PATH);
        log.record(AuditLog::event("c1", "web", action::ALLOW, "3", ""))
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"target\":\"3\""));
    }

    #[test]
    fn several_events_are_recorded_in_order_and_published() {
        let (_dir, log) = log();
        let mut stream = log.subscribe();
        let events = vec![
            AuditLog::event("c1", "web", action::ALLOW, "1.1.1.1", ""),
            AuditLog::event("c1", "web", action::ALLOW, "2.2.2.2", ""),
            AuditLog::event("c2", "db", action::DENY, "3.3.3.3", ""),
            AuditLog::event("c1", "web", action::ALLOW, "4.4.4.4", ""),
        ];
        log.record_all(events.clone()).unwrap();
        let targets = |id: &str| -> Vec<String> {
            log.last(Some(id), 10)
                .unwrap()
                .into_iter()
                .map(|event| event.target)
                .collect()
        };
        assert_eq!(targets("c1"), ["1.1.1.1", "2.2.2.2", "4.4.4.4"]);
        assert_eq!(targets("c2"), ["3.3.3.3"]);
        for event in events {
            assert_eq!(stream.try_recv().unwrap(), event);
        }

        // One unsafe id refuses them all: nothing written, nothing published.
        let refused = vec![
            AuditLog::event("c1", "web", action::ALLOW, "5.5.5.5", ""),
            AuditLog::event("../x", "x", action::ALLOW, "", ""),
        ];
        assert!(matches!(log.record_all(refused), Err(AuditError::Id(_))));
        assert_eq!(targets("c1").len(), 3);
        assert!(stream.try_recv().is_err());
    }

    #[test]
    fn a_closed_trail_is_reopened_by_the_next_line() {
        let (_dir, log) = log();
        log.record(AuditLog::event("c1", "web", action::ATTACH, "", ""))
            .unwrap();
        log.close("c1");
        assert!(log.inner.open.lock().unwrap().is_empty());
        log.record(AuditLog::event("c1", "web", action::ATTACH, "", ""))
            .unwrap();
        assert_eq!(
            fs::read_to_string(log.path("c1")).unwrap().lines().count(),
            2
        );
    }

    #[test]
    fn rejects_unsafe_ids() {
        let (dir, log) = log();
        for bad in ["", "..", "../x", "a/b"] {
            let event = AuditLog::event(bad, "x", action::ALLOW, "", "");
            assert!(
                matches!(log.record(event), Err(AuditError::Id(_))),
                "{bad:?}"
            );
            assert!(matches!(log.last(Some(bad), 1), Err(AuditError::Id(_))));
        }
        assert!(!dir.path().parent().unwrap().join(AUDIT_FILE).exists());
    }

    #[test]
    fn concurrent_records_write_whole_lines() {
        let (_dir, log) = log();
        let threads = 8;
        let per_thread = 200;
        std::thread::scope(|scope| {
            for t in 0..threads {
                let log = log.clone();
                scope.spawn(move || {
                    // Long details make a torn write likely if lines were written in pieces.
                    let detail = format!("{t}").repeat(2000);
                    for i in 0..per_thread {
                        let event = AuditLog::event(
                            "c1",
                            "web",
                            action::ALLOW,
                            &format!("{t}/{i}"),
                            &detail,
                        );
                        log.record(event).unwrap();
                    }
                });
            }
        });
        let text = fs::read_to_string(log.path("c1")).unwrap();
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            let event: AuditEvent = serde_json::from_str(line).unwrap();
            let (t, _) = event.target.split_once('/').unwrap();
            assert_eq!(event.detail, t.repeat(2000));
            assert!(seen.insert(event.target));
        }
        assert_eq!(seen.len(), threads * per_thread);
    }

    #[test]
    fn last_of_one_container_and_merged() {
        let (_dir, log) = log();
        log.record(at("2026-01-01T00:00:00.000001Z", "a", "attach"))
            .unwrap();
        log.record(at("2026-01-01T00:00:00.000003Z", "b", "attach"))
            .unwrap();
        log.record(at("2026-01-01T00:00:00.000002Z", "a", "allow"))
            .unwrap();
        log.record(at("2026-01-01T00:00:00.000005Z", "a", "deny"))
            .unwrap();
        log.record(at("2026-01-01T00:00:00.000004Z", "b", "mode"))
            .unwrap();

        let actions = |events: Vec<AuditEvent>| -> Vec<String> {
            events
                .into_iter()
                .map(|e| format!("{}:{}", e.container, e.action))
                .collect()
        };
        assert_eq!(
            actions(log.last(None, 10).unwrap()),
            ["a:attach", "a:allow", "b:attach", "b:mode", "a:deny"]
        );
        assert_eq!(actions(log.last(None, 2).unwrap()), ["b:mode", "a:deny"]);
        assert_eq!(
            actions(log.last(Some("a"), 2).unwrap()),
            ["a:allow", "a:deny"]
        );
        assert_eq!(
            actions(log.last(Some("b"), 10).unwrap()),
            ["b:attach", "b:mode"]
        );
        assert!(log.last(Some("unknown"), 10).unwrap().is_empty());
        assert!(log.last(None, 0).unwrap().is_empty());
        assert!(
            AuditLog::in_dir("/nonexistent/shield")
                .last(None, 5)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let (_dir, log) = log();
        log.record(at("2026-01-01T00:00:00.000001Z", "a", "attach"))
            .unwrap();
        let mut file = OpenOptions::new().append(true).open(log.path("a")).unwrap();
        file.write_all(b"not json\n\n{\"ts\":\"x\"}\n{\"ts\":\"2026-01-01T00:00:00.0000")
            .unwrap();
        // A torn line without its newline, then a good line glued to it and a good one after.
        file.write_all(b"\n").unwrap();
        drop(file);
        log.record(at("2026-01-01T00:00:00.000002Z", "a", "allow"))
            .unwrap();
        let mut file = OpenOptions::new().append(true).open(log.path("a")).unwrap();
        file.write_all(b"{\"ts\":\"2026-01-01T00:00:00.000003Z\",\"container\":\"a\"")
            .unwrap();
        drop(file);
        let events = log.last(Some("a"), 10).unwrap();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["attach", "allow"]);
        assert_eq!(log.last(Some("a"), 1).unwrap()[0].action, "allow");
        assert_eq!(log.last(None, 10).unwrap().len(), 2);
    }

    #[test]
    fn tail_across_chunks() {
        let (_dir, log) = log();
        // Lines of ~1 KiB, well over several chunks, so lines straddle chunk boundaries.
        let total: usize = 300;
        let detail = "d".repeat(1000);
        for i in 0..total {
            let mut event = at(&format!("2026-01-01T00:00:00.{i:06}Z"), "a", "allow");
            event.target = i.to_string();
            event.detail = detail.clone();
            log.record(event).unwrap();
        }
        for n in [1, 2, 63, 64, 65, 150, 299, 300, 1000] {
            let events = log.last(Some("a"), n).unwrap();
            let expect: Vec<String> = (total.saturating_sub(n)..total)
                .map(|i| i.to_string())
                .collect();
            let got: Vec<String> = events.into_iter().map(|e| e.target).collect();
            assert_eq!(got, expect, "n={n}");
        }
        // A file without any newline: one (torn) line, skipped.
        let other = log.path("b");
        fs::create_dir(other.parent().unwrap()).unwrap();
        fs::write(&other, "x".repeat(200_000)).unwrap();
        assert!(log.last(Some("b"), 5).unwrap().is_empty());
    }

    #[tokio::test]
    async fn subscribers_receive_recorded_events() {
        let (dir, log) = log();
        let mut first = log.subscribe();
        let mut second = log.clone().subscribe();
        let event = AuditLog::event("c1", "web", action::DENY, "10.0.0.0/8", "");
        log.record(event.clone()).unwrap();
        assert_eq!(first.recv().await.unwrap(), event);
        assert_eq!(second.recv().await.unwrap(), event);
        // An unusable id is refused, and not published.
        let bad = AuditLog::event("../x", "web", action::DENY, "", "");
        assert!(log.record(bad).is_err());
        // Published even when the append fails (here: the directory is a file).
        fs::write(dir.path().join("c2"), "").unwrap();
        let unwritable = AuditLog::event("c2", "db", action::STOPPED, "", "");
        assert!(matches!(
            log.record(unwritable.clone()),
            Err(AuditError::Io { .. })
        ));
        assert_eq!(first.recv().await.unwrap(), unwritable);
    }
}
