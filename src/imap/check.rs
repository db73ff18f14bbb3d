//! Invariant checks for the protocol core, written once and run by both the
//! fuzz targets (`fuzz/fuzz_targets/*.rs`) and the corpus replay test
//! (`src/imap/tests/corpus.rs`), so `cargo test` judges every committed
//! seed exactly as libFuzzer does.
//!
//! Each `*_case` function takes one fuzz input and returns `Err(what broke)`
//! when an invariant fails; the fuzz targets panic on that.  Nothing here may
//! panic on any input: a panic is itself a finding.
//!
//! Framer invariants ([`framer_case`]):
//! - every frame is non-empty and no longer than the bytes the caller holds,
//!   so frames partition the consumed input, in order;
//! - a line frame ends at its first LF, is at most `max_line` octets, and
//!   reports `bare_lf`, `starts_unit` and its literal exactly as an
//!   independent reading of the line says ([`reference_literal`]);
//! - literal payload chunks add up to the announced size, never more, and
//!   the last one says so;
//! - announced literals respect `max_literal` and `max_literals_per_unit`;
//! - `Ok(None)` leaves the caller holding less than `max_line` octets and no
//!   complete line;
//! - feeding the stream whole, byte by byte, or in random chunks gives the
//!   same frames (literal chunks merged) and the same error.

use super::command::{parse_command, parse_command_head, CommandBody, InitialResponse, Mailbox};
use super::encode;
use super::framer::{Direction, Frame, FrameError, Framer, Limits, LiteralHeader};
use super::response::{classify, Response, Untagged};

/// One observation of a framer run, literal chunks merged so that runs over
/// different chunkings compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Line {
        bytes: Vec<u8>,
        starts_unit: bool,
        literal: Option<LiteralHeader>,
        bare_lf: bool,
    },
    /// A whole literal's payload.
    Literal(Vec<u8>),
    /// An incomplete literal's payload at the end of the input.
    PartialLiteral(Vec<u8>),
    /// A synchronizing literal the caller refused (the framer said it was
    /// over a limit, or the caller's policy said no): the line is consumed
    /// and the stream goes on with the next command.
    Refused {
        bytes: Vec<u8>,
        error: Option<FrameError>,
    },
}

/// The result of driving a framer over one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub events: Vec<Event>,
    /// The error that ended the stream, if any.
    pub error: Option<FrameError>,
    /// Octets consumed by frames (the rest was held, incomplete).
    pub consumed: usize,
}

/// What the simulated session does with synchronizing literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Refuse (`cancel_literal`) synchronizing literals longer than this.
    pub refuse_sync_over: Option<u64>,
}

/// What a literal announcement at the end of a line says, read
/// independently of the framer's own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefLiteral {
    None,
    Header(LiteralHeader),
    Overflow { sync: bool },
}

/// An independent reading of `literal` / `literal8` at the end of a line
/// (RFC 9051 §9 `"{" number64 ["+"] "}"`, RFC 4466 `"~{" number ["+"] "}"`),
/// with the response-direction rule (status responses and continuation
/// requests never announce literals) taken from [`classify`].
pub fn reference_literal(line: &[u8], direction: Direction, starts_unit: bool) -> RefLiteral {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let Some(open) = body.iter().rposition(|&c| c == b'{') else {
        return RefLiteral::None;
    };
    let Some(inner) = body[open + 1..].strip_suffix(b"}") else {
        return RefLiteral::None;
    };
    let (digits, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return RefLiteral::None;
    }
    if direction == Direction::ServerToClient
        && starts_unit
        && matches!(
            classify(body),
            Ok(Response::Continuation(_)
                | Response::Tagged { .. }
                | Response::Untagged(
                    Untagged::Status(..) | Untagged::Bye(_) | Untagged::Preauth(_)
                ))
        )
    {
        return RefLiteral::None;
    }
    let binary = open > 0 && body[open - 1] == b'~';
    // Strip leading zeros so the parse fails only on real overflow.
    let significant = match digits.iter().position(|&c| c != b'0') {
        Some(i) => &digits[i..],
        None => &b"0"[..],
    };
    match std::str::from_utf8(significant)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(len) if len <= i64::MAX as u64 => {
            RefLiteral::Header(LiteralHeader { len, sync, binary })
        }
        _ => RefLiteral::Overflow { sync },
    }
}

/// The simulated caller's view of where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Line { starts_unit: bool },
    Literal { announced: u64, remaining: u64 },
}

/// Drive a fresh framer over `input`, handing it bytes in chunks of the
/// sizes `chunks` yields (the last size repeats; 0 counts as 1), the way a
/// socket would.  Checks every invariant listed in the module docs on the
/// way and returns what happened.
pub fn drive(
    limits: Limits,
    direction: Direction,
    input: &[u8],
    chunks: &mut dyn Iterator<Item = usize>,
    policy: Policy,
) -> Result<Run, String> {
    let mut framer = Framer::with_direction(limits, direction);
    let mut run = Run {
        events: Vec::new(),
        error: None,
        consumed: 0,
    };
    let mut model = Model::Line { starts_unit: true };
    let mut literals_in_unit: u32 = 0;
    let mut literal_buf: Vec<u8> = Vec::new();
    let mut fed = 0usize;
    let mut last_chunk = input.len().max(1);
    loop {
        if fed < input.len() {
            let n = chunks.next().unwrap_or(last_chunk).max(1);
            last_chunk = n;
            fed = fed.saturating_add(n).min(input.len());
        }
        loop {
            let held = &input[run.consumed..fed];
            match framer.next(held) {
                Ok(Some(frame)) => {
                    let len = frame.len();
                    if len == 0 || len > held.len() {
                        return Err(format!(
                            "frame of {len} octets with {} held: {frame:?}",
                            held.len()
                        ));
                    }
                    let bytes = &held[..len];
                    match (frame, model) {
                        (
                            Frame::Line {
                                starts_unit,
                                literal,
                                bare_lf,
                                ..
                            },
                            Model::Line {
                                starts_unit: expected,
                            },
                        ) => {
                            check_line(
                                bytes,
                                limits,
                                direction,
                                expected,
                                starts_unit,
                                literal,
                                bare_lf,
                            )?;
                            if let Some(h) = literal {
                                literals_in_unit =
                                    if starts_unit { 1 } else { literals_in_unit + 1 };
                                if literals_in_unit > limits.max_literals_per_unit {
                                    return Err(format!(
                                        "{literals_in_unit} literals in a unit, limit {}",
                                        limits.max_literals_per_unit
                                    ));
                                }
                                if h.len > limits.max_literal {
                                    return Err(format!(
                                        "literal {} over limit {}",
                                        h.len, limits.max_literal
                                    ));
                                }
                                if h.sync && policy.refuse_sync_over.is_some_and(|m| h.len > m) {
                                    framer.cancel_literal();
                                    model = Model::Line { starts_unit: true };
                                    run.events.push(Event::Refused {
                                        bytes: bytes.to_vec(),
                                        error: None,
                                    });
                                } else {
                                    model = if h.len > 0 {
                                        Model::Literal {
                                            announced: h.len,
                                            remaining: h.len,
                                        }
                                    } else {
                                        Model::Line { starts_unit: false }
                                    };
                                    run.events.push(Event::Line {
                                        bytes: bytes.to_vec(),
                                        starts_unit,
                                        literal,
                                        bare_lf,
                                    });
                                }
                            } else {
                                model = Model::Line { starts_unit: true };
                                run.events.push(Event::Line {
                                    bytes: bytes.to_vec(),
                                    starts_unit,
                                    literal,
                                    bare_lf,
                                });
                            }
                        }
                        (
                            Frame::Literal { last, .. },
                            Model::Literal {
                                announced,
                                remaining,
                            },
                        ) => {
                            let n = len as u64;
                            if n > remaining {
                                return Err(format!(
                                    "literal chunk of {n} with {remaining} of {announced} left"
                                ));
                            }
                            if last != (n == remaining) {
                                return Err(format!(
                                    "literal chunk last={last} with {n} of {remaining} left"
                                ));
                            }
                            literal_buf.extend_from_slice(bytes);
                            if last {
                                run.events
                                    .push(Event::Literal(std::mem::take(&mut literal_buf)));
                                model = Model::Line { starts_unit: false };
                            } else {
                                model = Model::Literal {
                                    announced,
                                    remaining: remaining - n,
                                };
                            }
                        }
                        (f, m) => return Err(format!("frame {f:?} while expecting {m:?}")),
                    }
                    run.consumed += len;
                    check_accessors(&framer, model)?;
                }
                Ok(None) => {
                    match model {
                        Model::Literal { .. } if !held.is_empty() => {
                            return Err("Ok(None) inside a literal with bytes held".into());
                        }
                        Model::Line { .. } if held.len() >= limits.max_line => {
                            return Err(format!(
                                "Ok(None) holding {} octets, max_line {}",
                                held.len(),
                                limits.max_line
                            ));
                        }
                        Model::Line { .. } if held.contains(&b'\n') => {
                            return Err("Ok(None) with a complete line held".into());
                        }
                        _ => {}
                    }
                    break;
                }
                Err(e) => {
                    let Model::Line { starts_unit } = model else {
                        return Err(format!("{e:?} inside a literal"));
                    };
                    check_error(&e, held, limits, direction, starts_unit, literals_in_unit)?;
                    match e.line_len() {
                        Some(line_len) if !e.payload_follows() => {
                            if !framer.at_unit_start() {
                                return Err(format!("{e:?} left the framer mid-unit"));
                            }
                            run.events.push(Event::Refused {
                                bytes: held[..line_len].to_vec(),
                                error: Some(e),
                            });
                            run.consumed += line_len;
                            model = Model::Line { starts_unit: true };
                        }
                        _ => {
                            run.error = Some(e);
                            return Ok(run);
                        }
                    }
                }
            }
        }
        if fed == input.len() {
            break;
        }
    }
    if !literal_buf.is_empty() {
        run.events.push(Event::PartialLiteral(literal_buf));
    }
    Ok(run)
}

#[allow(clippy::too_many_arguments)]
fn check_line(
    bytes: &[u8],
    limits: Limits,
    direction: Direction,
    expected_start: bool,
    starts_unit: bool,
    literal: Option<LiteralHeader>,
    bare_lf: bool,
) -> Result<(), String> {
    let len = bytes.len();
    if bytes.last() != Some(&b'\n') || bytes[..len - 1].contains(&b'\n') {
        return Err(format!(
            "line frame does not end at its first LF: {:?}",
            String::from_utf8_lossy(bytes)
        ));
    }
    if len > limits.max_line {
        return Err(format!("line of {len} over max_line {}", limits.max_line));
    }
    if bare_lf != (len < 2 || bytes[len - 2] != b'\r') {
        return Err(format!("bare_lf={bare_lf} wrong"));
    }
    if starts_unit != expected_start {
        return Err(format!(
            "starts_unit={starts_unit}, expected {expected_start}"
        ));
    }
    let reference = reference_literal(bytes, direction, starts_unit);
    let agrees = match (reference, literal) {
        (RefLiteral::None, None) => true,
        (RefLiteral::Header(r), Some(l)) => r == l,
        _ => false,
    };
    if !agrees {
        return Err(format!(
            "line {:?}: framer says {literal:?}, reference {reference:?}",
            String::from_utf8_lossy(bytes)
        ));
    }
    Ok(())
}

fn check_error(
    e: &FrameError,
    held: &[u8],
    limits: Limits,
    direction: Direction,
    starts_unit: bool,
    literals_in_unit: u32,
) -> Result<(), String> {
    let line_of = |line_len: usize| -> Result<&[u8], String> {
        let line = held
            .get(..line_len)
            .ok_or_else(|| format!("{e:?}: line_len past the held {} octets", held.len()))?;
        if line_len > limits.max_line
            || line.last() != Some(&b'\n')
            || line[..line_len - 1].contains(&b'\n')
        {
            return Err(format!("{e:?}: line_len is not one line"));
        }
        Ok(line)
    };
    match *e {
        FrameError::LineTooLong { max } => {
            if max != limits.max_line || held.len() < max || held[..max].contains(&b'\n') {
                return Err(format!("{e:?} with {} held", held.len()));
            }
        }
        FrameError::LiteralTooLarge {
            line_len,
            header,
            max,
        } => {
            let line = line_of(line_len)?;
            if max != limits.max_literal
                || header.len <= max
                || reference_literal(line, direction, starts_unit) != RefLiteral::Header(header)
            {
                return Err(format!("{e:?} wrong"));
            }
        }
        FrameError::LiteralOverflow { line_len, sync } => {
            let line = line_of(line_len)?;
            if reference_literal(line, direction, starts_unit) != (RefLiteral::Overflow { sync }) {
                return Err(format!("{e:?} wrong"));
            }
        }
        FrameError::TooManyLiterals {
            line_len,
            header,
            max,
        } => {
            let line = line_of(line_len)?;
            let count = if starts_unit { 1 } else { literals_in_unit + 1 };
            if max != limits.max_literals_per_unit
                || count <= max
                || header.len > limits.max_literal
                || reference_literal(line, direction, starts_unit) != RefLiteral::Header(header)
            {
                return Err(format!("{e:?} wrong (count {count})"));
            }
        }
    }
    Ok(())
}

fn check_accessors(framer: &Framer, model: Model) -> Result<(), String> {
    let ok = match model {
        Model::Line { starts_unit } => {
            !framer.in_literal()
                && framer.literal_remaining() == 0
                && framer.at_unit_start() == starts_unit
        }
        Model::Literal { remaining, .. } => {
            framer.in_literal()
                && framer.literal_remaining() == remaining
                && !framer.at_unit_start()
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("framer state {framer:?} disagrees with {model:?}"))
    }
}

/// Drive the framer over `input` whole, byte by byte, split at `cuts`, and
/// in the chunk sizes `sizes`; every run must pass [`drive`]'s checks and
/// all must agree.  Returns the whole-input run.
pub fn all_chunkings_agree(
    limits: Limits,
    direction: Direction,
    input: &[u8],
    sizes: &[usize],
    policy: Policy,
) -> Result<Run, String> {
    let whole = drive(
        limits,
        direction,
        input,
        &mut std::iter::once(input.len()),
        policy,
    )?;
    let bytewise = drive(limits, direction, input, &mut std::iter::repeat(1), policy)?;
    if bytewise != whole {
        return Err(format!(
            "byte-by-byte differs from whole:\n{bytewise:?}\n{whole:?}"
        ));
    }
    if !sizes.is_empty() {
        let chunked = drive(
            limits,
            direction,
            input,
            &mut sizes.iter().copied().cycle(),
            policy,
        )?;
        if chunked != whole {
            return Err(format!(
                "chunks {sizes:?} differ from whole:\n{chunked:?}\n{whole:?}"
            ));
        }
    }
    Ok(whole)
}

/// Fuzz input layout for the framer targets: four configuration octets,
/// then the stream.
///
/// - octet 0: `max_line` (from a table that includes tiny limits);
/// - octet 1: `max_literal`; bit 7 also refuses sync literals over 3 octets;
/// - octet 2: `max_literals_per_unit`;
/// - octet 3: seed for the random chunk sizes.
///
/// Shorter inputs use the defaults and are all stream.
pub fn framer_case(data: &[u8], direction: Direction) -> Result<(), String> {
    const MAX_LINE: [usize; 8] = [1, 2, 8, 16, 40, 100, 1000, 64 * 1024];
    const MAX_LITERAL: [u64; 8] = [0, 1, 3, 10, 100, 4096, 1 << 20, 64 << 20];
    const MAX_LITERALS: [u32; 4] = [0, 1, 3, 1024];
    let (limits, policy, seed, stream) = match data {
        [a, b, c, d, rest @ ..] => (
            Limits {
                max_line: MAX_LINE[usize::from(a % 8)],
                max_literal: MAX_LITERAL[usize::from(b % 8)],
                max_literals_per_unit: MAX_LITERALS[usize::from(c % 4)],
            },
            Policy {
                refuse_sync_over: (b & 0x80 != 0).then_some(3),
            },
            *d,
            rest,
        ),
        _ => (Limits::default(), Policy::default(), 0, data),
    };
    // xorshift: cheap, deterministic chunk sizes from 1 to 64.
    let mut x = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let sizes: Vec<usize> = (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 64) as usize + 1
        })
        .collect();
    all_chunkings_agree(limits, direction, stream, &sizes, policy).map(|_| ())
}

/// Fuzz invariants for the command parser: [`parse_command`] and
/// [`parse_command_head`] never panic and agree on tag and name; what
/// parses re-encodes (with [`encode`]) to something that parses the same.
pub fn command_case(data: &[u8]) -> Result<(), String> {
    let parsed = parse_command(data);
    let head = parse_command_head(data);
    let cmd = match parsed {
        Err(e) => {
            let head_tag = match &head {
                Ok((t, _)) => Some(t),
                Err(h) => h.tag.as_ref(),
            };
            if e.tag.is_some() && e.tag.as_ref() != head_tag {
                return Err(format!("tags differ: {e:?} vs {head:?}"));
            }
            return Ok(());
        }
        Ok(cmd) => cmd,
    };
    match &head {
        Ok((t, n)) if *t == cmd.tag && n == cmd.body.name() => {}
        _ => return Err(format!("head {head:?} disagrees with {cmd:?}")),
    }
    let tag = cmd.tag.as_str();
    let reparse = |bytes: &[u8]| {
        parse_command(bytes).map_err(|e| {
            format!(
                "re-encoded {:?} does not parse: {e}",
                String::from_utf8_lossy(bytes)
            )
        })
    };
    match &cmd.body {
        CommandBody::Login { username, password } => {
            for mode in [encode::LiteralMode::Sync, encode::LiteralMode::NonSync] {
                let out = encode::login(tag, username, password.expose(), mode)
                    .parts
                    .concat();
                let again = reparse(&out)?;
                if again != cmd {
                    return Err(format!("LOGIN round trip: {again:?} vs {cmd:?}"));
                }
            }
        }
        CommandBody::Authenticate { mechanism, initial } => {
            let mut out = format!("{tag} AUTHENTICATE {mechanism}").into_bytes();
            match initial {
                None => {}
                Some(InitialResponse::Empty) => out.extend_from_slice(b" ="),
                Some(InitialResponse::Base64(b)) => {
                    out.push(b' ');
                    out.extend_from_slice(b.expose());
                }
            }
            out.extend_from_slice(b"\r\n");
            if reparse(&out)? != cmd {
                return Err("AUTHENTICATE round trip".into());
            }
        }
        CommandBody::Id(params) => {
            let representable = |s: &[u8]| {
                s.len() <= 1024
                    && s.iter()
                        .all(|&c| (1..0x80).contains(&c) && c != b'\r' && c != b'\n')
            };
            let all_ok = params.as_ref().is_none_or(|p| {
                !p.is_empty()
                    && p.iter()
                        .all(|(k, v)| representable(k) && v.as_deref().is_none_or(representable))
            });
            if all_ok {
                let fields = params.iter().flatten().map(|(k, v)| (&k[..], v.as_deref()));
                let out = encode::id_command(tag, fields);
                if reparse(&out)? != cmd {
                    return Err("ID round trip".into());
                }
            }
        }
        CommandBody::Select { mailbox, params } | CommandBody::Examine { mailbox, params } => {
            let mut out = format!("{tag} {} ", cmd.body.name()).into_bytes();
            match mailbox {
                Mailbox::Inbox => out.extend_from_slice(b"INBOX"),
                Mailbox::Other(m) => {
                    encode::astring(&mut out, m, encode::LiteralMode::NonSync);
                }
            }
            if let Some(p) = params {
                out.push(b' ');
                out.extend_from_slice(p);
            }
            out.extend_from_slice(b"\r\n");
            if reparse(&out)? != cmd {
                return Err("SELECT/EXAMINE round trip".into());
            }
        }
        _ => {}
    }
    Ok(())
}

/// Fuzz invariants for the response classifier: [`classify`] never panics,
/// ignores the line ending, returns slices of its input and valid tags, and
/// status responses re-encoded with [`encode`] classify the same.
pub fn response_case(data: &[u8]) -> Result<(), String> {
    let _ = classify(data);
    let end = data
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .unwrap_or(data.len());
    let body = &data[..end];
    let r = classify(body);
    for eol in [&b"\r\n"[..], b"\n"] {
        let with = [body, eol].concat();
        if classify(&with) != r {
            return Err(format!("line ending {eol:?} changes the result"));
        }
    }
    let Ok(resp) = r else {
        return Ok(());
    };
    match resp {
        Response::Tagged { tag, status, text } => {
            let tag = super::Tag::new(tag).ok_or_else(|| format!("invalid tag {tag:?}"))?;
            if let Some((code, words)) = reencodable(&text) {
                let out = encode::tagged(&tag, status, code, words);
                let again = classify(&out).map_err(|e| format!("re-encoded: {e}"))?;
                let same = matches!(&again, Response::Tagged { tag: t, status: s, text: x }
                    if *t == tag.as_str() && *s == status && *x == text);
                if !same {
                    return Err(format!("tagged round trip: {again:?} vs {text:?}"));
                }
            }
        }
        Response::Untagged(u) => {
            let (word, text) = match &u {
                Untagged::Status(s, t) => (s.as_str(), t),
                Untagged::Bye(t) => ("BYE", t),
                Untagged::Preauth(t) => ("PREAUTH", t),
                Untagged::Capability(caps) => {
                    let out = encode::capability(caps);
                    let again = classify(&out);
                    if again != Ok(Response::Untagged(u.clone())) {
                        return Err(format!("CAPABILITY round trip: {again:?}"));
                    }
                    return Ok(());
                }
                Untagged::Enabled(_) | Untagged::Data => return Ok(()),
            };
            if let Some((code, words)) = reencodable(text) {
                let out = encode::untagged(word, code, words);
                let again = classify(&out).map_err(|e| format!("re-encoded: {e}"))?;
                if again != Response::Untagged(u.clone()) {
                    return Err(format!("untagged round trip: {again:?} vs {u:?}"));
                }
            }
        }
        Response::Continuation(rest) => {
            if !body.ends_with(rest) {
                return Err("continuation text is not the line's tail".into());
            }
        }
    }
    Ok(())
}

/// The code and text of a `resp-text` when [`encode`] can write them back
/// unchanged: UTF-8 without NUL, and text that does not open with `[` when
/// there is no code (the encoder protects such text with a space).
fn reencodable<'a>(t: &'a super::response::RespText<'_>) -> Option<(Option<&'a str>, &'a str)> {
    let text = std::str::from_utf8(t.text).ok()?;
    let code = match t.raw_code {
        Some(raw) => Some(std::str::from_utf8(raw).ok()?),
        None => None,
    };
    let clean = |s: &str| !s.contains('\0');
    if !clean(text) || !code.is_none_or(clean) || (code.is_none() && text.starts_with('[')) {
        return None;
    }
    Some((code, text))
}
