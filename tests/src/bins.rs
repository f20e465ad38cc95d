//! Where the workspace's binaries are.
//!
//! Cargo builds the binaries of the package under test before its integration tests, but not the
//! binaries of other workspace packages, and `CARGO_BIN_EXE_*` exists only for the former. So the
//! fixtures look for `shieldd`, `shield-hook` and `shieldctl` in the profile directory of the
//! running executable (`target/debug` for `cargo test`, `target/release` for the benchmark),
//! which is where `cargo build --workspace --bins` put them. `SHIELD_BIN_DIR` overrides it, and
//! `SHIELD_CLIENT_BIN_DIR` overrides it for `shield-hook` and `shieldctl` alone (the benchmarks
//! point it at the static builds of `scripts/build-static-clients.sh`).
//!
//! A binary older than any source file of its crate (or of `proto/`) would silently test old code:
//! [`bin`] refuses it unless `SHIELD_TESTS_ALLOW_STALE=1`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The daemon binary.
pub const SHIELDD: &str = "shieldd";
/// The OCI hook binary.
pub const SHIELD_HOOK: &str = "shield-hook";
/// The CLI binary.
pub const SHIELDCTL: &str = "shieldctl";
/// The probe helper of this crate (TCP/UDP probes and echo listeners).
pub const PROBE: &str = "probe";

/// The directory that holds the binaries: `SHIELD_BIN_DIR`, or the profile directory of the
/// current executable (`…/target/debug` when run from `…/target/debug/deps/test-hash`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHIELD_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("executable has a parent").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The workspace root (this crate's parent directory, fixed at compile time).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The crate directories whose sources go into a binary.
fn source_dirs(name: &str) -> &'static [&'static str] {
    match name {
        SHIELDD => &["daemon", "proto"],
        SHIELD_HOOK => &["hook", "proto"],
        SHIELDCTL => &["client", "proto"],
        _ => &[],
    }
}

fn newest_mtime(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // A crate's own tests, examples and benches do not go into its binary (and editing them
        // does not make cargo rebuild it).
        if ["target", "tests", "examples", "benches"].contains(&name) || name.starts_with('.') {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                newest_mtime(&entry.path(), newest);
            }
        }
    } else if let Ok(mtime) = meta.modified()
        && newest.as_ref().is_none_or(|(t, _)| mtime > *t)
    {
        *newest = Some((mtime, path.to_path_buf()));
    }
}

/// The directory that holds binary `name`: [`bin_dir`], or `SHIELD_CLIENT_BIN_DIR` for the hook
/// and the CLI when it is set.
pub fn dir_of(name: &str) -> PathBuf {
    match std::env::var_os("SHIELD_CLIENT_BIN_DIR") {
        Some(dir) if name == SHIELD_HOOK || name == SHIELDCTL => PathBuf::from(dir),
        _ => bin_dir(),
    }
}

/// The absolute path of the workspace binary `name`; panics with the command to run when it is
/// missing or older than its sources.
pub fn bin(name: &str) -> PathBuf {
    let path = dir_of(name).join(name);
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
        panic!(
            "binary {} not found ({e}): build the workspace binaries first with \
             `cargo build --workspace --bins` (add --release for the benchmark), \
             with the same CARGO_TARGET_DIR, or set SHIELD_BIN_DIR",
            path.display()
        )
    });
    if std::env::var_os("SHIELD_TESTS_ALLOW_STALE").is_none()
        && std::env::var_os("SHIELD_BIN_DIR").is_none()
    {
        let built = meta.modified().expect("mtime");
        let root = workspace_root();
        let mut newest = None;
        for dir in source_dirs(name) {
            newest_mtime(&root.join(dir), &mut newest);
        }
        if let Some((mtime, src)) = newest
            && mtime > built
        {
            panic!(
                "binary {} is older than {}: rebuild with `cargo build --workspace --bins` \
                 (or set SHIELD_TESTS_ALLOW_STALE=1)",
                path.display(),
                src.display()
            );
        }
    }
    path
}

/// Where the binaries come from, for a benchmark's report.
pub fn describe() -> String {
    let (all, clients) = (bin_dir(), dir_of(SHIELDCTL));
    if all == clients {
        all.display().to_string()
    } else {
        format!(
            "{} (shield-hook, shieldctl: {})",
            all.display(),
            clients.display()
        )
    }
}

/// A copy of binary `name` that any uid can execute (a fresh 0755 directory under the system
/// temporary directory; the build directory may sit under a home that others cannot enter).
/// Keep the returned directory alive while the copy is in use.
pub fn public_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("shield-bin-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join(name);
    place(name, &path);
    (dir, path)
}

/// Puts binary `name` at `path`: a hard link when it can be one, else a copy.
///
/// A copy is written through a file descriptor, and a test thread that forks meanwhile (every
/// `Command::spawn`) holds that descriptor until its child execs: running the copy then fails
/// with ETXTBSY ("text file busy"). A hard link never opens the file for writing.
pub fn place(name: &str, path: &std::path::Path) {
    if std::fs::hard_link(bin(name), path).is_err() {
        std::fs::copy(bin(name), path).expect("copy binary");
    }
}
