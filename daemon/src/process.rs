//! Process identity: is the container process the daemon attached to still the same process?
//!
//! The store records the pid of each running container's process together with its start time
//! ([`ProcessIdentity`]). After a daemon restart the pid alone proves nothing: the container may
//! have stopped and the kernel may have given its pid to an unrelated process. The start time —
//! field 22 of `/proc/PID/stat`, in clock ticks since boot — never changes for a process and
//! differs between two processes that held the same pid, so pid plus start time identifies one
//! process for the lifetime of the boot.

use std::io;

use serde::{Deserialize, Serialize};

/// One process, robust against pid reuse: the pid and the time it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessIdentity {
    /// Process id, in the daemon's pid namespace.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks between boot and the start of the process.
    pub start_time: u64,
}

/// The fields of `/proc/PID/stat` this module needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: the process state (`R`, `S`, `D`, `Z`, `X`, …).
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses the content of a `/proc/PID/stat` file.
///
/// Field 2 (`comm`, in parentheses) is the executable name, which the process controls and which
/// may contain spaces and parentheses — `a) (b` is a valid comm. Splitting at the *last* `)` is the
/// only reliable way to find where the numeric fields start.
pub fn parse_stat(content: &str) -> Option<Stat> {
    let (_, rest) = content.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    // `fields` starts at field 3 (state); field 22 is 19 fields further.
    let state = fields.next()?;
    let mut state_chars = state.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// Reads `/proc/PID/stat`; `NotFound` when no such process exists.
pub fn stat(pid: u32) -> io::Result<Stat> {
    if pid == 0 {
        // `/proc/0` does not exist; say why rather than reporting a missing file.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pid 0 is not a process",
        ));
    }
    let path = format!("/proc/{pid}/stat");
    let content = std::fs::read_to_string(&path)?;
    parse_stat(&content).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: unexpected format"),
        )
    })
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock ticks since boot).
pub fn start_time(pid: u32) -> io::Result<u64> {
    stat(pid).map(|stat| stat.start_time)
}

/// The identity of the live process `pid`, to record while the container runs.
pub fn identity(pid: u32) -> io::Result<ProcessIdentity> {
    Ok(ProcessIdentity {
        pid,
        start_time: start_time(pid)?,
    })
}

/// Whether `identity` still names a running process: the pid exists, it is not a zombie (a
/// container whose process exited but was not reaped yet is stopped), and it started at the
/// recorded time (so it is not another process that reused the pid).
pub fn is_same_process(identity: &ProcessIdentity) -> bool {
    match stat(identity.pid) {
        Ok(stat) => stat.start_time == identity.start_time && !matches!(stat.state, 'Z' | 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line from `/proc/self/stat`, with the comm field replaced.
    fn stat_line(comm: &str) -> String {
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 1000 0 0 0 5 3 0 0 20 0 1 0 987654 12345678 400 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
    }

    #[test]
    fn parses_plain_comm() {
        assert_eq!(
            parse_stat(&stat_line("bash")),
            Some(Stat {
                state: 'S',
                start_time: 987_654
            })
        );
    }

    #[test]
    fn comm_with_spaces_and_parentheses() {
        for comm in [
            ") (",
            "a) (b) 1 2 3",
            "x y",
            "((",
            "))",
            ") R 1 2 3 4 5 6 7 8 9",
        ] {
            assert_eq!(
                parse_stat(&stat_line(comm)).map(|s| s.start_time),
                Some(987_654),
                "{comm:?}"
            );
        }
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "4242 (x",
            "4242 (x) S 1 2",
            "4242 (x) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn own_process() {
        let pid = std::process::id();
        let identity = identity(pid).unwrap();
        assert!(identity.start_time > 0);
        assert!(is_same_process(&identity));
        // Same pid, another start time: a reused pid.
        let reused = ProcessIdentity {
            pid,
            start_time: identity.start_time + 1,
        };
        assert!(!is_same_process(&reused));
    }

    #[test]
    fn dead_process() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let alive = identity(pid);
        child.wait().unwrap();
        // Reaped: the pid is gone (unless reused at once, which the start time then catches).
        if let Ok(alive) = alive {
            assert!(!is_same_process(&alive));
        }
        assert!(!is_same_process(&ProcessIdentity {
            pid: 0,
            start_time: 1
        }));
        // Above the kernel's maximum pid (2^22): never a process.
        assert!(start_time(u32::MAX).is_err());
        assert!(!is_same_process(&ProcessIdentity {
            pid: u32::MAX,
            start_time: 1
        }));
    }

    #[test]
    fn zombie_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait for the child to exit without reaping it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut zombie = None;
        while std::time::Instant::now() < deadline {
            match stat(pid) {
                Ok(s) if s.state == 'Z' => {
                    zombie = Some(s);
                    break;
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        let zombie = zombie.unwrap();
        assert!(!is_same_process(&ProcessIdentity {
            pid,
            start_time: zombie.start_time
        }));
        child.wait().unwrap();
    }
}
