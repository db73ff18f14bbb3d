//! The framer: splits one direction of an IMAP byte stream into lines and
//! literal payload, before any grammar runs.
//!
//! IMAP (RFC 3501 §4.3, RFC 9051 §4.3) frames a command or response as a line
//! that may end in a literal announcement — `{n}` (synchronizing), `{n+}`
//! (non-synchronizing, RFC 7888) or `~{n}` (binary, RFC 3516) — followed by
//! exactly `n` octets and then the rest of the line.  A *unit* is one whole
//! command or response: a line, then any number of (literal, line) pairs.
//!
//! The framer never buffers: it is handed the bytes the caller holds and says
//! how long the next frame is.  Literal payload is counted, never scanned,
//! so a 50 MB FETCH literal costs a few subtractions.  A line may only be
//! reported once its line ending is present; callers keep at most
//! `max_line` bytes of an incomplete line, which the framer enforces.
//!
//! The two directions differ in one way only: in server responses a status
//! response (`tag OK|NO|BAD`, `* OK|NO|BAD|BYE|PREAUTH`) or a continuation
//! request (`+ …`) never carries a literal (RFC 9051 §9: `resp-text`,
//! `continue-req`), so a `{5}` at the end of its human-readable text is text.
//! Treating it as a literal would let a peer who gets text echoed (a mailbox
//! name in a NO, say) make the gateway swallow the next response.  See
//! [`Direction`].
//!
//! Invariants: reported frame lengths always sum to exactly the bytes the
//! caller consumed, in order (frames partition the input); `next` never
//! panics on any input; limits are checked before the caller has to keep any
//! more bytes.  [`crate::imap::check`] states these as code; the fuzz
//! targets and the corpus replay test run it.

use std::fmt;

/// Size limits for one direction of one session.  Checked before bytes are
/// kept, so an attacker cannot make the gateway buffer more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line, line ending included.
    pub max_line: usize,
    /// Largest literal accepted.
    pub max_literal: u64,
    /// Most literals in one unit (command or response).
    pub max_literals_per_unit: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 64 * 1024,
            max_literal: 64 * 1024 * 1024,
            max_literals_per_unit: 1024,
        }
    }
}

/// A literal announced at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteralHeader {
    /// Announced payload length in octets.
    pub len: u64,
    /// `{n}`: the sender waits for a `+` continuation before sending it.
    pub sync: bool,
    /// `~{n}`: a literal8 that may carry NUL octets (RFC 3516).
    pub binary: bool,
}

/// One frame at the front of the input handed to [`Framer::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete line of `len` octets, line ending included.
    Line {
        len: usize,
        /// This line begins a new command or response.
        starts_unit: bool,
        /// The literal this line announces, if any.  When present, the
        /// framer expects its payload next (see [`Framer::cancel_literal`]).
        literal: Option<LiteralHeader>,
        /// The line ended with a bare LF instead of CRLF.
        bare_lf: bool,
    },
    /// `len` octets of literal payload; `last` when the literal is complete.
    Literal { len: usize, last: bool },
}

impl Frame {
    /// Octets this frame covers.
    pub fn len(&self) -> usize {
        match *self {
            Frame::Line { len, .. } | Frame::Literal { len, .. } => len,
        }
    }

    /// Whether the frame covers no octets (only an empty final literal chunk).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this frame completes a unit: a line that announces no literal.
    pub fn ends_unit(&self) -> bool {
        matches!(self, Frame::Line { literal: None, .. })
    }
}

/// A limit was exceeded.  Each error says what the caller may still do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No line ending within `max_line` octets.  The stream cannot be
    /// resynchronised without guessing, so it is unrecoverable.
    #[error("line longer than {max} octets")]
    LineTooLong { max: usize },
    /// A literal over `max_literal` was announced on a line of `line_len`
    /// octets (which the caller may parse for the tag).  The framer has
    /// forgotten the literal: for a synchronizing literal the sender will
    /// not send it once refused, so the stream stays usable; for a
    /// non-synchronizing one the payload follows regardless and the caller
    /// must close the stream.
    #[error("literal of {} octets exceeds the limit of {max}", header.len)]
    LiteralTooLarge {
        line_len: usize,
        header: LiteralHeader,
        max: u64,
    },
    /// A literal announcement whose number does not fit in 63 bits
    /// (RFC 9051 number64).  Handled like [`FrameError::LiteralTooLarge`].
    #[error("literal length out of range")]
    LiteralOverflow { line_len: usize, sync: bool },
    /// More literals in one unit than allowed.  Handled like
    /// [`FrameError::LiteralTooLarge`].
    #[error("more than {max} literals in one command")]
    TooManyLiterals {
        line_len: usize,
        header: LiteralHeader,
        max: u32,
    },
}

impl FrameError {
    /// Stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::LineTooLong { .. } => "line_too_long",
            FrameError::LiteralTooLarge { .. } | FrameError::LiteralOverflow { .. } => {
                "literal_too_large"
            }
            FrameError::TooManyLiterals { .. } => "too_many_literals",
        }
    }

    /// Length of the offending line at the front of the input, when known.
    pub fn line_len(&self) -> Option<usize> {
        match *self {
            FrameError::LineTooLong { .. } => None,
            FrameError::LiteralTooLarge { line_len, .. }
            | FrameError::LiteralOverflow { line_len, .. }
            | FrameError::TooManyLiterals { line_len, .. } => Some(line_len),
        }
    }

    /// Whether the sender will still transmit the refused literal (so the
    /// stream cannot continue).
    pub fn payload_follows(&self) -> bool {
        match *self {
            FrameError::LineTooLong { .. } => true,
            FrameError::LiteralTooLarge { header, .. }
            | FrameError::TooManyLiterals { header, .. } => !header.sync,
            FrameError::LiteralOverflow { sync, .. } => !sync,
        }
    }
}

/// Which direction of the connection a framer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Commands, client → server.  Every line ending in a literal
    /// announcement announces a literal.
    #[default]
    ClientToServer,
    /// Responses, server → client.  As for commands, except that the first
    /// line of a status response or continuation request never announces a
    /// literal (RFC 9051 §9: `response-tagged`, `resp-cond-state`,
    /// `resp-cond-bye`, `resp-cond-auth` and `continue-req` contain only
    /// `resp-text`, which has no literal).
    ServerToClient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a line; `starts_unit` when it begins a new unit.
    Line { starts_unit: bool },
    /// Inside literal payload with this many octets still to come.
    Literal { remaining: u64 },
}

/// Incremental framer for one direction of one session.  Pure: no I/O,
/// no allocation.
#[derive(Clone)]
pub struct Framer {
    limits: Limits,
    direction: Direction,
    state: State,
    literals_in_unit: u32,
    /// How far into the current incomplete line we already looked for LF,
    /// so trickled input is not rescanned from its start.
    scanned: usize,
}

impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("direction", &self.direction)
            .field("state", &self.state)
            .field("literals_in_unit", &self.literals_in_unit)
            .finish()
    }
}

impl Framer {
    /// A framer for client commands (same as
    /// `Framer::with_direction(limits, Direction::ClientToServer)`).
    pub fn new(limits: Limits) -> Self {
        Framer::with_direction(limits, Direction::ClientToServer)
    }

    /// A framer for server responses.
    pub fn for_responses(limits: Limits) -> Self {
        Framer::with_direction(limits, Direction::ServerToClient)
    }

    pub fn with_direction(limits: Limits, direction: Direction) -> Self {
        Framer {
            limits,
            direction,
            state: State::Line { starts_unit: true },
            literals_in_unit: 0,
            scanned: 0,
        }
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Change the limits, e.g. when a session authenticates (literal caps
    /// differ before and after login).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The next frame will start a new unit.
    pub fn at_unit_start(&self) -> bool {
        self.state == State::Line { starts_unit: true }
    }

    /// Inside a literal's payload.
    pub fn in_literal(&self) -> bool {
        matches!(self.state, State::Literal { .. })
    }

    /// Octets of literal payload still expected.
    pub fn literal_remaining(&self) -> u64 {
        match self.state {
            State::Literal { remaining } => remaining,
            State::Line { .. } => 0,
        }
    }

    /// The receiver refused a synchronizing literal (tagged NO/BAD instead of
    /// `+`), so the sender will not send it and the unit is over.
    pub fn cancel_literal(&mut self) {
        self.reset();
    }

    /// Forget any partial unit (used after STARTTLS, where everything before
    /// the handshake is discarded).
    pub fn reset(&mut self) {
        self.state = State::Line { starts_unit: true };
        self.literals_in_unit = 0;
        self.scanned = 0;
    }

    /// Report the frame at the front of `input`, or `Ok(None)` if more input
    /// is needed.  The caller consumes `frame.len()` octets and calls again
    /// with the rest; on `Ok(None)` it keeps `input` and calls again with the
    /// same octets followed by new ones.
    pub fn next(&mut self, input: &[u8]) -> Result<Option<Frame>, FrameError> {
        match self.state {
            State::Literal { remaining } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let take = remaining.min(input.len() as u64);
                let left = remaining - take;
                if left == 0 {
                    self.state = State::Line { starts_unit: false };
                } else {
                    self.state = State::Literal { remaining: left };
                }
                Ok(Some(Frame::Literal {
                    // take <= input.len(), so it fits in usize.
                    len: take as usize,
                    last: left == 0,
                }))
            }
            State::Line { starts_unit } => self.next_line(input, starts_unit),
        }
    }

    fn next_line(&mut self, input: &[u8], starts_unit: bool) -> Result<Option<Frame>, FrameError> {
        let from = self.scanned.min(input.len());
        let window_end = input.len().min(self.limits.max_line);
        let lf = if from < window_end {
            memchr::memchr(b'\n', &input[from..window_end]).map(|i| from + i)
        } else {
            None
        };
        let Some(lf) = lf else {
            if input.len() >= self.limits.max_line {
                return Err(FrameError::LineTooLong {
                    max: self.limits.max_line,
                });
            }
            self.scanned = input.len();
            return Ok(None);
        };
        self.scanned = 0;
        let len = lf + 1;
        let bare_lf = lf == 0 || input[lf - 1] != b'\r';
        let body_end = if bare_lf { lf } else { lf - 1 };
        let mut end = literal_at_end(&input[..body_end]);
        if starts_unit
            && self.direction == Direction::ServerToClient
            && !matches!(end, LiteralEnd::None)
            && is_status_or_continuation(&input[..body_end])
        {
            end = LiteralEnd::None;
        }
        let literal = match end {
            LiteralEnd::None => None,
            LiteralEnd::Overflow { sync } => {
                self.reset();
                return Err(FrameError::LiteralOverflow {
                    line_len: len,
                    sync,
                });
            }
            LiteralEnd::Header(header) => {
                if header.len > self.limits.max_literal {
                    self.reset();
                    return Err(FrameError::LiteralTooLarge {
                        line_len: len,
                        header,
                        max: self.limits.max_literal,
                    });
                }
                let count = if starts_unit {
                    1
                } else {
                    self.literals_in_unit + 1
                };
                if count > self.limits.max_literals_per_unit {
                    self.reset();
                    return Err(FrameError::TooManyLiterals {
                        line_len: len,
                        header,
                        max: self.limits.max_literals_per_unit,
                    });
                }
                self.literals_in_unit = count;
                Some(header)
            }
        };
        match literal {
            Some(h) if h.len > 0 => self.state = State::Literal { remaining: h.len },
            Some(_) => self.state = State::Line { starts_unit: false },
            None => {
                self.state = State::Line { starts_unit: true };
                self.literals_in_unit = 0;
            }
        }
        Ok(Some(Frame::Line {
            len,
            starts_unit,
            literal,
            bare_lf,
        }))
    }
}

enum LiteralEnd {
    None,
    Header(LiteralHeader),
    Overflow { sync: bool },
}

/// Recognise `literal` / `literal8` announcements at the end of a line
/// (RFC 9051 §9: `"{" number64 ["+"] "}"` and `"~{" number64 "}"`).
/// Anything else that ends in `}` (`{-1}`, `{}`, `{5-}`) is not a literal,
/// so the line is complete and the grammar rejects it.
fn literal_at_end(line: &[u8]) -> LiteralEnd {
    let Some((&b'}', rest)) = line.split_last() else {
        return LiteralEnd::None;
    };
    let (sync, rest) = match rest.split_last() {
        Some((&b'+', r)) => (false, r),
        _ => (true, rest),
    };
    let digits_start = match rest.iter().rposition(|b| !b.is_ascii_digit()) {
        Some(i) => i + 1,
        None => return LiteralEnd::None,
    };
    if rest[digits_start - 1] != b'{' || digits_start == rest.len() {
        return LiteralEnd::None;
    }
    let digits = &rest[digits_start..];
    let binary = digits_start >= 2 && rest[digits_start - 2] == b'~';
    let mut len: u64 = 0;
    for &d in digits {
        len = match len
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
        {
            Some(v) if v <= i64::MAX as u64 => v,
            _ => return LiteralEnd::Overflow { sync },
        };
    }
    LiteralEnd::Header(LiteralHeader { len, sync, binary })
}

/// Whether a response line is a status response or a continuation request,
/// which cannot announce a literal (RFC 9051 §9: `continue-req = "+" SP
/// (resp-text / base64) CRLF`; `response-tagged = tag SP resp-cond-state
/// CRLF`; `"*" SP (resp-cond-state / resp-cond-bye / resp-cond-auth)`).
/// Recognises the same lines as [`super::response::classify`] does.
fn is_status_or_continuation(line: &[u8]) -> bool {
    if line.first() == Some(&b'+') {
        return true;
    }
    let Some(sp) = memchr::memchr(b' ', line) else {
        return false;
    };
    let (tag, rest) = (&line[..sp], &line[sp + 1..]);
    let word = match memchr::memchr(b' ', rest) {
        Some(i) => &rest[..i],
        None => rest,
    };
    let status = [&b"OK"[..], b"NO", b"BAD"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w));
    if tag == b"*" {
        status || word.eq_ignore_ascii_case(b"BYE") || word.eq_ignore_ascii_case(b"PREAUTH")
    } else {
        status && !tag.is_empty() && tag.iter().all(|&c| super::command::is_tag_char(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::check::{self, Event, Policy, Run};

    /// Frame `input` completely, feeding it in chunks of `chunk` octets the
    /// way a socket might, and return (frame, bytes) pairs.
    pub(crate) fn frame_all(
        limits: Limits,
        input: &[u8],
        chunk: usize,
    ) -> Result<Vec<(Frame, Vec<u8>)>, FrameError> {
        let mut framer = Framer::new(limits);
        let mut out: Vec<(Frame, Vec<u8>)> = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        let mut fed = 0;
        while fed < input.len() || !held.is_empty() {
            let end = (fed + chunk).min(input.len());
            held.extend_from_slice(&input[fed..end]);
            fed = end;
            while let Some(f) = framer.next(&held)? {
                let bytes: Vec<u8> = held.drain(..f.len()).collect();
                // Merge literal chunks so results are chunking-independent.
                if let (
                    Frame::Literal { last, .. },
                    Some((Frame::Literal { len, last: plast }, prev)),
                ) = (f, out.last_mut())
                {
                    if !*plast {
                        prev.extend_from_slice(&bytes);
                        *len += f.len();
                        *plast = last;
                        continue;
                    }
                }
                out.push((f, bytes));
            }
            if fed == input.len() {
                break;
            }
        }
        Ok(out)
    }

    fn lit(len: u64, sync: bool) -> Option<LiteralHeader> {
        Some(LiteralHeader {
            len,
            sync,
            binary: false,
        })
    }

    fn every_chunking(input: &[u8]) -> Vec<(Frame, Vec<u8>)> {
        // Also every split offset, with the invariant checks.
        frame_every_way(
            Limits::default(),
            Direction::ClientToServer,
            input,
            Policy::default(),
        );
        let whole = frame_all(Limits::default(), input, input.len().max(1)).unwrap();
        for chunk in 1..input.len().max(1) {
            assert_eq!(
                frame_all(Limits::default(), input, chunk).unwrap(),
                whole,
                "chunk size {chunk}"
            );
        }
        whole
    }

    #[test]
    fn simple_lines() {
        let frames = every_chunking(b"a001 NOOP\r\na002 LOGOUT\r\n");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].1, b"a001 NOOP\r\n");
        assert!(matches!(
            frames[1].0,
            Frame::Line {
                starts_unit: true,
                literal: None,
                bare_lf: false,
                ..
            }
        ));
    }

    #[test]
    fn rfc3501_login_with_literal() {
        // RFC 3501 §6.2.3 example, password sent as a literal.
        let input = b"a001 LOGIN SMITH {6}\r\nSESAME\r\n";
        let frames = every_chunking(input);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[0].0,
            Frame::Line {
                len: 22,
                starts_unit: true,
                literal: lit(6, true),
                bare_lf: false
            }
        );
        assert_eq!(frames[1].1, b"SESAME");
        assert_eq!(
            frames[2].0,
            Frame::Line {
                len: 2,
                starts_unit: false,
                literal: None,
                bare_lf: false
            }
        );
    }

    #[test]
    fn fetch_response_literal_contains_fake_tagged_line() {
        let body = b"A001 OK fake\r\n* BYE fake\r\n";
        let mut input = format!("* 1 FETCH (BODY[] {{{}}}\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b")\r\nA001 OK done\r\n");
        let frames = every_chunking(&input);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[1].1, body);
        assert_eq!(frames[3].1, b"A001 OK done\r\n");
        assert!(matches!(
            frames[3].0,
            Frame::Line {
                starts_unit: true,
                ..
            }
        ));
    }

    #[test]
    fn non_sync_and_binary_literals() {
        let frames = every_chunking(b"a APPEND x {3+}\r\nabc ~{2}\r\n\0\x01\r\n");
        assert_eq!(
            frames[0].0,
            Frame::Line {
                len: 17,
                starts_unit: true,
                literal: lit(3, false),
                bare_lf: false
            }
        );
        assert_eq!(
            frames[2].0,
            Frame::Line {
                len: 7,
                starts_unit: false,
                literal: Some(LiteralHeader {
                    len: 2,
                    sync: true,
                    binary: true
                }),
                bare_lf: false
            }
        );
        assert_eq!(frames[3].1, b"\0\x01");
    }

    #[test]
    fn zero_length_literal() {
        let frames = every_chunking(b"a LOGIN {0}\r\n {0+}\r\n\r\nb NOOP\r\n");
        assert_eq!(frames.len(), 4);
        assert_eq!(
            frames[0].0,
            Frame::Line {
                len: 13,
                starts_unit: true,
                literal: lit(0, true),
                bare_lf: false
            }
        );
        assert_eq!(frames[1].1, b" {0+}\r\n");
        assert_eq!(frames[2].1, b"\r\n");
        assert!(matches!(
            frames[3].0,
            Frame::Line {
                starts_unit: true,
                ..
            }
        ));
    }

    #[test]
    fn not_literals() {
        for line in [
            &b"a X {-1}\r\n"[..],
            b"a X {}\r\n",
            b"a X {5-}\r\n",
            b"a X 5}\r\n",
            b"}\r\n",
            b"a X {+}\r\n",
        ] {
            let frames = every_chunking(line);
            assert_eq!(frames.len(), 1, "{:?}", String::from_utf8_lossy(line));
            assert!(frames[0].0.ends_unit());
        }
    }

    #[test]
    fn bare_lf() {
        let frames = every_chunking(b"a NOOP\nb NOOP\r\n\n");
        assert_eq!(frames.len(), 3);
        assert!(matches!(
            frames[0].0,
            Frame::Line {
                bare_lf: true,
                len: 7,
                ..
            }
        ));
        assert!(matches!(frames[1].0, Frame::Line { bare_lf: false, .. }));
        assert!(matches!(
            frames[2].0,
            Frame::Line {
                bare_lf: true,
                len: 1,
                ..
            }
        ));
    }

    #[test]
    fn line_too_long_before_buffering_more() {
        let limits = Limits {
            max_line: 16,
            ..Limits::default()
        };
        let mut f = Framer::new(limits);
        assert_eq!(f.next(b"a NOOP aaaaaaa"), Ok(None));
        assert_eq!(
            f.next(b"a NOOP aaaaaaaaa"),
            Err(FrameError::LineTooLong { max: 16 })
        );
        // A line of exactly the limit is fine.
        let mut f = Framer::new(limits);
        assert!(f.next(b"a NOOP aaaaaaa\r\n").unwrap().is_some());
    }

    #[test]
    fn literal_limits() {
        let limits = Limits {
            max_literal: 10,
            max_literals_per_unit: 2,
            ..Limits::default()
        };
        let mut f = Framer::new(limits);
        let e = f.next(b"a LOGIN {11}\r\n").unwrap_err();
        assert_eq!(e.line_len(), Some(14));
        assert!(!e.payload_follows());
        assert!(f.at_unit_start());
        let e = f.next(b"a LOGIN {11+}\r\n").unwrap_err();
        assert!(e.payload_follows());
        let e = f.next(b"a X {99999999999999999999}\r\n").unwrap_err();
        assert!(matches!(e, FrameError::LiteralOverflow { sync: true, .. }));
        let e = f.next(b"a X {9223372036854775808}\r\n").unwrap_err();
        assert!(matches!(e, FrameError::LiteralOverflow { .. }));

        let mut f = Framer::new(limits);
        let input = b"a X {1}\r\nx {1}\r\ny {1}\r\n";
        assert!(f.next(input).unwrap().is_some());
        assert!(f.next(&input[9..]).unwrap().is_some());
        assert!(f.next(&input[10..]).unwrap().is_some());
        assert!(f.next(&input[16..]).unwrap().is_some());
        let e = f.next(&input[17..]).unwrap_err();
        assert!(matches!(e, FrameError::TooManyLiterals { max: 2, .. }));
    }

    #[test]
    fn cancel_sync_literal() {
        let mut f = Framer::new(Limits::default());
        let fr = f.next(b"a LOGIN {5}\r\n").unwrap().unwrap();
        assert!(matches!(
            fr,
            Frame::Line {
                literal: Some(_),
                ..
            }
        ));
        assert!(f.in_literal());
        f.cancel_literal();
        assert!(f.at_unit_start());
        let fr = f.next(b"b NOOP\r\n").unwrap().unwrap();
        assert!(matches!(
            fr,
            Frame::Line {
                starts_unit: true,
                ..
            }
        ));
    }

    #[test]
    fn huge_literal_streams_in_chunks() {
        let mut f = Framer::new(Limits::default());
        f.next(b"* 1 FETCH (BODY[] {50000000}\r\n").unwrap();
        let chunk = vec![b'x'; 16384];
        let mut total = 0u64;
        while f.in_literal() {
            let fr = f.next(&chunk).unwrap().unwrap();
            total += fr.len() as u64;
        }
        assert_eq!(total, 50_000_000);
    }

    // ---- Known answers, fed every way ---------------------------------
    //
    // Each case is framed whole, byte by byte, in every fixed chunk size and
    // split in two at every offset; every run passes the invariant checks
    // of `check::drive` and all runs must give the same events.  The events
    // are then compared with the known answer, written as:
    //   `U:line`   a line that starts a unit     `C:line`  a continuation line
    //   ` {n}` ` {n+}` ` ~{n}`  the literal the line announces
    //   `LIT:…`    a whole literal               `PART:…`  an incomplete one
    //   `REFUSED(kind):line`  a refused literal's line, the stream goes on
    //   `ERR:kind` the error that ended the stream

    fn frame_every_way(limits: Limits, direction: Direction, input: &[u8], policy: Policy) -> Run {
        let run = |chunks: &mut dyn Iterator<Item = usize>| {
            check::drive(limits, direction, input, chunks, policy)
                .unwrap_or_else(|v| panic!("{:?}: {v}", input.escape_ascii().to_string()))
        };
        let whole = run(&mut std::iter::once(input.len()));
        for size in 1..input.len() {
            assert_eq!(
                run(&mut std::iter::repeat(size)),
                whole,
                "chunk size {size}"
            );
        }
        for cut in 1..input.len() {
            assert_eq!(
                run(&mut [cut, input.len() - cut].into_iter()),
                whole,
                "split at {cut}"
            );
        }
        whole
    }

    fn describe(run: &Run) -> Vec<String> {
        let esc = |b: &[u8]| b.escape_ascii().to_string();
        let mut out: Vec<String> = run
            .events
            .iter()
            .map(|e| match e {
                Event::Line {
                    bytes,
                    starts_unit,
                    literal,
                    ..
                } => {
                    let mut s = format!("{}:{}", if *starts_unit { "U" } else { "C" }, esc(bytes));
                    if let Some(h) = literal {
                        s += &format!(
                            " {}{{{}{}}}",
                            if h.binary { "~" } else { "" },
                            h.len,
                            if h.sync { "" } else { "+" }
                        );
                    }
                    s
                }
                Event::Literal(b) => format!("LIT:{}", esc(b)),
                Event::PartialLiteral(b) => format!("PART:{}", esc(b)),
                Event::Refused { bytes, error } => format!(
                    "REFUSED({}):{}",
                    error.map_or("policy", |e| e.kind()),
                    esc(bytes)
                ),
            })
            .collect();
        if let Some(e) = run.error {
            out.push(format!("ERR:{}", e.kind()));
        }
        out
    }

    fn known(direction: Direction, input: &[u8], expected: &[&str]) -> Run {
        known_with(
            Limits::default(),
            direction,
            Policy::default(),
            input,
            expected,
        )
    }

    fn known_with(
        limits: Limits,
        direction: Direction,
        policy: Policy,
        input: &[u8],
        expected: &[&str],
    ) -> Run {
        let run = frame_every_way(limits, direction, input, policy);
        assert_eq!(describe(&run), expected, "{}", input.escape_ascii());
        run
    }

    use Direction::{ClientToServer as C2S, ServerToClient as S2C};

    /// Lines joined with CRLF, each line ended.
    fn crlf(lines: &[&str]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| [l.as_bytes(), b"\r\n"])
            .flatten()
            .copied()
            .collect()
    }

    #[test]
    fn rfc3501_7_5_sync_literals_in_login() {
        // RFC 3501 §7.5 (and RFC 9051 §7.6): a password with a space, sent
        // as synchronizing literals; the session answers `+` after each line.
        known(
            C2S,
            b"A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n",
            &[
                "U:A001 LOGIN {11}\\r\\n {11}",
                "LIT:FRED FOOBAR",
                "C: {7}\\r\\n {7}",
                "LIT:fat man",
                "C:\\r\\n",
            ],
        );
        // ...and the server side of the same exchange.
        known(
            S2C,
            b"+ Ready for additional command text\r\n+ Ready for additional command text\r\nA001 OK LOGIN completed\r\n",
            &[
                "U:+ Ready for additional command text\\r\\n",
                "U:+ Ready for additional command text\\r\\n",
                "U:A001 OK LOGIN completed\\r\\n",
            ],
        );
    }

    #[test]
    fn rfc3501_7_5_refused_literal() {
        // RFC 3501 §7.5: `A044 BLURDYBLOOP {102856}` answered with BAD; the
        // client does not send the literal, so the next command follows.
        let policy = Policy {
            refuse_sync_over: Some(100_000),
        };
        known_with(
            Limits::default(),
            C2S,
            policy,
            b"A044 BLURDYBLOOP {102856}\r\nA045 NOOP\r\n",
            &[
                "REFUSED(policy):A044 BLURDYBLOOP {102856}\\r\\n",
                "U:A045 NOOP\\r\\n",
            ],
        );
        // The same refusal driven by the literal limit instead.
        let limits = Limits {
            max_literal: 100_000,
            ..Limits::default()
        };
        known_with(
            limits,
            C2S,
            Policy::default(),
            b"A044 BLURDYBLOOP {102856}\r\nA045 NOOP\r\n",
            &[
                "REFUSED(literal_too_large):A044 BLURDYBLOOP {102856}\\r\\n",
                "U:A045 NOOP\\r\\n",
            ],
        );
    }

    #[test]
    fn rfc7888_non_sync_literals() {
        // RFC 7888 §4 example: LITERAL+ lets the client send without waiting.
        known(
            C2S,
            b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n",
            &[
                "U:A001 LOGIN {11+}\\r\\n {11+}",
                "LIT:FRED FOOBAR",
                "C: {7+}\\r\\n {7+}",
                "LIT:fat man",
                "C:\\r\\n",
            ],
        );
    }

    #[test]
    fn rfc3501_6_3_11_append() {
        // RFC 3501 §6.3.11: APPEND with a 310-octet synchronizing literal.
        let msg = crlf(&[
            "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)",
            "From: Fred Foobar <foobar@Blurdybloop.COM>",
            "Subject: afternoon meeting",
            "To: mooch@owatagu.siam.edu",
            "Message-Id: <B27397-0100000@Blurdybloop.COM>",
            "MIME-Version: 1.0",
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
            "",
            "Hello Joe, do you think we can meet at 3:30 tomorrow?",
        ]);
        assert_eq!(msg.len(), 310);
        let mut input = b"A003 APPEND saved-messages (\\Seen) {310}\r\n".to_vec();
        input.extend_from_slice(&msg);
        input.extend_from_slice(b"\r\n");
        let run = frame_every_way(Limits::default(), C2S, &input, Policy::default());
        let d = describe(&run);
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[0],
            "U:A003 APPEND saved-messages (\\\\Seen) {310}\\r\\n {310}"
        );
        assert_eq!(run.events[1], Event::Literal(msg));
        assert_eq!(d[2], "C:\\r\\n");
    }

    #[test]
    fn rfc9051_6_3_12_append_non_sync() {
        // RFC 9051 §6.3.12: the same with `{297+}` (LITERAL+), then the
        // server's APPENDUID answer.
        let msg = crlf(&[
            "Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)",
            "From: Fred Foobar <foobar@example.com>",
            "Subject: afternoon meeting",
            "To: mooch@example.com",
            "Message-Id: <B27397-0100000@example.com>",
            "MIME-Version: 1.0",
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
            "",
            "Hello Joe, do you think we can meet at 3:30 tomorrow?",
        ]);
        assert_eq!(msg.len(), 297);
        let mut input = b"A003 APPEND saved-messages (\\Seen) {297+}\r\n".to_vec();
        input.extend_from_slice(&msg);
        input.extend_from_slice(b"\r\nA004 COPY 2:4 meeting\r\n");
        let run = frame_every_way(Limits::default(), C2S, &input, Policy::default());
        assert_eq!(run.events.len(), 4);
        assert_eq!(run.events[1], Event::Literal(msg));
        assert_eq!(describe(&run)[3], "U:A004 COPY 2:4 meeting\\r\\n");
        known(
            S2C,
            b"A003 OK [APPENDUID 38505 3955] APPEND completed\r\n",
            &["U:A003 OK [APPENDUID 38505 3955] APPEND completed\\r\\n"],
        );
    }

    #[test]
    fn rfc3501_8_fetch_response_with_literal() {
        // RFC 3501 §8: `* 12 FETCH (BODY[HEADER] {342}` and the header.
        let header = crlf(&[
            "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
            "From: Terry Gray <gray@cac.washington.edu>",
            "Subject: IMAP4rev1 WG mtg summary and minutes",
            "To: imap@cac.washington.edu",
            "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>",
            "Message-Id: <B27397-0100000@cac.washington.edu>",
            "MIME-Version: 1.0",
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
            "",
        ]);
        assert_eq!(header.len(), 342);
        let mut input = b"* 12 FETCH (BODY[HEADER] {342}\r\n".to_vec();
        input.extend_from_slice(&header);
        input.extend_from_slice(b")\r\na004 OK FETCH completed\r\n* 12 FETCH (FLAGS (\\Seen \\Deleted))\r\na005 OK +FLAGS completed\r\n* BYE IMAP4rev1 server terminating connection\r\na006 OK LOGOUT completed\r\n");
        let run = frame_every_way(Limits::default(), S2C, &input, Policy::default());
        let d = describe(&run);
        assert_eq!(d[0], "U:* 12 FETCH (BODY[HEADER] {342}\\r\\n {342}");
        assert_eq!(run.events[1], Event::Literal(header));
        assert_eq!(
            d[2..],
            [
                "C:)\\r\\n",
                "U:a004 OK FETCH completed\\r\\n",
                "U:* 12 FETCH (FLAGS (\\\\Seen \\\\Deleted))\\r\\n",
                "U:a005 OK +FLAGS completed\\r\\n",
                "U:* BYE IMAP4rev1 server terminating connection\\r\\n",
                "U:a006 OK LOGOUT completed\\r\\n",
            ]
        );
    }

    #[test]
    fn rfc3501_6_2_2_authenticate_exchange() {
        // RFC 3501 §6.2.2 GSSAPI example (line breaks inside the base64
        // removed, as the RFC's note says).  Client lines are plain lines,
        // including the empty response; server challenges are `+` lines.
        let c1 = "YIIB+wYJKoZIhvcSAQICAQBuggHqMIIB5qADAgEFoQMCAQ6iBwMFACAAAACjggEmYYIBIjCCAR6gAwIBBaESGxB1Lndhc2hpbmd0b24uZWR1oi0wK6ADAgEDoSQwIhsEaW1hcBsac2hpdmFtcy5jYWMud2FzaGluZ3Rvbi5lZHWjgdMwgdCgAwIBAaEDAgEDooHDBIHAcS1GSa5b+fXnPZNmXB9SjL8Ollj2SKyb+3S0iXMljen/jNkpJXAleKTz6BQPzj8duz8EtoOuNfKgweViyn/9B9bccy1uuAE2HI0yC/PHXNNU9ZrBziJ8Lm0tTNc98kUpjXnHZhsMcz5Mx2GR6dGknbI0iaGcRerMUsWOuBmKKKRmVMMdR9T3EZdpqsBd7jZCNMWotjhivd5zovQlFqQ2Wjc2+y46vKP/iXxWIuQJuDiisyXF0Y8+5GTpALpHDc1/pIGmMIGjoAMCAQGigZsEgZg2on5mSuxoDHEA1w9bcW9nFdFxDKpdrQhVGVRDIzcCMCTzvUboqb5KjY1NJKJsfjRQiBYBdENKfzK+g5DlV8nrw81uOcP8NOQCLR5XkoMHC0Dr/80ziQzbNqhxO6652Npft0LQwJvenwDI13YxpwOdMXzkWZN/XrEqOWp6GCgXTBvCyLWLlWnbaUkZdEYbKHBPjd8t/1x5Yg==";
        let c3 = "YDMGCSqGSIb3EgECAgIBAAD/////3LQBHXTpFfZgrejpLlLImPwkhbfa2QteAQAgAG1yYwE=";
        let client = crlf(&["A001 AUTHENTICATE GSSAPI", c1, "", c3]);
        let run = known(
            C2S,
            &client,
            &[
                "U:A001 AUTHENTICATE GSSAPI\\r\\n",
                &format!("U:{c1}\\r\\n"),
                "U:\\r\\n",
                &format!("U:{c3}\\r\\n"),
            ],
        );
        assert_eq!(run.consumed, client.len());
        let s2 = "+ YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMCAQGiQgRAtHTEuOP2BXb9sBYFR4SJlDZxmg39IxmRBOhXRKdDA0uHTCOT9Bq3OsUTXUlk0CsFLoa8j+gvGDlgHuqzWHPSQg==";
        let s3 = "+ YDMGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ=";
        known(
            S2C,
            &crlf(&[
                "* OK IMAP4rev1 Server",
                "+",
                s2,
                s3,
                "A001 OK GSSAPI authentication successful",
            ]),
            &[
                "U:* OK IMAP4rev1 Server\\r\\n",
                "U:+\\r\\n",
                &format!("U:{s2}\\r\\n"),
                &format!("U:{s3}\\r\\n"),
                "U:A001 OK GSSAPI authentication successful\\r\\n",
            ],
        );
        // RFC 4959 §4: SASL-IR, and a client cancelling with `*`
        // (RFC 9051 §6.2.2).
        known(
            C2S,
            b"A01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\nA02 AUTHENTICATE PLAIN\r\n*\r\n",
            &[
                "U:A01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\\r\\n",
                "U:A02 AUTHENTICATE PLAIN\\r\\n",
                "U:*\\r\\n",
            ],
        );
    }

    #[test]
    fn rfc2177_idle_done() {
        // RFC 2177 §3 (and RFC 9051 §6.3.13): IDLE, `+ idling`, untagged
        // updates while idling, DONE, tagged OK.
        known(
            C2S,
            b"A001 SELECT INBOX\r\nA002 IDLE\r\nDONE\r\nA003 FETCH 4 ALL\r\n",
            &[
                "U:A001 SELECT INBOX\\r\\n",
                "U:A002 IDLE\\r\\n",
                "U:DONE\\r\\n",
                "U:A003 FETCH 4 ALL\\r\\n",
            ],
        );
        known(
            S2C,
            b"* FLAGS (Deleted Seen)\r\n* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1]\r\nA001 OK SELECT completed\r\n+ idling\r\n* 4 EXISTS\r\nA002 OK IDLE terminated\r\n",
            &[
                "U:* FLAGS (Deleted Seen)\\r\\n",
                "U:* 3 EXISTS\\r\\n",
                "U:* 0 RECENT\\r\\n",
                "U:* OK [UIDVALIDITY 1]\\r\\n",
                "U:A001 OK SELECT completed\\r\\n",
                "U:+ idling\\r\\n",
                "U:* 4 EXISTS\\r\\n",
                "U:A002 OK IDLE terminated\\r\\n",
            ],
        );
    }

    #[test]
    fn binary_literals() {
        // RFC 3516 §4.4 `~{n}` (literal8, may carry NUL) in a FETCH
        // BINARY response and an APPEND; RFC 4466 §2.3 allows `~{n+}`.
        known(
            S2C,
            b"* 1 FETCH (BINARY[1] ~{4}\r\n\0\x01\r\n)\r\n",
            &[
                "U:* 1 FETCH (BINARY[1] ~{4}\\r\\n ~{4}",
                "LIT:\\x00\\x01\\r\\n",
                "C:)\\r\\n",
            ],
        );
        known(
            C2S,
            b"a APPEND x ~{3+}\r\n\0\0\0\r\n",
            &[
                "U:a APPEND x ~{3+}\\r\\n ~{3+}",
                "LIT:\\x00\\x00\\x00",
                "C:\\r\\n",
            ],
        );
    }

    #[test]
    fn server_status_text_never_announces_a_literal() {
        // RFC 9051 §9: resp-text has no literal, so `{5}` ending the text of
        // a status response or continuation request is text.  A backend
        // echoing a client-chosen mailbox name must not desynchronise us.
        known(
            S2C,
            b"a1 NO Mailbox doesn't exist: x{5}\r\n* BYE going {3}\r\n* ok x {1}\r\n+ go {2}\r\n* 1 FETCH (BODY[] {2}\r\nab)\r\na2 OK done\r\n",
            &[
                "U:a1 NO Mailbox doesn\\'t exist: x{5}\\r\\n",
                "U:* BYE going {3}\\r\\n",
                "U:* ok x {1}\\r\\n",
                "U:+ go {2}\\r\\n",
                "U:* 1 FETCH (BODY[] {2}\\r\\n {2}",
                "LIT:ab",
                "C:)\\r\\n",
                "U:a2 OK done\\r\\n",
            ],
        );
        // Only at the start of a unit: after a literal the line goes on.
        known(
            S2C,
            b"* 1 FETCH (BODY[] {2}\r\nab OK {1}\r\nx)\r\n",
            &[
                "U:* 1 FETCH (BODY[] {2}\\r\\n {2}",
                "LIT:ab",
                "C: OK {1}\\r\\n {1}",
                "LIT:x",
                "C:)\\r\\n",
            ],
        );
        // Client direction: a command line always announces.
        known(
            C2S,
            b"a1 OK {1}\r\nx\r\n",
            &["U:a1 OK {1}\\r\\n {1}", "LIT:x", "C:\\r\\n"],
        );
    }

    #[test]
    fn limits_every_way() {
        // A line of exactly max_line is fine; one octet more is fatal, at
        // the same place however the input is chunked.
        let limits = Limits {
            max_line: 16,
            max_literal: 10,
            max_literals_per_unit: 2,
        };
        let p = Policy::default();
        known_with(
            limits,
            C2S,
            p,
            b"a NOOP aaaaaaa\r\n",
            &["U:a NOOP aaaaaaa\\r\\n"],
        );
        known_with(
            limits,
            C2S,
            p,
            b"a NOOP\r\nb NOOP aaaaaaaa\r\nc NOOP\r\n",
            &["U:a NOOP\\r\\n", "ERR:line_too_long"],
        );
        // An incomplete line under the limit is just incomplete.
        known_with(limits, C2S, p, b"a NOOP\r\nb NOO", &["U:a NOOP\\r\\n"]);
        // Literal over max_literal: sync is refused and the stream goes on,
        // non-sync is fatal (the payload follows regardless).
        known_with(
            limits,
            C2S,
            p,
            b"a LOGIN {11}\r\nb LOGIN {11+}\r\nhello world\r\n",
            &[
                "REFUSED(literal_too_large):a LOGIN {11}\\r\\n",
                "ERR:literal_too_large",
            ],
        );
        // number64 overflow (RFC 9051 §9: 63 bits).
        known_with(
            Limits::default(),
            C2S,
            p,
            b"a X {9223372036854775808}\r\nb X {9223372036854775808+}\r\n",
            &[
                "REFUSED(literal_too_large):a X {9223372036854775808}\\r\\n",
                "ERR:literal_too_large",
            ],
        );
        // Too many literals in one unit; the count restarts per unit.
        known_with(
            limits,
            C2S,
            p,
            b"a X {1}\r\nx {1}\r\ny\r\nb X {1}\r\nx {1}\r\ny {1}\r\nc NOOP\r\n",
            &[
                "U:a X {1}\\r\\n {1}",
                "LIT:x",
                "C: {1}\\r\\n {1}",
                "LIT:y",
                "C:\\r\\n",
                "U:b X {1}\\r\\n {1}",
                "LIT:x",
                "C: {1}\\r\\n {1}",
                "LIT:y",
                "REFUSED(too_many_literals): {1}\\r\\n",
                "U:c NOOP\\r\\n",
            ],
        );
        // The largest literal allowed, and a bigger non-sync one.
        known_with(
            limits,
            S2C,
            p,
            b"* 1 X {10}\r\n0123456789)\r\n* 2 X {11+}\r\n",
            &[
                "U:* 1 X {10}\\r\\n {10}",
                "LIT:0123456789",
                "C:)\\r\\n",
                "ERR:literal_too_large",
            ],
        );
    }

    #[test]
    fn incomplete_literal_and_bare_lf_every_way() {
        known(
            C2S,
            b"a LOGIN {5}\nab",
            &["U:a LOGIN {5}\\n {5}", "PART:ab"],
        );
        known(
            S2C,
            b"* OK hi\n\n* 1 EXISTS\r\n",
            &["U:* OK hi\\n", "U:\\n", "U:* 1 EXISTS\\r\\n"],
        );
    }

    #[test]
    fn direction_constructors() {
        assert_eq!(Framer::new(Limits::default()).direction(), C2S);
        assert_eq!(Framer::for_responses(Limits::default()).direction(), S2C);
        assert_eq!(Direction::default(), C2S);
    }
}
