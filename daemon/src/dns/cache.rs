//! A small TTL-aware cache of upstream answers, one per container proxy.
//!
//! Containers repeat the same lookups constantly; answering them from memory keeps upstream load
//! and latency down. A cached answer keeps the addresses it opened together with their TTLs, so
//! a hit can refresh the ruleset's elements with the remaining lifetime before the client gets
//! the answer (an address must be open before the client learns it).
//!
//! An entry lives as long as the shortest TTL among the answer's records, so nothing is served
//! past the time its upstream allowed. Negative answers (NXDOMAIN, or NOERROR without answers)
//! live for the SOA's negative TTL (RFC 2308), capped by the configuration; without an SOA they
//! are not cached. The cache is bounded: when full it drops expired entries, then the oldest.
//!
//! Pure: the caller passes the clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};

use super::message::Query;
use super::names;

/// What an answer is cached under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The query name: lower-case, without the trailing dot (as in [`Query::name`]).
    pub name: String,
    /// The query type.
    pub record_type: RecordType,
    /// The query class.
    pub class: DNSClass,
}

impl CacheKey {
    /// The key of `query`'s question.
    pub fn of(query: &Query) -> Self {
        Self {
            name: query.name.clone(),
            record_type: query.record_type,
            class: query.class,
        }
    }
}

/// A cached answer, as of the time it was looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheHit {
    /// The upstream reply as received (pass it to `rewrite_reply` with `age_secs`).
    pub reply: Message,
    /// Whole seconds since the answer was cached.
    pub age_secs: u32,
    /// The answer's addresses with their remaining TTLs (at least 1 s: the entry is live).
    pub addresses: Vec<(IpAddr, u32)>,
}

#[derive(Clone, Debug)]
struct Entry {
    reply: Message,
    addresses: Vec<(IpAddr, u32)>,
    inserted: Instant,
    lifetime: Duration,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.inserted) < self.lifetime
    }
}

/// A bounded cache of upstream answers.
#[derive(Clone, Debug)]
pub struct AnswerCache {
    entries: HashMap<CacheKey, Entry>,
    capacity: usize,
    negative_ttl_cap: u32,
}

/// How long a negative answer is kept at most, unless set with
/// [`AnswerCache::with_negative_ttl_cap`]: short, so that a name that starts to exist (or a
/// transient upstream NXDOMAIN) does not stay unresolvable in a container for long.
pub const DEFAULT_NEGATIVE_TTL_CAP: u32 = 300;

impl AnswerCache {
    /// A cache of at most `capacity` answers (0 disables caching), keeping negative answers at
    /// most [`DEFAULT_NEGATIVE_TTL_CAP`] seconds.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            negative_ttl_cap: DEFAULT_NEGATIVE_TTL_CAP,
        }
    }

    /// The same cache keeping negative answers at most `seconds` (0: not at all).
    #[must_use]
    pub fn with_negative_ttl_cap(mut self, seconds: u32) -> Self {
        self.negative_ttl_cap = seconds;
        self
    }

    /// Caches `reply` (with the `addresses` [`read_reply`](super::reply::read_reply) found in it)
    /// under `key`, replacing an older answer. Returns whether it was cached: answers with a
    /// lifetime of 0, truncated replies and error codes other than NXDOMAIN are not.
    pub fn insert(
        &mut self,
        key: CacheKey,
        reply: Message,
        addresses: Vec<(IpAddr, u32)>,
        now: Instant,
    ) -> bool {
        let lifetime = lifetime(&reply, self.negative_ttl_cap);
        if lifetime == 0 || self.capacity == 0 {
            return false;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        self.entries.insert(
            key,
            Entry {
                reply,
                addresses,
                inserted: now,
                lifetime: Duration::from_secs(u64::from(lifetime)),
            },
        );
        true
    }

    /// The live answer cached under `key`, if any.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<CacheHit> {
        let entry = self.entries.get(key).filter(|entry| entry.is_live(now))?;
        let age = now.saturating_duration_since(entry.inserted).as_secs();
        // A live entry's age is below its lifetime, which came from a u32.
        let age_secs = u32::try_from(age).unwrap_or(u32::MAX);
        let addresses = entry
            .addresses
            .iter()
            .filter_map(|&(address, ttl)| {
                let remaining = ttl.saturating_sub(age_secs);
                (remaining > 0).then_some((address, remaining))
            })
            .collect();
        Some(CacheHit {
            reply: entry.reply.clone(),
            age_secs,
            addresses,
        })
    }

    /// Removes the answers for `name` and every name below it (e.g. when that domain is denied).
    /// `name` may be a domain pattern: a leading `*.` is ignored, which also drops the base name
    /// (harmless: it is only a cache miss).
    pub fn remove_name(&mut self, name: &str) {
        let normalized = names::normalize(name);
        let base = normalized.strip_prefix("*.").unwrap_or(&normalized);
        self.entries
            .retain(|key, _| !names::label_suffixes(&key.name).any(|(suffix, _)| suffix == base));
    }

    /// Removes the expired answers; returns how many.
    pub fn remove_expired(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| entry.is_live(now));
        before - self.entries.len()
    }

    /// Removes every answer.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The number of cached answers (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Frees slots: the expired entries, and if they are fewer than an eighth of the capacity,
    /// the oldest inserted up to that eighth. Freeing many slots per scan keeps a full cache from
    /// costing a scan of every entry on every insert (each answer of a busy container).
    fn make_room(&mut self, now: Instant) {
        let wanted = (self.capacity / 8).max(1);
        let removed = self.remove_expired(now);
        if removed >= wanted {
            return;
        }
        let evict = wanted - removed;
        let mut by_age: Vec<(Instant, CacheKey)> = self
            .entries
            .iter()
            .map(|(key, entry)| (entry.inserted, key.clone()))
            .collect();
        if evict < by_age.len() {
            by_age.select_nth_unstable_by_key(evict, |(inserted, _)| *inserted);
        }
        for (_, key) in by_age.into_iter().take(evict) {
            self.entries.remove(&key);
        }
    }
}

/// How long `reply` may be cached, in seconds (0: not at all).
fn lifetime(reply: &Message, negative_ttl_cap: u32) -> u32 {
    if reply.metadata.truncation {
        return 0;
    }
    match reply.metadata.response_code {
        ResponseCode::NoError if !reply.answers.is_empty() => reply
            .answers
            .iter()
            .map(|record| record.ttl)
            .min()
            .unwrap_or(0),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            // RFC 2308 §5: the negative TTL is the smaller of the SOA's TTL and its MINIMUM.
            let soa_ttl = reply
                .authorities
                .iter()
                .find_map(|record| match &record.data {
                    RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
                    _ => None,
                })
                .unwrap_or(0);
            soa_ttl.min(negative_ttl_cap)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::super::message::testing::{a, cname, reply, soa};
    use super::*;

    fn key(name: &str) -> CacheKey {
        CacheKey {
            name: name.to_owned(),
            record_type: RecordType::A,
            class: DNSClass::IN,
        }
    }

    fn positive(name: &str, ttl: u32) -> (Message, Vec<(IpAddr, u32)>) {
        let address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let message = reply(
            1,
            &format!("{name}."),
            RecordType::A,
            vec![a(&format!("{name}."), ttl, [192, 0, 2, 1])],
        );
        (message, vec![(address, ttl)])
    }

    fn seconds(count: u64) -> Duration {
        Duration::from_secs(count)
    }

    #[test]
    fn positive_answers_live_for_their_smallest_ttl() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(10).with_negative_ttl_cap(300);
        let message = reply(
            1,
            "www.example.com.",
            RecordType::A,
            vec![
                cname("www.example.com.", 100, "cdn.example.net."),
                a("cdn.example.net.", 60, [192, 0, 2, 1]),
            ],
        );
        let address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert!(cache.insert(
            key("www.example.com"),
            message.clone(),
            vec![(address, 60)],
            start
        ));
        assert_eq!(cache.len(), 1);

        let hit = cache
            .get(&key("www.example.com"), start + seconds(25))
            .unwrap();
        assert_eq!(hit.reply, message);
        assert_eq!(hit.age_secs, 25);
        assert_eq!(hit.addresses, vec![(address, 35)]);

        let last = cache
            .get(
                &key("www.example.com"),
                start + Duration::from_millis(59_999),
            )
            .unwrap();
        assert_eq!(last.age_secs, 59);
        assert_eq!(last.addresses, vec![(address, 1)]);

        assert_eq!(
            cache.get(&key("www.example.com"), start + seconds(60)),
            None
        );
        assert_eq!(cache.get(&key("other.example.com"), start), None);
    }

    #[test]
    fn key_includes_type_and_class() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(10).with_negative_ttl_cap(300);
        let (message, addresses) = positive("example.com", 60);
        assert!(cache.insert(key("example.com"), message, addresses, start));
        let mut aaaa = key("example.com");
        aaaa.record_type = RecordType::AAAA;
        assert_eq!(cache.get(&aaaa, start), None);
        let mut chaos = key("example.com");
        chaos.class = DNSClass::CH;
        assert_eq!(cache.get(&chaos, start), None);
    }

    #[test]
    fn zero_ttl_truncated_and_failed_answers_are_not_cached() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(10).with_negative_ttl_cap(300);
        let (zero, addresses) = positive("example.com", 0);
        assert!(!cache.insert(key("example.com"), zero, addresses, start));

        let (mut truncated, addresses) = positive("example.com", 60);
        truncated.metadata.truncation = true;
        assert!(!cache.insert(key("example.com"), truncated, addresses, start));

        let mut servfail = reply(1, "example.com.", RecordType::A, vec![]);
        servfail.metadata.response_code = ResponseCode::ServFail;
        servfail.add_authority(soa("example.com.", 300, 300));
        assert!(!cache.insert(key("example.com"), servfail, vec![], start));
        assert!(cache.is_empty());
    }

    #[test]
    fn negative_answers_use_the_soa_within_the_cap() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(10).with_negative_ttl_cap(60);

        let mut nxdomain = reply(1, "nope.example.com.", RecordType::A, vec![]);
        nxdomain.metadata.response_code = ResponseCode::NXDomain;
        nxdomain.add_authority(soa("example.com.", 3600, 30));
        assert!(cache.insert(key("nope.example.com"), nxdomain, vec![], start));
        let hit = cache
            .get(&key("nope.example.com"), start + seconds(29))
            .unwrap();
        assert!(hit.addresses.is_empty());
        assert_eq!(
            cache.get(&key("nope.example.com"), start + seconds(30)),
            None
        );

        // NODATA, SOA TTL smaller than its MINIMUM, both above the cap: the cap wins.
        let mut nodata = reply(1, "v4only.example.com.", RecordType::A, vec![]);
        nodata.add_authority(soa("example.com.", 600, 900));
        assert!(cache.insert(key("v4only.example.com"), nodata, vec![], start));
        assert!(
            cache
                .get(&key("v4only.example.com"), start + seconds(59))
                .is_some()
        );
        assert_eq!(
            cache.get(&key("v4only.example.com"), start + seconds(60)),
            None
        );

        // Without an SOA there is no negative TTL.
        let mut bare = reply(1, "bare.example.com.", RecordType::A, vec![]);
        bare.metadata.response_code = ResponseCode::NXDomain;
        assert!(!cache.insert(key("bare.example.com"), bare, vec![], start));
    }

    #[test]
    fn negative_answers_are_capped_by_default() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(10);
        let mut nxdomain = reply(1, "nope.example.com.", RecordType::A, vec![]);
        nxdomain.metadata.response_code = ResponseCode::NXDomain;
        nxdomain.add_authority(soa("example.com.", 86400, 86400));
        assert!(cache.insert(key("nope.example.com"), nxdomain, vec![], start));
        let cap = u64::from(DEFAULT_NEGATIVE_TTL_CAP);
        assert!(
            cache
                .get(&key("nope.example.com"), start + seconds(cap - 1))
                .is_some()
        );
        assert_eq!(
            cache.get(&key("nope.example.com"), start + seconds(cap)),
            None
        );
    }

    #[test]
    fn negative_caching_can_be_disabled() {
        let mut cache = AnswerCache::new(10).with_negative_ttl_cap(0);
        let mut nxdomain = reply(1, "nope.example.com.", RecordType::A, vec![]);
        nxdomain.metadata.response_code = ResponseCode::NXDomain;
        nxdomain.add_authority(soa("example.com.", 300, 300));
        assert!(!cache.insert(key("nope.example.com"), nxdomain, vec![], Instant::now()));
    }

    #[test]
    fn addresses_expire_individually() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(10).with_negative_ttl_cap(0);
        let (message, _) = positive("example.com", 100);
        let short = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let long = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert!(cache.insert(
            key("example.com"),
            message,
            vec![(short, 10), (long, 100)],
            start
        ));
        let hit = cache.get(&key("example.com"), start + seconds(10)).unwrap();
        assert_eq!(hit.addresses, vec![(long, 90)]);
    }

    #[test]
    fn full_cache_evicts_expired_entries_first_then_the_oldest() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(2).with_negative_ttl_cap(0);
        let (short, short_addresses) = positive("short.example.com", 10);
        let (long, long_addresses) = positive("long.example.com", 1000);
        assert!(cache.insert(key("short.example.com"), short, short_addresses, start));
        assert!(cache.insert(
            key("long.example.com"),
            long,
            long_addresses,
            start + seconds(1)
        ));

        // `short` has expired: it goes, although `long` is not older.
        let (third, third_addresses) = positive("third.example.com", 1000);
        assert!(cache.insert(
            key("third.example.com"),
            third,
            third_addresses,
            start + seconds(20)
        ));
        assert_eq!(cache.len(), 2);
        assert!(
            cache
                .get(&key("long.example.com"), start + seconds(20))
                .is_some()
        );
        assert!(
            cache
                .get(&key("third.example.com"), start + seconds(20))
                .is_some()
        );

        // Nothing expired: the oldest (`long`) goes.
        let (fourth, fourth_addresses) = positive("fourth.example.com", 1000);
        assert!(cache.insert(
            key("fourth.example.com"),
            fourth,
            fourth_addresses,
            start + seconds(30)
        ));
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.get(&key("long.example.com"), start + seconds(30)),
            None
        );
        assert!(
            cache
                .get(&key("third.example.com"), start + seconds(30))
                .is_some()
        );
        assert!(
            cache
                .get(&key("fourth.example.com"), start + seconds(30))
                .is_some()
        );

        // Replacing an existing key evicts nothing.
        let (again, again_addresses) = positive("third.example.com", 1000);
        assert!(cache.insert(
            key("third.example.com"),
            again,
            again_addresses,
            start + seconds(40)
        ));
        assert_eq!(cache.len(), 2);
        assert!(
            cache
                .get(&key("fourth.example.com"), start + seconds(40))
                .is_some()
        );
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut cache = AnswerCache::new(0).with_negative_ttl_cap(60);
        let (message, addresses) = positive("example.com", 60);
        assert!(!cache.insert(key("example.com"), message, addresses, Instant::now()));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_frees_an_eighth_of_its_slots_oldest_first() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(16);
        for n in 0..16_u64 {
            let name = format!("n{n}.example.com");
            let (message, addresses) = positive(&name, 600);
            assert!(cache.insert(
                key(&name),
                message,
                addresses,
                start + Duration::from_secs(n)
            ));
        }
        let (message, addresses) = positive("new.example.com", 600);
        let later = start + Duration::from_secs(20);
        assert!(cache.insert(key("new.example.com"), message, addresses, later));
        // 16 / 8 = 2 slots freed, the two oldest; one of them taken again.
        assert_eq!(cache.len(), 15);
        assert!(cache.get(&key("n0.example.com"), later).is_none());
        assert!(cache.get(&key("n1.example.com"), later).is_none());
        assert!(cache.get(&key("n2.example.com"), later).is_some());
        assert!(cache.get(&key("new.example.com"), later).is_some());
    }

    #[test]
    fn remove_name_drops_the_name_and_its_subdomains_only() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(10).with_negative_ttl_cap(0);
        for name in [
            "example.com",
            "www.example.com",
            "a.b.example.com",
            "badexample.com",
            "example.org",
        ] {
            let (message, addresses) = positive(name, 60);
            assert!(cache.insert(key(name), message, addresses, start));
        }
        cache.remove_name("Example.COM.");
        let mut left: Vec<String> = [
            "example.com",
            "www.example.com",
            "a.b.example.com",
            "badexample.com",
            "example.org",
        ]
        .into_iter()
        .filter(|name| cache.get(&key(name), start).is_some())
        .map(str::to_owned)
        .collect();
        left.sort();
        assert_eq!(left, vec!["badexample.com", "example.org"]);

        cache.remove_name("*.example.org");
        assert!(cache.get(&key("example.org"), start).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn expired_entries_can_be_swept_and_the_cache_cleared() {
        let start = Instant::now();
        let mut cache = AnswerCache::new(10).with_negative_ttl_cap(0);
        let (short, short_addresses) = positive("short.example.com", 10);
        let (long, long_addresses) = positive("long.example.com", 100);
        assert!(cache.insert(key("short.example.com"), short, short_addresses, start));
        assert!(cache.insert(key("long.example.com"), long, long_addresses, start));
        assert_eq!(cache.remove_expired(start + seconds(10)), 1);
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
    }
}
