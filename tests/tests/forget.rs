//! `shieldctl forget`: a stopped container's intent leaves the daemon and the disk (a later
//! container with the same id starts from its profiles alone), its audit trail stays, a running
//! container is refused and keeps everything, and a daemon restart does not bring it back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use nix::sys::signal::Signal;
use shield_tests::control::{
    assert_passes, assert_refused, attach, audit, daemon_for, release, state, strings, view,
};
use shield_tests::daemon::{Daemon, find_container};
use shield_tests::netns::{Owner, TestNet};

/// Whether `shieldctl ps --json` lists `id`.
fn listed(daemon: &Daemon, id: &str) -> bool {
    find_container(&daemon.ctl_json(&["ps"]), id).is_some()
}

fn forget_round(owner: Owner) {
    shield_tests::require_root();
    let mut net = TestNet::new(owner);
    let mut daemon = daemon_for(owner, &net);
    let id = shield_tests::fresh_container_id();
    let short = &id[..12];
    attach(&daemon, &id, "web", net.pid());
    // Live changes to lose: a deny of a profile allow, an allow beyond the profile, a mode.
    daemon.ctl(&["deny", &id, &net.peer_a().to_string()]);
    daemon.ctl(&["allow", &id, &net.peer_b().to_string()]);
    daemon.ctl(&["down", &id]);
    assert_refused(&net, net.peer_a(), "after deny A (down: the deny wins)");
    assert_passes(&net, net.peer_b(), "after allow B");

    // Running: refused by name and by id, nothing changes; `--stopped` keeps it.
    let refused = daemon.ctl_fails(&["forget", "web"]);
    assert!(
        refused.contains("is running") && refused.contains("stop it first"),
        "{refused}"
    );
    daemon.ctl_fails(&["forget", &id]);
    assert_eq!(
        daemon.ctl(&["forget", "--stopped"]),
        "no stopped container to forget\n"
    );
    assert!(listed(&daemon, &id), "a running container stays listed");
    assert_eq!(
        strings(&view(&daemon, &id), "denied"),
        [net.peer_a().to_string()]
    );
    assert_refused(&net, net.peer_a(), "after refused forgets");

    // An unknown name among the containers: an error, and the stopped one is not forgotten.
    release(&daemon, &id, "web");
    let unknown = daemon.ctl_fails(&["forget", "web", "nope"]);
    assert!(
        unknown.contains("no container matches \"nope\""),
        "{unknown}"
    );
    assert!(
        listed(&daemon, &id),
        "nothing is forgotten when one name is unknown"
    );

    // Stopped: forgotten; its state and journal leave the disk, its audit trail stays.
    let dir = daemon.container_state_dir(&id);
    assert!(
        dir.join("state.json").exists(),
        "a stopped container keeps its state"
    );
    assert_eq!(
        daemon.ctl(&["forget", "web"]),
        format!("forgot {short} (web)\n")
    );
    assert!(!listed(&daemon, &id), "forgotten, yet listed by ps");
    assert!(
        !dir.join("state.json").exists(),
        "the state file stays behind"
    );
    assert!(
        !dir.join("changes.jsonl").exists(),
        "the change journal stays behind"
    );
    let last = audit(&daemon, None, 1);
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0]["action"], "forget", "{last:?}");
    assert_eq!(last[0]["container"], id.as_str(), "{last:?}");
    daemon.ctl_fails(&["state", &id]);
    daemon.ctl_fails(&["forget", &id]);
    // Its trail, by full id (a name or a prefix no longer resolves).
    let trail = audit(&daemon, Some(&id), 100);
    let actions: Vec<&str> = trail.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions.first().copied(),
        Some("attach"),
        "the whole trail stays: {actions:?}"
    );
    assert_eq!(actions.last().copied(), Some("forget"), "{actions:?}");
    assert!(actions.contains(&"deny"), "{actions:?}");
    daemon.ctl_fails(&["logs", "web"]);

    // Same id again: the profile alone (A allowed again, B not), mode up.
    net.restart_container();
    attach(&daemon, &id, "web", net.pid());
    assert_eq!(state(&daemon, &id), "up");
    assert!(strings(&view(&daemon, &id), "denied").is_empty());
    assert_passes(
        &net,
        net.peer_a(),
        "the profile, after forget and a new attach",
    );
    assert_refused(&net, net.peer_b(), "the forgotten allow");

    // `--stopped` after a stop; a daemon restart does not bring the container back.
    release(&daemon, &id, "web");
    assert_eq!(
        daemon.ctl(&["forget", "--stopped", "--json"]),
        format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({
                "forgotten": [{"id": id, "name": "web"}]
            }))
            .unwrap()
        )
    );
    let status = daemon.kill_with(Signal::SIGTERM);
    assert!(status.success(), "shieldd after SIGTERM: {status}");
    daemon.restart();
    assert!(
        !listed(&daemon, &id),
        "a forgotten container came back after a restart"
    );
    daemon.stop();
}

#[test]
fn rootful_forget_drops_a_stopped_containers_intent() {
    forget_round(Owner::Root);
}

#[test]
fn rootless_forget_drops_a_stopped_containers_intent() {
    forget_round(Owner::test_user());
}
