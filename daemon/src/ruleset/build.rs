//! The builder: a container's policy → its [`Table`]. Pure.

use ipnet::IpNet;

use super::ir::Table;

/// Enforcement mode of a container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Default-deny: only allowlisted destinations pass.
    #[default]
    Up,
    /// Bypass: new connections are accepted and logged; deny sets and private ranges still apply.
    Down,
    /// Bypass including private ranges; deny sets still apply.
    DownAll,
    /// Everything but loopback is dropped, established flows included.
    Block,
}

/// Everything the builder needs to know about one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Addresses and networks the container may reach (profiles and operator allows).
    pub allow: Vec<IpNet>,
    /// Addresses and networks the container may never reach; deny wins over allow.
    pub deny: Vec<IpNet>,
    /// Enforcement mode.
    pub mode: Mode,
}

/// Builds the table for `policy`.
pub fn build(policy: &Policy) -> Table {
    let _ = policy;
    Table {
        sets: Vec::new(),
        chains: Vec::new(),
    }
}
