//! The one error type of the netlink layer.
//!
//! Messages are lowercase and never repeat their source. A kernel refusal names the message of
//! the batch that failed (`kernel refused "add set allow_v4": File exists (os error 17)`); a
//! lift failure names the chain/rule or set and what could not be understood, because a ruleset
//! we cannot read back is a ruleset we cannot vouch for.

use std::io;
use std::time::Duration;

/// Everything that can go wrong while programming or reading table `inet shield`.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The IR holds something the encoder cannot express (a name with a NUL byte, an address
    /// of the wrong family for its set, an interface name longer than `IFNAMSIZ - 1`, ...).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// The object being encoded, e.g. `set allow_v4`.
        what: String,
        /// Why it cannot be encoded.
        reason: String,
    },
    /// A socket operation failed.
    #[error("netlink {op} failed")]
    Io {
        /// The operation, e.g. `send` or `recv`.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer in time.
    #[error("no netlink reply within {0:?}")]
    Timeout(Duration),
    /// The kernel answered a message with an error; the whole batch was aborted.
    #[error("kernel refused \"{message}\": {}", io::Error::from_raw_os_error(*.errno))]
    Refused {
        /// Which message failed, e.g. `add set allow_v4`.
        message: String,
        /// The errno the kernel reported (positive).
        errno: i32,
    },
    /// The kernel's reply did not follow the netlink protocol as expected.
    #[error("unexpected netlink reply: {0}")]
    Protocol(String),
    /// libnftnl could not parse a message the kernel sent.
    #[error("cannot parse the kernel's {0} message")]
    Parse(&'static str),
    /// What the kernel holds cannot be expressed in our IR: fail closed.
    #[error("cannot understand {location}: {reason}")]
    Lift {
        /// Where, e.g. `rule 3 (handle 7) of chain output` or `set allow_v4`.
        location: String,
        /// What, e.g. `unexpected expression "queue" at position 2`.
        reason: String,
    },
    /// The table kept changing while it was being read.
    #[error("table inet shield changed during every one of {0} read attempts")]
    Unstable(u32),
    /// A set asked for does not exist in table `inet shield` (or the table does not exist).
    #[error("table inet shield has no set {0}")]
    MissingSet(String),
    /// What the kernel holds after a change is not what was asked for.
    #[error("set {set} does not hold what was applied: {reason}")]
    Mismatch {
        /// The set that differs.
        set: String,
        /// How it differs, e.g. `missing 192.0.2.1` or `still holds 10.0.0.0/24`.
        reason: String,
    },
    /// An element change that removes elements is too large for one batch on this socket, and
    /// splitting it would expose intermediate states: nothing was applied.
    #[error(
        "element change of {bytes} bytes in {messages} messages does not fit one batch \
         (this socket allows {budget_bytes} bytes, {budget_messages} messages) and cannot be \
         split because it removes elements; nothing was applied"
    )]
    TooLarge {
        /// Bytes of the whole batch.
        bytes: usize,
        /// Acknowledged messages of the whole batch.
        messages: usize,
        /// Bytes one batch may carry on this socket.
        budget_bytes: usize,
        /// Acknowledged messages one batch may carry on this socket.
        budget_messages: usize,
    },
    /// A split add-only change failed after some of its batches were committed: the kernel
    /// holds the old elements plus the part already added (a subset of the change).
    #[error("element change stopped after {committed} of {batches} batches")]
    Partial {
        /// Batches committed before the failure.
        committed: usize,
        /// Batches the change was split into.
        batches: usize,
        /// Why the next batch failed.
        #[source]
        source: Box<NftError>,
    },
}

impl NftError {
    /// The errno of a kernel refusal, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Refused { errno, .. } => Some(*errno),
            Self::Partial { source, .. } => source.errno(),
            _ => None,
        }
    }

    pub(crate) fn encode(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Encode {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn lift(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Lift {
            location: location.into(),
            reason: reason.into(),
        }
    }
}
