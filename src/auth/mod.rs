//! Edge authentication: the `PassDb` trait, the passdbs, the ordered
//! chain, and the [`Authenticator`] that the relay's login goes through:
//!
//! ```text
//! brute-force check ─► auth cache ─► passdb chain (passwd-file, http, …)
//!        │ refused          │ hit          │ (hashes in the bounded pool)
//!        ▼                  ▼              ▼
//!   NO [UNAVAILABLE]     verdict ◄──── verdict ──► cache
//!                           │
//!         accept: reset the failure counters; reject: count, delay, answer
//! ```
//!
//! A passdb answers for one user: accepted (with the canonical name and
//! routing hints), rejected, not known here (the next passdb is asked), or
//! temporarily failed (the client gets `NO [UNAVAILABLE]`, never "wrong
//! password").  Secrets stay in [`Secret`] and are compared in constant
//! time; nothing here logs a password, and a wrong password and an unknown
//! user look the same to the client (`NO [AUTHENTICATIONFAILED]
//! Authentication failed`) and take the same work.

mod bounded;
pub mod bruteforce;
pub mod cache;
pub mod http;
pub mod passwd_file;
pub mod pool;
pub mod preauth;
pub mod scheme;

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, PassDbConfig};
use crate::imap::Secret;

/// What the passdb knows about an accepted user beyond "yes".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Canonical user name (the `user=` extra field may rename).
    pub user: String,
    /// Backend host/port for this user (`host=`, `port=` extra fields;
    /// nginx's `Auth-Server`, `Auth-Port`).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Log in to the backend as this user (`destuser=`; nginx's
    /// `Auth-User`) instead of [`UserInfo::user`].
    pub backend_user: Option<String>,
    /// ... with this password (`pass=`; nginx's `Auth-Pass`) instead of
    /// the client's.
    pub backend_password: Option<Secret<Vec<u8>>>,
    /// `nologin`: the password is right but the user may not log in; the
    /// text (`reason=`, may be empty) is shown to the client.
    pub nologin: Option<String>,
}

/// A known user's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// For the audit line only; never shown to the client.
    pub reason: Cow<'static, str>,
    /// Answer only after this long (nginx's `Auth-Wait`).
    pub wait: Option<Duration>,
    /// Close the connection after answering (nginx: a failure without
    /// `Auth-Wait`).
    pub close: bool,
}

impl Rejection {
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection {
            reason: reason.into(),
            wait: None,
            close: false,
        }
    }
}

/// One passdb's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accept(UserInfo),
    /// Known user, wrong password.
    Reject(Rejection),
    /// Not in this passdb: ask the next.
    Unknown,
    /// Could not decide (service down, hashing queue full).
    TempFail(String),
}

/// Credentials to check.  Owned: hashing runs on another thread.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret<Vec<u8>>,
}

/// Facts about the client a passdb may use (nginx's request headers).
#[derive(Debug, Clone)]
pub struct ClientFacts {
    pub ip: IpAddr,
    /// 1 for the first login attempt on this connection.
    pub attempt: u32,
    /// Present when the client connection is TLS.
    pub tls: Option<TlsFacts>,
}

/// The client's TLS session, for `Auth-SSL*` headers.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    /// `TLSv1.2`, `TLSv1.3` (nginx's spelling).
    pub protocol: &'static str,
    pub cipher: &'static str,
    /// `SUCCESS` or `NONE` when the listener asks for client certificates
    /// (a certificate that fails verification fails the handshake).
    pub verify: Option<&'static str>,
    /// The client certificate (DER), when one was presented.
    pub client_cert: Option<Vec<u8>>,
}

impl TlsFacts {
    pub fn of(conn: &rustls::ServerConnection, asks_client_cert: bool) -> TlsFacts {
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        TlsFacts {
            protocol: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "unknown",
            },
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
            verify: asks_client_cert.then_some(if cert.is_some() { "SUCCESS" } else { "NONE" }),
            client_cert: cert,
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait PassDb: Send + Sync {
    /// Label for logs and metrics (`passwd-file`, `http`).
    fn kind(&self) -> &'static str;
    fn verify<'a>(
        &'a self,
        creds: &'a Credentials,
        client: &'a ClientFacts,
    ) -> BoxFuture<'a, Answer>;
}

/// The configured passdbs, asked in order.
pub struct PassDbChain {
    passdbs: Vec<Arc<dyn PassDb>>,
}

/// The chain's verdict, with the passdb that gave it (for the audit line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub answer: Answer,
    pub passdb: &'static str,
}

impl PassDbChain {
    pub fn new(passdbs: Vec<Arc<dyn PassDb>>) -> PassDbChain {
        PassDbChain { passdbs }
    }

    pub fn from_config(config: &Config, pool: &Arc<pool::HashPool>) -> anyhow::Result<PassDbChain> {
        let mut passdbs: Vec<Arc<dyn PassDb>> = Vec::new();
        for p in &config.passdbs {
            match p {
                PassDbConfig::PasswdFile {
                    path,
                    default_scheme,
                } => {
                    passdbs.push(Arc::new(passwd_file::PasswdFile::open(
                        &config.resolve(path),
                        default_scheme,
                        pool.clone(),
                    )?));
                }
                PassDbConfig::Http(c) => {
                    passdbs.push(Arc::new(http::HttpPassDb::from_config(c, config)?));
                }
            }
        }
        Ok(PassDbChain { passdbs })
    }

    pub async fn verify(&self, creds: &Credentials, client: &ClientFacts) -> Verdict {
        for p in &self.passdbs {
            match p.verify(creds, client).await {
                Answer::Unknown => continue,
                answer => {
                    return Verdict {
                        answer,
                        passdb: p.kind(),
                    }
                }
            }
        }
        Verdict {
            answer: Answer::Unknown,
            passdb: "none",
        }
    }
}

/// Password schemes this build can verify (`default_scheme` check).
pub fn scheme_supported(scheme: &str) -> bool {
    scheme::Scheme::parse(scheme).is_some()
}

/// Why a login failed at the edge; the relay turns it into the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Wrong password or unknown user: `NO [AUTHENTICATIONFAILED]
    /// Authentication failed`; close the connection afterwards if `close`.
    BadCredentials { close: bool },
    /// Right password, `nologin`: `NO [AUTHENTICATIONFAILED]` with this
    /// text.
    NoLogin(String),
    /// Refused for now (brute-force guard, full hashing queue, passdb
    /// down): `NO [UNAVAILABLE]` with this text.
    Unavailable(&'static str),
}

/// The client-visible text of a brute-force refusal.
pub const REFUSED_TEXT: &str = "Too many failed logins; try again later";
/// The client-visible text of a temporary failure.
pub const TEMPFAIL_TEXT: &str = "Authentication service unavailable; try again later";

/// What [`Authenticator::authenticate`] decided, with what the audit line
/// needs.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<UserInfo, Failure>,
    /// The passdb that answered (`none` when none did).
    pub passdb: &'static str,
    /// Why, for the audit line (never shown to the client).
    pub reason: Cow<'static, str>,
    /// Answered from the auth cache.
    pub cached: bool,
    /// Time spent waiting on purpose before a failure answer.
    pub delayed: Duration,
}

impl Outcome {
    /// Bounded label for the audit line and `imapgate_auth_attempts_total`.
    pub fn label(&self) -> &'static str {
        match &self.result {
            Ok(_) => "ok",
            Err(Failure::BadCredentials { .. }) => "failed",
            Err(Failure::NoLogin(_)) => "nologin",
            Err(Failure::Unavailable(t)) if *t == REFUSED_TEXT => "refused",
            Err(Failure::Unavailable(_)) => "tempfail",
        }
    }
}

/// Everything between a login request and a verdict: brute-force guard,
/// cache, passdbs, hashing pool.  Built with the [`Runtime`], so a reload
/// brings a new cache (empty) and new settings; the brute-force tables are
/// process-wide and carry over.
///
/// [`Runtime`]: crate::runtime::Runtime
pub struct Authenticator {
    chain: PassDbChain,
    cache: Option<cache::AuthCache>,
    guard: bruteforce::Guard,
}

impl Authenticator {
    pub fn from_config(config: &Config) -> anyhow::Result<Authenticator> {
        let a = &config.auth;
        let pool = Arc::new(pool::HashPool::new(a.hash_concurrency, a.hash_queue));
        let chain = PassDbChain::from_config(config, &pool)?;
        Ok(Authenticator::new(chain, config, bruteforce::shared()))
    }

    /// An authenticator over `chain` with `config`'s `[auth]` settings and
    /// the given brute-force tables.
    pub fn new(
        chain: PassDbChain,
        config: &Config,
        tables: Arc<bruteforce::Tables>,
    ) -> Authenticator {
        let c = &config.auth.cache;
        let cache = (c.size > 0).then(|| {
            cache::AuthCache::new(
                c.size,
                Duration::from_secs(c.positive_ttl_secs),
                Duration::from_secs(c.negative_ttl_secs),
            )
        });
        Authenticator {
            chain,
            cache,
            guard: bruteforce::Guard::new(
                bruteforce::Settings::from_config(&config.auth.brute_force),
                tables,
            ),
        }
    }

    /// Decide a login.  Failure answers are delayed here (brute-force
    /// delay, or the passdb's `Auth-Wait`), so the caller just answers.
    pub async fn authenticate(&self, creds: &Credentials, client: &ClientFacts) -> Outcome {
        let m = crate::metrics::get();
        if let Some(scope) = self.guard.check(client.ip, &creds.username) {
            m.auth_refusals.with_label_values(&[scope.label()]).inc();
            return Outcome {
                result: Err(Failure::Unavailable(REFUSED_TEXT)),
                passdb: "none",
                reason: Cow::Borrowed(match scope {
                    bruteforce::Scope::Ip => "too many failures from this network",
                    bruteforce::Scope::User => "too many failures for this user",
                }),
                cached: false,
                delayed: Duration::ZERO,
            };
        }
        let cached = self.cache.as_ref().and_then(|c| c.get(creds));
        if self.cache.is_some() {
            m.auth_cache_lookup(cached.is_some());
        }
        let (answer, passdb, was_cached) = match cached {
            Some((answer, passdb)) => (answer, passdb, true),
            None => {
                let v = self.chain.verify(creds, client).await;
                if let Some(c) = &self.cache {
                    c.put(creds, &v.answer, v.passdb);
                }
                (v.answer, v.passdb, false)
            }
        };
        let mut outcome = Outcome {
            result: Err(Failure::BadCredentials { close: false }),
            passdb,
            reason: Cow::Borrowed(""),
            cached: was_cached,
            delayed: Duration::ZERO,
        };
        let (reason, wait, close) = match answer {
            Answer::Accept(info) => {
                if let Some(text) = &info.nologin {
                    // The password was right: neither a failure to count
                    // nor a success that resets the counters.
                    outcome.result = Err(Failure::NoLogin(client_text(text)));
                    outcome.reason = Cow::Borrowed("nologin");
                } else {
                    self.guard.succeeded(client.ip, &creds.username);
                    outcome.result = Ok(info);
                }
                return outcome;
            }
            Answer::TempFail(why) => {
                outcome.result = Err(Failure::Unavailable(TEMPFAIL_TEXT));
                outcome.reason = Cow::Owned(why);
                return outcome;
            }
            Answer::Reject(r) => (r.reason, r.wait, r.close),
            Answer::Unknown => (Cow::Borrowed("unknown user"), None, false),
        };
        outcome.result = Err(Failure::BadCredentials { close });
        outcome.reason = reason;
        let guard_delay = self.guard.failed(client.ip, &creds.username);
        let delay = match (guard_delay, wait) {
            (Some((d, scope)), w) if w.is_none_or(|w| d >= w) => {
                m.auth_delays.with_label_values(&[scope.label()]).inc();
                d
            }
            (_, Some(w)) => {
                m.auth_delays.with_label_values(&["passdb"]).inc();
                w
            }
            _ => Duration::ZERO,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
            outcome.delayed = delay;
        }
        outcome
    }

    /// Entries in the auth cache (0 when it is off).
    pub fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }
}

/// Text from a passdb made safe for an IMAP `resp-text` (RFC 9051 §9):
/// printable, no CR/LF, not starting with `[`, bounded.
fn client_text(text: &str) -> String {
    let t: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .trim_start_matches('[')
        .to_owned();
    if t.is_empty() {
        "Login disabled".to_owned()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A passdb that counts its calls and answers from a fixed table.
    struct Fixed {
        calls: AtomicUsize,
    }

    impl PassDb for Fixed {
        fn kind(&self) -> &'static str {
            "fixed"
        }
        fn verify<'a>(&'a self, c: &'a Credentials, _: &'a ClientFacts) -> BoxFuture<'a, Answer> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match (c.username.as_str(), c.password.expose().as_slice()) {
                    ("alice", b"right") => Answer::Accept(UserInfo {
                        user: "alice".into(),
                        ..UserInfo::default()
                    }),
                    ("carol", b"right") => Answer::Accept(UserInfo {
                        user: "carol".into(),
                        nologin: Some("Account moved\r\n[x]".into()),
                        ..UserInfo::default()
                    }),
                    ("alice" | "carol", _) => Answer::Reject(Rejection::new("password mismatch")),
                    ("down", _) => Answer::TempFail("service down".into()),
                    _ => Answer::Unknown,
                }
            })
        }
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[listener]]\nname = \"i\"\naddress = \"127.0.0.1:1\"\n[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n[[passdb]]\ntype = \"passwd-file\"\npath = \"users\"\n{extra}"
        );
        Config::parse(&text, "/".into()).unwrap()
    }

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: Secret::new(p.as_bytes().to_vec()),
        }
    }

    fn client(ip: &str) -> ClientFacts {
        ClientFacts {
            ip: ip.parse().unwrap(),
            attempt: 1,
            tls: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cache_guard_and_answers() {
        let fixed = Arc::new(Fixed {
            calls: AtomicUsize::new(0),
        });
        let auth = Authenticator::new(
            PassDbChain::new(vec![fixed.clone()]),
            &config(
                "[auth.brute_force]\ndelay_after = 1\ndelay_initial_ms = 1000\nip_refuse_after = 3\n",
            ),
            Arc::new(bruteforce::Tables::new(100)),
        );
        let c = client("192.0.2.1");
        let o = auth.authenticate(&creds("alice", "right"), &c).await;
        assert_eq!((o.label(), o.passdb, o.cached), ("ok", "fixed", false));
        let o = auth.authenticate(&creds("alice", "right"), &c).await;
        assert_eq!((o.label(), o.cached), ("ok", true));
        assert_eq!(fixed.calls.load(Ordering::SeqCst), 1);

        // Unknown user and wrong password: the same failure.
        let o = auth.authenticate(&creds("mallory", "x"), &c).await;
        assert_eq!(o.result, Err(Failure::BadCredentials { close: false }));
        assert_eq!((o.passdb, &*o.reason), ("none", "unknown user"));
        let started = tokio::time::Instant::now();
        let o = auth.authenticate(&creds("alice", "wrong"), &c).await;
        assert_eq!(o.result, Err(Failure::BadCredentials { close: false }));
        assert_eq!(o.delayed, Duration::from_secs(1));
        assert!(started.elapsed() >= Duration::from_secs(1));
        let o = auth.authenticate(&creds("alice", "wrong"), &c).await;
        assert!(o.cached);
        assert_eq!(o.delayed, Duration::from_secs(2));
        // Third failure reached: refused without asking the passdb.
        let calls = fixed.calls.load(Ordering::SeqCst);
        let o = auth.authenticate(&creds("alice", "right"), &c).await;
        assert_eq!(
            (o.label(), o.result.clone()),
            ("refused", Err(Failure::Unavailable(REFUSED_TEXT)))
        );
        assert_eq!(fixed.calls.load(Ordering::SeqCst), calls);
        // Another network is fine; its success does not reset the first.
        assert_eq!(
            auth.authenticate(&creds("alice", "right"), &client("192.0.2.2"))
                .await
                .label(),
            "ok"
        );

        let o = auth
            .authenticate(&creds("down", "x"), &client("192.0.2.3"))
            .await;
        assert_eq!((o.label(), &*o.reason), ("tempfail", "service down"));
        let o = auth
            .authenticate(&creds("carol", "right"), &client("192.0.2.3"))
            .await;
        assert_eq!(o.result, Err(Failure::NoLogin("Account moved[x]".into())));
    }

    #[test]
    fn client_text_is_safe() {
        assert_eq!(client_text(""), "Login disabled");
        assert_eq!(client_text("[ALERT] moved\r\n* BYE"), "ALERT] moved* BYE");
    }
}
