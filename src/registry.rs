//! The live-session registry behind the admin API: who is connected, in
//! which state, to which backend, how many bytes so far, and a way to ask a
//! session to end.
//!
//! Each session registers once when it starts ([`Registry::register`]) and
//! is removed when its [`Registration`] drops, however the session ends.
//! The session task is the only writer of its handle's state and byte
//! counters (relaxed atomics, updated per read batch); the admin API only
//! reads them and may [kick](SessionHandle::kick).  A kick is a message,
//! not a cancellation: the session notices it at a point where it can say
//! `* BYE` between two responses and then closes itself.
//!
//! An idle session's handle stays small (see the size test): no buffers,
//! the user and backend names shared or boxed once at login.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::session::User;

/// Reason sent with the `* BYE [UNAVAILABLE]` when none is given.
pub const DEFAULT_KICK_REASON: &str = "Session terminated by the administrator";
/// Longest kick reason passed on to the client.
const MAX_REASON: usize = 200;

/// State labels, indexed by the handle's state byte.
const STATES: [&str; 5] = [
    "not_authenticated",
    "authenticated",
    "selected",
    "idle",
    "logout",
];

/// Who the session logged in as, and where it was routed.
#[derive(Debug)]
struct Login {
    user: User,
    backend: Box<str>,
}

/// One live session as the admin API sees it.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    /// Unix time the connection was accepted, in seconds.
    pub started: u64,
    login: OnceLock<Login>,
    state: AtomicU8,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    kick: Notify,
    kick_reason: OnceLock<Box<str>>,
    urgent: std::sync::atomic::AtomicBool,
}

impl SessionHandle {
    fn new(id: u64, peer: SocketAddr, listener: Arc<str>) -> SessionHandle {
        SessionHandle {
            id,
            peer,
            listener,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            login: OnceLock::new(),
            state: AtomicU8::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            kick: Notify::new(),
            kick_reason: OnceLock::new(),
            urgent: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Record the login (once; a session logs in at most once).
    pub fn logged_in(&self, user: User, backend: &str) {
        let _ = self.login.set(Login {
            user,
            backend: backend.into(),
        });
    }

    pub fn user(&self) -> Option<&str> {
        self.login.get().map(|l| &*l.user)
    }

    pub fn backend(&self) -> Option<&str> {
        self.login.get().map(|l| &*l.backend)
    }

    /// Record the session's state label (`State::label`).
    pub fn set_state(&self, label: &str) {
        let i = STATES.iter().position(|s| *s == label).unwrap_or(0);
        self.state.store(i as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> &'static str {
        STATES[usize::from(self.state.load(Ordering::Relaxed)).min(STATES.len() - 1)]
    }

    /// Count bytes read from the client.
    pub fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Count bytes read from the backend for the client.
    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Ask the session to end with `* BYE [UNAVAILABLE] reason`.  The first
    /// reason wins; the session acts on it at its next unit boundary.
    pub fn kick(&self, reason: &str) {
        let _ = self.kick_reason.set(clean_reason(reason));
        // notify_one stores a permit if the session is not waiting right
        // now, so a kick is never lost.
        self.kick.notify_one();
    }

    /// Close now: like [`kick`](Self::kick), but the session does not
    /// wait for its command in flight (the grace period is over).
    pub fn close_now(&self, reason: &str) {
        self.urgent.store(true, Ordering::Relaxed);
        self.kick(reason);
    }

    /// Whether the kick must not wait for the command in flight.
    pub fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::Relaxed)
    }

    /// Completes once the session has been kicked.  Create it once and
    /// poll it; a completed one consumed the kick's permit.
    pub fn kicked(&self) -> Notified<'_> {
        self.kick.notified()
    }

    /// The kick's reason (the default if it was never set).
    pub fn kick_reason(&self) -> &str {
        self.kick_reason.get().map_or(DEFAULT_KICK_REASON, |r| &**r)
    }
}

/// The reason as one short line of text: controls become spaces, length
/// capped, empty becomes the default.
fn clean_reason(reason: &str) -> Box<str> {
    let cleaned: String = reason
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    if cleaned.trim().is_empty() {
        DEFAULT_KICK_REASON.into()
    } else {
        cleaned.into()
    }
}

/// Every live session by id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u64, Arc<SessionHandle>>>,
    /// Set by [`Registry::close_all`] (under the map's lock): sessions
    /// that register afterwards are kicked as they arrive.
    closing: OnceLock<Box<str>>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The process's registry.
pub fn get() -> &'static Registry {
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<SessionHandle>>> {
        // Inserts and removes are single operations; a poisoned map is
        // still consistent.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a session; it leaves the registry when the registration drops.
    pub fn register(&self, id: u64, peer: SocketAddr, listener: Arc<str>) -> Registration<'_> {
        let handle = Arc::new(SessionHandle::new(id, peer, listener));
        let closing = {
            let mut sessions = self.lock();
            sessions.insert(id, handle.clone());
            self.closing.get().cloned()
        };
        if let Some(reason) = closing {
            handle.kick(&reason);
        }
        Registration {
            registry: self,
            handle,
        }
    }

    /// Shutting down: kick every session, now and as each later one
    /// registers (a connection accepted just before the listeners closed
    /// may not have registered yet); returns how many were live.
    pub fn close_all(&self, reason: &str) -> usize {
        let live: Vec<_> = {
            let sessions = self.lock();
            let _ = self.closing.set(reason.into());
            sessions.values().cloned().collect()
        };
        for h in &live {
            h.kick(reason);
        }
        live.len()
    }

    /// Every live session, ordered by id.
    pub fn list(&self) -> Vec<Arc<SessionHandle>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|h| h.id);
        v
    }

    pub fn find(&self, id: u64) -> Option<Arc<SessionHandle>> {
        self.lock().get(&id).cloned()
    }

    /// Kick every session of `user`; returns how many.
    pub fn kick_user(&self, user: &str, reason: &str) -> usize {
        let victims: Vec<_> = self
            .lock()
            .values()
            .filter(|h| h.user() == Some(user))
            .cloned()
            .collect();
        for h in &victims {
            h.kick(reason);
        }
        victims.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session's place in the registry; dropping it removes the session.
pub struct Registration<'r> {
    registry: &'r Registry,
    handle: Arc<SessionHandle>,
}

impl Registration<'_> {
    pub fn handle(&self) -> &SessionHandle {
        &self.handle
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.handle.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    #[test]
    fn handle_stays_small() {
        // An idle session should cost little beyond its sockets.
        let size = std::mem::size_of::<SessionHandle>();
        assert!(size <= 256, "SessionHandle is {size} bytes");
    }

    #[test]
    fn registration_lives_as_long_as_the_session() {
        let r = Registry::default();
        let a = r.register(1, peer(), "imap".into());
        let b = r.register(2, peer(), "imap".into());
        assert_eq!(r.list().iter().map(|h| h.id).collect::<Vec<_>>(), [1, 2]);
        drop(a);
        assert!(r.find(1).is_none());
        assert_eq!(r.len(), 1);
        drop(b);
        assert!(r.is_empty());
    }

    #[test]
    fn close_all_also_kicks_later_registrations() {
        let r = Registry::default();
        let early = r.register(1, peer(), "imap".into());
        assert_eq!(r.close_all("shutting down"), 1);
        // Accepted before the listeners stopped, registered after the call.
        let late = r.register(2, peer(), "imap".into());
        for reg in [&early, &late] {
            assert_eq!(reg.handle().kick_reason(), "shutting down");
            let kicked = std::pin::pin!(reg.handle().kicked());
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let polled = std::future::Future::poll(kicked, &mut cx);
            assert!(polled.is_ready(), "session {}", reg.handle().id);
        }
    }

    #[test]
    fn state_bytes_and_login() {
        let r = Registry::default();
        let reg = r.register(7, peer(), "imap".into());
        let h = reg.handle();
        assert_eq!(
            (h.state(), h.user(), h.backend()),
            ("not_authenticated", None, None)
        );
        h.logged_in(Arc::from("alice"), "dovecot");
        h.set_state("selected");
        h.add_in(10);
        h.add_out(32);
        h.add_out(1);
        assert_eq!(
            (
                h.state(),
                h.user(),
                h.backend(),
                h.bytes_in(),
                h.bytes_out()
            ),
            ("selected", Some("alice"), Some("dovecot"), 10, 33)
        );
    }

    #[test]
    fn kick_by_user_reaches_only_that_user_and_is_not_lost() {
        let r = Registry::default();
        let a = r.register(1, peer(), "imap".into());
        let b = r.register(2, peer(), "imap".into());
        let c = r.register(3, peer(), "imap".into());
        a.handle().logged_in(Arc::from("alice"), "x");
        b.handle().logged_in(Arc::from("bob"), "x");
        c.handle().logged_in(Arc::from("alice"), "x");
        assert_eq!(r.kick_user("alice", "maintenance\r\n* OK forged"), 2);
        assert_eq!(a.handle().kick_reason(), "maintenance  * OK forged");
        assert_eq!(b.handle().kick_reason(), DEFAULT_KICK_REASON);
        // Kicked before anyone waited: the permit is kept for the waiter.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(a.handle().kicked());
        assert_eq!(r.kick_user("nobody", ""), 0);
    }

    #[test]
    fn reasons_are_one_short_line() {
        assert_eq!(&*clean_reason("   "), DEFAULT_KICK_REASON);
        assert_eq!(clean_reason(&"x".repeat(1000)).len(), MAX_REASON);
    }
}
