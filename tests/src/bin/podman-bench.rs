//! `podman-bench`: what shield adds to a rootless container start. Wall time of
//! `podman run --rm IMAGE true` as the test user, with shield (the arguments of
//! `shieldctl prepare NAME --json`: annotations, cap drops, resolv.conf mount; the hooks attach
//! the container through the daemon) against the same command without the annotation (hooks
//! installed, not triggered; the same cap drops), alternating, in one run. Run as root on a
//! machine prepared by `tests/podman/prepare-machine.sh`, on release builds: `bench/podman.sh`
//! (see `docs/benchmarks.md`).
//!
//! Usage: `podman-bench [--count N] [--warmup N] [--profiles A:B]`.
//!
//! Diagnostic rows: the daemon's own time per attach (its `micros` of "container attached", from
//! its info log), and `shieldctl prepare --json` (not part of the `podman run` figure).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program: prints its table, fails loudly"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use shield_tests::daemon::Daemon;
use shield_tests::netns::Owner;
use shield_tests::podman::{IMAGE, PODMAN_HOME, user_command};
use shield_tests::{bins, percentile};

/// What the daemon logs (at info) once per attach, with its own time in `micros=`.
const ATTACHED: &str = "container attached";

struct Args {
    count: usize,
    warmup: usize,
    profiles: String,
}

fn args() -> Args {
    let mut a = Args {
        count: 30,
        warmup: 3,
        profiles: "dev-standard".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--count" => a.count = it.next().and_then(|v| v.parse().ok()).expect("--count N"),
            "--warmup" => a.warmup = it.next().and_then(|v| v.parse().ok()).expect("--warmup N"),
            "--profiles" => a.profiles = it.next().expect("--profiles A:B"),
            _ => {
                eprintln!("usage: podman-bench [--count N] [--warmup N] [--profiles A:B]");
                std::process::exit(2);
            }
        }
    }
    assert!(a.count > 0, "--count must be positive");
    a
}

/// The daemon as the test user and that user's podman pointed at the daemon's XDG directories
/// (as in `tests/tests/podman.rs`), shield's hooks installed by `shieldctl setup --user`.
struct Bench {
    user: Owner,
    daemon: Daemon,
}

impl Bench {
    fn root(&self) -> PathBuf {
        self.daemon.dir().to_path_buf()
    }

    fn shieldctl(&self, args: &[&str]) -> Output {
        let mut cmd = user_command(self.daemon.bin(bins::SHIELDCTL), self.user, &self.root());
        cmd.arg("--socket").arg(self.daemon.socket()).args(args);
        let out = cmd.output().expect("run shieldctl");
        assert_success(&out, &format!("shieldctl {args:?}"));
        out
    }

    fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = user_command("podman", self.user, &self.root());
        cmd.args(args);
        cmd.output().expect("run podman")
    }

    /// `podman run --rm ARGS… IMAGE true`, timed from spawn to exit.
    fn run(&self, args: &[String]) -> Duration {
        let mut all: Vec<&str> = vec!["run", "--rm"];
        all.extend(args.iter().map(String::as_str));
        all.extend_from_slice(&[IMAGE, "true"]);
        let start = Instant::now();
        let out = self.podman(&all);
        let elapsed = start.elapsed();
        assert_success(&out, &format!("podman {all:?}"));
        elapsed
    }

    /// The daemon's `micros` of every attach logged so far.
    fn attach_micros(&self) -> Vec<u64> {
        self.daemon
            .log()
            .lines()
            .filter(|l| l.contains(ATTACHED))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("micros="))
                    .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            })
            .collect()
    }
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn row(name: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let mean = total / u32::try_from(samples.len()).expect("count fits u32");
    format!(
        "| {name:<52} | {:>3} | {:>6} | {:>6} | {:>6} | {:>6} | {:>6} |",
        samples.len(),
        ms(samples[0]),
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 90.0)),
        ms(samples[samples.len() - 1]),
        ms(mean),
    )
}

fn main() {
    shield_tests::require_root();
    let a = args();
    let user = Owner::test_user();
    assert!(
        Path::new(PODMAN_HOME).join("storage.conf").exists()
            && Path::new(&format!("/run/user/{}", user.uid())).is_dir(),
        "the machine is not prepared for rootless podman: run `bash tests/podman/prepare-machine.sh`"
    );
    // Info, not debug: the figure is for the level a user runs at; "container attached" is there.
    let daemon = Daemon::builder().owner(user).log_level("info").start();
    let bench = Bench { user, daemon };
    for dir in ["data", "tmp"] {
        let p = bench.root().join(dir);
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        user.chown(&p);
    }
    assert!(
        bench.podman(&["image", "exists", IMAGE]).status.success(),
        "image {IMAGE} is missing: run `bash tests/podman/prepare-machine.sh`"
    );
    bench.shieldctl(&["setup", "--user"]);

    let plain_args: Vec<String> = ["--cap-drop", "NET_ADMIN", "--cap-drop", "NET_RAW"]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    let mut with_times = Vec::with_capacity(a.count);
    let mut without_times = Vec::with_capacity(a.count);
    let mut prepare_times = Vec::with_capacity(a.count);
    let mut shield_args_shown = Vec::new();
    // Per round, shielded minus plain (adjacent runs): load drift cancels within a pair.
    let mut paired_ms: Vec<f64> = Vec::with_capacity(a.count);
    for i in 0..a.warmup + a.count {
        let keep = i >= a.warmup;
        // Alternating which goes first, so that drift in machine load hits both equally.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut round = [Duration::ZERO; 2];
        for shielded in order {
            if !shielded {
                let t = bench.run(&plain_args);
                round[1] = t;
                if keep {
                    without_times.push(t);
                }
                continue;
            }
            let name = format!("shield-bench-{}-{i}", std::process::id());
            let start = Instant::now();
            let out = bench.shieldctl(&["--json", "prepare", &name, "--profiles", &a.profiles]);
            let prepare = start.elapsed();
            let doc: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("prepare --json");
            let shield_args: Vec<String> = doc["args"]
                .as_array()
                .unwrap_or_else(|| panic!("prepare printed no args: {doc}"))
                .iter()
                .map(|v| v.as_str().expect("string arg").to_string())
                .collect();
            assert!(
                !shield_args.iter().any(|s| s.starts_with("--network")),
                "no loopback_ports, so no --network expected: {shield_args:?}"
            );
            let before = bench.attach_micros().len();
            let t = bench.run(&shield_args);
            assert_eq!(
                bench.attach_micros().len(),
                before + 1,
                "the shielded run must attach exactly once: {}",
                bench.daemon.log()
            );
            round[0] = t;
            if keep {
                with_times.push(t);
                prepare_times.push(prepare);
            }
            shield_args_shown = shield_args;
        }
        if keep {
            paired_ms.push((round[0].as_secs_f64() - round[1].as_secs_f64()) * 1e3);
        }
    }
    // Every shielded run attached once (asserted above); the kept ones are the last `count`.
    let all = bench.attach_micros();
    let mut daemon_times: Vec<Duration> = all[all.len() - a.count..]
        .iter()
        .map(|&us| Duration::from_micros(us))
        .collect();

    let podman_version = bench.podman(&["--version"]);
    println!(
        "podman run overhead: {} runs per method ({} warm-up each, discarded), rootless as {} \
         (uid {}), {}, profiles {}, {} CPUs",
        a.count,
        a.warmup,
        shield_tests::netns::TEST_USER,
        user.uid(),
        String::from_utf8_lossy(&podman_version.stdout).trim(),
        a.profiles,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    println!(
        "shield arguments (last run): {}",
        shield_args_shown.join(" ")
    );
    println!();
    println!(
        "| {:<52} | {:>3} | {:>6} | {:>6} | {:>6} | {:>6} | {:>6} |",
        "wall time (ms)", "n", "min", "p50", "p90", "max", "mean"
    );
    println!("|{}|----:|{}", "-".repeat(54), "-------:|".repeat(5));
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        percentile(v, 50.0)
    };
    let with_p50 = p50(&mut with_times);
    let without_p50 = p50(&mut without_times);
    println!(
        "{}",
        row(
            "podman run --rm, shielded (prepare args, hooks)",
            &mut with_times
        )
    );
    println!(
        "{}",
        row(
            "podman run --rm --cap-drop NET_ADMIN,NET_RAW (plain)",
            &mut without_times
        )
    );
    println!(
        "{}",
        row(
            "shieldd attach (its log's micros, inside the hook)",
            &mut daemon_times
        )
    );
    println!(
        "{}",
        row(
            "shieldctl prepare --json (before podman, not above)",
            &mut prepare_times
        )
    );
    println!();
    let overhead_ms = (with_p50.as_secs_f64() - without_p50.as_secs_f64()) * 1e3;
    println!(
        "median overhead (p50 shielded - p50 plain): {overhead_ms:.1} ms (target <= 5 ms: {})",
        if overhead_ms <= 5.0 { "met" } else { "missed" }
    );
    paired_ms.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "rank is within 1..=len"
        )]
        let r = ((p / 100.0 * paired_ms.len() as f64).ceil() as usize).clamp(1, paired_ms.len());
        paired_ms[r - 1]
    };
    println!(
        "paired (shielded - plain, same round): p10 {:.1} ms, p50 {:.1} ms, p90 {:.1} ms",
        rank(10.0),
        rank(50.0),
        rank(90.0)
    );
    println!("binaries from {}", bins::describe());
    bench.daemon.stop();
}
