//! Which upstream resolvers the daemon asks: the `[dns] upstream` list, or the nameservers of the
//! host's `/etc/resolv.conf`, re-read when the file changes.
//!
//! Both the DNS proxy ([`super::upstream`]) and the resolution of allowed domains
//! ([`crate::resolve`]) ask the same resolvers, from the daemon's own network namespace. A laptop
//! moving between networks gets a rewritten resolv.conf (NetworkManager, systemd-resolved, DHCP
//! clients), so the list is not read once: every [`UpstreamServers::current`] stats the file and
//! re-reads it when its identity, size or modification time changed.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_resolver::net::NetError;

use crate::config::DnsConfig;

/// The host's resolver configuration, used when `dns.upstream` is not set.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The port of a resolv.conf nameserver: the file has no way to name another.
pub const DNS_PORT: u16 = 53;

/// Why the resolvers of a resolv.conf cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServersError {
    /// The file cannot be read, or names no nameserver.
    #[error("cannot use the resolvers of {}: {source}", .path.display())]
    ResolvConf {
        /// The resolv.conf file.
        path: PathBuf,
        /// The cause (hickory parses the file).
        #[source]
        source: NetError,
    },
}

/// One version of the upstream resolver list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerList {
    /// The resolvers, in the order to try them. Shared: callers clone it per query.
    pub servers: Arc<[SocketAddr]>,
    /// resolv.conf's `options edns0` (always `false` for `dns.upstream`): whether a resolver of
    /// our own should add EDNS0 to its queries. Forwarded queries keep the client's own EDNS.
    pub edns0: bool,
}

/// The upstream resolvers, kept current. Cheap to share behind an `Arc`; every method takes
/// `&self` and may run concurrently.
pub struct UpstreamServers {
    /// Where the list comes from.
    source: Source,
}

/// Where the list comes from.
enum Source {
    /// `dns.upstream` (or a list given directly): fixed for the daemon's life.
    Fixed(ServerList),
    /// A resolv.conf, re-read when it changes.
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The list from the version last read, or the last good one.
        last: Mutex<Read>,
    },
}

/// What was read from one version of a resolv.conf.
struct Read {
    /// Identifies the version seen; `None` if the file could not be stat'ed then.
    stamp: Option<FileStamp>,
    /// Its nameservers (the previous good ones if that version could not be used).
    list: ServerList,
}

/// Enough of a file's metadata to notice that it was rewritten or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    /// Device, so a bind mount swap is noticed.
    dev: u64,
    /// Inode: replacing the file by rename (the usual way) changes it.
    ino: u64,
    /// Size: an in-place rewrite changes it or the modification time.
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

impl UpstreamServers {
    /// The resolvers of `[dns]`: the `upstream` list, or the nameservers of `/etc/resolv.conf`
    /// when it is not set.
    pub fn new(config: &DnsConfig) -> Result<Self, ServersError> {
        Self::with_resolv_conf(config, Path::new(RESOLV_CONF))
    }

    /// Like [`new`](Self::new), but reads `resolv_conf` instead of `/etc/resolv.conf` when
    /// `config.upstream` is not set.
    ///
    /// A resolv.conf that cannot be read or names no nameserver is an error here; once a good
    /// version has been read, a later bad one only keeps the last good list (see
    /// [`current`](Self::current)).
    pub fn with_resolv_conf(config: &DnsConfig, resolv_conf: &Path) -> Result<Self, ServersError> {
        match &config.upstream {
            Some(upstream) => Ok(Self::fixed(upstream.clone())),
            None => {
                let path = resolv_conf.to_owned();
                let last = read_resolv_conf(&path)?;
                tracing::debug!(
                    resolv_conf = %path.display(),
                    servers = ?last.list.servers,
                    "upstream resolvers read"
                );
                Ok(Self {
                    source: Source::ResolvConf {
                        path,
                        last: Mutex::new(last),
                    },
                })
            }
        }
    }

    /// A fixed list, as `dns.upstream` gives (tests, and callers with their own list).
    pub fn fixed(servers: impl Into<Arc<[SocketAddr]>>) -> Self {
        Self {
            source: Source::Fixed(ServerList {
                servers: servers.into(),
                edns0: false,
            }),
        }
    }

    /// The resolvers to ask now, in order; for a resolv.conf, re-read first if the file changed.
    ///
    /// A rewrite that cannot be read or names no nameserver keeps the last good list (asking
    /// the old resolvers beats asking none), with one warning per such version of the file.
    pub fn current(&self) -> Arc<[SocketAddr]> {
        self.list().servers
    }

    /// Like [`current`](Self::current), with the resolv.conf options that matter to a resolver.
    pub fn list(&self) -> ServerList {
        match &self.source {
            Source::Fixed(list) => list.clone(),
            Source::ResolvConf { path, last } => refresh(path, last),
        }
    }

    /// The resolv.conf the list comes from; `None` for a fixed list (`dns.upstream`).
    pub fn resolv_conf(&self) -> Option<&Path> {
        match &self.source {
            Source::Fixed(_) => None,
            Source::ResolvConf { path, .. } => Some(path),
        }
    }
}

impl std::fmt::Debug for UpstreamServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not `current()`: formatting must not re-read files.
        match &self.source {
            Source::Fixed(list) => f
                .debug_struct("UpstreamServers")
                .field("servers", &list.servers)
                .finish(),
            Source::ResolvConf { path, .. } => f
                .debug_struct("UpstreamServers")
                .field("resolv_conf", path)
                .finish(),
        }
    }
}

/// The list of the resolv.conf at `path`, re-read first if the file changed since `last`.
fn refresh(path: &Path, last: &Mutex<Read>) -> ServerList {
    // Stat before taking the lock: every query of every container passes here, and the
    // unchanged case must not serialise them on a syscall.
    let stamp = FileStamp::of(path);
    // A poisoned lock only means another caller panicked while swapping the list; the value
    // inside is still a whole list.
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    if stamp != last.stamp {
        // Read under the lock, so a change is read once, not by every concurrent query.
        match read_resolv_conf(path) {
            Ok(fresh) => {
                if fresh.list != last.list {
                    tracing::info!(
                        resolv_conf = %path.display(),
                        servers = ?fresh.list.servers,
                        "upstream resolvers changed"
                    );
                }
                *last = fresh;
            }
            Err(err) => {
                // Remember the stamp so the warning is not repeated on every query.
                tracing::warn!(
                    error = %err,
                    servers = ?last.list.servers,
                    "keeping the previous upstream resolvers"
                );
                last.stamp = stamp;
            }
        }
    }
    last.list.clone()
}

/// Reads and parses a resolv.conf; only the nameservers and `options edns0` are kept (names
/// are absolute, so the search list does not apply, and timeouts are shield's own).
fn read_resolv_conf(path: &Path) -> Result<Read, ServersError> {
    // Stat before reading: if the file changes in between, the next call sees a new stamp and
    // reads it again, never the other way round.
    let stamp = FileStamp::of(path);
    let error = |source: NetError| ServersError::ResolvConf {
        path: path.to_owned(),
        source,
    };
    // A blocking read on an async thread, as for the stat: a small local file, read only when
    // it changed.
    let text = std::fs::read(path).map_err(|err| error(NetError::from(err)))?;
    let (config, options) =
        hickory_resolver::system_conf::parse_resolv_conf(text).map_err(error)?;
    let (_, _, name_servers) = config.into_parts();
    let servers = name_servers
        .iter()
        .map(|server| SocketAddr::new(server.ip, DNS_PORT))
        .collect();
    Ok(Read {
        stamp,
        list: ServerList {
            servers,
            edns0: options.edns0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// Replaces `path` by rename, as resolvconf and NetworkManager do.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn configured_upstream_is_used_as_is() {
        let config = DnsConfig {
            upstream: Some(vec![addr("127.0.0.1:5353"), addr("[::1]:53")]),
            ..DnsConfig::default()
        };
        // The resolv.conf is not even read.
        let servers =
            UpstreamServers::with_resolv_conf(&config, Path::new("/nonexistent/resolv.conf"))
                .unwrap();
        assert_eq!(
            *servers.current(),
            [addr("127.0.0.1:5353"), addr("[::1]:53")]
        );
        assert!(!servers.list().edns0);
        assert_eq!(servers.resolv_conf(), None);
    }

    #[test]
    fn resolv_conf_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        replace(&path, "nameserver 127.0.0.1\n");
        let servers = UpstreamServers::with_resolv_conf(&DnsConfig::default(), &path).unwrap();
        assert_eq!(servers.resolv_conf(), Some(path.as_path()));
        let first = servers.current();
        assert_eq!(*first, [addr("127.0.0.1:53")]);
        // Unchanged file: the very same list, not a re-read copy.
        assert!(Arc::ptr_eq(&first, &servers.current()));

        replace(
            &path,
            "search example.com\nnameserver 127.0.0.2\nnameserver ::1\noptions edns0 ndots:2\n",
        );
        let list = servers.list();
        assert_eq!(*list.servers, [addr("127.0.0.2:53"), addr("[::1]:53")]);
        assert!(list.edns0);

        // An in-place rewrite (same inode) is noticed too.
        std::fs::write(&path, "nameserver 127.0.0.3\n").unwrap();
        assert_eq!(*servers.current(), [addr("127.0.0.3:53")]);
        assert!(!servers.list().edns0);
    }

    #[test]
    fn a_broken_rewrite_keeps_the_last_good_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        replace(&path, "nameserver 127.0.0.1\n");
        let servers = UpstreamServers::with_resolv_conf(&DnsConfig::default(), &path).unwrap();

        replace(&path, "search example.com\n");
        assert_eq!(*servers.current(), [addr("127.0.0.1:53")]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(*servers.current(), [addr("127.0.0.1:53")]);

        // And a good version after the bad ones is taken again.
        replace(&path, "nameserver 127.0.0.9\n");
        assert_eq!(*servers.current(), [addr("127.0.0.9:53")]);
    }

    #[test]
    fn an_unusable_resolv_conf_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        replace(&path, "search example.com\n");
        let err = UpstreamServers::with_resolv_conf(&DnsConfig::default(), &path).unwrap_err();
        assert!(err.to_string().contains("resolv.conf"), "{err}");

        let missing = dir.path().join("missing");
        let err = UpstreamServers::with_resolv_conf(&DnsConfig::default(), &missing).unwrap_err();
        let ServersError::ResolvConf { path, .. } = err;
        assert_eq!(path, missing);
    }

    #[test]
    fn debug_names_the_source_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        replace(&path, "nameserver 127.0.0.1\n");
        let servers = UpstreamServers::with_resolv_conf(&DnsConfig::default(), &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let text = format!("{servers:?}");
        assert!(text.contains("resolv.conf"), "{text}");
        let fixed = format!("{:?}", UpstreamServers::fixed(vec![addr("127.0.0.1:5353")]));
        assert!(fixed.contains("127.0.0.1:5353"), "{fixed}");
    }
}
