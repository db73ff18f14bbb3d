//! Admission before the greeting: global and per-IP connection caps, a
//! per-IP new-connection rate (token bucket) and an overload threshold.
//!
//! Decided in the accept loop, before any task is spawned, auth is asked or
//! a backend is touched, so a refusal costs a map lookup and one write of
//! `* BYE`.  The table outlives config reloads (the counts are about live
//! connections); its parameters are read from the current config on each
//! decision.  It is bounded: entries with no live connection and a full
//! bucket are dropped when it grows past its capacity.

pub mod proxy_protocol;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::LimitsConfig;

/// Why a connection was turned away (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    PerIpConnections,
    PerIpRate,
    Overload,
    /// A PROXY listener: not from a trusted proxy, or no valid header.
    ProxyProtocol,
}

impl Refusal {
    /// Every reason, in declaration order (`r as usize` indexes it).
    pub const ALL: [Refusal; 5] = [
        Refusal::MaxConnections,
        Refusal::PerIpConnections,
        Refusal::PerIpRate,
        Refusal::Overload,
        Refusal::ProxyProtocol,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerIpConnections => "per_ip_connections",
            Refusal::PerIpRate => "per_ip_rate",
            Refusal::Overload => "overload",
            Refusal::ProxyProtocol => "proxy_protocol",
        }
    }

    /// The text of the `* BYE [UNAVAILABLE] …` greeting.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::MaxConnections | Refusal::Overload => "Server busy; try again later",
            Refusal::PerIpConnections => "Too many connections from your address",
            Refusal::PerIpRate => "Connecting too fast; slow down",
            Refusal::ProxyProtocol => "PROXY protocol header required from a trusted proxy",
        }
    }
}

#[derive(Debug)]
struct IpState {
    live: u32,
    tokens: f64,
    refilled: Instant,
}

/// Most addresses tracked before idle entries are dropped.
const TABLE_CAPACITY: usize = 65_536;

pub struct Admission {
    live: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, IpState>>,
}

/// A live connection's hold on the counters; released on drop.
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.live.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut table) = self.admission.per_ip.lock() {
            if let Some(s) = table.get_mut(&self.ip) {
                s.live = s.live.saturating_sub(1);
            }
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            live: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }
}

impl Admission {
    /// Live connections, all listeners.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Admit a connection from `ip` or say why not.  `exempt` skips the
    /// per-IP checks (trusted proxies' and operators' networks).
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &LimitsConfig,
        exempt: bool,
    ) -> Result<Permit, Refusal> {
        let live = self.live.load(Ordering::Relaxed);
        if live >= limits.max_connections {
            return Err(Refusal::MaxConnections);
        }
        if limits.soft_max_sessions > 0 && live >= limits.soft_max_sessions {
            return Err(Refusal::Overload);
        }
        let now = Instant::now();
        {
            let mut table = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if table.len() >= TABLE_CAPACITY && !table.contains_key(&ip) {
                prune(&mut table, now, limits);
            }
            let burst = f64::from(limits.connection_burst_per_ip.max(1));
            let state = table.entry(ip).or_insert(IpState {
                live: 0,
                tokens: burst,
                refilled: now,
            });
            if !exempt {
                if limits.max_connections_per_ip > 0 && state.live >= limits.max_connections_per_ip
                {
                    return Err(Refusal::PerIpConnections);
                }
                if limits.connection_rate_per_ip > 0.0 {
                    let elapsed = now.duration_since(state.refilled).as_secs_f64();
                    state.tokens =
                        (state.tokens + elapsed * limits.connection_rate_per_ip).min(burst);
                    state.refilled = now;
                    if state.tokens < 1.0 {
                        return Err(Refusal::PerIpRate);
                    }
                    state.tokens -= 1.0;
                }
            }
            state.live += 1;
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }
}

/// Live sessions per user, for `max_sessions_per_user` (like Dovecot's
/// `mail_max_userip_connections`, but across all client addresses).
#[derive(Default)]
pub struct UserSessions {
    live: Mutex<HashMap<Arc<str>, u32>>,
}

/// One session's hold on its user's count; released on drop.
#[derive(Debug)]
pub struct UserPermit {
    user: Arc<str>,
}

static USERS: std::sync::OnceLock<UserSessions> = std::sync::OnceLock::new();

impl UserSessions {
    /// The process-wide table (it outlives config reloads).
    pub fn get() -> &'static UserSessions {
        USERS.get_or_init(UserSessions::default)
    }

    /// Count a session for `user` unless it already has `max` (0 = no cap).
    pub fn admit(&'static self, user: &str, max: u32) -> Option<UserPermit> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let count = live.entry(Arc::from(user)).or_insert(0);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(UserPermit {
            user: Arc::from(user),
        })
    }

    pub fn count(&self, user: &str) -> u32 {
        self.live
            .lock()
            .map(|l| l.get(user).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for UserPermit {
    fn drop(&mut self) {
        let mut live = UserSessions::get()
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = live.get_mut(&self.user) {
            *c -= 1;
            if *c == 0 {
                live.remove(&self.user);
            }
        }
    }
}

/// Drop entries that hold nothing: no live connection, bucket refilled.
fn prune(table: &mut HashMap<IpAddr, IpState>, now: Instant, limits: &LimitsConfig) {
    let burst = f64::from(limits.connection_burst_per_ip.max(1));
    let rate = limits.connection_rate_per_ip;
    table.retain(|_, s| {
        let refilled =
            rate <= 0.0 || s.tokens + now.duration_since(s.refilled).as_secs_f64() * rate >= burst;
        s.live > 0 || !refilled
    });
    if table.len() >= TABLE_CAPACITY {
        // Still full of recent, idle addresses (a spoofing flood): forget
        // the idle ones anyway rather than grow.
        table.retain(|_, s| s.live > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_all_is_in_declaration_order() {
        // Listeners index their precomputed refusals by `r as usize`.
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_connections: 5,
            max_connections_per_ip: 2,
            connection_rate_per_ip: 0.0,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn per_ip_and_global_caps() {
        let a = Arc::new(Admission::default());
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        let l = limits();
        let p1 = a.admit(ip1, &l, false).unwrap();
        let _p2 = a.admit(ip1, &l, false).unwrap();
        assert_eq!(
            a.admit(ip1, &l, false).err(),
            Some(Refusal::PerIpConnections)
        );
        // Exempt networks skip the per-IP cap.
        let _p3 = a.admit(ip1, &l, true).unwrap();
        let _p4 = a.admit(ip2, &l, false).unwrap();
        let _p5 = a.admit(ip2, &l, false).unwrap();
        assert_eq!(a.admit(ip2, &l, false).err(), Some(Refusal::MaxConnections));
        drop(p1);
        assert_eq!(a.live(), 4);
        // ip1 still holds two (one of them exempt, which still counts).
        assert_eq!(
            a.admit(ip1, &l, false).err(),
            Some(Refusal::PerIpConnections)
        );
        assert!(a.admit("192.0.2.3".parse().unwrap(), &l, false).is_ok());
    }

    #[test]
    fn rate_limit_token_bucket() {
        let a = Arc::new(Admission::default());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let l = LimitsConfig {
            connection_rate_per_ip: 1.0,
            connection_burst_per_ip: 3,
            ..LimitsConfig::default()
        };
        let permits: Vec<_> = (0..3).map(|_| a.admit(ip, &l, false).unwrap()).collect();
        assert_eq!(a.admit(ip, &l, false).err(), Some(Refusal::PerIpRate));
        drop(permits);
        // Closing does not refill the bucket; only time does.
        assert_eq!(a.admit(ip, &l, false).err(), Some(Refusal::PerIpRate));
    }

    #[test]
    fn overload_soft_limit() {
        let a = Arc::new(Admission::default());
        let l = LimitsConfig {
            soft_max_sessions: 1,
            ..LimitsConfig::default()
        };
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let _p = a.admit(ip, &l, false).unwrap();
        assert_eq!(a.admit(ip, &l, false).err(), Some(Refusal::Overload));
    }

    #[test]
    fn per_user_sessions() {
        let users = UserSessions::get();
        let a = users.admit("limits-test-user", 2).unwrap();
        let _b = users.admit("limits-test-user", 2).unwrap();
        assert!(users.admit("limits-test-user", 2).is_none());
        assert!(users.admit("limits-test-other", 2).is_some());
        drop(a);
        assert_eq!(users.count("limits-test-user"), 1);
        assert!(users.admit("limits-test-user", 0).is_some());
    }

    #[test]
    fn table_stays_bounded() {
        let a = Arc::new(Admission::default());
        let l = LimitsConfig {
            connection_rate_per_ip: 1.0,
            ..LimitsConfig::default()
        };
        for i in 0..(TABLE_CAPACITY as u32 + 1000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(a.admit(ip, &l, false));
        }
        assert!(a.per_ip.lock().unwrap().len() <= TABLE_CAPACITY);
    }
}
