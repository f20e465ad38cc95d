//! The state store: each container's intent, on disk, crash-safe.
//!
//! What an operator has asked for a container — its profiles, live allows and denies, mode — must
//! survive a restart of the container and of the daemon, so the daemon writes it here before it
//! reports a change done, and reads it all back on start (see DESIGN.md, "Policy and state").
//!
//! Layout: `$XDG_STATE_HOME/shield/containers/<id>/state.json` and `changes.jsonl` (directories
//! 0700, files 0600), beside the container's `audit.jsonl` ([`crate::audit`]).
//!
//! - A **save** writes the whole state: a temporary file in the same directory, fsynced, renamed
//!   over `state.json`, the directory fsynced. Rename is atomic, so a crash at any moment leaves
//!   either the old or the new state, never a torn one. A save empties the journal.
//! - An **append** records one live change (`allow` or `deny` of some targets) as one line of
//!   the journal: what a change costs on disk follows the size of the change, not of the
//!   container's state (a save of 100 000 allowed addresses writes 2 MB and three fsyncs).
//!   Each line carries a sequence number; `state.json` records the last one it includes, so a
//!   line that a save has already folded in is never applied twice, and a line torn by a crash
//!   (never acknowledged: the append had not returned) is ignored.
//! - How durable a line is when the append returns is the caller's choice ([`Durability`]):
//!   `fdatasync`ed, or only written (it survives the daemon's crash, and a power loss only once
//!   [`Store::sync_journal`] has run). An `fdatasync` makes every earlier line of the file
//!   durable too, so after a power loss the lines that are missing are always the last ones —
//!   possibly as a hole of zero bytes (the file's length got to the disk, their data did not):
//!   a load cuts the journal at such a hole.
//! - A **load** reads `state.json` and replays the journal's newer lines with the same
//!   [`Intent`] operations that made them.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use indexmap::IndexSet;

use crate::intent::{self, Intent, TargetError};
use crate::oci::{self, OciError};
use crate::profiles::DomainPattern;
use crate::ruleset::Mode;

pub use crate::process::ProcessIdentity;

/// The format version this daemon writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Name of the state file in a container's directory.
pub const STATE_FILE: &str = "state.json";

/// Name of the change journal in a container's directory.
pub const JOURNAL_FILE: &str = "changes.jsonl";

/// A journal longer than this is folded into `state.json` (when it is also longer than the state
/// file, so that the rewrites cost no more, in bytes, than the appends they replace).
const COMPACT_MIN_BYTES: u64 = 256 * 1024;

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
    /// A journal line that is complete but not a valid change (corrupt, or edited by hand).
    #[error("{}: line {line}: invalid change: {reason}", path.display())]
    Journal {
        /// The journal.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored domain that is not a valid domain pattern (the state file was edited by hand).
    #[error("container {id}: stored domain {domain:?} is invalid")]
    StoredDomain {
        /// The container.
        id: String,
        /// The domain as stored.
        domain: String,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    /// Format version, [`STATE_VERSION`].
    pub version: u32,
    /// Container id (the directory name).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Profiles the container was attached with.
    pub profiles: Vec<String>,
    /// The operator's live allows and denies, and the mode.
    pub intent: Intent,
    /// The container's process while it runs (from the last attach); `None` once stopped.
    pub process: Option<ProcessIdentity>,
    /// Sequence number of the last journalled change this state includes (0: none yet).
    pub journal_seq: u64,
}

impl ContainerState {
    /// A fresh state for a container that has just been attached: no live changes, mode `up`.
    pub fn new(id: impl Into<String>, name: impl Into<String>, profiles: Vec<String>) -> Self {
        Self {
            version: STATE_VERSION,
            id: id.into(),
            name: name.into(),
            profiles,
            intent: Intent::default(),
            process: None,
            journal_seq: 0,
        }
    }

    /// The state in its file's shape.
    fn to_file(&self) -> StateFile {
        let intent = &self.intent;
        StateFile {
            version: self.version,
            id: self.id.clone(),
            name: self.name.clone(),
            profiles: self.profiles.clone(),
            allowed: intent.allowed.iter().copied().collect(),
            denied: intent.denied.iter().copied().collect(),
            allowed_domains: intent
                .allowed_domains
                .iter()
                .map(ToString::to_string)
                .collect(),
            denied_domains: intent
                .denied_domains
                .iter()
                .map(ToString::to_string)
                .collect(),
            mode: intent.mode,
            process: self.process,
            journal_seq: self.journal_seq,
        }
    }

    /// The state a file holds; its domains are checked here, once.
    fn from_file(file: StateFile) -> Result<Self, StoreError> {
        let id = &file.id;
        let domains = |list: Vec<String>| -> Result<IndexSet<DomainPattern>, StoreError> {
            list.into_iter()
                .map(|domain| {
                    DomainPattern::parse(&domain).map_err(|_| StoreError::StoredDomain {
                        id: id.clone(),
                        domain,
                    })
                })
                .collect()
        };
        let intent = Intent {
            allowed: file.allowed.into_iter().collect(),
            denied: file.denied.into_iter().collect(),
            allowed_domains: domains(file.allowed_domains)?,
            denied_domains: domains(file.denied_domains)?,
            mode: file.mode,
        };
        Ok(Self {
            version: file.version,
            id: file.id,
            name: file.name,
            profiles: file.profiles,
            intent,
            process: file.process,
            journal_seq: file.journal_seq,
        })
    }
}

/// `state.json` as it is written: plain lists, in the order the intent keeps.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    id: String,
    name: String,
    profiles: Vec<String>,
    /// Addresses and networks allowed live, on top of the profiles.
    allowed: Vec<IpNet>,
    /// Addresses and networks denied live; deny wins over allow.
    denied: Vec<IpNet>,
    allowed_domains: Vec<String>,
    denied_domains: Vec<String>,
    mode: Mode,
    process: Option<ProcessIdentity>,
    #[serde(default)]
    journal_seq: u64,
}

/// What a journalled change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalAction {
    /// [`Intent::allow_all`] of the targets.
    Allow,
    /// [`Intent::deny_all`] of the targets.
    Deny,
}

/// One live change, as the journal keeps it until the next save folds it into `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// One more than the previous change's ([`ContainerState::journal_seq`] after it).
    pub seq: u64,
    /// Allow or deny.
    pub action: JournalAction,
    /// The targets, in canonical form ([`intent::Target`]'s `Display`), in request order.
    pub targets: Vec<String>,
}

impl JournalEntry {
    /// Applies the change to `intent`, exactly as it was applied when it was made.
    fn replay(&self, intent: &mut Intent) -> Result<(), TargetError> {
        let targets = intent::parse_targets(&self.targets)?;
        match self.action {
            JournalAction::Allow => intent.allow_all(&targets),
            JournalAction::Deny => intent.deny_all(&targets),
        };
        Ok(())
    }
}

/// How durable [`Store::append`] makes a line before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk (`fdatasync`), with every earlier line: survives a power loss.
    Synced,
    /// Written to the file (the kernel's page cache): survives the daemon's crash or kill, and
    /// a power loss once [`Store::sync_journal`] has run for the container.
    Written,
}

/// Where an appended change starts in the journal, to take it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalMark {
    offset: u64,
    /// Whether the journal has grown enough that a save (which empties it) is due.
    pub compaction_due: bool,
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

    /// Writes `state` atomically to `STATE/containers/<id>/state.json`, and empties the journal:
    /// `state` is the whole truth, every change it does not include is dropped.
    ///
    /// Returns only once the new state is durable: the file and the rename are both fsynced.
    pub fn save(&self, state: &ContainerState) -> Result<(), StoreError> {
        oci::validate_id(&state.id)?;
        let dir = self.container_dir(&state.id);
        create_private_dir(&dir, false)?;
        let path = dir.join(STATE_FILE);
        let mut json =
            serde_json::to_vec(&state.to_file()).map_err(|source| StoreError::Serialize {
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
        // The journal is created here, so that the directory fsync below makes its entry durable
        // and an append never needs one.
        let journal_path = dir.join(JOURNAL_FILE);
        let written = write_synced(&temp, &json).and_then(|()| {
            let journal = open_journal(&journal_path)?;
            fs::rename(&temp, &path).map_err(|err| StoreError::io(&path, err))?;
            Ok(journal)
        });
        let journal = match written {
            Ok(journal) => journal,
            Err(err) => {
                // Best effort: a leftover is harmless (never read), only untidy.
                let _ = fs::remove_file(&temp);
                return Err(err);
            }
        };
        // The rename is only durable once the directory entry is on disk.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|err| StoreError::io(&dir, err))?;
        // Only now may the journal go: until the new state is durable its lines are the only
        // record of the changes. Not synced: should the truncation be lost, the lines it
        // removed are at most `journal_seq`, which a load skips.
        journal
            .set_len(0)
            .map_err(|err| StoreError::io(&journal_path, err))
    }

    /// Appends one change to the container's journal. Returns once the line is as durable as
    /// `durability` asks, with the mark that [`take_back`](Self::take_back) needs.
    ///
    /// The container must have been saved once: a journal without a state is never read.
    pub fn append(
        &self,
        id: &str,
        entry: &JournalEntry,
        durability: Durability,
    ) -> Result<JournalMark, StoreError> {
        oci::validate_id(id)?;
        let path = self.container_dir(id).join(JOURNAL_FILE);
        let mut line = serde_json::to_vec(entry).map_err(|source| StoreError::Serialize {
            path: path.clone(),
            source,
        })?;
        line.push(b'\n');
        let io_error = |err| StoreError::io(&path, err);
        let mut journal = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(journal) => journal,
            // A state saved before journals existed: create it, durably.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                drop(open_journal(&path)?);
                let dir = self.container_dir(id);
                File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|err| StoreError::io(&dir, err))?;
                OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_error)?
            }
            Err(err) => return Err(io_error(err)),
        };
        let offset = complete_length(&mut journal).map_err(io_error)?;
        let written = journal.write_all(&line).and_then(|()| match durability {
            Durability::Synced => journal.sync_data(),
            Durability::Written => Ok(()),
        });
        if let Err(err) = written {
            // Best effort: a line the caller is told failed must not be replayed.
            let _ = journal.set_len(offset);
            return Err(io_error(err));
        }
        let length = offset + line.len() as u64;
        let compaction_due = length > COMPACT_MIN_BYTES
            && fs::metadata(self.container_dir(id).join(STATE_FILE))
                .is_ok_and(|state| length > state.len());
        Ok(JournalMark {
            offset,
            compaction_due,
        })
    }

    /// Makes every line of container `id`'s journal durable (`fdatasync`). A journal that is
    /// gone (the container was forgotten) has nothing to make durable.
    pub fn sync_journal(&self, id: &str) -> Result<(), StoreError> {
        oci::validate_id(id)?;
        let path = self.container_dir(id).join(JOURNAL_FILE);
        match File::open(&path) {
            Ok(journal) => journal
                .sync_data()
                .map_err(|err| StoreError::io(&path, err)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(StoreError::io(&path, err)),
        }
    }

    /// Takes back the change appended at `mark` (and anything after it), durably: the change
    /// failed elsewhere and must not come back with a restart.
    pub fn take_back(&self, id: &str, mark: JournalMark) -> Result<(), StoreError> {
        oci::validate_id(id)?;
        cut_journal(&self.container_dir(id).join(JOURNAL_FILE), mark.offset)
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
        // Without its state the journal is never read; removing it is tidiness.
        let _ = fs::remove_file(dir.join(JOURNAL_FILE));
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
        let file: StateFile = serde_json::from_slice(&bytes).map_err(parse_error)?;
        let mut state = ContainerState::from_file(file)?;
        if state.id != id {
            return Err(StoreError::IdMismatch {
                path,
                expected: id.to_owned(),
                found: state.id,
            });
        }
        self.replay_journal(&mut state)?;
        Ok(Some(state))
    }

    /// Applies the journal's changes that `state` does not include yet.
    fn replay_journal(&self, state: &mut ContainerState) -> Result<(), StoreError> {
        let path = self.container_dir(&state.id).join(JOURNAL_FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(StoreError::io(path, err)),
        };
        let journal_error = |line, reason: String| StoreError::Journal {
            path: path.clone(),
            line,
            reason,
        };
        // Only complete lines: a torn last line was never acknowledged.
        let complete = text.get(..complete_lines(&text)).unwrap_or_default();
        let mut start = 0;
        for (index, line) in complete.split(|&byte| byte == b'\n').enumerate() {
            let line_start = start;
            start += line.len() + 1;
            if line.contains(&0) {
                // A power loss took the data of the lines from here on, not the file's length.
                // They were never synced, and no line after them was (a sync takes every
                // earlier line along): cut them off, or the next append would land behind the
                // hole, where no load reads it.
                cut_journal(&path, line_start as u64)?;
                tracing::warn!(container = %state.id, path = %path.display(), line = index + 1, "journal cut at a hole a power loss left: the changes from this line on were lost");
                break;
            }
            if line.is_empty() {
                continue;
            }
            let entry: JournalEntry = serde_json::from_slice(line)
                .map_err(|err| journal_error(index + 1, err.to_string()))?;
            if entry.seq <= state.journal_seq {
                continue;
            }
            entry
                .replay(&mut state.intent)
                .map_err(|err| journal_error(index + 1, err.to_string()))?;
            state.journal_seq = entry.seq;
        }
        Ok(())
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

/// Cuts the journal at `path` to its first `length` bytes, durably.
fn cut_journal(path: &Path, length: u64) -> Result<(), StoreError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|journal| {
            journal.set_len(length)?;
            journal.sync_data()
        })
        .map_err(|err| StoreError::io(path, err))
}

/// Opens (creating it if need be) the journal at `path`, for writing.
fn open_journal(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|err| StoreError::io(path, err))
}

/// The length of the journal's complete lines. A line torn by a crash mid-append (never
/// acknowledged) is cut off here, before the next append would glue onto it.
fn complete_length(journal: &mut File) -> io::Result<u64> {
    let length = journal.seek(SeekFrom::End(0))?;
    if length == 0 {
        return Ok(0);
    }
    let mut last = [0_u8];
    journal.seek(SeekFrom::End(-1))?;
    journal.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(length);
    }
    let mut text = Vec::new();
    journal.seek(SeekFrom::Start(0))?;
    journal.read_to_end(&mut text)?;
    let complete = complete_lines(&text) as u64;
    journal.set_len(complete)?;
    Ok(complete)
}

/// How many bytes of `text` are complete lines (up to and including the last newline).
fn complete_lines(text: &[u8]) -> usize {
    text.iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |end| end + 1)
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
