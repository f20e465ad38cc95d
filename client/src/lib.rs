//! shieldctl library.
