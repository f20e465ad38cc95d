//! The command line (clap derive): global options and one variant per command.
//!
//! Later commands (watch, setup, prepare, run, doctor) are new [`Command`] variants with
//! their own argument structs; the global options and [`ModeArg`] are shared by them.

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
    /// Show one container: state, mode, profiles, and its live allows and denies
    Show {
        /// Container id, unique id prefix, or name
        container: String,
    },
    /// Let a container reach IPs, CIDRs or domains from now on (lifts a deny of the same target)
    Allow(ChangeArgs),
    /// Forbid IPs, CIDRs or domains in every mode, cutting established connections too
    Deny(ChangeArgs),
    /// Enforce: only allowlisted destinations pass (the default mode)
    Up {
        /// Container id, unique id prefix, or name
        container: String,
    },
    /// Bypass: accept and log new connections; deny sets and private ranges still apply
    Down(DownArgs),
    /// Drop everything but loopback, established connections included
    Block {
        /// Container id, unique id prefix, or name
        container: String,
    },
    /// Print one word: up, down, down_all, block or stopped
    State {
        /// Container id, unique id prefix, or name
        container: String,
    },
    /// Print the audit trail: the last events, then (with --follow) new ones as they happen
    Logs(LogsArgs),
    /// List the names a container's DNS proxy let through, with addresses and time left
    Dns {
        /// Container id, unique id prefix, or name
        container: String,
    },
}

/// Arguments of `allow` and `deny`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ChangeArgs {
    /// Container id, unique id prefix, or name
    pub container: String,
    /// IPs, CIDRs or domains; all of them form one atomic change
    #[arg(
        required = true,
        num_args = 1..,
        value_name = "TARGET",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub targets: Vec<String>,
}

/// Arguments of `down`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DownArgs {
    /// Container id, unique id prefix, or name
    pub container: String,
    /// Let private ranges through too (deny sets still apply)
    #[arg(long)]
    pub all: bool,
}

impl DownArgs {
    /// The mode asked for: down, or down-all with `--all`.
    pub fn mode(&self) -> ModeArg {
        if self.all {
            ModeArg::DownAll
        } else {
            ModeArg::Down
        }
    }
}

/// The most past events `logs -n` may ask for (the daemon's limit).
pub const MAX_LOG_LINES: u32 = 10_000;

/// Arguments of `logs`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LogsArgs {
    /// Container id, unique id prefix, or name [default: every container]
    pub container: Option<String>,
    /// How many past events to print first (0: none)
    #[arg(
        short = 'n',
        long = "lines",
        default_value_t = 20,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_LOG_LINES))
    )]
    pub lines: u32,
    /// Keep printing new events until interrupted (Ctrl-C)
    #[arg(short = 'f', long)]
    pub follow: bool,
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

    fn container(name: &str) -> String {
        name.to_owned()
    }

    #[test]
    fn allow_and_deny_take_a_container_and_targets_in_order() {
        let cli = parse(&["allow", "web", "192.0.2.7", "10.0.0.0/8", "example.com"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Allow(ChangeArgs {
                container: container("web"),
                targets: vec![
                    "192.0.2.7".to_owned(),
                    "10.0.0.0/8".to_owned(),
                    "example.com".to_owned()
                ],
            })
        );
        let cli = parse(&["--json", "deny", "0123456789ab", "2001:db8::1"]).unwrap();
        assert!(cli.json);
        assert_eq!(
            cli.command,
            Command::Deny(ChangeArgs {
                container: container("0123456789ab"),
                targets: vec!["2001:db8::1".to_owned()],
            })
        );
    }

    #[test]
    fn allow_and_deny_need_targets() {
        for command in ["allow", "deny"] {
            let error = parse(&[command, "web"]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{command}"
            );
            assert_eq!(error.exit_code(), 2);
            assert!(parse(&[command]).is_err(), "{command}");
            assert!(
                parse(&[command, "web", "1.2.3.4", ""]).is_err(),
                "{command}"
            );
        }
    }

    #[test]
    fn mode_commands() {
        assert_eq!(
            parse(&["up", "web"]).unwrap().command,
            Command::Up {
                container: container("web")
            }
        );
        assert_eq!(
            parse(&["block", "web", "--json"]).unwrap().command,
            Command::Block {
                container: container("web")
            }
        );
        let Command::Down(down) = parse(&["down", "web"]).unwrap().command else {
            panic!("down expected");
        };
        assert_eq!(
            down,
            DownArgs {
                container: container("web"),
                all: false
            }
        );
        assert_eq!(down.mode(), ModeArg::Down);
        let Command::Down(down) = parse(&["down", "--all", "web"]).unwrap().command else {
            panic!("down expected");
        };
        assert!(down.all);
        assert_eq!(v1::Mode::from(down.mode()), v1::Mode::DownAll);
        for command in ["up", "down", "block", "state", "show"] {
            assert!(parse(&[command]).is_err(), "{command}");
        }
        assert!(parse(&["up", "web", "extra"]).is_err());
    }

    #[test]
    fn state_and_show_take_a_container() {
        assert_eq!(
            parse(&["state", "web"]).unwrap().command,
            Command::State {
                container: container("web")
            }
        );
        assert_eq!(
            parse(&["show", "web"]).unwrap().command,
            Command::Show {
                container: container("web")
            }
        );
    }

    #[test]
    fn dns_takes_one_container() {
        assert_eq!(
            parse(&["dns", "web"]).unwrap().command,
            Command::Dns {
                container: container("web")
            }
        );
        let cli = parse(&["dns", "--json", "0123456789ab"]).unwrap();
        assert!(cli.json);
        assert_eq!(
            cli.command,
            Command::Dns {
                container: container("0123456789ab")
            }
        );
        let error = parse(&["dns"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(parse(&["dns", "web", "extra"]).is_err());
    }

    #[test]
    fn logs_defaults_and_options() {
        assert_eq!(
            parse(&["logs"]).unwrap().command,
            Command::Logs(LogsArgs {
                container: None,
                lines: 20,
                follow: false
            })
        );
        assert_eq!(
            parse(&["logs", "-n", "5", "--follow"]).unwrap().command,
            Command::Logs(LogsArgs {
                container: None,
                lines: 5,
                follow: true
            })
        );
        assert_eq!(
            parse(&["logs", "web", "-fn0"]).unwrap().command,
            Command::Logs(LogsArgs {
                container: Some(container("web")),
                lines: 0,
                follow: true
            })
        );
        assert_eq!(
            parse(&["logs", "--lines=10000", "web"]).unwrap().command,
            Command::Logs(LogsArgs {
                container: Some(container("web")),
                lines: MAX_LOG_LINES,
                follow: false
            })
        );
        assert!(parse(&["logs", "-n", "10001"]).is_err());
        assert!(parse(&["logs", "-n", "-1"]).is_err());
        assert!(parse(&["logs", "-n", "many"]).is_err());
        assert!(parse(&["logs", "a", "b"]).is_err());
    }

    #[test]
    fn modes_map_to_the_api() {
        assert_eq!(v1::Mode::from(ModeArg::Up), v1::Mode::Up);
        assert_eq!(v1::Mode::from(ModeArg::DownAll), v1::Mode::DownAll);
    }
}
