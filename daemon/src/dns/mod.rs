//! The per-container DNS proxy (DESIGN.md, "DNS").
//!
//! Each running container's queries arrive on sockets the helper bound inside its network
//! namespace; the daemon serves them ([`proxy`]) and forwards allowed names upstream from its own
//! namespace ([`upstream`], to the resolvers of [`servers`], on sockets made ahead by
//! [`spares`]); every container's proxy runs on one of a few DNS threads ([`threads`]). Pure
//! parts: which names a container may resolve ([`names`]), the wire format ([`message`]; the
//! upstream's replies are read by [`reply`]), the answer cache ([`cache`]) and the rate limit
//! ([`limits`]).

pub mod cache;
pub mod limits;
pub mod message;
pub mod names;
pub mod proxy;
pub mod reply;
pub mod servers;
pub mod spares;
pub mod threads;
pub mod upstream;
