//! The daemon's configuration: `$XDG_CONFIG_HOME/shield/config.toml` and the directories it uses.
//!
//! Every key is optional. Unknown keys and wrong types are errors that name the key, so a typo
//! never silently weakens the firewall.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Settings read from `config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Profiles a container gets when its `shield.profiles` annotation is empty.
    pub default_profiles: Vec<String>,
    /// Also accept connections from uid 0 on the daemon's socket (off: only the daemon's uid).
    pub allow_root: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_profiles: vec!["dev-standard".to_owned()],
            allow_root: false,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid for shield (syntax, unknown key, wrong type).
    #[error("invalid configuration in {}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A directory the daemon needs cannot be derived from the environment.
    #[error("cannot find the {what} directory: set {var} (or HOME)")]
    NoDirectory {
        /// Which directory.
        what: &'static str,
        /// The variable that would give it.
        var: &'static str,
    },
    /// A default profile name is not valid.
    #[error("invalid configuration in {}: default_profiles: {source}", .path.display())]
    ProfileName {
        /// The file.
        path: PathBuf,
        /// What is wrong with the name.
        #[source]
        source: crate::profiles::parse::NameError,
    },
}

impl Config {
    /// Parses configuration text; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|err| ConfigError::Invalid {
            path: path.to_owned(),
            message: err.to_string().trim_end().replace('\n', " "),
        })?;
        for name in &config.default_profiles {
            crate::profiles::validate_name(name).map_err(|source| ConfigError::ProfileName {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(config)
    }

    /// Reads `path` if it exists; defaults otherwise.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// The directories the daemon reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirs {
    /// `$XDG_CONFIG_HOME/shield`: `config.toml` and `profiles/`.
    pub config: PathBuf,
    /// `$XDG_STATE_HOME/shield`: per-container state.
    pub state: PathBuf,
}

impl Dirs {
    /// Derives the directories from `XDG_CONFIG_HOME`, `XDG_STATE_HOME` and `HOME`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            config: xdg_dir("XDG_CONFIG_HOME", ".config", "configuration")?.join("shield"),
            state: xdg_dir("XDG_STATE_HOME", ".local/state", "state")?.join("shield"),
        })
    }

    /// `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }

    /// The user's profile directory.
    pub fn profiles(&self) -> PathBuf {
        self.config.join("profiles")
    }
}

/// `$VAR` if set and absolute (the XDG spec says to ignore relative values), else `$HOME/fallback`.
fn xdg_dir(var: &'static str, fallback: &str, what: &'static str) -> Result<PathBuf, ConfigError> {
    let absolute = |value: std::ffi::OsString| {
        let path = PathBuf::from(value);
        path.is_absolute().then_some(path)
    };
    if let Some(path) = std::env::var_os(var).and_then(absolute) {
        return Ok(path);
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(fallback))
        .ok_or(ConfigError::NoDirectory { what, var })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/c/config.toml"), text)
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn keys_are_read() {
        let config =
            parse("default_profiles = [\"base\", \"dev-node\"]\nallow_root = true\n").unwrap();
        assert_eq!(config.default_profiles, ["base", "dev-node"]);
        assert!(config.allow_root);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("default_profile = [\"base\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("default_profile") && err.contains("/c/config.toml"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse("allow_root = \"yes\"\n").unwrap_err().to_string();
        assert!(err.contains("allow_root"), "{err}");
    }

    #[test]
    fn bad_profile_name_is_refused() {
        let err = parse("default_profiles = [\"../x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("default_profiles"), "{err}");
    }

    #[test]
    fn missing_file_gives_defaults() {
        assert_eq!(
            Config::load(Path::new("/nonexistent/c.toml")).unwrap(),
            Config::default()
        );
    }
}
