//! The command line (clap derive): global options and one variant per command.
//!
//! Each command with options has its own argument struct; the global options and [`ModeArg`]
//! are shared by them. The podman commands (setup, prepare, run, doctor) share [`HookArg`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shield_proto::v1;

use crate::podman_args::PodmanVersion;
use crate::setup::Scope;

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
    /// Forget stopped containers: their live changes and mode are dropped (audit trails stay)
    Forget(ForgetArgs),
    /// Install the OCI hooks that attach shield to annotated containers (--remove: undo)
    Setup(SetupArgs),
    /// Print the podman run arguments that put a container under shield
    Prepare(PrepareArgs),
    /// Run `podman run` with shield's arguments and yours (after `--`)
    Run(RunArgs),
    /// Check that shielded containers can work here, and say how to fix what is missing
    Doctor(DoctorArgs),
}

/// Arguments of `forget`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ForgetArgs {
    /// Container ids, unique id prefixes, or names (each must be stopped)
    #[arg(required_unless_present = "stopped", conflicts_with = "stopped")]
    pub containers: Vec<String>,
    /// Every stopped container (running ones are kept)
    #[arg(long)]
    pub stopped: bool,
}

/// The hook binary, for the commands that install or check the hooks.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct HookArg {
    /// The shield-hook binary the hooks run [default: shield-hook next to shieldctl]
    #[arg(long = "hook", env = "SHIELD_HOOK", value_name = "PATH")]
    pub hook: Option<PathBuf>,
}

/// Arguments of `setup`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SetupArgs {
    /// For your rootless podman: shield's own hook directory, listed in your containers.conf
    /// [default unless root]
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// For every podman: /etc/containers/oci/hooks.d [default for root]
    #[arg(long)]
    pub system: bool,
    /// Remove what setup installed
    #[arg(long)]
    pub remove: bool,
    /// The hook binary.
    #[command(flatten)]
    pub hook: HookArg,
}

impl SetupArgs {
    /// The scope asked for; without `--user` or `--system`: system for root, else user.
    pub fn scope(&self, root: bool) -> Scope {
        if self.system || (root && !self.user) {
            Scope::System
        } else {
            Scope::User
        }
    }
}

/// Arguments of `prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PrepareArgs {
    /// Container name (need not exist yet)
    pub name: String,
    /// Profiles to apply [default: the daemon's default profiles]
    #[arg(long, num_args = 1.., value_delimiter = ',', value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Build the arguments for this podman version instead of asking `podman --version`
    #[arg(long, value_name = "VERSION", value_parser = crate::integration::parse_podman_version)]
    pub podman_version: Option<PodmanVersion>,
    /// The hook binary.
    #[command(flatten)]
    pub hook: HookArg,
}

/// Arguments of `run`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RunArgs {
    /// Container name (need not exist yet)
    pub name: String,
    /// Profiles to apply [default: the daemon's default profiles]
    #[arg(long, num_args = 1.., value_delimiter = ',', value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// The hook binary.
    #[command(flatten)]
    pub hook: HookArg,
    /// podman run options, the image and its command
    #[arg(last = true, required = true, value_name = "PODMAN_RUN_ARGS")]
    pub podman_args: Vec<String>,
}

/// Arguments of `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DoctorArgs {
    /// The hook binary.
    #[command(flatten)]
    pub hook: HookArg,
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
    fn setup_scopes() {
        let Command::Setup(args) = parse(&["setup"]).unwrap().command else {
            panic!("setup expected");
        };
        assert_eq!(args.scope(false), Scope::User);
        assert_eq!(args.scope(true), Scope::System);
        assert!(!args.remove);
        let Command::Setup(args) = parse(&["setup", "--user", "--remove"]).unwrap().command else {
            panic!("setup expected");
        };
        assert_eq!(args.scope(true), Scope::User);
        assert!(args.remove);
        let Command::Setup(args) = parse(&["setup", "--system", "--hook", "/h"])
            .unwrap()
            .command
        else {
            panic!("setup expected");
        };
        assert_eq!(args.scope(false), Scope::System);
        assert_eq!(args.hook.hook, Some(PathBuf::from("/h")));
        assert!(parse(&["setup", "--user", "--system"]).is_err());
    }

    #[test]
    fn prepare_and_run_arguments() {
        let Command::Prepare(args) = parse(&[
            "prepare",
            "web",
            "--profiles",
            "a,b",
            "--podman-version",
            "4.3.1",
        ])
        .unwrap()
        .command
        else {
            panic!("prepare expected");
        };
        assert_eq!(args.name, "web");
        assert_eq!(args.profiles, ["a", "b"]);
        assert_eq!(args.podman_version, PodmanVersion::parse("4.3.1"));
        assert!(parse(&["prepare"]).is_err());
        assert!(parse(&["prepare", "web", "--podman-version", "x"]).is_err());

        let Command::Run(args) = parse(&[
            "run",
            "web",
            "--profiles",
            "a",
            "b",
            "--",
            "--rm",
            "-it",
            "alpine",
            "sh",
            "-c",
            "--json",
        ])
        .unwrap()
        .command
        else {
            panic!("run expected");
        };
        assert_eq!(args.profiles, ["a", "b"]);
        assert_eq!(
            args.podman_args,
            ["--rm", "-it", "alpine", "sh", "-c", "--json"]
        );
        assert!(parse(&["run", "web"]).is_err());
        assert!(parse(&["run", "web", "alpine"]).is_err());
        assert!(matches!(
            parse(&["doctor"]).unwrap().command,
            Command::Doctor(_)
        ));
    }

    #[test]
    fn modes_map_to_the_api() {
        assert_eq!(v1::Mode::from(ModeArg::Up), v1::Mode::Up);
        assert_eq!(v1::Mode::from(ModeArg::DownAll), v1::Mode::DownAll);
    }
}
