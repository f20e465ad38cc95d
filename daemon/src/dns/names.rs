//! Which names a container may resolve: the DNS proxy's name policy.
//!
//! A container's allowlist is made of domain patterns, and the DNS proxy is the only place where a
//! domain turns into addresses the ruleset lets through. So every query name is decided here,
//! once per query: allowed names are resolved and their addresses opened, anything else is refused
//! (so a container cannot exfiltrate data through query names to arbitrary domains) or, if the
//! operator chose so, resolved without opening anything.
//!
//! Matching follows terok-shield / dnsmasq: a bare pattern `example.com` matches `example.com`
//! and every name below it; `*.example.com` matches only names strictly below `example.com`.
//! Matching is case-insensitive and label-aligned (`badexample.com` is not below `example.com`).
//! A denied pattern wins over any allowed one, whatever their specificity.
//!
//! Patterns are kept in hash maps keyed by the domain they are anchored at, and a query name is
//! looked up by walking its label suffixes, so a decision costs O(labels), not O(patterns): a
//! container can carry large profiles without slowing every query down.

use std::collections::HashMap;

use crate::profiles::DomainPattern;
use crate::ruleset::Mode;

/// What to do with a name that no pattern allows (config `dns.unlisted`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    /// Answer NXDOMAIN: the query never leaves the host, which closes DNS-name exfiltration.
    #[default]
    NxDomain,
    /// Resolve the name but let none of its addresses through.
    Forward,
}

/// What the proxy does with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Forward the query and let the answer's addresses through.
    Allow,
    /// Forward the query and answer the client, but let no address through.
    Forward,
    /// Do not forward: answer NXDOMAIN, or REFUSED when the reason is [`Reason::Blocked`].
    Refuse,
}

/// Why a name got its verdict (for the audit log and for choosing the response code).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The most specific allowed pattern matching the name.
    Allowed(DomainPattern),
    /// The most specific denied pattern matching the name.
    Denied(DomainPattern),
    /// No pattern matches the name (mode `up`).
    Unlisted,
    /// No pattern matches, and the container is in a `down` mode, where everything resolves.
    DownMode,
    /// The container is in mode `block`: nothing resolves.
    Blocked,
}

/// The decision for one query name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// What to do.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
}

/// The name policy of one container, built once per policy change and queried per DNS query.
#[derive(Clone, Debug)]
pub struct NamePolicy {
    allowed: PatternSet,
    denied: PatternSet,
    mode: Mode,
    unlisted: Unlisted,
}

impl NamePolicy {
    /// Builds the policy from the container's allowed and denied domain patterns.
    pub fn new(
        allowed: &[DomainPattern],
        denied: &[DomainPattern],
        mode: Mode,
        unlisted: Unlisted,
    ) -> Self {
        Self {
            allowed: PatternSet::new(allowed),
            denied: PatternSet::new(denied),
            mode,
            unlisted,
        }
    }

    /// Decides what to do with a query for `qname` (any case, trailing dot allowed; labels
    /// containing a dot must be backslash-escaped, as `Name::to_ascii` writes them).
    pub fn decide(&self, qname: &str) -> Decision {
        // Block is checked first: in that mode nothing is forwarded, whatever the patterns say.
        if self.mode == Mode::Block {
            return Decision {
                verdict: Verdict::Refuse,
                reason: Reason::Blocked,
            };
        }
        let name = normalize(qname);
        if let Some(pattern) = self.denied.most_specific_match(&name) {
            return Decision {
                verdict: Verdict::Refuse,
                reason: Reason::Denied(pattern.clone()),
            };
        }
        if let Some(pattern) = self.allowed.most_specific_match(&name) {
            return Decision {
                verdict: Verdict::Allow,
                reason: Reason::Allowed(pattern.clone()),
            };
        }
        match (self.mode, self.unlisted) {
            (Mode::Down | Mode::DownAll, _) => Decision {
                verdict: Verdict::Forward,
                reason: Reason::DownMode,
            },
            (_, Unlisted::NxDomain) => Decision {
                verdict: Verdict::Refuse,
                reason: Reason::Unlisted,
            },
            (_, Unlisted::Forward) => Decision {
                verdict: Verdict::Forward,
                reason: Reason::Unlisted,
            },
        }
    }

    /// Whether the addresses of `qname` may be let through (the verdict is [`Verdict::Allow`]).
    pub fn is_allowed_name(&self, qname: &str) -> bool {
        self.decide(qname).verdict == Verdict::Allow
    }

    /// The mode the policy was built for.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// Domain patterns indexed by the domain they are anchored at.
#[derive(Clone, Debug, Default)]
struct PatternSet {
    /// `example.com` → the bare pattern, matching that name and everything below it.
    bare: HashMap<String, DomainPattern>,
    /// `example.com` → `*.example.com`, matching only names strictly below it.
    wildcard: HashMap<String, DomainPattern>,
}

impl PatternSet {
    fn new(patterns: &[DomainPattern]) -> Self {
        let mut set = Self::default();
        for pattern in patterns {
            match pattern.as_str().strip_prefix("*.") {
                Some(base) => set.wildcard.insert(base.to_owned(), pattern.clone()),
                None => set
                    .bare
                    .insert(pattern.as_str().to_owned(), pattern.clone()),
            };
        }
        set
    }

    /// The longest pattern matching `name` (already normalized), if any.
    fn most_specific_match(&self, name: &str) -> Option<&DomainPattern> {
        if self.bare.is_empty() && self.wildcard.is_empty() {
            return None;
        }
        // Suffixes come longest first, so the first hit is the most specific pattern.
        label_suffixes(name).find_map(|(suffix, is_whole_name)| {
            // `*.suffix` is longer than the bare `suffix`, so it is preferred when both match.
            let wildcard = if is_whole_name {
                None
            } else {
                self.wildcard.get(suffix)
            };
            wildcard.or_else(|| self.bare.get(suffix))
        })
    }
}

/// Lower-cases `qname` and drops one trailing dot (the root), the form patterns are stored in.
pub(crate) fn normalize(qname: &str) -> String {
    let trimmed = match qname.strip_suffix('.') {
        // `\.` at the end is an escaped dot inside the last label, not the root.
        Some(rest) if !ends_with_escape(rest) => rest,
        _ => qname,
    };
    trimmed.to_ascii_lowercase()
}

/// Whether `text` ends with an unpaired backslash (so the next character is escaped).
fn ends_with_escape(text: &str) -> bool {
    let backslashes = text.bytes().rev().take_while(|&b| b == b'\\').count();
    backslashes % 2 == 1
}

/// The label-aligned suffixes of a normalized `name`, longest (the whole name) first, each with
/// whether it is the whole name. Backslash-escaped dots (`a\.b`) are inside a label and are not
/// label boundaries, so a label containing a dot cannot pose as two labels of an allowed domain.
pub(crate) fn label_suffixes(name: &str) -> impl Iterator<Item = (&str, bool)> {
    let mut boundaries = Vec::new();
    let mut escaped = false;
    for (index, byte) in name.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if byte == b'\\' {
            escaped = true;
        } else if byte == b'.' {
            boundaries.push(index + 1);
        }
    }
    let whole = (!name.is_empty()).then_some((name, true));
    whole.into_iter().chain(
        boundaries
            .into_iter()
            .filter(move |&start| start < name.len())
            .filter_map(move |start| name.get(start..).map(|suffix| (suffix, false))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(texts: &[&str]) -> Vec<DomainPattern> {
        texts
            .iter()
            .map(|text| DomainPattern::parse(text).unwrap())
            .collect()
    }

    fn policy(allowed: &[&str], denied: &[&str], mode: Mode, unlisted: Unlisted) -> NamePolicy {
        NamePolicy::new(&patterns(allowed), &patterns(denied), mode, unlisted)
    }

    fn up(allowed: &[&str], denied: &[&str]) -> NamePolicy {
        policy(allowed, denied, Mode::Up, Unlisted::NxDomain)
    }

    fn allowed_by(pattern: &str) -> Decision {
        Decision {
            verdict: Verdict::Allow,
            reason: Reason::Allowed(DomainPattern::parse(pattern).unwrap()),
        }
    }

    fn denied_by(pattern: &str) -> Decision {
        Decision {
            verdict: Verdict::Refuse,
            reason: Reason::Denied(DomainPattern::parse(pattern).unwrap()),
        }
    }

    const UNLISTED: Decision = Decision {
        verdict: Verdict::Refuse,
        reason: Reason::Unlisted,
    };

    #[test]
    fn bare_pattern_matches_itself_and_every_subdomain() {
        let policy = up(&["example.com"], &[]);
        assert_eq!(policy.decide("example.com"), allowed_by("example.com"));
        assert_eq!(policy.decide("www.example.com"), allowed_by("example.com"));
        assert_eq!(
            policy.decide("a.b.c.example.com"),
            allowed_by("example.com")
        );
        assert_eq!(policy.decide("example.org"), UNLISTED);
        assert_eq!(policy.decide("com"), UNLISTED);
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let policy = up(&["*.example.com"], &[]);
        assert_eq!(policy.decide("example.com"), UNLISTED);
        assert_eq!(policy.decide("example.com."), UNLISTED);
        assert_eq!(
            policy.decide("www.example.com"),
            allowed_by("*.example.com")
        );
        assert_eq!(
            policy.decide("x.y.example.com"),
            allowed_by("*.example.com")
        );
    }

    #[test]
    fn matching_is_label_aligned() {
        let policy = up(&["example.com", "*.test.org"], &[]);
        assert_eq!(policy.decide("badexample.com"), UNLISTED);
        assert_eq!(policy.decide("www.badexample.com"), UNLISTED);
        assert_eq!(policy.decide("x.latest.org"), UNLISTED);
        assert_eq!(policy.decide("example.com.evil.net"), UNLISTED);
    }

    #[test]
    fn case_and_trailing_dot_are_ignored() {
        let policy = up(&["example.com"], &[]);
        assert_eq!(policy.decide("WWW.Example.COM."), allowed_by("example.com"));
        assert_eq!(policy.decide("EXAMPLE.COM"), allowed_by("example.com"));
        assert!(policy.is_allowed_name("Example.Com."));
        assert!(!policy.is_allowed_name("example.net."));
    }

    #[test]
    fn escaped_dots_are_not_label_boundaries() {
        let policy = up(&["example.com"], &[]);
        // One label `evil.example` under `com`: not below example.com.
        assert_eq!(policy.decide("evil\\.example.com"), UNLISTED);
        // A label containing an escaped dot below example.com is still below it.
        assert_eq!(
            policy.decide("a\\.b.example.com"),
            allowed_by("example.com")
        );
        // A trailing `\.` is part of the last label, not the root.
        assert_eq!(policy.decide("example.com\\."), UNLISTED);
    }

    #[test]
    fn most_specific_pattern_is_reported() {
        let policy = up(
            &["example.com", "api.example.com", "*.api.example.com"],
            &[],
        );
        assert_eq!(policy.decide("example.com"), allowed_by("example.com"));
        assert_eq!(policy.decide("www.example.com"), allowed_by("example.com"));
        assert_eq!(
            policy.decide("api.example.com"),
            allowed_by("api.example.com")
        );
        assert_eq!(
            policy.decide("v1.api.example.com"),
            allowed_by("*.api.example.com")
        );
    }

    #[test]
    fn deny_of_parent_wins_over_allow_of_child() {
        let policy = up(&["api.example.com"], &["example.com"]);
        assert_eq!(policy.decide("api.example.com"), denied_by("example.com"));
        assert_eq!(
            policy.decide("v1.api.example.com"),
            denied_by("example.com")
        );
        assert_eq!(policy.decide("example.com"), denied_by("example.com"));
    }

    #[test]
    fn deny_of_child_carves_out_of_allowed_parent() {
        let policy = up(
            &["example.com"],
            &["ads.example.com", "*.track.example.com"],
        );
        assert_eq!(policy.decide("www.example.com"), allowed_by("example.com"));
        assert_eq!(
            policy.decide("ads.example.com"),
            denied_by("ads.example.com")
        );
        assert_eq!(
            policy.decide("x.ads.example.com"),
            denied_by("ads.example.com")
        );
        // The wildcard deny leaves its base name allowed.
        assert_eq!(
            policy.decide("track.example.com"),
            allowed_by("example.com")
        );
        assert_eq!(
            policy.decide("pixel.track.example.com"),
            denied_by("*.track.example.com")
        );
    }

    #[test]
    fn same_pattern_allowed_and_denied_is_denied() {
        let policy = up(&["example.com"], &["example.com"]);
        assert_eq!(policy.decide("example.com"), denied_by("example.com"));
    }

    #[test]
    fn unlisted_forward_resolves_without_allowing() {
        let policy = policy(&["example.com"], &[], Mode::Up, Unlisted::Forward);
        assert_eq!(
            policy.decide("other.net"),
            Decision {
                verdict: Verdict::Forward,
                reason: Reason::Unlisted
            }
        );
        assert_eq!(policy.decide("example.com"), allowed_by("example.com"));
    }

    #[test]
    fn down_modes_forward_everything_but_still_deny() {
        for mode in [Mode::Down, Mode::DownAll] {
            for unlisted in [Unlisted::NxDomain, Unlisted::Forward] {
                let policy = policy(&["example.com"], &["evil.net"], mode, unlisted);
                assert_eq!(
                    policy.decide("other.org"),
                    Decision {
                        verdict: Verdict::Forward,
                        reason: Reason::DownMode
                    }
                );
                assert_eq!(policy.decide("www.example.com"), allowed_by("example.com"));
                assert_eq!(policy.decide("x.evil.net"), denied_by("evil.net"));
            }
        }
    }

    #[test]
    fn block_mode_refuses_everything() {
        let policy = policy(
            &["example.com"],
            &["evil.net"],
            Mode::Block,
            Unlisted::Forward,
        );
        let blocked = Decision {
            verdict: Verdict::Refuse,
            reason: Reason::Blocked,
        };
        assert_eq!(policy.decide("example.com"), blocked);
        assert_eq!(policy.decide("evil.net"), blocked);
        assert_eq!(policy.decide("other.org"), blocked);
        assert_eq!(policy.mode(), Mode::Block);
    }

    #[test]
    fn empty_and_root_names_are_unlisted() {
        let policy = up(&["example.com"], &[]);
        assert_eq!(policy.decide(""), UNLISTED);
        assert_eq!(policy.decide("."), UNLISTED);
    }

    #[test]
    fn suffixes_are_label_aligned_and_longest_first() {
        let suffixes: Vec<_> = label_suffixes("a.b\\.c.d").collect();
        assert_eq!(
            suffixes,
            vec![("a.b\\.c.d", true), ("b\\.c.d", false), ("d", false)]
        );
        assert_eq!(label_suffixes("").count(), 0);
        assert_eq!(normalize("A.B."), "a.b");
        assert_eq!(normalize("a.b\\."), "a.b\\.");
        assert_eq!(normalize("a.b\\\\."), "a.b\\\\");
    }
}
