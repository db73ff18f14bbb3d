//! The hashing pool: password hashes (argon2, bcrypt, SHA-crypt) run on
//! tokio's blocking threads, never on the async workers that relay
//! sessions, with at most `concurrency` at once and at most `queue`
//! waiting.  A login arriving when the queue is full is not queued: it
//! fails at once and the client gets `NO [UNAVAILABLE]` (RFC 5530), which
//! keeps a login flood from building an unbounded backlog of expensive work.
//!
//! Invariant: a slot (running or queued) is held until the hash finishes,
//! even if the waiting session goes away meanwhile (login timeout, client
//! gone): the CPU is busy until then, so the bound stays truthful.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("password hashing queue is full")]
    Full,
    #[error("password hashing failed (worker panicked)")]
    Panicked,
}

pub struct HashPool {
    permits: Arc<Semaphore>,
    /// Jobs running or queued.
    load: Arc<AtomicUsize>,
    limit: usize,
}

/// Gives a slot back when dropped (job done, or the waiter went away
/// before its job started).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::get().auth_hash_in_flight.dec();
    }
}

impl HashPool {
    pub fn new(concurrency: usize, queue: usize) -> HashPool {
        let concurrency = concurrency.max(1);
        HashPool {
            permits: Arc::new(Semaphore::new(concurrency)),
            load: Arc::new(AtomicUsize::new(0)),
            limit: concurrency + queue,
        }
    }

    /// Run `job` on a blocking thread once a permit is free.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let m = crate::metrics::get();
        if self.load.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.load.fetch_sub(1, Ordering::AcqRel);
            m.auth_hash_rejected.inc();
            return Err(PoolError::Full);
        }
        m.auth_hash_in_flight.inc();
        let slot = Slot(self.load.clone());
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let _held = (permit, slot);
            job()
        })
        .await
        .map_err(|_| PoolError::Panicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_refuses_at_once() {
        let pool = Arc::new(HashPool::new(1, 1));
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let running = {
            let (pool, gate) = (pool.clone(), gate.clone());
            tokio::spawn(async move {
                pool.run(move || {
                    let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(5));
                    1
                })
                .await
            })
        };
        // Let the first job take the permit, then queue a second.
        while pool.load.load(Ordering::Acquire) < 1 {
            tokio::task::yield_now().await;
        }
        let queued = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| 2).await })
        };
        while pool.load.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| 3).await, Err(PoolError::Full));
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(1));
        assert_eq!(queued.await.unwrap(), Ok(2));
        assert_eq!(pool.run(|| 4).await, Ok(4));
        assert_eq!(pool.load.load(Ordering::Acquire), 0);
    }
}
