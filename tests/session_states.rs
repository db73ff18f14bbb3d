//! Issue 4, "Done when" 2 and 3: the session state machine seen from outside, through the
//! built `imapgate` in front of a real Dovecot.
//!
//! Whether a command reached the backend is read from Dovecot's own rawlog
//! (`scripts/dovecot-sandbox --rawlog`): every byte a client sends after login lands in
//! `DIR/rawlog/USER/*.in`, every byte Dovecot answers in `*.out`. So "the gateway refused it"
//! means the gateway's BAD *and* no trace of the tag at Dovecot, and "forwarded" means the
//! tag is in Dovecot's input and the client got Dovecot's tagged answer byte for byte.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::session::with_limits;
use common::{eventually, free_port, gateway_config, Client, Dovecot, Gateway};
use imapgate::session::rules;

/// A gateway in front of `dovecot` with the given `[limits]` overrides.
fn gateway(dovecot: &Dovecot, limits: &[(&str, &str)]) -> Gateway {
    let config = gateway_config(free_port(), dovecot.port(), &dovecot.users_file());
    Gateway::start(&with_limits(&config, limits))
}

// ---------------------------------------------------------------------------------------
// Done when 2: every command of the table, in every state

/// Where a command is valid, written down here from RFC 3501/9051 §6 and the extensions'
/// RFCs, independently of `src/session/rules.rs` (the test checks they agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Valid {
    /// RFC 9051 §6.1 (CAPABILITY, NOOP, LOGOUT) and ID (RFC 2971 §3.1).
    Any,
    /// RFC 9051 §6.2: STARTTLS, AUTHENTICATE, LOGIN.
    BeforeLogin,
    /// RFC 9051 §6.3 and extensions valid there (selected inherits them, §6.4).
    Authenticated,
    /// ENABLE: authenticated state only (RFC 5161 §3.1).
    AuthenticatedOnly,
    /// RFC 9051 §6.4 and extensions that need a mailbox.
    Selected,
    /// Known, but refused in every state by the gateway (COMPRESS, UNAUTHENTICATE).
    Never,
    /// Not in the table: forwarded after login.
    Unknown,
}

impl Valid {
    fn of_rules(scope: rules::Scope) -> Valid {
        match scope {
            rules::Scope::Any => Valid::Any,
            rules::Scope::NotAuthenticated => Valid::BeforeLogin,
            rules::Scope::Authenticated => Valid::Authenticated,
            rules::Scope::AuthenticatedOnly => Valid::AuthenticatedOnly,
            rules::Scope::Selected => Valid::Selected,
            rules::Scope::Refused(_) => Valid::Never,
            rules::Scope::Unknown => Valid::Unknown,
        }
    }
}

/// One command with plausible arguments. `{s}` in `args` becomes the state's letter so
/// mailboxes created in one state do not collide with another's. A `literal` is sent as a
/// synchronizing literal after `args` (the client waits for `+`, as RFC 9051 §4.3 says).
struct Row {
    name: &'static str,
    args: &'static str,
    literal: Option<&'static str>,
    valid: Valid,
}

const fn row(name: &'static str, args: &'static str, valid: Valid) -> Row {
    Row {
        name,
        args,
        literal: None,
        valid,
    }
}

const MESSAGE: &str = "Subject: table\r\nFrom: table@imapgate.test\r\n\r\nhello\r\n";

/// Every command of `rules::KNOWN` plus one unknown one. Order matters within a state
/// (CREATE before RENAME before DELETE).
const ROWS: &[Row] = &[
    row("CAPABILITY", "", Valid::Any),
    row("NOOP", "", Valid::Any),
    row("ID", "(\"name\" \"session_states\")", Valid::Any),
    row("LOGOUT", "", Valid::Any),
    row("STARTTLS", "", Valid::BeforeLogin),
    row("LOGIN", "alice wonderland", Valid::BeforeLogin),
    // "\0alice\0wonderland"
    row(
        "AUTHENTICATE",
        "PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=",
        Valid::BeforeLogin,
    ),
    row("SELECT", "INBOX", Valid::Authenticated),
    row("EXAMINE", "INBOX", Valid::Authenticated),
    row("CREATE", "tbl-{s}", Valid::Authenticated),
    row("RENAME", "tbl-{s} tbl-{s}-2", Valid::Authenticated),
    row("DELETE", "tbl-{s}-2", Valid::Authenticated),
    row("SUBSCRIBE", "INBOX", Valid::Authenticated),
    row("UNSUBSCRIBE", "INBOX", Valid::Authenticated),
    row("LIST", "\"\" \"*\"", Valid::Authenticated),
    row("LSUB", "\"\" \"*\"", Valid::Authenticated),
    row("XLIST", "\"\" \"*\"", Valid::Authenticated),
    row("STATUS", "INBOX (MESSAGES UIDNEXT)", Valid::Authenticated),
    Row {
        name: "APPEND",
        args: "INBOX (\\Seen)",
        literal: Some(MESSAGE),
        valid: Valid::Authenticated,
    },
    row("NAMESPACE", "", Valid::Authenticated),
    row("IDLE", "", Valid::Authenticated),
    row("GETQUOTA", "\"\"", Valid::Authenticated),
    row("GETQUOTAROOT", "INBOX", Valid::Authenticated),
    row("SETQUOTA", "\"\" (STORAGE 1024)", Valid::Authenticated),
    row("GETACL", "INBOX", Valid::Authenticated),
    row("SETACL", "INBOX bob lr", Valid::Authenticated),
    row("DELETEACL", "INBOX bob", Valid::Authenticated),
    row("LISTRIGHTS", "INBOX bob", Valid::Authenticated),
    row("MYRIGHTS", "INBOX", Valid::Authenticated),
    row("GETMETADATA", "\"\" /private/comment", Valid::Authenticated),
    row(
        "SETMETADATA",
        "INBOX (/private/comment \"x\")",
        Valid::Authenticated,
    ),
    row("NOTIFY", "NONE", Valid::Authenticated),
    row("ENABLE", "CONDSTORE", Valid::AuthenticatedOnly),
    row("CHECK", "", Valid::Selected),
    row("CLOSE", "", Valid::Selected),
    row("UNSELECT", "", Valid::Selected),
    row("EXPUNGE", "", Valid::Selected),
    row("SEARCH", "ALL", Valid::Selected),
    row("ESEARCH", "IN (personal) ALL", Valid::Selected),
    row("FETCH", "1 (FLAGS)", Valid::Selected),
    row("STORE", "1 +FLAGS (\\Flagged)", Valid::Selected),
    row("COPY", "1 INBOX", Valid::Selected),
    row("MOVE", "1 INBOX", Valid::Selected),
    row("UID", "FETCH 1:* (FLAGS)", Valid::Selected),
    row("SORT", "(DATE) UTF-8 ALL", Valid::Selected),
    row("THREAD", "REFERENCES UTF-8 ALL", Valid::Selected),
    // RFC 8508; Dovecot 2.3 does not implement it and refuses the line before `+`.
    Row {
        name: "REPLACE",
        args: "1 INBOX",
        literal: Some(MESSAGE),
        valid: Valid::Selected,
    },
    row("COMPRESS", "DEFLATE", Valid::Never),
    row("UNAUTHENTICATE", "", Valid::Never),
    row("XYZZY", "frobnicate", Valid::Unknown),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotAuthenticated,
    Authenticated,
    Selected,
}

impl State {
    fn describe(self) -> &'static str {
        match self {
            State::NotAuthenticated => "not authenticated",
            State::Authenticated => "authenticated",
            State::Selected => "selected",
        }
    }

    /// Tag prefix; unique per state so the rawlog tells the states apart.
    fn letter(self) -> char {
        match self {
            State::NotAuthenticated => 'n',
            State::Authenticated => 'a',
            State::Selected => 's',
        }
    }
}

/// What must happen to a command in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Answered OK by the gateway itself (before login).
    GatewayOk,
    /// The gateway's tagged BAD naming the state; never reaches the backend.
    WrongState,
    /// The gateway's tagged BAD: not supported through the gateway in any state.
    Unsupported,
    /// Forwarded: the backend's own tagged answer.
    Forwarded,
}

fn expect(valid: Valid, state: State) -> Expect {
    use State::*;
    match (valid, state) {
        (Valid::Never, _) => Expect::Unsupported,
        (Valid::Any | Valid::BeforeLogin, NotAuthenticated) => Expect::GatewayOk,
        (_, NotAuthenticated) => Expect::WrongState,
        (Valid::BeforeLogin, _) => Expect::WrongState,
        (Valid::Selected, Authenticated) | (Valid::AuthenticatedOnly, Selected) => {
            Expect::WrongState
        }
        (
            Valid::Any
            | Valid::Authenticated
            | Valid::AuthenticatedOnly
            | Valid::Selected
            | Valid::Unknown,
            _,
        ) => Expect::Forwarded,
    }
}

/// Send one row and return (untagged responses, tagged response).
fn send_row(c: &mut Client, tag: &str, row: &Row, state: State) -> (Vec<String>, String) {
    let args = row.args.replace("{s}", &state.letter().to_string());
    let mut line = format!("{tag} {}", row.name);
    if !args.is_empty() {
        line.push(' ');
        line.push_str(&args);
    }
    let tagged_prefix = format!("{tag} ");
    if let Some(literal) = row.literal {
        c.send(&format!("{line} {{{}}}\r\n", literal.len()));
        // `+` (the gateway's before login, the backend's after), or a tagged refusal, in
        // which case the literal must not be sent.
        let (mut untagged, r) =
            c.expect_response(|r| r.starts_with('+') || r.starts_with(&tagged_prefix));
        if r.starts_with(&tagged_prefix) {
            return (untagged, r);
        }
        c.send(&format!("{literal}\r\n"));
        let (more, tagged) = c.expect_tagged(tag);
        untagged.extend(more);
        return (untagged, tagged);
    }
    c.send(&format!("{line}\r\n"));
    if row.name == "IDLE" {
        let (mut untagged, r) =
            c.expect_response(|r| r.starts_with('+') || r.starts_with(&tagged_prefix));
        if r.starts_with(&tagged_prefix) {
            return (untagged, r);
        }
        untagged.push(r);
        c.send("DONE\r\n");
        let (more, tagged) = c.expect_tagged(tag);
        untagged.extend(more);
        return (untagged, tagged);
    }
    c.expect_tagged(tag)
}

/// Check a refusal's text: the gateway's own words, naming the state.
fn assert_gateway_refusal(tag: &str, row: &Row, state: State, expect: Expect, tagged: &str) {
    let ok = match expect {
        Expect::WrongState => {
            tagged.starts_with(&format!("{tag} BAD {} ", row.name))
                && tagged.ends_with(&format!("session is in {} state", state.describe()))
        }
        Expect::Unsupported => {
            tagged
                == format!(
                    "{tag} BAD {} is not supported through this gateway",
                    row.name
                )
        }
        _ => unreachable!("not a refusal"),
    };
    assert!(
        ok,
        "{} in {} state: expected the gateway's {expect:?} BAD, got {tagged:?}",
        row.name,
        state.describe()
    );
}

/// What a state-changing row needs afterwards so the next row sees the same state.
fn restore(c: &mut Client, row: &Row, state: State, tagged: &str, tag: &str) {
    let ok = tagged.starts_with(&format!("{tag} OK"));
    let fix = match (state, row.name) {
        (State::Authenticated, "SELECT" | "EXAMINE") if ok => Some("UNSELECT"),
        (State::Selected, "EXAMINE" | "CLOSE" | "UNSELECT") => Some("SELECT INBOX"),
        _ => None,
    };
    if let Some(cmd) = fix {
        let rtag = format!("r{tag}");
        c.send(&format!("{rtag} {cmd}\r\n"));
        c.expect_ok(&rtag);
    }
}

/// Done when 2: every command of the session table, in every state, through the real
/// binary before a real Dovecot: either the gateway's BAD naming the state (and Dovecot
/// never saw it), or Dovecot's own answer (and Dovecot saw it).
#[test]
fn every_command_in_every_state() {
    // The test's table covers the gateway's table, and both agree on every command.
    for name in rules::KNOWN {
        assert!(
            ROWS.iter().any(|r| r.name == *name),
            "{name} is in rules::KNOWN but has no row here"
        );
    }
    for r in ROWS {
        assert_eq!(
            Valid::of_rules(rules::scope(r.name)),
            r.valid,
            "{}: src/session/rules.rs and this test disagree",
            r.name
        );
    }

    let dovecot = Dovecot::builder().rawlog().start();
    dovecot.seed("alice", 5, 0);
    // Before login every refusal counts as a bad command; this test sends dozens.
    let gw = gateway(&dovecot, &[("max_bad_commands", "1000")]);
    let port = gw.port();

    // --- not authenticated: the gateway answers everything, the backend is not involved.
    let state = State::NotAuthenticated;
    let mut c = Client::connect(port);
    c.greeting();
    let mut logged_out = Vec::new();
    for (i, row) in ROWS.iter().enumerate() {
        let tag = format!("{}{i:02}", state.letter());
        let e = expect(row.valid, state);
        match row.name {
            // These end or change the session: each on a connection of its own.
            "LOGOUT" => {
                let mut own = Client::connect(port);
                own.greeting();
                own.send(&format!("{tag} LOGOUT\r\n"));
                assert!(own.expect_bye().starts_with("* BYE"));
                own.expect_ok(&tag);
                own.expect_eof();
            }
            "LOGIN" | "AUTHENTICATE" => {
                let mut own = Client::connect(port);
                own.greeting();
                let (_, tagged) = send_row(&mut own, &tag, row, state);
                assert!(
                    tagged.starts_with(&format!("{tag} OK [CAPABILITY ")),
                    "{}: {tagged:?}",
                    row.name
                );
                own.send(&format!("{tag}z LOGOUT\r\n"));
                own.expect_ok(&format!("{tag}z"));
                logged_out.push(format!("{tag}z"));
            }
            "STARTTLS" => {
                // No TLS on this listener: refused by the gateway, which stays usable.
                let (_, tagged) = send_row(&mut c, &tag, row, state);
                assert!(tagged.starts_with(&format!("{tag} BAD ")), "{tagged:?}");
            }
            _ => {
                let (untagged, tagged) = send_row(&mut c, &tag, row, state);
                match e {
                    Expect::GatewayOk => {
                        assert!(tagged.starts_with(&format!("{tag} OK")), "{tagged:?}");
                        if row.name == "ID" {
                            assert!(
                                untagged.iter().any(|u| u.contains("\"imapgate\"")),
                                "ID answered by the gateway: {untagged:?}"
                            );
                        }
                    }
                    _ => assert_gateway_refusal(&tag, row, state, e, &tagged),
                }
            }
        }
    }
    c.send("zn LOGOUT\r\n");
    c.expect_ok("zn");
    // Before login nothing reaches Dovecot: the only post-login sessions it has seen are
    // the LOGIN and AUTHENTICATE rows' own, and each received nothing but its LOGOUT.
    for t in &logged_out {
        dovecot.rawlog_after("alice", t);
    }
    let sessions = dovecot.rawlogs("alice");
    let inputs: Vec<&Vec<String>> = sessions.iter().map(|r| &r.input).collect();
    assert_eq!(sessions.len(), logged_out.len(), "{inputs:?}");
    for r in &sessions {
        assert_eq!(r.input.len(), 1, "{inputs:?}");
        assert!(logged_out.iter().any(|t| r.received(t)), "{inputs:?}");
    }

    // --- authenticated, then selected: one connection each. Every row's outcome by tag,
    // checked against the rawlog after each state.
    let mut outcomes: BTreeMap<String, (State, &Row, Expect, String)> = BTreeMap::new();
    for state in [State::Authenticated, State::Selected] {
        let l = state.letter();
        let mut c = Client::logged_in(port, &format!("{l}login"), "alice", "wonderland");
        if state == State::Selected {
            c.send(&format!("{l}select SELECT INBOX\r\n"));
            c.expect_ok(&format!("{l}select"));
        }
        for (i, row) in ROWS.iter().enumerate() {
            let tag = format!("{l}{i:02}");
            let e = expect(row.valid, state);
            let tagged = if row.name == "LOGOUT" {
                let mut own = Client::logged_in(port, &format!("{l}own"), "alice", "wonderland");
                if state == State::Selected {
                    own.send(&format!("{l}ownsel SELECT INBOX\r\n"));
                    own.expect_ok(&format!("{l}ownsel"));
                }
                own.send(&format!("{tag} LOGOUT\r\n"));
                own.expect_bye();
                let (_, tagged) = own.expect_tagged(&tag);
                own.expect_eof();
                tagged
            } else {
                let (_, tagged) = send_row(&mut c, &tag, row, state);
                restore(&mut c, row, state, &tagged, &tag);
                tagged
            };
            if matches!(e, Expect::WrongState | Expect::Unsupported) {
                assert_gateway_refusal(&tag, row, state, e, &tagged);
            }
            outcomes.insert(tag, (state, row, e, tagged));
        }
        let last = format!("z{l}");
        c.send(&format!("{last} NOOP\r\n"));
        c.expect_ok(&last);
        let rawlog = dovecot.rawlog_after("alice", &last);
        for (tag, (s, row, e, tagged)) in outcomes.iter().filter(|(_, o)| o.0 == state) {
            let what = format!("{} in {} state", row.name, s.describe());
            match e {
                Expect::Forwarded => {
                    assert!(rawlog.received(tag), "{what}: not forwarded to Dovecot");
                    assert_eq!(
                        rawlog.answer(tag),
                        Some(tagged.as_str()),
                        "{what}: the client must get Dovecot's own tagged answer"
                    );
                }
                _ => assert!(
                    !rawlog.received(tag),
                    "{what}: refused by the gateway, yet Dovecot received it"
                ),
            }
        }
    }

    // Unknown commands after login are forwarded and Dovecot refuses them itself.
    for l in ['a', 's'] {
        let (_, _, _, tagged) = outcomes
            .values()
            .find(|o| o.1.name == "XYZZY" && o.0.letter() == l)
            .expect("XYZZY row");
        assert!(
            tagged.contains(" BAD ") && tagged.contains("Unknown command"),
            "Dovecot's BAD for an unknown command: {tagged:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Done when 3

/// Responses read until every tag in `tags` has its tagged answer; returns the tagged
/// answers in arrival order and every untagged response.
fn answers(c: &mut Client, tags: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut tagged = Vec::new();
    let mut untagged = Vec::new();
    while tagged.len() < tags.len() {
        let r = c.response();
        let first = r.split(' ').next().unwrap_or("");
        if tags.contains(&first) {
            assert!(
                !tagged
                    .iter()
                    .any(|t: &String| t.starts_with(&format!("{first} "))),
                "{first} answered twice: {r:?} after {tagged:?}"
            );
            tagged.push(r);
        } else {
            assert!(
                r.starts_with("* ") || r.starts_with('+'),
                "a tagged answer for a tag never sent: {r:?}"
            );
            untagged.push(r);
        }
    }
    (tagged, untagged)
}

fn answer<'a>(tagged: &'a [String], tag: &str) -> &'a str {
    tagged
        .iter()
        .find(|t| t.starts_with(&format!("{tag} ")))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no answer for {tag} in {tagged:?}"))
}

/// Pipelined commands in each state, each written in one piece: every command gets its own
/// tagged answer, state-dependent commands see the state the earlier ones produced, and
/// the backend's answers keep their order.
#[test]
fn pipelined_commands_in_each_state() {
    let dovecot = Dovecot::builder().rawlog().start();
    dovecot.seed("alice", 3, 0);
    let gw = gateway(&dovecot, &[]);

    // Not authenticated, through the login and into selected, in one write: the gateway
    // answers the first two itself and hands the rest to the backend once logged in.
    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send(
        "p1 CAPABILITY\r\np2 NOOP\r\np3 LOGIN alice wonderland\r\n\
         p4 SELECT INBOX\r\np5 FETCH 1 (FLAGS)\r\np6 NOOP\r\n",
    );
    let tags = ["p1", "p2", "p3", "p4", "p5", "p6"];
    let (tagged, untagged) = answers(&mut c, &tags);
    let order: Vec<&str> = tagged.iter().map(|t| &t[..2]).collect();
    assert_eq!(order, tags, "answers in order: {tagged:?}");
    for t in &tagged {
        assert!(t[3..].starts_with("OK"), "{tagged:?}");
    }
    assert!(untagged.iter().any(|u| u.starts_with("* CAPABILITY ")));
    assert!(untagged.contains(&"* 3 EXISTS".to_string()), "{untagged:?}");
    assert!(
        untagged.iter().any(|u| u.starts_with("* 1 FETCH (FLAGS")),
        "{untagged:?}"
    );
    c.send("p7 LOGOUT\r\n");
    c.expect_ok("p7");

    // Authenticated: SELECT then FETCH in one write. FETCH is valid only once SELECT
    // succeeds, so the gateway must forward it rather than refuse it early.
    let mut c = Client::logged_in(gw.port(), "a0", "alice", "wonderland");
    c.send("a1 SELECT INBOX\r\na2 FETCH 1 (FLAGS)\r\na3 NOOP\r\n");
    let (tagged, untagged) = answers(&mut c, &["a1", "a2", "a3"]);
    assert!(answer(&tagged, "a1").starts_with("a1 OK [READ-WRITE]"));
    assert!(answer(&tagged, "a2").starts_with("a2 OK"));
    assert!(answer(&tagged, "a3").starts_with("a3 OK"));
    assert!(untagged.iter().any(|u| u.starts_with("* 1 FETCH (FLAGS")));

    // Selected, IDLE with its DONE in the same write (the client does not wait for `+`):
    // Dovecot takes the DONE as the end of that IDLE, and so must the gateway, or the next
    // command would be swallowed as the DONE.
    c.send("i1 IDLE\r\nDONE\r\ni2 NOOP\r\n");
    let (tagged, untagged) = answers(&mut c, &["i1", "i2"]);
    assert!(answer(&tagged, "i1").starts_with("i1 OK"), "{tagged:?}");
    assert!(answer(&tagged, "i2").starts_with("i2 OK"), "{tagged:?}");
    assert!(untagged.iter().any(|u| u.starts_with("+ ")), "{untagged:?}");

    // Selected: a mix of plain, state-changing and refused commands in one write. ENABLE
    // (authenticated state only) is refused while the session is surely selected, and
    // forwarded once a CLOSE ahead of it may have made it authenticated: the backend runs
    // it after the CLOSE, in authenticated state, and judges it itself.
    c.send(
        "s1 FETCH 1:* (FLAGS)\r\ns2 ENABLE CONDSTORE\r\ns3 STORE 2 +FLAGS (\\Flagged)\r\n\
         s4 CLOSE\r\ns5 ENABLE CONDSTORE\r\ns6 SELECT INBOX\r\ns7 FETCH 2 (FLAGS)\r\n\
         s8 LOGIN alice wonderland\r\ns9 NOOP\r\n",
    );
    let tags = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];
    let (tagged, untagged) = answers(&mut c, &tags);
    for t in ["s1", "s3", "s4", "s5", "s6", "s7", "s9"] {
        assert!(answer(&tagged, t)[3..].starts_with("OK"), "{t}: {tagged:?}");
    }
    assert_eq!(
        answer(&tagged, "s2"),
        "s2 BAD ENABLE only valid in authenticated state (not with a mailbox selected); \
         session is in selected state"
    );
    assert_eq!(
        answer(&tagged, "s8"),
        "s8 BAD LOGIN only valid before login; session is in selected state"
    );
    assert!(
        untagged
            .iter()
            .any(|u| u.starts_with("* 2 FETCH (") && u.contains("\\Flagged")),
        "{untagged:?}"
    );
    let rawlog = dovecot.rawlog_after("alice", "s9");
    for t in ["s1", "s3", "s4", "s5", "s6", "s7", "s9"] {
        assert!(rawlog.received(t), "{t} forwarded");
        assert_eq!(rawlog.answer(t), Some(answer(&tagged, t)));
    }
    assert!(!rawlog.received("s2") && !rawlog.received("s8"));
    c.send("z LOGOUT\r\n");
    c.expect_ok("z");
}

/// IDLE through the gateway: the backend's `+`, then `* N EXISTS` when another session
/// appends, then DONE and the tagged OK; the session is back in selected state.
#[test]
fn idle_receives_exists_when_another_session_appends() {
    let dovecot = Dovecot::start();
    dovecot.seed("alice", 2, 0);
    let gw = gateway(&dovecot, &[]);

    let mut idler = Client::logged_in(gw.port(), "a", "alice", "wonderland");
    idler.send("b SELECT INBOX\r\n");
    let lines = idler.expect_ok("b");
    assert!(lines.contains(&"* 2 EXISTS".to_string()), "{lines:?}");
    idler.send("c IDLE\r\n");
    let (_, plus) = idler.expect_response(|r| r.starts_with('+'));
    assert!(plus.starts_with("+ "), "{plus:?}");

    // A second session through the gateway appends a message.
    let mut other = Client::logged_in(gw.port(), "x", "alice", "wonderland");
    other.send(&format!("y APPEND INBOX {{{}}}\r\n", MESSAGE.len()));
    let (_, plus) = other.expect_response(|r| r.starts_with('+'));
    assert!(plus.starts_with('+'));
    other.send(&format!("{MESSAGE}\r\n"));
    other.expect_ok("y");

    let (_, exists) = idler.expect_response(|r| r.ends_with(" EXISTS"));
    assert_eq!(exists, "* 3 EXISTS");
    idler.send("DONE\r\n");
    idler.expect_ok("c");
    // Selected again: FETCH is forwarded and sees the new message.
    idler.send("d FETCH 3 (FLAGS)\r\n");
    let lines = idler.expect_ok("d");
    assert!(
        lines.iter().any(|l| l.starts_with("* 3 FETCH")),
        "{lines:?}"
    );
    other.send("z LOGOUT\r\n");
    other.expect_ok("z");
    idler.send("z LOGOUT\r\n");
    idler.expect_ok("z");
}

/// A failed SELECT while selected leaves no mailbox selected (RFC 9051 §6.3.2): the
/// gateway follows the backend's NO, and the next FETCH gets the gateway's BAD without
/// reaching the backend. Dovecot, asked directly, agrees that nothing is selected.
#[test]
fn failed_select_while_selected_returns_to_authenticated() {
    let dovecot = Dovecot::builder().rawlog().start();
    dovecot.seed("alice", 2, 0);
    let gw = gateway(&dovecot, &[]);

    let mut c = Client::logged_in(gw.port(), "a", "alice", "wonderland");
    c.send("s1 SELECT INBOX\r\n");
    c.expect_ok("s1");
    c.send("f1 FETCH 1 (FLAGS)\r\n");
    c.expect_ok("f1");
    c.send("s2 SELECT nosuch\r\n");
    c.expect_no("s2");
    c.send("f2 FETCH 1 (FLAGS)\r\n");
    let (untagged, tagged) = c.expect_tagged("f2");
    assert!(untagged.is_empty(), "{untagged:?}");
    assert_eq!(
        tagged,
        "f2 BAD FETCH requires a selected mailbox (SELECT or EXAMINE first); \
         session is in authenticated state"
    );
    // Selecting again works, and FETCH is forwarded again.
    c.send("s3 SELECT INBOX\r\n");
    c.expect_ok("s3");
    c.send("f3 FETCH 1 (FLAGS)\r\n");
    c.expect_ok("f3");

    let rawlog = dovecot.rawlog_after("alice", "f3");
    for tag in ["s1", "f1", "s2", "s3", "f3"] {
        assert!(rawlog.received(tag), "{tag} forwarded");
    }
    assert!(!rawlog.received("f2"), "the refused FETCH reached Dovecot");

    // The same sequence straight to Dovecot: after the failed SELECT it has no mailbox
    // either, so the gateway's state matches the backend's.
    let mut d = Client::logged_in(dovecot.port(), "a", "alice", "wonderland");
    d.send("s1 SELECT INBOX\r\n");
    d.expect_ok("s1");
    d.send("s2 SELECT nosuch\r\n");
    d.expect_no("s2");
    d.send("f2 FETCH 1 (FLAGS)\r\n");
    let (_, tagged) = d.expect_tagged("f2");
    assert!(tagged.starts_with("f2 BAD"), "Dovecot: {tagged:?}");
}

/// A backend BYE (the backend session killed with `doveadm kick`) reaches the client as
/// `* BYE`, and the gateway closes the connection; the gateway keeps serving others.
#[test]
fn backend_bye_closes_the_client() {
    let dovecot = Dovecot::builder().rawlog().start();
    dovecot.seed("alice", 1, 0);
    let gw = gateway(&dovecot, &[]);

    let mut c = Client::logged_in(gw.port(), "a", "alice", "wonderland");
    c.send("b SELECT INBOX\r\n");
    c.expect_ok("b");
    // Wait until Dovecot lists the session, so the kick has something to kick.
    assert!(
        eventually(Duration::from_secs(5), || dovecot
            .doveadm(&["who", "alice"])
            .stdout
            .contains("alice")),
        "doveadm who does not show alice: {}",
        dovecot.doveadm(&["who"]).stderr
    );
    let kick = dovecot.doveadm(&["kick", "alice"]);
    kick.assert_success("doveadm kick");
    let bye = c.expect_bye();
    c.expect_eof();
    // The client got Dovecot's own BYE ("Server shutting down." in 2.3), not a BYE the
    // gateway made up because the backend connection dropped.
    assert!(
        eventually(Duration::from_secs(5), || dovecot
            .rawlog("alice")
            .output
            .contains(&bye)),
        "{bye:?} is not what Dovecot sent: {:?}",
        dovecot.rawlog("alice").output
    );

    let mut again = Client::logged_in(gw.port(), "a", "alice", "wonderland");
    again.send("b NOOP\r\n");
    again.expect_ok("b");
}

/// The not-authenticated timeout is absolute: bytes trickled every 500 ms do not extend
/// it; `* BYE` comes at about `login_timeout_secs` and the connection closes. Once logged
/// in, the login timeout no longer applies.
#[test]
fn login_timeout_is_absolute_and_ends_at_login() {
    let dovecot = Dovecot::start();
    let gw = gateway(&dovecot, &[("login_timeout_secs", "2")]);

    let started = Instant::now();
    let mut c = Client::connect(gw.port());
    c.greeting();
    let mut writer = c.writer();
    let trickle = thread::spawn(move || {
        // "a NOOP\r\n" a byte at a time, then more, until the gateway hangs up.
        for b in b"a NOOP\r\nb NOOP\r\nc NOOP\r\n".iter().cycle().take(40) {
            thread::sleep(Duration::from_millis(500));
            if writer.write_all(&[*b]).is_err() {
                break;
            }
        }
    });
    let before = c.expect_response(|r| r.starts_with("* BYE")).1;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_millis(3500),
        "BYE after {elapsed:?}: {before:?}"
    );
    assert!(c.read_to_eof().is_empty(), "nothing after the BYE");
    trickle.join().expect("trickle thread");

    // Log in within the window, then stay silent past it: still served.
    let mut c = Client::logged_in(gw.port(), "a", "alice", "wonderland");
    thread::sleep(Duration::from_millis(3000));
    c.send("b NOOP\r\n");
    c.expect_ok("b");
}

/// Repeated invalid commands before login end with `* BYE` at `max_bad_commands`.
#[test]
fn too_many_bad_commands_before_login_end_the_connection() {
    let dovecot = Dovecot::start();
    let gw = gateway(&dovecot, &[("max_bad_commands", "3")]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send("a FETCH 1 FLAGS\r\n");
    let (_, t) = c.expect_tagged("a");
    assert!(
        t.starts_with("a BAD FETCH ") && t.ends_with("session is in not authenticated state"),
        "{t:?}"
    );
    c.send("b SELECT INBOX\r\n");
    let (_, t) = c.expect_tagged("b");
    assert!(t.starts_with("b BAD"), "{t:?}");
    c.send("c XYZZY\r\n");
    let (_, t) = c.expect_tagged("c");
    assert!(t.starts_with("c BAD"), "{t:?}");
    let bye = c.expect_bye();
    assert_eq!(bye, "* BYE Too many invalid commands");
    c.expect_eof();
}
