//! `probe`: the test helper that runs inside a network namespace.
//!
//! - `probe tcp ADDR PORT`: one blocking `connect()` (watchdog 3 s), then `ping\n` must come back.
//! - `probe udp ADDR PORT`: `ping` on a connected UDP socket must come back within 1 s.
//! - `probe hold ADDR PORT`: a long-lived TCP connection. Connects (3 s at most) and prints
//!   `connected MICROS` (or a probe failure line and exits), then sends one byte every 100 ms and
//!   expects it echoed within 1 s; prints `alive N` after every 10 round trips, and
//!   `broken MICROS DETAIL` (time since connecting) as soon as a write, a read or an echo fails,
//!   then exits.
//! - `probe serve PORT ADDR...`: TCP and UDP echo listeners on each address; prints `ready` once
//!   all are bound, then serves until killed.
//! - `probe udp-raw ADDR PORT HEX`: sends the bytes `HEX` in one datagram and prints
//!   `ok MICROS REPLYHEX` with the first datagram that comes back within 3 s.
//! - `probe resolve-connect PORT COUNT NAME...`: COUNT rounds, cycling through the names: an A
//!   query for the name over UDP to the DNS proxy on `127.0.0.1:53`, then at once a blocking TCP
//!   connect to the answer's first address on PORT (watchdog 3 s), closed again. Prints
//!   `fail ROUND NAME DETAIL` for every round that failed (no answer, no address, connect
//!   failed), then `done ROUNDS FAILURES MICROS`.
//!
//! Probes print one line `OUTCOME MICROS [DETAIL]` (outcome `ok`, `refused`, `unreachable`,
//! `timeout` or `error`) and exit 0; usage errors exit 2.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line helper: its output is its interface"
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TCP_WATCHDOG: Duration = Duration::from_secs(3);
const UDP_WAIT: Duration = Duration::from_secs(1);
const PING: &[u8] = b"ping\n";

fn classify(e: &std::io::Error) -> (&'static str, String) {
    let word = match e.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::PermissionDenied => "unreachable",
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout",
        _ => "error",
    };
    (word, e.to_string())
}

fn micros(d: Duration) -> u128 {
    d.as_micros()
}

fn tcp(addr: SocketAddr) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let result = TcpStream::connect(addr);
        let elapsed = start.elapsed();
        let line = match result {
            Err(e) => {
                let (word, detail) = classify(&e);
                format!("{word} {} {detail}", micros(elapsed))
            }
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 5];
                match s.write_all(PING).and_then(|()| s.read_exact(&mut buf)) {
                    Ok(()) if buf == PING => format!("ok {}", micros(elapsed)),
                    Ok(()) => format!("error {} connected, wrong echo {buf:?}", micros(elapsed)),
                    Err(e) => format!("error {} connected, no echo: {e}", micros(elapsed)),
                }
            }
        };
        let _ = tx.send(line);
    });
    match rx.recv_timeout(TCP_WATCHDOG) {
        Ok(line) => line,
        Err(_) => format!("timeout {}", micros(TCP_WATCHDOG)),
    }
}

const HOLD_INTERVAL: Duration = Duration::from_millis(100);
const HOLD_ECHO_WAIT: Duration = Duration::from_secs(1);

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn hold(addr: SocketAddr) -> ! {
    let start = Instant::now();
    let mut s = match TcpStream::connect_timeout(&addr, TCP_WATCHDOG) {
        Ok(s) => s,
        Err(e) => {
            let (word, detail) = classify(&e);
            say(&format!("{word} {} {detail}", micros(start.elapsed())));
            std::process::exit(0)
        }
    };
    say(&format!("connected {}", micros(start.elapsed())));
    let connected = Instant::now();
    let _ = s.set_nodelay(true);
    if let Err(e) = s.set_read_timeout(Some(HOLD_ECHO_WAIT)) {
        fail(&format!("set_read_timeout: {e}"));
    }
    let mut rounds: u64 = 0;
    loop {
        let mut buf = [0u8; 1];
        let result = s.write_all(b"x").and_then(|()| s.read(&mut buf));
        let detail = match result {
            Ok(1) if buf == *b"x" => None,
            Ok(0) => Some("closed by the peer (EOF)".to_string()),
            Ok(_) => Some(format!("wrong echo {buf:?}")),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Some(format!("no echo within {HOLD_ECHO_WAIT:?}"))
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(detail) = detail {
            say(&format!("broken {} {detail}", micros(connected.elapsed())));
            std::process::exit(0)
        }
        rounds += 1;
        if rounds.is_multiple_of(10) {
            say(&format!("alive {rounds}"));
        }
        std::thread::sleep(HOLD_INTERVAL);
    }
}

/// Sends `payload` to `addr` from a fresh socket and returns the first datagram that comes back
/// within `wait`.
fn udp_exchange(addr: SocketAddr, payload: &[u8], wait: Duration) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
    } else {
        "[::]:0".parse().unwrap_or_else(|_| unreachable!())
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(addr)?;
    s.set_read_timeout(Some(wait))?;
    s.send(payload)?;
    let mut buf = vec![0u8; 65_535];
    let n = s.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn udp(addr: SocketAddr) -> String {
    let start = Instant::now();
    let result = udp_exchange(addr, PING, UDP_WAIT);
    let elapsed = start.elapsed();
    match result {
        Ok(v) if v == PING => format!("ok {}", micros(elapsed)),
        Ok(v) => format!("error {} wrong echo {v:?}", micros(elapsed)),
        Err(e) => {
            let (word, detail) = classify(&e);
            format!("{word} {} {detail}", micros(elapsed))
        }
    }
}

fn serve(port: u16, addrs: &[IpAddr]) -> ! {
    for &ip in addrs {
        let sa = SocketAddr::new(ip, port);
        let listener =
            TcpListener::bind(sa).unwrap_or_else(|e| fail(&format!("bind tcp {sa}: {e}")));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let sock = UdpSocket::bind(sa).unwrap_or_else(|e| fail(&format!("bind udp {sa}: {e}")));
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        });
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

/// The first datagram that answers `payload` sent to `addr`.
fn udp_raw(addr: SocketAddr, payload: &[u8]) -> String {
    let start = Instant::now();
    let result = udp_exchange(addr, payload, DNS_WAIT);
    let elapsed = start.elapsed();
    match result {
        Ok(v) => format!("ok {} {}", micros(elapsed), hex(&v)),
        Err(e) => {
            let (word, detail) = classify(&e);
            format!("{word} {} {detail}", micros(elapsed))
        }
    }
}

/// How long a DNS query waits for its answer.
const DNS_WAIT: Duration = Duration::from_secs(3);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A DNS query for the A records of `name` (recursion desired, no EDNS).
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).unwrap_or_else(|_| fail("label too long")));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The position after the (possibly compressed) name starting at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

/// The first A address in the answer to query `id`, or why there is none.
fn first_a(msg: &[u8], id: u16) -> Result<std::net::Ipv4Addr, String> {
    let word =
        |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?])) };
    let short = || "answer too short".to_string();
    if word(0).ok_or_else(short)? != id {
        return Err("answer with another id".into());
    }
    let flags = word(2).ok_or_else(short)?;
    if flags & 0x8000 == 0 {
        return Err("not a response".into());
    }
    if flags & 0x0200 != 0 {
        return Err("truncated answer".into());
    }
    if flags & 0x000f != 0 {
        return Err(format!("rcode {}", flags & 0x000f));
    }
    let questions = word(4).ok_or_else(short)?;
    let answers = word(6).ok_or_else(short)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at).ok_or_else(short)? + 4;
    }
    for _ in 0..answers {
        at = skip_name(msg, at).ok_or_else(short)?;
        let record_type = word(at).ok_or_else(short)?;
        let len = usize::from(word(at + 8).ok_or_else(short)?);
        let data = msg.get(at + 10..at + 10 + len).ok_or_else(short)?;
        if record_type == 1
            && let Ok(octets) = <[u8; 4]>::try_from(data)
        {
            return Ok(std::net::Ipv4Addr::from(octets));
        }
        at += 10 + len;
    }
    Err(format!("no A record among {answers} answers"))
}

/// One round of `resolve-connect`: query, then connect to the answer at once.
fn resolve_connect_round(id: u16, name: &str, port: u16) -> Result<(), String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    s.connect("127.0.0.1:53")
        .map_err(|e| format!("connect to the proxy: {e}"))?;
    s.set_read_timeout(Some(DNS_WAIT))
        .map_err(|e| e.to_string())?;
    s.send(&a_query(id, name))
        .map_err(|e| format!("send the query: {e}"))?;
    let mut buf = [0u8; 4096];
    let addr = loop {
        let n = s.recv(&mut buf).map_err(|e| format!("no answer: {e}"))?;
        match first_a(&buf[..n], id) {
            Err(e) if e == "answer with another id" => {}
            other => break other?,
        }
    };
    let target = SocketAddr::new(IpAddr::V4(addr), port);
    match TcpStream::connect_timeout(&target, TCP_WATCHDOG) {
        Ok(stream) => {
            drop(stream);
            Ok(())
        }
        Err(e) => Err(format!("connect to {target}: {e}")),
    }
}

fn resolve_connect(port: u16, count: u32, names: &[&str]) {
    let start = Instant::now();
    let mut failures = 0u32;
    for (round, name) in (0..count).zip(names.iter().cycle()) {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "ids only need to differ nearby"
        )]
        let id = (round as u16).wrapping_mul(31).wrapping_add(7);
        if let Err(detail) = resolve_connect_round(id, name, port) {
            failures += 1;
            println!("fail {round} {name} {detail}");
        }
    }
    println!("done {count} {failures} {}", micros(start.elapsed()));
}

fn fail(msg: &str) -> ! {
    eprintln!("probe: {msg}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse_ip = |s: &str| -> IpAddr {
        s.parse()
            .unwrap_or_else(|_| fail(&format!("bad address {s:?}")))
    };
    let parse_port = |s: &str| -> u16 {
        s.parse()
            .unwrap_or_else(|_| fail(&format!("bad port {s:?}")))
    };
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tcp", ip, port] => println!("{}", tcp(SocketAddr::new(parse_ip(ip), parse_port(port)))),
        ["udp", ip, port] => println!("{}", udp(SocketAddr::new(parse_ip(ip), parse_port(port)))),
        ["hold", ip, port] => hold(SocketAddr::new(parse_ip(ip), parse_port(port))),
        ["serve", port, ips @ ..] if !ips.is_empty() => {
            let ips: Vec<IpAddr> = ips.iter().map(|s| parse_ip(s)).collect();
            serve(parse_port(port), &ips)
        }
        ["udp-raw", ip, port, payload] => {
            let payload = unhex(payload).unwrap_or_else(|| fail("bad hex payload"));
            println!(
                "{}",
                udp_raw(SocketAddr::new(parse_ip(ip), parse_port(port)), &payload)
            );
        }
        ["resolve-connect", port, count, names @ ..] if !names.is_empty() => {
            let count = count
                .parse()
                .unwrap_or_else(|_| fail(&format!("bad count {count:?}")));
            resolve_connect(parse_port(port), count, names);
        }
        _ => fail(
            "usage: probe tcp|udp|hold ADDR PORT | probe serve PORT ADDR... | \
             probe udp-raw ADDR PORT HEX | probe resolve-connect PORT COUNT NAME...",
        ),
    }
}
