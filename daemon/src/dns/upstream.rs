//! Sending a container's query to the upstream resolvers, from the daemon's own network
//! namespace, and bringing back the reply bytes.
//!
//! The proxy keeps the upstream's bytes (it only reads the answer to learn addresses), so this
//! is a byte forwarder, not a resolver. Each attempt is spoof-resistant the usual way:
//! - a fresh UDP socket per attempt, so the kernel picks a random source port (made ahead of
//!   time by [`Spares`], its receive queue emptied when the attempt takes it);
//! - a fresh random query id per attempt (the client's id is put back on the reply);
//! - the socket is `connect`ed to the server, so the kernel drops datagrams from anyone else;
//! - a datagram is taken as the reply only if it is a response with the attempt's id and the
//!   query's question (names compared without regard to ASCII case); anything else is ignored
//!   and the attempt keeps listening.
//!
//! A truncated reply (TC) is asked again over TCP of the same server, and the TCP reply is
//! returned whole (the proxy truncates for its own client if it must). Any other reply, NXDOMAIN,
//! SERVFAIL or REFUSED included, is returned as is: the rcode is the client's to see. Only the
//! header and the question are checked here; the caller parses the rest.
//!
//! Several resolvers, and lost datagrams: attempts are launched one after another, the servers in
//! order and then each once more, one every `timeout / (2 × servers + 1)`; earlier attempts keep
//! listening, so a slow answer is never thrown away for a later one, and a dead first resolver
//! (the common case of a stale resolv.conf) costs one interval, not the whole timeout. A server
//! that fails at the network level (ICMP port unreachable shows up as `ECONNREFUSED`, no route,
//! a TCP reset) is not asked again in this call, and the next attempt starts at once. The whole
//! call is bounded by the timeout.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::servers::UpstreamServers;
use super::spares::{SocketError, Spares};

/// Length of the fixed DNS header.
const HEADER_LEN: usize = 12;

/// The largest UDP payload over IPv4 (65 535 less the IP and UDP headers): a reply is read whole
/// whatever EDNS size the client advertised.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Each server is asked at most this many times per query (the first try and one resend).
const TRIES_PER_SERVER: usize = 2;

/// Why a query got no reply.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// There is no upstream resolver to ask (an empty list).
    #[error("no upstream DNS resolver is configured")]
    NoServers,
    /// The bytes given are not a DNS query this forwarder can match replies to.
    #[error("cannot forward the query: {reason}")]
    BadQuery {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No acceptable reply came from any server before the timeout.
    #[error(
        "no answer from the upstream DNS resolvers {} within {}",
        list(servers),
        humantime::format_duration(*timeout)
    )]
    Timeout {
        /// The servers asked.
        servers: Vec<SocketAddr>,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// A socket operation with a server failed (every server failed: this is the last one).
    #[error("upstream DNS resolver {server}: {operation} failed: {source}")]
    Network {
        /// The server.
        server: SocketAddr,
        /// What was being done, e.g. `receive over UDP`.
        operation: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A server answered over TCP with something that is not the reply to the query.
    #[error("upstream DNS resolver {server}: bad reply over TCP: {reason}")]
    BadTcpReply {
        /// The server.
        server: SocketAddr,
        /// What is wrong with the reply.
        reason: &'static str,
    },
}

/// `a, b, c` for the error messages.
fn list(servers: &[SocketAddr]) -> String {
    servers
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Forwards queries to the upstream resolvers. Cheap to share behind an `Arc`;
/// [`forward`](Self::forward) takes `&self` and may run concurrently for every container.
#[derive(Debug)]
pub struct Forwarder {
    /// The resolvers, kept current; shared by the forwarders of every DNS thread.
    servers: Arc<UpstreamServers>,
    /// Bound on one [`forward`](Self::forward) call.
    timeout: Duration,
    /// The attempts' UDP sockets, made ahead of time.
    spares: Arc<Spares>,
}

impl Forwarder {
    /// A forwarder asking `servers`, giving up on a query after `timeout` (`dns.timeout`).
    pub fn new(servers: UpstreamServers, timeout: Duration) -> Self {
        Self {
            servers: Arc::new(servers),
            timeout,
            spares: Arc::new(Spares::new()),
        }
    }

    /// A forwarder asking the same resolvers with the same timeout, with a stock of sockets of
    /// its own: one per DNS thread, since a socket is registered with the reactor of the
    /// runtime that made it, and a reply to a socket of another thread's reactor would have to
    /// wake that thread first.
    pub fn sibling(&self) -> Self {
        Self {
            servers: Arc::clone(&self.servers),
            timeout: self.timeout,
            spares: Arc::new(Spares::new()),
        }
    }

    /// Makes the sockets the next queries will use and closes the used ones (see [`Spares`]).
    /// Call it when no answer is waiting, e.g. once an answer has been sent: it costs tens of
    /// µs per socket, which a query would otherwise pay on its way.
    pub fn restock(&self) {
        if self.spares.used() {
            self.spares.restock(&self.servers.current());
        }
    }

    /// The overall bound on one [`forward`](Self::forward).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `query` (a client's wire-format query; the caller has validated it) upstream and
    /// returns the reply bytes with the client's original id restored.
    ///
    /// Any well-formed reply is returned, whatever its rcode. Errors: no servers, every server
    /// failing at the network level (the last failure is returned), or no reply within the
    /// timeout.
    pub async fn forward(&self, query: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        if query.len() < HEADER_LEN {
            return Err(UpstreamError::BadQuery {
                reason: "shorter than a DNS header",
            });
        }
        if u16::try_from(query.len()).is_err() {
            return Err(UpstreamError::BadQuery {
                reason: "longer than a DNS message can be",
            });
        }
        let question = question_key(query).ok_or(UpstreamError::BadQuery {
            reason: "its question section cannot be read",
        })?;
        let servers = self.servers.current();
        if servers.is_empty() {
            return Err(UpstreamError::NoServers);
        }
        let query = Query {
            wire: Arc::from(query),
            question: Arc::from(question),
        };
        let mut race = Race::new(servers, self.timeout, Arc::clone(&self.spares));
        race.run(&query).await
    }
}

/// What one attempt ends with: the server it asked, and its reply or why there is none.
type Attempt = (SocketAddr, Result<Vec<u8>, UpstreamError>);

/// A query as every attempt needs it.
#[derive(Clone)]
struct Query {
    /// The client's bytes (its id included; each attempt puts its own id in a copy).
    wire: Arc<[u8]>,
    /// The question section as [`question_key`] gives it, to recognise the reply.
    question: Arc<[u8]>,
}

/// The attempts of one [`Forwarder::forward`] call.
struct Race {
    /// The servers, in order.
    servers: Arc<[SocketAddr]>,
    /// The overall bound.
    timeout: Duration,
    /// How many attempts have been launched (the next one asks `servers[launched % len]`).
    launched: usize,
    /// How many attempts may be launched in all.
    planned: usize,
    /// Servers that failed at the network level in this call: not asked again.
    failed: Vec<SocketAddr>,
    /// Where the attempts take their sockets.
    spares: Arc<Spares>,
    /// The attempts still running, polled by the task that forwards (no task per attempt: a
    /// hand-off between threads would cost more than the upstream round trip). Dropping them
    /// ends them, so a cancelled `forward` (a client gone, a proxy stopping) leaves no socket
    /// behind.
    running: FuturesUnordered<BoxFuture<'static, Attempt>>,
}

impl Race {
    /// No attempt launched yet.
    fn new(servers: Arc<[SocketAddr]>, timeout: Duration, spares: Arc<Spares>) -> Self {
        let planned = servers.len().saturating_mul(TRIES_PER_SERVER);
        Self {
            servers,
            timeout,
            launched: 0,
            planned,
            failed: Vec::new(),
            spares,
            running: FuturesUnordered::new(),
        }
    }

    /// Time between two launches: the attempts spread over the timeout, the last one still
    /// getting a share of it.
    fn interval(&self) -> Duration {
        let slots = u32::try_from(self.planned.saturating_add(1)).unwrap_or(u32::MAX);
        self.timeout / slots
    }

    /// Launches the next attempt whose server has not failed; `false` if none is left.
    fn launch_next(&mut self, query: &Query) -> bool {
        while self.launched < self.planned {
            // Round robin: every server once, then every server again.
            let Some(&server) = self
                .launched
                .checked_rem(self.servers.len())
                .and_then(|index| self.servers.get(index))
            else {
                return false;
            };
            self.launched += 1;
            if self.failed.contains(&server) {
                continue;
            }
            let query = query.clone();
            let spares = Arc::clone(&self.spares);
            self.running.push(Box::pin(async move {
                (server, ask_udp(server, &query, &spares).await)
            }));
            return true;
        }
        false
    }

    /// Runs the attempts until one brings a reply, every one has failed, or the timeout passes.
    async fn run(&mut self, query: &Query) -> Result<Vec<u8>, UpstreamError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let interval = self.interval();
        let mut next_launch = started;
        let mut last_failure = None;
        loop {
            if Instant::now() >= next_launch {
                if self.launch_next(query) {
                    next_launch += interval;
                } else {
                    // Nothing left to launch: only the running attempts can still answer.
                    next_launch = deadline;
                }
            }
            if self.running.is_empty() && next_launch >= deadline {
                // Every attempt failed before the timeout (there was at least one attempt:
                // the list is not empty).
                return Err(last_failure.unwrap_or_else(|| self.timeout_error()));
            }
            tokio::select! {
                // Attempts first: the first poll sends the query, and only then is the timer
                // registered (which on this runtime writes to its wake-up eventfd, a syscall
                // that now overlaps the upstream's work instead of delaying the query).
                biased;
                Some(done) = self.running.next() => match done {
                    (_, Ok(reply)) => return Ok(reply),
                    (server, Err(err)) => {
                        tracing::debug!(%server, error = %err, "upstream attempt failed");
                        if matches!(err, UpstreamError::Network { .. }) {
                            self.failed.push(server);
                        }
                        last_failure = Some(err);
                        // Ask the next server now rather than after the interval.
                        next_launch = Instant::now();
                    }
                },
                // One timer for both (each one registered costs a wake-up of the reactor).
                () = tokio::time::sleep_until(next_launch.min(deadline)) => {
                    if Instant::now() >= deadline {
                        return Err(self.timeout_error());
                    }
                }
            }
        }
    }

    /// The error for a call that ran out of time.
    fn timeout_error(&self) -> UpstreamError {
        UpstreamError::Timeout {
            servers: self.servers.to_vec(),
            timeout: self.timeout,
        }
    }
}

/// A copy of `query` with the id `id`.
fn with_id(query: &[u8], id: u16) -> Vec<u8> {
    let mut wire = query.to_vec();
    if let Some(header_id) = wire.get_mut(..2) {
        header_id.copy_from_slice(&id.to_be_bytes());
    }
    wire
}

/// `reply` with the id of `query` put back.
fn restore_id(mut reply: Vec<u8>, query: &[u8]) -> Vec<u8> {
    if let (Some(reply_id), Some(query_id)) = (reply.get_mut(..2), query.get(..2)) {
        reply_id.copy_from_slice(query_id);
    }
    reply
}

/// One attempt over UDP; over TCP too if the UDP reply is truncated.
async fn ask_udp(
    server: SocketAddr,
    query: &Query,
    spares: &Spares,
) -> Result<Vec<u8>, UpstreamError> {
    let failed = |operation| {
        move |source| UpstreamError::Network {
            server,
            operation,
            source,
        }
    };
    let id = rand::random::<u16>();
    let socket = spares
        .take(server)
        .map_err(|SocketError { operation, source }| failed(operation)(source))?;
    socket
        .send(&with_id(&query.wire, id))
        .await
        .map_err(failed("send over UDP"))?;
    tracing::debug!(%server, id, "query sent over UDP");
    loop {
        // Read into the thread's buffer and copy out only the datagram: a 64 KiB buffer per
        // attempt costs an allocation and, freed, makes glibc's malloc consolidate its heap.
        // Errors are awaited too: an ICMP port unreachable from the server ends the attempt.
        let datagram = socket
            .async_io(Interest::READABLE | Interest::ERROR, || {
                RECEIVE_BUFFER.with_borrow_mut(|buffer| {
                    let len = nix::sys::socket::recv(socket.as_raw_fd(), buffer, MsgFlags::empty())
                        .map_err(io::Error::from)?;
                    Ok(buffer.get(..len).map(<[u8]>::to_vec).unwrap_or_default())
                })
            })
            .await
            .map_err(failed("receive over UDP"))?;
        if let Err(reason) = check_reply(&datagram, id, &query.question) {
            tracing::debug!(%server, id, reason, "datagram ignored");
            continue;
        }
        if is_truncated(&datagram) {
            tracing::debug!(%server, id, "truncated reply: asking again over TCP");
            spares.retire(socket);
            return ask_tcp(server, query).await;
        }
        tracing::debug!(%server, id, len = datagram.len(), "reply received over UDP");
        spares.retire(socket);
        return Ok(restore_id(datagram, &query.wire));
    }
}

thread_local! {
    /// Where [`ask_udp`] receives: large enough for any UDP payload, made once per thread.
    static RECEIVE_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0_u8; MAX_UDP_PAYLOAD]);
}

/// The query over TCP (RFC 1035 4.2.2: each message prefixed by its 2-byte length).
async fn ask_tcp(server: SocketAddr, query: &Query) -> Result<Vec<u8>, UpstreamError> {
    let failed = |operation| {
        move |source| UpstreamError::Network {
            server,
            operation,
            source,
        }
    };
    let id = rand::random::<u16>();
    let wire = with_id(&query.wire, id);
    // `forward` refused longer queries.
    let len = u16::try_from(wire.len()).map_err(|_| UpstreamError::BadQuery {
        reason: "longer than a DNS message can be",
    })?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&wire);

    let mut stream = TcpStream::connect(server)
        .await
        .map_err(failed("connect over TCP"))?;
    // One write, so the length and the message leave in one segment.
    stream
        .write_all(&framed)
        .await
        .map_err(failed("send over TCP"))?;
    let reply_len = stream
        .read_u16()
        .await
        .map_err(failed("receive over TCP"))?;
    let mut reply = vec![0u8; usize::from(reply_len)];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(failed("receive over TCP"))?;
    // On a connection of our own nobody else can slip a message in: a wrong reply is the
    // server's fault, not something to wait past.
    check_reply(&reply, id, &query.question)
        .map_err(|reason| UpstreamError::BadTcpReply { server, reason })?;
    tracing::debug!(%server, id, len = reply.len(), "reply received over TCP");
    Ok(restore_id(reply, &query.wire))
}

/// Whether `message` is the reply to the query sent with `id` and `question`; if not, why.
fn check_reply(message: &[u8], id: u16, question: &[u8]) -> Result<(), &'static str> {
    let Some(header) = message.get(..HEADER_LEN) else {
        return Err("shorter than a DNS header");
    };
    if header[..2] != id.to_be_bytes() {
        return Err("another query id");
    }
    // QR: a reflected query is not a reply.
    if header[2] & 0x80 == 0 {
        return Err("not a response");
    }
    if question_key(message).as_deref() != Some(question) {
        return Err("another question");
    }
    Ok(())
}

/// Whether the TC bit is set (the caller checked the header is there).
fn is_truncated(message: &[u8]) -> bool {
    message.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

/// The question count and question section of `message`, with the names' letters lowercased
/// (DNS names compare without regard to ASCII case, and a resolver may not echo the case it was
/// sent); `None` if the section does not parse.
///
/// Label lengths, pointers, types and classes are kept as they are, so two keys are equal exactly
/// when the questions are the same.
fn question_key(message: &[u8]) -> Option<Vec<u8>> {
    let count = message.get(4..6)?;
    let questions = u16::from_be_bytes([count[0], count[1]]);
    let mut key = count.to_vec();
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        loop {
            let len = *message.get(at)?;
            match len & 0xC0 {
                0x00 => {
                    let end = at + 1 + usize::from(len);
                    let label = message.get(at + 1..end)?;
                    key.push(len);
                    key.extend(label.iter().map(u8::to_ascii_lowercase));
                    at = end;
                    if len == 0 {
                        break;
                    }
                }
                // A compression pointer ends the name.
                0xC0 => {
                    key.extend_from_slice(message.get(at..at + 2)?);
                    at += 2;
                    break;
                }
                // 0x40 and 0x80 are not defined label types.
                _ => return None,
            }
        }
        // Type and class.
        key.extend_from_slice(message.get(at..at + 4)?);
        at += 4;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;
    use std::str::FromStr;
    use std::sync::Mutex;

    use hickory_resolver::proto::op::{
        Message, MessageType, OpCode, Query as Question, ResponseCode,
    };
    use hickory_resolver::proto::rr::rdata::A;
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
    use tokio::net::{TcpListener, UdpSocket};
    use tokio::task::JoinHandle;

    use super::*;

    /// The id the client uses in every test query.
    const CLIENT_ID: u16 = 0x1234;

    fn query_for(name: &str, record_type: RecordType) -> Vec<u8> {
        let mut message = Message::new(CLIENT_ID, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Question::query(Name::from_str(name).unwrap(), record_type));
        message.to_vec().unwrap()
    }

    fn query(name: &str) -> Vec<u8> {
        query_for(name, RecordType::A)
    }

    /// A reply to `request` with the A records `addrs` for its question.
    fn reply(request: &Message, addrs: &[[u8; 4]]) -> Message {
        let mut message = Message::response(request.metadata.id, OpCode::Query);
        message.metadata.recursion_desired = request.metadata.recursion_desired;
        message.metadata.recursion_available = true;
        message.add_queries(request.queries.clone());
        let name = request.queries[0].name().clone();
        for addr in addrs {
            message.add_answer(Record::from_rdata(
                name.clone(),
                300,
                RData::A(A(Ipv4Addr::from(*addr))),
            ));
        }
        message
    }

    fn wire(message: &Message) -> Vec<u8> {
        message.to_vec().unwrap()
    }

    fn answers(reply: &[u8]) -> Vec<Ipv4Addr> {
        Message::from_vec(reply)
            .unwrap()
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    /// Who sends a datagram of a fake upstream's answer.
    enum Sender {
        /// The upstream's own socket.
        Upstream,
        /// Another socket on the loopback: an off-path spoofer that knows the client's port.
        Stranger,
        /// The upstream's own socket, after a while (other queries are served meanwhile).
        Late(Duration),
    }

    /// A fake upstream on UDP: for the `nth` query (from 0), `respond` gives the datagrams to
    /// send back, in order. Every query's id and source port are recorded.
    struct FakeUdp {
        addr: SocketAddr,
        ids: Arc<Mutex<Vec<u16>>>,
        ports: Arc<Mutex<Vec<u16>>>,
        task: JoinHandle<()>,
    }

    type Respond = Box<dyn Fn(&Message, usize) -> Vec<(Sender, Vec<u8>)> + Send>;

    impl FakeUdp {
        async fn start(
            bind: &str,
            respond: impl Fn(&Message, usize) -> Vec<(Sender, Vec<u8>)> + Send + 'static,
        ) -> Self {
            Self::on(UdpSocket::bind(bind).await.unwrap(), Box::new(respond)).await
        }

        /// Answers every query with `addrs`.
        async fn answering(addrs: &'static [[u8; 4]]) -> Self {
            Self::start("127.0.0.1:0", move |request, _| {
                vec![(Sender::Upstream, wire(&reply(request, addrs)))]
            })
            .await
        }

        async fn on(socket: UdpSocket, respond: Respond) -> Self {
            let addr = socket.local_addr().unwrap();
            let socket = Arc::new(socket);
            let stranger = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
                .await
                .unwrap();
            let ids = Arc::new(Mutex::new(Vec::new()));
            let seen = ids.clone();
            let ports = Arc::new(Mutex::new(Vec::new()));
            let seen_ports = ports.clone();
            let task = tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let (len, from) = socket.recv_from(&mut buf).await.unwrap();
                    let request = Message::from_vec(&buf[..len]).unwrap();
                    let nth = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(request.metadata.id);
                        seen.len() - 1
                    };
                    seen_ports.lock().unwrap().push(from.port());
                    for (sender, datagram) in respond(&request, nth) {
                        match sender {
                            Sender::Upstream => socket.send_to(&datagram, from).await,
                            Sender::Stranger => stranger.send_to(&datagram, from).await,
                            Sender::Late(delay) => {
                                let socket = socket.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    // The client may be gone by then.
                                    let _ = socket.send_to(&datagram, from).await;
                                });
                                Ok(0)
                            }
                        }
                        .unwrap();
                    }
                }
            });
            Self {
                addr,
                ids,
                ports,
                task,
            }
        }

        fn queries(&self) -> usize {
            self.ids.lock().unwrap().len()
        }
    }

    impl Drop for FakeUdp {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A fake upstream on TCP, on `port` of 127.0.0.1: answers each query on a connection with
    /// `respond`'s message. Counts the queries.
    struct FakeTcp {
        queries: Arc<Mutex<usize>>,
        task: JoinHandle<()>,
    }

    impl FakeTcp {
        fn on(
            listener: TcpListener,
            respond: impl Fn(&Message) -> Vec<u8> + Send + Sync + 'static,
        ) -> Self {
            let queries = Arc::new(Mutex::new(0));
            let count = queries.clone();
            let respond = Arc::new(respond);
            let task = tokio::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    let count = count.clone();
                    let respond = respond.clone();
                    tokio::spawn(async move {
                        let len = stream.read_u16().await.unwrap();
                        let mut buf = vec![0u8; usize::from(len)];
                        stream.read_exact(&mut buf).await.unwrap();
                        *count.lock().unwrap() += 1;
                        let answer = respond(&Message::from_vec(&buf).unwrap());
                        let len = u16::try_from(answer.len()).unwrap();
                        stream.write_all(&len.to_be_bytes()).await.unwrap();
                        stream.write_all(&answer).await.unwrap();
                    });
                }
            });
            Self { queries, task }
        }
    }

    impl Drop for FakeTcp {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A UDP socket and a TCP listener on the same loopback port.
    async fn udp_and_tcp() -> (UdpSocket, TcpListener) {
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                return (udp, tcp);
            }
        }
    }

    fn forwarder(servers: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder::new(UpstreamServers::fixed(servers), timeout)
    }

    /// A loopback address with nothing listening on UDP or TCP: a datagram to it gets ICMP
    /// port unreachable, which a connected socket reports as ECONNREFUSED.
    async fn closed_port() -> SocketAddr {
        let (udp, _tcp) = udp_and_tcp().await;
        // Both sockets close when they drop, at the end of this function.
        udp.local_addr().unwrap()
    }

    #[tokio::test]
    async fn reply_passes_through_with_the_client_id() {
        let upstream = FakeUdp::answering(&[[192, 0, 2, 1], [192, 0, 2, 2]]).await;
        let forwarder = forwarder(vec![upstream.addr], Duration::from_secs(2));
        let sent = query("www.example.com.");
        for _ in 0..8 {
            let got = forwarder.forward(&sent).await.unwrap();
            let message = Message::from_vec(&got).unwrap();
            assert_eq!(message.metadata.id, CLIENT_ID);
            assert_eq!(message.metadata.message_type, MessageType::Response);
            assert_eq!(
                answers(&got),
                [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]
            );
        }
        // The upstream saw fresh random ids, not the client's one each time.
        let ids: BTreeSet<u16> = upstream.ids.lock().unwrap().iter().copied().collect();
        assert!(ids.len() > 1, "{ids:?}");
        assert_eq!(upstream.queries(), 8);
    }

    #[tokio::test]
    async fn every_query_leaves_from_a_port_of_its_own_spares_included() {
        let upstream = FakeUdp::answering(&[[192, 0, 2, 1]]).await;
        let forwarder = forwarder(vec![upstream.addr], Duration::from_secs(2));
        let sent = query("www.example.com.");
        // Without a restock every socket is made on the spot; with one, taken from the stock.
        for restock in [false, true, true, false, true, true, true, true, true, true] {
            if restock {
                forwarder.restock();
                assert!(forwarder.spares.ready_for(upstream.addr) > 0);
            }
            let got = forwarder.forward(&sent).await.unwrap();
            assert_eq!(answers(&got), [Ipv4Addr::new(192, 0, 2, 1)]);
        }
        // A socket used twice would show up as runs of one port; two random ephemeral ports
        // may still coincide by chance (about once in 600 runs of ten), hence not `== 10`.
        let ports: BTreeSet<u16> = upstream.ports.lock().unwrap().iter().copied().collect();
        assert!(ports.len() >= 9, "source ports reused: {ports:?}");
    }

    #[tokio::test]
    async fn the_reply_bytes_are_the_upstreams() {
        // Whatever the upstream put in its reply (here an rcode and a flag hickory would not
        // set itself) comes back unchanged but for the id.
        let sent_by_upstream = Arc::new(Mutex::new(Vec::new()));
        let record = sent_by_upstream.clone();
        let upstream = FakeUdp::start("127.0.0.1:0", move |request, _| {
            let mut message = reply(request, &[]);
            message.metadata.response_code = ResponseCode::NXDomain;
            message.metadata.authoritative = true;
            let bytes = wire(&message);
            *record.lock().unwrap() = bytes.clone();
            vec![(Sender::Upstream, bytes)]
        })
        .await;
        let got = forwarder(vec![upstream.addr], Duration::from_secs(2))
            .forward(&query("missing.example."))
            .await
            .unwrap();
        let from_upstream = sent_by_upstream.lock().unwrap().clone();
        assert_eq!(got[..2], CLIENT_ID.to_be_bytes());
        assert_eq!(got[2..], from_upstream[2..]);
        assert_eq!(
            Message::from_vec(&got).unwrap().metadata.response_code,
            ResponseCode::NXDomain
        );
    }

    #[tokio::test]
    async fn wrong_replies_are_ignored_until_the_right_one() {
        let upstream = FakeUdp::start("127.0.0.1:0", |request, _| {
            let bad = |addr: [u8; 4], spoil: &dyn Fn(&mut Message)| {
                let mut message = reply(request, &[addr]);
                spoil(&mut message);
                wire(&message)
            };
            // The right answer, from the wrong port: the connected socket must never see it.
            let stranger = bad([203, 0, 113, 1], &|_| {});
            let wrong_id = bad([203, 0, 113, 2], &|m| {
                m.metadata.id = m.metadata.id.wrapping_add(1);
            });
            let wrong_name = bad([203, 0, 113, 3], &|m| {
                m.queries[0].set_name(Name::from_str("evil.example.").unwrap());
            });
            let wrong_type = bad([203, 0, 113, 4], &|m| {
                m.queries[0].set_query_type(RecordType::AAAA);
            });
            // The query reflected back: right id and question, but not a response.
            let reflected = bad([203, 0, 113, 5], &|m| {
                m.metadata.message_type = MessageType::Query;
            });
            let no_question = bad([203, 0, 113, 6], &|m| m.queries.clear());
            // The right one, with the name in another case than the client's.
            let mut good = reply(request, &[[192, 0, 2, 1]]);
            let lower = good.queries[0].name().to_lowercase();
            good.queries[0].set_name(lower);
            vec![
                (Sender::Stranger, stranger),
                (Sender::Upstream, wrong_id),
                (Sender::Upstream, wrong_name),
                (Sender::Upstream, wrong_type),
                (Sender::Upstream, reflected),
                (Sender::Upstream, no_question),
                (Sender::Upstream, vec![0x12]),
                (Sender::Upstream, wire(&good)),
            ]
        })
        .await;
        let got = forwarder(vec![upstream.addr], Duration::from_secs(2))
            .forward(&query("WWW.Example.COM."))
            .await
            .unwrap();
        assert_eq!(answers(&got), [Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(upstream.queries(), 1);
    }

    #[tokio::test]
    async fn only_wrong_replies_time_out() {
        let upstream = FakeUdp::start("127.0.0.1:0", |request, _| {
            let mut wrong_id = reply(request, &[[203, 0, 113, 2]]);
            wrong_id.metadata.id = wrong_id.metadata.id.wrapping_add(1);
            vec![
                (Sender::Stranger, wire(&reply(request, &[[203, 0, 113, 1]]))),
                (Sender::Upstream, wire(&wrong_id)),
            ]
        })
        .await;
        let err = forwarder(vec![upstream.addr], Duration::from_millis(400))
            .forward(&query("www.example.com."))
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn truncated_reply_is_asked_again_over_tcp() {
        let (udp, tcp) = udp_and_tcp().await;
        let many: Vec<[u8; 4]> = (1..=40).map(|i| [192, 0, 2, i]).collect();
        let tcp_many = many.clone();
        let over_tcp = FakeTcp::on(tcp, move |request| wire(&reply(request, &tcp_many)));
        let over_udp = FakeUdp::on(
            udp,
            Box::new(|request, _| {
                let mut truncated = reply(request, &[[192, 0, 2, 1]]);
                truncated.metadata.truncation = true;
                vec![(Sender::Upstream, wire(&truncated))]
            }),
        )
        .await;
        let got = forwarder(vec![over_udp.addr], Duration::from_secs(2))
            .forward(&query("many.example."))
            .await
            .unwrap();
        let message = Message::from_vec(&got).unwrap();
        assert_eq!(message.metadata.id, CLIENT_ID);
        assert!(!message.metadata.truncation);
        let want: Vec<Ipv4Addr> = many.into_iter().map(Ipv4Addr::from).collect();
        assert_eq!(answers(&got), want);
        assert!(got.len() > 512, "{}", got.len());
        assert_eq!(over_udp.queries(), 1);
        assert_eq!(*over_tcp.queries.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_wrong_tcp_reply_is_an_error_naming_the_server() {
        let (udp, tcp) = udp_and_tcp().await;
        let _over_tcp = FakeTcp::on(tcp, |request| {
            let mut wrong = reply(request, &[[203, 0, 113, 1]]);
            wrong.metadata.id = wrong.metadata.id.wrapping_add(1);
            wire(&wrong)
        });
        let over_udp = FakeUdp::on(
            udp,
            Box::new(|request, _| {
                let mut truncated = reply(request, &[]);
                truncated.metadata.truncation = true;
                vec![(Sender::Upstream, wire(&truncated))]
            }),
        )
        .await;
        let err = forwarder(vec![over_udp.addr], Duration::from_secs(2))
            .forward(&query("many.example."))
            .await
            .unwrap_err();
        assert!(
            matches!(err, UpstreamError::BadTcpReply { server, .. } if server == over_udp.addr),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&over_udp.addr.to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_refusing_server_is_skipped_at_once() {
        let refusing = closed_port().await;
        let upstream = FakeUdp::answering(&[[192, 0, 2, 1]]).await;
        // Two servers, four planned attempts: the interval is a second, so an answer well
        // within it shows the second server was asked on the refusal, not on the schedule.
        let forwarder = forwarder(vec![refusing, upstream.addr], Duration::from_secs(5));
        let started = Instant::now();
        let got = forwarder.forward(&query("www.example.com.")).await.unwrap();
        let took = started.elapsed();
        assert_eq!(answers(&got), [Ipv4Addr::new(192, 0, 2, 1)]);
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    #[tokio::test]
    async fn every_server_refusing_is_a_network_error() {
        let first = closed_port().await;
        let second = closed_port().await;
        let started = Instant::now();
        let err = forwarder(vec![first, second], Duration::from_secs(5))
            .forward(&query("www.example.com."))
            .await
            .unwrap_err();
        // Not a timeout: each server refused, and none is asked twice.
        assert!(started.elapsed() < Duration::from_secs(1));
        match &err {
            UpstreamError::Network { server, source, .. } => {
                assert_eq!(*server, second);
                assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused, "{source}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(&second.to_string()), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_within_the_timeout() {
        let silent = FakeUdp::start("127.0.0.1:0", |_, _| vec![]).await;
        let timeout = Duration::from_millis(600);
        let started = Instant::now();
        let err = forwarder(vec![silent.addr], timeout)
            .forward(&query("www.example.com."))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(300),
            "{took:?}"
        );
        match &err {
            UpstreamError::Timeout {
                servers,
                timeout: passed,
            } => {
                assert_eq!(*servers, [silent.addr]);
                assert_eq!(*passed, timeout);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(&silent.addr.to_string()), "{err}");
        // Asked, then asked once more (a lost datagram), and no more.
        assert_eq!(silent.queries(), 2);
    }

    #[tokio::test]
    async fn a_lost_query_is_sent_again() {
        // The first query is "lost"; the resend is answered.
        let upstream = FakeUdp::start("127.0.0.1:0", |request, nth| {
            if nth == 0 {
                vec![]
            } else {
                vec![(Sender::Upstream, wire(&reply(request, &[[192, 0, 2, 1]])))]
            }
        })
        .await;
        let timeout = Duration::from_millis(900);
        let started = Instant::now();
        let got = forwarder(vec![upstream.addr], timeout)
            .forward(&query("www.example.com."))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(answers(&got), [Ipv4Addr::new(192, 0, 2, 1)]);
        // One server, two attempts: the resend leaves a third of the timeout in.
        assert!(took >= timeout / 3 && took < timeout * 2 / 3, "{took:?}");
        assert_eq!(upstream.queries(), 2);
    }

    #[tokio::test]
    async fn a_silent_first_server_costs_one_interval() {
        let silent = FakeUdp::start("127.0.0.1:0", |_, _| vec![]).await;
        let upstream = FakeUdp::answering(&[[192, 0, 2, 1]]).await;
        // Two servers, four attempts: one every 200 ms.
        let timeout = Duration::from_secs(1);
        let started = Instant::now();
        let got = forwarder(vec![silent.addr, upstream.addr], timeout)
            .forward(&query("www.example.com."))
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(answers(&got), [Ipv4Addr::new(192, 0, 2, 1)]);
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(400),
            "{took:?}"
        );
        assert_eq!(silent.queries(), 1);
    }

    #[tokio::test]
    async fn a_slow_first_server_is_still_heard() {
        // The first server answers late, after the second (silent) one was asked: its answer
        // is taken, not thrown away with its attempt.
        let slow = FakeUdp::start("127.0.0.1:0", |request, _| {
            let late = Sender::Late(Duration::from_millis(350));
            vec![(late, wire(&reply(request, &[[192, 0, 2, 7]])))]
        })
        .await;
        let silent = FakeUdp::start("127.0.0.1:0", |_, _| vec![]).await;
        let got = forwarder(vec![slow.addr, silent.addr], Duration::from_secs(1))
            .forward(&query("www.example.com."))
            .await
            .unwrap();
        assert_eq!(answers(&got), [Ipv4Addr::new(192, 0, 2, 7)]);
        assert_eq!(silent.queries(), 1);
    }

    #[tokio::test]
    async fn ipv6_servers_are_asked_from_an_ipv6_socket() {
        let upstream = FakeUdp::start("[::1]:0", |request, _| {
            vec![(Sender::Upstream, wire(&reply(request, &[[192, 0, 2, 6]])))]
        })
        .await;
        let got = forwarder(vec![upstream.addr], Duration::from_secs(2))
            .forward(&query("www.example.com."))
            .await
            .unwrap();
        assert_eq!(answers(&got), [Ipv4Addr::new(192, 0, 2, 6)]);
    }

    #[tokio::test]
    async fn no_servers_and_bad_queries_are_errors() {
        let none = forwarder(vec![], Duration::from_secs(1));
        let err = none.forward(&query("www.example.com.")).await.unwrap_err();
        assert!(matches!(err, UpstreamError::NoServers), "{err:?}");

        let upstream = FakeUdp::answering(&[[192, 0, 2, 1]]).await;
        let forwarder = forwarder(vec![upstream.addr], Duration::from_secs(1));
        let mut cut = query("www.example.com.");
        cut.truncate(cut.len() - 3);
        let too_long = vec![0u8; 70_000];
        for bad in [&[0x12, 0x34][..], &cut, &too_long] {
            let err = forwarder.forward(bad).await.unwrap_err();
            assert!(matches!(err, UpstreamError::BadQuery { .. }), "{err:?}");
        }
        assert_eq!(upstream.queries(), 0);
    }

    #[tokio::test]
    async fn the_resolv_conf_source_is_followed() {
        // resolv.conf carries no port: this only checks the forwarder asks the current list
        // (port 53 on a loopback address nobody serves here is refused at once).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
        let servers =
            UpstreamServers::with_resolv_conf(&crate::config::DnsConfig::default(), &path).unwrap();
        assert_eq!(*servers.current(), ["127.0.0.1:53".parse().unwrap()]);
        std::fs::write(&path, "nameserver 127.0.0.2\nnameserver 127.0.0.3\n").unwrap();
        let forwarder = Forwarder::new(servers, Duration::from_secs(1));
        let err = forwarder
            .forward(&query("www.example.com."))
            .await
            .unwrap_err();
        let UpstreamError::Network { server, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(server, "127.0.0.3:53".parse().unwrap());
    }

    #[test]
    fn question_keys_ignore_case_only_in_names() {
        let key = |name: &str, record_type| question_key(&query_for(name, record_type)).unwrap();
        assert_eq!(
            key("WWW.Example.com.", RecordType::A),
            key("www.example.COM.", RecordType::A)
        );
        assert_ne!(
            key("www.example.com.", RecordType::A),
            key("www.example.org.", RecordType::A)
        );
        assert_ne!(
            key("www.example.com.", RecordType::A),
            key("www.example.com.", RecordType::AAAA)
        );
        // 65 (HTTPS) and 97 are 'A' and 'a' as bytes: types must not be case-folded.
        assert_ne!(
            key("example.com.", RecordType::HTTPS),
            key("example.com.", RecordType::Unknown(97))
        );
        // Label boundaries count: a.bc is not ab.c.
        assert_ne!(key("a.bc.", RecordType::A), key("ab.c.", RecordType::A));
    }

    #[test]
    fn question_keys_of_broken_sections_are_none() {
        let whole = query("www.example.com.");
        for end in HEADER_LEN..whole.len() {
            assert_eq!(question_key(&whole[..end]), None, "cut at {end}");
        }
        assert!(question_key(&whole).is_some());
        assert_eq!(question_key(&whole[..5]), None);
        // A label type 0x40 is not defined.
        let mut odd = whole.clone();
        odd[HEADER_LEN] = 0x41;
        assert_eq!(question_key(&odd), None);
        // A compression pointer ends a name.
        let mut pointer = whole[..HEADER_LEN].to_vec();
        pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(
            question_key(&pointer).unwrap(),
            [0, 1, 0xC0, 0x0C, 0, 1, 0, 1]
        );
    }

    #[test]
    fn replies_are_checked() {
        let sent = query("www.example.com.");
        let question = question_key(&sent).unwrap();
        let request = Message::from_vec(&sent).unwrap();
        let good = wire(&reply(&request, &[]));
        assert_eq!(check_reply(&good, CLIENT_ID, &question), Ok(()));
        assert_eq!(
            check_reply(&good, CLIENT_ID + 1, &question),
            Err("another query id")
        );
        assert_eq!(
            check_reply(&sent, CLIENT_ID, &question),
            Err("not a response")
        );
        assert_eq!(
            check_reply(&good[..11], CLIENT_ID, &question),
            Err("shorter than a DNS header")
        );
        assert!(!is_truncated(&good));
        let mut truncated = reply(&request, &[]);
        truncated.metadata.truncation = true;
        assert!(is_truncated(&wire(&truncated)));
    }
}
