//! shield-hook library.
