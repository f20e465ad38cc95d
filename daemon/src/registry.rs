//! The containers the daemon knows, in memory: their policy and, while they run, their sockets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::attach::Attachment;
use crate::profiles::DomainPattern;
use crate::ruleset::Policy;

/// Everything the daemon records about one container.
#[derive(Clone, Debug)]
pub struct Record {
    /// Container id (OCI).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Profile names, in order.
    pub profiles: Vec<String>,
    /// Domains from the profiles (the DNS proxy enforces them).
    pub domains: Vec<DomainPattern>,
    /// What the ruleset is built from.
    pub policy: Policy,
    /// Present while the container runs: its namespace sockets.
    pub running: Option<Running>,
}

/// A running container's attachment.
#[derive(Clone, Debug)]
pub struct Running {
    /// Pid of the container's init process at attach time.
    pub pid: u32,
    /// When the ruleset was applied and verified.
    pub attached_at: SystemTime,
    /// The sockets inside the container's namespace. The mutex serialises netlink conversations
    /// on them: one batch or dump at a time.
    pub attachment: Arc<Mutex<Attachment>>,
}

/// Why a container reference does not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Nothing matches.
    #[error("no container matches {0:?} (see 'shieldctl ps')")]
    NotFound(String),
    /// An id prefix matches several containers.
    #[error("{query:?} matches {count} containers: give more of the id, or the name")]
    Ambiguous {
        /// What was asked for.
        query: String,
        /// How many matched.
        count: usize,
    },
}

/// The daemon's container table.
#[derive(Debug, Default)]
pub struct Registry {
    records: Mutex<BTreeMap<String, Record>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        // A panic while holding the lock cannot leave a record half-written (records are
        // replaced whole), so a poisoned lock is still consistent.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `record`, replacing any earlier record of the same id.
    pub fn insert(&self, record: Record) {
        self.lock().insert(record.id.clone(), record);
    }

    /// Marks the container stopped and hands back its attachment (dropping it closes the
    /// sockets, which releases the network namespace). `None` if the id is unknown.
    pub fn stop(&self, id: &str) -> Option<Option<Running>> {
        self.lock().get_mut(id).map(|record| record.running.take())
    }

    /// Every record, ordered by id.
    pub fn all(&self) -> Vec<Record> {
        self.lock().values().cloned().collect()
    }

    /// Resolves an id, a name, or a unique id prefix.
    pub fn find(&self, query: &str) -> Result<Record, LookupError> {
        let records = self.lock();
        if let Some(record) = records.get(query) {
            return Ok(record.clone());
        }
        let by_name: Vec<&Record> = records.values().filter(|r| r.name == query).collect();
        let by_prefix: Vec<&Record> = records
            .values()
            .filter(|r| !query.is_empty() && r.id.starts_with(query))
            .collect();
        let matches = if by_name.is_empty() {
            by_prefix
        } else {
            by_name
        };
        match matches.as_slice() {
            [record] => Ok((*record).clone()),
            [] => Err(LookupError::NotFound(query.to_owned())),
            many => Err(LookupError::Ambiguous {
                query: query.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// `(running, stopped)` counts.
    pub fn counts(&self) -> (usize, usize) {
        let records = self.lock();
        let running = records.values().filter(|r| r.running.is_some()).count();
        (running, records.len() - running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> Record {
        Record {
            id: id.to_owned(),
            name: name.to_owned(),
            profiles: Vec::new(),
            domains: Vec::new(),
            policy: Policy::default(),
            running: None,
        }
    }

    #[test]
    fn finds_by_id_name_and_unique_prefix() {
        let registry = Registry::default();
        registry.insert(record("abc123", "web"));
        registry.insert(record("abd456", "db"));
        assert_eq!(registry.find("abc123").unwrap().name, "web");
        assert_eq!(registry.find("db").unwrap().id, "abd456");
        assert_eq!(registry.find("abc").unwrap().id, "abc123");
        assert!(matches!(
            registry.find("ab"),
            Err(LookupError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            registry.find("zzz"),
            Err(LookupError::NotFound(_))
        ));
        assert!(matches!(registry.find(""), Err(LookupError::NotFound(_))));
    }

    #[test]
    fn stop_keeps_the_record() {
        let registry = Registry::default();
        registry.insert(record("abc", "web"));
        assert!(matches!(registry.stop("abc"), Some(None)));
        assert!(registry.stop("nope").is_none());
        assert_eq!(registry.counts(), (0, 1));
    }
}
