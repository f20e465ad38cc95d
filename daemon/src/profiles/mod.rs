//! Profiles: the policy source. Parsing is pure ([`parse`]); loading from disk is [`store`].

pub mod parse;
pub mod store;

pub use parse::{DomainPattern, Entry, EntryError, ProfileEntries, validate_name};
pub use store::{Profile, ProfileError, ProfileStore, Source};
