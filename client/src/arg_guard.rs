//! The `podman run` arguments `shieldctl run` refuses: every one that would undo the shield
//! (another network, extra network capabilities, no hooks, another resolver, …).
//!
//! podman (pflag) reads options up to the first argument that is not an option: the image.
//! Everything after it is the container's command and is never scanned (`sh -c --privileged` is
//! fine). To find the image, the scan must know which options take a value, so it carries
//! podman's `run` option table. An option missing from the table is refused unless written
//! `--option=value` (or `--flag=true`): guessing would either take the option's value for the
//! image and stop scanning early, or swallow the next option as a value, and either could let a
//! forbidden option through.

use std::path::Path;

/// An argument `shieldctl run` will not pass to podman.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An option that would undo the shield, as the user wrote it.
    #[error("refusing {flag}: {why}")]
    Forbidden {
        /// The option as written (`--net`, `-v`, `--cap-add`).
        flag: String,
        /// Why it undoes the shield.
        why: &'static str,
    },
    /// An option podman's `run` table (as shieldctl knows it) does not have.
    #[error(
        "unknown podman run option {0}: write it as {0}=VALUE (or {0}=true for a flag) so that shieldctl can tell it from the image"
    )]
    Unknown(String),
    /// An option that takes a value came last.
    #[error("podman option {0} needs a value")]
    MissingValue(String),
    /// No image after the options.
    #[error(
        "no image given: shieldctl run NAME [--profiles P…] -- [PODMAN OPTIONS] IMAGE [COMMAND…]"
    )]
    NoImage,
}

/// Long `podman run` options that take a value (podman 4 and 5, aliases included).
const LONG_WITH_VALUE: &[&str] = &[
    "add-host",
    "annotation",
    "arch",
    "attach",
    "authfile",
    "blkio-weight",
    "blkio-weight-device",
    "cap-add",
    "cap-drop",
    "cert-dir",
    "cgroup-conf",
    "cgroup-parent",
    "cgroupns",
    "cgroups",
    "chrootdirs",
    "cidfile",
    "conmon-pidfile",
    "cpu-period",
    "cpu-quota",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cpu-shares",
    "cpus",
    "cpuset-cpus",
    "cpuset-mems",
    "creds",
    "decryption-key",
    "detach-keys",
    "device",
    "device-cgroup-rule",
    "device-read-bps",
    "device-read-iops",
    "device-write-bps",
    "device-write-iops",
    "dns",
    "dns-opt",
    "dns-option",
    "dns-search",
    "entrypoint",
    "env",
    "env-file",
    "env-merge",
    "expose",
    "gidmap",
    "gpus",
    "group-add",
    "group-entry",
    "health-cmd",
    "health-interval",
    "health-log-destination",
    "health-max-log-count",
    "health-max-log-size",
    "health-on-failure",
    "health-retries",
    "health-start-period",
    "health-startup-cmd",
    "health-startup-interval",
    "health-startup-retries",
    "health-startup-success",
    "health-startup-timeout",
    "health-timeout",
    "healthcheck-command",
    "healthcheck-interval",
    "healthcheck-retries",
    "healthcheck-start-period",
    "healthcheck-timeout",
    "hooks-dir",
    "hostname",
    "hosts-file",
    "hostuser",
    "image-volume",
    "init-path",
    "ip",
    "ip6",
    "ipc",
    "kernel-memory",
    "label",
    "label-file",
    "log-driver",
    "log-opt",
    "mac-address",
    "memory",
    "memory-reservation",
    "memory-swap",
    "memory-swappiness",
    "mount",
    "name",
    "net",
    "network",
    "network-alias",
    "oom-score-adj",
    "os",
    "passwd-entry",
    "personality",
    "pid",
    "pidfile",
    "pids-limit",
    "platform",
    "pod",
    "pod-id-file",
    "preserve-fd",
    "preserve-fds",
    "publish",
    "pull",
    "rdt-class",
    "requires",
    "restart",
    "retry",
    "retry-delay",
    "sdnotify",
    "seccomp-policy",
    "secret",
    "security-opt",
    "shm-size",
    "shm-size-systemd",
    "signature-policy",
    "stop-signal",
    "stop-timeout",
    "subgidname",
    "subuidname",
    "sysctl",
    "systemd",
    "timeout",
    "tmpfs",
    "tz",
    "uidmap",
    "ulimit",
    "umask",
    "unsetenv",
    "user",
    "userns",
    "uts",
    "variant",
    "volume",
    "volumes-from",
    "workdir",
];

/// Long `podman run` options that take no value (booleans; `--flag=false` is also accepted).
const LONG_FLAGS: &[&str] = &[
    "detach",
    "disable-content-trust",
    "env-host",
    "help",
    "http-proxy",
    "init",
    "interactive",
    "no-healthcheck",
    "no-hosts",
    "oom-kill-disable",
    "passwd",
    "privileged",
    "publish-all",
    "quiet",
    "read-only",
    "read-only-tmpfs",
    "replace",
    "rm",
    "rmi",
    "rootfs",
    "sig-proxy",
    "tls-verify",
    "tty",
    "unsetenv-all",
];

/// Short options that take a value, with their long names.
const SHORT_WITH_VALUE: &[(char, &str)] = &[
    ('a', "attach"),
    ('c', "cpu-shares"),
    ('e', "env"),
    ('h', "hostname"),
    ('l', "label"),
    ('m', "memory"),
    ('p', "publish"),
    ('u', "user"),
    ('v', "volume"),
    ('w', "workdir"),
];

/// Short options that take no value, with their long names.
const SHORT_FLAGS: &[(char, &str)] = &[
    ('d', "detach"),
    ('i', "interactive"),
    ('t', "tty"),
    ('P', "publish-all"),
    ('q', "quiet"),
];

/// Where shield mounts its resolv.conf in the container.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Checks the arguments the user gives after `--` (options, image, command): `Ok` when none of
/// the options would undo the shield and an image follows them.
pub fn check(args: &[String]) -> Result<(), Refusal> {
    let mut index = 0;
    while let Some(arg) = args.get(index) {
        index += 1;
        if arg == "--" {
            return if index < args.len() {
                Ok(())
            } else {
                Err(Refusal::NoImage)
            };
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let written = format!("--{name}");
            let value = if LONG_WITH_VALUE.contains(&name) {
                match inline {
                    Some(value) => Some(value),
                    None => {
                        let value = args
                            .get(index)
                            .ok_or_else(|| Refusal::MissingValue(written.clone()))?;
                        index += 1;
                        Some(value.as_str())
                    }
                }
            } else if LONG_FLAGS.contains(&name) || inline.is_some() {
                inline
            } else {
                return Err(Refusal::Unknown(written));
            };
            forbid(name, &written, value)?;
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|rest| !rest.is_empty()) {
            index = check_short_cluster(cluster, args, index)?;
        } else {
            // The image: what follows is the container's command.
            return Ok(());
        }
    }
    Err(Refusal::NoImage)
}

/// `-it`, `-dv /a:/b`, `-v/a:/b`, `-p=80`: flags first, then at most one option with a value,
/// which takes the rest of the cluster or else the next argument. Returns the next index.
fn check_short_cluster(cluster: &str, args: &[String], mut index: usize) -> Result<usize, Refusal> {
    for (offset, letter) in cluster.char_indices() {
        let written = format!("-{letter}");
        if let Some((_, name)) = SHORT_FLAGS.iter().find(|(short, _)| *short == letter) {
            forbid(name, &written, None)?;
            continue;
        }
        let Some((_, name)) = SHORT_WITH_VALUE.iter().find(|(short, _)| *short == letter) else {
            return Err(Refusal::Unknown(written));
        };
        let rest = &cluster[offset + letter.len_utf8()..];
        let value = if rest.is_empty() {
            let value = args
                .get(index)
                .ok_or_else(|| Refusal::MissingValue(written.clone()))?;
            index += 1;
            value.as_str()
        } else {
            rest.strip_prefix('=').unwrap_or(rest)
        };
        forbid(name, &written, Some(value))?;
        return Ok(index);
    }
    Ok(index)
}

/// The verdict on one option (`name` is its long name, `written` how the user wrote it).
fn forbid(name: &str, written: &str, value: Option<&str>) -> Result<(), Refusal> {
    let refuse = |why| {
        Err(Refusal::Forbidden {
            flag: written.to_owned(),
            why,
        })
    };
    let value = value.unwrap_or_default();
    match name {
        "name" => refuse("shieldctl run names the container itself (its NAME argument)"),
        "network" | "net" => refuse(
            "shieldctl chooses the container's network; another one (host, a pod's, a container's) would bypass the firewall",
        ),
        "hooks-dir" => {
            refuse("the shield's hooks must run; another hooks directory would skip them")
        }
        "annotation" if csv(value).any(is_shield_annotation) => {
            refuse("shield.* annotations are set by shieldctl run itself")
        }
        "cap-add" if csv(value).any(is_network_capability) => refuse(
            "NET_ADMIN, NET_RAW or ALL would let the container change its own firewall or send raw packets",
        ),
        "privileged" => refuse("a privileged container can change its own firewall"),
        "security-opt" => refuse("security options can lift the confinement the shield relies on"),
        "pod" | "pod-id-file" => refuse(
            "a container in a pod shares the pod's network, which the shield does not set up",
        ),
        "userns" if value.eq_ignore_ascii_case("host") => {
            refuse("the host user namespace would give the container the host's network privileges")
        }
        "volume" if volume_target(value).is_some_and(is_resolv_conf) => {
            refuse("shield mounts its own /etc/resolv.conf (its DNS proxy)")
        }
        "mount" if mount_target(value).is_some_and(is_resolv_conf) => {
            refuse("shield mounts its own /etc/resolv.conf (its DNS proxy)")
        }
        "tmpfs" if is_resolv_conf(value.split(':').next().unwrap_or_default()) => {
            refuse("shield mounts its own /etc/resolv.conf (its DNS proxy)")
        }
        "dns" => {
            refuse("the container's resolver is shield's DNS proxy (set through /etc/resolv.conf)")
        }
        _ => Ok(()),
    }
}

/// The items of a comma-separated option value (pflag's string slices split on commas).
fn csv(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(|item| item.trim().trim_matches('"'))
}

fn is_shield_annotation(item: &str) -> bool {
    let key = item.split_once('=').map_or(item, |(key, _)| key).trim();
    key.get(..7)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("shield."))
}

fn is_network_capability(cap: &str) -> bool {
    let cap = cap.trim().to_ascii_uppercase();
    let cap = cap.strip_prefix("CAP_").unwrap_or(&cap);
    matches!(cap, "NET_ADMIN" | "NET_RAW" | "ALL")
}

/// The container path of `-v SRC:DST[:OPTIONS]` (or `-v DST`, an anonymous volume).
fn volume_target(value: &str) -> Option<&str> {
    let mut parts = value.split(':');
    let first = parts.next()?;
    Some(parts.next().unwrap_or(first))
}

/// The container path of `--mount type=…,dst=…` (`dst`, `destination` or `target`).
fn mount_target(value: &str) -> Option<&str> {
    csv(value).find_map(|item| {
        let (key, path) = item.split_once('=')?;
        matches!(
            key.trim().to_ascii_lowercase().as_str(),
            "dst" | "destination" | "target"
        )
        .then_some(path.trim())
    })
}

/// `/etc/resolv.conf`, however written (`//etc/./resolv.conf/`).
fn is_resolv_conf(path: &str) -> bool {
    path.starts_with('/') && crate::host::normalize(Path::new(path)) == Path::new(RESOLV_CONF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &[&str]) -> Vec<String> {
        text.iter().map(|arg| (*arg).to_owned()).collect()
    }

    fn refused(text: &[&str]) -> String {
        match check(&args(text)) {
            Err(Refusal::Forbidden { flag, .. }) => flag,
            other => panic!("{text:?} should be forbidden, got {other:?}"),
        }
    }

    fn allowed(text: &[&str]) {
        assert_eq!(check(&args(text)), Ok(()), "{text:?}");
    }

    #[test]
    fn ordinary_runs_pass() {
        allowed(&["alpine"]);
        allowed(&["--rm", "-it", "alpine", "sh"]);
        allowed(&[
            "-d",
            "--rm",
            "-e",
            "A=1",
            "-v",
            "/src:/app:ro",
            "-p",
            "8080:80",
            "alpine",
        ]);
        allowed(&[
            "--env=A=1",
            "--volume=/data:/data",
            "--workdir",
            "/app",
            "img",
            "ls",
        ]);
        allowed(&["--cap-add", "SYS_PTRACE", "--cap-drop=ALL", "img"]);
        allowed(&["--annotation", "other=1", "--userns=keep-id", "img"]);
        allowed(&[
            "--mount",
            "type=bind,src=/a,dst=/etc/hosts",
            "--tmpfs",
            "/tmp",
            "img",
        ]);
        allowed(&["-v", "/x:/etc", "img"]);
        allowed(&[
            "--network-alias",
            "web",
            "--dns-search",
            "example.com",
            "img",
        ]);
        allowed(&["--privileged-not-a-thing=1", "img"]);
        allowed(&["--", "img"]);
        allowed(&["--rm", "--", "img", "--privileged"]);
        allowed(&["-", "x"]);
    }

    #[test]
    fn the_command_after_the_image_is_never_scanned() {
        allowed(&["alpine", "sh", "-c", "--privileged"]);
        allowed(&["alpine", "--network", "host"]);
        allowed(&["-e", "--privileged", "alpine"]);
        allowed(&["--entrypoint", "--net=host", "alpine"]);
        allowed(&["-it", "alpine", "-v", "/x:/etc/resolv.conf"]);
    }

    #[test]
    fn name_network_hooks_pod_privileged_security_dns() {
        assert_eq!(refused(&["--name", "x", "img"]), "--name");
        assert_eq!(refused(&["--name=x", "img"]), "--name");
        for form in [
            &["--network", "host", "img"][..],
            &["--network=host", "img"],
            &["--network=none", "img"],
            &["--network", "slirp4netns:allow_host_loopback=true", "img"],
            &["--network", "container:other", "img"],
        ] {
            assert_eq!(refused(form), "--network", "{form:?}");
        }
        assert_eq!(refused(&["--net", "host", "img"]), "--net");
        assert_eq!(refused(&["--net=pasta", "img"]), "--net");
        assert_eq!(refused(&["--hooks-dir", "/x", "img"]), "--hooks-dir");
        assert_eq!(refused(&["--hooks-dir=/x", "img"]), "--hooks-dir");
        assert_eq!(refused(&["--pod", "p", "img"]), "--pod");
        assert_eq!(refused(&["--pod=new:p", "img"]), "--pod");
        assert_eq!(refused(&["--pod-id-file", "/f", "img"]), "--pod-id-file");
        assert_eq!(refused(&["--privileged", "img"]), "--privileged");
        assert_eq!(refused(&["--privileged=true", "img"]), "--privileged");
        assert_eq!(
            refused(&["--security-opt", "label=disable", "img"]),
            "--security-opt"
        );
        assert_eq!(
            refused(&["--security-opt=seccomp=unconfined", "img"]),
            "--security-opt"
        );
        assert_eq!(refused(&["--dns", "1.1.1.1", "img"]), "--dns");
        assert_eq!(refused(&["--dns=127.0.0.1", "img"]), "--dns");
    }

    #[test]
    fn shield_annotations() {
        assert_eq!(
            refused(&["--annotation", "shield.profiles=x", "img"]),
            "--annotation"
        );
        assert_eq!(
            refused(&["--annotation=shield.name=y", "img"]),
            "--annotation"
        );
        assert_eq!(
            refused(&["--annotation", "a=1,shield.x=2", "img"]),
            "--annotation"
        );
        assert_eq!(
            refused(&["--annotation", "SHIELD.Profiles=", "img"]),
            "--annotation"
        );
        assert_eq!(
            refused(&["--annotation", "shield.profiles", "img"]),
            "--annotation"
        );
        allowed(&["--annotation", "shieldx=1", "img"]);
        allowed(&["--annotation", "io.shield.x=1", "img"]);
    }

    #[test]
    fn network_capabilities_in_every_spelling() {
        for value in [
            "NET_ADMIN",
            "net_admin",
            "CAP_NET_ADMIN",
            "cap_net_raw",
            "NET_RAW",
            "ALL",
            "all",
            "SYS_TIME,NET_RAW",
            " net_admin ",
        ] {
            assert_eq!(
                refused(&["--cap-add", value, "img"]),
                "--cap-add",
                "{value}"
            );
            let inline = format!("--cap-add={value}");
            assert_eq!(refused(&[&inline, "img"]), "--cap-add", "{value}");
        }
        allowed(&["--cap-add", "NET_BIND_SERVICE", "img"]);
        allowed(&["--cap-drop", "NET_ADMIN", "img"]);
    }

    #[test]
    fn host_user_namespace() {
        assert_eq!(refused(&["--userns", "host", "img"]), "--userns");
        assert_eq!(refused(&["--userns=host", "img"]), "--userns");
        assert_eq!(refused(&["--userns=HOST", "img"]), "--userns");
        allowed(&["--userns", "auto", "img"]);
    }

    #[test]
    fn mounts_onto_resolv_conf() {
        for form in [
            &["-v", "/x:/etc/resolv.conf", "img"][..],
            &["-v", "/x:/etc/resolv.conf:ro", "img"],
            &["-v/x:/etc/resolv.conf", "img"],
            &["-v=/x:/etc/resolv.conf", "img"],
            &["-itv", "/x:/etc/resolv.conf", "img"],
            &["-v", "/etc/resolv.conf", "img"],
        ] {
            assert_eq!(refused(form), "-v", "{form:?}");
        }
        assert_eq!(
            refused(&["--volume", "/x://etc/./resolv.conf/", "img"]),
            "--volume"
        );
        assert_eq!(
            refused(&["--volume=/x:/etc/resolv.conf", "img"]),
            "--volume"
        );
        for value in [
            "type=bind,src=/x,dst=/etc/resolv.conf",
            "type=bind,source=/x,destination=/etc/resolv.conf,ro",
            "type=bind,src=/x,target=/etc/resolv.conf",
            "type=tmpfs,DST=/etc/resolv.conf",
        ] {
            assert_eq!(refused(&["--mount", value, "img"]), "--mount", "{value}");
            let inline = format!("--mount={value}");
            assert_eq!(refused(&[&inline, "img"]), "--mount", "{value}");
        }
        assert_eq!(
            refused(&["--tmpfs", "/etc/resolv.conf:size=1k", "img"]),
            "--tmpfs"
        );
        allowed(&["-v", "/etc/resolv.conf:/resolv.conf:ro", "img"]);
        allowed(&["--mount", "type=bind,src=/etc/resolv.conf,dst=/r", "img"]);
    }

    #[test]
    fn short_clusters() {
        allowed(&["-it", "img"]);
        allowed(&["-dit", "img"]);
        allowed(&["-itp", "80:80", "img"]);
        allowed(&["-p8080:80", "img"]);
        allowed(&["-ePATH=/bin", "img"]);
        assert_eq!(refused(&["-it", "--privileged", "img"]), "--privileged");
        // The value of a short option is not the image: scanning goes on after it.
        assert_eq!(refused(&["-e", "A=1", "--net", "host", "img"]), "--net");
        assert_eq!(
            refused(&["-iu", "x", "--privileged", "img"]),
            "--privileged"
        );
        // `-ue`: the user is `e`, so `x` is the image and the rest its command.
        allowed(&["-ue", "x", "--privileged"]);
    }

    #[test]
    fn values_that_look_like_options_are_values() {
        allowed(&["--label", "--privileged", "img"]);
        assert_eq!(
            refused(&["--label", "--privileged", "--privileged", "img"]),
            "--privileged"
        );
    }

    #[test]
    fn unknown_options_must_carry_their_value() {
        assert_eq!(
            check(&args(&["--future-option", "value", "--privileged", "img"])),
            Err(Refusal::Unknown("--future-option".to_owned()))
        );
        let message = Refusal::Unknown("--future-option".to_owned()).to_string();
        assert!(message.contains("--future-option=VALUE"), "{message}");
        assert_eq!(
            check(&args(&["-x", "img"])),
            Err(Refusal::Unknown("-x".to_owned()))
        );
        assert_eq!(
            check(&args(&["-iZ", "img"])),
            Err(Refusal::Unknown("-Z".to_owned()))
        );
        assert_eq!(
            refused(&["--future-option=value", "--privileged", "img"]),
            "--privileged"
        );
    }

    #[test]
    fn missing_values_and_images() {
        assert_eq!(
            check(&args(&["--env"])),
            Err(Refusal::MissingValue("--env".to_owned()))
        );
        assert_eq!(
            check(&args(&["-it", "-v"])),
            Err(Refusal::MissingValue("-v".to_owned()))
        );
        assert_eq!(check(&args(&[])), Err(Refusal::NoImage));
        assert_eq!(check(&args(&["--rm", "-it"])), Err(Refusal::NoImage));
        assert_eq!(check(&args(&["--rm", "--"])), Err(Refusal::NoImage));
    }

    #[test]
    fn messages_name_the_flag_and_the_reason() {
        let error = check(&args(&["--net=host", "img"])).unwrap_err();
        assert!(error.to_string().starts_with("refusing --net: "), "{error}");
        let error = check(&args(&["--cap-add", "NET_RAW", "img"])).unwrap_err();
        assert!(error.to_string().contains("--cap-add"), "{error}");
    }
}
