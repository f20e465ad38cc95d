//! Reading table `inet shield` back: dump requests, collection, consistency.
//!
//! One read is five kinds of `NLM_F_DUMP` request (tables, sets, the elements of each set,
//! chains, rules), parsed by [`super::ffi`] into a [`KTable`]. Objects of other tables are left
//! out (the namespace may hold other tables); nothing of ours is. Each reply carries the
//! ruleset generation: if it differs between replies, or the kernel flags a dump as
//! interrupted, or a set vanished mid-read, the table changed while we read it and the whole
//! read is repeated, so the result is always one consistent generation.
//!
//! A set's elements come in several replies, each of which walks the set again and skips what
//! the earlier ones gave. A hash set that the kernel resizes in between (it grows its table in
//! the background after a large insert, with no new generation and no interrupted flag) is
//! walked in a new order, so the replies repeat some elements and leave out others. An element
//! listed twice gives such a torn dump away; it is read again, after a pause that lets the
//! resize end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::error::NftError;
use super::ffi::{self, DumpKind};
use super::kernel::{ELEM_F_INTERVAL_END, KElem, KSet, KTable};
use super::socket::Link;
use crate::ruleset::ir::TABLE_NAME;

/// How many times a read is repeated while the table keeps changing under it.
const ATTEMPTS: u32 = 5;

/// Pause before the second attempt of a read, doubled before each later one.
const FIRST_PAUSE: Duration = Duration::from_millis(2);

/// `ENOENT`: an object named in a dump request no longer exists.
const ENOENT: i32 = 2;

/// Sequence numbers of dump requests, far from the small ones nftnl gives batch messages.
static NEXT_SEQ: AtomicU32 = AtomicU32::new(0x4000_0000);

/// A fresh sequence number for a request outside a batch.
pub fn next_seq() -> u32 {
    NEXT_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Reads the table as one consistent generation; `Ok(None)` if it does not exist.
pub fn read(link: &mut Link<'_>) -> Result<Option<KTable>, NftError> {
    for attempt in 0..ATTEMPTS {
        pause_before(attempt);
        match read_once(link) {
            Ok(Some(table)) => return Ok(table),
            Ok(None) => {}
            Err(e) if e.errno() == Some(ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Err(NftError::Unstable(ATTEMPTS))
}

/// Waits before attempt `attempt` of a read (not before the first).
fn pause_before(attempt: u32) {
    if attempt > 0 {
        std::thread::sleep(FIRST_PAUSE.saturating_mul(1 << (attempt - 1)));
    }
}

/// What one dump pass saw, across all its requests.
#[derive(Default)]
struct Pass {
    generations: Vec<u16>,
    interrupted: bool,
    /// A set's elements were listed with repeats: the set was resized during its dump.
    torn: bool,
}

impl Pass {
    fn dump(
        &mut self,
        link: &mut Link<'_>,
        kind: DumpKind,
        set: Option<&str>,
        each: impl FnMut(&[u8]) -> Result<(), NftError>,
    ) -> Result<(), NftError> {
        let seq = next_seq();
        let request = ffi::dump_request(kind, TABLE_NAME, set, seq)?;
        let reply = u16::try_from(kind.reply_msg())
            .map_err(|_| NftError::Protocol("message type out of range".to_owned()))?;
        let info = link.dump(&request, seq, reply, kind.noun(), each)?;
        self.generations.extend(info.generations);
        self.interrupted |= info.interrupted;
        Ok(())
    }

    fn consistent(&self) -> bool {
        !self.interrupted
            && !self.torn
            && self.generations.windows(2).all(|w| w.first() == w.get(1))
    }

    /// Notes a torn dump if `elems` (one set's) list a slot twice.
    fn check_elements(&mut self, elems: &[KElem]) {
        let mut seen = HashSet::with_capacity(elems.len());
        self.torn |= !elems
            .iter()
            .all(|elem| seen.insert((elem.key.as_slice(), elem.flags & ELEM_F_INTERVAL_END)));
    }
}

/// One pass: `Ok(None)` when the table changed during the pass.
fn read_once(link: &mut Link<'_>) -> Result<Option<Option<KTable>>, NftError> {
    let mut pass = Pass::default();
    let mut flags = None;
    pass.dump(link, DumpKind::Tables, None, |msg| {
        let (owner, f) = ffi::parse_table(msg)?;
        if owner.is(TABLE_NAME) {
            flags = Some(f);
        }
        Ok(())
    })?;
    let Some(flags) = flags else {
        return Ok(pass.consistent().then_some(None));
    };

    let mut sets = Vec::new();
    pass.dump(link, DumpKind::Sets, None, |msg| {
        let (owner, set) = ffi::parse_set(msg)?;
        if owner.is(TABLE_NAME) {
            sets.push(set);
        }
        Ok(())
    })?;
    let mut with_elems = Vec::with_capacity(sets.len());
    for set in sets {
        let mut elems: Vec<KElem> = Vec::new();
        pass.dump(link, DumpKind::Elems, Some(&set.name), |msg| {
            let (owner, name, mut batch) = ffi::parse_elems(msg)?;
            if owner.is(TABLE_NAME) && name == set.name {
                elems.append(&mut batch);
            }
            Ok(())
        })?;
        pass.check_elements(&elems);
        with_elems.push((set, elems));
    }

    let mut chains = Vec::new();
    pass.dump(link, DumpKind::Chains, None, |msg| {
        let (owner, chain) = ffi::parse_chain(msg)?;
        if owner.is(TABLE_NAME) {
            chains.push(chain);
        }
        Ok(())
    })?;

    let mut rules = Vec::new();
    pass.dump(link, DumpKind::Rules, None, |msg| {
        let (owner, rule) = ffi::parse_rule(msg)?;
        if owner.is(TABLE_NAME) {
            rules.push(rule);
        }
        Ok(())
    })?;

    if !pass.consistent() {
        return Ok(None);
    }
    Ok(Some(Some(KTable {
        flags,
        sets: with_elems,
        chains,
        rules,
    })))
}

/// Sets with their elements, as the kernel reports them.
pub type KSets = Vec<(KSet, Vec<KElem>)>;

/// Reads just the sets `names` of table `inet shield` (each with its elements), in that order,
/// as one consistent generation. A set (or the table) that does not exist is
/// [`NftError::MissingSet`].
///
/// Cheaper than [`read`] when only some sets matter (no chains, no rules, no other set's
/// elements), though still linear in the size of the sets asked for.
pub fn read_sets(link: &mut Link<'_>, names: &[&str]) -> Result<KSets, NftError> {
    for attempt in 0..ATTEMPTS {
        pause_before(attempt);
        match read_sets_once(link, names) {
            Ok(Some(sets)) => return Ok(sets),
            Ok(None) => {}
            // A set vanished between the set dump and its element dump: read again, and
            // report it missing if it stays missing.
            Err(e) if e.errno() == Some(ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Err(NftError::Unstable(ATTEMPTS))
}

/// One pass of [`read_sets`]: `Ok(None)` when the table changed during the pass.
fn read_sets_once(link: &mut Link<'_>, names: &[&str]) -> Result<Option<KSets>, NftError> {
    let mut pass = Pass::default();
    let mut found: Vec<KSet> = Vec::new();
    // The set dump of a table that does not exist fails with ENOENT: that is a missing set.
    let listed = pass.dump(link, DumpKind::Sets, None, |msg| {
        let (owner, set) = ffi::parse_set(msg)?;
        if owner.is(TABLE_NAME) && names.contains(&set.name.as_str()) {
            found.push(set);
        }
        Ok(())
    });
    match listed {
        Err(e) if e.errno() == Some(ENOENT) => {
            let first = names.first().copied().unwrap_or_default();
            return Err(NftError::MissingSet(first.to_owned()));
        }
        other => other?,
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Some(set) = found.iter().find(|s| s.name == *name).cloned() else {
            if pass.consistent() {
                return Err(NftError::MissingSet((*name).to_owned()));
            }
            return Ok(None);
        };
        let mut elems: Vec<KElem> = Vec::new();
        pass.dump(link, DumpKind::Elems, Some(name), |msg| {
            let (owner, set_name, mut batch) = ffi::parse_elems(msg)?;
            if owner.is(TABLE_NAME) && set_name == *name {
                elems.append(&mut batch);
            }
            Ok(())
        })?;
        pass.check_elements(&elems);
        out.push((set, elems));
    }
    Ok(pass.consistent().then_some(out))
}
