//! passdb `passwd-file`: Dovecot's format, one user per line:
//! `user:{SCHEME}secret:uid:gid:gecos:home:shell:extra_fields`.
//!
//! Only the first two fields and the extra fields matter at the edge.
//! Extra fields are space-separated `key=value` or bare `key`
//! (`host=10.0.0.5 port=143 nologin reason="Moved" user=alice`); used are
//! `host`, `port`, `user` (canonical name), `destuser` and `pass` (the
//! backend login, as with Dovecot's proxy), `nologin` and `reason`.
//! Secrets use the [schemes](super::scheme) Dovecot writes; an entry
//! without `{SCHEME}` uses `default_scheme`.  Slow schemes are verified in
//! the [hashing pool](super::pool); an unknown user costs a verification
//! against the file's most expensive secret, so timing does not reveal
//! which users exist.
//!
//! The file is re-read when its modification time changes (checked at most
//! once a second, on lookups).  A broken file keeps the last good copy and
//! logs the line at fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;

use super::pool::HashPool;
use super::scheme::{Encoding, Scheme, Stored};
use super::{Answer, BoxFuture, ClientFacts, Credentials, PassDb, Rejection, UserInfo};
use crate::imap::Secret;

#[derive(Debug, Clone)]
struct Entry {
    stored: Arc<Stored>,
    info: UserInfo,
}

#[derive(Default)]
struct Table {
    users: HashMap<String, Entry>,
    /// Checked against for unknown users, so they take the same time as
    /// known ones: the most expensive secret in the file.
    dummy: Option<Arc<Stored>>,
}

pub struct PasswdFile {
    path: PathBuf,
    default_scheme: (Scheme, Encoding),
    table: ArcSwap<Table>,
    /// Last time the file was looked at, and its mtime then.
    checked: Mutex<(Instant, Option<SystemTime>)>,
    pool: Arc<HashPool>,
}

/// A line that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct LineError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

const RECHECK: Duration = Duration::from_secs(1);

impl PasswdFile {
    pub fn open(
        path: &Path,
        default_scheme: &str,
        pool: Arc<HashPool>,
    ) -> anyhow::Result<PasswdFile> {
        let default_scheme = Scheme::parse(default_scheme)
            .with_context(|| format!("unsupported default_scheme {default_scheme:?}"))?;
        let mtime = mtime(path);
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("passdb passwd-file: cannot read {}", path.display()))?;
        let table = parse(&text, default_scheme, path)?;
        Ok(PasswdFile {
            path: path.to_owned(),
            default_scheme,
            table: ArcSwap::from_pointee(table),
            checked: Mutex::new((Instant::now(), mtime)),
            pool,
        })
    }

    /// Re-read the file if it changed; keep the old table if it is broken.
    fn refresh(&self) {
        let Ok(mut checked) = self.checked.lock() else {
            return;
        };
        if checked.0.elapsed() < RECHECK {
            return;
        }
        checked.0 = Instant::now();
        let now = mtime(&self.path);
        if now == checked.1 {
            return;
        }
        checked.1 = now;
        match std::fs::read_to_string(&self.path)
            .map_err(anyhow::Error::from)
            .and_then(|t| parse(&t, self.default_scheme, &self.path).map_err(anyhow::Error::from))
        {
            Ok(table) => {
                tracing::info!(path = %self.path.display(), users = table.users.len(), "passwd-file reloaded");
                self.table.store(table.into());
            }
            Err(e) => {
                tracing::error!(error = %e, "passwd-file not reloaded; keeping the last good copy")
            }
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl PassDb for PasswdFile {
    fn kind(&self) -> &'static str {
        "passwd-file"
    }

    fn verify<'a>(
        &'a self,
        creds: &'a Credentials,
        _client: &'a ClientFacts,
    ) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            self.refresh();
            let table = self.table.load_full();
            let (stored, info) = match table.users.get(&creds.username) {
                Some(e) => (e.stored.clone(), Some(e.info.clone())),
                // Same work as a known user, so timing does not tell them
                // apart; the result is thrown away.
                None => match &table.dummy {
                    Some(d) => (d.clone(), None),
                    None => return Answer::Unknown,
                },
            };
            let matches = if stored.scheme().expensive() {
                let password = creds.password.clone();
                match self
                    .pool
                    .run(move || stored.verify(password.expose()))
                    .await
                {
                    Ok(m) => m,
                    Err(e) => return Answer::TempFail(e.to_string()),
                }
            } else {
                stored.verify(creds.password.expose())
            };
            match info {
                None => Answer::Unknown,
                Some(info) if matches => Answer::Accept(info),
                Some(_) => Answer::Reject(Rejection::new("password mismatch")),
            }
        })
    }
}

fn parse(text: &str, default_scheme: (Scheme, Encoding), path: &Path) -> Result<Table, LineError> {
    let mut table = Table::default();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| LineError {
            path: path.display().to_string(),
            line: i + 1,
            message,
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.splitn(8, ':').collect();
        let user = fields[0];
        if user.is_empty() {
            return Err(err("empty user name".into()));
        }
        let Some(&password) = fields.get(1) else {
            return Err(err(format!("user {user:?}: no password field")));
        };
        let ((scheme, encoding), secret) =
            match password.strip_prefix('{').and_then(|p| p.split_once('}')) {
                Some((name, secret)) => (
                    Scheme::parse(name).ok_or_else(|| {
                        err(format!("user {user:?}: unsupported scheme {{{name}}}"))
                    })?,
                    secret,
                ),
                None => (default_scheme, password),
            };
        // The message names the scheme, never the secret.
        let stored = Stored::parse(scheme, encoding, secret)
            .map_err(|m| err(format!("user {user:?}: {{{}}}: {m}", scheme.name())))?;
        let mut info = UserInfo {
            user: user.to_owned(),
            ..UserInfo::default()
        };
        let mut nologin = false;
        let mut reason = String::new();
        let extra = fields.get(7).copied().unwrap_or("");
        for (key, value) in extra_fields(extra).map_err(|m| err(format!("user {user:?}: {m}")))? {
            match key {
                "host" => info.host = Some(value),
                "port" => {
                    info.port = Some(
                        value
                            .parse()
                            .map_err(|_| err(format!("user {user:?}: bad port {value:?}")))?,
                    )
                }
                "user" => info.user = value,
                // Dovecot's proxy fields: the backend login.
                "destuser" => info.backend_user = Some(value),
                "pass" => info.backend_password = Some(Secret::new(value.into_bytes())),
                "nologin" => nologin = true,
                "reason" => reason = value,
                // Other Dovecot extra fields (proxy, …) are not ours.
                _ => {}
            }
        }
        if nologin {
            info.nologin = Some(reason);
        }
        let stored = Arc::new(stored);
        let costlier = table
            .dummy
            .as_ref()
            .is_none_or(|d| !d.scheme().expensive() && stored.scheme().expensive());
        if costlier {
            table.dummy = Some(stored.clone());
        }
        table.users.insert(user.to_owned(), Entry { stored, info });
    }
    Ok(table)
}

/// Dovecot extra fields: space-separated `key=value` or bare `key`; a
/// value may be double-quoted to hold spaces (`reason="Moved to X"`, with
/// `\"` and `\\` escapes inside).
fn extra_fields(text: &str) -> Result<Vec<(&str, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            if let Some(quoted) = after.strip_prefix('"') {
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                let end = end.ok_or_else(|| format!("extra field {key}: unterminated quote"))?;
                rest = &quoted[end..];
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                value.push_str(&after[..end]);
                rest = &after[end..];
            }
        }
        if key.is_empty() {
            return Err("extra field without a name".into());
        }
        out.push((key, value));
        rest = rest.trim_start();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Arc<HashPool> {
        Arc::new(HashPool::new(2, 8))
    }

    async fn verify(db: &PasswdFile, user: &str, pw: &str) -> Answer {
        let client = ClientFacts {
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            attempt: 1,
            tls: None,
        };
        db.verify(
            &Credentials {
                username: user.into(),
                password: Secret::new(pw.as_bytes().to_vec()),
            },
            &client,
        )
        .await
    }

    fn mismatch() -> Answer {
        Answer::Reject(Rejection::new("password mismatch"))
    }

    #[tokio::test]
    async fn entries_schemes_and_extra_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(
            &path,
            concat!(
                "# demo\n",
                "alice:{PLAIN}wonderland\n",
                "bob:builder:1000:1000::/home/bob::host=10.0.0.5 port=10143\n",
                "carol:{CLEARTEXT}x::::::nologin reason=\"Moved to \\\"B\\\"\" user=Carol\n",
                "dave:{BLF-CRYPT}$2y$05$NhxWqpurSXUZzPpEcXVPf.05KbfojRC1O3M5GMjgj6ZsAH3yhGMKG::::::destuser=d2 pass=secret2\n",
            ),
        )
        .unwrap();
        let db = PasswdFile::open(&path, "PLAIN", pool()).unwrap();
        assert!(
            matches!(verify(&db, "alice", "wonderland").await, Answer::Accept(i) if i.user == "alice")
        );
        assert_eq!(verify(&db, "alice", "wrong").await, mismatch());
        assert_eq!(verify(&db, "nobody", "x").await, Answer::Unknown);
        match verify(&db, "bob", "builder").await {
            Answer::Accept(i) => {
                assert_eq!((i.host.as_deref(), i.port), (Some("10.0.0.5"), Some(10143)))
            }
            a => panic!("{a:?}"),
        }
        match verify(&db, "carol", "x").await {
            Answer::Accept(i) => {
                assert_eq!(i.user, "Carol");
                assert_eq!(i.nologin.as_deref(), Some("Moved to \"B\""));
            }
            a => panic!("{a:?}"),
        }
        match verify(&db, "dave", "pä ss:%w").await {
            Answer::Accept(i) => {
                assert_eq!(i.backend_user.as_deref(), Some("d2"));
                assert!(i.backend_password.unwrap().ct_eq(b"secret2"));
            }
            a => panic!("{a:?}"),
        }
        assert_eq!(verify(&db, "dave", "wonderland").await, mismatch());
        // The dummy for unknown users is the costliest secret (bcrypt).
        assert_eq!(
            db.table.load().dummy.as_ref().map(|d| d.scheme()),
            Some(Scheme::BlfCrypt)
        );
    }

    #[tokio::test]
    async fn broken_reload_keeps_last_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "alice:{PLAIN}wonderland\n").unwrap();
        let db = PasswdFile::open(&path, "PLAIN", pool()).unwrap();
        std::fs::write(&path, "alice:{PLAIN}new\nbad:{NOPE}x\n").unwrap();
        // Force the recheck now rather than sleeping.
        *db.checked.lock().unwrap() = (Instant::now() - RECHECK * 2, None);
        assert!(matches!(
            verify(&db, "alice", "wonderland").await,
            Answer::Accept(_)
        ));
        std::fs::write(&path, "alice:{PLAIN}new\n").unwrap();
        *db.checked.lock().unwrap() = (Instant::now() - RECHECK * 2, None);
        assert!(matches!(
            verify(&db, "alice", "new").await,
            Answer::Accept(_)
        ));
    }

    #[test]
    fn line_errors_name_the_line_not_the_secret() {
        let plain = (Scheme::Plain, Encoding::Default);
        let e = parse("ok:{PLAIN}x\n:nouser\n", plain, Path::new("users"))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "users:2: empty user name");
        let e = parse(
            "u:{SHA512-CRYPT}$6$s3cr3tsalt$zz\n",
            plain,
            Path::new("users"),
        )
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .starts_with("users:1: user \"u\": {SHA512-CRYPT}: "),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = parse("u:x::::::reason=\"open\n", plain, Path::new("users"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("unterminated"), "{e}");
    }
}
