//! A real DNS upstream for the daemon: `dnsmasq` on loopback of the test's own network namespace
//! (the daemon's), answering only the names the test gives it and nothing else (`--no-resolv
//! --no-hosts`: it never forwards a query anywhere).
//!
//! The daemon resolves a domain on `allow` through its configured upstream
//! (`[dns] upstream = ["127.0.0.1:PORT"]`, [`Dnsmasq::config_toml`]).

use std::io::Read;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

impl Dnsmasq {
    /// Starts dnsmasq answering each `(name, address)` (A for IPv4, AAAA for IPv6; a name may
    /// appear several times) and waits until it listens. Retries on a port race.
    pub fn start(answers: &[(&str, IpAddr)]) -> Dnsmasq {
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
            .arg(format!("--local-ttl={ANSWER_TTL}"));
            for (name, addr) in answers {
                cmd.arg(format!("--address=/{name}/{addr}"));
            }
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
