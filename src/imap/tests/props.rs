//! Property tests: serialize → parse is the identity for generated commands
//! and responses, and any chunking of a generated stream gives the frames it
//! was built from.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::imap::check::{self, Event, Policy};
use crate::imap::command::{parse_command, Command, CommandBody, InitialResponse, Mailbox, Tag};
use crate::imap::encode::{self, LiteralMode};
use crate::imap::framer::{Direction, Limits, LiteralHeader};
use crate::imap::response::{classify, Code, RespText, Response, Status, Untagged};
use crate::imap::Secret;

// ---- Generators --------------------------------------------------------

pub(super) fn tag() -> impl Strategy<Value = String> {
    // tag = 1*<any ASTRING-CHAR except "+">
    "[A-Za-z0-9!#$&',./:;<=>?@^_`|~\\]-]{1,12}"
}

/// Any octets a LOGIN argument can carry: everything but NUL, which no
/// string form can hold (CHAR8 = %x01-ff).
fn credential() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9@._-]{0,20}".prop_map(String::into_bytes),
        "[ -~]{0,20}".prop_map(String::into_bytes),
        "\\PC{0,10}".prop_map(String::into_bytes),
        vec(1u8..=255, 0..40),
    ]
}

fn atom() -> impl Strategy<Value = String> {
    "[A-Za-z0-9=._+-]{1,16}"
}

fn mailbox() -> impl Strategy<Value = Mailbox> {
    prop_oneof![
        "(?i:inbox)".prop_map(|_| Mailbox::Inbox),
        credential()
            .prop_filter("not INBOX", |m| !m.eq_ignore_ascii_case(b"INBOX"))
            .prop_map(Mailbox::Other),
    ]
}

/// A 7-bit ID string the ID serializer writes unchanged.
fn id_string() -> impl Strategy<Value = Vec<u8>> {
    "[ -~]{0,40}".prop_map(String::into_bytes)
}

fn random_case(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect()
}

/// A command the gateway parses fully, as a value.
pub(super) fn command() -> impl Strategy<Value = Command> {
    let simple = prop_oneof![
        Just(CommandBody::Capability),
        Just(CommandBody::Noop),
        Just(CommandBody::Logout),
        Just(CommandBody::StartTls),
        Just(CommandBody::Close),
        Just(CommandBody::Unselect),
        Just(CommandBody::Idle),
        Just(CommandBody::Unauthenticate),
        "[A-Z0-9-]{1,10}".prop_map(CommandBody::Compress),
    ];
    let login = (credential(), credential()).prop_map(|(u, p)| CommandBody::Login {
        username: u,
        password: Secret::new(p),
    });
    let authenticate = (
        "[A-Z0-9_-]{1,20}",
        prop::option::of(vec(any::<u8>(), 0..60)),
    )
        .prop_map(|(mechanism, ir)| {
            use base64::Engine as _;
            CommandBody::Authenticate {
                mechanism,
                initial: ir.map(|raw| {
                    if raw.is_empty() {
                        InitialResponse::Empty
                    } else {
                        InitialResponse::Base64(Secret::new(
                            base64::engine::general_purpose::STANDARD
                                .encode(raw)
                                .into_bytes(),
                        ))
                    }
                }),
            }
        });
    let id = prop::option::of(vec((id_string(), prop::option::of(id_string())), 1..=30))
        .prop_map(CommandBody::Id);
    let enable = vec(atom(), 1..5).prop_map(CommandBody::Enable);
    let params = prop::option::of(prop_oneof![
        Just(b"(CONDSTORE)".to_vec()),
        (1u32..u32::MAX, 1u64..1 << 40)
            .prop_map(|(v, m)| format!("(QRESYNC ({v} {m}))").into_bytes()),
        (1u32..u32::MAX, 1u64..1 << 40, 1u32..100)
            .prop_map(|(v, m, n)| { format!("(QRESYNC ({v} {m} 1:{n}) CONDSTORE)").into_bytes() }),
    ]);
    let select = (any::<bool>(), mailbox(), params).prop_map(|(examine, mailbox, params)| {
        if examine {
            CommandBody::Examine { mailbox, params }
        } else {
            CommandBody::Select { mailbox, params }
        }
    });
    let body = prop_oneof![simple, login, authenticate, id, enable, select];
    (tag(), body).prop_map(|(t, body)| Command {
        tag: Tag::new(&t).expect("generator makes valid tags"),
        body,
    })
}

/// Serialize a command with the encode module's serializers; `mask`
/// randomizes the command name's case, `mode` the literal form.
pub(super) fn serialize(cmd: &Command, mask: u64, mode: LiteralMode) -> Vec<u8> {
    let tag = cmd.tag.as_str();
    let name = random_case(cmd.body.name(), mask);
    let head = |out: &mut Vec<u8>| out.extend_from_slice(format!("{tag} {name}").as_bytes());
    let mut out = Vec::new();
    match &cmd.body {
        CommandBody::Login { username, password } => {
            return encode::login(tag, username, password.expose(), mode)
                .parts
                .concat();
        }
        CommandBody::Authenticate { mechanism, initial } => {
            use base64::Engine as _;
            let raw = initial.as_ref().map(|i| match i {
                InitialResponse::Empty => Vec::new(),
                InitialResponse::Base64(b) => base64::engine::general_purpose::STANDARD
                    .decode(b.expose())
                    .expect("generated base64"),
            });
            return encode::authenticate(tag, mechanism, raw.as_deref());
        }
        CommandBody::Id(params) => {
            let fields = params.iter().flatten().map(|(k, v)| (&k[..], v.as_deref()));
            return encode::id_command(tag, fields);
        }
        CommandBody::Enable(caps) => {
            head(&mut out);
            for c in caps {
                out.push(b' ');
                out.extend_from_slice(c.as_bytes());
            }
        }
        CommandBody::Select { mailbox, params } | CommandBody::Examine { mailbox, params } => {
            head(&mut out);
            out.push(b' ');
            match mailbox {
                Mailbox::Inbox => out.extend_from_slice(random_case("INBOX", mask >> 7).as_bytes()),
                Mailbox::Other(m) => {
                    encode::astring(&mut out, m, mode);
                }
            }
            if let Some(p) = params {
                out.push(b' ');
                out.extend_from_slice(p);
            }
        }
        CommandBody::Compress(alg) => {
            head(&mut out);
            out.push(b' ');
            out.extend_from_slice(alg.as_bytes());
        }
        _ => head(&mut out),
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn literal_mode() -> impl Strategy<Value = LiteralMode> {
    prop_oneof![Just(LiteralMode::Sync), Just(LiteralMode::NonSync)]
}

// ---- Commands -----------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// serialize → parse is the identity, and the serialized bytes frame as
    /// exactly one unit however they are chunked.
    #[test]
    fn command_round_trip(
        cmd in command(),
        mask in any::<u64>(),
        mode in literal_mode(),
        sizes in vec(1usize..40, 1..8),
    ) {
        let bytes = serialize(&cmd, mask, mode);
        let parsed = parse_command(&bytes);
        prop_assert_eq!(parsed.as_ref(), Ok(&cmd), "{}", bytes.escape_ascii());
        let run = check::all_chunkings_agree(
            Limits::default(), Direction::ClientToServer, &bytes, &sizes, Policy::default(),
        ).map_err(TestCaseError::fail)?;
        prop_assert_eq!(run.consumed, bytes.len());
        let ends_unit = matches!(run.events.last(), Some(Event::Line { literal: None, .. }));
        prop_assert!(ends_unit, "last frame does not end the unit");
        prop_assert!(check::command_case(&bytes).is_ok());
    }

    /// The LOGIN sent to a backend splits exactly after each synchronizing
    /// literal announcement, where the gateway must wait for `+`.
    #[test]
    fn login_parts_split_at_sync_literals(
        t in tag(), user in credential(), pass in credential(),
    ) {
        let out = encode::login(&t, &user, &pass, LiteralMode::Sync);
        let (last, waits) = out.parts.split_last().expect("at least one part");
        prop_assert!(last.ends_with(b"\r\n"));
        for part in waits {
            let sync = part.ends_with(b"}\r\n") && !part.ends_with(b"+}\r\n");
            prop_assert!(sync, "{}", part.escape_ascii());
        }
    }
}

// ---- Responses -----------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    // TEXT-CHAR and UTF-8, no CR/LF/NUL (the serializer would replace them).
    "[^\r\n\0]{0,40}"
}

fn code() -> impl Strategy<Value = (String, Code)> {
    prop_oneof![
        Just(("ALERT".to_string(), Code::Alert)),
        Just(("READ-ONLY".to_string(), Code::ReadOnly)),
        Just(("READ-WRITE".to_string(), Code::ReadWrite)),
        Just((
            "AUTHENTICATIONFAILED".to_string(),
            Code::AuthenticationFailed
        )),
        Just(("UNAVAILABLE".to_string(), Code::Unavailable)),
        Just(("PRIVACYREQUIRED".to_string(), Code::PrivacyRequired)),
        Just(("TRYCREATE".to_string(), Code::TryCreate)),
        vec(atom(), 0..6)
            .prop_map(|caps| { (encode::capability_code(&caps), Code::Capability(caps)) }),
        ("[A-Z][A-Z0-9-]{0,12}", prop::option::of("[ -Z^-~]{1,20}")).prop_map(|(n, a)| {
            let raw = match &a {
                Some(a) => format!("{n} {a}"),
                None => n.clone(),
            };
            let code = Code::parse(&n, a.as_deref());
            (raw, code)
        }),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::Ok), Just(Status::No), Just(Status::Bad)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// `encode::tagged` → `classify` is the identity.
    #[test]
    fn tagged_round_trip(t in tag(), st in status(), c in prop::option::of(code()), txt in text()) {
        let tag = Tag::new(&t).expect("valid tag");
        let out = encode::tagged(&tag, st, c.as_ref().map(|(raw, _)| raw.as_str()), &txt);
        let (code, raw_code) = match &c {
            Some((raw, code)) => (Some(code.clone()), Some(raw.as_bytes())),
            None => (None, None),
        };
        let expected_text = if c.is_none() && txt.starts_with('[') {
            format!(" {txt}")
        } else {
            txt.clone()
        };
        prop_assert_eq!(
            classify(&out),
            Ok(Response::Tagged {
                tag: &t,
                status: st,
                text: RespText { code, raw_code, text: expected_text.as_bytes() },
            }),
            "{}", out.escape_ascii()
        );
        prop_assert!(check::response_case(&out).is_ok());
    }

    /// `encode::untagged` → `classify` is the identity for OK/NO/BAD/BYE/PREAUTH.
    #[test]
    fn untagged_round_trip(
        word in prop_oneof![Just("OK"), Just("NO"), Just("BAD"), Just("BYE"), Just("PREAUTH")],
        c in prop::option::of(code()),
        txt in "[^\r\n\0\\[][^\r\n\0]{0,40}",
    ) {
        let out = encode::untagged(word, c.as_ref().map(|(raw, _)| raw.as_str()), &txt);
        let text = RespText {
            code: c.as_ref().map(|(_, code)| code.clone()),
            raw_code: c.as_ref().map(|(raw, _)| raw.as_bytes()),
            text: txt.as_bytes(),
        };
        let expected = match word {
            "OK" => Untagged::Status(Status::Ok, text),
            "NO" => Untagged::Status(Status::No, text),
            "BAD" => Untagged::Status(Status::Bad, text),
            "BYE" => Untagged::Bye(text),
            _ => Untagged::Preauth(text),
        };
        prop_assert_eq!(classify(&out), Ok(Response::Untagged(expected)));
        prop_assert!(check::response_case(&out).is_ok());
    }

    /// `encode::capability` → `classify` is the identity.
    #[test]
    fn capability_round_trip(caps in vec(atom(), 0..12)) {
        let out = encode::capability(&caps);
        prop_assert_eq!(classify(&out), Ok(Response::Untagged(Untagged::Capability(caps))));
    }
}

// ---- Framing of generated streams ---------------------------------------

/// One unit: a first line, then (literal, line) pairs; each line text is
/// free of CR, LF and braces so only the generated announcements count.
#[derive(Debug, Clone)]
struct Segment {
    text: Vec<u8>,
    literal: Option<(LiteralHeader, Vec<u8>)>,
    bare_lf: bool,
}

fn segment(last: bool) -> impl Strategy<Value = Segment> {
    let text = vec(
        any::<u8>().prop_filter("plain", |c| {
            !matches!(c, b'\r' | b'\n' | b'{' | b'}' | b'~')
        }),
        0..30,
    );
    let literal = vec(any::<u8>(), 0..200).prop_flat_map(|payload| {
        (any::<bool>(), any::<bool>()).prop_map(move |(sync, binary)| {
            (
                LiteralHeader {
                    len: payload.len() as u64,
                    sync,
                    binary,
                },
                payload.clone(),
            )
        })
    });
    let literal = if last {
        Just(None).boxed()
    } else {
        literal.prop_map(Some).boxed()
    };
    (text, literal, any::<bool>()).prop_map(|(text, literal, bare_lf)| Segment {
        text,
        literal,
        bare_lf,
    })
}

fn unit_segments() -> impl Strategy<Value = Vec<Segment>> {
    (vec(segment(false), 0..3), segment(true)).prop_map(|(mut v, last)| {
        v.push(last);
        v
    })
}

/// Build a stream and the events framing it must produce.
fn build(units: &[Vec<Segment>], direction: Direction) -> (Vec<u8>, Vec<Event>) {
    let mut stream = Vec::new();
    let mut events = Vec::new();
    for unit in units {
        for (i, seg) in unit.iter().enumerate() {
            let mut line = Vec::new();
            if i == 0 && direction == Direction::ServerToClient {
                // A data response: status responses never announce literals.
                line.extend_from_slice(b"* 1 FETCH ");
            }
            line.extend_from_slice(&seg.text);
            if let Some((h, _)) = &seg.literal {
                let tilde = if h.binary { "~" } else { "" };
                let plus = if h.sync { "" } else { "+" };
                line.extend_from_slice(format!("{tilde}{{{}{plus}}}", h.len).as_bytes());
            }
            line.extend_from_slice(if seg.bare_lf { b"\n" } else { b"\r\n" });
            // A bare LF right after text ending in CR would read as CRLF.
            let bare_lf = seg.bare_lf && !line.ends_with(b"\r\n");
            stream.extend_from_slice(&line);
            events.push(Event::Line {
                bytes: line,
                starts_unit: i == 0,
                literal: seg.literal.as_ref().map(|(h, _)| *h),
                bare_lf,
            });
            if let Some((_, payload)) = &seg.literal {
                stream.extend_from_slice(payload);
                if !payload.is_empty() {
                    events.push(Event::Literal(payload.clone()));
                }
            }
        }
    }
    (stream, events)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any chunking of a generated stream of lines with random literals
    /// yields exactly the frames it was built from.
    #[test]
    fn generated_streams_frame_the_same_under_any_chunking(
        units in vec(unit_segments(), 1..6),
        server in any::<bool>(),
        sizes in vec(1usize..300, 1..10),
    ) {
        let direction = if server { Direction::ServerToClient } else { Direction::ClientToServer };
        let (stream, expected) = build(&units, direction);
        let run = check::all_chunkings_agree(
            Limits::default(), direction, &stream, &sizes, Policy::default(),
        ).map_err(TestCaseError::fail)?;
        prop_assert_eq!(run.error, None);
        prop_assert_eq!(run.consumed, stream.len());
        prop_assert_eq!(run.events, expected);
    }

    /// Arbitrary bytes under arbitrary limits: every chunking passes the
    /// invariant checks and agrees (the fuzz targets' property, in-tree).
    #[test]
    fn arbitrary_bytes_any_chunking(data in vec(any::<u8>(), 0..400), server in any::<bool>()) {
        let direction = if server { Direction::ServerToClient } else { Direction::ClientToServer };
        prop_assert_eq!(check::framer_case(&data, direction), Ok(()));
    }

    /// The command and response fuzz invariants hold on arbitrary lines.
    #[test]
    fn arbitrary_lines_parse_without_violations(data in vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(check::command_case(&data), Ok(()));
        prop_assert_eq!(check::response_case(&data), Ok(()));
    }
}
