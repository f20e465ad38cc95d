//! The renderer: [`Table`] → canonical `nft` text. Pure.

use super::ir::Table;

/// Renders `table` as `nft -f` input that creates table `inet shield`.
pub fn render(table: &Table) -> String {
    let _ = table;
    String::new()
}
