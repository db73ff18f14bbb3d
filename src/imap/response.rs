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
    /// Codes without arguments, by name.  Looked up case-insensitively and
    /// without allocating: the relay classifies every backend status line.
    const PLAIN: [(&'static str, Code); 19] = [
        ("ALERT", Code::Alert),
        ("PARSE", Code::Parse),
        ("READ-ONLY", Code::ReadOnly),
        ("READ-WRITE", Code::ReadWrite),
        ("TRYCREATE", Code::TryCreate),
        ("UNAVAILABLE", Code::Unavailable),
        ("AUTHENTICATIONFAILED", Code::AuthenticationFailed),
        ("AUTHORIZATIONFAILED", Code::AuthorizationFailed),
        ("EXPIRED", Code::Expired),
        ("PRIVACYREQUIRED", Code::PrivacyRequired),
        ("CONTACTADMIN", Code::ContactAdmin),
        ("NOPERM", Code::NoPerm),
        ("INUSE", Code::InUse),
        ("LIMIT", Code::Limit),
        ("OVERQUOTA", Code::OverQuota),
        ("SERVERBUG", Code::ServerBug),
        ("CLIENTBUG", Code::ClientBug),
        ("CLOSED", Code::Closed),
        ("TOOBIG", Code::TooBig),
    ];

    pub fn parse(name: &str, args: Option<&str>) -> Code {
        if name.eq_ignore_ascii_case("CAPABILITY") {
            return Code::Capability(
                args.unwrap_or("")
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        match Code::PLAIN
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, code)) => code.clone(),
            None => Code::Other(name.to_ascii_uppercase(), args.map(str::to_owned)),
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
            let (name, args) = match raw.iter().position(|&c| c == b' ') {
                Some(i) => (&raw[..i], Some(&raw[i + 1..])),
                None => (raw, None),
            };
            // An atom is ASCII, so the name is valid UTF-8 when it passes.
            let name_ok = !name.is_empty() && name.iter().all(|&c| is_atom_char(c));
            return RespText {
                code: name_ok.then(|| {
                    let name = std::str::from_utf8(name).unwrap_or_default();
                    Code::parse(name, args.map(|a| String::from_utf8_lossy(a)).as_deref())
                }),
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

    // ---- Known answers from the RFCs ----------------------------------

    use crate::imap::check;

    fn rt<'a>(code: Option<Code>, raw: Option<&'a str>, text: &'a str) -> RespText<'a> {
        RespText {
            code,
            raw_code: raw.map(str::as_bytes),
            text: text.as_bytes(),
        }
    }

    fn strings(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    fn other(name: &str, args: Option<&str>) -> Option<Code> {
        Some(Code::Other(name.into(), args.map(String::from)))
    }

    #[test]
    fn known_answers() {
        use Response::{Continuation, Tagged, Untagged as U};
        use Status::{Bad, No, Ok as Okay};
        let tagged = |tag, status, text| Tagged { tag, status, text };
        let cases: Vec<(&str, &[u8], Response<'_>)> = vec![
            (
                "RFC 3501 §7.1.1",
                b"* OK IMAP4rev1 server ready\r\n",
                U(Untagged::Status(
                    Okay,
                    rt(None, None, "IMAP4rev1 server ready"),
                )),
            ),
            (
                "RFC 3501 §7.1.1",
                b"* OK [ALERT] System shutdown in 10 minutes\r\n",
                U(Untagged::Status(
                    Okay,
                    rt(
                        Some(Code::Alert),
                        Some("ALERT"),
                        "System shutdown in 10 minutes",
                    ),
                )),
            ),
            (
                "RFC 3501 §7.1.1",
                b"A001 OK LOGIN Completed\r\n",
                tagged("A001", Okay, rt(None, None, "LOGIN Completed")),
            ),
            (
                "RFC 3501 §7.1.2",
                b"* NO Disk is 98% full, please delete unnecessary data\r\n",
                U(Untagged::Status(
                    No,
                    rt(
                        None,
                        None,
                        "Disk is 98% full, please delete unnecessary data",
                    ),
                )),
            ),
            (
                "RFC 3501 §7.1.2",
                b"A223 NO COPY failed: disk is full\r\n",
                tagged("A223", No, rt(None, None, "COPY failed: disk is full")),
            ),
            (
                "RFC 3501 §7.1.3",
                b"* BAD Command line too long\r\n",
                U(Untagged::Status(
                    Bad,
                    rt(None, None, "Command line too long"),
                )),
            ),
            (
                "RFC 3501 §6.4.8 (tagged BAD)",
                b"A044 BAD No such command as \"BLURDYBLOOP\"\r\n",
                tagged(
                    "A044",
                    Bad,
                    rt(None, None, "No such command as \"BLURDYBLOOP\""),
                ),
            ),
            (
                "RFC 3501 §7.1.4",
                b"* PREAUTH IMAP4rev1 server logged in as Smith\r\n",
                U(Untagged::Preauth(rt(
                    None,
                    None,
                    "IMAP4rev1 server logged in as Smith",
                ))),
            ),
            (
                "RFC 3501 §7.1.5",
                b"* BYE Autologout; idle for too long\r\n",
                U(Untagged::Bye(rt(
                    None,
                    None,
                    "Autologout; idle for too long",
                ))),
            ),
            (
                "RFC 3501 §7.2.1",
                b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI XPIG-LATIN\r\n",
                U(Untagged::Capability(strings(
                    "IMAP4rev1 STARTTLS AUTH=GSSAPI XPIG-LATIN",
                ))),
            ),
            (
                "RFC 9051 §7.2.1",
                b"* ENABLED CONDSTORE QRESYNC\r\n",
                U(Untagged::Enabled(strings("CONDSTORE QRESYNC"))),
            ),
            (
                "RFC 5161 §3.1 (ENABLED with nothing enabled)",
                b"* ENABLED\r\n",
                U(Untagged::Enabled(vec![])),
            ),
            (
                "RFC 9051 §6.2.1 greeting with CAPABILITY code",
                b"* OK [CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI] Capabilities\r\n",
                U(Untagged::Status(
                    Okay,
                    rt(
                        Some(Code::Capability(strings("IMAP4rev2 STARTTLS AUTH=GSSAPI"))),
                        Some("CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI"),
                        "Capabilities",
                    ),
                )),
            ),
            (
                "RFC 3501 §6.3.1",
                b"* OK [UNSEEN 12] Message 12 is first unseen\r\n",
                U(Untagged::Status(
                    Okay,
                    rt(
                        other("UNSEEN", Some("12")),
                        Some("UNSEEN 12"),
                        "Message 12 is first unseen",
                    ),
                )),
            ),
            (
                "RFC 3501 §6.3.1",
                b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n",
                U(Untagged::Status(
                    Okay,
                    rt(
                        other("PERMANENTFLAGS", Some("(\\Deleted \\Seen \\*)")),
                        Some("PERMANENTFLAGS (\\Deleted \\Seen \\*)"),
                        "Limited",
                    ),
                )),
            ),
            (
                "RFC 3501 §6.3.1",
                b"A142 OK [READ-WRITE] SELECT completed\r\n",
                tagged(
                    "A142",
                    Okay,
                    rt(
                        Some(Code::ReadWrite),
                        Some("READ-WRITE"),
                        "SELECT completed",
                    ),
                ),
            ),
            (
                "RFC 3501 §6.3.2",
                b"A932 OK [READ-ONLY] EXAMINE completed\r\n",
                tagged(
                    "A932",
                    Okay,
                    rt(Some(Code::ReadOnly), Some("READ-ONLY"), "EXAMINE completed"),
                ),
            ),
            (
                "RFC 9051 §6.3.2",
                b"* OK [CLOSED] Previous mailbox is now closed\r\n",
                U(Untagged::Status(
                    Okay,
                    rt(
                        Some(Code::Closed),
                        Some("CLOSED"),
                        "Previous mailbox is now closed",
                    ),
                )),
            ),
            (
                "RFC 9051 §6.4.4",
                b"B283 NO [BADCHARSET UTF-8] KOI8-R is not supported\r\n",
                tagged(
                    "B283",
                    No,
                    rt(
                        other("BADCHARSET", Some("UTF-8")),
                        Some("BADCHARSET UTF-8"),
                        "KOI8-R is not supported",
                    ),
                ),
            ),
            (
                "RFC 9051 §6.3.12",
                b"A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
                tagged(
                    "A004",
                    Okay,
                    rt(
                        other("COPYUID", Some("38505 304,319:320 3956:3958")),
                        Some("COPYUID 38505 304,319:320 3956:3958"),
                        "Done",
                    ),
                ),
            ),
            (
                "RFC 3501 §7.5",
                b"+ Ready for additional command text\r\n",
                Continuation(b"Ready for additional command text"),
            ),
            ("RFC 2177 §3", b"+ idling\r\n", Continuation(b"idling")),
            ("RFC 4959 §4 (bare '+')", b"+\r\n", Continuation(b"")),
            (
                "RFC 3501 §6.2.2 (base64 challenge)",
                b"+ YDMGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ=\r\n",
                Continuation(
                    b"YDMGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ=",
                ),
            ),
            (
                "RFC 2177 §3",
                b"A002 OK IDLE terminated\r\n",
                tagged("A002", Okay, rt(None, None, "IDLE terminated")),
            ),
            // Data: relayed untouched.
            ("RFC 3501 §7.3.1", b"* 23 EXISTS\r\n", U(Untagged::Data)),
            ("RFC 3501 §7.4.1", b"* 44 EXPUNGE\r\n", U(Untagged::Data)),
            (
                "RFC 3501 §7.2.6",
                b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
                U(Untagged::Data),
            ),
            ("RFC 3501 §7.2.5", b"* SEARCH 2 3 6\r\n", U(Untagged::Data)),
            (
                "RFC 3501 §7.2.2",
                b"* LIST (\\Noselect) \"/\" ~/Mail/foo\r\n",
                U(Untagged::Data),
            ),
            (
                "RFC 3501 §8",
                b"* 12 FETCH (BODY[HEADER] {342}\r\n",
                U(Untagged::Data),
            ),
            (
                "RFC 2971 §3.2",
                b"* ID (\"name\" \"Cyrus\" \"version\" \"1.5\")\r\n",
                U(Untagged::Data),
            ),
            ("RFC 2971 §3.1", b"* ID NIL\r\n", U(Untagged::Data)),
        ];
        for (source, line, expected) in cases {
            assert_eq!(
                classify(line),
                Ok(expected),
                "{source}: {}",
                line.escape_ascii()
            );
            check::response_case(line).unwrap_or_else(|v| panic!("{source}: {v}"));
        }
    }

    #[test]
    fn rfc5530_codes() {
        // RFC 5530 §3 examples and the codes the gateway itself sends.
        for (line, code) in [
            (
                &b"a NO [UNAVAILABLE] User's backend down for maintenance"[..],
                Code::Unavailable,
            ),
            (
                b"b NO [AUTHENTICATIONFAILED] Authentication failed",
                Code::AuthenticationFailed,
            ),
            (
                b"c1 NO [AUTHORIZATIONFAILED] No such authorization-ID",
                Code::AuthorizationFailed,
            ),
            (
                b"d NO [EXPIRED] That password isn't valid any more",
                Code::Expired,
            ),
            (
                b"d NO [PRIVACYREQUIRED] Connection offers no privacy",
                Code::PrivacyRequired,
            ),
            (b"e OK [CONTACTADMIN]", Code::ContactAdmin),
            (b"f NO [NOPERM] Access denied", Code::NoPerm),
            (b"g NO [INUSE] Mailbox in use", Code::InUse),
            (b"j NO [SERVERBUG] This should not happen", Code::ServerBug),
            (b"k2 OK [CLIENTBUG] Done", Code::ClientBug),
            (
                b"m NO [LIMIT] At most 32 flags in one mailbox supported",
                Code::Limit,
            ),
            (b"n1 NO [OVERQUOTA] Sorry", Code::OverQuota),
            (b"a NO [TRYCREATE] no such mailbox", Code::TryCreate),
            (b"a BAD [PARSE] bad header", Code::Parse),
            (b"a NO [TOOBIG] too big", Code::TooBig),
            (b"a no [unavailable] lower case", Code::Unavailable),
        ] {
            match classify(line) {
                Ok(Response::Tagged { text, .. }) => {
                    assert_eq!(text.code, Some(code), "{}", line.escape_ascii())
                }
                r => panic!("{}: {r:?}", line.escape_ascii()),
            }
        }
        // Codes RFC 5530 defines that the gateway does not act on keep
        // their name.
        match classify(b"h OK [EXPUNGEISSUED] Search completed").unwrap() {
            Response::Tagged { text, .. } => {
                assert_eq!(text.code, other("EXPUNGEISSUED", None));
                assert_eq!(text.text, b"Search completed");
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn lenient_and_malformed() {
        // Lenient: no SP after "]", no text at all, unknown code shapes.
        assert_eq!(
            classify(b"a OK [READ-ONLY]done").unwrap(),
            Response::Tagged {
                tag: "a",
                status: Status::Ok,
                text: rt(Some(Code::ReadOnly), Some("READ-ONLY"), "done")
            }
        );
        assert_eq!(
            classify(b"a OK").unwrap(),
            Response::Tagged {
                tag: "a",
                status: Status::Ok,
                text: rt(None, None, "")
            }
        );
        // "[" without "]" is text; an empty or non-atom code is kept raw.
        match classify(b"* OK [no close").unwrap() {
            Response::Untagged(Untagged::Status(_, t)) => {
                assert_eq!(t, rt(None, None, "[no close"))
            }
            r => panic!("{r:?}"),
        }
        match classify(b"* OK [] x").unwrap() {
            Response::Untagged(Untagged::Status(_, t)) => assert_eq!(t, rt(None, Some(""), "x")),
            r => panic!("{r:?}"),
        }
        // Malformed first lines.
        for line in [
            &b""[..],
            b"\r\n",
            b"*",
            b"*x",
            b"a",
            b"a FOO bar",
            b"a BYE bye",
            b" OK",
            b"(a) OK x",
            b"a\tOK x",
        ] {
            assert!(classify(line).is_err(), "{}", line.escape_ascii());
            check::response_case(line).unwrap();
        }
    }
}
