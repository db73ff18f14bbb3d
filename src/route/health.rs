//! Backend health and draining: one small table, keyed by backend name,
//! that the [router](super::Router) consults when it orders a user's
//! candidates.
//!
//! Two sources feed it:
//! - *passive*: the relay reports every backend open; a failed connect or
//!   greeting marks the backend down at once, a completed login marks it
//!   up at once (real traffic is the best evidence there is);
//! - *active*: [`run_checks`] connects to every backend each
//!   `health.interval_secs` and reads its greeting; `fall` failures in a
//!   row mark a backend down, `rise` successes mark it up.  The first
//!   result after startup (or after a backend is added) decides directly.
//!
//! Draining is an operator's switch (admin API): a drained backend gets no
//! new users; its live sessions stay.
//!
//! Invariants: the table outlives reloads (the runtime hands it from one
//! router to the next, so health and draining survive a SIGHUP); it holds
//! exactly the configured backends; `imapgate_backend_up` and
//! `imapgate_backend_draining` mirror it for every name in it.  Nothing
//! here does I/O except [`run_checks`], which is given the probe to run.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::IntGauge;
use tracing::{info, warn};

use super::Backend;

/// Consecutive-result thresholds for active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub fall: u32,
    pub rise: u32,
}

/// What the table says about one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub up: bool,
    pub draining: bool,
}

impl Status {
    /// Whether new users may be sent there.
    pub fn usable(self) -> bool {
        self.up && !self.draining
    }
}

struct Entry {
    up: bool,
    draining: bool,
    /// No active result yet: the first one decides without thresholds.
    checked: bool,
    /// Active results in a row that disagree with `up`.
    streak: u32,
    up_gauge: IntGauge,
    draining_gauge: IntGauge,
}

impl Entry {
    fn new(name: &str) -> Entry {
        let m = crate::metrics::get();
        let e = Entry {
            up: true,
            draining: false,
            checked: false,
            streak: 0,
            up_gauge: m.backend_up.with_label_values(&[name]),
            draining_gauge: m.backend_draining.with_label_values(&[name]),
        };
        e.up_gauge.set(1);
        e.draining_gauge.set(0);
        e
    }

    fn set_up(&mut self, up: bool) -> bool {
        self.streak = 0;
        let changed = self.up != up;
        self.up = up;
        self.up_gauge.set(i64::from(up));
        changed
    }
}

/// Health and draining per backend name.
#[derive(Default)]
pub struct Health {
    table: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (name, e) in self.lock().iter() {
            m.entry(name, &(e.up, e.draining));
        }
        m.finish()
    }
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Every update leaves an entry consistent, so a poisoned lock's
        // data is still good.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the table hold exactly `names`: new backends start up
    /// (unchecked), removed ones leave the table and their series.
    pub fn sync<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let names: Vec<&str> = names.into_iter().collect();
        let mut table = self.lock();
        let m = crate::metrics::get();
        table.retain(|name, _| {
            let keep = names.contains(&name.as_str());
            if !keep {
                let _ = m.backend_up.remove_label_values(&[name]);
                let _ = m.backend_draining.remove_label_values(&[name]);
            }
            keep
        });
        for name in names {
            if !table.contains_key(name) {
                table.insert(name.to_owned(), Entry::new(name));
            }
        }
    }

    /// None for a name not in the table (a backend a passdb named itself).
    pub fn status(&self, name: &str) -> Option<Status> {
        self.lock().get(name).map(|e| Status {
            up: e.up,
            draining: e.draining,
        })
    }

    /// Every backend's status, sorted by name.
    pub fn all(&self) -> Vec<(String, Status)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(n, e)| {
                (
                    n.clone(),
                    Status {
                        up: e.up,
                        draining: e.draining,
                    },
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Passive result from a real backend open: applies at once.
    pub fn report(&self, name: &str, ok: bool, why: &str) {
        let mut table = self.lock();
        let Some(e) = table.get_mut(name) else { return };
        e.checked = true;
        if e.set_up(ok) {
            log_change(name, ok, why, "login");
        }
    }

    /// Active check result: changes state after `fall`/`rise` in a row (or
    /// at once for the first check).  Returns the new state if it changed.
    pub fn observe(&self, name: &str, ok: bool, t: Thresholds, why: &str) -> Option<bool> {
        let mut table = self.lock();
        let e = table.get_mut(name)?;
        let first = !e.checked;
        e.checked = true;
        if ok == e.up {
            e.streak = 0;
            return None;
        }
        e.streak += 1;
        let needed = if ok { t.rise } else { t.fall };
        if first || e.streak >= needed {
            e.set_up(ok);
            log_change(name, ok, why, "check");
            return Some(ok);
        }
        None
    }

    /// Drain (`true`) or undrain a backend.  False if there is no such
    /// backend.
    pub fn set_draining(&self, name: &str, draining: bool) -> bool {
        let mut table = self.lock();
        let Some(e) = table.get_mut(name) else {
            return false;
        };
        if e.draining != draining {
            info!(backend = name, draining, "backend drain changed");
        }
        e.draining = draining;
        e.draining_gauge.set(i64::from(draining));
        true
    }
}

fn log_change(name: &str, up: bool, why: &str, source: &'static str) {
    if up {
        info!(backend = name, source, "backend up");
    } else {
        warn!(backend = name, source, reason = why, "backend down");
    }
}

/// One round of active checks: what to check and how.
pub struct Round {
    pub health: Arc<Health>,
    pub backends: Vec<Arc<Backend>>,
    /// None: active checks are off; look again after a while.
    pub interval: Option<Duration>,
    pub timeout: Duration,
    pub thresholds: Thresholds,
}

/// How long to wait before looking at the config again while active checks
/// are off (a reload may turn them on).
const OFF_RECHECK: Duration = Duration::from_secs(5);

/// Run active checks forever.  `round` is asked before every round (so a
/// reload's backends and settings apply); `probe` checks one backend
/// within the timeout it is given (connect and greeting), all backends of
/// a round concurrently.
pub async fn run_checks<R, P, F>(mut round: R, probe: P)
where
    R: FnMut() -> Round,
    P: Fn(Arc<Backend>, Duration) -> F,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    loop {
        let r = round();
        let Some(interval) = r.interval else {
            tokio::time::sleep(OFF_RECHECK).await;
            continue;
        };
        let next = tokio::time::Instant::now() + interval;
        let mut checks = tokio::task::JoinSet::new();
        for b in r.backends {
            let check = probe(b.clone(), r.timeout);
            checks.spawn(async move { (b, check.await) });
        }
        while let Some(done) = checks.join_next().await {
            // A panicking probe is a bug; the others' results still count.
            if let Ok((b, result)) = done {
                let why = result.as_ref().err().map_or("", String::as_str);
                r.health.observe(&b.name, result.is_ok(), r.thresholds, why);
            }
        }
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { fall: 2, rise: 3 };

    fn table(names: &[&str]) -> Health {
        let h = Health::default();
        h.sync(names.iter().copied());
        h
    }

    fn up(h: &Health, n: &str) -> bool {
        h.status(n).expect("known backend").up
    }

    #[test]
    fn first_check_decides_then_thresholds_apply() {
        let h = table(&["health-a"]);
        assert!(up(&h, "health-a"), "unchecked backends start up");
        assert_eq!(h.observe("health-a", false, T, "refused"), Some(false));
        assert_eq!(h.observe("health-a", true, T, ""), None);
        assert_eq!(h.observe("health-a", true, T, ""), None);
        assert!(!up(&h, "health-a"));
        assert_eq!(h.observe("health-a", true, T, ""), Some(true));
        assert_eq!(h.observe("health-a", false, T, "x"), None);
        // A success in between resets the streak.
        assert_eq!(h.observe("health-a", true, T, ""), None);
        assert_eq!(h.observe("health-a", false, T, "x"), None);
        assert_eq!(h.observe("health-a", false, T, "x"), Some(false));
    }

    #[test]
    fn passive_reports_apply_at_once() {
        let h = table(&["health-b"]);
        h.report("health-b", false, "connect refused");
        assert!(!up(&h, "health-b"));
        h.report("health-b", true, "");
        assert!(up(&h, "health-b"));
        // Unknown names (a passdb-chosen host) are ignored.
        h.report("10.0.0.1:143", false, "x");
        assert_eq!(h.status("10.0.0.1:143"), None);
    }

    #[test]
    fn draining_and_sync_keep_state() {
        let h = table(&["health-c", "health-d"]);
        assert!(h.set_draining("health-c", true));
        assert!(!h.set_draining("nope", true));
        h.report("health-d", false, "x");
        h.sync(["health-c", "health-d", "health-e"]);
        assert_eq!(
            h.status("health-c"),
            Some(Status {
                up: true,
                draining: true
            })
        );
        assert!(!up(&h, "health-d"));
        assert!(up(&h, "health-e"));
        h.sync(["health-e"]);
        assert_eq!(h.status("health-c"), None);
        let m = crate::metrics::get();
        assert_eq!(
            m.backend_up.with_label_values(&["health-e"]).get(),
            1,
            "gauge mirrors the table"
        );
    }
}
