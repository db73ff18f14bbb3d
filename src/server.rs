//! The process: start the listeners, the admin HTTP listener and the
//! health checks; reload on SIGHUP; drain and stop on SIGTERM/SIGINT.
//! Accepting and admitting connections is [`crate::listeners`]'s job.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::limits::Admission;
use crate::listeners::{Listeners, SHUTDOWN_REASON};
use crate::relay;
use crate::runtime::Current;

/// The running listener set, for reloads (SIGHUP and the admin API reach
/// it through [`reload`]).  Its lock also keeps two reloads apart.
static LISTENERS: Mutex<Option<Listeners>> = Mutex::new(None);

/// Bind every listener, then serve until SIGINT or SIGTERM.
pub async fn run(current: Arc<Current>) -> anyhow::Result<()> {
    let runtime = current.load();
    let metrics = crate::metrics::get();
    metrics.prepare(&runtime.config);
    let admin_state = Arc::new(crate::metrics::http::Admin::new(current.clone()));
    if let Some(admin) = &runtime.config.admin {
        let listener = TcpListener::bind(admin.address)
            .await
            .with_context(|| format!("admin: cannot bind {}", admin.address))?;
        tokio::spawn(crate::metrics::http::serve(listener, admin_state.clone()));
    }
    tokio::spawn(health_checks(current.clone()));
    let admission = Arc::new(Admission::default());
    {
        let workers = crate::workers::Workers::per_core()?;
        let mut listeners = Listeners::new(
            current.clone(),
            admission.clone(),
            workers.handles().to_vec(),
        );
        let bound = listeners.bind_new(&runtime.config)?;
        listeners.commit(bound, &runtime.config);
        *lock_listeners() = Some(listeners);
    }
    admin_state.listeners_bound.store(true, Ordering::Relaxed);
    shutdown_signal(current.clone()).await;
    let grace = Duration::from_secs(current.load().config.limits.shutdown_grace_secs);
    info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections; draining sessions"
    );
    admin_state.listeners_bound.store(false, Ordering::Relaxed);
    // Stop accepting; each loop first answers what waits in its queue.
    let listeners = lock_listeners().take();
    if let Some(mut listeners) = listeners {
        listeners.shut_down().await;
    }
    drain(grace, &admission).await;
    Ok(())
}

/// The listener set's lock; a panic elsewhere while holding it leaves the
/// set usable (it has no invariant a half-done update could break).
fn lock_listeners() -> std::sync::MutexGuard<'static, Option<Listeners>> {
    LISTENERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Let live sessions finish: each is asked to end at its next quiet point
/// (after the command in flight), then, when `grace` runs out, the rest are
/// closed.  A second SIGTERM/SIGINT exits at once.
async fn drain(grace: Duration, admission: &Admission) {
    let registry = crate::registry::get();
    // Also kicks sessions that register from now on: a connection accepted
    // just before the listeners stopped may not have started yet.
    registry.close_all(SHUTDOWN_REASON);
    let deadline = tokio::time::Instant::now() + grace;
    let again = second_signal();
    tokio::pin!(again);
    loop {
        // Permits are held from admission to the session task's end, so
        // this also waits for sessions that have not registered yet.
        if registry.is_empty() && admission.live() == 0 {
            info!("all sessions ended; exiting");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = &mut again => {
                warn!(sessions = registry.len(), "second signal: exiting now");
                std::process::exit(1);
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    warn!(
        sessions = registry.len(),
        "grace period over; closing the remaining sessions"
    );
    for s in registry.list() {
        s.close_now(SHUTDOWN_REASON);
    }
    // Give them a moment to write their BYE.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while !registry.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn second_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(_) => std::future::pending().await,
    }
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
                let _ = reload(&current);
            }
        }
    }
}

/// Reload the config file (SIGHUP, `POST /api/reload`): the new runtime
/// serves new sessions; live sessions keep the snapshot they started with.
/// A bad file changes nothing; its error is logged, counted and returned.
pub fn reload(current: &Current) -> Result<(), String> {
    let result = reload_now(current);
    let label = if result.is_ok() { "ok" } else { "failed" };
    let metrics = crate::metrics::get();
    metrics.config_reloads.with_label_values(&[label]).inc();
    match result {
        Ok(()) => {
            metrics.prepare(&current.load().config);
            info!("config reloaded");
            Ok(())
        }
        Err(e) => {
            let e = format!("{e:#}");
            error!(error = %e, "config reload failed; keeping the running config");
            Err(e)
        }
    }
}

/// Read, validate, build, bind the new listeners' addresses; only when all
/// of that worked, swap the runtime in and start/stop listeners to match.
fn reload_now(current: &Current) -> anyhow::Result<()> {
    let mut listeners = lock_listeners();
    let runtime = current.prepare()?;
    match listeners.as_mut() {
        Some(set) => {
            let bound = set.bind_new(&runtime.config)?;
            let config = current.install(runtime);
            set.commit(bound, &config.config);
        }
        // Not serving (yet, or any more): nothing to bind.
        None => {
            current.install(runtime);
        }
    }
    Ok(())
}

/// Active backend health checks (`[health]`), with the backends and
/// settings of the current config each round.
async fn health_checks(current: Arc<Current>) {
    use crate::route::health::{run_checks, Round, Thresholds};
    run_checks(
        || {
            let runtime = current.load();
            let h = &runtime.config.health;
            let interval = h.interval();
            Round {
                health: runtime.router.health().clone(),
                backends: runtime.router.backends().to_vec(),
                interval,
                // A check must finish before the next round starts.
                timeout: runtime
                    .config
                    .limits
                    .backend_connect_timeout()
                    .min(interval.unwrap_or(Duration::MAX)),
                thresholds: Thresholds {
                    fall: h.fall,
                    rise: h.rise,
                },
            }
        },
        |backend, timeout| {
            let tls = current.load().tls.backend(&backend.name, &backend.host);
            relay::backend::probe(backend, tls, timeout)
        },
    )
    .await
}
