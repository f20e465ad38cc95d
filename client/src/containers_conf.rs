//! podman's `containers.conf`: which hook directories podman reads, and the one edit
//! `shieldctl setup --user` makes to the user's file.
//!
//! A `hooks_dir` list REPLACES podman's default directories rather than adding to them, so the
//! edit always keeps the directories podman would have read otherwise (the system files' list,
//! else the built-in defaults). Edits go through `toml_edit`, which keeps the user's comments,
//! order and other keys.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// podman's built-in `hooks_dir` list, used when no `containers.conf` sets one.
pub const DEFAULT_HOOKS_DIRS: [&str; 2] = [
    "/usr/share/containers/oci/hooks.d",
    "/etc/containers/oci/hooks.d",
];

/// The vendor's `containers.conf` (read first).
pub const VENDOR_CONF: &str = "/usr/share/containers/containers.conf";

/// The administrator's `containers.conf` (read after the vendor's).
pub const ADMIN_CONF: &str = "/etc/containers/containers.conf";

/// A `containers.conf` that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    /// Not TOML.
    #[error("{}: not valid TOML: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the line).
        message: String,
    },
    /// `engine` is not a table, or `hooks_dir` not an array of strings.
    #[error("{}: {what}", .path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
}

fn parse(path: &Path, text: &str) -> Result<DocumentMut, ConfError> {
    text.parse::<DocumentMut>()
        .map_err(|error| ConfError::Syntax {
            path: path.to_path_buf(),
            message: error.to_string().trim().to_owned(),
        })
}

fn shape(path: &Path, what: &'static str) -> ConfError {
    ConfError::Shape {
        path: path.to_path_buf(),
        what,
    }
}

/// The `[engine] hooks_dir` list `text` sets, if it sets one.
pub fn hooks_dir(path: &Path, text: &str) -> Result<Option<Vec<String>>, ConfError> {
    let doc = parse(path, text)?;
    let Some(engine) = doc.get("engine") else {
        return Ok(None);
    };
    let engine = engine
        .as_table_like()
        .ok_or_else(|| shape(path, "[engine] is not a table"))?;
    let Some(list) = engine.get("hooks_dir") else {
        return Ok(None);
    };
    let array = list
        .as_array()
        .ok_or_else(|| shape(path, "[engine] hooks_dir is not an array"))?;
    array
        .iter()
        .map(|value| {
            value.as_str().map(str::to_owned).ok_or_else(|| {
                shape(
                    path,
                    "[engine] hooks_dir holds a value that is not a string",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The hook directories podman uses, given the `containers.conf` files it reads in order (later
/// files override earlier ones): the last `hooks_dir` set, else [`DEFAULT_HOOKS_DIRS`].
pub fn effective_hooks_dirs(files: &[(PathBuf, String)]) -> Result<Vec<String>, ConfError> {
    let mut dirs = None;
    for (path, text) in files {
        if let Some(list) = hooks_dir(path, text)? {
            dirs = Some(list);
        }
    }
    Ok(dirs.unwrap_or_else(|| DEFAULT_HOOKS_DIRS.map(str::to_owned).to_vec()))
}

/// The `containers.conf` files podman reads, in order, as podman 4 does: `$CONTAINERS_CONF` alone
/// when set; else the vendor's and the administrator's files, the administrator's drop-ins
/// (`containers.conf.d/*.conf`), then (rootless only: `user` is `Some`) the user's file and
/// drop-ins. Files that do not exist are left out.
pub fn podman_config_files(
    containers_conf_env: Option<&OsStr>,
    user: Option<(&Path, &Path)>,
) -> Vec<PathBuf> {
    if let Some(path) = containers_conf_env.filter(|path| !path.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let mut files: Vec<PathBuf> = [VENDOR_CONF, ADMIN_CONF]
        .iter()
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .collect();
    files.extend(drop_ins(Path::new("/etc/containers/containers.conf.d")));
    if let Some((file, dir)) = user {
        if file.is_file() {
            files.push(file.to_path_buf());
        }
        files.extend(drop_ins(dir));
    }
    files
}

/// `*.conf` files of `dir`, in name order (podman's order).
fn drop_ins(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension() == Some(OsStr::new("conf")) && path.is_file())
        .collect();
    files.sort();
    files
}

/// The result of [`add_hooks_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The new text (equal to the old when nothing changed).
    pub text: String,
    /// The entry was appended (false: it was there already).
    pub added_entry: bool,
    /// The `[engine]` table was made (it was absent, or only implied by `[engine.x]` tables).
    pub created_engine: bool,
    /// `hooks_dir` was absent and was created holding these inherited directories before ours.
    pub inserted_defaults: Option<Vec<String>>,
}

/// Adds `dir` to `[engine] hooks_dir` in `original` (`None`: no file yet). When the key is absent
/// it is created holding `inherited` (what podman reads without it) followed by `dir`, because a
/// user list replaces the defaults.
pub fn add_hooks_dir(
    path: &Path,
    original: Option<&str>,
    dir: &str,
    inherited: &[String],
) -> Result<Added, ConfError> {
    let text = original.unwrap_or_default();
    let mut doc = parse(path, text)?;
    let mut created_engine = false;
    match doc.get_mut("engine") {
        None => {
            doc.insert("engine", Item::Table(Table::new()));
            created_engine = true;
        }
        // `[engine.x]` tables alone imply `[engine]`: it needs its own header now.
        Some(item) => {
            if let Some(table) = item.as_table_mut().filter(|table| table.is_implicit()) {
                table.set_implicit(false);
                created_engine = true;
            }
        }
    }
    let engine = doc
        .get_mut("engine")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| shape(path, "[engine] is not a table"))?;
    let Some(list) = engine.get_mut("hooks_dir") else {
        let mut array = Array::new();
        for entry in inherited.iter().map(String::as_str).chain([dir]) {
            array.push(entry);
        }
        engine.insert("hooks_dir", toml_edit::value(array));
        return Ok(Added {
            text: doc.to_string(),
            added_entry: true,
            created_engine,
            inserted_defaults: Some(inherited.to_vec()),
        });
    };
    let array = list
        .as_array_mut()
        .ok_or_else(|| shape(path, "[engine] hooks_dir is not an array"))?;
    if array.iter().any(|value| value.as_str() == Some(dir)) {
        return Ok(Added {
            text: text.to_owned(),
            added_entry: false,
            created_engine: false,
            inserted_defaults: None,
        });
    }
    push_like_last(array, dir);
    Ok(Added {
        text: doc.to_string(),
        added_entry: true,
        created_engine,
        inserted_defaults: None,
    })
}

/// Appends `entry` with the layout of the last element, so that a one-per-line list stays one
/// per line.
fn push_like_last(array: &mut Array, entry: &str) {
    let decor = array.iter().last().map(|last| {
        let decor = last.decor();
        (
            decor.prefix().and_then(|p| p.as_str()).map(str::to_owned),
            decor.suffix().and_then(|s| s.as_str()).map(str::to_owned),
        )
    });
    match decor {
        Some((prefix, suffix)) => {
            let value = Value::from(entry).decorated(
                prefix.unwrap_or_else(|| " ".to_owned()),
                suffix.unwrap_or_default(),
            );
            array.push_formatted(value);
        }
        None => array.push(entry),
    }
}

/// The result of [`remove_hooks_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The new text (equal to the old when nothing changed).
    pub text: String,
    /// The entry was found and removed.
    pub removed_entry: bool,
    /// `hooks_dir` itself was removed (setup had created it, and it held nothing else).
    pub removed_key: bool,
    /// `[engine]` was removed or made implicit again (setup had made it, and it is empty now).
    pub removed_engine: bool,
}

/// Removes `dir` from `[engine] hooks_dir`. If setup created the key holding `inserted_defaults`
/// and nothing else is left in it, the key goes too; if setup made `[engine]` and it is empty
/// afterwards, the table goes too. Everything else stays as it is.
pub fn remove_hooks_dir(
    path: &Path,
    text: &str,
    dir: &str,
    inserted_defaults: Option<&[String]>,
    created_engine: bool,
) -> Result<Removed, ConfError> {
    let unchanged = || Removed {
        text: text.to_owned(),
        removed_entry: false,
        removed_key: false,
        removed_engine: false,
    };
    let mut doc = parse(path, text)?;
    let Some(engine) = doc.get_mut("engine").and_then(Item::as_table_like_mut) else {
        return Ok(unchanged());
    };
    let Some(array) = engine.get_mut("hooks_dir").and_then(Item::as_array_mut) else {
        return Ok(unchanged());
    };
    let Some(index) = array.iter().position(|value| value.as_str() == Some(dir)) else {
        return Ok(unchanged());
    };
    array.remove(index);
    let left: Vec<String> = array
        .iter()
        .filter_map(|value| value.as_str().map(str::to_owned))
        .collect();
    let removed_key = inserted_defaults.is_some_and(|defaults| left == defaults);
    if removed_key {
        engine.remove("hooks_dir");
    }
    let mut removed_engine = false;
    if created_engine && engine.iter().all(|(_, item)| item.is_table()) {
        if engine.is_empty() {
            doc.remove("engine");
        } else if let Some(table) = doc.get_mut("engine").and_then(Item::as_table_mut) {
            // Only `[engine.x]` tables are left: `[engine]` goes back to being implied by them.
            table.set_implicit(true);
        }
        removed_engine = true;
    }
    Ok(Removed {
        text: doc.to_string(),
        removed_entry: true,
        removed_key,
        removed_engine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "/home/u/.local/share/shield/hooks.d";

    fn defaults() -> Vec<String> {
        DEFAULT_HOOKS_DIRS.map(str::to_owned).to_vec()
    }

    fn path() -> &'static Path {
        Path::new("/home/u/.config/containers/containers.conf")
    }

    #[test]
    fn reads_hooks_dir_or_none() {
        assert_eq!(hooks_dir(path(), "").unwrap(), None);
        assert_eq!(hooks_dir(path(), "[engine]\nx = 1\n").unwrap(), None);
        assert_eq!(
            hooks_dir(path(), "[engine]\nhooks_dir = [\"/a\", \"/b\"]\n").unwrap(),
            Some(vec!["/a".to_owned(), "/b".to_owned()])
        );
        assert!(matches!(
            hooks_dir(path(), "[engine]\nhooks_dir = \"/a\"\n"),
            Err(ConfError::Shape { .. })
        ));
        assert!(matches!(
            hooks_dir(path(), "engine = 3\n"),
            Err(ConfError::Shape { .. })
        ));
        let error = hooks_dir(path(), "[engine\n").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("/home/u/.config/containers/containers.conf: not valid TOML")
        );
    }

    #[test]
    fn effective_is_the_last_set_list_or_the_defaults() {
        assert_eq!(effective_hooks_dirs(&[]).unwrap(), defaults());
        let files = vec![
            (
                PathBuf::from("/a"),
                "[engine]\nhooks_dir = [\"/x\"]\n".to_owned(),
            ),
            (PathBuf::from("/b"), "[containers]\n".to_owned()),
        ];
        assert_eq!(effective_hooks_dirs(&files).unwrap(), ["/x"]);
        let files = vec![
            (
                PathBuf::from("/a"),
                "[engine]\nhooks_dir = [\"/x\"]\n".to_owned(),
            ),
            (
                PathBuf::from("/b"),
                "[engine]\nhooks_dir = [\"/y\"]\n".to_owned(),
            ),
        ];
        assert_eq!(effective_hooks_dirs(&files).unwrap(), ["/y"]);
    }

    #[test]
    fn add_to_a_missing_file_keeps_the_defaults() {
        let added = add_hooks_dir(path(), None, OURS, &defaults()).unwrap();
        assert!(added.added_entry && added.created_engine);
        assert_eq!(added.inserted_defaults, Some(defaults()));
        assert_eq!(
            hooks_dir(path(), &added.text).unwrap().unwrap(),
            [DEFAULT_HOOKS_DIRS[0], DEFAULT_HOOKS_DIRS[1], OURS]
        );
    }

    const USER_FILE: &str = "# my settings\n[containers]\n# keep this\nlog_size_max = 100 # bytes\n\n[engine]\n# the runtime\nruntime = \"crun\"\n";

    #[test]
    fn add_keeps_comments_and_keys_and_removal_restores() {
        let added = add_hooks_dir(path(), Some(USER_FILE), OURS, &defaults()).unwrap();
        assert!(added.added_entry);
        assert!(!added.created_engine);
        assert!(added.text.starts_with(USER_FILE), "{}", added.text);
        assert_eq!(
            hooks_dir(path(), &added.text)
                .unwrap()
                .unwrap()
                .last()
                .unwrap(),
            OURS
        );
        let removed =
            remove_hooks_dir(path(), &added.text, OURS, Some(&defaults()), false).unwrap();
        assert!(removed.removed_entry && removed.removed_key && !removed.removed_engine);
        assert_eq!(removed.text, USER_FILE);
    }

    #[test]
    fn add_creates_engine_after_other_tables_and_removal_restores() {
        let original = "# top\n[containers]\nlog_size_max = 100\n";
        let added = add_hooks_dir(path(), Some(original), OURS, &defaults()).unwrap();
        assert!(added.created_engine);
        assert!(added.text.starts_with(original));
        let removed = remove_hooks_dir(path(), &added.text, OURS, Some(&defaults()), true).unwrap();
        assert!(removed.removed_engine);
        assert_eq!(removed.text, original);
    }

    #[test]
    fn add_appends_to_an_existing_list_once() {
        let original =
            "[engine]\nhooks_dir = [\n  \"/opt/hooks\",\n  \"/etc/containers/oci/hooks.d\",\n]\n";
        let added = add_hooks_dir(path(), Some(original), OURS, &defaults()).unwrap();
        assert!(added.added_entry);
        assert_eq!(added.inserted_defaults, None);
        assert_eq!(
            added.text,
            format!(
                "[engine]\nhooks_dir = [\n  \"/opt/hooks\",\n  \"/etc/containers/oci/hooks.d\",\n  \"{OURS}\",\n]\n"
            )
        );
        let again = add_hooks_dir(path(), Some(&added.text), OURS, &defaults()).unwrap();
        assert!(!again.added_entry);
        assert_eq!(again.text, added.text);
        // The user's list stays even when only defaults are left: setup did not create the key.
        let removed = remove_hooks_dir(path(), &added.text, OURS, None, false).unwrap();
        assert!(removed.removed_entry && !removed.removed_key);
        assert_eq!(removed.text, original);
    }

    #[test]
    fn single_line_list_stays_single_line() {
        let original = "[engine]\nhooks_dir = [\"/a\", \"/b\"]\n";
        let added = add_hooks_dir(path(), Some(original), OURS, &defaults()).unwrap();
        assert_eq!(
            added.text,
            format!("[engine]\nhooks_dir = [\"/a\", \"/b\", \"{OURS}\"]\n")
        );
    }

    #[test]
    fn removal_keeps_a_key_the_user_extended() {
        let added = add_hooks_dir(path(), None, OURS, &defaults()).unwrap();
        let extended = add_hooks_dir(path(), Some(&added.text), "/opt/more", &defaults())
            .unwrap()
            .text;
        let removed = remove_hooks_dir(path(), &extended, OURS, Some(&defaults()), true).unwrap();
        assert!(removed.removed_entry && !removed.removed_key && !removed.removed_engine);
        assert_eq!(
            hooks_dir(path(), &removed.text).unwrap().unwrap(),
            [DEFAULT_HOOKS_DIRS[0], DEFAULT_HOOKS_DIRS[1], "/opt/more"]
        );
    }

    #[test]
    fn removal_of_an_absent_entry_changes_nothing() {
        for text in [
            "",
            "[containers]\n",
            "[engine]\n",
            "[engine]\nhooks_dir = [\"/a\"]\n",
        ] {
            let removed = remove_hooks_dir(path(), text, OURS, Some(&defaults()), true).unwrap();
            assert!(!removed.removed_entry, "{text}");
            assert_eq!(removed.text, text);
        }
    }

    #[test]
    fn implied_engine_table_is_made_explicit_and_back() {
        let original = "[engine.service_destinations.x]\nuri = \"unix:///x\"\n";
        let added = add_hooks_dir(path(), Some(original), OURS, &defaults()).unwrap();
        assert!(added.created_engine);
        assert!(hooks_dir(path(), &added.text).unwrap().is_some());
        let removed = remove_hooks_dir(path(), &added.text, OURS, Some(&defaults()), true).unwrap();
        assert!(removed.removed_engine);
        assert_eq!(removed.text, original);
    }

    #[test]
    fn containers_conf_env_is_the_only_file() {
        assert_eq!(
            podman_config_files(Some(OsStr::new("/x/only.conf")), None),
            [PathBuf::from("/x/only.conf")]
        );
    }

    #[test]
    fn user_file_and_drop_ins_come_last_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("containers.conf");
        let drop_in_dir = dir.path().join("containers.conf.d");
        std::fs::write(&file, "").unwrap();
        std::fs::create_dir(&drop_in_dir).unwrap();
        for name in ["20-b.conf", "10-a.conf", "ignored.txt"] {
            std::fs::write(drop_in_dir.join(name), "").unwrap();
        }
        let files = podman_config_files(None, Some((&file, &drop_in_dir)));
        let tail: Vec<_> = files.iter().rev().take(3).rev().cloned().collect();
        assert_eq!(
            tail,
            [
                file,
                drop_in_dir.join("10-a.conf"),
                drop_in_dir.join("20-b.conf")
            ]
        );
    }
}
