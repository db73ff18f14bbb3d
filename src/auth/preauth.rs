//! PREAUTH rules: who is logged in by the gateway without credentials
//! (arrow 2 of the RFC 3501 §3 diagram).
//!
//! A rule matches on the client's network and/or its verified TLS client
//! certificate, and says how the user is determined: a fixed user, or a
//! name taken from the certificate (SAN e-mail or CN), optionally required
//! to end in `@domain` and then reduced to its local part.  No rule, no
//! PREAUTH; a certificate whose identity cannot be mapped gets the ordinary
//! OK greeting.  The gateway then logs in to the backend as a master user.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::tls::identity::CertIdentity;

/// Which certificate name becomes the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertName {
    /// The first SAN rfc822Name (or subject emailAddress).
    Email,
    /// The subject's commonName.
    Cn,
}

/// One `[[preauth]]` rule as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreauthRule {
    /// Listeners the rule applies to; empty = all.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Client networks that match; empty = any network (then a
    /// certificate condition is required, see `validate`).
    #[serde(default)]
    pub networks: Vec<IpNet>,
    /// A fixed user for every matching client.
    pub user: Option<String>,
    /// Take the user from the verified client certificate.
    pub certificate: Option<CertName>,
    /// With `certificate`: the name must end in `@domain`; the user is the
    /// part before it.
    pub domain: Option<String>,
}

impl PreauthRule {
    /// Config checks: exactly one way to name the user, and no rule that
    /// would pre-authenticate the whole Internet as one user.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.user, &self.certificate) {
            (Some(_), Some(_)) => Err("set either `user` or `certificate`, not both".into()),
            (None, None) => Err("set `user` or `certificate`".into()),
            (Some(u), None) if self.networks.is_empty() => Err(format!(
                "a fixed user ({u:?}) needs `networks`: otherwise anyone is {u:?}"
            )),
            (Some(u), None) if u.is_empty() || u.chars().any(char::is_control) => {
                Err("invalid `user`".into())
            }
            _ => Ok(()),
        }
    }

    /// The user this rule pre-authenticates the client as, if it matches.
    pub fn user_for(
        &self,
        listener: &str,
        ip: IpAddr,
        cert: Option<&CertIdentity>,
    ) -> Option<String> {
        if !self.listeners.is_empty() && !self.listeners.iter().any(|l| l == listener) {
            return None;
        }
        if !self.networks.is_empty() && !self.networks.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        if let Some(u) = &self.user {
            return Some(u.clone());
        }
        let name = match self.certificate? {
            CertName::Email => cert?.emails.first()?.clone(),
            CertName::Cn => cert?.common_name.clone()?,
        };
        let user = match &self.domain {
            Some(domain) => {
                let (local, d) = name.rsplit_once('@')?;
                if !d.eq_ignore_ascii_case(domain) {
                    return None;
                }
                local.to_owned()
            }
            None => name,
        };
        // Certificate names are attacker-influenced if a CA is careless:
        // nothing that could confuse a backend login or a log line.
        let ok = !user.is_empty()
            && user.len() <= 256
            && !user.chars().any(|c| c.is_control() || c == '*' || c == ' ');
        ok.then_some(user)
    }
}

/// The first matching rule's user.
pub fn match_rules(
    rules: &[PreauthRule],
    listener: &str,
    ip: IpAddr,
    cert: Option<&CertIdentity>,
) -> Option<String> {
    rules.iter().find_map(|r| r.user_for(listener, ip, cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> PreauthRule {
        let r: PreauthRule = toml::from_str(toml_text).unwrap();
        r.validate().unwrap();
        r
    }

    fn cert(cn: Option<&str>, email: Option<&str>) -> CertIdentity {
        CertIdentity {
            common_name: cn.map(String::from),
            emails: email.into_iter().map(String::from).collect(),
            dns_names: vec![],
        }
    }

    #[test]
    fn fixed_user_by_network() {
        let r = rule("networks = [\"127.0.0.2/32\"]\nuser = \"bob\"");
        assert_eq!(
            r.user_for("imap", "127.0.0.2".parse().unwrap(), None),
            Some("bob".into())
        );
        assert_eq!(r.user_for("imap", "127.0.0.1".parse().unwrap(), None), None);
    }

    #[test]
    fn certificate_email_with_domain() {
        let r = rule("certificate = \"email\"\ndomain = \"example.com\"");
        let ip = "198.51.100.7".parse().unwrap();
        assert_eq!(
            r.user_for("x", ip, Some(&cert(None, Some("alice@EXAMPLE.com")))),
            Some("alice".into())
        );
        assert_eq!(
            r.user_for("x", ip, Some(&cert(None, Some("alice@evil.com")))),
            None
        );
        assert_eq!(r.user_for("x", ip, Some(&cert(Some("alice"), None))), None);
        assert_eq!(r.user_for("x", ip, None), None);
        assert_eq!(
            r.user_for("x", ip, Some(&cert(None, Some("a\r\nb@example.com")))),
            None
        );
        let cn = rule("certificate = \"cn\"\nlisteners = [\"imaps\"]");
        assert_eq!(
            cn.user_for("imaps", ip, Some(&cert(Some("carol"), None))),
            Some("carol".into())
        );
        assert_eq!(
            cn.user_for("imap", ip, Some(&cert(Some("carol"), None))),
            None
        );
    }

    #[test]
    fn unsafe_rules_rejected() {
        let r: PreauthRule = toml::from_str("user = \"bob\"").unwrap();
        assert!(r.validate().unwrap_err().contains("networks"));
        let r: PreauthRule = toml::from_str("networks = [\"10.0.0.0/8\"]").unwrap();
        assert!(r.validate().is_err());
        let r: PreauthRule =
            toml::from_str("networks = [\"10.0.0.0/8\"]\nuser = \"a\"\ncertificate = \"cn\"")
                .unwrap();
        assert!(r.validate().is_err());
    }
}
