//! Cairn's openraft runtime: tokio, with the randomness (election timeouts) drawn from a
//! per-thread generator that the simulation seeds, so a seed replays a run exactly.
//!
//! Outside the simulation nobody seeds it and each thread's generator starts from the OS's
//! entropy, exactly like openraft's own `TokioRuntime`.

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend, TokioInstant};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static THREAD_RNG: RefCell<StdRng> = RefCell::new(StdRng::from_entropy());
    /// Set by the simulation: Raft's tasks that panic are caught and reported here instead.
    static CAUGHT_PANICS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// From now on, on this thread, a Raft task that panics is stopped and its panic message kept
/// (see [`take_caught_panics`]) instead of reaching tokio. The simulation needs this: there a
/// panicking task would abort the whole process (turmoil shuts the host down from inside the
/// runtime), where it should be a finding like any other.
pub fn catch_task_panics() {
    CAUGHT_PANICS.with(|caught| caught.borrow_mut().get_or_insert_with(Vec::new).clear());
}

/// The panics caught on this thread since [`catch_task_panics`].
pub fn take_caught_panics() -> Vec<String> {
    CAUGHT_PANICS.with(|caught| {
        caught
            .borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

fn catching() -> bool {
    CAUGHT_PANICS.with(|caught| caught.borrow().is_some())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a task panicked".to_owned()
    }
}

/// Restarts this thread's generator from `seed`. The simulation runs every node on one thread
/// and calls this once per run, before any node starts.
pub fn seed_thread_rng(seed: u64) {
    THREAD_RNG.with(|rng| *rng.borrow_mut() = StdRng::seed_from_u64(seed));
}

/// A handle on this thread's generator (what openraft asks for through
/// [`AsyncRuntime::thread_rng`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRng;

impl RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        THREAD_RNG.with(|rng| rng.borrow_mut().next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        THREAD_RNG.with(|rng| rng.borrow_mut().next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        THREAD_RNG.with(|rng| rng.borrow_mut().fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        THREAD_RNG.with(|rng| rng.borrow_mut().try_fill_bytes(dest))
    }
}

/// tokio, as in [`openraft::TokioRuntime`], but with [`ThreadRng`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CairnRuntime;

impl AsyncRuntime for CairnRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        if !catching() {
            return tokio::task::spawn(future);
        }
        tokio::task::spawn(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(output) => output,
                Err(payload) => {
                    let message = panic_message(payload.as_ref());
                    CAUGHT_PANICS.with(|caught| {
                        if let Some(caught) = caught.borrow_mut().as_mut() {
                            caught.push(message);
                        }
                    });
                    // The task is stopped; whoever waits for it waits until the node restarts.
                    std::future::pending().await
                }
            }
        })
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn a_seed_replays_the_same_draws() {
        let draw = || -> Vec<u64> {
            let mut rng = CairnRuntime::thread_rng();
            (0..8).map(|_| rng.gen_range(150..300)).collect()
        };
        seed_thread_rng(7);
        let first = draw();
        seed_thread_rng(7);
        assert_eq!(first, draw());
        seed_thread_rng(8);
        assert_ne!(first, draw());
    }
}
