//! The auth cache: recent passdb answers, so a client that logs in again
//! and again (or a phone retrying the same wrong password) does not cost an
//! argon2 hash or an HTTP round trip each time.
//!
//! - Keyed by the user name and HMAC-SHA256(key, user ‖ NUL ‖ password)
//!   with a random key made when the cache is built: the cleartext is never
//!   stored, and the tag is useless outside this process.
//! - Positive (accepted) and negative (rejected, unknown user) entries have
//!   their own TTLs; temporary failures are never cached.
//! - At most `size` entries; when full the oldest goes.
//! - The cache lives in the [`Runtime`](crate::runtime::Runtime), so a
//!   reload starts with an empty one (and a new key).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::SystemRandom;

use super::bounded::BoundedMap;
use super::{Answer, Credentials};

type Key = (String, [u8; 32]);

#[derive(Clone)]
struct Entry {
    answer: Answer,
    passdb: &'static str,
    expires: Instant,
}

pub struct AuthCache {
    key: hmac::Key,
    positive_ttl: Duration,
    negative_ttl: Duration,
    entries: Mutex<BoundedMap<Key, Entry>>,
}

impl AuthCache {
    pub fn new(size: usize, positive_ttl: Duration, negative_ttl: Duration) -> AuthCache {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .expect("the system random generator works");
        AuthCache {
            key,
            positive_ttl,
            negative_ttl,
            entries: Mutex::new(BoundedMap::new(size)),
        }
    }

    fn key(&self, creds: &Credentials) -> Key {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(creds.username.as_bytes());
        ctx.update(&[0]);
        ctx.update(creds.password.expose());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        (creds.username.clone(), tag)
    }

    /// A live entry for these credentials: the answer and its passdb.
    pub fn get(&self, creds: &Credentials) -> Option<(Answer, &'static str)> {
        let key = self.key(creds);
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get(&key)?;
        if entry.expires <= Instant::now() {
            entries.remove(&key);
            return None;
        }
        Some((entry.answer.clone(), entry.passdb))
    }

    /// Remember an answer; temporary failures are not remembered.
    pub fn put(&self, creds: &Credentials, answer: &Answer, passdb: &'static str) {
        let ttl = match answer {
            Answer::Accept(_) => self.positive_ttl,
            Answer::Reject(_) | Answer::Unknown => self.negative_ttl,
            Answer::TempFail(_) => return,
        };
        if ttl.is_zero() {
            return;
        }
        let key = self.key(creds);
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                key,
                Entry {
                    answer: answer.clone(),
                    passdb,
                    expires: Instant::now() + ttl,
                },
            );
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Rejection, UserInfo};
    use crate::imap::Secret;

    fn creds(user: &str, pw: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: Secret::new(pw.as_bytes().to_vec()),
        }
    }

    #[test]
    fn positive_negative_and_bounded() {
        let cache = AuthCache::new(2, Duration::from_secs(60), Duration::ZERO);
        let ok = Answer::Accept(UserInfo {
            user: "alice".into(),
            ..UserInfo::default()
        });
        cache.put(&creds("alice", "pw"), &ok, "passwd-file");
        assert_eq!(
            cache.get(&creds("alice", "pw")),
            Some((ok.clone(), "passwd-file"))
        );
        // Another password, another user with the same password: misses.
        assert_eq!(cache.get(&creds("alice", "pw2")), None);
        assert_eq!(cache.get(&creds("bob", "pw")), None);
        // Negative TTL 0: not stored.
        cache.put(
            &creds("alice", "bad"),
            &Answer::Reject(Rejection::new("password mismatch")),
            "passwd-file",
        );
        assert_eq!(cache.get(&creds("alice", "bad")), None);
        cache.put(&creds("x", "1"), &Answer::TempFail("down".into()), "http");
        assert_eq!(cache.len(), 1);
        cache.put(&creds("b", "1"), &ok, "passwd-file");
        cache.put(&creds("c", "1"), &ok, "passwd-file");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&creds("alice", "pw")), None, "oldest evicted");
    }

    #[test]
    fn entries_expire() {
        let cache = AuthCache::new(8, Duration::from_millis(1), Duration::from_secs(60));
        cache.put(&creds("a", "1"), &Answer::Unknown, "none");
        assert!(cache.get(&creds("a", "1")).is_some());
        cache.put(
            &creds("a", "2"),
            &Answer::Accept(UserInfo::default()),
            "passwd-file",
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&creds("a", "2")).is_none());
        assert!(cache.get(&creds("a", "1")).is_some());
    }
}
