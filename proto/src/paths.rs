//! Where the daemon's socket lives, shared by the daemon and its clients.

use std::path::PathBuf;

/// Socket file name inside the socket directory.
pub const SOCKET_FILE: &str = "shieldd.sock";

/// The directory that holds the daemon's socket: `/run/shield` for root,
/// `$XDG_RUNTIME_DIR/shield` for everyone else (`None` when `XDG_RUNTIME_DIR` is unset or not
/// absolute).
pub fn default_socket_dir() -> Option<PathBuf> {
    if effective_uid() == 0 {
        return Some(PathBuf::from("/run/shield"));
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)?;
    runtime.is_absolute().then(|| runtime.join("shield"))
}

/// The default socket path (see [`default_socket_dir`]).
pub fn default_socket_path() -> Option<PathBuf> {
    default_socket_dir().map(|dir| dir.join(SOCKET_FILE))
}

/// The effective uid: it decides which daemon this process would be, or talk to.
#[allow(unsafe_code, reason = "geteuid(2) has no safe wrapper in std")]
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}
