//! The per-container DNS proxy end to end: the real hook attaches a container, the daemon's
//! helper binds `127.0.0.1:53` and `[::1]:53` inside the container's network namespace, and
//! queries made *from inside that namespace* (`dig`, or the `probe` helper) go through the
//! proxy to a real upstream (dnsmasq on the test's loopback). Each test checks what the client
//! got, what the kernel holds (`nft` in the container's namespace: the `dns_v4`/`dns_v6` sets
//! and their element timeouts), whether traffic to the answered address passes, what the
//! upstream was asked (dnsmasq's query log), and what the audit trail says.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use shield_tests::bins;
use shield_tests::control::{assert_passes, assert_refused, audit};
use shield_tests::daemon::Daemon;
use shield_tests::dns::{DigAnswer, Dnsmasq, dig};
use shield_tests::hook::{Stage, oci_state};
use shield_tests::netns::{ECHO_PORT, NsProcess, Owner, TestNet};
use shield_tests::nft;
use shield_tests::probe::{self, Outcome, Proto};

/// The profile every container of these tests is attached with.
const PROFILE: &str = "dns";

/// The container name given to the hook.
const NAME: &str = "dnsbox";

/// A daemon as `owner` with profile [`PROFILE`] = `profile` and the `[dns]` section of `dns`
/// plus `extra` (more `[dns]` keys).
fn start_daemon(owner: Owner, profile: &str, dns: &Dnsmasq, extra: &str) -> Daemon {
    Daemon::builder()
        .owner(owner)
        .profile(PROFILE, profile)
        .config(&format!("{}{extra}", dns.config_toml()))
        .start()
}

/// Attaches the container of `net` through the real createRuntime hook; returns its id.
fn attach(daemon: &Daemon, net: &TestNet) -> String {
    let id = shield_tests::fresh_container_id();
    daemon
        .hook(Stage::CreateRuntime, Some(net.pid()))
        .stdin(oci_state(
            &id,
            Some(net.pid()),
            &[("shield.profiles", PROFILE), ("shield.name", NAME)],
        ))
        .run()
        .assert_success();
    id
}

/// `dig @127.0.0.1 NAME TYPE ARGS…` from inside the container.
fn ask(net: &TestNet, name: &str, qtype: &str, args: &[&str]) -> DigAnswer {
    let mut all = vec![name, qtype];
    all.extend_from_slice(args);
    dig(&net.container, "127.0.0.1", &all)
}

/// Panics unless `answer` has status `want`.
fn assert_status(answer: &DigAnswer, want: &str, what: &str) {
    assert_eq!(
        answer.status(),
        want,
        "{what}: the proxy must answer {want}; dig said:\n{}",
        answer.text
    );
}

/// Panics unless `answer` is NOERROR with exactly the addresses `want` (any order).
fn assert_addresses(answer: &DigAnswer, want: &[IpAddr], what: &str) {
    assert_status(answer, "NOERROR", what);
    let mut got = answer.addresses();
    got.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(got, want, "{what}: addresses; dig said:\n{}", answer.text);
}

fn table(net: &TestNet) -> nft::Table {
    nft::list_table(&net.container).expect("table inet shield in the container's namespace")
}

/// One element of a dns set with its timeout and the time it has left, as `nft -j` lists them.
#[derive(Clone, Debug)]
struct DnsElement {
    addr: IpAddr,
    timeout: Option<u64>,
    expires: Option<u64>,
}

/// The elements of dns set `set` (`dns_v4`, `dns_v6`) with their timeouts.
fn dns_elements(net: &TestNet, set: &str) -> Vec<DnsElement> {
    let t = table(net);
    let Some(found) = t.json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("set"))
        .find(|s| s["name"] == set)
    else {
        panic!("set {set} missing from the container's table: {}", t.json);
    };
    let elems = match &found["elem"] {
        Value::Array(a) => a.clone(),
        _ => Vec::new(),
    };
    elems
        .iter()
        .map(|e| {
            let (val, timeout, expires) = match e.get("elem") {
                Some(inner) => (
                    &inner["val"],
                    inner["timeout"].as_u64(),
                    inner["expires"].as_u64(),
                ),
                None => (e, None, None),
            };
            DnsElement {
                addr: val
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{set}: element is not an address: {e}")),
                timeout,
                expires,
            }
        })
        .collect()
}

/// Panics unless both dns sets are empty.
fn assert_dns_sets_empty(net: &TestNet, when: &str) {
    let t = table(net);
    for set in ["dns_v4", "dns_v6"] {
        assert!(
            t.set(set).is_empty(),
            "{when}: nothing may be let through, but {set} holds {:?}",
            t.set(set)
        );
    }
}

/// The DNS events of the container's audit trail (`shieldctl --json logs`).
fn dns_events(daemon: &Daemon, id: &str) -> Vec<Value> {
    audit(daemon, Some(id), 1000)
        .into_iter()
        .filter(|e| e["action"] == "dns")
        .collect()
}

/// The DNS events of the container's audit trail once `done` holds for them (the proxy records
/// a decision right after its answer has left, so the answer can come a moment before the
/// line); the events as they are after 5 s otherwise.
fn dns_events_once(daemon: &Daemon, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = dns_events(daemon, id);
        if done(&events) || Instant::now() >= deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether one of `events` is a decision on `name` whose detail mentions `needle`.
fn has_dns_event(events: &[Value], name: &str, needle: &str) -> bool {
    events
        .iter()
        .any(|e| e["target"] == name && e["detail"].as_str().unwrap_or("").contains(needle))
}

/// The audit trail of `id` holds a DNS decision on `name` whose detail mentions `needle`.
fn assert_dns_audited(daemon: &Daemon, id: &str, name: &str, needle: &str, what: &str) {
    let events = dns_events_once(daemon, id, |events| has_dns_event(events, name, needle));
    assert!(
        has_dns_event(&events, name, needle),
        "the audit trail must show {what}: {events:?}"
    );
}

/// `probe serve ECHO_PORT ADDRS…` in `ns`; killed on drop.
struct EchoServer(Child);

impl EchoServer {
    fn start(ns: &NsProcess, addrs: &[IpAddr]) -> EchoServer {
        let mut child = ns
            .command(bins::bin_dir().join(bins::PROBE))
            .arg("serve")
            .arg(ECHO_PORT.to_string())
            .args(addrs.iter().map(IpAddr::to_string))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn probe serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read from probe serve");
        assert_eq!(line.trim(), "ready", "probe serve did not start");
        EchoServer(child)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An allowlisted name resolves from inside the container, over UDP and TCP, on `127.0.0.1`
/// and `::1`; its addresses (which no IP allow covers) are refused before the query and pass
/// right after it, because the proxy put them into the dns sets before answering.
fn allowlisted_name_opens_its_addresses(owner: Owner) {
    shield_tests::require_root();
    let net = TestNet::new(owner);
    let (b, b6) = (net.peer_b(), net.peer_v6_b());
    let dns = Dnsmasq::builder()
        .address("allowed.test", b)
        .address("allowed.test", b6)
        .start();
    let daemon = start_daemon(owner, "# names only\nallowed.test\n", &dns, "");
    let id = attach(&daemon, &net);

    assert_refused(&net, b, "before any query");
    assert_refused(&net, b6, "before any query");
    assert_dns_sets_empty(&net, "before any query");
    assert_eq!(dns.queries_for("allowed.test"), 0);

    let answer = ask(&net, "allowed.test", "A", &[]);
    assert_addresses(&answer, &[b], "A allowed.test over UDP");
    assert!(
        answer.answers.iter().all(|r| r.ttl <= 600),
        "the client may not be told a TTL above the upstream's: {}",
        answer.text
    );
    assert_passes(&net, b, "right after the A query");
    assert!(
        table(&net).covers("dns_v4", b),
        "dns_v4: {:?}",
        table(&net).set("dns_v4")
    );
    assert_refused(&net, b6, "the A query opens no IPv6 address");

    let answer = dig(&net.container, "::1", &["allowed.test", "AAAA"]);
    assert_addresses(&answer, &[b6], "AAAA allowed.test over UDP to ::1");
    assert_passes(&net, b6, "right after the AAAA query");
    assert!(
        table(&net).covers("dns_v6", b6),
        "dns_v6: {:?}",
        table(&net).set("dns_v6")
    );

    let answer = ask(&net, "allowed.test", "A", &["+tcp"]);
    assert_addresses(&answer, &[b], "A allowed.test over TCP");
    let answer = dig(&net.container, "::1", &["allowed.test", "AAAA", "+tcp"]);
    assert_addresses(&answer, &[b6], "AAAA allowed.test over TCP to ::1");

    assert!(
        dns.queries_for("allowed.test") >= 2,
        "the answers must come from the upstream:\n{}",
        dns.log_text()
    );
    // The name is allowed, not the peer: its other address stays refused.
    assert_refused(&net, net.peer_a(), "an address no answer named");

    // `shieldctl dns` lists the name with both addresses and the time they have left.
    let listed = daemon.ctl_json(&["dns", &id]);
    let names = listed["names"].as_array().expect("names array");
    assert_eq!(names.len(), 1, "{listed}");
    assert_eq!(names[0]["name"], "allowed.test", "{listed}");
    let mut addresses: Vec<String> = names[0]["addresses"]
        .as_array()
        .expect("addresses array")
        .iter()
        .map(|a| {
            let left = a["expires_in_ms"].as_u64().expect("expires_in_ms");
            assert!(left > 500_000 && left <= 600_000, "{listed}");
            a["address"].as_str().expect("address").to_owned()
        })
        .collect();
    addresses.sort();
    let mut expected = vec![b.to_string(), b6.to_string()];
    expected.sort();
    assert_eq!(addresses, expected, "{listed}");
    daemon.stop();
}

#[test]
fn rootful_allowlisted_name_resolves_and_opens_its_addresses() {
    allowlisted_name_opens_its_addresses(Owner::Root);
}

#[test]
fn rootless_allowlisted_name_resolves_and_opens_its_addresses() {
    allowlisted_name_opens_its_addresses(Owner::test_user());
}

/// A bare profile name allows itself and its subdomains, label-aligned; `*.name` allows only
/// names strictly below it. Refused names get NXDOMAIN without the upstream being asked.
#[test]
fn bare_and_wildcard_profile_names() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let b = net.peer_b();
    let dns = Dnsmasq::builder()
        .address("example.test", b)
        .address("badexample.test", b)
        .address("sibling.test", b)
        .address("wild.test", b)
        .start();
    let daemon = start_daemon(Owner::Root, "example.test\n*.wild.test\n", &dns, "");
    let id = attach(&daemon, &net);

    for name in [
        "badexample.test",
        "sibling.test",
        "test",
        "wild.test",
        "example.test.sibling.test",
    ] {
        let answer = ask(&net, name, "A", &[]);
        assert_status(&answer, "NXDOMAIN", &format!("{name} is not allowlisted"));
        assert_eq!(
            dns.queries_for(name),
            0,
            "a refused name must never reach the upstream: {name}\n{}",
            dns.log_text()
        );
    }
    assert_dns_sets_empty(&net, "after refused names only");
    assert_refused(&net, b, "after refused names only");

    for name in [
        "example.test",
        "www.example.test",
        "a.b.example.test",
        "WwW.ExAmPlE.TeSt",
        "a.wild.test",
        "x.y.wild.test",
    ] {
        let answer = ask(&net, name, "A", &[]);
        assert_addresses(&answer, &[b], &format!("{name} is allowlisted"));
    }
    assert!(table(&net).covers("dns_v4", b));
    assert_passes(&net, b, "after the allowlisted names");
    assert!(!dns_events(&daemon, &id).is_empty());
    daemon.stop();
}

/// By default a name that is not allowlisted gets NXDOMAIN, never reaches the upstream, and
/// opens nothing.
#[test]
fn unlisted_name_gets_nxdomain_and_opens_nothing() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let b = net.peer_b();
    let dns = Dnsmasq::builder()
        .address("allowed.test", net.peer_a())
        .address("other.test", b)
        .start();
    let daemon = start_daemon(Owner::Root, "allowed.test\n", &dns, "");
    attach(&daemon, &net);

    for qtype in ["A", "AAAA"] {
        let answer = ask(&net, "other.test", qtype, &[]);
        assert_status(&answer, "NXDOMAIN", &format!("{qtype} other.test"));
        assert!(answer.answers.is_empty(), "{}", answer.text);
    }
    assert_status(
        &ask(&net, "other.test", "A", &["+tcp"]),
        "NXDOMAIN",
        "other.test over TCP",
    );
    assert_eq!(
        dns.queries_for("other.test"),
        0,
        "the query must never leave the host:\n{}",
        dns.log_text()
    );
    assert_dns_sets_empty(&net, "after an unlisted name");
    assert_refused(&net, b, "the unlisted name's address");
    daemon.stop();
}

/// With `dns.unlisted = "forward"` an unlisted name resolves, but nothing is let through.
#[test]
fn unlisted_forward_resolves_but_opens_nothing() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let b = net.peer_b();
    let dns = Dnsmasq::builder()
        .address("allowed.test", net.peer_a())
        .address("other.test", b)
        .start();
    let daemon = start_daemon(
        Owner::Root,
        "allowed.test\n",
        &dns,
        "unlisted = \"forward\"\n",
    );
    attach(&daemon, &net);

    let answer = ask(&net, "other.test", "A", &[]);
    assert_addresses(&answer, &[b], "other.test, forwarded");
    assert_eq!(dns.queries_for("other.test"), 1, "{}", dns.log_text());
    assert_dns_sets_empty(&net, "after a forwarded name");
    assert_refused(&net, b, "a forwarded name's address");
    daemon.stop();
}

/// A CNAME chain opens the addresses at its end (the name asked for is the one allowlisted,
/// not the targets); an AAAA answer opens its IPv6 address; every address of an answer with
/// several is opened.
#[test]
fn cname_chain_aaaa_and_several_addresses_are_all_opened() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let (b, b6) = (net.peer_b(), net.peer_v6_b());
    let multi: Vec<IpAddr> = (1..=5)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    let builder = Dnsmasq::builder()
        .cname("alias.test", "middle.test")
        .cname("middle.test", "target.test")
        .host("target.test", b, 600)
        .host("v6.test", b6, 600);
    let dns = multi
        .iter()
        .fold(builder, |d, a| d.host("multi.test", *a, 600))
        .start();
    let daemon = start_daemon(Owner::Root, "alias.test\nv6.test\nmulti.test\n", &dns, "");
    attach(&daemon, &net);

    // The chain's own names are not allowlisted.
    assert_status(
        &ask(&net, "target.test", "A", &[]),
        "NXDOMAIN",
        "target.test",
    );
    assert_refused(&net, b, "before the CNAME query");
    let answer = ask(&net, "alias.test", "A", &[]);
    assert_addresses(&answer, &[b], "alias.test through its CNAME chain");
    let cnames: Vec<&str> = answer
        .answers
        .iter()
        .filter(|r| r.record_type == "CNAME")
        .map(|r| r.data.as_str())
        .collect();
    assert_eq!(cnames, ["middle.test", "target.test"], "{}", answer.text);
    assert_passes(&net, b, "after the CNAME query");
    assert!(table(&net).covers("dns_v4", b));

    assert_refused(&net, b6, "before the AAAA query");
    let answer = ask(&net, "v6.test", "AAAA", &[]);
    assert_addresses(&answer, &[b6], "AAAA v6.test");
    assert_passes(&net, b6, "after the AAAA query");
    assert!(table(&net).covers("dns_v6", b6));

    let answer = ask(&net, "multi.test", "A", &[]);
    assert_addresses(&answer, &multi, "multi.test");
    let t = table(&net);
    for a in &multi {
        assert!(
            t.covers("dns_v4", *a),
            "{a} of multi.test missing from dns_v4: {:?}",
            t.set("dns_v4")
        );
    }
    daemon.stop();
}

/// An element's timeout is the record's TTL clamped to `[dns.min_ttl, dns.max_ttl]` (defaults
/// 30 s and 1 h): TTL 1 becomes 30 s, TTL 600 stays, TTL 7200 becomes 1 h (and the client is
/// told at most 1 h).
#[test]
fn element_timeouts_are_ttls_clamped() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let (short, mid, long) = (
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3)),
    );
    let dns = Dnsmasq::builder()
        .host("short.test", short, 1)
        .host("mid.test", mid, 600)
        .host("long.test", long, 7200)
        .start();
    let daemon = start_daemon(Owner::Root, "short.test\nmid.test\nlong.test\n", &dns, "");
    attach(&daemon, &net);

    let answer = ask(&net, "long.test", "A", &[]);
    assert_addresses(&answer, &[long], "long.test");
    assert!(
        answer.answers.iter().all(|r| r.ttl <= 3600),
        "the client may not be told more than max_ttl: {}",
        answer.text
    );
    for name in ["short.test", "mid.test"] {
        assert_status(&ask(&net, name, "A", &[]), "NOERROR", name);
    }
    let elements = dns_elements(&net, "dns_v4");
    let find = |addr: IpAddr| {
        elements
            .iter()
            .find(|e| e.addr == addr)
            .unwrap_or_else(|| panic!("{addr} missing from dns_v4: {elements:?}"))
            .clone()
    };
    for (addr, ttl, timeout) in [(short, 1, 30), (mid, 600, 600), (long, 7200, 3600)] {
        let e = find(addr);
        assert_eq!(
            e.timeout,
            Some(timeout),
            "TTL {ttl} must give an element timeout of {timeout} s: {e:?}"
        );
        let expires = e
            .expires
            .unwrap_or_else(|| panic!("no expiry listed: {e:?}"));
        assert!(
            expires + 10 >= timeout && expires <= timeout,
            "TTL {ttl}: the element must have about {timeout} s left: {e:?}"
        );
    }
    daemon.stop();
}

/// An NXDOMAIN from the upstream for an allowlisted name reaches the client as NXDOMAIN, and
/// opens nothing.
#[test]
fn upstream_nxdomain_is_passed_through() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let dns = Dnsmasq::builder().nxdomain("gone.test").start();
    let daemon = start_daemon(Owner::Root, "gone.test\n", &dns, "");
    let id = attach(&daemon, &net);

    let answer = ask(&net, "www.gone.test", "A", &[]);
    assert_status(&answer, "NXDOMAIN", "the upstream's NXDOMAIN");
    assert_eq!(
        dns.queries_for("www.gone.test"),
        1,
        "the NXDOMAIN must be the upstream's, not a refusal:\n{}",
        dns.log_text()
    );
    assert_dns_sets_empty(&net, "after an NXDOMAIN");
    assert_dns_audited(
        &daemon,
        &id,
        "www.gone.test",
        "allowed",
        "the allowed query",
    );
    daemon.stop();
}

/// An answer bigger than the client's UDP size gets TC over UDP (all its addresses are opened
/// anyway), and the client's retry over TCP gets every record.
#[test]
fn answer_too_big_for_udp_is_truncated_and_served_over_tcp() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let many: Vec<IpAddr> = (1..=60)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    let dns = many
        .iter()
        .fold(Dnsmasq::builder(), |d, a| d.host("big.test", *a, 600))
        .start();
    let daemon = start_daemon(Owner::Root, "big.test\n", &dns, "");
    attach(&daemon, &net);

    // No EDNS: 512 bytes at most over UDP; 60 A records take about 1 kB.
    let answer = ask(&net, "big.test", "A", &["+noedns", "+ignore"]);
    assert_status(&answer, "NOERROR", "big.test over UDP");
    assert!(
        answer.has_flag("tc"),
        "an answer over 512 bytes must come back truncated over UDP:\n{}",
        answer.text
    );
    assert!(
        answer.answers.len() < many.len(),
        "a truncated answer cannot hold every record:\n{}",
        answer.text
    );

    let answer = ask(&net, "big.test", "A", &["+noedns"]);
    assert!(
        answer.text.contains("retrying in TCP mode"),
        "dig must have retried over TCP:\n{}",
        answer.text
    );
    assert!(!answer.has_flag("tc"), "{}", answer.text);
    assert_addresses(&answer, &many, "big.test over TCP");

    // With a large EDNS size the whole answer fits in one datagram.
    let answer = ask(&net, "big.test", "A", &["+bufsize=4096", "+ignore"]);
    assert!(!answer.has_flag("tc"), "{}", answer.text);
    assert_addresses(&answer, &many, "big.test over UDP with EDNS 4096");

    let t = table(&net);
    for a in &many {
        assert!(t.covers("dns_v4", *a), "{a} missing from dns_v4");
    }
    daemon.stop();
}

/// Garbage with a DNS header gets FORMERR with its id; the proxy keeps serving.
#[test]
fn malformed_query_gets_formerr() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let dns = Dnsmasq::builder()
        .address("allowed.test", net.peer_b())
        .start();
    let daemon = start_daemon(Owner::Root, "allowed.test\n", &dns, "");
    attach(&daemon, &net);

    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Id 0xbeef, a query with one question whose first label claims 63 bytes but has 3.
    let garbage = [
        0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, b'a', b'b',
        b'c',
    ];
    let reply = probe::udp_raw(&net.container, loopback, 53, &garbage)
        .unwrap_or_else(|p| panic!("no reply to a malformed query: {}", p.line));
    assert!(
        reply.len() >= 12,
        "reply shorter than a header: {reply:02x?}"
    );
    assert_eq!(
        reply[..2],
        [0xbe, 0xef],
        "the reply must carry the query's id"
    );
    assert_ne!(reply[2] & 0x80, 0, "QR must be set: {reply:02x?}");
    assert_eq!(
        reply[3] & 0x0f,
        1,
        "rcode must be FORMERR (1): {reply:02x?}"
    );

    // Still serving after the garbage.
    assert_addresses(
        &ask(&net, "allowed.test", "A", &[]),
        &[net.peer_b()],
        "a good query after the garbage",
    );
    daemon.stop();
}

/// A UDP socket on loopback that reads queries and never answers; counts what it got.
struct SilentUpstream {
    port: u16,
    received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SilentUpstream {
    fn start() -> SilentUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the silent upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let port = socket.local_addr().expect("local_addr").port();
        let received = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if socket.recv_from(&mut buf).is_ok() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        SilentUpstream {
            port,
            received,
            stop,
        }
    }
}

impl Drop for SilentUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An upstream that never answers: SERVFAIL once `dns.timeout` (1 s) is over, not later and
/// not a client timeout.
#[test]
fn silent_upstream_gets_servfail_after_the_timeout() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let upstream = SilentUpstream::start();
    let daemon = Daemon::builder()
        .profile(PROFILE, "allowed.test\n")
        .config(&format!(
            "[dns]\nupstream = [\"127.0.0.1:{}\"]\ntimeout = \"1s\"\n",
            upstream.port
        ))
        .start();
    let id = attach(&daemon, &net);

    let answer = ask(&net, "allowed.test", "A", &[]);
    assert_status(&answer, "SERVFAIL", "a silent upstream");
    assert!(
        answer.elapsed >= Duration::from_millis(900)
            && answer.elapsed <= Duration::from_millis(2500),
        "SERVFAIL must come after the 1 s timeout, not much later: {:?}",
        answer.elapsed
    );
    assert!(
        upstream.received.load(Ordering::Relaxed) >= 1,
        "the query must have been forwarded to the silent upstream"
    );
    assert_dns_sets_empty(&net, "after SERVFAIL");
    assert_dns_audited(&daemon, &id, "allowed.test", "SERVFAIL", "the failure");
    daemon.stop();
}

/// Resolving and connecting at once never fails: the address is in the set before the answer
/// leaves the proxy. 1000 rounds over 20 names (TTL 1 s, min_ttl = max_ttl = 1 s, so the
/// elements keep expiring and the answers come from the upstream and from the cache), each
/// name answered with its own address on the peer.
#[test]
fn no_race_between_answer_and_connect() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let x = net.index();
    let addrs: Vec<IpAddr> = (100..120)
        .map(|h| IpAddr::V4(Ipv4Addr::new(10, 200, x, h)))
        .collect();
    net.peer.ip_batch(
        &addrs
            .iter()
            .map(|a| format!("addr add {a}/24 dev veth0\n"))
            .collect::<String>(),
    );
    let _server = EchoServer::start(&net.peer, &addrs);
    let names: Vec<String> = (0..addrs.len())
        .map(|i| format!("n{i}.race.test"))
        .collect();
    let dns = names
        .iter()
        .zip(&addrs)
        .fold(Dnsmasq::builder(), |d, (n, a)| d.host(n, *a, 1))
        .start();
    let daemon = start_daemon(
        Owner::Root,
        "race.test\n",
        &dns,
        "min_ttl = \"1s\"\nmax_ttl = \"1s\"\nrate_limit = 100000\nrate_burst = 100000\n",
    );
    attach(&daemon, &net);

    // Without the proxy's answer, every one of these addresses is refused.
    for a in [addrs[0], addrs[19]] {
        let p = net.probe(Proto::Tcp, a);
        assert_eq!(
            p.outcome,
            Outcome::Refused,
            "{a} before its query: {}",
            p.line
        );
    }

    let report = probe::resolve_connect(&net.container, ECHO_PORT, 1000, &names);
    assert_eq!(report.rounds, 1000);
    assert!(
        report.failures.is_empty(),
        "{} of 1000 connects right after the answer failed (first ones: {:?})",
        report.failures.len(),
        &report.failures[..report.failures.len().min(10)]
    );
    for n in &names {
        assert!(dns.queries_for(n) >= 1, "{n} never reached the upstream");
    }
    eprintln!(
        "1000 resolve+connect rounds in {:?}; {} upstream queries",
        report.elapsed,
        names.iter().map(|n| dns.queries_for(n)).sum::<usize>()
    );
    daemon.stop();
}

fn sleep_until(t: Instant) {
    if let Some(left) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

/// Learnt addresses live for the clamped TTL (max_ttl 2 s, record TTL 10 s), then connects are
/// refused; an answer served from the proxy's cache refreshes the element.
#[test]
fn learnt_addresses_expire_and_cached_answers_refresh_them() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let b = net.peer_b();
    let dns = Dnsmasq::builder().host("exp.test", b, 10).start();
    let daemon = start_daemon(
        Owner::Root,
        "exp.test\n",
        &dns,
        "min_ttl = \"2s\"\nmax_ttl = \"2s\"\n",
    );
    attach(&daemon, &net);
    let tcp = |when: &str| {
        let start = Instant::now();
        let p = net.probe(Proto::Tcp, b);
        eprintln!("{when}: {}", p.line);
        (start, p)
    };

    assert_addresses(&ask(&net, "exp.test", "A", &[]), &[b], "first query");
    // The element was inserted before the answer: it expires by t0 + 2 s.
    let t0 = Instant::now();
    let (_, p) = tcp("right after the first query");
    assert!(p.is_ok(), "right after the first query: {}", p.line);

    sleep_until(t0 + Duration::from_millis(1000));
    let t1 = Instant::now();
    let answer = ask(&net, "exp.test", "A", &[]);
    let t1_done = Instant::now();
    assert_addresses(&answer, &[b], "second query");
    assert!(
        answer.answers.iter().all(|r| r.ttl <= 2),
        "the client is told at most max_ttl: {}",
        answer.text
    );
    assert_eq!(
        dns.queries_for("exp.test"),
        1,
        "the second answer must come from the proxy's cache:\n{}",
        dns.log_text()
    );

    // After the first element's expiry (t0 + 2 s), before the refreshed one's (t1 + 2 s).
    sleep_until(t0 + Duration::from_millis(2500));
    let (started, p) = tcp("between the two expiries");
    assert!(
        started < t1 + Duration::from_millis(1900),
        "the machine is too slow for this test's timing: probe started {:?} after the refresh",
        started - t1
    );
    assert!(
        p.is_ok(),
        "the cached answer must have refreshed the element; 2.5 s after the first answer: {}",
        p.line
    );

    // Past the refreshed element's expiry, with no query since.
    sleep_until(t1_done + Duration::from_millis(2600));
    assert_refused(&net, b, "after the refreshed element expired");
    assert!(
        !table(&net).covers("dns_v4", b),
        "dns_v4 still holds {b}: {:?}",
        dns_elements(&net, "dns_v4")
    );
    assert_eq!(dns.queries_for("exp.test"), 1, "{}", dns.log_text());

    // A cache hit (the record's 10 s are not over) opens it again.
    assert_addresses(&ask(&net, "exp.test", "A", &[]), &[b], "third query");
    assert_eq!(dns.queries_for("exp.test"), 1, "{}", dns.log_text());
    assert_passes(&net, b, "after a cached answer");
    daemon.stop();
}

/// When the addresses cannot be let through (the container's table was deleted behind the
/// daemon's back), the client gets SERVFAIL, never an answer it could not use.
#[test]
fn insert_failure_answers_servfail() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let b = net.peer_b();
    let dns = Dnsmasq::builder().address("ok.test", b).start();
    let daemon = start_daemon(Owner::Root, "ok.test\n", &dns, "");
    let id = attach(&daemon, &net);

    assert_addresses(
        &ask(&net, "one.ok.test", "A", &[]),
        &[b],
        "before the delete",
    );
    nft::delete_table(&net.container);

    // A fresh name (from the upstream) and the cached one (a cache hit inserts too).
    for name in ["two.ok.test", "one.ok.test"] {
        let answer = ask(&net, name, "A", &[]);
        assert_status(
            &answer,
            "SERVFAIL",
            &format!("{name} with no table to insert into"),
        );
        assert!(answer.answers.is_empty(), "{}", answer.text);
    }
    assert_dns_audited(&daemon, &id, "two.ok.test", "SERVFAIL", "the failed insert");
    daemon.stop();
}

/// Live changes reach the proxy at once: a refused name resolves right after `shieldctl allow`,
/// and after `shieldctl deny` it gets NXDOMAIN and what it resolved to leaves the dns sets.
#[test]
fn live_allow_and_deny_of_a_domain() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let b = net.peer_b();
    let elsewhere = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 50));
    let dns = Dnsmasq::builder()
        .host("live.test", elsewhere, 600)
        .host("sub.live.test", b, 600)
        .address("profile.test", net.peer_a())
        .start();
    let daemon = start_daemon(Owner::Root, "profile.test\n", &dns, "");
    let id = attach(&daemon, &net);

    assert_status(
        &ask(&net, "sub.live.test", "A", &[]),
        "NXDOMAIN",
        "before the allow",
    );
    assert_refused(&net, b, "before the allow");

    daemon.ctl(&["allow", &id, "live.test"]);
    // The allow resolved live.test itself; sub.live.test is learnt only through the proxy.
    assert!(!table(&net).covers("dns_v4", b));
    assert_refused(&net, b, "after the allow, before the query");
    assert_addresses(
        &ask(&net, "sub.live.test", "A", &[]),
        &[b],
        "right after the allow",
    );
    assert!(table(&net).covers("dns_v4", b));
    assert_passes(&net, b, "after the query");

    daemon.ctl(&["deny", &id, "live.test"]);
    assert_status(
        &ask(&net, "sub.live.test", "A", &[]),
        "NXDOMAIN",
        "right after the deny (the answer is still cached)",
    );
    assert_status(
        &ask(&net, "live.test", "A", &[]),
        "NXDOMAIN",
        "the denied name itself",
    );
    let t = table(&net);
    assert!(
        !t.covers("dns_v4", b) && !t.covers("dns_v4", elsewhere),
        "a deny must withdraw what the name and its subdomains resolved to: {:?}",
        t.set("dns_v4")
    );
    assert_refused(&net, b, "after the deny");

    // Allowing again lifts the deny.
    daemon.ctl(&["allow", &id, "live.test"]);
    assert_addresses(
        &ask(&net, "sub.live.test", "A", &[]),
        &[b],
        "after allowing again",
    );
    assert_passes(&net, b, "after allowing again");

    daemon.stop();
}

/// Two allowed names resolve to one address, with different TTLs. The shorter answer does not
/// cut the element short; denying the name with the longer answer keeps the address (the other
/// name still resolves to it) but only for the other name's time, not the denied one's.
#[test]
fn a_deny_cuts_a_shared_address_to_the_other_names_time() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let b = net.peer_b();
    let dns = Dnsmasq::builder()
        .host("long.test", b, 600)
        .host("short.test", b, 40)
        .start();
    let daemon = start_daemon(Owner::Root, "long.test\nshort.test\n", &dns, "");
    let id = attach(&daemon, &net);
    let element = |when: &str| {
        dns_elements(&net, "dns_v4")
            .into_iter()
            .find(|e| e.addr == b)
            .unwrap_or_else(|| panic!("{b} missing from dns_v4 {when}"))
    };

    assert_addresses(&ask(&net, "long.test", "A", &[]), &[b], "long.test");
    assert_addresses(&ask(&net, "short.test", "A", &[]), &[b], "short.test");
    let both = element("with both names");
    assert!(
        both.expires.is_some_and(|left| left > 500),
        "the shorter answer must not cut the element short: {both:?}"
    );

    daemon.ctl(&["deny", &id, "long.test"]);
    let kept = element("after the deny: short.test still resolves to it");
    assert!(
        kept.timeout
            .is_some_and(|timeout| (30..=40).contains(&timeout))
            && kept.expires.is_some_and(|left| left <= 40),
        "the element must be cut to short.test's 40 s: {kept:?}"
    );
    assert_passes(&net, b, "short.test still holds the address");
    daemon.stop();
}

/// In `block` mode nothing resolves (REFUSED, the upstream is not asked), the profile's names
/// included; back `up`, names resolve and open their addresses again. The container holds a
/// learnt address when the mode changes, as a running container does.
#[test]
fn block_mode_answers_refused() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let b = net.peer_b();
    let dns = Dnsmasq::builder().address("profile.test", b).start();
    let daemon = start_daemon(Owner::Root, "profile.test\n", &dns, "");
    let id = attach(&daemon, &net);
    assert_addresses(&ask(&net, "profile.test", "A", &[]), &[b], "before block");
    assert_eq!(dns.queries_for("profile.test"), 1);

    daemon.ctl(&["block", &id]);
    for name in ["profile.test", "www.profile.test", "other.test"] {
        assert_status(
            &ask(&net, name, "A", &[]),
            "REFUSED",
            &format!("{name} in block mode"),
        );
    }
    assert_eq!(
        dns.queries_for("www.profile.test"),
        0,
        "block mode must not forward:\n{}",
        dns.log_text()
    );

    daemon.ctl(&["up", &id]);
    assert_addresses(&ask(&net, "www.profile.test", "A", &[]), &[b], "back up");
    assert_passes(&net, b, "back up, after the query");
    daemon.stop();
}

/// Every DNS decision is in the container's audit trail, with the name, the verdict and the
/// addresses let through, through `shieldctl logs` and in `audit.jsonl`.
#[test]
fn audit_trail_records_dns_decisions() {
    shield_tests::require_root();
    let net = TestNet::new(Owner::Root);
    let (b, b6) = (net.peer_b(), net.peer_v6_b());
    let dns = Dnsmasq::builder()
        .address("allowed.test", b)
        .address("allowed.test", b6)
        .address("other.test", b)
        .start();
    let daemon = start_daemon(Owner::Root, "allowed.test\n", &dns, "");
    let id = attach(&daemon, &net);

    assert_status(&ask(&net, "allowed.test", "A", &[]), "NOERROR", "allowed");
    assert_status(
        &ask(&net, "allowed.test", "AAAA", &[]),
        "NOERROR",
        "allowed",
    );
    assert_status(&ask(&net, "other.test", "A", &[]), "NXDOMAIN", "refused");

    // The last answer's line is the last one written.
    let events = dns_events_once(&daemon, &id, |events| {
        has_dns_event(events, "other.test", "refused")
    });
    let detail_of = |target: &str, needle: &str| -> String {
        events
            .iter()
            .filter(|e| e["target"] == target)
            .filter_map(|e| e["detail"].as_str())
            .find(|d| d.contains(needle))
            .unwrap_or_else(|| {
                panic!("no dns event for {target} with {needle:?} in the audit trail: {events:?}")
            })
            .to_string()
    };
    let a = detail_of("allowed.test", &b.to_string());
    assert!(a.contains("allowed"), "{a}");
    let aaaa = detail_of("allowed.test", &b6.to_string());
    assert!(aaaa.contains("AAAA") && aaaa.contains("allowed"), "{aaaa}");
    let refused = detail_of("other.test", "refused");
    assert!(!refused.contains(&b.to_string()), "{refused}");
    for e in &events {
        assert_eq!(e["container"], id.as_str(), "{e}");
        assert_eq!(e["name"], NAME, "{e}");
    }

    // The same decisions are on disk.
    let mut text = String::new();
    std::fs::File::open(daemon.container_state_dir(&id).join("audit.jsonl"))
        .expect("audit.jsonl")
        .read_to_string(&mut text)
        .expect("read audit.jsonl");
    let on_disk: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit.jsonl line is JSON"))
        .filter(|e: &Value| e["action"] == "dns")
        .collect();
    assert_eq!(on_disk.len(), events.len(), "{on_disk:?}\n{events:?}");
    daemon.stop();
}
