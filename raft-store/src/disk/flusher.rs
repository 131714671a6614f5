//! A thread that answers sync requests, many per fdatasync (group commit).
//!
//! Both production stores (the fjall keyspace and the segment files) make writes
//! durable the same way: writers queue a callback, and one thread drains every queued callback
//! before each sync, so concurrent writers share one fdatasync.

use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::SyncCallback;

/// Sync requests queued for a flusher thread. At the limit `sync_then` blocks its caller until
/// the flusher catches up: backpressure on the writers, never an unbounded queue.
pub const MAX_PENDING_SYNCS: usize = 4096;
/// Most sync requests answered by one fdatasync.
pub const MAX_SYNCS_PER_FDATASYNC: usize = 1024;

/// Makes everything written so far durable.
pub(crate) type SyncFn = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// Owns the flusher thread; dropping it answers what is queued and joins the thread.
pub(crate) struct Flusher {
    sync: SyncFn,
    requests: Option<SyncSender<SyncCallback>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(crate) fn start(name: &str, sync: SyncFn) -> io::Result<Flusher> {
        let (tx, rx) = sync_channel(MAX_PENDING_SYNCS);
        let thread_sync = sync.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&*thread_sync, rx))?;
        Ok(Flusher {
            sync,
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Syncs on the calling thread.
    pub(crate) fn sync(&self) -> io::Result<()> {
        (self.sync)()
    }

    /// Queues `done` for the next fdatasync.
    pub(crate) fn sync_then(&self, done: SyncCallback) {
        match &self.requests {
            Some(tx) => {
                if let Err(unsent) = tx.send(done) {
                    // The flusher is gone (only during drop): sync here instead.
                    (unsent.0)((self.sync)());
                }
            }
            None => done((self.sync)()),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel stops the thread after it answers what is queued; joining it
        // releases its handles so the files can be opened again at once.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(sync: &(dyn Fn() -> io::Result<()> + Send + Sync), requests: Receiver<SyncCallback>) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < MAX_SYNCS_PER_FDATASYNC {
            match requests.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let result = sync();
        for done in group {
            done(result.as_ref().map(|_| ()).map_err(copy_error));
        }
    }
}

fn copy_error(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}
