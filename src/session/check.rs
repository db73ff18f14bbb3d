//! Invariant checks for the session state machine, written once and run by the `session`
//! fuzz target (`fuzz/fuzz_targets/session.rs`) and the seed replay test
//! (`src/imap/tests/corpus.rs`), like [`crate::imap::check`] for the codec.
//!
//! [`session_case`] decodes its input into an interleaving of what the relay feeds a
//! [`Session`]: client command lines (from a table of interesting commands, or raw bytes),
//! SASL lines, login results, literal events, and backend responses (tagged with any
//! status, untagged `BYE`, continuation), respecting only the relay's contract: commands
//! are parsed before login and judged by [`Session::client_command`] after it, a
//! [`Action::Login`] is answered with [`Session::login_finished`] before anything else,
//! and nothing follows the Logout state but [`Session::closed`].
//!
//! Invariants, checked after every event; `Err(what broke)` on the first failure:
//! - nothing panics;
//! - the state's label is one of the five (`not_authenticated`, `authenticated`,
//!   `selected`, `idle`, `logout`);
//! - the pending table never holds more than [`MAX_PENDING`] entries;
//! - refused commands are never forwarded: after login a forwarded line is a DONE ending
//!   an IDLE, or a command whose tag and name parse and that is valid in some state the
//!   session may be in: never LOGIN/AUTHENTICATE/STARTTLS (re-authentication behind the
//!   gateway's back), never COMPRESS/UNAUTHENTICATE, never a selected-state command unless
//!   a mailbox is selected or a SELECT/EXAMINE is in flight;
//! - before login nothing is forwarded at all, and a login is requested only for LOGIN or
//!   AUTHENTICATE, and only where cleartext credentials are allowed;
//! - the user is bound only by a successful login result (or the PREAUTH greeting), and
//!   never changes afterwards: no backend response and no client line binds or rebinds it;
//! - the Idle state is only entered for a tag that was forwarded as IDLE;
//! - every reply the gateway writes itself is whole CRLF-terminated lines, each starting
//!   with `*`, `+` or a tag: no client bytes can split or forge a response line;
//! - `max_bad_commands` invalid commands before login always close the connection.

use super::rules::{self, Scope};
use super::{Action, LoginFailure, Pending, Policy, Session, State, User, Verdict, MAX_PENDING};
use crate::imap::command::{parse_command, parse_command_head};
use crate::imap::response::Status;
use crate::imap::{CommandBody, Mechanism};

/// Most events decoded from one input (bounds the run time per input).
const MAX_EVENTS: usize = 512;

/// Client lines worth combining; `{t}` becomes a tag from [`TAGS`].
const COMMANDS: &[&str] = &[
    "{t} LOGIN alice wonderland\r\n",
    "{t} LOGIN {5}\r\n",
    "{t} LOGIN {5+}\r\nalice {10+}\r\nwonderland\r\n",
    "{t} AUTHENTICATE PLAIN\r\n",
    "{t} AUTHENTICATE PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\n",
    "{t} AUTHENTICATE PLAIN =\r\n",
    "{t} AUTHENTICATE LOGIN\r\n",
    "{t} AUTHENTICATE X-UNKNOWN\r\n",
    "{t} STARTTLS\r\n",
    "{t} CAPABILITY\r\n",
    "{t} NOOP\r\n",
    "{t} LOGOUT\r\n",
    "{t} ID (\"x-originating-ip\" \"6.6.6.6\")\r\n",
    "{t} ID NIL\r\n",
    "{t} SELECT INBOX\r\n",
    "{t} EXAMINE \"other\"\r\n",
    "{t} SELECT {5}\r\n",
    "{t} CLOSE\r\n",
    "{t} UNSELECT\r\n",
    "{t} IDLE\r\n",
    "DONE\r\n",
    "{t} FETCH 1:* (FLAGS BODY[])\r\n",
    "{t} UID FETCH 1 BODY.PEEK[]\r\n",
    "{t} APPEND INBOX {12}\r\n",
    "{t} APPEND INBOX {12+}\r\n",
    "{t} ENABLE UTF8=ACCEPT\r\n",
    "{t} COMPRESS DEFLATE\r\n",
    "{t} UNAUTHENTICATE\r\n",
    "{t} XUNKNOWN\r\n",
    "{t} EXPUNGE\r\n",
    "{t} NOOP\n",
    "{t} NO\rOP\r\n",
    "\x00 NOOP\r\n",
    "*\r\n",
    "YWxpY2U=\r\n",
    "\r\n",
];

const TAGS: &[&str] = &["a", "b", "c", "A001", "*", "+", "DONE", "G1"];

/// What the session may legitimately bind to.
const USERS: &[&str] = &["alice", "bob"];

/// Reads the fuzz input as a stream of small numbers.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn pick<'t, T>(&mut self, table: &'t [T]) -> Option<&'t T> {
        Some(&table[self.byte()? as usize % table.len()])
    }

    /// Up to 64 raw bytes.
    fn raw(&mut self) -> Option<Vec<u8>> {
        let n = (self.byte()? % 64) as usize;
        let n = n.min(self.data.len());
        let (raw, rest) = self.data.split_at(n);
        self.data = rest;
        Some(raw.to_vec())
    }
}

/// What the checker has seen, to judge the session by.
struct Model {
    /// The user bound by a login result or the PREAUTH greeting.
    bound: Option<User>,
    /// Tags forwarded as IDLE.
    idle_tags: Vec<String>,
}

/// Run one fuzz input; `Err` names the first broken invariant.
pub fn session_case(data: &[u8]) -> Result<(), String> {
    run(data).map(|_| ())
}

/// [`session_case`], returning the session as the input left it.
fn run(data: &[u8]) -> Result<Option<Session>, String> {
    let mut input = Input { data };
    let Some(flags) = input.byte() else {
        return Ok(None);
    };
    let policy = Policy {
        cleartext_ok: flags & 1 != 0,
        starttls_available: flags & 2 != 0,
        mechanisms: match (flags >> 2) & 3 {
            0 => vec![],
            1 => vec![Mechanism::Plain],
            2 => vec![Mechanism::Login],
            _ => vec![Mechanism::Plain, Mechanism::Login],
        },
        max_bad_commands: u32::from(flags >> 4) + 1,
    };
    let mut s = Session::new(policy);
    let mut model = Model {
        bound: None,
        idle_tags: Vec::new(),
    };
    if flags & 0x80 != 0 && input.byte().is_some_and(|b| b & 1 == 1) {
        // Arrow (2): a PREAUTH rule named the user.
        let greeting = s.preauth_greeting("bob".into(), &["IMAP4rev1".into(), "IDLE".into()]);
        check_reply(&greeting)?;
        model.bound = Some("bob".into());
    }
    for _ in 0..MAX_EVENTS {
        let Some(op) = input.byte() else { break };
        if s.state() == &State::Logout {
            // The relay stops here; only the close remains.
            let _ = s.closed();
            check_state(&s, &model)?;
            break;
        }
        let before_user = s.state().user().cloned();
        match s.state().label() {
            "not_authenticated" => pre_login(&mut s, &mut model, &mut input, op)?,
            _ => post_login(&mut s, &mut model, &mut input, op)?,
        }
        check_state(&s, &model)?;
        if let (Some(b), Some(a)) = (&before_user, s.state().user()) {
            if a != b {
                return Err(format!("user changed from {b:?} to {a:?}"));
            }
        }
    }
    Ok(Some(s))
}

/// A command line from the table, tag filled in.
fn table_line(input: &mut Input) -> Option<Vec<u8>> {
    let template = input.pick(COMMANDS)?;
    let tag = input.pick(TAGS)?;
    Some(template.replace("{t}", tag).into_bytes())
}

fn pre_login(s: &mut Session, model: &mut Model, input: &mut Input, op: u8) -> Result<(), String> {
    let line = match op % 4 {
        0 => match input.raw() {
            Some(l) => l,
            None => return Ok(()),
        },
        1 => {
            s.tls_established();
            return Ok(());
        }
        _ => match table_line(input) {
            Some(l) => l,
            None => return Ok(()),
        },
    };
    let bad_before = s.bad_commands;
    let in_sasl = s.in_sasl();
    let asks_login = in_sasl
        || matches!(
            parse_command(&line).map(|c| c.body),
            Ok(CommandBody::Login { .. } | CommandBody::Authenticate { .. })
        );
    let actions = if in_sasl {
        s.sasl_response(&line)
    } else {
        s.command(parse_command(&line))
    };
    let mut closed = false;
    let mut refused = false;
    for a in &actions {
        match a {
            Action::Reply(r) => check_reply(r)?,
            Action::Close => closed = true,
            Action::Refused(_) => refused = true,
            Action::Login(req) => {
                if !s.policy().cleartext_ok {
                    return Err(format!(
                        "login requested without TLS or trust: {:?}",
                        String::from_utf8_lossy(&line)
                    ));
                }
                if !asks_login || !matches!(req.mechanism, "PLAIN" | "LOGIN") {
                    return Err(format!(
                        "login ({}) requested by {:?}",
                        req.mechanism,
                        String::from_utf8_lossy(&line)
                    ));
                }
                // The relay answers at once; the fuzz input picks the outcome.
                let result = match input.byte().unwrap_or(0) % 6 {
                    0 => Ok((pick_user(input), vec!["IMAP4rev1".into(), "IDLE".into()])),
                    1 => Err(LoginFailure::BadCredentials),
                    2 => Err(LoginFailure::Unavailable("down".into())),
                    3 => Err(LoginFailure::Backend {
                        code: Some("ALERT".into()),
                        text: "no\r\n* BYE forged".into(),
                    }),
                    4 => Err(LoginFailure::Limit("too many".into())),
                    _ => Err(LoginFailure::Authorization),
                };
                let ok_user = result.as_ref().ok().map(|(u, _)| u.clone());
                for a in s.login_finished(result) {
                    if let Action::Reply(r) = &a {
                        check_reply(r)?;
                    }
                }
                match ok_user {
                    Some(u) => {
                        if s.state() != &State::Authenticated(u.clone()) {
                            return Err(format!("login ok but state {:?}", s.state()));
                        }
                        model.bound = Some(u);
                    }
                    None => {
                        if s.state() != &State::NotAuthenticated {
                            return Err(format!("login failed but state {:?}", s.state()));
                        }
                    }
                }
            }
            Action::StartTls => {
                if !line.windows(8).any(|w| w.eq_ignore_ascii_case(b"STARTTLS")) {
                    return Err("StartTls without STARTTLS".into());
                }
            }
            Action::Transition(_) => {}
        }
    }
    if refused && s.bad_commands >= s.policy().max_bad_commands && !closed {
        return Err(format!(
            "{} bad commands (max {}) and the connection stays open",
            s.bad_commands,
            s.policy().max_bad_commands
        ));
    }
    if s.bad_commands < bad_before {
        return Err("bad command count went down".into());
    }
    Ok(())
}

fn pick_user(input: &mut Input) -> User {
    (*input.pick(USERS).unwrap_or(&"alice")).into()
}

fn post_login(s: &mut Session, model: &mut Model, input: &mut Input, op: u8) -> Result<(), String> {
    match op % 10 {
        0..=2 => {
            let Some(line) = table_line(input) else {
                return Ok(());
            };
            client_line(s, model, &line)
        }
        3 => {
            let Some(line) = input.raw() else {
                return Ok(());
            };
            client_line(s, model, &line)
        }
        4 | 5 => {
            let Some(tag) = input.pick(TAGS) else {
                return Ok(());
            };
            let status = match input.byte().unwrap_or(0) % 3 {
                0 => Status::Ok,
                1 => Status::No,
                _ => Status::Bad,
            };
            let _ = s.backend_tagged(tag, status);
            Ok(())
        }
        6 => {
            let _ = s.backend_bye();
            Ok(())
        }
        7 => {
            s.backend_continuation();
            Ok(())
        }
        8 => {
            s.client_literal_announced(input.byte().unwrap_or(0) & 1 == 1);
            Ok(())
        }
        _ => {
            s.client_literal_data();
            Ok(())
        }
    }
}

/// One client line after login: forwarded only if some state the session may be in admits
/// it.
fn client_line(s: &mut Session, model: &mut Model, line: &[u8]) -> Result<(), String> {
    let was_idle = matches!(s.state(), State::Idle { done: false, .. });
    let idle_pending = s.pending.iter().any(|(_, p)| *p == Pending::Idle);
    let selected_possible = matches!(
        s.state(),
        State::Selected(..)
            | State::Idle {
                mailbox: Some(_),
                ..
            }
    ) || s
        .pending
        .iter()
        .any(|(_, p)| matches!(p, Pending::Select(_)));
    let sync = line.trim_ascii_end().ends_with(b"}") && !line.trim_ascii_end().ends_with(b"+}");
    let verdict = s.client_command(line, sync);
    let shown = String::from_utf8_lossy(line);
    match verdict {
        Verdict::Refuse { reply, .. } => check_reply(&reply),
        Verdict::Forward => {
            if was_idle {
                return Ok(());
            }
            if idle_pending && line.trim_ascii_end().eq_ignore_ascii_case(b"DONE") {
                return Ok(());
            }
            let (tag, name) = parse_command_head(line)
                .map_err(|e| format!("forwarded an unparsable line {shown:?}: {}", e.reason))?;
            let scope = rules::scope(&name);
            match scope {
                Scope::NotAuthenticated | Scope::Refused(_) => {
                    return Err(format!("forwarded {name} after login: {shown:?}"))
                }
                Scope::Selected if !selected_possible => {
                    return Err(format!(
                        "forwarded {name} with no mailbox selected: {shown:?}"
                    ))
                }
                _ => {}
            }
            if name == "IDLE" {
                model.idle_tags.push(tag.as_str().to_owned());
            }
            Ok(())
        }
    }
}

fn check_state(s: &Session, model: &Model) -> Result<(), String> {
    let label = s.state().label();
    if ![
        "not_authenticated",
        "authenticated",
        "selected",
        "idle",
        "logout",
    ]
    .contains(&label)
    {
        return Err(format!("unknown state label {label}"));
    }
    if s.pending.len() > MAX_PENDING {
        return Err(format!("{} pending commands", s.pending.len()));
    }
    match (s.state().user(), &model.bound) {
        (Some(u), None) => return Err(format!("user {u:?} bound without a login")),
        (Some(u), Some(b)) if u != b => return Err(format!("bound to {u:?}, logged in as {b:?}")),
        _ => {}
    }
    if let State::Idle { tag, .. } = s.state() {
        if !model.idle_tags.iter().any(|t| t == tag.as_str()) {
            return Err(format!("idle for {tag} which was never sent as IDLE"));
        }
    }
    Ok(())
}

/// A gateway-made reply: whole CRLF lines, each starting with `*`, `+` or a tag.
fn check_reply(r: &[u8]) -> Result<(), String> {
    let shown = || String::from_utf8_lossy(r).into_owned();
    if !r.ends_with(b"\r\n") {
        return Err(format!("reply not CRLF-terminated: {:?}", shown()));
    }
    for line in r[..r.len() - 1].split(|&b| b == b'\n') {
        let line = line
            .strip_suffix(b"\r")
            .ok_or_else(|| format!("bare LF in reply: {:?}", shown()))?;
        if line.contains(&b'\r') || line.contains(&0) {
            return Err(format!("CR or NUL inside a reply line: {:?}", shown()));
        }
        let mut words = line.split(|&b| b == b' ');
        let first = words.next().unwrap_or(&[]);
        let second = words.next().unwrap_or(&[]);
        let tagged = !first.is_empty()
            && first.iter().all(|&c| crate::imap::command::is_tag_char(c))
            && [&b"OK"[..], b"NO", b"BAD"].contains(&second);
        if !((first == b"*" && !second.is_empty()) || line.starts_with(b"+") || tagged) {
            return Err(format!(
                "reply line neither untagged, continuation nor tagged status: {:?}",
                shown()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_short_inputs() {
        for data in [&b""[..], b"\x01", b"\xff\xff", b"\x00\x00\x00"] {
            session_case(data).unwrap();
        }
    }

    #[test]
    fn login_select_idle_done_logout() {
        // cleartext, PLAIN; then: table LOGIN a (ok, alice); SELECT; tagged OK; IDLE; `+`;
        // DONE; tagged; LOGOUT; tagged.
        let cmd = |name: &str| COMMANDS.iter().position(|c| c.contains(name)).unwrap() as u8;
        let tag = |t: &str| TAGS.iter().position(|x| *x == t).unwrap() as u8;
        let data = vec![
            0b0000_0101,
            2,
            cmd("LOGIN alice"),
            tag("a"),
            0,
            0,
            0,
            cmd("SELECT INBOX"),
            tag("b"),
            4,
            tag("b"),
            0,
            0,
            cmd("IDLE"),
            tag("c"),
            7,
            0,
            cmd("DONE"),
            0,
            4,
            tag("c"),
            0,
            0,
            cmd("LOGOUT"),
            tag("a"),
            4,
            tag("a"),
            0,
        ];
        let s = run(&data).unwrap().expect("a session");
        assert_eq!(s.state(), &State::Logout);
        // Stopped before the LOGOUT's answer: selected, as alice.
        let s = run(&data[..data.len() - 5]).unwrap().expect("a session");
        assert_eq!(
            s.state(),
            &State::Selected("alice".into(), crate::imap::Mailbox::Inbox)
        );
    }

    #[test]
    fn replies_are_checked() {
        assert!(check_reply(b"a OK done\r\n").is_ok());
        assert!(check_reply(b"* BAD x\r\n+ \r\n").is_ok());
        assert!(check_reply(b"a OK done\r\nforged\r\n").is_err());
        assert!(check_reply(b"a OK done\r\nforged line\r\n").is_err());
        assert!(check_reply(b"a OK do\rne\r\n").is_err());
        assert!(check_reply(b"a OK done\n").is_err());
    }
}
