//! Serializers for everything the gateway writes itself: greetings, tagged
//! results, CAPABILITY and ID responses, and the commands it sends to
//! backends.  The choice between atom, quoted string and literal is made in
//! [`astring`] only.

use super::command::{is_astring_char, Tag};
use super::response::Status;

/// How a literal may be sent to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralMode {
    /// `{n}`: the peer must answer `+` first.
    Sync,
    /// `{n+}`: LITERAL+ (any size) or LITERAL- (up to 4096 octets), RFC 7888.
    NonSync,
}

/// A command to send, split where the sender must wait for a `+`
/// continuation (after each synchronizing literal announcement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub parts: Vec<Vec<u8>>,
}

/// Write `s` as an `astring` (RFC 9051 §9): an atom when every octet is an
/// ASTRING-CHAR, a quoted string when it is short 7-bit text without CR, LF
/// or NUL, a literal (header and payload) otherwise.  A NUL octet cannot be
/// sent in any of these (`CHAR8 = %x01-ff`): callers refuse such values
/// before they get here, or the peer answers BAD.  Returns the offset in
/// `out` just after a synchronizing literal's announcement, where the
/// sender must stop and wait for `+`.
pub fn astring(out: &mut Vec<u8>, s: &[u8], mode: LiteralMode) -> Option<usize> {
    if !s.is_empty() && s.iter().all(|&c| is_astring_char(c)) {
        out.extend_from_slice(s);
        None
    } else {
        string(out, s, mode)
    }
}

/// Write `s` as a `string` (quoted or literal).  Same return as [`astring`].
pub fn string(out: &mut Vec<u8>, s: &[u8], mode: LiteralMode) -> Option<usize> {
    if s.len() <= 1024
        && s.iter()
            .all(|&c| (0x01..0x80).contains(&c) && c != b'\r' && c != b'\n')
    {
        out.push(b'"');
        for &c in s {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
        return None;
    }
    let split = match mode {
        LiteralMode::Sync => {
            out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
            Some(out.len())
        }
        LiteralMode::NonSync => {
            out.extend_from_slice(format!("{{{}+}}\r\n", s.len()).as_bytes());
            None
        }
    };
    out.extend_from_slice(s);
    split
}

/// `tag LOGIN userid password` for a backend (RFC 9051 §6.2.3).
pub fn login(tag: &str, user: &[u8], password: &[u8], mode: LiteralMode) -> Outgoing {
    let mut out = format!("{tag} LOGIN ").into_bytes();
    let mut splits = Vec::new();
    splits.extend(astring(&mut out, user, mode));
    out.push(b' ');
    splits.extend(astring(&mut out, password, mode));
    out.extend_from_slice(b"\r\n");
    let mut parts = Vec::with_capacity(splits.len() + 1);
    let mut from = 0;
    for at in splits {
        parts.push(out[from..at].to_vec());
        from = at;
    }
    parts.push(out[from..].to_vec());
    Outgoing { parts }
}

/// `tag AUTHENTICATE mechanism [SP initial-resp]` for a backend (RFC 9051
/// §6.2.2, RFC 4959 §7): `initial` is the raw (decoded) initial response,
/// sent base64-encoded, or `=` when it is empty.  Only use an initial
/// response when the backend advertises SASL-IR.
pub fn authenticate(tag: &str, mechanism: &str, initial: Option<&[u8]>) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = format!("{tag} AUTHENTICATE {mechanism}").into_bytes();
    match initial {
        None => {}
        Some([]) => out.extend_from_slice(b" ="),
        Some(data) => {
            out.push(b' ');
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `tag AUTHENTICATE PLAIN` for a backend (RFC 4616 message
/// `authzid NUL authcid NUL passwd`, base64).  With SASL-IR (RFC 4959) the
/// response rides on the command line; otherwise it is the second part,
/// sent after the backend's `+`.
pub fn authenticate_plain(
    tag: &str,
    authzid: &[u8],
    authcid: &[u8],
    password: &[u8],
    sasl_ir: bool,
) -> Outgoing {
    use base64::Engine as _;
    let mut message = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    message.extend_from_slice(authzid);
    message.push(0);
    message.extend_from_slice(authcid);
    message.push(0);
    message.extend_from_slice(password);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&message);
    let parts = if sasl_ir {
        vec![format!("{tag} AUTHENTICATE PLAIN {b64}\r\n").into_bytes()]
    } else {
        vec![
            format!("{tag} AUTHENTICATE PLAIN\r\n").into_bytes(),
            format!("{b64}\r\n").into_bytes(),
        ]
    };
    Outgoing { parts }
}

/// Append `text` with CR, LF and NUL turned into SP (and, inside a response
/// code, `]`), so no peer-supplied text can end the line or the code early.
/// Byte-wise: these are ASCII, never part of a UTF-8 sequence.  Runs for
/// every status line the gateway writes, so nothing is allocated.
fn push_sanitized(out: &mut Vec<u8>, text: &[u8], in_code: bool) {
    let bad = |b: u8| matches!(b, b'\r' | b'\n' | b'\0') || (in_code && b == b']');
    if !text.iter().any(|&b| bad(b)) {
        out.extend_from_slice(text);
        return;
    }
    out.extend(text.iter().map(|&b| if bad(b) { b' ' } else { b }));
}

/// `tag OK|NO|BAD [code] text` (RFC 9051 §7.1).
pub fn tagged(tag: &Tag, status: Status, code: Option<&str>, text: &str) -> Vec<u8> {
    status_line(tag.as_str(), status.as_str(), code, text)
}

/// `* OK|NO|BAD|BYE|PREAUTH [code] text`.
pub fn untagged(word: &str, code: Option<&str>, text: &str) -> Vec<u8> {
    status_line("*", word, code, text)
}

/// A `BAD` for a command whose tag could not be read (RFC 3501 §7.1.3).
pub fn untagged_bad(text: &str) -> Vec<u8> {
    untagged("BAD", None, text)
}

fn status_line(tag: &str, word: &str, code: Option<&str>, text: &str) -> Vec<u8> {
    let code_len = code.map_or(0, |c| c.len() + 3);
    let mut out = Vec::with_capacity(tag.len() + word.len() + code_len + text.len() + 5);
    out.extend_from_slice(tag.as_bytes());
    out.push(b' ');
    out.extend_from_slice(word.as_bytes());
    if let Some(code) = code {
        out.extend_from_slice(b" [");
        push_sanitized(&mut out, code.as_bytes(), true);
        out.push(b']');
    }
    out.push(b' ');
    if code.is_none() && text.starts_with('[') {
        // `resp-text = ["[" resp-text-code "]" SP] [text]` (RFC 9051 §9):
        // text opening with "[" would read as a response code (a relayed
        // "[ALERT] …" would become an alert).  A leading SP keeps it text.
        out.push(b' ');
    }
    push_sanitized(&mut out, text.as_bytes(), false);
    out.extend_from_slice(b"\r\n");
    out
}

/// `* CAPABILITY …` (RFC 9051 §7.2.2).
pub fn capability<S: AsRef<str>>(caps: &[S]) -> Vec<u8> {
    let mut out = b"* CAPABILITY".to_vec();
    for c in caps {
        out.push(b' ');
        out.extend_from_slice(c.as_ref().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The `CAPABILITY …` response code body, e.g. for `[CAPABILITY …]`.
pub fn capability_code<S: AsRef<str>>(caps: &[S]) -> String {
    let len = caps.iter().map(|c| c.as_ref().len() + 1).sum::<usize>();
    let mut s = String::with_capacity("CAPABILITY".len() + len);
    s.push_str("CAPABILITY");
    for c in caps {
        s.push(' ');
        s.push_str(c.as_ref());
    }
    s
}

/// `* ID (…)` or `* ID NIL` (RFC 2971 §3.2).
pub fn id_response(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"* ID ".to_vec();
    id_list(
        &mut out,
        fields
            .iter()
            .map(|(k, v)| (k.as_bytes(), Some(v.as_bytes()))),
    );
    out.extend_from_slice(b"\r\n");
    out
}

/// `tag ID (…)` for a backend (RFC 2971 §3.1); values always quoted.
pub fn id_command<'a>(
    tag: &str,
    fields: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Vec<u8> {
    let mut out = format!("{tag} ID ").into_bytes();
    id_list(&mut out, fields);
    out.extend_from_slice(b"\r\n");
    out
}

fn id_list<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) {
    let mut any = false;
    for (k, v) in fields {
        out.push(if any { b' ' } else { b'(' });
        any = true;
        quoted_lossy(out, k);
        out.push(b' ');
        match v {
            Some(v) => quoted_lossy(out, v),
            None => out.extend_from_slice(b"NIL"),
        }
    }
    if any {
        out.push(b')');
    } else {
        out.extend_from_slice(b"NIL");
    }
}

/// A quoted string, dropping octets a quoted string cannot hold.  Used for
/// ID values, which are informational.
fn quoted_lossy(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s.iter().take(1024) {
        match c {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(c);
            }
            0 | b'\r' | b'\n' | 0x80.. => {}
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::command::{parse_command, CommandBody};

    fn joined(o: &Outgoing) -> Vec<u8> {
        o.parts.concat()
    }

    #[test]
    fn login_round_trips() {
        for (user, pass) in [
            (&b"alice"[..], &b"wonderland"[..]),
            (b"fred smith", b"p\"a\\ss"),
            (b"j\xc3\xb6rg", b"x"),
            (b"", b"line\r\nbreak"),
        ] {
            for mode in [LiteralMode::Sync, LiteralMode::NonSync] {
                let o = login("b1", user, pass, mode);
                let bytes = joined(&o);
                match parse_command(&bytes).unwrap().body {
                    CommandBody::Login { username, password } => {
                        assert_eq!(username, user);
                        assert!(password.ct_eq(pass));
                    }
                    b => panic!("{b:?}"),
                }
                if mode == LiteralMode::NonSync {
                    assert_eq!(o.parts.len(), 1);
                }
            }
        }
        let o = login("b1", b"j\xc3\xb6rg", b"x", LiteralMode::Sync);
        assert_eq!(o.parts[0], b"b1 LOGIN {5}\r\n");
        assert_eq!(o.parts[1], b"j\xc3\xb6rg x\r\n");
    }

    #[test]
    fn status_lines_cannot_be_split() {
        let t = Tag::new("a1").unwrap();
        assert_eq!(
            tagged(
                &t,
                Status::No,
                Some("AUTHENTICATIONFAILED"),
                "bad\r\n* OK x"
            ),
            b"a1 NO [AUTHENTICATIONFAILED] bad  * OK x\r\n"
        );
        assert_eq!(untagged("BYE", None, "bye"), b"* BYE bye\r\n");
    }

    #[test]
    fn text_opening_with_bracket_stays_text() {
        let t = Tag::new("a1").unwrap();
        let out = tagged(&t, Status::No, None, "[ALERT] from a relayed message");
        assert_eq!(out, b"a1 NO  [ALERT] from a relayed message\r\n");
        match crate::imap::response::classify(&out).unwrap() {
            crate::imap::response::Response::Tagged { text, .. } => {
                assert_eq!(text.code, None);
                assert_eq!(text.text, b" [ALERT] from a relayed message");
            }
            r => panic!("{r:?}"),
        }
        // With a code in front, a "[" in the text is harmless and kept.
        assert_eq!(
            untagged("OK", Some("ALERT"), "[x]"),
            b"* OK [ALERT] [x]\r\n"
        );
    }

    #[test]
    fn authenticate_forms() {
        // RFC 4959 §4 examples.
        assert_eq!(
            authenticate("A01", "PLAIN", Some(b"test\0test\0test")),
            b"A01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n"
        );
        assert_eq!(
            authenticate("A01", "EXTERNAL", Some(b"")),
            b"A01 AUTHENTICATE EXTERNAL =\r\n"
        );
        assert_eq!(
            authenticate("A01", "PLAIN", None),
            b"A01 AUTHENTICATE PLAIN\r\n"
        );
    }

    #[test]
    fn id_forms() {
        assert_eq!(
            id_response(&[("name", "imapgate")]),
            b"* ID (\"name\" \"imapgate\")\r\n"
        );
        assert_eq!(id_response(&[]), b"* ID NIL\r\n");
        let c = id_command(
            "x",
            [(&b"x-originating-ip"[..], Some(&b"1.2.3.4"[..]))].into_iter(),
        );
        assert!(matches!(
            parse_command(&c).unwrap().body,
            CommandBody::Id(Some(_))
        ));
    }
}
