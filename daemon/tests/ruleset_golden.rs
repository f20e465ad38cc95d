//! Golden tests of the ruleset: representative policies, built and rendered, compared with the
//! fixtures in `tests/golden/*.nft`; then the fixtures loaded into a real kernel with `nft -f`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p shieldd --test ruleset_golden` rewrites the fixtures; review the
//! diff before committing it. The kernel tests need root and fail (never skip) without it.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use shieldd::ruleset::build::{DNS_V4, DNS_V6};
use shieldd::ruleset::invariants::check;
use shieldd::ruleset::render::render;
use shieldd::ruleset::{Counter, IpRange, Mode, Policy, SetElement, Table, build};

/// One golden case: a fixture name and the policy it pins down.
struct Case {
    name: &'static str,
    policy: Policy,
}

fn nets(texts: &[&str]) -> Vec<IpNet> {
    texts.iter().map(|text| text.parse().unwrap()).collect()
}

/// A small policy for the fixtures of the modes other than up.
fn small_policy(mode: Mode) -> Policy {
    Policy {
        allow: nets(&["1.2.3.4/32", "2001:db8::1/128"]),
        deny: nets(&["5.6.7.8/32", "2001:db8::dead/128"]),
        mode,
        host_ports: Vec::new(),
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "empty_up",
            policy: Policy::default(),
        },
        Case {
            name: "addresses_up",
            policy: Policy {
                allow: nets(&[
                    "8.8.8.8/32",
                    "1.2.3.4/32",
                    // Not canonical: the host bits go, it is 192.168.1.0/24.
                    "192.168.1.5/24",
                    // Inside the previous one: absorbed.
                    "192.168.1.128/25",
                    // Adjacent to 192.168.1.0/24: merged into one range that is no prefix.
                    "192.168.2.0/24",
                    // Two adjacent halves: merged into 203.0.113.0/24.
                    "203.0.113.128/25",
                    "203.0.113.0/25",
                    "2001:db8:1::1/128",
                    "2001:db8::/32",
                    "2606:4700::1111/128",
                    // Adjacent to ::1111: merged into ::1111-::1113.
                    "2606:4700::1112/127",
                ]),
                deny: nets(&[
                    "198.51.100.7/32",
                    // Adjacent to .7: merged into 198.51.100.7-198.51.100.15.
                    "198.51.100.8/29",
                    "2001:db8:dead::/48",
                    // Allowed too: deny wins, its rules come first.
                    "8.8.8.8/32",
                ]),
                mode: Mode::Up,
                host_ports: Vec::new(),
            },
        },
        Case {
            name: "allowlisted_private_up",
            policy: Policy {
                // Private addresses: in the allow sets, accepted before the private rejects.
                allow: nets(&["10.1.2.3/32", "fd00::1/128"]),
                deny: Vec::new(),
                mode: Mode::Up,
                host_ports: Vec::new(),
            },
        },
        Case {
            name: "host_ports_up",
            policy: Policy {
                // Ports of the host's loopback (config `loopback_ports`), repeated and unsorted:
                // rendered once each, in order, for both host-loopback addresses.
                host_ports: vec![8080, 3000, 8080],
                ..small_policy(Mode::Up)
            },
        },
        Case {
            name: "down",
            policy: small_policy(Mode::Down),
        },
        Case {
            name: "down_all",
            policy: small_policy(Mode::DownAll),
        },
        Case {
            name: "block",
            policy: small_policy(Mode::Block),
        },
    ]
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(format!("{name}.nft"))
}

fn case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|case| case.name == name)
        .unwrap_or_else(|| panic!("no golden case named {name}"))
}

/// Renders `name`'s policy and compares it with its fixture (or rewrites the fixture when
/// `UPDATE_GOLDEN` is set).
fn assert_golden(name: &str) {
    let case = case(name);
    let table = build(&case.policy);
    if let Err(violations) = check(&table, case.policy.mode) {
        panic!("golden case {name}: the built table violates invariants: {violations:#?}");
    }
    let rendered = render(&table);
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if rendered != expected {
        panic!(
            "rendered ruleset differs from {} (run with UPDATE_GOLDEN=1 to accept the change):\n{}",
            path.display(),
            line_diff(&expected, &rendered)
        );
    }
}

/// A minimal line diff: every line position where the two texts differ.
fn line_diff(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for line in 0..expected.len().max(actual.len()) {
        let (want, got) = (expected.get(line), actual.get(line));
        if want != got {
            out += &format!("line {}:\n", line + 1);
            if let Some(want) = want {
                out += &format!("  - {want}\n");
            }
            if let Some(got) = got {
                out += &format!("  + {got}\n");
            }
        }
    }
    out
}

#[test]
fn golden_empty_up() {
    assert_golden("empty_up");
}

#[test]
fn golden_addresses_up() {
    assert_golden("addresses_up");
}

#[test]
fn golden_allowlisted_private_up() {
    assert_golden("allowlisted_private_up");
    // What the fixture shows, stated: 10.1.2.3 is in allow_v4 and the allow rule comes first.
    let table = build(&case("allowlisted_private_up").policy);
    let allow_v4 = table.set("allow_v4").unwrap();
    assert_eq!(allow_v4.elements[0].range.start.to_string(), "10.1.2.3");
    let output = render(&table);
    let allow = output.find("ip daddr @allow_v4").unwrap();
    let private = output.find("ip daddr @private_v4").unwrap();
    assert!(
        allow < private,
        "allow_v4 must be accepted before private_v4 is rejected"
    );
}

#[test]
fn golden_host_ports_up() {
    assert_golden("host_ports_up");
}

#[test]
fn golden_down() {
    assert_golden("down");
}

#[test]
fn golden_down_all() {
    assert_golden("down_all");
}

#[test]
fn golden_block() {
    assert_golden("block");
}

/// Panics unless the test runs as root: a privileged test that returns early would pass
/// without testing anything.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads rulesets into the kernel and must run as root (CI runs it as root); \
         it fails rather than skips so that it cannot pass without running"
    );
}

/// Loads `ruleset` with `nft -f` into a fresh, empty network namespace and returns what
/// `nft list table inet shield` prints there.
fn load_and_list(ruleset: &str, label: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{label}.nft"));
    fs::write(&file, ruleset).unwrap();
    let output = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            r#"nft -f "$1" && nft list table inet shield"#,
            "sh",
        ])
        .arg(&file)
        .output()
        .unwrap_or_else(|error| panic!("cannot run unshare: {error}"));
    assert!(
        output.status.success(),
        "{label}: nft refused the ruleset ({}):\n{}\n--- ruleset:\n{ruleset}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Brings `nft list` output and our rendering to one form: element lists `nft` wraps are joined,
/// zero counters lose their values, and the run-time `expires` of timeout elements goes.
fn normalise_listing(text: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        // `nft list` continues a long element list on lines indented with three tabs and spaces.
        match (line.strip_prefix("\t\t\t     "), lines.last_mut()) {
            (Some(rest), Some(previous)) => {
                previous.push(' ');
                previous.push_str(rest);
            }
            _ => lines.push(line.to_owned()),
        }
    }
    lines
        .iter()
        .map(|line| {
            let line = line.replace("counter packets 0 bytes 0", "counter");
            strip_expires(&line)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Removes every ` expires DURATION` from `line`.
fn strip_expires(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(" expires ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " expires ".len()..];
        let end = after.find([',', ' ']).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn golden_fixtures_load_into_a_fresh_namespace() {
    require_root();
    for case in cases() {
        let path = golden_path(case.name);
        let fixture = fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        let listed = load_and_list(&fixture, case.name);
        assert_eq!(
            normalise_listing(&listed),
            normalise_listing(&fixture),
            "{}: what the kernel holds differs from the fixture",
            case.name
        );
    }
}

/// A table as it looks at run time (DNS-learnt elements with timeouts, counters that counted)
/// renders to text that loads, and lists back the same.
#[test]
fn rendered_runtime_state_round_trips_through_nft() {
    require_root();
    let mut table: Table = build(&case("addresses_up").policy);
    let learnt = |address: &str, seconds: u64| SetElement {
        range: IpRange {
            start: address.parse().unwrap(),
            end: address.parse().unwrap(),
        },
        timeout: Some(Duration::from_secs(seconds)),
    };
    for set in &mut table.sets {
        if set.name == DNS_V4 {
            set.elements = vec![learnt("93.184.215.14", 3600), learnt("93.184.215.15", 90)];
        } else if set.name == DNS_V6 {
            set.elements = vec![learnt("2606:2800:21f:cb07:6820:80da:af6b:8b2c", 300)];
        }
    }
    for (index, rule) in table.chains[0].rules.iter_mut().enumerate() {
        if let Some(counter) = &mut rule.counter {
            let index = u64::try_from(index).unwrap();
            *counter = Counter {
                packets: index,
                bytes: index * 60,
            };
        }
    }
    let rendered = render(&table);
    assert!(rendered.contains("93.184.215.14 timeout 1h, 93.184.215.15 timeout 1m30s"));
    assert!(rendered.contains("counter packets 3 bytes 180"));
    let listed = load_and_list(&rendered, "runtime_state");
    assert_eq!(normalise_listing(&listed), normalise_listing(&rendered));
}

#[test]
fn normalise_listing_joins_wrapped_elements_and_drops_run_time_values() {
    let listed = "\t\telements = { 1.2.3.4 timeout 1h expires 59m58s, 10.0.0.0/8,\n\
                  \t\t\t     11.0.0.0/8 }\n\
                  \t\tip daddr 1.2.3.4 counter packets 0 bytes 0 accept";
    assert_eq!(
        normalise_listing(listed),
        "\t\telements = { 1.2.3.4 timeout 1h, 10.0.0.0/8, 11.0.0.0/8 }\n\
         \t\tip daddr 1.2.3.4 counter accept"
    );
}
