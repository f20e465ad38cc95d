//! `shieldctl doctor`: is this machine ready for shielded containers? Each check is a pure
//! function from facts to a [`Finding`] (what was found, and the command that fixes it); the
//! `*_facts` functions read those facts from the system.

use std::path::Path;

use serde::Serialize;

use crate::podman::Probe;
use crate::podman_args::PodmanVersion;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but something is worth fixing.
    Warn,
    /// Shielded containers will not work until this is fixed.
    Fail,
}

impl Status {
    /// The word in text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check's name (`podman`, `hooks`, …).
    pub check: &'static str,
    /// Ok, warn or fail.
    pub status: Status,
    /// What was found.
    pub what: String,
    /// The command (or step) that fixes it; `None` when nothing needs fixing.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, what: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Ok,
            what: what.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Warn,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(check: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Fail,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// podman is installed and its version known.
pub fn podman(probe: &Probe) -> Finding {
    const CHECK: &str = "podman";
    match probe {
        Probe::Version(version) if *version < PodmanVersion::PASTA => Finding::ok(
            CHECK,
            format!("podman {version} (slirp4netns networking: pasta needs podman 4.4)"),
        ),
        Probe::Version(version) => Finding::ok(CHECK, format!("podman {version}")),
        Probe::Unparsed(text) => Finding::warn(
            CHECK,
            format!("podman --version printed {text:?}: version unknown"),
            "check the podman installation: podman --version",
        ),
        Probe::NotFound => Finding::fail(
            CHECK,
            "podman is not installed (not found in PATH)",
            "sudo apt-get install podman crun uidmap slirp4netns",
        ),
        Probe::Failed(reason) => Finding::fail(
            CHECK,
            format!("podman --version failed: {reason}"),
            "check the podman installation: podman --version",
        ),
    }
}

/// The hooks podman loads attach annotated containers to this daemon.
pub fn hooks(result: &Result<String, String>) -> Finding {
    match result {
        Ok(what) => Finding::ok("hooks", what.clone()),
        Err(what) => Finding::fail("hooks", what.clone(), "shieldctl setup"),
    }
}

/// The daemon answers, and is the client's version.
pub fn daemon(answer: &Result<String, String>, client_version: &str) -> Finding {
    const CHECK: &str = "daemon";
    match answer {
        Ok(version) if version == client_version => {
            Finding::ok(CHECK, format!("shieldd {version} answers"))
        }
        Ok(version) => Finding::warn(
            CHECK,
            format!("shieldd {version} answers, but shieldctl is {client_version}"),
            "install shieldd and shieldctl from the same release",
        ),
        Err(reason) => Finding::fail(
            CHECK,
            reason.clone(),
            "systemctl --user start shieldd.socket (or run: shieldd &)",
        ),
    }
}

/// Owner and permissions of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    /// Owner uid.
    pub owner: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// A Unix socket.
    pub is_socket: bool,
    /// A character device.
    pub is_char_device: bool,
}

/// The socket's directory is private to its owner (the daemon also checks each peer's uid;
/// these permissions keep other users from even connecting).
pub fn socket_permissions(
    socket: &Path,
    uid: u32,
    dir: Option<FileFacts>,
    file: Option<FileFacts>,
) -> Finding {
    const CHECK: &str = "socket";
    let dir_path = socket.parent().unwrap_or(Path::new("/"));
    let start = "systemctl --user start shieldd.socket (or run: shieldd &)";
    let Some(dir) = dir else {
        return Finding::fail(
            CHECK,
            format!("{} does not exist", dir_path.display()),
            start,
        );
    };
    let Some(file) = file else {
        return Finding::fail(CHECK, format!("no socket at {}", socket.display()), start);
    };
    if !file.is_socket {
        return Finding::fail(
            CHECK,
            format!("{} is not a socket", socket.display()),
            format!("rm {} and restart shieldd", socket.display()),
        );
    }
    if file.owner != uid {
        return Finding::fail(
            CHECK,
            format!(
                "{} belongs to uid {}, not to you (uid {uid}): that is another user's shieldd",
                socket.display(),
                file.owner
            ),
            "run shieldctl as the daemon's user, or pass --socket with your own daemon's socket",
        );
    }
    if dir.owner != uid || dir.mode & 0o077 != 0 {
        return Finding::warn(
            CHECK,
            format!(
                "{} has mode {:04o} and owner uid {}: other users can reach the socket",
                dir_path.display(),
                dir.mode,
                dir.owner
            ),
            format!("chmod 700 {}", dir_path.display()),
        );
    }
    if file.mode & 0o077 != 0 {
        return Finding::warn(
            CHECK,
            format!("{} has mode {:04o}", socket.display(), file.mode),
            format!("chmod 600 {}", socket.display()),
        );
    }
    Finding::ok(
        CHECK,
        format!(
            "{} {:04o}, {} {:04o}, owned by uid {uid}",
            dir_path.display(),
            dir.mode,
            socket.display(),
            file.mode
        ),
    )
}

/// The kernel has nf_tables (`in_kernel`: its symbols are in `/proc/kallsyms`, `None` if that
/// could not be read); `module_file`: an unloaded `nf_tables.ko` exists.
pub fn nf_tables(in_kernel: Option<bool>, module_file: bool) -> Finding {
    const CHECK: &str = "nf_tables";
    let load =
        "sudo modprobe nf_tables && echo nf_tables | sudo tee /etc/modules-load.d/shield.conf";
    match in_kernel {
        Some(true) => Finding::ok(CHECK, "the kernel has nf_tables"),
        _ if module_file => Finding::warn(
            CHECK,
            "nf_tables is a module that is not loaded (a rootless daemon cannot load it)",
            load,
        ),
        Some(false) => Finding::fail(
            CHECK,
            "the kernel has no nf_tables and no nf_tables module",
            "use a kernel built with CONFIG_NF_TABLES",
        ),
        None => Finding::warn(
            CHECK,
            "cannot tell whether the kernel has nf_tables (/proc/kallsyms unreadable)",
            load,
        ),
    }
}

/// Rootless podman needs subordinate uid and gid ranges for the user (`name` or `uid`) in the
/// texts of `/etc/subuid` and `/etc/subgid` (`None`: the file is missing).
pub fn subordinate_ids(
    uid: u32,
    name: Option<&str>,
    subuid: Option<&str>,
    subgid: Option<&str>,
) -> Finding {
    const CHECK: &str = "subids";
    if uid == 0 {
        return Finding::ok(CHECK, "not needed: podman runs rootful as root");
    }
    let who = name.map_or_else(|| uid.to_string(), str::to_owned);
    let mut missing = Vec::new();
    for (file, text) in [("/etc/subuid", subuid), ("/etc/subgid", subgid)] {
        if !text.is_some_and(|text| has_range(text, uid, name)) {
            missing.push(file);
        }
    }
    if missing.is_empty() {
        Finding::ok(
            CHECK,
            format!("{who} has ranges in /etc/subuid and /etc/subgid"),
        )
    } else {
        Finding::fail(
            CHECK,
            format!("no range for {who} in {}", missing.join(" and ")),
            format!("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {who}"),
        )
    }
}

/// `name:start:count` (or `uid:start:count`) with a non-zero count.
fn has_range(text: &str, uid: u32, name: Option<&str>) -> bool {
    let uid = uid.to_string();
    text.lines().any(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next().unwrap_or_default();
        let start = fields.next().and_then(|start| start.parse::<u64>().ok());
        let count = fields.next().and_then(|count| count.parse::<u64>().ok());
        (owner == uid || Some(owner) == name) && start.is_some() && count.is_some_and(|n| n > 0)
    })
}

/// How the cgroup filesystems are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2 only.
    Unified,
    /// v1 hierarchies with v2 at `/sys/fs/cgroup/unified`; these v2 controllers lack their v1
    /// mount (crun refuses every container then).
    Hybrid {
        /// Controllers listed by the v2 hierarchy and not mounted as v1.
        unmounted: Vec<String>,
    },
    /// cgroup v1 only.
    Legacy,
    /// No cgroup filesystem found.
    Unknown,
}

/// The layout from: whether `/sys/fs/cgroup/cgroup.controllers` exists, the text of
/// `/sys/fs/cgroup/unified/cgroup.controllers` if any, and `/proc/self/mountinfo`.
pub fn cgroup_layout(
    v2_root: bool,
    unified_controllers: Option<&str>,
    mountinfo: &str,
) -> CgroupLayout {
    if v2_root {
        return CgroupLayout::Unified;
    }
    let v1_mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split_whitespace().nth(4)?;
            (after.split_whitespace().next()? == "cgroup").then_some(mount_point)
        })
        .collect();
    if let Some(controllers) = unified_controllers {
        let unmounted = controllers
            .split_whitespace()
            .filter(|controller| {
                let wanted = format!("/sys/fs/cgroup/{controller}");
                !v1_mounts.contains(&wanted.as_str())
            })
            .map(str::to_owned)
            .collect();
        return CgroupLayout::Hybrid { unmounted };
    }
    if v1_mounts.is_empty() {
        CgroupLayout::Unknown
    } else {
        CgroupLayout::Legacy
    }
}

/// crun can create containers with this cgroup layout.
pub fn cgroups(layout: &CgroupLayout) -> Finding {
    const CHECK: &str = "cgroups";
    match layout {
        CgroupLayout::Unified => Finding::ok(CHECK, "cgroup v2 (unified)"),
        CgroupLayout::Legacy => Finding::ok(CHECK, "cgroup v1"),
        CgroupLayout::Hybrid { unmounted } if unmounted.is_empty() => Finding::ok(
            CHECK,
            "hybrid cgroups, every v2 controller also mounted as v1",
        ),
        CgroupLayout::Hybrid { unmounted } => Finding::fail(
            CHECK,
            format!(
                "hybrid cgroups: {} only in cgroup v2, so crun refuses every container (\"cgroups in hybrid mode not supported\")",
                unmounted.join(", ")
            ),
            unmounted
                .iter()
                .map(|c| {
                    format!("sudo mkdir -p /sys/fs/cgroup/{c} && sudo mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}")
                })
                .collect::<Vec<_>>()
                .join(" && "),
        ),
        CgroupLayout::Unknown => Finding::fail(
            CHECK,
            "no cgroup filesystem under /sys/fs/cgroup",
            "sudo mount -t cgroup2 none /sys/fs/cgroup",
        ),
    }
}

/// slirp4netns and pasta open `/dev/net/tun` as the user.
pub fn tun(uid: u32, facts: Option<FileFacts>) -> Finding {
    const CHECK: &str = "tun";
    let Some(facts) = facts.filter(|facts| facts.is_char_device) else {
        return Finding::fail(
            CHECK,
            "/dev/net/tun is missing",
            "sudo modprobe tun (or: sudo mkdir -p /dev/net && sudo mknod -m 0666 /dev/net/tun c 10 200)",
        );
    };
    let usable = uid == 0
        || facts.mode & 0o006 == 0o006
        || (facts.owner == uid && facts.mode & 0o600 == 0o600);
    if usable {
        Finding::ok(CHECK, format!("/dev/net/tun mode {:04o}", facts.mode))
    } else {
        Finding::fail(
            CHECK,
            format!(
                "/dev/net/tun has mode {:04o}: slirp4netns and pasta cannot open it as uid {uid}",
                facts.mode
            ),
            "sudo chmod 0666 /dev/net/tun",
        )
    }
}

/// The facts about `path` (`None` if it does not exist); does not follow a final symlink.
pub fn file_facts(path: &Path) -> Option<FileFacts> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(FileFacts {
        owner: meta.uid(),
        mode: meta.mode() & 0o7777,
        is_socket: meta.file_type().is_socket(),
        is_char_device: meta.file_type().is_char_device(),
    })
}

/// Whether `/proc/kallsyms` lists nf_tables' core (built in, or its module loaded).
pub fn nf_tables_in_kernel() -> Option<bool> {
    let symbols = std::fs::read_to_string("/proc/kallsyms").ok()?;
    Some(
        symbols
            .lines()
            .any(|line| line.split_whitespace().nth(2) == Some("nft_register_chain_type")),
    )
}

/// Whether the running kernel's module tree has `nf_tables.ko` (listed in `modules.dep`).
pub fn nf_tables_module_file() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dep = Path::new("/lib/modules")
        .join(release.trim())
        .join("modules.dep");
    std::fs::read_to_string(dep).is_ok_and(|text| {
        text.lines()
            .filter_map(|line| line.split(':').next())
            .any(|module| {
                module
                    .rsplit('/')
                    .next()
                    .is_some_and(|f| f.starts_with("nf_tables.ko"))
            })
    })
}

/// The cgroup layout of this machine.
pub fn cgroup_layout_facts() -> CgroupLayout {
    cgroup_layout(
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .ok()
            .as_deref(),
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(owner: u32, mode: u32) -> FileFacts {
        FileFacts {
            owner,
            mode,
            is_socket: true,
            is_char_device: true,
        }
    }

    #[test]
    fn podman_findings() {
        let v = |text| Probe::Version(PodmanVersion::parse(text).unwrap());
        assert_eq!(podman(&v("4.3.1")).status, Status::Ok);
        assert!(podman(&v("4.3.1")).what.contains("slirp4netns"));
        assert_eq!(podman(&v("5.0.1")).what, "podman 5.0.1");
        let missing = podman(&Probe::NotFound);
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.fix.unwrap().contains("apt-get install podman"));
        assert_eq!(podman(&Probe::Failed("boom".into())).status, Status::Fail);
        assert_eq!(podman(&Probe::Unparsed("x".into())).status, Status::Warn);
    }

    #[test]
    fn hooks_and_daemon_findings() {
        assert_eq!(hooks(&Ok("fine".into())).status, Status::Ok);
        let bad = hooks(&Err("no shield hook".into()));
        assert_eq!(bad.status, Status::Fail);
        assert_eq!(bad.fix.as_deref(), Some("shieldctl setup"));
        assert_eq!(daemon(&Ok("0.1.0".into()), "0.1.0").status, Status::Ok);
        assert_eq!(daemon(&Ok("0.2.0".into()), "0.1.0").status, Status::Warn);
        let down = daemon(&Err("cannot reach".into()), "0.1.0");
        assert_eq!(down.status, Status::Fail);
        assert!(down.fix.unwrap().contains("shieldd.socket"));
    }

    #[test]
    fn socket_findings() {
        let socket = Path::new("/run/user/1000/shield/shieldd.sock");
        let good = socket_permissions(
            socket,
            1000,
            Some(facts(1000, 0o700)),
            Some(facts(1000, 0o600)),
        );
        assert_eq!(good.status, Status::Ok, "{good:?}");
        assert_eq!(
            socket_permissions(socket, 1000, None, None).status,
            Status::Fail
        );
        assert_eq!(
            socket_permissions(socket, 1000, Some(facts(1000, 0o700)), None).status,
            Status::Fail
        );
        let open_dir = socket_permissions(
            socket,
            1000,
            Some(facts(1000, 0o755)),
            Some(facts(1000, 0o600)),
        );
        assert_eq!(open_dir.status, Status::Warn);
        assert_eq!(
            open_dir.fix.as_deref(),
            Some("chmod 700 /run/user/1000/shield")
        );
        let open_socket = socket_permissions(
            socket,
            1000,
            Some(facts(1000, 0o700)),
            Some(facts(1000, 0o666)),
        );
        assert_eq!(open_socket.status, Status::Warn);
        let other = socket_permissions(socket, 1000, Some(facts(0, 0o700)), Some(facts(0, 0o600)));
        assert_eq!(other.status, Status::Fail);
        let mut not_socket = facts(1000, 0o600);
        not_socket.is_socket = false;
        assert_eq!(
            socket_permissions(socket, 1000, Some(facts(1000, 0o700)), Some(not_socket)).status,
            Status::Fail
        );
    }

    #[test]
    fn nf_tables_findings() {
        assert_eq!(nf_tables(Some(true), false).status, Status::Ok);
        assert_eq!(nf_tables(Some(false), true).status, Status::Warn);
        assert_eq!(nf_tables(Some(false), false).status, Status::Fail);
        assert_eq!(nf_tables(None, false).status, Status::Warn);
    }

    #[test]
    fn subordinate_id_findings() {
        let ranges = "alice:100000:65536\n1001:200000:65536\n";
        assert_eq!(
            subordinate_ids(0, Some("root"), None, None).status,
            Status::Ok
        );
        assert_eq!(
            subordinate_ids(1000, Some("alice"), Some(ranges), Some(ranges)).status,
            Status::Ok
        );
        assert_eq!(
            subordinate_ids(1001, None, Some(ranges), Some(ranges)).status,
            Status::Ok
        );
        let missing = subordinate_ids(1000, Some("alice"), Some(ranges), None);
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.what.contains("/etc/subgid") && !missing.what.contains("/etc/subuid"));
        assert!(missing.fix.unwrap().ends_with(" alice"));
        assert_eq!(
            subordinate_ids(1002, Some("bob"), Some("bob:1:0\n"), Some(ranges)).status,
            Status::Fail
        );
    }

    const HYBRID_MOUNTINFO: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn cgroup_layouts() {
        assert_eq!(cgroup_layout(true, None, ""), CgroupLayout::Unified);
        assert_eq!(
            cgroup_layout(false, Some("hugetlb cpu\n"), HYBRID_MOUNTINFO),
            CgroupLayout::Hybrid {
                unmounted: vec!["hugetlb".to_owned()]
            }
        );
        assert_eq!(
            cgroup_layout(false, Some("\n"), HYBRID_MOUNTINFO),
            CgroupLayout::Hybrid { unmounted: vec![] }
        );
        assert_eq!(
            cgroup_layout(false, None, HYBRID_MOUNTINFO),
            CgroupLayout::Legacy
        );
        assert_eq!(cgroup_layout(false, None, ""), CgroupLayout::Unknown);
        let fail = cgroups(&CgroupLayout::Hybrid {
            unmounted: vec!["hugetlb".to_owned()],
        });
        assert_eq!(fail.status, Status::Fail);
        assert_eq!(
            fail.fix.as_deref(),
            Some(
                "sudo mkdir -p /sys/fs/cgroup/hugetlb && sudo mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"
            )
        );
        assert_eq!(cgroups(&CgroupLayout::Unified).status, Status::Ok);
    }

    #[test]
    fn tun_findings() {
        assert_eq!(tun(1000, Some(facts(0, 0o666))).status, Status::Ok);
        assert_eq!(tun(0, Some(facts(0, 0o600))).status, Status::Ok);
        let closed = tun(1000, Some(facts(0, 0o600)));
        assert_eq!(closed.status, Status::Fail);
        assert_eq!(closed.fix.as_deref(), Some("sudo chmod 0666 /dev/net/tun"));
        assert_eq!(tun(1000, None).status, Status::Fail);
    }

    #[test]
    fn this_machine_gives_facts() {
        assert!(file_facts(Path::new("/")).is_some());
        assert!(file_facts(Path::new("/nonexistent/x")).is_none());
        // Whatever the answers, reading them must not fail.
        let _ = nf_tables_in_kernel();
        let _ = nf_tables_module_file();
        let _ = cgroup_layout_facts();
    }
}
