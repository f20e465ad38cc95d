//! The human (text) form of each view; the JSON form is the view's `Serialize`.
//!
//! A new command adds a view in [`crate::view`] and its `Render` impl here; [`crate::output`]
//! decides which form to write.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::table::{Align, Table, pairs, sanitize, width};
use crate::view::{
    ChangeView, ContainerList, ContainerView, DnsView, DoctorView, ForgetView, LogEventView,
    ModeChangeView, PrepareView, PreviewView, ProfileList, RulesView, SetupView, StateReport,
    StateView, StatusView, short_id,
};

/// Something shieldctl prints: as text by default, as JSON with `--json`.
pub trait Render: Serialize {
    /// The text form, each line ending in a newline.
    fn human(&self) -> String;
}

/// Shown for an empty cell.
const NONE: &str = "-";

impl Render for StatusView {
    fn human(&self) -> String {
        let uptime = humantime::format_duration(Duration::from_secs(self.uptime_seconds));
        pairs(&[
            ("version", self.version.clone()),
            ("uptime", uptime.to_string()),
            (
                "containers",
                format!(
                    "{} running, {} stopped",
                    self.containers_running, self.containers_stopped
                ),
            ),
            ("socket", self.socket.clone()),
            ("uid", self.uid.to_string()),
        ])
    }
}

impl Render for ContainerList {
    fn human(&self) -> String {
        let mut table = Table::new(&[
            ("ID", Align::Left),
            ("NAME", Align::Left),
            ("STATE", Align::Left),
            ("MODE", Align::Left),
            ("PROFILES", Align::Left),
        ]);
        for container in &self.0 {
            table.row([
                container.short_id().to_owned(),
                or_none(&container.name),
                container.state.as_str().to_owned(),
                container.mode.as_str().to_owned(),
                or_none(&container.profiles.join(",")),
            ]);
        }
        table.render()
    }
}

impl Render for RulesView {
    fn human(&self) -> String {
        nft_text(&self.ruleset)
    }
}

impl Render for PreviewView {
    fn human(&self) -> String {
        nft_text(&self.ruleset)
    }
}

impl Render for ProfileList {
    fn human(&self) -> String {
        let mut table = Table::new(&[
            ("NAME", Align::Left),
            ("SOURCE", Align::Left),
            ("ADDRESSES", Align::Right),
            ("DOMAINS", Align::Right),
        ]);
        for profile in &self.0 {
            table.row([
                profile.name.clone(),
                profile.source.clone(),
                profile.addresses.to_string(),
                profile.domains.to_string(),
            ]);
        }
        table.render()
    }
}

impl Render for ContainerView {
    /// `show`: one `key  value` line per field; lists joined with `, `.
    fn human(&self) -> String {
        let attached = u64::try_from(self.attached_at)
            .ok()
            .filter(|seconds| *seconds > 0)
            .map_or_else(
                || NONE.to_owned(),
                |seconds| {
                    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
                    humantime::format_rfc3339_seconds(at).to_string()
                },
            );
        pairs(&[
            ("id", self.id.clone()),
            ("name", or_none(&self.name)),
            ("state", self.state.as_str().to_owned()),
            ("mode", self.mode.as_str().to_owned()),
            ("profiles", list(&self.profiles)),
            ("pid", self.pid.to_string()),
            ("attached", attached),
            ("allow set", format!("{} addresses", self.allowed_addresses)),
            ("domains", list(&self.domains)),
            ("allowed", listed(self.allowed.as_deref())),
            ("denied", listed(self.denied.as_deref())),
            ("allowed domains", listed(self.allowed_domains.as_deref())),
            ("denied domains", listed(self.denied_domains.as_deref())),
        ])
    }
}

impl Render for ChangeView {
    /// One line per target, in request order: `allowed 192.0.2.7 (address)`,
    /// `already denied 10.0.0.0/8 (network)`, `allowed example.com (domain) → 93.184.216.34, …`.
    fn human(&self) -> String {
        let mut text = String::new();
        for change in &self.changes {
            if !change.changed {
                text.push_str("already ");
            }
            text.push_str(self.action.done());
            text.push(' ');
            text.push_str(&sanitize(&change.target));
            text.push_str(" (");
            text.push_str(&sanitize(&change.kind));
            text.push(')');
            if !change.resolved.is_empty() {
                text.push_str(" → ");
                text.push_str(&sanitize(&change.resolved.join(", ")));
            }
            text.push('\n');
        }
        text
    }
}

impl Render for ModeChangeView {
    /// `web: up → block`, or `web: already block` when nothing changed.
    fn human(&self) -> String {
        let who = sanitize(&self.label);
        if self.previous == self.mode {
            format!("{who}: already {}\n", self.mode.as_str())
        } else {
            format!(
                "{who}: {} → {}\n",
                self.previous.as_str(),
                self.mode.as_str()
            )
        }
    }
}

impl Render for StateReport {
    /// Exactly one word and a newline.
    fn human(&self) -> String {
        format!("{}\n", self.state.as_str())
    }
}

impl Render for ForgetView {
    /// One line per container forgotten, or a line saying there was none.
    fn human(&self) -> String {
        if self.forgotten.is_empty() {
            return "no stopped container to forget\n".to_owned();
        }
        self.forgotten
            .iter()
            .map(|f| {
                let short = short_id(&f.id);
                if f.name.is_empty() {
                    format!("forgot {short}\n")
                } else {
                    format!("forgot {short} ({})\n", f.name)
                }
            })
            .collect()
    }
}

/// Minimum widths of the name, action and target columns of a log line (a stream cannot be
/// measured in advance; longer values push the rest of their line right).
const LOG_WIDTHS: [usize; 3] = [12, 7, 18];

impl Render for LogEventView {
    /// `TS NAME ACTION TARGET DETAIL`, the middle columns padded to 12, 7 and 18 characters;
    /// the short id stands in for a missing name, `-` for a missing target.
    fn human(&self) -> String {
        let name = if self.name.is_empty() {
            short_id(&self.container)
        } else {
            &self.name
        };
        let [name_width, action_width, target_width] = LOG_WIDTHS;
        let mut line = sanitize(&self.ts);
        for (cell, min) in [
            (name, name_width),
            (self.action.as_str(), action_width),
            (self.target.as_str(), target_width),
        ] {
            let cell = sanitize(&or_none(cell));
            line.push(' ');
            line.push_str(&cell);
            line.push_str(&" ".repeat(min.saturating_sub(width(&cell))));
        }
        line.push(' ');
        line.push_str(&sanitize(&self.detail));
        let mut line = line.trim_end().to_owned();
        line.push('\n');
        line
    }
}

impl Render for DnsView {
    /// A `NAME ADDRESS EXPIRES` table, one row per address with the name on its first row only;
    /// or one line saying nothing was learnt (and why, for a stopped container).
    fn human(&self) -> String {
        if self.names.is_empty() {
            let who = sanitize(&self.label);
            return if self.state == StateView::Stopped {
                format!("{who}: no names learnt (the container is stopped)\n")
            } else {
                format!("{who}: no names learnt yet\n")
            };
        }
        let mut table = Table::new(&[
            ("NAME", Align::Left),
            ("ADDRESS", Align::Left),
            ("EXPIRES", Align::Right),
        ]);
        for learnt in &self.names {
            if learnt.addresses.is_empty() {
                table.row([learnt.name.as_str(), NONE, NONE]);
            }
            for (index, address) in learnt.addresses.iter().enumerate() {
                let name = if index == 0 { learnt.name.as_str() } else { "" };
                table.row([
                    name.to_owned(),
                    address.address.clone(),
                    expires(address.expires_in_ms),
                ]);
            }
        }
        table.render()
    }
}

impl Render for SetupView {
    /// One `ACTION  PATH  (DETAIL)` line per path, then a line saying when nothing changed.
    fn human(&self) -> String {
        let widest = self
            .changes
            .iter()
            .map(|change| change.action.as_str().len())
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for change in &self.changes {
            let action = change.action.as_str();
            text.push_str(action);
            text.push_str(&" ".repeat(widest - action.len() + 2));
            text.push_str(&sanitize(&change.path.to_string_lossy()));
            if !change.detail.is_empty() {
                text.push_str("  (");
                text.push_str(&sanitize(&change.detail));
                text.push(')');
            }
            text.push('\n');
        }
        if !self.changed {
            text.push_str(if self.remove {
                "nothing to remove\n"
            } else {
                "nothing to change: the hooks are installed\n"
            });
        }
        text
    }
}

impl Render for PrepareView {
    /// The arguments on one line, quoted for a POSIX shell:
    /// `eval "podman run $(shieldctl prepare web) IMAGE"`.
    fn human(&self) -> String {
        let mut line = crate::podman_args::shell_words(&self.args);
        line.push('\n');
        line
    }
}

impl Render for DoctorView {
    /// `STATUS CHECK FINDING` rows, each failing or warning one followed by a `fix:` row, then
    /// the verdict.
    fn human(&self) -> String {
        let mut table = Table::new(&[
            ("STATUS", Align::Left),
            ("CHECK", Align::Left),
            ("FINDING", Align::Left),
        ]);
        for finding in &self.findings {
            table.row([
                finding.status.as_str(),
                finding.check,
                finding.what.as_str(),
            ]);
            if let Some(fix) = &finding.fix {
                table.row(["", "", &format!("fix: {fix}")]);
            }
        }
        let mut text = table.render();
        text.push_str(if self.ok {
            "shielded containers can run here\n"
        } else {
            "shielded containers will NOT work here: apply the fixes above\n"
        });
        text
    }
}

/// Time left, to the second (`29s`, `59m 58s`): milliseconds are noise for a TTL, and cut off
/// rather than rounded up so that the time shown has not already passed.
fn expires(milliseconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(milliseconds / 1000)).to_string()
}

/// The items joined with `, `, or `-` for none.
fn list(items: &[String]) -> String {
    or_none(&items.join(", "))
}

/// A list the daemon may have left out (`(not sent)` then).
fn listed(items: Option<&[String]>) -> String {
    items.map_or_else(|| "(not sent)".to_owned(), list)
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        NONE.to_owned()
    } else {
        text.to_owned()
    }
}

/// A ruleset exactly as the daemon rendered it (so it can be piped to `nft -f -`), plus a final
/// newline if it lacks one.
fn nft_text(ruleset: &str) -> String {
    let mut text = ruleset.to_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{
        ChangeAction, ContainerView, LearntAddressView, LearntNameView, ModeView, ProfileView,
        StateView, StateWord, TargetChangeView,
    };

    fn container(id: &str, name: &str, profiles: &[&str]) -> ContainerView {
        ContainerView {
            id: id.to_owned(),
            name: name.to_owned(),
            state: StateView::Running,
            mode: ModeView::Up,
            profiles: profiles.iter().map(|p| (*p).to_owned()).collect(),
            pid: 1,
            attached_at: 0,
            allowed_addresses: 0,
            domains: vec![],
            allowed: Some(vec![]),
            denied: Some(vec![]),
            allowed_domains: Some(vec![]),
            denied_domains: Some(vec![]),
        }
    }

    #[test]
    fn ps_table() {
        let mut stopped = container("fedcba9876543210fedcba9876543210", "", &[]);
        stopped.state = StateView::Stopped;
        stopped.mode = ModeView::DownAll;
        let list = ContainerList(vec![
            container("0123456789abcdef0123456789abcdef", "web", &["base", "dev"]),
            stopped,
        ]);
        assert_eq!(
            list.human(),
            "ID            NAME  STATE    MODE      PROFILES\n\
             0123456789ab  web   running  up        base,dev\n\
             fedcba987654  -     stopped  down-all  -\n"
        );
    }

    #[test]
    fn empty_ps_is_the_header() {
        assert_eq!(
            ContainerList(vec![]).human(),
            "ID  NAME  STATE  MODE  PROFILES\n"
        );
    }

    #[test]
    fn profiles_table_right_aligns_numbers() {
        let list = ProfileList(vec![
            ProfileView {
                name: "base".to_owned(),
                source: "bundled".to_owned(),
                addresses: 2,
                domains: 14,
                path: None,
            },
            ProfileView {
                name: "company-internal".to_owned(),
                source: "user".to_owned(),
                addresses: 120,
                domains: 0,
                path: Some("/home/u/.config/shield/profiles/company-internal.txt".to_owned()),
            },
        ]);
        assert_eq!(
            list.human(),
            "NAME              SOURCE   ADDRESSES  DOMAINS\n\
             base              bundled          2       14\n\
             company-internal  user           120        0\n"
        );
    }

    #[test]
    fn status_text() {
        let status = StatusView {
            version: "0.1.0".to_owned(),
            uptime_seconds: 3723,
            containers_running: 2,
            containers_stopped: 1,
            socket: "/run/user/1000/shield/shieldd.sock".to_owned(),
            uid: 1000,
        };
        assert_eq!(
            status.human(),
            "version     0.1.0\n\
             uptime      1h 2m 3s\n\
             containers  2 running, 1 stopped\n\
             socket      /run/user/1000/shield/shieldd.sock\n\
             uid         1000\n"
        );
    }

    fn change(target: &str, kind: &str, changed: bool, resolved: &[&str]) -> TargetChangeView {
        TargetChangeView {
            target: target.to_owned(),
            kind: kind.to_owned(),
            changed,
            resolved: resolved.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn allow_lines_one_per_target() {
        let view = ChangeView {
            action: ChangeAction::Allow,
            container: None,
            changes: vec![
                change("192.0.2.7", "address", true, &[]),
                change("10.0.0.0/8", "network", false, &[]),
                change(
                    "example.com",
                    "domain",
                    true,
                    &["93.184.216.34", "2606:2800:220:1::"],
                ),
            ],
            apply_micros: 80,
        };
        assert_eq!(
            view.human(),
            "allowed 192.0.2.7 (address)\n\
             already allowed 10.0.0.0/8 (network)\n\
             allowed example.com (domain) → 93.184.216.34, 2606:2800:220:1::\n"
        );
    }

    #[test]
    fn deny_lines_and_hostile_text() {
        let view = ChangeView {
            action: ChangeAction::Deny,
            container: None,
            changes: vec![
                change("2001:db8::1", "address", true, &[]),
                change("evil.example\n", "domain", false, &[]),
            ],
            apply_micros: 0,
        };
        assert_eq!(
            view.human(),
            "denied 2001:db8::1 (address)\nalready denied evil.example  (domain)\n"
        );
    }

    #[test]
    fn mode_change_lines() {
        let mut view = ModeChangeView {
            container: None,
            previous: ModeView::Up,
            mode: ModeView::Block,
            label: "web".to_owned(),
        };
        assert_eq!(view.human(), "web: up → block\n");
        view.previous = ModeView::DownAll;
        view.mode = ModeView::Up;
        assert_eq!(view.human(), "web: down-all → up\n");
        view.previous = ModeView::Up;
        assert_eq!(view.human(), "web: already up\n");
    }

    #[test]
    fn state_is_one_word() {
        let report = StateReport {
            container: "0123".to_owned(),
            name: "web".to_owned(),
            state: StateWord::DownAll,
        };
        assert_eq!(report.human(), "down_all\n");
    }

    fn event(name: &str, action: &str, target: &str, detail: &str) -> LogEventView {
        LogEventView {
            ts: "2026-11-28T21:00:00.123456Z".to_owned(),
            container: "0123456789abcdef0123".to_owned(),
            name: name.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        }
    }

    #[test]
    fn log_lines_are_padded_and_trimmed() {
        assert_eq!(
            event("web", "allow", "1.2.3.4", "by operator").human(),
            "2026-11-28T21:00:00.123456Z web          allow   1.2.3.4            by operator\n"
        );
        assert_eq!(
            event("", "attach", "", "").human(),
            "2026-11-28T21:00:00.123456Z 0123456789ab attach  -\n"
        );
        assert_eq!(
            event("a-very-long-name", "restore", "2001:db8:1234::/48", "x\ny").human(),
            "2026-11-28T21:00:00.123456Z a-very-long-name restore 2001:db8:1234::/48 x y\n"
        );
    }

    fn learnt(name: &str, addresses: &[(&str, u64)]) -> LearntNameView {
        LearntNameView {
            name: name.to_owned(),
            addresses: addresses
                .iter()
                .map(|(address, expires_in_ms)| LearntAddressView {
                    address: (*address).to_owned(),
                    expires_in_ms: *expires_in_ms,
                })
                .collect(),
        }
    }

    fn dns(state: StateView, names: Vec<LearntNameView>) -> DnsView {
        DnsView {
            container: "0123456789abcdef0123".to_owned(),
            name: "web".to_owned(),
            state,
            names,
            label: "web".to_owned(),
        }
    }

    #[test]
    fn dns_table_names_each_name_once() {
        let view = dns(
            StateView::Running,
            vec![
                learnt(
                    "example.com",
                    &[("93.184.216.34", 29_999), ("2606:2800:220:1::", 3_598_000)],
                ),
                learnt("empty.example", &[]),
                learnt("pypi.org", &[("151.101.0.223", 999)]),
            ],
        );
        assert_eq!(
            view.human(),
            "NAME           ADDRESS            EXPIRES\n\
             example.com    93.184.216.34          29s\n\
             \x20              2606:2800:220:1::  59m 58s\n\
             empty.example  -                        -\n\
             pypi.org       151.101.0.223           0s\n"
        );
    }

    #[test]
    fn dns_without_names_is_one_line() {
        assert_eq!(
            dns(StateView::Running, vec![]).human(),
            "web: no names learnt yet\n"
        );
        let mut stopped = dns(StateView::Stopped, vec![]);
        assert_eq!(
            stopped.human(),
            "web: no names learnt (the container is stopped)\n"
        );
        stopped.label = "evil\nname".to_owned();
        assert_eq!(stopped.human().lines().count(), 1);
    }

    #[test]
    fn expiry_is_cut_to_the_second() {
        assert_eq!(expires(0), "0s");
        assert_eq!(expires(1_999), "1s");
        assert_eq!(expires(3_723_000), "1h 2m 3s");
    }

    #[test]
    fn show_lists_everything() {
        let mut view = container("0123456789abcdef0123456789abcdef", "web", &["base", "dev"]);
        view.attached_at = 1_700_000_000;
        view.allowed_addresses = 3;
        view.allowed = Some(vec!["192.0.2.7".to_owned(), "10.1.0.0/16".to_owned()]);
        view.denied_domains = Some(vec!["evil.example".to_owned()]);
        assert_eq!(
            view.human(),
            "id               0123456789abcdef0123456789abcdef\n\
             name             web\n\
             state            running\n\
             mode             up\n\
             profiles         base, dev\n\
             pid              1\n\
             attached         2023-11-14T22:13:20Z\n\
             allow set        3 addresses\n\
             domains          -\n\
             allowed          192.0.2.7, 10.1.0.0/16\n\
             denied           -\n\
             allowed domains  -\n\
             denied domains   evil.example\n"
        );
    }

    #[test]
    fn rulesets_are_printed_verbatim() {
        let ruleset = "table inet shield {\n\tchain output {\n\t}\n}\n";
        let preview = PreviewView {
            profiles: vec![],
            mode: ModeView::Up,
            ruleset: ruleset.to_owned(),
        };
        assert_eq!(preview.human(), ruleset);
        let rules = RulesView {
            container: None,
            ruleset: "table inet shield {}".to_owned(),
        };
        assert_eq!(rules.human(), "table inet shield {}\n");
        let empty = RulesView {
            container: None,
            ruleset: String::new(),
        };
        assert_eq!(empty.human(), "");
    }

    #[test]
    fn setup_lines_and_nothing_to_change() {
        use crate::setup::{Action, Change, Scope};
        let change = |action, path: &str, detail: &str| Change {
            action,
            path: path.into(),
            detail: detail.to_owned(),
        };
        let mut view = SetupView {
            scope: Scope::User,
            remove: false,
            hooks_dir: "/h".to_owned(),
            hook: "/bin/shield-hook".to_owned(),
            socket: "/s".to_owned(),
            changed: true,
            changes: vec![
                change(Action::Created, "/h/a.json", "createRuntime hook"),
                change(Action::Unchanged, "/c", ""),
            ],
            warnings: vec![],
        };
        assert_eq!(
            view.human(),
            "created    /h/a.json  (createRuntime hook)\nunchanged  /c\n"
        );
        view.changed = false;
        view.changes.clear();
        assert_eq!(view.human(), "nothing to change: the hooks are installed\n");
        view.remove = true;
        assert_eq!(view.human(), "nothing to remove\n");
    }

    #[test]
    fn doctor_rows_fixes_and_verdict() {
        use crate::doctor::{Finding, Status};
        let view = DoctorView {
            ok: false,
            findings: vec![
                Finding {
                    check: "podman",
                    status: Status::Fail,
                    what: "podman is not installed".to_owned(),
                    fix: Some("apt-get install podman".to_owned()),
                },
                Finding {
                    check: "tun",
                    status: Status::Ok,
                    what: "fine".to_owned(),
                    fix: None,
                },
            ],
        };
        assert_eq!(
            view.human(),
            "STATUS  CHECK   FINDING\n\
             FAIL    podman  podman is not installed\n\
             \x20               fix: apt-get install podman\n\
             ok      tun     fine\n\
             shielded containers will NOT work here: apply the fixes above\n"
        );
    }

    #[test]
    fn prepare_is_one_shell_line() {
        let view = PrepareView {
            name: "web".to_owned(),
            profiles: vec![],
            network: crate::podman_args::NetworkPlan::Default,
            host_address: None,
            loopback_ports: vec![],
            resolv_conf: "/r".to_owned(),
            args: vec!["--name".to_owned(), "web".to_owned(), "a b".to_owned()],
        };
        assert_eq!(view.human(), "--name web 'a b'\n");
    }
}
