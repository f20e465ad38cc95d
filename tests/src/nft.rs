//! The independent oracle: what `nft` itself says is in a namespace.
//!
//! The daemon programs nf_tables over netlink and never runs `nft`; the tests read the result with
//! `nft -j list table inet shield` inside the namespace, so a bug shared by the daemon's encoder
//! and its own read-back cannot hide.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::netns::NsProcess;

/// A chain of table `inet shield`, as `nft -j` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Hook (`input`, `output`, …) for base chains.
    pub hook: Option<String>,
    /// Policy (`accept`/`drop`) for base chains.
    pub policy: Option<String>,
}

/// Table `inet shield` as `nft -j` lists it.
#[derive(Clone, Debug)]
pub struct Table {
    /// Its chains.
    pub chains: Vec<Chain>,
    /// Set name → elements, each as `ADDR`, `ADDR/LEN` or `FIRST-LAST`.
    pub sets: BTreeMap<String, Vec<String>>,
    /// The whole `nft -j` document.
    pub json: Value,
}

impl Table {
    /// The base chain attached to `hook`.
    pub fn base_chain(&self, hook: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.hook.as_deref() == Some(hook))
    }

    /// Whether an element of set `name` (an address, a prefix or a range) holds `addr`.
    pub fn covers(&self, name: &str, addr: std::net::IpAddr) -> bool {
        self.set(name).iter().any(|e| element_covers(e, addr))
    }

    /// The set elements of every set except the private ranges, for before/after comparisons
    /// (DNS set elements carry no expiry here, so they compare equal over time).
    pub fn live_sets(&self) -> BTreeMap<String, Vec<String>> {
        self.sets
            .iter()
            .filter(|(name, _)| !name.starts_with("private_"))
            .map(|(name, elems)| (name.clone(), elems.clone()))
            .collect()
    }

    /// Elements of set `name` (panics when the set is missing).
    pub fn set(&self, name: &str) -> &[String] {
        self.sets
            .get(name)
            .unwrap_or_else(|| panic!("set {name} missing from table: {:?}", self.sets.keys()))
    }
}

fn bits(addr: std::net::IpAddr) -> (bool, u128) {
    match addr {
        std::net::IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        std::net::IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// Whether one listed element (`ADDR`, `ADDR/LEN` or `FIRST-LAST`) holds `addr`.
pub fn element_covers(element: &str, addr: std::net::IpAddr) -> bool {
    let (v6, want) = bits(addr);
    let parse = |s: &str| s.trim().parse::<std::net::IpAddr>().ok().map(bits);
    if let Some((net, len)) = element.split_once('/') {
        let (Some((nv6, base)), Ok(len)) = (parse(net), len.trim().parse::<u32>()) else {
            return false;
        };
        let width = if nv6 { 128 } else { 32 };
        if nv6 != v6 || len > width {
            return false;
        }
        let host = width - len;
        let mask = if host >= 128 { 0 } else { u128::MAX << host };
        return (base & mask) == (want & mask);
    }
    if let Some((first, last)) = element.split_once('-') {
        return match (parse(first), parse(last)) {
            (Some((f6, f)), Some((l6, l))) => f6 == v6 && l6 == v6 && f <= want && want <= l,
            _ => false,
        };
    }
    parse(element) == Some((v6, want))
}

fn element(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                format!("{}/{}", element(&p["addr"]), p["len"])
            } else if let Some(r) = o.get("range") {
                format!("{}-{}", element(&r[0]), element(&r[1]))
            } else if let Some(e) = o.get("elem") {
                element(&e["val"])
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Parses an `nft -j list table` document.
pub fn parse_table(json: Value) -> Table {
    let mut chains = Vec::new();
    let mut sets = BTreeMap::new();
    for item in json["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = item.get("chain") {
            chains.push(Chain {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                hook: c["hook"].as_str().map(str::to_string),
                policy: c["policy"].as_str().map(str::to_string),
            });
        } else if let Some(s) = item.get("set") {
            let elems = match &s["elem"] {
                Value::Array(a) => a.iter().map(element).collect(),
                _ => Vec::new(),
            };
            sets.insert(s["name"].as_str().unwrap_or_default().to_string(), elems);
        }
    }
    Table { chains, sets, json }
}

/// `nft -j list table inet shield` inside the namespace of `ns`; `None` when there is no such
/// table.
pub fn list_table(ns: &NsProcess) -> Option<Table> {
    let out = ns
        .command("nft")
        .args(["-j", "list", "table", "inet", "shield"])
        .output()
        .expect("run nft");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No such file or directory"),
            "nft list table failed: {err}"
        );
        return None;
    }
    let json: Value = serde_json::from_slice(&out.stdout).expect("nft -j output is JSON");
    Some(parse_table(json))
}

/// `nft list ruleset` inside the namespace of `ns` (empty for an untouched namespace).
pub fn list_ruleset(ns: &NsProcess) -> String {
    let out = ns
        .command("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics unless the namespace of `ns` holds no nftables ruleset at all.
pub fn assert_untouched(ns: &NsProcess, case: &str) {
    let rules = list_ruleset(ns);
    assert!(
        rules.trim().is_empty(),
        "{case}: the namespace must stay untouched, it holds:\n{rules}"
    );
}

/// Inodes of the sockets that live in the network namespace of `ns` (netlink, TCP, UDP, raw;
/// from `/proc/PID/net/*`).
pub fn netns_socket_inodes(ns: &NsProcess) -> std::collections::BTreeSet<u64> {
    let mut set = std::collections::BTreeSet::new();
    for (file, col) in [
        ("netlink", 9),
        ("tcp", 9),
        ("tcp6", 9),
        ("udp", 9),
        ("udp6", 9),
        ("raw", 9),
        ("raw6", 9),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{}/net/{file}", ns.pid())) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some(n) = line
                .split_whitespace()
                .nth(col)
                .and_then(|s| s.parse().ok())
                && n != 0
            {
                set.insert(n);
            }
        }
    }
    set
}

/// Deletes table `inet shield` in the namespace of `ns` behind the daemon's back (for the tests
/// of what the daemon does when the kernel no longer holds what it put there).
pub fn delete_table(ns: &NsProcess) {
    let out = ns
        .command("nft")
        .args(["delete", "table", "inet", "shield"])
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft delete table: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(list_table(ns).is_none(), "table inet shield still listed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_cover_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(element_covers("10.0.0.1", ip("10.0.0.1")));
        assert!(!element_covers("10.0.0.1", ip("10.0.0.2")));
        assert!(element_covers("10.1.0.0/16", ip("10.1.255.3")));
        assert!(!element_covers("10.1.0.0/16", ip("10.2.0.0")));
        assert!(element_covers("10.2.0.1-10.2.0.9", ip("10.2.0.9")));
        assert!(!element_covers("10.2.0.1-10.2.0.9", ip("10.2.0.10")));
        assert!(element_covers("2001:db8::/32", ip("2001:db8:1::1")));
        assert!(!element_covers("2001:db8::/32", ip("10.0.0.1")));
        assert!(element_covers("::/0", ip("fd00::1")));
        assert!(!element_covers("0.0.0.0/0", ip("::1")));
    }

    #[test]
    fn parses_nft_json() {
        // Captured from nft 1.0.6.
        let doc = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "shield", "handle": 1}}, {"set": {"family": "inet", "name": "allow_v4", "table": "shield", "type": "ipv4_addr", "handle": 3, "flags": ["interval"], "elem": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}, {"range": ["10.2.0.1", "10.2.0.9"]}]}}, {"set": {"family": "inet", "name": "dns_v4", "table": "shield", "type": "ipv4_addr", "handle": 4, "flags": ["timeout"], "elem": [{"elem": {"val": "10.9.9.9", "timeout": 3600, "expires": 3599}}]}}, {"set": {"family": "inet", "name": "deny_v4", "table": "shield", "type": "ipv4_addr", "handle": 5, "flags": ["interval"]}}, {"chain": {"family": "inet", "table": "shield", "name": "output", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}, {"chain": {"family": "inet", "table": "shield", "name": "helper", "handle": 2}}]}"#;
        let t = parse_table(serde_json::from_str(doc).unwrap());
        assert_eq!(
            t.set("allow_v4"),
            ["10.0.0.1", "10.1.0.0/16", "10.2.0.1-10.2.0.9"]
        );
        assert_eq!(t.set("dns_v4"), ["10.9.9.9"]);
        assert!(t.set("deny_v4").is_empty());
        assert_eq!(
            t.base_chain("output").unwrap().policy.as_deref(),
            Some("drop")
        );
        assert!(t.base_chain("input").is_none());
        assert_eq!(t.chains.len(), 2);
    }
}
