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

fn udp(addr: SocketAddr) -> String {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
    } else {
        "[::]:0".parse().unwrap_or_else(|_| unreachable!())
    };
    let start = Instant::now();
    let result = (|| {
        let s = UdpSocket::bind(bind)?;
        s.connect(addr)?;
        s.set_read_timeout(Some(UDP_WAIT))?;
        s.send(PING)?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok::<_, std::io::Error>(buf[..n].to_vec())
    })();
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
        _ => fail("usage: probe tcp|udp|hold ADDR PORT | probe serve PORT ADDR..."),
    }
}
