//! Routing: which backend holds a user's mail.
//!
//! A passdb may name the backend itself (`host=`/`port=` extra fields);
//! otherwise the user goes to the backends in *rendezvous* (highest random
//! weight) order: each backend scores `weight / -ln(h)` where `h` is a
//! stable hash of (user, backend name) mapped into (0, 1).  The highest
//! score wins; the rest are the failover order.  Every gateway with the same
//! backend list computes the same order without talking to the others, and
//! removing a backend moves only the users it had.
//!
//! [`health`] reorders that list: backends marked down go last (tried only
//! when every healthy one failed), drained backends are left out.

pub mod health;

use std::sync::Arc;

use crate::auth::UserInfo;
use crate::config::{split_host_port, BackendLogin, Config, MasterMethod};
use crate::imap::Secret;
use health::Health;

/// A configured backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub forward_client_id: bool,
    /// Also pass on the client's own ID fields (see the config key).
    pub forward_client_id_fields: bool,
    /// Log in with the client's credentials or as the master user.
    pub login: BackendLogin,
    /// Master credentials, for `login = "master"` and PREAUTH sessions.
    pub master: Option<MasterCredentials>,
    /// Start each connection with a PROXY v2 header carrying the client's
    /// addresses (Dovecot: `haproxy = yes` on the listener).
    pub send_proxy_protocol: bool,
    /// Sessions allowed at once (0 = unlimited); see `is_full`.
    pub max_connections: u32,
}

impl Backend {
    /// Whether the backend already relays `max_connections` sessions
    /// (counted by `imapgate_backend_sessions`; logins in flight are not,
    /// so the cap is soft by at most the concurrent logins).
    pub fn is_full(&self) -> bool {
        self.max_connections > 0
            && crate::metrics::get()
                .backend_sessions
                .with_label_values(&[&self.name])
                .get()
                >= i64::from(self.max_connections)
    }
}

/// A backend's master user (Dovecot `master=yes` passdb).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterCredentials {
    pub user: String,
    pub password: Secret<Vec<u8>>,
    pub method: MasterMethod,
    pub separator: String,
}

/// The backends, in config order, and their health.
#[derive(Debug, Clone)]
pub struct Router {
    backends: Vec<Arc<Backend>>,
    health: Arc<Health>,
}

impl Router {
    /// A router with a fresh health table.
    pub fn from_config(config: &Config) -> Router {
        Router::with_health(config, Arc::new(Health::default()))
    }

    /// A router that keeps `health` (a reload hands the running table on,
    /// so health and draining survive it); the table is synced to the
    /// configured backends.
    pub fn with_health(config: &Config, health: Arc<Health>) -> Router {
        let backends = config
            .backends
            .iter()
            .map(|b| {
                // validate() checked the address form.
                let (host, port) = split_host_port(&b.address).expect("validated backend address");
                Arc::new(Backend {
                    name: b.name.clone(),
                    host: host.to_owned(),
                    port,
                    weight: b.weight,
                    forward_client_id: b.forward_client_id,
                    forward_client_id_fields: b.forward_client_id_fields,
                    login: b.login,
                    send_proxy_protocol: b.send_proxy_protocol,
                    max_connections: b.max_connections,
                    master: b
                        .master_user
                        .as_ref()
                        .zip(b.master_password.as_ref())
                        .map(|(u, p)| MasterCredentials {
                            user: u.clone(),
                            password: Secret::new(p.as_bytes().to_vec()),
                            method: b.master_method,
                            separator: b.master_separator.clone(),
                        }),
                })
            })
            .collect();
        health.sync(config.backends.iter().map(|b| b.name.as_str()));
        Router { backends, health }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Whether any backend may take new users (up and not drained).
    pub fn any_usable(&self) -> bool {
        self.backends
            .iter()
            .any(|b| self.health.status(&b.name).is_none_or(|s| s.usable()))
    }

    /// Backends to try for this user, best first.
    pub fn candidates(&self, info: &UserInfo) -> Vec<Arc<Backend>> {
        if let Some(host) = &info.host {
            // The passdb routed the user (nginx auth_http's Auth-Server, or
            // a passwd-file host= field); the port defaults to the first
            // backend's, else 143.
            let port = info
                .port
                .or_else(|| self.backends.first().map(|b| b.port))
                .unwrap_or(143);
            let known = self
                .backends
                .iter()
                .find(|b| &b.host == host && b.port == port);
            return vec![known.cloned().unwrap_or_else(|| {
                Arc::new(Backend {
                    name: format!("{host}:{port}"),
                    host: host.clone(),
                    port,
                    weight: 1,
                    forward_client_id: self.backends.first().is_none_or(|b| b.forward_client_id),
                    forward_client_id_fields: self
                        .backends
                        .first()
                        .is_some_and(|b| b.forward_client_id_fields),
                    login: BackendLogin::Client,
                    master: None,
                    send_proxy_protocol: false,
                    max_connections: 0,
                })
            })];
        }
        let mut scored: Vec<(f64, &Arc<Backend>)> = self
            .backends
            .iter()
            .map(|b| (score(&info.user, b), b))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Healthy first, then down ones as a last resort (the table may be
        // a check behind); drained ones not at all.  The sort is stable,
        // so each group keeps the rendezvous order.
        let mut ranked: Vec<(u8, Arc<Backend>)> = scored
            .into_iter()
            .filter_map(|(_, b)| match self.health.status(&b.name) {
                Some(s) if s.draining => None,
                Some(s) if !s.up => Some((1, b.clone())),
                _ => Some((0, b.clone())),
            })
            .collect();
        ranked.sort_by_key(|(rank, _)| *rank);
        ranked.into_iter().map(|(_, b)| b).collect()
    }
}

/// Weighted rendezvous score of `backend` for `user`.
fn score(user: &str, backend: &Backend) -> f64 {
    let h = stable_hash(user.as_bytes(), backend.name.as_bytes());
    // Top 53 bits to a float in (0, 1): never 0, so ln is finite.
    let unit = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(backend.weight) / -unit.ln()
}

/// FNV-1a over both inputs with a separator, then the splitmix64
/// finaliser: fixed, so every build and every gateway agrees.
fn stable_hash(a: &[u8], b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in a.iter().chain(&[0xff]).chain(b) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(names: &[(&str, u32)]) -> Router {
        let health = Arc::new(Health::default());
        health.sync(names.iter().map(|(n, _)| *n));
        Router {
            health,
            backends: names
                .iter()
                .map(|(n, w)| {
                    Arc::new(Backend {
                        name: n.to_string(),
                        host: "127.0.0.1".into(),
                        port: 143,
                        weight: *w,
                        forward_client_id: true,
                        forward_client_id_fields: false,
                        login: BackendLogin::Client,
                        master: None,
                        send_proxy_protocol: false,
                        max_connections: 0,
                    })
                })
                .collect(),
        }
    }

    fn first(r: &Router, user: &str) -> String {
        r.candidates(&UserInfo {
            user: user.into(),
            ..UserInfo::default()
        })[0]
            .name
            .clone()
    }

    #[test]
    fn removing_a_backend_moves_only_its_users() {
        let three = router(&[("a", 1), ("b", 1), ("c", 1)]);
        let two = router(&[("a", 1), ("c", 1)]);
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            let user = format!("user{i}");
            let before = first(&three, &user);
            let after = first(&two, &user);
            if before != "b" {
                assert_eq!(before, after, "{user} moved");
            }
            *counts.entry(before).or_insert(0) += 1;
        }
        for n in ["a", "b", "c"] {
            assert!((800..1200).contains(&counts[n]), "{counts:?}");
        }
    }

    #[test]
    fn weights_bias_the_spread() {
        let r = router(&[("a", 3), ("b", 1)]);
        let a = (0..4000)
            .filter(|i| first(&r, &format!("u{i}")) == "a")
            .count();
        assert!((2700..3300).contains(&a), "{a}");
    }

    #[test]
    fn passdb_host_wins() {
        let r = router(&[("a", 1)]);
        let c = r.candidates(&UserInfo {
            user: "x".into(),
            host: Some("10.1.1.1".into()),
            port: Some(1143),
            ..UserInfo::default()
        });
        assert_eq!(
            (c.len(), c[0].host.as_str(), c[0].port),
            (1, "10.1.1.1", 1143)
        );
    }

    #[test]
    fn down_backends_go_last_and_drained_ones_are_skipped() {
        let r = router(&[("route-a", 1), ("route-b", 1), ("route-c", 1)]);
        let info = UserInfo {
            user: "somebody".into(),
            ..UserInfo::default()
        };
        let order = |r: &Router| -> Vec<String> {
            r.candidates(&info).iter().map(|b| b.name.clone()).collect()
        };
        let all = order(&r);
        assert_eq!(all.len(), 3);
        r.health().report(&all[0], false, "refused");
        let mut expected = vec![all[1].clone(), all[2].clone(), all[0].clone()];
        assert_eq!(order(&r), expected);
        r.health().set_draining(&all[1], true);
        expected.remove(0);
        assert_eq!(order(&r), expected);
        assert!(r.any_usable());
        r.health().set_draining(&all[2], true);
        assert!(!r.any_usable(), "only a down backend is left");
        assert_eq!(order(&r), vec![all[0].clone()]);
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // A fixed value: if this changes, gateways of different versions
        // would route users differently.
        assert_eq!(stable_hash(b"alice", b"dovecot"), 0xd7886e0fcb7819a0);
    }
}
