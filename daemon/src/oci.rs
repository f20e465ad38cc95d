//! Checks on what the hook forwards from the OCI runtime: container id, pid, annotations.
//!
//! The daemon never trusts its client: the hook validates too, but these checks decide.

use std::collections::HashMap;

/// Annotation that carries the container's profiles, colon-separated (`dev-standard:base`).
pub const PROFILES_ANNOTATION: &str = "shield.profiles";
/// Annotation that carries the container's display name.
pub const NAME_ANNOTATION: &str = "shield.name";

/// Why the OCI state is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OciError {
    /// Missing or malformed container id.
    #[error("invalid container id {0:?}: expected 1 to 128 characters of [A-Za-z0-9_.-]")]
    Id(String),
    /// createRuntime without a pid.
    #[error("OCI state has no pid: the createRuntime hook must receive the container's pid")]
    MissingPid,
    /// A name podman would not give a container.
    #[error(
        "invalid container name {0:?}: expected 1 to 128 characters of [A-Za-z0-9_.-], starting with a letter or digit"
    )]
    Name(String),
    /// A profile name in the annotation is not valid.
    #[error("annotation {PROFILES_ANNOTATION}: {0}")]
    Profile(#[from] crate::profiles::parse::NameError),
}

/// Checks a container id (podman's are 64 hex digits; other runtimes use other safe forms).
pub fn validate_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(OciError::Id(id.to_owned()))
    }
}

/// Checks a container name.
pub fn validate_name(name: &str) -> Result<(), OciError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(OciError::Name(name.to_owned()))
    }
}

/// The container's display name: `shield.name`, or the first 12 characters of the id.
pub fn container_name(id: &str, annotations: &HashMap<String, String>) -> Result<String, OciError> {
    match annotations.get(NAME_ANNOTATION).map(|name| name.trim()) {
        Some(name) if !name.is_empty() => {
            validate_name(name)?;
            Ok(name.to_owned())
        }
        _ => Ok(id.chars().take(12).collect()),
    }
}

/// The profiles named by `shield.profiles` (colon-separated; empty entries ignored), or
/// `defaults` when it names none.
pub fn container_profiles(
    annotations: &HashMap<String, String>,
    defaults: &[String],
) -> Result<Vec<String>, OciError> {
    let mut profiles: Vec<String> = Vec::new();
    for name in annotations
        .get(PROFILES_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default()
        .split(':')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        crate::profiles::validate_name(name)?;
        if !profiles.iter().any(|known| known == name) {
            profiles.push(name.to_owned());
        }
    }
    if profiles.is_empty() {
        profiles = defaults.to_vec();
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ids() {
        assert!(validate_id(&"a".repeat(64)).is_ok());
        for bad in ["", "..", "a/b", "a b", &"a".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_default_to_short_id() {
        let id = "0123456789abcdef0123";
        assert_eq!(
            container_name(id, &annotations(&[])).unwrap(),
            "0123456789ab"
        );
        let named = annotations(&[(NAME_ANNOTATION, "web-1")]);
        assert_eq!(container_name(id, &named).unwrap(), "web-1");
        let bad = annotations(&[(NAME_ANNOTATION, "-x;rm")]);
        assert!(container_name(id, &bad).is_err());
    }

    #[test]
    fn profiles_from_annotation_or_defaults() {
        let defaults = vec!["dev-standard".to_owned()];
        let given = annotations(&[(PROFILES_ANNOTATION, "base:dev-node::base")]);
        assert_eq!(
            container_profiles(&given, &defaults).unwrap(),
            ["base", "dev-node"]
        );
        let empty = annotations(&[(PROFILES_ANNOTATION, "")]);
        assert_eq!(container_profiles(&empty, &defaults).unwrap(), defaults);
        let bad = annotations(&[(PROFILES_ANNOTATION, "base:../x")]);
        assert!(container_profiles(&bad, &defaults).is_err());
    }
}
