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
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
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

/// The host's resolver configuration, used when `dns.upstream` is not set.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

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
    /// Where the upstream resolvers come from.
    source: Source,
    /// `dns.min_ttl`.
    min_ttl: Duration,
    /// `dns.max_ttl`.
    max_ttl: Duration,
    /// Bound on one `resolve` call.
    deadline: Duration,
}

/// Where the upstream resolvers come from.
enum Source {
    /// `dns.upstream`: fixed for the daemon's life.
    Explicit(TokioResolver),
    /// A resolv.conf, re-read when it changes (NetworkManager, systemd-resolved and DHCP
    /// clients rewrite it when the host changes network).
    System {
        /// The file.
        path: PathBuf,
        /// The resolver built from the file as it was when last read.
        current: Mutex<SystemResolver>,
    },
}

/// A resolver built from one version of a resolv.conf.
struct SystemResolver {
    /// Identifies the version read; `None` if it could not be stat'ed then.
    stamp: Option<FileStamp>,
    /// The nameservers that version lists (for `Debug` and tests).
    servers: Vec<IpAddr>,
    /// Built from that version. `TokioResolver` is a handle: clones share connections.
    resolver: TokioResolver,
}

/// Enough of a file's metadata to notice that it was rewritten or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    /// Device, so a bind mount swap is noticed.
    dev: u64,
    /// Inode: replacing the file by rename (the usual way) changes it.
    ino: u64,
    /// Size and modification time: an in-place rewrite changes at least one of them.
    len: u64,
    /// Modification time, seconds.
    mtime: i64,
    /// Modification time, nanoseconds.
    mtime_nsec: i64,
}

impl FileStamp {
    /// The stamp of `path` now, or `None` if it cannot be stat'ed.
    fn of(path: &Path) -> Option<Self> {
        // A blocking stat on an async thread: it is one syscall on a small local file, far
        // cheaper than handing it to the blocking pool.
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
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
        let source = match &config.upstream {
            Some(upstream) => {
                let servers = upstream
                    .iter()
                    .map(|addr| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                let resolver = build(
                    ResolverConfig::from_parts(None, vec![], servers),
                    ResolverOpts::default(),
                )?;
                Source::Explicit(resolver)
            }
            None => {
                let path = resolv_conf.to_owned();
                let current = read_system(&path)?;
                Source::System {
                    path,
                    current: Mutex::new(current),
                }
            }
        };
        Ok(Self {
            source,
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

    /// The resolver to use now; for a resolv.conf source, rebuilt first if the file changed.
    fn current(&self) -> TokioResolver {
        match &self.source {
            Source::Explicit(resolver) => resolver.clone(),
            Source::System { path, current } => Self::refresh(path, current).resolver.clone(),
        }
    }

    /// The nameservers of the resolv.conf in use, re-read first if it changed; `None` when the
    /// upstreams come from `dns.upstream`.
    pub fn system_servers(&self) -> Option<Vec<IpAddr>> {
        match &self.source {
            Source::Explicit(_) => None,
            Source::System { path, current } => Some(Self::refresh(path, current).servers.clone()),
        }
    }

    /// Locks the resolv.conf state, rebuilding the resolver first if the file changed.
    fn refresh<'a>(
        path: &Path,
        current: &'a Mutex<SystemResolver>,
    ) -> std::sync::MutexGuard<'a, SystemResolver> {
        // A poisoned lock only means another caller panicked while swapping the resolver; the
        // value inside is still a whole resolver.
        let mut current = current.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = FileStamp::of(path);
        if stamp != current.stamp {
            match read_system(path) {
                Ok(fresh) => *current = fresh,
                Err(err) => {
                    // Keep resolving with the last good servers rather than with none; remember
                    // the stamp so the warning is not repeated on every query.
                    tracing::warn!(error = %err, "keeping the previous upstream resolvers");
                    current.stamp = stamp;
                }
            }
        }
        current
    }
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not `system_servers()`: formatting must not re-read files.
        let source = match &self.source {
            Source::Explicit(_) => "dns.upstream".to_owned(),
            Source::System { path, .. } => path.display().to_string(),
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

/// Reads and parses a resolv.conf into a resolver.
fn read_system(path: &Path) -> Result<SystemResolver, ResolveError> {
    let stamp = FileStamp::of(path);
    let system_err = |source: NetError| ResolveError::SystemConf {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read(path).map_err(|err| system_err(NetError::from(err)))?;
    let (config, options) =
        hickory_resolver::system_conf::parse_resolv_conf(text).map_err(system_err)?;
    // Only the nameservers matter: names are absolute (no search list), and the resolv.conf
    // `timeout`/`attempts` are replaced by our own deadline.
    let (_, _, servers) = config.into_parts();
    let ips = servers.iter().map(|server| server.ip).collect();
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut opts = ResolverOpts::default();
    opts.edns0 = options.edns0;
    Ok(SystemResolver {
        stamp,
        servers: ips,
        resolver: build(config, opts)?,
    })
}

/// Builds a resolver with shield's options over `base`.
fn build(config: ResolverConfig, base: ResolverOpts) -> Result<TokioResolver, ResolveError> {
    let mut opts = base;
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
