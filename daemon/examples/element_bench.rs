//! `element_bench`: the cost of one live set element change (add one IPv4 address to
//! `allow_v4`, verified) through `shieldd::nft`, on an empty set and on a set of 100 000
//! addresses, side by side with the baseline of one process per change
//! (`nsenter --net=/proc/PID/ns/net nft add element inet shield allow_v4 { IP }`), interleaved
//! in one run; plus the bulk load of 100 000 addresses and what a full read-back would cost.
//!
//! Run as root, on a release build:
//! `cargo run --release -p shieldd --example element_bench -- [--ops N] [--bulk N]`
//!
//! The namespace is a private `unshare --net` one made by the bench; no traffic is sent.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark program: prints its table, fails loudly"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::Netns;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use shieldd::nft;
use shieldd::nft::changes::{Budget, apply_within};
use shieldd::ruleset::build::{ALLOW_V4, DNS_V4};
use shieldd::ruleset::diff::element_changes;
use shieldd::ruleset::ir::{Family, IpRange, Set, SetElement, SetKind};
use shieldd::ruleset::{Policy, build};

struct Args {
    ops: usize,
    bulk: u32,
}

fn args() -> Args {
    let mut a = Args {
        ops: 200,
        bulk: 100_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ops" => a.ops = it.next().and_then(|v| v.parse().ok()).expect("--ops N"),
            "--bulk" => a.bulk = it.next().and_then(|v| v.parse().ok()).expect("--bulk N"),
            _ => {
                eprintln!("usage: element_bench [--ops N] [--bulk N]");
                std::process::exit(2);
            }
        }
    }
    assert!(a.ops > 0, "--ops must be positive");
    a
}

/// The baseline's operation, on the shared namespace fixture.
trait NetnsExt {
    fn nft_add(&self, addr: Ipv4Addr);
}

impl NetnsExt for Netns {
    /// The baseline: one `nsenter … nft add element` process per change.
    fn nft_add(&self, addr: Ipv4Addr) {
        let status = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(["nft", "add", "element", "inet", "shield", ALLOW_V4])
            .arg(format!("{{ {addr} }}"))
            .status()
            .expect("run nft");
        assert!(status.success(), "nft add element {addr} failed");
    }
}

fn one(addr: Ipv4Addr) -> Set {
    let addr = IpAddr::V4(addr);
    Set {
        name: ALLOW_V4.to_owned(),
        family: Family::V4,
        kind: SetKind::Interval,
        elements: vec![SetElement {
            range: IpRange {
                start: addr,
                end: addr,
            },
            timeout: None,
        }],
    }
}

/// `count` non-adjacent IPv4 addresses from `base` on (every other address).
fn spaced(base: u32, count: u32) -> Vec<Ipv4Addr> {
    (0..count).map(|i| Ipv4Addr::from(base + 2 * i)).collect()
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row(name: &str, size: &str, samples: &mut [Duration]) {
    samples.sort();
    println!(
        "| {name:<44} | {size:>7} | {:>6} | {:>8} | {:>8} | {:>8} |",
        samples.len(),
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0)),
        ms(samples[samples.len() - 1]),
    );
}

/// Interleaves `ops` shield changes (apply + verify one add) with `ops` baseline processes.
fn per_change(
    ns: &Netns,
    sock: BorrowedFd<'_>,
    ops: usize,
    shield_base: u32,
    nft_base: u32,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut shield = Vec::with_capacity(ops);
    let mut baseline = Vec::with_capacity(ops);
    let ours = spaced(shield_base, ops as u32);
    let theirs = spaced(nft_base, ops as u32);
    for (a, b) in ours.iter().zip(&theirs) {
        let adds = [one(*a)];
        let started = Instant::now();
        nft::apply_element_changes(sock, &adds, &[]).expect("apply");
        nft::verify_element_changes(sock, &adds, &[]).expect("verify");
        shield.push(started.elapsed());

        let started = Instant::now();
        ns.nft_add(*b);
        baseline.push(started.elapsed());
    }
    (shield, baseline)
}

fn main() {
    let a = args();
    let ns = Netns::new();
    let owned = ns.socket();
    let sock = owned.as_fd();
    let start = Policy {
        allow: vec!["192.0.2.1/32".parse().unwrap()],
        ..Policy::default()
    };
    let t0 = build(&start);
    nft::apply(sock, &t0).expect("apply the starting table");
    // Warm up both paths (page cache for nft, first-use allocations for us).
    let _ = per_change(&ns, sock, 10, 0xc633_6400, 0xc633_6480); // 198.51.100.0, .128

    let (mut s0, mut b0) = per_change(&ns, sock, a.ops, 0x0d00_0000, 0x0e00_0000);

    // Bulk: `bulk` addresses in one change, as the daemon computes it (build + diff).
    let mut allow = start.allow.clone();
    allow.extend(
        spaced(0x0b00_0000, a.bulk)
            .into_iter()
            .map(|ip| IpNet::from(IpAddr::V4(ip))),
    );
    let policy = Policy {
        allow,
        ..Policy::default()
    };
    let started = Instant::now();
    let t1 = build(&policy);
    let changes = element_changes(&t0, &t1).expect("element-only change");
    let planned = started.elapsed();
    let started = Instant::now();
    let batches = nft::apply_element_changes(sock, &changes.adds, &changes.removes).expect("bulk");
    let applied = started.elapsed();
    nft::verify_element_changes(sock, &changes.adds, &changes.removes).expect("verify bulk");
    let verified = started.elapsed();

    // The same bulk split into batches of at most 400 KiB (an unprivileged socket's buffer).
    let ns2 = Netns::new();
    let owned2 = ns2.socket();
    nft::apply(owned2.as_fd(), &t0).expect("apply the starting table");
    let cap = Budget {
        bytes: 400 * 1024,
        acks: 100,
    };
    let started = Instant::now();
    let split = apply_within(owned2.as_fd(), &changes.adds, &changes.removes, Some(cap))
        .expect("split bulk");
    let split_applied = started.elapsed();
    drop(owned2);
    drop(ns2);

    let (mut s1, mut b1) = per_change(&ns, sock, a.ops, 0x0d10_0000, 0x0e10_0000);

    // For comparison: the same load into a hash set (dns_v4: no intervals, so one kernel element
    // per address and no per-commit rebuild of an interval index).
    let ns3 = Netns::new();
    let owned3 = ns3.socket();
    let h = owned3.as_fd();
    nft::apply(h, &t0).expect("apply the starting table");
    let hash = |addrs: &[Ipv4Addr]| Set {
        name: DNS_V4.to_owned(),
        family: Family::V4,
        kind: SetKind::Timeout,
        elements: addrs
            .iter()
            .map(|ip| SetElement {
                range: IpRange {
                    start: IpAddr::V4(*ip),
                    end: IpAddr::V4(*ip),
                },
                timeout: None,
            })
            .collect(),
    };
    let hash_change = |base: u32| -> Vec<Duration> {
        spaced(base, a.ops as u32)
            .iter()
            .map(|ip| {
                let adds = [hash(&[*ip])];
                let started = Instant::now();
                nft::apply_element_changes(h, &adds, &[]).expect("apply");
                nft::verify_element_changes(h, &adds, &[]).expect("verify");
                started.elapsed()
            })
            .collect()
    };
    let mut h0 = hash_change(0x0d20_0000);
    let bulk_hash = [hash(&spaced(0x0b00_0000, a.bulk))];
    let started = Instant::now();
    nft::apply_element_changes(h, &bulk_hash, &[]).expect("bulk hash");
    let hash_applied = started.elapsed();
    let mut h1 = hash_change(0x0d30_0000);
    drop(owned3);
    drop(ns3);
    let size = format!("{}k", a.bulk / 1000);

    // What a full read-back of the set would cost per change instead of the targeted check.
    let started = Instant::now();
    let held = nft::read_sets(sock, &[ALLOW_V4]).expect("read_sets");
    let read_back = started.elapsed();
    // And what the daemon's pure part costs at this size (rebuild + diff for one more address).
    let mut more = policy.allow.clone();
    more.push("203.0.113.9/32".parse().unwrap());
    let started = Instant::now();
    let t2 = build(&Policy {
        allow: more,
        ..Policy::default()
    });
    let one_more = element_changes(&t1, &t2).expect("element-only change");
    let rebuild = started.elapsed();
    assert_eq!(one_more.len(), 1);

    println!(
        "\nelement_bench: {} changes per row, interleaved; kernel {}",
        a.ops,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "| {:<44} | {:>7} | {:>6} | {:>8} | {:>8} | {:>8} |",
        "per change (add one IPv4 address)", "set", "n", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{:-<46}|{:->9}|{:->8}|{:->10}|{:->10}|{:->10}|",
        "", "", "", "", "", ""
    );
    row("shield: apply + verify (one batch, lookups)", "~0", &mut s0);
    row("baseline: nsenter nft add element (process)", "~0", &mut b0);
    row(
        "shield: apply + verify (one batch, lookups)",
        &size,
        &mut s1,
    );
    row(
        "baseline: nsenter nft add element (process)",
        &size,
        &mut b1,
    );
    row(
        "hash set (dns_v4) for comparison: apply + verify",
        "~0",
        &mut h0,
    );
    row(
        "hash set (dns_v4) for comparison: apply + verify",
        &size,
        &mut h1,
    );
    println!();
    println!("| {:<60} | {:>10} |", "bulk and whole-set operations", "ms");
    println!("|{:-<62}|{:->12}|", "", "");
    let line = |name: String, d: Duration| println!("| {name:<60} | {:>10} |", ms(d));
    line(
        format!("build + diff: {} addresses (pure)", a.bulk),
        planned,
    );
    line(
        format!("bulk apply: {} addresses, {batches} batch(es)", a.bulk),
        applied,
    );
    line(
        format!("bulk apply + verify: {} addresses", a.bulk),
        verified,
    );
    line(
        format!("bulk apply split into ≤ 400 KiB batches: {split} batches"),
        split_applied,
    );
    line(
        format!(
            "read_sets allow_v4 ({} elements: full dump)",
            held[0].elements.len()
        ),
        read_back,
    );
    line(
        format!("build + diff for one more address at {size}"),
        rebuild,
    );
    line(
        format!("bulk apply into a hash set (dns_v4): {} addresses", a.bulk),
        hash_applied,
    );
}
