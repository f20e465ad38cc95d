//! `shieldd`: thin entry point over the library.

fn main() {}
