//! The client-facing listeners: one accept loop per configured address,
//! admission before anything else, then a session task per connection
//! (see [`crate::relay`]).
//!
//! A connection is accepted as a plain socket and handed to the runtime's
//! reactor only once admitted: a refusal is one write and a close, with no
//! reactor registration to make and undo (two system calls of the five a
//! refusal would otherwise cost under a flood).
//!
//! The set follows the config: on every reload a new address is bound (a
//! failure rejects the reload, nothing changes), an address no longer
//! configured stops accepting (its accept queue is answered `* BYE`; its
//! sessions go on), and a kept address takes its new settings (TLS,
//! mechanisms, PROXY protocol, name) from its next connection on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus::IntCounter;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn, Instrument};

use crate::config::{Config, ProxyProtocol};
use crate::limits::{proxy_protocol, Admission, Refusal};
use crate::relay::{self, Connection};
use crate::runtime::{Current, Runtime};
use crate::session::{Arrow, Session};

/// The BYE text for connections turned away at shutdown.
pub const SHUTDOWN_REASON: &str = "Server shutting down; please reconnect";
/// ... and at a listener removed by a reload.
const CLOSING_REASON: &str = "This listener is closing; please reconnect elsewhere";

/// Why an accept loop is told to stop (the value of its watch channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// Removed from the config by a reload.
    Removed,
    /// The process is shutting down.
    Shutdown,
}

/// What every accept loop shares.
#[derive(Clone)]
struct Shared {
    current: Arc<Current>,
    admission: Arc<Admission>,
    next_id: Arc<AtomicU64>,
}

/// One address's accept loops, one per worker, stopped together.
struct AcceptLoop {
    stop: watch::Sender<Stop>,
    tasks: Vec<JoinHandle<()>>,
}

/// The bound listeners, by address.
pub struct Listeners {
    shared: Shared,
    loops: HashMap<SocketAddr, AcceptLoop>,
    /// The runtimes that accept and serve sessions (see `crate::workers`).
    workers: Vec<Handle>,
}

/// Sockets bound for a config, not serving yet: [`Listeners::bind_new`]
/// then [`Listeners::commit`], so that a reload either takes effect whole
/// or not at all.
pub struct Bound(Vec<(SocketAddr, std::net::TcpListener)>);

impl Listeners {
    /// Accept loops (and so sessions) will run on `workers`.
    pub fn new(
        current: Arc<Current>,
        admission: Arc<Admission>,
        workers: Vec<Handle>,
    ) -> Listeners {
        Listeners {
            shared: Shared {
                current,
                admission,
                next_id: Arc::new(AtomicU64::new(1)),
            },
            loops: HashMap::new(),
            workers,
        }
    }

    /// Bind every address of `config` that is not bound yet.  On error
    /// nothing is kept (the sockets bound so far close).
    pub fn bind_new(&self, config: &Config) -> anyhow::Result<Bound> {
        let mut bound = Vec::new();
        for l in &config.listeners {
            if self.loops.contains_key(&l.address) {
                continue;
            }
            let socket = std::net::TcpListener::bind(l.address)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .with_context(|| format!("listener {:?}: cannot bind {}", l.name, l.address))?;
            bound.push((l.address, socket));
        }
        Ok(Bound(bound))
    }

    /// Serve the freshly bound sockets (an accept loop on each worker) and
    /// stop the loops of addresses `config` no longer has.
    pub fn commit(&mut self, bound: Bound, config: &Config) {
        for (address, socket) in bound.0 {
            let name = config
                .listeners
                .iter()
                .find(|l| l.address == address)
                .map_or("", |l| l.name.as_str());
            info!(listener = %name, address = %address, "listening");
            let (stop, stopped) = watch::channel(Stop::Running);
            let mut tasks = Vec::new();
            for worker in &self.workers {
                // Every worker watches the same listening socket; whichever
                // is free takes the next connection.
                match socket.try_clone() {
                    Ok(socket) => tasks.push(worker.spawn(accept_loop(
                        socket,
                        address,
                        self.shared.clone(),
                        stopped.clone(),
                    ))),
                    Err(e) => {
                        warn!(listener = %name, address = %address, error = %e, "cannot share the listening socket with a worker")
                    }
                }
            }
            self.loops.insert(address, AcceptLoop { stop, tasks });
        }
        self.loops.retain(|address, l| {
            let keep = config.listeners.iter().any(|c| c.address == *address);
            if !keep {
                info!(address = %address, "listener removed; no longer accepting there");
                let _ = l.stop.send(Stop::Removed);
            }
            keep
        });
    }

    /// Stop every accept loop (each answers its queue first); wait for them.
    pub async fn shut_down(&mut self) {
        let loops: Vec<AcceptLoop> = self.loops.drain().map(|(_, l)| l).collect();
        for l in &loops {
            let _ = l.stop.send(Stop::Shutdown);
        }
        for l in loops {
            for task in l.tasks {
                let _ = task.await;
            }
        }
    }
}

/// Connections accepted before the accept loop lets other tasks run.
const ACCEPT_BATCH: u32 = 8;

/// Accept without handing the socket to the runtime yet: a refused
/// connection is only written to and closed, and registering it with the
/// reactor (and removing it again) would double the system calls a
/// refusal costs under a flood.
async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        // WouldBlock clears the readiness and waits again.
        if let Ok(result) = ready.try_io(|l| l.get_ref().accept()) {
            return result;
        }
    }
}

async fn accept_loop(
    socket: std::net::TcpListener,
    address: SocketAddr,
    shared: Shared,
    mut stop: watch::Receiver<Stop>,
) {
    // `AsyncFd::new` is deprecated because an arbitrary `T` may change or
    // close its fd behind the reactor's back (tokio#8587); a
    // `std::net::TcpListener` owns its fd for its whole life, which is
    // exactly what the `unsafe` replacement asks the caller to promise (and
    // this crate forbids `unsafe`).
    #[allow(deprecated)]
    let registered = AsyncFd::new(socket);
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            error!(address = %address, error = %e, "cannot watch the listening socket; not accepting there");
            return;
        }
    };
    let Shared {
        current,
        admission,
        next_id,
    } = shared;
    // The listener's name as of the last connection (a reload may rename
    // it); kept to label connections without an allocation each.
    let mut name: Arc<str> = Arc::from(
        current
            .load()
            .config
            .listeners
            .iter()
            .find(|l| l.address == address)
            .map_or("", |l| l.name.as_str()),
    );
    let mut counted = Arc::new(Counted::new(&name));
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
            a = accept(&listener) => a,
            _ = stop.changed() => {
                turn_away_queue(listener.into_inner(), &name, *stop.borrow());
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
        let Some(config) = runtime
            .config
            .listeners
            .iter()
            .find(|l| l.address == address)
        else {
            // Removed by a reload that has not stopped this loop yet.
            turn_away(
                &stream,
                &Session::bye_greeting(Some("UNAVAILABLE"), CLOSING_REASON),
            );
            continue;
        };
        if *name != *config.name {
            name = Arc::from(config.name.as_str());
            counted = Arc::new(Counted::new(&name));
        }
        let accepted = Accepted {
            name: name.clone(),
            admission: admission.clone(),
            next_id: next_id.clone(),
            counted: counted.clone(),
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
                let Some(stream) = into_runtime(stream) else {
                    return;
                };
                let header = read_proxy_header(&stream, timeout).await;
                // Back to a plain socket for admission (which may refuse).
                let Ok(stream) = stream.into_std() else {
                    return;
                };
                match header {
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

/// Stopping: greet whatever already waits in the accept queue with
/// `* BYE` rather than leave it to a reset.  Accepts on the socket itself:
/// the runtime's readiness flag may not have caught up with what the
/// kernel has queued (e.g. right after the process resumed).
fn turn_away_queue(listener: std::net::TcpListener, name: &str, why: Stop) {
    let reason = match why {
        Stop::Shutdown => SHUTDOWN_REASON,
        Stop::Removed | Stop::Running => CLOSING_REASON,
    };
    let bye = Session::bye_greeting(Some("UNAVAILABLE"), reason);
    let mut n = 0u32;
    // Non-blocking: WouldBlock once the queue is empty.  An accepted socket
    // is blocking, but a fresh one's send buffer takes the BYE at once.
    while let Ok((stream, _)) = listener.accept() {
        turn_away(&stream, &bye);
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
    counted: Arc<Counted>,
}

/// What a listener counts and says per connection, looked up and formatted
/// once per listener name: its accepted-connections counter, and for each
/// refusal reason the `* BYE` greeting and the rejection counter, plus the
/// arrow (3) counter.  A flood is answered tens of thousands of times a
/// second; label lookups and formatting would add up.
struct Counted {
    accepted: IntCounter,
    by_reason: Vec<(IntCounter, Vec<u8>)>,
    arrow: IntCounter,
}

impl Counted {
    fn new(listener: &str) -> Counted {
        let metrics = crate::metrics::get();
        Counted {
            accepted: metrics.connections_accepted.with_label_values(&[listener]),
            by_reason: Refusal::ALL
                .iter()
                .map(|r| {
                    (
                        metrics
                            .connections_rejected
                            .with_label_values(&[listener, r.label()]),
                        Session::bye_greeting(Some("UNAVAILABLE"), r.text()),
                    )
                })
                .collect(),
            arrow: metrics.transition(Arrow::ByeGreeting.number()),
        }
    }
}

impl Accepted {
    /// Arrow (3): count the refusal and greet `* BYE`.
    fn refuse(&self, stream: &std::net::TcpStream, refusal: Refusal) {
        let (counter, bye) = &self.counted.by_reason[refusal as usize];
        counter.inc();
        self.counted.arrow.inc();
        turn_away(stream, bye);
    }

    /// Admission for `client` (the socket's peer, or the address a PROXY
    /// header gave), then a session task.
    fn admit_and_serve(
        self,
        stream: std::net::TcpStream,
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
        self.counted.accepted.inc();
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
                if let Some(stream) = into_runtime(stream) {
                    relay::serve(stream, conn, runtime).await;
                }
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
/// buffer is empty, so one write always takes the greeting at once.
fn turn_away(mut stream: &std::net::TcpStream, bye: &[u8]) {
    use std::io::Write as _;
    let _ = stream.write(bye);
}

/// An accepted socket handed to the runtime (non-blocking, registered).
fn into_runtime(stream: std::net::TcpStream) -> Option<TcpStream> {
    stream.set_nonblocking(true).ok()?;
    TcpStream::from_std(stream).ok()
}
