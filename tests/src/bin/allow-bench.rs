//! `allow-bench`: latency of a live `allow` of one IPv4 address through `shieldctl` and through
//! the gRPC API (one long-lived client), against the baseline of one process per change
//! (`nsenter --net=/proc/PID/ns/net nft add element inet shield allow_v4 { IP }`), interleaved in
//! one run; then the same with a large allow set, and the bulk load of that set. Run as root, on
//! release builds: `bench/allow.sh` (see `docs/benchmarks.md`, "Live changes (allow)").
//!
//! Usage: `allow-bench [--count N] [--count-big N] [--big-budget SECS] [--warmup N] [--bulk N]
//! [--log LEVEL] [--keep-log PATH]` (defaults 500, 100, 20, 20, 100 000, `info`; `--bulk 0`
//! skips the large-set part; `--log` is the daemon's `SHIELD_LOG`; `--keep-log` copies the
//! daemon's log to PATH at the end, e.g. for its `change stages` lines at `shieldd=debug`).
//!
//! Containers, each in a fresh network namespace made by the benchmark (`unshare --net sleep`):
//! - A, attached through `shield-hook createRuntime` with a one-address profile: takes the
//!   `shieldctl` and API changes; later the bulk load of `--bulk` addresses through the API
//!   (`Allow` calls of 1024 targets), so its large set is live intent (in its state file and change journal);
//! - B, unknown to the daemon, holding the table `shieldctl preview` renders for the same profile
//!   (loaded with `nft -f`): takes the baseline's changes, and the same bulk with one `nft -f`;
//! - C (large-set part only), attached with a profile of the same `--bulk` addresses: a large
//!   kernel set while the daemon's live intent stays small.
//!
//! Phases: near-empty (A and B, `--count` rounds), then the profile set (C and B) and the live
//! set (A and B), each `--count-big` rounds or until `--big-budget` seconds are spent (3 rounds
//! at least). A round is one change by each method, the order rotated every round. Every change
//! adds a new address (`198.18.0.0/15`, every second address, so the daemon never merges two
//! into one range); no packet is ever sent. A fourth, diagnostic method repeats an API allow of
//! an address already allowed: no kernel batch and nothing journalled, so it prices the daemon's
//! work around the kernel and the disk (gRPC, lookup, intent, response).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program: prints its table, fails loudly"
)]

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shield_proto::v1::ChangeRequest;
use shield_proto::v1::shield_client::ShieldClient;
use shield_tests::daemon::Daemon;
use shield_tests::hook::{Stage, oci_state};
use shield_tests::netns::{NsProcess, Owner};
use shield_tests::{bins, percentile};
use tonic::transport::Channel;

/// The container's profile: one address, so the allow set starts (almost) empty.
const BENCH_PROFILE: &str = "# allow benchmark\n203.0.113.7\n";
/// Allowed once at setup; the "repeat" method allows it again (a no-op change).
const REPEAT_TARGET: &str = "203.0.113.99";
/// Most targets one `Allow` call may carry (`ChangeRequest.targets`).
const MAX_TARGETS: usize = 1024;

struct Args {
    count: usize,
    count_big: usize,
    big_budget: Duration,
    warmup: usize,
    bulk: usize,
    log: String,
    keep_log: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        count: 500,
        count_big: 100,
        big_budget: Duration::from_secs(20),
        warmup: 20,
        bulk: 100_000,
        log: "info".into(),
        keep_log: None,
    };
    let mut it = std::env::args().skip(1);
    let number = |it: &mut std::iter::Skip<std::env::Args>, flag: &str| -> usize {
        it.next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} N"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--count" => a.count = number(&mut it, "--count"),
            "--count-big" => a.count_big = number(&mut it, "--count-big"),
            "--big-budget" => {
                a.big_budget = Duration::from_secs(number(&mut it, "--big-budget") as u64);
            }
            "--warmup" => a.warmup = number(&mut it, "--warmup"),
            "--bulk" => a.bulk = number(&mut it, "--bulk"),
            "--log" => a.log = it.next().expect("--log LEVEL"),
            "--keep-log" => a.keep_log = Some(it.next().expect("--keep-log PATH").into()),
            _ => {
                eprintln!(
                    "usage: allow-bench [--count N] [--count-big N] [--big-budget SECS] [--warmup N] [--bulk N] [--log LEVEL] [--keep-log PATH]"
                );
                std::process::exit(2);
            }
        }
    }
    assert!(a.count > 0, "--count must be positive");
    assert!(
        a.bulk == 0 || a.count_big > 0,
        "--count-big must be positive (or --bulk 0)"
    );
    // Per-change addresses: every second address of 198.18.0.0/15 (65 536 of them).
    assert!(
        2 * (3 * a.warmup + a.count + 2 * a.count_big) < 65_536,
        "too many changes for 198.18.0.0/15"
    );
    // Bulk addresses: every second address from 100.64.0.0 (carrier-grade NAT, /10).
    assert!(a.bulk <= 2_000_000, "--bulk at most 2 000 000");
    a
}

/// Every second address from `base`: never adjacent, so never merged into one range.
#[derive(Debug)]
struct Addrs {
    base: u32,
    next: u32,
}

impl Addrs {
    fn new(base: Ipv4Addr) -> Addrs {
        Addrs {
            base: u32::from(base),
            next: 0,
        }
    }

    fn take(&mut self) -> String {
        let a = Ipv4Addr::from(self.base + 2 * self.next);
        self.next += 1;
        a.to_string()
    }
}

/// The four methods of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Ctl,
    Api,
    ApiRepeat,
    Nft,
}

const METHODS: [Method; 4] = [Method::Ctl, Method::Api, Method::ApiRepeat, Method::Nft];

/// Samples of one phase: client wall time per method, and the daemon's own handler time (as the
/// response reports it) for the API methods.
#[derive(Debug, Default)]
struct Phase {
    ctl: Vec<Duration>,
    api: Vec<Duration>,
    api_daemon: Vec<Duration>,
    repeat: Vec<Duration>,
    repeat_daemon: Vec<Duration>,
    nft: Vec<Duration>,
    rounds: usize,
    took: Duration,
}

struct Bench {
    daemon: Daemon,
    rt: tokio::runtime::Runtime,
    client: ShieldClient<Channel>,
    baseline: NsProcess,
    ctl_api_addrs: Addrs,
    nft_addrs: Addrs,
}

impl Bench {
    /// `shieldctl --socket S allow ID IP`, spawn to exit.
    fn ctl(&mut self, id: &str) -> Duration {
        let ip = self.ctl_api_addrs.take();
        let mut cmd = self.daemon.ctl_command(&["allow", id, &ip]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let out = cmd.output().expect("run shieldctl");
        let elapsed = start.elapsed();
        assert!(
            out.status.success(),
            "shieldctl allow {ip} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    }

    /// One `Allow` call: client wall time, the daemon's handler time, targets changed.
    fn api_call(&mut self, id: &str, targets: Vec<String>) -> (Duration, Duration, usize) {
        let request = ChangeRequest {
            container: id.to_owned(),
            targets,
        };
        let client = &mut self.client;
        let start = Instant::now();
        let response = self
            .rt
            .block_on(client.allow(request))
            .unwrap_or_else(|status| panic!("Allow failed: {status}"))
            .into_inner();
        let elapsed = start.elapsed();
        let changed = response.changes.iter().filter(|c| c.changed).count();
        (
            elapsed,
            Duration::from_micros(response.apply_micros),
            changed,
        )
    }

    fn api(&mut self, id: &str) -> (Duration, Duration) {
        let ip = self.ctl_api_addrs.take();
        let (wall, daemon, changed) = self.api_call(id, vec![ip.clone()]);
        assert_eq!(changed, 1, "Allow {ip}: a new address must change the set");
        (wall, daemon)
    }

    fn repeat(&mut self, id: &str) -> (Duration, Duration) {
        let (wall, daemon, changed) = self.api_call(id, vec![REPEAT_TARGET.to_owned()]);
        assert_eq!(changed, 0, "a repeated allow must be a no-op");
        (wall, daemon)
    }

    /// `nsenter --net=/proc/PID/ns/net nft add element inet shield allow_v4 { IP }` into the
    /// baseline container, spawn to exit.
    fn nft(&mut self) -> Duration {
        let ip = self.nft_addrs.take();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.baseline.netns_path().display()))
            .args(["nft", "add", "element", "inet", "shield", "allow_v4"])
            .arg(format!("{{ {ip} }}"))
            .stdin(Stdio::null());
        let start = Instant::now();
        let out = cmd.output().expect("run nsenter nft");
        let elapsed = start.elapsed();
        assert!(
            out.status.success(),
            "nft add element {ip} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    }

    /// `warmup + count` rounds of the four methods (the daemon's on container `id`, the
    /// baseline's on container B), the order rotated every round so that each method takes each
    /// position equally often; warm-up rounds are discarded. With a `budget`, the phase ends
    /// early once the measured rounds have taken that long (after 3 rounds at least).
    fn phase(&mut self, id: &str, warmup: usize, count: usize, budget: Option<Duration>) -> Phase {
        let started = Instant::now();
        let mut measured_since = started;
        let mut p = Phase::default();
        for i in 0..warmup + count {
            let keep = i >= warmup;
            if i == warmup {
                measured_since = Instant::now();
            }
            for k in 0..METHODS.len() {
                match METHODS[(i + k) % METHODS.len()] {
                    Method::Ctl => {
                        let t = self.ctl(id);
                        if keep {
                            p.ctl.push(t);
                        }
                    }
                    Method::Api => {
                        let (t, d) = self.api(id);
                        if keep {
                            p.api.push(t);
                            p.api_daemon.push(d);
                        }
                    }
                    Method::ApiRepeat => {
                        let (t, d) = self.repeat(id);
                        if keep {
                            p.repeat.push(t);
                            p.repeat_daemon.push(d);
                        }
                    }
                    Method::Nft => {
                        let t = self.nft();
                        if keep {
                            p.nft.push(t);
                        }
                    }
                }
            }
            if keep {
                p.rounds += 1;
                if budget.is_some_and(|b| p.rounds >= 3 && measured_since.elapsed() >= b) {
                    break;
                }
            }
        }
        p.took = started.elapsed();
        p
    }

    /// Attaches a container in a fresh namespace through `shield-hook createRuntime` with
    /// profile `profile`, then allows [`REPEAT_TARGET`] on it; returns the holder, the id and the
    /// hook's wall time.
    fn attach(&mut self, profile: &str) -> (NsProcess, String, Duration) {
        let ns = NsProcess::spawn(Owner::Root);
        let id = shield_tests::fresh_container_id();
        let run = self
            .daemon
            .hook(Stage::CreateRuntime, Some(ns.pid()))
            .stdin(oci_state(&id, Some(ns.pid()), &annotations(profile)))
            .timeout("120s")
            .run();
        run.assert_success();
        let (_, _, changed) = self.api_call(&id, vec![REPEAT_TARGET.to_owned()]);
        assert_eq!(changed, 1, "first allow of {REPEAT_TARGET}");
        (ns, id, run.elapsed)
    }

    fn release(&self, id: &str, profile: &str) {
        self.daemon
            .hook(Stage::Poststop, None)
            .stdin(oci_state(id, None, &annotations(profile)))
            .run()
            .assert_success();
    }
}

fn annotations(profile: &str) -> [(&'static str, &str); 2] {
    [("shield.profiles", profile), ("shield.name", "allow-bench")]
}

/// Elements of `allow_v4` in a namespace, as `nft -j` lists them.
fn allow_v4_len(ns: &NsProcess) -> usize {
    shield_tests::nft::list_table(ns)
        .expect("table inet shield")
        .set("allow_v4")
        .len()
}

/// The bulk addresses: every second address from 100.64.0.0.
fn bulk_addrs(n: usize) -> Vec<String> {
    let mut addrs = Addrs::new(Ipv4Addr::new(100, 64, 0, 0));
    (0..n).map(|_| addrs.take()).collect()
}

/// What the bulk load took.
#[derive(Debug)]
struct Bulk {
    n: usize,
    calls: Vec<Duration>,
    api_total: Duration,
    nft_total: Duration,
}

/// Loads `n` addresses into container `id` through the API (chunks of 1024, one `Allow` call
/// each, back to back) and the same into container B with one `nft -f`.
fn bulk_load(b: &mut Bench, id: &str, n: usize) -> Bulk {
    let all = bulk_addrs(n);
    let mut calls = Vec::new();
    let start = Instant::now();
    for chunk in all.chunks(MAX_TARGETS) {
        let (wall, _, changed) = b.api_call(id, chunk.to_vec());
        assert_eq!(changed, chunk.len(), "bulk Allow: every target is new");
        calls.push(wall);
    }
    let api_total = start.elapsed();

    // Baseline: one transaction, `add element` statements of 1024 addresses each.
    let mut script = String::with_capacity(n * 16);
    for chunk in all.chunks(MAX_TARGETS) {
        writeln!(
            script,
            "add element inet shield allow_v4 {{ {} }}",
            chunk.join(", ")
        )
        .expect("write to a string");
    }
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), script).expect("write bulk script");
    let start = Instant::now();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", b.baseline.netns_path().display()))
        .args(["nft", "-f"])
        .arg(file.path())
        .stdin(Stdio::null())
        .output()
        .expect("run nsenter nft -f");
    let nft_total = start.elapsed();
    assert!(
        out.status.success(),
        "bulk nft -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Bulk {
        n,
        calls,
        api_total,
        nft_total,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Sorted copy of the samples.
fn sorted(samples: &[Duration]) -> Vec<Duration> {
    let mut v = samples.to_vec();
    v.sort();
    v
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / u32::try_from(samples.len()).expect("count fits u32")
}

fn row(name: &str, samples: &[Duration]) -> String {
    let s = sorted(samples);
    format!(
        "| {name:<58} | {:>5} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} |",
        s.len(),
        ms(percentile(&s, 50.0)),
        ms(percentile(&s, 90.0)),
        ms(percentile(&s, 99.0)),
        ms(s[s.len() - 1]),
        ms(mean(&s)),
    )
}

fn header(title: &str) {
    println!(
        "| {title:<58} | {:>5} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} |",
        "n", "p50", "p90", "p99", "max", "mean"
    );
    println!("|{}|------:|{}", "-".repeat(60), "---------:|".repeat(5));
}

fn table(p: &Phase) {
    println!("{}", row("shieldctl allow CONTAINER IP", &p.ctl));
    println!("{}", row("API Allow, one long-lived client", &p.api));
    println!(
        "{}",
        row("nsenter … nft add element … allow_v4 { IP }", &p.nft)
    );
    println!("{}", row("  API Allow: daemon handler time", &p.api_daemon));
    println!(
        "{}",
        row("  API Allow of an allowed IP (no kernel batch)", &p.repeat)
    );
    println!(
        "{}",
        row(
            "  API Allow of an allowed IP: daemon handler time",
            &p.repeat_daemon
        )
    );
}

fn p99(samples: &[Duration]) -> Duration {
    percentile(&sorted(samples), 99.0)
}

fn main() {
    shield_tests::require_root();
    let a = args();
    let total = Instant::now();
    let bulk_profile: String = if a.bulk > 0 {
        let mut text = format!("# allow benchmark: {} addresses\n", a.bulk);
        for addr in bulk_addrs(a.bulk) {
            text.push_str(&addr);
            text.push('\n');
        }
        text
    } else {
        String::new()
    };
    let mut builder = Daemon::builder()
        .profile("bench", BENCH_PROFILE)
        .log_level(&a.log);
    if a.bulk > 0 {
        builder = builder.profile("bench-big", &format!("{BENCH_PROFILE}{bulk_profile}"));
    }
    let daemon = builder.start();

    // Container B: the table the daemon renders for the profile, loaded by `nft -f`; the daemon
    // never hears of it.
    let ruleset = daemon.ctl(&["preview", "--profiles", "bench"]);
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), &ruleset).expect("write ruleset");
    let baseline = NsProcess::spawn(Owner::Root);
    let out = Command::new("nsenter")
        .arg(format!("--net={}", baseline.netns_path().display()))
        .args(["nft", "-f"])
        .arg(file.path())
        .output()
        .expect("run nsenter nft -f");
    assert!(
        out.status.success(),
        "nft -f of the preview failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = rt
        .block_on(shield_proto::client::connect(
            daemon.socket(),
            Duration::from_secs(5),
        ))
        .expect("connect to shieldd");
    let mut b = Bench {
        daemon,
        rt,
        client,
        baseline,
        ctl_api_addrs: Addrs::new(Ipv4Addr::new(198, 18, 0, 0)),
        nft_addrs: Addrs::new(Ipv4Addr::new(198, 18, 0, 0)),
    };

    // Container A: attached through the hook, as podman would; profile `bench`.
    let (ns_a, id_a, _) = b.attach("bench");
    let empty = b.phase(&id_a, a.warmup, a.count, None);
    let len_a = allow_v4_len(&ns_a);
    let len_b = allow_v4_len(&b.baseline);
    // Profile address + REPEAT_TARGET + one per change.
    assert_eq!(
        len_a,
        2 + 2 * (a.warmup + a.count),
        "container A's allow_v4"
    );
    assert_eq!(len_b, 1 + a.warmup + a.count, "container B's allow_v4");
    eprintln!(
        "allow-bench: near-empty phase done in {:.1} s",
        empty.took.as_secs_f64()
    );

    let mut ns_c = None;
    let big = (a.bulk > 0).then(|| {
        // Container C: the large set comes from its profile (profile `bench-big`), the daemon's
        // live intent stays small.
        let (ns, id_c, attach_c) = b.attach("bench-big");
        eprintln!(
            "allow-bench: container C attached with {} profile addresses in {:.1} s; bulk load…",
            a.bulk,
            attach_c.as_secs_f64()
        );
        // Container A (and B): the large set comes through the API (live intent).
        let bulk = bulk_load(&mut b, &id_a, a.bulk);
        eprintln!(
            "allow-bench: bulk load through the API took {:.1} s; large-set phases…",
            bulk.api_total.as_secs_f64()
        );
        // A change costs seconds here with some daemons: a short warm-up, and a time budget.
        let big_warmup = a.warmup.min(2);
        let profile_phase = b.phase(&id_c, big_warmup, a.count_big, Some(a.big_budget));
        let live_phase = b.phase(&id_a, 0, a.count_big, Some(a.big_budget));
        let len_a = allow_v4_len(&ns_a);
        let len_b = allow_v4_len(&b.baseline);
        let len_c = allow_v4_len(&ns);
        assert_eq!(
            len_a,
            2 + a.bulk + 2 * (a.warmup + a.count + live_phase.rounds),
            "container A's allow_v4 after the bulk"
        );
        assert_eq!(
            len_b,
            1 + a.bulk + a.warmup + a.count + big_warmup + profile_phase.rounds + live_phase.rounds,
            "container B's allow_v4 after the bulk"
        );
        assert_eq!(
            len_c,
            2 + a.bulk + 2 * (big_warmup + profile_phase.rounds),
            "container C's allow_v4"
        );
        let state = |id: &str| {
            std::fs::metadata(b.daemon.container_state_dir(id).join("state.json"))
                .map_or(0, |m| m.len())
        };
        let states = (state(&id_a), state(&id_c));
        b.release(&id_c, "bench-big");
        ns_c = Some(ns);
        (
            bulk,
            attach_c,
            profile_phase,
            live_phase,
            [len_a, len_b, len_c],
            states,
        )
    });

    // Release container A, as a container stop would; then stop the daemon.
    b.release(&id_a, "bench");
    let problems = b
        .daemon
        .log()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    let Bench {
        daemon,
        rt,
        client,
        baseline,
        ..
    } = b;
    // Close the long-lived connection first: the daemon's graceful shutdown waits for it.
    drop(client);
    drop(rt);
    if let Some(path) = &a.keep_log {
        std::fs::write(path, daemon.log()).expect("write --keep-log");
    }
    daemon.stop();
    drop(ns_a);
    drop(ns_c);
    drop(baseline);

    println!(
        "allow latency: one IPv4 address per change; rootful daemon, {} CPUs, daemon log {}; \
         per round one change by each method, order rotated every round; warm-up rounds \
         discarded: {} (near-empty), {} (profile set), 0 (live set)",
        std::thread::available_parallelism().map_or(0, usize::from),
        a.log,
        a.warmup,
        a.warmup.min(2),
    );
    println!();
    println!(
        "Near-empty allow set (container A: 1 profile address; grows to {len_a} elements; \
         baseline container B to {len_b}); {} rounds in {:.1} s:",
        empty.rounds,
        empty.took.as_secs_f64()
    );
    println!();
    header("method (wall time per change, ms), near-empty set");
    table(&empty);
    if let Some((bulk, attach_c, profile_phase, live_phase, lens, states)) = &big {
        let k = bulk.n / 1000;
        println!();
        let calls = sorted(&bulk.calls);
        println!(
            "Bulk: {} addresses into container A through the API, {} Allow calls of ≤ {MAX_TARGETS} \
             back to back: {} ms total (per call p50 {} ms, max {} ms). The same addresses into \
             container B with one `nft -f` ({} `add element` statements): {} ms. Container C \
             attached (shield-hook createRuntime) with a profile of the same {} addresses: {} ms.",
            bulk.n,
            calls.len(),
            ms(bulk.api_total),
            ms(percentile(&calls, 50.0)),
            ms(calls[calls.len() - 1]),
            calls.len(),
            ms(bulk.nft_total),
            bulk.n,
            ms(*attach_c),
        );
        println!();
        println!(
            "{k}k set from a profile (container C, live intent small; state.json {} bytes), \
             baseline B with {k}k+ elements; {} rounds in {:.1} s:",
            states.1,
            profile_phase.rounds,
            profile_phase.took.as_secs_f64()
        );
        println!();
        header(&format!("method (ms), {k}k set from a profile"));
        table(profile_phase);
        println!();
        println!(
            "{k}k set through the API (container A, {k}k live-allowed addresses; state.json {} \
             bytes); {} rounds (no warm-up) in {:.1} s:",
            states.0,
            live_phase.rounds,
            live_phase.took.as_secs_f64()
        );
        println!();
        header(&format!("method (ms), {k}k live-allowed set"));
        table(live_phase);
        println!();
        println!(
            "allow_v4 at the end: A {}, B {}, C {} elements",
            lens[0], lens[1], lens[2]
        );
        println!();
        println!(
            "| p99 per change, ms | near-empty | {k}k (profile) | ratio | {k}k (live) | ratio |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for (name, e, p, l) in [
            (
                "shieldctl allow",
                &empty.ctl,
                &profile_phase.ctl,
                &live_phase.ctl,
            ),
            ("API Allow", &empty.api, &profile_phase.api, &live_phase.api),
            (
                "nft add element (baseline)",
                &empty.nft,
                &profile_phase.nft,
                &live_phase.nft,
            ),
        ] {
            let e99 = p99(e).as_secs_f64();
            println!(
                "| {name} | {} | {} | {:.1}× | {} | {:.1}× |",
                ms(p99(e)),
                ms(p99(p)),
                p99(p).as_secs_f64() / e99,
                ms(p99(l)),
                p99(l).as_secs_f64() / e99,
            );
        }
    }
    println!();
    println!(
        "daemon log: {problems} WARN/ERROR lines; whole run {:.1} s; binaries from {}",
        total.elapsed().as_secs_f64(),
        bins::describe()
    );
}
