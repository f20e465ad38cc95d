//! What the daemon asks the helper for, what comes back, and how the passed fds are laid out.
//!
//! Pure: no syscalls, so both sides share one definition and it is unit-tested here. One request
//! message goes daemon → helper (JSON + `SCM_RIGHTS` [netns, userns?]); one reply comes back
//! (JSON + `SCM_RIGHTS` with the sockets in [`SocketRequest::plan`] order). Both sides derive
//! the socket order from the same request, so the reply only carries a count to check it by.
//!
//! Adding a socket kind later means: a [`SocketKind`] variant, a field in [`SocketRequest`] and
//! [`ContainerSockets`], a line in `plan` and `assemble`, and its creation in the helper.

use std::fmt;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, UdpSocket,
};
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use super::namespace::NamespaceId;

/// Version of the daemon ↔ helper messages. Daemon and helper are the same binary, so a mismatch
/// means the binary on disk changed under a running daemon.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Most fds one message may carry (the receive buffers are sized for this).
pub(crate) const MAX_FDS: usize = 16;

/// Largest message either side sends (JSON), well above anything real.
pub(crate) const MAX_MESSAGE: usize = 16 * 1024;

/// Most bytes of a helper error message kept (the rest is cut, on a char boundary).
pub(crate) const MAX_ERROR_TEXT: usize = 4 * 1024;

/// Which sockets to create inside the container's network namespace.
///
/// The nf_tables netlink socket is always created: it is what attaching needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SocketRequest {
    /// Also create a second `NETLINK_NETFILTER` socket, for reading NFLOG.
    pub nflog: bool,
    /// Addresses to bind DNS listeners on: each gets a UDP socket and a listening TCP socket.
    pub dns: Vec<SocketAddr>,
}

impl SocketRequest {
    /// Where the container's resolv.conf points: `127.0.0.1:53` and `[::1]:53`.
    pub const DNS_LOOPBACK: [SocketAddr; 2] = [
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53)),
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 53, 0, 0)),
    ];

    /// Only the nf_tables socket.
    pub fn nftables_only() -> Self {
        Self::default()
    }

    /// Everything attaching a container needs: nf_tables, NFLOG, and DNS on
    /// [`Self::DNS_LOOPBACK`].
    pub fn attach() -> Self {
        Self {
            nflog: true,
            dns: Self::DNS_LOOPBACK.to_vec(),
        }
    }

    /// The sockets to create, in the order they are passed back. Fails on a request that
    /// cannot be served (too many fds for one message, a repeated address).
    pub fn plan(&self) -> Result<Vec<SocketKind>, String> {
        let count = 1 + usize::from(self.nflog) + self.dns.len().saturating_mul(2);
        if count > MAX_FDS {
            return Err(format!(
                "{count} sockets requested, at most {MAX_FDS} fit in one message"
            ));
        }
        let mut plan = vec![SocketKind::Nftables];
        if self.nflog {
            plan.push(SocketKind::Nflog);
        }
        for (i, addr) in self.dns.iter().enumerate() {
            if self
                .dns
                .get(..i)
                .is_some_and(|earlier| earlier.contains(addr))
            {
                return Err(format!("DNS address {addr} is listed twice"));
            }
            plan.push(SocketKind::DnsUdp(*addr));
            plan.push(SocketKind::DnsTcp(*addr));
        }
        Ok(plan)
    }
}

/// One socket the helper creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// `NETLINK_NETFILTER` socket for programming nf_tables.
    Nftables,
    /// `NETLINK_NETFILTER` socket for receiving NFLOG (bound to a group by the daemon later).
    Nflog,
    /// UDP socket bound to the address.
    DnsUdp(SocketAddr),
    /// TCP socket bound to the address and listening.
    DnsTcp(SocketAddr),
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nftables => f.write_str("the nf_tables netlink socket"),
            Self::Nflog => f.write_str("the NFLOG netlink socket"),
            Self::DnsUdp(addr) => write!(f, "the DNS UDP socket on {addr}"),
            Self::DnsTcp(addr) => write!(f, "the DNS TCP listener on {addr}"),
        }
    }
}

/// The sockets created inside a container's network namespace. Dropping them releases the
/// namespace (each socket pins it), so drop them when the container stops.
#[derive(Debug)]
pub struct ContainerSockets {
    /// `NETLINK_NETFILTER` socket for nf_tables batches and read-back.
    pub nftables: OwnedFd,
    /// `NETLINK_NETFILTER` socket for NFLOG, if requested.
    pub nflog: Option<OwnedFd>,
    /// DNS listeners, in request order. They are blocking; set them non-blocking before handing
    /// them to tokio.
    pub dns: Vec<DnsListener>,
    /// The network namespace the helper observed after entering (checked equal to the one
    /// opened), for diagnostics.
    pub netns: NamespaceId,
}

/// A DNS listening address inside the container.
#[derive(Debug)]
pub struct DnsListener {
    /// The bound address.
    pub addr: SocketAddr,
    /// The bound UDP socket.
    pub udp: UdpSocket,
    /// The bound, listening TCP socket.
    pub tcp: TcpListener,
}

/// Groups the received fds, in `plan` order, into [`ContainerSockets`].
pub(crate) fn assemble(
    plan: &[SocketKind],
    fds: Vec<OwnedFd>,
    netns: NamespaceId,
) -> Result<ContainerSockets, String> {
    if fds.len() != plan.len() {
        return Err(format!(
            "expected {} sockets, received {}",
            plan.len(),
            fds.len()
        ));
    }
    let mut nftables = None;
    let mut nflog = None;
    let mut dns = Vec::new();
    let mut pending_udp: Option<(SocketAddr, UdpSocket)> = None;
    for (kind, fd) in plan.iter().zip(fds) {
        match *kind {
            SocketKind::Nftables => nftables = Some(fd),
            SocketKind::Nflog => nflog = Some(fd),
            SocketKind::DnsUdp(addr) => pending_udp = Some((addr, UdpSocket::from(fd))),
            SocketKind::DnsTcp(addr) => match pending_udp.take() {
                Some((udp_addr, udp)) if udp_addr == addr => {
                    dns.push(DnsListener {
                        addr,
                        udp,
                        tcp: TcpListener::from(fd),
                    });
                }
                _ => return Err(format!("TCP listener on {addr} without its UDP socket")),
            },
        }
    }
    let nftables = nftables.ok_or("no nf_tables socket in the plan")?;
    Ok(ContainerSockets {
        nftables,
        nflog,
        dns,
        netns,
    })
}

/// Daemon → helper. Fds: the network namespace, then the user namespace if `enter_user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HelperRequest {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// Whether a user namespace fd follows the network namespace fd.
    pub enter_user: bool,
    /// What to create.
    pub sockets: SocketRequest,
}

impl HelperRequest {
    /// Number of fds that must accompany the request.
    pub fn fd_count(&self) -> usize {
        if self.enter_user { 2 } else { 1 }
    }
}

/// Helper → daemon. On `Ready`, the fds follow in plan order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum HelperReply {
    /// Everything was created.
    Ready {
        /// `/proc/self/ns/net` as the helper saw it after `setns`.
        netns: NamespaceId,
        /// How many fds are attached.
        sockets: usize,
    },
    /// Something failed; no fds are attached.
    Failed {
        /// What failed and what to check.
        message: String,
    },
}

/// Serializes a message for the wire.
pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(message).map_err(|e| format!("cannot encode message: {e}"))
}

/// Parses a message from the wire.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("cannot decode message: {e}"))
}

/// Cuts an error text to [`MAX_ERROR_TEXT`] bytes on a char boundary, so a reply always fits.
pub(crate) fn truncate_message(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_orders_sockets_and_pairs_dns() {
        let plan = SocketRequest::attach().plan().unwrap();
        let [v4, v6] = SocketRequest::DNS_LOOPBACK;
        assert_eq!(
            plan,
            vec![
                SocketKind::Nftables,
                SocketKind::Nflog,
                SocketKind::DnsUdp(v4),
                SocketKind::DnsTcp(v4),
                SocketKind::DnsUdp(v6),
                SocketKind::DnsTcp(v6),
            ]
        );
        assert_eq!(
            SocketRequest::nftables_only().plan().unwrap(),
            vec![SocketKind::Nftables]
        );
    }

    #[test]
    fn plan_rejects_duplicates_and_oversized_requests() {
        let [v4, _] = SocketRequest::DNS_LOOPBACK;
        let dup = SocketRequest {
            nflog: false,
            dns: vec![v4, v4],
        };
        assert!(dup.plan().unwrap_err().contains("twice"));
        let many = SocketRequest {
            nflog: true,
            dns: (1..=8)
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect(),
        };
        assert!(many.plan().unwrap_err().contains("at most 16"));
    }

    #[test]
    fn messages_round_trip() {
        let request = HelperRequest {
            version: PROTOCOL_VERSION,
            enter_user: true,
            sockets: SocketRequest::attach(),
        };
        let bytes = encode(&request).unwrap();
        assert!(bytes.len() < MAX_MESSAGE);
        assert_eq!(decode::<HelperRequest>(&bytes).unwrap(), request);
        assert_eq!(request.fd_count(), 2);

        let ready = HelperReply::Ready {
            netns: NamespaceId {
                dev: 4,
                ino: 4026532283,
            },
            sockets: 6,
        };
        assert_eq!(
            decode::<HelperReply>(&encode(&ready).unwrap()).unwrap(),
            ready
        );
        let failed = HelperReply::Failed {
            message: "x".repeat(MAX_ERROR_TEXT * 2),
        };
        let HelperReply::Failed { message } = failed else {
            unreachable!()
        };
        let cut = truncate_message(message);
        let failed = HelperReply::Failed { message: cut };
        assert!(encode(&failed).unwrap().len() < MAX_MESSAGE);
        assert!(decode::<HelperReply>(b"{\"status\":\"bogus\"}").is_err());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let text = "é".repeat(MAX_ERROR_TEXT);
        let cut = truncate_message(text);
        assert!(cut.len() <= MAX_ERROR_TEXT + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_message("short".to_owned()), "short");
    }

    #[test]
    fn assemble_checks_counts() {
        let plan = SocketRequest::nftables_only().plan().unwrap();
        let id = NamespaceId { dev: 1, ino: 2 };
        assert!(
            assemble(&plan, Vec::new(), id)
                .unwrap_err()
                .contains("expected 1")
        );
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let sockets = assemble(&plan, vec![fd], id).unwrap();
        assert!(sockets.nflog.is_none() && sockets.dns.is_empty());
        assert_eq!(sockets.netns, id);
    }
}
