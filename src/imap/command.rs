//! Client command grammar (RFC 3501 §9, RFC 9051 §9), written with nom.
//!
//! Input is one complete unit from the [framer](super::framer): the command
//! line with every literal inlined, line ending included.  Only the commands
//! the gateway acts on are parsed fully; every other command yields its tag
//! and name (and is relayed as framed bytes after login).
//!
//! One function per ABNF rule; each names its rule.  Parsers work on
//! complete input: the framer has already decided where the unit ends.

use nom::branch::alt;
use nom::bytes::complete::{tag as lit_tag, tag_no_case, take, take_while, take_while1};
use nom::character::complete::{char, digit1};
use nom::combinator::{map, map_res, opt, verify};
use nom::multi::separated_list1;
use nom::sequence::{delimited, preceded, terminated};
use nom::IResult;

use super::secret::Secret;

/// Deepest parenthesis nesting the gateway will look into (ID lists and
/// SELECT parameters); deeper input is a syntax error, not a stack overflow.
pub const MAX_NESTING: usize = 8;
/// Most ID field/value pairs accepted (RFC 2971 §3.3 allows 30).
pub const MAX_ID_PAIRS: usize = 30;
/// Longest ID field or value (RFC 2971 §3.3: 1024 octets).
pub const MAX_ID_VALUE: usize = 1024;

/// A command tag: `1*<any ASTRING-CHAR except "+">`.  Always ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(Box<str>);

impl Tag {
    /// Build a tag from bytes already known to match the `tag` rule.
    pub fn new(s: &str) -> Option<Tag> {
        if !s.is_empty() && s.bytes().all(is_tag_char) {
            Some(Tag(s.into()))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `mailbox = "INBOX" / astring` — INBOX in any case is INBOX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mailbox {
    Inbox,
    Other(Vec<u8>),
}

impl Mailbox {
    pub fn from_astring(name: Vec<u8>) -> Mailbox {
        if name.eq_ignore_ascii_case(b"INBOX") {
            Mailbox::Inbox
        } else {
            Mailbox::Other(name)
        }
    }
}

/// SASL initial response (RFC 4959): `=` means an empty response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialResponse {
    Empty,
    Base64(Secret<Vec<u8>>),
}

/// Client ID parameters (RFC 2971 §3.3): `NIL` or field/value pairs.
pub type IdParams = Option<Vec<(Vec<u8>, Option<Vec<u8>>)>>;

/// What the command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    Capability,
    Noop,
    Logout,
    StartTls,
    Login {
        username: Vec<u8>,
        password: Secret<Vec<u8>>,
    },
    Authenticate {
        /// Upper-cased mechanism name.
        mechanism: String,
        initial: Option<InitialResponse>,
    },
    Id(IdParams),
    Enable(Vec<String>),
    Select {
        mailbox: Mailbox,
        /// Raw select parameters such as `(CONDSTORE)`, passed through.
        params: Option<Vec<u8>>,
    },
    Examine {
        mailbox: Mailbox,
        params: Option<Vec<u8>>,
    },
    Close,
    Unselect,
    Idle,
    Unauthenticate,
    Compress(String),
    /// Any other command: upper-cased name only.  `UID FETCH` is `UID`.
    Other(String),
}

impl CommandBody {
    /// The command name as a client writes it (upper case), for state
    /// checks, logs and metric labels.
    pub fn name(&self) -> &str {
        match self {
            CommandBody::Capability => "CAPABILITY",
            CommandBody::Noop => "NOOP",
            CommandBody::Logout => "LOGOUT",
            CommandBody::StartTls => "STARTTLS",
            CommandBody::Login { .. } => "LOGIN",
            CommandBody::Authenticate { .. } => "AUTHENTICATE",
            CommandBody::Id(_) => "ID",
            CommandBody::Enable(_) => "ENABLE",
            CommandBody::Select { .. } => "SELECT",
            CommandBody::Examine { .. } => "EXAMINE",
            CommandBody::Close => "CLOSE",
            CommandBody::Unselect => "UNSELECT",
            CommandBody::Idle => "IDLE",
            CommandBody::Unauthenticate => "UNAUTHENTICATE",
            CommandBody::Compress(_) => "COMPRESS",
            CommandBody::Other(n) => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: Tag,
    pub body: CommandBody,
}

/// A command that does not parse.  `tag` is set when the tag itself was
/// readable, so the answer can be a tagged BAD (RFC 3501 §7.1.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    pub tag: Option<Tag>,
    pub reason: &'static str,
}

/// Parse one complete command unit (line ending included, literals inline).
pub fn parse_command(input: &[u8]) -> Result<Command, ParseError> {
    let (rest, tag) = match tag(input) {
        Ok(r) => r,
        Err(_) => {
            return Err(ParseError {
                tag: None,
                reason: "missing or invalid tag",
            })
        }
    };
    let fail = |reason| ParseError {
        tag: Some(tag.clone()),
        reason,
    };
    let rest = rest
        .strip_prefix(b" ")
        .ok_or_else(|| fail("expected SP after tag"))?;
    let (after_name, raw_name) =
        command_name(rest).map_err(|_| fail("missing or invalid command name"))?;
    // Upper-case into a stack buffer: the commands parsed fully need no
    // allocated name (the longest, UNAUTHENTICATE, has 14 octets).
    let mut buf = [0u8; 16];
    let name: &[u8] = match buf.get_mut(..raw_name.len()) {
        Some(b) => {
            b.copy_from_slice(raw_name);
            b.make_ascii_uppercase();
            b
        }
        None => b"",
    };
    let parsed = match name {
        b"CAPABILITY" => no_args(after_name, CommandBody::Capability),
        b"NOOP" => no_args(after_name, CommandBody::Noop),
        b"LOGOUT" => no_args(after_name, CommandBody::Logout),
        b"STARTTLS" => no_args(after_name, CommandBody::StartTls),
        b"CLOSE" => no_args(after_name, CommandBody::Close),
        b"UNSELECT" => no_args(after_name, CommandBody::Unselect),
        b"IDLE" => no_args(after_name, CommandBody::Idle),
        b"UNAUTHENTICATE" => no_args(after_name, CommandBody::Unauthenticate),
        b"LOGIN" => login_args(after_name),
        b"AUTHENTICATE" => authenticate_args(after_name),
        b"ID" => id_args(after_name),
        b"ENABLE" => enable_args(after_name),
        b"SELECT" => select_args(after_name)
            .map(|(r, (mailbox, params))| (r, CommandBody::Select { mailbox, params })),
        b"EXAMINE" => select_args(after_name)
            .map(|(r, (mailbox, params))| (r, CommandBody::Examine { mailbox, params })),
        b"COMPRESS" => map(preceded(char(' '), atom), |a: &[u8]| {
            CommandBody::Compress(String::from_utf8_lossy(a).to_ascii_uppercase())
        })(after_name),
        _ => {
            // Not acted on: the name is enough; the backend judges the rest.
            return Ok(Command {
                tag,
                body: CommandBody::Other(upper_name(raw_name)),
            });
        }
    };
    match parsed {
        Ok((rest, body)) if is_crlf(rest) => Ok(Command { tag, body }),
        Ok(_) => Err(fail("unexpected characters after command arguments")),
        Err(_) => Err(fail(argument_error(name))),
    }
}

/// Parse only the tag and upper-cased command name from the first line of a
/// unit.  This is all the relay needs for commands it does not act on.
pub fn parse_command_head(line: &[u8]) -> Result<(Tag, String), ParseError> {
    let (rest, tag) = tag(line).map_err(|_| ParseError {
        tag: None,
        reason: "missing or invalid tag",
    })?;
    let name = rest
        .strip_prefix(b" ")
        .and_then(|r| command_name(r).ok())
        .map(|(_, n)| upper_name(n))
        .ok_or(ParseError {
            tag: Some(tag.clone()),
            reason: "missing or invalid command name",
        })?;
    Ok((tag, name))
}

fn argument_error(name: &[u8]) -> &'static str {
    match name {
        b"LOGIN" => "LOGIN expects: LOGIN userid password",
        b"AUTHENTICATE" => "AUTHENTICATE expects: AUTHENTICATE mechanism [initial-response]",
        b"ID" => "ID expects: ID NIL or ID (\"field\" \"value\" ...)",
        b"ENABLE" => "ENABLE expects one or more capability names",
        b"SELECT" | b"EXAMINE" => "expected a mailbox name",
        b"COMPRESS" => "COMPRESS expects a mechanism",
        _ => "this command takes no arguments",
    }
}

fn is_crlf(rest: &[u8]) -> bool {
    rest == b"\r\n" || rest == b"\n"
}

fn no_args(input: &[u8], body: CommandBody) -> IResult<&[u8], CommandBody> {
    Ok((input, body))
}

/// `login = "LOGIN" SP userid SP password` (RFC 9051 §9).
fn login_args(input: &[u8]) -> IResult<&[u8], CommandBody> {
    let (input, username) = preceded(char(' '), astring)(input)?;
    let (input, password) = preceded(char(' '), astring)(input)?;
    Ok((
        input,
        CommandBody::Login {
            username,
            password: Secret::new(password),
        },
    ))
}

/// `authenticate = "AUTHENTICATE" SP auth-type [SP initial-resp]`
/// (RFC 9051 §9, initial response from RFC 4959).
fn authenticate_args(input: &[u8]) -> IResult<&[u8], CommandBody> {
    let (input, mechanism) = preceded(char(' '), atom)(input)?;
    let (input, initial) = opt(preceded(char(' '), initial_resp))(input)?;
    Ok((
        input,
        CommandBody::Authenticate {
            mechanism: String::from_utf8_lossy(mechanism).to_ascii_uppercase(),
            initial,
        },
    ))
}

/// `initial-resp = (base64 / "=")` (RFC 4959 §7).
fn initial_resp(input: &[u8]) -> IResult<&[u8], InitialResponse> {
    alt((
        map(lit_tag("="), |_| InitialResponse::Empty),
        map(base64, |b: &[u8]| {
            InitialResponse::Base64(Secret::new(b.to_vec()))
        }),
    ))(input)
}

/// `base64 = *(4base64-char) [base64-terminal]`, `base64-char = ALPHA /
/// DIGIT / "+" / "/"`, `base64-terminal = (2base64-char "==") /
/// (3base64-char "=")` (RFC 9051 §9), non-empty here (an empty initial
/// response is `=`).  The structure is checked, not only the alphabet: RFC
/// 9051 §6.2.2 says a non-terminal `=` must be rejected.  Decoding is left
/// to the SASL code.
fn base64(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let chars = input.iter().take_while(|&&c| is_base64_char(c)).count();
    let pad = input[chars..]
        .iter()
        .take(2)
        .take_while(|&&c| c == b'=')
        .count();
    let len = chars + pad;
    if len == 0 || len % 4 != 0 {
        return Err(err(input, nom::error::ErrorKind::TakeWhile1));
    }
    Ok((&input[len..], &input[..len]))
}

/// `base64-char = ALPHA / DIGIT / "+" / "/"` (RFC 9051 §9).
pub fn is_base64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

/// `id = "ID" SP id-params-list` (RFC 2971 §4).
fn id_args(input: &[u8]) -> IResult<&[u8], CommandBody> {
    let (input, params) = preceded(char(' '), id_params_list)(input)?;
    Ok((input, CommandBody::Id(params)))
}

/// `id-params-list = "(" *(string SP nstring) ")" / nil` (RFC 2971 §4;
/// the RFC's own ABNF has a typo, the text and errata give this form).
fn id_params_list(input: &[u8]) -> IResult<&[u8], IdParams> {
    alt((
        map(nil, |_| None),
        map(
            delimited(
                char('('),
                opt(separated_list1(char(' '), id_pair)),
                char(')'),
            ),
            |pairs| Some(pairs.unwrap_or_default()),
        ),
    ))(input)
    .and_then(|(rest, params)| match &params {
        Some(p) if p.len() > MAX_ID_PAIRS => Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::TooLarge,
        ))),
        _ => Ok((rest, params)),
    })
}

/// One ID field and its value.
type IdPair = (Vec<u8>, Option<Vec<u8>>);

fn id_pair(input: &[u8]) -> IResult<&[u8], IdPair> {
    let short = |v: &Vec<u8>| v.len() <= MAX_ID_VALUE;
    let (input, field) = verify(string, short)(input)?;
    let (input, value) = preceded(char(' '), nstring)(input)?;
    if value.as_ref().is_some_and(|v| !short(v)) {
        return Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::TooLarge,
        )));
    }
    Ok((input, (field, value)))
}

/// `enable = "ENABLE" 1*(SP capability)` (RFC 5161 §4).
fn enable_args(input: &[u8]) -> IResult<&[u8], CommandBody> {
    let (input, caps) = nom::multi::many1(preceded(char(' '), atom))(input)?;
    Ok((
        input,
        CommandBody::Enable(
            caps.into_iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect(),
        ),
    ))
}

/// `select = "SELECT" SP mailbox [select-params]` (RFC 9051 §9; params from
/// RFC 4466 §2.1).  Parameters are kept raw: the backend interprets them.
fn select_args(input: &[u8]) -> IResult<&[u8], (Mailbox, Option<Vec<u8>>)> {
    let (input, mailbox) = preceded(char(' '), mailbox)(input)?;
    // `select-params = SP "(" select-param *(SP select-param) ")"`: at
    // least one parameter, so `()` is not a parameter list.
    let (input, params) = opt(preceded(
        char(' '),
        verify(paren_list_raw, |p: &[u8]| p != b"()"),
    ))(input)?;
    Ok((input, (mailbox, params.map(<[u8]>::to_vec))))
}

/// `mailbox = "INBOX" / astring` (RFC 9051 §9).  The atom form is checked
/// for INBOX before anything is allocated.
pub fn mailbox(input: &[u8]) -> IResult<&[u8], Mailbox> {
    alt((
        map(take_while1(is_astring_char), |m: &[u8]| {
            if m.eq_ignore_ascii_case(b"INBOX") {
                Mailbox::Inbox
            } else {
                Mailbox::Other(m.to_vec())
            }
        }),
        map(string, Mailbox::from_astring),
    ))(input)
}

/// A parenthesised list, nesting bounded by [`MAX_NESTING`]; returns its raw
/// bytes.  Strings and literals inside are skipped as units so a `)` in a
/// quoted string does not end the list.
fn paren_list_raw(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let start = input;
    let mut depth = 0usize;
    let mut rest = input;
    loop {
        match rest.first() {
            Some(b'(') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(nom::Err::Error(nom::error::Error::new(
                        rest,
                        nom::error::ErrorKind::TooLarge,
                    )));
                }
                rest = &rest[1..];
            }
            Some(b')') if depth > 0 => {
                depth -= 1;
                rest = &rest[1..];
                if depth == 0 {
                    let used = start.len() - rest.len();
                    return Ok((rest, &start[..used]));
                }
            }
            Some(b'"') | Some(b'{') => {
                let (r, _) = string(rest)?;
                rest = r;
            }
            Some(b'\r') | Some(b'\n') | None => {
                return Err(nom::Err::Error(nom::error::Error::new(
                    rest,
                    nom::error::ErrorKind::Char,
                )))
            }
            Some(_) if depth == 0 => {
                return Err(nom::Err::Error(nom::error::Error::new(
                    rest,
                    nom::error::ErrorKind::Char,
                )))
            }
            Some(_) => rest = &rest[1..],
        }
    }
}

/// `tag = 1*<any ASTRING-CHAR except "+">` (RFC 9051 §9).
pub fn tag(input: &[u8]) -> IResult<&[u8], Tag> {
    map(take_while1(is_tag_char), |t: &[u8]| {
        // is_tag_char admits ASCII only, so this is valid UTF-8.
        Tag(String::from_utf8_lossy(t).into())
    })(input)
}

/// Command names are atoms (RFC 9051 §9 `command-any` etc. and `x-command
/// = "X" atom`); `UID` commands report as `UID`.  Returns the name as sent:
/// ASCII letters, digits, `-`, `_` and `.`.
fn command_name(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(|c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')(input)
}

/// A command name as reported: upper case.
fn upper_name(raw: &[u8]) -> String {
    // command_name admits ASCII only, so this never replaces anything.
    String::from_utf8_lossy(raw).to_ascii_uppercase()
}

/// `astring = 1*ASTRING-CHAR / string` (RFC 9051 §9).
pub fn astring(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((map(take_while1(is_astring_char), <[u8]>::to_vec), string))(input)
}

/// `nstring = string / nil` (RFC 9051 §9).
pub fn nstring(input: &[u8]) -> IResult<&[u8], Option<Vec<u8>>> {
    alt((map(string, Some), map(nil, |_| None)))(input)
}

/// `nil = "NIL"` (case-insensitive, RFC 9051 §9).
fn nil(input: &[u8]) -> IResult<&[u8], &[u8]> {
    terminated(
        tag_no_case("NIL"),
        nom::combinator::not(take_while1(is_atom_char)),
    )(input)
}

/// `string = quoted / literal` (RFC 9051 §9).
pub fn string(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((quoted, literal))(input)
}

/// `quoted = DQUOTE *QUOTED-CHAR DQUOTE`; `QUOTED-CHAR = <any TEXT-CHAR
/// except quoted-specials> / "\" quoted-specials / UTF8-2 / UTF8-3 / UTF8-4`
/// (RFC 9051 §9).  8-bit octets must form valid UTF-8 (RFC 6855).
pub fn quoted(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (mut rest, _) = char('"')(input)?;
    let mut out = Vec::new();
    loop {
        match rest.first() {
            Some(b'"') => {
                rest = &rest[1..];
                break;
            }
            Some(b'\\') => match rest.get(1) {
                Some(&c @ (b'"' | b'\\')) => {
                    out.push(c);
                    rest = &rest[2..];
                }
                _ => return Err(err(rest, nom::error::ErrorKind::Escaped)),
            },
            Some(&c) if c == 0 || c == b'\r' || c == b'\n' => {
                return Err(err(rest, nom::error::ErrorKind::Char))
            }
            Some(&c) if c < 0x80 => {
                out.push(c);
                rest = &rest[1..];
            }
            Some(_) => {
                let n =
                    utf8_prefix_len(rest).ok_or_else(|| err(rest, nom::error::ErrorKind::Char))?;
                out.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            None => return Err(err(rest, nom::error::ErrorKind::Eof)),
        }
    }
    Ok((rest, out))
}

/// Length of the one UTF-8 character at the front of `s`, if valid.
fn utf8_prefix_len(s: &[u8]) -> Option<usize> {
    let n = match s.first()? {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let head = s.get(..n)?;
    std::str::from_utf8(head).ok().map(|_| n)
}

/// `literal = "{" number64 ["+"] "}" CRLF *CHAR8` (RFC 9051 §9, `+` from
/// RFC 7888).  The framer has already checked the size against the limits.
pub fn literal(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (input, len) =
        delimited(char('{'), terminated(number64, opt(char('+'))), char('}'))(input)?;
    let (input, _) = alt((lit_tag("\r\n"), lit_tag("\n")))(input)?;
    let len = usize::try_from(len).map_err(|_| err(input, nom::error::ErrorKind::TooLarge))?;
    let (input, data) = take(len)(input)?;
    if data.contains(&0) {
        // CHAR8 excludes NUL; only literal8 may carry it.
        return Err(err(input, nom::error::ErrorKind::Char));
    }
    Ok((input, data.to_vec()))
}

/// `number64 = 1*DIGIT` (unsigned 63-bit, RFC 9051 §9).
fn number64(input: &[u8]) -> IResult<&[u8], u64> {
    map_res(digit1, |d: &[u8]| {
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or(())
    })(input)
}

/// `atom = 1*ATOM-CHAR` (RFC 9051 §9).
pub fn atom(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(is_atom_char)(input)
}

/// Rest of the line, as text (used for response text).
pub fn text(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while(|c| c != b'\r' && c != b'\n')(input)
}

fn err(input: &[u8], kind: nom::error::ErrorKind) -> nom::Err<nom::error::Error<&[u8]>> {
    nom::Err::Error(nom::error::Error::new(input, kind))
}

/// `ATOM-CHAR = <any CHAR except atom-specials>`; `atom-specials = "(" /
/// ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials`.
pub fn is_atom_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !matches!(c, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// `ASTRING-CHAR = ATOM-CHAR / resp-specials`.
pub fn is_astring_char(c: u8) -> bool {
    is_atom_char(c) || c == b']'
}

/// Tag characters: `ASTRING-CHAR` except `+`.
pub fn is_tag_char(c: u8) -> bool {
    is_astring_char(c) && c != b'+'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Command {
        parse_command(input.as_bytes()).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn bad(input: &[u8]) -> ParseError {
        parse_command(input).expect_err(&String::from_utf8_lossy(input))
    }

    #[test]
    fn rfc3501_examples() {
        assert_eq!(ok("abcd CAPABILITY\r\n").body, CommandBody::Capability);
        assert_eq!(ok("a002 NOOP\r\n").body, CommandBody::Noop);
        assert_eq!(ok("A023 LOGOUT\r\n").body, CommandBody::Logout);
        assert_eq!(ok("a001 STARTTLS\r\n").body, CommandBody::StartTls);
        match ok("a001 LOGIN SMITH SESAME\r\n").body {
            CommandBody::Login { username, password } => {
                assert_eq!(username, b"SMITH");
                assert!(password.ct_eq(b"SESAME"));
            }
            b => panic!("{b:?}"),
        }
        assert_eq!(
            ok("A142 SELECT INBOX\r\n").body,
            CommandBody::Select {
                mailbox: Mailbox::Inbox,
                params: None
            }
        );
        assert_eq!(
            ok("A932 EXAMINE blurdybloop\r\n").body,
            CommandBody::Examine {
                mailbox: Mailbox::Other(b"blurdybloop".to_vec()),
                params: None
            }
        );
        assert_eq!(ok("A341 CLOSE\r\n").body, CommandBody::Close);
        assert_eq!(
            ok("A001 AUTHENTICATE GSSAPI\r\n").body,
            CommandBody::Authenticate {
                mechanism: "GSSAPI".into(),
                initial: None
            }
        );
        assert_eq!(
            ok("A003 APPEND saved-messages (\\Seen) {310}\r\n")
                .tag
                .as_str(),
            "A003"
        );
        assert_eq!(
            ok("A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n").body,
            CommandBody::Other("SEARCH".into())
        );
        assert_eq!(
            ok("A999 UID FETCH 4827313:4828442 FLAGS\r\n").body,
            CommandBody::Other("UID".into())
        );
    }

    #[test]
    fn login_forms() {
        let c = ok("a LOGIN \"fred \\\"the\\\\ man\" {5}\r\nsecre\r\n");
        match c.body {
            CommandBody::Login { username, password } => {
                assert_eq!(username, b"fred \"the\\ man");
                assert!(password.ct_eq(b"secre"));
            }
            b => panic!("{b:?}"),
        }
        ok("a login {5+}\r\nalice {3}\r\nabc\r\n");
        assert_eq!(bad(b"a LOGIN alice\r\n").tag.unwrap().as_str(), "a");
        assert!(bad(b"a LOGIN alice pw extra\r\n")
            .reason
            .contains("unexpected"));
        bad(b"a LOGIN \"al\0ice\" pw\r\n");
        bad(b"a LOGIN \"al\xffice\" pw\r\n");
        ok("a LOGIN \"j\u{f6}rg\" pw\r\n");
    }

    #[test]
    fn sasl_ir() {
        // RFC 4959 §3 example.
        match ok("a01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n").body {
            CommandBody::Authenticate {
                mechanism,
                initial: Some(InitialResponse::Base64(b)),
            } => {
                assert_eq!(mechanism, "PLAIN");
                assert!(b.ct_eq(b"dGVzdAB0ZXN0AHRlc3Q="));
            }
            b => panic!("{b:?}"),
        }
        assert_eq!(
            ok("a AUTHENTICATE plain =\r\n").body,
            CommandBody::Authenticate {
                mechanism: "PLAIN".into(),
                initial: Some(InitialResponse::Empty)
            }
        );
        bad(b"a AUTHENTICATE PLAIN d!!\r\n");
    }

    #[test]
    fn id_forms() {
        // RFC 2971 §3.3 example.
        let c = ok("a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music Limited\")\r\n");
        match c.body {
            CommandBody::Id(Some(p)) => {
                assert_eq!(p.len(), 3);
                assert_eq!(
                    p[2],
                    (
                        b"vendor".to_vec(),
                        Some(b"Pink Floyd Music Limited".to_vec())
                    )
                );
            }
            b => panic!("{b:?}"),
        }
        assert_eq!(ok("a ID NIL\r\n").body, CommandBody::Id(None));
        assert_eq!(ok("a ID ()\r\n").body, CommandBody::Id(Some(vec![])));
        assert_eq!(
            ok("a ID (\"x\" NIL)\r\n").body,
            CommandBody::Id(Some(vec![(b"x".to_vec(), None)]))
        );
        let many: String = (0..31)
            .map(|i| format!("\"f{i}\" \"v\""))
            .collect::<Vec<_>>()
            .join(" ");
        bad(format!("a ID ({many})\r\n").as_bytes());
        let long = "v".repeat(MAX_ID_VALUE + 1);
        bad(format!("a ID (\"f\" \"{long}\")\r\n").as_bytes());
    }

    #[test]
    fn enable_select_params() {
        assert_eq!(
            ok("t ENABLE CONDSTORE UTF8=ACCEPT\r\n").body,
            CommandBody::Enable(vec!["CONDSTORE".into(), "UTF8=ACCEPT".into()])
        );
        assert_eq!(
            ok("A02 SELECT inbox (CONDSTORE)\r\n").body,
            CommandBody::Select {
                mailbox: Mailbox::Inbox,
                params: Some(b"(CONDSTORE)".to_vec())
            }
        );
        ok("A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n");
        let deep = format!("a SELECT x {}{}\r\n", "(".repeat(50), ")".repeat(50));
        bad(deep.as_bytes());
        bad(b"a SELECT\r\n");
    }

    #[test]
    fn tags_and_garbage() {
        assert!(bad(b"\r\n").tag.is_none());
        assert!(bad(b"+tag NOOP\r\n").tag.is_none());
        assert!(bad(b"a\0b NOOP\r\n").tag.is_some());
        bad(b"a NOOP extra\r\n");
        bad(b"a\r\n");
        assert_eq!(
            parse_command_head(b"x9 uid fetch 1 (FLAGS)\r\n").unwrap().1,
            "UID"
        );
    }

    // ---- Known answers: every fully parsed command --------------------

    use crate::imap::check;
    use crate::imap::framer::{Direction, Limits};

    /// Frame `input` as the relay would (every chunking, see
    /// `check::all_chunkings_agree`), insist it is exactly one command unit,
    /// then parse it.
    fn unit(input: &[u8]) -> Result<Command, ParseError> {
        let run = check::all_chunkings_agree(
            Limits::default(),
            Direction::ClientToServer,
            input,
            &[1, 2, 3, 5, 7],
            check::Policy::default(),
        )
        .unwrap_or_else(|v| panic!("{v}"));
        assert_eq!(run.consumed, input.len(), "not one whole unit");
        let units = run
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    check::Event::Line {
                        starts_unit: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(units, 1, "{}", input.escape_ascii());
        // The parser agrees with the fuzz invariants too.
        check::command_case(input).unwrap_or_else(|v| panic!("{v}"));
        parse_command(input)
    }

    fn login(user: &[u8], pass: &[u8]) -> CommandBody {
        CommandBody::Login {
            username: user.to_vec(),
            password: Secret::new(pass.to_vec()),
        }
    }

    fn other(name: &[u8]) -> Mailbox {
        Mailbox::Other(name.to_vec())
    }

    #[test]
    fn every_command_known_answers() {
        use CommandBody as B;
        let ir = |m: &str, r: &[u8]| B::Authenticate {
            mechanism: m.into(),
            initial: Some(InitialResponse::Base64(Secret::new(r.to_vec()))),
        };
        let cases: Vec<(&str, &[u8], &str, CommandBody)> = vec![
            ("RFC 3501 §6.1.1", b"abcd CAPABILITY\r\n", "abcd", B::Capability),
            ("RFC 3501 §6.1.2", b"a002 NOOP\r\n", "a002", B::Noop),
            ("RFC 3501 §6.1.3", b"A023 LOGOUT\r\n", "A023", B::Logout),
            ("RFC 3501 §6.2.1", b"a002 STARTTLS\r\n", "a002", B::StartTls),
            ("RFC 3501 §6.2.3", b"a001 LOGIN SMITH SESAME\r\n", "a001", login(b"SMITH", b"SESAME")),
            ("RFC 3501 §8", b"a001 login mrc secret\r\n", "a001", login(b"mrc", b"secret")),
            ("RFC 5530 §3", b"a LOGIN \"fred\" \"foo\"\r\n", "a", login(b"fred", b"foo")),
            (
                "RFC 7888 §4",
                b"A001 LOGIN \"FRED FOOBAR\" \"fat man\"\r\n",
                "A001",
                login(b"FRED FOOBAR", b"fat man"),
            ),
            (
                "RFC 7888 §4",
                b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n",
                "A001",
                login(b"FRED FOOBAR", b"fat man"),
            ),
            (
                "RFC 3501 §7.5",
                b"A001 LOGIN {11}\r\nFRED FOOBAR {7}\r\nfat man\r\n",
                "A001",
                login(b"FRED FOOBAR", b"fat man"),
            ),
            (
                "RFC 3501 §6.2.2",
                b"A001 AUTHENTICATE GSSAPI\r\n",
                "A001",
                B::Authenticate {
                    mechanism: "GSSAPI".into(),
                    initial: None,
                },
            ),
            (
                "RFC 4959 §4",
                b"A01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=\r\n",
                "A01",
                ir("PLAIN", b"dGVzdAB0ZXN0AHRlc3Q="),
            ),
            (
                "RFC 4959 §4",
                b"A01 AUTHENTICATE EXTERNAL =\r\n",
                "A01",
                B::Authenticate {
                    mechanism: "EXTERNAL".into(),
                    initial: Some(InitialResponse::Empty),
                },
            ),
            (
                "RFC 4959 §4 (padding '==')",
                b"x authenticate xoauth2 dGVzdA==\r\n",
                "x",
                ir("XOAUTH2", b"dGVzdA=="),
            ),
            (
                "RFC 2971 §3.1",
                b"a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music Limited\")\r\n",
                "a023",
                B::Id(Some(vec![
                    (b"name".to_vec(), Some(b"sodr".to_vec())),
                    (b"version".to_vec(), Some(b"19.34".to_vec())),
                    (b"vendor".to_vec(), Some(b"Pink Floyd Music Limited".to_vec())),
                ])),
            ),
            ("RFC 2971 §3.2", b"a042 ID NIL\r\n", "a042", B::Id(None)),
            (
                "RFC 2971 §4 nstring value, literal field",
                b"a ID ({7}\r\nos-name NIL)\r\n",
                "a",
                B::Id(Some(vec![(b"os-name".to_vec(), None)])),
            ),
            (
                "RFC 5161 §3.1",
                b"t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n",
                "t2",
                B::Enable(vec!["CONDSTORE".into(), "X-GOOD-IDEA".into()]),
            ),
            (
                "RFC 9051 §6.3.1",
                b"a1 ENABLE CONDSTORE\r\n",
                "a1",
                B::Enable(vec!["CONDSTORE".into()]),
            ),
            (
                "RFC 6855 §3",
                b"a ENABLE UTF8=ACCEPT\r\n",
                "a",
                B::Enable(vec!["UTF8=ACCEPT".into()]),
            ),
            (
                "RFC 3501 §6.3.1",
                b"A142 SELECT INBOX\r\n",
                "A142",
                B::Select {
                    mailbox: Mailbox::Inbox,
                    params: None,
                },
            ),
            (
                "RFC 3501 §8",
                b"a002 select inbox\r\n",
                "a002",
                B::Select {
                    mailbox: Mailbox::Inbox,
                    params: None,
                },
            ),
            (
                "RFC 5530 §3",
                b"f select \"/archive/projects/experiment-iv\"\r\n",
                "f",
                B::Select {
                    mailbox: other(b"/archive/projects/experiment-iv"),
                    params: None,
                },
            ),
            (
                "RFC 7162 §3.1.8 form (CONDSTORE select-param, RFC 4466 §2.1)",
                b"a SELECT INBOX (CONDSTORE)\r\n",
                "a",
                B::Select {
                    mailbox: Mailbox::Inbox,
                    params: Some(b"(CONDSTORE)".to_vec()),
                },
            ),
            (
                "RFC 7162 §3.2.5 form (QRESYNC)",
                b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
                "A02",
                B::Select {
                    mailbox: Mailbox::Inbox,
                    params: Some(
                        b"(QRESYNC (67890007 20050715194045000 41,43:211,214:541))".to_vec(),
                    ),
                },
            ),
            (
                "RFC 3501 §6.3.2",
                b"A932 EXAMINE blurdybloop\r\n",
                "A932",
                B::Examine {
                    mailbox: other(b"blurdybloop"),
                    params: None,
                },
            ),
            (
                "RFC 4466 §2.1 EXAMINE with select-params",
                b"A933 EXAMINE {4+}\r\nblub (CONDSTORE)\r\n",
                "A933",
                B::Examine {
                    mailbox: other(b"blub"),
                    params: Some(b"(CONDSTORE)".to_vec()),
                },
            ),
            ("RFC 3501 §6.4.2", b"A341 CLOSE\r\n", "A341", B::Close),
            ("RFC 3691 §2 / RFC 9051 §6.4.2", b"A342 UNSELECT\r\n", "A342", B::Unselect),
            ("RFC 2177 §3", b"A002 IDLE\r\n", "A002", B::Idle),
            ("RFC 8437 §2 form", b"a UNAUTHENTICATE\r\n", "a", B::Unauthenticate),
            (
                "RFC 4978 §4",
                b"c compress deflate\r\n",
                "c",
                B::Compress("DEFLATE".into()),
            ),
            // Not acted on: tag and name only.
            ("RFC 3501 §6.4.1", b"FXXZ CHECK\r\n", "FXXZ", B::Other("CHECK".into())),
            (
                "RFC 3501 §6.4.8",
                b"A999 UID FETCH 4827313:4828442 FLAGS\r\n",
                "A999",
                B::Other("UID".into()),
            ),
            (
                "RFC 3501 §6.4.4",
                b"A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
                "A282",
                B::Other("SEARCH".into()),
            ),
            (
                "RFC 9051 §6.4.4",
                b"A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0\r\n",
                "A285",
                B::Other("SEARCH".into()),
            ),
            (
                "RFC 3501 §6.5.1",
                b"a442 XPIG-LATIN\r\n",
                "a442",
                B::Other("XPIG-LATIN".into()),
            ),
        ];
        for (source, input, tag, body) in cases {
            let cmd =
                unit(input).unwrap_or_else(|e| panic!("{source}: {}: {e}", input.escape_ascii()));
            assert_eq!(cmd.tag.as_str(), tag, "{source}");
            assert_eq!(cmd.body, body, "{source}: {}", input.escape_ascii());
            let (htag, hname) = parse_command_head(input).expect("head parses");
            assert_eq!(
                (htag.as_str(), hname.as_str()),
                (tag, body.name()),
                "{source}"
            );
        }
    }

    #[test]
    fn inbox_is_case_insensitive_in_every_form() {
        // RFC 3501 §5.1 / RFC 9051 §9 `mailbox = "INBOX" / astring`: INBOX
        // in any case, as atom, quoted or literal.
        for input in [
            &b"a SELECT INBOX\r\n"[..],
            b"a SELECT inbox\r\n",
            b"a SELECT InBoX\r\n",
            b"a SELECT \"iNbOx\"\r\n",
            b"a SELECT {5}\r\ninbox\r\n",
            b"a SELECT {5+}\r\nINBOX\r\n",
        ] {
            assert_eq!(
                unit(input).unwrap().body,
                CommandBody::Select {
                    mailbox: Mailbox::Inbox,
                    params: None
                },
                "{}",
                input.escape_ascii()
            );
        }
        for (input, name) in [
            (&b"a EXAMINE INBOX.Sent\r\n"[..], &b"INBOX.Sent"[..]),
            (b"a EXAMINE INBOXX\r\n", b"INBOXX"),
            (b"a EXAMINE \"INBOX \"\r\n", b"INBOX "),
            (b"a EXAMINE \"\"\r\n", b""),
        ] {
            assert_eq!(
                unit(input).unwrap().body,
                CommandBody::Examine {
                    mailbox: other(name),
                    params: None
                }
            );
        }
    }

    #[test]
    fn utf8_in_quoted_strings() {
        // RFC 9051 §9 QUOTED-CHAR includes UTF8-2/3/4; RFC 6855 §3.
        let cases: [(&str, &[u8]); 4] = [
            ("a SELECT \"Entw\u{fc}rfe\"\r\n", "Entw\u{fc}rfe".as_bytes()), // 2 octets
            (
                "a SELECT \"\u{8349}\u{7a3f}\"\r\n",
                "\u{8349}\u{7a3f}".as_bytes(),
            ), // 3 octets
            ("a SELECT \"\u{1f4e8}\"\r\n", "\u{1f4e8}".as_bytes()),         // 4 octets
            (
                "a SELECT \"\u{43c}\\\"\u{43e}\"\r\n",
                "\u{43c}\"\u{43e}".as_bytes(),
            ),
        ];
        for (input, name) in cases {
            assert_eq!(
                unit(input.as_bytes()).unwrap().body,
                CommandBody::Select {
                    mailbox: other(name),
                    params: None
                }
            );
        }
        assert_eq!(
            unit("a LOGIN \"j\u{f6}rg\" pw\r\n".as_bytes())
                .unwrap()
                .body,
            login("j\u{f6}rg".as_bytes(), b"pw")
        );
        // Not UTF-8: lone continuation, overlong, surrogate, > U+10FFFF,
        // truncated sequence.
        for bad_name in [
            &b"\x80"[..],
            b"\xc0\xaf",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xe2\x82",
        ] {
            let mut input = b"a SELECT \"".to_vec();
            input.extend_from_slice(bad_name);
            input.extend_from_slice(b"\"\r\n");
            assert!(parse_command(&input).is_err(), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn string_rules() {
        // RFC 9051 §9 rules, one by one.
        assert_eq!(atom(b"FLAGS)"), Ok((&b")"[..], &b"FLAGS"[..])));
        for special in [
            &b"("[..],
            b")",
            b"{",
            b" ",
            b"\x01",
            b"%",
            b"*",
            b"\"",
            b"\\",
            b"]",
        ] {
            assert!(atom(special).is_err(), "{special:?}");
        }
        // astring: 1*ASTRING-CHAR (atom chars and "]") or string.
        assert_eq!(astring(b"BODY[] x"), Ok((&b" x"[..], b"BODY[]".to_vec())));
        assert_eq!(astring(b"\"a b\" x"), Ok((&b" x"[..], b"a b".to_vec())));
        assert_eq!(astring(b"{3}\r\na b x"), Ok((&b" x"[..], b"a b".to_vec())));
        assert!(astring(b"(x)").is_err());
        // quoted: escapes for DQUOTE and backslash only.
        assert_eq!(
            quoted(b"\"a\\\"b\\\\c\""),
            Ok((&b""[..], b"a\"b\\c".to_vec()))
        );
        assert_eq!(quoted(b"\"\""), Ok((&b""[..], Vec::new())));
        for bad in [
            &b"\"a\\nb\""[..],
            b"\"a",
            b"\"a\rb\"",
            b"\"a\nb\"",
            b"\"a\0b\"",
            b"a\"",
        ] {
            assert!(quoted(bad).is_err(), "{}", bad.escape_ascii());
        }
        // Other CTLs are TEXT-CHARs.
        assert_eq!(
            quoted(b"\"\x01\x7f\""),
            Ok((&b""[..], b"\x01\x7f".to_vec()))
        );
        // literal: sync, non-sync (RFC 7888), bare LF, zero length.
        assert_eq!(literal(b"{3}\r\nabcd"), Ok((&b"d"[..], b"abc".to_vec())));
        assert_eq!(literal(b"{3+}\r\nabc"), Ok((&b""[..], b"abc".to_vec())));
        assert_eq!(literal(b"{3}\nabc"), Ok((&b""[..], b"abc".to_vec())));
        assert_eq!(literal(b"{0}\r\n"), Ok((&b""[..], Vec::new())));
        for bad in [
            &b"{3}\r\nab"[..], // short
            b"{3}\r\na\0b",    // CHAR8 excludes NUL
            b"{3}abc",         // no CRLF
            b"{-3}\r\nabc",
            b"{3-}\r\nabc",
            b"~{3}\r\nabc", // literal8 is not a string
            b"{9223372036854775808}\r\n",
        ] {
            assert!(literal(bad).is_err(), "{}", bad.escape_ascii());
        }
        // nstring: string or NIL (any case), NIL must be a whole atom.
        assert_eq!(nstring(b"NIL)"), Ok((&b")"[..], None)));
        assert_eq!(nstring(b"nil "), Ok((&b" "[..], None)));
        assert_eq!(nstring(b"\"NIL\""), Ok((&b""[..], Some(b"NIL".to_vec()))));
        assert!(nstring(b"NILS").is_err());
        assert!(nstring(b"abc").is_err());
        // tag: ASTRING-CHAR except "+".
        assert_eq!(tag(b"a]1 x").unwrap().1.as_str(), "a]1");
        assert_eq!(tag(b"a+b").unwrap().0, b"+b");
        assert!(tag(b"*").is_err());
        assert!(Tag::new("a+").is_none());
        assert!(Tag::new("").is_none());
    }

    #[test]
    fn argument_errors_keep_the_tag() {
        // RFC 3501 §7.1.3: a command that does not parse gets a tagged BAD
        // when its tag is readable.
        for (input, reason) in [
            (&b"a CAPABILITY now\r\n"[..], "unexpected"),
            (b"a NOOP \r\n", "unexpected"),
            (b"a LOGIN\r\n", "LOGIN expects"),
            (b"a LOGIN alice\r\n", "LOGIN expects"),
            (b"a LOGIN alice  pw\r\n", "LOGIN expects"),
            (b"a LOGIN alice pw extra\r\n", "unexpected"),
            (b"a LOGIN (alice) pw\r\n", "LOGIN expects"),
            (b"a AUTHENTICATE\r\n", "AUTHENTICATE expects"),
            (b"a AUTHENTICATE PLAIN abc\r\n", "unexpected"),
            (b"a AUTHENTICATE PLAIN ab=c\r\n", "unexpected"),
            (b"a AUTHENTICATE PLAIN abcd=\r\n", "unexpected"),
            (b"a AUTHENTICATE PLAIN a===\r\n", "unexpected"),
            (b"a AUTHENTICATE PLAIN d!!\r\n", "unexpected"),
            (b"a AUTHENTICATE PLAIN \"dGVz\"\r\n", "unexpected"),
            (b"a ID\r\n", "ID expects"),
            (b"a ID (\r\n", "ID expects"),
            (b"a ID (\"a\")\r\n", "ID expects"),
            (b"a ID (\"a\" \"b\" )\r\n", "ID expects"),
            (b"a ID (a b)\r\n", "ID expects"),
            (b"a ENABLE\r\n", "ENABLE expects"),
            (b"a ENABLE CONDSTORE \r\n", "unexpected"),
            (b"a SELECT\r\n", "mailbox"),
            (b"a SELECT x (\r\n", "unexpected"),
            (b"a SELECT x ()\r\n", "unexpected"),
            (b"a SELECT x CONDSTORE\r\n", "unexpected"),
            (b"a EXAMINE (x)\r\n", "mailbox"),
            (b"a COMPRESS\r\n", "COMPRESS expects"),
            (b"a IDLE", "unexpected"),
        ] {
            let e = parse_command(input).expect_err(&input.escape_ascii().to_string());
            assert_eq!(e.tag.as_ref().map(Tag::as_str), Some("a"));
            assert!(
                e.reason.contains(reason),
                "{}: {:?}",
                input.escape_ascii(),
                e.reason
            );
        }
        for input in [
            &b" NOOP\r\n"[..],
            b"* NOOP\r\n",
            b"+a NOOP\r\n",
            b"(a) NOOP\r\n",
            b"",
        ] {
            assert!(parse_command(input).unwrap_err().tag.is_none());
        }
        assert!(bad(b"a\r\n").reason.contains("SP"));
        assert!(bad(b"a \r\n").reason.contains("command name"));
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        // Deliberate leniency: the framer accepts bare LF (many clients'
        // test tools send it), so the grammar does too.
        assert_eq!(ok("a NOOP\n").body, CommandBody::Noop);
        assert_eq!(
            parse_command(b"a LOGIN {1}\nu {1}\np\n").unwrap().body,
            login(b"u", b"p")
        );
    }
}
