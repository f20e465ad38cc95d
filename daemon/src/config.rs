//! The daemon's configuration: `$XDG_CONFIG_HOME/shield/config.toml` and the directories it uses.
//!
//! Every key is optional. Unknown keys and wrong types are errors that name the key, so a typo
//! never silently weakens the firewall.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::dns::names::Unlisted;

/// Settings read from `config.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Profiles a container gets when its `shield.profiles` annotation is empty.
    pub default_profiles: Vec<String>,
    /// Also accept connections from uid 0 on the daemon's socket (off: only the daemon's uid).
    pub allow_root: bool,
    /// The `[dns]` section: where the daemon resolves names, and how long learnt addresses live.
    pub dns: DnsConfig,
    /// TCP ports of the host's loopback that containers may reach (`loopback_ports = [8080]`).
    /// Read here so that the daemon and `shieldctl prepare`/`run` (which then give podman the
    /// host-loopback network arguments) agree on one file; empty: no host-loopback access.
    pub loopback_ports: Vec<u16>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_profiles: vec!["dev-standard".to_owned()],
            allow_root: false,
            dns: DnsConfig::default(),
            loopback_ports: Vec::new(),
        }
    }
}

/// The `[dns]` section.
///
/// ```toml
/// [dns]
/// upstream = ["127.0.0.1:5353"]   # default: the nameservers of /etc/resolv.conf
/// min_ttl = "30s"
/// max_ttl = "1h"
/// timeout = "2s"
/// unlisted = "nxdomain"           # or "forward": resolve other names, let nothing through
/// max_name_length = 200
/// rate_limit = 500                # queries per second per container, sustained
/// rate_burst = 1000
/// cache_size = 1024               # answers kept per container
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Resolvers the daemon queries (UDP and TCP), from its own network namespace. `None`: the
    /// nameservers of the host's `/etc/resolv.conf`. Ports are explicit because resolv.conf
    /// cannot carry them, and a local resolver on a high port is a common test and lab setup.
    pub upstream: Option<Vec<SocketAddr>>,
    /// Shortest life of a learnt address in the dns sets: a TTL of 0 or 1 would otherwise expire
    /// the element before the client has connected.
    #[serde(deserialize_with = "duration::deserialize")]
    pub min_ttl: Duration,
    /// Longest life of a learnt address: bounds how long a stale address stays reachable after
    /// the name has moved away from it.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_ttl: Duration,
    /// How long the DNS proxy waits for the upstream resolvers to answer one query, retries and
    /// the other resolvers included, before the container's query fails. Bounded (at most
    /// [`MAX_DNS_TIMEOUT`]) because the container's resolver is waiting.
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// What the DNS proxy does with a name that is not allowlisted, in `up` mode.
    pub unlisted: Unlisted,
    /// Longest query name the proxy answers (REFUSED above it): long names are how data leaves
    /// through DNS.
    pub max_name_length: usize,
    /// Queries per second one container may send, sustained (REFUSED above it).
    pub rate_limit: u32,
    /// Queries one container may send at once above `rate_limit`.
    pub rate_burst: u32,
    /// Answers the proxy keeps per container.
    pub cache_size: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            upstream: None,
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            timeout: Duration::from_secs(2),
            unlisted: Unlisted::NxDomain,
            max_name_length: 200,
            rate_limit: 500,
            rate_burst: 1000,
            cache_size: 1024,
        }
    }
}

impl DnsConfig {
    /// Checks what serde cannot: `min_ttl <= max_ttl`, a non-empty `upstream` list, a TTL
    /// range that the kernel's set-element timeouts can hold, and a usable `timeout`.
    fn validate(&self) -> Result<(), String> {
        if self.min_ttl > self.max_ttl {
            return Err(format!(
                "dns.min_ttl ({}) is greater than dns.max_ttl ({})",
                humantime::format_duration(self.min_ttl),
                humantime::format_duration(self.max_ttl)
            ));
        }
        // A zero timeout on an nft set element means "never expires": a learnt address must expire.
        if self.min_ttl < Duration::from_secs(1) {
            return Err("dns.min_ttl must be at least 1s".to_owned());
        }
        // nf_tables carries element timeouts in milliseconds in a u64, but keep to a range an
        // operator can mean: a learnt address living beyond a week is a configuration mistake.
        if self.max_ttl > MAX_DNS_TTL {
            return Err(format!(
                "dns.max_ttl ({}) is longer than {}",
                humantime::format_duration(self.max_ttl),
                humantime::format_duration(MAX_DNS_TTL)
            ));
        }
        if self.timeout.is_zero() || self.timeout > MAX_DNS_TIMEOUT {
            return Err(format!(
                "dns.timeout ({}) must be more than 0s and at most {}",
                humantime::format_duration(self.timeout),
                humantime::format_duration(MAX_DNS_TIMEOUT)
            ));
        }
        if !(1..=253).contains(&self.max_name_length) {
            return Err(format!(
                "dns.max_name_length ({}) must be between 1 and 253",
                self.max_name_length
            ));
        }
        if self.rate_limit == 0 || self.rate_burst == 0 {
            return Err("dns.rate_limit and dns.rate_burst must be at least 1".to_owned());
        }
        if self.upstream.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "dns.upstream is empty: list at least one IP:PORT, or leave the key out to use /etc/resolv.conf"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The longest `dns.max_ttl` accepted.
const MAX_DNS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest `dns.timeout` accepted: stub resolvers give up long before (glibc after 5 s per
/// try), so a longer wait only holds the proxy's resources for an answer nobody reads.
pub const MAX_DNS_TIMEOUT: Duration = Duration::from_secs(30);

/// Durations written as humantime strings (`"30s"`, `"1h"`, `"1h 30m"`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    /// Parses a humantime string; the error, wrapped by toml, names the key and the line.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(de)?;
        humantime::parse_duration(&text)
            .map_err(|err| D::Error::custom(format!("invalid duration {text:?}: {err}")))
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
    /// A value is well-formed but not acceptable (e.g. `dns.min_ttl` above `dns.max_ttl`).
    #[error("invalid configuration in {}: {message}", .path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
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
        config
            .dns
            .validate()
            .map_err(|message| ConfigError::Value {
                path: path.to_owned(),
                message,
            })?;
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
    fn dns_defaults() {
        let dns = parse("").unwrap().dns;
        assert_eq!(dns.upstream, None);
        assert_eq!(dns.min_ttl, Duration::from_secs(30));
        assert_eq!(dns.max_ttl, Duration::from_secs(3600));
        assert_eq!(dns.timeout, Duration::from_secs(2));
    }

    #[test]
    fn dns_timeout_is_read_and_bounded() {
        let dns = parse("[dns]\ntimeout = \"500ms\"\n").unwrap().dns;
        assert_eq!(dns.timeout, Duration::from_millis(500));
        let dns = parse("[dns]\ntimeout = \"30s\"\n").unwrap().dns;
        assert_eq!(dns.timeout, Duration::from_secs(30));
        for bad in ["0s", "31s", "1h"] {
            let err = parse(&format!("[dns]\ntimeout = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("dns.timeout"), "{bad}: {err}");
        }
        let err = parse("[dns]\ntimeout = \"later\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeout") && err.contains("later"), "{err}");
    }

    #[test]
    fn dns_keys_are_read() {
        let dns = parse(
            "[dns]\nupstream = [\"127.0.0.1:5353\", \"[::1]:53\"]\nmin_ttl = \"5s\"\nmax_ttl = \"1h 30m\"\n",
        )
        .unwrap()
        .dns;
        assert_eq!(
            dns.upstream.unwrap(),
            [
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(dns.min_ttl, Duration::from_secs(5));
        assert_eq!(dns.max_ttl, Duration::from_secs(5400));
    }

    #[test]
    fn dns_partial_section_keeps_other_defaults() {
        let dns = parse("[dns]\nmax_ttl = \"10m\"\n").unwrap().dns;
        assert_eq!(dns.min_ttl, Duration::from_secs(30));
        assert_eq!(dns.max_ttl, Duration::from_secs(600));
        assert_eq!(dns.upstream, None);
    }

    #[test]
    fn dns_upstream_without_port_is_named() {
        let err = parse("[dns]\nupstream = [\"127.0.0.1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream"), "{err}");
    }

    #[test]
    fn dns_empty_upstream_is_refused() {
        let err = parse("[dns]\nupstream = []\n").unwrap_err().to_string();
        assert!(err.contains("dns.upstream"), "{err}");
    }

    #[test]
    fn dns_bad_duration_is_named() {
        let err = parse("[dns]\nmin_ttl = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_ttl") && err.contains("soon"), "{err}");
        let err = parse("[dns]\nmax_ttl = 60\n").unwrap_err().to_string();
        assert!(err.contains("max_ttl"), "{err}");
    }

    #[test]
    fn dns_min_above_max_is_refused() {
        let err = parse("[dns]\nmin_ttl = \"2h\"\nmax_ttl = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dns.min_ttl")
                && err.contains("dns.max_ttl")
                && err.contains("/c/config.toml"),
            "{err}"
        );
    }

    #[test]
    fn dns_zero_min_and_huge_max_are_refused() {
        let err = parse("[dns]\nmin_ttl = \"0s\"\n").unwrap_err().to_string();
        assert!(err.contains("dns.min_ttl"), "{err}");
        let err = parse("[dns]\nmax_ttl = \"30days\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns.max_ttl"), "{err}");
    }

    #[test]
    fn dns_unknown_key_is_named() {
        let err = parse("[dns]\nupstreams = [\"127.0.0.1:53\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstreams"), "{err}");
    }

    #[test]
    fn missing_file_gives_defaults() {
        assert_eq!(
            Config::load(Path::new("/nonexistent/c.toml")).unwrap(),
            Config::default()
        );
    }
}
