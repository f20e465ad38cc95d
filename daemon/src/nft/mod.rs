//! The netlink layer: programs table `inet shield` into a container's network namespace and
//! reads it back, over a `NETLINK_NETFILTER` socket created inside that namespace.
//!
//! The daemon calls these blocking functions from `spawn_blocking`, one container at a time.
//! libnftnl objects are not `Send`, so each call builds, sends and parses everything itself.
//!
//! Layout, one idea per module:
//! - [`kernel`]: plain data mirroring nf_tables objects (expressions, sets, elements, ...);
//! - [`encode`]: our IR → kernel objects, pure, byte-for-byte what `nft` generates;
//! - [`lift`]: kernel objects → our IR, pure, failing on anything shield does not write;
//! - `ffi`: the libnftnl shims (the only `unsafe` code): messages out, dumps in;
//! - `batch`: one atomic batch per change, every message labelled for error reports;
//! - `dump`: consistent reads of the whole table;
//! - `socket`: sending batches and requests, collecting ACKs and dumps, with a deadline.

mod batch;
mod dump;
pub mod encode;
mod error;
mod ffi;
pub mod kernel;
pub mod lift;
mod socket;

use std::os::fd::BorrowedFd;

pub use error::NftError;
pub use socket::REPLY_TIMEOUT;

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
    link.transact(&prepared.pages(), prepared.labels())
}

/// Removes the elements of `removes` and adds those of `adds` in one atomic batch.
///
/// Each [`Set`] names an existing set of the table (name, family, kind) and holds only the
/// elements to change. Adding an element that exists refreshes it (a timeout set element gets
/// its new timeout); adding an address inside an existing interval, or removing an element that
/// does not exist, makes the kernel refuse the whole batch.
pub fn apply_element_changes(
    socket: BorrowedFd<'_>,
    adds: &[Set],
    removes: &[Set],
) -> Result<(), NftError> {
    let prepared = batch::element_changes(adds, removes)?;
    let mut link = socket::Link::new(socket)?;
    link.transact(&prepared.pages(), prepared.labels())
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
