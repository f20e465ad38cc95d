//! The change journal on a real file system: live changes appended beside `state.json`, replayed
//! on load, taken back, folded in by a save; torn and stale lines; and a crash test — a child
//! process appending (and now and then saving) in a loop, killed with SIGKILL again and again,
//! must always leave a state that is exactly its first N changes, with N never going back.
//! No root needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests"
)]

mod crash;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use indexmap::IndexSet;
use ipnet::IpNet;
use shieldd::profiles::DomainPattern;
use shieldd::store::{
    ContainerState, Durability, JOURNAL_FILE, JournalAction, JournalEntry, JournalMark, Store,
    StoreError,
};

/// Set in the child process of [`sigkill_mid_append_loses_no_acknowledged_change`]: the state
/// directory.
const CHILD_ENV: &str = "SHIELD_JOURNAL_CRASH_CHILD";

const ID: &str = "journal0123456789";

fn entry(seq: u64, action: JournalAction, targets: &[&str]) -> JournalEntry {
    JournalEntry {
        seq,
        action,
        targets: targets.iter().map(|&target| target.to_owned()).collect(),
    }
}

/// Appends change `seq` to container `ID`'s journal; panics unless it succeeds.
fn append(
    store: &Store,
    seq: u64,
    action: JournalAction,
    targets: &[&str],
    durability: Durability,
) -> JournalMark {
    store
        .append(ID, &entry(seq, action, targets), durability)
        .unwrap()
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn list(nets: &IndexSet<IpNet>) -> Vec<IpNet> {
    nets.iter().copied().collect()
}

fn names(domains: &IndexSet<DomainPattern>) -> Vec<String> {
    domains.iter().map(ToString::to_string).collect()
}

/// A store in a fresh directory holding container `ID` (saved once, so its journal exists).
fn saved_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save(&ContainerState::new(ID, "web", vec![])).unwrap();
    (dir, store)
}

fn journal_of(store: &Store) -> std::path::PathBuf {
    store.container_dir(ID).join(JOURNAL_FILE)
}

#[test]
fn appended_changes_are_replayed_on_load() {
    let (_dir, store) = saved_store();
    append(
        &store,
        1,
        JournalAction::Allow,
        &["1.2.3.4", "10.0.0.0/8", "example.com"],
        Durability::Written,
    );
    append(
        &store,
        2,
        JournalAction::Deny,
        &["10.0.0.0/8", "evil.example"],
        Durability::Synced,
    );

    let state = store.load(ID).unwrap().unwrap();
    assert_eq!(state.journal_seq, 2);
    assert_eq!(list(&state.intent.allowed), [net("1.2.3.4/32")]);
    assert_eq!(list(&state.intent.denied), [net("10.0.0.0/8")]);
    assert_eq!(names(&state.intent.allowed_domains), ["example.com"]);
    assert_eq!(names(&state.intent.denied_domains), ["evil.example"]);

    // A save folds the journal in and empties it; the state reads the same.
    store.save(&state).unwrap();
    assert_eq!(fs::metadata(journal_of(&store)).unwrap().len(), 0);
    assert_eq!(store.load(ID).unwrap().unwrap(), state);
    let (states, errors) = store.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(states, [state]);
}

#[test]
fn journal_format_is_one_json_object_per_line() {
    let (_dir, store) = saved_store();
    append(
        &store,
        1,
        JournalAction::Allow,
        &["2001:db8::1"],
        Durability::Synced,
    );
    let text = fs::read_to_string(journal_of(&store)).unwrap();
    assert_eq!(
        text,
        "{\"seq\":1,\"action\":\"allow\",\"targets\":[\"2001:db8::1\"]}\n"
    );
}

#[test]
fn a_taken_back_change_does_not_come_back() {
    let (_dir, store) = saved_store();
    append(
        &store,
        1,
        JournalAction::Allow,
        &["1.1.1.1"],
        Durability::Synced,
    );
    let mark = append(
        &store,
        2,
        JournalAction::Allow,
        &["2.2.2.2"],
        Durability::Synced,
    );
    store.take_back(ID, mark).unwrap();
    let state = store.load(ID).unwrap().unwrap();
    assert_eq!(list(&state.intent.allowed), [net("1.1.1.1/32")]);
    assert_eq!(state.journal_seq, 1);
    // The next change reuses the sequence number and is read as usual.
    append(
        &store,
        2,
        JournalAction::Allow,
        &["3.3.3.3"],
        Durability::Synced,
    );
    let state = store.load(ID).unwrap().unwrap();
    assert_eq!(
        list(&state.intent.allowed),
        [net("1.1.1.1/32"), net("3.3.3.3/32")]
    );
}

#[test]
fn a_torn_last_line_is_ignored_and_cut_before_the_next_append() {
    let (_dir, store) = saved_store();
    append(
        &store,
        1,
        JournalAction::Allow,
        &["1.1.1.1"],
        Durability::Synced,
    );
    // A crash in the middle of the second append.
    let mut journal = OpenOptions::new()
        .append(true)
        .open(journal_of(&store))
        .unwrap();
    journal
        .write_all(b"{\"seq\":2,\"action\":\"allow\",\"targ")
        .unwrap();
    drop(journal);
    assert_eq!(
        list(&store.load(ID).unwrap().unwrap().intent.allowed),
        [net("1.1.1.1/32")]
    );

    append(
        &store,
        2,
        JournalAction::Allow,
        &["2.2.2.2"],
        Durability::Synced,
    );
    let state = store.load(ID).unwrap().unwrap();
    assert_eq!(
        list(&state.intent.allowed),
        [net("1.1.1.1/32"), net("2.2.2.2/32")]
    );
    assert_eq!(
        fs::read_to_string(journal_of(&store))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

/// A power loss can keep the journal's new length but not the data of its last lines (they were
/// only written, never synced): zero bytes where they were, possibly with a later line intact
/// behind them. The load cuts the journal at the hole, so that the next change is not appended
/// behind it, where no load would read it.
#[test]
fn a_hole_left_by_a_power_loss_is_cut_before_the_next_append() {
    let (_dir, store) = saved_store();
    append(
        &store,
        1,
        JournalAction::Deny,
        &["9.9.9.9"],
        Durability::Synced,
    );
    let synced = fs::metadata(journal_of(&store)).unwrap().len();
    let mut journal = OpenOptions::new()
        .append(true)
        .open(journal_of(&store))
        .unwrap();
    journal.write_all(&[0; 40]).unwrap();
    journal
        .write_all(b"{\"seq\":3,\"action\":\"allow\",\"targets\":[\"3.3.3.3\"]}\n")
        .unwrap();
    drop(journal);

    let state = store.load(ID).unwrap().unwrap();
    assert_eq!(state.journal_seq, 1);
    assert_eq!(list(&state.intent.denied), [net("9.9.9.9/32")]);
    assert!(state.intent.allowed.is_empty(), "{state:?}");
    assert_eq!(fs::metadata(journal_of(&store)).unwrap().len(), synced);

    append(
        &store,
        2,
        JournalAction::Allow,
        &["2.2.2.2"],
        Durability::Written,
    );
    let state = store.load(ID).unwrap().unwrap();
    assert_eq!(state.journal_seq, 2);
    assert_eq!(list(&state.intent.allowed), [net("2.2.2.2/32")]);
}

/// A save that renamed its state but crashed before emptying the journal leaves lines the state
/// already includes. Replaying them again would be wrong whenever a later change undid one (here:
/// a deny that a later allow lifted), so they are skipped by sequence number.
#[test]
fn lines_the_state_already_includes_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut state = ContainerState::new(ID, "web", vec![]);
    state.intent.allowed = [net("1.1.1.1/32")].into_iter().collect();
    state.journal_seq = 2;
    store.save(&state).unwrap();
    fs::write(
        journal_of(&store),
        "{\"seq\":1,\"action\":\"deny\",\"targets\":[\"1.1.1.1\"]}\n\
         {\"seq\":2,\"action\":\"allow\",\"targets\":[\"1.1.1.1\"]}\n\
         {\"seq\":3,\"action\":\"allow\",\"targets\":[\"3.3.3.3\"]}\n",
    )
    .unwrap();
    let loaded = store.load(ID).unwrap().unwrap();
    assert_eq!(
        list(&loaded.intent.allowed),
        [net("1.1.1.1/32"), net("3.3.3.3/32")]
    );
    assert!(list(&loaded.intent.denied).is_empty(), "{loaded:?}");
    assert_eq!(loaded.journal_seq, 3);
}

#[test]
fn a_corrupt_line_is_an_error_that_names_it() {
    let (_dir, store) = saved_store();
    for (content, needle) in [
        (
            "garbage\n{\"seq\":2,\"action\":\"allow\",\"targets\":[]}\n",
            "line 1",
        ),
        (
            "{\"seq\":1,\"action\":\"allow\",\"targets\":[\"not an ip!\"]}\n",
            "invalid target",
        ),
        (
            "{\"seq\":1,\"action\":\"open\",\"targets\":[\"1.1.1.1\"]}\n",
            "unknown variant",
        ),
    ] {
        fs::write(journal_of(&store), content).unwrap();
        let err = store.load(ID).unwrap_err();
        assert!(matches!(err, StoreError::Journal { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(JOURNAL_FILE), "{message}");
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn a_state_saved_before_journals_existed_gets_one() {
    let (_dir, store) = saved_store();
    fs::remove_file(journal_of(&store)).unwrap();
    append(
        &store,
        1,
        JournalAction::Deny,
        &["9.9.9.9"],
        Durability::Synced,
    );
    assert_eq!(
        list(&store.load(ID).unwrap().unwrap().intent.denied),
        [net("9.9.9.9/32")]
    );
}

#[test]
fn a_long_journal_asks_for_compaction() {
    let (_dir, store) = saved_store();
    let targets: Vec<String> = (0..1024_u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i).to_string())
        .collect();
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut due_at = None;
    for seq in 1..=40 {
        let mark = append(
            &store,
            seq,
            JournalAction::Allow,
            &targets,
            Durability::Synced,
        );
        if mark.compaction_due {
            due_at = Some(seq);
            break;
        }
    }
    // ~14 KiB a line: past 256 KiB after ~19 lines.
    let due_at = due_at.expect("compaction never became due");
    assert!((15..=25).contains(&due_at), "due after {due_at} lines");
}

/// Address `i` of the crash test.
fn address(i: u64) -> String {
    let i = u32::try_from(i).unwrap();
    Ipv4Addr::from(0x0a00_0000 + i).to_string()
}

/// The child side of the crash test: change `journal_seq + 1`, `+ 2`, … allows address `i`,
/// every other one only written (not synced: a process crash must not lose it either); every
/// 23rd change is followed by a save (a compaction). Runs until killed. In a normal test run
/// (no environment variable) it does nothing.
#[test]
fn crash_child_appends_until_killed() {
    let Some(state_dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&state_dir)).unwrap();
    let mut state = store.load(ID).unwrap().unwrap();
    crash::say_ready();
    loop {
        let seq = state.journal_seq + 1;
        let target = address(seq);
        let durability = if seq.is_multiple_of(2) {
            Durability::Synced
        } else {
            Durability::Written
        };
        append(&store, seq, JournalAction::Allow, &[&target], durability);
        state.journal_seq = seq;
        state.intent.allowed.insert(net(&format!("{target}/32")));
        if seq.is_multiple_of(23) {
            store.save(&state).unwrap();
        }
    }
}

/// The real crash test: SIGKILL a process that appends (and saves) in a loop, many times, at
/// varying moments; after every kill the state loads, is exactly the first N changes (no torn
/// or doubled one), and N never goes back (an append that returned is durable against a process
/// crash).
#[test]
fn sigkill_mid_append_loses_no_acknowledged_change() {
    let (dir, store) = saved_store();

    let deadline = Instant::now() + Duration::from_secs(2);
    let mut kills: u64 = 0;
    let mut progress = crash::Progress::from("the journalled changes", 0);
    while Instant::now() < deadline || kills < 10 {
        let child = crash::start_child("crash_child_appends_until_killed", CHILD_ENV, dir.path());
        // A different moment each time, over a few appends (each a few hundred µs).
        let pause = kills.wrapping_mul(2_654_435_761) % 3_000;
        crash::kill_after(child, Duration::from_micros(pause));
        kills += 1;

        let state = store
            .load(ID)
            .unwrap_or_else(|err| panic!("after kill {kills}: {err}"))
            .unwrap_or_else(|| panic!("after kill {kills}: no state"));
        let now = state.journal_seq;
        let expected: Vec<IpNet> = (1..=now)
            .map(|i| net(&format!("{}/32", address(i))))
            .collect();
        assert_eq!(
            list(&state.intent.allowed),
            expected,
            "after kill {kills}: not exactly the first {now} changes"
        );
        progress.saw(kills, now);
    }
    progress.assert_advanced(kills);
    eprintln!(
        "{kills} kills, {} after progress, {} changes",
        progress.advanced(),
        progress.last()
    );
}
