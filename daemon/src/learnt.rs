//! Addresses learnt from DNS for one container: which names let them in, and until when. Pure:
//! the caller passes the clock.
//!
//! The kernel expires dns-set elements by itself; this bookkeeping exists so that a deny of a
//! name can withdraw exactly its addresses (unless another allowed name still holds them), and so
//! that a full table replacement (a mode change) can carry the elements over with the time they
//! have left.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One address: each name it was learnt for, until when that name's answer holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holders {
    names: BTreeMap<String, Instant>,
    /// The latest of the names' expiries (the element's expiry in the kernel), kept so that
    /// looking it up does not walk the names: one address can be held by thousands of names.
    expires: Instant,
}

impl Holders {
    /// Drops the names whose answers have expired at `now`; whether any is left.
    fn prune(&mut self, now: Instant) -> bool {
        self.names.retain(|_, until| *until > now);
        self.settle()
    }

    /// The time the address has left at `now`; `None` once expired.
    fn left(&self, now: Instant) -> Option<Duration> {
        self.expires
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }

    /// Recomputes the expiry after names were removed; whether any is left.
    fn settle(&mut self) -> bool {
        match self.names.values().max() {
            Some(latest) => {
                self.expires = *latest;
                true
            }
            None => false,
        }
    }
}

/// `duration` rounded up to whole seconds: never 0 for a positive duration (an element timeout
/// of 0 means "no timeout"), and exact in the kernel, which keeps timeouts in jiffies (1 ms to
/// 10 ms), so an element reads back as it was written.
fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs() + u64::from(duration.subsec_nanos() > 0))
}

/// What [`LearntAddrs::elements_for`] gives: the elements to write and those to remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElementsFor {
    /// Addresses to (re-)add, each with its element timeout.
    pub adds: Vec<(IpAddr, Duration)>,
    /// Addresses to remove.
    pub removes: Vec<IpAddr>,
}

/// Below this many (address, name) entries, [`LearntAddrs::learn`] never prunes.
const PRUNE_FLOOR: usize = 1024;

/// The learnt addresses of one container.
///
/// Each name holds an address only as long as its own answer said: a name that resolved to an
/// address once does not keep "still resolving to it" after its TTL while other names refresh
/// the address, so a deny of the names still holding it withdraws it, and the names recorded
/// for a long-lived address do not pile up. Expired entries are dropped as the record grows
/// (whenever it has doubled since the last pruning), so its size follows what is live, not
/// everything a container ever resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LearntAddrs {
    addrs: BTreeMap<IpAddr, Holders>,
    /// (address, name) entries recorded, expired ones included until the next pruning.
    entries: usize,
    /// The number of entries at which the next [`LearntAddrs::learn`] prunes.
    prune_at: usize,
}

impl LearntAddrs {
    /// Records that `name` resolved to `addr` for `ttl` from `now`. A later expiry wins.
    pub fn learn(&mut self, name: &str, addr: IpAddr, ttl: Duration, now: Instant) {
        let expires = now + ttl;
        let holders = self.addrs.entry(addr).or_insert_with(|| Holders {
            names: BTreeMap::new(),
            expires,
        });
        holders.expires = holders.expires.max(expires);
        match holders.names.get_mut(name) {
            Some(until) => *until = (*until).max(expires),
            None => {
                holders.names.insert(name.to_owned(), expires);
                self.entries += 1;
            }
        }
        if self.entries >= self.prune_at.max(PRUNE_FLOOR) {
            self.prune(now);
            self.prune_at = self.entries.saturating_mul(2);
        }
    }

    /// Forgets every name for which `forgotten` holds (the names a new deny matches); returns
    /// the addresses whose elements that changes ([`elements_for`](Self::elements_for) says
    /// how): those no remaining name holds (they must leave the dns sets), and those whose
    /// latest expiry was a forgotten name's (they must be cut to what the remaining names
    /// justify, not stay open for the denied name's TTL).
    pub fn forget_where(
        &mut self,
        mut forgotten: impl FnMut(&str) -> bool,
        now: Instant,
    ) -> Vec<IpAddr> {
        self.prune(now);
        let mut changed = Vec::new();
        let mut orphans = Vec::new();
        for (addr, holders) in &mut self.addrs {
            let expiry_before = holders.expires;
            holders.names.retain(|name, _| !forgotten(name));
            if !holders.settle() {
                orphans.push(*addr);
                changed.push(*addr);
            } else if holders.expires < expiry_before {
                changed.push(*addr);
            }
        }
        for addr in &orphans {
            self.addrs.remove(addr);
        }
        self.count_entries();
        changed
    }

    /// The dns-set elements that bring `addrs` to what this record says at `now`: each address
    /// a name holds is (re-)added with [`element_timeout`](Self::element_timeout) (re-adding an
    /// element sets its expiry afresh, shorter or longer), each other address is removed.
    ///
    /// Applied to the record before a change, it gives the elements that undo the change.
    pub fn elements_for(
        &self,
        addrs: impl IntoIterator<Item = IpAddr>,
        now: Instant,
    ) -> ElementsFor {
        let mut elements = ElementsFor::default();
        for addr in addrs {
            match self.element_timeout(addr, now) {
                Some(timeout) => elements.adds.push((addr, timeout)),
                None => elements.removes.push(addr),
            }
        }
        elements
    }

    /// Every name with its addresses and the time each address has left in the dns sets at
    /// `now` (the longest any of its names holds it), ordered by name; for `shieldctl dns`.
    pub fn by_name(&self, now: Instant) -> BTreeMap<String, Vec<(IpAddr, Duration)>> {
        let mut names: BTreeMap<String, Vec<(IpAddr, Duration)>> = BTreeMap::new();
        for (addr, holders) in &self.addrs {
            let Some(left) = holders.left(now) else {
                continue;
            };
            for name in holders
                .names
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(name, _)| name)
            {
                names.entry(name.clone()).or_default().push((*addr, left));
            }
        }
        names
    }

    /// Every address still valid at `now`, with the time it has left rounded up to whole seconds
    /// (the timeout of a carried-over element: never 0, which would mean no timeout, and exact in
    /// the kernel's jiffies).
    pub fn remaining(&self, now: Instant) -> Vec<(IpAddr, Duration)> {
        self.addrs
            .iter()
            .filter_map(|(addr, holders)| Some((*addr, whole_seconds(holders.left(now)?))))
            .collect()
    }

    /// The time `addr` has left at `now`, if it is recorded and not expired.
    pub fn time_left(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        self.addrs.get(&addr).and_then(|holders| holders.left(now))
    }

    /// The timeout an element of `addr` written at `now` gets: the time it has left, rounded up
    /// to whole seconds; `None` if it is not recorded or has expired.
    pub fn element_timeout(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        self.time_left(addr, now).map(whole_seconds)
    }

    /// Drops what has expired: names whose answers no longer hold an address, and addresses
    /// no name holds.
    pub fn prune(&mut self, now: Instant) {
        self.addrs.retain(|_, holders| holders.prune(now));
        self.count_entries();
    }

    fn count_entries(&mut self) {
        self.entries = self.addrs.values().map(|holders| holders.names.len()).sum();
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

    /// A name that resolved to an address once stops holding it when its own answer expires,
    /// even while another name keeps the address alive: denying the other name then withdraws
    /// the address.
    #[test]
    fn a_name_holds_an_address_only_for_its_own_ttl() {
        let now = Instant::now();
        let mut learnt = LearntAddrs::default();
        let shared = ip("192.0.2.7");
        learnt.learn("once.example", shared, Duration::from_secs(30), now);
        learnt.learn("kept.example", shared, Duration::from_secs(60), now);
        let later = now + Duration::from_secs(45);
        learnt.learn("kept.example", shared, Duration::from_secs(60), later);
        assert_eq!(
            learnt.by_name(later).keys().collect::<Vec<_>>(),
            vec!["kept.example"]
        );
        assert_eq!(
            learnt.time_left(shared, later),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            learnt.forget_where(|name| name == "kept.example", later),
            vec![shared]
        );
        assert!(learnt.is_empty());
    }

    /// A deny of the name whose answer held an address longest cuts the address to the time
    /// the names left hold it; a deny of a name that did not hold it longest changes nothing.
    #[test]
    fn a_deny_cuts_a_shared_address_to_the_time_the_other_names_hold_it() {
        let now = Instant::now();
        let mut learnt = LearntAddrs::default();
        let shared = ip("192.0.2.8");
        learnt.learn("long.example", shared, Duration::from_secs(600), now);
        learnt.learn("short.example", shared, Duration::from_secs(40), now);
        learnt.learn("shorter.example", shared, Duration::from_secs(35), now);
        assert_eq!(
            learnt.forget_where(|name| name == "shorter.example", now),
            Vec::<IpAddr>::new(),
            "the longest holder is still there"
        );
        let later = now + Duration::from_millis(1_500);
        assert_eq!(
            learnt.forget_where(|name| name == "long.example", later),
            vec![shared]
        );
        assert_eq!(
            learnt.elements_for([shared], later),
            ElementsFor {
                adds: vec![(shared, Duration::from_secs(39))],
                removes: Vec::new(),
            },
            "38.5 s left, rounded up"
        );
    }

    /// The elements for the record before a change undo what the elements for the record after
    /// it did: an address the change withdrew comes back with the time it had, one it let in
    /// goes.
    #[test]
    fn the_old_record_gives_the_elements_that_undo_a_change() {
        let now = Instant::now();
        let (kept, withdrawn, allowed) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::3"));
        let mut before = LearntAddrs::default();
        before.learn("kept.example", kept, Duration::from_secs(60), now);
        before.learn("denied.example", withdrawn, Duration::from_secs(90), now);
        let mut after = before.clone();
        after.learn("allowed.example", allowed, Duration::from_secs(30), now);
        let mut touched = vec![allowed];
        touched.extend(after.forget_where(|name| name == "denied.example", now));
        assert_eq!(
            after.elements_for(touched.iter().copied(), now),
            ElementsFor {
                adds: vec![(allowed, Duration::from_secs(30))],
                removes: vec![withdrawn],
            }
        );
        assert_eq!(
            before.elements_for(touched.iter().copied(), now),
            ElementsFor {
                adds: vec![(withdrawn, Duration::from_secs(90))],
                removes: vec![allowed],
            }
        );
    }

    /// The record against a plain model (every (name, address) pair with its expiry, nothing
    /// ever pruned) over random answers, denies and passing time: an address always has the
    /// time the longest of its names still holds it, and a deny reports exactly the addresses
    /// whose time it changed.
    #[test]
    fn the_record_matches_a_plain_model() {
        let names = ["a.example", "b.example", "c.example", "d.example"];
        let addrs: Vec<IpAddr> = (1..=5)
            .map(|n| IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, n)))
            .collect();
        let left_in = |model: &BTreeMap<(&str, IpAddr), Instant>, addr: IpAddr, now: Instant| {
            model
                .iter()
                .filter(|((_, held), until)| *held == addr && **until > now)
                .map(|(_, until)| *until - now)
                .max()
        };
        // xorshift64: the same sequence on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut below = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % bound as u64).unwrap()
        };
        let mut now = Instant::now();
        let mut learnt = LearntAddrs::default();
        let mut model = BTreeMap::new();
        for step in 0..20_000 {
            let name = names[below(names.len())];
            match below(10) {
                0..=5 => {
                    let addr = addrs[below(addrs.len())];
                    let ttl = Duration::from_secs(1 + below(60) as u64);
                    learnt.learn(name, addr, ttl, now);
                    let until = model.entry((name, addr)).or_insert(now + ttl);
                    *until = (*until).max(now + ttl);
                }
                6 => {
                    let before: Vec<_> = addrs.iter().map(|a| left_in(&model, *a, now)).collect();
                    model.retain(|(held_by, _), _| *held_by != name);
                    let expected: Vec<IpAddr> = addrs
                        .iter()
                        .zip(before)
                        .filter(|(a, left)| left.is_some() && left_in(&model, **a, now) != *left)
                        .map(|(a, _)| *a)
                        .collect();
                    let mut changed = learnt.forget_where(|n| n == name, now);
                    changed.sort();
                    assert_eq!(changed, expected, "step {step}: deny of {name}");
                }
                _ => now += Duration::from_millis(below(20_000) as u64),
            }
            for addr in &addrs {
                assert_eq!(
                    learnt.time_left(*addr, now),
                    left_in(&model, *addr, now),
                    "step {step}: {addr}"
                );
            }
        }
    }

    /// Learning prunes as the record grows: a container resolving ever new names keeps only
    /// what is live, not everything it ever resolved.
    #[test]
    fn the_record_stays_the_size_of_what_is_live() {
        let start = Instant::now();
        let mut learnt = LearntAddrs::default();
        let mut largest = 0;
        for n in 0..100_000_u32 {
            // One new address a millisecond, each held for 2 s: about 2 000 live at a time.
            let now = start + Duration::from_millis(u64::from(n));
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            learnt.learn("flood.example", addr, Duration::from_secs(2), now);
            largest = largest.max(learnt.len());
        }
        assert!(
            largest <= 2 * 2_000 + PRUNE_FLOOR,
            "the record grew to {largest} addresses"
        );
    }

    /// The same with one address and ever new names for it (a wildcard whose every name
    /// answers one address): the names are pruned too.
    #[test]
    fn names_of_one_address_do_not_pile_up() {
        let start = Instant::now();
        let mut learnt = LearntAddrs::default();
        let addr = ip("192.0.2.9");
        for n in 0..100_000_u64 {
            let now = start + Duration::from_millis(n);
            learnt.learn(
                &format!("n{n}.flood.example"),
                addr,
                Duration::from_secs(2),
                now,
            );
        }
        let end = start + Duration::from_millis(100_000);
        assert_eq!(learnt.len(), 1);
        assert!(
            learnt.entries <= 2 * 2_000 + PRUNE_FLOOR,
            "{} names recorded for one address",
            learnt.entries
        );
        assert_eq!(learnt.by_name(end).len(), 1_999);
    }
}
