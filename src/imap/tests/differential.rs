//! Differential test of the command grammar against imap-codec (a
//! dev-dependency only): on a generated corpus of the commands the gateway
//! parses fully, and on mutations of them, imapgate's [`parse_command`] and
//! imap-codec's `CommandCodec` must agree on accept/reject and, when both
//! accept, on the parsed values (tag, command, LOGIN user and password,
//! AUTHENTICATE mechanism and initial response, ID parameters, ENABLE
//! capabilities, SELECT/EXAMINE mailbox and parameters).
//!
//! Deliberate disagreements, each recognised by [`deliberate`] and counted:
//! - **Bare LF**: imapgate accepts LF alone as a line ending (as its framer
//!   does); imap-codec wants CRLF (unless built with `quirk_crlf_relaxed`).
//! - **UNAUTHENTICATE** (RFC 8437): imapgate parses it so the session can
//!   refuse it; imap-codec does not know the command.
//! - **COMPRESS**: imapgate accepts any algorithm atom (the session refuses
//!   COMPRESS anyway, RFC 4978 would change the framing); imap-codec only
//!   DEFLATE.
//! - **SELECT/EXAMINE parameters**: imapgate keeps `select-params` raw and
//!   lets the backend judge them (RFC 4466 §2.1 makes them extensible);
//!   imap-codec knows only CONDSTORE and QRESYNC and checks their syntax.
//! - **Base64 initial responses** whose last character carries non-zero
//!   padding bits (`QR==`): valid per RFC 9051 §9 `base64`, which imapgate
//!   checks; imap-codec decodes strictly and rejects them.
//! - **Empty initial response as `AUTHENTICATE PLAIN ` (trailing SP)**: the
//!   ABNF's `base64` may be empty, and imap-codec takes that as an empty
//!   response; RFC 4959 §3 says an empty response is sent as `=`, so
//!   imapgate rejects the ambiguous form.
//! - **Limits**: imapgate caps ID at 30 pairs of at most 1024 octets (RFC
//!   2971 §3.3) and literal lengths at 63 bits; imap-codec has no ID caps
//!   and 32-bit literal lengths.  The generator stays within both, so this
//!   never shows here; `command.rs` tests the caps.

use std::borrow::Cow;

use base64::Engine as _;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command as CCommand, CommandBody as CBody, SelectParameter};
use imap_codec::imap_types::mailbox::Mailbox as CMailbox;
use imap_codec::CommandCodec;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

use super::props::{command, serialize};
use crate::imap::check::{self, Event, Policy};
use crate::imap::command::{parse_command, Command, CommandBody, InitialResponse, Mailbox};
use crate::imap::encode::LiteralMode;
use crate::imap::framer::{Direction, Limits};

/// ID parameters as both parsers give them.
type IdList = Option<Vec<(Vec<u8>, Option<Vec<u8>>)>>;

/// One parser's verdict: the tag and a summary when it accepts.
type Verdict = Option<(String, Summary)>;

/// A comparable summary of a parsed command, from either parser.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Summary {
    Simple(&'static str),
    Login(Vec<u8>, Vec<u8>),
    Authenticate(String, Option<Vec<u8>>),
    Id(IdList),
    Enable(Vec<String>),
    Select {
        examine: bool,
        inbox: bool,
        name: Vec<u8>,
        params: Vec<String>,
    },
    Compress(String),
}

fn ours(cmd: &Command) -> Summary {
    match &cmd.body {
        CommandBody::Login { username, password } => {
            Summary::Login(username.clone(), password.expose().clone())
        }
        CommandBody::Authenticate { mechanism, initial } => Summary::Authenticate(
            mechanism.to_ascii_uppercase(),
            initial.as_ref().map(|i| match i {
                InitialResponse::Empty => Vec::new(),
                InitialResponse::Base64(b) => base64::engine::general_purpose::STANDARD
                    .decode(b.expose())
                    .unwrap_or_else(|_| b"<undecodable>".to_vec()),
            }),
        ),
        CommandBody::Id(p) => Summary::Id(p.clone()),
        CommandBody::Enable(caps) => {
            Summary::Enable(caps.iter().map(|c| c.to_ascii_uppercase()).collect())
        }
        CommandBody::Select { mailbox, params } | CommandBody::Examine { mailbox, params } => {
            let (inbox, name) = match mailbox {
                Mailbox::Inbox => (true, Vec::new()),
                Mailbox::Other(n) => (false, n.clone()),
            };
            Summary::Select {
                examine: matches!(cmd.body, CommandBody::Examine { .. }),
                inbox,
                name,
                params: params.as_deref().map(raw_param_summary).unwrap_or_default(),
            }
        }
        CommandBody::Compress(a) => Summary::Compress(a.clone()),
        CommandBody::Capability => Summary::Simple("CAPABILITY"),
        CommandBody::Noop => Summary::Simple("NOOP"),
        CommandBody::Logout => Summary::Simple("LOGOUT"),
        CommandBody::StartTls => Summary::Simple("STARTTLS"),
        CommandBody::Close => Summary::Simple("CLOSE"),
        CommandBody::Unselect => Summary::Simple("UNSELECT"),
        CommandBody::Idle => Summary::Simple("IDLE"),
        CommandBody::Unauthenticate => Summary::Simple("UNAUTHENTICATE"),
        CommandBody::Other(_) => Summary::Simple("OTHER"),
    }
}

/// `(CONDSTORE)` → `["CONDSTORE"]`; `(QRESYNC (1 2 …))` → `["QRESYNC 1 2"]`
/// (name, UIDVALIDITY and MODSEQ: what imap-codec's types also carry).
fn raw_param_summary(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let inner = text.trim_start_matches('(').trim_end_matches(')');
    let mut out = Vec::new();
    let mut words = inner.split(' ').peekable();
    while let Some(w) = words.next() {
        let w = w.trim_matches(|c| c == '(' || c == ')');
        if w.eq_ignore_ascii_case("CONDSTORE") {
            out.push("CONDSTORE".into());
        } else if w.eq_ignore_ascii_case("QRESYNC") {
            let v = words.next().unwrap_or("").trim_matches('(');
            let m = words.next().unwrap_or("").trim_matches(')');
            out.push(format!("QRESYNC {v} {m}"));
        }
    }
    out
}

fn theirs(cmd: &CCommand<'_>) -> Summary {
    let bytes = |b: &dyn AsRef<[u8]>| b.as_ref().to_vec();
    match &cmd.body {
        CBody::Login { username, password } => {
            Summary::Login(bytes(username), bytes(password.declassify()))
        }
        CBody::Authenticate {
            mechanism,
            initial_response,
        } => Summary::Authenticate(
            mechanism.to_string().to_ascii_uppercase(),
            initial_response
                .as_ref()
                .map(|s| Cow::as_ref(s.declassify()).to_vec()),
        ),
        CBody::Id { parameters } => Summary::Id(parameters.as_ref().map(|ps| {
            ps.iter()
                .map(|(k, v)| (bytes(k), v.0.as_ref().map(|v| bytes(v))))
                .collect()
        })),
        CBody::Enable { capabilities } => Summary::Enable(
            capabilities
                .as_ref()
                .iter()
                .map(|c| c.to_string().to_ascii_uppercase())
                .collect(),
        ),
        CBody::Select {
            mailbox,
            parameters,
        }
        | CBody::Examine {
            mailbox,
            parameters,
        } => {
            let (inbox, name) = match mailbox {
                CMailbox::Inbox => (true, Vec::new()),
                CMailbox::Other(o) => (false, bytes(o)),
            };
            Summary::Select {
                examine: matches!(cmd.body, CBody::Examine { .. }),
                inbox,
                name,
                params: parameters
                    .iter()
                    .map(|p| match p {
                        SelectParameter::CondStore => "CONDSTORE".to_string(),
                        SelectParameter::QResync {
                            uid_validity,
                            mod_sequence_value,
                            ..
                        } => format!("QRESYNC {uid_validity} {mod_sequence_value}"),
                    })
                    .collect(),
            }
        }
        CBody::Compress { algorithm } => Summary::Compress(algorithm.to_string()),
        CBody::Capability => Summary::Simple("CAPABILITY"),
        CBody::Noop => Summary::Simple("NOOP"),
        CBody::Logout => Summary::Simple("LOGOUT"),
        CBody::StartTLS => Summary::Simple("STARTTLS"),
        CBody::Close => Summary::Simple("CLOSE"),
        CBody::Unselect => Summary::Simple("UNSELECT"),
        CBody::Idle => Summary::Simple("IDLE"),
        _ => Summary::Simple("OTHER"),
    }
}

/// Both parsers' verdicts: `Some((tag, summary))` when accepted.
fn judge(input: &[u8]) -> (Verdict, Verdict) {
    let a = parse_command(input)
        .ok()
        .filter(|c| !matches!(c.body, CommandBody::Other(_)))
        .map(|c| (c.tag.as_str().to_owned(), ours(&c)));
    let b = match CommandCodec::default().decode(input) {
        Ok(([], c)) => Some((c.tag.inner().to_owned(), theirs(&c))),
        _ => None,
    };
    (a, b)
}

/// Why the two parsers may disagree on `input`, if it is one of the
/// documented, deliberate differences.
fn deliberate(input: &[u8], ours: &Verdict, theirs: &Verdict) -> Option<&'static str> {
    // The framer decides where lines end (literal payload may end in CR),
    // so ask it whether any line of this unit ends in a bare LF.
    let bare_lf = check::drive(
        Limits::default(),
        Direction::ClientToServer,
        input,
        &mut std::iter::once(input.len()),
        Policy::default(),
    )
    .is_ok_and(|run| {
        run.events
            .iter()
            .any(|e| matches!(e, Event::Line { bare_lf: true, .. }))
    });
    if bare_lf {
        return Some("bare LF");
    }
    if let (None, Some((_, Summary::Authenticate(_, Some(ir))))) = (ours, theirs) {
        if ir.is_empty() && !input.ends_with(b" =\r\n") {
            return Some("empty initial response without '='");
        }
    }
    match ours.as_ref().map(|(_, s)| s) {
        Some(Summary::Simple("UNAUTHENTICATE")) => Some("UNAUTHENTICATE"),
        Some(Summary::Compress(a)) if !a.eq_ignore_ascii_case("DEFLATE") => {
            Some("COMPRESS algorithm")
        }
        Some(Summary::Select { .. }) if input.windows(2).any(|w| w == b" (") => {
            Some("select-params kept raw")
        }
        Some(Summary::Authenticate(_, Some(ir))) if ir == b"<undecodable>" => {
            Some("base64 padding bits")
        }
        _ => None,
    }
}

/// Mutate a valid command: drop, insert or replace one octet, truncate, or
/// turn CRLF into LF.  Many mutants are invalid, which tests rejection.
fn mutate(input: &[u8], rng: &mut TestRng) -> Vec<u8> {
    use proptest::prelude::RngExt as _;
    const INSERTS: &[u8] = b" \"(){}\\=+*%]~\0\xff\x01aZ9\r\n";
    let mut v = input.to_vec();
    let at = rng.random_range(0..v.len());
    match rng.random_range(0..5) {
        0 => {
            v.remove(at);
        }
        1 => v.insert(at, INSERTS[rng.random_range(0..INSERTS.len())]),
        2 => v[at] = INSERTS[rng.random_range(0..INSERTS.len())],
        3 => {
            v.truncate(at);
            v.extend_from_slice(b"\r\n");
        }
        _ => {
            if let Some(i) = v.windows(2).position(|w| w == b"\r\n") {
                v.remove(i);
            }
        }
    }
    v
}

#[test]
fn agrees_with_imap_codec() {
    let mut runner = TestRunner::deterministic();
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let strategy = command();
    let mut stats = std::collections::BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    let mut compared = 0;
    for i in 0..3000u64 {
        let cmd = strategy
            .new_tree(&mut runner)
            .expect("generator works")
            .current();
        let mode = if i % 2 == 0 {
            LiteralMode::Sync
        } else {
            LiteralMode::NonSync
        };
        let valid = serialize(&cmd, i.wrapping_mul(0x9E37_79B9_7F4A_7C15), mode);
        let mut inputs = vec![valid.clone()];
        inputs.extend((0..4).map(|_| mutate(&valid, &mut rng)));
        for input in inputs {
            compared += 1;
            let (a, b) = judge(&input);
            let verdict = match (&a, &b) {
                (Some(x), Some(y)) if x == y => "both accept, same values",
                (None, None) => "both reject",
                _ => match deliberate(&input, &a, &b) {
                    Some(why) => why,
                    None => {
                        failures.push(format!(
                            "{}\n  imapgate:   {a:?}\n  imap-codec: {b:?}",
                            input.escape_ascii()
                        ));
                        "UNEXPLAINED"
                    }
                },
            };
            *stats.entry(verdict).or_default() += 1;
        }
    }
    eprintln!("compared {compared} inputs: {stats:#?}");
    assert!(
        failures.is_empty(),
        "{} unexplained disagreements, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(15)].join("\n")
    );
    // The corpus must actually exercise agreement on accepted commands.
    assert!(stats.get("both accept, same values").copied().unwrap_or(0) > 2500);
}

/// Spot checks of each deliberate difference, so a change on either side
/// shows up here by name.
#[test]
fn deliberate_differences() {
    for (input, why) in [
        (&b"a NOOP\n"[..], "bare LF"),
        (b"a UNAUTHENTICATE\r\n", "UNAUTHENTICATE"),
        (b"a COMPRESS X-ZSTD\r\n", "COMPRESS algorithm"),
        (b"a SELECT INBOX (X-FOO 1)\r\n", "select-params kept raw"),
        (b"a AUTHENTICATE PLAIN QR==\r\n", "base64 padding bits"),
    ] {
        let (a, b) = judge(input);
        assert!(
            a.is_some() && b.is_none(),
            "{}: {a:?} {b:?}",
            input.escape_ascii()
        );
        assert_eq!(deliberate(input, &a, &b), Some(why));
    }
    let input = b"a AUTHENTICATE PLAIN \r\n";
    let (a, b) = judge(input);
    assert!(a.is_none() && b.is_some());
    assert_eq!(
        deliberate(input, &a, &b),
        Some("empty initial response without '='")
    );
    // And agreement on the RFC examples.
    for input in [
        &b"a001 LOGIN SMITH SESAME\r\n"[..],
        b"A01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n",
        b"A01 AUTHENTICATE EXTERNAL =\r\n",
        b"a023 ID (\"name\" \"sodr\" \"version\" \"19.34\")\r\n",
        b"a042 ID NIL\r\n",
        b"t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n",
        b"A142 SELECT inbox\r\n",
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
        b"c compress deflate\r\n",
        b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n",
    ] {
        let (a, b) = judge(input);
        assert!(a.is_some(), "{}", input.escape_ascii());
        assert_eq!(a, b, "{}", input.escape_ascii());
    }
}
