//! The human (text) form of each view; the JSON form is the view's `Serialize`.
//!
//! A new command adds a view in [`crate::view`] and its `Render` impl here; [`crate::output`]
//! decides which form to write.

use std::time::Duration;

use serde::Serialize;

use crate::table::{Align, Table, pairs};
use crate::view::{ContainerList, PreviewView, ProfileList, RulesView, StatusView};

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
    use crate::view::{ContainerView, ModeView, ProfileView, StateView};

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
}
