//! Probes run inside a namespace by the `probe` helper binary (`src/bin/probe.rs`).
//!
//! `probe tcp ADDR PORT` makes one *blocking* `connect()` (no non-blocking connect with a timeout,
//! which would hide the difference between a TCP reset and an ICMP reject: a blocking connect
//! waits ~1 s for a SYN retransmit after an ICMP error), guarded by a watchdog thread, then sends
//! a line and expects it echoed. `probe udp ADDR PORT` sends a datagram on a connected socket and
//! expects the echo. The helper prints one line, `OUTCOME MICROS [DETAIL]`, which [`Probe`] parses.
//!
//! `probe hold ADDR PORT` keeps one TCP connection open and exchanges a byte with the echo
//! listener every 100 ms: [`HeldConnection`] tells whether an established flow is still alive and
//! when it broke (a deny, `block`).
//!
//! For the DNS proxy: `probe udp-raw ADDR PORT HEX` sends arbitrary bytes in one datagram and
//! brings back the reply ([`udp_raw`]); `probe resolve-connect PORT COUNT NAME...` resolves and
//! connects at once, COUNT times, in one process inside the namespace ([`resolve_connect`]).

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::bins;
use crate::netns::NsProcess;

/// Transport protocol of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// Blocking connect, then an echoed line.
    Tcp,
    /// A datagram and its echo.
    Udp,
}

impl Proto {
    /// The helper's argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What happened to a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected (TCP) and the echo came back.
    Ok,
    /// `ECONNREFUSED`: a TCP reset (or an ICMP port unreachable for UDP).
    Refused,
    /// `EHOSTUNREACH`/`ENETUNREACH`/`EACCES`/`EPERM`: an ICMP reject or a local refusal.
    Unreachable,
    /// Nothing came back before the watchdog (TCP 3 s, UDP 1 s).
    Timeout,
    /// Anything else, with the error.
    Error(String),
}

/// The result of one probe.
#[derive(Clone, Debug)]
pub struct Probe {
    /// What happened.
    pub outcome: Outcome,
    /// Time of the `connect()` (TCP) or of the send-and-receive (UDP), measured in the helper.
    pub elapsed: Duration,
    /// The helper's raw output line, for messages.
    pub line: String,
}

impl Probe {
    /// Whether the peer was reached and answered.
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// Parses the helper's output line.
    pub fn parse(line: &str) -> Probe {
        let mut parts = line.trim().splitn(3, ' ');
        let word = parts.next().unwrap_or("");
        let micros: u64 = parts
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("bad probe output {line:?}"));
        let detail = parts.next().unwrap_or("").to_string();
        let outcome = match word {
            "ok" => Outcome::Ok,
            "refused" => Outcome::Refused,
            "unreachable" => Outcome::Unreachable,
            "timeout" => Outcome::Timeout,
            "error" => Outcome::Error(detail),
            _ => panic!("bad probe output {line:?}"),
        };
        Probe {
            outcome,
            elapsed: Duration::from_micros(micros),
            line: line.trim().to_string(),
        }
    }
}

/// Runs `probe PROTO ADDR PORT` inside the network namespace of `ns`.
pub fn run(ns: &NsProcess, proto: Proto, addr: IpAddr, port: u16) -> Probe {
    let out = ns
        .command(bins::bin_dir().join(bins::PROBE))
        .args([proto.as_str(), &addr.to_string(), &port.to_string()])
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe {} {addr} failed: {} {}",
        proto.as_str(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    Probe::parse(&stdout)
}

/// Sends `payload` in one UDP datagram from inside the namespace of `ns` to `addr`:`port` and
/// returns the first datagram that comes back (3 s at most); `Err` with the probe's result line
/// when none does.
pub fn udp_raw(ns: &NsProcess, addr: IpAddr, port: u16, payload: &[u8]) -> Result<Vec<u8>, Probe> {
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let out = ns
        .command(bins::bin_dir().join(bins::PROBE))
        .args(["udp-raw", &addr.to_string(), &port.to_string(), &hex])
        .output()
        .expect("run probe udp-raw");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe udp-raw {addr} failed: {} {}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = Probe::parse(&stdout);
    if !probe.is_ok() {
        return Err(probe);
    }
    let reply = stdout.trim().splitn(3, ' ').nth(2).unwrap_or("");
    assert!(
        reply.len().is_multiple_of(2),
        "odd hex from probe udp-raw: {stdout}"
    );
    Ok((0..reply.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&reply[i..i + 2], 16).expect("hex from probe udp-raw"))
        .collect())
}

/// What `probe resolve-connect` reported.
#[derive(Clone, Debug)]
pub struct ResolveConnect {
    /// Rounds run.
    pub rounds: u32,
    /// One line per failed round: `ROUND NAME DETAIL`.
    pub failures: Vec<String>,
    /// Wall time of all rounds, measured in the helper.
    pub elapsed: Duration,
}

/// Runs `probe resolve-connect PORT COUNT NAMES…` inside the namespace of `ns`: COUNT rounds of
/// "A query to the DNS proxy on 127.0.0.1:53, then at once a TCP connect to the first address on
/// `port`", cycling through `names`.
pub fn resolve_connect(ns: &NsProcess, port: u16, count: u32, names: &[String]) -> ResolveConnect {
    let out = ns
        .command(bins::bin_dir().join(bins::PROBE))
        .args(["resolve-connect", &port.to_string(), &count.to_string()])
        .args(names)
        .output()
        .expect("run probe resolve-connect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe resolve-connect failed: {} {}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut failures = Vec::new();
    let mut done = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("fail ") {
            failures.push(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("done ") {
            let nums: Vec<u64> = rest
                .split_whitespace()
                .map(|n| n.parse().expect("number from probe resolve-connect"))
                .collect();
            done = Some(nums);
        }
    }
    let Some([rounds, failed, micros]) = done.as_deref().and_then(|n| <[u64; 3]>::try_from(n).ok())
    else {
        panic!("probe resolve-connect printed no summary: {stdout}");
    };
    assert_eq!(
        failed,
        failures.len() as u64,
        "probe resolve-connect: summary and failure lines disagree: {stdout}"
    );
    ResolveConnect {
        rounds: u32::try_from(rounds).expect("rounds fit"),
        failures,
        elapsed: Duration::from_micros(micros),
    }
}

/// A TCP connection held open from inside a namespace by `probe hold` (one byte each way every
/// 100 ms). Killed on drop.
#[derive(Debug)]
pub struct HeldConnection {
    child: Child,
    lines: Receiver<String>,
    addr: IpAddr,
    /// Round trips reported so far (`alive N` lines).
    rounds: u64,
}

/// Opens a held connection from the namespace of `ns` to `addr`:`port`; panics unless it
/// connects and its first echo comes back.
pub fn hold(ns: &NsProcess, addr: IpAddr, port: u16) -> HeldConnection {
    let mut child = ns
        .command(bins::bin_dir().join(bins::PROBE))
        .args(["hold", &addr.to_string(), &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn probe hold");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut held = HeldConnection {
        child,
        lines,
        addr,
        rounds: 0,
    };
    match held.lines.recv_timeout(Duration::from_secs(5)) {
        Ok(line) if line.starts_with("connected ") => {}
        Ok(line) => panic!("held connection to {addr} did not connect: {line}"),
        Err(e) => panic!("held connection to {addr}: no answer from probe hold ({e})"),
    }
    // The first round trips prove the echo path, not only the handshake.
    held.assert_alive(Duration::from_millis(1100), "just after connecting");
    held
}

impl HeldConnection {
    /// The destination.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Panics unless the connection keeps exchanging bytes for `span` (at least one more batch
    /// of ten round trips must be reported when `span` is over a second).
    pub fn assert_alive(&mut self, span: Duration, when: &str) {
        let start = Instant::now();
        let before = self.rounds;
        while let Some(left) = span.checked_sub(start.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(n) = line.strip_prefix("alive ").and_then(|n| n.parse().ok()) {
                        self.rounds = n;
                    } else {
                        panic!(
                            "{when}: the held connection to {} must stay open, got {line:?}",
                            self.addr
                        );
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{when}: the held connection to {}: probe hold exited silently",
                    self.addr
                ),
            }
        }
        if span >= Duration::from_millis(1100) {
            assert!(
                self.rounds > before,
                "{when}: the held connection to {} reported no round trip in {span:?}",
                self.addr
            );
        }
    }

    /// Waits (at most `timeout`) until the connection breaks; returns the time from this call to
    /// the report and the helper's detail. Panics if it stays open.
    pub fn wait_broken(&mut self, timeout: Duration, when: &str) -> (Duration, String) {
        let start = Instant::now();
        loop {
            let left = timeout.checked_sub(start.elapsed()).unwrap_or_default();
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("broken ") => {
                    let detail = line.splitn(3, ' ').nth(2).unwrap_or("").to_string();
                    return (start.elapsed(), detail);
                }
                Ok(line) if line.starts_with("alive ") => {}
                Ok(line) => panic!("{when}: unexpected output of probe hold: {line:?}"),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{when}: the held connection to {} is still open after {timeout:?}",
                    self.addr
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{when}: the held connection to {}: probe hold exited silently",
                    self.addr
                ),
            }
        }
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_lines() {
        let p = Probe::parse("ok 1234\n");
        assert_eq!(p.outcome, Outcome::Ok);
        assert_eq!(p.elapsed, Duration::from_micros(1234));
        let p = Probe::parse("refused 87 Connection refused (os error 111)");
        assert_eq!(p.outcome, Outcome::Refused);
        assert_eq!(Probe::parse("timeout 3000000").outcome, Outcome::Timeout);
        assert_eq!(
            Probe::parse("error 5 connected, no echo: x").outcome,
            Outcome::Error("connected, no echo: x".into())
        );
    }

    #[test]
    #[should_panic(expected = "bad probe output")]
    fn rejects_garbage() {
        Probe::parse("hello");
    }
}
