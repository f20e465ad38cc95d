//! A real DNS upstream for the daemon: `dnsmasq` on loopback of the test's own network namespace
//! (the daemon's), answering only the names the test gives it and nothing else (`--no-resolv
//! --no-hosts`: it never forwards a query anywhere).
//!
//! The daemon resolves a domain on `allow` through its configured upstream
//! (`[dns] upstream = ["127.0.0.1:PORT"]`, [`Dnsmasq::config_toml`]), and its DNS proxy forwards
//! the containers' allowed queries there. [`Dnsmasq::builder`] gives answers per name (exact
//! names with their own TTL, CNAME chains, NXDOMAIN domains); [`dig`] asks a DNS server from
//! inside a namespace (the container's proxy on `127.0.0.1:53`) and parses what came back.

use std::io::Read;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::NsProcess;

/// TTL of the answers (`--local-ttl`; dnsmasq's default for `--address` answers is 0, which
/// would make the learnt addresses expire at once).
pub const ANSWER_TTL: u32 = 600;

/// A `dnsmasq` serving fixed answers on `127.0.0.1:PORT` (UDP and TCP). Killed on drop; its
/// log is printed if the test is panicking.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    s.local_addr().expect("local_addr").port()
}

/// Whether a socket of `proto` (`udp`, `tcp`) is bound to 127.0.0.1:`port` in this namespace.
fn bound(proto: &str, port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string(format!("/proc/net/{proto}"))
        .map(|t| {
            t.lines()
                .skip(1)
                .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

/// What a [`Dnsmasq`] answers, built up and then [`DnsmasqBuilder::start`]ed.
#[derive(Clone, Debug)]
pub struct DnsmasqBuilder {
    local_ttl: u32,
    /// Answer options, in order (`--address=…`, `--host-record=…`, `--cname=…`).
    records: Vec<String>,
}

impl DnsmasqBuilder {
    /// TTL of the `--address` answers and of CNAMEs and host records without their own
    /// (default [`ANSWER_TTL`]).
    pub fn local_ttl(mut self, ttl: u32) -> Self {
        self.local_ttl = ttl;
        self
    }

    /// Answers `domain` *and every name below it* with `addr` (`--address=/DOMAIN/ADDR`; A for
    /// IPv4, AAAA for IPv6), with the local TTL.
    pub fn address(mut self, domain: &str, addr: IpAddr) -> Self {
        self.records.push(format!("--address=/{domain}/{addr}"));
        self
    }

    /// Answers exactly `name` with `addr`, TTL `ttl` (`--host-record`). A name given several
    /// times gets all its addresses in one answer.
    pub fn host(mut self, name: &str, addr: IpAddr, ttl: u32) -> Self {
        self.records
            .push(format!("--host-record={name},{addr},{ttl}"));
        self
    }

    /// Answers `alias` with a CNAME to `target` (`--cname`, local TTL); dnsmasq follows the
    /// chain through other CNAMEs and host records and puts the whole chain in the answer.
    pub fn cname(mut self, alias: &str, target: &str) -> Self {
        self.records.push(format!("--cname={alias},{target}"));
        self
    }

    /// Answers NXDOMAIN for `domain` and every name below it (`--address=/DOMAIN/`).
    pub fn nxdomain(mut self, domain: &str) -> Self {
        self.records.push(format!("--address=/{domain}/"));
        self
    }

    /// Starts dnsmasq and waits until it listens on UDP and TCP. Retries on a port race.
    pub fn start(self) -> Dnsmasq {
        Dnsmasq::spawn(self.local_ttl, &self.records)
    }
}

impl Dnsmasq {
    /// Starts dnsmasq answering each `(name, address)` (A for IPv4, AAAA for IPv6, for the name
    /// and every name below it; a name may appear several times) and waits until it listens.
    /// Retries on a port race.
    pub fn start(answers: &[(&str, IpAddr)]) -> Dnsmasq {
        answers
            .iter()
            .fold(Dnsmasq::builder(), |b, (name, addr)| b.address(name, *addr))
            .start()
    }

    /// A dnsmasq that answers nothing yet (every name REFUSED), TTL [`ANSWER_TTL`].
    pub fn builder() -> DnsmasqBuilder {
        DnsmasqBuilder {
            local_ttl: ANSWER_TTL,
            records: Vec::new(),
        }
    }

    fn spawn(local_ttl: u32, records: &[String]) -> Dnsmasq {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_udp_port();
            let log = tempfile::Builder::new()
                .prefix("shield-dnsmasq-")
                .suffix(".log")
                .tempfile()
                .expect("log file");
            let mut cmd = Command::new("dnsmasq");
            cmd.args([
                "--no-resolv",
                "--no-hosts",
                "--keep-in-foreground",
                "--log-queries",
                "--log-facility=-",
                "--pid-file=",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--local-ttl={local_ttl}"))
            .args(records);
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("reopen log"))
                .stderr(log.reopen().expect("reopen log"))
                .spawn()
                .expect("spawn dnsmasq (package dnsmasq-base)");
            let mut d = Dnsmasq { child, port, log };
            let start = Instant::now();
            loop {
                if let Ok(Some(status)) = d.child.try_wait() {
                    last_error = format!("dnsmasq exited ({status}): {}", d.log_text());
                    break;
                }
                if bound("udp", port) && bound("tcp", port) {
                    return d;
                }
                if start.elapsed() > Duration::from_secs(5) {
                    panic!(
                        "dnsmasq did not listen on 127.0.0.1:{port} within 5 s: {}",
                        d.log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        panic!("dnsmasq did not start: {last_error}");
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `config.toml` for a daemon that resolves through this dnsmasq.
    pub fn config_toml(&self) -> String {
        format!("[dns]\nupstream = [\"127.0.0.1:{}\"]\n", self.port)
    }

    /// What dnsmasq logged (queries included).
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = self.log.reopen() {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// How many queries for `name` (any type, any transport) dnsmasq has received so far.
    pub fn queries_for(&self, name: &str) -> usize {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.log_text()
            .lines()
            .filter(|line| {
                // `dnsmasq[PID]: query[A] NAME from 127.0.0.1`
                let mut words = line.split_whitespace().skip(1);
                words.next().is_some_and(|w| w.starts_with("query["))
                    && words.next().map(str::to_ascii_lowercase) == Some(name.clone())
            })
            .count()
    }
}

/// One record of the answer section, as `dig` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name, without the trailing dot.
    pub name: String,
    /// TTL the client was given.
    pub ttl: u32,
    /// `A`, `AAAA`, `CNAME`, …
    pub record_type: String,
    /// The data (an address, a target name with its trailing dot removed).
    pub data: String,
}

/// What `dig` got back.
#[derive(Clone, Debug)]
pub struct DigAnswer {
    /// Response code (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, …); `None` when no answer came at all.
    pub status: Option<String>,
    /// Header flags (`qr`, `rd`, `ra`, `tc`, `aa`).
    pub flags: Vec<String>,
    /// The answer section.
    pub answers: Vec<Record>,
    /// Wall time of the `dig` run (namespace entry included).
    pub elapsed: Duration,
    /// Everything dig printed, for messages.
    pub text: String,
}

impl DigAnswer {
    /// The response code; panics (with dig's output) when there was no answer.
    pub fn status(&self) -> &str {
        self.status
            .as_deref()
            .unwrap_or_else(|| panic!("dig got no answer:\n{}", self.text))
    }

    /// Whether the header carries `flag` (e.g. `tc`).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The A and AAAA addresses of the answer section, in order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.answers
            .iter()
            .filter(|r| r.record_type == "A" || r.record_type == "AAAA")
            .filter_map(|r| r.data.parse().ok())
            .collect()
    }

    /// Parses dig's default output.
    pub fn parse(text: &str, elapsed: Duration) -> DigAnswer {
        let mut status = None;
        let mut flags = Vec::new();
        let mut answers = Vec::new();
        let mut section = "";
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix(";; ->>HEADER<<-") {
                // A retry over TCP prints a second header: the last one is the answer.
                status = rest
                    .split(',')
                    .find_map(|part| part.trim().strip_prefix("status: "))
                    .map(str::to_string);
                answers.clear();
            } else if let Some(rest) = line.strip_prefix(";; flags:") {
                flags = rest
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
            } else if let Some(rest) = line.strip_prefix(";; ") {
                section = if rest.starts_with("ANSWER SECTION") {
                    "answer"
                } else {
                    ""
                };
            } else if line.is_empty() {
                section = "";
            } else if section == "answer" && !line.starts_with(';') {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if let [name, ttl, _class, record_type, data, ..] = cols.as_slice() {
                    answers.push(Record {
                        name: name.trim_end_matches('.').to_string(),
                        ttl: ttl
                            .parse()
                            .unwrap_or_else(|_| panic!("bad TTL in {line:?}")),
                        record_type: (*record_type).to_string(),
                        data: data.trim_end_matches('.').to_string(),
                    });
                }
            }
        }
        DigAnswer {
            status,
            flags,
            answers,
            elapsed,
            text: text.to_string(),
        }
    }
}

/// Runs `dig @SERVER -p 53 +tries=1 +time=3 ARGS…` inside the network namespace of `ns` (the
/// container's DNS proxy for `server` `127.0.0.1` or `::1`), and parses its output.
pub fn dig(ns: &NsProcess, server: &str, args: &[&str]) -> DigAnswer {
    let start = Instant::now();
    let out = ns
        .command("dig")
        .arg(format!("@{server}"))
        .args(["-p", "53", "+tries=1", "+time=3"])
        .args(args)
        .output()
        .expect("run dig (package bind9-dnsutils)");
    let elapsed = start.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    DigAnswer::parse(&text, elapsed)
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            #[allow(clippy::print_stderr, reason = "shown by the test harness on failure")]
            {
                eprintln!(
                    "----- dnsmasq log (127.0.0.1:{}) -----\n{}",
                    self.port,
                    self.log_text()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dig_output() {
        let text = "\n; <<>> DiG 9.18.49-1~deb12u3-Debian <<>> @127.0.0.1 -p 5398 alias.test\n\
; (1 server found)\n;; global options: +cmd\n;; Got answer:\n\
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 50554\n\
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 3, AUTHORITY: 0, ADDITIONAL: 1\n\n\
;; OPT PSEUDOSECTION:\n; EDNS: version: 0, flags:; udp: 1232\n;; QUESTION SECTION:\n\
;alias.test.\t\t\tIN\tA\n\n;; ANSWER SECTION:\nalias.test.\t\t600\tIN\tCNAME\ta.test.\n\
a.test.\t\t\t1\tIN\tA\t10.1.1.1\na.test.\t\t\t1\tIN\tAAAA\tfd00::1\n\n\
;; Query time: 0 msec\n;; SERVER: 127.0.0.1#5398(127.0.0.1) (UDP)\n;; MSG SIZE  rcvd: 75\n";
        let d = DigAnswer::parse(text, Duration::ZERO);
        assert_eq!(d.status(), "NOERROR");
        assert!(d.has_flag("aa") && !d.has_flag("tc"));
        assert_eq!(d.answers.len(), 3);
        assert_eq!(
            d.answers[0],
            Record {
                name: "alias.test".into(),
                ttl: 600,
                record_type: "CNAME".into(),
                data: "a.test".into()
            }
        );
        assert_eq!(
            d.addresses(),
            [
                "10.1.1.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_tcp_retry_replaces_the_truncated_answer() {
        let text = ";; Truncated, retrying in TCP mode.\n\
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n;; flags: qr tc rd; QUERY: 1\n\n\
;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 2\n;; flags: qr rd ra; QUERY: 1\n";
        let d = DigAnswer::parse(text, Duration::ZERO);
        assert_eq!(d.status(), "NXDOMAIN");
        assert!(!d.has_flag("tc"));
        assert!(d.addresses().is_empty());
    }

    #[test]
    #[should_panic(expected = "dig got no answer")]
    fn no_answer_is_no_status() {
        let d = DigAnswer::parse(
            ";; communications error to 127.0.0.1#53: timed out\n;; no servers could be reached\n",
            Duration::ZERO,
        );
        let _ = d.status();
    }
}
