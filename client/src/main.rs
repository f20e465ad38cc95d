//! shieldctl.
fn main() {}
