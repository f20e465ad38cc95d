//! Rootless podman as the test user, as the podman end-to-end tests and the podman benchmark run
//! it: the machine is prepared by `tests/podman/prepare-machine.sh` (as root; `.ci/run` does it).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::netns::Owner;

/// The test user's podman home, made by `tests/podman/prepare-machine.sh`.
pub const PODMAN_HOME: &str = "/var/lib/shieldtest-podman";

/// The image `prepare-machine.sh` builds from busybox-static.
pub const IMAGE: &str = "localhost/shieldtest:latest";

/// `program` run as `user` in the environment of that user's podman and shieldctl: the XDG
/// directories of the daemon whose directory is `root` (so that shieldctl reads the daemon's
/// config.toml and `setup --user` writes a fresh containers.conf), podman's storage in
/// [`PODMAN_HOME`], nothing inherited from the caller.
pub fn user_command(program: impl AsRef<OsStr>, user: Owner, root: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", PODMAN_HOME)
        .env("XDG_RUNTIME_DIR", format!("/run/user/{}", user.uid()))
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_DATA_HOME", root.join("data"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env(
            "CONTAINERS_STORAGE_CONF",
            Path::new(PODMAN_HOME).join("storage.conf"),
        )
        .env("TMPDIR", root.join("tmp"))
        .current_dir(root)
        .stdin(Stdio::null());
    user.apply(&mut cmd);
    cmd
}
