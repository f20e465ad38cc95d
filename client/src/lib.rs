//! `shieldctl`: the command-line client of `shieldd`.
//!
//! [`cli`] parses the command line; [`commands`] runs a command against the daemon over gRPC
//! (through `shield_proto::client`); the answer becomes a [`view`] (the `--json` shape), which
//! [`render`] turns into text and [`output`] writes: the only module that prints. [`table`]
//! aligns columns; [`error`] holds every failure with the message the user sees.

pub mod cli;
pub mod commands;
pub mod error;
pub mod output;
pub mod render;
pub mod table;
pub mod view;

pub use cli::Cli;
pub use commands::run;
pub use error::CtlError;
