//! Where profiles come from: bundled ones compiled into the daemon, and the user's own files in
//! `$XDG_CONFIG_HOME/shield/profiles/NAME.txt`, which replace bundled ones of the same name.

use std::path::{Path, PathBuf};

use super::parse::{LineError, NameError, ProfileEntries, parse_profile, validate_name};

/// Profiles that ship inside the binary: `(name, text)`.
pub const BUNDLED: &[(&str, &str)] = &[
    ("base", include_str!("../../profiles/base.txt")),
    (
        "dev-standard",
        include_str!("../../profiles/dev-standard.txt"),
    ),
    ("dev-python", include_str!("../../profiles/dev-python.txt")),
    ("dev-node", include_str!("../../profiles/dev-node.txt")),
    ("nvidia-hpc", include_str!("../../profiles/nvidia-hpc.txt")),
];

/// Where a profile was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Compiled into the daemon.
    Bundled,
    /// A file in the user's profile directory.
    User(PathBuf),
}

/// A loaded profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    /// Where it came from.
    pub source: Source,
    /// Its entries.
    pub entries: ProfileEntries,
}

/// Why profiles could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The name cannot be a profile name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Neither a user file nor a bundled profile of that name exists.
    #[error("unknown profile {name:?} (not bundled, and no {path})", path = .user_path.display())]
    Unknown {
        /// The name asked for.
        name: String,
        /// The user file that was looked for.
        user_path: PathBuf,
    },
    /// A user profile file exists but cannot be read.
    #[error("cannot read profile {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of a profile is not valid.
    #[error(transparent)]
    Line(#[from] LineError),
}

/// Loads profiles by name from the user directory and the bundled set.
#[derive(Clone, Debug)]
pub struct ProfileStore {
    user_dir: PathBuf,
}

impl ProfileStore {
    /// A store whose user profiles live in `user_dir` (it need not exist).
    pub fn new(user_dir: impl Into<PathBuf>) -> Self {
        Self {
            user_dir: user_dir.into(),
        }
    }

    /// The directory user profiles are read from.
    pub fn user_dir(&self) -> &Path {
        &self.user_dir
    }

    /// Loads one profile; a user file wins over a bundled profile of the same name.
    pub fn load(&self, name: &str) -> Result<Profile, ProfileError> {
        validate_name(name)?;
        let path = self.user_dir.join(format!("{name}.txt"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let entries = parse_profile(&path.display().to_string(), &text)?;
                return Ok(Profile {
                    name: name.to_owned(),
                    source: Source::User(path),
                    entries,
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ProfileError::Read { path, source }),
        }
        let (_, text) = BUNDLED
            .iter()
            .find(|(bundled, _)| *bundled == name)
            .ok_or_else(|| ProfileError::Unknown {
                name: name.to_owned(),
                user_path: path,
            })?;
        Ok(Profile {
            name: name.to_owned(),
            source: Source::Bundled,
            entries: parse_profile(&format!("bundled:{name}"), text)?,
        })
    }

    /// Loads `names` in order and composes them (concatenation without duplicates).
    pub fn compose(&self, names: &[String]) -> Result<ProfileEntries, ProfileError> {
        let mut composed = ProfileEntries::default();
        for name in names {
            composed.extend(&self.load(name)?.entries);
        }
        Ok(composed)
    }

    /// Every available profile, sorted by name: bundled ones and the user's `*.txt` files.
    pub fn list(&self) -> Result<Vec<Profile>, ProfileError> {
        let mut names: Vec<String> = BUNDLED.iter().map(|(name, _)| (*name).to_owned()).collect();
        match std::fs::read_dir(&self.user_dir) {
            Ok(dir) => {
                for entry in dir.flatten() {
                    let file_name = entry.file_name();
                    let Some(name) = file_name.to_str().and_then(|f| f.strip_suffix(".txt")) else {
                        continue;
                    };
                    if validate_name(name).is_ok() && !names.iter().any(|n| n == name) {
                        names.push(name.to_owned());
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ProfileError::Read {
                    path: self.user_dir.clone(),
                    source,
                });
            }
        }
        names.sort();
        names.iter().map(|name| self.load(name)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_profile_parses() {
        let store = ProfileStore::new("/nonexistent");
        for (name, _) in BUNDLED {
            let profile = store.load(name).unwrap();
            assert_eq!(profile.source, Source::Bundled);
            assert!(!profile.entries.domains.is_empty(), "{name}");
        }
    }

    #[test]
    fn user_profile_replaces_bundled_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.txt"), "10.1.2.3\n").unwrap();
        std::fs::write(dir.path().join("mine.txt"), "mine.example\n").unwrap();
        let store = ProfileStore::new(dir.path());
        let base = store.load("base").unwrap();
        assert!(matches!(base.source, Source::User(_)));
        assert_eq!(base.entries.nets.len(), 1);
        assert!(base.entries.domains.is_empty());
        let names: Vec<_> = store.list().unwrap().into_iter().map(|p| p.name).collect();
        assert!(names.contains(&"mine".to_owned()) && names.contains(&"dev-node".to_owned()));
    }

    #[test]
    fn unknown_and_invalid_names_are_errors() {
        let store = ProfileStore::new("/nonexistent");
        let err = store.load("nope").unwrap_err();
        assert!(
            err.to_string().contains("unknown profile \"nope\""),
            "{err}"
        );
        assert!(matches!(
            store.load("../etc/passwd"),
            Err(ProfileError::Name(_))
        ));
    }

    #[test]
    fn bad_user_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.txt"), "ok.example\n300.1.1.1\n").unwrap();
        let err = ProfileStore::new(dir.path()).load("bad").unwrap_err();
        assert!(err.to_string().contains("bad.txt:2:"), "{err}");
    }
}
