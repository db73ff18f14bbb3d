//! The SASL mechanisms the gateway implements for `AUTHENTICATE`
//! (RFC 9051 §6.2.2): PLAIN (RFC 4616) and LOGIN
//! (draft-murchison-sasl-login).  A listener's `mechanisms` setting is a
//! list of these, so a name the gateway cannot run is refused when the
//! config is read, never at a client's login.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

    /// The registered name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// The capability that advertises it (RFC 9051 §7.2.2).
    pub fn capability(self) -> &'static str {
        match self {
            Mechanism::Plain => "AUTH=PLAIN",
            Mechanism::Login => "AUTH=LOGIN",
        }
    }

    /// SASL mechanism names are case-insensitive (RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Mechanism {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mechanism, D::Error> {
        let name = String::deserialize(d)?;
        Mechanism::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unsupported SASL mechanism {name:?} (supported: PLAIN, LOGIN)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(Mechanism::from_name("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("Login"), Some(Mechanism::Login));
        assert_eq!(Mechanism::from_name("SCRAM-SHA-256"), None);
        assert_eq!(Mechanism::Plain.capability(), "AUTH=PLAIN");
    }
}
