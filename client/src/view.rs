//! What shieldctl shows, as plain serializable structs built from the API's messages.
//!
//! These structs are the `--json` interface: field names are stable, enums are lowercase strings
//! (`"running"`, `"down-all"`). The API's types are not serialized directly, so that a proto
//! change cannot silently change the JSON.

use serde::Serialize;
use shield_proto::v1;

/// A container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateView {
    /// Ruleset applied and verified.
    Running,
    /// Stopped, or gone.
    Stopped,
    /// Unset, or a value newer than this client.
    Unknown,
}

impl StateView {
    /// The name used in text and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Unknown => "unknown",
        }
    }
}

impl From<i32> for StateView {
    fn from(value: i32) -> Self {
        match v1::ContainerState::try_from(value) {
            Ok(v1::ContainerState::Running) => Self::Running,
            Ok(v1::ContainerState::Stopped) => Self::Stopped,
            Ok(v1::ContainerState::Unspecified) | Err(_) => Self::Unknown,
        }
    }
}

/// An enforcement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeView {
    /// Default-deny.
    Up,
    /// Bypass (logged).
    Down,
    /// Bypass including private ranges.
    DownAll,
    /// Everything blocked.
    Block,
    /// Unset, or a value newer than this client.
    Unknown,
}

impl ModeView {
    /// The name used in text and JSON (and on the command line).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::DownAll => "down-all",
            Self::Block => "block",
            Self::Unknown => "unknown",
        }
    }
}

impl From<i32> for ModeView {
    fn from(value: i32) -> Self {
        match v1::Mode::try_from(value) {
            Ok(v1::Mode::Up) => Self::Up,
            Ok(v1::Mode::Down) => Self::Down,
            Ok(v1::Mode::DownAll) => Self::DownAll,
            Ok(v1::Mode::Block) => Self::Block,
            Ok(v1::Mode::Unspecified) | Err(_) => Self::Unknown,
        }
    }
}

/// `shieldctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    /// Daemon version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// Containers with a verified ruleset.
    pub containers_running: u32,
    /// Containers on record that are not running.
    pub containers_stopped: u32,
    /// The socket the daemon serves.
    pub socket: String,
    /// The daemon's uid.
    pub uid: u32,
}

impl From<v1::GetStatusResponse> for StatusView {
    fn from(status: v1::GetStatusResponse) -> Self {
        Self {
            version: status.version,
            uptime_seconds: status.uptime_seconds,
            containers_running: status.containers_running,
            containers_stopped: status.containers_stopped,
            socket: status.socket,
            uid: status.uid,
        }
    }
}

/// One container (`ps`, `rules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerView {
    /// Full container id.
    pub id: String,
    /// shield name (`shield.name` annotation), may be empty.
    pub name: String,
    /// State.
    pub state: StateView,
    /// Mode.
    pub mode: ModeView,
    /// Profiles, in order.
    pub profiles: Vec<String>,
    /// Init pid when attached.
    pub pid: u32,
    /// Unix time of the last attach.
    pub attached_at: i64,
    /// Addresses and ranges in the allow sets.
    pub allowed_addresses: u32,
    /// Domains from the profiles.
    pub domains: Vec<String>,
    /// Live-allowed IPs and CIDRs (operator changes, canonical form). The lists are absent
    /// from the answer to a change (the daemon leaves them out: they can be long).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// Denied IPs and CIDRs; deny wins over every allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<Vec<String>>,
    /// Live-allowed domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_domains: Option<Vec<String>>,
    /// Denied domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_domains: Option<Vec<String>>,
}

/// A container id as podman shows it (its first 12 characters).
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl ContainerView {
    /// The id as podman shows it (12 characters).
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }

    /// What to call the container in one-line messages: its name, else its short id.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            self.short_id()
        } else {
            &self.name
        }
    }
}

impl From<v1::Container> for ContainerView {
    fn from(container: v1::Container) -> Self {
        let listed = |list: Vec<String>| (!container.lists_omitted).then_some(list);
        Self {
            state: container.state.into(),
            mode: container.mode.into(),
            id: container.id,
            name: container.name,
            profiles: container.profiles,
            pid: container.pid,
            attached_at: container.attached_at,
            allowed_addresses: container.allowed_addresses,
            domains: container.domains,
            allowed: listed(container.allowed),
            denied: listed(container.denied),
            allowed_domains: listed(container.allowed_domains),
            denied_domains: listed(container.denied_domains),
        }
    }
}

/// `shieldctl ps`: a JSON array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ContainerList(pub Vec<ContainerView>);

/// `shieldctl rules CONTAINER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesView {
    /// The container the daemon resolved (absent if the daemon sent none).
    pub container: Option<ContainerView>,
    /// The ruleset read back from the kernel, as nft text; empty when not running.
    pub ruleset: String,
}

impl From<v1::GetContainerResponse> for RulesView {
    fn from(response: v1::GetContainerResponse) -> Self {
        Self {
            container: response.container.map(ContainerView::from),
            ruleset: response.ruleset,
        }
    }
}

/// `shieldctl preview`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewView {
    /// The profiles used, after the daemon applied its defaults.
    pub profiles: Vec<String>,
    /// The mode previewed.
    pub mode: ModeView,
    /// `nft -f` input.
    pub ruleset: String,
}

/// One profile (`profiles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileView {
    /// Profile name.
    pub name: String,
    /// `bundled` or `user`.
    pub source: String,
    /// IPs and CIDRs in it.
    pub addresses: u32,
    /// Domains in it.
    pub domains: u32,
    /// File of a user profile; null for bundled ones.
    pub path: Option<String>,
}

impl From<v1::Profile> for ProfileView {
    fn from(profile: v1::Profile) -> Self {
        Self {
            name: profile.name,
            source: profile.source,
            addresses: profile.addresses,
            domains: profile.domains,
            path: (!profile.path.is_empty()).then_some(profile.path),
        }
    }
}

/// `shieldctl profiles`: a JSON array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProfileList(pub Vec<ProfileView>);

/// Which change `allow` or `deny` made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    /// `allow`.
    Allow,
    /// `deny`.
    Deny,
}

impl ChangeAction {
    /// The past tense used in text: `allowed`, `denied`.
    pub fn done(self) -> &'static str {
        match self {
            Self::Allow => "allowed",
            Self::Deny => "denied",
        }
    }
}

/// What one target of a change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetChangeView {
    /// The target in canonical form.
    pub target: String,
    /// `address`, `network` or `domain`.
    pub kind: String,
    /// False when the change was a no-op (already allowed / already denied).
    pub changed: bool,
    /// For a domain allow: the addresses it resolved to and that were let through.
    pub resolved: Vec<String>,
}

impl From<v1::TargetChange> for TargetChangeView {
    fn from(change: v1::TargetChange) -> Self {
        Self {
            target: change.target,
            kind: change.kind,
            changed: change.changed,
            resolved: change.resolved,
        }
    }
}

/// `shieldctl allow` / `shieldctl deny`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeView {
    /// `allow` or `deny`.
    pub action: ChangeAction,
    /// The container after the change (absent if the daemon sent none).
    pub container: Option<ContainerView>,
    /// One entry per target, in request order.
    pub changes: Vec<TargetChangeView>,
    /// Time the daemon spent applying and verifying the change, in microseconds.
    pub apply_micros: u64,
}

impl ChangeView {
    /// The view of the daemon's answer to `action`.
    pub fn new(action: ChangeAction, response: v1::ChangeResponse) -> Self {
        Self {
            action,
            container: response.container.map(ContainerView::from),
            changes: response
                .changes
                .into_iter()
                .map(TargetChangeView::from)
                .collect(),
            apply_micros: response.apply_micros,
        }
    }
}

/// `shieldctl up` / `down` / `block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeChangeView {
    /// The container after the change (absent if the daemon sent none).
    pub container: Option<ContainerView>,
    /// The mode before.
    pub previous: ModeView,
    /// The mode now.
    pub mode: ModeView,
    /// How the text form names the container (its name, short id, or the argument as typed).
    #[serde(skip)]
    pub label: String,
}

impl ModeChangeView {
    /// The view of the daemon's answer to a request for `requested` on `typed` (the argument).
    pub fn new(typed: &str, requested: ModeView, response: v1::SetModeResponse) -> Self {
        let container = response.container.map(ContainerView::from);
        let label = container
            .as_ref()
            .map_or_else(|| typed.to_owned(), |c| c.label().to_owned());
        let mode = container.as_ref().map_or(requested, |c| c.mode);
        Self {
            container,
            previous: response.previous.into(),
            mode,
            label,
        }
    }
}

/// The one word `shieldctl state` prints (as the issue names them: `down_all` with an underscore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateWord {
    /// Running, enforcing.
    Up,
    /// Running, bypass.
    Down,
    /// Running, bypass including private ranges.
    DownAll,
    /// Running, everything blocked.
    Block,
    /// Not running.
    Stopped,
    /// Running in a mode newer than this client.
    Unknown,
}

impl StateWord {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::DownAll => "down_all",
            Self::Block => "block",
            Self::Stopped => "stopped",
            Self::Unknown => "unknown",
        }
    }

    /// `stopped` for a stopped container, else its mode.
    pub fn of(container: &ContainerView) -> Self {
        if container.state == StateView::Stopped {
            return Self::Stopped;
        }
        match container.mode {
            ModeView::Up => Self::Up,
            ModeView::Down => Self::Down,
            ModeView::DownAll => Self::DownAll,
            ModeView::Block => Self::Block,
            ModeView::Unknown => Self::Unknown,
        }
    }
}

/// `shieldctl state CONTAINER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateReport {
    /// Full container id.
    pub container: String,
    /// shield name, may be empty.
    pub name: String,
    /// The word.
    pub state: StateWord,
}

impl From<&ContainerView> for StateReport {
    fn from(container: &ContainerView) -> Self {
        Self {
            container: container.id.clone(),
            name: container.name.clone(),
            state: StateWord::of(container),
        }
    }
}

/// What `forget` forgot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetView {
    /// The containers forgotten, by id.
    pub forgotten: Vec<ForgottenView>,
}

/// One forgotten container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgottenView {
    /// Full container id.
    pub id: String,
    /// shield name, may be empty.
    pub name: String,
}

impl From<v1::ForgetResponse> for ForgetView {
    fn from(response: v1::ForgetResponse) -> Self {
        Self {
            forgotten: response
                .forgotten
                .into_iter()
                .map(|f| ForgottenView {
                    id: f.id,
                    name: f.name,
                })
                .collect(),
        }
    }
}

/// One audit event (`logs`); the keys are those of `audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEventView {
    /// UTC time, ISO-8601.
    pub ts: String,
    /// Container id.
    pub container: String,
    /// Container name.
    pub name: String,
    /// attach, detach, allow, deny, mode, restore, ...
    pub action: String,
    /// The target of the action, if any.
    pub target: String,
    /// Free text for people.
    pub detail: String,
}

impl From<v1::AuditEvent> for LogEventView {
    fn from(event: v1::AuditEvent) -> Self {
        Self {
            ts: event.ts,
            container: event.container,
            name: event.name,
            action: event.action,
            target: event.target,
            detail: event.detail,
        }
    }
}

/// One address a name resolved to (`dns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LearntAddressView {
    /// The IP address, as the daemon wrote it.
    pub address: String,
    /// Milliseconds until the address leaves the dns sets (unless a new answer refreshes it).
    pub expires_in_ms: u64,
}

impl From<v1::LearntAddress> for LearntAddressView {
    fn from(address: v1::LearntAddress) -> Self {
        Self {
            address: address.address,
            expires_in_ms: address.expires_in_ms,
        }
    }
}

/// One name the DNS proxy let through (`dns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LearntNameView {
    /// As the container asked for it; `(restored)` for addresses found after a daemon restart.
    pub name: String,
    /// Its addresses, in the daemon's order.
    pub addresses: Vec<LearntAddressView>,
}

impl From<v1::LearntName> for LearntNameView {
    fn from(name: v1::LearntName) -> Self {
        Self {
            name: name.name,
            addresses: name
                .addresses
                .into_iter()
                .map(LearntAddressView::from)
                .collect(),
        }
    }
}

/// `shieldctl dns CONTAINER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsView {
    /// Full container id.
    pub container: String,
    /// shield name, may be empty.
    pub name: String,
    /// Running or stopped: a stopped container has no names.
    pub state: StateView,
    /// The names let through, ordered by name.
    pub names: Vec<LearntNameView>,
    /// How the text form names the container (its name, else its short id).
    #[serde(skip)]
    pub label: String,
}

impl DnsView {
    /// The view of `container`'s learnt `names`.
    pub fn new(container: &ContainerView, names: Vec<v1::LearntName>) -> Self {
        let mut names: Vec<LearntNameView> = names.into_iter().map(LearntNameView::from).collect();
        // The daemon sends them ordered; sorting here keeps the promise whatever it sends.
        names.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            container: container.id.clone(),
            name: container.name.clone(),
            state: container.state,
            names,
            label: container.label().to_owned(),
        }
    }
}

/// `shieldctl setup [--remove]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupView {
    /// `user` or `system`.
    pub scope: crate::setup::Scope,
    /// True for `--remove`.
    pub remove: bool,
    /// The hooks directory.
    pub hooks_dir: String,
    /// The hook binary the hooks run.
    pub hook: String,
    /// The socket the hooks use.
    pub socket: String,
    /// Whether anything changed.
    pub changed: bool,
    /// Every path looked at, in order.
    pub changes: Vec<crate::setup::Change>,
    /// Problems that remain (also printed to stderr).
    pub warnings: Vec<String>,
}

/// `shieldctl prepare NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrepareView {
    /// The container name.
    pub name: String,
    /// The profiles asked for (empty: the daemon's defaults).
    pub profiles: Vec<String>,
    /// `default`, `slirp4netns` or `pasta`.
    pub network: crate::podman_args::NetworkPlan,
    /// Where the container reaches the host's loopback ports, if it can.
    pub host_address: Option<String>,
    /// The host-loopback ports from config.toml.
    pub loopback_ports: Vec<u16>,
    /// shield's resolv.conf on the host.
    pub resolv_conf: String,
    /// The arguments to put after `podman run`.
    pub args: Vec<String>,
}

/// `shieldctl doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorView {
    /// No check failed: shielded containers will work.
    pub ok: bool,
    /// Every check, in order.
    pub findings: Vec<crate::doctor::Finding>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container() -> ContainerView {
        ContainerView::from(v1::Container {
            id: "0123456789abcdef0123".to_owned(),
            name: "web".to_owned(),
            state: v1::ContainerState::Running.into(),
            profiles: vec!["base".to_owned(), "dev".to_owned()],
            mode: v1::Mode::DownAll.into(),
            pid: 42,
            attached_at: 1_700_000_000,
            allowed_addresses: 3,
            domains: vec!["example.com".to_owned()],
            allowed: vec!["192.0.2.7".to_owned()],
            denied: vec!["10.0.0.0/8".to_owned()],
            allowed_domains: vec!["example.org".to_owned()],
            denied_domains: vec![],
            lists_omitted: false,
        })
    }

    #[test]
    fn enums_are_lowercase_strings() {
        assert_eq!(
            serde_json::to_value(StateView::Running).unwrap(),
            json!("running")
        );
        assert_eq!(
            serde_json::to_value(ModeView::DownAll).unwrap(),
            json!("down-all")
        );
        assert_eq!(ModeView::DownAll.as_str(), "down-all");
        assert_eq!(StateView::from(99), StateView::Unknown);
        assert_eq!(ModeView::from(0), ModeView::Unknown);
        assert_eq!(
            serde_json::to_value(ModeView::Unknown).unwrap(),
            json!("unknown")
        );
    }

    #[test]
    fn container_json_shape() {
        let value = serde_json::to_value(ContainerList(vec![container()])).unwrap();
        assert_eq!(
            value,
            json!([{
                "id": "0123456789abcdef0123",
                "name": "web",
                "state": "running",
                "mode": "down-all",
                "profiles": ["base", "dev"],
                "pid": 42,
                "attached_at": 1_700_000_000,
                "allowed_addresses": 3,
                "domains": ["example.com"],
                "allowed": ["192.0.2.7"],
                "denied": ["10.0.0.0/8"],
                "allowed_domains": ["example.org"],
                "denied_domains": [],
            }])
        );
        assert_eq!(container().short_id(), "0123456789ab");
        assert_eq!(container().label(), "web");
        let mut nameless = container();
        nameless.name.clear();
        assert_eq!(nameless.label(), "0123456789ab");
    }

    #[test]
    fn change_json_shape() {
        let view = ChangeView::new(
            ChangeAction::Allow,
            v1::ChangeResponse {
                container: None,
                changes: vec![
                    v1::TargetChange {
                        target: "192.0.2.7".to_owned(),
                        kind: "address".to_owned(),
                        changed: true,
                        resolved: vec![],
                    },
                    v1::TargetChange {
                        target: "example.com".to_owned(),
                        kind: "domain".to_owned(),
                        changed: false,
                        resolved: vec!["93.184.216.34".to_owned()],
                    },
                ],
                apply_micros: 120,
            },
        );
        assert_eq!(
            serde_json::to_value(view).unwrap(),
            json!({
                "action": "allow",
                "container": null,
                "changes": [
                    {"target": "192.0.2.7", "kind": "address", "changed": true, "resolved": []},
                    {"target": "example.com", "kind": "domain", "changed": false,
                     "resolved": ["93.184.216.34"]},
                ],
                "apply_micros": 120,
            })
        );
        assert_eq!(
            serde_json::to_value(ChangeAction::Deny).unwrap(),
            json!("deny")
        );
    }

    #[test]
    fn mode_change_json_shape_and_label() {
        let mut after = v1::Container {
            id: "0123456789abcdef0123".to_owned(),
            mode: v1::Mode::Block.into(),
            ..Default::default()
        };
        let view = ModeChangeView::new(
            "0123",
            ModeView::Block,
            v1::SetModeResponse {
                container: Some(after.clone()),
                previous: v1::Mode::DownAll.into(),
            },
        );
        assert_eq!(view.label, "0123456789ab");
        let value = serde_json::to_value(&view).unwrap();
        assert_eq!(value["previous"], "down-all");
        assert_eq!(value["mode"], "block");
        assert_eq!(value["container"]["id"], "0123456789abcdef0123");
        assert!(value.get("label").is_none());

        after.name = "web".to_owned();
        let view = ModeChangeView::new(
            "0123",
            ModeView::Block,
            v1::SetModeResponse {
                container: Some(after),
                previous: v1::Mode::Up.into(),
            },
        );
        assert_eq!(view.label, "web");
        let view = ModeChangeView::new("typed", ModeView::Down, v1::SetModeResponse::default());
        assert_eq!(view.label, "typed");
        assert_eq!(view.mode, ModeView::Down);
        assert_eq!(view.previous, ModeView::Unknown);
    }

    #[test]
    fn state_words() {
        let mut container = container();
        assert_eq!(StateWord::of(&container), StateWord::DownAll);
        assert_eq!(StateWord::DownAll.as_str(), "down_all");
        for (mode, word) in [
            (ModeView::Up, "up"),
            (ModeView::Down, "down"),
            (ModeView::DownAll, "down_all"),
            (ModeView::Block, "block"),
            (ModeView::Unknown, "unknown"),
        ] {
            container.mode = mode;
            let state = StateWord::of(&container);
            assert_eq!(state.as_str(), word);
            assert_eq!(serde_json::to_value(state).unwrap(), json!(word));
        }
        container.state = StateView::Stopped;
        assert_eq!(StateWord::of(&container), StateWord::Stopped);
        assert_eq!(
            serde_json::to_value(StateReport::from(&container)).unwrap(),
            json!({"container": "0123456789abcdef0123", "name": "web", "state": "stopped"})
        );
    }

    #[test]
    fn log_event_json_has_the_audit_keys() {
        let view = LogEventView::from(v1::AuditEvent {
            ts: "2026-11-28T21:00:00.123456Z".to_owned(),
            container: "0123".to_owned(),
            name: "web".to_owned(),
            action: "allow".to_owned(),
            target: "1.2.3.4".to_owned(),
            detail: "by operator".to_owned(),
        });
        assert_eq!(
            serde_json::to_value(view).unwrap(),
            json!({
                "ts": "2026-11-28T21:00:00.123456Z",
                "container": "0123",
                "name": "web",
                "action": "allow",
                "target": "1.2.3.4",
                "detail": "by operator",
            })
        );
    }

    fn learnt(name: &str, addresses: &[(&str, u64)]) -> v1::LearntName {
        v1::LearntName {
            name: name.to_owned(),
            addresses: addresses
                .iter()
                .map(|(address, expires_in_ms)| v1::LearntAddress {
                    address: (*address).to_owned(),
                    expires_in_ms: *expires_in_ms,
                })
                .collect(),
        }
    }

    #[test]
    fn dns_json_shape_is_sorted_by_name() {
        let view = DnsView::new(
            &container(),
            vec![
                learnt("pypi.org", &[("151.101.0.223", 29_000)]),
                learnt(
                    "example.com",
                    &[("93.184.216.34", 3_598_000), ("2606:2800:220:1::", 1)],
                ),
            ],
        );
        assert_eq!(view.label, "web");
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            json!({
                "container": "0123456789abcdef0123",
                "name": "web",
                "state": "running",
                "names": [
                    {"name": "example.com", "addresses": [
                        {"address": "93.184.216.34", "expires_in_ms": 3_598_000},
                        {"address": "2606:2800:220:1::", "expires_in_ms": 1},
                    ]},
                    {"name": "pypi.org", "addresses": [
                        {"address": "151.101.0.223", "expires_in_ms": 29_000},
                    ]},
                ],
            })
        );

        let mut stopped = container();
        stopped.name.clear();
        stopped.state = StateView::Stopped;
        let view = DnsView::new(&stopped, vec![]);
        assert_eq!(view.label, "0123456789ab");
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            json!({"container": "0123456789abcdef0123", "name": "", "state": "stopped", "names": []})
        );
    }

    #[test]
    fn status_json_shape() {
        let view = StatusView::from(v1::GetStatusResponse {
            version: "0.1.0".to_owned(),
            uptime_seconds: 61,
            containers_running: 2,
            containers_stopped: 1,
            socket: "/run/shield/shieldd.sock".to_owned(),
            uid: 0,
        });
        assert_eq!(
            serde_json::to_value(view).unwrap(),
            json!({
                "version": "0.1.0",
                "uptime_seconds": 61,
                "containers_running": 2,
                "containers_stopped": 1,
                "socket": "/run/shield/shieldd.sock",
                "uid": 0,
            })
        );
    }

    #[test]
    fn profile_json_shape() {
        let bundled = ProfileView::from(v1::Profile {
            name: "base".to_owned(),
            source: "bundled".to_owned(),
            addresses: 0,
            domains: 4,
            path: String::new(),
        });
        assert_eq!(
            serde_json::to_value(ProfileList(vec![bundled])).unwrap(),
            json!([{"name": "base", "source": "bundled", "addresses": 0, "domains": 4, "path": null}])
        );
    }

    #[test]
    fn rules_and_preview_json_shape() {
        let rules = RulesView {
            container: None,
            ruleset: String::new(),
        };
        assert_eq!(
            serde_json::to_value(rules).unwrap(),
            json!({"container": null, "ruleset": ""})
        );
        let preview = PreviewView {
            profiles: vec!["base".to_owned()],
            mode: ModeView::Up,
            ruleset: "table inet shield {}\n".to_owned(),
        };
        assert_eq!(
            serde_json::to_value(preview).unwrap(),
            json!({"profiles": ["base"], "mode": "up", "ruleset": "table inet shield {}\n"})
        );
    }
}
