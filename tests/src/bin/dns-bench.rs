//! `dns-bench`: what shield's per-container DNS proxy adds to a lookup, against the upstream
//! queried directly and against the reference mechanism (dnsmasq `--nftset`), with 0, 10 000 and
//! 100 000 elements already in the dns set; then the proxy's throughput across several containers
//! and the daemon's CPU per 1 000 answers. Run as root, on release builds: `bench/dns.sh` (see
//! `docs/benchmarks.md`, "DNS proxy").
//!
//! Usage: `dns-bench [--count N] [--warmup N] [--budget SECS] [--sizes A,B,C] [--containers N]
//! [--window N] [--secs SECS] [--cache-size N] [--ref-flags FLAGS] [--reference KIND]
//! [--pause-us N] [--log LEVEL]` (defaults 2000, 50, 30, `0,10000,100000`, 10, 4, 10, 1024,
//! `timeout`, `dnsmasq`, 0, `info`; `--containers 0` skips the throughput part; `--ref-flags
//! "interval, timeout"` gives the reference an interval set, as an allowlist that also holds
//! networks would need; `--reference forwarder` puts a plain forwarder in R instead of dnsmasq,
//! see below; `--pause-us N` sleeps N µs after every query of the latency part, outside the timed
//! window, so that the CPUs idle between queries as they do between a container's lookups: on a
//! VM, whose idle vCPUs wake the slower the longer they idled, every figure grows with it).
//!
//! Latency part. One `shieldd` resolves through the upstream fixture (`dnsmasq` on 127.0.0.1 of
//! the host namespace, [`Dnsmasq`]); container S is a fresh namespace attached through
//! `shield-hook createRuntime` with a profile allowing `bench.test`. The reference namespace R
//! holds `table inet shieldref { set dns_v4 { type ipv4_addr; flags timeout; } }`, a clone of the
//! upstream (same dnsmasq options and answers, on 127.0.0.1:5353 of R: a process in R cannot
//! reach the host's loopback) and the reference proxy on 127.0.0.1:53 of R: `dnsmasq
//! --server=127.0.0.1#5353 --nftset=/bench.test/flood.test/4#inet#shieldref#dns_v4`. The
//! client is this program: one UDP socket per target, each made inside the target's namespace
//! (a short-lived thread `setns`es into it), one query at a time, wall time from `send` to the
//! matching answer; every answer is checked (NOERROR, the expected address). A round is one query
//! of each of six methods, the order rotated every round:
//! - `direct (host)`: the upstream fixture, from the host namespace (the daemon's path to it);
//! - `shield miss`: the proxy in S, a name asked for the first time (forward, insert, answer);
//! - `shield hit`: the proxy in S, the same name every round (cache; the insert is still done);
//! - `direct (R)`: the upstream clone, from R;
//! - `dnsmasq miss`, `dnsmasq hit`: the reference proxy in R, the same names.
//!
//! With `--reference forwarder` the reference proxy in R is this program's own plain forwarder
//! (`dns-bench forward`: blocking sockets, receive, send upstream, receive, send back; no parsing,
//! no cache, no insert): what any forwarding hop costs on this machine under exactly the
//! conditions of shield's queries, the floor under the proxy's added latency. R's set must then
//! stay at its fill elements.
//!
//! Added latency is `pXX(proxy) − pXX(direct query of its upstream)`. Around each proxied query
//! the proxy process's time on CPU (all threads, `/proc/PID/task/*/schedstat`) is read too.
//!
//! Miss names are `mK.bench.test`, each answered with its own address (10.77.0.0/16), so every
//! miss inserts a new element. Before each size, both dns sets are filled with `nft -f`
//! (`add element … { 100.64.x.y timeout 1h, … }`, chunks of 1 000); the daemon's `min_ttl` and
//! `max_ttl` are 1 h, so no element expires during the run and the element counts of both sets
//! are checked exactly after every size.
//!
//! Throughput part. `--containers` more containers attached to the same daemon; one client
//! thread per container keeps `--window` queries outstanding on its socket for `--secs` seconds
//! (after 1 s of warm-up), first the same name (cache hits: an insert each), then distinct names
//! (every answer forwarded upstream). Reported: answers per second, latency under load, the
//! daemon's CPU (`/proc/PID/stat` utime + stime) per 1 000 answers, and the CPU of the clients
//! and of the whole machine over the same window. `[dns] rate_limit` and `rate_burst` are raised
//! to 1 000 000 so that the per-container limit does not cap the figure.
//!
//! Traffic stays on loopback, in the host namespace (daemon ↔ upstream) and in namespaces this
//! program made.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program: prints its table, fails loudly"
)]

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shield_tests::daemon::Daemon;
use shield_tests::dns::{ANSWER_TTL, Dnsmasq};
use shield_tests::hook::{Stage, oci_state};
use shield_tests::netns::{NsProcess, Owner};
use shield_tests::{bins, percentile};

/// The profile of every bench container: the two bench domains and their subdomains.
const BENCH_PROFILE: &str = "# dns benchmark\nbench.test\nflood.test\n";
/// The name asked in every round (a cache hit after the first time).
const HIT_NAME: &str = "hit.bench.test";
const HIT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// Throughput names: `flood.test` and every name below it answer this address.
const FLOOD_DOMAIN: &str = "flood.test";
const FLOOD_ADDR: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
/// The reference namespace's table, and the port of its upstream clone.
const REF_TABLE: &str = "shieldref";
const REF_UPSTREAM_PORT: u16 = 5353;
/// Most elements per `add element` statement of a fill.
const FILL_CHUNK: usize = 1000;
/// A query unanswered for this long fails the latency part (loopback does not lose packets).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Under load, a window with no answer for this long is sent again (counted as a timeout).
const LOAD_TIMEOUT: Duration = Duration::from_millis(200);
/// Throughput warm-up before the measured window.
const LOAD_WARMUP: Duration = Duration::from_secs(1);
/// Fewest measured rounds of a size, whatever `--budget` says.
const MIN_ROUNDS: usize = 20;

struct Args {
    count: usize,
    warmup: usize,
    budget: Duration,
    sizes: Vec<usize>,
    containers: usize,
    window: usize,
    secs: u64,
    cache_size: usize,
    ref_flags: String,
    reference: Reference,
    pause: Duration,
    log: String,
}

/// What answers in namespace R next to the upstream clone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reference {
    /// `dnsmasq --nftset`: the mechanism shield replaces.
    Dnsmasq,
    /// [`forward_main`]: a forwarding hop and nothing else.
    Forwarder,
}

impl Reference {
    /// How the tables name it.
    fn name(self) -> &'static str {
        match self {
            Reference::Dnsmasq => "dnsmasq --nftset",
            Reference::Forwarder => "plain forwarder",
        }
    }

    /// Its row of the added-latency table for `method` (one of its two).
    fn row(self, method: Method) -> String {
        let which = match (self, method) {
            (Reference::Dnsmasq, Method::RefMiss) => "cache miss",
            (Reference::Dnsmasq, _) => "cache hit",
            (Reference::Forwarder, Method::RefMiss) => "new name",
            (Reference::Forwarder, _) => "hit name",
        };
        format!("{}, {which}", self.name())
    }
}

fn args() -> Args {
    let mut a = Args {
        count: 2000,
        warmup: 50,
        budget: Duration::from_secs(30),
        sizes: vec![0, 10_000, 100_000],
        containers: 10,
        window: 4,
        secs: 10,
        cache_size: 1024,
        ref_flags: "timeout".into(),
        reference: Reference::Dnsmasq,
        pause: Duration::ZERO,
        log: "info".into(),
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
            "--warmup" => a.warmup = number(&mut it, "--warmup"),
            "--budget" => a.budget = Duration::from_secs(number(&mut it, "--budget") as u64),
            "--sizes" => {
                a.sizes = it
                    .next()
                    .expect("--sizes A,B,C")
                    .split(',')
                    .map(|s| s.trim().parse().expect("--sizes: numbers"))
                    .collect();
            }
            "--containers" => a.containers = number(&mut it, "--containers"),
            "--window" => a.window = number(&mut it, "--window"),
            "--secs" => a.secs = number(&mut it, "--secs") as u64,
            "--cache-size" => a.cache_size = number(&mut it, "--cache-size"),
            "--ref-flags" => a.ref_flags = it.next().expect("--ref-flags FLAGS"),
            "--reference" => {
                a.reference = match it.next().as_deref() {
                    Some("dnsmasq") => Reference::Dnsmasq,
                    Some("forwarder") => Reference::Forwarder,
                    _ => panic!("--reference dnsmasq|forwarder"),
                }
            }
            "--pause-us" => {
                a.pause = Duration::from_micros(number(&mut it, "--pause-us") as u64);
            }
            "--log" => a.log = it.next().expect("--log LEVEL"),
            _ => {
                eprintln!(
                    "usage: dns-bench [--count N] [--warmup N] [--budget SECS] [--sizes A,B,C] \
                     [--containers N] [--window N] [--secs SECS] [--cache-size N] \
                     [--ref-flags FLAGS] [--reference dnsmasq|forwarder] [--pause-us N] \
                     [--log LEVEL]"
                );
                std::process::exit(2);
            }
        }
    }
    assert!(a.count > 0, "--count must be positive");
    assert!(
        a.sizes.windows(2).all(|w| w[0] <= w[1]),
        "--sizes must be ascending (the sets only grow)"
    );
    assert!(
        a.sizes.last().copied().unwrap_or(0) <= 1 << 22,
        "--sizes at most 4 194 304 (100.64.0.0/10)"
    );
    assert!(
        a.sizes.len() * (a.count + a.warmup) < 65_000,
        "too many miss names for 10.77.0.0/16"
    );
    assert!((1..=1024).contains(&a.window), "--window 1..=1024");
    assert!(a.secs > 0, "--secs must be positive");
    a
}

// ---------------------------------------------------------------------------------------------
// DNS on the wire: just enough to ask for an A record and read the answer.

/// A query for the A record of `name`, recursion desired, no EDNS.
fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("label length"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// What a reply says.
#[derive(Debug)]
struct Reply {
    id: u16,
    rcode: u8,
    a: Vec<Ipv4Addr>,
}

/// Position after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xC0 == 0xC0 => return Some(pos + 2),
            l => pos += 1 + usize::from(l),
        }
    }
}

fn parse_reply(msg: &[u8]) -> Option<Reply> {
    let u16_at = |p: usize| Some(u16::from_be_bytes([*msg.get(p)?, *msg.get(p + 1)?]));
    let id = u16_at(0)?;
    if msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = msg.get(3)? & 0x0F;
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut a = Vec::new();
    for _ in 0..answers {
        pos = skip_name(msg, pos)?;
        let kind = u16_at(pos)?;
        let len = usize::from(u16_at(pos + 8)?);
        let data = msg.get(pos + 10..pos + 10 + len)?;
        if kind == 1 && len == 4 {
            a.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        pos += 10 + len;
    }
    Some(Reply { id, rcode, a })
}

// ---------------------------------------------------------------------------------------------
// Sockets in other namespaces.

/// A UDP socket on 127.0.0.1 connected to `target`, created inside the network namespace at
/// `netns` (the host's when `None`). A socket belongs to the namespace it was created in, so a
/// short-lived thread enters the namespace, makes the socket and hands it back.
fn udp_socket_in(netns: Option<&Path>, target: SocketAddr) -> UdpSocket {
    let netns = netns.map(Path::to_path_buf);
    std::thread::spawn(move || {
        if let Some(path) = &netns {
            let file = std::fs::File::open(path).expect("open the netns file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        }
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket.connect(target).expect("connect the UDP socket");
        socket
    })
    .join()
    .expect("socket thread")
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u16 {
    // Only the low 16 bits travel; distinct for 65 536 consecutive queries.
    u16::try_from(NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xFFFF).expect("masked to 16 bits")
}

/// One blocking query on `socket`: the wall time from `send` to the matching answer. Panics on
/// silence, an error code or an answer without `expect`.
fn ask(socket: &UdpSocket, what: &str, name: &str, expect: Ipv4Addr) -> Duration {
    let id = next_id();
    let query = query_bytes(id, name);
    let mut buf = [0_u8; 1500];
    let start = Instant::now();
    socket.send(&query).expect("send a query");
    let (len, elapsed) = loop {
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: no answer for {name} within {ANSWER_TIMEOUT:?}")
            }
            Err(err) => panic!("{what}: receive failed for {name}: {err}"),
        };
        let elapsed = start.elapsed();
        // A late answer to an earlier query would carry another id.
        if len >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            break (len, elapsed);
        }
    };
    let reply = parse_reply(&buf[..len]).unwrap_or_else(|| panic!("{what}: garbage for {name}"));
    assert!(
        reply.rcode == 0 && reply.a.contains(&expect),
        "{what}: {name} answered rcode {} with {:?}, expected {expect}",
        reply.rcode,
        reply.a
    );
    elapsed
}

/// Asks `name` until an answer with `expect` comes (a server that is still starting), 5 s at most.
fn wait_answering(socket: &UdpSocket, what: &str, name: &str, expect: Ipv4Addr) {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set_read_timeout");
    let start = Instant::now();
    let mut buf = [0_u8; 1500];
    loop {
        let id = next_id();
        // Refused while the port is not bound yet: just try again.
        let _ = socket.send(&query_bytes(id, name));
        if let Ok(len) = socket.recv(&mut buf)
            && let Some(reply) = parse_reply(&buf[..len])
            && reply.id == id
            && reply.rcode == 0
            && reply.a.contains(&expect)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what} does not answer {name} with {expect}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    socket
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .expect("set_read_timeout");
}

// ---------------------------------------------------------------------------------------------
// The names and the upstream.

/// The `k`-th miss name and its address.
fn miss(k: usize) -> (String, Ipv4Addr) {
    let k = u32::try_from(k + 1).expect("miss index");
    (
        format!("m{k}.bench.test"),
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 77, 0, 0)) + k),
    )
}

/// Every `(name, address)` the upstream (and its clone in R) answers.
fn upstream_answers(misses: usize) -> Vec<(String, IpAddr)> {
    let mut answers = vec![
        (HIT_NAME.to_owned(), IpAddr::V4(HIT_ADDR)),
        (FLOOD_DOMAIN.to_owned(), IpAddr::V4(FLOOD_ADDR)),
    ];
    answers.extend((0..misses).map(|k| {
        let (name, addr) = miss(k);
        (name, IpAddr::V4(addr))
    }));
    answers
}

/// A `dnsmasq` started inside a namespace (through `nsenter`, which execs it: killing the child
/// kills dnsmasq); killed on drop.
/// A process serving DNS in a namespace (dnsmasq, or this program's plain forwarder), killed on
/// drop; its output goes to a log file.
struct NsServer {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl NsServer {
    fn dnsmasq(ns: &NsProcess, args: &[String]) -> NsServer {
        let log = tempfile::Builder::new()
            .prefix("dns-bench-dnsmasq-")
            .suffix(".log")
            .tempfile()
            .expect("log file");
        let child = ns
            .command("dnsmasq")
            .args(args)
            .stdout(log.reopen().expect("reopen log"))
            .stderr(log.reopen().expect("reopen log"))
            .spawn()
            .expect("spawn dnsmasq");
        NsServer { child, log }
    }

    /// [`forward_main`] in `ns`: 127.0.0.1:53 forwarded to the upstream clone.
    fn forwarder(ns: &NsProcess) -> NsServer {
        let log = tempfile::Builder::new()
            .prefix("dns-bench-forwarder-")
            .suffix(".log")
            .tempfile()
            .expect("log file");
        let child = ns
            .command(std::env::current_exe().expect("this program's path"))
            .args([
                FORWARD_SUBCOMMAND,
                "127.0.0.1:53",
                &format!("127.0.0.1:{REF_UPSTREAM_PORT}"),
            ])
            .stdout(log.reopen().expect("reopen log"))
            .stderr(log.reopen().expect("reopen log"))
            .spawn()
            .expect("spawn the plain forwarder");
        NsServer { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The options of the upstream fixture ([`Dnsmasq::start`]), for its clone in R.
fn upstream_clone_args(answers: &[(String, IpAddr)]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--no-resolv",
        "--no-hosts",
        "--keep-in-foreground",
        "--log-queries",
        "--log-facility=-",
        "--pid-file=",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(format!("--port={REF_UPSTREAM_PORT}"));
    args.push(format!("--local-ttl={ANSWER_TTL}"));
    args.extend(
        answers
            .iter()
            .map(|(name, addr)| format!("--address=/{name}/{addr}")),
    );
    args
}

/// The reference proxy: dnsmasq forwarding to the clone, adding every IPv4 answer for the bench
/// domains to `inet shieldref dns_v4` (dnsmasq's defaults otherwise: cache of 150 names, no
/// query log).
fn reference_args() -> Vec<String> {
    vec![
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--keep-in-foreground".into(),
        "--log-facility=-".into(),
        "--pid-file=".into(),
        "--bind-interfaces".into(),
        "--listen-address=127.0.0.1".into(),
        "--port=53".into(),
        format!("--server=127.0.0.1#{REF_UPSTREAM_PORT}"),
        format!("--nftset=/bench.test/{FLOOD_DOMAIN}/4#inet#{REF_TABLE}#dns_v4"),
    ]
}

// ---------------------------------------------------------------------------------------------
// nft inside a namespace.

fn nft_in(ns: &NsProcess, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.netns_path().display()))
        .arg("nft")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nsenter nft");
    assert!(
        out.status.success(),
        "nft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Adds the fill elements `from..to` (100.64.0.0 + i, timeout 1 h) to `inet TABLE dns_v4` in
/// one `nft -f`; returns how long it took.
fn fill(ns: &NsProcess, table: &str, from: usize, to: usize) -> Duration {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut script = String::new();
    let indices: Vec<usize> = (from..to).collect();
    for chunk in indices.chunks(FILL_CHUNK) {
        let elements: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let addr = Ipv4Addr::from(base + u32::try_from(i).expect("fill index"));
                format!("{addr} timeout 1h")
            })
            .collect();
        writeln!(
            script,
            "add element inet {table} dns_v4 {{ {} }}",
            elements.join(", ")
        )
        .expect("write to a string");
    }
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(file.path(), script).expect("write fill script");
    let start = Instant::now();
    nft_in(ns, &["-f", &file.path().display().to_string()]);
    start.elapsed()
}

/// Elements of `inet TABLE dns_v4`.
fn set_len(ns: &NsProcess, table: &str) -> usize {
    let out = nft_in(ns, &["-j", "list", "set", "inet", table, "dns_v4"]);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("nft -j prints JSON");
    doc["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .find_map(|item| item.get("set"))
        .expect("a set object")
        .get("elem")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len)
}

/// Whether `addr` is in `inet TABLE dns_v4`.
fn has_element(ns: &NsProcess, table: &str, addr: Ipv4Addr) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", ns.netns_path().display()))
        .args(["nft", "get", "element", "inet", table, "dns_v4"])
        .arg(format!("{{ {addr} }}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run nsenter nft get element")
        .success()
}

// ---------------------------------------------------------------------------------------------
// The latency part.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    DirectHost,
    ShieldMiss,
    ShieldHit,
    DirectRef,
    RefMiss,
    RefHit,
}

const METHODS: [Method; 6] = [
    Method::DirectHost,
    Method::ShieldMiss,
    Method::ShieldHit,
    Method::DirectRef,
    Method::RefMiss,
    Method::RefHit,
];

impl Method {
    fn label(self, reference: Reference) -> String {
        match (self, reference) {
            (Method::DirectHost, _) => "direct: upstream from the host netns".into(),
            (Method::ShieldMiss, _) => "shield proxy, cache miss (forward+insert)".into(),
            (Method::ShieldHit, _) => "shield proxy, cache hit (insert)".into(),
            (Method::DirectRef, _) => "direct: upstream clone from netns R".into(),
            (Method::RefMiss, Reference::Dnsmasq) => {
                "dnsmasq --nftset, cache miss (fwd+insert)".into()
            }
            (Method::RefHit, Reference::Dnsmasq) => {
                "dnsmasq --nftset, cache hit (no insert)".into()
            }
            (Method::RefMiss, Reference::Forwarder) => "plain forwarder, new name (forward)".into(),
            (Method::RefHit, Reference::Forwarder) => "plain forwarder, hit name (forward)".into(),
        }
    }

    /// The direct method the proxied one is compared with.
    fn baseline(self) -> Method {
        match self {
            Method::ShieldMiss | Method::ShieldHit | Method::DirectHost => Method::DirectHost,
            Method::RefMiss | Method::RefHit | Method::DirectRef => Method::DirectRef,
        }
    }
}

/// The four client sockets of the latency part.
struct Clients {
    direct_host: UdpSocket,
    shield: UdpSocket,
    direct_ref: UdpSocket,
    reference: UdpSocket,
}

/// Samples of one set size, per method (in [`METHODS`] order).
struct Phase {
    size: usize,
    samples: Vec<Vec<Duration>>,
    rounds: usize,
    took: Duration,
    fill_shield: Duration,
    fill_ref: Duration,
    len_shield: usize,
    len_ref: usize,
    /// On-CPU time of the answering proxy per query (empty for the direct methods).
    cpu: Vec<Vec<Duration>>,
}

impl Phase {
    fn of(&self, m: Method) -> &[Duration] {
        &self.samples[METHODS.iter().position(|x| *x == m).expect("method")]
    }

    fn cpu_of(&self, m: Method) -> &[Duration] {
        &self.cpu[METHODS.iter().position(|x| *x == m).expect("method")]
    }
}

/// `warmup + count` rounds (or fewer once `budget` is spent), miss names from `next_miss` on.
fn phase(
    c: &Clients,
    pids: Pids,
    next_miss: &mut usize,
    warmup: usize,
    count: usize,
    budget: Duration,
    pause: Duration,
) -> Measured {
    let mut samples = vec![Vec::with_capacity(count); METHODS.len()];
    let mut cpu = vec![Vec::with_capacity(count); METHODS.len()];
    let started = Instant::now();
    let mut measured_since = started;
    let mut rounds = 0;
    for i in 0..warmup + count {
        let keep = i >= warmup;
        if i == warmup {
            measured_since = Instant::now();
        }
        let (name, addr) = miss(*next_miss);
        *next_miss += 1;
        for k in 0..METHODS.len() {
            let slot = (i + k) % METHODS.len();
            let server = match METHODS[slot] {
                Method::ShieldMiss | Method::ShieldHit => Some(pids.shieldd),
                Method::RefMiss | Method::RefHit => Some(pids.reference),
                Method::DirectHost | Method::DirectRef => None,
            };
            // Read outside the timed query. What the server still does after sending its answer
            // (a few µs of task teardown) lands in a later reading, or in none: a slight
            // undercount, the same for shield and the reference.
            let cpu_before = server.map(on_cpu);
            let t = match METHODS[slot] {
                Method::DirectHost => ask(&c.direct_host, "upstream (host)", &name, addr),
                Method::ShieldMiss => ask(&c.shield, "shield proxy", &name, addr),
                Method::ShieldHit => ask(&c.shield, "shield proxy", HIT_NAME, HIT_ADDR),
                Method::DirectRef => ask(&c.direct_ref, "upstream clone (R)", &name, addr),
                Method::RefMiss => ask(&c.reference, "reference proxy", &name, addr),
                Method::RefHit => ask(&c.reference, "reference proxy", HIT_NAME, HIT_ADDR),
            };
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            if keep {
                samples[slot].push(t);
                if let (Some(pid), Some(before)) = (server, cpu_before) {
                    cpu[slot].push(on_cpu(pid).saturating_sub(before));
                }
            }
        }
        if keep {
            rounds += 1;
            if rounds >= MIN_ROUNDS && measured_since.elapsed() >= budget {
                break;
            }
        }
    }
    Measured {
        samples,
        cpu,
        rounds,
        took: started.elapsed(),
    }
}

/// What [`phase`] measured.
struct Measured {
    samples: Vec<Vec<Duration>>,
    cpu: Vec<Vec<Duration>>,
    rounds: usize,
    took: Duration,
}

/// The processes whose CPU time is read around each proxied query.
#[derive(Clone, Copy)]
struct Pids {
    shieldd: u32,
    reference: u32,
}

/// Time on CPU of all threads of process `pid` so far (`/proc/PID/task/*/schedstat`, first field:
/// nanoseconds, user and kernel, kernel work done in the process's syscalls included).
fn on_cpu(pid: u32) -> Duration {
    let mut ns = 0_u64;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        // A thread that exits meanwhile takes its time with it: rare, and only ever an undercount.
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

// ---------------------------------------------------------------------------------------------
// The throughput part.

/// What one client thread saw in the measured window.
#[derive(Debug, Default)]
struct Load {
    answers: u64,
    errors: u64,
    timeouts: u64,
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

/// Keeps `window` queries outstanding on `socket` until `end`; counts the answers received in
/// `[from, end)`. `distinct`: a new name for every query (below `flood.test`), else one name.
fn load_client(
    socket: &UdpSocket,
    container: usize,
    window: usize,
    distinct: bool,
    from: Instant,
    end: Instant,
) -> Load {
    socket
        .set_read_timeout(Some(LOAD_TIMEOUT))
        .expect("set_read_timeout");
    let mut sent: Vec<Option<Instant>> = vec![None; 1 << 16];
    let mut id: u16 = 0;
    let mut seq: u64 = 0;
    let hit_name = format!("hit.c{container}.{FLOOD_DOMAIN}");
    let mut send = |sent: &mut Vec<Option<Instant>>| {
        id = id.wrapping_add(1);
        let name = if distinct {
            seq += 1;
            format!("t{seq}.c{container}.{FLOOD_DOMAIN}")
        } else {
            hit_name.clone()
        };
        let query = query_bytes(id, &name);
        sent[usize::from(id)] = Some(Instant::now());
        // A full socket buffer shows up as a timeout below.
        let _ = socket.send(&query);
    };
    for _ in 0..window {
        send(&mut sent);
    }
    let mut load = Load::default();
    let mut buf = [0_u8; 1500];
    loop {
        match socket.recv(&mut buf) {
            Ok(len) => {
                let now = Instant::now();
                let Some(reply) = parse_reply(&buf[..len]) else {
                    continue;
                };
                let Some(at) = sent[usize::from(reply.id)].take() else {
                    continue;
                };
                if now >= from && now < end {
                    load.answers += 1;
                    load.latencies.push(now - at);
                    if reply.rcode != 0 || !reply.a.contains(&FLOOD_ADDR) {
                        load.errors += 1;
                        load.first_error.get_or_insert_with(|| {
                            format!("rcode {} with {:?}", reply.rcode, reply.a)
                        });
                    }
                }
                if now >= end {
                    break;
                }
                send(&mut sent);
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= end {
                    break;
                }
                load.timeouts += 1;
                sent.iter_mut().for_each(|s| *s = None);
                for _ in 0..window {
                    send(&mut sent);
                }
            }
            Err(err) => panic!("client of container {container}: receive failed: {err}"),
        }
    }
    load
}

/// CPU time (user + system) of process `pid` so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    ticks as f64 / hz as f64
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, first line).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait.
    let idle = v[3] + v[4];
    (total - idle, total)
}

/// One throughput run across all `sockets`.
struct Throughput {
    label: &'static str,
    answers: u64,
    window: Duration,
    errors: u64,
    timeouts: u64,
    latencies: Vec<Duration>,
    daemon_cpu: f64,
    bench_cpu: f64,
    machine_busy: f64,
    first_error: Option<String>,
}

fn throughput(
    label: &'static str,
    sockets: &[UdpSocket],
    daemon_pid: u32,
    window: usize,
    secs: u64,
    distinct: bool,
) -> Throughput {
    let start = Instant::now();
    let from = start + LOAD_WARMUP;
    let end = from + Duration::from_secs(secs);
    let mut daemon_cpu = 0.0;
    let mut bench_cpu = 0.0;
    let mut machine_busy = 0.0;
    let loads: Vec<Load> = std::thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .iter()
            .enumerate()
            .map(|(c, socket)| {
                scope.spawn(move || load_client(socket, c, window, distinct, from, end))
            })
            .collect();
        std::thread::sleep(from.saturating_duration_since(Instant::now()));
        let d0 = cpu_secs(daemon_pid);
        let b0 = cpu_secs(std::process::id());
        let m0 = machine_jiffies();
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        daemon_cpu = cpu_secs(daemon_pid) - d0;
        bench_cpu = cpu_secs(std::process::id()) - b0;
        let m1 = machine_jiffies();
        machine_busy = (m1.0 - m0.0) as f64 / (m1.1 - m0.1).max(1) as f64;
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let mut t = Throughput {
        label,
        answers: 0,
        window: end - from,
        errors: 0,
        timeouts: 0,
        latencies: Vec::new(),
        daemon_cpu,
        bench_cpu,
        machine_busy,
        first_error: None,
    };
    for load in loads {
        t.answers += load.answers;
        t.errors += load.errors;
        t.timeouts += load.timeouts;
        t.latencies.extend(load.latencies);
        if t.first_error.is_none() {
            t.first_error = load.first_error;
        }
    }
    t.latencies.sort();
    t
}

// ---------------------------------------------------------------------------------------------
// Output.

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn sorted(samples: &[Duration]) -> Vec<Duration> {
    let mut v = samples.to_vec();
    v.sort();
    v
}

fn pct(samples: &[Duration], p: f64) -> Duration {
    percentile(&sorted(samples), p)
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / u32::try_from(samples.len()).expect("count fits u32")
}

/// One table row: the latency figures, then the proxy's CPU per answer (p50 and mean).
fn row(name: &str, samples: &[Duration], cpu: &[Duration]) -> String {
    let s = sorted(samples);
    let (cpu_p50, cpu_mean) = if cpu.is_empty() {
        ("–".to_owned(), "–".to_owned())
    } else {
        (us(pct(cpu, 50.0)), us(mean(cpu)))
    };
    format!(
        "| {name:<44} | {:>5} | {:>7} | {:>7} | {:>7} | {:>7} | {:>7} | {cpu_p50:>7} | {cpu_mean:>8} |",
        s.len(),
        us(percentile(&s, 50.0)),
        us(percentile(&s, 90.0)),
        us(percentile(&s, 99.0)),
        us(s[s.len() - 1]),
        us(mean(&s)),
    )
}

/// `pXX(method) − pXX(its direct baseline)`, in µs, signed.
fn added(p: &Phase, m: Method, q: f64) -> f64 {
    (pct(p.of(m), q).as_secs_f64() - pct(p.of(m.baseline()), q).as_secs_f64()) * 1e6
}

fn thousands(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn annotations() -> [(&'static str, &'static str); 2] {
    [("shield.profiles", "bench"), ("shield.name", "dns-bench")]
}

/// A fresh namespace with loopback up, attached through `shield-hook createRuntime`.
fn attach(daemon: &Daemon) -> (NsProcess, String) {
    let ns = NsProcess::spawn(Owner::Root);
    ns.ip_batch("link set lo up\n");
    let id = shield_tests::fresh_container_id();
    daemon
        .hook(Stage::CreateRuntime, Some(ns.pid()))
        .stdin(oci_state(&id, Some(ns.pid()), &annotations()))
        .run()
        .assert_success();
    (ns, id)
}

fn release(daemon: &Daemon, id: &str) {
    daemon
        .hook(Stage::Poststop, None)
        .stdin(oci_state(id, None, &annotations()))
        .run()
        .assert_success();
}

fn dns53() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 53))
}

#[allow(
    clippy::too_many_lines,
    reason = "the benchmark's script, top to bottom"
)]
/// The first argument that makes this program the plain forwarder (see the module docs).
const FORWARD_SUBCOMMAND: &str = "forward";

/// The plain forwarder: `dns-bench forward LISTEN UPSTREAM` answers every datagram on `LISTEN`
/// with what `UPSTREAM` replies to it, one at a time, on blocking sockets. Nothing is parsed: the
/// cost of a forwarding hop and nothing else.
fn forward_main(listen: &str, upstream: &str) -> ! {
    let clients = UdpSocket::bind(listen).expect("bind the forwarder's address");
    let up = UdpSocket::bind("127.0.0.1:0").expect("bind the upstream socket");
    up.connect(upstream).expect("connect to the upstream");
    // A lost reply (none on loopback, but never hang) is given up after this long.
    up.set_read_timeout(Some(ANSWER_TIMEOUT))
        .expect("upstream read timeout");
    let mut buffer = [0_u8; 4096];
    loop {
        let Ok((len, client)) = clients.recv_from(&mut buffer) else {
            continue;
        };
        if up.send(&buffer[..len]).is_err() {
            continue;
        }
        let Ok(len) = up.recv(&mut buffer) else {
            eprintln!("forward error: no reply from {upstream}");
            continue;
        };
        if let Err(err) = clients.send_to(&buffer[..len], client) {
            eprintln!("forward error: cannot answer {client}: {err}");
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let [_, subcommand, listen, upstream] = argv.as_slice()
        && subcommand == FORWARD_SUBCOMMAND
    {
        forward_main(listen, upstream);
    }
    shield_tests::require_root();
    let a = args();
    let total = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let misses = a.sizes.len() * (a.count + a.warmup);
    let answers = upstream_answers(misses);
    let answer_refs: Vec<(&str, IpAddr)> = answers.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let upstream = Dnsmasq::start(&answer_refs);
    let config = format!(
        "{}min_ttl = \"1h\"\nmax_ttl = \"1h\"\nrate_limit = 1000000\nrate_burst = 1000000\n\
         cache_size = {}\n",
        upstream.config_toml(),
        a.cache_size
    );
    let daemon = Daemon::builder()
        .profile("bench", BENCH_PROFILE)
        .config(&config)
        .log_level(&a.log)
        .start();
    eprintln!(
        "dns-bench: shieldd pid {}, upstream 127.0.0.1:{}",
        daemon.pid(),
        upstream.port()
    );

    // Container S, attached as podman would.
    let (ns_s, id_s) = attach(&daemon);

    // Namespace R: the reference's table, the upstream clone and the reference proxy.
    let ns_r = NsProcess::spawn(Owner::Root);
    ns_r.ip_batch("link set lo up\n");
    let table = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(
        table.path(),
        format!(
            "table inet {REF_TABLE} {{\n  set dns_v4 {{\n    type ipv4_addr\n    flags {}\n  }}\n}}\n",
            a.ref_flags
        ),
    )
    .expect("write table");
    nft_in(&ns_r, &["-f", &table.path().display().to_string()]);
    let clone = NsServer::dnsmasq(&ns_r, &upstream_clone_args(&answers));
    let reference = match a.reference {
        Reference::Dnsmasq => NsServer::dnsmasq(&ns_r, &reference_args()),
        Reference::Forwarder => NsServer::forwarder(&ns_r),
    };

    let pids = Pids {
        shieldd: daemon.pid(),
        reference: reference.child.id(),
    };
    let clients = Clients {
        direct_host: udp_socket_in(
            None,
            SocketAddr::from((Ipv4Addr::LOCALHOST, upstream.port())),
        ),
        shield: udp_socket_in(Some(&ns_s.netns_path()), dns53()),
        direct_ref: udp_socket_in(
            Some(&ns_r.netns_path()),
            SocketAddr::from((Ipv4Addr::LOCALHOST, REF_UPSTREAM_PORT)),
        ),
        reference: udp_socket_in(Some(&ns_r.netns_path()), dns53()),
    };
    wait_answering(&clients.direct_host, "upstream", HIT_NAME, HIT_ADDR);
    wait_answering(
        &clients.direct_ref,
        "upstream clone in R",
        HIT_NAME,
        HIT_ADDR,
    );
    wait_answering(&clients.shield, "shield proxy in S", HIT_NAME, HIT_ADDR);
    wait_answering(
        &clients.reference,
        "reference proxy in R",
        HIT_NAME,
        HIT_ADDR,
    );
    // Both sets now hold the hit address, and nothing else (R's nothing at all behind the
    // plain forwarder, which inserts nothing).
    let ref_learns = usize::from(a.reference == Reference::Dnsmasq);
    assert_eq!(
        set_len(&ns_s, "shield"),
        1,
        "S's dns_v4 after the first answer"
    );
    assert_eq!(
        set_len(&ns_r, REF_TABLE),
        ref_learns,
        "R's dns_v4 after the first answer"
    );

    let mut phases = Vec::new();
    let mut filled = 0;
    let mut next_miss = 0;
    for &size in &a.sizes {
        let fill_shield = fill(&ns_s, "shield", filled, size);
        let fill_ref = fill(&ns_r, REF_TABLE, filled, size);
        filled = size;
        eprintln!(
            "dns-bench: dns sets filled to {size} (+{} learnt); measuring…",
            1 + next_miss
        );
        let Measured {
            samples,
            cpu,
            rounds,
            took,
        } = phase(
            &clients,
            pids,
            &mut next_miss,
            a.warmup,
            a.count,
            a.budget,
            a.pause,
        );
        // Fill + the hit address + one new address per round (warm-up included).
        let expected = size + 1 + next_miss;
        let len_shield = set_len(&ns_s, "shield");
        let len_ref = set_len(&ns_r, REF_TABLE);
        assert_eq!(len_shield, expected, "S's dns_v4: every miss inserted");
        assert_eq!(
            len_ref,
            if ref_learns == 1 { expected } else { size },
            "R's dns_v4: every miss inserted (the plain forwarder: none)"
        );
        eprintln!(
            "dns-bench: size {size}: {rounds} rounds in {:.1} s",
            took.as_secs_f64()
        );
        phases.push(Phase {
            size,
            samples,
            rounds,
            took,
            fill_shield,
            fill_ref,
            len_shield,
            len_ref,
            cpu,
        });
    }
    // How often the upstream saw the hit name: once per cache eviction or expiry, not per round.
    let hit_upstream = upstream
        .log_text()
        .matches(&format!("query[A] {HIT_NAME} from"))
        .count();
    let rounds_total: usize = phases.iter().map(|p| p.rounds + a.warmup).sum();
    assert!(
        hit_upstream <= 2 + rounds_total / 100,
        "the shield proxy forwarded {HIT_NAME} {hit_upstream} times in {rounds_total} rounds: \
         the cache is not answering"
    );

    // Throughput: more containers on the same daemon.
    let mut runs = Vec::new();
    let mut extra = Vec::new();
    if a.containers > 0 {
        eprintln!("dns-bench: attaching {} containers…", a.containers);
        let sockets: Vec<UdpSocket> = (0..a.containers)
            .map(|c| {
                let (ns, id) = attach(&daemon);
                let socket = udp_socket_in(Some(&ns.netns_path()), dns53());
                wait_answering(
                    &socket,
                    "shield proxy",
                    &format!("hit.c{c}.{FLOOD_DOMAIN}"),
                    FLOOD_ADDR,
                );
                extra.push((ns, id));
                socket
            })
            .collect();
        for (label, distinct) in [
            ("same name per container (cache hit + insert)", false),
            ("distinct names (forward + insert)", true),
        ] {
            eprintln!("dns-bench: throughput, {label}…");
            let t = throughput(label, &sockets, daemon.pid(), a.window, a.secs, distinct);
            assert!(
                t.errors == 0,
                "throughput ({label}): {} wrong answers, first: {} (rate limit?)",
                t.errors,
                t.first_error.as_deref().unwrap_or("")
            );
            assert!(t.answers > 0, "throughput ({label}): no answer at all");
            runs.push(t);
        }
        for (ns, _) in &extra {
            assert!(
                has_element(ns, "shield", FLOOD_ADDR),
                "a throughput container's dns_v4 lacks {FLOOD_ADDR}"
            );
        }
    }

    // Release everything, as container stops would; then stop the daemon.
    for (_, id) in &extra {
        release(&daemon, id);
    }
    release(&daemon, &id_s);
    let problems = daemon
        .log()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    let ref_errors = reference
        .log_text()
        .lines()
        .filter(|l| l.contains("rror"))
        .count();
    drop(clients);
    daemon.stop();
    drop(reference);
    drop(clone);
    drop(extra);
    drop(ns_s);
    drop(ns_r);

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "DNS proxy latency: one UDP query at a time from inside each namespace, A records; \
         rootful daemon, {cpus} CPUs, daemon log {}, cache_size {}; per round one query by each \
         method, order rotated, {} µs of pause after each query; {} warm-up rounds per size \
         discarded; CPU: time on CPU of the answering proxy process (all threads, \
         /proc/PID/task/*/schedstat) per query; load average at start: {}",
        a.log,
        a.cache_size,
        a.pause.as_micros(),
        a.warmup,
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    for p in &phases {
        println!();
        println!(
            "{} fill elements in both dns_v4 sets (fill with nft -f: S {} ms, R {} ms); \
             {} rounds in {:.1} s; sets at the end: S {}, R {} elements",
            p.size,
            p.fill_shield.as_millis(),
            p.fill_ref.as_millis(),
            p.rounds,
            p.took.as_secs_f64(),
            p.len_shield,
            p.len_ref,
        );
        println!();
        println!(
            "| {:<44} | {:>5} | {:>7} | {:>7} | {:>7} | {:>7} | {:>7} | {:>7} | {:>8} |",
            format!("method (µs per answer), {} elements", thousands(p.size)),
            "n",
            "p50",
            "p90",
            "p99",
            "max",
            "mean",
            "CPU p50",
            "CPU mean"
        );
        println!(
            "|{}|------:|{}--------:|---------:|",
            "-".repeat(46),
            "--------:|".repeat(5)
        );
        for m in METHODS {
            println!("{}", row(&m.label(a.reference), p.of(m), p.cpu_of(m)));
        }
    }
    println!();
    println!("Added latency, µs: pXX(proxy) − pXX(direct query of the same upstream)");
    println!();
    let mut header = String::from("| added (µs)                   |");
    let mut rule = String::from("|------------------------------|");
    for p in &phases {
        write!(header, " {0:>6} p50 | {0:>6} p99 |", thousands(p.size)).expect("string");
        rule.push_str("-----------:|-----------:|");
    }
    println!("{header}");
    println!("{rule}");
    for (name, m) in [
        ("shield, cache miss".to_owned(), Method::ShieldMiss),
        ("shield, cache hit".to_owned(), Method::ShieldHit),
        (a.reference.row(Method::RefMiss), Method::RefMiss),
        (a.reference.row(Method::RefHit), Method::RefHit),
    ] {
        let mut line = format!("| {name:<28} |");
        for p in &phases {
            write!(
                line,
                " {:>10.0} | {:>10.0} |",
                added(p, m, 50.0),
                added(p, m, 99.0)
            )
            .expect("string");
        }
        println!("{line}");
    }
    if let Some(last) = phases.last() {
        println!();
        for (name, m) in [("miss", Method::ShieldMiss), ("hit", Method::ShieldHit)] {
            let (p50, p99) = (added(last, m, 50.0), added(last, m, 99.0));
            println!(
                "target at {} elements, shield {name}: p50 added {p50:.0} µs (≤ 100: {}), \
                 p99 added {p99:.0} µs (≤ 1000: {})",
                last.size,
                if p50 <= 100.0 { "met" } else { "MISSED" },
                if p99 <= 1000.0 { "met" } else { "MISSED" },
            );
        }
    }
    println!(
        "upstream queries for {HIT_NAME} (shield's cache hits forwarded): {hit_upstream} in \
         {rounds_total} rounds"
    );
    if !runs.is_empty() {
        println!();
        println!(
            "Throughput: {} containers, one client thread each (in this process) keeping {} \
             queries outstanding, {} s measured after {} s warm-up; CPU shares are of one core",
            a.containers,
            a.window,
            a.secs,
            LOAD_WARMUP.as_secs()
        );
        println!();
        println!(
            "| {:<46} | {:>9} | {:>7} | {:>7} | {:>13} | {:>7} | {:>8} | {:>8} | {:>8} |",
            "workload",
            "answers/s",
            "p50 µs",
            "p99 µs",
            "daemon CPU ms",
            "daemon",
            "clients",
            "machine",
            "timeouts"
        );
        println!(
            "| {:<46} | {:>9} | {:>7} | {:>7} | {:>13} | {:>7} | {:>8} | {:>8} | {:>8} |",
            "", "", "", "", "/1000 answers", "CPU", "CPU", "busy", ""
        );
        println!(
            "|{}|----------:|--------:|--------:|--------------:|--------:|---------:|---------:|---------:|",
            "-".repeat(48),
        );
        for t in &runs {
            let secs = t.window.as_secs_f64();
            let rate = t.answers as f64 / secs;
            println!(
                "| {:<46} | {:>9.0} | {:>7} | {:>7} | {:>13.1} | {:>6.0}% | {:>7.0}% | {:>7.0}% | {:>8} |",
                t.label,
                rate,
                us(percentile(&t.latencies, 50.0)),
                us(percentile(&t.latencies, 99.0)),
                t.daemon_cpu * 1e3 / (t.answers as f64 / 1e3),
                t.daemon_cpu / secs * 100.0,
                t.bench_cpu / secs * 100.0,
                t.machine_busy * cpus as f64 * 100.0,
                t.timeouts,
            );
        }
        let best = runs[0].answers as f64 / runs[0].window.as_secs_f64();
        println!();
        println!(
            "target ≥ 20 000 answers/s (cache hits): {}",
            if best >= 20_000.0 { "met" } else { "MISSED" }
        );
    }
    println!();
    println!(
        "daemon log: {problems} WARN/ERROR lines; reference ({}) log: {ref_errors} error \
         lines; whole run {:.1} s; binaries from {}",
        a.reference.name(),
        total.elapsed().as_secs_f64(),
        bins::describe()
    );
}
