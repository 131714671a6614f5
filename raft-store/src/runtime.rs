//! Cairn's openraft runtime: openraft's tokio runtime (the `openraft-rt-tokio` crate), with
//! the randomness (election timeouts, tick jitter) drawn from a per-thread generator that the
//! simulation seeds, so a seed replays a run exactly, and with Raft's task panics catchable.
//!
//! Outside the simulation nobody seeds it and each thread's generator starts from the OS's
//! entropy, like openraft's own `TokioRuntime`.

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use openraft::{AsyncRuntime, OptionalSend};
use openraft_rt_tokio::{TokioInstant, TokioRuntime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static THREAD_RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
    /// Set by the simulation: Raft's tasks that panic are caught and reported here instead.
    static CAUGHT_PANICS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// From now on, on this thread, a Raft task that panics is stopped and its panic message kept
/// (see [`take_caught_panics`]) instead of reaching tokio; whoever joins the task hears it
/// panicked. The simulation needs this: there a panicking task would abort the whole process
/// (turmoil shuts the host down from inside the runtime), where it should be a finding like
/// any other.
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
    THREAD_RNG.with(|rng| *rng.borrow_mut() = SmallRng::seed_from_u64(seed));
}

/// A random (version 4) UUID from this thread's generator: ids the node makes itself (a
/// consumer group's checkpoints and parks) follow from the seed in the simulation, and are
/// random in production.
pub fn random_uuid() -> uuid::Uuid {
    let (high, low) = THREAD_RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        (rng.next_u64(), rng.next_u64())
    });
    let bytes = (u128::from(high) << 64 | u128::from(low)).to_be_bytes();
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A generator for one draw of openraft's (what it asks for through
/// [`AsyncRuntime::thread_rng`]): seeded from this thread's generator, so the sequence of draws
/// on a thread follows from its seed.
fn draw_rng() -> SmallRng {
    THREAD_RNG.with(|rng| SmallRng::seed_from_u64(rng.borrow_mut().next_u64()))
}

/// A task's end other than its output: tokio's, or a panic [`catch_task_panics`] caught.
#[derive(Debug)]
pub enum JoinError {
    Tokio(tokio::task::JoinError),
    Caught(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Tokio(e) => write!(f, "{e}"),
            JoinError::Caught(message) => write!(f, "task panicked: {message}"),
        }
    }
}

/// A tokio join handle whose task may have had its panic caught.
pub struct JoinHandle<T>(tokio::task::JoinHandle<Result<T, String>>);

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(message)) => Err(JoinError::Caught(message)),
            Err(e) => Err(JoinError::Tokio(e)),
        })
    }
}

/// openraft's tokio runtime, but with draws from [`seed_thread_rng`]'s generator and the
/// panic catching of [`catch_task_panics`]. Everything else is `TokioRuntime`'s.
#[derive(Debug)]
pub struct CairnRuntime {
    tokio: TokioRuntime,
}

impl AsyncRuntime for CairnRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        if !catching() {
            return JoinHandle(TokioRuntime::spawn(future.map(Ok)));
        }
        JoinHandle(TokioRuntime::spawn(async move {
            AssertUnwindSafe(future)
                .catch_unwind()
                .await
                .map_err(|payload| {
                    let message = panic_message(payload.as_ref());
                    CAUGHT_PANICS.with(|caught| {
                        if let Some(caught) = caught.borrow_mut().as_mut() {
                            caught.push(message.clone());
                        }
                    });
                    // Whoever waits for the task hears it panicked (openraft then reports its
                    // core stopped), as a task outside the simulation would through tokio.
                    message
                })
        }))
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        match join_error {
            JoinError::Tokio(e) => e.is_panic(),
            JoinError::Caught(_) => true,
        }
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        draw_rng()
    }

    fn new(threads: usize) -> Self {
        CairnRuntime {
            tokio: TokioRuntime::new(threads),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.tokio.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;

    #[test]
    fn a_seed_replays_the_same_draws() {
        let draw = || -> Vec<u64> {
            let mut rng = CairnRuntime::thread_rng();
            (0..8).map(|_| rng.random_range(150..300)).collect()
        };
        seed_thread_rng(7);
        let first = draw();
        seed_thread_rng(7);
        assert_eq!(first, draw());
        seed_thread_rng(8);
        assert_ne!(first, draw());
    }
}
