//! Facts about the user and the machine that several commands need: who we are (the effective
//! uid, read from `/proc/self/status` so that no `unsafe` libc call is needed) and where the XDG
//! directories are.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A directory that cannot be derived from the environment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot find the {what} directory: set {var} (or HOME)")]
pub struct NoDirectory {
    /// Which directory.
    pub what: &'static str,
    /// The variable that would give it.
    pub var: &'static str,
}

/// The XDG base directories, derived the way `shieldd` derives them (see its `config::Dirs`), so
/// that both find the same `config.toml` and state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xdg {
    /// `$XDG_CONFIG_HOME`, else `$HOME/.config`.
    pub config_home: PathBuf,
    /// `$XDG_DATA_HOME`, else `$HOME/.local/share`.
    pub data_home: PathBuf,
    /// `$XDG_STATE_HOME`, else `$HOME/.local/state`.
    pub state_home: PathBuf,
}

impl Xdg {
    /// From the process environment.
    pub fn from_env() -> Result<Self, NoDirectory> {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// From `var`, which looks a variable up (the environment, or a test's map).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<Self, NoDirectory> {
        Ok(Self {
            config_home: xdg_dir(&var, "XDG_CONFIG_HOME", ".config", "configuration")?,
            data_home: xdg_dir(&var, "XDG_DATA_HOME", ".local/share", "data")?,
            state_home: xdg_dir(&var, "XDG_STATE_HOME", ".local/state", "state")?,
        })
    }

    /// `config.toml` of shield (the daemon's configuration file).
    pub fn shield_config_file(&self) -> PathBuf {
        self.config_home.join("shield").join("config.toml")
    }

    /// The user's `containers.conf`, which rootless podman reads after the system's.
    pub fn user_containers_conf(&self) -> PathBuf {
        self.config_home.join("containers").join("containers.conf")
    }

    /// The directory of the user's `containers.conf` drop-ins.
    pub fn user_containers_conf_d(&self) -> PathBuf {
        self.config_home
            .join("containers")
            .join("containers.conf.d")
    }

    /// shield's own hook directory for `setup --user`: owned by shield alone, so that removing it
    /// never touches another tool's hooks.
    pub fn user_hooks_dir(&self) -> PathBuf {
        self.data_home.join("shield").join("hooks.d")
    }

    /// shield's state directory (the daemon keeps its containers there; the CLI its resolv.conf).
    pub fn shield_state_dir(&self) -> PathBuf {
        self.state_home.join("shield")
    }
}

/// `$VAR` if set and absolute (the XDG spec says to ignore relative values), else `$HOME/fallback`.
fn xdg_dir(
    var: &impl Fn(&str) -> Option<OsString>,
    name: &'static str,
    fallback: &str,
    what: &'static str,
) -> Result<PathBuf, NoDirectory> {
    let absolute = |value: OsString| {
        let path = PathBuf::from(value);
        path.is_absolute().then_some(path)
    };
    if let Some(path) = var(name).and_then(absolute) {
        return Ok(path);
    }
    var("HOME")
        .and_then(absolute)
        .map(|home| home.join(fallback))
        .ok_or(NoDirectory { what, var: name })
}

/// The effective uid of this process (`None` if `/proc` is not mounted).
pub fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid_from_status(&status))
}

/// The effective uid from the text of `/proc/PID/status` (`Uid: real effective saved fs`).
pub fn effective_uid_from_status(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
}

/// The login name of `uid` in the text of `/etc/passwd`.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// `path` made absolute against the current directory, with `.` and `..` resolved lexically
/// (symlinks are kept: the socket may not exist yet, and a hook path through a stable symlink
/// should survive upgrades).
pub fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    Ok(normalize(&joined))
}

/// Resolves `.`, `..` and repeated or trailing slashes without touching the filesystem.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn xdg_from_variables_or_home() {
        let xdg = Xdg::from_vars(vars(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/d")])).unwrap();
        assert_eq!(xdg.config_home, Path::new("/home/u/.config"));
        assert_eq!(xdg.data_home, Path::new("/d"));
        assert_eq!(xdg.state_home, Path::new("/home/u/.local/state"));
        assert_eq!(
            xdg.user_containers_conf(),
            Path::new("/home/u/.config/containers/containers.conf")
        );
        assert_eq!(xdg.user_hooks_dir(), Path::new("/d/shield/hooks.d"));
        assert_eq!(
            xdg.shield_config_file(),
            Path::new("/home/u/.config/shield/config.toml")
        );
    }

    #[test]
    fn relative_xdg_values_are_ignored() {
        let xdg = Xdg::from_vars(vars(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "rel")])).unwrap();
        assert_eq!(xdg.config_home, Path::new("/h/.config"));
    }

    #[test]
    fn no_home_names_the_variable() {
        let error = Xdg::from_vars(vars(&[])).unwrap_err();
        assert_eq!(error.var, "XDG_CONFIG_HOME");
        assert_eq!(
            error.to_string(),
            "cannot find the configuration directory: set XDG_CONFIG_HOME (or HOME)"
        );
        let error = Xdg::from_vars(vars(&[("XDG_CONFIG_HOME", "/c")])).unwrap_err();
        assert_eq!(error.var, "XDG_DATA_HOME");
    }

    #[test]
    fn uid_from_status() {
        let status = "Name:\tx\nUid:\t1000\t1001\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid_from_status(status), Some(1001));
        assert_eq!(effective_uid_from_status("Name: x\n"), None);
        assert!(effective_uid().is_some());
    }

    #[test]
    fn names_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 5), None);
        assert_eq!(user_name("garbage\n", 0), None);
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a//b/./c/../d/")), Path::new("/a/b/d"));
        assert_eq!(normalize(Path::new("/../x")), Path::new("/x"));
        assert_eq!(
            absolute(Path::new("/s.sock")).unwrap(),
            Path::new("/s.sock")
        );
        let relative = absolute(Path::new("x/../s.sock")).unwrap();
        assert!(relative.is_absolute());
        assert!(relative.ends_with("s.sock"));
    }
}
