//! Where the daemon's log goes: to the journal, natively (levels and fields kept), when systemd
//! connected its stderr to the journal; to stderr otherwise.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The variable that sets the log filter, e.g. `info` or `shieldd=debug`.
pub const FILTER_VARIABLE: &str = "SHIELD_LOG";

/// Installs the global subscriber: level from `SHIELD_LOG` (`info` by default); the journal when
/// stderr is the journal stream named by `JOURNAL_STREAM`, stderr otherwise (also when the
/// journal's socket cannot be opened). ANSI colours only on a terminal.
///
/// A subscriber installed before (in tests) is left in place.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(FILTER_VARIABLE)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let journal = stderr_is_journal().then(tracing_journald::layer);
    match journal {
        Some(Ok(journald)) => {
            let _ = registry.with(journald).try_init();
        }
        fallback => {
            let stderr = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            let _ = registry.with(stderr).try_init();
            if let Some(Err(err)) = fallback {
                tracing::warn!(error = %err, "cannot open the journal's socket; logging to stderr");
            }
        }
    }
}

/// Whether stderr is the journal stream systemd set up for this service, as `systemd.exec(5)`
/// advises: `JOURNAL_STREAM` names its device and inode. A child whose stderr was redirected
/// inherits the variable but not the stream, and keeps logging to stderr.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    names_stream(&stream.to_string_lossy(), stat.st_dev, stat.st_ino)
}

/// Whether `journal_stream` (`DEVICE:INODE`, both decimal) names the file with `device` and
/// `inode`.
pub fn names_stream(journal_stream: &str, device: u64, inode: u64) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    dev.parse::<u64>().is_ok_and(|dev| dev == device)
        && ino.parse::<u64>().is_ok_and(|ino| ino == inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_recognised_by_device_and_inode() {
        assert!(names_stream("8:12345", 8, 12345));
        assert!(!names_stream("8:12345", 8, 12346));
        assert!(!names_stream("9:12345", 8, 12345));
    }

    #[test]
    fn malformed_values_name_nothing() {
        for value in ["", "8", "8:", ":12345", "8:12345:1", "x:y", "-8:12345"] {
            assert!(!names_stream(value, 8, 12345), "{value:?}");
        }
    }
}
