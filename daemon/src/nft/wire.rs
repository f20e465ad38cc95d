//! Element messages (`NEWSETELEM`, `DELSETELEM`, `DESTROYSETELEM`, `GETSETELEM`) laid out in
//! plain Rust, byte for byte as libnftnl 1.2 lays them out.
//!
//! Every DNS answer that lets addresses through sends one of these between a batch begin and
//! end, on the answer's way. Built through libnftnl (a set object, an element object per
//! address, a setter call per attribute, the payload builder, then freeing it all) the batch
//! took ~2 µs in a warm loop but ~9 µs on a DNS thread, whose caches are cold when a query
//! wakes it; the layout is small and fixed, so it is written here directly into the batch
//! buffer. The batch tests compare every kind of message with what libnftnl writes.

use super::error::NftError;
use super::kernel::{FAMILY_INET, KElem};

/// Most kernel elements one element message carries: well below the 64 KiB attribute limit
/// for the elements shield writes (about 60 bytes each for IPv6 interval elements with user
/// data); [`ElemMsg::new`] checks the exact size.
pub const ELEMS_PER_MESSAGE: usize = 512;

/// `NFNL_SUBSYS_NFTABLES`, the high byte of every nf_tables message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END` (not nf_tables messages: no subsystem).
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;

/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_CREATE`.
const NLM_F_CREATE: u16 = 0x400;
/// `NLA_F_NESTED`: set on the type of every nested attribute (as libmnl does).
const NLA_F_NESTED: u16 = 0x8000;

/// `NFT_MSG_NEWSETELEM`.
const NFT_MSG_NEWSETELEM: u16 = 12;
/// `NFT_MSG_GETSETELEM`.
const NFT_MSG_GETSETELEM: u16 = 13;
/// `NFT_MSG_DELSETELEM`.
const NFT_MSG_DELSETELEM: u16 = 14;
/// `NFT_MSG_DESTROYSETELEM` (Linux 6.3): deletes elements, and is not refused for an element
/// that is not there.
const NFT_MSG_DESTROYSETELEM: u16 = 30;

/// `NFTA_SET_ELEM_LIST_*`: the attributes of an element message.
const LIST_TABLE: u16 = 1;
const LIST_SET: u16 = 2;
const LIST_ELEMENTS: u16 = 3;
const LIST_SET_ID: u16 = 4;

/// `NFTA_SET_ELEM_*`: the attributes of one element.
const ELEM_KEY: u16 = 1;
const ELEM_FLAGS: u16 = 3;
const ELEM_TIMEOUT: u16 = 4;
const ELEM_EXPIRATION: u16 = 5;
const ELEM_USERDATA: u16 = 6;

/// `NFTA_DATA_VALUE`: the key's bytes, inside `NFTA_SET_ELEM_KEY`.
const DATA_VALUE: u16 = 1;

/// Longest key an element may have (an IPv6 address).
const MAX_KEY: usize = 16;
/// Longest user data an element may carry (nft writes a few bytes).
const MAX_USERDATA: usize = 64;
/// Longest table or set name, terminating NUL excluded (`NFT_NAME_MAXLEN` − 1).
const MAX_NAME: usize = 255;

/// Netlink header (16 bytes) and `nfgenmsg` (4).
const HEADER_LEN: usize = 20;
/// An attribute's own header.
const ATTR_HEADER: usize = 4;

/// The message that opens or closes a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// `NFNL_MSG_BATCH_BEGIN`.
    Begin,
    /// `NFNL_MSG_BATCH_END`.
    End,
}

impl Boundary {
    /// Appends the message, with sequence number `seq`, asking for an acknowledgement if
    /// `acked` (the kernel acknowledges batch ends since 6.10; nftnl asks then).
    pub fn write(self, seq: u32, acked: bool, out: &mut Vec<u8>) {
        let kind = match self {
            Self::Begin => NFNL_MSG_BATCH_BEGIN,
            Self::End => NFNL_MSG_BATCH_END,
        };
        let flags = if acked {
            NLM_F_REQUEST | NLM_F_ACK
        } else {
            NLM_F_REQUEST
        };
        let start = out.len();
        header(out, kind, flags, seq);
        // nfgenmsg: no family, version 0, the subsystem the batch is for (big-endian).
        out.extend_from_slice(&[0, NFNETLINK_V0]);
        out.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        set_len(out, start);
    }
}

/// What an element message does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemOp {
    /// Add the elements (without `NLM_F_EXCL`: re-adding an element refreshes it, a timeout
    /// element gets its new timeout).
    Add,
    /// Delete the elements; the kernel refuses the batch if one is missing.
    Delete,
    /// Delete the elements that are present (`DESTROYSETELEM`): the kernel expires timeout
    /// elements on its own clock, so one may vanish between the daemon deciding to remove it
    /// and the batch arriving, and that must not fail the whole change.
    DeleteIfPresent,
    /// Look the elements up (not a dump): the kernel answers with one `NEWSETELEM` per
    /// element it finds, in order, or stops at the first it does not find with `ENOENT`.
    Get,
}

impl ElemOp {
    /// The message type and the netlink flags besides `NLM_F_REQUEST`.
    fn message(self) -> (u16, u16) {
        match self {
            Self::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_ACK),
            Self::Delete => (NFT_MSG_DELSETELEM, NLM_F_ACK),
            Self::DeleteIfPresent => (NFT_MSG_DESTROYSETELEM, NLM_F_ACK),
            Self::Get => (NFT_MSG_GETSETELEM, NLM_F_ACK),
        }
    }
}

/// Up to [`ELEMS_PER_MESSAGE`] elements of one set of table `table`, checked to fit one
/// message.
#[derive(Clone, Debug)]
pub struct ElemMsg<'a> {
    table: &'a str,
    set: &'a str,
    set_id: Option<u32>,
    elems: &'a [KElem],
}

impl<'a> ElemMsg<'a> {
    /// A message for `elems` of set `set` (`set_id` when the set is created in the same
    /// batch). Fails if a name cannot be sent (a NUL byte, too long), an element's key or user
    /// data is larger than shield ever writes, or the elements do not fit one message.
    pub fn new(
        table: &'a str,
        set: &'a str,
        set_id: Option<u32>,
        elems: &'a [KElem],
    ) -> Result<Self, NftError> {
        for (what, name) in [("table name", table), ("set name", set)] {
            if name.contains('\0') {
                return Err(NftError::encode(
                    format!("{what} {name:?}"),
                    "contains a NUL byte",
                ));
            }
            if name.len() > MAX_NAME {
                return Err(NftError::encode(
                    format!("{what} {name:?}"),
                    format!("longer than {MAX_NAME} bytes"),
                ));
            }
        }
        let too_many =
            || NftError::encode(format!("elements of set {set}"), "too many for one message");
        if elems.len() > ELEMS_PER_MESSAGE {
            return Err(too_many());
        }
        if let Some(e) = elems
            .iter()
            .find(|e| e.key.len() > MAX_KEY || e.userdata.len() > MAX_USERDATA)
        {
            return Err(NftError::encode(
                format!("elements of set {set}"),
                format!(
                    "element key of {} bytes, user data of {}",
                    e.key.len(),
                    e.userdata.len()
                ),
            ));
        }
        // Every attribute length is a u16, the list of elements included.
        let list: usize = ATTR_HEADER + elems.iter().map(elem_len).sum::<usize>();
        if list > usize::from(u16::MAX) {
            return Err(too_many());
        }
        Ok(Self {
            table,
            set,
            set_id,
            elems,
        })
    }

    /// Appends the message, doing `op`, with sequence number `seq`, to `out` (which holds
    /// whole messages: its length is a multiple of 4).
    pub fn write(&self, op: ElemOp, seq: u32, out: &mut Vec<u8>) {
        let (kind, flags) = op.message();
        let start = out.len();
        out.reserve(HEADER_LEN + self.attributes_len());
        header(
            out,
            NFNL_SUBSYS_NFTABLES << 8 | kind,
            NLM_F_REQUEST | flags,
            seq,
        );
        // nfgenmsg: family, version, resource id (big-endian, zero).
        out.extend_from_slice(&[low_byte(FAMILY_INET), NFNETLINK_V0, 0, 0]);

        put_name(out, LIST_SET, self.set);
        if let Some(id) = self.set_id {
            put(out, LIST_SET_ID, &id.to_be_bytes());
        }
        put_name(out, LIST_TABLE, self.table);
        if !self.elems.is_empty() {
            let list = nest_start(out, LIST_ELEMENTS);
            for (n, e) in self.elems.iter().enumerate() {
                // libnftnl numbers the list entries from 1 (the kernel ignores the number);
                // `new` bounds them far below u16::MAX.
                let entry = nest_start(out, u16::try_from(n + 1).unwrap_or(u16::MAX));
                if e.flags != 0 {
                    put(out, ELEM_FLAGS, &e.flags.to_be_bytes());
                }
                if let Some(ms) = e.timeout_ms {
                    put(out, ELEM_TIMEOUT, &ms.to_be_bytes());
                    // The expiration too: re-adding an element with only the timeout it
                    // already has leaves its expiry where it was, so a fresh DNS answer would
                    // not extend an address about to expire. With both, every add restarts
                    // the clock.
                    put(out, ELEM_EXPIRATION, &ms.to_be_bytes());
                }
                let key = nest_start(out, ELEM_KEY);
                put(out, DATA_VALUE, &e.key);
                nest_end(out, key);
                if !e.userdata.is_empty() {
                    put(out, ELEM_USERDATA, &e.userdata);
                }
                nest_end(out, entry);
            }
            nest_end(out, list);
        }
        set_len(out, start);
    }

    /// The bytes the attributes take (the message less its headers), to reserve them at once.
    fn attributes_len(&self) -> usize {
        let name = |name: &str| ATTR_HEADER + (name.len() + 1).next_multiple_of(4);
        let set_id = if self.set_id.is_some() {
            ATTR_HEADER + 4
        } else {
            0
        };
        let list = if self.elems.is_empty() {
            0
        } else {
            ATTR_HEADER + self.elems.iter().map(elem_len).sum::<usize>()
        };
        name(self.table) + name(self.set) + set_id + list
    }
}

/// Appends a netlink header (its length left for [`set_len`]).
fn header(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    out.extend_from_slice(&0_u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    // Port id: the kernel's.
    out.extend_from_slice(&0_u32.to_ne_bytes());
}

/// Writes the length of the message that starts at `start` and ends `out`.
fn set_len(out: &mut [u8], start: usize) {
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    if let Some(field) = out.get_mut(start..start + 4) {
        field.copy_from_slice(&len.to_ne_bytes());
    }
}

/// The bytes one element takes in the list, its own header included.
fn elem_len(e: &KElem) -> usize {
    let attr = |len: usize| ATTR_HEADER + len.next_multiple_of(4);
    let mut len = ATTR_HEADER + ATTR_HEADER + attr(e.key.len());
    if e.flags != 0 {
        len += attr(4);
    }
    if e.timeout_ms.is_some() {
        len += 2 * attr(8);
    }
    if !e.userdata.is_empty() {
        len += attr(e.userdata.len());
    }
    len
}

/// The low byte of a family number (they are all below 256).
fn low_byte(value: u16) -> u8 {
    value.to_le_bytes()[0]
}

/// Appends attribute `kind` holding `data`, padded with zeros to 4 bytes.
fn put(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    // Callers pass at most a name or a key: far below u16::MAX.
    let len = u16::try_from(ATTR_HEADER + data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Appends a string attribute with its terminating NUL, as `mnl_attr_put_strz` does.
fn put_name(out: &mut Vec<u8>, kind: u16, name: &str) {
    let len = u16::try_from(ATTR_HEADER + name.len() + 1).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Opens nested attribute `kind`; returns where it starts, for [`nest_end`].
fn nest_start(out: &mut Vec<u8>, kind: u16) -> usize {
    let start = out.len();
    out.extend_from_slice(&0_u16.to_ne_bytes());
    out.extend_from_slice(&(NLA_F_NESTED | kind).to_ne_bytes());
    start
}

/// Closes the nested attribute opened at `start`: its length is all that follows it.
fn nest_end(out: &mut [u8], start: usize) {
    // `ElemMsg::new` checked that the largest nest, the element list, fits a u16.
    let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
    if let Some(field) = out.get_mut(start..start + 2) {
        field.copy_from_slice(&len.to_ne_bytes());
    }
}

/// Builds a `GETSETELEM` request (not a dump; `NLM_F_ACK`) for `elems` of set `set`: the kernel
/// answers with one `NEWSETELEM` per element it finds, in order, then an ACK, or stops at the
/// first element it does not find with `ENOENT`.
///
/// Only the key and the interval-end flag of each element are sent: they are what the kernel
/// looks an element up by.
pub fn get_elems_request(
    table: &str,
    set: &str,
    elems: &[KElem],
    seq: u32,
) -> Result<Vec<u8>, NftError> {
    let keys: Vec<KElem> = elems
        .iter()
        .map(|e| KElem {
            key: e.key.clone(),
            flags: e.flags,
            timeout_ms: None,
            userdata: Vec::new(),
            extra: None,
        })
        .collect();
    let mut bytes = Vec::new();
    ElemMsg::new(table, set, None, &keys)?.write(ElemOp::Get, seq, &mut bytes);
    Ok(bytes)
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;

    /// An element with just a key and maybe a timeout (the tests' building block).
    pub(in crate::nft) fn elem(key: Vec<u8>, timeout_ms: Option<u64>) -> KElem {
        KElem {
            key,
            flags: 0,
            timeout_ms,
            userdata: Vec::new(),
            extra: None,
        }
    }

    #[test]
    fn a_message_is_as_long_as_it_says_and_padded() {
        let elems = [elem(vec![10, 0, 0, 1], Some(30_000))];
        let mut out = Vec::new();
        ElemMsg::new("shield", "dns_v4", None, &elems)
            .unwrap()
            .write(ElemOp::Add, 7, &mut out);
        assert_eq!(out.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(out[..4].try_into().unwrap()) as usize,
            out.len()
        );
        assert_eq!(u16::from_ne_bytes([out[4], out[5]]), 10 << 8 | 12);
        assert_eq!(u32::from_ne_bytes(out[8..12].try_into().unwrap()), 7);
        // Header, set and table names, the list holding one element.
        assert_eq!(
            HEADER_LEN + 12 + 12 + ATTR_HEADER + elem_len(&elems[0]),
            out.len()
        );
        // What `write` reserves is what it writes, whatever the message holds.
        let v6 = [KElem {
            flags: 1,
            userdata: vec![0, 1, 1],
            ..elem(vec![0x20; 16], None)
        }];
        for (set_id, elems) in [(None, &v6[..]), (Some(3), &v6[..]), (None, &[][..])] {
            let msg = ElemMsg::new("shield", "allow_nets_v6", set_id, elems).unwrap();
            let mut out = Vec::new();
            msg.write(ElemOp::Delete, 1, &mut out);
            assert_eq!(out.len(), HEADER_LEN + msg.attributes_len());
        }
    }

    #[test]
    fn names_and_elements_that_cannot_be_sent_are_refused() {
        let fine = [elem(vec![10, 0, 0, 1], None)];
        assert!(ElemMsg::new("shield", "dns\0v4", None, &fine).is_err());
        assert!(ElemMsg::new(&"t".repeat(256), "dns_v4", None, &fine).is_err());
        let long_key = [elem(vec![0; 17], None)];
        assert!(ElemMsg::new("shield", "dns_v4", None, &long_key).is_err());
        let too_many = vec![elem(vec![10, 0, 0, 1], None); ELEMS_PER_MESSAGE + 1];
        assert!(ElemMsg::new("shield", "dns_v4", None, &too_many).is_err());
        // As many as allowed, each as large as allowed: more than a u16 of attributes.
        let largest = KElem {
            flags: 1,
            userdata: vec![0; MAX_USERDATA],
            ..elem(vec![0; MAX_KEY], Some(1))
        };
        let heavy = vec![largest; ELEMS_PER_MESSAGE];
        assert!(ElemMsg::new("shield", "dns_v6", None, &heavy).is_err());
        assert!(ElemMsg::new("shield", "dns_v6", None, &heavy[..400]).is_ok());
    }
}
