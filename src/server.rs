//! Listeners: bind, accept, admit or turn away, and hand each connection
//! to the [relay](crate::relay).  Also the process's signal handling.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info, warn, Instrument};

use crate::config::ProxyProtocol;
use crate::limits::{proxy_protocol, Admission, Refusal};
use crate::relay::{self, Connection};
use crate::runtime::{Current, Runtime};
use crate::session::{Arrow, Session};

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
    let next_id = Arc::new(AtomicU64::new(1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
            admission.clone(),
            next_id.clone(),
            stop_rx.clone(),
        )));
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
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    drain(grace, &admission).await;
    Ok(())
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

const SHUTDOWN_REASON: &str = "Server shutting down; please reconnect";

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

/// Connections accepted before the accept loop lets other tasks run.
const ACCEPT_BATCH: u32 = 8;

async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    current: Arc<Current>,
    admission: Arc<Admission>,
    next_id: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut accepted_in_a_row = 0u32;
    loop {
        // Under a flood this loop never has to wait, and tokio lets a task
        // run 128 operations before it must yield: sessions sharing the
        // worker would wait behind that many refusals.  Step aside sooner.
        accepted_in_a_row += 1;
        if accepted_in_a_row % ACCEPT_BATCH == 0 {
            tokio::task::yield_now().await;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => {
                turn_away_queue(listener, &name);
                return;
            }
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let runtime = current.load();
        let Some(config) = runtime.config.listeners.iter().find(|l| *l.name == *name) else {
            // Removed by a reload; restart-only settings keep serving.
            continue;
        };
        let accepted = Accepted {
            name: name.clone(),
            admission: admission.clone(),
            next_id: next_id.clone(),
        };
        if config.proxy_protocol == ProxyProtocol::Required {
            // PROXY protocol: only from trusted proxies (§5 of the spec);
            // the client address it carries replaces the socket's for
            // admission, policy, logs and forwarding.
            if !config
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&peer.ip()))
            {
                accepted.refuse(&stream, Refusal::ProxyProtocol);
                continue;
            }
            let timeout = Duration::from_secs(config.proxy_protocol_timeout_secs);
            tokio::spawn(async move {
                match read_proxy_header(&stream, timeout).await {
                    Ok(Some((client, local))) => {
                        accepted.admit_and_serve(stream, client, Some(local), runtime)
                    }
                    // LOCAL / UNKNOWN: the proxy's own health check.
                    Ok(None) => accepted.admit_and_serve(stream, peer, None, runtime),
                    Err(why) => {
                        debug!(listener = %accepted.name, peer = %peer, why, "PROXY protocol header refused");
                        accepted.refuse(&stream, Refusal::ProxyProtocol);
                    }
                }
            });
            continue;
        }
        accepted.admit_and_serve(stream, peer, None, runtime);
    }
}

/// Shutting down: greet whatever already waits in the accept queue with
/// `* BYE` rather than leave it to a reset.  Accepts on the socket itself:
/// the runtime's readiness flag may not have caught up with what the
/// kernel has queued (e.g. right after the process resumed).
fn turn_away_queue(listener: TcpListener, name: &str) {
    use std::io::Write as _;
    let Ok(listener) = listener.into_std() else {
        return;
    };
    let bye = Session::bye_greeting(Some("UNAVAILABLE"), SHUTDOWN_REASON);
    let mut n = 0u32;
    // Non-blocking: WouldBlock once the queue is empty.  An accepted socket
    // is blocking, but a fresh one's send buffer takes the BYE at once.
    while let Ok((mut stream, _)) = listener.accept() {
        let _ = stream.write(&bye);
        n += 1;
    }
    if n > 0 {
        info!(listener = %name, connections = n, "answered queued connections with BYE");
    }
}

/// What an accepted connection needs to be admitted and served.
struct Accepted {
    name: Arc<str>,
    admission: Arc<Admission>,
    next_id: Arc<AtomicU64>,
}

impl Accepted {
    /// Arrow (3): count the refusal and greet `* BYE`.
    fn refuse(&self, stream: &TcpStream, refusal: Refusal) {
        let metrics = crate::metrics::get();
        metrics
            .connections_rejected
            .with_label_values(&[&self.name, refusal.label()])
            .inc();
        metrics.arrow(Arrow::ByeGreeting.number());
        turn_away(stream, refusal);
    }

    /// Admission for `client` (the socket's peer, or the address a PROXY
    /// header gave), then a session task.
    fn admit_and_serve(
        self,
        stream: TcpStream,
        client: SocketAddr,
        local: Option<SocketAddr>,
        runtime: Arc<Runtime>,
    ) {
        let limits = &runtime.config.limits;
        let exempt = limits
            .exempt_networks
            .iter()
            .any(|n| n.contains(&client.ip()));
        let permit = match self.admission.admit(client.ip(), limits, exempt) {
            Ok(permit) => permit,
            Err(refusal) => return self.refuse(&stream, refusal),
        };
        crate::metrics::get()
            .connections_accepted
            .with_label_values(&[&self.name])
            .inc();
        let _ = stream.set_nodelay(true);
        let Some(local) = local.or_else(|| stream.local_addr().ok()) else {
            return;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Connection {
            id,
            peer: client,
            local,
            listener: self.name.clone(),
        };
        let span = tracing::info_span!(
            "session",
            id,
            peer = %client,
            listener = %self.name,
            // Recorded by the relay: TLS version once a handshake is done,
            // and the verified client certificate's names.
            tls = tracing::field::Empty,
            client_cert = tracing::field::Empty,
            user = tracing::field::Empty,
            backend = tracing::field::Empty
        );
        tokio::spawn(
            async move {
                relay::serve(stream, conn, runtime).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Read a PROXY protocol header without consuming anything after it
/// (peek until it is complete, then read exactly its length).  Returns the
/// (client, local) addresses it carries, `None` for LOCAL/UNKNOWN.
async fn read_proxy_header(
    stream: &TcpStream,
    timeout: Duration,
) -> Result<Option<(SocketAddr, SocketAddr)>, &'static str> {
    let work = async {
        let mut buf = [0u8; 2048 + 16];
        loop {
            stream.readable().await.map_err(|_| "connection error")?;
            let n = match stream.peek(&mut buf).await {
                Ok(0) => return Err("closed before the header"),
                Ok(n) => n,
                Err(_) => return Err("connection error"),
            };
            match proxy_protocol::parse(&buf[..n]) {
                Ok(Some(header)) => {
                    let mut left = header.len;
                    while left > 0 {
                        stream.readable().await.map_err(|_| "connection error")?;
                        match stream.try_read(&mut buf[..left]) {
                            Ok(0) => return Err("closed in the header"),
                            Ok(k) => left -= k,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return Err("connection error"),
                        }
                    }
                    return Ok(header.addresses);
                }
                Ok(None) if n == buf.len() => return Err("header too long"),
                // Incomplete: wait for more (peek returns what is queued).
                Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(proxy_protocol::ProxyError::Missing) => return Err("no PROXY header"),
                Err(proxy_protocol::ProxyError::Invalid(why)) => return Err(why),
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| "timed out waiting for the header")?
}

/// Arrow (3): say why and close, without a task: a fresh socket's send
/// buffer is empty, so one non-blocking write always fits the greeting.
fn turn_away(stream: &TcpStream, refusal: Refusal) {
    let bye = Session::bye_greeting(Some("UNAVAILABLE"), refusal.text());
    let _ = stream.try_write(&bye);
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
    let result = current.reload();
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
