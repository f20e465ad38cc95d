//! Resolving a name on the host's resolver, for `shieldctl allow CONTAINER example.com`.
//!
//! When an operator allows a domain, the DNS proxy will let its addresses through on the
//! container's next query; but the container may already hold the addresses (from a query it
//! made while the name was still refused, or from its own cache), so the daemon also resolves the
//! name at once and puts the A and AAAA addresses into the container's `dns_v4`/`dns_v6` sets.
//!
//! The query leaves from the daemon's own network namespace, to the resolvers of `[dns] upstream`
//! or, by default, those of the host's `/etc/resolv.conf` (re-read when the file changes, so a
//! laptop moving between networks keeps resolving). Each address carries its record's TTL,
//! clamped to `[dns.min_ttl, dns.max_ttl]`: that TTL becomes the set element's timeout, so
//! hickory's own answer cache is switched off, and the TTLs are the ones the upstream sent.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use crate::config::DnsConfig;
pub use crate::dns::servers::RESOLV_CONF;
use crate::dns::servers::{ServerList, ServersError, UpstreamServers};

/// How long one [`HostResolver::resolve`] may take, A and AAAA together, retries included.
///
/// `shieldctl allow` waits for it, so it must stay short; a name that cannot be resolved in this
/// time still becomes allowed, and the DNS proxy learns its addresses on the container's query.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3);

/// An address learnt for a name, with how long it may stay in the dns sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Learnt {
    /// An A or AAAA address of the name (or of the end of its CNAME chain).
    pub addr: IpAddr,
    /// The record's TTL (the smallest along its CNAME chain), already clamped to
    /// `[dns.min_ttl, dns.max_ttl]`.
    pub ttl: Duration,
}

/// Why a name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A pattern such as `*.example.com` names no host: there is nothing to look up.
    #[error("{name:?} is a wildcard pattern: only a concrete domain name can be resolved")]
    Wildcard {
        /// The pattern.
        name: String,
    },
    /// The text is not a domain name (empty, an IP address, a label too long, …).
    #[error("{name:?} is not a domain name: {reason}")]
    InvalidName {
        /// The text given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host's resolver configuration cannot be read or names no nameserver.
    #[error("cannot use the resolvers of {}: {source}", .path.display())]
    SystemConf {
        /// The resolv.conf file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: NetError,
    },
    /// hickory refused the resolver configuration.
    #[error("cannot set up the DNS resolver: {0}")]
    Build(#[source] NetError),
    /// No answer (or no complete answer) arrived before the deadline.
    #[error("resolving {name}: no answer within {}", humantime::format_duration(*.deadline))]
    Timeout {
        /// The name.
        name: String,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// The upstream answered with an error (SERVFAIL, REFUSED, …) or could not be reached.
    #[error("resolving {name} ({record_type}): {source}")]
    Lookup {
        /// The name.
        name: String,
        /// `A` or `AAAA`.
        record_type: RecordType,
        /// hickory's error.
        #[source]
        source: NetError,
    },
}

/// Resolves names on the host's resolver, from the daemon's own network namespace.
///
/// Cheap to share behind an `Arc`; [`resolve`](Self::resolve) takes `&self` and may run
/// concurrently.
pub struct HostResolver {
    /// The upstream resolvers, kept current (resolv.conf changes included).
    servers: UpstreamServers,
    /// The resolver built for the list last seen, rebuilt when the list changes.
    built: Mutex<Built>,
    /// `dns.min_ttl`.
    min_ttl: Duration,
    /// `dns.max_ttl`.
    max_ttl: Duration,
    /// Bound on one `resolve` call.
    deadline: Duration,
}

/// A resolver built for one version of the upstream list.
struct Built {
    /// The list it was built for.
    list: ServerList,
    /// `TokioResolver` is a handle: clones share connections.
    resolver: TokioResolver,
}

impl HostResolver {
    /// Builds the resolver from `[dns]`: the `upstream` list (each over UDP, with TCP for
    /// truncated answers), or the nameservers of `/etc/resolv.conf` when it is not set.
    pub fn new(config: &DnsConfig) -> Result<Self, ResolveError> {
        Self::with_resolv_conf(config, Path::new(RESOLV_CONF))
    }

    /// Like [`new`](Self::new), but reads `resolv_conf` instead of `/etc/resolv.conf` when
    /// `config.upstream` is not set.
    pub fn with_resolv_conf(config: &DnsConfig, resolv_conf: &Path) -> Result<Self, ResolveError> {
        let servers = UpstreamServers::with_resolv_conf(config, resolv_conf).map_err(
            |ServersError::ResolvConf { path, source }| ResolveError::SystemConf { path, source },
        )?;
        let list = servers.list();
        let resolver = build(&list)?;
        Ok(Self {
            servers,
            built: Mutex::new(Built { list, resolver }),
            min_ttl: config.min_ttl,
            max_ttl: config.max_ttl,
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// Replaces the overall deadline of one [`resolve`](Self::resolve) (default
    /// [`DEFAULT_DEADLINE`]).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The overall deadline of one [`resolve`](Self::resolve).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The A and AAAA addresses of `name` (through CNAME chains), each with its TTL clamped to
    /// `[min_ttl, max_ttl]`, sorted and without duplicates.
    ///
    /// `name` is taken as absolute: no search domain of resolv.conf is appended, and
    /// `/etc/hosts` is not consulted, so the addresses are those the container's DNS proxy will
    /// get for the same name. NXDOMAIN and an empty answer give `Ok(vec![])`; SERVFAIL, REFUSED,
    /// an unreachable upstream or the deadline passing are errors, as is a failure of either of
    /// the two queries (a half answer would silently leave one address family out).
    pub async fn resolve(&self, name: &str) -> Result<Vec<Learnt>, ResolveError> {
        let qname = parse_name(name)?;
        let resolver = self.current();
        // Both families at once: the deadline bounds the pair, not each query.
        let queries = async {
            tokio::join!(
                resolver.lookup(qname.clone(), RecordType::A),
                resolver.lookup(qname.clone(), RecordType::AAAA),
            )
        };
        let (a, aaaa) = tokio::time::timeout(self.deadline, queries)
            .await
            .map_err(|_| ResolveError::Timeout {
                name: name.to_owned(),
                deadline: self.deadline,
            })?;

        let mut ttls = BTreeMap::new();
        for (record_type, result) in [(RecordType::A, a), (RecordType::AAAA, aaaa)] {
            match result {
                Ok(lookup) => collect_addresses(&qname, lookup.answers(), &mut ttls),
                Err(err) if is_no_records(&err) => {}
                Err(NetError::Timeout) => {
                    return Err(ResolveError::Timeout {
                        name: name.to_owned(),
                        deadline: self.deadline,
                    });
                }
                Err(source) => {
                    return Err(ResolveError::Lookup {
                        name: name.to_owned(),
                        record_type,
                        source,
                    });
                }
            }
        }
        Ok(ttls
            .into_iter()
            .map(|(addr, ttl)| Learnt {
                addr,
                ttl: clamp_ttl(
                    Duration::from_secs(u64::from(ttl)),
                    self.min_ttl,
                    self.max_ttl,
                ),
            })
            .collect())
    }

    /// The resolver to use now, rebuilt first if the upstream list changed (a rewritten
    /// resolv.conf).
    fn current(&self) -> TokioResolver {
        let list = self.servers.list();
        // A poisoned lock only means another caller panicked while swapping the resolver; the
        // value inside is still a whole resolver.
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if built.list != list {
            match build(&list) {
                Ok(resolver) => built.resolver = resolver,
                // Keep resolving with the previous servers rather than with none.
                Err(err) => {
                    tracing::warn!(error = %err, "keeping the resolver of the previous upstreams");
                }
            }
            // Either way this list has been dealt with: do not retry (and warn) per query.
            built.list = list;
        }
        built.resolver.clone()
    }

    /// The nameservers of the resolv.conf in use, re-read first if it changed; `None` when the
    /// upstreams come from `dns.upstream`.
    pub fn system_servers(&self) -> Option<Vec<IpAddr>> {
        self.servers.resolv_conf()?;
        Some(self.servers.current().iter().map(SocketAddr::ip).collect())
    }
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not `system_servers()`: formatting must not re-read files.
        let source = match self.servers.resolv_conf() {
            None => "dns.upstream".to_owned(),
            Some(path) => path.display().to_string(),
        };
        f.debug_struct("HostResolver")
            .field("source", &source)
            .field("min_ttl", &self.min_ttl)
            .field("max_ttl", &self.max_ttl)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// `ttl` bounded to `[min, max]` (`min` wins if the bounds are crossed, so an element never
/// lives shorter than `min`).
pub fn clamp_ttl(ttl: Duration, min: Duration, max: Duration) -> Duration {
    ttl.min(max).max(min)
}

/// Builds a resolver with shield's options that asks the servers of `list`, each over UDP with
/// TCP for truncated answers, on its own port.
fn build(list: &ServerList) -> Result<TokioResolver, ResolveError> {
    let servers = list
        .servers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    // Only the nameservers matter: names are absolute (no search list), and the resolv.conf
    // `timeout`/`attempts` are replaced by our own deadline.
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut opts = ResolverOpts::default();
    opts.edns0 = list.edns0;
    // No answer cache: each element's timeout must come from a fresh TTL, and `allow` is rare
    // enough that a query per call costs nothing.
    opts.cache_size = 0;
    // The container never sees the host's /etc/hosts; an address from it would be one the
    // container cannot get through its DNS proxy.
    opts.use_hosts_file = ResolveHosts::Never;
    // Keep CNAME records in answers, so addresses can be tied to the asked name.
    opts.preserve_intermediates = true;
    // Two tries per query fit in the default deadline; the overall deadline is enforced anyway.
    opts.timeout = Duration::from_millis(1400);
    opts.attempts = 2;
    // A truncated UDP answer is retried over TCP by hickory; also fall back to TCP when UDP
    // fails outright (a UDP-filtering upstream path).
    opts.try_tcp_on_error = true;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(ResolveError::Build)
}

/// Parses `name` as an absolute domain name, refusing wildcards and IP literals.
fn parse_name(name: &str) -> Result<Name, ResolveError> {
    let invalid = |reason: &str| ResolveError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.contains('*') {
        return Err(ResolveError::Wildcard {
            name: name.to_owned(),
        });
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(invalid("it is an IP address"));
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut parsed = Name::from_utf8(trimmed).map_err(|err| ResolveError::InvalidName {
        name: name.to_owned(),
        reason: err.to_string(),
    })?;
    // Absolute: the operator named a host, not something to complete with a search domain.
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// Whether `err` means "the name has no such records" (NXDOMAIN or NODATA), not a failure.
fn is_no_records(err: &NetError) -> bool {
    matches!(
        err,
        NetError::Dns(DnsError::NoRecordsFound(no_records))
            if matches!(no_records.response_code, ResponseCode::NXDomain | ResponseCode::NoError)
    )
}

/// Adds to `ttls` the A/AAAA addresses in `answers` that belong to `qname` or to a name its
/// CNAME chain leads to, each with the smallest TTL along its chain (the address is only valid
/// as long as every link is). An address reached twice keeps the longer TTL.
///
/// Records for other names are ignored: an upstream (or whatever sits on the path to it) must
/// not be able to slip an unrelated address into the sets with an answer for an allowed name.
fn collect_addresses(qname: &Name, answers: &[Record], ttls: &mut BTreeMap<IpAddr, u32>) {
    // Names reachable from qname, with the smallest CNAME TTL on the way.
    let mut reached: Vec<(Name, u32)> = vec![(qname.clone(), u32::MAX)];
    // Each pass adds at least one name or stops, so answers.len() passes bound the walk, even
    // with a CNAME loop in the answer.
    for _ in 0..answers.len() {
        let mut grew = false;
        for record in answers {
            let RData::CNAME(target) = &record.data else {
                continue;
            };
            let Some(owner_ttl) = ttl_of(&reached, &record.name) else {
                continue;
            };
            if ttl_of(&reached, &target.0).is_none() {
                reached.push((target.0.clone(), owner_ttl.min(record.ttl)));
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    for record in answers {
        let addr = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        let Some(chain_ttl) = ttl_of(&reached, &record.name) else {
            continue;
        };
        let ttl = chain_ttl.min(record.ttl);
        let entry = ttls.entry(addr).or_insert(ttl);
        *entry = (*entry).max(ttl);
    }
}

/// The chain TTL of `name` if it is among `reached` (DNS names compare case-insensitively).
fn ttl_of(reached: &[(Name, u32)], name: &Name) -> Option<u32> {
    reached
        .iter()
        .find(|(reached, _)| reached == name)
        .map(|(_, ttl)| *ttl)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;

    use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME};

    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn clamp_ttl_bounds() {
        assert_eq!(clamp_ttl(s(1), s(30), s(3600)), s(30));
        assert_eq!(clamp_ttl(s(0), s(30), s(3600)), s(30));
        assert_eq!(clamp_ttl(s(300), s(30), s(3600)), s(300));
        assert_eq!(clamp_ttl(s(30), s(30), s(3600)), s(30));
        assert_eq!(clamp_ttl(s(3600), s(30), s(3600)), s(3600));
        assert_eq!(clamp_ttl(s(86_400), s(30), s(3600)), s(3600));
        assert_eq!(clamp_ttl(s(u64::MAX), s(30), s(3600)), s(3600));
        // Crossed bounds (refused by config validation): the minimum wins.
        assert_eq!(clamp_ttl(s(100), s(60), s(10)), s(60));
    }

    #[test]
    fn resolv_conf_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let write = |text: &str| {
            // Replace by rename, as resolvconf and NetworkManager do.
            let tmp = dir.path().join("resolv.conf.tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("nameserver 192.0.2.53\n");
        let config = DnsConfig::default();
        let resolver = HostResolver::with_resolv_conf(&config, &path).unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(resolver.system_servers().unwrap(), [ip("192.0.2.53")]);

        write("nameserver 198.51.100.53\nnameserver 2001:db8::53\n");
        assert_eq!(
            resolver.system_servers().unwrap(),
            [ip("198.51.100.53"), ip("2001:db8::53")]
        );

        // A broken rewrite keeps the last good servers.
        write("search example.com\n");
        assert_eq!(
            resolver.system_servers().unwrap(),
            [ip("198.51.100.53"), ip("2001:db8::53")]
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            resolver.system_servers().unwrap(),
            [ip("198.51.100.53"), ip("2001:db8::53")]
        );
    }

    #[test]
    fn explicit_upstreams_have_no_system_servers() {
        let config = DnsConfig {
            upstream: Some(vec!["127.0.0.1:5353".parse().unwrap()]),
            ..DnsConfig::default()
        };
        assert_eq!(HostResolver::new(&config).unwrap().system_servers(), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(
            parse_name("*.example.com"),
            Err(ResolveError::Wildcard { .. })
        ));
        assert!(matches!(
            parse_name("a.*.example.com"),
            Err(ResolveError::Wildcard { .. })
        ));
        for bad in ["", ".", "192.0.2.1", "2001:db8::1", &"a".repeat(64)] {
            assert!(
                matches!(parse_name(bad), Err(ResolveError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        let name = parse_name("Example.COM").unwrap();
        assert!(name.is_fqdn());
        assert_eq!(name, parse_name("example.com.").unwrap());
    }

    fn name(text: &str) -> Name {
        Name::from_str(text).unwrap()
    }

    fn record(owner: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(name(owner), ttl, data)
    }

    #[test]
    fn addresses_follow_the_cname_chain_with_the_smallest_ttl() {
        let answers = [
            record(
                "www.example.com.",
                50,
                RData::CNAME(CNAME(name("edge.cdn.test."))),
            ),
            record(
                "edge.cdn.test.",
                600,
                RData::CNAME(CNAME(name("node.cdn.test."))),
            ),
            record(
                "node.cdn.test.",
                300,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            ),
            record("NODE.cdn.test.", 20, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
            // Not on the chain: must be ignored.
            record(
                "evil.test.",
                300,
                RData::A(A(Ipv4Addr::new(203, 0, 113, 9))),
            ),
        ];
        let mut ttls = BTreeMap::new();
        collect_addresses(&name("WWW.example.com."), &answers, &mut ttls);
        assert_eq!(
            ttls.into_iter().collect::<Vec<_>>(),
            [
                (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 50),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 20)
            ]
        );
    }

    #[test]
    fn cname_loop_terminates_and_duplicates_keep_the_longest_ttl() {
        let answers = [
            record("a.test.", 100, RData::CNAME(CNAME(name("b.test.")))),
            record("b.test.", 100, RData::CNAME(CNAME(name("a.test.")))),
            record("a.test.", 10, RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))),
            record("b.test.", 40, RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))),
        ];
        let mut ttls = BTreeMap::new();
        collect_addresses(&name("a.test."), &answers, &mut ttls);
        assert_eq!(
            ttls.into_iter().collect::<Vec<_>>(),
            [(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 40)]
        );
    }
}
