//! Issue 11, backend side: backends that break the protocol, vanish or stall, in front of
//! the built `imapgate`. A real Dovecot plays the backend where it can misbehave on demand
//! (a message body that looks like responses, text it echoes back, being stopped); a
//! scripted peer ([`EvilBackend`]) plays the rest.
//!
//! One gateway serves two kinds of user: `alice` and `bob` are routed to Dovecot, `mallory`
//! to the scripted backend (passwd-file `host=`/`port=`). In every test a Dovecot session
//! is open before the fault and must work after it, so "the gateway's other sessions are
//! untouched" is checked each time; and the faulty session must end with a clear
//! `* BYE` or `NO [UNAVAILABLE]` (or, where a BYE cannot be framed, a close), never an OK
//! the backend did not send.

mod common;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::evil_backend::{EvilBackend, Peer, CAPS};
use common::procstat;
use common::session::with_limits;
use common::{eventually, free_port, tempdir, toml_str, Client, Dovecot, Gateway};
use tempfile::TempDir;

/// mallory's password: the tests look for it in what the scripted backend received.
const MALLORY_PASSWORD: &str = "m4llory-Secret";

/// A Dovecot, a scripted backend, and a gateway in front of both.
struct Rig {
    dovecot: Dovecot,
    evil: EvilBackend,
    gw: Gateway,
    _users: TempDir,
}

/// Options for [`rig`].
#[derive(Default)]
struct RigOptions {
    /// Extra lines for the scripted backend's `[[backend]]` table (e.g. `tls = "starttls"`).
    evil_backend: &'static str,
    /// `[limits]` overrides.
    limits: Vec<(&'static str, &'static str)>,
}

fn users_file(dir: &TempDir, dovecot: u16, evil: u16) -> PathBuf {
    let path = dir.path().join("users");
    let route = |port: u16| format!("::::::host=127.0.0.1 port={port}");
    std::fs::write(
        &path,
        format!(
            "alice:{{PLAIN}}wonderland{}\nbob:{{PLAIN}}builder{}\nmallory:{{PLAIN}}{MALLORY_PASSWORD}{}\n",
            route(dovecot),
            route(dovecot),
            route(evil)
        ),
    )
    .expect("write users");
    path
}

fn rig_with(script: impl Fn(Peer) + Send + Sync + 'static, opts: RigOptions) -> Rig {
    let dovecot = Dovecot::start();
    let evil = EvilBackend::start(script);
    let dir = tempdir("imapgate-hostile-backend-");
    let users = users_file(&dir, dovecot.port(), evil.port());
    let config = format!(
        r#"[[listener]]
name = "imap"
address = "127.0.0.1:{listen}"

[[backend]]
name = "dovecot"
address = "127.0.0.1:{dovecot}"

[[backend]]
name = "evil"
address = "127.0.0.1:{evil}"
{evil_extra}

[[passdb]]
type = "passwd-file"
path = {users}

[limits]
login_timeout_secs = 60
backend_connect_timeout_secs = 2
backend_login_timeout_secs = 2

[health]
interval_secs = 0

[log]
level = "debug"
format = "text"
"#,
        listen = free_port(),
        dovecot = dovecot.port(),
        evil = evil.port(),
        evil_extra = opts.evil_backend,
        users = toml_str(users.to_str().expect("utf-8 path")),
    );
    let gw = Gateway::start(&with_limits(&config, &opts.limits));
    Rig {
        dovecot,
        evil,
        gw,
        _users: dir,
    }
}

fn rig(script: impl Fn(Peer) + Send + Sync + 'static) -> Rig {
    rig_with(script, RigOptions::default())
}

impl Rig {
    /// A Dovecot session, selected, opened before the fault.
    fn bystander(&self) -> Client {
        let mut c = Client::logged_in(self.gw.port(), "b1", "bob", "builder");
        c.send("b2 SELECT INBOX\r\n");
        c.expect_ok("b2");
        c
    }

    /// mallory logs in through the gateway to the scripted backend.
    fn mallory(&self) -> Client {
        Client::logged_in(self.gw.port(), "m1", "mallory", MALLORY_PASSWORD)
    }

    /// mallory's LOGIN fails: the tagged answer, asserted `NO [UNAVAILABLE]`.
    fn mallory_unavailable(&self) -> String {
        let mut c = Client::connect(self.gw.port());
        c.set_timeout(Duration::from_secs(15));
        c.greeting();
        c.send(&format!("m1 LOGIN mallory {MALLORY_PASSWORD}\r\n"));
        let (untagged, tagged) = c.expect_tagged("m1");
        assert!(
            tagged.starts_with("m1 NO [UNAVAILABLE]"),
            "expected NO [UNAVAILABLE], got {tagged:?} after {untagged:?}"
        );
        // Still not authenticated: the session is usable, nothing was bound.
        c.send("m2 SELECT INBOX\r\n");
        let (_, r) = c.expect_tagged("m2");
        assert!(r.starts_with("m2 BAD"), "{r:?}");
        tagged
    }

    /// The bystander still works, and so does a new Dovecot session.
    fn assert_untouched(&self, bystander: &mut Client) {
        bystander.send("b3 NOOP\r\n");
        bystander.expect_ok("b3");
        bystander.send("b4 UID FETCH 1:* FLAGS\r\n");
        bystander.expect_ok("b4");
        let mut c = Client::logged_in(self.gw.port(), "n1", "alice", "wonderland");
        c.send("n2 SELECT INBOX\r\n");
        c.expect_ok("n2");
        c.send("n3 LOGOUT\r\n");
        c.expect_ok("n3");
    }

    /// The gateway's log shows it dropped its side of the scripted connection.
    fn gateway_log(&self) -> String {
        self.gw.log()
    }
}

/// Read all remaining lines until the gateway closes; panics if it does not within the
/// client's timeout.
fn until_close(c: &mut Client) -> Vec<String> {
    c.read_to_eof()
}

/// No line read from a faulty session may be a tagged OK for `tag`.
fn assert_no_ok(lines: &[String], tag: &str) {
    let ok = format!("{tag} OK");
    assert!(
        !lines.iter().any(|l| l.starts_with(&ok)),
        "fake OK for {tag}: {lines:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Connection lost

/// The backend closes halfway through a FETCH literal. A BYE cannot be framed inside the
/// literal (the client would take it for message data), and padding it would hand the
/// client a corrupt message, so the gateway closes the connection: the client sees a
/// truncated literal and EOF, never the tagged OK.
#[test]
fn backend_closes_mid_literal_during_fetch() {
    let rig = rig(|mut p| {
        p.greet_and_accept_login();
        if p.serve_until(|c| c.contains("FETCH")).is_some() {
            p.send("* 1 FETCH (BODY[] {1000}\r\n");
            p.send(&"x".repeat(300));
            thread::sleep(Duration::from_millis(200));
            p.close();
        }
    });
    let mut by = rig.bystander();
    let mut c = rig.mallory();
    c.send("m2 SELECT INBOX\r\n");
    c.expect_ok("m2");
    c.send("m3 FETCH 1 BODY[]\r\n");
    let head = c.line();
    assert_eq!(head, "* 1 FETCH (BODY[] {1000}");
    let rest = until_close(&mut c);
    assert_no_ok(&rest, "m3");
    let got: usize = rest.iter().map(String::len).sum();
    assert!(
        got <= 300,
        "more literal bytes than the backend sent: {got}"
    );
    rig.assert_untouched(&mut by);
}

/// The backend closes halfway through an APPEND literal it accepted: the client gets
/// `* BYE [UNAVAILABLE]` (the backend stream is at a response boundary), then EOF; never the
/// APPEND's OK.
#[test]
fn backend_closes_mid_literal_during_append() {
    let rig = rig_partial_append();
    let mut by = rig.bystander();
    let mut c = rig.mallory();
    // More than the socket buffers between client, gateway and backend hold.
    let size = 48 << 20;
    c.send(&format!("m2 APPEND INBOX {{{size}}}\r\n"));
    let plus = c.line();
    assert!(plus.starts_with('+'), "{plus:?}");
    // Send the literal from a thread (the gateway may stop taking it).
    let mut w = c.writer();
    let writer = thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b'a'; 16 * 1024];
        let mut sent = 0;
        while sent < size {
            if w.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let lines = until_close(&mut c);
    writer.join().expect("writer");
    assert_no_ok(&lines, "m2");
    assert!(
        lines.iter().any(|l| l.starts_with("* BYE [UNAVAILABLE]")),
        "no BYE: {lines:?}"
    );
    rig.assert_untouched(&mut by);
}

/// A scripted backend that accepts an APPEND literal, reads 20 KB of it, stops reading,
/// and closes a second later (with the gateway holding literal bytes it cannot deliver).
fn rig_partial_append() -> Rig {
    rig(|mut p| {
        p.greet_and_accept_login();
        loop {
            let Some(line) = p.line() else { return };
            let line = String::from_utf8_lossy(&line).into_owned();
            let tag = line.split(' ').next().unwrap_or("").to_string();
            if line.contains("APPEND") {
                p.send("+ go ahead\r\n");
                let _ = p.bytes(20 * 1024);
                // Stop reading until every buffer on the way is full (the gateway holds
                // literal bytes it cannot deliver), then vanish.
                thread::sleep(Duration::from_secs(1));
                p.close();
                return;
            }
            p.send(&format!("{tag} OK done\r\n"));
        }
    })
}

// ---------------------------------------------------------------------------------------
// Broken protocol

/// Garbage instead of a response line, a line over the limit, a literal over the limit:
/// each ends the session with `* BYE [UNAVAILABLE] Backend protocol error` (the backend
/// stream is at a response boundary), never an OK for the command in flight.
#[test]
fn backend_sends_garbage() {
    const GARBAGE: &[&[u8]] = &[
        b"\x00\x01\x02 \xff\xfe garbage\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
        b"m3 MAYBE sure\r\n",
        b"* 1 FETCH (BODY[] {99999999999999}\r\n",
    ];
    let rig = rig(|mut p| {
        p.greet_and_accept_login();
        if p.serve_until(|c| c.contains("NOOP")).is_some() {
            match p.index {
                i if i < GARBAGE.len() => p.send_bytes(GARBAGE[i]),
                // A line longer than the gateway's max_line_length (64 KiB).
                _ => p.send(&format!("* OK {}\r\n", "z".repeat(100 * 1024))),
            }
            p.hold(Duration::from_secs(20));
        }
    });
    let mut by = rig.bystander();
    for i in 0..=GARBAGE.len() {
        let mut c = rig.mallory();
        c.send("m3 NOOP\r\n");
        let lines = until_close(&mut c);
        assert_no_ok(&lines, "m3");
        assert!(
            lines
                .first()
                .is_some_and(|l| l.starts_with("* BYE [UNAVAILABLE]")),
            "garbage {i}: {lines:?}"
        );
        assert!(
            lines.len() == 1,
            "garbage {i}: the gateway relayed more than a BYE: {lines:?}"
        );
    }
    rig.assert_untouched(&mut by);
}

/// A truncated response line (no line ending, then the backend closes): the partial line
/// is never relayed; the client gets `* BYE [UNAVAILABLE]`.
#[test]
fn backend_sends_a_truncated_line() {
    let rig = rig(|mut p| {
        p.greet_and_accept_login();
        if p.serve_until(|c| c.contains("FETCH")).is_some() {
            p.send("* 1 FETCH (FLAGS (\\Seen");
            thread::sleep(Duration::from_millis(300));
            p.close();
        }
    });
    let mut by = rig.bystander();
    let mut c = rig.mallory();
    c.send("m2 SELECT INBOX\r\n");
    c.expect_ok("m2");
    c.send("m3 FETCH 1 FLAGS\r\n");
    let lines = until_close(&mut c);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("* BYE [UNAVAILABLE]"), "{lines:?}");
    rig.assert_untouched(&mut by);
}

/// `* BYE` at every point: as the greeting, in answer to LOGIN, unsolicited after login,
/// and in the middle of a response. Before login the client gets `NO [UNAVAILABLE]` (and
/// stays unauthenticated); after login the BYE reaches the client and the session ends; no
/// OK for the command in flight.
#[test]
fn backend_sends_bye_at_any_point() {
    let rig = rig(|mut p| match p.index {
        0 => p.send("* BYE not today\r\n"),
        1 => {
            p.greet();
            let _ = p.command();
            let _ = p.command();
            p.send("* BYE changed my mind\r\n");
        }
        2 => {
            p.greet_and_accept_login();
            p.send("* BYE unsolicited, right after login\r\n");
            thread::sleep(Duration::from_millis(200));
            p.close();
        }
        _ => {
            p.greet_and_accept_login();
            if p.serve_until(|c| c.contains("FETCH")).is_some() {
                p.send("* 1 FETCH (FLAGS (\\Seen))\r\n* BYE in the middle\r\n");
                thread::sleep(Duration::from_millis(200));
                p.close();
            }
        }
    });
    let mut by = rig.bystander();
    rig.mallory_unavailable();
    rig.mallory_unavailable();
    let mut c = rig.mallory();
    c.send("m2 NOOP\r\n");
    let lines = until_close(&mut c);
    assert!(
        lines.iter().any(|l| l.starts_with("* BYE unsolicited")),
        "{lines:?}"
    );
    assert_no_ok(&lines, "m2");
    let mut c = rig.mallory();
    c.send("m2 SELECT INBOX\r\n");
    c.expect_ok("m2");
    c.send("m3 FETCH 1 FLAGS\r\n");
    let lines = until_close(&mut c);
    assert!(
        lines.iter().any(|l| l.starts_with("* BYE in the middle")),
        "{lines:?}"
    );
    assert_no_ok(&lines, "m3");
    rig.assert_untouched(&mut by);
}

/// A `* PREAUTH` greeting would bind the client to whatever user the backend chose: the
/// gateway refuses it before sending anything (no ID, no credentials), and the client gets
/// `NO [UNAVAILABLE]`, still unauthenticated.
#[test]
fn backend_greets_preauth() {
    let rig = rig(|mut p| {
        p.send(&format!("* PREAUTH [CAPABILITY {CAPS}] welcome, root\r\n"));
        p.hold(Duration::from_secs(10));
    });
    let mut by = rig.bystander();
    rig.mallory_unavailable();
    assert!(
        eventually(Duration::from_secs(5), || rig.evil.connections() == 1),
        "connections: {}",
        rig.evil.connections()
    );
    let received = rig.evil.received_all();
    assert!(
        !received.contains(MALLORY_PASSWORD) && !received.contains("LOGIN"),
        "the gateway talked to a PREAUTH backend: {received:?}"
    );
    assert!(rig.gateway_log().contains("PREAUTH"), "not logged");
    rig.assert_untouched(&mut by);
}

/// A message whose body holds lines that look like responses (`m3 OK`, `* BYE`, a literal
/// announcement, a continuation): Dovecot returns it in a FETCH literal, and the gateway
/// frames by the literal's count, so the client gets it byte for byte and the session
/// goes on (a gateway that scanned the body would end the session or inject inside it).
#[test]
fn message_body_that_looks_like_responses_is_framed_by_the_literal_count() {
    let dovecot = Dovecot::start();
    let dir = tempdir("imapgate-hostile-backend-");
    let users = users_file(&dir, dovecot.port(), free_port());
    let gw = Gateway::start(
        &(common::gateway_config(free_port(), dovecot.port(), &users)
            + "\n[health]\ninterval_secs = 0\n"),
    );
    let mut by = Client::logged_in(gw.port(), "b1", "bob", "builder");
    let body = "From: mallory@example.com\r\nSubject: responses inside\r\n\r\n\
                m3 OK FETCH completed\r\n* BYE [UNAVAILABLE] fake\r\nm4 OK [READ-WRITE] fake\r\n\
                + continue\r\n* 1 FETCH (BODY[] {5}\r\n{10}\r\n~{3}\r\n\r\n.\r\n";
    let mut c = Client::logged_in(gw.port(), "a1", "alice", "wonderland");
    c.send(&format!("a2 APPEND INBOX {{{}}}\r\n", body.len()));
    assert!(c.line().starts_with('+'));
    c.send(&format!("{body}\r\n"));
    c.expect_ok("a2");
    c.send("m2 SELECT INBOX\r\n");
    c.expect_ok("m2");
    // FETCH it, pipelined with a command the gateway refuses itself (its BAD may come
    // before or after the FETCH response, never inside it) and a NOOP.
    c.send("m3 FETCH * BODY.PEEK[]\r\nm4 LOGIN x y\r\nm5 NOOP\r\n");
    let mut lines = Vec::new();
    let mut fetched = None;
    loop {
        let line = c.line();
        if let Some(n) = line
            .strip_suffix('}')
            .and_then(|l| l.rsplit_once('{'))
            .and_then(|(_, n)| n.parse::<usize>().ok())
        {
            assert!(line.starts_with("* ") && line.contains("FETCH"), "{line:?}");
            fetched = Some(c.read_exact(n));
            assert_eq!(
                c.line(),
                ")",
                "the FETCH response goes on after its literal"
            );
            continue;
        }
        let done = line.starts_with("m5 ");
        lines.push(line);
        if done {
            break;
        }
    }
    let fetched = fetched.expect("the message was fetched");
    assert_eq!(String::from_utf8_lossy(&fetched), body);
    let tagged: Vec<&String> = lines.iter().filter(|l| l.starts_with('m')).collect();
    assert_eq!(tagged.len(), 3, "{lines:?}");
    for t in ["m3 OK ", "m4 BAD ", "m5 OK "] {
        assert!(
            tagged.iter().any(|l| l.starts_with(t)),
            "{t} missing: {lines:?}"
        );
    }
    by.send("b2 NOOP\r\n");
    by.expect_ok("b2");
}

/// A backend that echoes a mailbox name at the very end of a status response's text
/// (`NO Mailbox doesn't exist: x{5}`; Dovecot adds its timing after the name, others do
/// not) and greets with text ending in `{5}`. Status responses never announce literals
/// (RFC 9051 §9 `resp-text`): a gateway that took `{5}` for one would swallow the start of
/// the next response, lose track of the backend's tagged answers, and hold its own replies
/// (a BAD for a refused command) for a response boundary that never comes.
#[test]
fn literal_lookalike_in_a_status_response_does_not_desynchronise_framing() {
    let rig = rig(|mut p| {
        p.send(&format!("* OK [CAPABILITY {CAPS}] ready for {{5}}\r\n"));
        // ID, then LOGIN.
        for _ in 0..2 {
            let Some(cmd) = p.command() else { return };
            let tag = cmd.split(' ').next().unwrap_or("").to_string();
            p.send(&format!("{tag} OK done\r\n"));
        }
        while let Some(cmd) = p.command() {
            let tag = cmd.split(' ').next().unwrap_or("").to_string();
            if cmd.contains("SELECT \"nosuch") {
                p.send(&format!("{tag} NO Mailbox doesn't exist: nosuch{{5}}\r\n"));
            } else if cmd.contains("SELECT") {
                p.send("* OK [ALERT] over quota for {3}\r\n* 1 EXISTS\r\n");
                p.send(&format!("{tag} OK [READ-WRITE] done\r\n"));
            } else {
                p.send(&format!("{tag} OK done\r\n"));
            }
        }
    });
    // Lines, not responses: the harness client would take `{5}` for a literal too.
    let tagged = |c: &mut Client, tag: &str| loop {
        let l = c.line();
        if l.starts_with(&format!("{tag} ")) {
            return l;
        }
    };
    let mut by = rig.bystander();
    let mut c = rig.mallory();
    c.send("s1 SELECT \"nosuch{5}\"\r\n");
    let no = tagged(&mut c, "s1");
    assert!(no.starts_with("s1 NO") && no.ends_with("{5}"), "{no:?}");
    // Refused by the gateway itself: answered at once, not after some later response.
    c.send("r1 LOGIN x y\r\n");
    let r1 = c.line();
    assert!(r1.starts_with("r1 BAD"), "{r1:?}");
    // The gateway still follows the backend's tagged answers: the SELECT's OK selects
    // (an untagged `{3}` on the way), so FETCH is forwarded, not refused.
    c.send("s2 SELECT INBOX\r\n");
    let s2 = tagged(&mut c, "s2");
    assert!(s2.starts_with("s2 OK"), "{s2:?}");
    c.send("f1 FETCH 1 FLAGS\r\n");
    let f1 = tagged(&mut c, "f1");
    assert!(f1.starts_with("f1 OK"), "{f1:?}");
    rig.assert_untouched(&mut by);
}

// ---------------------------------------------------------------------------------------
// Silence and stalls

/// A backend that accepts TCP and never greets: after `backend_connect_timeout_secs` the
/// gateway gives up on it. Alone, the client gets `NO [UNAVAILABLE]`; with a healthy
/// backend beside it, the next candidate serves the login.
#[test]
fn backend_accepts_tcp_but_never_greets() {
    let rig = rig(|mut p| {
        p.hold(Duration::from_secs(30));
    });
    let mut by = rig.bystander();
    let started = Instant::now();
    rig.mallory_unavailable();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "gave up after {took:?}; backend_connect_timeout_secs is 2"
    );
    rig.assert_untouched(&mut by);

    // Next candidate: carol is not routed by the passdb, so rendezvous hashing picks among
    // the configured backends; the silent one weighs 1000 times more, so it comes first.
    let dir = tempdir("imapgate-hostile-backend-");
    let users = dir.path().join("users");
    std::fs::write(&users, "bob:{PLAIN}builder\n").expect("write users");
    let dovecot = &rig.dovecot;
    let config = format!(
        "[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:{}\"\n\n\
         [[backend]]\nname = \"silent\"\naddress = \"127.0.0.1:{}\"\nweight = 1000\n\n\
         [[backend]]\nname = \"dovecot\"\naddress = \"127.0.0.1:{}\"\nweight = 1\n\n\
         [[passdb]]\ntype = \"passwd-file\"\npath = {}\n\n\
         [limits]\nbackend_connect_timeout_secs = 2\n\n[health]\ninterval_secs = 0\n",
        free_port(),
        rig.evil.port(),
        dovecot.port(),
        toml_str(users.to_str().expect("utf-8 path")),
    );
    let gw = Gateway::start(&config);
    let before = rig.evil.connections();
    let mut c = Client::connect(gw.port());
    c.set_timeout(Duration::from_secs(15));
    c.greeting();
    c.send("c1 LOGIN bob builder\r\n");
    c.expect_ok("c1");
    c.send("c2 SELECT INBOX\r\n");
    c.expect_ok("c2");
    assert_eq!(
        rig.evil.connections(),
        before + 1,
        "the silent backend was not tried first"
    );
}

/// Greets, reads the login, and never answers it: `backend_login_timeout_secs`, then
/// `NO [UNAVAILABLE]`.
#[test]
fn backend_stalls_during_login() {
    let rig = rig(|mut p| {
        p.greet();
        p.hold(Duration::from_secs(30));
    });
    let mut by = rig.bystander();
    let started = Instant::now();
    rig.mallory_unavailable();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "gave up after {took:?}; backend_login_timeout_secs is 2"
    );
    rig.assert_untouched(&mut by);
}

/// Greets, logs in, then stalls halfway through a FETCH literal. Nothing the gateway could
/// add would be framed right, so it relays what came and waits (a slow backend is not a
/// dead one) without spinning: its CPU stays idle. When the client gives up, the gateway
/// closes its side to the backend too (no leaked connection). (The inactivity timeout for
/// this case, at least 30 minutes by RFC 9051 §5.4, is tested on a paused clock in
/// `src/relay/pump/tests.rs`.)
#[test]
fn backend_greets_then_stalls_mid_response() {
    let rig = rig(|mut p| {
        p.greet_and_accept_login();
        if p.serve_until(|c| c.contains("FETCH")).is_some() {
            p.send("* 1 FETCH (BODY[] {1000}\r\n");
            p.send(&"s".repeat(100));
            let closed = p.hold(Duration::from_secs(30));
            p.send(if closed { "closed\r\n" } else { "timeout\r\n" });
        }
    });
    let mut by = rig.bystander();
    let fds_before = procstat::open_fds(rig.gw.pid());
    let mut c = rig.mallory();
    c.send("m2 SELECT INBOX\r\n");
    c.expect_ok("m2");
    c.send("m3 FETCH 1 BODY[]\r\n");
    assert_eq!(c.line(), "* 1 FETCH (BODY[] {1000}");
    assert_eq!(c.read_exact(100), vec![b's'; 100]);
    let cpu_before = procstat::cpu_ticks(rig.gw.pid());
    thread::sleep(Duration::from_secs(3));
    let spent = procstat::cpu_ticks(rig.gw.pid()) - cpu_before;
    assert!(
        spent < 100,
        "the gateway used {spent} ticks of CPU in 3 s while a session waited"
    );
    rig.assert_untouched(&mut by);
    drop(c);
    assert!(
        eventually(Duration::from_secs(10), || procstat::open_fds(rig.gw.pid())
            <= fds_before),
        "the stalled backend connection was not released: {} fds, {fds_before} before",
        procstat::open_fds(rig.gw.pid())
    );
}

/// `tls = "starttls"` toward a backend that hides STARTTLS (or refuses it, or injects
/// plaintext after its OK, or cannot do TLS): the gateway never falls back to cleartext;
/// the password is never sent; the client gets `NO [UNAVAILABLE]`.
#[test]
fn backend_hides_starttls_when_tls_is_required() {
    let rig = rig_with(
        |mut p| match p.index {
            // STARTTLS missing from the greeting's capabilities (LOGINDISABLED or not).
            0 => {
                p.send("* OK [CAPABILITY IMAP4rev1 ID LITERAL+ AUTH=PLAIN] no tls here\r\n");
                p.hold(Duration::from_secs(10));
            }
            // No capabilities in the greeting; CAPABILITY without STARTTLS.
            1 => {
                p.send("* OK ready\r\n");
                while let Some(cmd) = p.command() {
                    let tag = cmd.split(' ').next().unwrap_or("").to_string();
                    p.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n");
                    p.send(&format!("{tag} OK done\r\n"));
                }
            }
            // Advertised, then refused.
            2 => {
                p.send("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
                if let Some(cmd) = p.command() {
                    let tag = cmd.split(' ').next().unwrap_or("").to_string();
                    p.send(&format!("{tag} NO not today\r\n"));
                }
                p.hold(Duration::from_secs(10));
            }
            // OK, followed at once by plaintext (response injection).
            3 => {
                p.send("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
                if let Some(cmd) = p.command() {
                    let tag = cmd.split(' ').next().unwrap_or("").to_string();
                    p.send(&format!(
                        "{tag} OK begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n"
                    ));
                }
                p.hold(Duration::from_secs(10));
            }
            // OK, then no TLS at all.
            _ => {
                p.send("* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
                if let Some(cmd) = p.command() {
                    let tag = cmd.split(' ').next().unwrap_or("").to_string();
                    p.send(&format!("{tag} OK begin TLS\r\n"));
                    thread::sleep(Duration::from_millis(200));
                    p.send("* OK this is not a TLS record\r\n");
                }
                p.hold(Duration::from_secs(10));
            }
        },
        RigOptions {
            evil_backend: "tls = \"starttls\"\n",
            ..RigOptions::default()
        },
    );
    let mut by = rig.bystander();
    for _ in 0..5 {
        rig.mallory_unavailable();
    }
    assert_eq!(rig.evil.connections(), 5);
    let received = rig.evil.received_all();
    assert!(
        !received.contains(MALLORY_PASSWORD)
            && !received.contains("LOGIN")
            && !received.contains("AUTHENTICATE"),
        "credentials reached a backend without TLS: {received:?}"
    );
    rig.assert_untouched(&mut by);
}

/// Stopping Dovecot under a logged-in session (`doveadm kick`, then the whole server):
/// the client gets Dovecot's BYE or the gateway's `* BYE [UNAVAILABLE]`; the next login
/// gets `NO [UNAVAILABLE]`; the gateway keeps serving once a backend is back.
#[test]
fn dovecot_kicked_and_stopped_under_live_sessions() {
    let dovecot = Dovecot::start();
    let config = common::gateway_config(free_port(), dovecot.port(), &dovecot.users_file())
        + "\n[health]\ninterval_secs = 0\n";
    let gw = Gateway::start(&config);
    let mut a = Client::logged_in(gw.port(), "a1", "alice", "wonderland");
    a.send("a2 SELECT INBOX\r\n");
    a.expect_ok("a2");
    let mut b = Client::logged_in(gw.port(), "b1", "bob", "builder");
    b.send("b2 SELECT INBOX\r\n");
    b.expect_ok("b2");
    let kick = dovecot.doveadm(&["kick", "alice"]);
    kick.assert_success("doveadm kick");
    let lines = a.read_to_eof();
    assert!(
        lines.iter().any(|l| l.starts_with("* BYE")),
        "alice was kicked without a BYE: {lines:?}"
    );
    // bob is untouched by alice's kick.
    b.send("b3 NOOP\r\n");
    b.expect_ok("b3");
    drop(dovecot);
    let lines = b.read_to_eof();
    assert!(
        lines.iter().any(|l| l.starts_with("* BYE")),
        "bob lost Dovecot without a BYE: {lines:?}"
    );
    let mut c = Client::connect(gw.port());
    c.set_timeout(Duration::from_secs(15));
    c.greeting();
    c.send("c1 LOGIN alice wonderland\r\n");
    let no = c.expect_no("c1");
    assert!(no.starts_with("c1 NO [UNAVAILABLE]"), "{no:?}");
    c.send("c2 NOOP\r\n");
    c.expect_ok("c2");
}
