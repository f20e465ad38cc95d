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

use nftnl::{MsgType, NlMsg, ProtoFamily};

use super::encode::{SET_USERDATA, element_elems, rule_exprs, set_elements, set_header, set_id};
use super::error::NftError;
use super::ffi::{BatchWriter, SetMsg};
use super::kernel::{Expr, KElem};
use super::wire::{ELEMS_PER_MESSAGE, ElemMsg, ElemOp};
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
    batch: BatchWriter,
    labels: Vec<String>,
}

impl Builder {
    fn new() -> Self {
        Self {
            batch: BatchWriter::new(),
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
        let verb = match op {
            ElemOp::Add => "add",
            ElemOp::Delete | ElemOp::DeleteIfPresent => "delete",
            ElemOp::Get => "look up",
        };
        for (n, chunk) in elems.chunks(ELEMS_PER_MESSAGE).enumerate() {
            let first = n.saturating_mul(ELEMS_PER_MESSAGE);
            let label = format!(
                "{verb} elements {}..{} of set {set}",
                first,
                first.saturating_add(chunk.len())
            );
            let msg = ElemMsg::new(TABLE_NAME, set, id, chunk)?;
            self.batch.add_elements(&msg, op);
            self.labels.push(label);
        }
        Ok(())
    }

    /// Finalizes the batch and maps the sequence numbers the writer assigned to our labels.
    ///
    /// Messages are numbered consecutively, as nftnl numbers them; on kernels that acknowledge
    /// the batch begin and end messages (6.10+) those two take the first and last numbers.
    fn finish(self) -> Result<Prepared, NftError> {
        let (mut wire, seqs) = self.batch.finish();
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
    use crate::nft::ffi::reference::LibnftnlElemMsg;
    use crate::nft::wire::tests::elem as element;

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

    /// Zeroes the padding after every netlink attribute of the messages in `wire`, nested
    /// ones included (`NLA_F_NESTED`).
    fn zero_padding(wire: &mut [u8]) {
        fn attributes(buf: &mut [u8], mut at: usize, end: usize) {
            while at + 4 <= end {
                let len = usize::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
                let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]);
                if len < 4 {
                    return;
                }
                if kind & 0x8000 != 0 {
                    attributes(buf, at + 4, at + len);
                }
                let padded = (at + len).next_multiple_of(4).min(end);
                buf[at + len..padded].fill(0);
                at = padded;
            }
        }
        let mut at = 0;
        while at + 20 <= wire.len() {
            let len = u32::from_ne_bytes(wire[at..at + 4].try_into().unwrap()) as usize;
            // Header (16 bytes) and nfgenmsg (4), then the attributes.
            attributes(wire, at + 20, at + len);
            at += len.next_multiple_of(4);
        }
    }

    /// Element messages of every kind, as `(set, set id, elements, op)`.
    fn element_messages() -> Vec<(&'static str, Option<u32>, Vec<KElem>, ElemOp)> {
        let v6 = |last| {
            let mut key = vec![0x20, 1, 0xd, 0xb8];
            key.resize(15, 0);
            key.push(last);
            key
        };
        vec![
            (
                "dns_v4",
                None,
                vec![
                    element(vec![10, 0, 0, 1], Some(30_000)),
                    element(vec![10, 0, 0, 2], Some(3_600_000)),
                ],
                ElemOp::Add,
            ),
            (
                "allow_v6",
                Some(7),
                vec![
                    element(v6(0), None),
                    KElem {
                        flags: 1,
                        userdata: vec![0, 1, 1],
                        ..element(v6(1), None)
                    },
                ],
                ElemOp::Add,
            ),
            (
                "dns_v6",
                None,
                vec![element(v6(9), Some(1_000))],
                ElemOp::Add,
            ),
            (
                "dns_v4",
                None,
                vec![element(vec![10, 0, 0, 3], None)],
                ElemOp::DeleteIfPresent,
            ),
            (
                "deny_v4",
                None,
                vec![
                    element(vec![192, 0, 2, 0], None),
                    KElem {
                        flags: 1,
                        ..element(vec![192, 0, 2, 8], None)
                    },
                ],
                ElemOp::Delete,
            ),
            ("allow_v4", None, Vec::new(), ElemOp::Add),
        ]
    }

    /// The writer lays a batch out byte for byte as `nftnl::Batch` does, sequence numbers
    /// included: tables and chains (built by libnftnl in both), and element messages of every
    /// kind, ours written in Rust (`wire`), theirs by libnftnl.
    #[test]
    fn the_writer_lays_a_batch_out_as_nftnl_does() {
        let table = nftnl::Table::new(c"shield", ProtoFamily::Inet);
        let mut chain = nftnl::Chain::new(c"output", &table);
        chain.set_type(nftnl::ChainType::Filter);
        chain.set_hook(nftnl::Hook::Out, 0);
        chain.set_policy(nftnl::Policy::Drop);

        let mut theirs = nftnl::Batch::new();
        let mut ours = BatchWriter::new();
        theirs.add(&table, MsgType::Add);
        ours.add(&table, MsgType::Add);
        theirs.add(&table, MsgType::Del);
        ours.add(&table, MsgType::Del);
        theirs.add(&chain, MsgType::Add);
        ours.add(&chain, MsgType::Add);
        let messages = element_messages();
        for (set, id, elems, op) in &messages {
            let reference = LibnftnlElemMsg::new(TABLE_NAME, set, *id, elems, *op);
            // The reference's message type comes from `op`, whatever this says.
            theirs.add(&reference, MsgType::Add);
            ours.add_elements(&ElemMsg::new(TABLE_NAME, set, *id, elems).unwrap(), *op);
        }
        let theirs = theirs.finalize();
        let mut theirs_wire: Vec<u8> = theirs.iter().flatten().copied().collect();
        // libmnl leaves attribute padding as the buffer holds it, and nftnl's pages may come
        // recycled from malloc: compare theirs with zeroed padding, which ours must have.
        zero_padding(&mut theirs_wire);
        let (ours_wire, ours_seqs) = ours.finish();
        assert_eq!(ours_seqs, theirs.sequence_numbers());
        assert_eq!(ours_wire, theirs_wire);
        // Every message is there: begin, three, the element messages, end.
        assert_eq!(flags_of(&ours_wire).len(), 5 + messages.len());
    }

    /// A `GETSETELEM` request is libnftnl's too, keys and interval-end flags only.
    #[test]
    fn a_lookup_request_is_laid_out_as_libnftnl_does() {
        for (set, _, elems, _) in element_messages() {
            let ours = crate::nft::wire::get_elems_request(TABLE_NAME, set, &elems, 42).unwrap();
            let keys: Vec<KElem> = elems
                .iter()
                .map(|e| KElem {
                    flags: e.flags,
                    ..element(e.key.clone(), None)
                })
                .collect();
            let reference = LibnftnlElemMsg::new(TABLE_NAME, set, None, &keys, ElemOp::Get);
            let mut batch = nftnl::Batch::new();
            batch.add(&reference, MsgType::Add);
            let mut theirs: Vec<u8> = batch.finalize().iter().flatten().copied().collect();
            zero_padding(&mut theirs);
            // Theirs sits between a batch begin and end, each 20 bytes.
            let end = theirs.len() - 20;
            let theirs = &mut theirs[20..end];
            // The batch numbered it; ours asked for 42.
            theirs[8..12].copy_from_slice(&42_u32.to_ne_bytes());
            assert_eq!(ours, theirs, "lookup of set {set}");
        }
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
