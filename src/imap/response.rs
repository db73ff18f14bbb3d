//! Server response classifier (RFC 3501 §7, RFC 9051 §7).
//!
//! Looks at the first line of each server→client unit and says what kind of
//! response it is.  Only what the gateway acts on is parsed into types:
//! status responses with their codes, CAPABILITY, ENABLED, BYE, PREAUTH and
//! continuation requests.  Everything else (`* 3 EXISTS`, `* 1 FETCH …`) is
//! `Data` and relayed untouched.

use super::command::{is_atom_char, is_tag_char};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        }
    }
}

/// `resp-text-code` (RFC 9051 §7.1, RFC 5530 §3), as far as the gateway
/// cares.  Unknown codes keep their atom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    Alert,
    Capability(Vec<String>),
    Parse,
    ReadOnly,
    ReadWrite,
    TryCreate,
    Unavailable,
    AuthenticationFailed,
    AuthorizationFailed,
    Expired,
    PrivacyRequired,
    ContactAdmin,
    NoPerm,
    InUse,
    Limit,
    OverQuota,
    ServerBug,
    ClientBug,
    Closed,
    TooBig,
    /// Any other code: its name and raw arguments.
    Other(String, Option<String>),
}

impl Code {
    pub fn parse(name: &str, args: Option<&str>) -> Code {
        match name.to_ascii_uppercase().as_str() {
            "ALERT" => Code::Alert,
            "CAPABILITY" => Code::Capability(
                args.unwrap_or("")
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            "PARSE" => Code::Parse,
            "READ-ONLY" => Code::ReadOnly,
            "READ-WRITE" => Code::ReadWrite,
            "TRYCREATE" => Code::TryCreate,
            "UNAVAILABLE" => Code::Unavailable,
            "AUTHENTICATIONFAILED" => Code::AuthenticationFailed,
            "AUTHORIZATIONFAILED" => Code::AuthorizationFailed,
            "EXPIRED" => Code::Expired,
            "PRIVACYREQUIRED" => Code::PrivacyRequired,
            "CONTACTADMIN" => Code::ContactAdmin,
            "NOPERM" => Code::NoPerm,
            "INUSE" => Code::InUse,
            "LIMIT" => Code::Limit,
            "OVERQUOTA" => Code::OverQuota,
            "SERVERBUG" => Code::ServerBug,
            "CLIENTBUG" => Code::ClientBug,
            "CLOSED" => Code::Closed,
            "TOOBIG" => Code::TooBig,
            other => Code::Other(other.to_owned(), args.map(str::to_owned)),
        }
    }
}

/// Text after the status word: optional `[code]` and human text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespText<'a> {
    pub code: Option<Code>,
    /// The code exactly as the server sent it, brackets excluded, so it can
    /// be passed on unchanged.
    pub raw_code: Option<&'a [u8]>,
    pub text: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged<'a> {
    /// `* OK|NO|BAD …`
    Status(Status, RespText<'a>),
    /// `* BYE …`
    Bye(RespText<'a>),
    /// `* PREAUTH …`
    Preauth(RespText<'a>),
    /// `* CAPABILITY …`
    Capability(Vec<String>),
    /// `* ENABLED …` (RFC 5161)
    Enabled(Vec<String>),
    /// Any other untagged data, relayed untouched.
    Data,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    Tagged {
        tag: &'a str,
        status: Status,
        text: RespText<'a>,
    },
    Untagged(Untagged<'a>),
    /// `continue-req = "+" SP (resp-text / base64) CRLF`
    Continuation(&'a [u8]),
}

/// A first line that is not an IMAP response.  The stream cannot be
/// trusted after it, so callers treat it as a backend fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed server response: {0}")]
pub struct ClassifyError(pub &'static str);

/// Classify the first line of a response unit (line ending included or not).
pub fn classify(line: &[u8]) -> Result<Response<'_>, ClassifyError> {
    let line = strip_eol(line);
    match line.first() {
        Some(b'+') => {
            let rest = &line[1..];
            Ok(Response::Continuation(
                rest.strip_prefix(b" ").unwrap_or(rest),
            ))
        }
        Some(b'*') => {
            let rest = line
                .strip_prefix(b"* ")
                .ok_or(ClassifyError("expected SP after '*'"))?;
            Ok(Response::Untagged(untagged(rest)?))
        }
        Some(_) => {
            let tag_len = line
                .iter()
                .position(|&c| !is_tag_char(c))
                .unwrap_or(line.len());
            if tag_len == 0 {
                return Err(ClassifyError("invalid tag"));
            }
            let (tag, rest) = line.split_at(tag_len);
            let rest = rest
                .strip_prefix(b" ")
                .ok_or(ClassifyError("expected SP after tag"))?;
            let (word, rest) = split_word(rest);
            let status =
                status_word(word).ok_or(ClassifyError("tagged response is not OK, NO or BAD"))?;
            Ok(Response::Tagged {
                // Tag characters are ASCII.
                tag: std::str::from_utf8(tag).map_err(|_| ClassifyError("invalid tag"))?,
                status,
                text: resp_text(rest),
            })
        }
        None => Err(ClassifyError("empty line")),
    }
}

fn untagged(rest: &[u8]) -> Result<Untagged<'_>, ClassifyError> {
    let (word, after) = split_word(rest);
    if word.first().is_some_and(u8::is_ascii_digit) {
        return Ok(Untagged::Data);
    }
    if let Some(status) = status_word(word) {
        return Ok(Untagged::Status(status, resp_text(after)));
    }
    Ok(match word.to_ascii_uppercase().as_slice() {
        b"BYE" => Untagged::Bye(resp_text(after)),
        b"PREAUTH" => Untagged::Preauth(resp_text(after)),
        b"CAPABILITY" => Untagged::Capability(words(after)),
        b"ENABLED" => Untagged::Enabled(words(after)),
        _ => Untagged::Data,
    })
}

fn status_word(word: &[u8]) -> Option<Status> {
    if word.eq_ignore_ascii_case(b"OK") {
        Some(Status::Ok)
    } else if word.eq_ignore_ascii_case(b"NO") {
        Some(Status::No)
    } else if word.eq_ignore_ascii_case(b"BAD") {
        Some(Status::Bad)
    } else {
        None
    }
}

/// `resp-text = ["[" resp-text-code "]" SP] [text]` (RFC 9051 §9).  Lenient:
/// servers in the wild omit the SP after `]` or send codes we do not know.
pub fn resp_text(rest: &[u8]) -> RespText<'_> {
    if let Some(inner) = rest.strip_prefix(b"[") {
        if let Some(end) = inner.iter().position(|&c| c == b']') {
            let raw = &inner[..end];
            let text = &inner[end + 1..];
            let text = text.strip_prefix(b" ").unwrap_or(text);
            let raw_str = String::from_utf8_lossy(raw);
            let (name, args) = match raw_str.split_once(' ') {
                Some((n, a)) => (n.to_owned(), Some(a.to_owned())),
                None => (raw_str.into_owned(), None),
            };
            let name_ok = !name.is_empty() && name.bytes().all(is_atom_char);
            return RespText {
                code: name_ok.then(|| Code::parse(&name, args.as_deref())),
                raw_code: Some(raw),
                text,
            };
        }
    }
    RespText {
        code: None,
        raw_code: None,
        text: rest,
    }
}

fn words(rest: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(rest)
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&c| c == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[]),
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings() {
        // RFC 3501 §7.1.1, §7.1.4, §7.1.5 examples.
        match classify(b"* OK IMAP4rev1 server ready\r\n").unwrap() {
            Response::Untagged(Untagged::Status(Status::Ok, t)) => {
                assert_eq!(t.text, b"IMAP4rev1 server ready")
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            classify(b"* PREAUTH IMAP4rev1 server logged in as Smith\r\n").unwrap(),
            Response::Untagged(Untagged::Preauth(_))
        ));
        match classify(b"* BYE [UNAVAILABLE] Autologout; idle for too long\r\n").unwrap() {
            Response::Untagged(Untagged::Bye(t)) => assert_eq!(t.code, Some(Code::Unavailable)),
            r => panic!("{r:?}"),
        }
        match classify(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n").unwrap() {
            Response::Untagged(Untagged::Status(Status::Ok, t)) => match t.code {
                Some(Code::Capability(c)) => assert_eq!(c.len(), 8),
                c => panic!("{c:?}"),
            },
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn tagged_and_codes() {
        match classify(b"a001 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").unwrap() {
            Response::Tagged { tag, status, text } => {
                assert_eq!((tag, status), ("a001", Status::No));
                assert_eq!(text.code, Some(Code::AuthenticationFailed));
                assert_eq!(text.raw_code, Some(&b"AUTHENTICATIONFAILED"[..]));
            }
            r => panic!("{r:?}"),
        }
        match classify(b"A142 OK [READ-WRITE] SELECT completed").unwrap() {
            Response::Tagged { text, .. } => assert_eq!(text.code, Some(Code::ReadWrite)),
            r => panic!("{r:?}"),
        }
        match classify(b"a ok [APPENDUID 38505 3955] done\r\n").unwrap() {
            Response::Tagged {
                status: Status::Ok,
                text,
                ..
            } => {
                assert_eq!(
                    text.code,
                    Some(Code::Other("APPENDUID".into(), Some("38505 3955".into())))
                )
            }
            r => panic!("{r:?}"),
        }
        assert!(classify(b"a FOO bar\r\n").is_err());
        assert!(classify(b"\r\n").is_err());
        assert!(classify(b"*x\r\n").is_err());
    }

    #[test]
    fn data_and_continuations() {
        assert_eq!(
            classify(b"* 23 EXISTS\r\n").unwrap(),
            Response::Untagged(Untagged::Data)
        );
        assert_eq!(
            classify(b"* 12 FETCH (BODY[] {342}\r\n").unwrap(),
            Response::Untagged(Untagged::Data)
        );
        assert_eq!(
            classify(b"* LIST () \"/\" INBOX\r\n").unwrap(),
            Response::Untagged(Untagged::Data)
        );
        assert_eq!(
            classify(b"+ idling\r\n").unwrap(),
            Response::Continuation(b"idling")
        );
        assert_eq!(classify(b"+\r\n").unwrap(), Response::Continuation(b""));
        assert_eq!(
            classify(b"* ENABLED CONDSTORE\r\n").unwrap(),
            Response::Untagged(Untagged::Enabled(vec!["CONDSTORE".into()]))
        );
        assert_eq!(
            classify(b"* CAPABILITY IMAP4rev1 IDLE\r\n").unwrap(),
            Response::Untagged(Untagged::Capability(vec![
                "IMAP4rev1".into(),
                "IDLE".into()
            ]))
        );
    }
}
