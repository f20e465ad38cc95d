//! One container's DNS service: the UDP and TCP listeners the helper bound inside the
//! container's network namespace (`127.0.0.1:53`, `[::1]:53`), served by tasks of the daemon.
//!
//! Per query: parse it (FORMERR on garbage), apply the per-container rate and name-length
//! limits, ask the container's [`Gate`] what its policy says about the name, then
//! - refused: answer NXDOMAIN (REFUSED in `block` mode) without asking anyone;
//! - allowed: take the answer from the cache or the upstream, let its A/AAAA addresses through
//!   (the gate inserts them into the dns sets and returns once the kernel holds them), and only
//!   then send it; if letting them through fails, answer SERVFAIL: never an answer whose
//!   addresses are not let through;
//! - forwarded (`down` modes, `dns.unlisted = "forward"`): answer without letting anything
//!   through.
//!
//! Every decision goes to the container's audit trail through the gate, once the answer has left.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::cache::{AnswerCache, CacheKey};
use super::limits::RateLimiter;
use super::message::{self, Query, QueryError};
use super::names::{Decision, Reason, Verdict};
use super::reply::{self, ReplyFacts};
use super::upstream::Forwarder;
use crate::config::DnsConfig;
use crate::netns::DnsListener;
use crate::resolve::clamp_ttl;

/// Queries answered at the same time per UDP listener; while that many wait, the listener is
/// not read: the kernel queues (and in the end drops) what a flooding container sends, instead
/// of the daemon's memory growing.
const MAX_IN_FLIGHT: usize = 256;

/// Answers one UDP listener gives before letting the other containers on its DNS thread have a
/// turn. Without it a busy container keeps the thread for tokio's whole cooperative budget (128
/// operations, milliseconds of work) while the others' queries wait: with ten containers
/// flooding two threads, p99 17 ms against a p50 of 0.25 ms; 8 per turn gave a p99 of 6 ms, 2
/// per turn 4 ms (as fair as a task per query on the multi-threaded runtime was), for about a
/// tenth fewer answers per second than no turns at all.
const ANSWERS_PER_TURN: usize = 2;

/// TCP connections of one container open at the same time; more are closed at once.
const MAX_TCP_CONNECTIONS: usize = 32;

/// A TCP client that sends nothing for this long is disconnected (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Largest UDP query accepted; a DNS query is far smaller, a bigger datagram is garbage.
const MAX_UDP_QUERY: usize = 4096;

/// What the proxy needs from the container it serves.
pub trait Gate: Send + Sync + 'static {
    /// What the container's policy says about `name` now.
    fn decide(&self, name: &str) -> Decision;

    /// Lets `addresses` through for `name` (each with the element timeout to give it) and
    /// returns once the kernel holds them. Checks the policy again first: a deny that came in
    /// while the answer was on its way wins.
    fn let_through(
        &self,
        name: &str,
        addresses: &[(IpAddr, Duration)],
    ) -> impl Future<Output = Result<(), GateError>> + Send;

    /// Records a decision in the container's audit trail.
    fn record(&self, event: DnsEvent);
}

/// Why a gate did not let addresses through.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The policy changed while the answer was on its way: the name is not allowed any more.
    #[error("{name} is no longer allowed")]
    NoLongerAllowed {
        /// The name.
        name: String,
    },
    /// The container stopped (or was re-attached) meanwhile.
    #[error("the container is no longer attached")]
    Detached,
    /// The kernel refused the insert or did not confirm it.
    #[error("the kernel did not take the addresses: {0}")]
    Kernel(String),
}

/// One DNS decision, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    /// The name asked for (lower-case, no trailing dot).
    pub name: String,
    /// The record type asked for.
    pub record_type: RecordType,
    /// `allowed`, `forwarded`, `refused` or `failed`.
    pub verdict: &'static str,
    /// Why, and what was let through.
    pub detail: String,
}

/// Settings the proxy takes from `[dns]`.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Shortest element timeout.
    pub min_ttl: Duration,
    /// Longest element timeout, and the longest TTL a client is told.
    pub max_ttl: Duration,
    /// Longest query name accepted.
    pub max_name_length: usize,
    /// Sustained queries per second per container.
    pub rate: u32,
    /// Burst of queries per container above the sustained rate.
    pub burst: u32,
    /// Answers kept per container.
    pub cache_size: usize,
}

impl ProxySettings {
    /// The proxy's part of `[dns]`.
    pub fn from_config(config: &DnsConfig) -> Self {
        Self {
            min_ttl: config.min_ttl,
            max_ttl: config.max_ttl,
            max_name_length: config.max_name_length,
            rate: config.rate_limit,
            burst: config.rate_burst,
            cache_size: config.cache_size,
        }
    }
}

/// The DNS service of one container.
pub struct Proxy<G: Gate> {
    gate: G,
    forwarder: Arc<Forwarder>,
    settings: ProxySettings,
    cache: Mutex<AnswerCache>,
    limiter: Mutex<RateLimiter>,
}

/// An answer to send, and what to do once it has left: record the decision (the audit line is
/// a write to disk) and cache a fresh upstream reply. The client need not wait for either.
struct Reply {
    bytes: Vec<u8>,
    audit: Option<Audit>,
    fresh: Option<Fresh>,
}

/// A decision for the audit trail, written out once the answer has left.
enum Audit {
    /// Already worded (refusals and failures: short, and off the common path).
    Worded(DnsEvent),
    /// A name resolved from the upstream or the cache: worded after the answer has left, since
    /// putting its addresses into words costs microseconds the client need not wait for.
    Resolved {
        name: String,
        record_type: RecordType,
        decision: Decision,
        outcome: Outcome,
    },
}

/// What became of a resolved name's addresses.
enum Outcome {
    /// Let through (each with its element timeout), from the upstream or the cache.
    LetThrough {
        source: &'static str,
        elements: Vec<(IpAddr, Duration)>,
    },
    /// Answered without letting anything through (a forwarded name).
    NotLetThrough(Vec<(IpAddr, u32)>),
    /// An answer without addresses: its response code.
    NoAddresses {
        source: &'static str,
        rcode: ResponseCode,
    },
}

impl Audit {
    /// The decision as the audit trail records it.
    fn into_event(self) -> DnsEvent {
        match self {
            Self::Worded(event) => event,
            Self::Resolved {
                name,
                record_type,
                decision,
                outcome,
            } => {
                let mut detail = reason_text(&decision);
                match outcome {
                    Outcome::LetThrough { source, elements } => {
                        detail.push_str(&format!(
                            "; let through ({source}): {}",
                            describe(&elements)
                        ));
                    }
                    Outcome::NotLetThrough(addresses) => {
                        let addresses: Vec<String> =
                            addresses.iter().map(|(addr, _)| addr.to_string()).collect();
                        detail.push_str(&format!("; not let through: {}", addresses.join(", ")));
                    }
                    Outcome::NoAddresses { source, rcode } => {
                        detail.push_str(&format!("; {rcode} with no addresses from {source}"));
                    }
                }
                DnsEvent {
                    name,
                    record_type,
                    verdict: match decision.verdict {
                        Verdict::Allow => "allowed",
                        _ => "forwarded",
                    },
                    detail,
                }
            }
        }
    }
}

/// Where an answer comes from.
enum Origin {
    /// The upstream, just now: its bytes, and the largest TTL in them.
    Upstream { wire: Vec<u8>, max_ttl: u32 },
    /// The cache: the reply as decoded when it was stored, and how long ago that was.
    Cache { reply: Message, age_secs: u32 },
}

/// An upstream reply to cache, as the upstream wrote it: decoded for the cache once the answer
/// has left.
struct Fresh {
    key: CacheKey,
    wire: Vec<u8>,
    addresses: Vec<(IpAddr, u32)>,
}

impl Reply {
    /// An answer that records nothing.
    fn silent(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            audit: None,
            fresh: None,
        }
    }

    /// An answer that records `event`.
    fn recorded(bytes: Vec<u8>, event: DnsEvent) -> Self {
        Self {
            bytes,
            audit: Some(Audit::Worded(event)),
            fresh: None,
        }
    }
}

/// The running tasks of one container's proxy. Dropping it stops them and closes the sockets
/// (which releases the container's network namespace).
#[derive(Debug)]
pub struct ProxyHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How a query arrived, which decides how big an answer may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl<G: Gate> Proxy<G> {
    /// A proxy for one container.
    pub fn new(gate: G, forwarder: Arc<Forwarder>, settings: ProxySettings) -> Self {
        let cache = AnswerCache::new(settings.cache_size);
        let limiter = RateLimiter::new(settings.rate, settings.burst);
        Self {
            gate,
            forwarder,
            settings,
            cache: Mutex::new(cache),
            limiter: Mutex::new(limiter),
        }
    }

    /// Starts serving `listeners` on `runtime`: the sockets are registered with its reactor
    /// and every task of this proxy runs there (a current-thread runtime keeps them all on one
    /// thread, see [`threads`](super::threads)).
    pub fn serve(
        self: Arc<Self>,
        listeners: Vec<DnsListener>,
        runtime: &Handle,
    ) -> io::Result<ProxyHandle> {
        let _entered = runtime.enter();
        let mut tasks = Vec::with_capacity(listeners.len() * 2);
        let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        for listener in listeners {
            listener.udp.set_nonblocking(true)?;
            listener.tcp.set_nonblocking(true)?;
            let udp = UdpSocket::from_std(listener.udp)?;
            let tcp = TcpListener::from_std(listener.tcp)?;
            tasks.push(runtime.spawn(Arc::clone(&self).serve_udp(udp, listener.addr)));
            tasks.push(runtime.spawn(Arc::clone(&self).serve_tcp(
                tcp,
                listener.addr,
                Arc::clone(&connections),
            )));
        }
        Ok(ProxyHandle { tasks })
    }

    async fn serve_udp(self: Arc<Self>, socket: UdpSocket, local: SocketAddr) {
        let mut buffer = vec![0_u8; MAX_UDP_QUERY];
        // The queries being answered, polled by this task rather than a task each: a spawned
        // task would only run after this loop had tried the socket again (a syscall on every
        // answer's way), and would cost an allocation and a trip through the scheduler.
        let mut answering = FuturesUnordered::new();
        let mut answered: usize = 0;
        loop {
            tokio::select! {
                // Answers first: a query just received runs until it waits (for the upstream or
                // the container's lock) before the socket is read again.
                biased;
                Some(()) = answering.next(), if !answering.is_empty() => {
                    answered = answered.wrapping_add(1);
                    if answered.is_multiple_of(ANSWERS_PER_TURN) {
                        // After an answer has left, not before: no answer waits for the turn.
                        tokio::task::yield_now().await;
                    }
                }
                received = socket.recv_from(&mut buffer), if answering.len() < MAX_IN_FLIGHT => {
                    match received {
                        Ok((len, peer)) => {
                            if let Some(query) = buffer.get(..len).map(<[u8]>::to_vec) {
                                answering.push(self.answer_udp(query, peer, &socket));
                            }
                        }
                        // ICMP errors from an earlier send surface here; the socket still works.
                        Err(err) => tracing::debug!(%local, error = %err, "DNS UDP receive failed"),
                    }
                }
            }
        }
    }

    /// Answers one UDP query, then records the decision, caches the reply and restocks the
    /// upstream sockets: all of it waits until the answer has left.
    async fn answer_udp(&self, query: Vec<u8>, peer: SocketAddr, socket: &UdpSocket) {
        if let Some(reply) = self.answer(&query, Transport::Udp).await {
            if let Err(err) = socket.send_to(&reply.bytes, peer).await {
                tracing::debug!(%peer, error = %err, "cannot send a DNS answer");
            }
            self.settle(reply);
        }
        self.forwarder.restock();
    }

    /// What waits until an answer has left: its audit line, and caching a fresh reply.
    fn settle(&self, reply: Reply) {
        if let Some(audit) = reply.audit {
            self.gate.record(audit.into_event());
        }
        if let Some(Fresh {
            key,
            wire,
            addresses,
        }) = reply.fresh
        {
            match Message::from_vec(&wire) {
                Ok(decoded) => {
                    self.cache
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(key, decoded, addresses, Instant::now());
                }
                // Read well enough to answer (reply::read_reply), but not for hickory: answered,
                // not cached.
                Err(err) => {
                    tracing::debug!(error = %err, "DNS reply not cached: it does not decode");
                }
            }
        }
    }

    async fn serve_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        local: SocketAddr,
        connections: Arc<Semaphore>,
    ) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(%local, error = %err, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::debug!(%peer, "too many DNS TCP connections; closing one");
                continue;
            };
            let proxy = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(err) = proxy.serve_connection(stream).await {
                    tracing::debug!(%peer, error = %err, "DNS TCP connection ended");
                }
                drop(permit);
            });
        }
    }

    /// Answers length-prefixed queries on one connection, one after the other, until the client
    /// closes it or stays idle for [`TCP_IDLE`].
    async fn serve_connection(&self, mut stream: TcpStream) -> io::Result<()> {
        loop {
            let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
                Ok(Ok(len)) => usize::from(len),
                Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(err)) => return Err(err),
                Err(_) => return Ok(()),
            };
            let mut query = vec![0_u8; len];
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            let Some(reply) = self.answer(&query, Transport::Tcp).await else {
                return Ok(());
            };
            let Ok(len) = u16::try_from(reply.bytes.len()) else {
                self.settle(reply);
                return Ok(());
            };
            let mut framed = Vec::with_capacity(reply.bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&reply.bytes);
            let sent = stream.write_all(&framed).await;
            self.settle(reply);
            sent?;
            self.forwarder.restock();
        }
    }

    /// The answer to one query, or `None` when nothing should be sent (garbage without an id).
    async fn answer(&self, bytes: &[u8], transport: Transport) -> Option<Reply> {
        let query = match message::parse_query(bytes, self.settings.max_name_length) {
            Ok(query) => query,
            Err(err) => return self.malformed(bytes, &err).map(Reply::silent),
        };
        if !self.within_rate() {
            tracing::debug!(name = %query.name, "DNS query over the rate limit");
            return Some(Reply::silent(message::error_response(
                &query,
                ResponseCode::Refused,
            )));
        }
        let decision = self.gate.decide(&query.name);
        let mut reply = match decision.verdict {
            Verdict::Refuse => self.refuse(&query, &decision),
            Verdict::Allow | Verdict::Forward => self.resolve(&query, bytes, decision).await,
        };
        if transport == Transport::Udp && reply.bytes.len() > usize::from(query.udp_payload) {
            reply.bytes = message::truncated(&query);
        }
        Some(reply)
    }

    fn within_rate(&self) -> bool {
        self.limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(Instant::now())
    }

    /// FORMERR for garbage, NOTIMP for what is not a query, REFUSED for an over-long name;
    /// nothing at all for bytes without an id.
    fn malformed(&self, bytes: &[u8], err: &QueryError) -> Option<Vec<u8>> {
        tracing::debug!(error = %err, "unacceptable DNS query");
        message::error_for(bytes, err.response_code())
    }

    fn refuse(&self, query: &Query, decision: &Decision) -> Reply {
        let (rcode, why) = match &decision.reason {
            Reason::Denied(pattern) => (ResponseCode::NXDomain, format!("denied ({pattern})")),
            Reason::Blocked => (
                ResponseCode::Refused,
                "container is in block mode".to_owned(),
            ),
            _ => (ResponseCode::NXDomain, "not allowlisted".to_owned()),
        };
        let event = DnsEvent {
            name: query.name.clone(),
            record_type: query.record_type,
            verdict: "refused",
            detail: why,
        };
        Reply::recorded(message::error_response(query, rcode), event)
    }

    /// Resolves an allowed or forwarded name: from the cache or the upstream, letting the
    /// addresses through first when the name is allowed.
    async fn resolve(&self, query: &Query, bytes: &[u8], decision: Decision) -> Reply {
        let key = CacheKey::of(query);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key, Instant::now());
        let (origin, addresses, rcode) = match cached {
            Some(hit) => {
                let rcode = hit.reply.metadata.response_code;
                let origin = Origin::Cache {
                    reply: hit.reply,
                    age_secs: hit.age_secs,
                };
                (origin, hit.addresses, rcode)
            }
            None => match self.ask_upstream(query, bytes).await {
                Ok((facts, wire)) => {
                    let origin = Origin::Upstream {
                        wire,
                        max_ttl: facts.max_ttl,
                    };
                    (origin, facts.addresses, facts.rcode)
                }
                Err(detail) => return self.fail(query, &decision, detail),
            },
        };
        let source = match origin {
            Origin::Upstream { .. } => "upstream",
            Origin::Cache { .. } => "cache",
        };
        let outcome = if addresses.is_empty() {
            Outcome::NoAddresses { source, rcode }
        } else if decision.verdict == Verdict::Allow {
            let elements: Vec<(IpAddr, Duration)> = addresses
                .iter()
                .map(|(addr, ttl)| {
                    let ttl = Duration::from_secs(u64::from(*ttl));
                    (
                        *addr,
                        clamp_ttl(ttl, self.settings.min_ttl, self.settings.max_ttl),
                    )
                })
                .collect();
            if let Err(err) = self.gate.let_through(&query.name, &elements).await {
                return self.fail(
                    query,
                    &decision,
                    format!("cannot let the addresses through: {err}"),
                );
            }
            Outcome::LetThrough { source, elements }
        } else {
            Outcome::NotLetThrough(addresses.clone())
        };
        let answer = match self.answer_bytes(&origin, query.id) {
            Ok(answer) => answer,
            Err(detail) => return self.fail(query, &decision, detail),
        };
        Reply {
            bytes: answer,
            audit: Some(Audit::Resolved {
                name: query.name.clone(),
                record_type: query.record_type,
                decision,
                outcome,
            }),
            fresh: match origin {
                Origin::Upstream { wire, .. } => Some(Fresh {
                    key,
                    wire,
                    addresses,
                }),
                Origin::Cache { .. } => None,
            },
        }
    }

    /// The answer to send for a reply from `origin`, with the client's `id` and no TTL above
    /// `dns.max_ttl`.
    fn answer_bytes(&self, origin: &Origin, id: u16) -> Result<Vec<u8>, String> {
        let max_ttl = u32::try_from(self.settings.max_ttl.as_secs()).unwrap_or(u32::MAX);
        let encoded = match origin {
            // Fresh, every TTL within the cap, the client's id already in it: the upstream's
            // bytes are the answer, not decoded and encoded again.
            Origin::Upstream { wire, max_ttl: ttl } if *ttl <= max_ttl => return Ok(wire.clone()),
            Origin::Upstream { wire, .. } => {
                let reply = Message::from_vec(wire)
                    .map_err(|err| format!("cannot decode the reply to cap its TTLs: {err}"))?;
                message::rewrite_reply(&reply, id, max_ttl, 0)
            }
            Origin::Cache { reply, age_secs } => {
                message::rewrite_reply(reply, id, max_ttl, *age_secs)
            }
        };
        encoded.map_err(|err| format!("cannot encode the answer: {err}"))
    }

    /// Forwards the query and reads the reply; returns what it says and its bytes as the
    /// upstream wrote them (with the client's id).
    async fn ask_upstream(
        &self,
        query: &Query,
        bytes: &[u8],
    ) -> Result<(ReplyFacts, Vec<u8>), String> {
        let wire = self
            .forwarder
            .forward(bytes)
            .await
            .map_err(|err| format!("upstream: {err}"))?;
        let facts = reply::read_reply(query, query.id, &wire)
            .map_err(|err| format!("upstream reply: {err}"))?;
        Ok((facts, wire))
    }

    fn fail(&self, query: &Query, decision: &Decision, detail: String) -> Reply {
        tracing::warn!(name = %query.name, detail = %detail, "DNS query failed; answering SERVFAIL");
        let event = DnsEvent {
            name: query.name.clone(),
            record_type: query.record_type,
            verdict: "failed",
            detail: format!("{}; SERVFAIL: {detail}", reason_text(decision)),
        };
        Reply::recorded(
            message::error_response(query, ResponseCode::ServFail),
            event,
        )
    }
}

fn reason_text(decision: &Decision) -> String {
    match &decision.reason {
        Reason::Allowed(pattern) => format!("allowlisted ({pattern})"),
        Reason::Denied(pattern) => format!("denied ({pattern})"),
        Reason::Unlisted => "not allowlisted, forwarded (dns.unlisted = \"forward\")".to_owned(),
        Reason::DownMode => "not allowlisted, forwarded (down mode)".to_owned(),
        Reason::Blocked => "block mode".to_owned(),
    }
}

fn describe(elements: &[(IpAddr, Duration)]) -> String {
    elements
        .iter()
        .map(|(addr, ttl)| format!("{addr} ({}s)", ttl.as_secs()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::str::FromStr;

    use hickory_proto::op::{MessageType, OpCode, Query as Question};
    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::names::Reason;
    use crate::dns::servers::UpstreamServers;

    /// A container whose policy refuses every name: answers without upstream or kernel.
    struct RefuseAll;

    impl Gate for RefuseAll {
        fn decide(&self, _name: &str) -> Decision {
            Decision {
                verdict: Verdict::Refuse,
                reason: Reason::Unlisted,
            }
        }

        async fn let_through(
            &self,
            _name: &str,
            _addresses: &[(IpAddr, Duration)],
        ) -> Result<(), GateError> {
            Err(GateError::Detached)
        }

        fn record(&self, _event: DnsEvent) {}
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.add_query(Question::query(
            Name::from_str(name).unwrap(),
            RecordType::A,
        ));
        message.to_vec().unwrap()
    }

    fn listener() -> DnsListener {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        DnsListener { addr, udp, tcp }
    }

    fn proxy() -> Arc<Proxy<RefuseAll>> {
        let forwarder = Forwarder::new(UpstreamServers::fixed(Vec::new()), Duration::from_secs(1));
        let settings = ProxySettings {
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            max_name_length: 253,
            rate: 1_000_000,
            burst: 1_000_000,
            cache_size: 16,
        };
        Arc::new(Proxy::new(RefuseAll, Arc::new(forwarder), settings))
    }

    /// Two containers on one DNS thread: one has 200 queries waiting, the other one. The one
    /// query is answered after a few of the 200, not after the flooding container has used up
    /// the thread's cooperative budget.
    #[test]
    fn a_flooding_container_does_not_hold_its_thread() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (flooding, quiet) = (listener(), listener());
        let (flooding_addr, quiet_addr) = (flooding.addr, quiet.addr);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for id in 0..200 {
            client
                .send_to(&query(id, "flood.test."), flooding_addr)
                .unwrap();
        }
        client
            .send_to(&query(999, "quiet.test."), quiet_addr)
            .unwrap();

        let _flooding = proxy().serve(vec![flooding], runtime.handle()).unwrap();
        let _quiet = proxy().serve(vec![quiet], runtime.handle()).unwrap();
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });

        client.set_nonblocking(true).unwrap();
        let mut buffer = [0_u8; 512];
        let mut ids = Vec::new();
        while let Ok(len) = client.recv(&mut buffer) {
            ids.push(Message::from_vec(&buffer[..len]).unwrap().metadata.id);
        }
        assert_eq!(ids.len(), 201, "every query answered");
        let position = ids.iter().position(|id| *id == 999).unwrap();
        // Holding the thread for the whole budget, it came after 64.
        assert!(
            position <= 8,
            "the quiet container's answer came after {position} of the other's"
        );
    }
}
