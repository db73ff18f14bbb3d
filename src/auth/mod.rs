//! Edge authentication: the `PassDb` trait, the passdbs, and the ordered
//! chain the session's LOGIN/AUTHENTICATE goes through.
//!
//! A passdb answers for one user: accepted (with the canonical name and
//! routing hints), rejected, not known here (the next passdb is asked), or
//! temporarily failed (the client gets `NO [UNAVAILABLE]`, never "wrong
//! password").  Secrets stay in [`Secret`] and are compared in constant time.

pub mod passwd_file;

use std::sync::Arc;

use crate::config::{Config, PassDbConfig};
use crate::imap::Secret;

/// What the passdb knows about an accepted user beyond "yes".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Canonical user name (the `user=` extra field may rename).
    pub user: String,
    /// Backend host/port for this user (`host=`, `port=` extra fields).
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// One passdb's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accept(UserInfo),
    /// Known user, wrong password (or `nologin`).
    Reject {
        reason: &'static str,
    },
    /// Not in this passdb: ask the next.
    Unknown,
    /// Could not decide (file unreadable, service down).
    TempFail(String),
}

/// Credentials to check.
#[derive(Debug)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a Secret<Vec<u8>>,
}

pub trait PassDb: Send + Sync {
    /// Label for logs and metrics (`passwd-file`, `http`).
    fn kind(&self) -> &'static str;
    fn verify(&self, creds: &Credentials<'_>) -> Answer;
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
    pub fn from_config(config: &Config) -> anyhow::Result<PassDbChain> {
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
                    )?));
                }
            }
        }
        Ok(PassDbChain { passdbs })
    }

    pub fn verify(&self, creds: &Credentials<'_>) -> Verdict {
        for p in &self.passdbs {
            match p.verify(creds) {
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

/// Password schemes this build can verify.
pub fn scheme_supported(scheme: &str) -> bool {
    passwd_file::Scheme::parse(scheme).is_some()
}
