//! shield's OCI hook files (hooks.d JSON, version 1.0.0): what `setup` writes, and the check that
//! `prepare`, `run` and `doctor` make on what podman will actually read.
//!
//! Without the hooks, an annotated container runs unshielded, so every gap is an error that says
//! to run `shieldctl setup`. Pure: [`read_hook_dirs`] is the only function that reads files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The annotation that triggers the hooks (its value names the profiles).
pub const PROFILES_ANNOTATION: &str = "shield.profiles";

/// The annotation that names the container for shield.
pub const NAME_ANNOTATION: &str = "shield.name";

/// The `when.annotations` key: a regular expression matching exactly [`PROFILES_ANNOTATION`].
pub const TRIGGER_KEY: &str = r"^shield\.profiles$";

/// The `when.annotations` value: any value, the empty one included (the daemon's defaults).
pub const TRIGGER_VALUE: &str = ".*";

/// The hook binary's file name.
pub const HOOK_BINARY: &str = "shield-hook";

/// The OCI hook stages shield uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Stage {
    /// The container's namespaces exist and its process has not started: attach.
    #[serde(rename = "createRuntime")]
    CreateRuntime,
    /// The container is gone: detach.
    #[serde(rename = "poststop")]
    Poststop,
}

impl Stage {
    /// Both stages, in the order they run.
    pub const ALL: [Self; 2] = [Self::CreateRuntime, Self::Poststop];

    /// The stage as the OCI spec (and `shield-hook`'s first argument) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateRuntime => "createRuntime",
            Self::Poststop => "poststop",
        }
    }

    /// The file `setup` writes for this stage. The same names in the system and the user
    /// directory let the user's hooks replace the system's (podman keys hooks by file name,
    /// later directories winning).
    pub fn file_name(self) -> &'static str {
        match self {
            Self::CreateRuntime => "shield-createruntime.json",
            Self::Poststop => "shield-poststop.json",
        }
    }
}

/// Where the hooks send containers: the hook binary and the daemon's socket, both absolute
/// (the poststop hook runs with no PATH and no XDG variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookTarget {
    /// Absolute path of `shield-hook`.
    pub hook: PathBuf,
    /// Absolute path of the daemon's socket.
    pub socket: PathBuf,
}

/// One hooks.d file (version 1.0.0), the fields shield writes and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFile {
    /// Always `1.0.0`.
    pub version: String,
    /// What to run.
    pub hook: HookCommand,
    /// When to run it.
    #[serde(default)]
    pub when: When,
    /// At which stages.
    #[serde(default)]
    pub stages: Vec<String>,
}

/// `hook`: the program and its arguments (`args[0]` is the program's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCommand {
    /// Absolute path of the program.
    pub path: String,
    /// Its argv, name included.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `when`: the hook runs when any condition holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    /// Run for every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<bool>,
    /// Run when an annotation whose key matches the key regex has a value matching the value regex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl HookFile {
    /// The file `setup` writes for `stage`.
    pub fn for_stage(stage: Stage, target: &HookTarget) -> Self {
        Self {
            version: "1.0.0".to_owned(),
            hook: HookCommand {
                path: target.hook.to_string_lossy().into_owned(),
                args: vec![
                    HOOK_BINARY.to_owned(),
                    stage.as_str().to_owned(),
                    "--socket".to_owned(),
                    target.socket.to_string_lossy().into_owned(),
                ],
            },
            when: When {
                always: None,
                annotations: BTreeMap::from([(TRIGGER_KEY.to_owned(), TRIGGER_VALUE.to_owned())]),
            },
            stages: vec![stage.as_str().to_owned()],
        }
    }

    /// The file's text: pretty JSON and a final newline.
    pub fn to_text(&self) -> String {
        // A struct of strings, lists and maps of strings always serializes.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The value of `--socket` in the arguments.
    pub fn socket(&self) -> Option<&str> {
        let args = &self.hook.args;
        args.iter().enumerate().find_map(|(index, arg)| {
            if arg == "--socket" {
                args.get(index + 1).map(String::as_str)
            } else {
                arg.strip_prefix("--socket=")
            }
        })
    }

    /// Whether this hook belongs to shield: it runs `shield-hook`, or is triggered by shield's
    /// annotation.
    pub fn is_shield(&self) -> bool {
        Path::new(&self.hook.path).file_name() == Some(HOOK_BINARY.as_ref())
            || self.hook.args.first().map(String::as_str) == Some(HOOK_BINARY)
            || self
                .when
                .annotations
                .keys()
                .any(|key| key.contains("shield"))
    }
}

/// One `*.json` file podman would load: the file and its text, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: Result<String, String>,
}

/// The hook files podman loads from `dirs` (in order): podman keys hooks by file name and a
/// later directory's file replaces an earlier one of the same name. Missing directories are
/// skipped, as podman skips them.
pub fn read_hook_dirs(dirs: &[PathBuf]) -> Vec<FoundFile> {
    let mut by_name: BTreeMap<std::ffi::OsString, FoundFile> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension() != Some("json".as_ref()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|error| error.to_string());
            by_name.insert(entry.file_name(), FoundFile { path, text });
        }
    }
    by_name.into_values().collect()
}

/// Why the installed hooks cannot shield a container. Every message says how to fix it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HooksError {
    /// No hook for a stage.
    #[error(
        "no shield hook for {stage} in podman's hook directories ({}): an annotated container would run unshielded; run `shieldctl setup`",
        list(.dirs)
    )]
    Missing {
        /// The stage.
        stage: &'static str,
        /// The directories podman reads.
        dirs: Vec<PathBuf>,
    },
    /// A hook sends containers to another daemon.
    #[error(
        "{} sends containers to {found}, not to {}: run `shieldctl setup` (with the same --socket)",
        .file.display(), .expected.display()
    )]
    WrongSocket {
        /// The hook file.
        file: PathBuf,
        /// Its socket.
        found: String,
        /// This CLI's socket.
        expected: PathBuf,
    },
    /// A hook runs another `shield-hook`.
    #[error(
        "{} runs {found}, not {}: run `shieldctl setup` (or pass the same --hook)",
        .file.display(), .expected.display()
    )]
    WrongBinary {
        /// The hook file.
        file: PathBuf,
        /// The binary it runs.
        found: String,
        /// The binary this CLI installs.
        expected: PathBuf,
    },
    /// A shield hook file podman cannot use (unreadable, not JSON, wrong stage or trigger).
    #[error("{}: {reason}: run `shieldctl setup`", .file.display())]
    Broken {
        /// The hook file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that the hooks podman loads from `dirs` (read by [`read_hook_dirs`] into `found`)
/// attach every annotated container to `expected`: one hook per stage, each running the
/// expected binary with the expected socket and shield's trigger, and no other shield hook.
/// `same_binary(installed, expected)` compares binaries (the caller resolves symlinks).
pub fn check(
    found: &[FoundFile],
    dirs: &[PathBuf],
    expected: &HookTarget,
    same_binary: &dyn Fn(&Path, &Path) -> bool,
) -> Result<(), HooksError> {
    let mut covered = Vec::new();
    for file in found {
        let ours_by_name = Stage::ALL
            .iter()
            .any(|stage| file.path.file_name() == Some(stage.file_name().as_ref()));
        let hook = match &file.text {
            Ok(text) => serde_json::from_str::<HookFile>(text).map_err(|error| error.to_string()),
            Err(error) => Err(error.clone()),
        };
        let hook = match hook {
            Ok(hook) if hook.is_shield() => hook,
            // Another tool's hook, or a file podman itself will reject at every start.
            Ok(_) if !ours_by_name => continue,
            Err(_) if !ours_by_name => continue,
            Ok(_) => {
                return Err(broken(file, "not a shield hook".to_owned()));
            }
            Err(reason) => return Err(broken(file, reason)),
        };
        let stage = check_one(file, &hook, expected, same_binary)?;
        covered.push(stage);
    }
    for stage in Stage::ALL {
        if !covered.contains(&stage) {
            return Err(HooksError::Missing {
                stage: stage.as_str(),
                dirs: dirs.to_vec(),
            });
        }
    }
    Ok(())
}

fn broken(file: &FoundFile, reason: String) -> HooksError {
    HooksError::Broken {
        file: file.path.clone(),
        reason,
    }
}

/// The stage one shield hook serves, if it is exactly what `setup` would write.
fn check_one(
    file: &FoundFile,
    hook: &HookFile,
    expected: &HookTarget,
    same_binary: &dyn Fn(&Path, &Path) -> bool,
) -> Result<Stage, HooksError> {
    let stage = match hook.stages.as_slice() {
        [one] => Stage::ALL.into_iter().find(|stage| stage.as_str() == one),
        _ => None,
    }
    .ok_or_else(|| broken(file, format!("unexpected stages {:?}", hook.stages)))?;
    if hook.hook.args.get(1).map(String::as_str) != Some(stage.as_str()) {
        return Err(broken(
            file,
            format!(
                "runs the hook for {:?} at {}",
                hook.hook.args.get(1),
                stage.as_str()
            ),
        ));
    }
    let trigger_ok = hook.when.always != Some(true)
        && hook.when.annotations.len() == 1
        && hook.when.annotations.get(TRIGGER_KEY).map(String::as_str) == Some(TRIGGER_VALUE);
    if !trigger_ok {
        return Err(broken(
            file,
            format!("not triggered by exactly the annotation {PROFILES_ANNOTATION}"),
        ));
    }
    let socket = hook.socket().unwrap_or_default();
    if crate::host::normalize(Path::new(socket)) != crate::host::normalize(&expected.socket) {
        return Err(HooksError::WrongSocket {
            file: file.path.clone(),
            found: socket.to_owned(),
            expected: expected.socket.clone(),
        });
    }
    if !same_binary(Path::new(&hook.hook.path), &expected.hook) {
        return Err(HooksError::WrongBinary {
            file: file.path.clone(),
            found: hook.hook.path.clone(),
            expected: expected.hook.clone(),
        });
    }
    Ok(stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> HookTarget {
        HookTarget {
            hook: PathBuf::from("/usr/local/bin/shield-hook"),
            socket: PathBuf::from("/run/user/1000/shield/shieldd.sock"),
        }
    }

    fn same(a: &Path, b: &Path) -> bool {
        a == b
    }

    fn file(dir: &str, stage: Stage, hook: &HookFile) -> FoundFile {
        FoundFile {
            path: Path::new(dir).join(stage.file_name()),
            text: Ok(hook.to_text()),
        }
    }

    fn installed(target: &HookTarget) -> Vec<FoundFile> {
        Stage::ALL
            .iter()
            .map(|stage| file("/h", *stage, &HookFile::for_stage(*stage, target)))
            .collect()
    }

    fn dirs() -> Vec<PathBuf> {
        vec![PathBuf::from("/h")]
    }

    #[test]
    fn hook_json_has_the_documented_shape() {
        let text = HookFile::for_stage(Stage::CreateRuntime, &target()).to_text();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "version": "1.0.0",
                "hook": {
                    "path": "/usr/local/bin/shield-hook",
                    "args": ["shield-hook", "createRuntime", "--socket", "/run/user/1000/shield/shieldd.sock"]
                },
                "when": {"annotations": {"^shield\\.profiles$": ".*"}},
                "stages": ["createRuntime"]
            })
        );
        assert!(text.contains(r#""^shield\\.profiles$": ".*""#), "{text}");
        assert!(text.ends_with("}\n"));
        let poststop = HookFile::for_stage(Stage::Poststop, &target());
        assert_eq!(poststop.hook.args[1], "poststop");
        assert_eq!(poststop.stages, ["poststop"]);
        assert_eq!(
            poststop.socket(),
            Some("/run/user/1000/shield/shieldd.sock")
        );
    }

    #[test]
    fn correct_hooks_pass() {
        assert_eq!(
            check(&installed(&target()), &dirs(), &target(), &same),
            Ok(())
        );
    }

    #[test]
    fn missing_stage_names_setup() {
        let mut found = installed(&target());
        found.pop();
        let error = check(&found, &dirs(), &target(), &same).unwrap_err();
        assert_eq!(
            error,
            HooksError::Missing {
                stage: "poststop",
                dirs: dirs()
            }
        );
        assert!(error.to_string().contains("run `shieldctl setup`"));
        let error = check(&[], &dirs(), &target(), &same).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("no shield hook for createRuntime in podman's hook directories (/h)")
        );
    }

    #[test]
    fn other_socket_or_binary_is_refused() {
        let other = HookTarget {
            socket: PathBuf::from("/run/shield/shieldd.sock"),
            ..target()
        };
        let error = check(&installed(&other), &dirs(), &target(), &same).unwrap_err();
        assert!(matches!(error, HooksError::WrongSocket { .. }), "{error}");
        assert!(error.to_string().contains("/run/shield/shieldd.sock"));
        assert!(error.to_string().contains("shieldctl setup"));

        let other = HookTarget {
            hook: PathBuf::from("/opt/old/shield-hook"),
            ..target()
        };
        let error = check(&installed(&other), &dirs(), &target(), &same).unwrap_err();
        assert!(matches!(error, HooksError::WrongBinary { .. }), "{error}");
        // A resolver that says both are the same binary (a symlink) accepts it.
        assert_eq!(
            check(&installed(&other), &dirs(), &target(), &|_, _| true),
            Ok(())
        );
    }

    #[test]
    fn a_lexically_equal_socket_is_the_same() {
        let other = HookTarget {
            socket: PathBuf::from("/run/user/1000/shield/./shieldd.sock"),
            ..target()
        };
        assert_eq!(check(&installed(&other), &dirs(), &target(), &same), Ok(()));
    }

    #[test]
    fn foreign_hooks_are_ignored_but_a_second_shield_hook_is_checked() {
        let mut found = installed(&target());
        found.push(FoundFile {
            path: PathBuf::from("/h/other.json"),
            text: Ok(r#"{"version":"1.0.0","hook":{"path":"/bin/true"},"when":{"always":true},"stages":["prestart"]}"#.to_owned()),
        });
        found.push(FoundFile {
            path: PathBuf::from("/h/garbage.json"),
            text: Ok("not json".to_owned()),
        });
        assert_eq!(check(&found, &dirs(), &target(), &same), Ok(()));

        let stale = HookTarget {
            socket: PathBuf::from("/tmp/old.sock"),
            ..target()
        };
        let mut extra = HookFile::for_stage(Stage::CreateRuntime, &stale);
        extra.hook.path = "/opt/shield-hook".to_owned();
        found.push(FoundFile {
            path: PathBuf::from("/h/zz-old-shield.json"),
            text: Ok(extra.to_text()),
        });
        let error = check(&found, &dirs(), &target(), &same).unwrap_err();
        assert!(
            matches!(error, HooksError::WrongSocket { ref file, .. } if file.ends_with("zz-old-shield.json"))
        );
    }

    #[test]
    fn our_file_names_must_hold_our_hooks() {
        let mut found = installed(&target());
        found[0].text = Ok("{".to_owned());
        let error = check(&found, &dirs(), &target(), &same).unwrap_err();
        assert!(matches!(error, HooksError::Broken { .. }), "{error}");
        found[0].text = Err("permission denied".to_owned());
        assert!(
            check(&found, &dirs(), &target(), &same)
                .unwrap_err()
                .to_string()
                .contains("permission denied")
        );
    }

    #[test]
    fn wrong_trigger_or_stage_is_broken() {
        let mut always = HookFile::for_stage(Stage::CreateRuntime, &target());
        always.when.always = Some(true);
        let mut wide = HookFile::for_stage(Stage::CreateRuntime, &target());
        wide.when.annotations = BTreeMap::from([("shield".to_owned(), ".*".to_owned())]);
        let mut swapped = HookFile::for_stage(Stage::CreateRuntime, &target());
        swapped.stages = vec!["poststop".to_owned()];
        let mut both = HookFile::for_stage(Stage::CreateRuntime, &target());
        both.stages.push("poststop".to_owned());
        for bad in [always, wide, swapped, both] {
            let mut found = installed(&target());
            found[0] = file("/h", Stage::CreateRuntime, &bad);
            let error = check(&found, &dirs(), &target(), &same).unwrap_err();
            assert!(
                matches!(error, HooksError::Broken { .. }),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn later_directories_replace_files_of_the_same_name() {
        let root = tempfile::tempdir().unwrap();
        let system = root.path().join("system");
        let user = root.path().join("user");
        std::fs::create_dir(&system).unwrap();
        std::fs::create_dir(&user).unwrap();
        let old = HookTarget {
            socket: PathBuf::from("/run/shield/shieldd.sock"),
            ..target()
        };
        for stage in Stage::ALL {
            std::fs::write(
                system.join(stage.file_name()),
                HookFile::for_stage(stage, &old).to_text(),
            )
            .unwrap();
            std::fs::write(
                user.join(stage.file_name()),
                HookFile::for_stage(stage, &target()).to_text(),
            )
            .unwrap();
        }
        std::fs::write(user.join("notes.txt"), "ignored").unwrap();
        let dirs = vec![system.clone(), user.clone(), root.path().join("missing")];
        let found = read_hook_dirs(&dirs);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|file| file.path.starts_with(&user)));
        assert_eq!(check(&found, &dirs, &target(), &same), Ok(()));
        let reversed = vec![user, system];
        let found = read_hook_dirs(&reversed);
        assert!(matches!(
            check(&found, &reversed, &target(), &same),
            Err(HooksError::WrongSocket { .. })
        ));
    }
}
