//! shieldd: the shield daemon.
//!
//! One user daemon programs a default-deny nftables ruleset into every shielded container's
//! network namespace, through a netlink socket created inside that namespace by a short-lived
//! helper process, and serves the shield gRPC API on a Unix socket.

pub mod ruleset;
