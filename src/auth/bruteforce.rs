//! Brute-force protection: failed logins are counted per client network
//! (an IPv4 address, an IPv6 /64; both prefixes configurable) and per user
//! name, in a window starting at the first failure.
//!
//! - After `delay_after` failures, each further failure is answered only
//!   after a delay: `delay_initial`, doubling per failure, capped at
//!   `delay_max` (the larger of the network's and the user's).
//! - From `ip_refuse_after` failures of a network (`user_refuse_after` of a
//!   user) until the window ends, logins are refused without looking at the
//!   password.
//! - A successful login resets the counters of its network and user.
//! - `trusted_networks` are neither counted nor limited.
//!
//! A refusal answers `NO [UNAVAILABLE]`, not `NO [AUTHENTICATIONFAILED]`:
//! RFC 5530 §3 says AUTHENTICATIONFAILED tells the client there is "no
//! point in trying the same login/password again later", which is false
//! here (the password was never checked and may be right), while
//! UNAVAILABLE is a temporary failure to retry later, which is what a
//! refusal is.  Delays keep the normal `NO [AUTHENTICATIONFAILED]`.
//!
//! Per-user refusals let anyone lock a user out by failing on purpose, so
//! their default threshold is much higher than the network's; delays only
//! ever slow down *failures* and never a correct login.
//!
//! Memory: both tables are [`BoundedMap`]s (oldest evicted), so a flood
//! of addresses or names costs a fixed amount.  The tables are process-wide
//! ([`shared`]) and survive config reloads; the settings come from the
//! current config.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::bounded::BoundedMap;
use crate::config::BruteForceConfig;

/// Which table caused a delay or a refusal (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Ip,
    User,
}

impl Scope {
    pub fn label(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::User => "user",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub window: Duration,
    pub delay_after: u32,
    pub delay_initial: Duration,
    pub delay_max: Duration,
    /// 0: never refuse.
    pub ip_refuse_after: u32,
    pub user_refuse_after: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub max_entries: usize,
    pub trusted_networks: Vec<IpNet>,
}

impl Settings {
    pub fn from_config(c: &BruteForceConfig) -> Settings {
        Settings {
            enabled: c.enabled,
            window: Duration::from_secs(c.window_secs),
            delay_after: c.delay_after,
            delay_initial: Duration::from_millis(c.delay_initial_ms),
            delay_max: Duration::from_millis(c.delay_max_ms),
            ip_refuse_after: c.ip_refuse_after,
            user_refuse_after: c.user_refuse_after,
            ipv4_prefix: c.ipv4_prefix,
            ipv6_prefix: c.ipv6_prefix,
            max_entries: c.max_entries,
            trusted_networks: c.trusted_networks.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    since: Instant,
}

/// Longest user name kept as a key; longer names share their prefix's
/// record (bounds memory per entry).
const MAX_USER_KEY: usize = 256;

pub struct Tables {
    ips: Mutex<BoundedMap<IpAddr, Record>>,
    users: Mutex<BoundedMap<String, Record>>,
}

impl Tables {
    pub fn new(max_entries: usize) -> Tables {
        Tables {
            ips: Mutex::new(BoundedMap::new(max_entries)),
            users: Mutex::new(BoundedMap::new(max_entries)),
        }
    }

    pub fn len(&self) -> (usize, usize) {
        (
            self.ips.lock().map_or(0, |t| t.len()),
            self.users.lock().map_or(0, |t| t.len()),
        )
    }
}

/// The process-wide tables (kept across reloads).
pub fn shared() -> Arc<Tables> {
    static TABLES: OnceLock<Arc<Tables>> = OnceLock::new();
    TABLES
        .get_or_init(|| Arc::new(Tables::new(100_000)))
        .clone()
}

pub struct Guard {
    settings: Settings,
    tables: Arc<Tables>,
}

impl Guard {
    pub fn new(settings: Settings, tables: Arc<Tables>) -> Guard {
        if let Ok(mut t) = tables.ips.lock() {
            t.set_capacity(settings.max_entries);
        }
        if let Ok(mut t) = tables.users.lock() {
            t.set_capacity(settings.max_entries);
        }
        Guard { settings, tables }
    }

    /// The network key of `ip`: the configured prefix, IPv4-mapped IPv6
    /// addresses counted as IPv4.
    pub fn network(&self, ip: IpAddr) -> IpAddr {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = match ip {
            IpAddr::V4(_) => self.settings.ipv4_prefix.min(32),
            IpAddr::V6(_) => self.settings.ipv6_prefix.min(128),
        };
        IpNet::new(ip, prefix).map_or(ip, |n| n.network())
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        !self.settings.enabled
            || self
                .settings
                .trusted_networks
                .iter()
                .any(|n| n.contains(&ip))
    }

    fn user_key(user: &str) -> String {
        let mut end = user.len().min(MAX_USER_KEY);
        while !user.is_char_boundary(end) {
            end -= 1;
        }
        user[..end].to_lowercase()
    }

    fn live(&self, r: Option<&Record>, now: Instant) -> u32 {
        r.filter(|r| now.duration_since(r.since) < self.settings.window)
            .map_or(0, |r| r.failures)
    }

    /// Before checking a password: whether this attempt is refused, and
    /// for which table.
    pub fn check(&self, ip: IpAddr, user: &str) -> Option<Scope> {
        if self.exempt(ip) {
            return None;
        }
        let now = Instant::now();
        let s = &self.settings;
        let ip_failures = self.live(self.tables.ips.lock().ok()?.get(&self.network(ip)), now);
        if s.ip_refuse_after > 0 && ip_failures >= s.ip_refuse_after {
            return Some(Scope::Ip);
        }
        let user_failures = self.live(
            self.tables.users.lock().ok()?.get(&Self::user_key(user)),
            now,
        );
        if s.user_refuse_after > 0 && user_failures >= s.user_refuse_after {
            return Some(Scope::User);
        }
        None
    }

    /// Count a failed login; the delay to wait before answering it, if
    /// any, with the table that asked for the longer one.
    pub fn failed(&self, ip: IpAddr, user: &str) -> Option<(Duration, Scope)> {
        if self.exempt(ip) {
            return None;
        }
        let now = Instant::now();
        let ip_n = bump(
            &self.tables.ips,
            self.network(ip),
            now,
            self.settings.window,
        );
        let user_n = bump(
            &self.tables.users,
            Self::user_key(user),
            now,
            self.settings.window,
        );
        let (n, scope) = if user_n > ip_n {
            (user_n, Scope::User)
        } else {
            (ip_n, Scope::Ip)
        };
        let delay = self.delay_for(n);
        (!delay.is_zero()).then_some((delay, scope))
    }

    /// The delay after the `n`th failure in the window.
    pub fn delay_for(&self, n: u32) -> Duration {
        let s = &self.settings;
        if n <= s.delay_after {
            return Duration::ZERO;
        }
        let doublings = (n - s.delay_after - 1).min(30);
        s.delay_initial
            .saturating_mul(1u32 << doublings)
            .min(s.delay_max)
    }

    /// A successful login: forget the failures of its network and user.
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        if self.exempt(ip) {
            return;
        }
        if let Ok(mut t) = self.tables.ips.lock() {
            t.remove(&self.network(ip));
        }
        if let Ok(mut t) = self.tables.users.lock() {
            t.remove(&Self::user_key(user));
        }
    }
}

/// Add a failure to `key`'s record (a new window if the old one ended);
/// the failures now in the window.
fn bump<K: std::hash::Hash + Eq + Clone>(
    table: &Mutex<BoundedMap<K, Record>>,
    key: K,
    now: Instant,
    window: Duration,
) -> u32 {
    let Ok(mut t) = table.lock() else {
        return 0;
    };
    match t.get_mut(&key) {
        Some(r) if now.duration_since(r.since) < window => {
            r.failures = r.failures.saturating_add(1);
            r.failures
        }
        _ => {
            t.insert(
                key,
                Record {
                    failures: 1,
                    since: now,
                },
            );
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            enabled: true,
            window: Duration::from_secs(600),
            delay_after: 2,
            delay_initial: Duration::from_millis(100),
            delay_max: Duration::from_millis(800),
            ip_refuse_after: 8,
            user_refuse_after: 30,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_entries: 1000,
            trusted_networks: vec!["10.0.0.0/8".parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn delays_grow_capped_then_refusal_then_reset() {
        let g = Guard::new(settings(), Arc::new(Tables::new(1000)));
        let a = ip("192.0.2.1");
        let delays: Vec<u64> = (0..8)
            .map(|_| {
                assert_eq!(g.check(a, "alice"), None);
                g.failed(a, "alice")
                    .map_or(0, |(d, _)| d.as_millis() as u64)
            })
            .collect();
        assert_eq!(delays, [0, 0, 100, 200, 400, 800, 800, 800]);
        assert_eq!(g.check(a, "alice"), Some(Scope::Ip));
        // Another address, same user: user failures (8) are under 30.
        assert_eq!(g.check(ip("192.0.2.2"), "alice"), None);
        // ... but its failures are delayed by the user's count.
        assert_eq!(
            g.failed(ip("192.0.2.2"), "Alice"),
            Some((Duration::from_millis(800), Scope::User))
        );
        g.succeeded(a, "alice");
        assert_eq!(g.check(a, "alice"), None);
        assert_eq!(g.failed(a, "alice"), None);
    }

    #[test]
    fn ipv6_by_prefix_mapped_v4_and_trusted() {
        let g = Guard::new(settings(), Arc::new(Tables::new(1000)));
        assert_eq!(g.network(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(g.network(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        for i in 0..8 {
            g.failed(ip(&format!("2001:db8:1:2::{i}")), &format!("u{i}"));
        }
        assert_eq!(g.check(ip("2001:db8:1:2::ffff"), "x"), Some(Scope::Ip));
        assert_eq!(g.check(ip("2001:db8:1:3::1"), "x"), None);
        for _ in 0..20 {
            assert_eq!(g.failed(ip("10.1.2.3"), "carol"), None);
        }
        assert_eq!(g.check(ip("10.1.2.3"), "carol"), None);
    }

    #[test]
    fn window_expiry_and_flood_bound() {
        let mut s = settings();
        s.window = Duration::from_millis(30);
        s.max_entries = 64;
        let tables = Arc::new(Tables::new(64));
        let g = Guard::new(s, tables.clone());
        for _ in 0..8 {
            g.failed(ip("192.0.2.9"), "dave");
        }
        assert!(g.check(ip("192.0.2.9"), "dave").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(g.check(ip("192.0.2.9"), "dave"), None);
        for i in 0..10_000u32 {
            let [a, b, c, d] = i.to_be_bytes();
            g.failed(IpAddr::from([a, b, c, d]), &format!("user{i}"));
        }
        assert_eq!(tables.len(), (64, 64));
    }
}
