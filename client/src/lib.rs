//! `shieldctl`: the command-line client of `shieldd`.
//!
//! [`cli`] parses the command line; [`commands`] runs a command against the daemon over gRPC
//! (through `shield_proto::client`); the answer becomes a [`view`] (the `--json` shape), which
//! [`render`] turns into text and [`output`] writes: the only module that prints. [`table`]
//! aligns columns; [`error`] holds every failure with the message the user sees.
//!
//! The podman commands live in [`integration`]: `setup` ([`setup`], [`hooks`],
//! [`containers_conf`]), `prepare` and `run` ([`podman_args`], [`arg_guard`], [`podman`],
//! [`shield_config`]) and `doctor` ([`doctor`]); [`host`] and [`atomic`] serve them.

pub mod arg_guard;
pub mod atomic;
pub mod cli;
pub mod commands;
pub mod containers_conf;
pub mod doctor;
pub mod error;
pub mod hooks;
pub mod host;
pub mod integration;
pub mod output;
pub mod podman;
pub mod podman_args;
pub mod render;
pub mod setup;
pub mod shield_config;
pub mod table;
pub mod view;

pub use cli::Cli;
pub use commands::run;
pub use error::CtlError;
