//! Makes journal lines durable after their change has been answered.
//!
//! A change that only widens what a container may reach (an allow) is answered once its
//! journal line is written, not once it is on disk: a daemon crash cannot lose it (the line is
//! in the kernel's page cache), and a power loss that does loses an allow, which fails closed.
//! The line is made durable here, off the request path, a moment later. Narrowing changes are
//! synced before their answer (see [`crate::store::Durability`]).
//!
//! Requests are coalesced: one task on the blocking pool syncs every container asked for since
//! its last pass, so a burst of allows costs one `fdatasync` per container per pass, and never
//! more than one thread.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::Store;

/// Syncs the journals of the containers it is asked to, one pass at a time.
#[derive(Debug)]
pub struct JournalSync {
    store: Store,
    pending: Mutex<Pending>,
}

/// What is waiting for the next pass.
#[derive(Debug, Default)]
struct Pending {
    /// Containers whose journal has lines written since the pass that last synced it.
    ids: BTreeSet<String>,
    /// Whether a pass is running (it takes `ids` again before it stops).
    running: bool,
}

impl JournalSync {
    /// A syncer for `store`'s journals, idle.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            pending: Mutex::new(Pending::default()),
        })
    }

    /// Asks for container `id`'s journal to be synced soon; starts a pass on the blocking pool
    /// unless one is running. Must be called within a tokio runtime.
    pub fn request(self: &Arc<Self>, id: &str) {
        let mut pending = self.pending();
        pending.ids.insert(id.to_owned());
        if pending.running {
            return;
        }
        pending.running = true;
        drop(pending);
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.run());
    }

    /// Whether every requested journal has been synced (no pass running or due).
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        let pending = self.pending();
        !pending.running && pending.ids.is_empty()
    }

    /// Syncs until no request is left. A failure is logged: the change it carries was answered
    /// already, and is lost only if the machine goes down before the journal's next sync or
    /// fold into the state file.
    fn run(&self) {
        loop {
            let ids = {
                let mut pending = self.pending();
                if pending.ids.is_empty() {
                    pending.running = false;
                    return;
                }
                std::mem::take(&mut pending.ids)
            };
            for id in ids {
                if let Err(err) = self.store.sync_journal(&id) {
                    tracing::error!(container = %id, error = %err, "cannot make allowed changes durable: a power loss would lose them");
                }
            }
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The lock is never held across anything that can panic; a poisoned one still holds
        // consistent data.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ContainerState, Durability, JournalAction, JournalEntry};
    use std::time::{Duration, Instant};

    fn entry(seq: u64) -> JournalEntry {
        JournalEntry {
            seq,
            action: JournalAction::Allow,
            targets: vec![format!("192.0.2.{seq}")],
        }
    }

    async fn until_idle(sync: &JournalSync) {
        let start = Instant::now();
        while !sync.is_idle() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the sync pass never finished"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_end_idle_for_present_and_forgotten_journals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .save(&ContainerState::new("c1", "one", vec![]))
            .unwrap();
        let sync = JournalSync::new(store.clone());
        assert!(sync.is_idle());
        for seq in 1..=20 {
            store
                .append("c1", &entry(seq), Durability::Written)
                .unwrap();
            sync.request("c1");
            // Never saved: no journal, nothing to sync, no error.
            sync.request("forgotten");
        }
        until_idle(&sync).await;
        // The lines written are all there (the syncs changed nothing in them).
        let state = store.load("c1").unwrap().unwrap();
        assert_eq!(state.journal_seq, 20);
        // A request after a pass ended starts another.
        store.append("c1", &entry(21), Durability::Written).unwrap();
        sync.request("c1");
        until_idle(&sync).await;
        assert_eq!(store.load("c1").unwrap().unwrap().journal_seq, 21);
    }
}
