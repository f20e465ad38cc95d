//! The `podman run` arguments that put a container under shield (what `prepare` prints and `run`
//! passes): the annotations that trigger the hooks, the capabilities the container must not
//! have, shield's resolv.conf, and the network that host-loopback ports need. Pure.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::Serialize;

use crate::hooks::{NAME_ANNOTATION, PROFILES_ANNOTATION};

/// Where the container finds shield's resolv.conf.
pub const RESOLV_CONF_TARGET: &str = "/etc/resolv.conf";

/// The resolv.conf shield mounts: the DNS proxy listens on the container's own loopback. A file
/// rather than `--dns 127.0.0.1`, which makes rootless pasta try to bind the host's port 53.
pub const RESOLV_CONF_TEXT: &str = "# Written by shieldctl: shield's DNS proxy answers on the container's loopback.\nnameserver 127.0.0.1\n";

/// The host's loopback as slirp4netns shows it (its gateway, with the `cidr` pinned below).
pub const SLIRP4NETNS_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// The address pasta maps to the host's loopback (podman's `host.containers.internal`).
pub const PASTA_HOST: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 2);

/// An argument shieldctl cannot build arguments from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// The container name is not one podman and shieldd accept.
    #[error(
        "invalid container name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit (at most 128)"
    )]
    Name(String),
    /// A profile name is not one shieldd accepts.
    #[error(
        "invalid profile name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit (at most 64)"
    )]
    Profile(String),
    /// The resolv.conf path cannot be written in a `--volume` argument.
    #[error("cannot mount {0}: its path contains ':' or ','")]
    MountPath(String),
}

/// A podman version (`podman --version` prints `podman version 4.3.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PodmanVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl PodmanVersion {
    /// The first podman with the pasta network mode.
    pub const PASTA: Self = Self {
        major: 4,
        minor: 4,
        patch: 0,
    };

    /// Parses `4.3.1`, `4.9.0-rc1`, `podman version 5.2.2` or `podman version 4.4.0-dev`.
    pub fn parse(text: &str) -> Option<Self> {
        let word = text
            .split_whitespace()
            .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
        let core = word.split(['-', '+', '~']).next()?;
        let mut numbers = core.split('.').map(|part| part.parse::<u32>().ok());
        Some(Self {
            major: numbers.next()??,
            minor: numbers.next()??,
            patch: numbers.next().flatten().unwrap_or(0),
        })
    }
}

impl fmt::Display for PodmanVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The container network shield asks podman for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPlan {
    /// No host-loopback port configured: podman's default network, no `--network`.
    Default,
    /// slirp4netns with host loopback reachable at its gateway (podman < 4.4 has no pasta).
    Slirp4netns,
    /// pasta with the host's loopback mapped to [`PASTA_HOST`] (podman ≥ 4.4; the installed
    /// pasta must know `--map-host-loopback`, passt 2024_08_21 or later).
    Pasta,
}

impl NetworkPlan {
    /// The plan for `loopback_ports` (from config.toml) on `podman` (`None`: unknown, assumed
    /// to be a podman without pasta, like Debian 12's 4.3.1).
    pub fn choose(loopback_ports: &[u16], podman: Option<PodmanVersion>) -> Self {
        if loopback_ports.is_empty() {
            Self::Default
        } else if podman.is_some_and(|version| version >= PodmanVersion::PASTA) {
            Self::Pasta
        } else {
            Self::Slirp4netns
        }
    }

    /// The `--network` value, if any.
    pub fn network_arg(self) -> Option<String> {
        match self {
            Self::Default => None,
            // The cidr is podman's default, pinned so that the gateway is the address the
            // ruleset allows even if containers.conf changes slirp4netns's options.
            Self::Slirp4netns => {
                Some("slirp4netns:allow_host_loopback=true,cidr=10.0.2.0/24".to_owned())
            }
            Self::Pasta => Some(format!("pasta:--map-host-loopback,{PASTA_HOST}")),
        }
    }

    /// The address at which the container reaches the host's loopback, if it can.
    pub fn host_address(self) -> Option<Ipv4Addr> {
        match self {
            Self::Default => None,
            Self::Slirp4netns => Some(SLIRP4NETNS_HOST),
            Self::Pasta => Some(PASTA_HOST),
        }
    }
}

/// A container name podman and shieldd both accept (`[A-Za-z0-9][A-Za-z0-9_.-]*`, ≤ 128).
pub fn validate_name(name: &str) -> Result<(), ArgsError> {
    if valid_word(name, 128) {
        Ok(())
    } else {
        Err(ArgsError::Name(name.to_owned()))
    }
}

/// A profile name shieldd accepts (`[A-Za-z0-9][A-Za-z0-9_.-]*`, ≤ 64).
pub fn validate_profile(profile: &str) -> Result<(), ArgsError> {
    if valid_word(profile, 64) {
        Ok(())
    } else {
        Err(ArgsError::Profile(profile.to_owned()))
    }
}

fn valid_word(word: &str, max: usize) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && word.len() <= max
}

/// The arguments for a container `name` with `profiles` (empty: the daemon's default
/// profiles, which is what an empty `shield.profiles` means to it), shield's resolv.conf at
/// `resolv_conf`, and `network`.
pub fn shield_args(
    name: &str,
    profiles: &[String],
    resolv_conf: &Path,
    network: NetworkPlan,
) -> Result<Vec<String>, ArgsError> {
    validate_name(name)?;
    for profile in profiles {
        validate_profile(profile)?;
    }
    let resolv = resolv_conf.to_string_lossy();
    if resolv.contains([':', ',']) {
        return Err(ArgsError::MountPath(resolv.into_owned()));
    }
    let mut args = vec![
        "--name".to_owned(),
        name.to_owned(),
        "--annotation".to_owned(),
        format!("{NAME_ANNOTATION}={name}"),
        "--annotation".to_owned(),
        format!("{PROFILES_ANNOTATION}={}", profiles.join(":")),
        "--cap-drop".to_owned(),
        "NET_ADMIN".to_owned(),
        "--cap-drop".to_owned(),
        "NET_RAW".to_owned(),
        "--volume".to_owned(),
        format!("{resolv}:{RESOLV_CONF_TARGET}:ro"),
    ];
    if let Some(value) = network.network_arg() {
        args.push("--network".to_owned());
        args.push(value);
    }
    Ok(args)
}

/// `args` as one line a POSIX shell reads back into the same words.
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn resolv() -> PathBuf {
        PathBuf::from("/home/u/.local/state/shield/resolv.conf")
    }

    #[test]
    fn versions() {
        let v = |major, minor, patch| PodmanVersion {
            major,
            minor,
            patch,
        };
        assert_eq!(
            PodmanVersion::parse("podman version 4.3.1\n"),
            Some(v(4, 3, 1))
        );
        assert_eq!(
            PodmanVersion::parse("podman version 4.4.0-dev"),
            Some(v(4, 4, 0))
        );
        assert_eq!(PodmanVersion::parse("5.2"), Some(v(5, 2, 0)));
        assert_eq!(PodmanVersion::parse("podman version"), None);
        assert_eq!(PodmanVersion::parse("podman version x.y"), None);
        assert!(v(4, 3, 9) < PodmanVersion::PASTA);
        assert!(v(4, 10, 0) > PodmanVersion::PASTA);
        assert_eq!(v(4, 3, 1).to_string(), "4.3.1");
    }

    #[test]
    fn network_plans() {
        let v431 = PodmanVersion::parse("4.3.1");
        let v50 = PodmanVersion::parse("5.0.0");
        assert_eq!(NetworkPlan::choose(&[], v50), NetworkPlan::Default);
        assert_eq!(NetworkPlan::choose(&[8080], v431), NetworkPlan::Slirp4netns);
        assert_eq!(NetworkPlan::choose(&[8080], None), NetworkPlan::Slirp4netns);
        assert_eq!(NetworkPlan::choose(&[8080], v50), NetworkPlan::Pasta);
        assert_eq!(
            NetworkPlan::choose(&[1], PodmanVersion::parse("4.4.0")),
            NetworkPlan::Pasta
        );
        assert_eq!(NetworkPlan::Default.network_arg(), None);
        assert_eq!(NetworkPlan::Default.host_address(), None);
        assert_eq!(
            NetworkPlan::Pasta.network_arg().unwrap(),
            "pasta:--map-host-loopback,169.254.1.2"
        );
        assert_eq!(
            NetworkPlan::Slirp4netns.host_address(),
            Some(Ipv4Addr::new(10, 0, 2, 2))
        );
        assert!(
            NetworkPlan::Slirp4netns
                .network_arg()
                .unwrap()
                .starts_with("slirp4netns:allow_host_loopback=true")
        );
    }

    #[test]
    fn args_without_loopback_ports() {
        let args = shield_args("web", &[], &resolv(), NetworkPlan::Default).unwrap();
        assert_eq!(
            args,
            [
                "--name",
                "web",
                "--annotation",
                "shield.name=web",
                "--annotation",
                "shield.profiles=",
                "--cap-drop",
                "NET_ADMIN",
                "--cap-drop",
                "NET_RAW",
                "--volume",
                "/home/u/.local/state/shield/resolv.conf:/etc/resolv.conf:ro",
            ]
        );
    }

    #[test]
    fn args_with_profiles_and_network() {
        let profiles = vec!["dev-standard".to_owned(), "pypi".to_owned()];
        let args = shield_args("web", &profiles, &resolv(), NetworkPlan::Slirp4netns).unwrap();
        assert!(args.contains(&"shield.profiles=dev-standard:pypi".to_owned()));
        assert_eq!(args[args.len() - 2], "--network");
        assert_eq!(
            args[args.len() - 1],
            "slirp4netns:allow_host_loopback=true,cidr=10.0.2.0/24"
        );
        // What shieldctl adds passes its own guard, except for what only shieldctl may set.
        let mut user = args.clone();
        user.push("img".to_owned());
        assert!(crate::arg_guard::check(&user).is_err());
    }

    #[test]
    fn bad_names_profiles_and_paths() {
        for name in ["", "-x", "a b", "a/b", &"a".repeat(129)] {
            assert!(matches!(
                shield_args(name, &[], &resolv(), NetworkPlan::Default),
                Err(ArgsError::Name(_))
            ));
        }
        assert!(shield_args(&"a".repeat(128), &[], &resolv(), NetworkPlan::Default).is_ok());
        for profile in ["", "a:b", ".x", "a,b"] {
            assert!(matches!(
                shield_args(
                    "web",
                    &[profile.to_owned()],
                    &resolv(),
                    NetworkPlan::Default
                ),
                Err(ArgsError::Profile(_))
            ));
        }
        assert!(matches!(
            shield_args(
                "web",
                &[],
                Path::new("/a:b/resolv.conf"),
                NetworkPlan::Default
            ),
            Err(ArgsError::MountPath(_))
        ));
    }

    #[test]
    fn shell_words_round_trip_through_sh() {
        let args = vec![
            "--annotation".to_owned(),
            "shield.profiles=".to_owned(),
            "--volume".to_owned(),
            "/home/a user/it's:/etc/resolv.conf:ro".to_owned(),
            String::new(),
        ];
        let line = shell_words(&args);
        assert_eq!(
            line,
            r"--annotation shield.profiles= --volume '/home/a user/it'\''s:/etc/resolv.conf:ro' ''"
        );
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {line}; do printf '%s\\n' \"$a\"; done"))
            .output()
            .unwrap();
        let words: Vec<&str> = std::str::from_utf8(&output.stdout)
            .unwrap()
            .lines()
            .collect();
        assert_eq!(words, args);
    }
}
