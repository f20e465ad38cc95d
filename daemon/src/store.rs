//! The state store: each container's intent, on disk, crash-safe.
//!
//! What an operator has asked for a container — its profiles, live allows and denies, mode — must
//! survive a restart of the container and of the daemon, so the daemon writes it here before it
//! reports a change done, and reads it all back on start (see DESIGN.md, "Policy and state").
//!
//! Layout: `$XDG_STATE_HOME/shield/containers/<id>/state.json` (directories 0700, file 0600),
//! beside the container's `audit.jsonl` ([`crate::audit`]). A save writes a temporary file in the
//! same directory, fsyncs it, renames it over `state.json` and fsyncs the directory: rename is
//! atomic, so a crash at any moment leaves either the old or the new state, never a torn one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::oci::{self, OciError};
use crate::ruleset::Mode;

pub use crate::process::ProcessIdentity;

/// The format version this daemon writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Name of the state file in a container's directory.
pub const STATE_FILE: &str = "state.json";

/// Prefix of the temporary files a save writes before renaming; never read as state.
const TEMP_PREFIX: &str = ".state.json.tmp.";

/// Mode of every directory the store creates: the state reveals what containers may reach.
const DIR_MODE: u32 = 0o700;
/// Mode of the state file.
const FILE_MODE: u32 = 0o600;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    /// A state file that is not valid JSON of the expected shape (corrupt, or edited by hand).
    #[error("{}: invalid state: {source}", path.display())]
    Parse {
        /// The state file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A state file written by a newer (or unknown) shield; not guessed at, so not overwritten.
    #[error(
        "{}: unsupported state version {version} (this shieldd reads version {STATE_VERSION}); upgrade shieldd or move the file away",
        path.display()
    )]
    Version {
        /// The state file.
        path: PathBuf,
        /// The version it declares.
        version: u32,
    },
    /// A state file whose `id` is not the directory it lives in.
    #[error("{}: state is for container {found:?}, not {expected:?}", path.display())]
    IdMismatch {
        /// The state file.
        path: PathBuf,
        /// The directory name.
        expected: String,
        /// The id in the file.
        found: String,
    },
    /// The state could not be serialised (not expected to happen).
    #[error("{}: cannot serialise state: {source}", path.display())]
    Serialize {
        /// The state file that was to be written.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Everything the daemon keeps about one container across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerState {
    /// Format version, [`STATE_VERSION`].
    pub version: u32,
    /// Container id (the directory name).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Profiles the container was attached with.
    pub profiles: Vec<String>,
    /// Addresses and networks allowed live, on top of the profiles.
    pub allowed: Vec<IpNet>,
    /// Addresses and networks denied live; deny wins over allow.
    pub denied: Vec<IpNet>,
    /// Domains allowed live.
    pub allowed_domains: Vec<String>,
    /// Domains denied live.
    pub denied_domains: Vec<String>,
    /// Enforcement mode.
    pub mode: Mode,
    /// The container's process while it runs (from the last attach); `None` once stopped.
    pub process: Option<ProcessIdentity>,
}

impl ContainerState {
    /// A fresh state for a container that has just been attached: no live changes, mode `up`.
    pub fn new(id: impl Into<String>, name: impl Into<String>, profiles: Vec<String>) -> Self {
        Self {
            version: STATE_VERSION,
            id: id.into(),
            name: name.into(),
            profiles,
            allowed: Vec::new(),
            denied: Vec::new(),
            allowed_domains: Vec::new(),
            denied_domains: Vec::new(),
            mode: Mode::default(),
            process: None,
        }
    }
}

/// Only the version, read first so that a newer format is refused by number rather than by
/// whichever unknown field `deny_unknown_fields` trips over first.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<u32>,
}

/// Distinguishes the temporary files of concurrent saves within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The state store, rooted at `STATE/containers`.
#[derive(Clone, Debug)]
pub struct Store {
    containers: PathBuf,
}

impl Store {
    /// Opens the store under `state_dir` (`$XDG_STATE_HOME/shield`), creating `state_dir` and
    /// `state_dir/containers` (and missing parents) with mode 0700.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let containers = state_dir.join("containers");
        create_private_dir(&containers, true)?;
        // An existing directory keeps its mode through create_dir_all; tighten ours explicitly.
        for dir in [state_dir, &containers] {
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
                .map_err(|err| StoreError::io(dir, err))?;
        }
        Ok(Self { containers })
    }

    /// `STATE/containers`.
    pub fn containers_dir(&self) -> &Path {
        &self.containers
    }

    /// `STATE/containers/<id>` (the id is not checked: use it for display or after validation).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers.join(id)
    }

    /// Writes `state` atomically to `STATE/containers/<id>/state.json`.
    ///
    /// Returns only once the new state is durable: the file and the rename are both fsynced.
    pub fn save(&self, state: &ContainerState) -> Result<(), StoreError> {
        oci::validate_id(&state.id)?;
        let dir = self.container_dir(&state.id);
        create_private_dir(&dir, false)?;
        let path = dir.join(STATE_FILE);
        let mut json = serde_json::to_vec(state).map_err(|source| StoreError::Serialize {
            path: path.clone(),
            source,
        })?;
        json.push(b'\n');

        // Unique per process and per save, so concurrent saves never share a temp file, and
        // `load_all` can tell a dead writer's leftovers (another pid) from a live save's.
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_synced(&temp, &json)
            .and_then(|()| fs::rename(&temp, &path).map_err(|err| StoreError::io(&path, err)));
        if let Err(err) = written {
            // Best effort: a leftover is harmless (never read), only untidy.
            let _ = fs::remove_file(&temp);
            return Err(err);
        }
        // The rename is only durable once the directory entry is on disk.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|err| StoreError::io(&dir, err))
    }

    /// Removes the state of container `id` (and its directory, when nothing else is in it).
    /// Removing a state that does not exist is not an error.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        oci::validate_id(id)?;
        let dir = self.container_dir(id);
        let path = dir.join(STATE_FILE);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(StoreError::io(path, err)),
        }
        // Best effort: an audit trail beside the state keeps the directory, as it should.
        let _ = fs::remove_dir(&dir);
        Ok(())
    }

    /// Reads the state of container `id`; `None` if it has none.
    pub fn load(&self, id: &str) -> Result<Option<ContainerState>, StoreError> {
        oci::validate_id(id)?;
        let path = self.container_dir(id).join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(StoreError::io(path, err)),
        };
        let parse_error = |source| StoreError::Parse {
            path: path.clone(),
            source,
        };
        let probe: VersionProbe = serde_json::from_slice(&bytes).map_err(parse_error)?;
        match probe.version {
            Some(STATE_VERSION) => {}
            Some(version) => return Err(StoreError::Version { path, version }),
            None => {
                return Err(parse_error(serde::de::Error::missing_field("version")));
            }
        }
        let state: ContainerState = serde_json::from_slice(&bytes).map_err(parse_error)?;
        if state.id != id {
            return Err(StoreError::IdMismatch {
                path,
                expected: id.to_owned(),
                found: state.id,
            });
        }
        Ok(Some(state))
    }

    /// Reads every container's state, sorted by id.
    ///
    /// One bad container does not hide the others: each unreadable or corrupt state (or
    /// directory with an invalid name) is returned as an error for the caller to log. A directory
    /// without `state.json` (only an audit trail, or created by a save that never completed) has
    /// no state and is skipped. Temporary files left by a writer that died mid-save are removed.
    pub fn load_all(&self) -> (Vec<ContainerState>, Vec<StoreError>) {
        let mut states = Vec::new();
        let mut errors = Vec::new();
        let entries = match fs::read_dir(&self.containers) {
            Ok(entries) => entries,
            Err(err) => {
                errors.push(StoreError::io(&self.containers, err));
                return (states, errors);
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    errors.push(StoreError::io(&self.containers, err));
                    continue;
                }
            };
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => {}
                // Stray files are not containers; nothing the store wrote.
                Ok(_) => continue,
                Err(err) => {
                    errors.push(StoreError::io(entry.path(), err));
                    continue;
                }
            }
            match entry.file_name().into_string() {
                Ok(id) => ids.push(id),
                Err(name) => errors.push(StoreError::Id(OciError::Id(
                    name.to_string_lossy().into_owned(),
                ))),
            }
        }
        ids.sort();
        for id in ids {
            if oci::validate_id(&id).is_ok() {
                self.remove_stale_temps(&id);
            }
            match self.load(&id) {
                Ok(Some(state)) => states.push(state),
                Ok(None) => {}
                Err(err) => errors.push(err),
            }
        }
        (states, errors)
    }

    /// Removes the temporary files of saves by other processes (dead daemons: only one runs).
    /// This process's own may belong to a save in progress and are left alone.
    fn remove_stale_temps(&self, id: &str) {
        let dir = self.container_dir(id);
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let own = format!("{TEMP_PREFIX}{}.", std::process::id());
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(TEMP_PREFIX) || name.starts_with(&own) {
                continue;
            }
            if let Err(err) = fs::remove_file(entry.path()) {
                tracing::debug!(file = %entry.path().display(), error = %err, "could not remove a stale temporary state file");
            }
        }
    }
}

/// Creates `dir` with mode 0700 (with its missing parents if `recursive`), and makes sure an
/// existing one has that mode too.
fn create_private_dir(dir: &Path, recursive: bool) -> Result<(), StoreError> {
    match DirBuilder::new()
        .recursive(recursive)
        .mode(DIR_MODE)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) if !recursive && err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(StoreError::io(dir, err)),
    }
    // The umask may have cleared bits of 0700 (e.g. 0277), and an existing directory may be
    // too open; one chmod is cheap next to the fsyncs of a save.
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|err| StoreError::io(dir, err))
}

/// Writes `content` to a new file at `path` (mode 0600) and fsyncs it.
fn write_synced(path: &Path, content: &[u8]) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|err| StoreError::io(path, err))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(|err| StoreError::io(path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unsafe_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for bad in ["", ".", "..", "../x", "a/b", "a\0b"] {
            assert!(matches!(store.load(bad), Err(StoreError::Id(_))), "{bad:?}");
            let state = ContainerState::new(bad, "x", vec![]);
            assert!(
                matches!(store.save(&state), Err(StoreError::Id(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn version_is_checked_before_fields() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cdir = store.container_dir("c1");
        fs::create_dir(&cdir).unwrap();
        fs::write(
            cdir.join(STATE_FILE),
            r#"{"version":2,"id":"c1","future_field":true}"#,
        )
        .unwrap();
        let err = store.load("c1").unwrap_err();
        assert!(
            matches!(err, StoreError::Version { version: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("state.json"), "{err}");
        assert!(
            err.to_string().contains("unsupported state version 2"),
            "{err}"
        );

        fs::write(cdir.join(STATE_FILE), r#"{"id":"c1"}"#).unwrap();
        let err = store.load("c1").unwrap_err();
        assert!(err.to_string().contains("missing field `version`"), "{err}");
    }
}
