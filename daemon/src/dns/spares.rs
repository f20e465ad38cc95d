//! UDP sockets for upstream queries, made before a query needs them.
//!
//! Every upstream attempt still gets a socket of its own (a random source port per attempt, see
//! [`upstream`](super::upstream)), but making one — bind, connect, register with the reactor —
//! and closing it cost ~40 µs on the 2-core VMs shield is measured on: most of what forwarding
//! added to the upstream's own round trip. So the forwarder takes its sockets from a small stock
//! per server ([`Spares::take`]), hands the used ones back ([`Spares::retire`]), and the proxy
//! calls [`Spares::restock`] once its answer has left, when nobody waits: the used sockets are
//! closed and fresh ones made then. An empty stock only means a socket made on the spot, as
//! before.
//!
//! A spare waits bound and connected to its server, so datagrams with the server's address could
//! queue on it before its query exists. [`Spares::take`] empties the queue first: only a datagram
//! that arrives after the query's id was chosen can be taken for its reply, as on a socket made
//! on the spot.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrStorage, connect, socket,
};
use tokio::net::UdpSocket;

/// Spares kept ready per server: enough for a burst of misses from several containers; beyond
/// it, sockets are made on the spot.
const PER_SERVER: usize = 4;

/// Used sockets kept for [`Spares::restock`] to close; beyond this (nobody restocking) they are
/// closed at once.
const MAX_SPENT: usize = 64;

/// A socket operation that failed, and which one.
#[derive(Debug)]
pub struct SocketError {
    /// What was being done, e.g. `bind a UDP socket`.
    pub operation: &'static str,
    /// The cause.
    pub source: io::Error,
}

/// The stock of ready sockets. Cheap to share; every method takes `&self`.
#[derive(Debug)]
pub struct Spares {
    stock: Mutex<Stock>,
    /// Whether a socket was taken or retired since the last restock (the one check a restock
    /// with nothing to do costs).
    used: AtomicBool,
}

impl Default for Spares {
    fn default() -> Self {
        Self {
            stock: Mutex::default(),
            used: AtomicBool::new(true),
        }
    }
}

/// What the lock guards.
#[derive(Debug, Default)]
struct Stock {
    /// Unused sockets, bound and connected, per server.
    ready: HashMap<SocketAddr, Vec<UdpSocket>>,
    /// Used sockets waiting to be closed.
    spent: Vec<UdpSocket>,
}

impl Spares {
    /// An empty stock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A socket connected to `server` that no datagram has reached since this call: a spare
    /// (its receive queue emptied) or, if none is left, one made now. Must be called within the
    /// tokio runtime (the socket is registered with its reactor).
    pub fn take(&self, server: SocketAddr) -> Result<UdpSocket, SocketError> {
        loop {
            let spare = self.lock().ready.get_mut(&server).and_then(Vec::pop);
            // After the pop: a restock that ran before it saw the stock still full.
            self.used.store(true, Ordering::Relaxed);
            match spare {
                Some(spare) if discard_queued(&spare).is_ok() => return Ok(spare),
                // A socket in an error state is not worth a query: try the next one.
                Some(_) => {}
                None => return connected_socket(server),
            }
        }
    }

    /// Takes back a used socket, to be closed by the next [`restock`](Self::restock).
    pub fn retire(&self, socket: UdpSocket) {
        self.used.store(true, Ordering::Relaxed);
        let mut stock = self.lock();
        if stock.spent.len() < MAX_SPENT {
            stock.spent.push(socket);
        } else {
            drop(stock);
            drop(socket);
        }
    }

    /// Whether a [`restock`](Self::restock) has anything to do: a socket was taken or retired
    /// since the last one.
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Closes the used sockets, drops the spares of servers no longer in `servers`, and makes
    /// spares for the others up to the stock's size. Meant for moments when no answer waits:
    /// every socket made or closed here costs tens of µs. Sockets are made outside the lock, so
    /// concurrent queries are not held up; a failure to make one only leaves the stock short.
    pub fn restock(&self, servers: &[SocketAddr]) {
        let (spent, gone, wanted) = {
            let mut stock = self.lock();
            // Cleared under the lock: a take or retire after this point sets it again.
            self.used.store(false, Ordering::Relaxed);
            let spent = mem::take(&mut stock.spent);
            let listed: Vec<SocketAddr> = stock.ready.keys().copied().collect();
            let gone: Vec<Vec<UdpSocket>> = listed
                .iter()
                .filter(|server| !servers.contains(server))
                .filter_map(|server| stock.ready.remove(server))
                .collect();
            let wanted: Vec<(SocketAddr, usize)> = servers
                .iter()
                .map(|server| {
                    let have = stock.ready.get(server).map_or(0, Vec::len);
                    (*server, PER_SERVER.saturating_sub(have))
                })
                .filter(|(_, missing)| *missing > 0)
                .collect();
            (spent, gone, wanted)
        };
        drop(spent);
        drop(gone);
        for (server, missing) in wanted {
            let mut made: Vec<UdpSocket> = (0..missing)
                .map_while(|_| connected_socket(server).ok())
                .collect();
            // Another restock may have filled the stock meanwhile: the extra ones are closed
            // after the lock is released.
            let extra = {
                let mut stock = self.lock();
                let ready = stock.ready.entry(server).or_default();
                let room = PER_SERVER.saturating_sub(ready.len());
                let extra = made.split_off(room.min(made.len()));
                ready.append(&mut made);
                extra
            };
            drop(extra);
        }
    }

    /// How many spares are ready for `server` (for tests and diagnostics).
    pub fn ready_for(&self, server: SocketAddr) -> usize {
        self.lock().ready.get(&server).map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stock> {
        // The stock stays consistent whatever panicked while holding it: take it as it is.
        self.stock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A UDP socket on a random local port of `server`'s family, connected to `server` (the kernel
/// then passes up only the server's datagrams, and reports its ICMP errors), registered with the
/// runtime's reactor.
///
/// Three syscalls and the registration: made non-blocking by `socket` itself, and bound by
/// `connect` (which picks a random ephemeral port, as a bind to port 0 would).
fn connected_socket(server: SocketAddr) -> Result<UdpSocket, SocketError> {
    let failed = |operation| move |source| SocketError { operation, source };
    let family = match server {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|errno| failed("make a UDP socket")(io::Error::from(errno)))?;
    connect(fd.as_raw_fd(), &SockaddrStorage::from(server))
        .map_err(|errno| failed("connect over UDP")(io::Error::from(errno)))?;
    let socket = std::net::UdpSocket::from(fd);
    UdpSocket::from_std(socket).map_err(failed("register a UDP socket"))
}

/// Reads and throws away every datagram queued on `socket`, without waiting.
fn discard_queued(socket: &UdpSocket) -> Result<(), Errno> {
    // One byte is enough: a datagram is consumed whole whatever the buffer (MSG_TRUNC).
    let mut byte = [0_u8; 1];
    loop {
        match nix::sys::socket::recv(
            socket.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        ) {
            Ok(_) => {}
            Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> (std::net::UdpSocket, SocketAddr) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        (socket, addr)
    }

    #[tokio::test]
    async fn restock_fills_and_take_empties() {
        let (_server, addr) = server();
        let spares = Spares::new();
        assert_eq!(spares.ready_for(addr), 0);
        assert!(spares.used(), "a new stock wants filling");
        spares.restock(&[addr]);
        assert_eq!(spares.ready_for(addr), PER_SERVER);
        assert!(!spares.used());
        let taken = spares.take(addr).unwrap();
        assert_eq!(taken.peer_addr().unwrap(), addr);
        assert_eq!(spares.ready_for(addr), PER_SERVER - 1);
        assert!(spares.used());
        spares.retire(taken);
        spares.restock(&[addr]);
        assert_eq!(spares.ready_for(addr), PER_SERVER);
        assert!(
            spares.lock().spent.is_empty(),
            "restock closes the used sockets"
        );
    }

    #[tokio::test]
    async fn an_empty_stock_makes_a_socket_on_the_spot() {
        let (_server, addr) = server();
        let spares = Spares::new();
        let socket = spares.take(addr).unwrap();
        assert_eq!(socket.peer_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn every_spare_has_its_own_port() {
        let (_server, addr) = server();
        let spares = Spares::new();
        spares.restock(&[addr]);
        let ports: std::collections::HashSet<u16> = (0..PER_SERVER)
            .map(|_| spares.take(addr).unwrap().local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), PER_SERVER);
    }

    #[tokio::test]
    async fn servers_no_longer_listed_lose_their_spares() {
        let (_first, first) = server();
        let (_second, second) = server();
        let spares = Spares::new();
        spares.restock(&[first, second]);
        spares.restock(&[second]);
        assert_eq!(spares.ready_for(first), 0);
        assert_eq!(spares.ready_for(second), PER_SERVER);
    }

    #[tokio::test]
    async fn datagrams_queued_before_the_take_are_discarded() {
        let (server_socket, addr) = server();
        let spares = Spares::new();
        spares.restock(&[addr]);
        // Send from the server to every spare: what a spoofer guessing the ports would queue.
        let mut ports = Vec::new();
        {
            let stock = spares.lock();
            for spare in &stock.ready[&addr] {
                let port = spare.local_addr().unwrap().port();
                server_socket
                    .send_to(b"early", ("127.0.0.1", port))
                    .unwrap();
                ports.push(port);
            }
        }
        // Loopback delivery is synchronous: the datagrams are queued once send_to returns.
        let taken = spares.take(addr).unwrap();
        let mut buf = [0_u8; 16];
        assert_eq!(
            taken.try_recv(&mut buf).map_err(|err| err.kind()),
            Err(io::ErrorKind::WouldBlock),
            "a queued datagram survived the take"
        );
        // And the socket still works for the reply that comes after.
        let port = taken.local_addr().unwrap().port();
        server_socket
            .send_to(b"reply", ("127.0.0.1", port))
            .unwrap();
        let len = taken.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], b"reply");
        assert!(ports.contains(&port));
    }

    #[tokio::test]
    async fn the_spent_list_is_bounded() {
        let (_server, addr) = server();
        let spares = Spares::new();
        for _ in 0..MAX_SPENT + 10 {
            spares.retire(spares.take(addr).unwrap());
        }
        assert_eq!(spares.lock().spent.len(), MAX_SPENT);
    }
}
