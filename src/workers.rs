//! The session workers: one thread per core, each with a single-threaded
//! runtime of its own, like nginx's worker processes.
//!
//! Each worker accepts on every listener (the same socket, watched by each)
//! and runs the sessions it accepted from start to end.  Against tokio's
//! work-stealing runtime this saves the cross-thread wake-ups and shared
//! queues on every socket event: measured (scripts/bench, stub backend)
//! about 20 % less CPU per login and 5–15 % less per relayed command.
//! What it gives up is moving a busy session to an idle core;
//! new connections still balance, since a busy worker leaves the accept
//! queue to the others.
//!
//! Everything else (signals, reloads, the admin listener, health checks)
//! runs on the main thread's runtime.

use anyhow::Context as _;
use tokio::runtime::Handle;

/// The running workers, by their runtimes' handles.
pub struct Workers {
    handles: Vec<Handle>,
}

impl Workers {
    /// Start `n` workers (at least one).  They live as long as the process.
    pub fn start(n: usize) -> anyhow::Result<Workers> {
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a worker runtime")?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("imapgate-w{i}"))
                // Runs the tasks spawned through its handle; never returns.
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .context("starting a worker thread")?;
        }
        Ok(Workers { handles })
    }

    /// As many workers as the machine has cores.
    pub fn per_core() -> anyhow::Result<Workers> {
        Workers::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}
