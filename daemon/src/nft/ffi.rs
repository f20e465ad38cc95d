//! The libnftnl shims: [`super::kernel`] values ↔ nf_tables netlink messages.
//!
//! The `nftnl` crate covers tables, base chains, rules and batches; this module fills its gaps
//! over the re-exported `nftnl::nftnl_sys` bindings: every expression shield writes (`log`
//! included) through the public [`Expression`] trait, sets with flags and nft's user data,
//! batches laid out as nftnl lays them out but in one reused buffer ([`BatchWriter`], which also
//! takes the element messages [`super::wire`] writes without libnftnl), dump requests, and the
//! parsing of dumped tables, sets, elements, chains and rules back into plain data.
//!
//! This is the only place in the netlink layer that touches raw pointers. Each libnftnl object
//! is owned by a small guard that frees it on every path; no pointer outlives the function that
//! allocated it, and no libnftnl object here is `Send`, so callers build and parse inside one
//! blocking call.
#![allow(
    unsafe_code,
    reason = "FFI to libnftnl: building and parsing nf_tables netlink messages"
)]

use std::ffi::{CStr, CString, c_void};
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;

use nftnl::expr::Expression;
use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{MsgType, NlMsg};

use super::error::NftError;
use super::kernel::{Expr, FAMILY_INET, KChain, KElem, KRule, KSet, REG_VERDICT};
use super::wire::{Boundary, ElemMsg, ElemOp};

/// A libnftnl attribute number as the setters and getters take it.
#[allow(
    clippy::cast_possible_truncation,
    reason = "libnftnl attribute numbers are small enums passed as u16"
)]
const fn attr(a: u32) -> u16 {
    a as u16
}

/// A netfilter message type as nlmsg_type carries it (libnftnl adds the subsystem).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "NFT_MSG_* and NLM_F_* are small positive constants"
)]
const fn u16_of(v: c_int) -> u16 {
    v as u16
}

/// Length as libnftnl wants it; every buffer here is far below 4 GiB.
fn len_u32(data: &[u8]) -> u32 {
    u32::try_from(data.len()).unwrap_or(u32::MAX)
}

macro_rules! owned {
    ($name:ident, $raw:ty, $alloc:path, $free:path) => {
        /// Owns one libnftnl object and frees it when dropped.
        struct $name(NonNull<$raw>);

        impl $name {
            fn new() -> Result<Self, NftError> {
                // SAFETY: the allocator takes no arguments and returns an owned object or NULL.
                let raw = unsafe { $alloc() };
                NonNull::new(raw).map(Self).ok_or(NftError::Encode {
                    what: stringify!($raw).to_owned(),
                    reason: "out of memory".to_owned(),
                })
            }

            fn ptr(&self) -> *mut $raw {
                self.0.as_ptr()
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: we own the object (allocated by `new`, never handed over) and free it
                // exactly once.
                unsafe { $free(self.0.as_ptr()) }
            }
        }
    };
}

owned!(
    OwnedSet,
    sys::nftnl_set,
    sys::nftnl_set_alloc,
    sys::nftnl_set_free
);
owned!(
    OwnedTable,
    sys::nftnl_table,
    sys::nftnl_table_alloc,
    sys::nftnl_table_free
);
owned!(
    OwnedChain,
    sys::nftnl_chain,
    sys::nftnl_chain_alloc,
    sys::nftnl_chain_free
);
owned!(
    OwnedRule,
    sys::nftnl_rule,
    sys::nftnl_rule_alloc,
    sys::nftnl_rule_free
);

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Allocates an expression by name; libnftnl only returns NULL for an unknown name or OOM.
fn expr_alloc(name: &CStr) -> NonNull<sys::nftnl_expr> {
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let raw = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
    match NonNull::new(raw) {
        Some(expr) => expr,
        // Every name used here is one libnftnl knows; NULL means out of memory, which the
        // `nftnl` crate treats the same way.
        None => std::process::abort(),
    }
}

fn set_u32(expr: NonNull<sys::nftnl_expr>, a: u32, v: u32) {
    // SAFETY: `expr` is a live expression we own; libnftnl copies the value.
    unsafe { sys::nftnl_expr_set_u32(expr.as_ptr(), attr(a), v) }
}

fn set_data(expr: NonNull<sys::nftnl_expr>, a: u32, data: &[u8]) {
    // SAFETY: `expr` is live; `data` is valid for `data.len()` bytes and libnftnl copies it.
    unsafe {
        sys::nftnl_expr_set(
            expr.as_ptr(),
            attr(a),
            data.as_ptr().cast::<c_void>(),
            len_u32(data),
        );
    }
}

impl Expression for Expr {
    fn to_expr(&self, _rule: &nftnl::Rule<'_>) -> NonNull<sys::nftnl_expr> {
        match self {
            Self::Meta { key, dreg } => {
                let e = expr_alloc(c"meta");
                set_u32(e, sys::NFTNL_EXPR_META_DREG, *dreg);
                set_u32(e, sys::NFTNL_EXPR_META_KEY, *key);
                e
            }
            Self::Ct { key, dreg } => {
                let e = expr_alloc(c"ct");
                set_u32(e, sys::NFTNL_EXPR_CT_DREG, *dreg);
                set_u32(e, sys::NFTNL_EXPR_CT_KEY, *key);
                e
            }
            Self::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let e = expr_alloc(c"payload");
                set_u32(e, sys::NFTNL_EXPR_PAYLOAD_BASE, *base);
                set_u32(e, sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset);
                set_u32(e, sys::NFTNL_EXPR_PAYLOAD_LEN, *len);
                set_u32(e, sys::NFTNL_EXPR_PAYLOAD_DREG, *dreg);
                e
            }
            Self::Cmp { sreg, op, data } => {
                let e = expr_alloc(c"cmp");
                set_u32(e, sys::NFTNL_EXPR_CMP_SREG, *sreg);
                set_u32(e, sys::NFTNL_EXPR_CMP_OP, *op);
                set_data(e, sys::NFTNL_EXPR_CMP_DATA, data);
                e
            }
            Self::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                let e = expr_alloc(c"bitwise");
                set_u32(e, sys::NFTNL_EXPR_BITWISE_SREG, *sreg);
                set_u32(e, sys::NFTNL_EXPR_BITWISE_DREG, *dreg);
                set_u32(e, sys::NFTNL_EXPR_BITWISE_LEN, len_u32(mask));
                set_data(e, sys::NFTNL_EXPR_BITWISE_MASK, mask);
                set_data(e, sys::NFTNL_EXPR_BITWISE_XOR, xor);
                e
            }
            Self::Lookup { sreg, set, set_id } => {
                let e = expr_alloc(c"lookup");
                set_u32(e, sys::NFTNL_EXPR_LOOKUP_SREG, *sreg);
                // A name with a NUL byte was refused by the encoder; an empty name here would
                // make the kernel refuse the batch rather than match anything.
                let name = CString::new(set.as_str()).unwrap_or_default();
                // SAFETY: `e` is live; `name` is NUL-terminated and libnftnl copies it.
                unsafe {
                    sys::nftnl_expr_set_str(
                        e.as_ptr(),
                        attr(sys::NFTNL_EXPR_LOOKUP_SET),
                        name.as_ptr(),
                    );
                }
                if let Some(id) = set_id {
                    set_u32(e, sys::NFTNL_EXPR_LOOKUP_SET_ID, *id);
                }
                e
            }
            Self::Log { prefix, group } => {
                let e = expr_alloc(c"log");
                if let Some(group) = group {
                    // SAFETY: `e` is live; libnftnl copies the value.
                    unsafe {
                        sys::nftnl_expr_set_u16(
                            e.as_ptr(),
                            attr(sys::NFTNL_EXPR_LOG_GROUP),
                            *group,
                        );
                    }
                }
                if let Some(prefix) = prefix {
                    let prefix = CString::new(prefix.as_str()).unwrap_or_default();
                    // SAFETY: `e` is live; `prefix` is NUL-terminated and libnftnl copies it.
                    unsafe {
                        sys::nftnl_expr_set_str(
                            e.as_ptr(),
                            attr(sys::NFTNL_EXPR_LOG_PREFIX),
                            prefix.as_ptr(),
                        );
                    }
                }
                e
            }
            Self::Counter { .. } => expr_alloc(c"counter"),
            Self::Verdict(verdict) => {
                let e = expr_alloc(c"immediate");
                set_u32(e, sys::NFTNL_EXPR_IMM_DREG, REG_VERDICT);
                set_u32(e, sys::NFTNL_EXPR_IMM_VERDICT, verdict.cast_unsigned());
                e
            }
            Self::Reject { kind, code } => {
                let e = expr_alloc(c"reject");
                set_u32(e, sys::NFTNL_EXPR_REJECT_TYPE, *kind);
                if let Some(code) = code {
                    // SAFETY: `e` is live; libnftnl copies the value.
                    unsafe {
                        sys::nftnl_expr_set_u8(
                            e.as_ptr(),
                            attr(sys::NFTNL_EXPR_REJECT_CODE),
                            *code,
                        );
                    }
                }
                e
            }
            // The encoder never produces this (the batch builder refuses it first). Should it
            // ever get here, a `cmp` without data makes the kernel refuse the whole batch:
            // failing closed, never writing a rule that matches something else.
            Self::Unsupported { .. } => expr_alloc(c"cmp"),
        }
    }
}

/// `NEWSET` for one named set of table `inet shield`.
pub struct SetMsg {
    table: CString,
    name: CString,
    id: u32,
    set: KSet,
    userdata: Vec<u8>,
}

impl SetMsg {
    /// A message creating `set` (created in the batch with id `id`).
    pub fn new(table: &str, set: KSet, id: u32, userdata: &[u8]) -> Result<Self, NftError> {
        Ok(Self {
            table: cstring(table, "table name")?,
            name: cstring(&set.name, "set name")?,
            id,
            set,
            userdata: userdata.to_vec(),
        })
    }
}

fn cstring(s: &str, what: &str) -> Result<CString, NftError> {
    CString::new(s).map_err(|_| NftError::encode(format!("{what} {s:?}"), "contains a NUL byte"))
}

/// Fills table, name, family (and id) of a set object used as message payload.
fn set_identity(set: &OwnedSet, table: &CStr, name: Option<&CStr>, id: Option<u32>) {
    // SAFETY: `set` is live; strings are NUL-terminated and copied by libnftnl.
    unsafe {
        sys::nftnl_set_set_str(set.ptr(), attr(sys::NFTNL_SET_TABLE), table.as_ptr());
        if let Some(name) = name {
            sys::nftnl_set_set_str(set.ptr(), attr(sys::NFTNL_SET_NAME), name.as_ptr());
        }
        sys::nftnl_set_set_u32(
            set.ptr(),
            attr(sys::NFTNL_SET_FAMILY),
            u32::from(FAMILY_INET),
        );
        if let Some(id) = id {
            sys::nftnl_set_set_u32(set.ptr(), attr(sys::NFTNL_SET_ID), id);
        }
    }
}

/// Writes a netlink header at `buf`; returns it for the payload builders.
///
/// # Safety
/// `buf` must point to at least `nft_nlmsg_maxsize()` writable bytes, suitably aligned.
unsafe fn header(buf: *mut c_void, msg: c_int, flags: c_int, seq: u32) -> *mut libc::nlmsghdr {
    // SAFETY: guaranteed by the caller.
    unsafe {
        sys::nftnl_nlmsg_build_hdr(
            buf.cast::<c_char>(),
            u16_of(msg),
            FAMILY_INET,
            u16_of(flags),
            seq,
        )
    }
}

// SAFETY: a set message is a few hundred bytes (names of at most 255 bytes, a 6-byte user data),
// far below `nft_nlmsg_maxsize()`.
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let Ok(set) = OwnedSet::new() else {
            std::process::abort();
        };
        set_identity(&set, &self.table, Some(&self.name), Some(self.id));
        // SAFETY: `set` is live; values and user data are copied by libnftnl.
        unsafe {
            sys::nftnl_set_set_u32(set.ptr(), attr(sys::NFTNL_SET_FLAGS), self.set.flags);
            sys::nftnl_set_set_u32(set.ptr(), attr(sys::NFTNL_SET_KEY_TYPE), self.set.key_type);
            sys::nftnl_set_set_u32(set.ptr(), attr(sys::NFTNL_SET_KEY_LEN), self.set.key_len);
            if !self.userdata.is_empty() {
                sys::nftnl_set_set_data(
                    set.ptr(),
                    attr(sys::NFTNL_SET_USERDATA),
                    self.userdata.as_ptr().cast::<c_void>(),
                    len_u32(&self.userdata),
                );
            }
        }
        let (msg, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSET, libc::NLM_F_ACK),
        };
        // SAFETY: `buf` has room for the largest message (the caller's contract); the header
        // returned points into it and `set` is live.
        unsafe {
            let nlh = header(buf, msg, flags, seq);
            sys::nftnl_set_nlmsg_build_payload(nlh, set.ptr());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

/// Whether the batch begin and end messages ask for an acknowledgement (and take sequence
/// numbers): nftnl decides it from the kernel version (6.10+), and keeps the decision to itself;
/// an empty batch of its own shows it (two sequence numbers, or none).
static ENDS_ACKED: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    let seqs = nftnl::Batch::new().finalize().sequence_numbers();
    seqs.end.saturating_sub(seqs.start) == 2
});

thread_local! {
    /// Where [`BatchWriter`] builds each message: `nft_nlmsg_maxsize()` bytes, in u32 words so
    /// that it is aligned for `nlmsghdr`, made once per thread.
    static SCRATCH: std::cell::RefCell<Vec<u32>> = std::cell::RefCell::new(vec![
        0_u32;
        usize::try_from(nftnl::nft_nlmsg_maxsize()).unwrap_or(usize::MAX).div_ceil(4)
    ]);
}

/// The messages of one batch, back to back in one buffer, as `nftnl::Batch` lays them out
/// (same begin and end messages, same sequence numbers) without its ~200 KiB of pages per
/// batch: each message is built in a per-thread scratch buffer and copied out. A DNS answer's
/// insert is a batch of three small messages; allocating, faulting in and freeing nftnl's pages
/// for it cost more than building them.
pub struct BatchWriter {
    wire: Vec<u8>,
    /// The sequence numbers given so far (the next one is `end`).
    seqs: std::ops::Range<u32>,
}

impl BatchWriter {
    /// A batch holding its begin message.
    pub fn new() -> Self {
        let mut writer = Self {
            wire: Vec::new(),
            seqs: 1..1,
        };
        writer.boundary(Boundary::Begin);
        writer
    }

    /// Appends `msg` as `msg_type`, with the next sequence number.
    pub fn add<T: NlMsg>(&mut self, msg: &T, msg_type: MsgType) {
        let seq = self.seqs.end;
        // SAFETY: the scratch buffer holds `nft_nlmsg_maxsize()` aligned bytes, the room every
        // `NlMsg` of nftnl and of this module is written into (nftnl's batch pages give the
        // same).
        self.write(|buf| unsafe { msg.write(buf, seq, msg_type) });
        self.seqs.end = self.seqs.end.saturating_add(1);
    }

    /// Appends element message `msg` doing `op`, with the next sequence number. Written straight
    /// into the batch (see [`super::wire`]), not through libnftnl and the scratch buffer.
    pub fn add_elements(&mut self, msg: &ElemMsg<'_>, op: ElemOp) {
        msg.write(op, self.seqs.end, &mut self.wire);
        self.seqs.end = self.seqs.end.saturating_add(1);
    }

    /// Appends the end message; returns the bytes and the sequence numbers given.
    pub fn finish(mut self) -> (Vec<u8>, std::ops::Range<u32>) {
        self.boundary(Boundary::End);
        (self.wire, self.seqs)
    }

    /// Appends a batch begin or end message, acknowledged (with a sequence number) when the
    /// kernel acknowledges them, as nftnl does.
    fn boundary(&mut self, boundary: Boundary) {
        let acked = *ENDS_ACKED;
        let seq = if acked { self.seqs.end } else { 0 };
        boundary.write(seq, acked, &mut self.wire);
        if acked {
            self.seqs.end = self.seqs.end.saturating_add(1);
        }
    }

    /// Runs `build` on the scratch buffer and appends the message it wrote there.
    fn write(&mut self, build: impl FnOnce(*mut c_void)) {
        SCRATCH.with_borrow_mut(|words| {
            let buf = words.as_mut_ptr().cast::<c_void>();
            build(buf);
            let bytes: &[u8] = as_bytes(words);
            let len = bytes
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, u32::from_ne_bytes);
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(bytes.len());
            // Messages follow each other at 4-byte boundaries (libmnl pads every attribute).
            self.wire
                .extend_from_slice(bytes.get(..len).unwrap_or_default());
            self.wire.resize(self.wire.len().next_multiple_of(4), 0);
            // libmnl leaves attribute padding as it finds it: zeroed after use, the scratch
            // buffer gives the next message zeros there, as fresh pages would.
            if let Some(used) = words.get_mut(..len.div_ceil(4)) {
                used.fill(0);
            }
        });
    }
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// The bytes of `words`, in memory order.
fn as_bytes(words: &[u32]) -> &[u8] {
    // SAFETY: any u32 is four initialised bytes; the slice covers exactly the words' memory
    // and borrows them for as long.
    unsafe {
        std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len().saturating_mul(4))
    }
}

// ---------------------------------------------------------------------------------------------
// Dump requests
// ---------------------------------------------------------------------------------------------

/// What a dump request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpKind {
    /// All tables (filtered by the reader).
    Tables,
    /// The sets of table `inet shield`.
    Sets,
    /// The elements of one set.
    Elems,
    /// All chains (filtered by the reader).
    Chains,
    /// The rules of table `inet shield`.
    Rules,
}

impl DumpKind {
    /// The `NFT_MSG_GET*` message type.
    pub const fn get_msg(self) -> c_int {
        match self {
            Self::Tables => libc::NFT_MSG_GETTABLE,
            Self::Sets => libc::NFT_MSG_GETSET,
            Self::Elems => libc::NFT_MSG_GETSETELEM,
            Self::Chains => libc::NFT_MSG_GETCHAIN,
            Self::Rules => libc::NFT_MSG_GETRULE,
        }
    }

    /// The `NFT_MSG_NEW*` type the kernel's replies carry (without the subsystem byte).
    pub const fn reply_msg(self) -> c_int {
        match self {
            Self::Tables => libc::NFT_MSG_NEWTABLE,
            Self::Sets => libc::NFT_MSG_NEWSET,
            Self::Elems => libc::NFT_MSG_NEWSETELEM,
            Self::Chains => libc::NFT_MSG_NEWCHAIN,
            Self::Rules => libc::NFT_MSG_NEWRULE,
        }
    }

    /// A short name for errors.
    pub const fn noun(self) -> &'static str {
        match self {
            Self::Tables => "tables",
            Self::Sets => "sets",
            Self::Elems => "set elements",
            Self::Chains => "chains",
            Self::Rules => "rules",
        }
    }
}

/// Builds a `NLM_F_DUMP` request of `kind` for table `table` (and set `set` for elements).
pub fn dump_request(
    kind: DumpKind,
    table: &str,
    set: Option<&str>,
    seq: u32,
) -> Result<Vec<u8>, NftError> {
    let table = cstring(table, "table name")?;
    let set = set.map(|s| cstring(s, "set name")).transpose()?;
    // A u32 buffer is aligned for `nlmsghdr`; a dump request is well under 4 KiB.
    let mut words = vec![0u32; 1024];
    let buf = words.as_mut_ptr().cast::<c_void>();
    let flags = libc::NLM_F_DUMP;
    // SAFETY: `buf` holds 4096 aligned writable bytes; each request below is a header plus at
    // most two short string attributes. Every object is live while its payload is built.
    let len = unsafe {
        let nlh = header(buf, kind.get_msg(), flags, seq);
        match kind {
            DumpKind::Tables => {}
            DumpKind::Chains => {
                let chain = OwnedChain::new()?;
                sys::nftnl_chain_set_str(chain.ptr(), attr(sys::NFTNL_CHAIN_TABLE), table.as_ptr());
                sys::nftnl_chain_nlmsg_build_payload(nlh, chain.ptr());
            }
            DumpKind::Sets => {
                let s = OwnedSet::new()?;
                set_identity(&s, &table, None, None);
                sys::nftnl_set_nlmsg_build_payload(nlh, s.ptr());
            }
            DumpKind::Elems => {
                let s = OwnedSet::new()?;
                set_identity(&s, &table, set.as_deref(), None);
                sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.ptr());
            }
            DumpKind::Rules => {
                let rule = OwnedRule::new()?;
                sys::nftnl_rule_set_str(rule.ptr(), attr(sys::NFTNL_RULE_TABLE), table.as_ptr());
                sys::nftnl_rule_set_u32(
                    rule.ptr(),
                    attr(sys::NFTNL_RULE_FAMILY),
                    u32::from(FAMILY_INET),
                );
                sys::nftnl_rule_nlmsg_build_payload(nlh, rule.ptr());
            }
        }
        (*nlh).nlmsg_len as usize
    };
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    bytes.truncate(len);
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Checks that `msg` is one whole, aligned netlink message and returns its header pointer.
fn nlh(msg: &[u8]) -> Result<*const libc::nlmsghdr, NftError> {
    let ptr = msg.as_ptr().cast::<libc::nlmsghdr>();
    let len_ok = msg.len() >= size_of::<libc::nlmsghdr>()
        && msg
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .is_some_and(|b| u32::from_ne_bytes(b) as usize == msg.len());
    if !ptr.is_aligned() || !len_ok {
        return Err(NftError::Protocol(
            "misaligned or truncated message".to_owned(),
        ));
    }
    Ok(ptr)
}

/// Copies a NUL-terminated string returned by a libnftnl getter.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for the call.
unsafe fn string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    Some(s.to_string_lossy().into_owned())
}

/// Identity of a dumped object: the table it belongs to and its family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Table name.
    pub table: String,
    /// Address family (`NFPROTO_*`).
    pub family: u32,
}

impl Owner {
    /// Whether the object belongs to table `inet shield`.
    pub fn is(&self, table: &str) -> bool {
        self.table == table && self.family == u32::from(FAMILY_INET)
    }
}

/// Parses a `NEWTABLE` message: (name and family, flags).
pub fn parse_table(msg: &[u8]) -> Result<(Owner, u32), NftError> {
    let nlh = nlh(msg)?;
    let t = OwnedTable::new()?;
    // SAFETY: `nlh` is a whole aligned message (checked); `t` is live; getters return data
    // owned by `t`, copied before `t` is dropped.
    unsafe {
        if sys::nftnl_table_nlmsg_parse(nlh, t.ptr()) < 0 {
            return Err(NftError::Parse("table"));
        }
        let name = string(sys::nftnl_table_get_str(
            t.ptr(),
            attr(sys::NFTNL_TABLE_NAME),
        ))
        .unwrap_or_default();
        let family = sys::nftnl_table_get_u32(t.ptr(), attr(sys::NFTNL_TABLE_FAMILY));
        let flags = sys::nftnl_table_get_u32(t.ptr(), attr(sys::NFTNL_TABLE_FLAGS));
        Ok((
            Owner {
                table: name,
                family,
            },
            flags,
        ))
    }
}

/// Parses a `NEWSET` message.
pub fn parse_set(msg: &[u8]) -> Result<(Owner, KSet), NftError> {
    let nlh = nlh(msg)?;
    let s = OwnedSet::new()?;
    // SAFETY: as in `parse_table`.
    unsafe {
        if sys::nftnl_set_nlmsg_parse(nlh, s.ptr()) < 0 {
            return Err(NftError::Parse("set"));
        }
        let p = s.ptr();
        let is_set = |a: u32| sys::nftnl_set_is_set(p, attr(a));
        let owner = Owner {
            table: string(sys::nftnl_set_get_str(p, attr(sys::NFTNL_SET_TABLE)))
                .unwrap_or_default(),
            family: sys::nftnl_set_get_u32(p, attr(sys::NFTNL_SET_FAMILY)),
        };
        let set = KSet {
            name: string(sys::nftnl_set_get_str(p, attr(sys::NFTNL_SET_NAME))).unwrap_or_default(),
            flags: sys::nftnl_set_get_u32(p, attr(sys::NFTNL_SET_FLAGS)),
            key_type: sys::nftnl_set_get_u32(p, attr(sys::NFTNL_SET_KEY_TYPE)),
            key_len: sys::nftnl_set_get_u32(p, attr(sys::NFTNL_SET_KEY_LEN)),
            default_timeout_ms: is_set(sys::NFTNL_SET_TIMEOUT)
                .then(|| sys::nftnl_set_get_u64(p, attr(sys::NFTNL_SET_TIMEOUT))),
            is_map: is_set(sys::NFTNL_SET_DATA_TYPE) || is_set(sys::NFTNL_SET_OBJ_TYPE),
        };
        Ok((owner, set))
    }
}

/// Collects the elements of a parsed set (callback of `nftnl_set_elem_foreach`).
unsafe extern "C" fn collect_elem(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Vec<KElem>` passed by `parse_elems`, exclusively borrowed for the
    // duration of the foreach; `e` is a live element of the set being iterated.
    unsafe {
        let out = &mut *data.cast::<Vec<KElem>>();
        let is_set = |a: u32| sys::nftnl_set_elem_is_set(e, attr(a));
        let mut len = 0u32;
        let key_ptr = sys::nftnl_set_elem_get(e, attr(sys::NFTNL_SET_ELEM_KEY), &mut len);
        let key = if key_ptr.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(key_ptr.cast::<u8>(), len as usize).to_vec()
        };
        let extra = [
            (sys::NFTNL_SET_ELEM_DATA, "data"),
            (sys::NFTNL_SET_ELEM_VERDICT, "a verdict"),
            (sys::NFTNL_SET_ELEM_CHAIN, "a chain"),
            (sys::NFTNL_SET_ELEM_OBJREF, "an object reference"),
            (sys::NFTNL_SET_ELEM_EXPR, "an expression"),
            (sys::NFTNL_SET_ELEM_KEY_END, "a range end key"),
        ]
        .iter()
        .find(|(a, _)| is_set(*a))
        .map(|(_, what)| (*what).to_owned());
        out.push(KElem {
            key,
            flags: if is_set(sys::NFTNL_SET_ELEM_FLAGS) {
                sys::nftnl_set_elem_get_u32(e, attr(sys::NFTNL_SET_ELEM_FLAGS))
            } else {
                0
            },
            timeout_ms: is_set(sys::NFTNL_SET_ELEM_TIMEOUT)
                .then(|| sys::nftnl_set_elem_get_u64(e, attr(sys::NFTNL_SET_ELEM_TIMEOUT))),
            userdata: Vec::new(),
            extra,
        });
    }
    0
}

/// Parses a `NEWSETELEM` message: the set it belongs to and its elements.
pub fn parse_elems(msg: &[u8]) -> Result<(Owner, String, Vec<KElem>), NftError> {
    let nlh = nlh(msg)?;
    let s = OwnedSet::new()?;
    let mut out: Vec<KElem> = Vec::new();
    // SAFETY: as in `parse_table`; `out` outlives the foreach that writes to it.
    unsafe {
        if sys::nftnl_set_elems_nlmsg_parse(nlh, s.ptr()) < 0 {
            return Err(NftError::Parse("set element"));
        }
        let p = s.ptr();
        let owner = Owner {
            table: string(sys::nftnl_set_get_str(p, attr(sys::NFTNL_SET_TABLE)))
                .unwrap_or_default(),
            family: sys::nftnl_set_get_u32(p, attr(sys::NFTNL_SET_FAMILY)),
        };
        let name = string(sys::nftnl_set_get_str(p, attr(sys::NFTNL_SET_NAME))).unwrap_or_default();
        sys::nftnl_set_elem_foreach(p, Some(collect_elem), (&raw mut out).cast::<c_void>());
        Ok((owner, name, out))
    }
}

/// Parses a `NEWCHAIN` message.
pub fn parse_chain(msg: &[u8]) -> Result<(Owner, KChain), NftError> {
    let nlh = nlh(msg)?;
    let c = OwnedChain::new()?;
    // SAFETY: as in `parse_table`.
    unsafe {
        if sys::nftnl_chain_nlmsg_parse(nlh, c.ptr()) < 0 {
            return Err(NftError::Parse("chain"));
        }
        let p = c.ptr();
        let is_set = |a: u32| sys::nftnl_chain_is_set(p, attr(a));
        let owner = Owner {
            table: string(sys::nftnl_chain_get_str(p, attr(sys::NFTNL_CHAIN_TABLE)))
                .unwrap_or_default(),
            family: sys::nftnl_chain_get_u32(p, attr(sys::NFTNL_CHAIN_FAMILY)),
        };
        let chain = KChain {
            name: string(sys::nftnl_chain_get_str(p, attr(sys::NFTNL_CHAIN_NAME)))
                .unwrap_or_default(),
            hook: is_set(sys::NFTNL_CHAIN_HOOKNUM)
                .then(|| sys::nftnl_chain_get_u32(p, attr(sys::NFTNL_CHAIN_HOOKNUM))),
            priority: sys::nftnl_chain_get_s32(p, attr(sys::NFTNL_CHAIN_PRIO)),
            policy: is_set(sys::NFTNL_CHAIN_POLICY)
                .then(|| sys::nftnl_chain_get_u32(p, attr(sys::NFTNL_CHAIN_POLICY))),
            chain_type: if is_set(sys::NFTNL_CHAIN_TYPE) {
                string(sys::nftnl_chain_get_str(p, attr(sys::NFTNL_CHAIN_TYPE)))
            } else {
                None
            },
        };
        Ok((owner, chain))
    }
}

/// Reads one expression (callback of `nftnl_expr_foreach`).
unsafe extern "C" fn collect_expr(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Vec<Expr>` passed by `parse_rule`, exclusively borrowed for the
    // foreach; `e` is a live expression of the rule being iterated.
    unsafe {
        let out = &mut *data.cast::<Vec<Expr>>();
        out.push(read_expr(e));
    }
    0
}

/// Decodes one expression by name into [`Expr`].
///
/// # Safety
/// `e` must be a live libnftnl expression.
unsafe fn read_expr(e: *mut sys::nftnl_expr) -> Expr {
    // SAFETY: `e` is live (caller's contract); getters return values or pointers into `e`, which
    // are copied at once.
    unsafe {
        let is_set = |a: u32| sys::nftnl_expr_is_set(e, attr(a));
        let u32_of = |a: u32| sys::nftnl_expr_get_u32(e, attr(a));
        let bytes = |a: u32| {
            let mut len = 0u32;
            let ptr = sys::nftnl_expr_get(e, attr(a), &mut len);
            if ptr.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize).to_vec()
            }
        };
        let unsupported = |what: &str| Expr::Unsupported {
            what: what.to_owned(),
        };
        let name =
            string(sys::nftnl_expr_get_str(e, attr(sys::NFTNL_EXPR_NAME))).unwrap_or_default();
        match name.as_str() {
            "meta" if is_set(sys::NFTNL_EXPR_META_SREG) => {
                unsupported("meta statement (meta ... set)")
            }
            "meta" if is_set(sys::NFTNL_EXPR_META_DREG) => Expr::Meta {
                key: u32_of(sys::NFTNL_EXPR_META_KEY),
                dreg: u32_of(sys::NFTNL_EXPR_META_DREG),
            },
            "ct" if is_set(sys::NFTNL_EXPR_CT_SREG) => unsupported("ct statement (ct ... set)"),
            "ct" if is_set(sys::NFTNL_EXPR_CT_DIR) => unsupported("ct load with a direction"),
            "ct" if is_set(sys::NFTNL_EXPR_CT_DREG) => Expr::Ct {
                key: u32_of(sys::NFTNL_EXPR_CT_KEY),
                dreg: u32_of(sys::NFTNL_EXPR_CT_DREG),
            },
            "payload" if is_set(sys::NFTNL_EXPR_PAYLOAD_SREG) => {
                unsupported("payload statement (mangling)")
            }
            "payload" if is_set(sys::NFTNL_EXPR_PAYLOAD_DREG) => Expr::Payload {
                base: u32_of(sys::NFTNL_EXPR_PAYLOAD_BASE),
                offset: u32_of(sys::NFTNL_EXPR_PAYLOAD_OFFSET),
                len: u32_of(sys::NFTNL_EXPR_PAYLOAD_LEN),
                dreg: u32_of(sys::NFTNL_EXPR_PAYLOAD_DREG),
            },
            "cmp" => Expr::Cmp {
                sreg: u32_of(sys::NFTNL_EXPR_CMP_SREG),
                op: u32_of(sys::NFTNL_EXPR_CMP_OP),
                data: bytes(sys::NFTNL_EXPR_CMP_DATA),
            },
            "bitwise"
                if (is_set(sys::NFTNL_EXPR_BITWISE_OP)
                    && u32_of(sys::NFTNL_EXPR_BITWISE_OP) != 0)
                    || is_set(sys::NFTNL_EXPR_BITWISE_DATA) =>
            {
                unsupported("bitwise shift")
            }
            "bitwise" => Expr::Bitwise {
                sreg: u32_of(sys::NFTNL_EXPR_BITWISE_SREG),
                dreg: u32_of(sys::NFTNL_EXPR_BITWISE_DREG),
                mask: bytes(sys::NFTNL_EXPR_BITWISE_MASK),
                xor: bytes(sys::NFTNL_EXPR_BITWISE_XOR),
            },
            "lookup" if is_set(sys::NFTNL_EXPR_LOOKUP_DREG) => unsupported("map lookup"),
            "lookup"
                if is_set(sys::NFTNL_EXPR_LOOKUP_FLAGS)
                    && u32_of(sys::NFTNL_EXPR_LOOKUP_FLAGS) != 0 =>
            {
                unsupported("inverted set lookup (!= @set)")
            }
            "lookup" => Expr::Lookup {
                sreg: u32_of(sys::NFTNL_EXPR_LOOKUP_SREG),
                set: string(sys::nftnl_expr_get_str(e, attr(sys::NFTNL_EXPR_LOOKUP_SET)))
                    .unwrap_or_default(),
                set_id: None,
            },
            "log"
                if is_set(sys::NFTNL_EXPR_LOG_LEVEL)
                    || is_set(sys::NFTNL_EXPR_LOG_FLAGS)
                    || is_set(sys::NFTNL_EXPR_LOG_SNAPLEN)
                    || is_set(sys::NFTNL_EXPR_LOG_QTHRESHOLD) =>
            {
                unsupported("log with level, flags, snaplen or queue threshold")
            }
            "log" => Expr::Log {
                prefix: if is_set(sys::NFTNL_EXPR_LOG_PREFIX) {
                    string(sys::nftnl_expr_get_str(e, attr(sys::NFTNL_EXPR_LOG_PREFIX)))
                } else {
                    None
                },
                group: is_set(sys::NFTNL_EXPR_LOG_GROUP)
                    .then(|| sys::nftnl_expr_get_u16(e, attr(sys::NFTNL_EXPR_LOG_GROUP))),
            },
            "counter" => Expr::Counter {
                packets: sys::nftnl_expr_get_u64(e, attr(sys::NFTNL_EXPR_CTR_PACKETS)),
                bytes: sys::nftnl_expr_get_u64(e, attr(sys::NFTNL_EXPR_CTR_BYTES)),
            },
            "immediate" if u32_of(sys::NFTNL_EXPR_IMM_DREG) != REG_VERDICT => {
                unsupported("immediate data load")
            }
            "immediate"
                if is_set(sys::NFTNL_EXPR_IMM_CHAIN) || is_set(sys::NFTNL_EXPR_IMM_CHAIN_ID) =>
            {
                unsupported("jump or goto")
            }
            "immediate" if is_set(sys::NFTNL_EXPR_IMM_VERDICT) => {
                Expr::Verdict(u32_of(sys::NFTNL_EXPR_IMM_VERDICT).cast_signed())
            }
            "reject" => Expr::Reject {
                kind: u32_of(sys::NFTNL_EXPR_REJECT_TYPE),
                code: is_set(sys::NFTNL_EXPR_REJECT_CODE)
                    .then(|| sys::nftnl_expr_get_u8(e, attr(sys::NFTNL_EXPR_REJECT_CODE))),
            },
            other => Expr::Unsupported {
                what: format!("expression {other:?}"),
            },
        }
    }
}

/// Parses a `NEWRULE` message.
pub fn parse_rule(msg: &[u8]) -> Result<(Owner, KRule), NftError> {
    let nlh = nlh(msg)?;
    let r = OwnedRule::new()?;
    let mut exprs: Vec<Expr> = Vec::new();
    // SAFETY: as in `parse_table`; `exprs` outlives the foreach that writes to it.
    unsafe {
        // libnftnl fails the whole parse on an expression it does not know: that error is
        // reported, never skipped.
        if sys::nftnl_rule_nlmsg_parse(nlh, r.ptr()) < 0 {
            return Err(NftError::Parse("rule"));
        }
        let p = r.ptr();
        let owner = Owner {
            table: string(sys::nftnl_rule_get_str(p, attr(sys::NFTNL_RULE_TABLE)))
                .unwrap_or_default(),
            family: sys::nftnl_rule_get_u32(p, attr(sys::NFTNL_RULE_FAMILY)),
        };
        let chain =
            string(sys::nftnl_rule_get_str(p, attr(sys::NFTNL_RULE_CHAIN))).unwrap_or_default();
        let handle = sys::nftnl_rule_get_u64(p, attr(sys::NFTNL_RULE_HANDLE));
        sys::nftnl_expr_foreach(p, Some(collect_expr), (&raw mut exprs).cast::<c_void>());
        Ok((
            owner,
            KRule {
                chain,
                handle,
                exprs,
            },
        ))
    }
}

/// libnftnl's own element messages: what the tests hold [`super::wire`] to.
#[cfg(test)]
pub mod reference {
    use super::{
        CString, NlMsg, NonNull, OwnedSet, attr, c_int, c_void, header, len_u32, libc,
        set_identity, sys,
    };
    use crate::nft::kernel::KElem;
    use crate::nft::wire::ElemOp;
    use nftnl::MsgType;

    /// An element message as libnftnl builds it: a set object holding an element object per
    /// element, written by `nftnl_set_elems_nlmsg_build_payload`.
    pub struct LibnftnlElemMsg {
        table: CString,
        set: CString,
        set_id: Option<u32>,
        elems: Vec<KElem>,
        op: ElemOp,
    }

    impl LibnftnlElemMsg {
        /// The message doing `op` for `elems` of set `set` of table `table`.
        pub fn new(
            table: &str,
            set: &str,
            set_id: Option<u32>,
            elems: &[KElem],
            op: ElemOp,
        ) -> Self {
            Self {
                table: CString::new(table).unwrap_or_default(),
                set: CString::new(set).unwrap_or_default(),
                set_id,
                elems: elems.to_vec(),
                op,
            }
        }
    }

    // SAFETY: the tests' messages are a few hundred bytes, far below `nft_nlmsg_maxsize()`,
    // the room every `NlMsg` is written into.
    unsafe impl NlMsg for LibnftnlElemMsg {
        unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
            // `NFT_MSG_DESTROYSETELEM` is not in the libc crate.
            let (msg, flags): (c_int, c_int) = match self.op {
                ElemOp::Add => (
                    libc::NFT_MSG_NEWSETELEM,
                    libc::NLM_F_CREATE | libc::NLM_F_ACK,
                ),
                ElemOp::Delete => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
                ElemOp::DeleteIfPresent => (30, libc::NLM_F_ACK),
                ElemOp::Get => (libc::NFT_MSG_GETSETELEM, libc::NLM_F_ACK),
            };
            let Ok(set) = OwnedSet::new() else {
                std::process::abort();
            };
            set_identity(&set, &self.table, Some(&self.set), self.set_id);
            for e in &self.elems {
                // SAFETY: plain allocation; NULL only on OOM.
                let Some(elem) = NonNull::new(unsafe { sys::nftnl_set_elem_alloc() }) else {
                    std::process::abort();
                };
                // SAFETY: `elem` is live and ours until `nftnl_set_elem_add` hands it to `set`,
                // which then frees it; all data is copied by libnftnl.
                unsafe {
                    sys::nftnl_set_elem_set(
                        elem.as_ptr(),
                        attr(sys::NFTNL_SET_ELEM_KEY),
                        e.key.as_ptr().cast::<c_void>(),
                        len_u32(&e.key),
                    );
                    if e.flags != 0 {
                        sys::nftnl_set_elem_set_u32(
                            elem.as_ptr(),
                            attr(sys::NFTNL_SET_ELEM_FLAGS),
                            e.flags,
                        );
                    }
                    if let Some(ms) = e.timeout_ms {
                        sys::nftnl_set_elem_set_u64(
                            elem.as_ptr(),
                            attr(sys::NFTNL_SET_ELEM_TIMEOUT),
                            ms,
                        );
                        sys::nftnl_set_elem_set_u64(
                            elem.as_ptr(),
                            attr(sys::NFTNL_SET_ELEM_EXPIRATION),
                            ms,
                        );
                    }
                    if !e.userdata.is_empty() {
                        sys::nftnl_set_elem_set(
                            elem.as_ptr(),
                            attr(sys::NFTNL_SET_ELEM_USERDATA),
                            e.userdata.as_ptr().cast::<c_void>(),
                            len_u32(&e.userdata),
                        );
                    }
                    sys::nftnl_set_elem_add(set.ptr(), elem.as_ptr());
                }
            }
            // SAFETY: `buf` has room for the message (the caller's contract); `set` and its
            // elements are live.
            unsafe {
                let nlh = header(buf, msg, flags, seq);
                sys::nftnl_set_elems_nlmsg_build_payload(nlh, set.ptr());
            }
        }
    }
}
