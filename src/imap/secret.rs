//! `Secret<T>`: passwords, tokens and SASL data.  Its `Debug` and `Display`
//! never show the value, and equality is constant-time, so a secret can be
//! carried through logs, errors and comparisons without leaking.

use std::fmt;

use subtle::ConstantTimeEq;

#[derive(Clone, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself.  Call sites are easy to audit with grep.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: AsRef<[u8]>> Secret<T> {
    /// Constant-time comparison with other bytes (the length is not secret).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        bool::from(self.0.as_ref().ct_eq(other))
    }
}

impl<T: AsRef<[u8]>> PartialEq for Secret<T> {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other.0.as_ref())
    }
}

impl<T: AsRef<[u8]>> Eq for Secret<T> {}

impl From<Vec<u8>> for Secret<Vec<u8>> {
    fn from(v: Vec<u8>) -> Self {
        Secret(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new(b"wonderland".to_vec());
        assert!(!format!("{s:?} {s}").contains("wonderland"));
        assert!(s.ct_eq(b"wonderland"));
        assert!(!s.ct_eq(b"wonderlanD"));
        assert!(!s.ct_eq(b"wonder"));
    }
}
