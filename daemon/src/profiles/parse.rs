//! Profile text → entries. Pure: the same format as terok-shield, so its files work unchanged.
//!
//! One entry per line: an IPv4/IPv6 address, a CIDR, or a domain name (`example.com` matches
//! itself and its subdomains, `*.example.com` only its subdomains). `#` starts a comment; blank
//! lines are ignored. Addresses are canonicalised (`192.168.1.5/24` → `192.168.1.0/24`).

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;

/// A validated domain pattern, lower-case, without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainPattern(String);

impl DomainPattern {
    /// Validates `text` as a domain name, optionally prefixed by `*.` (subdomains only).
    pub fn parse(text: &str) -> Result<Self, EntryError> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        if name.is_empty() || name.len() > 253 {
            return Err(EntryError::DomainLength);
        }
        for label in name.split('.') {
            check_label(label)?;
        }
        if !name.contains('.') {
            return Err(EntryError::SingleLabel);
        }
        Ok(Self(lower))
    }

    /// The pattern as written in canonical form (`*.` kept).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_label(label: &str) -> Result<(), EntryError> {
    if label.is_empty() || label.len() > 63 {
        return Err(EntryError::LabelLength);
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(EntryError::LabelHyphen);
    }
    // Underscores appear in real service names (`_dmarc`), so they are accepted.
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(EntryError::Character(bad));
    }
    Ok(())
}

/// One line's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An address (as a /32 or /128) or a network, canonicalised.
    Net(IpNet),
    /// A domain pattern, enforced by the DNS proxy.
    Domain(DomainPattern),
}

/// Why a target (a profile line, or a target given on the command line) is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Looks like an address or network but does not parse as one.
    #[error("not a valid IP address or CIDR")]
    BadAddress,
    /// A domain longer than 253 characters, or empty.
    #[error("domain name is empty or longer than 253 characters")]
    DomainLength,
    /// A label that is empty or longer than 63 characters.
    #[error("domain label is empty or longer than 63 characters")]
    LabelLength,
    /// A label that starts or ends with a hyphen.
    #[error("domain label starts or ends with '-'")]
    LabelHyphen,
    /// A character that no host name may contain.
    #[error("character {0:?} is not allowed in a domain name")]
    Character(char),
    /// A bare word: almost always a typo, and it would match a whole top-level domain.
    #[error("a single-label name is not a domain (did you mean a full name like example.com?)")]
    SingleLabel,
}

impl Entry {
    /// Parses one target: an IP address, a CIDR, or a domain pattern.
    pub fn parse(text: &str) -> Result<Self, EntryError> {
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Self::Net(IpNet::from(addr)));
        }
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Self::Net(net.trunc()));
        }
        if looks_like_address(text) {
            return Err(EntryError::BadAddress);
        }
        DomainPattern::parse(text).map(Self::Domain)
    }
}

/// True for text that can only have been meant as an address: a `/`, a `:`, or digits and dots
/// alone (`10.0.0.256` must be refused as a bad address, not accepted as a name).
fn looks_like_address(text: &str) -> bool {
    text.contains('/') || text.contains(':') || text.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// A profile's entries, split by kind, in file order without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileEntries {
    /// Addresses and networks.
    pub nets: Vec<IpNet>,
    /// Domain patterns.
    pub domains: Vec<DomainPattern>,
}

impl ProfileEntries {
    /// Appends `other`'s entries that are not already present (composition of profiles).
    pub fn extend(&mut self, other: &Self) {
        append_new(&mut self.nets, other.nets.iter().copied());
        append_new(&mut self.domains, other.domains.iter().cloned());
    }
}

/// Appends the `items` that `list` does not hold yet, in their order, the first of repeated ones.
/// With an index: profiles of 100 000 addresses exist, and a scan of the list per item made
/// loading one take seconds.
fn append_new<T: Eq + Hash + Clone>(list: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    let mut held: HashSet<T> = list.iter().cloned().collect();
    for item in items {
        if held.insert(item.clone()) {
            list.push(item);
        }
    }
}

/// A bad line in a profile file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}: {text:?}: {reason}")]
pub struct LineError {
    /// Where the profile came from (a file path, or `bundled:NAME`).
    pub origin: String,
    /// 1-based line number.
    pub line: usize,
    /// The offending entry.
    pub text: String,
    /// What is wrong with it.
    pub reason: EntryError,
}

/// Parses a profile's text; `origin` names it in errors.
pub fn parse_profile(origin: &str, text: &str) -> Result<ProfileEntries, LineError> {
    let mut nets = Vec::new();
    let mut domains = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let entry = Entry::parse(content).map_err(|reason| LineError {
            origin: origin.to_owned(),
            line: index + 1,
            text: content.to_owned(),
            reason,
        })?;
        match entry {
            Entry::Net(net) => nets.push(net),
            Entry::Domain(domain) => domains.push(domain),
        }
    }
    let mut entries = ProfileEntries::default();
    append_new(&mut entries.nets, nets);
    append_new(&mut entries.domains, domains);
    Ok(entries)
}

/// Why a profile name is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid profile name {0:?}: use letters, digits, '.', '_' and '-', starting with a letter or digit (at most 64 characters)"
)]
pub struct NameError(pub String);

/// Checks a profile name (`^[A-Za-z0-9][A-Za-z0-9._-]*$`, at most 64 characters): names become
/// file names, so nothing that could escape the profile directory gets through.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(NameError(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn parses_every_kind_of_line() {
        let text = "# header\n\n1.2.3.4\n2001:0db8::1  # trailing comment\n192.168.1.5/24\nExample.COM.\n*.cdn.example.org\n";
        let entries = parse_profile("t.txt", text).unwrap();
        assert_eq!(
            entries.nets,
            vec![
                net("1.2.3.4/32"),
                net("2001:db8::1/128"),
                net("192.168.1.0/24")
            ]
        );
        let domains: Vec<_> = entries.domains.iter().map(DomainPattern::as_str).collect();
        assert_eq!(domains, ["example.com", "*.cdn.example.org"]);
    }

    #[test]
    fn duplicates_are_dropped_in_order() {
        let entries = parse_profile("t", "a.example\n1.1.1.1\nA.example\n1.1.1.1/32\n").unwrap();
        assert_eq!(entries.nets, vec![net("1.1.1.1/32")]);
        assert_eq!(entries.domains.len(), 1);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            ("ok.example\n10.0.0.256\n", 2, EntryError::BadAddress),
            ("1.2.3.4/33", 1, EntryError::BadAddress),
            ("2001:db8::zz", 1, EntryError::BadAddress),
            ("\n\nbad_label-.example", 3, EntryError::LabelHyphen),
            ("exa mple.com", 1, EntryError::Character(' ')),
            ("localhost", 1, EntryError::SingleLabel),
            ("a..example", 1, EntryError::LabelLength),
            ("*.", 1, EntryError::Character('*')),
            ("*.example", 1, EntryError::SingleLabel),
        ];
        for (text, line, reason) in cases {
            let err = parse_profile("dir/p.txt", text).unwrap_err();
            assert_eq!((err.line, &err.reason), (line, &reason), "{text:?}");
            assert!(err.to_string().starts_with(&format!("dir/p.txt:{line}: ")));
        }
        let long = format!("{}.example", "a".repeat(64));
        assert_eq!(
            parse_profile("p", &long).unwrap_err().reason,
            EntryError::LabelLength
        );
    }

    #[test]
    fn composition_keeps_first_occurrence_order() {
        let mut a = parse_profile("a", "1.1.1.1\nx.example\n").unwrap();
        let b = parse_profile("b", "2.2.2.2\n1.1.1.1\ny.example\n").unwrap();
        a.extend(&b);
        assert_eq!(a.nets, vec![net("1.1.1.1/32"), net("2.2.2.2/32")]);
        assert_eq!(a.domains.len(), 2);
    }

    #[test]
    fn profile_names() {
        for good in ["base", "dev-standard", "a.b_c-1", "X"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".hidden", "a/b", "../x", "a b", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
