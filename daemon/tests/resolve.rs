//! `HostResolver` against a real DNS server: dnsmasq answering fixed records on a random
//! loopback port, started per test and killed when the test ends. Only loopback traffic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shieldd::config::DnsConfig;
use shieldd::resolve::{HostResolver, Learnt, ResolveError};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A dnsmasq serving the `.test` zone from its command line; killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    /// Starts dnsmasq with the fixed records and a local TTL of `ttl` seconds, and waits until it
    /// accepts TCP connections (it binds UDP before TCP, so both are ready then).
    fn start(ttl: u32) -> Self {
        for _ in 0..10 {
            let port = free_port();
            let mut child = Command::new(DNSMASQ)
                .args([
                    "--no-resolv",
                    "--no-hosts",
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                    "--log-facility=-",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    // Names under .test that are not listed below get NXDOMAIN, not REFUSED.
                    "--local=/test/",
                    "--address=/allowed.test/192.0.2.10",
                    "--host-record=multi.test,192.0.2.11,2001:db8::11",
                    // One IPv4 per --host-record: a name gets several by repetition.
                    "--host-record=many.test,192.0.2.21,2001:db8::21",
                    "--host-record=many.test,192.0.2.22",
                    "--host-record=v6only.test,2001:db8::31",
                    "--cname=alias.test,multi.test",
                    "--cname=alias2.test,alias.test",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--local-ttl={ttl}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    return Self { child, addr };
                }
                if child.try_wait().unwrap().is_some() {
                    // Lost a race for the port: try another.
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start");
    }

    fn config(&self) -> DnsConfig {
        DnsConfig {
            upstream: Some(vec![self.addr]),
            ..DnsConfig::default()
        }
    }

    fn resolver(&self) -> HostResolver {
        HostResolver::new(&self.config()).unwrap()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that is free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn learnt(addr: &str, ttl: u64) -> Learnt {
    Learnt {
        addr: ip(addr),
        ttl: Duration::from_secs(ttl),
    }
}

#[tokio::test]
async fn a_only() {
    let dns = Dnsmasq::start(300);
    // dnsmasq answers AAAA for an --address name with NXDOMAIN: the v4 half still comes back.
    let got = dns.resolver().resolve("allowed.test").await.unwrap();
    assert_eq!(got, [learnt("192.0.2.10", 300)]);
    // --address covers subdomains too.
    let got = dns.resolver().resolve("www.allowed.test").await.unwrap();
    assert_eq!(got, [learnt("192.0.2.10", 300)]);
}

#[tokio::test]
async fn aaaa_only() {
    let dns = Dnsmasq::start(300);
    let got = dns.resolver().resolve("v6only.test").await.unwrap();
    assert_eq!(got, [learnt("2001:db8::31", 300)]);
}

#[tokio::test]
async fn a_and_aaaa() {
    let dns = Dnsmasq::start(300);
    let resolver = dns.resolver();
    let got = resolver.resolve("multi.test").await.unwrap();
    assert_eq!(
        got,
        [learnt("192.0.2.11", 300), learnt("2001:db8::11", 300)]
    );
    let got = resolver.resolve("many.test").await.unwrap();
    assert_eq!(
        got,
        [
            learnt("192.0.2.21", 300),
            learnt("192.0.2.22", 300),
            learnt("2001:db8::21", 300)
        ]
    );
    // Case, and a trailing dot, do not matter.
    assert_eq!(
        resolver.resolve("MANY.Test.").await.unwrap(),
        resolver.resolve("many.test").await.unwrap()
    );
}

#[tokio::test]
async fn cname_chain() {
    let dns = Dnsmasq::start(300);
    let resolver = dns.resolver();
    for name in ["alias.test", "alias2.test"] {
        let got = resolver.resolve(name).await.unwrap();
        assert_eq!(
            got,
            [learnt("192.0.2.11", 300), learnt("2001:db8::11", 300)],
            "{name}"
        );
    }
}

#[tokio::test]
async fn ttl_is_clamped_to_min() {
    let dns = Dnsmasq::start(1);
    let got = dns.resolver().resolve("multi.test").await.unwrap();
    assert_eq!(got, [learnt("192.0.2.11", 30), learnt("2001:db8::11", 30)]);

    let config = DnsConfig {
        min_ttl: Duration::from_secs(5),
        ..dns.config()
    };
    let got = HostResolver::new(&config)
        .unwrap()
        .resolve("alias.test")
        .await
        .unwrap();
    assert_eq!(got, [learnt("192.0.2.11", 5), learnt("2001:db8::11", 5)]);
}

#[tokio::test]
async fn ttl_is_clamped_to_max() {
    let dns = Dnsmasq::start(86_400);
    let got = dns.resolver().resolve("allowed.test").await.unwrap();
    assert_eq!(got, [learnt("192.0.2.10", 3600)]);
}

#[tokio::test]
async fn answers_are_not_cached() {
    // hickory's answer cache is off: every call asks the upstream, so a TTL is the one the
    // upstream gives now, and an answer never outlives a change upstream. (A name with both
    // families: a cache would hold both answers, and the second call would succeed.)
    let dns = Dnsmasq::start(100);
    let resolver = dns.resolver().with_deadline(Duration::from_millis(700));
    assert_eq!(
        resolver.resolve("multi.test").await.unwrap(),
        [learnt("192.0.2.11", 100), learnt("2001:db8::11", 100)]
    );
    drop(dns);
    let err = resolver.resolve("multi.test").await.unwrap_err();
    assert!(
        matches!(
            err,
            ResolveError::Timeout { .. } | ResolveError::Lookup { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn nxdomain_is_empty() {
    let dns = Dnsmasq::start(300);
    let got = dns.resolver().resolve("missing.test").await.unwrap();
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn refused_is_an_error() {
    let dns = Dnsmasq::start(300);
    // Outside --local=/test/ and with no upstream, dnsmasq answers REFUSED.
    let err = dns
        .resolver()
        .resolve("example.invalid-tld")
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::Lookup { .. }), "{err:?}");
    assert!(err.to_string().contains("example.invalid-tld"), "{err}");
}

#[tokio::test]
async fn silent_upstream_times_out_within_the_deadline() {
    // An upstream that takes every query (UDP and TCP) and never answers.
    let (udp, tcp) = loop {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        if let Ok(udp) = tokio::net::UdpSocket::bind(("127.0.0.1", port)).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().unwrap();
    let sink = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut held = Vec::new();
        loop {
            tokio::select! {
                read = udp.recv_from(&mut buf) => { read.unwrap(); }
                accepted = tcp.accept() => held.push(accepted.unwrap().0),
            }
        }
    });

    let config = DnsConfig {
        upstream: Some(vec![addr]),
        ..DnsConfig::default()
    };
    let deadline = Duration::from_millis(1500);
    let resolver = HostResolver::new(&config).unwrap().with_deadline(deadline);
    let started = Instant::now();
    let err = resolver.resolve("allowed.test").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ResolveError::Timeout { .. }), "{err:?}");
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(500),
        "{took:?}"
    );
    sink.abort();
}

#[tokio::test]
async fn default_deadline_is_bounded() {
    assert_eq!(
        HostResolver::new(&DnsConfig {
            upstream: Some(vec!["127.0.0.1:9".parse().unwrap()]),
            ..DnsConfig::default()
        })
        .unwrap()
        .deadline(),
        Duration::from_secs(3)
    );
}

#[tokio::test]
async fn wildcards_and_non_names_are_refused() {
    let dns = Dnsmasq::start(300);
    let resolver = dns.resolver();
    let err = resolver.resolve("*.allowed.test").await.unwrap_err();
    assert!(matches!(err, ResolveError::Wildcard { .. }), "{err:?}");
    assert!(err.to_string().contains("wildcard"), "{err}");
    for bad in ["", "192.0.2.10", "bad..name"] {
        let err = resolver.resolve(bad).await.unwrap_err();
        assert!(
            matches!(err, ResolveError::InvalidName { .. }),
            "{bad:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_calls_share_one_resolver() {
    let dns = Dnsmasq::start(300);
    let resolver = std::sync::Arc::new(dns.resolver());
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let resolver = resolver.clone();
            tokio::spawn(async move {
                let name = if i % 2 == 0 {
                    "multi.test"
                } else {
                    "alias2.test"
                };
                resolver.resolve(name).await.unwrap()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap(),
            [learnt("192.0.2.11", 300), learnt("2001:db8::11", 300)]
        );
    }
}

#[test]
fn system_conf_without_nameserver_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, "search example.com\n").unwrap();
    let err = HostResolver::with_resolv_conf(&DnsConfig::default(), &path).unwrap_err();
    assert!(matches!(err, ResolveError::SystemConf { .. }), "{err:?}");
    assert!(err.to_string().contains("resolv.conf"), "{err}");

    let missing =
        HostResolver::with_resolv_conf(&DnsConfig::default(), Path::new("/nonexistent/r"))
            .unwrap_err();
    assert!(
        matches!(missing, ResolveError::SystemConf { .. }),
        "{missing:?}"
    );
}

#[test]
fn system_conf_is_used_without_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(
        &path,
        "nameserver 127.0.0.1\nsearch example.com\noptions ndots:3\n",
    )
    .unwrap();
    let resolver = HostResolver::with_resolv_conf(&DnsConfig::default(), &path).unwrap();
    assert!(
        format!("{resolver:?}").contains("resolv.conf"),
        "{resolver:?}"
    );
}
