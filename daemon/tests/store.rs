//! The state store on a real file system: round trips, permissions, corrupt and leftover files,
//! and the real crash test — a child process saving in a loop, killed with SIGKILL again and
//! again, must always leave a `state.json` that parses and is one of the versions it wrote.
//! No root needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests"
)]

mod crash;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use shieldd::intent::Intent;
use shieldd::process::ProcessIdentity;
use shieldd::profiles::DomainPattern;
use shieldd::ruleset::Mode;
use shieldd::store::{ContainerState, JOURNAL_FILE, STATE_FILE, Store, StoreError};

/// Set in the child process of [`sigkill_mid_save_leaves_old_or_new_state`]: the state directory.
const CHILD_ENV: &str = "SHIELD_STORE_CRASH_CHILD";

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn sample(id: &str) -> ContainerState {
    ContainerState {
        version: 1,
        id: id.to_owned(),
        name: "web".to_owned(),
        profiles: vec!["base".to_owned(), "dev-node".to_owned()],
        intent: Intent {
            allowed: ["1.2.3.4/32", "2001:db8::/32"]
                .map(|net| net.parse().unwrap())
                .into_iter()
                .collect(),
            denied: ["10.0.0.0/8".parse().unwrap()].into_iter().collect(),
            allowed_domains: [DomainPattern::parse("example.com").unwrap()]
                .into_iter()
                .collect(),
            denied_domains: [DomainPattern::parse("evil.example").unwrap()]
                .into_iter()
                .collect(),
            mode: Mode::DownAll,
        },
        process: Some(ProcessIdentity {
            pid: 4242,
            start_time: 987_654,
        }),
        journal_seq: 0,
    }
}

/// Version `i` of the crash test's state: its content is a function of `i` alone, and large
/// enough (tens of KiB) that a kill often lands mid-write.
fn version(i: u64) -> ContainerState {
    let mut state = ContainerState::new(ID, format!("v{i}"), vec![format!("p{i}")]);
    let count = 500 + i % 500;
    state.intent.allowed = (0..count)
        .map(|k| {
            format!("10.{}.{}.{}/32", i % 256, (k / 256) % 256, k % 256)
                .parse()
                .unwrap()
        })
        .collect();
    state.intent.allowed_domains = (0..count)
        .map(|k| DomainPattern::parse(&format!("d{k}.v{i}.example")).unwrap())
        .collect();
    state.intent.mode = if i.is_multiple_of(2) {
        Mode::Up
    } else {
        Mode::Block
    };
    state
}

/// Which version `state` is, checking that it is exactly that version (not a torn mix).
fn version_of(state: &ContainerState) -> u64 {
    let i: u64 = state.name.strip_prefix('v').unwrap().parse().unwrap();
    assert_eq!(*state, version(i), "state is not exactly version {i}");
    i
}

/// `state.json` as the store writes it for `state`.
fn json_of(state: &ContainerState) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save(state).unwrap();
    fs::read_to_string(store.container_dir(&state.id).join(STATE_FILE)).unwrap()
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load(ID).unwrap(), None);

    let mut state = sample(ID);
    store.save(&state).unwrap();
    assert_eq!(store.load(ID).unwrap(), Some(state.clone()));

    // Overwrite: the new state replaces the old one; stopping clears the process.
    state.intent.mode = Mode::Up;
    state.process = None;
    state.intent.denied.clear();
    store.save(&state).unwrap();
    assert_eq!(store.load(ID).unwrap(), Some(state.clone()));

    // A second handle on the same directory (a restarted daemon) reads the same.
    let reopened = Store::open(dir.path()).unwrap();
    let (states, errors) = reopened.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(states, [state]);

    // Only state.json and the (empty) journal remain: no temporary files.
    let mut names: Vec<_> = fs::read_dir(store.container_dir(ID))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, [JOURNAL_FILE, STATE_FILE]);
    let journal = store.container_dir(ID).join(JOURNAL_FILE);
    assert_eq!(fs::metadata(&journal).unwrap().len(), 0);
    assert_eq!(mode_of(&journal), 0o600);
}

#[test]
fn file_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save(&sample(ID)).unwrap();
    let text = fs::read_to_string(store.container_dir(ID).join(STATE_FILE)).unwrap();
    assert!(text.ends_with("}\n"));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["mode"], "down_all");
    assert_eq!(json["allowed"][0], "1.2.3.4/32");
    assert_eq!(json["process"]["start_time"], 987_654);
}

#[test]
fn permissions() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("xdg/state/shield");
    let store = Store::open(&state_dir).unwrap();
    assert_eq!(mode_of(&state_dir), 0o700);
    assert_eq!(mode_of(&state_dir.join("containers")), 0o700);
    assert_eq!(store.containers_dir(), state_dir.join("containers"));
    store.save(&sample(ID)).unwrap();
    assert_eq!(mode_of(&store.container_dir(ID)), 0o700);
    assert_eq!(mode_of(&store.container_dir(ID).join(STATE_FILE)), 0o600);

    // An existing, too open directory is tightened.
    fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(store.container_dir(ID), fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&state_dir).unwrap();
    assert_eq!(mode_of(&state_dir), 0o700);
    store.save(&sample(ID)).unwrap();
    assert_eq!(mode_of(&store.container_dir(ID)), 0o700);
}

#[test]
fn leftover_temp_file_is_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let state = sample(ID);
    store.save(&state).unwrap();
    // A save by a daemon that died mid-write: half a file, never renamed. Pid 1 is never us.
    let cdir = store.container_dir(ID);
    let full = json_of(&version(7));
    let temp = cdir.join(".state.json.tmp.1.0");
    fs::write(&temp, &full[..full.len() / 2]).unwrap();

    assert_eq!(store.load(ID).unwrap(), Some(state.clone()));
    let (states, errors) = store.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(states, std::slice::from_ref(&state));
    assert!(
        !temp.exists(),
        "load_all removes a dead writer's temporary file"
    );

    // A container whose first save never completed: only a temp file, so no state, no error.
    let other = "deadbeef";
    fs::create_dir(store.container_dir(other)).unwrap();
    fs::write(
        store.container_dir(other).join(".state.json.tmp.1.3"),
        "{\"vers",
    )
    .unwrap();
    assert_eq!(store.load(other).unwrap(), None);
    let (states, errors) = store.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(states, [state]);
}

#[test]
fn corrupt_state_is_reported_and_others_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = ["aaaa", "cccc", "eeee"].map(sample);
    for state in &good {
        store.save(state).unwrap();
    }
    let full = json_of(&sample("bbbb"));
    let corrupt: [(&str, &str); 5] = [
        ("bbbb", &full[..full.len() / 2]),        // truncated
        ("dddd", "\0\0\0\0garbage"),              // garbage
        ("ffff", ""),                             // empty
        ("gggg", r#"{"version":9,"id":"gggg"}"#), // from the future
        ("hhhh", &full),                          // another container's state
    ];
    for (id, content) in corrupt {
        fs::create_dir(store.container_dir(id)).unwrap();
        fs::write(store.container_dir(id).join(STATE_FILE), content).unwrap();
    }
    // A directory name that is no container id; and a stray file.
    fs::create_dir(store.containers_dir().join("bad name")).unwrap();
    fs::write(store.containers_dir().join("stray"), "x").unwrap();

    let (states, errors) = store.load_all();
    assert_eq!(states, good);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 6, "{messages:#?}");
    for id in ["bbbb", "dddd", "ffff", "gggg", "hhhh"] {
        let path = store.container_dir(id).join(STATE_FILE);
        assert!(
            messages
                .iter()
                .any(|m| m.contains(&*path.to_string_lossy())),
            "{id}: {messages:#?}"
        );
    }
    assert!(matches!(
        errors.iter().find(|e| e.to_string().contains("gggg")),
        Some(StoreError::Version { version: 9, .. })
    ));
    assert!(
        messages
            .iter()
            .any(|m| m.contains("unsupported state version 9"))
    );
    assert!(
        messages.iter().any(|m| m.contains("\"bad name\"")),
        "{messages:#?}"
    );
    assert!(matches!(
        store.load("hhhh"),
        Err(StoreError::IdMismatch { .. })
    ));
    assert!(matches!(store.load("bbbb"), Err(StoreError::Parse { .. })));
}

#[test]
fn unknown_fields_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&json_of(&sample(ID))).unwrap();
    json["surprise"] = serde_json::json!(1);
    fs::create_dir(store.container_dir(ID)).unwrap();
    fs::write(store.container_dir(ID).join(STATE_FILE), json.to_string()).unwrap();
    let err = store.load(ID).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `surprise`"),
        "{err}"
    );
}

#[test]
fn concurrent_saves_of_one_container() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..10 {
                    store.save(&version(t * 100 + i)).unwrap();
                }
            });
        }
    });
    let state = store.load(ID).unwrap().unwrap();
    version_of(&state);
}

/// The child side of the crash test: save versions `from`, `from + 1`, … until killed.
/// In a normal test run (no environment variable) it does nothing.
#[test]
fn crash_child_saves_until_killed() {
    let Some(state_dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&state_dir)).unwrap();
    // Continue after the last durable version, so versions only ever grow.
    let mut i = store.load(ID).unwrap().map_or(0, |s| version_of(&s) + 1);
    // Tell the parent that saving starts now, so its timing measures saves, not process start.
    crash::say_ready();
    loop {
        store.save(&version(i)).unwrap();
        i += 1;
    }
}

/// The real crash test: SIGKILL a process that saves in a loop, many times, at varying moments;
/// after every kill `state.json` parses, is exactly one of the written versions, and versions
/// never go back (a save that returned is durable against a process crash).
#[test]
fn sigkill_mid_save_leaves_old_or_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save(&version(0)).unwrap();

    // How long one save takes here (file system, build profile), to spread the kills over a few.
    let started = Instant::now();
    for i in 1..=5 {
        store.save(&version(i)).unwrap();
    }
    let save_micros = u64::try_from(started.elapsed().as_micros() / 5)
        .unwrap()
        .max(1);
    let mut progress = crash::Progress::from(
        "the saved version",
        version_of(&store.load(ID).unwrap().unwrap()),
    );

    let deadline = Instant::now() + Duration::from_secs(2);
    let mut kills: u64 = 0;
    while Instant::now() < deadline || kills < 10 {
        let child = crash::start_child("crash_child_saves_until_killed", CHILD_ENV, dir.path());
        // Kill at a different moment each time, anywhere within the first three saves, to land in
        // every phase of a save: serialising, writing, fsync, rename, directory fsync.
        let pause = kills.wrapping_mul(2_654_435_761) % (3 * save_micros);
        crash::kill_after(child, Duration::from_micros(pause));
        kills += 1;

        let state = store
            .load(ID)
            .unwrap_or_else(|err| panic!("after kill {kills}: {err}"))
            .unwrap_or_else(|| panic!("after kill {kills}: no state"));
        progress.saw(kills, version_of(&state));
    }
    // Otherwise the test proved nothing: the child must have saved between kills.
    progress.assert_advanced(kills);
    let last = progress.last();

    let (states, errors) = store.load_all();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(states.len(), 1);
    assert_eq!(version_of(&states[0]), last);
    let leftovers: Vec<_> = fs::read_dir(store.container_dir(ID))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != STATE_FILE && n != JOURNAL_FILE)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!(
        "{kills} kills, {} after progress, last version {last}, one save ≈ {save_micros} µs",
        progress.advanced()
    );
}
