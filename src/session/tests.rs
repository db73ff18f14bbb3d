//! Transcripts (`C:` client, `S:` server) for each arrow of the diagram and
//! each refusal, driven without sockets.

use super::*;
use crate::imap::command::parse_command;

fn policy() -> Policy {
    Policy {
        cleartext_ok: true,
        starttls_available: true,
        mechanisms: vec![Mechanism::Plain, Mechanism::Login],
        max_bad_commands: 3,
    }
}

/// Feed a pre-login command line, return what the gateway wrote.
fn c(s: &mut Session, line: &str) -> (String, Vec<Action>) {
    let actions = if s.in_sasl() {
        s.sasl_response(line.as_bytes())
    } else {
        s.command(parse_command(line.as_bytes()))
    };
    (written(&actions), actions)
}

fn written(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn logged_in(user: &str) -> Session {
    let mut s = Session::new(policy());
    let (_, actions) = c(&mut s, "a1 LOGIN alice wonderland\r\n");
    assert!(matches!(actions[0], Action::Login(_)));
    s.login_finished(Ok((
        user.into(),
        vec!["IMAP4rev1".into(), "IDLE".into(), "COMPRESS=DEFLATE".into()],
    )));
    s
}

#[test]
fn arrow1_ok_greeting_lists_capabilities() {
    let s = Session::new(policy());
    let g = String::from_utf8(s.greeting("imapgate ready")).unwrap();
    assert!(
        g.starts_with("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=LOGIN SASL-IR"),
        "{g}"
    );
}

#[test]
fn arrow3_bye_greeting() {
    assert_eq!(
        Session::bye_greeting(Some("UNAVAILABLE"), "Too busy"),
        b"* BYE [UNAVAILABLE] Too busy\r\n"
    );
}

#[test]
fn arrow4_login_then_capabilities_in_ok() {
    let mut s = Session::new(policy());
    // C: a1 LOGIN alice wonderland
    let (out, actions) = c(&mut s, "a1 LOGIN alice wonderland\r\n");
    assert_eq!(out, "");
    match &actions[0] {
        Action::Login(r) => {
            assert_eq!(r.username, "alice");
            assert!(r.password.ct_eq(b"wonderland"));
        }
        a => panic!("{a:?}"),
    }
    let actions = s.login_finished(Ok((
        "alice".into(),
        vec!["IMAP4rev1".into(), "COMPRESS=DEFLATE".into(), "IDLE".into()],
    )));
    // S: a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in
    assert_eq!(
        written(&actions),
        "a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
    );
    assert!(actions.contains(&Action::Transition(Arrow::Login)));
    assert_eq!(s.state().label(), "authenticated");
}

#[test]
fn arrow4_authenticate_plain_with_and_without_ir() {
    let mut s = Session::new(policy());
    // "\0alice\0wonderland"
    let (out, actions) = c(&mut s, "a AUTHENTICATE PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\n");
    assert_eq!(out, "");
    assert!(
        matches!(&actions[0], Action::Login(r) if r.username == "alice" && r.mechanism == "PLAIN")
    );

    let mut s = Session::new(policy());
    let (out, _) = c(&mut s, "a AUTHENTICATE PLAIN\r\n");
    assert_eq!(out, "+ \r\n");
    let (_, actions) = c(&mut s, "AGFsaWNlAHdvbmRlcmxhbmQ=\r\n");
    assert!(matches!(&actions[0], Action::Login(r) if r.password.ct_eq(b"wonderland")));
}

#[test]
fn authenticate_login_mechanism_and_cancel() {
    let mut s = Session::new(policy());
    assert_eq!(
        c(&mut s, "a AUTHENTICATE LOGIN\r\n").0,
        "+ VXNlcm5hbWU6\r\n"
    );
    assert_eq!(c(&mut s, "YWxpY2U=\r\n").0, "+ UGFzc3dvcmQ6\r\n");
    let (_, actions) = c(&mut s, "d29uZGVybGFuZA==\r\n");
    assert!(
        matches!(&actions[0], Action::Login(r) if r.username == "alice" && r.password.ct_eq(b"wonderland"))
    );

    let mut s = Session::new(policy());
    c(&mut s, "b AUTHENTICATE PLAIN\r\n");
    assert_eq!(c(&mut s, "*\r\n").0, "b BAD AUTHENTICATE cancelled\r\n");
    assert_eq!(s.state(), &State::NotAuthenticated);
    c(&mut s, "b AUTHENTICATE PLAIN\r\n");
    assert_eq!(
        c(&mut s, "!!!\r\n").0,
        "b BAD Invalid base64 in authentication response\r\n"
    );
}

#[test]
fn plain_authzid_goes_to_the_relay_and_its_refusal_is_authorizationfailed() {
    let mut s = Session::new(policy());
    // "bob\0alice\0wonderland": alice asks to act as bob.
    let (out, actions) = c(
        &mut s,
        "a AUTHENTICATE PLAIN Ym9iAGFsaWNlAHdvbmRlcmxhbmQ=\r\n",
    );
    assert_eq!(out, "");
    assert!(
        matches!(&actions[0], Action::Login(r) if r.username == "alice" && r.authzid.as_deref() == Some("bob")),
        "{actions:?}"
    );
    let actions = s.login_finished::<Vec<String>>(Err(LoginFailure::Authorization));
    assert_eq!(
        written(&actions),
        "a NO [AUTHORIZATIONFAILED] Not authorized to act as that user\r\n"
    );
    assert_eq!(s.state(), &State::NotAuthenticated);

    // The same name twice is no request to act as anyone else.
    let (_, actions) = c(
        &mut s,
        "b AUTHENTICATE PLAIN YWxpY2UAYWxpY2UAd29uZGVybGFuZA==\r\n",
    );
    assert!(matches!(&actions[0], Action::Login(r) if r.authzid.is_none()));
}

#[test]
fn failed_login_stays_not_authenticated() {
    let mut s = Session::new(policy());
    c(&mut s, "a1 LOGIN alice wrong\r\n");
    let actions = s.login_finished::<Vec<String>>(Err(LoginFailure::BadCredentials));
    assert_eq!(
        written(&actions),
        "a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    );
    assert_eq!(s.state(), &State::NotAuthenticated);
    c(&mut s, "a2 LOGIN alice x\r\n");
    let actions = s.login_finished::<Vec<String>>(Err(LoginFailure::Unavailable(
        "Backend unavailable".into(),
    )));
    assert_eq!(
        written(&actions),
        "a2 NO [UNAVAILABLE] Backend unavailable\r\n"
    );
}

#[test]
fn refusal_privacy_required() {
    let mut s = Session::new(Policy {
        cleartext_ok: false,
        ..policy()
    });
    let g = String::from_utf8(s.greeting("hi")).unwrap();
    assert!(g.contains("LOGINDISABLED") && !g.contains("AUTH="), "{g}");
    let (out, _) = c(&mut s, "a LOGIN alice wonderland\r\n");
    assert!(out.starts_with("a NO [PRIVACYREQUIRED]"), "{out}");
    let (out, _) = c(&mut s, "b AUTHENTICATE PLAIN\r\n");
    assert!(out.starts_with("b NO [PRIVACYREQUIRED]"), "{out}");
    let (out, actions) = c(&mut s, "c STARTTLS\r\n");
    assert_eq!(out, "c OK Begin TLS negotiation now\r\n");
    assert_eq!(actions.last(), Some(&Action::StartTls));
    s.tls_established();
    let (out, _) = c(&mut s, "d STARTTLS\r\n");
    assert!(out.starts_with("d BAD"), "{out}");
    let (out, actions) = c(&mut s, "e LOGIN alice wonderland\r\n");
    assert_eq!(out, "");
    assert!(matches!(actions[0], Action::Login(_)));
}

#[test]
fn refusal_wrong_state_before_login_and_bye_after_too_many() {
    let mut s = Session::new(policy());
    assert_eq!(
        c(&mut s, "a SELECT INBOX\r\n").0,
        "a BAD SELECT requires login; session is in not authenticated state\r\n"
    );
    assert_eq!(
        c(&mut s, "garbage\r\n").0,
        "garbage BAD expected SP after tag\r\n"
    );
    let (out, actions) = c(&mut s, "b FETCH 1 FLAGS\r\n");
    assert!(
        out.ends_with("* BYE Too many invalid commands\r\n"),
        "{out}"
    );
    assert!(actions.contains(&Action::Close));
    assert_eq!(s.state(), &State::Logout);
}

#[test]
fn arrow7_logout_before_login() {
    let mut s = Session::new(policy());
    let (out, actions) = c(&mut s, "a LOGOUT\r\n");
    assert_eq!(out, "* BYE Logging out\r\na OK LOGOUT completed\r\n");
    assert!(actions.contains(&Action::Transition(Arrow::Logout)));
    assert!(actions.contains(&Action::Close));
}

#[test]
fn noop_capability_id_answered_locally() {
    let mut s = Session::new(policy());
    assert_eq!(c(&mut s, "a NOOP\r\n").0, "a OK NOOP completed\r\n");
    assert!(c(&mut s, "b CAPABILITY\r\n")
        .0
        .starts_with("* CAPABILITY IMAP4rev1"));
    let (out, _) = c(&mut s, "c ID (\"name\" \"mutt\")\r\n");
    assert!(out.starts_with("* ID (\"name\" \"imapgate\""), "{out}");
    assert_eq!(
        s.client_id(),
        &Some(vec![(b"name".to_vec(), Some(b"mutt".to_vec()))])
    );
}

#[test]
fn arrow5_select_follows_backend_ok() {
    let mut s = logged_in("alice");
    // C: s1 SELECT INBOX  (forwarded)
    assert_eq!(
        s.client_command(b"s1 SELECT INBOX\r\n", false),
        Verdict::Forward
    );
    assert_eq!(s.state().label(), "authenticated");
    // S: s1 OK [READ-WRITE] SELECT completed
    assert_eq!(
        s.backend_tagged("s1", Status::Ok),
        (Some(Arrow::Select), false)
    );
    assert_eq!(s.state(), &State::Selected("alice".into(), Mailbox::Inbox));
}

#[test]
fn arrow6_close_unselect_and_failed_select() {
    let mut s = logged_in("alice");
    s.client_command(b"s1 SELECT INBOX\r\n", false);
    s.backend_tagged("s1", Status::Ok);
    s.client_command(b"c1 CLOSE\r\n", false);
    assert_eq!(s.backend_tagged("c1", Status::Ok).0, Some(Arrow::Deselect));
    assert_eq!(s.state().label(), "authenticated");

    s.client_command(b"s2 EXAMINE INBOX\r\n", false);
    s.backend_tagged("s2", Status::Ok);
    s.client_command(b"u1 UNSELECT\r\n", false);
    assert_eq!(s.backend_tagged("u1", Status::Ok).0, Some(Arrow::Deselect));

    // A failed SELECT while selected returns to authenticated (RFC 9051 §6.3.2)...
    s.client_command(b"s3 SELECT INBOX\r\n", false);
    s.backend_tagged("s3", Status::Ok);
    s.client_command(b"s4 SELECT nosuch\r\n", false);
    assert_eq!(s.backend_tagged("s4", Status::No).0, Some(Arrow::Deselect));
    assert_eq!(s.state().label(), "authenticated");
    // ...and the next FETCH is the gateway's BAD, not forwarded.
    match s.client_command(b"f1 FETCH 1 FLAGS\r\n", false) {
        Verdict::Refuse { reply: r, .. } => assert_eq!(
            String::from_utf8(r).unwrap(),
            "f1 BAD FETCH requires a selected mailbox (SELECT or EXAMINE first); session is in authenticated state\r\n"
        ),
        v => panic!("{v:?}"),
    }
}

#[test]
fn arrow6_unsolicited_closed_code() {
    let mut s = logged_in("alice");
    s.client_command(b"s1 SELECT INBOX\r\n", false);
    s.backend_tagged("s1", Status::Ok);
    // C: s2 SELECT Archive   S: * OK [CLOSED] Previous mailbox closed.
    s.client_command(b"s2 SELECT Archive\r\n", false);
    assert_eq!(s.backend_mailbox_closed(), Some(Arrow::Deselect));
    assert_eq!(s.state().label(), "authenticated");
    // S: s2 OK [READ-WRITE] Select completed.
    assert_eq!(s.backend_tagged("s2", Status::Ok).0, Some(Arrow::Select));
    assert_eq!(
        s.state(),
        &State::Selected("alice".into(), Mailbox::Other(b"Archive".to_vec()))
    );
    assert_eq!(s.backend_mailbox_closed(), Some(Arrow::Deselect));
    assert_eq!(s.backend_mailbox_closed(), None);
}

#[test]
fn pipelined_select_then_fetch_is_forwarded() {
    let mut s = logged_in("alice");
    assert_eq!(
        s.client_command(b"s1 SELECT INBOX\r\n", false),
        Verdict::Forward
    );
    assert_eq!(
        s.client_command(b"f1 FETCH 1 FLAGS\r\n", false),
        Verdict::Forward
    );
    assert_eq!(s.client_command(b"n1 NOOP\r\n", false), Verdict::Forward);
    assert_eq!(s.backend_tagged("n1", Status::Ok).0, None);
    assert_eq!(s.backend_tagged("f1", Status::Ok).0, None);
    assert_eq!(s.backend_tagged("s1", Status::Ok).0, Some(Arrow::Select));
}

#[test]
fn refusals_after_login() {
    let mut s = logged_in("alice");
    for (line, expect) in [
        ("a LOGIN x y\r\n", "a BAD LOGIN only valid before login; session is in authenticated state\r\n"),
        ("b STARTTLS\r\n", "b BAD STARTTLS only valid before login; session is in authenticated state\r\n"),
        ("c COMPRESS DEFLATE\r\n", "c BAD COMPRESS is not supported through this gateway\r\n"),
        ("d UNAUTHENTICATE\r\n", "d BAD UNAUTHENTICATE is not supported through this gateway\r\n"),
        ("e FETCH 1 FLAGS\r\n", "e BAD FETCH requires a selected mailbox (SELECT or EXAMINE first); session is in authenticated state\r\n"),
    ] {
        match s.client_command(line.as_bytes(), false) {
            Verdict::Refuse { reply: r, .. } => assert_eq!(String::from_utf8(r).unwrap(), expect),
            v => panic!("{line}: {v:?}"),
        }
    }
    assert_eq!(
        s.client_command(b"x XUNKNOWN foo\r\n", false),
        Verdict::Forward
    );
}

#[test]
fn idle_and_done() {
    let mut s = logged_in("alice");
    s.client_command(b"i1 IDLE\r\n", false);
    s.backend_continuation();
    assert_eq!(s.state().label(), "idle");
    assert_eq!(s.client_command(b"DONE\r\n", false), Verdict::Forward);
    s.backend_tagged("i1", Status::Ok);
    assert_eq!(s.state().label(), "authenticated");
}

#[test]
fn refused_sync_literal_is_reported() {
    let mut s = logged_in("alice");
    s.client_command(b"a1 APPEND INBOX {99999}\r\n", true);
    assert_eq!(s.backend_tagged("a1", Status::No), (None, true));
    s.client_command(b"a2 APPEND INBOX {5}\r\n", true);
    s.backend_continuation();
    s.client_literal_data();
    assert_eq!(s.backend_tagged("a2", Status::Ok), (None, false));
}

#[test]
fn arrow7_logout_and_backend_bye() {
    let mut s = logged_in("alice");
    s.client_command(b"l LOGOUT\r\n", false);
    assert_eq!(s.backend_bye(), Some(Arrow::Logout));
    assert_eq!(s.backend_tagged("l", Status::Ok).0, None);
    assert_eq!(s.state(), &State::Logout);

    let mut s = logged_in("alice");
    assert_eq!(s.backend_bye(), Some(Arrow::Logout));
}

#[test]
fn arrow2_preauth_greeting_starts_authenticated() {
    let mut s = Session::new(policy());
    let greeting = s.preauth_greeting(
        "alice".into(),
        &["IMAP4rev1".into(), "IDLE".into(), "COMPRESS=DEFLATE".into()],
    );
    // S: * PREAUTH [CAPABILITY IMAP4rev1 IDLE] Logged in as alice
    assert_eq!(
        String::from_utf8(greeting).unwrap(),
        "* PREAUTH [CAPABILITY IMAP4rev1 IDLE] Logged in as alice\r\n"
    );
    assert_eq!(s.state(), &State::Authenticated("alice".into()));
    // C: a LOGIN alice wonderland  -> S: a BAD ... (already authenticated)
    match s.client_command(b"a LOGIN alice wonderland\r\n", false) {
        Verdict::Refuse { reply, reason } => {
            assert_eq!(
                String::from_utf8(reply).unwrap(),
                "a BAD LOGIN only valid before login; session is in authenticated state\r\n"
            );
            assert_eq!(reason, "wrong_state");
        }
        v => panic!("{v:?}"),
    }
    assert_eq!(
        s.client_command(b"b SELECT INBOX\r\n", false),
        Verdict::Forward
    );
}

#[test]
fn arrow5_examine_and_failed_select_while_authenticated() {
    let mut s = logged_in("alice");
    // C: e1 EXAMINE INBOX / S: e1 OK [READ-ONLY]
    s.client_command(b"e1 EXAMINE INBOX\r\n", false);
    assert_eq!(s.backend_tagged("e1", Status::Ok).0, Some(Arrow::Select));
    assert_eq!(s.state().label(), "selected");
    // A failed SELECT from authenticated state takes no arrow.
    let mut s = logged_in("alice");
    s.client_command(b"s1 SELECT nosuch\r\n", false);
    assert_eq!(s.backend_tagged("s1", Status::No).0, None);
    assert_eq!(s.state(), &State::Authenticated("alice".into()));
}

#[test]
fn arrow6_close_refused_by_backend_stays_selected() {
    let mut s = logged_in("alice");
    s.client_command(b"s1 SELECT INBOX\r\n", false);
    s.backend_tagged("s1", Status::Ok);
    // C: c1 CLOSE / S: c1 NO ... : still selected.
    s.client_command(b"c1 CLOSE\r\n", false);
    assert_eq!(s.backend_tagged("c1", Status::No).0, None);
    assert_eq!(s.state().label(), "selected");
}

#[test]
fn arrow7_connection_closed_in_each_state() {
    // Closed before login.
    let mut s = Session::new(policy());
    assert_eq!(s.closed(), Some(Arrow::Logout));
    assert_eq!(s.state(), &State::Logout);
    // Closed while selected; the arrow is taken once.
    let mut s = logged_in("alice");
    s.client_command(b"s1 SELECT INBOX\r\n", false);
    s.backend_tagged("s1", Status::Ok);
    assert_eq!(s.closed(), Some(Arrow::Logout));
    assert_eq!(s.closed(), None);
    // After LOGOUT completed, closing takes no second arrow.
    let mut s = logged_in("alice");
    s.client_command(b"l LOGOUT\r\n", false);
    assert_eq!(s.backend_tagged("l", Status::Ok).0, Some(Arrow::Logout));
    assert_eq!(s.closed(), None);
}

#[test]
fn refusal_compress_unauthenticate_and_unknown_before_login() {
    let mut s = Session::new(Policy {
        max_bad_commands: 10,
        ..policy()
    });
    // C: a COMPRESS DEFLATE / S: a BAD COMPRESS is not supported through this gateway
    let (out, actions) = c(&mut s, "a COMPRESS DEFLATE\r\n");
    assert_eq!(
        out,
        "a BAD COMPRESS is not supported through this gateway\r\n"
    );
    assert!(actions.contains(&Action::Refused("wrong_state")));
    assert_eq!(
        c(&mut s, "b UNAUTHENTICATE\r\n").0,
        "b BAD UNAUTHENTICATE is not supported through this gateway\r\n"
    );
    // Unknown commands are refused before login (forwarded only after it).
    assert_eq!(
        c(&mut s, "c XYZZY frob\r\n").0,
        "c BAD XYZZY is unknown or requires login; session is in not authenticated state\r\n"
    );
    assert_eq!(s.state(), &State::NotAuthenticated);
}

#[test]
fn refusal_enable_while_selected_but_not_behind_a_close() {
    let mut s = logged_in("alice");
    // Authenticated: ENABLE is forwarded.
    assert_eq!(
        s.client_command(b"n1 ENABLE CONDSTORE\r\n", false),
        Verdict::Forward
    );
    s.backend_tagged("n1", Status::Ok);
    s.client_command(b"s1 SELECT INBOX\r\n", false);
    s.backend_tagged("s1", Status::Ok);
    // Selected: refused (RFC 5161 §3.1).
    match s.client_command(b"n2 ENABLE CONDSTORE\r\n", false) {
        Verdict::Refuse { reply, reason } => {
            assert_eq!(
                String::from_utf8(reply).unwrap(),
                "n2 BAD ENABLE only valid in authenticated state (not with a mailbox selected); \
                 session is in selected state\r\n"
            );
            assert_eq!(reason, "wrong_state");
        }
        v => panic!("{v:?}"),
    }
    // Pipelined behind a CLOSE, the backend will run it in authenticated state.
    s.client_command(b"c1 CLOSE\r\n", false);
    assert_eq!(
        s.client_command(b"n3 ENABLE CONDSTORE\r\n", false),
        Verdict::Forward
    );
}

#[test]
fn refusal_starttls_when_not_offered_and_unsupported_mechanism() {
    let mut s = Session::new(Policy {
        starttls_available: false,
        ..policy()
    });
    assert_eq!(
        c(&mut s, "a STARTTLS\r\n").0,
        "a BAD STARTTLS is not available on this connection\r\n"
    );
    let (out, _) = c(&mut s, "b AUTHENTICATE CRAM-MD5\r\n");
    assert!(
        out.starts_with("b NO Unsupported authentication mechanism"),
        "{out}"
    );
    assert_eq!(s.state(), &State::NotAuthenticated);
}

#[test]
fn authenticate_cancel_with_login_mechanism_then_login_works() {
    let mut s = Session::new(policy());
    // C: a AUTHENTICATE LOGIN / S: + VXNlcm5hbWU6 / C: YWxpY2U= / S: + UGFzc3dvcmQ6 / C: *
    c(&mut s, "a AUTHENTICATE LOGIN\r\n");
    c(&mut s, "YWxpY2U=\r\n");
    let (out, actions) = c(&mut s, "*\r\n");
    assert_eq!(out, "a BAD AUTHENTICATE cancelled\r\n");
    assert!(actions.contains(&Action::Refused("auth_cancelled")));
    assert!(!s.in_sasl());
    // The session is usable again.
    let (_, actions) = c(&mut s, "b LOGIN alice wonderland\r\n");
    assert!(matches!(actions[0], Action::Login(_)));
}

#[test]
fn idle_done_pipelined_before_the_continuation() {
    let mut s = logged_in("alice");
    s.client_command(b"s1 SELECT INBOX\r\n", false);
    s.backend_tagged("s1", Status::Ok);
    // C: i1 IDLE / C: DONE / C: n1 NOOP  (one write, before the backend's `+`)
    assert_eq!(s.client_command(b"i1 IDLE\r\n", false), Verdict::Forward);
    assert_eq!(s.client_command(b"DONE\r\n", false), Verdict::Forward);
    assert_eq!(s.client_command(b"n1 NOOP\r\n", false), Verdict::Forward);
    // S: + idling  (the DONE is already on its way)
    s.backend_continuation();
    assert!(matches!(s.state(), State::Idle { done: true, .. }));
    // S: i1 OK Idle completed
    s.backend_tagged("i1", Status::Ok);
    assert_eq!(s.state().label(), "selected");
    // A later IDLE waits for its own DONE again.
    s.client_command(b"i2 IDLE\r\n", false);
    s.backend_continuation();
    assert!(matches!(s.state(), State::Idle { done: false, .. }));
}
