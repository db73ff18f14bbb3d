//! passdb `passwd-file`: Dovecot's format, one user per line:
//! `user:{SCHEME}secret:uid:gid:gecos:home:shell:extra_fields`.
//!
//! Only the first two fields and the extra fields matter at the edge.
//! Extra fields are space-separated `key=value` or bare `key`
//! (`host=10.0.0.5 port=143 nologin user=alice`).
//!
//! The file is re-read when its modification time changes (checked at most
//! once a second, on lookups).  A broken file keeps the last good copy and
//! logs the line at fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;

use super::{Answer, Credentials, PassDb, UserInfo};
use crate::imap::Secret;

/// How a stored secret is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `{PLAIN}` / `{CLEARTEXT}`: the password itself.
    Plain,
}

impl Scheme {
    pub fn parse(name: &str) -> Option<Scheme> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" | "CLEARTEXT" => Some(Scheme::Plain),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    scheme: Scheme,
    secret: Secret<Vec<u8>>,
    info: UserInfo,
    nologin: bool,
}

type Table = HashMap<String, Entry>;

pub struct PasswdFile {
    path: PathBuf,
    default_scheme: Scheme,
    table: ArcSwap<Table>,
    /// Last time the file was looked at, and its mtime then.
    checked: Mutex<(Instant, Option<SystemTime>)>,
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
    pub fn open(path: &Path, default_scheme: &str) -> anyhow::Result<PasswdFile> {
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
                tracing::info!(path = %self.path.display(), users = table.len(), "passwd-file reloaded");
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

    fn verify(&self, creds: &Credentials<'_>) -> Answer {
        self.refresh();
        let table = self.table.load();
        let Some(entry) = table.get(creds.username) else {
            // Same work as a known user, so timing does not tell them apart.
            let _ = Secret::new(b"not a user".to_vec()).ct_eq(creds.password.expose());
            return Answer::Unknown;
        };
        let matches = match entry.scheme {
            Scheme::Plain => entry.secret.ct_eq(creds.password.expose()),
        };
        if !matches {
            Answer::Reject {
                reason: "password mismatch",
            }
        } else if entry.nologin {
            Answer::Reject { reason: "nologin" }
        } else {
            Answer::Accept(entry.info.clone())
        }
    }
}

fn parse(text: &str, default_scheme: Scheme, path: &Path) -> Result<Table, LineError> {
    let mut table = Table::new();
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
        let (scheme, secret) = match password.strip_prefix('{').and_then(|p| p.split_once('}')) {
            Some((name, secret)) => (
                Scheme::parse(name)
                    .ok_or_else(|| err(format!("user {user:?}: unsupported scheme {{{name}}}")))?,
                secret,
            ),
            None => (default_scheme, password),
        };
        let mut info = UserInfo {
            user: user.to_owned(),
            ..UserInfo::default()
        };
        let mut nologin = false;
        for field in fields.get(7).copied().unwrap_or("").split_whitespace() {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            match key {
                "host" => info.host = Some(value.to_owned()),
                "port" => {
                    info.port = Some(
                        value
                            .parse()
                            .map_err(|_| err(format!("user {user:?}: bad port {value:?}")))?,
                    )
                }
                "user" => info.user = value.to_owned(),
                "nologin" => nologin = true,
                // Other Dovecot extra fields (proxy, reason, …) are not ours.
                _ => {}
            }
        }
        table.insert(
            user.to_owned(),
            Entry {
                scheme,
                secret: Secret::new(secret.as_bytes().to_vec()),
                info,
                nologin,
            },
        );
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(db: &PasswdFile, user: &str, pw: &str) -> Answer {
        db.verify(&Credentials {
            username: user,
            password: &Secret::new(pw.as_bytes().to_vec()),
        })
    }

    #[test]
    fn plain_entries_and_extra_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(
            &path,
            "# demo\nalice:{PLAIN}wonderland\nbob:builder:1000:1000::/home/bob::host=10.0.0.5 port=10143\ncarol:{CLEARTEXT}x::::::nologin\n",
        )
        .unwrap();
        let db = PasswdFile::open(&path, "PLAIN").unwrap();
        assert!(
            matches!(verify(&db, "alice", "wonderland"), Answer::Accept(i) if i.user == "alice")
        );
        assert_eq!(
            verify(&db, "alice", "wrong"),
            Answer::Reject {
                reason: "password mismatch"
            }
        );
        assert_eq!(verify(&db, "nobody", "x"), Answer::Unknown);
        match verify(&db, "bob", "builder") {
            Answer::Accept(i) => {
                assert_eq!((i.host.as_deref(), i.port), (Some("10.0.0.5"), Some(10143)))
            }
            a => panic!("{a:?}"),
        }
        assert_eq!(
            verify(&db, "carol", "x"),
            Answer::Reject { reason: "nologin" }
        );
    }

    #[test]
    fn broken_reload_keeps_last_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "alice:{PLAIN}wonderland\n").unwrap();
        let db = PasswdFile::open(&path, "PLAIN").unwrap();
        std::fs::write(&path, "alice:{PLAIN}new\nbad:{NOPE}x\n").unwrap();
        // Force the recheck now rather than sleeping.
        *db.checked.lock().unwrap() = (Instant::now() - RECHECK * 2, None);
        assert!(matches!(
            verify(&db, "alice", "wonderland"),
            Answer::Accept(_)
        ));
        std::fs::write(&path, "alice:{PLAIN}new\n").unwrap();
        *db.checked.lock().unwrap() = (Instant::now() - RECHECK * 2, None);
        assert!(matches!(verify(&db, "alice", "new"), Answer::Accept(_)));
    }

    #[test]
    fn line_errors_name_the_line() {
        let e = parse("ok:{PLAIN}x\n:nouser\n", Scheme::Plain, Path::new("users")).unwrap_err();
        assert_eq!(e.to_string(), "users:2: empty user name");
    }
}
