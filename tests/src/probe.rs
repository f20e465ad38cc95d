//! Probes run inside a namespace by the `probe` helper binary (`src/bin/probe.rs`).
//!
//! `probe tcp ADDR PORT` makes one *blocking* `connect()` (no non-blocking connect with a timeout,
//! which would hide the difference between a TCP reset and an ICMP reject: a blocking connect
//! waits ~1 s for a SYN retransmit after an ICMP error), guarded by a watchdog thread, then sends
//! a line and expects it echoed. `probe udp ADDR PORT` sends a datagram on a connected socket and
//! expects the echo. The helper prints one line, `OUTCOME MICROS [DETAIL]`, which [`Probe`] parses.

use std::net::IpAddr;
use std::time::Duration;

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
