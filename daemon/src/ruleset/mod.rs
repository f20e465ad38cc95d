//! The ruleset: the security boundary of shield.
//!
//! A container's policy becomes a [`Table`] through a pure function ([`build()`]), with no I/O, no
//! clock and no environment. The same table is rendered as canonical `nft` text ([`render()`]) and
//! proven fail-closed by the invariant checker ([`invariants`]), both on what the builder made and
//! on what the kernel holds after an apply.

pub mod build;
pub mod delta;
pub mod diff;
pub mod invariants;
pub mod ir;
pub mod render;

pub use build::{Mode, Policy, build};
pub use delta::{NetMoves, ProfileIndex, live_changes};
pub use diff::{ElementChanges, element_changes};
pub use ir::*;
pub use render::render;
