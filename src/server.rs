//! Listeners: bind, accept, admit or turn away, and hand each connection
//! to the [relay](crate::relay).  Also the process's signal handling.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{error, info, warn, Instrument};

use crate::relay::{self, Connection};
use crate::runtime::Current;
use crate::session::{Arrow, Session};

/// Counts live connections; the guard gives the slot back on drop.
struct Slots {
    live: AtomicUsize,
}

struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slots {
    /// Take a slot if fewer than `max` are in use.
    fn try_take(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let prev = self.live.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.clone());
        (prev < max).then_some(slot)
    }
}

/// Bind every listener, then serve until SIGINT or SIGTERM.
pub async fn run(current: Arc<Current>) -> anyhow::Result<()> {
    let runtime = current.load();
    let metrics = crate::metrics::get();
    let readiness = Arc::new(crate::metrics::http::Readiness::default());
    if let Some(admin) = &runtime.config.admin {
        let listener = TcpListener::bind(admin.address)
            .await
            .with_context(|| format!("admin: cannot bind {}", admin.address))?;
        tokio::spawn(crate::metrics::http::serve(listener, readiness.clone()));
    }
    let slots = Arc::new(Slots {
        live: AtomicUsize::new(0),
    });
    let next_id = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for l in &runtime.config.listeners {
        let listener = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("listener {:?}: cannot bind {}", l.name, l.address))?;
        info!(listener = %l.name, address = %l.address, "listening");
        let name: Arc<str> = Arc::from(l.name.as_str());
        metrics.connections_accepted.with_label_values(&[&l.name]);
        tasks.push(tokio::spawn(accept_loop(
            listener,
            name,
            current.clone(),
            slots.clone(),
            next_id.clone(),
        )));
    }
    readiness.listeners_bound.store(true, Ordering::Relaxed);
    shutdown_signal(current.clone()).await;
    info!("shutting down");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    current: Arc<Current>,
    slots: Arc<Slots>,
    next_id: Arc<AtomicU64>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let runtime = current.load();
        let metrics = crate::metrics::get();
        let Some(slot) = slots.try_take(runtime.config.limits.max_connections) else {
            metrics
                .connections_rejected
                .with_label_values(&[&name, "max_connections"])
                .inc();
            metrics.arrow(Arrow::ByeGreeting.number());
            tokio::spawn(turn_away(stream));
            continue;
        };
        metrics
            .connections_accepted
            .with_label_values(&[&name])
            .inc();
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Connection {
            id,
            peer,
            local,
            listener: name.clone(),
        };
        let span = tracing::info_span!(
            "session",
            id,
            peer = %peer,
            listener = %name,
            user = tracing::field::Empty,
            backend = tracing::field::Empty
        );
        tokio::spawn(
            async move {
                relay::serve(stream, conn, runtime).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// Arrow (3): too many connections; say so and close.
async fn turn_away(mut stream: TcpStream) {
    let bye = Session::bye_greeting(Some("UNAVAILABLE"), "Too many connections; try again later");
    let _ = stream.write_all(&bye).await;
}

/// Wait for SIGTERM or SIGINT; reload the config on every SIGHUP meanwhile.
async fn shutdown_signal(current: Arc<Current>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(h)) => (t, h),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot install signal handlers");
            return std::future::pending::<()>().await;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                reload(&current);
            }
        }
    }
}

/// Reload the config file: the new runtime serves new sessions; live
/// sessions keep the snapshot they started with.  A bad file changes
/// nothing.
pub fn reload(current: &Current) -> bool {
    let result = current.reload();
    let label = if result.is_ok() { "ok" } else { "failed" };
    crate::metrics::get()
        .config_reloads
        .with_label_values(&[label])
        .inc();
    match result {
        Ok(()) => {
            info!("config reloaded");
            true
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), "config reload failed; keeping the running config");
            false
        }
    }
}
