//! The netlink layer: programs table `inet shield` into a container's network namespace and
//! reads it back, over a `NETLINK_NETFILTER` socket created inside that namespace.
//!
//! The daemon calls these blocking functions from `spawn_blocking` (a DNS answer's small insert
//! inline, on its DNS thread: the kernel answers it in microseconds), one container at a time.
//! libnftnl objects are not `Send`, so each call builds, sends and parses everything itself.
//!
//! Layout, one idea per module:
//! - [`kernel`]: plain data mirroring nf_tables objects (expressions, sets, elements, ...);
//! - [`encode`]: our IR → kernel objects, pure, byte-for-byte what `nft` generates;
//! - [`lift`]: kernel objects → our IR, pure, failing on anything shield does not write;
//! - `ffi`: the libnftnl shims (the only `unsafe` code): messages out, dumps in;
//! - `wire`: element messages written in plain Rust (the DNS insert's hot path), checked
//!   byte for byte against libnftnl's;
//! - `batch`: one atomic batch per change, every message labelled for error reports;
//! - [`changes`]: live element changes, split when large and add-only, and their verification;
//! - `dump`: consistent reads of the whole table;
//! - `socket`: sending batches and requests, collecting ACKs and dumps, with a deadline.

mod batch;
pub mod changes;
mod dump;
pub mod encode;
mod error;
mod ffi;
pub mod kernel;
pub mod lift;
mod socket;
mod wire;

use std::os::fd::BorrowedFd;

pub use error::NftError;
pub use socket::{REPLY_TIMEOUT, set_reply_timeout};

use crate::ruleset::ir::{Set, Table};

/// Replaces table `inet shield` by `table`, atomically.
///
/// One batch: add the table (no `NLM_F_EXCL`, so it works whether or not it exists), delete it,
/// add it again with its sets, chains, rules and set elements. The kernel commits all of it or
/// nothing; on error the previous table stays in force and the error names the message the
/// kernel refused.
pub fn apply(socket: BorrowedFd<'_>, table: &Table) -> Result<(), NftError> {
    let prepared = batch::replace_table(table)?;
    let mut link = socket::Link::new(socket)?;
    link.transact(&prepared.pages(), prepared.labels(), prepared.awaited())
}

/// Removes the elements of `removes` and adds those of `adds`: one atomic batch whenever it fits
/// the socket; an add-only change too large for one is split into several batches, deny sets
/// first (each intermediate state allows a subset of the new policy); a change that removes
/// anything and does not fit fails with [`NftError::TooLarge`] before anything is sent.
/// Returns the number of batches committed (1 unless split). See [`changes`] for why splitting
/// add-only changes is safe and the rest is not.
///
/// Each [`Set`] names an existing set of the table (name, family, kind) and holds only the
/// elements to change (the shape [`crate::ruleset::diff::element_changes`] produces). Adding an
/// element that exists refreshes it (a timeout set element gets its new timeout); adding an
/// address inside an existing interval, or removing an element that does not exist, makes the
/// kernel refuse the whole batch, and the previous elements stay in force.
pub fn apply_element_changes(
    socket: BorrowedFd<'_>,
    adds: &[Set],
    removes: &[Set],
) -> Result<usize, NftError> {
    changes::apply(socket, adds, removes)
}

/// Reads just the sets `names` of table `inet shield` with their elements, in that order, as
/// one consistent generation (no chains, no rules, no other set). A set or table that does not
/// exist is [`NftError::MissingSet`]. Linear in the size of the sets read.
pub fn read_sets(socket: BorrowedFd<'_>, names: &[&str]) -> Result<Vec<Set>, NftError> {
    changes::read_sets(socket, names)
}

/// Checks that the kernel's sets are exactly `expected` (interval sets range for range; timeout
/// sets by family and kind only, since their elements expire on their own):
/// [`NftError::Mismatch`] says what differs. Linear in the size of the sets.
pub fn verify_sets(socket: BorrowedFd<'_>, expected: &[&Set]) -> Result<(), NftError> {
    changes::verify_sets(socket, expected)
}

/// Checks that a change made by [`apply_element_changes`] is in force: every added element is
/// there, every removed one gone (unless re-added). Looks up only the touched elements, so its
/// cost follows the size of the change, not of the set (large changes are checked against one
/// dump of the sets they touch). [`NftError::Mismatch`] says what differs.
pub fn verify_element_changes(
    socket: BorrowedFd<'_>,
    adds: &[Set],
    removes: &[Set],
) -> Result<(), NftError> {
    changes::verify_changes(socket, adds, removes)
}

/// Reads table `inet shield` (table, sets with their elements, chains, rules) and lifts it into
/// our IR. `Ok(None)` if the table does not exist.
///
/// Fails closed: anything in the table that shield would not have written (another expression,
/// a jump, a map, a dormant table, ...) is an error naming where it is, never skipped.
pub fn read_table(socket: BorrowedFd<'_>) -> Result<Option<Table>, NftError> {
    let mut link = socket::Link::new(socket)?;
    match dump::read(&mut link)? {
        Some(kernel) => lift::lift_table(&kernel).map(Some),
        None => Ok(None),
    }
}
