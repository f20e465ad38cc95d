//! shield-hook.
fn main() {}
