//! A plain-Rust mirror of the nf_tables objects shield reads and writes.
//!
//! This is the meeting point of the netlink layer: [`super::encode`] turns our IR into these
//! values, the libnftnl shims in `super::ffi` turn them into netlink messages and back, and
//! [`super::lift`] turns what the kernel reported into our IR again. Keeping the kernel's view as
//! ordinary data (no pointers, no I/O) lets the encoding and the lifting be unit-tested without
//! a kernel, and keeps `unsafe` confined to the shims.
//!
//! Numbers are the kernel's own (`linux/netfilter/nf_tables.h`), registers included, so that an
//! expression that merely looks like one of ours (a different register, an inverted lookup) is
//! not mistaken for it.

/// `NFT_REG_VERDICT`: the register an `immediate` verdict writes.
pub const REG_VERDICT: u32 = 0;
/// `NFT_REG_1`: the (legacy 128-bit) register nft uses for every load and compare.
pub const REG_1: u32 = 1;

/// `NFT_META_IIFNAME`.
pub const META_IIFNAME: u32 = 6;
/// `NFT_META_OIFNAME`.
pub const META_OIFNAME: u32 = 7;
/// `NFT_META_NFPROTO`.
pub const META_NFPROTO: u32 = 15;
/// `NFT_META_L4PROTO`.
pub const META_L4PROTO: u32 = 16;

/// `NFT_CT_STATE`.
pub const CT_STATE: u32 = 0;

/// `NFT_CMP_EQ`.
pub const CMP_EQ: u32 = 0;
/// `NFT_CMP_NEQ`.
pub const CMP_NEQ: u32 = 1;

/// `NFT_PAYLOAD_NETWORK_HEADER`.
pub const PAYLOAD_NETWORK: u32 = 1;
/// `NFT_PAYLOAD_TRANSPORT_HEADER`.
pub const PAYLOAD_TRANSPORT: u32 = 2;

/// `NFPROTO_IPV4`, as `meta nfproto` loads it (one byte).
pub const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_IPV6`.
pub const NFPROTO_IPV6: u8 = 10;

/// `NF_DROP`.
pub const VERDICT_DROP: i32 = 0;
/// `NF_ACCEPT`.
pub const VERDICT_ACCEPT: i32 = 1;

/// `NFT_REJECT_TCP_RST`.
pub const REJECT_TCP_RST: u32 = 1;
/// `NFT_REJECT_ICMPX_UNREACH`.
pub const REJECT_ICMPX_UNREACH: u32 = 2;
/// `NFT_REJECT_ICMPX_ADMIN_PROHIBITED`.
pub const ICMPX_ADMIN_PROHIBITED: u8 = 3;

/// `NFT_SET_INTERVAL`.
pub const SET_F_INTERVAL: u32 = 0x4;
/// `NFT_SET_TIMEOUT`.
pub const SET_F_TIMEOUT: u32 = 0x10;
/// `NFT_SET_ELEM_INTERVAL_END`.
pub const ELEM_F_INTERVAL_END: u32 = 0x1;

/// nft's data type number for `ipv4_addr`.
pub const TYPE_IPV4_ADDR: u32 = 7;
/// nft's data type number for `ipv6_addr`.
pub const TYPE_IPV6_ADDR: u32 = 8;

/// `NF_INET_LOCAL_IN`.
pub const HOOK_INPUT: u32 = 1;
/// `NF_INET_LOCAL_OUT`.
pub const HOOK_OUTPUT: u32 = 3;

/// `NFPROTO_INET`: the family of table `inet shield`.
pub const FAMILY_INET: u16 = 1;

/// Interface names are compared over `IFNAMSIZ` bytes, zero-padded (as nft does).
pub const IFNAMSIZ: usize = 16;

/// One expression of a rule, with the attributes shield cares about.
///
/// The decoder maps anything outside this vocabulary (another expression, or a known one with
/// attributes we never write: a `meta ... set`, a map lookup, a jump, a syslog `log`) to
/// [`Expr::Unsupported`], so that lifting fails instead of guessing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => reg DREG`.
    Meta {
        /// `NFT_META_*` key.
        key: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `ct load KEY => reg DREG` (original direction not set).
    Ct {
        /// `NFT_CT_*` key.
        key: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `payload load LEN @ BASE + OFFSET => reg DREG`.
    Payload {
        /// `NFT_PAYLOAD_*_HEADER`.
        base: u32,
        /// Byte offset in that header.
        offset: u32,
        /// Bytes loaded.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `cmp OP reg SREG DATA`.
    Cmp {
        /// Source register.
        sreg: u32,
        /// `NFT_CMP_*`.
        op: u32,
        /// Bytes compared, in register (network or host) order as the kernel holds them.
        data: Vec<u8>,
    },
    /// `bitwise reg DREG = (reg SREG & MASK) ^ XOR` (boolean operation).
    Bitwise {
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// Mask bytes.
        mask: Vec<u8>,
        /// Xor bytes (same length as `mask`).
        xor: Vec<u8>,
    },
    /// `lookup reg SREG set NAME` (membership, not inverted, not a map).
    Lookup {
        /// Source register.
        sreg: u32,
        /// Set name.
        set: String,
        /// Set id of a set created in the same batch (sent, never reported back).
        set_id: Option<u32>,
    },
    /// `log prefix PREFIX group GROUP` (NFLOG).
    Log {
        /// Prefix, if any.
        prefix: Option<String>,
        /// NFLOG group, if any (absent means a syslog `log`).
        group: Option<u16>,
    },
    /// `counter`.
    Counter {
        /// Packets counted.
        packets: u64,
        /// Bytes counted.
        bytes: u64,
    },
    /// `immediate reg 0 VERDICT` (accept / drop; jumps are unsupported).
    Verdict(i32),
    /// `reject type TYPE code CODE`.
    Reject {
        /// `NFT_REJECT_*` type.
        kind: u32,
        /// ICMP(x) code; absent for a TCP reset.
        code: Option<u8>,
    },
    /// Anything shield does not write; `what` says what it was.
    Unsupported {
        /// Human-readable description, e.g. `expression "queue"` or `meta with sreg`.
        what: String,
    },
}

/// A set as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KSet {
    /// Set name.
    pub name: String,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// nft data type of the key.
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// Set-wide default element timeout in ms, if any.
    pub default_timeout_ms: Option<u64>,
    /// Whether the set maps keys to data (a map, not a set).
    pub is_map: bool,
}

/// One set element as the kernel holds it (an interval set holds starts and ends separately).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KElem {
    /// Key bytes (network order).
    pub key: Vec<u8>,
    /// `NFT_SET_ELEM_*` flags.
    pub flags: u32,
    /// Element timeout in ms, if the element has one.
    pub timeout_ms: Option<u64>,
    /// nft's user data for the element (`NFTNL_UDATA_SET_ELEM_*` TLVs), sent only.
    pub userdata: Vec<u8>,
    /// Whether the element carries anything we never write (data, expressions, objects).
    pub extra: Option<String>,
}

/// A chain as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KChain {
    /// Chain name.
    pub name: String,
    /// Hook number, if a base chain.
    pub hook: Option<u32>,
    /// Hook priority.
    pub priority: i32,
    /// Policy verdict (`NF_ACCEPT` / `NF_DROP`), if a base chain.
    pub policy: Option<u32>,
    /// Chain type name (`filter`, `nat`, `route`), if a base chain.
    pub chain_type: Option<String>,
}

/// A rule as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KRule {
    /// Name of the chain holding it.
    pub chain: String,
    /// Kernel handle (for error messages only).
    pub handle: u64,
    /// Expressions, in order.
    pub exprs: Vec<Expr>,
}

/// Everything read back from table `inet shield`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KTable {
    /// Table flags (`NFT_TABLE_F_*`); non-zero means dormant or otherwise not ours.
    pub flags: u32,
    /// Sets with their elements, in kernel order.
    pub sets: Vec<(KSet, Vec<KElem>)>,
    /// Chains, in kernel order.
    pub chains: Vec<KChain>,
    /// Rules of all chains, in kernel order.
    pub rules: Vec<KRule>,
}
