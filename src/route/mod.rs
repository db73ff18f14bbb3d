//! Routing: which backend holds a user's mail.
//!
//! A passdb may name the backend itself (`host=`/`port=` extra fields);
//! otherwise the user goes to the backends in *rendezvous* (highest random
//! weight) order: each backend scores `weight / -ln(h)` where `h` is a
//! stable hash of (user, backend name) mapped into (0, 1).  The highest
//! score wins; the rest are the failover order.  Every gateway with the same
//! backend list computes the same order without talking to the others, and
//! removing a backend moves only the users it had.

use std::sync::Arc;

use crate::auth::UserInfo;
use crate::config::{split_host_port, Config};

/// A configured backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub forward_client_id: bool,
}

/// The backends, in config order.
#[derive(Debug, Clone)]
pub struct Router {
    backends: Vec<Arc<Backend>>,
}

impl Router {
    pub fn from_config(config: &Config) -> Router {
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
                })
            })
            .collect();
        Router { backends }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
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
                })
            })];
        }
        let mut scored: Vec<(f64, &Arc<Backend>)> = self
            .backends
            .iter()
            .map(|b| (score(&info.user, b), b))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, b)| b.clone()).collect()
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
        Router {
            backends: names
                .iter()
                .map(|(n, w)| {
                    Arc::new(Backend {
                        name: n.to_string(),
                        host: "127.0.0.1".into(),
                        port: 143,
                        weight: *w,
                        forward_client_id: true,
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
        });
        assert_eq!(
            (c.len(), c[0].host.as_str(), c[0].port),
            (1, "10.1.1.1", 1143)
        );
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // A fixed value: if this changes, gateways of different versions
        // would route users differently.
        assert_eq!(stable_hash(b"alice", b"dovecot"), 0xd7886e0fcb7819a0);
    }
}
