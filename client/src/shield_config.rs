//! The keys of shieldd's `config.toml` that the CLI needs too. The daemon owns the file and
//! rejects unknown keys; the CLI reads only its keys and ignores the rest.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What the CLI reads from `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Host-loopback TCP ports containers may reach: when non-empty, containers need a network
    /// that reaches the host's loopback at all.
    pub loopback_ports: Vec<u16>,
}

/// `config.toml` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Exists but cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid for the keys the CLI reads.
    #[error("invalid configuration in {}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
}

impl ClientConfig {
    /// Parses the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: error.message().to_owned(),
        })
    }

    /// Reads `path`; the defaults when it does not exist (as the daemon does).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loopback_ports_and_ignores_other_keys() {
        let path = Path::new("/c/config.toml");
        let text = "default_profiles = [\"base\"]\nloopback_ports = [8080, 5432]\n[dns]\nmin_ttl = \"30s\"\n";
        assert_eq!(
            ClientConfig::parse(path, text).unwrap().loopback_ports,
            [8080, 5432]
        );
        assert_eq!(
            ClientConfig::parse(path, "").unwrap(),
            ClientConfig::default()
        );
    }

    #[test]
    fn bad_values_name_the_file() {
        let path = Path::new("/c/config.toml");
        for text in [
            "loopback_ports = [70000]\n",
            "loopback_ports = \"8080\"\n",
            "x = [\n",
        ] {
            let error = ClientConfig::parse(path, text).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("invalid configuration in /c/config.toml"),
                "{error}"
            );
        }
    }

    #[test]
    fn missing_file_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = ClientConfig::load(&dir.path().join("config.toml")).unwrap();
        assert!(config.loopback_ports.is_empty());
        std::fs::write(dir.path().join("config.toml"), "loopback_ports = [1]\n").unwrap();
        let config = ClientConfig::load(&dir.path().join("config.toml")).unwrap();
        assert_eq!(config.loopback_ports, [1]);
    }
}
