//! Architecture test: the ruleset module is pure.
//!
//! The builder, the renderer and the invariant checker decide what a container may reach; they
//! must be plain functions of their input so that what the tests prove is what runs. This test
//! reads their source and fails if any of it names a way to do I/O, read the clock or the
//! environment, or leave safe Rust.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::PathBuf;

/// Identifiers that may not appear in the code (comments aside) of `src/ruleset/`.
const FORBIDDEN: &[&str] = &[
    "fs",
    "File",
    "io",
    "net::TcpStream",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "UnixStream",
    "process",
    "Command",
    "env",
    "option_env",
    "include_str",
    "include_bytes",
    "tokio",
    "nix",
    "libc",
    "mnl",
    "nftnl",
    "SystemTime",
    "Instant",
    "thread",
    "unsafe",
];

/// The identifiers of `source` with `//` comments left out, each with its 1-based line number.
/// Paths such as `std::fs` yield `std` and `fs`; string literals are not special (none of the
/// forbidden names belongs in one either).
fn identifiers(source: &str) -> Vec<(usize, &str)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let words = code.split(|c: char| !(c.is_alphanumeric() || c == '_'));
        found.extend(words.filter(|w| !w.is_empty()).map(|w| (number + 1, w)));
    }
    found
}

/// Every use of a forbidden identifier in `source`, as `NAME:LINE: IDENT`.
fn offences(name: &str, source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (line, word) in identifiers(source) {
        if FORBIDDEN.contains(&word) {
            out.push(format!("{name}:{line}: {word}"));
        }
    }
    // Multi-segment entries (`net::TcpStream`) are matched on the text.
    for entry in FORBIDDEN.iter().filter(|entry| entry.contains("::")) {
        for (index, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains(entry) {
                out.push(format!("{name}:{}: {entry}", index + 1));
            }
        }
    }
    out
}

#[test]
fn ruleset_module_does_no_io() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("ruleset");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the ruleset sources in {}, found {files:?}",
        dir.display()
    );
    let mut all = Vec::new();
    for path in &files {
        let source = fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        all.extend(offences(&name, &source));
    }
    assert!(
        all.is_empty(),
        "the ruleset module must stay pure (no I/O, clock, environment or unsafe), found:\n{}",
        all.join("\n")
    );
}

/// The scanner itself can fail: each way in is caught, comments are not.
#[test]
fn scanner_catches_io() {
    let bad = [
        "use std::fs;",
        "use std::{fs, net};",
        "let f = std::fs::read(p);",
        "std::process::Command::new(\"nft\")",
        "let now = std::time::Instant::now();",
        "let t = SystemTime::now();",
        "let v = std::env::var(\"X\");",
        "let v = env!(\"X\");",
        "tokio::spawn(f);",
        "nix::unistd::getpid();",
        "unsafe { libc::getpid() }",
        "let s = std::net::TcpStream::connect(a);",
    ];
    for source in bad {
        assert!(
            !offences("bad.rs", source).is_empty(),
            "not caught: {source}"
        );
    }
    let fine = "use std::net::IpAddr; // not std::fs, nor tokio\nlet environment = 1;";
    assert_eq!(offences("fine.rs", fine), Vec::<String>::new());
}
