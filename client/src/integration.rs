//! The podman integration commands: `setup`, `prepare`, `run` and `doctor`. They glue the pure
//! modules ([`crate::hooks`], [`crate::arg_guard`], [`crate::podman_args`], [`crate::doctor`])
//! to the filesystem, podman and the daemon.

use std::io::Write;
use std::path::{Path, PathBuf};

use shield_proto::v1;

use crate::cli::{DoctorArgs, HookArg, PrepareArgs, RunArgs, SetupArgs};
use crate::commands::Session;
use crate::containers_conf;
use crate::doctor::{self, Status};
use crate::error::CtlError;
use crate::hooks::{self, HOOK_BINARY, HookTarget};
use crate::host::{self, Xdg};
use crate::output::{self, Output};
use crate::podman::{self, Probe};
use crate::podman_args::{self, NetworkPlan, PodmanVersion};
use crate::setup::{self, Action, Scope, SetupPlan};
use crate::shield_config::ClientConfig;
use crate::view::{DoctorView, PrepareView, SetupView};

/// `setup [--user|--system] [--remove]`.
pub fn setup<W: Write>(
    socket: &Path,
    args: &SetupArgs,
    out: &mut Output<W>,
) -> Result<(), CtlError> {
    let root = host::effective_uid() == Some(0);
    let scope = args.scope(root);
    let target = hook_target(socket, &args.hook)?;
    let plan = match scope {
        Scope::User => {
            let xdg = Xdg::from_env()?;
            // What podman reads when the user's file sets no hooks_dir: the system's files.
            let system = read_conf_files(&containers_conf::podman_config_files(None, None))?;
            SetupPlan {
                scope,
                hooks_dir: xdg.user_hooks_dir(),
                containers_conf: Some(xdg.user_containers_conf()),
                inherited_hooks_dirs: containers_conf::effective_hooks_dirs(&system)?,
                target,
            }
        }
        Scope::System => SetupPlan {
            scope,
            hooks_dir: PathBuf::from(setup::SYSTEM_HOOKS_DIR),
            containers_conf: None,
            inherited_hooks_dirs: Vec::new(),
            target,
        },
    };
    let changes = if args.remove {
        setup::uninstall(&plan)?
    } else {
        setup::install(&plan)?
    };
    let mut warnings = Vec::new();
    if !args.remove {
        // Verify with the eyes of this user's podman: another file (a drop-in,
        // $CONTAINERS_CONF) may still hide the directory, and then containers would run
        // unshielded.
        let user_files = (!root).then(Xdg::from_env).transpose()?;
        if let Err(error) = check_hooks(&plan.target, user_files.as_ref()) {
            let mut warning = format!("podman will not run these hooks as installed: {error}");
            if root && scope == Scope::User {
                warning.push_str(
                    " (podman run by root reads no user containers.conf: use `shieldctl setup --system`, or set CONTAINERS_CONF)",
                );
            }
            warnings.push(warning);
        }
    }
    for warning in &warnings {
        output::notice(&format!("warning: {warning}"));
    }
    out.emit(&SetupView {
        scope,
        remove: args.remove,
        hooks_dir: plan.hooks_dir.to_string_lossy().into_owned(),
        hook: plan.target.hook.to_string_lossy().into_owned(),
        socket: plan.target.socket.to_string_lossy().into_owned(),
        changed: changes
            .iter()
            .any(|change| change.action != Action::Unchanged),
        changes,
        warnings,
    })
}

/// `prepare NAME [--profiles P…]`: prints the arguments.
pub fn prepare<W: Write>(
    socket: &Path,
    args: &PrepareArgs,
    out: &mut Output<W>,
) -> Result<(), CtlError> {
    validate(&args.name, &args.profiles)?;
    let xdg = Xdg::from_env()?;
    let target = hook_target(socket, &args.hook)?;
    check_hooks_for_containers(&target, &xdg)?;
    let config = ClientConfig::load(&xdg.shield_config_file())?;
    let version = network_podman_version(&config, args.podman_version, false)?;
    let network = NetworkPlan::choose(&config.loopback_ports, version);
    let resolv_conf = write_resolv_conf(&xdg)?;
    let podman_args = podman_args::shield_args(&args.name, &args.profiles, &resolv_conf, network)?;
    out.emit(&PrepareView {
        name: args.name.clone(),
        profiles: args.profiles.clone(),
        network,
        host_address: network.host_address().map(|address| address.to_string()),
        loopback_ports: config.loopback_ports,
        resolv_conf: resolv_conf.to_string_lossy().into_owned(),
        args: podman_args,
    })
}

/// `run NAME [--profiles P…] -- PODMAN_RUN_ARGS…`: checks everything, then becomes
/// `podman run`.
pub async fn run(session: &mut Session, socket: &Path, args: &RunArgs) -> Result<(), CtlError> {
    crate::arg_guard::check(&args.podman_args)?;
    validate(&args.name, &args.profiles)?;
    let xdg = Xdg::from_env()?;
    let target = hook_target(socket, &args.hook)?;
    check_hooks_for_containers(&target, &xdg)?;
    // The hooks would fail the start anyway; failing here says why before podman does work.
    let mut client = session.client().await?;
    client
        .get_status(session.request(v1::GetStatusRequest {}))
        .await
        .map_err(|status| session.failed(status))?;
    let config = ClientConfig::load(&xdg.shield_config_file())?;
    let version = network_podman_version(&config, None, true)?;
    let network = NetworkPlan::choose(&config.loopback_ports, version);
    let resolv_conf = write_resolv_conf(&xdg)?;
    let shield_args = podman_args::shield_args(&args.name, &args.profiles, &resolv_conf, network)?;
    let error = podman::exec_run(&shield_args, &args.podman_args);
    if error.kind() == std::io::ErrorKind::NotFound {
        Err(CtlError::PodmanMissing)
    } else {
        Err(CtlError::Exec(error))
    }
}

/// The podman version the network plan depends on: `given`, else asked from podman, but only
/// when host-loopback ports are configured (otherwise the default network needs no version).
/// An unknown version means podman before 4.4 (slirp4netns), said on stderr; a missing podman
/// is an error when `require_podman` (`run` cannot go on without it).
fn network_podman_version(
    config: &ClientConfig,
    given: Option<PodmanVersion>,
    require_podman: bool,
) -> Result<Option<PodmanVersion>, CtlError> {
    if given.is_some() || config.loopback_ports.is_empty() {
        return Ok(given);
    }
    match podman::probe() {
        Probe::Version(version) => Ok(Some(version)),
        Probe::NotFound if require_podman => Err(CtlError::PodmanMissing),
        other => {
            let hint = if require_podman {
                ""
            } else {
                "; pass --podman-version to choose"
            };
            output::notice(&format!(
                "{}: building the arguments for podman before 4.4 (slirp4netns){hint}",
                describe_probe(&other)
            ));
            Ok(None)
        }
    }
}

/// `doctor`: every check, then the verdict as the exit status.
pub async fn doctor<W: Write>(
    socket: Result<PathBuf, CtlError>,
    args: &DoctorArgs,
    out: &mut Output<W>,
) -> Result<(), CtlError> {
    let uid = host::effective_uid().unwrap_or(u32::MAX);
    let mut findings = vec![doctor::podman(&podman::probe())];
    findings.push(doctor::hooks(&describe_hooks(
        socket.as_deref(),
        &args.hook,
    )));
    match &socket {
        Ok(socket) => {
            let mut session = Session::new(socket.clone());
            findings.push(doctor::daemon(
                &daemon_version(&mut session).await,
                env!("CARGO_PKG_VERSION"),
            ));
            findings.push(doctor::socket_permissions(
                socket,
                uid,
                socket.parent().and_then(doctor::file_facts),
                doctor::file_facts(socket),
            ));
        }
        Err(error) => findings.push(doctor::daemon(
            &Err(error.to_string()),
            env!("CARGO_PKG_VERSION"),
        )),
    }
    findings.push(doctor::nf_tables(
        doctor::nf_tables_in_kernel(),
        doctor::nf_tables_module_file(),
    ));
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let subuid = std::fs::read_to_string("/etc/subuid").ok();
    let subgid = std::fs::read_to_string("/etc/subgid").ok();
    findings.push(doctor::subordinate_ids(
        uid,
        host::user_name(&passwd, uid).as_deref(),
        subuid.as_deref(),
        subgid.as_deref(),
    ));
    findings.push(doctor::cgroups(&doctor::cgroup_layout_facts()));
    findings.push(doctor::tun(
        uid,
        doctor::file_facts(Path::new("/dev/net/tun")),
    ));
    let failed = findings
        .iter()
        .filter(|finding| finding.status == Status::Fail)
        .count();
    out.emit(&DoctorView {
        ok: failed == 0,
        findings,
    })?;
    if failed == 0 {
        Ok(())
    } else {
        Err(CtlError::DoctorFailed(failed))
    }
}

async fn daemon_version(session: &mut Session) -> Result<String, String> {
    let mut client = session.client().await.map_err(|error| error.to_string())?;
    client
        .get_status(session.request(v1::GetStatusRequest {}))
        .await
        .map(|response| response.into_inner().version)
        .map_err(|status| session.failed(status).to_string())
}

/// The hooks check as doctor reports it.
fn describe_hooks(socket: Result<&Path, &CtlError>, hook: &HookArg) -> Result<String, String> {
    let socket = socket.map_err(ToString::to_string)?;
    let target = hook_target(socket, hook).map_err(|error| error.to_string())?;
    let xdg = Xdg::from_env().map_err(|error| error.to_string())?;
    let dirs = check_hooks_for_containers(&target, &xdg).map_err(|error| error.to_string())?;
    Ok(format!(
        "createRuntime and poststop hooks run {} --socket {} (from {})",
        target.hook.display(),
        target.socket.display(),
        dirs.iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn describe_probe(probe: &Probe) -> String {
    match probe {
        Probe::Version(version) => format!("podman {version}"),
        Probe::Unparsed(text) => format!("podman --version printed {text:?}"),
        Probe::NotFound => "podman not found in PATH".to_owned(),
        Probe::Failed(reason) => format!("podman --version failed ({reason})"),
    }
}

fn validate(name: &str, profiles: &[String]) -> Result<(), CtlError> {
    podman_args::validate_name(name)?;
    for profile in profiles {
        podman_args::validate_profile(profile)?;
    }
    Ok(())
}

/// The hook binary (`--hook`, else `shield-hook` next to this shieldctl) and the socket, both
/// absolute.
fn hook_target(socket: &Path, hook: &HookArg) -> Result<HookTarget, CtlError> {
    let hook = match &hook.hook {
        Some(path) => host::absolute(path),
        None => std::env::current_exe().map(|exe| default_hook_path(&exe)),
    }
    .map_err(CtlError::HookPath)?;
    let socket = host::absolute(socket).map_err(CtlError::HookPath)?;
    Ok(HookTarget { hook, socket })
}

/// `shield-hook` in the directory of the running `shieldctl`.
pub fn default_hook_path(exe: &Path) -> PathBuf {
    exe.parent().unwrap_or(Path::new("/")).join(HOOK_BINARY)
}

/// The hooks podman will load for this user's containers attach them to `target`, and the
/// binary they run exists; returns the directories podman reads.
fn check_hooks_for_containers(target: &HookTarget, xdg: &Xdg) -> Result<Vec<PathBuf>, CtlError> {
    let root = host::effective_uid() == Some(0);
    let dirs = check_hooks(target, (!root).then_some(xdg))?;
    setup::check_hook_binary(&target.hook)?;
    Ok(dirs)
}

/// Checks the hooks in the directories podman reads (rootless: with the user's files).
fn check_hooks(target: &HookTarget, user: Option<&Xdg>) -> Result<Vec<PathBuf>, CtlError> {
    let user_conf = user.map(|xdg| (xdg.user_containers_conf(), xdg.user_containers_conf_d()));
    let env = std::env::var_os("CONTAINERS_CONF");
    let files = containers_conf::podman_config_files(
        env.as_deref(),
        user_conf
            .as_ref()
            .map(|(file, dir)| (file.as_path(), dir.as_path())),
    );
    let dirs: Vec<PathBuf> = containers_conf::effective_hooks_dirs(&read_conf_files(&files)?)?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let found = hooks::read_hook_dirs(&dirs);
    hooks::check(&found, &dirs, target, &same_binary).map_err(CtlError::from)?;
    Ok(dirs)
}

/// The same binary: equal after resolving symlinks, or (when either does not resolve) equal
/// as written.
fn same_binary(installed: &Path, expected: &Path) -> bool {
    match (installed.canonicalize(), expected.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => host::normalize(installed) == host::normalize(expected),
    }
}

/// The texts of `paths`; a file that vanished since it was listed counts as empty.
fn read_conf_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, CtlError> {
    paths
        .iter()
        .map(|path| match std::fs::read_to_string(path) {
            Ok(text) => Ok((path.clone(), text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok((path.clone(), String::new()))
            }
            Err(source) => Err(CtlError::Io {
                what: "read",
                path: path.clone(),
                source,
            }),
        })
        .collect()
}

/// Writes shield's resolv.conf into the state directory (kept across reboots, so that a
/// stopped container can start again) and returns its path.
fn write_resolv_conf(xdg: &Xdg) -> Result<PathBuf, CtlError> {
    let dir = xdg.shield_state_dir();
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| CtlError::Io { what, path, source }
    };
    crate::atomic::create_dirs(&dir, 0o700).map_err(io("create", &dir))?;
    let path = dir.join("resolv.conf");
    crate::atomic::write_if_changed(&path, podman_args::RESOLV_CONF_TEXT.as_bytes(), 0o644)
        .map_err(io("write", &path))?;
    Ok(path)
}

/// Parses `--podman-version`.
pub fn parse_podman_version(text: &str) -> Result<PodmanVersion, String> {
    PodmanVersion::parse(text).ok_or_else(|| format!("not a podman version: {text:?} (e.g. 4.3.1)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_hook_is_next_to_shieldctl() {
        assert_eq!(
            default_hook_path(Path::new("/usr/local/bin/shieldctl")),
            Path::new("/usr/local/bin/shield-hook")
        );
    }

    #[test]
    fn hook_target_is_absolute() {
        let target = hook_target(
            Path::new("run/s.sock"),
            &HookArg {
                hook: Some(PathBuf::from("bin/../bin/shield-hook")),
            },
        )
        .unwrap();
        assert!(target.socket.is_absolute() && target.socket.ends_with("run/s.sock"));
        assert!(target.hook.is_absolute() && target.hook.ends_with("bin/shield-hook"));
        let target = hook_target(Path::new("/s.sock"), &HookArg { hook: None }).unwrap();
        assert_eq!(target.hook.file_name().unwrap(), "shield-hook");
    }

    #[test]
    fn same_binary_resolves_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("shield-hook");
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(same_binary(&link, &real));
        assert!(!same_binary(&dir.path().join("other"), &real));
        assert!(same_binary(Path::new("/x/./y"), Path::new("/x/y")));
    }

    #[test]
    fn podman_version_option() {
        assert_eq!(parse_podman_version("4.3.1").unwrap().to_string(), "4.3.1");
        assert!(parse_podman_version("four").is_err());
    }
}
