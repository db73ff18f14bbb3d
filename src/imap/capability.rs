//! Capabilities the gateway shows clients.
//!
//! Before login the gateway answers itself, so it lists what *it* offers.
//! After login the client gets the backend's list, passed through an
//! allow-list: an extension the gateway does not know could change the
//! framing or the state (COMPRESS turns the stream into DEFLATE, RFC 4978;
//! UNAUTHENTICATE would let a client re-login on the backend behind the
//! gateway's back, RFC 8437), so unknown names are dropped, not passed on.

use super::Mechanism;

/// What the gateway offers before login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreAuthOffer<'a> {
    /// STARTTLS may still be used on this connection.
    pub starttls: bool,
    /// Cleartext authentication is refused here (RFC 2595 §3.2).
    pub login_disabled: bool,
    /// SASL mechanisms offered (ignored when `login_disabled`).
    pub mechanisms: &'a [Mechanism],
}

/// The not-authenticated capability list (RFC 9051 §6.1.1).  Every
/// greeting carries it; all of it is static text.
pub fn pre_auth(offer: PreAuthOffer<'_>) -> Vec<&'static str> {
    let mut caps = Vec::with_capacity(8 + offer.mechanisms.len());
    caps.push("IMAP4rev1");
    if offer.starttls {
        caps.push("STARTTLS");
    }
    if offer.login_disabled {
        caps.push("LOGINDISABLED");
    } else {
        caps.extend(offer.mechanisms.iter().map(|m| m.capability()));
        caps.push("SASL-IR");
    }
    // LITERAL- (RFC 7888 §5): non-synchronizing literals up to 4096 octets
    // are safe to accept before login; larger ones need a `+` from us.
    caps.extend(["LITERAL-", "ID", "ENABLE", "IDLE"]);
    caps
}

/// Capabilities relayed unchanged after login: known not to alter framing
/// or state in ways the gateway cannot follow.
const RELAYABLE: &[&str] = &[
    "IMAP4REV1",
    "IMAP4REV2",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "ESEARCH",
    "ENABLE",
    "ID",
    "UNSELECT",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "LIST-MYRIGHTS",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "CONDSTORE",
    "QRESYNC",
    "SORT",
    "ESORT",
    "SEARCHRES",
    "WITHIN",
    "BINARY",
    "CATENATE",
    "MULTIAPPEND",
    "LITERAL+",
    "LITERAL-",
    "I18NLEVEL=1",
    "QUOTA",
    "ACL",
    "METADATA",
    "METADATA-SERVER",
    "NOTIFY",
    "SAVEDATE",
    "OBJECTID",
    "PREVIEW",
    "SNIPPET=FUZZY",
    "FILTERS",
    "SPECIAL-USE",
    "XLIST",
    "REPLACE",
    "UTF8=ACCEPT",
    "MAILBOX-REFERRALS",
];

/// Parameterised families relayed unchanged (`NAME=...`).
const RELAYABLE_PREFIXES: &[&str] = &[
    "THREAD=",
    "SORT=",
    "CONTEXT=",
    "QUOTA=",
    "RIGHTS=",
    "STATUS=",
    "APPENDLIMIT=",
    "I18NLEVEL=",
];

/// Whether a backend capability may be shown to a logged-in client.
pub fn relayable(cap: &str) -> bool {
    RELAYABLE.iter().any(|k| k.eq_ignore_ascii_case(cap))
        || RELAYABLE_PREFIXES.iter().any(|p| {
            cap.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        })
}

/// Filter a backend's list for a logged-in client (borrowed from it).
pub fn post_login(backend: &[String]) -> Vec<&str> {
    let mut caps: Vec<&str> = Vec::with_capacity(backend.len() + 1);
    caps.extend(backend.iter().map(String::as_str).filter(|c| relayable(c)));
    if !caps
        .iter()
        .any(|c| c.eq_ignore_ascii_case("IMAP4rev1") || c.eq_ignore_ascii_case("IMAP4rev2"))
    {
        caps.insert(0, "IMAP4rev1");
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_disabled_hides_mechanisms() {
        let mechs = [Mechanism::Plain];
        let caps = pre_auth(PreAuthOffer {
            starttls: true,
            login_disabled: true,
            mechanisms: &mechs,
        });
        assert!(caps.contains(&"LOGINDISABLED"));
        assert!(caps.contains(&"STARTTLS"));
        assert!(!caps.iter().any(|c| c.starts_with("AUTH=")));
        let caps = pre_auth(PreAuthOffer {
            starttls: false,
            login_disabled: false,
            mechanisms: &mechs,
        });
        assert!(caps.contains(&"AUTH=PLAIN"));
        assert!(!caps.contains(&"LITERAL+"));
    }

    #[test]
    fn dovecot_list_filtered() {
        let dovecot: Vec<String> = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE COMPRESS=DEFLATE UNAUTHENTICATE LITERAL+ NOTIFY SPECIAL-USE AUTH=PLAIN AUTH=SCRAM-SHA-1-PLUS"
            .split(' ').map(String::from).collect();
        let caps = post_login(&dovecot);
        for dropped in [
            "COMPRESS=DEFLATE",
            "UNAUTHENTICATE",
            "AUTH=PLAIN",
            "AUTH=SCRAM-SHA-1-PLUS",
            "SASL-IR",
            "LOGIN-REFERRALS",
            "URL-PARTIAL",
        ] {
            assert!(!caps.contains(&dropped), "{dropped} kept");
        }
        for kept in [
            "IMAP4rev1",
            "IDLE",
            "THREAD=REFS",
            "MOVE",
            "LITERAL+",
            "STATUS=SIZE",
        ] {
            assert!(caps.contains(&kept), "{kept} dropped");
        }
    }
}
