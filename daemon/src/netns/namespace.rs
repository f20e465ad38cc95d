//! Opening a container's network namespace and finding the user namespace that owns it.
//!
//! Daemon side, before the helper runs. Opening `/proc/PID/ns/net` pins the namespace: from then
//! on the fd refers to it even if the process exits and its pid is reused, so nothing later can be
//! redirected to another process's namespace. The owning user namespace comes from the netns fd
//! itself (`NS_GET_USERNS`), never from `/proc/PID/ns/user`: podman `--userns=keep-id` nests
//! user namespaces, and the process's own one is then not the one that owns its netns.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::NetnsError;

/// The identity of a namespace: device and inode of its nsfs file (what `ls -L -i` shows).
///
/// Two namespace fds refer to the same namespace exactly when both fields are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NamespaceId {
    /// `st_dev` of the nsfs file.
    pub dev: u64,
    /// `st_ino` of the nsfs file: the number in `net:[4026532283]`.
    pub ino: u64,
}

impl NamespaceId {
    /// The identity of the namespace behind an open namespace file.
    pub fn of_fd(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let stat = nix::sys::stat::fstat(fd)?;
        Ok(Self {
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }

    /// The identity of the namespace a path such as `/proc/self/ns/net` refers to.
    pub fn of_path(path: impl AsRef<Path>) -> io::Result<Self> {
        let meta = fs::metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl fmt::Display for NamespaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] (dev {})", self.ino, self.dev)
    }
}

/// A container's network namespace, pinned by an open fd, and the user namespace to enter
/// before it (`None` when that is the daemon's own, i.e. a rootful container of a root daemon).
#[derive(Debug)]
pub struct ContainerNamespace {
    what: String,
    netns: OwnedFd,
    netns_id: NamespaceId,
    user: Option<OwnedFd>,
}

impl ContainerNamespace {
    /// Opens the network namespace of process `pid` at once, and its owning user namespace.
    ///
    /// Call it while the pid is known to be the container's (the hook is running). Afterwards
    /// pid reuse cannot redirect anything: the namespaces are held by fd.
    pub fn open(pid: u32) -> Result<Self, NetnsError> {
        let path = format!("/proc/{pid}/ns/net");
        let netns = match File::open(&path) {
            Ok(file) => OwnedFd::from(file),
            Err(e) => {
                return Err(match e.raw_os_error() {
                    // ESRCH: the process died between the path lookup and the open; ENOENT also
                    // covers a zombie, whose namespaces are already released.
                    Some(libc::ENOENT | libc::ESRCH) => NetnsError::NoSuchProcess { pid },
                    Some(libc::EACCES | libc::EPERM) => NetnsError::PermissionDenied { pid },
                    _ => NetnsError::Namespace {
                        what: path,
                        source: e,
                    },
                });
            }
        };
        Self::from_netns_fd(netns, path)
    }

    /// Wraps an already open network namespace file (e.g. from `/run/netns/NAME`), `what`
    /// naming it in error messages.
    pub fn from_netns_fd(netns: OwnedFd, what: impl Into<String>) -> Result<Self, NetnsError> {
        let what = what.into();
        match ns_ioctl(netns.as_fd(), libc::NS_GET_NSTYPE) {
            Ok(nstype) if nstype == libc::CLONE_NEWNET => {}
            // ENOTTY: not an nsfs file at all; another type: some other namespace.
            Ok(_) => return Err(NetnsError::NotANetworkNamespace { what }),
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                return Err(NetnsError::NotANetworkNamespace { what });
            }
            Err(source) => return Err(NetnsError::Namespace { what, source }),
        }
        let netns_id =
            NamespaceId::of_fd(netns.as_fd()).map_err(|source| NetnsError::Namespace {
                what: what.clone(),
                source,
            })?;
        let owner = owning_user_namespace(netns.as_fd()).map_err(|source| {
            NetnsError::OwningUserNamespace {
                what: what.clone(),
                source,
            }
        })?;
        let owner_id =
            NamespaceId::of_fd(owner.as_fd()).map_err(|source| NetnsError::Namespace {
                what: format!("the user namespace owning {what}"),
                source,
            })?;
        let own_id =
            NamespaceId::of_path("/proc/self/ns/user").map_err(|source| NetnsError::Namespace {
                what: "/proc/self/ns/user".to_owned(),
                source,
            })?;
        // Entering one's own user namespace is an error (EINVAL), and unneeded: we already hold
        // whatever capabilities it grants.
        let user = (owner_id != own_id).then_some(owner);
        Ok(Self {
            what,
            netns,
            netns_id,
            user,
        })
    }

    /// The identity of the pinned network namespace.
    pub fn netns_id(&self) -> NamespaceId {
        self.netns_id
    }

    /// The pinned network namespace.
    pub fn netns(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }

    /// The user namespace to enter first, or `None` when it is the daemon's own.
    pub fn user(&self) -> Option<BorrowedFd<'_>> {
        self.user.as_ref().map(AsFd::as_fd)
    }

    /// What was opened (e.g. `/proc/1234/ns/net`), for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }
}

/// `NS_GET_USERNS`: a new fd for the user namespace that owns the namespace `ns`.
fn owning_user_namespace(ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let raw = ns_ioctl(ns, libc::NS_GET_USERNS)?;
    adopt_new_fd(raw)
}

/// Issues one of the argument-less nsfs ioctls (`NS_GET_*`) and returns its non-negative result.
#[allow(
    unsafe_code,
    reason = "the nsfs ioctls have no safe wrapper in nix or std"
)]
fn ns_ioctl(ns: BorrowedFd<'_>, request: libc::Ioctl) -> io::Result<libc::c_int> {
    // SAFETY: `ns` is a live fd for the whole call (borrowed). The NS_GET_NSTYPE and
    // NS_GET_USERNS requests take no argument, so the kernel reads and writes no memory of ours;
    // on an fd that is not an nsfs file they fail with ENOTTY.
    let ret = unsafe { libc::ioctl(ns.as_raw_fd(), request) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of the fd that `NS_GET_USERNS` just created.
#[allow(
    unsafe_code,
    reason = "turning a kernel-returned fd into an OwnedFd needs from_raw_fd"
)]
fn adopt_new_fd(raw: libc::c_int) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `raw` was just returned by a successful NS_GET_USERNS, which installs a new
    // (O_CLOEXEC) fd in our table; nothing else knows it, so we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
