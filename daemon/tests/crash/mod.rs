//! Shared by the store's crash tests: one test of the running test binary, started again as a
//! child process that works until it is killed, and killed at a chosen moment with SIGKILL.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test fixture: a failed step is a failed test"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts test `test` of this binary as a child, with `env` set to `dir`, and returns once the
/// child said "ready" (see [`say_ready`]): its work starts then, not at process start.
pub fn start_child(test: &str, env: &str, dir: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(env, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The test harness prints its own lines first ("running 1 test", the test's name).
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut said = String::new();
    while !said.ends_with("ready\n") {
        let before = said.len();
        output.read_line(&mut said).unwrap();
        assert!(
            said.len() > before,
            "the child ended before it began: {said:?}"
        );
    }
    child
}

/// In the child: tells [`start_child`] that the work starts now.
pub fn say_ready() {
    let mut stdout = std::io::stdout();
    stdout.write_all(b"ready\n").unwrap();
    stdout.flush().unwrap();
}

/// Kills `child` with SIGKILL after `pause`, and checks that it died of the signal (not on its
/// own, which would mean it failed).
pub fn kill_after(mut child: Child, pause: Duration) {
    std::thread::sleep(pause);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the child died on its own: {status:?}"
    );
}

/// What a crash test saw of the child's work across its kills: a count (a version, a number of
/// changes) that must never go back, and must move on at least once, or the test proved nothing.
#[derive(Debug)]
pub struct Progress {
    /// What the count counts, for messages.
    what: &'static str,
    /// The count after the latest kill.
    last: u64,
    /// How many kills came after the count moved on.
    advanced: usize,
}

impl Progress {
    /// Starting from `start` (the count before the first child).
    pub fn from(what: &'static str, start: u64) -> Self {
        Self {
            what,
            last: start,
            advanced: 0,
        }
    }

    /// Records the count `now` seen after kill number `kill`; panics if it went back.
    pub fn saw(&mut self, kill: u64, now: u64) {
        let (what, last) = (self.what, self.last);
        assert!(
            now >= last,
            "after kill {kill}: {what} went back from {last} to {now}"
        );
        if now > last {
            self.advanced += 1;
        }
        self.last = now;
    }

    /// Panics unless the count moved on between some two kills of the `kills`.
    pub fn assert_advanced(&self, kills: u64) {
        assert!(
            self.advanced > 0,
            "{}: no progress in {kills} runs",
            self.what
        );
    }

    /// The count after the latest kill.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// How many kills came after progress.
    pub fn advanced(&self) -> usize {
        self.advanced
    }
}
