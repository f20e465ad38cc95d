//! Batches: our IR → one atomic nf_tables transaction, with a label for every message.
//!
//! [`replace_table`] is the whole-table replacement (add table, delete table, add table, sets,
//! chains, rules, elements: the kernel commits all of it or none, so there is never a moment
//! without the drop policy); [`element_changes`] adds and removes set elements of the live
//! table in one batch. Both only encode: the bytes are sent by [`super::socket`]. Everything is
//! validated before the first libnftnl object is built, and the labels (`add set allow_v4`)
//! let a kernel refusal name the message that failed.

use std::collections::BTreeMap;
use std::ffi::CString;

use nftnl::{Batch, FinalizedBatch, MsgType, NlMsg, ProtoFamily};

use super::encode::{SET_USERDATA, element_elems, rule_exprs, set_elements, set_header, set_id};
use super::error::NftError;
use super::ffi::{ELEMS_PER_MESSAGE, ElemMsg, SetMsg};
use super::kernel::{Expr, KElem};
use crate::ruleset::ir::{ChainPolicy, Hook, Set, SetKind, TABLE_NAME, Table};

/// A finalized batch and what each of its messages does, by sequence number.
pub struct Prepared {
    /// The messages, back to back: what one `sendmsg` carries.
    wire: Vec<u8>,
    labels: BTreeMap<u32, String>,
    /// The messages whose acknowledgement ends the wait for the kernel's answer.
    awaited: Vec<u32>,
}

impl Prepared {
    /// The buffers to send, in order, in one `sendmsg`.
    pub fn pages(&self) -> Vec<&[u8]> {
        vec![self.wire.as_slice()]
    }

    /// Sequence number → label of every message, to name the one the kernel refuses.
    pub fn labels(&self) -> &BTreeMap<u32, String> {
        &self.labels
    }

    /// The sequence numbers of the messages that ask for an acknowledgement: the batch end
    /// alone where the kernel acknowledges it, every message otherwise.
    pub fn awaited(&self) -> &[u32] {
        &self.awaited
    }

    /// Total size of the batch in bytes (what one `sendmsg` carries).
    pub fn bytes(&self) -> usize {
        self.wire.len()
    }
}

/// `NLM_F_ACK` in `nlmsg_flags`.
const NLM_F_ACK: u16 = 0x4;

/// Clears `NLM_F_ACK` on every message of `wire` but the last (the batch end), if that one asks
/// for an acknowledgement; whether it did (if not, nothing is changed).
///
/// The kernel answers a refused message whether or not it asked for an acknowledgement, and
/// (since 6.10) acknowledges the batch end once the batch is through, after the commit: so the
/// end's acknowledgement alone says the batch is in, and a refusal still names its message. An
/// attach sends some fifty messages; each acknowledgement is a reply the kernel builds and the
/// daemon receives, one `recv` each.
fn acknowledge_only_the_end(wire: &mut [u8]) -> Result<bool, NftError> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let len = wire
            .get(at..at.saturating_add(4))
            .and_then(|bytes| bytes.try_into().ok())
            .map(u32::from_ne_bytes)
            .and_then(|len| usize::try_from(len).ok())
            .filter(|len| *len >= 16 && at.saturating_add(*len) <= wire.len())
            .ok_or_else(|| NftError::Protocol("malformed message in a batch".to_owned()))?;
        starts.push(at);
        // Messages are 4-byte aligned.
        at = at.saturating_add(len.next_multiple_of(4));
    }
    let flags_at = |start: usize| start.saturating_add(6)..start.saturating_add(8);
    let flags = |wire: &[u8], start: usize| {
        wire.get(flags_at(start))
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u16::from_ne_bytes)
    };
    let Some((&end, others)) = starts.split_last() else {
        return Ok(false);
    };
    if flags(wire, end) & NLM_F_ACK == 0 {
        return Ok(false);
    }
    for &start in others {
        let cleared = flags(wire, start) & !NLM_F_ACK;
        if let Some(bytes) = wire.get_mut(flags_at(start)) {
            bytes.copy_from_slice(&cleared.to_ne_bytes());
        }
    }
    Ok(true)
}

/// Collects messages and their labels.
struct Builder {
    batch: Batch,
    labels: Vec<String>,
}

impl Builder {
    fn new() -> Self {
        Self {
            batch: Batch::new(),
            labels: Vec::new(),
        }
    }

    fn add<T: NlMsg>(&mut self, msg: &T, msg_type: MsgType, label: String) {
        self.batch.add(msg, msg_type);
        self.labels.push(label);
    }

    /// Element messages for `elems` of `set`, chunked to fit netlink's 64 KiB attribute limit.
    fn elements(
        &mut self,
        set: &str,
        id: Option<u32>,
        elems: &[KElem],
        op: ElemOp,
    ) -> Result<(), NftError> {
        let (verb, msg_type) = match op {
            ElemOp::Add => ("add", MsgType::Add),
            ElemOp::Delete | ElemOp::DeleteIfPresent => ("delete", MsgType::Del),
        };
        for (n, chunk) in elems.chunks(ELEMS_PER_MESSAGE).enumerate() {
            let first = n.saturating_mul(ELEMS_PER_MESSAGE);
            let label = format!(
                "{verb} elements {}..{} of set {set}",
                first,
                first.saturating_add(chunk.len())
            );
            let msg = ElemMsg::new(TABLE_NAME, set, id, chunk.to_vec())?;
            let msg = if op == ElemOp::DeleteIfPresent {
                msg.missing_ok()
            } else {
                msg
            };
            self.add(&msg, msg_type, label);
        }
        Ok(())
    }

    /// Finalizes the batch and maps the sequence numbers nftnl assigned to our labels.
    ///
    /// nftnl numbers messages consecutively; on kernels that acknowledge the batch begin and
    /// end messages (6.10+) those two take the first and last numbers.
    fn finish(self) -> Result<Prepared, NftError> {
        let batch: FinalizedBatch = self.batch.finalize();
        let seqs = batch.sequence_numbers();
        let count = usize::try_from(seqs.end.saturating_sub(seqs.start)).unwrap_or(usize::MAX);
        let mut labels = BTreeMap::new();
        let mut seq = seqs.start;
        let with_ends = count == self.labels.len().saturating_add(2);
        if !with_ends && count != self.labels.len() {
            return Err(NftError::Protocol(format!(
                "batch of {} messages has {count} sequence numbers",
                self.labels.len()
            )));
        }
        if with_ends {
            labels.insert(seq, "batch begin".to_owned());
            seq = seq.saturating_add(1);
        }
        for label in self.labels {
            labels.insert(seq, label);
            seq = seq.saturating_add(1);
        }
        let mut wire: Vec<u8> = batch.iter().flatten().copied().collect();
        if with_ends {
            labels.insert(seq, "batch end".to_owned());
        }
        let awaited = if with_ends && acknowledge_only_the_end(&mut wire)? {
            vec![seq]
        } else {
            labels.keys().copied().collect()
        };
        Ok(Prepared {
            wire,
            labels,
            awaited,
        })
    }
}

fn cname(name: &str, what: &str) -> Result<CString, NftError> {
    CString::new(name)
        .map_err(|_| NftError::encode(format!("{what} {name:?}"), "contains a NUL byte"))
}

/// The batch that replaces table `inet shield` by `table`, atomically.
pub fn replace_table(table: &Table) -> Result<Prepared, NftError> {
    // Encode everything first: nothing is built if anything is invalid.
    let mut sets = Vec::with_capacity(table.sets.len());
    for (index, set) in table.sets.iter().enumerate() {
        let msg = SetMsg::new(TABLE_NAME, set_header(set), set_id(index), &SET_USERDATA)?;
        sets.push((set, set_id(index), msg, set_elements(set)?));
    }
    let mut chains = Vec::with_capacity(table.chains.len());
    for chain in &table.chains {
        let name = cname(&chain.name, "chain name")?;
        let mut rules = Vec::with_capacity(chain.rules.len());
        for (n, rule) in chain.rules.iter().enumerate() {
            let label = format!("add rule {} to chain {}", n.saturating_add(1), chain.name);
            let exprs = rule_exprs(table, rule, &label)?;
            if let Some(Expr::Unsupported { what }) =
                exprs.iter().find(|e| matches!(e, Expr::Unsupported { .. }))
            {
                return Err(NftError::encode(label, what.clone()));
            }
            rules.push((label, exprs));
        }
        chains.push((chain, name, rules));
    }

    let mut b = Builder::new();
    let t = nftnl::Table::new(cname(TABLE_NAME, "table name")?, ProtoFamily::Inet);
    // Adding first makes the delete succeed whether or not the table exists (no NLM_F_EXCL).
    b.add(&t, MsgType::Add, format!("add table {TABLE_NAME}"));
    b.add(&t, MsgType::Del, format!("delete table {TABLE_NAME}"));
    b.add(&t, MsgType::Add, format!("add table {TABLE_NAME}"));
    for (set, _, msg, _) in &sets {
        b.add(msg, MsgType::Add, format!("add set {}", set.name));
    }
    let mut built = Vec::with_capacity(chains.len());
    for (chain, name, _) in &chains {
        let mut c = nftnl::Chain::new(name, &t);
        c.set_type(nftnl::ChainType::Filter);
        c.set_hook(
            match chain.hook {
                Hook::Output => nftnl::Hook::Out,
                Hook::Input => nftnl::Hook::In,
            },
            chain.priority,
        );
        c.set_policy(match chain.policy {
            ChainPolicy::Accept => nftnl::Policy::Accept,
            ChainPolicy::Drop => nftnl::Policy::Drop,
        });
        b.add(&c, MsgType::Add, format!("add chain {}", chain.name));
        built.push(c);
    }
    for (c, (_, _, rules)) in built.iter().zip(&chains) {
        for (label, exprs) in rules {
            let mut rule = nftnl::Rule::new(c);
            for expr in exprs {
                rule.add_expr(expr);
            }
            b.add(&rule, MsgType::Add, label.clone());
        }
    }
    for (set, id, _, elems) in &sets {
        b.elements(&set.name, Some(*id), elems, ElemOp::Add)?;
    }
    b.finish()
}

/// Each set with the kernel elements of its IR elements.
fn encode_elements(sets: &[Set]) -> Result<Vec<(&Set, Vec<KElem>)>, NftError> {
    sets.iter()
        .map(|set| {
            let mut elems = Vec::new();
            for element in &set.elements {
                elems.extend(element_elems(set, element)?);
            }
            Ok((set, elems))
        })
        .collect()
}

/// What an element message does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ElemOp {
    /// Add (or refresh) the elements.
    Add,
    /// Delete the elements; the batch fails if one is missing.
    Delete,
    /// Delete the elements that are present (`DESTROYSETELEM`).
    DeleteIfPresent,
}

/// The batch that removes the elements of `removes` and then adds those of `adds`, each given
/// as a [`Set`] (name, family, kind) holding just the elements to change, in one transaction.
///
/// Adds carry no `NLM_F_EXCL`: re-adding a timeout set element refreshes its timeout.
pub fn element_changes(adds: &[Set], removes: &[Set]) -> Result<Prepared, NftError> {
    let removes = encode_elements(removes)?;
    let adds = encode_elements(adds)?;
    let mut b = Builder::new();
    for (set, elems) in &removes {
        // The kernel expires timeout elements by itself: one may be gone by the time the batch
        // arrives, which is what the removal wanted anyway.
        let op = if set.kind == SetKind::Timeout {
            ElemOp::DeleteIfPresent
        } else {
            ElemOp::Delete
        };
        b.elements(&set.name, None, elems, op)?;
    }
    for (set, elems) in &adds {
        b.elements(&set.name, None, elems, ElemOp::Add)?;
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;

    /// A netlink message of `len` bytes (header included) with `flags`.
    fn message(len: u32, flags: u16) -> Vec<u8> {
        let mut msg = vec![0_u8; usize::try_from(len).unwrap()];
        msg[..4].copy_from_slice(&len.to_ne_bytes());
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg
    }

    fn flags_of(wire: &[u8]) -> Vec<u16> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let len = u32::from_ne_bytes(wire[at..at + 4].try_into().unwrap()) as usize;
            out.push(u16::from_ne_bytes(wire[at + 6..at + 8].try_into().unwrap()));
            at += len.next_multiple_of(4);
        }
        out
    }

    #[test]
    fn only_the_end_keeps_its_acknowledgement() {
        const REQUEST: u16 = 0x1;
        const CREATE: u16 = 0x400;
        // A 20-byte message padded to 20 (already aligned) and a 22-byte one padded to 24.
        let mut wire = message(20, REQUEST | NLM_F_ACK);
        let mut odd = message(22, REQUEST | NLM_F_ACK | CREATE);
        odd.extend([0, 0]);
        wire.extend(odd);
        wire.extend(message(20, REQUEST | NLM_F_ACK));
        assert!(acknowledge_only_the_end(&mut wire).unwrap());
        assert_eq!(
            flags_of(&wire),
            [REQUEST, REQUEST | CREATE, REQUEST | NLM_F_ACK]
        );
    }

    #[test]
    fn an_end_that_asks_for_nothing_changes_nothing() {
        let mut wire = message(20, NLM_F_ACK);
        wire.extend(message(20, 0));
        let before = wire.clone();
        assert!(!acknowledge_only_the_end(&mut wire).unwrap());
        assert_eq!(wire, before);
        // A message longer than the batch is refused, not read past.
        let mut short = message(20, NLM_F_ACK);
        short.truncate(18);
        assert!(acknowledge_only_the_end(&mut short).is_err());
    }

    #[test]
    fn a_prepared_batch_awaits_its_end_or_every_message() {
        let prepared = element_changes(&[], &[]).unwrap();
        let awaited = prepared.awaited();
        let labels = prepared.labels();
        if labels.values().any(|label| label == "batch end") {
            // Kernel 6.10 and later: the end alone, the last sequence number.
            assert_eq!(awaited, [*labels.keys().last().unwrap()]);
        } else {
            assert_eq!(awaited, labels.keys().copied().collect::<Vec<_>>());
        }
    }
}
