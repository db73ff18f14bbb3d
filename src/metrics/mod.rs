//! Metric definitions, once, in one registry; the [`http`] admin listener
//! serves them.
//!
//! Every family is prefixed `imapgate_`, has its unit in the name, and only
//! bounded labels (listener, backend, state, arrow, command, mechanism,
//! passdb, result, reason, direction): never a user, an address or a
//! mailbox.  Families are created at startup, and [`Metrics::prepare`]
//! adds the zero series a config implies, so `/metrics` lists them before
//! the first session.

pub mod http;

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::{Config, TlsMode};
use crate::session::rules;

pub struct Metrics {
    pub registry: Registry,
    /// Connections accepted, by listener.
    pub connections_accepted: IntCounterVec,
    /// Connections turned away before the greeting, by listener and reason.
    pub connections_rejected: IntCounterVec,
    /// Live sessions by diagram state.
    pub sessions: IntGaugeVec,
    /// State transitions by diagram arrow (1–7).
    pub transitions: IntCounterVec,
    /// Client commands by command name and state.
    pub commands: IntCounterVec,
    /// BAD answers the gateway gave itself, by reason.
    pub bad_commands: IntCounterVec,
    /// Login attempts at the edge by mechanism, passdb and result.
    pub auth_attempts: IntCounterVec,
    /// Time to decide a login at the edge (passdb lookup).
    pub auth_duration: Histogram,
    /// Auth cache lookups by result (`hit`, `miss`).
    pub auth_cache: IntCounterVec,
    /// Failure answers delayed on purpose, by cause (`ip`, `user`:
    /// brute-force protection; `passdb`: the passdb's own wait).
    pub auth_delays: IntCounterVec,
    /// Logins refused by brute-force protection, by scope (`ip`, `user`).
    pub auth_refusals: IntCounterVec,
    /// Logins refused because the hashing queue was full.
    pub auth_hash_rejected: IntCounter,
    /// Password hashes running or queued in the hashing pool.
    pub auth_hash_in_flight: IntGauge,
    /// Backend connections in use, by backend.
    pub backend_sessions: IntGaugeVec,
    /// Time to connect to a backend and read its greeting.
    pub backend_connect_duration: HistogramVec,
    /// Failed backend opens by backend and kind.
    pub backend_connect_failures: IntCounterVec,
    /// Health per backend: 1 up, 0 down (active checks and passive marking).
    pub backend_up: IntGaugeVec,
    /// 1 while a backend is drained (no new users), else 0.
    pub backend_draining: IntGaugeVec,
    /// Bytes relayed by direction (`client_to_backend`, `backend_to_client`).
    pub relayed_bytes: IntCounterVec,
    /// Sessions ended, by reason.
    pub sessions_closed: IntCounterVec,
    /// Config reloads by result.
    pub config_reloads: IntCounterVec,
    /// TLS handshakes by listener, result and protocol version.
    pub tls_handshakes: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub relayed_client: IntCounter,
    pub relayed_backend: IntCounter,
    // Series every session touches, looked up once here: a label lookup
    // hashes the label values and takes the family's lock, and a login
    // would otherwise do about fifteen of them.
    by_state: Vec<(&'static str, IntGauge)>,
    by_arrow: Vec<IntCounter>,
    by_close_reason: Vec<(&'static str, IntCounter)>,
    /// `imapgate_auth_cache_total`: (hit, miss).
    cache_lookups: (IntCounter, IntCounter),
}

/// The series of a known label, if it was looked up in advance.
fn known<'a, T>(series: &'a [(&'static str, T)], label: &str) -> Option<&'a T> {
    series
        .iter()
        .find(|(l, _)| std::ptr::eq(*l, label) || *l == label)
        .map(|(_, t)| t)
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics (created on first use).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

/// Latency buckets from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "imapgate",
            );
            registry
                .register(Box::new(pc))
                .expect("process collector registered once");
        }
        let r = &registry;
        let auth_duration = Histogram::with_opts(
            HistogramOpts::new(
                "imapgate_auth_duration_seconds",
                "Time to decide a login at the edge.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric definition");
        r.register(Box::new(auth_duration.clone()))
            .expect("metric registered once");
        let backend_connect_duration = HistogramVec::new(
            HistogramOpts::new(
                "imapgate_backend_connect_duration_seconds",
                "Time to connect to a backend and read its greeting.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["backend"],
        )
        .expect("valid metric definition");
        r.register(Box::new(backend_connect_duration.clone()))
            .expect("metric registered once");
        let relayed_bytes = counter(
            r,
            "imapgate_relayed_bytes_total",
            "Bytes relayed after login, by direction.",
            &["direction"],
        );
        let sessions = gauge(
            r,
            "imapgate_sessions",
            "Live sessions by state of the IMAP state diagram.",
            &["state"],
        );
        let transitions = counter(
            r,
            "imapgate_state_transitions_total",
            "State transitions by arrow of RFC 3501 §3.",
            &["arrow"],
        );
        let auth_cache = counter(
            r,
            "imapgate_auth_cache_total",
            "Auth cache lookups by result.",
            &["result"],
        );
        let sessions_closed = counter(
            r,
            "imapgate_sessions_closed_total",
            "Sessions ended, by reason.",
            &["reason"],
        );
        // Series every session touches, looked up once (see the fields).
        let by_state = [
            "not_authenticated",
            "authenticated",
            "selected",
            "idle",
            "logout",
        ]
        .map(|state| (state, sessions.with_label_values(&[state])))
        .to_vec();
        // Arrows 1 to 7 (RFC 3501 §3's diagram), at index arrow - 1.
        let by_arrow = (1..=7u8)
            .map(|arrow| transitions.with_label_values(&[arrow_label(arrow)]))
            .collect();
        let by_close_reason = [
            "client_closed",
            "logout",
            "timeout",
            "kicked",
            "backend_lost",
            "login_timeout",
            "io_error",
            "auth_failed",
        ]
        .map(|reason| (reason, sessions_closed.with_label_values(&[reason])))
        .to_vec();
        let cache_lookups = (
            auth_cache.with_label_values(&["hit"]),
            auth_cache.with_label_values(&["miss"]),
        );
        let m = Metrics {
            connections_accepted: counter(
                r,
                "imapgate_connections_accepted_total",
                "Client connections accepted.",
                &["listener"],
            ),
            connections_rejected: counter(
                r,
                "imapgate_connections_rejected_total",
                "Client connections turned away before the greeting.",
                &["listener", "reason"],
            ),
            sessions,
            transitions,
            commands: counter(
                r,
                "imapgate_commands_total",
                "Client commands by command and state.",
                &["command", "state"],
            ),
            bad_commands: counter(
                r,
                "imapgate_bad_commands_total",
                "BAD answers given by the gateway, by reason.",
                &["reason"],
            ),
            auth_attempts: counter(
                r,
                "imapgate_auth_attempts_total",
                "Login attempts at the edge by mechanism, passdb and result.",
                &["mechanism", "passdb", "result"],
            ),
            auth_duration,
            auth_cache,
            auth_delays: counter(
                r,
                "imapgate_auth_delays_total",
                "Failed logins answered after a deliberate delay, by cause.",
                &["scope"],
            ),
            auth_refusals: counter(
                r,
                "imapgate_auth_refusals_total",
                "Logins refused by brute-force protection, by scope.",
                &["scope"],
            ),
            auth_hash_rejected: {
                let c = IntCounter::new(
                    "imapgate_auth_hash_rejected_total",
                    "Logins refused because the password hashing queue was full.",
                )
                .expect("valid metric definition");
                r.register(Box::new(c.clone()))
                    .expect("metric registered once");
                c
            },
            auth_hash_in_flight: {
                let g = IntGauge::new(
                    "imapgate_auth_hash_in_flight",
                    "Password hashes running or queued.",
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            backend_sessions: gauge(
                r,
                "imapgate_backend_sessions",
                "Backend connections in use.",
                &["backend"],
            ),
            backend_connect_duration,
            backend_connect_failures: counter(
                r,
                "imapgate_backend_connect_failures_total",
                "Failed backend connects or logins, by backend and kind.",
                &["backend", "kind"],
            ),
            backend_up: gauge(
                r,
                "imapgate_backend_up",
                "Backend health: 1 up, 0 down.",
                &["backend"],
            ),
            backend_draining: gauge(
                r,
                "imapgate_backend_draining",
                "1 while the backend is drained (no new users routed there).",
                &["backend"],
            ),
            relayed_client: relayed_bytes.with_label_values(&["client_to_backend"]),
            relayed_backend: relayed_bytes.with_label_values(&["backend_to_client"]),
            relayed_bytes,
            sessions_closed,
            config_reloads: counter(
                r,
                "imapgate_config_reloads_total",
                "Config reloads by result.",
                &["result"],
            ),
            tls_handshakes: counter(
                r,
                "imapgate_tls_handshakes_total",
                "TLS handshakes by listener, result and protocol version.",
                &["listener", "result", "version"],
            ),
            build_info: gauge(
                r,
                "imapgate_build_info",
                "Build information; always 1.",
                &["version"],
            ),
            registry,
            by_state,
            by_arrow,
            by_close_reason,
            cache_lookups,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for result in ["ok", "failed", "unavailable"] {
            m.config_reloads.with_label_values(&[result]);
        }
        for scope in ["ip", "user", "passdb"] {
            m.auth_delays.with_label_values(&[scope]);
        }
        for scope in ["ip", "user"] {
            m.auth_refusals.with_label_values(&[scope]);
        }
        m
    }

    /// Create the zero-valued series a config implies (per listener and
    /// backend), so rates work from the first scrape and every family a
    /// dashboard uses is listed before the first session.  Called at
    /// startup and after each reload; series of removed names stay until
    /// restart (their counters must not go backwards).
    pub fn prepare(&self, config: &Config) {
        for l in &config.listeners {
            self.connections_accepted.with_label_values(&[&l.name]);
            self.connections_rejected
                .with_label_values(&[&l.name, "max_connections"]);
            if l.tls != TlsMode::None {
                for version in ["tls1.2", "tls1.3"] {
                    self.tls_handshakes
                        .with_label_values(&[&l.name, "ok", version]);
                }
            }
        }
        for b in &config.backends {
            self.backend_sessions.with_label_values(&[&b.name]);
            self.backend_connect_duration.with_label_values(&[&b.name]);
            for kind in ["connect", "timeout"] {
                self.backend_connect_failures
                    .with_label_values(&[&b.name, kind]);
            }
        }
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Count a client command; unknown names share the label `other`.
    pub fn command(&self, name: &str, state: &'static str) {
        self.commands
            .with_label_values(&[rules::metric_name(name), state])
            .inc();
    }

    pub fn arrow(&self, number: u8) {
        self.transition_counter(number).inc();
    }

    /// The counter of one arrow of the state diagram.
    pub fn transition(&self, number: u8) -> prometheus::IntCounter {
        self.transition_counter(number).clone()
    }

    fn transition_counter(&self, number: u8) -> &IntCounter {
        &self.by_arrow[usize::from(number.clamp(1, 7) - 1)]
    }

    /// `imapgate_sessions{state}`.
    pub fn sessions_in(&self, state: &str) -> IntGauge {
        match known(&self.by_state, state) {
            Some(g) => g.clone(),
            None => self.sessions.with_label_values(&[state]),
        }
    }

    /// Count a session's end in `imapgate_sessions_closed_total{reason}`.
    pub fn session_closed(&self, reason: &str) {
        match known(&self.by_close_reason, reason) {
            Some(c) => c.inc(),
            None => self.sessions_closed.with_label_values(&[reason]).inc(),
        }
    }

    /// Count an auth cache lookup (`hit` or `miss`).
    pub fn auth_cache_lookup(&self, hit: bool) {
        let (hits, misses) = &self.cache_lookups;
        if hit { hits } else { misses }.inc();
    }
}

fn arrow_label(number: u8) -> &'static str {
    ["0", "1", "2", "3", "4", "5", "6", "7"][usize::from(number.min(7))]
}

/// `imapgate_commands_total{command,state}` for one session, remembering
/// the last series used: a session repeats the same command in the same
/// state (NOOP, FETCH, IDLE…), and a label lookup hashes both strings and
/// takes the family's lock on every command.
#[derive(Default)]
pub struct CommandCounter {
    last: Option<(&'static str, &'static str, prometheus::IntCounter)>,
}

impl CommandCounter {
    pub fn inc(&mut self, command: &'static str, state: &'static str) {
        match &self.last {
            Some((c, s, counter)) if std::ptr::eq(*c, command) && std::ptr::eq(*s, state) => {
                counter.inc()
            }
            _ => {
                let counter = get().commands.with_label_values(&[command, state]);
                counter.inc();
                self.last = Some((command, state, counter));
            }
        }
    }
}

/// Tracks one session's contribution to `imapgate_sessions{state}`: moves
/// it when the state changes and removes it on drop.
pub struct StateGauge {
    current: &'static str,
}

impl StateGauge {
    pub fn new(state: &'static str) -> StateGauge {
        get().sessions_in(state).inc();
        StateGauge { current: state }
    }

    pub fn set(&mut self, state: &'static str) {
        if !std::ptr::eq(state, self.current) && state != self.current {
            let m = get();
            m.sessions_in(self.current).dec();
            m.sessions_in(state).inc();
            self.current = state;
        }
    }
}

impl Drop for StateGauge {
    fn drop(&mut self) {
        get().sessions_in(self.current).dec();
    }
}

/// Counts one backend connection in `imapgate_backend_sessions`.
#[derive(Debug)]
pub struct BackendGauge(IntGauge);

impl BackendGauge {
    pub fn new(backend: &str) -> BackendGauge {
        let g = get().backend_sessions.with_label_values(&[backend]);
        g.inc();
        BackendGauge(g)
    }
}

impl Drop for BackendGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
