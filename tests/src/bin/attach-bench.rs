//! `attach-bench`: attach latency of `shield-hook createRuntime` against the baseline of
//! applying the same rendered ruleset by process (`nsenter --net=/proc/PID/ns/net nft -f FILE`),
//! each into fresh network namespaces, interleaved in one run. Run as root, on release builds:
//! `bench/attach.sh` (see `docs/benchmarks.md`).
//!
//! Usage: `attach-bench [--count N] [--warmup N] [--profiles A:B] [--rootless] [--log LEVEL]
//! [--keep-log PATH]` (`--log` is the daemon's `SHIELD_LOG`, default `info`; `--keep-log` copies
//! the daemon's log to PATH at the end, e.g. for its `attach stages` lines at `shieldd=debug`).
//!
//! Two more rows split the figure: the `poststop` hook that releases each container after its
//! attach, and a `poststop` for an id the daemon never saw (hook process start, connect, one gRPC
//! round trip, nothing else: the floor under every hook call).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program: prints its table, fails loudly"
)]

use std::time::{Duration, Instant};

use shield_tests::daemon::Daemon;
use shield_tests::hook::{Hook, Stage, oci_state};
use shield_tests::netns::{NsProcess, Owner};
use shield_tests::{bins, percentile};

/// Representative user profile: IPv4 and IPv6 addresses and CIDRs (documentation ranges).
const BENCH_PROFILE: &str = "# attach benchmark\n\
192.0.2.1\n192.0.2.2\n192.0.2.3\n192.0.2.64/26\n198.51.100.0/24\n203.0.113.7\n203.0.113.8\n\
203.0.113.128/25\n100.64.0.1\n10.1.2.3\n\
2001:db8::1\n2001:db8::2\n2001:db8:1::/48\n2001:db8:2::/64\n2001:db8:3::7\n\
example.com\nregistry.example.org\n";

struct Args {
    count: usize,
    warmup: usize,
    profiles: String,
    rootless: bool,
    log: String,
    keep_log: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        count: 200,
        warmup: 10,
        profiles: "dev-standard:bench".into(),
        rootless: false,
        log: "info".into(),
        keep_log: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--count" => a.count = it.next().and_then(|v| v.parse().ok()).expect("--count N"),
            "--warmup" => a.warmup = it.next().and_then(|v| v.parse().ok()).expect("--warmup N"),
            "--profiles" => a.profiles = it.next().expect("--profiles A:B"),
            "--rootless" => a.rootless = true,
            "--log" => a.log = it.next().expect("--log LEVEL"),
            "--keep-log" => a.keep_log = Some(it.next().expect("--keep-log PATH").into()),
            _ => {
                eprintln!(
                    "usage: attach-bench [--count N] [--warmup N] [--profiles A:B] [--rootless] [--log LEVEL] [--keep-log PATH]"
                );
                std::process::exit(2);
            }
        }
    }
    assert!(a.count > 0, "--count must be positive");
    a
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn row(name: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let mean = total / u32::try_from(samples.len()).expect("count fits u32");
    format!(
        "| {name:<48} | {:>6} | {:>6} | {:>6} | {:>6} | {:>6} |",
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 90.0)),
        ms(percentile(samples, 99.0)),
        ms(samples[samples.len() - 1]),
        ms(mean),
    )
}

fn main() {
    shield_tests::require_root();
    let a = args();
    let owner = if a.rootless {
        Owner::test_user()
    } else {
        Owner::Root
    };
    let daemon = Daemon::builder()
        .owner(owner)
        .profile("bench", BENCH_PROFILE)
        .log_level(&a.log)
        .start();

    // The baseline applies exactly what the daemon renders for these profiles.
    let names: Vec<&str> = a.profiles.split(':').collect();
    let mut preview_args = vec!["preview", "--profiles"];
    preview_args.extend(&names);
    let ruleset = daemon.ctl(&preview_args);
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), &ruleset).expect("write ruleset");

    let hook = Hook::new(Stage::CreateRuntime, daemon.socket())
        .bin(&daemon.bin(bins::SHIELD_HOOK))
        .runtime_dir(&daemon.runtime_dir())
        .as_owner(owner, None);

    let mut poststop_times = Vec::with_capacity(a.count);
    let mut floor_times = Vec::with_capacity(a.count);
    let mut attach = |ns: &NsProcess, keep: bool| -> Duration {
        let id = shield_tests::fresh_container_id();
        let annotations = [
            ("shield.profiles", a.profiles.as_str()),
            ("shield.name", "bench"),
        ];
        let run = hook
            .clone()
            .stdin(oci_state(&id, Some(ns.pid()), &annotations))
            .run();
        run.assert_success();
        // Release it, as a container stop would (timed separately).
        let stop = daemon
            .hook(Stage::Poststop, None)
            .stdin(oci_state(&id, None, &annotations))
            .run();
        stop.assert_success();
        let floor = daemon
            .hook(Stage::Poststop, None)
            .stdin(oci_state(&shield_tests::fresh_container_id(), None, &[]))
            .run();
        floor.assert_success();
        if keep {
            poststop_times.push(stop.elapsed);
            floor_times.push(floor.elapsed);
        }
        run.elapsed
    };
    let baseline = |ns: &NsProcess| -> Duration {
        let start = Instant::now();
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.netns_path().display()))
            .args(["nft", "-f"])
            .arg(file.path())
            .output()
            .expect("run nsenter nft");
        let elapsed = start.elapsed();
        assert!(
            out.status.success(),
            "nft -f of the preview failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    };

    let mut hook_times = Vec::with_capacity(a.count);
    let mut nft_times = Vec::with_capacity(a.count);
    for i in 0..a.warmup + a.count {
        // Interleaved, alternating which goes first; a fresh namespace for every sample.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_hook in order {
            let ns = NsProcess::spawn(owner);
            let keep = i >= a.warmup;
            let t = if is_hook {
                attach(&ns, keep)
            } else {
                baseline(&ns)
            };
            drop(ns);
            if keep {
                if is_hook {
                    hook_times.push(t);
                } else {
                    nft_times.push(t);
                }
            }
        }
    }

    let lines = ruleset.lines().filter(|l| !l.trim().is_empty()).count();
    println!(
        "attach latency: {} fresh network namespaces per method ({} warm-up each, discarded), {}, \
         profiles {} ({lines}-line ruleset), {} CPUs",
        a.count,
        a.warmup,
        if a.rootless { "rootless" } else { "rootful" },
        a.profiles,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    println!();
    println!(
        "| {:<48} | {:>6} | {:>6} | {:>6} | {:>6} | {:>6} |",
        "method (wall time, ms)", "p50", "p90", "p99", "max", "mean"
    );
    println!("|{}|{}", "-".repeat(50), "-------:|".repeat(5));
    println!(
        "{}",
        row(
            "shield-hook createRuntime (→ shieldd, verified)",
            &mut hook_times
        )
    );
    println!(
        "{}",
        row(
            "nsenter --net=/proc/PID/ns/net nft -f RULESET",
            &mut nft_times
        )
    );
    println!(
        "{}",
        row(
            "shield-hook poststop (release the container)",
            &mut poststop_times
        )
    );
    println!(
        "{}",
        row(
            "shield-hook poststop, unknown id (round trip)",
            &mut floor_times
        )
    );
    println!("binaries from {}", bins::describe());
    if let Some(path) = &a.keep_log {
        std::fs::write(path, daemon.log()).expect("write --keep-log");
    }
    daemon.stop();
}
