//! Live element changes: applying them whatever their size, and checking what the kernel holds
//! afterwards at a cost that follows the size of the change, not of the set.
//!
//! **Applying.** A change is one atomic batch whenever it fits the socket (the send buffer must
//! hold the whole batch, the receive buffer every ACK the kernel queues before we read). A change
//! that only adds elements and does not fit is split into several batches, applied in order.
//! That is safe because every intermediate state lies between the old and the new one and is
//! never more permissive than both:
//! - additions to the restrictive sets (`deny_*`, `private_*`) are sent before any addition to
//!   the permissive ones (`allow_*`, `dns_*`), so no new allow is ever in force while a deny that
//!   comes with it is not yet;
//! - until the first permissive batch the container reaches at most what it reached before;
//!   from then on every new deny is in force and the allows present are a subset of the new ones;
//! - if a batch fails, the kernel keeps the old elements plus the batches already committed
//!   (reported as [`NftError::Partial`]): fail-closed with respect to the new policy.
//!
//! A change that removes anything is never split: a removed allow that is still in force, or a
//! removed range whose replacement (a split or a merge) is not in yet, would be a state neither
//! the old nor the new policy describes. Such a change either fits one batch or fails with
//! [`NftError::TooLarge`] before anything is sent.
//!
//! **Verifying.** [`verify_changes`] asks the kernel for exactly the elements the change touched
//! (`GETSETELEM` by key, no dump): each added element must be there, each removed one gone unless
//! the change added it back. That is a few hundred bytes of netlink per change, so it costs the
//! same with 10 or 100 000 elements in the set. It relies on the state before the change having
//! been verified (the attach path reads the whole table back); [`verify_sets`] is the full check,
//! linear in the set, for when that is wanted. Very large changes (more than [`TARGETED_LIMIT`]
//! kernel elements, more than one API call can make) are verified from a dump of the sets they
//! touch instead.

use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;

use super::batch::{self, Prepared};
use super::dump;
use super::encode::element_elems;
use super::error::NftError;
use super::ffi;
use super::kernel::{ELEM_F_INTERVAL_END, KElem};
use super::lift::lift_set;
pub use super::socket::Budget;
use super::socket::Link;
use super::wire;
use crate::ruleset::build::{DENY_V4, DENY_V6, PRIVATE_V4_SET, PRIVATE_V6_SET};
use crate::ruleset::ir::{IpRange, Set, SetElement, SetKind, TABLE_NAME};

/// Above this many kernel elements (an interval range is two), a change is verified from a dump
/// of the sets it touched rather than by looking each element up. Lookups cost per touched
/// element and a dump per element of the set, so the limit is set far above what one API call
/// can touch (1 024 targets, a few thousand elements): verifying a bulk allow into a set of
/// 100 000 must not read the 100 000 back (it did with a limit of 256: 70 % of a bulk load).
pub const TARGETED_LIMIT: usize = 16_384;

/// Elements looked up per `GETSETELEM` request.
const KEYS_PER_REQUEST: usize = 16;

/// Replies the kernel may queue for one `send` of lookups: each is a separate, page-sized skb
/// (about 4.5 KiB of receive buffer), and the default buffer is 208 KiB.
const REPLIES_PER_SEND: usize = 24;

/// `ENOENT`: the element looked up does not exist.
const ENOENT: i32 = 2;

/// Whether elements of `set` take reach away (rejects) rather than give it (accepts).
fn restrictive(set: &Set) -> bool {
    [DENY_V4, DENY_V6, PRIVATE_V4_SET, PRIVATE_V6_SET].contains(&set.name.as_str())
}

/// Applies `removes` then `adds` (see the module documentation for when this is more than one
/// batch). Returns how many batches were committed.
pub fn apply(socket: BorrowedFd<'_>, adds: &[Set], removes: &[Set]) -> Result<usize, NftError> {
    apply_within(socket, adds, removes, None)
}

/// [`apply`] with batches held to `cap` as well as to what the socket allows: how tests and
/// benchmarks exercise the split path as root (whose buffers can grow to any size), and how a
/// caller can bound the time one batch holds the kernel's nf_tables mutex.
pub fn apply_within(
    socket: BorrowedFd<'_>,
    adds: &[Set],
    removes: &[Set],
    cap: Option<Budget>,
) -> Result<usize, NftError> {
    let prepared = batch::element_changes(adds, removes)?;
    let mut link = Link::new(socket)?;
    let (bytes, messages) = (prepared.bytes(), prepared.labels().len());
    let socket_budget = link.budget(bytes, messages);
    let budget = cap.map_or(socket_budget, |cap| cap.min(socket_budget));
    if budget.fits(bytes, messages) {
        link.transact(&prepared.pages(), prepared.labels(), prepared.awaited())?;
        return Ok(1);
    }
    if removes.iter().any(|set| !set.elements.is_empty()) {
        return Err(NftError::TooLarge {
            bytes,
            messages,
            budget_bytes: budget.bytes,
            budget_messages: budget.acks,
        });
    }
    drop(prepared);
    let batches = split_adds(adds, bytes, messages, budget)?;
    let count = batches.len();
    for (n, prepared) in batches.iter().enumerate() {
        if let Err(source) = link.transact(&prepared.pages(), prepared.labels(), prepared.awaited())
        {
            if n == 0 {
                return Err(source);
            }
            return Err(NftError::Partial {
                committed: n,
                batches: count,
                source: Box::new(source),
            });
        }
    }
    Ok(count)
}

/// Splits an add-only change into batches that each fit `budget`, restrictive sets first.
fn split_adds(
    adds: &[Set],
    bytes: usize,
    messages: usize,
    budget: Budget,
) -> Result<Vec<Prepared>, NftError> {
    let ordered: Vec<(&Set, &SetElement)> = adds
        .iter()
        .filter(|set| restrictive(set))
        .chain(adds.iter().filter(|set| !restrictive(set)))
        .flat_map(|set| set.elements.iter().map(move |e| (set, e)))
        .collect();
    let total = ordered.len();
    let by_bytes = bytes.div_ceil(budget.bytes.max(1));
    let by_acks = messages.div_ceil(budget.acks.saturating_sub(2).max(1));
    // One part more than the estimate: parts carry some fixed overhead each.
    let mut parts = by_bytes.max(by_acks).saturating_add(1).max(2);
    loop {
        let per = total.div_ceil(parts).max(1);
        let mut batches = Vec::with_capacity(parts);
        let mut fitted = true;
        for chunk in ordered.chunks(per) {
            let sets = regroup(chunk);
            let prepared = batch::element_changes(&sets, &[])?;
            if !budget.fits(prepared.bytes(), prepared.labels().len()) {
                fitted = false;
                break;
            }
            batches.push(prepared);
        }
        if fitted {
            return Ok(batches);
        }
        if per == 1 {
            // Not even one element fits: the socket cannot carry this change at all.
            return Err(NftError::TooLarge {
                bytes,
                messages,
                budget_bytes: budget.bytes,
                budget_messages: budget.acks,
            });
        }
        parts = parts.saturating_mul(2);
    }
}

/// Consecutive elements of the same set back into [`Set`]s, order kept.
fn regroup(chunk: &[(&Set, &SetElement)]) -> Vec<Set> {
    let mut out: Vec<Set> = Vec::new();
    for (set, element) in chunk {
        match out.last_mut() {
            Some(last) if last.name == set.name => last.elements.push(**element),
            _ => out.push(Set {
                name: set.name.clone(),
                family: set.family,
                kind: set.kind,
                elements: vec![**element],
            }),
        }
    }
    out
}

/// Reads the sets `names` of table `inet shield`, with their elements, in that order.
pub fn read_sets(socket: BorrowedFd<'_>, names: &[&str]) -> Result<Vec<Set>, NftError> {
    let mut link = Link::new(socket)?;
    dump::read_sets(&mut link, names)?
        .iter()
        .map(|(set, elems)| lift_set(set, elems))
        .collect()
}

/// Checks that the kernel's sets equal `expected`: same family and kind, and for interval sets
/// exactly the same ranges. The elements of timeout sets are not compared: they come and go with
/// DNS answers and expire on their own, so no expected value would stay right.
pub fn verify_sets(socket: BorrowedFd<'_>, expected: &[&Set]) -> Result<(), NftError> {
    let names: Vec<&str> = expected.iter().map(|set| set.name.as_str()).collect();
    let actual = read_sets(socket, &names)?;
    for (want, have) in expected.iter().zip(&actual) {
        if want.family != have.family || want.kind != have.kind {
            return Err(mismatch(
                want,
                format!(
                    "it is a {:?} {:?} set, expected {:?} {:?}",
                    have.family, have.kind, want.family, want.kind
                ),
            ));
        }
        if want.kind == SetKind::Timeout || want.elements == have.elements {
            continue;
        }
        let want_ranges: BTreeSet<IpRange> = want.elements.iter().map(|e| e.range).collect();
        let have_ranges: BTreeSet<IpRange> = have.elements.iter().map(|e| e.range).collect();
        let missing: Vec<IpRange> = want_ranges.difference(&have_ranges).copied().collect();
        let extra: Vec<IpRange> = have_ranges.difference(&want_ranges).copied().collect();
        return Err(mismatch(
            want,
            format!(
                "missing {}; unexpected {}",
                listing(&missing),
                listing(&extra)
            ),
        ));
    }
    Ok(())
}

/// Checks that a change applied by [`apply`] is in force: every element of `adds` is in its
/// set, and every element of `removes` is gone (unless `adds` put it back, as a split or a merge
/// does with a shared range end). Costs lookups of the touched elements only, up to
/// [`TARGETED_LIMIT`]; beyond that, one dump of the touched sets.
pub fn verify_changes(
    socket: BorrowedFd<'_>,
    adds: &[Set],
    removes: &[Set],
) -> Result<(), NftError> {
    let mut present = Vec::new();
    for set in adds {
        for element in &set.elements {
            for elem in element_elems(set, element)? {
                present.push(Probe::new(set, element, elem));
            }
        }
    }
    let mut absent = Vec::new();
    for set in removes {
        for element in &set.elements {
            for elem in element_elems(set, element)? {
                let readded = present
                    .iter()
                    .any(|p| p.set == set.name && same_key(&p.elem, &elem));
                if !readded {
                    absent.push(Probe::new(set, element, elem));
                }
            }
        }
    }
    if present.len().saturating_add(absent.len()) > TARGETED_LIMIT {
        return verify_by_dump(socket, adds, removes);
    }
    let mut link = Link::new(socket)?;
    lookups(&mut link, &present, Expect::Present)?;
    lookups(&mut link, &absent, Expect::Absent)
}

/// One kernel element to look up, with the IR element it belongs to (for messages).
struct Probe<'a> {
    set: &'a str,
    element: &'a SetElement,
    elem: KElem,
}

impl<'a> Probe<'a> {
    fn new(set: &'a Set, element: &'a SetElement, elem: KElem) -> Self {
        Self {
            set: &set.name,
            element,
            elem,
        }
    }

    fn describe(&self) -> String {
        let what = if self.elem.flags & ELEM_F_INTERVAL_END != 0 {
            "end"
        } else {
            "start"
        };
        format!("{what} of {}", range_text(self.element.range))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Present,
    Absent,
}

/// Whether two kernel elements are the same slot: same key, same interval-end flag.
fn same_key(a: &KElem, b: &KElem) -> bool {
    a.key == b.key && (a.flags & ELEM_F_INTERVAL_END) == (b.flags & ELEM_F_INTERVAL_END)
}

/// Looks `probes` up and checks each is present or absent.
///
/// Present probes go several to a request (the kernel answers each in order and stops at the
/// first it lacks); absent probes one to a request, since each is expected to stop its request.
/// Requests go several to a `send`, as many as the receive buffer holds the answers of.
fn lookups(link: &mut Link<'_>, probes: &[Probe<'_>], expect: Expect) -> Result<(), NftError> {
    let per_request = match expect {
        Expect::Present => KEYS_PER_REQUEST,
        Expect::Absent => 1,
    };
    // Group by set (a request names one set), keeping the order.
    let mut requests: Vec<&[Probe<'_>]> = Vec::new();
    let mut start = 0;
    while start < probes.len() {
        let set = probes.get(start).map(|p| p.set);
        let mut end = start;
        while end < probes.len()
            && end - start < per_request
            && probes.get(end).map(|p| p.set) == set
        {
            end += 1;
        }
        requests.push(probes.get(start..end).unwrap_or_default());
        start = end;
    }
    let per_send = (REPLIES_PER_SEND / per_request).max(1);
    for group in requests.chunks(per_send) {
        let mut bytes = Vec::new();
        let mut seqs = Vec::with_capacity(group.len());
        for request in group {
            let seq = dump::next_seq();
            let set = request.first().map(|p| p.set).unwrap_or_default();
            let elems: Vec<KElem> = request.iter().map(|p| p.elem.clone()).collect();
            bytes.extend(wire::get_elems_request(TABLE_NAME, set, &elems, seq)?);
            seqs.push(seq);
        }
        let mut replies: Vec<(u32, KElem)> = Vec::new();
        let status = link.query(&bytes, &seqs, |seq, msg| {
            let (_, _, elems) = ffi::parse_elems(msg)?;
            replies.extend(elems.into_iter().map(|e| (seq, e)));
            Ok(())
        })?;
        for (request, seq) in group.iter().zip(&seqs) {
            let found: Vec<&KElem> = replies
                .iter()
                .filter(|(s, _)| s == seq)
                .map(|(_, e)| e)
                .collect();
            let code = status.get(seq).copied().unwrap_or(0).saturating_neg();
            check(request, &found, code, expect)?;
        }
    }
    Ok(())
}

/// Judges one request's answer: `found` are the elements the kernel returned, in order,
/// `errno` its final status (0 for an ACK).
fn check(
    request: &[Probe<'_>],
    found: &[&KElem],
    errno: i32,
    expect: Expect,
) -> Result<(), NftError> {
    if errno != 0 && errno != ENOENT {
        return Err(NftError::Refused {
            message: format!(
                "get elements of set {}",
                request.first().map(|p| p.set).unwrap_or_default()
            ),
            errno,
        });
    }
    for (n, probe) in request.iter().enumerate() {
        // An interval lookup that misses may return the neighbouring element instead: only an
        // element with the very key and flag counts as found.
        let hit = found.get(n).is_some_and(|e| same_key(e, &probe.elem));
        match (expect, hit) {
            (Expect::Present, false) => {
                return Err(NftError::Mismatch {
                    set: probe.set.to_owned(),
                    reason: format!("missing the {}", probe.describe()),
                });
            }
            (Expect::Absent, true) => {
                return Err(NftError::Mismatch {
                    set: probe.set.to_owned(),
                    reason: format!("still holds the {}", probe.describe()),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`verify_changes`] for large changes: one dump of the touched sets, checked in our IR.
fn verify_by_dump(socket: BorrowedFd<'_>, adds: &[Set], removes: &[Set]) -> Result<(), NftError> {
    let mut names: Vec<&str> = Vec::new();
    for set in adds.iter().chain(removes) {
        if !names.contains(&set.name.as_str()) {
            names.push(&set.name);
        }
    }
    let actual = read_sets(socket, &names)?;
    let held = |name: &str| actual.iter().find(|s| s.name == name);
    for set in adds {
        let Some(have) = held(&set.name) else {
            return Err(NftError::MissingSet(set.name.clone()));
        };
        let ranges: BTreeSet<IpRange> = have.elements.iter().map(|e| e.range).collect();
        if let Some(missing) = set.elements.iter().find(|e| !ranges.contains(&e.range)) {
            return Err(mismatch(
                set,
                format!("missing {}", range_text(missing.range)),
            ));
        }
    }
    for set in removes {
        let Some(have) = held(&set.name) else {
            return Err(NftError::MissingSet(set.name.clone()));
        };
        let readded: BTreeSet<IpRange> = adds
            .iter()
            .filter(|a| a.name == set.name)
            .flat_map(|a| a.elements.iter().map(|e| e.range))
            .collect();
        // Interval elements are sorted and disjoint: the ones overlapping a removed range are
        // a contiguous run starting at the first that does not end before it.
        for removed in &set.elements {
            let first = have
                .elements
                .partition_point(|e| e.range.end < removed.range.start);
            let overlapping = have
                .elements
                .iter()
                .skip(first)
                .take_while(|e| e.range.start <= removed.range.end);
            for e in overlapping {
                if !readded.contains(&e.range) {
                    return Err(mismatch(
                        set,
                        format!(
                            "still holds {} after removing {}",
                            range_text(e.range),
                            range_text(removed.range)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn mismatch(set: &Set, reason: String) -> NftError {
    NftError::Mismatch {
        set: set.name.clone(),
        reason,
    }
}

fn range_text(range: IpRange) -> String {
    if range.start == range.end {
        range.start.to_string()
    } else {
        format!("{}-{}", range.start, range.end)
    }
}

/// The first few ranges of `ranges`, for an error message.
fn listing(ranges: &[IpRange]) -> String {
    const SHOWN: usize = 5;
    if ranges.is_empty() {
        return "nothing".to_owned();
    }
    let mut text: Vec<String> = ranges.iter().take(SHOWN).map(|r| range_text(*r)).collect();
    if ranges.len() > SHOWN {
        text.push(format!("and {} more", ranges.len() - SHOWN));
    }
    text.join(", ")
}
