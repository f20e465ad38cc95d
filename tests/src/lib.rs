//! Fixtures for shield's end-to-end tests: real network namespaces, real traffic, the real
//! `shieldd`, `shield-hook` and `shieldctl` binaries.
//!
//! Every test built on these fixtures is privileged: it makes network namespaces, veth pairs and
//! processes under other uids. Such a test starts with [`require_root`], which panics with a clear
//! message when the test runs without root, so a missing privilege is a failure and never a
//! silent pass. CI runs the whole suite as root.
//!
//! The pieces:
//! - [`bins`]: where the workspace's binaries are (the target directory of the running test),
//!   with a staleness check against their sources.
//! - [`netns`]: [`netns::NsProcess`] (a `sleep` that holds a fresh network namespace, rootful or
//!   rootless) and [`netns::TestNet`] (a "container" and a "peer" namespace joined by a veth pair,
//!   with TCP and UDP echo listeners in the peer).
//! - [`probe`]: a blocking TCP connect or a UDP round trip run *inside* a namespace by the
//!   `probe` helper binary, with its outcome and the time the connect took; and a held TCP
//!   connection that reports when an established flow breaks.
//! - [`daemon`]: the real `shieldd` on temporary XDG directories, optionally as another uid,
//!   stopped with SIGTERM, or killed and restarted on the same directories.
//! - [`hook`]: the real `shield-hook` with an OCI state on stdin: exit status, stderr, wall time.
//! - [`nft`]: the independent oracle, `nft -j list table inet shield` run inside a namespace.
//! - [`control`]: attach/release through the hook, `shieldctl state`/`ps`/`logs` readers and
//!   traffic assertions for the live-control and restart tests.
//! - [`dns`]: a real DNS upstream (`dnsmasq` on loopback) with fixed answers, for domain allows.
//!
//! Traffic only ever goes to loopback and to the namespaces a fixture made.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures: a setup that fails must fail the test loudly"
)]

pub mod bins;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod hook;
pub mod netns;
pub mod nft;
pub mod podman;
pub mod probe;

use std::time::{Duration, Instant};

/// Panics unless the process runs as root (euid 0).
///
/// Privileged tests call this first. A privileged test that returned early without root would be
/// reported as passed; this makes it fail with an explanation instead.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root (network namespaces, veth pairs, processes as other uids): \
             run the suite as root, as CI does (see .ci/run)"
        );
    }
}

/// Polls `f` every few milliseconds until it returns `Some`, or panics after `timeout` with
/// `what` in the message.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A container id in podman's format (64 lowercase hex digits), different on every call.
pub fn fresh_container_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(64);
    for part in 0..4u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(part);
        h.write_u32(std::process::id());
        id.push_str(&format!("{:016x}", h.finish()));
    }
    id
}

/// Percentile (nearest rank) of sorted samples; `p` in 0..=100.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let n = sorted.len() as f64;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rank is within 1..=len"
    )]
    let rank = ((p / 100.0 * n).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(100));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(198));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(200));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
    }

    #[test]
    fn container_ids_look_like_podman_ids() {
        let a = fresh_container_id();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, fresh_container_id());
    }
}
