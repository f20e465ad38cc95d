//! The threads that serve the containers' DNS: a few single-threaded runtimes, each serving
//! the proxies of some containers, every task of a proxy on its one thread.
//!
//! Why not the daemon's multi-threaded runtime: a DNS answer is a chain of steps of a few µs
//! each (receive, decide, forward, insert, send) separated by waits of tens of µs, and on that
//! runtime every query woke a second worker for nothing (a futex wake, and a halted vCPU to
//! wake on the VMs shield is measured on) while the answer's steps moved between the workers:
//! ~35 µs of CPU per forwarded answer, much of it on the answer's way. On a thread of its own,
//! a proxy's tasks hand over to each other without waking anyone.
//!
//! Containers are spread over the threads round robin, one thread per CPU (at most
//! [`MAX_THREADS`]), so many busy containers still use every CPU. Each thread has its own
//! [`Forwarder`] (its own stock of upstream sockets, registered with its own reactor) sharing
//! the resolver list. Dropping [`DnsThreads`] ends the threads' runtimes, and with them every
//! task still on them.

use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::upstream::Forwarder;

/// More threads than this gain nothing: a proxy thread is mostly idle, waiting for the kernel.
pub const MAX_THREADS: usize = 4;

/// One DNS thread, as a proxy needs it.
#[derive(Debug)]
pub struct DnsThread {
    /// Where the proxy's tasks run.
    pub runtime: Handle,
    /// The forwarder whose sockets belong to this thread.
    pub forwarder: Arc<Forwarder>,
    /// Dropped, it ends the thread's runtime.
    _stop: oneshot::Sender<()>,
}

/// The DNS threads of the daemon (at least one).
#[derive(Debug)]
pub struct DnsThreads {
    first: DnsThread,
    others: Vec<DnsThread>,
    /// Where the next container goes.
    next: AtomicUsize,
}

impl DnsThreads {
    /// One thread per CPU, at most [`MAX_THREADS`].
    pub fn default_count() -> usize {
        std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .clamp(1, MAX_THREADS)
    }

    /// Starts `count` threads (at least one), each forwarding through a sibling of
    /// `forwarder`.
    pub fn start(count: usize, forwarder: &Forwarder) -> io::Result<Self> {
        let first = start_thread(0, forwarder.sibling())?;
        let others = (1..count)
            .map(|index| start_thread(index, forwarder.sibling()))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            first,
            others,
            next: AtomicUsize::new(0),
        })
    }

    /// The thread the next container's proxy should run on.
    pub fn pick(&self) -> &DnsThread {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        turn.checked_rem(self.count())
            .and_then(|index| index.checked_sub(1))
            .and_then(|index| self.others.get(index))
            .unwrap_or(&self.first)
    }

    /// How many threads there are.
    pub fn count(&self) -> usize {
        self.others.len().saturating_add(1)
    }
}

fn start_thread(index: usize, forwarder: Forwarder) -> io::Result<DnsThread> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("shield-dns-{index}"))
        .spawn(move || {
            // The spawned proxies run while this waits; when it returns the runtime drops here,
            // cancelling them and closing their sockets.
            runtime.block_on(async {
                // Either a send or the sender's drop: both mean stop.
                let _ = stopped.await;
            });
        })?;
    Ok(DnsThread {
        runtime: handle,
        forwarder: Arc::new(forwarder),
        _stop: stop,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dns::servers::UpstreamServers;

    fn forwarder() -> Forwarder {
        Forwarder::new(UpstreamServers::fixed(Vec::new()), Duration::from_secs(1))
    }

    #[test]
    fn containers_are_spread_over_the_threads_in_turn() {
        let threads = DnsThreads::start(3, &forwarder()).unwrap();
        assert_eq!(threads.count(), 3);
        let picked: Vec<*const DnsThread> = (0..6).map(|_| threads.pick() as *const _).collect();
        assert_eq!(picked[0], picked[3]);
        assert_eq!(picked[1], picked[4]);
        assert_ne!(picked[0], picked[1]);
        assert_ne!(picked[1], picked[2]);
        assert_ne!(picked[0], picked[2]);
    }

    #[test]
    fn a_task_runs_on_its_thread_and_ends_with_the_threads() {
        let threads = DnsThreads::start(1, &forwarder()).unwrap();
        let thread = threads.pick();
        let (name_tx, name_rx) = std::sync::mpsc::channel();
        let (_hold, held) = oneshot::channel::<()>();
        let (ended_tx, ended_rx) = std::sync::mpsc::channel::<()>();
        thread.runtime.spawn(async move {
            // Dropped with the task, whether it finishes or is cancelled.
            let _ended = ended_tx;
            name_tx
                .send(std::thread::current().name().map(str::to_owned))
                .unwrap();
            let _ = held.await;
        });
        let name = name_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(name.as_deref(), Some("shield-dns-0"));
        assert!(
            ended_rx.try_recv().is_err(),
            "the task must still be running"
        );
        drop(threads);
        // The task was cancelled with its runtime: its sender is gone without a send.
        assert_eq!(
            ended_rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn there_is_always_a_thread() {
        assert_eq!(DnsThreads::start(0, &forwarder()).unwrap().count(), 1);
        assert!((1..=MAX_THREADS).contains(&DnsThreads::default_count()));
    }
}
