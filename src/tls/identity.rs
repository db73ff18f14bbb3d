//! The identity in a verified client certificate: subject CN, subject
//! e-mail, and the SAN e-mail (rfc822Name) and DNS names, for PREAUTH rules
//! and logs.
//!
//! A small DER walk over the parts of X.509 (RFC 5280 §4.1) that carry
//! names, instead of a full X.509 parser: rustls has already parsed and
//! verified the certificate before this runs.  Still defensive: malformed
//! input gives an empty identity, never a panic, and every string is
//! bounded and escaped so it is safe to log.

use std::fmt;

/// Most names of each kind kept from one certificate.
const MAX_NAMES: usize = 16;
/// Longest name kept, in characters.
const MAX_NAME_LEN: usize = 256;

/// OID 2.5.4.3, id-at-commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// OID 1.2.840.113549.1.9.1, pkcs-9 emailAddress (legacy, in the subject).
const OID_EMAIL: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01];
/// OID 2.5.29.17, id-ce-subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1D, 0x11];

/// Names taken from a certificate's subject and subjectAltName.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject's (last) commonName.
    pub common_name: Option<String>,
    /// SAN rfc822Name entries, then the subject's emailAddress if any.
    pub emails: Vec<String>,
    /// SAN dNSName entries.
    pub dns_names: Vec<String>,
}

impl CertIdentity {
    /// Parse a DER certificate; unknown or malformed parts are skipped.
    pub fn from_der(der: &[u8]) -> CertIdentity {
        let mut id = CertIdentity::default();
        let _ = id.fill(der);
        id
    }

    pub fn is_empty(&self) -> bool {
        self.common_name.is_none() && self.emails.is_empty() && self.dns_names.is_empty()
    }

    fn fill(&mut self, der: &[u8]) -> Option<()> {
        // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
        let (cert, _) = expect(der, 0x30)?;
        let (tbs, _) = expect(cert, 0x30)?;
        // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber,
        //   signature, issuer, validity, subject, subjectPublicKeyInfo,
        //   [1] issuerUniqueID OPTIONAL, [2] subjectUniqueID OPTIONAL,
        //   [3] extensions OPTIONAL }
        let mut fields = Vec::new();
        let mut rest = tbs;
        while !rest.is_empty() {
            let (tag, content, next) = tlv(rest)?;
            fields.push((tag, content));
            rest = next;
        }
        let skip = usize::from(fields.first()?.0 == 0xA0);
        let (subject_tag, subject) = *fields.get(skip + 4)?;
        if subject_tag == 0x30 {
            self.subject(subject);
        }
        if let Some((_, exts)) = fields.iter().find(|(t, _)| *t == 0xA3) {
            let (exts, _) = expect(exts, 0x30)?;
            let mut rest = exts;
            while !rest.is_empty() {
                let (ext, next) = expect(rest, 0x30)?;
                rest = next;
                let (oid, ext_rest) = expect(ext, 0x06)?;
                if oid != OID_SAN {
                    continue;
                }
                // Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
                let (tag, mut value, after) = tlv(ext_rest)?;
                if tag == 0x01 {
                    value = expect(after, 0x04)?.0;
                } else if tag != 0x04 {
                    return None;
                }
                self.san(value);
            }
        }
        Some(())
    }

    /// Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue)
    fn subject(&mut self, name: &[u8]) -> Option<()> {
        let mut rdns = name;
        let mut subject_email = None;
        while !rdns.is_empty() {
            let (set, next) = expect(rdns, 0x31)?;
            rdns = next;
            let mut atvs = set;
            while !atvs.is_empty() {
                let (atv, next) = expect(atvs, 0x30)?;
                atvs = next;
                let (oid, value) = expect(atv, 0x06)?;
                let (tag, value, _) = tlv(value)?;
                if oid == OID_CN {
                    self.common_name = directory_string(tag, value);
                } else if oid == OID_EMAIL {
                    subject_email = directory_string(tag, value);
                }
            }
        }
        if let Some(e) = subject_email {
            push(&mut self.emails, e);
        }
        Some(())
    }

    /// GeneralNames ::= SEQUENCE OF GeneralName; rfc822Name is [1], dNSName [2], both IA5String.
    fn san(&mut self, value: &[u8]) -> Option<()> {
        let (names, _) = expect(value, 0x30)?;
        let mut rest = names;
        while !rest.is_empty() {
            let (tag, content, next) = tlv(rest)?;
            rest = next;
            match tag {
                0x81 => push(&mut self.emails, safe(&String::from_utf8_lossy(content))),
                0x82 => push(&mut self.dns_names, safe(&String::from_utf8_lossy(content))),
                _ => {}
            }
        }
        Some(())
    }
}

impl fmt::Display for CertIdentity {
    /// `cn=..., email=..., dns=...` with only the parts present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(cn) = &self.common_name {
            parts.push(format!("cn={cn}"));
        }
        for e in &self.emails {
            parts.push(format!("email={e}"));
        }
        for d in &self.dns_names {
            parts.push(format!("dns={d}"));
        }
        f.write_str(&parts.join(", "))
    }
}

fn push(list: &mut Vec<String>, name: String) {
    if list.len() < MAX_NAMES && !list.contains(&name) {
        list.push(name);
    }
}

/// DirectoryString and friends: UTF8String, PrintableString, IA5String,
/// TeletexString (taken as Latin-1), BMPString (UTF-16BE).
fn directory_string(tag: u8, value: &[u8]) -> Option<String> {
    let s = match tag {
        0x0C | 0x13 | 0x16 => String::from_utf8_lossy(value).into_owned(),
        0x14 => value.iter().map(|&b| char::from(b)).collect(),
        0x1E => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => return None,
    };
    Some(safe(&s))
}

/// Bounded, with control characters escaped: certificate names end up in
/// log lines.
fn safe(s: &str) -> String {
    s.chars()
        .take(MAX_NAME_LEN)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The TLV at the front of `input` if its tag is `tag`: (content, rest).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(input)?;
    (t == tag).then_some((content, rest))
}

/// One DER TLV: (tag, content, rest).  Single-byte tags only (all the
/// tags X.509 names use); definite lengths up to 4 octets.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn cn_and_sans() {
        let mut p = rcgen::CertificateParams::new(vec!["mail.example.org".into()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Alice Liddell");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Wonderland");
        p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "alice@example.org".try_into().unwrap(),
        ));
        let id = CertIdentity::from_der(&cert(p));
        assert_eq!(id.common_name.as_deref(), Some("Alice Liddell"));
        assert_eq!(id.emails, vec!["alice@example.org"]);
        assert_eq!(id.dns_names, vec!["mail.example.org"]);
        assert_eq!(
            id.to_string(),
            "cn=Alice Liddell, email=alice@example.org, dns=mail.example.org"
        );
    }

    #[test]
    fn no_extensions_and_control_characters() {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "bob\r\nforged: line");
        let id = CertIdentity::from_der(&cert(p));
        assert_eq!(id.common_name.as_deref(), Some("bob\\r\\nforged: line"));
        assert!(id.emails.is_empty() && id.dns_names.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let good = {
            let mut p = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, "a");
            cert(p)
        };
        for cut in 0..good.len() {
            let _ = CertIdentity::from_der(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xFF;
            let _ = CertIdentity::from_der(&bad);
        }
        assert!(CertIdentity::from_der(b"").is_empty());
        assert!(CertIdentity::from_der(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]).is_empty());
    }
}
