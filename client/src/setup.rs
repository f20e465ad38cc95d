//! `shieldctl setup [--remove]`: installs shield's hook files and (for `--user`) registers their
//! directory in the user's `containers.conf`; removes exactly that again.
//!
//! Idempotent: a second `setup` changes nothing. What setup did (directories and files it
//! created, the `containers.conf` it found and wrote) is recorded in a state file next to the
//! hooks (`shield-setup.state`: not `.json`, so podman skips it), so that `--remove` undoes
//! exactly that: it restores `containers.conf` byte for byte when nobody edited it since, and
//! otherwise removes only the entry (and the key or table, if setup created them and they are
//! empty now).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Written};
use crate::containers_conf::{self, ConfError};
use crate::hooks::{HookFile, HookTarget, Stage};

/// The state file's name, in the hooks directory.
pub const STATE_FILE: &str = "shield-setup.state";

/// The system hooks directory (one of podman's defaults: no `containers.conf` edit needed).
pub const SYSTEM_HOOKS_DIR: &str = "/etc/containers/oci/hooks.d";

/// Which podman the hooks are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The user's rootless podman: shield's own directory, registered in the user's
    /// `containers.conf`.
    User,
    /// Every podman on the machine: [`SYSTEM_HOOKS_DIR`].
    System,
}

/// Where setup writes, and what the hooks run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupPlan {
    /// User or system.
    pub scope: Scope,
    /// The directory of the hook files.
    pub hooks_dir: PathBuf,
    /// The `containers.conf` that must list `hooks_dir` (user scope), or `None`.
    pub containers_conf: Option<PathBuf>,
    /// The hook directories podman reads when that file sets no `hooks_dir` (kept in the list
    /// setup creates, because a list replaces them).
    pub inherited_hooks_dirs: Vec<String>,
    /// The hook binary and the daemon's socket.
    pub target: HookTarget,
}

/// What setup did to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Made it.
    Created,
    /// Changed it.
    Updated,
    /// Left it: already as wanted.
    Unchanged,
    /// Deleted it.
    Removed,
    /// Put its content from before setup back.
    Restored,
}

impl Action {
    /// The word in text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Removed => "removed",
            Self::Restored => "restored",
        }
    }
}

/// One line of setup's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What happened.
    pub action: Action,
    /// To which path.
    pub path: PathBuf,
    /// Details for people (may be empty).
    pub detail: String,
}

impl Change {
    fn new(action: Action, path: &Path, detail: impl Into<String>) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

/// Setup could not finish. Changes made before the failure stay recorded in the state file.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The hook binary is missing or not executable (podman would fail every container start).
    #[error(
        "{}: {reason} (install shield-hook next to shieldctl, or pass --hook PATH)",
        .path.display()
    )]
    HookBinary {
        /// The binary.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// To which path.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The user's `containers.conf` cannot be edited.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The state file is not setup's.
    #[error("{}: not a shieldctl setup state file ({message}); remove it by hand", .path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SetupError + use<> {
    let path = path.to_path_buf();
    move |source| SetupError::Io { what, path, source }
}

/// What setup did, kept between runs (JSON in [`STATE_FILE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SetupState {
    /// Directories setup created, outermost first.
    #[serde(default)]
    created_dirs: Vec<PathBuf>,
    /// Hook files setup wrote.
    #[serde(default)]
    hook_files: Vec<PathBuf>,
    /// The `containers.conf` edit, if setup made one.
    #[serde(default)]
    containers_conf: Option<ConfRecord>,
}

/// How setup changed `containers.conf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ConfRecord {
    path: PathBuf,
    /// The file did not exist.
    created_file: bool,
    /// setup made `[engine]`.
    created_engine: bool,
    /// setup created `hooks_dir` holding these inherited directories before its own.
    inserted_defaults: Option<Vec<String>>,
    /// The text before setup's first edit (`None`: no file, or unknown after outside edits).
    original: Option<String>,
    /// The text setup last wrote.
    written: String,
}

fn state_path(plan: &SetupPlan) -> PathBuf {
    plan.hooks_dir.join(STATE_FILE)
}

fn load_state(path: &Path) -> Result<Option<SetupState>, SetupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| SetupError::State {
                path: path.to_path_buf(),
                message: error.to_string(),
            }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error("read", path)(source)),
    }
}

fn save_state(path: &Path, state: &SetupState) -> Result<(), SetupError> {
    let mut text = serde_json::to_string_pretty(state).unwrap_or_default();
    text.push('\n');
    atomic::write_if_changed(path, text.as_bytes(), 0o644)
        .map(|_| ())
        .map_err(io_error("write", path))
}

/// Checks that `hook` is an executable file: podman stats every hook's binary when it loads
/// the hook directories and fails every container start if one is missing.
pub fn check_hook_binary(hook: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt as _;
    let reason = match std::fs::metadata(hook) {
        Ok(meta) if !meta.is_file() => "not a file".to_owned(),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => "not executable".to_owned(),
        Ok(_) => return Ok(()),
        Err(error) => error.to_string(),
    };
    Err(SetupError::HookBinary {
        path: hook.to_path_buf(),
        reason,
    })
}

/// Installs the hooks as `plan` says and reports every path it looked at.
pub fn install(plan: &SetupPlan) -> Result<Vec<Change>, SetupError> {
    check_hook_binary(&plan.target.hook)?;
    let state_file = state_path(plan);
    let mut state = load_state(&state_file)?.unwrap_or_default();
    let mut changes = Vec::new();

    let created =
        atomic::create_dirs(&plan.hooks_dir, 0o755).map_err(io_error("create", &plan.hooks_dir))?;
    for dir in created {
        changes.push(Change::new(Action::Created, &dir, "directory"));
        state.created_dirs.push(dir);
    }
    // Recorded before anything else is written, so that a failure later still leaves a state
    // file that `--remove` can undo from.
    save_state(&state_file, &state)?;

    for stage in Stage::ALL {
        let path = plan.hooks_dir.join(stage.file_name());
        let text = HookFile::for_stage(stage, &plan.target).to_text();
        let written = atomic::write_if_changed(&path, text.as_bytes(), 0o644)
            .map_err(io_error("write", &path))?;
        let action = match written {
            Written::Created => Action::Created,
            Written::Replaced => Action::Updated,
            Written::Unchanged => Action::Unchanged,
        };
        changes.push(Change::new(
            action,
            &path,
            format!("{} hook", stage.as_str()),
        ));
        if !state.hook_files.contains(&path) {
            state.hook_files.push(path);
        }
        save_state(&state_file, &state)?;
    }

    if let Some(conf) = &plan.containers_conf {
        changes.push(register_dir(plan, conf, &mut state)?);
        save_state(&state_file, &state)?;
    }
    Ok(changes)
}

/// Adds the hooks directory to `conf`'s `hooks_dir` (keeping the inherited directories).
fn register_dir(
    plan: &SetupPlan,
    conf: &Path,
    state: &mut SetupState,
) -> Result<Change, SetupError> {
    let dir = plan.hooks_dir.to_string_lossy();
    let original = match std::fs::read_to_string(conf) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(io_error("read", conf)(source)),
    };
    let added = containers_conf::add_hooks_dir(
        conf,
        original.as_deref(),
        &dir,
        &plan.inherited_hooks_dirs,
    )?;
    if !added.added_entry {
        return Ok(Change::new(
            Action::Unchanged,
            conf,
            format!("[engine] hooks_dir lists {dir}"),
        ));
    }
    if let Some(parent) = conf.parent() {
        let created = atomic::create_dirs(parent, 0o755).map_err(io_error("create", parent))?;
        state.created_dirs.extend(created);
    }
    atomic::write(conf, added.text.as_bytes(), 0o644).map_err(io_error("write", conf))?;
    let record = match state.containers_conf.take() {
        // An earlier setup's record: keep what it knew, unless the file changed since it wrote
        // it (then the original bytes no longer describe what to go back to).
        Some(mut record) if record.path == conf => {
            if original.as_deref() != Some(record.written.as_str()) {
                record.original = None;
                record.created_file = record.created_file && original.is_none();
            }
            record.created_engine |= added.created_engine;
            record.inserted_defaults = record.inserted_defaults.or(added.inserted_defaults);
            record.written = added.text;
            record
        }
        _ => ConfRecord {
            path: conf.to_path_buf(),
            created_file: original.is_none(),
            created_engine: added.created_engine,
            inserted_defaults: added.inserted_defaults,
            original: original.clone(),
            written: added.text,
        },
    };
    state.containers_conf = Some(record);
    let action = if original.is_none() {
        Action::Created
    } else {
        Action::Updated
    };
    Ok(Change::new(
        action,
        conf,
        format!("[engine] hooks_dir += {dir}"),
    ))
}

/// Removes what setup installed and reports it (an empty report: nothing was installed).
pub fn uninstall(plan: &SetupPlan) -> Result<Vec<Change>, SetupError> {
    let state_file = state_path(plan);
    let state = load_state(&state_file)?;
    let mut changes = Vec::new();

    if let Some(conf) = &plan.containers_conf {
        let record = state
            .as_ref()
            .and_then(|state| state.containers_conf.as_ref())
            .filter(|record| record.path == *conf);
        // With a state file and no record, setup did not add the entry (the user had it): it
        // stays. Without a state file, shield's own directory is taken out on a best guess.
        if (record.is_some() || state.is_none())
            && let Some(change) = unregister_dir(plan, conf, record)?
        {
            changes.push(change);
        }
    }

    let hook_files = match &state {
        Some(state) => state.hook_files.clone(),
        // No record (lost, or an older install): shield's own file names are shield's.
        None => Stage::ALL
            .iter()
            .map(|stage| plan.hooks_dir.join(stage.file_name()))
            .collect(),
    };
    for path in hook_files {
        if remove_file(&path)? {
            changes.push(Change::new(Action::Removed, &path, "hook"));
        }
    }
    remove_file(&state_file)?;
    if let Some(state) = &state {
        for dir in state.created_dirs.iter().rev() {
            match std::fs::remove_dir(dir) {
                Ok(()) => changes.push(Change::new(Action::Removed, dir, "directory")),
                // Not empty (something else lives there now) or already gone: leave it.
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                    ) => {}
                Err(source) => return Err(io_error("remove", dir)(source)),
            }
        }
    }
    Ok(changes)
}

/// Deletes `path`; false when it did not exist.
fn remove_file(path: &Path) -> Result<bool, SetupError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(io_error("remove", path)(source)),
    }
}

/// Takes the hooks directory out of `conf` again.
fn unregister_dir(
    plan: &SetupPlan,
    conf: &Path,
    record: Option<&ConfRecord>,
) -> Result<Option<Change>, SetupError> {
    let current = match std::fs::read_to_string(conf) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error("read", conf)(source)),
    };
    // Nobody touched the file since setup wrote it: put the old bytes back exactly.
    if let Some(record) = record.filter(|record| record.written == current) {
        if record.created_file {
            std::fs::remove_file(conf).map_err(io_error("remove", conf))?;
            return Ok(Some(Change::new(
                Action::Removed,
                conf,
                "setup had created it",
            )));
        }
        if let Some(original) = &record.original {
            atomic::write(conf, original.as_bytes(), 0o644).map_err(io_error("write", conf))?;
            return Ok(Some(Change::new(
                Action::Restored,
                conf,
                "as it was before setup",
            )));
        }
    }
    let dir = plan.hooks_dir.to_string_lossy();
    if !current.contains(dir.as_ref()) {
        // Not listed (and a file podman cannot parse need not be parsed to know that).
        return Ok(None);
    }
    let removed = containers_conf::remove_hooks_dir(
        conf,
        &current,
        &dir,
        record.and_then(|record| record.inserted_defaults.as_deref()),
        record.is_some_and(|record| record.created_engine),
    )?;
    if !removed.removed_entry {
        return Ok(None);
    }
    if record.is_some_and(|record| record.created_file) && removed.text.trim().is_empty() {
        std::fs::remove_file(conf).map_err(io_error("remove", conf))?;
        return Ok(Some(Change::new(
            Action::Removed,
            conf,
            "setup had created it",
        )));
    }
    atomic::write(conf, removed.text.as_bytes(), 0o644).map_err(io_error("write", conf))?;
    Ok(Some(Change::new(
        Action::Updated,
        conf,
        format!("[engine] hooks_dir -= {dir}"),
    )))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::containers_conf::DEFAULT_HOOKS_DIRS;

    struct Fixture {
        _root: tempfile::TempDir,
        root: PathBuf,
        plan: SetupPlan,
    }

    fn fixture(scope: Scope) -> Fixture {
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path().to_path_buf();
        let hook = root.join("bin/shield-hook");
        std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plan = SetupPlan {
            scope,
            hooks_dir: root.join("data/shield/hooks.d"),
            containers_conf: (scope == Scope::User)
                .then(|| root.join("config/containers/containers.conf")),
            inherited_hooks_dirs: DEFAULT_HOOKS_DIRS.map(str::to_owned).to_vec(),
            target: HookTarget {
                hook,
                socket: root.join("run/shieldd.sock"),
            },
        };
        Fixture {
            _root: root_dir,
            root,
            plan,
        }
    }

    fn actions(changes: &[Change]) -> Vec<(Action, String)> {
        changes
            .iter()
            .map(|change| {
                (
                    change.action,
                    change
                        .path
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                )
            })
            .collect()
    }

    fn conf(fixture: &Fixture) -> PathBuf {
        fixture.plan.containers_conf.clone().unwrap()
    }

    #[test]
    fn user_install_twice_then_remove_leaves_nothing() {
        let f = fixture(Scope::User);
        let changes = install(&f.plan).unwrap();
        assert_eq!(
            actions(&changes),
            [
                (Action::Created, "data".to_owned()),
                (Action::Created, "shield".to_owned()),
                (Action::Created, "hooks.d".to_owned()),
                (Action::Created, "shield-createruntime.json".to_owned()),
                (Action::Created, "shield-poststop.json".to_owned()),
                (Action::Created, "containers.conf".to_owned()),
            ]
        );
        let text = std::fs::read_to_string(conf(&f)).unwrap();
        let listed = containers_conf::hooks_dir(&conf(&f), &text)
            .unwrap()
            .unwrap();
        assert_eq!(
            listed,
            [
                DEFAULT_HOOKS_DIRS[0],
                DEFAULT_HOOKS_DIRS[1],
                &f.plan.hooks_dir.to_string_lossy()
            ]
        );
        let hook: HookFile = serde_json::from_str(
            &std::fs::read_to_string(f.plan.hooks_dir.join("shield-poststop.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(hook, HookFile::for_stage(Stage::Poststop, &f.plan.target));

        let again = install(&f.plan).unwrap();
        assert!(
            again
                .iter()
                .all(|change| change.action == Action::Unchanged),
            "{again:?}"
        );
        assert_eq!(again.len(), 3);

        let removed = uninstall(&f.plan).unwrap();
        assert!(
            removed
                .iter()
                .all(|change| change.action == Action::Removed)
        );
        let mut left: Vec<_> = walk(&f.root);
        left.sort();
        assert_eq!(left, ["bin", "bin/shield-hook"]);
        assert!(uninstall(&f.plan).unwrap().is_empty());
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
                if path.is_dir() {
                    stack.push(path);
                }
            }
        }
        out
    }

    const USER_CONF: &str = "# mine\n[engine]\n# runtime\nruntime = \"crun\"\n";

    #[test]
    fn an_existing_conf_is_restored_byte_for_byte() {
        let f = fixture(Scope::User);
        std::fs::create_dir_all(conf(&f).parent().unwrap()).unwrap();
        std::fs::write(conf(&f), USER_CONF).unwrap();
        let changes = install(&f.plan).unwrap();
        assert_eq!(changes.last().unwrap().action, Action::Updated);
        let text = std::fs::read_to_string(conf(&f)).unwrap();
        assert!(text.starts_with(USER_CONF));
        let removed = uninstall(&f.plan).unwrap();
        assert_eq!(removed[0].action, Action::Restored);
        assert_eq!(std::fs::read_to_string(conf(&f)).unwrap(), USER_CONF);
        assert!(conf(&f).parent().unwrap().is_dir());
    }

    #[test]
    fn an_edited_conf_loses_only_our_entry() {
        let f = fixture(Scope::User);
        std::fs::create_dir_all(conf(&f).parent().unwrap()).unwrap();
        std::fs::write(conf(&f), USER_CONF).unwrap();
        install(&f.plan).unwrap();
        let edited = format!(
            "{}# added later\n",
            std::fs::read_to_string(conf(&f)).unwrap()
        );
        std::fs::write(conf(&f), &edited).unwrap();
        let removed = uninstall(&f.plan).unwrap();
        assert_eq!(removed[0].action, Action::Updated);
        assert_eq!(
            std::fs::read_to_string(conf(&f)).unwrap(),
            format!("{USER_CONF}# added later\n")
        );
    }

    #[test]
    fn an_entry_the_user_had_is_kept() {
        let f = fixture(Scope::User);
        let own = format!(
            "[engine]\nhooks_dir = [\"{}\"]\n",
            f.plan.hooks_dir.to_string_lossy()
        );
        std::fs::create_dir_all(conf(&f).parent().unwrap()).unwrap();
        std::fs::write(conf(&f), &own).unwrap();
        let changes = install(&f.plan).unwrap();
        assert_eq!(changes.last().unwrap().action, Action::Unchanged);
        uninstall(&f.plan).unwrap();
        assert_eq!(std::fs::read_to_string(conf(&f)).unwrap(), own);
    }

    #[test]
    fn a_changed_socket_updates_the_hooks() {
        let mut f = fixture(Scope::System);
        install(&f.plan).unwrap();
        f.plan.target.socket = f.root.join("other.sock");
        let changes = install(&f.plan).unwrap();
        assert_eq!(
            actions(&changes),
            [
                (Action::Updated, "shield-createruntime.json".to_owned()),
                (Action::Updated, "shield-poststop.json".to_owned()),
            ]
        );
        let text =
            std::fs::read_to_string(f.plan.hooks_dir.join("shield-createruntime.json")).unwrap();
        assert!(text.contains("other.sock"));
    }

    #[test]
    fn system_scope_leaves_an_existing_directory() {
        let f = fixture(Scope::System);
        std::fs::create_dir_all(&f.plan.hooks_dir).unwrap();
        std::fs::write(f.plan.hooks_dir.join("other.json"), "{}").unwrap();
        let changes = install(&f.plan).unwrap();
        assert_eq!(changes.len(), 2);
        uninstall(&f.plan).unwrap();
        assert!(f.plan.hooks_dir.join("other.json").is_file());
        assert!(!f.plan.hooks_dir.join(STATE_FILE).exists());
    }

    #[test]
    fn remove_without_state_removes_our_files_and_entry() {
        let f = fixture(Scope::User);
        install(&f.plan).unwrap();
        std::fs::remove_file(f.plan.hooks_dir.join(STATE_FILE)).unwrap();
        let removed = uninstall(&f.plan).unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        let text = std::fs::read_to_string(conf(&f)).unwrap();
        assert_eq!(
            containers_conf::hooks_dir(&conf(&f), &text)
                .unwrap()
                .unwrap(),
            DEFAULT_HOOKS_DIRS
        );
        assert!(!f.plan.hooks_dir.join("shield-poststop.json").exists());
    }

    #[test]
    fn a_missing_or_non_executable_hook_is_refused_before_writing() {
        let mut f = fixture(Scope::User);
        f.plan.target.hook = f.root.join("bin/nope");
        let error = install(&f.plan).unwrap_err();
        assert!(matches!(error, SetupError::HookBinary { .. }), "{error}");
        assert!(error.to_string().contains("--hook PATH"));
        let plain = f.root.join("bin/plain");
        std::fs::write(&plain, "").unwrap();
        f.plan.target.hook = plain;
        assert!(
            install(&f.plan)
                .unwrap_err()
                .to_string()
                .contains("not executable")
        );
        assert!(!f.plan.hooks_dir.exists());
    }

    #[test]
    fn a_broken_conf_stops_setup_with_its_path() {
        let f = fixture(Scope::User);
        std::fs::create_dir_all(conf(&f).parent().unwrap()).unwrap();
        std::fs::write(conf(&f), "[engine\n").unwrap();
        let error = install(&f.plan).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("containers.conf: not valid TOML"),
            "{error}"
        );
        // What was written before the failure can be undone.
        uninstall(&f.plan).unwrap();
        assert!(!f.root.join("data").exists());
        assert_eq!(std::fs::read_to_string(conf(&f)).unwrap(), "[engine\n");
    }

    #[test]
    fn a_foreign_state_file_is_reported() {
        let f = fixture(Scope::System);
        std::fs::create_dir_all(&f.plan.hooks_dir).unwrap();
        std::fs::write(f.plan.hooks_dir.join(STATE_FILE), "garbage").unwrap();
        assert!(matches!(
            install(&f.plan).unwrap_err(),
            SetupError::State { .. }
        ));
    }
}
