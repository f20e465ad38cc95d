//! The command line (clap derive): global options and one variant per command.
//!
//! Later commands (allow, deny, up, down, block, state, logs, dns, watch, setup, prepare, run,
//! doctor) are new [`Command`] variants with their own argument structs; the global options and
//! [`ModeArg`] are shared by them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shield_proto::v1;

/// `shieldctl [--socket PATH] [--json] COMMAND`.
#[derive(Debug, Parser)]
#[command(
    name = "shieldctl",
    version,
    about = "Control shieldd, the default-deny egress firewall for Podman containers"
)]
pub struct Cli {
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/shield/shieldd.sock; /run/shield/shieldd.sock for root]
    #[arg(long, global = true, env = "SHIELD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Show the daemon's version, uptime and container counts
    Status,
    /// List the containers the daemon knows
    Ps,
    /// Print a container's ruleset as the kernel holds it now
    Rules {
        /// Container id, unique id prefix, or name
        container: String,
    },
    /// Print the ruleset the daemon would apply, as `nft -f` input
    Preview(PreviewArgs),
    /// List the profiles the daemon can use
    Profiles,
}

/// Arguments of `preview`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PreviewArgs {
    /// Profiles to combine [default: the daemon's default profiles]
    #[arg(long, num_args = 1.., value_delimiter = ',', value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Mode to preview
    #[arg(long, value_enum, default_value_t = ModeArg::Up)]
    pub mode: ModeArg,
}

/// An enforcement mode, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Default-deny: only allowlisted destinations pass
    Up,
    /// Bypass, logged; deny sets and private ranges still apply
    Down,
    /// Bypass including private ranges; deny sets still apply
    DownAll,
    /// Drop everything but loopback, established flows included
    Block,
}

impl From<ModeArg> for v1::Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Up => Self::Up,
            ModeArg::Down => Self::Down,
            ModeArg::DownAll => Self::DownAll,
            ModeArg::Block => Self::Block,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shieldctl").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_anywhere() {
        let cli = parse(&["--json", "ps", "--socket", "/s.sock"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket, Some(PathBuf::from("/s.sock")));
        assert_eq!(cli.command, Command::Ps);
        let cli = parse(&["status"]).unwrap();
        assert!(!cli.json);
    }

    #[test]
    fn rules_needs_a_container() {
        let cli = parse(&["rules", "web"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Rules {
                container: "web".to_owned()
            }
        );
        assert!(parse(&["rules"]).is_err());
    }

    #[test]
    fn preview_defaults_and_values() {
        let cli = parse(&["preview"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Preview(PreviewArgs {
                profiles: vec![],
                mode: ModeArg::Up
            })
        );
        let cli = parse(&["preview", "--profiles", "a", "b", "--mode", "down-all"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Preview(PreviewArgs {
                profiles: vec!["a".to_owned(), "b".to_owned()],
                mode: ModeArg::DownAll
            })
        );
        let cli = parse(&["preview", "--mode=block", "--profiles=a,b"]).unwrap();
        let Command::Preview(args) = cli.command else {
            panic!("preview expected");
        };
        assert_eq!(args.profiles, ["a", "b"]);
        assert_eq!(args.mode, ModeArg::Block);
        assert!(parse(&["preview", "--mode", "sideways"]).is_err());
    }

    #[test]
    fn unknown_command_or_missing_command() {
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn modes_map_to_the_api() {
        assert_eq!(v1::Mode::from(ModeArg::Up), v1::Mode::Up);
        assert_eq!(v1::Mode::from(ModeArg::DownAll), v1::Mode::DownAll);
    }
}
