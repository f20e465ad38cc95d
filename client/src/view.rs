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
}

impl ContainerView {
    /// The id as podman shows it (12 characters).
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

impl From<v1::Container> for ContainerView {
    fn from(container: v1::Container) -> Self {
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
            }])
        );
        assert_eq!(container().short_id(), "0123456789ab");
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
