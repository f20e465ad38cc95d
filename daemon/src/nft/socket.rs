//! Transport: batches and dump requests over a `NETLINK_NETFILTER` socket we did not create.
//!
//! The socket is created inside the container's network namespace by the helper process and
//! handed to the daemon, so `mnl::Socket` (which only opens its own) cannot wrap it: buffers go
//! out with `sendmsg(2)` (a whole batch in one call, as the kernel only commits a batch whose
//! begin and end arrive in the same message) and replies come back with `recv(2)` into a
//! 4-byte-aligned buffer, split with `mnl::NlMessages`. Every wait is bounded: the socket gets a
//! receive timeout (`SO_RCVTIMEO`, set once by [`set_reply_timeout`] when the helper creates it:
//! a syscall saved on every DNS answer's insert) and each operation a deadline, so a kernel that
//! never answers becomes [`NftError::Timeout`] (a non-blocking socket is polled until the same
//! deadline).
//!
//! The kernel handles a batch synchronously inside `sendmsg`, queueing one reply per message
//! that asked for an ACK; after the first error the rest of the queue is drained, so that stale
//! replies never reach the next call on the same socket.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, NetlinkAddr, recv, send, sendmsg, setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::error::NftError;

/// How long the kernel may take to answer one batch or one dump.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Receive buffer size: larger than the biggest message the kernel echoes back in an error
/// (a full element message of up to ~64 KiB) and than any dump chunk.
const RECV_BUF: usize = 256 * 1024;

/// The default socket buffer (`net.core.wmem_default`); beyond it we ask for a larger one.
const DEFAULT_SOCKBUF: usize = 200 * 1024;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NFNL_SUBSYS_NFTABLES << 8`: the high byte of every nf_tables message type.
const SUBSYS_NFTABLES: u16 = 10 << 8;

/// The fixed header of a received netlink message.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    msg.get(at..end)?.try_into().ok().map(u16::from_ne_bytes)
}

fn u32_at(msg: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    msg.get(at..end)?.try_into().ok().map(u32::from_ne_bytes)
}

fn header(msg: &[u8]) -> Result<Header, NftError> {
    match (u16_at(msg, 4), u16_at(msg, 6), u32_at(msg, 8)) {
        (Some(kind), Some(flags), Some(seq)) => Ok(Header { kind, flags, seq }),
        _ => Err(NftError::Protocol(
            "message shorter than a netlink header".to_owned(),
        )),
    }
}

/// The (negative) error code of an `NLMSG_ERROR` or the status of an `NLMSG_DONE` message.
fn status_of(msg: &[u8]) -> Result<i32, NftError> {
    u32_at(msg, NLMSG_HDRLEN)
        .map(u32::cast_signed)
        .ok_or_else(|| NftError::Protocol("error message without an error code".to_owned()))
}

/// The generation id (`nfgenmsg.res_id`, big endian) of an nf_tables reply.
fn generation(msg: &[u8]) -> Option<u16> {
    let at = NLMSG_HDRLEN.checked_add(2)?;
    msg.get(at..at.checked_add(2)?)?
        .try_into()
        .ok()
        .map(u16::from_be_bytes)
}

/// A receive buffer aligned for `nlmsghdr`.
struct RecvBuf {
    raw: Vec<u8>,
    offset: usize,
}

thread_local! {
    /// One spare receive buffer per thread: an operation takes it and gives it back, so that the
    /// buffer is not allocated (and its pages faulted in) again for every DNS answer's insert.
    static SPARE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

impl RecvBuf {
    fn new() -> Result<Self, NftError> {
        let spare = SPARE
            .try_with(|spare| spare.borrow_mut().take())
            .ok()
            .flatten();
        // Old contents do not matter: only what `recv` just wrote is ever read.
        let raw = spare.unwrap_or_else(|| vec![0u8; RECV_BUF.saturating_add(8)]);
        let offset = raw.as_ptr().align_offset(8);
        if offset >= 8 {
            return Err(NftError::Protocol(
                "cannot align the receive buffer".to_owned(),
            ));
        }
        Ok(Self { raw, offset })
    }

    fn space(&mut self) -> &mut [u8] {
        let end = self.offset.saturating_add(RECV_BUF);
        self.raw.get_mut(self.offset..end).unwrap_or_default()
    }

    fn filled(&self, len: usize) -> &[u8] {
        let end = self.offset.saturating_add(len.min(RECV_BUF));
        self.raw.get(self.offset..end).unwrap_or_default()
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        let raw = std::mem::take(&mut self.raw);
        // During thread teardown the spare is gone already; the buffer is then simply freed.
        let _ = SPARE.try_with(|spare| *spare.borrow_mut() = Some(raw));
    }
}

/// One NETLINK_NETFILTER socket, borrowed for one operation.
pub struct Link<'fd> {
    fd: BorrowedFd<'fd>,
    buf: RecvBuf,
}

/// Gives `fd` the receive timeout every wait for the kernel is bounded by. Call it once, when
/// the socket is made.
pub fn set_reply_timeout(fd: BorrowedFd<'_>) -> Result<(), NftError> {
    let timeout = TimeVal::new(
        i64::try_from(REPLY_TIMEOUT.as_secs()).unwrap_or(2),
        i64::from(REPLY_TIMEOUT.subsec_micros()),
    );
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(|e| io("setsockopt", e))
}

impl<'fd> Link<'fd> {
    /// Wraps `fd` (given its receive timeout by [`set_reply_timeout`]) and discards any reply
    /// left over from an earlier, abandoned operation.
    pub fn new(fd: BorrowedFd<'fd>) -> Result<Self, NftError> {
        let mut link = Self {
            fd,
            buf: RecvBuf::new()?,
        };
        link.drain()?;
        Ok(link)
    }

    /// Receives whatever is queued without waiting; stops when the queue is empty.
    fn drain(&mut self) -> Result<(), NftError> {
        loop {
            match recv(
                self.fd.as_raw_fd(),
                self.buf.space(),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) | Err(Errno::EAGAIN) => return Ok(()),
                // A dropped reply (full queue) or an interrupted call: keep draining.
                Ok(_) | Err(Errno::ENOBUFS | Errno::EINTR) => {}
                Err(e) => return Err(io("recv", e)),
            }
        }
    }

    /// Waits (until `deadline`) for one datagram and returns its bytes.
    fn recv_until(&mut self, deadline: Instant) -> Result<&[u8], NftError> {
        loop {
            // Blocks for at most SO_RCVTIMEO on a blocking socket.
            match recv(self.fd.as_raw_fd(), self.buf.space(), MsgFlags::empty()) {
                Ok(len) => return Ok(self.buf.filled(len)),
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if Instant::now() >= deadline {
                        return Err(NftError::Timeout(REPLY_TIMEOUT));
                    }
                    // A non-blocking socket returns at once: do not spin.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(io("recv", e)),
            }
        }
    }

    /// Sends the pages of one batch in a single `sendmsg`, growing the socket buffers first
    /// when the batch (or the ACKs of its `acks` messages) would not fit the defaults.
    fn send_batch(&self, pages: &[&[u8]], acks: usize) -> Result<(), NftError> {
        let total: usize = pages.iter().map(|p| p.len()).sum();
        if total > DEFAULT_SOCKBUF {
            grow(self.fd, total, sockopt::SndBufForce, sockopt::SndBuf);
        }
        // Each queued ACK costs about a kilobyte of receive buffer.
        let needed = acks.saturating_mul(ACK_COST);
        if needed > DEFAULT_SOCKBUF {
            grow(self.fd, needed, sockopt::RcvBufForce, sockopt::RcvBuf);
        }
        let iov: Vec<IoSlice<'_>> = pages.iter().map(|p| IoSlice::new(p)).collect();
        let kernel = NetlinkAddr::new(0, 0);
        let sent = sendmsg(
            self.fd.as_raw_fd(),
            &iov,
            &[],
            MsgFlags::empty(),
            Some(&kernel),
        )
        .map_err(|e| io("send", e))?;
        if sent != total {
            return Err(NftError::Protocol(format!("sent {sent} of {total} bytes")));
        }
        Ok(())
    }

    /// Sends one batch and waits for the ACKs of the messages `awaited`. Returns the first
    /// refusal, naming its message by `labels` (sequence number → what the message does): the
    /// kernel answers a refused message whether or not it asked for an ACK, before the ACKs.
    pub fn transact(
        &mut self,
        pages: &[&[u8]],
        labels: &BTreeMap<u32, String>,
        awaited: &[u32],
    ) -> Result<(), NftError> {
        // Room for an answer to every message: a refusal answers each message it concerns.
        self.send_batch(pages, labels.len())?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut pending: Vec<u32> = awaited.to_vec();
        while !pending.is_empty() {
            let data = self.recv_until(deadline)?;
            let mut refusal = None;
            for msg in mnl::NlMessages::new(data) {
                let msg = msg.map_err(|e| NftError::Protocol(e.to_string()))?;
                let h = header(msg)?;
                if h.kind != NLMSG_ERROR {
                    continue;
                }
                let code = status_of(msg)?;
                if code == 0 {
                    pending.retain(|seq| *seq != h.seq);
                } else if refusal.is_none() {
                    let message = labels
                        .get(&h.seq)
                        .cloned()
                        .unwrap_or_else(|| format!("message with sequence number {}", h.seq));
                    refusal = Some(NftError::Refused {
                        message,
                        errno: code.saturating_neg(),
                    });
                }
            }
            if let Some(refusal) = refusal {
                // The kernel aborted the whole batch; its remaining replies are already queued.
                self.drain()?;
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Sends one dump request and hands every reply of type `reply` (an `NFT_MSG_NEW*`) to `each`.
    ///
    /// `what` names the dump in errors. Returns the generation ids seen and whether the kernel
    /// flagged the dump as interrupted (the ruleset changed while it was being dumped).
    pub fn dump(
        &mut self,
        request: &[u8],
        seq: u32,
        reply: u16,
        what: &str,
        mut each: impl FnMut(&[u8]) -> Result<(), NftError>,
    ) -> Result<DumpInfo, NftError> {
        let sent =
            send(self.fd.as_raw_fd(), request, MsgFlags::empty()).map_err(|e| io("send", e))?;
        if sent != request.len() {
            return Err(NftError::Protocol(format!(
                "sent {sent} of {} bytes",
                request.len()
            )));
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut info = DumpInfo::default();
        loop {
            let data = self.recv_until(deadline)?;
            let mut done = None;
            for msg in mnl::NlMessages::new(data) {
                let msg = msg.map_err(|e| NftError::Protocol(e.to_string()))?;
                let h = header(msg)?;
                if h.seq != seq {
                    continue;
                }
                info.interrupted |= h.flags & NLM_F_DUMP_INTR != 0;
                match h.kind {
                    NLMSG_DONE => done = Some(status_of(msg).unwrap_or(0)),
                    NLMSG_ERROR => done = Some(status_of(msg)?),
                    kind if kind == SUBSYS_NFTABLES | reply => {
                        if let Some(id) = generation(msg) {
                            info.generations.push(id);
                        }
                        each(msg)?;
                    }
                    kind => {
                        return Err(NftError::Protocol(format!(
                            "message type {kind:#06x} in a dump of {what}"
                        )));
                    }
                }
            }
            match done {
                None => {}
                Some(0) => return Ok(info),
                Some(code) => {
                    self.drain()?;
                    return Err(NftError::Refused {
                        message: format!("dump {what}"),
                        errno: code.saturating_neg(),
                    });
                }
            }
        }
    }
}

impl Link<'_> {
    /// Sends several non-dump requests in one `send` and collects, for each of `seqs`, the
    /// replies carrying its sequence number (handed to `each` with that number) and its final
    /// status (0 for the ACK, a negative errno for a refusal).
    ///
    /// Every request must ask for an ACK (`NLM_F_ACK`), or this waits for one until the deadline.
    /// The caller keeps the replies of one call within the receive buffer (see
    /// [`Self::budget`]): the kernel answers inside `send`, before anything is read.
    pub fn query(
        &mut self,
        requests: &[u8],
        seqs: &[u32],
        mut each: impl FnMut(u32, &[u8]) -> Result<(), NftError>,
    ) -> Result<BTreeMap<u32, i32>, NftError> {
        let sent =
            send(self.fd.as_raw_fd(), requests, MsgFlags::empty()).map_err(|e| io("send", e))?;
        if sent != requests.len() {
            return Err(NftError::Protocol(format!(
                "sent {sent} of {} bytes",
                requests.len()
            )));
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut status = BTreeMap::new();
        while status.len() < seqs.len() {
            let data = self.recv_until(deadline)?;
            for msg in mnl::NlMessages::new(data) {
                let msg = msg.map_err(|e| NftError::Protocol(e.to_string()))?;
                let h = header(msg)?;
                if !seqs.contains(&h.seq) {
                    continue;
                }
                if h.kind == NLMSG_ERROR {
                    status.insert(h.seq, status_of(msg)?);
                } else {
                    each(h.seq, msg)?;
                }
            }
        }
        Ok(status)
    }

    /// How big one batch may be on this socket: raises the send and receive buffers towards
    /// `bytes` and `acks` (as far as the kernel lets this process) and reports what they hold.
    pub fn budget(&self, bytes: usize, acks: usize) -> Budget {
        // A few kilobytes and a handful of ACKs fit any socket buffer: skip the syscalls (a
        // DNS answer's insert comes through here, and its latency counts).
        if bytes <= SMALL_BATCH_BYTES && acks <= SMALL_BATCH_ACKS {
            return Budget {
                bytes: SMALL_BATCH_BYTES,
                acks: SMALL_BATCH_ACKS,
            };
        }
        if bytes > DEFAULT_SOCKBUF {
            grow(
                self.fd,
                bytes.saturating_add(SEND_SLACK),
                sockopt::SndBufForce,
                sockopt::SndBuf,
            );
        }
        let rcv_wanted = acks.saturating_mul(ACK_COST).saturating_add(ERROR_ECHO);
        if rcv_wanted > DEFAULT_SOCKBUF {
            grow(self.fd, rcv_wanted, sockopt::RcvBufForce, sockopt::RcvBuf);
        }
        // getsockopt reports what the kernel accounts against (twice the value asked for).
        let snd =
            nix::sys::socket::getsockopt(&self.fd, sockopt::SndBuf).unwrap_or(DEFAULT_SOCKBUF);
        let rcv =
            nix::sys::socket::getsockopt(&self.fd, sockopt::RcvBuf).unwrap_or(DEFAULT_SOCKBUF);
        Budget {
            bytes: snd.saturating_sub(SEND_SLACK),
            acks: rcv.saturating_sub(ERROR_ECHO) / ACK_COST,
        }
    }
}

/// A batch at most this big, with at most [`SMALL_BATCH_ACKS`] messages, fits any socket's
/// default buffers (the smallest `net.core.[rw]mem_default` a Linux system runs with is far
/// above it), so its budget needs no syscall.
const SMALL_BATCH_BYTES: usize = 16 * 1024;

/// See [`SMALL_BATCH_BYTES`].
const SMALL_BATCH_ACKS: usize = 8;

/// What one batch may hold on a given socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Bytes one `sendmsg` may carry (netlink refuses a message larger than the send buffer).
    pub bytes: usize,
    /// Messages whose ACKs fit the receive buffer at once (the kernel queues them all before
    /// the first is read; an ACK that does not fit is dropped, and the batch would time out).
    pub acks: usize,
}

impl Budget {
    /// Whether a batch of `bytes` bytes with `acks` acknowledged messages fits.
    pub fn fits(self, bytes: usize, acks: usize) -> bool {
        bytes <= self.bytes && acks <= self.acks
    }

    /// The smaller of two budgets, limit by limit.
    #[must_use]
    pub fn min(self, other: Self) -> Self {
        Self {
            bytes: self.bytes.min(other.bytes),
            acks: self.acks.min(other.acks),
        }
    }
}

/// Receive buffer one success ACK costs (a small skb: its `truesize`, rounded up).
const ACK_COST: usize = 1024;
/// Receive buffer kept free for a refusal, which echoes the refused message (up to ~64 KiB).
const ERROR_ECHO: usize = 80 * 1024;
/// Netlink refuses a message longer than the send buffer minus a little; keep a margin.
const SEND_SLACK: usize = 4096;

/// What a dump reported besides its objects.
#[derive(Clone, Debug, Default)]
pub struct DumpInfo {
    /// Generation id of every reply (they differ if the ruleset changed in between).
    pub generations: Vec<u16>,
    /// Whether the kernel flagged the dump as interrupted.
    pub interrupted: bool,
}

fn io(op: &'static str, errno: Errno) -> NftError {
    NftError::Io {
        op,
        source: std::io::Error::from(errno),
    }
}

/// Raises a socket buffer to `size`: the forcing option works for a privileged owner, the plain
/// one up to `net.core.[rw]mem_max`. Best effort: a batch that still does not fit fails loudly
/// at `sendmsg` (EMSGSIZE) or by missing ACKs (timeout).
fn grow<F, P>(fd: BorrowedFd<'_>, size: usize, force: F, plain: P)
where
    F: nix::sys::socket::SetSockOpt<Val = usize>,
    P: nix::sys::socket::SetSockOpt<Val = usize>,
{
    if setsockopt(&fd, force, &size).is_err() {
        let _ignored = setsockopt(&fd, plain, &size);
    }
}
