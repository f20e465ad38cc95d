//! Addresses learnt from DNS for one container: which names let them in, and until when. Pure:
//! the caller passes the clock.
//!
//! The kernel expires dns-set elements by itself; this bookkeeping exists so that a deny of a
//! name can withdraw exactly its addresses (unless another allowed name still holds them), and so
//! that a full table replacement (a mode change) can carry the elements over with the time they
//! have left.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One address and the names it was learnt for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holders {
    names: BTreeSet<String>,
    expires: Instant,
}

/// The learnt addresses of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LearntAddrs {
    addrs: BTreeMap<IpAddr, Holders>,
}

impl LearntAddrs {
    /// Records that `name` resolved to `addr` for `ttl` from `now`. A later expiry wins.
    pub fn learn(&mut self, name: &str, addr: IpAddr, ttl: Duration, now: Instant) {
        let expires = now + ttl;
        let holders = self.addrs.entry(addr).or_insert_with(|| Holders {
            names: BTreeSet::new(),
            expires,
        });
        holders.names.insert(name.to_owned());
        holders.expires = holders.expires.max(expires);
    }

    /// Forgets every name for which `forgotten` holds (the names a new deny matches); returns
    /// the addresses that no remaining name holds any more (they must leave the dns sets).
    pub fn forget_where(
        &mut self,
        mut forgotten: impl FnMut(&str) -> bool,
        now: Instant,
    ) -> Vec<IpAddr> {
        self.prune(now);
        let mut orphans = Vec::new();
        for (addr, holders) in &mut self.addrs {
            let before = holders.names.len();
            holders.names.retain(|name| !forgotten(name));
            if holders.names.is_empty() && before > 0 {
                orphans.push(*addr);
            }
        }
        for addr in &orphans {
            self.addrs.remove(addr);
        }
        orphans
    }

    /// Every name with its addresses and the time each has left at `now`, ordered by name; for
    /// `shieldctl dns`.
    pub fn by_name(&self, now: Instant) -> BTreeMap<String, Vec<(IpAddr, Duration)>> {
        let mut names: BTreeMap<String, Vec<(IpAddr, Duration)>> = BTreeMap::new();
        for (addr, holders) in self.addrs.iter().filter(|(_, h)| h.expires > now) {
            for name in &holders.names {
                names
                    .entry(name.clone())
                    .or_default()
                    .push((*addr, holders.expires - now));
            }
        }
        names
    }

    /// Every address still valid at `now`, with the time it has left rounded up to whole
    /// seconds: never 0 (which would mean "no timeout"), and exact in the kernel, which keeps
    /// timeouts in jiffies (1 ms to 10 ms): a carried-over element reads back as it was written.
    pub fn remaining(&self, now: Instant) -> Vec<(IpAddr, Duration)> {
        self.addrs
            .iter()
            .filter(|(_, holders)| holders.expires > now)
            .map(|(addr, holders)| {
                let left = holders.expires - now;
                let whole_seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                (*addr, Duration::from_secs(whole_seconds))
            })
            .collect()
    }

    /// The time `addr` has left at `now`, if it is recorded and not expired.
    pub fn time_left(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        self.addrs
            .get(&addr)
            .and_then(|holders| holders.expires.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Drops what has expired.
    pub fn prune(&mut self, now: Instant) {
        self.addrs.retain(|_, holders| holders.expires > now);
    }

    /// How many addresses are recorded (expired ones included until the next prune).
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forget_keeps_addresses_another_name_holds() {
        let now = Instant::now();
        let mut learnt = LearntAddrs::default();
        learnt.learn("a.example", ip("192.0.2.1"), Duration::from_secs(60), now);
        learnt.learn("a.example", ip("192.0.2.2"), Duration::from_secs(60), now);
        learnt.learn("b.example", ip("192.0.2.2"), Duration::from_secs(60), now);
        assert_eq!(
            learnt.forget_where(|name| name == "a.example", now),
            vec![ip("192.0.2.1")]
        );
        assert_eq!(learnt.len(), 1);
        assert_eq!(
            learnt.forget_where(|name| name == "b.example", now),
            vec![ip("192.0.2.2")]
        );
        assert!(learnt.is_empty());
    }

    #[test]
    fn forget_where_matches_several_names_and_by_name_lists_them() {
        let now = Instant::now();
        let mut learnt = LearntAddrs::default();
        let minute = Duration::from_secs(60);
        learnt.learn("api.example.com", ip("192.0.2.1"), minute, now);
        learnt.learn("cdn.example.com", ip("192.0.2.2"), minute, now);
        learnt.learn("other.test", ip("192.0.2.2"), minute, now);
        let listed = learnt.by_name(now + Duration::from_secs(10));
        assert_eq!(
            listed.get("cdn.example.com"),
            Some(&vec![(ip("192.0.2.2"), Duration::from_secs(50))])
        );
        assert_eq!(listed.len(), 3);
        let orphans = learnt.forget_where(|name| name.ends_with(".example.com"), now);
        assert_eq!(orphans, vec![ip("192.0.2.1")]);
        assert_eq!(
            learnt.by_name(now).keys().collect::<Vec<_>>(),
            vec!["other.test"]
        );
    }

    #[test]
    fn remaining_counts_down_and_expired_entries_go() {
        let now = Instant::now();
        let mut learnt = LearntAddrs::default();
        learnt.learn("a.example", ip("2001:db8::1"), Duration::from_secs(30), now);
        learnt.learn("a.example", ip("2001:db8::1"), Duration::from_secs(10), now);
        let later = now + Duration::from_secs(20);
        assert_eq!(
            learnt.remaining(later),
            vec![(ip("2001:db8::1"), Duration::from_secs(10))]
        );
        let between = now + Duration::from_millis(20_250);
        assert_eq!(
            learnt.remaining(between),
            vec![(ip("2001:db8::1"), Duration::from_secs(10))]
        );
        assert_eq!(
            learnt.time_left(ip("2001:db8::1"), later),
            Some(Duration::from_secs(10))
        );
        let expired = now + Duration::from_secs(31);
        assert_eq!(learnt.time_left(ip("2001:db8::1"), expired), None);
        assert!(learnt.remaining(expired).is_empty());
        learnt.prune(expired);
        assert!(learnt.is_empty());
    }
}
