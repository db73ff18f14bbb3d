//! Password schemes in Dovecot's notation (`{SCHEME}secret`), as
//! `doveadm pw -s SCHEME` writes them:
//!
//! | scheme                | stored form                                      |
//! |-----------------------|--------------------------------------------------|
//! | `PLAIN`, `CLEARTEXT`, `CLEAR` | the password itself                      |
//! | `SSHA256`, `SSHA512`  | base64(SHA-2(password ‖ salt) ‖ salt)            |
//! | `SHA256-CRYPT`, `SHA512-CRYPT` | `$5$…` / `$6$[rounds=N$]salt$hash` (Drepper's SHA-crypt) |
//! | `BLF-CRYPT`           | bcrypt, `$2y$cost$…` (also `$2a$`, `$2b$`)        |
//! | `ARGON2I`, `ARGON2ID` | PHC string `$argon2id$v=19$m=…,t=…,p=…$salt$hash` |
//!
//! `PLAIN` and `SSHA*` accept Dovecot's encoding suffix: `{SSHA512.HEX}`,
//! `{PLAIN.B64}` (`.BASE64` too).
//!
//! Stored secrets are parsed and checked when the passdb loads, so a
//! malformed hash is an error naming its line rather than a user who can
//! never log in.  Every comparison is constant-time (`subtle`, or the
//! crates' own constant-time compare for bcrypt and argon2); the expensive
//! schemes run in the [hashing pool](super::pool).

use std::fmt;

use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::imap::Secret;

/// How a stored secret is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Plain,
    Ssha256,
    Ssha512,
    Sha256Crypt,
    Sha512Crypt,
    BlfCrypt,
    Argon2i,
    Argon2id,
}

/// How the stored bytes of `PLAIN`/`SSHA*` are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The scheme's default: raw for `PLAIN`, base64 for `SSHA*`.
    Default,
    Hex,
    Base64,
}

impl Scheme {
    /// Parse a scheme name (case-insensitive), with an optional encoding
    /// suffix (`SSHA512.HEX`).
    pub fn parse(name: &str) -> Option<(Scheme, Encoding)> {
        let upper = name.to_ascii_uppercase();
        let (base, encoding) = match upper.rsplit_once('.') {
            Some((b, "HEX")) => (b, Encoding::Hex),
            Some((b, "B64" | "BASE64")) => (b, Encoding::Base64),
            Some(_) => return None,
            None => (upper.as_str(), Encoding::Default),
        };
        let scheme = match base {
            "PLAIN" | "CLEARTEXT" | "CLEAR" => Scheme::Plain,
            "SSHA256" => Scheme::Ssha256,
            "SSHA512" => Scheme::Ssha512,
            "SHA256-CRYPT" => Scheme::Sha256Crypt,
            "SHA512-CRYPT" => Scheme::Sha512Crypt,
            "BLF-CRYPT" => Scheme::BlfCrypt,
            "ARGON2I" => Scheme::Argon2i,
            "ARGON2ID" => Scheme::Argon2id,
            _ => return None,
        };
        if encoding != Encoding::Default
            && !matches!(scheme, Scheme::Plain | Scheme::Ssha256 | Scheme::Ssha512)
        {
            return None;
        }
        Some((scheme, encoding))
    }

    /// Label for logs.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Plain => "PLAIN",
            Scheme::Ssha256 => "SSHA256",
            Scheme::Ssha512 => "SSHA512",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Argon2id => "ARGON2ID",
        }
    }

    /// Costly enough (deliberately slow) to belong in the hashing pool.
    pub fn expensive(self) -> bool {
        matches!(
            self,
            Scheme::Sha256Crypt
                | Scheme::Sha512Crypt
                | Scheme::BlfCrypt
                | Scheme::Argon2i
                | Scheme::Argon2id
        )
    }
}

/// A stored secret, decoded and checked at load time.
#[derive(Clone)]
pub struct Stored(Inner);

#[derive(Clone)]
enum Inner {
    Plain(Secret<Vec<u8>>),
    Salted {
        sha512: bool,
        digest: Vec<u8>,
        salt: Vec<u8>,
    },
    ShaCrypt {
        sha512: bool,
        rounds: usize,
        salt: Vec<u8>,
        /// The hash part in crypt's base64 alphabet.
        hash: Vec<u8>,
    },
    Bcrypt(String),
    Argon2(String),
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stored({}, <redacted>)", self.scheme().name())
    }
}

impl Stored {
    /// Decode `text` (what follows `{SCHEME}`) for `scheme`.
    pub fn parse(scheme: Scheme, encoding: Encoding, text: &str) -> Result<Stored, String> {
        let bytes = |default_b64: bool| -> Result<Vec<u8>, String> {
            match (encoding, default_b64) {
                (Encoding::Hex, _) => hex_decode(text).ok_or_else(|| "invalid hex".to_owned()),
                (Encoding::Base64, _) | (Encoding::Default, true) => {
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .map_err(|_| "invalid base64".to_owned())
                }
                (Encoding::Default, false) => Ok(text.as_bytes().to_vec()),
            }
        };
        let inner = match scheme {
            Scheme::Plain => Inner::Plain(Secret::new(bytes(false)?)),
            Scheme::Ssha256 | Scheme::Ssha512 => {
                let sha512 = scheme == Scheme::Ssha512;
                let len = if sha512 { 64 } else { 32 };
                let mut raw = bytes(true)?;
                if raw.len() < len {
                    return Err(format!("{} value too short", scheme.name()));
                }
                let salt = raw.split_off(len);
                Inner::Salted {
                    sha512,
                    digest: raw,
                    salt,
                }
            }
            Scheme::Sha256Crypt | Scheme::Sha512Crypt => {
                parse_sha_crypt(scheme == Scheme::Sha512Crypt, text)?
            }
            Scheme::BlfCrypt => {
                let t = text.trim();
                let ok = t.len() == 60
                    && ["$2y$", "$2a$", "$2b$", "$2x$"]
                        .iter()
                        .any(|p| t.starts_with(p))
                    && t[4..6].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
                    && t.as_bytes()[6] == b'$';
                if !ok {
                    return Err("not a bcrypt hash ($2y$NN$ + 53 characters)".into());
                }
                Inner::Bcrypt(t.to_owned())
            }
            Scheme::Argon2i | Scheme::Argon2id => {
                let t = text.trim();
                let hash = argon2::PasswordHash::new(t)
                    .map_err(|e| format!("not an argon2 PHC string: {e}"))?;
                let want = if scheme == Scheme::Argon2i {
                    "argon2i"
                } else {
                    "argon2id"
                };
                if hash.algorithm.as_str() != want {
                    return Err(format!(
                        "{} hash uses {}",
                        scheme.name(),
                        hash.algorithm.as_str()
                    ));
                }
                // Parameters must be ones the argon2 crate accepts.
                argon2::Params::try_from(&hash).map_err(|e| format!("argon2 parameters: {e}"))?;
                if hash.hash.is_none() {
                    return Err("argon2 string without a hash".into());
                }
                Inner::Argon2(t.to_owned())
            }
        };
        Ok(Stored(inner))
    }

    pub fn scheme(&self) -> Scheme {
        match &self.0 {
            Inner::Plain(_) => Scheme::Plain,
            Inner::Salted { sha512: true, .. } => Scheme::Ssha512,
            Inner::Salted { sha512: false, .. } => Scheme::Ssha256,
            Inner::ShaCrypt { sha512: true, .. } => Scheme::Sha512Crypt,
            Inner::ShaCrypt { sha512: false, .. } => Scheme::Sha256Crypt,
            Inner::Bcrypt(_) => Scheme::BlfCrypt,
            Inner::Argon2(s) if s.starts_with("$argon2id$") => Scheme::Argon2id,
            Inner::Argon2(_) => Scheme::Argon2i,
        }
    }

    /// Whether `password` matches.  Expensive for the slow schemes: call
    /// it from the hashing pool.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.0 {
            Inner::Plain(secret) => secret.ct_eq(password),
            Inner::Salted {
                sha512,
                digest,
                salt,
            } => {
                let alg = if *sha512 {
                    &ring::digest::SHA512
                } else {
                    &ring::digest::SHA256
                };
                let mut ctx = ring::digest::Context::new(alg);
                ctx.update(password);
                ctx.update(salt);
                bool::from(ctx.finish().as_ref().ct_eq(digest))
            }
            Inner::ShaCrypt {
                sha512,
                rounds,
                salt,
                hash,
            } => {
                let computed = if *sha512 {
                    sha_crypt::Sha512Params::new(*rounds)
                        .ok()
                        .and_then(|p| sha_crypt::sha512_crypt_b64(password, salt, &p).ok())
                } else {
                    sha_crypt::Sha256Params::new(*rounds)
                        .ok()
                        .and_then(|p| sha_crypt::sha256_crypt_b64(password, salt, &p).ok())
                };
                computed.is_some_and(|c| bool::from(c.as_bytes().ct_eq(hash)))
            }
            // The crate recomputes and compares in constant time (subtle).
            Inner::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Inner::Argon2(phc) => {
                use argon2::PasswordVerifier as _;
                // Parsed at load time; `Output`'s equality is constant-time.
                argon2::PasswordHash::new(phc).is_ok_and(|h| {
                    argon2::Argon2::default()
                        .verify_password(password, &h)
                        .is_ok()
                })
            }
        }
    }
}

/// `$5$` / `$6$`, optional `rounds=N$`, salt, hash (Drepper, "Unix crypt
/// using SHA-256 and SHA-512").  Rounds outside 1000..=999999999 are
/// clamped, as glibc does.
fn parse_sha_crypt(sha512: bool, text: &str) -> Result<Inner, String> {
    let prefix = if sha512 { "$6$" } else { "$5$" };
    let rest = text
        .trim()
        .strip_prefix(prefix)
        .ok_or_else(|| format!("SHA-crypt hash must start with {prefix}"))?;
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let (n, rest) = r.split_once('$').ok_or("SHA-crypt: rounds without salt")?;
            let n: u64 = n.parse().map_err(|_| "SHA-crypt: bad rounds")?;
            (n.clamp(1000, 999_999_999) as usize, rest)
        }
        None => (5000, rest),
    };
    let (salt, hash) = rest
        .split_once('$')
        .ok_or("SHA-crypt: no hash after the salt")?;
    let want = if sha512 { 86 } else { 43 };
    if hash.len() != want
        || !hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Err(format!(
            "SHA-crypt: hash must be {want} characters of ./0-9A-Za-z"
        ));
    }
    // The salt is at most 16 characters; longer salts are cut (glibc).
    let salt = &salt.as_bytes()[..salt.len().min(16)];
    Ok(Inner::ShaCrypt {
        sha512,
        rounds,
        salt: salt.to_vec(),
        hash: hash.as_bytes().to_vec(),
    })
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.trim().as_bytes();
    if t.len() % 2 != 0 {
        return None;
    }
    t.chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stored: &str, good: &[u8]) {
        let (name, text) = stored[1..].split_once('}').unwrap();
        let (scheme, enc) = Scheme::parse(name).unwrap();
        let s = Stored::parse(scheme, enc, text).unwrap();
        assert_eq!(s.scheme(), scheme);
        assert!(s.verify(good), "{stored}");
        assert!(!s.verify(b"wrong"), "{stored}");
        assert!(!format!("{s:?}").contains(text));
    }

    /// Known answers written by `doveadm pw -s SCHEME -p 'pä ss:%w'`
    /// (Dovecot 2.3); tests/auth.rs also generates fresh ones at test time.
    #[test]
    fn dovecot_known_answers() {
        let pw = "pä ss:%w".as_bytes();
        for stored in [
            "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$OaoDVStQrGJgPK3DnRMXEQ$IYD9iiThU+Jvibyrhqxg/XNIO7HkgggP+aoWlj0jCVo",
            "{BLF-CRYPT}$2y$05$NhxWqpurSXUZzPpEcXVPf.05KbfojRC1O3M5GMjgj6ZsAH3yhGMKG",
            "{SHA512-CRYPT}$6$aqmL8In2QEsRt3Ol$vTzMLW77pGIHiPEAz3AEsHGl6gEPOJQxy6T.rUaY.2Fiqo3NT7QjDyuByznTjFXB0Vw1peJapGx3hhPO4DAIg.",
            "{SHA256-CRYPT}$5$lXDpst4qHsxxMsNy$eTL1tjYFIW.PPYc4TCaVIdjHezgb.w7Po7JYAJ/7Mn0",
            "{SSHA512}wyvO1S90j8KJRH+yT5EFZkDj3QjCJtSXuWvyvJoy63Sa7qN8yCsyrEzwmdoMHYFB7aBWwmULgdhqOdIiWa0mJeM1gd8=",
            "{SSHA256}M/h7xxtJCAfKJkqvHApp0lFZLHw0NlMVPpZtqLvTdaGToP4r",
            "{SSHA512.HEX}f124e63dd14dd88601d1d9b57d624b4346f3d83f80c7f54957a556efa1543b4be88f0af55c8c7cc35ec98a628d0b8f90f1788f480add1348efa8bbef0cc0564e99f88d41",
            "{PLAIN}pä ss:%w",
            "{CLEARTEXT}pä ss:%w",
        ] {
            check(stored, pw);
        }
        check(
            "{SHA512-CRYPT}$6$rounds=10000$UwfNsCoyF1QS59yo$fPbqcSAeoks33gFNjXhKWdT85hpsS86dXGYB1oS7jc4bARBFkcoPRjpLsACU7nQJER0qtDFPhHZ6NvOGIRhda1",
            b"x",
        );
        check("{PLAIN.B64}d29uZGVybGFuZA==", b"wonderland");
    }

    #[test]
    fn malformed_hashes_refused_at_load() {
        for (scheme, text) in [
            (Scheme::BlfCrypt, "$2y$05$short"),
            (Scheme::Sha512Crypt, "$5$salt$x"),
            (Scheme::Sha256Crypt, "$5$salt$tooshort"),
            (Scheme::Argon2id, "$argon2i$v=19$m=32768,t=4,p=1$OaoDVStQrGJgPK3DnRMXEQ$IYD9iiThU+Jvibyrhqxg/XNIO7HkgggP+aoWlj0jCVo"),
            (Scheme::Argon2i, "plain"),
            (Scheme::Ssha256, "dG9vc2hvcnQ="),
        ] {
            assert!(Stored::parse(scheme, Encoding::Default, text).is_err(), "{text}");
        }
        assert_eq!(
            Scheme::parse("blf-crypt"),
            Some((Scheme::BlfCrypt, Encoding::Default))
        );
        assert_eq!(Scheme::parse("BLF-CRYPT.HEX"), None);
        assert_eq!(Scheme::parse("MD5-CRYPT"), None);
    }
}
