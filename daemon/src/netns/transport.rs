//! Passing one message plus fds over the daemon ↔ helper `SOCK_SEQPACKET` socketpair.
//!
//! Used by both sides. `SOCK_SEQPACKET` keeps message boundaries (one `sendmsg` is one
//! `recvmsg`) and reports the peer's exit as a zero-length read, so no framing is needed.
//! Received fds are taken with `MSG_CMSG_CLOEXEC`: the daemon spawns other processes
//! concurrently, and none of them may inherit a container's socket.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::wire::{MAX_FDS, MAX_MESSAGE};

/// What one receive produced.
pub(crate) enum Received {
    /// The peer closed its end (exited) without sending anything.
    Closed,
    /// One message and the fds that came with it (owned, close-on-exec).
    Message {
        /// The payload.
        data: Vec<u8>,
        /// The passed fds, in the sender's order.
        fds: Vec<OwnedFd>,
    },
}

/// Why a receive failed.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// The syscall failed (`EAGAIN` when `SO_RCVTIMEO` expired).
    Os(Errno),
    /// The message or its fds did not fit the buffers; whatever arrived has been closed.
    Truncated,
}

/// Sends `data` with `fds` attached as one message. `MSG_NOSIGNAL`: a dead peer is an error
/// (`EPIPE`), not a `SIGPIPE`.
pub(crate) fn send(
    channel: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let iov = [IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(&raw)];
    // An empty SCM_RIGHTS message is rejected by the kernel, so send none instead.
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        channel.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    // SOCK_SEQPACKET sends are all-or-nothing; a short count would mean a broken invariant.
    if sent == data.len() {
        Ok(())
    } else {
        Err(Errno::EMSGSIZE)
    }
}

/// Receives one message of at most [`MAX_MESSAGE`] bytes and [`MAX_FDS`] fds.
pub(crate) fn recv(channel: BorrowedFd<'_>) -> Result<Received, RecvError> {
    let mut data = vec![0_u8; MAX_MESSAGE];
    let mut cmsg_buffer = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (bytes, flags, raw_fds) = {
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buffer),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(RecvError::Os)?;
        let mut raw_fds = Vec::new();
        // With MSG_CTRUNC nix refuses to iterate (ENOBUFS); the buffer holds MAX_FDS and no
        // sender passes more, so that only happens on a protocol violation.
        if let Ok(cmsgs) = msg.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    raw_fds.extend(fds);
                }
            }
        }
        (msg.bytes, msg.flags, raw_fds)
    };
    // Own the fds before anything can fail, so every early return closes them.
    let fds = adopt_received(raw_fds);
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(RecvError::Truncated);
    }
    if bytes == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    data.truncate(bytes);
    Ok(Received::Message { data, fds })
}

/// Takes ownership of fds the kernel just installed from an `SCM_RIGHTS` message.
#[allow(
    unsafe_code,
    reason = "fds received via SCM_RIGHTS arrive as raw integers"
)]
fn adopt_received(raw: Vec<RawFd>) -> Vec<OwnedFd> {
    raw.into_iter()
        .filter(|fd| *fd >= 0)
        .map(|fd| {
            // SAFETY: the kernel installed each of these fds in our table while delivering the
            // SCM_RIGHTS message we just received; no other code has seen them, so each
            // OwnedFd is the sole owner.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect()
}
