//! Issue 11, client side: a hostile or broken client against the built `imapgate`, before
//! and after login. Each test is one attack from the list and fails on a gateway
//! that gets it wrong: one that buffers without bound, resynchronises by guessing, answers
//! OK to garbage, lets a trickle reset its login timeout, tells unknown users from wrong
//! passwords, writes raw control characters into its log, or passes a client's ID fields
//! to the backend as its own.
//!
//! Tests that need no mailbox run the gateway alone (its backend is a closed port); the
//! others put a real Dovecot behind it. Every test ends by checking the gateway still serves
//! a well-behaved client.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::procstat;
use common::session::with_limits;
use common::tls::{Pki, TlsClient};
use common::{eventually, free_port, gateway_config, repo, tempdir, Client, Dovecot, Gateway};

/// `[health] interval_secs = 0`: no probes against the (possibly closed) backend port, so
/// the gateway's log and counters only show what the test did.
const NO_HEALTH_CHECKS: &str = "\n[health]\ninterval_secs = 0\n";

/// A gateway with nothing behind it (the backend is a closed port), the demo users in its
/// passdb, and `limits` overrides.
fn gateway_alone(limits: &[(&str, &str)]) -> Gateway {
    let config = gateway_config(free_port(), free_port(), &repo().join("config/users"));
    Gateway::start(&(with_limits(&config, limits) + NO_HEALTH_CHECKS))
}

/// A gateway in front of `dovecot`.
fn gateway_before(dovecot: &Dovecot, limits: &[(&str, &str)]) -> Gateway {
    let config = gateway_config(free_port(), dovecot.port(), &dovecot.users_file());
    Gateway::start(&(with_limits(&config, limits) + NO_HEALTH_CHECKS))
}

/// A fresh connection gets the greeting and a NOOP answered: the gateway is alive and
/// serving.
fn assert_serves(port: u16) {
    let mut c = Client::connect(port);
    c.greeting();
    c.send("alive NOOP\r\n");
    c.expect_ok("alive");
}

/// Like [`assert_serves`], and also logs in and selects (needs a backend).
fn assert_serves_mail(port: u16) {
    let mut c = Client::connect(port);
    c.greeting();
    c.send("alive1 LOGIN bob builder\r\n");
    c.expect_ok("alive1");
    c.send("alive2 SELECT INBOX\r\n");
    c.expect_ok("alive2");
    c.send("alive3 LOGOUT\r\n");
    c.expect_ok("alive3");
}

/// Read responses until the tagged one for `probe` (sent after the hostile input); return
/// everything before it. Panics if the probe is not answered OK.
fn before_probe(c: &mut Client, probe: &str) -> Vec<String> {
    let (before, tagged) = c.expect_tagged(probe);
    assert!(
        tagged.starts_with(&format!("{probe} OK")),
        "the probe after the hostile input was not answered OK: {tagged:?} after {before:?}"
    );
    before
}

/// A raw socket that writes from a thread until the peer stops reading (a write blocks for
/// `stall`) or `total` bytes are written; returns the bytes written. Never panics on a
/// write error (the gateway may close first: that is often the point).
fn write_until_blocked(
    stream: &TcpStream,
    chunk: &[u8],
    total: usize,
    stall: Duration,
) -> thread::JoinHandle<usize> {
    let mut w = stream.try_clone().expect("dup socket");
    w.set_write_timeout(Some(stall)).expect("write timeout");
    let chunk = chunk.to_vec();
    thread::spawn(move || {
        let mut written = 0;
        while written < total {
            let n = chunk.len().min(total - written);
            match w.write(&chunk[..n]) {
                Ok(0) | Err(_) => break,
                Ok(k) => written += k,
            }
        }
        written
    })
}

/// Read everything until EOF or `timeout`; returns the bytes and whether EOF was seen.
fn read_until_eof(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

fn raw_connect(port: u16) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    s.set_read_timeout(Some(common::LINE_TIMEOUT))
        .expect("read timeout");
    s
}

/// Read the greeting line from a raw socket.
fn raw_greeting(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => line.push(b[0]),
            _ => panic!("no greeting: {:?}", String::from_utf8_lossy(&line)),
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    assert!(line.starts_with("* OK"), "greeting: {line:?}");
    line
}

// ---------------------------------------------------------------------------------------
// Oversized lines and literals

/// 10 MB without a line ending before login: the gateway refuses once `max_line_length`
/// is reached (it never buffers the rest) with `* BYE [TOOBIG]`, and closes.
#[test]
fn line_of_10_mb_without_crlf_before_login_gets_bye_toobig() {
    let gw = gateway_alone(&[]);
    let mut s = raw_connect(gw.port());
    raw_greeting(&mut s);
    let rss_before = procstat::rss_kib(gw.pid());
    let writer = write_until_blocked(&s, &[b'x'; 65536], 10 << 20, Duration::from_secs(5));
    let (out, eof) = read_until_eof(&mut s, Duration::from_secs(15));
    let written = writer.join().expect("writer");
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("* BYE [TOOBIG]"),
        "expected BYE [TOOBIG], got {out:?}"
    );
    assert!(eof, "the gateway kept the connection open after BYE");
    assert!(
        written < 10 << 20,
        "the gateway read all 10 MB of one line ({written} bytes) instead of stopping at the limit"
    );
    let grown = procstat::rss_kib(gw.pid()).saturating_sub(rss_before);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB for one long line"
    );
    assert_serves(gw.port());
}

/// The same after login: the line is cut at `max_line_length`, `* BYE [TOOBIG]`, closed;
/// nothing of it reaches Dovecot as a command, and other sessions go on.
#[test]
fn line_of_10_mb_without_crlf_after_login_gets_bye_toobig() {
    let dovecot = Dovecot::start();
    let gw = gateway_before(&dovecot, &[]);
    let mut other = Client::logged_in(gw.port(), "o1", "bob", "builder");
    let mut c = Client::logged_in(gw.port(), "a1", "alice", "wonderland");
    c.send("a2 SELECT INBOX\r\n");
    c.expect_ok("a2");
    let mut s = c.writer();
    s.write_all(b"a3 SEARCH TEXT \"").expect("send");
    let writer = write_until_blocked(&s, &[b'y'; 65536], 10 << 20, Duration::from_secs(5));
    let bye = c.expect_bye();
    let written = writer.join().expect("writer");
    assert!(bye.starts_with("* BYE [TOOBIG]"), "{bye:?}");
    let (_, eof) = read_until_eof(&mut s, Duration::from_secs(10));
    assert!(eof, "connection still open after BYE");
    assert!(written < 10 << 20, "all 10 MB were read ({written})");
    other.send("o2 NOOP\r\n");
    other.expect_ok("o2");
    assert_serves_mail(gw.port());
}

/// Send `line` before login and return the first response line; the session must go on
/// (a NOOP is answered after it).
fn literal_refused_and_session_goes_on(line: &str) -> String {
    let gw = gateway_alone(&[]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send(line);
    let first = c.line();
    assert!(
        !first.starts_with('+'),
        "the gateway invited the payload of {line:?}: {first:?}"
    );
    c.send("p1 NOOP\r\n");
    c.expect_ok("p1");
    assert_serves(gw.port());
    first
}

/// `{4294967296}` (2^32, over every limit, would wrap a 32-bit length): refused with a
/// tagged `NO [TOOBIG]` before `+` (RFC 9051 §7.5), so the client never sends it and the
/// session goes on.
#[test]
fn literal_of_4294967296_before_login_is_refused_without_continuation() {
    let first = literal_refused_and_session_goes_on("l1 LOGIN {4294967296}\r\n");
    assert!(first.starts_with("l1 NO [TOOBIG]"), "{first:?}");
}

/// `{99999999999999999999}` does not fit in 64 bits: refused like any oversized literal,
/// never parsed into a small number by overflow.
#[test]
fn literal_of_20_digits_before_login_is_refused_without_continuation() {
    let first = literal_refused_and_session_goes_on("l1 LOGIN {99999999999999999999}\r\n");
    assert!(first.starts_with("l1 NO [TOOBIG]"), "{first:?}");
}

/// `{-1}` is not a literal announcement (RFC 9051 §9 `number64`): the line is complete and
/// the grammar rejects it with BAD; nothing is waited for.
#[test]
fn literal_of_minus_one_is_not_a_literal_and_gets_bad() {
    let first = literal_refused_and_session_goes_on("l1 LOGIN {-1}\r\n");
    assert!(first.starts_with("l1 BAD"), "{first:?}");
}

/// Send a non-synchronizing literal's announcement and its payload (which hides commands);
/// expect `* BYE [TOOBIG]`, EOF, and no command of the payload executed.
fn nonsync_literal_gets_bye(len: usize) {
    let gw = gateway_alone(&[]);
    let mut s = raw_connect(gw.port());
    raw_greeting(&mut s);
    let mut payload = format!("x1 LOGIN {{{len}+}}\r\n").into_bytes();
    // The payload follows at once (that is what `+` means); a gateway that resynchronised
    // on it would run these.
    let hidden = b"\r\nh1 NOOP\r\nh2 LOGIN alice wonderland\r\n";
    while payload.len() < len.min(64 * 1024) {
        payload.extend_from_slice(hidden);
    }
    let writer = write_until_blocked(&s, &payload, payload.len(), Duration::from_secs(5));
    let (out, eof) = read_until_eof(&mut s, Duration::from_secs(10));
    writer.join().expect("writer");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("* BYE [TOOBIG]"), "{out:?}");
    assert!(
        !out.contains("h1 ") && !out.contains("h2 "),
        "literal payload was executed: {out:?}"
    );
    assert!(eof, "connection left open after BYE: {out:?}");
    assert!(
        !gw.log().contains("\"alice\""),
        "a login hidden in the payload reached the passdb"
    );
    assert_serves(gw.port());
}

/// `{1000000+}` before login: over `max_literal_size_preauth`, and the payload follows
/// whatever the gateway says, so the only safe answer is `* BYE [TOOBIG]` and close.
#[test]
fn nonsync_literal_of_1000000_before_login_gets_bye_toobig() {
    nonsync_literal_gets_bye(1_000_000);
}

/// RFC 7888 §5 (LITERAL-): a non-synchronizing literal over 4096 octets is answered with
/// `BYE [TOOBIG]`, even when it is under the gateway's own pre-login literal cap (8192).
#[test]
fn nonsync_literal_over_the_literal_minus_limit_gets_bye_toobig() {
    nonsync_literal_gets_bye(4097);
}

/// A synchronizing literal announced (`+` sent) and never delivered: the gateway waits,
/// but the login timeout (absolute) still ends the connection.
#[test]
fn sync_literal_never_sent_still_hits_the_login_timeout() {
    let gw = gateway_alone(&[("login_timeout_secs", "3")]);
    let mut c = Client::connect(gw.port());
    c.set_timeout(Duration::from_secs(15));
    c.greeting();
    let started = Instant::now();
    c.send("l1 LOGIN {5}\r\n");
    let plus = c.line();
    assert!(plus.starts_with('+'), "{plus:?}");
    let bye = c.expect_bye();
    let took = started.elapsed();
    assert!(bye.contains("Login timeout"), "{bye:?}");
    c.expect_eof();
    assert!(
        took < Duration::from_secs(9),
        "the login timeout took {took:?}"
    );
    assert_serves(gw.port());
}

// ---------------------------------------------------------------------------------------
// Hostile syntax before login

/// Deep nesting is refused by the grammar without recursion (no stack overflow, which
/// would take the whole process down), and the session goes on.
#[test]
fn deeply_nested_parentheses_before_login_get_bad() {
    let gw = gateway_alone(&[("max_bad_commands", "100")]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    let deep = "(".repeat(60_000);
    for (i, line) in [
        format!("n1 ID {deep}\r\n"),
        format!("n2 ID (\"a\" {deep}\r\n"),
        format!("n3 LOGIN {deep} x\r\n"),
        format!("n4 SEARCH {deep}\r\n"),
        format!("n5 AUTHENTICATE PLAIN {deep}\r\n"),
        format!("n6 ID ({}\r\n", "\"a\" (".repeat(10_000)),
    ]
    .iter()
    .enumerate()
    {
        let probe = format!("p{i}");
        c.send(line);
        c.send(&format!("{probe} NOOP\r\n"));
        let before = before_probe(&mut c, &probe);
        assert!(
            before.len() == 1 && before[0].starts_with(&format!("n{} BAD", i + 1)),
            "{:?}",
            before
        );
    }
    assert_serves(gw.port());
}

/// RFC 2971 §3.3 caps ID at 30 pairs, fields at 30 octets, values at 1024; a client that
/// sends hundreds of pairs or huge values gets an answer (the gateway's own ID, or BAD)
/// and the session goes on, bounded by the line limit.
#[test]
fn id_with_hundreds_of_pairs_and_long_values() {
    let gw = gateway_alone(&[("max_bad_commands", "100")]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    let many: String = (0..500)
        .map(|i| format!("\"field{i}\" \"value{i}\""))
        .collect::<Vec<_>>()
        .join(" ");
    let long_value = "v".repeat(60_000);
    let long_field = "f".repeat(30_000);
    let lit = "w".repeat(8000);
    for (tag, line) in [
        ("i1", format!("i1 ID ({many})\r\n")),
        ("i2", format!("i2 ID (\"name\" \"{long_value}\")\r\n")),
        ("i3", format!("i3 ID (\"{long_field}\" \"x\")\r\n")),
        ("i4", format!("i4 ID (\"name\" {{{}}}\r\n", lit.len())),
    ] {
        c.send(&line);
        if tag == "i4" {
            let plus = c.line();
            assert!(plus.starts_with('+'), "{plus:?}");
            c.send(&format!("{lit})\r\n"));
        }
        let (untagged, tagged) = c.expect_tagged(tag);
        assert!(
            tagged.starts_with(&format!("{tag} OK")) || tagged.starts_with(&format!("{tag} BAD")),
            "{tag}: {tagged:?}"
        );
        for u in &untagged {
            assert!(u.starts_with("* ID "), "{tag}: unexpected {u:?}");
            assert!(u.len() < 1024, "{tag}: the gateway echoed the client's ID");
        }
        c.send("p NOOP\r\n");
        before_probe(&mut c, "p");
    }
    assert_serves(gw.port());
}

/// A 200 KB AUTHENTICATE response is one line over `max_line_length`: `* BYE [TOOBIG]`,
/// never a login, never a buffer of 200 KB.
#[test]
fn authenticate_response_of_200_kb_gets_bye_toobig() {
    let gw = gateway_alone(&[]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send("s1 AUTHENTICATE PLAIN\r\n");
    let plus = c.line();
    assert!(plus.starts_with('+'), "{plus:?}");
    let mut s = c.writer();
    let mut huge = "QUFB".repeat(200 * 1024 / 4).into_bytes();
    huge.extend_from_slice(b"\r\n");
    let writer = write_until_blocked(&s, &huge, huge.len(), Duration::from_secs(5));
    let bye = c.line();
    writer.join().expect("writer");
    assert!(bye.starts_with("* BYE [TOOBIG]"), "{bye:?}");
    let (rest, eof) = read_until_eof(&mut s, Duration::from_secs(10));
    assert!(
        eof,
        "connection left open: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(!gw.log().contains("result=\"ok\"") && !gw.log().contains("result=ok"));
    assert_serves(gw.port());
}

/// Garbage base64, `*` cancellation and an empty `=` initial response: each ends the
/// exchange with BAD or NO (never OK), the session is back in not-authenticated state,
/// and a normal AUTHENTICATE afterwards still works up to the passdb.
#[test]
fn authenticate_garbage_base64_cancel_and_empty_initial_response() {
    let gw = gateway_alone(&[("max_bad_commands", "100")]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    let exchanges: &[(&str, &[&str], &str)] = &[
        // (command, continuation answers, expected status)
        (
            "g1 AUTHENTICATE PLAIN\r\n",
            &["!!!not*base64!!!\r\n"],
            "BAD",
        ),
        ("g2 AUTHENTICATE PLAIN\r\n", &["AAAA====AAAA\r\n"], "BAD"),
        ("g3 AUTHENTICATE PLAIN\r\n", &["*\r\n"], "BAD"),
        ("g4 AUTHENTICATE LOGIN\r\n", &["*\r\n"], "BAD"),
        (
            "g5 AUTHENTICATE LOGIN\r\n",
            &["YWxpY2U=\r\n", "*\r\n"],
            "BAD",
        ),
        // RFC 4959 §3: "=" is an empty initial response; PLAIN cannot be empty.
        ("g6 AUTHENTICATE PLAIN =\r\n", &[], "BAD"),
        // An empty continuation answer is an empty (malformed) PLAIN message too.
        ("g7 AUTHENTICATE PLAIN\r\n", &["\r\n"], "BAD"),
        // NUL-only PLAIN: empty authcid and password.
        ("g8 AUTHENTICATE PLAIN AAA=\r\n", &[], "NO"),
        ("g9 AUTHENTICATE PLAIN \x00\r\n", &[], "BAD"),
        ("g10 AUTHENTICATE X-UNKNOWN =\r\n", &[], "NO"),
    ];
    for (cmd, answers, status) in exchanges {
        let tag = cmd.split(' ').next().expect("tag");
        c.send(cmd);
        for a in *answers {
            let plus = c.line();
            assert!(plus.starts_with('+'), "{tag}: {plus:?}");
            c.send(a);
        }
        let (untagged, tagged) = c.expect_tagged(tag);
        assert!(untagged.is_empty(), "{tag}: {untagged:?}");
        assert!(
            tagged.starts_with(&format!("{tag} {status}")),
            "{tag}: expected {status}, got {tagged:?}"
        );
        // Back in not-authenticated state: a command is a command again, not SASL data.
        c.send("p NOOP\r\n");
        before_probe(&mut c, "p");
    }
    // PLAIN with a wrong password goes to the passdb and fails properly.
    c.send("g11 AUTHENTICATE PLAIN AGFsaWNlAHdyb25n\r\n");
    let no = c.expect_no("g11");
    assert!(no.contains("[AUTHENTICATIONFAILED]"), "{no:?}");
    assert_serves(gw.port());
}

/// Hostile bytes in tags, atoms and quoted strings, each followed by a probe NOOP. `ok`:
/// whether an OK is a right answer before login (`\x01` is a legal QUOTED-CHAR, RFC 9051
/// §9); every other answer must be BAD (tagged, or untagged when no tag can be read).
struct Hostile {
    bytes: &'static [u8],
    ok: bool,
}

const fn h(bytes: &'static [u8]) -> Hostile {
    Hostile { bytes, ok: false }
}

const HOSTILE_BYTES: &[Hostile] = &[
    // NUL
    h(b"a\x00b NOOP\r\n"),
    h(b"t1 NO\x00OP\r\n"),
    h(b"t2 LOGIN \"ali\x00ce\" wonderland\r\n"),
    h(b"t3 LOGIN alice wonderland\x00\r\n"),
    // Other controls, in a tag and a quoted string.
    h(b"\x07 NOOP\r\n"),
    Hostile {
        bytes: b"t4 ID (\"name\" \"a\x01b\")\r\n",
        ok: true,
    },
    // Invalid UTF-8
    h(b"\xff\xfe NOOP\r\n"),
    h(b"t5 NO\xc3\x28OP\r\n"),
    h(b"t6 LOGIN \"al\xffice\" wonderland\r\n"),
    // Bare LF: a line that does not end in CRLF is refused, whatever it says.
    h(b"t7 NOOP\n"),
    h(b"t8 LOGIN alice wonderland\n"),
    h(b"t9 LOGIN alice \"wonder\nland\"\r\n"),
    // Bare CR: not a line ending.
    h(b"t10 NO\rOP\r\n"),
    h(b"t11 LOGIN \"ali\rce\" wonderland\r\n"),
    h(b"t12 NOOP\r\r\n"),
    h(b"t\r13 NOOP\r\n"),
];

/// Commands hidden behind a bare CR, a NUL, or inside a quoted string, tagged `hN`: no `hN`
/// may ever be answered or reach the backend, because no byte but LF ends a line.
const SMUGGLED: &[&[u8]] = &[
    b"s1 NOOP\rh1 CAPABILITY\r\n",
    b"s2 NOOP\x00h2 CAPABILITY\r\n",
    b"s3 NOOP \"\rh3 CAPABILITY\r\n",
    b"s4 NOOP \"x\rh4 COMPRESS DEFLATE\"\r\n",
    b"s5 NOOP\r h5 STARTTLS\r\n",
];

/// Send `input` then a probe; return every response before the probe's OK.
fn answers_to(c: &mut Client, input: &[u8], probe: &str) -> Vec<String> {
    c.send_bytes(input);
    c.send(&format!("{probe} NOOP\r\n"));
    let before = before_probe(c, probe);
    let shown: String = String::from_utf8_lossy(input).chars().take(80).collect();
    eprintln!("{shown:?}: {before:?}");
    before
}

fn status_of(line: &str) -> &str {
    line.split(' ').nth(1).unwrap_or("")
}

/// NUL, invalid UTF-8, bare LF and bare CR in tags, atoms and quoted strings, before login:
/// every answer is BAD (never OK, never a login), a bare CR or NUL never splits a line
/// into two commands, and the next command is answered on its own. Nothing reaches the
/// passdb.
#[test]
fn nul_invalid_utf8_bare_lf_and_bare_cr_before_login() {
    let gw = gateway_alone(&[("max_bad_commands", "100")]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    let mut wrong = Vec::new();
    for (i, case) in HOSTILE_BYTES.iter().enumerate() {
        let before = answers_to(&mut c, case.bytes, &format!("p{i}"));
        let fits = !before.is_empty()
            && before.iter().all(|l| {
                status_of(l) == "BAD"
                    || (case.ok && (l.starts_with("* ID") || status_of(l) == "OK"))
            });
        if !fits {
            wrong.push(format!(
                "{:?}: {before:?}",
                String::from_utf8_lossy(case.bytes)
            ));
        }
    }
    for (i, input) in SMUGGLED.iter().enumerate() {
        let before = answers_to(&mut c, input, &format!("q{i}"));
        if before.iter().any(|l| l.starts_with('h')) || before.len() != 1 {
            wrong.push(format!("{:?}: {before:?}", String::from_utf8_lossy(input)));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        !gw.log().contains("passdb="),
        "a hostile line reached the passdb:\n{}",
        gw.log()
    );
    assert_serves(gw.port());
}

/// The same after login. The gateway refuses what it can judge (a bare LF, a command that
/// is not valid after login) and Dovecot answers the rest: it is the authority on its own
/// commands, so an OK can be right (Dovecot's NOOP ignores trailing bytes). What matters:
/// no smuggled `hN` command is answered or reaches Dovecot (its rawlog), each hostile line
/// gets at most one tagged answer, and the probe after it is answered in order.
#[test]
fn nul_invalid_utf8_bare_lf_and_bare_cr_after_login() {
    let dovecot = Dovecot::builder().rawlog().start();
    let gw = gateway_before(&dovecot, &[]);
    let mut c = Client::logged_in(gw.port(), "a1", "alice", "wonderland");
    c.send("a2 SELECT INBOX\r\n");
    c.expect_ok("a2");
    let deep = "(".repeat(30_000);
    let mut cases: Vec<Vec<u8>> = HOSTILE_BYTES.iter().map(|h| h.bytes.to_vec()).collect();
    cases.extend(SMUGGLED.iter().map(|s| s.to_vec()));
    cases.push(format!("d1 FETCH 1 {deep}\r\n").into_bytes());
    cases.push(format!("d2 SEARCH {deep}\r\n").into_bytes());
    let mut wrong = Vec::new();
    for (i, input) in cases.iter().enumerate() {
        let before = answers_to(&mut c, input, &format!("p{i}"));
        let tagged: Vec<&String> = before.iter().filter(|l| !l.starts_with("* ")).collect();
        // A bare LF ends a line for the gateway as for Dovecot: `t9 … "wonder\n` and
        // `land"\r\n` are two (refused) lines, hence two answers.
        let lines = input.iter().filter(|&&b| b == b'\n').count();
        if tagged.len() > lines
            || before
                .iter()
                .any(|l| l.starts_with('h') || l.starts_with("* CAPABILITY"))
        {
            wrong.push(format!("{:?}: {before:?}", String::from_utf8_lossy(input)));
        }
    }
    c.send("z NOOP\r\n");
    c.expect_ok("z");
    let rawlog = dovecot.rawlog_after("alice", "z");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for line in &rawlog.input {
        assert!(
            !line.starts_with('h'),
            "a smuggled command reached Dovecot as its own line: {line:?}"
        );
        for refused in [" LOGIN ", " AUTHENTICATE ", " STARTTLS", " COMPRESS "] {
            assert!(
                !line
                    .split(['\r', '\0'])
                    .next()
                    .unwrap_or("")
                    .contains(refused),
                "a command refused after login reached Dovecot: {line:?}"
            );
        }
    }
    c.send("z2 LOGOUT\r\n");
    c.expect_ok("z2");
    assert_serves_mail(gw.port());
}

// ---------------------------------------------------------------------------------------
// Flooding and slow clients

/// Pipeline `count` NOOPs from a client that never reads. Returns (bytes the kernel took
/// from the client, whether the gateway stopped reading it, RSS growth in KiB).
///
/// "Stopped reading": the client's writes block for 3 s before everything is sent, and
/// then the gateway leaves bytes unread in its socket while using no CPU. A gateway
/// without backpressure keeps reading (and buffering what it cannot pass on), so the
/// client sends everything, and its memory grows by tens of MB.
fn flood_noops(gw: &Gateway, s: &TcpStream, count: usize) -> (usize, bool, u64) {
    let before = procstat::rss_kib(gw.pid());
    let client_port = s.local_addr().expect("local addr").port();
    let mut flood = Vec::with_capacity(count * 8);
    for _ in 0..count {
        flood.extend_from_slice(b"a NOOP\r\n");
    }
    let total = flood.len();
    let writer = write_until_blocked(s, &flood, total, Duration::from_secs(3));
    drop(flood);
    let mut peak = 0;
    while !writer.is_finished() {
        thread::sleep(Duration::from_millis(250));
        peak = peak.max(procstat::rss_kib(gw.pid()).saturating_sub(before));
    }
    let written = writer.join().expect("writer");
    let unread = procstat::tcp_unread(gw.port(), client_port).unwrap_or(0);
    let cpu = procstat::cpu_ticks(gw.pid());
    thread::sleep(Duration::from_secs(1));
    let idle = procstat::cpu_ticks(gw.pid()) - cpu < 10;
    let still = procstat::tcp_unread(gw.port(), client_port).unwrap_or(0);
    peak = peak.max(procstat::rss_kib(gw.pid()).saturating_sub(before));
    eprintln!(
        "flood: {written} of {total} bytes taken, {unread} then {still} unread by the gateway, \
         idle {idle}, RSS +{peak} KiB"
    );
    let stopped = written < total && unread > 0 && still == unread && idle;
    (written, stopped, peak)
}

/// Eight million pipelined NOOPs (64 MB: a million is a floor, and less fits in the kernel's
/// socket buffers) before login from a client that never reads its answers: the gateway
/// answers until its writes to the client block, then stops reading that client (its bytes
/// stay unread in the kernel), and its memory stays flat.
#[test]
fn millions_of_pipelined_noops_before_login_from_a_client_that_never_reads() {
    let gw = gateway_alone(&[]);
    let mut s = raw_connect(gw.port());
    raw_greeting(&mut s);
    let (written, unread_steady, grown) = flood_noops(&gw, &s, 8_000_000);
    eprintln!("pre-login flood: {written} bytes taken, RSS +{grown} KiB");
    assert!(
        unread_steady,
        "the gateway kept reading a client that does not read ({written} bytes taken)"
    );
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    assert_serves(gw.port());
    drop(s);
}

/// The same after login, through the relay to Dovecot: backpressure stops the reads (64
/// KiB high water), memory stays flat, another session is unaffected, and closing the
/// flooding client frees its descriptors.
#[test]
fn millions_of_pipelined_noops_after_login_from_a_client_that_never_reads() {
    let dovecot = Dovecot::start();
    let gw = gateway_before(&dovecot, &[]);
    let mut other = Client::logged_in(gw.port(), "o1", "bob", "builder");
    let fds_before = procstat::open_fds(gw.pid());
    let c = Client::logged_in(gw.port(), "a1", "alice", "wonderland");
    let s = c.writer();
    let (written, unread_steady, grown) = flood_noops(&gw, &s, 8_000_000);
    eprintln!("post-login flood: {written} bytes taken, RSS +{grown} KiB");
    assert!(
        unread_steady,
        "the gateway kept reading a client that does not read ({written} bytes taken)"
    );
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    other.send("o2 SELECT INBOX\r\n");
    other.expect_ok("o2");
    assert_serves_mail(gw.port());
    drop(s);
    drop(c);
    assert!(
        eventually(Duration::from_secs(20), || procstat::open_fds(gw.pid())
            <= fds_before),
        "descriptors not released after the flooding client left: {} > {fds_before}",
        procstat::open_fds(gw.pid())
    );
}

/// One byte per second before login: the login timeout is absolute (from connect), so a
/// trickle does not extend it.
#[test]
fn one_byte_per_second_before_login_hits_the_absolute_login_timeout() {
    let gw = gateway_alone(&[("login_timeout_secs", "3")]);
    let mut c = Client::connect(gw.port());
    c.set_timeout(Duration::from_secs(20));
    let started = Instant::now();
    c.greeting();
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let mut w = c.writer();
        let stop = stop.clone();
        thread::spawn(move || {
            for b in b"a1 NOOP\r\na2 NOOP\r\na3 NOOP\r\n".iter().cycle() {
                if stop.load(Ordering::Relaxed) || w.write_all(&[*b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let bye = c.expect_bye();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert!(bye.contains("Login timeout"), "{bye:?}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "closed after {took:?}; login_timeout_secs is 3"
    );
    c.expect_eof();
    trickle.join().expect("trickle");
    assert_serves(gw.port());
}

/// An implicit-TLS listener: a client that connects and says nothing, one that sends half a
/// ClientHello, and one that trickles it, are all cut at `tls_handshake_timeout_secs`, and
/// a real TLS client is served meanwhile.
#[test]
fn tls_handshake_that_never_finishes_is_cut_at_the_handshake_timeout() {
    let mut pki = Pki::new("hostile test CA");
    let (cert, key) = pki.server("gateway", &["localhost", "127.0.0.1"]);
    let tls_port = free_port();
    let config = gateway_config(free_port(), free_port(), &repo().join("config/users"));
    let config = format!(
        "{config}{NO_HEALTH_CHECKS}\n[[listener]]\nname = \"imaps\"\naddress = \"127.0.0.1:{tls_port}\"\n\
         tls = \"implicit\"\ntls_handshake_timeout_secs = 2\n\
         certificates = [{{ cert = {}, key = {} }}]\n",
        common::toml_str(cert.to_str().expect("utf-8 path")),
        common::toml_str(key.to_str().expect("utf-8 path")),
    );
    let gw = Gateway::start(&config);
    assert!(gw.ports().contains(&tls_port));
    // A TLS 1.2/1.3 record header announcing a 512-byte handshake record, then nothing.
    let half_hello: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
    let started = Instant::now();
    let mut silent = raw_connect(tls_port);
    let mut half = raw_connect(tls_port);
    half.write_all(half_hello).expect("send");
    let mut trickled = raw_connect(tls_port);
    let trickle = {
        let mut w = trickled.try_clone().expect("dup");
        thread::spawn(move || {
            for b in half_hello.iter().cycle().take(20) {
                if w.write_all(&[*b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(500));
            }
        })
    };
    // Meanwhile a real client handshakes and is greeted.
    let mut good = TlsClient::tls(tls_port, pki.client_config(None), "localhost");
    good.greeting();
    for (name, s) in [
        ("silent", &mut silent),
        ("half ClientHello", &mut half),
        ("trickled ClientHello", &mut trickled),
    ] {
        let (out, eof) = read_until_eof(s, Duration::from_secs(12));
        let took = started.elapsed();
        assert!(eof, "{name}: still open after {took:?}");
        assert!(
            took < Duration::from_secs(9),
            "{name}: cut after {took:?}; tls_handshake_timeout_secs is 2"
        );
        assert!(
            !String::from_utf8_lossy(&out).contains("* OK"),
            "{name}: greeted in plaintext"
        );
    }
    trickle.join().expect("trickle");
    good.send("t1 NOOP\r\n");
    good.expect_ok("t1");
    assert_serves(gw.port());
}

// ---------------------------------------------------------------------------------------
// State and repetition

/// Commands of the authenticated and selected states before login are refused by the
/// gateway with BAD naming the state; the connection goes on.
#[test]
fn commands_in_the_wrong_state_before_login_get_bad() {
    let gw = gateway_alone(&[("max_bad_commands", "100")]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    for (tag, cmd) in [
        ("w1", "SELECT INBOX"),
        ("w2", "FETCH 1 BODY[]"),
        ("w3", "UID FETCH 1:* FLAGS"),
        ("w4", "IDLE"),
        ("w5", "ENABLE UTF8=ACCEPT"),
        ("w6", "CLOSE"),
        ("w7", "UNSELECT"),
        ("w8", "COMPRESS DEFLATE"),
        ("w9", "XUNKNOWN"),
        ("w10", "UNAUTHENTICATE"),
        ("w11", "EXPUNGE"),
        ("w12", "DONE"),
    ] {
        c.send(&format!("{tag} {cmd}\r\n"));
        let (untagged, tagged) = c.expect_tagged(tag);
        assert!(untagged.is_empty(), "{tag}: {untagged:?}");
        assert!(
            tagged.starts_with(&format!("{tag} BAD")),
            "{tag}: {tagged:?}"
        );
    }
    // APPEND with a literal: refused before `+`, so the literal is never invited.
    c.send("w13 APPEND INBOX {10}\r\n");
    let r = c.line();
    assert!(r.starts_with("w13 BAD"), "{r:?}");
    c.send("p NOOP\r\n");
    c.expect_ok("p");
    assert_serves(gw.port());
}

/// After login, what belongs to another state (LOGIN, AUTHENTICATE, STARTTLS, a second
/// login's ENABLE in selected state, FETCH before SELECT) or is refused everywhere
/// (COMPRESS) is answered BAD by the gateway and never reaches Dovecot (its rawlog).
#[test]
fn commands_in_the_wrong_state_after_login_are_not_forwarded() {
    let dovecot = Dovecot::builder().rawlog().start();
    let gw = gateway_before(&dovecot, &[]);
    let mut c = Client::logged_in(gw.port(), "a1", "alice", "wonderland");
    let refused_authenticated = [
        ("r1", "LOGIN bob builder"),
        ("r2", "AUTHENTICATE PLAIN AGJvYgBidWlsZGVy"),
        ("r3", "STARTTLS"),
        ("r4", "FETCH 1 FLAGS"),
        ("r5", "COMPRESS DEFLATE"),
        ("r6", "UNAUTHENTICATE"),
        ("r7", "CLOSE"),
    ];
    for (tag, cmd) in refused_authenticated {
        c.send(&format!("{tag} {cmd}\r\n"));
        let (_, tagged) = c.expect_tagged(tag);
        assert!(
            tagged.starts_with(&format!("{tag} BAD")),
            "{tag}: {tagged:?}"
        );
    }
    c.send("s1 SELECT INBOX\r\n");
    c.expect_ok("s1");
    for (tag, cmd) in [
        ("r8", "ENABLE UTF8=ACCEPT"),
        ("r9", "LOGIN alice wonderland"),
    ] {
        c.send(&format!("{tag} {cmd}\r\n"));
        let (_, tagged) = c.expect_tagged(tag);
        assert!(
            tagged.starts_with(&format!("{tag} BAD")),
            "{tag}: {tagged:?}"
        );
    }
    // A refused command with a synchronizing literal: no `+`, literal never invited.
    c.send("r10 LOGIN {5}\r\n");
    let r = c.line();
    assert!(r.starts_with("r10 BAD"), "{r:?}");
    c.send("z NOOP\r\n");
    c.expect_ok("z");
    let rawlog = dovecot.rawlog_after("alice", "z");
    for tag in ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10"] {
        assert!(
            !rawlog.received(tag),
            "{tag} reached Dovecot: {:?}",
            rawlog.input
        );
    }
    assert_serves_mail(gw.port());
}

/// `max_bad_commands` invalid commands before login: `* BYE` and close at exactly that
/// count.
#[test]
fn repeated_invalid_commands_before_login_end_the_connection() {
    let gw = gateway_alone(&[("max_bad_commands", "4")]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    for i in 1..=3 {
        c.send(&format!("b{i} FROB\r\n"));
        let r = c.line();
        assert!(r.starts_with(&format!("b{i} BAD")), "{r:?}");
    }
    // A good command in between does not reset the count.
    c.send("g NOOP\r\n");
    c.expect_ok("g");
    c.send("b4 \x00\r\n");
    let r = c.line();
    assert!(r.starts_with("b4 BAD"), "{r:?}");
    let bye = c.line();
    assert!(bye.starts_with("* BYE"), "{bye:?}");
    c.expect_eof();
    // Untagged garbage counts too.
    let mut c = Client::connect(gw.port());
    c.greeting();
    for _ in 0..4 {
        c.send("\x01\x02\r\n");
    }
    let lines = c.read_to_eof();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("* BAD")).count(),
        4,
        "{lines:?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("* BYE")),
        "{lines:?}"
    );
    assert_serves(gw.port());
}

// ---------------------------------------------------------------------------------------
// Authentication oracles and logs

/// A passwd-file with alice's password under SHA512-CRYPT at 20000 rounds (made with
/// `doveadm pw -s SHA512-CRYPT -r 20000 -p wonderland`), so checking it costs measurable
/// CPU: an unknown user that skipped the check would answer visibly sooner.
const ALICE_SHA512_CRYPT: &str = "alice:{SHA512-CRYPT}$6$rounds=20000$pjpc6rneWXVagtoi$JrW9rKalHGjcOH3V5DKHz6/DE/KDIYNiM4bFbk3DaVBf7DAM/RE6dvLM3YDMO6p23dGD3r8ULBNlb5b4RJfYd.\n";

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Unknown user and wrong password: the same words (RFC 9051 §6.2.3 gives nothing away),
/// and the same time within noise: 50 logins of each, interleaved on one connection,
/// medians compared. The brute-force delay is off for loopback (trusted network) and the
/// auth cache is off, so every try does the full passdb work.
#[test]
fn unknown_user_and_wrong_password_are_indistinguishable() {
    let dir = tempdir("imapgate-hostile-users-");
    let users = dir.path().join("users");
    std::fs::write(&users, ALICE_SHA512_CRYPT).expect("write users");
    let config = gateway_config(free_port(), free_port(), &users)
        + NO_HEALTH_CHECKS
        + "\n[auth.cache]\nsize = 0\n\n[auth.brute_force]\ntrusted_networks = [\"127.0.0.0/8\"]\n";
    let gw = Gateway::start(&config.replace("level = \"debug\"", "level = \"info\""));
    let mut c = Client::connect(gw.port());
    c.set_timeout(Duration::from_secs(30));
    c.greeting();
    let mut texts = std::collections::BTreeSet::new();
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    let mut try_login = |tag: &str, user: &str, pass: &str| {
        let started = Instant::now();
        c.send(&format!("{tag} LOGIN {user} {pass}\r\n"));
        let no = c.expect_no(tag);
        let took = started.elapsed();
        texts.insert(no[tag.len()..].to_string());
        took
    };
    // Warm up both paths (hash pool threads, file load).
    try_login("w1", "nobody", "x");
    try_login("w2", "alice", "x");
    for i in 0..50 {
        // Alternate which goes first, so drift in load hits both alike.
        if i % 2 == 0 {
            unknown.push(try_login(
                &format!("u{i}"),
                &format!("ghost{i}"),
                "wonderland",
            ));
            wrong.push(try_login(&format!("v{i}"), "alice", &format!("wrong{i}")));
        } else {
            wrong.push(try_login(&format!("v{i}"), "alice", &format!("wrong{i}")));
            unknown.push(try_login(
                &format!("u{i}"),
                &format!("ghost{i}"),
                "wonderland",
            ));
        }
    }
    let (mu, mw) = (median(&mut unknown), median(&mut wrong));
    eprintln!(
        "login failure medians: unknown user {mu:?} (p10 {:?}, p90 {:?}), wrong password {mw:?} \
         (p10 {:?}, p90 {:?})",
        unknown[5], unknown[45], wrong[5], wrong[45]
    );
    assert_eq!(texts.len(), 1, "different answers: {texts:?}");
    assert!(
        texts
            .iter()
            .all(|t| t.starts_with(" NO [AUTHENTICATIONFAILED]")),
        "{texts:?}"
    );
    // The hash check dominates both; a gateway that skips it for unknown users answers
    // them in a fraction of the time. Tolerance: 35% of the slower median plus 3 ms, which
    // holds on a loaded 2-core machine.
    let (lo, hi) = if mu < mw { (mu, mw) } else { (mw, mu) };
    assert!(
        hi.saturating_sub(lo) <= hi.mul_f64(0.35) + Duration::from_millis(3),
        "unknown user median {mu:?} vs wrong password median {mw:?}: distinguishable"
    );
    // And the check is really being paid for (else the comparison proves nothing).
    assert!(
        mw >= Duration::from_millis(2),
        "wrong password answered in {mw:?}: is the hash cheap?"
    );
}

/// Whether `line` carries a byte that would let a client forge or garble log lines: CR,
/// ESC, NUL, BEL, DEL or any other C0 control but TAB.
fn has_raw_control(line: &str) -> bool {
    line.chars()
        .any(|c| (c.is_control() && c != '\t') || c == '\u{7f}')
}

/// CR/LF and control characters in user names (LOGIN literals, AUTHENTICATE PLAIN, the
/// SASL LOGIN mechanism) and in ID values never reach a log line raw: every line of the
/// gateway's log is free of control characters, and no forged line appears.
#[test]
fn control_characters_in_user_names_and_id_values_never_reach_the_log_raw() {
    use base64::Engine as _;
    let gw = gateway_alone(&[("max_bad_commands", "100")]);
    let evil_user = "eve\r\nFORGED-LOGIN user=admin result=ok\u{1b}[2J\u{7}\u{8}end";
    let mut c = Client::connect(gw.port());
    c.greeting();
    // LOGIN with the user name as a literal (the only way to send CR/LF in it).
    c.send(&format!("c1 LOGIN {{{}}}\r\n", evil_user.len()));
    assert!(c.line().starts_with('+'));
    c.send(&format!("{evil_user} secret\r\n"));
    c.expect_no("c1");
    // AUTHENTICATE PLAIN with the same user name (NUL-separated, base64).
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{evil_user}\0secret"));
    c.send(&format!("c2 AUTHENTICATE PLAIN {plain}\r\n"));
    c.expect_no("c2");
    // SASL LOGIN: user name as its own base64 line.
    c.send("c3 AUTHENTICATE LOGIN\r\n");
    assert!(c.line().starts_with('+'));
    c.send(&format!(
        "{}\r\n",
        base64::engine::general_purpose::STANDARD.encode(evil_user)
    ));
    assert!(c.line().starts_with('+'));
    c.send(&format!(
        "{}\r\n",
        base64::engine::general_purpose::STANDARD.encode("secret")
    ));
    c.expect_no("c3");
    // ID values with CRLF and escapes, as literals.
    let evil_value = "v1\r\nFORGED-ID session closed\u{1b}]0;title\u{7}";
    c.send(&format!("c4 ID (\"name\" {{{}}}\r\n", evil_value.len()));
    assert!(c.line().starts_with('+'));
    c.send(&format!(
        "{evil_value} \"x-originating-ip\" \"1.2.3.4\")\r\n"
    ));
    c.expect_tagged("c4");
    // A tag and a command name cannot carry them (the grammar refuses), but try.
    c.send_bytes(b"c5\x1b[31m NOOP\r\n");
    c.send_bytes(b"c6 NO\x1bOP\r\n");
    c.send("c7 NOOP\r\n");
    before_probe(&mut c, "c7");
    c.send("c8 LOGOUT\r\n");
    c.expect_ok("c8");
    let log = gw.log();
    assert!(
        log.contains("eve\\r\\nFORGED-LOGIN"),
        "the user name was not logged (escaped) at all:\n{log}"
    );
    for line in log.split('\n') {
        assert!(
            !line.starts_with("FORGED") && !line.contains("\nFORGED"),
            "forged log line: {line:?}"
        );
        assert!(
            !has_raw_control(line),
            "raw control character in log line: {line:?}"
        );
    }
}

/// Client ID fields that imitate the gateway's forwarding (`x-originating-ip`, …): before
/// login the gateway answers ID itself and forwards only its own fields, so Dovecot logs
/// the real client address (`rip=127.0.0.1`), never the claimed one. After login, an ID is
/// relayed (the backend owns the session) but Dovecot only honours `x-originating-*` in its
/// login process from `login_trusted_networks`; the post-login ID changes nothing:
/// `doveadm who` still shows the real address, and so does the next login's log line.
#[test]
fn client_id_fields_imitating_forwarding_are_never_trusted() {
    let dovecot = Dovecot::start();
    let gw = gateway_before(&dovecot, &[]);
    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send(
        "i1 ID (\"x-originating-ip\" \"6.6.6.6\" \"x-originating-port\" \"666\" \
         \"x-connected-ip\" \"6.6.6.7\" \"x-session-ext-id\" \"forged-session\" \
         \"x-proxy-ttl\" \"1\")\r\n",
    );
    c.expect_ok("i1");
    c.send("i2 LOGIN alice wonderland\r\n");
    c.expect_ok("i2");
    // After login: relayed to Dovecot, which answers it itself.
    c.send("i3 ID (\"x-originating-ip\" \"6.6.6.6\")\r\n");
    c.expect_ok("i3");
    c.send("i4 SELECT INBOX\r\n");
    c.expect_ok("i4");
    let who = dovecot.doveadm(&["who", "-1"]);
    let mut login_line = String::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            login_line = dovecot
                .log()
                .lines()
                .find(|l| l.contains("Login: user=<alice>"))
                .unwrap_or_default()
                .to_string();
            !login_line.is_empty()
        }),
        "no login line in dovecot.log"
    );
    assert!(
        login_line.contains("rip=127.0.0.1"),
        "Dovecot logged another client address: {login_line}"
    );
    // The post-login ID (i3) is Dovecot's own business: its imap process logs what it
    // was sent (imap_id_log), which trusts nothing.  Everything else must be clean.
    let log: String = dovecot
        .log()
        .lines()
        .filter(|l| !(l.contains("imap(alice)") && l.contains("ID sent: x-originating-ip=6.6.6.6")))
        .map(|l| format!("{l}\n"))
        .collect();
    let all = log + &who.stdout;
    for forged in ["6.6.6.6", "6.6.6.7", "forged-session"] {
        assert!(
            !all.contains(forged),
            "the client's {forged} reached Dovecot as trusted:\n{all}"
        );
    }
    assert!(
        who.stdout.contains("127.0.0.1"),
        "doveadm who: {}",
        who.stdout
    );
    c.send("i5 LOGOUT\r\n");
    c.expect_ok("i5");
    assert_serves_mail(gw.port());
}
