//! Kernel-side operations on one container: the attach path (namespace sockets from a helper,
//! then one verified apply), re-attach after a daemon restart, and verified live changes.
//!
//! Blocking code: the service runs it on tokio's blocking pool. No thread here changes
//! namespace; the helper process does that (see [`crate::netns`]).

use std::os::fd::{AsFd as _, BorrowedFd};
use std::time::{Duration, Instant};

use crate::netns::{
    ContainerNamespace, ContainerSockets, DnsListener, HelperPool, NetnsError, SocketRequest,
};
use crate::nft::{self, NftError};
use crate::process::{self, ProcessIdentity};
use crate::ruleset::diff::ElementChanges;
use crate::ruleset::{self, Mode, SetKind, Table, invariants::Violation};

/// The sockets the daemon holds for one running container. Dropping it closes them, which
/// releases the container's network namespace.
#[derive(Debug)]
pub struct Attachment {
    sockets: ContainerSockets,
}

impl Attachment {
    /// The container's nf_tables netlink socket.
    pub fn nftables(&self) -> BorrowedFd<'_> {
        self.sockets.nftables.as_fd()
    }

    /// Takes the DNS listeners out, for the container's DNS proxy (which then owns them: they
    /// pin the network namespace until the proxy stops).
    pub fn take_dns_listeners(&mut self) -> Vec<DnsListener> {
        std::mem::take(&mut self.sockets.dns)
    }
}

/// The sockets an attach asks the helper for: nf_tables, and the DNS listeners that the
/// container's resolv.conf points at.
fn socket_request() -> SocketRequest {
    SocketRequest {
        nflog: false,
        dns: SocketRequest::DNS_LOOPBACK.to_vec(),
    }
}

/// Why a container could not be attached or its ruleset not applied.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The namespace could not be entered or its sockets not created.
    #[error(transparent)]
    Namespace(#[from] NetnsError),
    /// The kernel refused the batch, or the netlink conversation failed.
    #[error("applying the ruleset failed")]
    Apply(#[source] NftError),
    /// The table could not be read back.
    #[error("reading the ruleset back failed")]
    ReadBack(#[source] NftError),
    /// Verification found the kernel's table different from the one applied.
    #[error("verification failed: {0}")]
    Verify(#[from] VerifyError),
    /// The kernel does not hold a change that it acknowledged.
    #[error("verification of the change failed")]
    ChangeNotInForce(#[source] NftError),
    /// The container's process is gone, or is no longer the process that was attached.
    #[error("process {pid} is gone (did the container exit?)")]
    ProcessGone {
        /// The pid that was looked for.
        pid: u32,
    },
}

/// What verification found wrong with the table the kernel holds.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The kernel has no `inet shield` table after the apply.
    #[error("table inet shield is missing from the kernel")]
    Missing,
    /// The kernel's table differs from the one built.
    #[error(
        "the kernel's table differs from the one applied: expected `{expected}`, found `{found}`"
    )]
    Mismatch {
        /// First differing line of the built table.
        expected: String,
        /// The kernel's line at the same place.
        found: String,
    },
    /// The kernel's table breaks fail-closed invariants.
    #[error("the kernel's table breaks invariants: {}", join(.0))]
    Invariants(Vec<Violation>),
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Pins the network namespace of process `pid` and reads the identity of that process (for a
/// re-attach after a restart). Quick: a few reads of `/proc`.
pub fn open(pid: u32) -> Result<(ContainerNamespace, ProcessIdentity), AttachError> {
    let namespace = ContainerNamespace::open(pid)?;
    // Read after the namespace is pinned: the runtime keeps the pid alive while the hook runs.
    let identity = process::identity(pid).map_err(|_| AttachError::ProcessGone { pid })?;
    Ok((namespace, identity))
}

/// Enters `namespace` (through a helper), applies `table` and verifies it (blocking).
pub fn attach(
    helpers: &HelperPool,
    namespace: &ContainerNamespace,
    table: &Table,
    mode: Mode,
) -> Result<Attachment, AttachError> {
    let started = Instant::now();
    let sockets = helpers.create_sockets(namespace, &socket_request())?;
    let helper_done = Instant::now();
    let attachment = Attachment { sockets };
    apply_verified(&attachment, table, mode)?;
    tracing::debug!(
        helper_micros = micros(helper_done - started),
        apply_verify_micros = micros(helper_done.elapsed()),
        "attach stages"
    );
    Ok(attachment)
}

/// How a re-attach after a daemon restart found the container's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reattached {
    /// The kernel held exactly the expected table; it was kept, learnt addresses included.
    Adopted,
    /// The kernel's table differed (or was missing); the expected table was applied.
    Reapplied,
}

/// Re-attaches a container that kept running while the daemon was down: checks it is still the
/// same process (pid reuse), takes new sockets, and keeps the kernel's table if it is exactly the
/// expected one, or replaces it. Returns the kernel's table as it stands afterwards.
pub fn reattach(
    helpers: &HelperPool,
    identity: ProcessIdentity,
    expected: &Table,
    mode: Mode,
) -> Result<(Attachment, Table, Reattached), AttachError> {
    let pid = identity.pid;
    let namespace = ContainerNamespace::open(pid)?;
    // Checked after the namespace fd is pinned: a reused pid cannot hand us another namespace.
    if !process::is_same_process(&identity) {
        return Err(AttachError::ProcessGone { pid });
    }
    let sockets = helpers.create_sockets(&namespace, &socket_request())?;
    let attachment = Attachment { sockets };
    if let Some(kernel) = read_back(&attachment)?
        && verify_except_dns(expected, &kernel, mode).is_ok()
    {
        return Ok((attachment, kernel, Reattached::Adopted));
    }
    apply_verified(&attachment, expected, mode)?;
    Ok((attachment, expected.clone(), Reattached::Reapplied))
}

/// Applies element changes (one batch whenever it fits), then checks that every added element
/// is in the kernel and every removed one is gone.
///
/// Only the touched elements are looked up, so the cost follows the size of the change, not of
/// the sets: an element batch cannot alter chains or rules, and the whole table was verified
/// when it was last replaced (attach, restore, mode change).
pub fn apply_changes_verified(
    attachment: &Attachment,
    changes: &ElementChanges,
) -> Result<(), AttachError> {
    if changes.is_empty() {
        return Ok(());
    }
    nft::apply_element_changes(attachment.nftables(), &changes.adds, &changes.removes)
        .map_err(AttachError::Apply)?;
    nft::verify_element_changes(attachment.nftables(), &changes.adds, &changes.removes)
        .map_err(AttachError::ChangeNotInForce)
}

/// Lets DNS-learnt addresses through: adds `sets` (elements of the timeout sets, with their
/// timeouts) in one batch and returns once the kernel has acknowledged every message.
///
/// The ACK is the kernel's word that it holds the elements, and nothing else changes in this
/// batch (no chain, no rule, no removal), so unlike [`apply_changes_verified`] there is no
/// read-back: a DNS answer waits for this call, and a lookup would double its cost.
pub fn add_dns_elements(attachment: &Attachment, sets: &[ruleset::Set]) -> Result<(), AttachError> {
    if sets.iter().any(|set| set.kind != SetKind::Timeout) {
        return Err(AttachError::Apply(NftError::Protocol(
            "only dns (timeout) set elements are let through from DNS answers".into(),
        )));
    }
    nft::apply_element_changes(attachment.nftables(), sets, &[])
        .map(drop)
        .map_err(AttachError::Apply)
}

/// Like [`verify`], with the elements of the timeout (dns) sets left out of the comparison.
pub fn verify_except_dns(built: &Table, kernel: &Table, mode: Mode) -> Result<(), VerifyError> {
    verify(
        &without_dns_elements(built),
        &without_dns_elements(kernel),
        mode,
    )?;
    // The invariants hold on the real kernel table too, dns elements included.
    ruleset::invariants::check(kernel, mode).map_err(VerifyError::Invariants)
}

fn without_dns_elements(table: &Table) -> Table {
    let mut table = table.clone();
    for set in &mut table.sets {
        if set.kind == SetKind::Timeout {
            set.elements.clear();
        }
    }
    table
}

/// Microseconds of `elapsed`, for timings in structured log fields.
pub fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// Replaces the container's table with `table` in one batch, reads it back and verifies it.
pub fn apply_verified(
    attachment: &Attachment,
    table: &Table,
    mode: Mode,
) -> Result<(), AttachError> {
    let started = Instant::now();
    nft::apply(attachment.nftables(), table).map_err(AttachError::Apply)?;
    let applied = Instant::now();
    let kernel = read_back(attachment)?.ok_or(VerifyError::Missing)?;
    let read = Instant::now();
    verify(table, &kernel, mode)?;
    tracing::debug!(
        apply_micros = micros(applied - started),
        read_back_micros = micros(read - applied),
        verify_micros = micros(read.elapsed()),
        "apply stages"
    );
    Ok(())
}

/// The table the kernel holds for the container now.
pub fn read_back(attachment: &Attachment) -> Result<Option<Table>, AttachError> {
    nft::read_table(attachment.nftables()).map_err(AttachError::ReadBack)
}

/// Checks that the kernel holds exactly the table built and that it keeps every invariant.
/// Pure: the invariants are checked on what the kernel holds, not on what was sent.
pub fn verify(built: &Table, kernel: &Table, mode: Mode) -> Result<(), VerifyError> {
    ruleset::invariants::check(kernel, mode).map_err(VerifyError::Invariants)?;
    if built != kernel {
        let (expected, found) = first_difference(&ruleset::render(built), &ruleset::render(kernel));
        return Err(VerifyError::Mismatch { expected, found });
    }
    Ok(())
}

/// The first line where two renderings differ (trimmed), for an error message a person can act on.
fn first_difference(expected: &str, found: &str) -> (String, String) {
    let mut expected_lines = expected.lines().map(str::trim);
    let mut found_lines = found.lines().map(str::trim);
    loop {
        match (expected_lines.next(), found_lines.next()) {
            (Some(e), Some(f)) if e == f => continue,
            (None, None) => return ("(same text)".to_owned(), "(different structure)".to_owned()),
            (e, f) => {
                let (e, f) = (e.unwrap_or("(end of table)"), f.unwrap_or("(end of table)"));
                return excerpts(e, f);
            }
        }
    }
}

/// Most characters of a line that [`first_difference`] quotes: a set's elements are one line,
/// and an error message carries it to a client (an h2 header: kilobytes, not megabytes).
const QUOTE_LIMIT: usize = 160;

/// The two differing lines, or, when long, the stretch of each around where they first differ.
fn excerpts(expected: &str, found: &str) -> (String, String) {
    if expected.len() <= QUOTE_LIMIT && found.len() <= QUOTE_LIMIT {
        return (expected.to_owned(), found.to_owned());
    }
    let same = expected
        .char_indices()
        .zip(found.chars())
        .find(|((_, e), f)| e != f)
        .map_or(expected.len().min(found.len()), |((at, _), _)| at);
    let excerpt = |line: &str| {
        let start = floor_char_boundary(line, same.saturating_sub(QUOTE_LIMIT / 4));
        let end = floor_char_boundary(line, start.saturating_add(QUOTE_LIMIT));
        let mut text = String::new();
        if start > 0 {
            text.push('…');
        }
        text.push_str(line.get(start..end).unwrap_or_default());
        if end < line.len() {
            text.push('…');
        }
        text
    };
    (excerpt(expected), excerpt(found))
}

/// The largest char boundary of `text` at or before `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{ChainPolicy, Policy, build};

    #[test]
    fn verify_accepts_the_built_table() {
        let policy = Policy::default();
        let table = build(&policy);
        verify(&table, &table.clone(), Mode::Up).unwrap();
    }

    #[test]
    fn verify_refuses_a_changed_policy() {
        let table = build(&Policy::default());
        let mut kernel = table.clone();
        for chain in &mut kernel.chains {
            chain.policy = ChainPolicy::Accept;
        }
        assert!(matches!(
            verify(&table, &kernel, Mode::Up),
            Err(VerifyError::Invariants(_))
        ));
    }

    #[test]
    fn verify_refuses_a_missing_rule_even_when_invariants_hold() {
        let policy = Policy {
            allow: vec!["192.0.2.1/32".parse().unwrap()],
            ..Policy::default()
        };
        let table = build(&policy);
        let mut kernel = table.clone();
        for set in &mut kernel.sets {
            if set.name == "allow_v4" {
                set.elements.clear();
            }
        }
        let err = verify(&table, &kernel, Mode::Up).unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn first_difference_finds_the_line() {
        assert_eq!(
            first_difference("a\n b\nc", "a\nb\nd"),
            ("c".to_owned(), "d".to_owned())
        );
        assert_eq!(
            first_difference("a", "a\nb"),
            ("(end of table)".to_owned(), "b".to_owned())
        );
    }

    #[test]
    fn a_long_difference_is_quoted_around_where_it_starts() {
        let expected: String = (0..10_000).map(|i| format!("10.0.{i}, ")).collect();
        let found = expected.replace("10.0.5000,", "10.0.5000, 10.0.5000,");
        let (e, f) = first_difference(&expected, &found);
        for quoted in [&e, &f] {
            assert!(quoted.chars().count() <= QUOTE_LIMIT + 2, "{quoted}");
            assert!(quoted.starts_with('…') && quoted.ends_with('…'), "{quoted}");
            assert!(quoted.contains("10.0.5000"), "{quoted}");
        }
        assert_ne!(e, f);
    }
}
