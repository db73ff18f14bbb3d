//! Issue 7, "Done when" 1 and 5: the relay after login, through the built `imapgate` in
//! front of a real Dovecot.
//!
//! - A 30 MB message comes out of the gateway byte for byte as Dovecot stored it, and a 30
//!   MB APPEND goes in both as a synchronizing `{n}` and a non-synchronizing `{n+}` literal.
//! - 200 sessions at once, each doing SELECT/APPEND/SEARCH/FETCH/STORE/NOOP/IDLE/LOGOUT on
//!   its own message, all finish with the right answers.
//! - Clients that stop reading in the middle of a 30 MB FETCH do not make the gateway's
//!   memory grow past its per-session buffers (backpressure reaches Dovecot), and get every
//!   byte once they read again.
//!
//! Messages are made here (CRLF lines, numbered, so a dropped, doubled or reordered chunk
//! shows) and stored with a direct APPEND to Dovecot, which hands back exactly these bytes
//! for `BODY[]`.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::session::with_limits;
use common::{free_port, gateway_config, Client, Dovecot, Gateway};

/// The size of the big messages.
const BIG: usize = 30 * 1024 * 1024;

/// A per-read timeout generous enough for 30 MB through a debug build on a busy machine.
const SLOW: Duration = Duration::from_secs(60);

/// A gateway in front of `dovecot`, with `[limits]` overrides.
fn gateway(dovecot: &Dovecot, limits: &[(&str, &str)]) -> Gateway {
    let config = gateway_config(free_port(), dovecot.port(), &dovecot.users_file());
    Gateway::start(&with_limits(&config, limits))
}

/// An RFC 5322 message of exactly `size` octets: headers, then numbered lines of printable
/// ASCII, every line ending in CRLF.  `seed` makes messages differ.
fn message(seed: &str, size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut m = format!(
        "From: relay-test@imapgate.test\r\nTo: someone@imapgate.test\r\n\
         Subject: {seed}\r\nMessage-ID: <{seed}@imapgate.test>\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    assert!(m.len() + 2 <= size, "message too small for its headers");
    m.reserve(size - m.len());
    // The alphabet three times over, so any 68 octets from the first 64 offsets are a slice.
    let letters: Vec<u8> = ALPHABET.repeat(3);
    let mut i = 0usize;
    // Full lines ("NNNNNNNN " + 68 letters + CRLF = 79 octets) while more than 80 octets
    // are left, so that at least 2 remain for the last line's CRLF.  Built without format!:
    // tests run unoptimised, and this makes a million lines.
    while size - m.len() > 80 {
        let mut digits = [b'0'; 8];
        let mut n = i;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        m.extend_from_slice(&digits);
        m.push(b' ');
        let at = (i * 7 + seed.len()) % ALPHABET.len();
        m.extend_from_slice(&letters[at..at + 68]);
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    let left = size - m.len();
    m.extend(std::iter::repeat_n(b'x', left - 2));
    m.extend_from_slice(b"\r\n");
    assert_eq!(m.len(), size);
    m
}

/// Assert two large byte strings are equal without printing them.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let at = first.unwrap_or(got.len().min(want.len()));
    let ctx = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: {} octets received, {} expected; first difference at {at}:\n got  {:?}\n want {:?}",
        got.len(),
        want.len(),
        ctx(got),
        ctx(want)
    );
}

/// `n` when `line` ends in a literal announcement `{n}` or `{n+}`.
fn literal_len(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&body[open + 1..])
        .ok()?
        .trim_end_matches('+')
        .parse()
        .ok()
}

/// Read responses up to the tagged one for `tag`, keeping literal contents as raw bytes.
/// Returns (the response lines, literals removed; every literal's bytes; the tagged line).
fn read_raw(c: &mut Client, tag: &str) -> (Vec<String>, Vec<Vec<u8>>, String) {
    let prefix = format!("{tag} ");
    let mut lines = Vec::new();
    let mut literals = Vec::new();
    loop {
        let line = c.line_bytes();
        if let Some(n) = literal_len(&line) {
            literals.push(c.read_exact(n));
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if line.starts_with(&prefix) {
            return (lines, literals, line);
        }
        lines.push(line);
    }
}

/// Log in directly to Dovecot (or through the gateway) and SELECT INBOX.
fn selected(port: u16, user: &str, password: &str) -> Client {
    let mut c = Client::connect(port);
    c.greeting();
    c.send(&format!("l LOGIN {user} {password}\r\n"));
    c.expect_ok("l");
    c.send("s SELECT INBOX\r\n");
    c.expect_ok("s");
    c
}

/// APPEND `msg` to `user`'s INBOX directly at Dovecot; returns its UID.
fn append_direct(dovecot: &Dovecot, user: &str, password: &str, msg: &[u8]) -> u32 {
    let mut c = Client::connect(dovecot.port());
    c.set_timeout(SLOW);
    c.greeting();
    c.send(&format!("l LOGIN {user} {password}\r\n"));
    c.expect_ok("l");
    c.send(&format!("a APPEND INBOX {{{}+}}\r\n", msg.len()));
    c.send_bytes(msg);
    c.send("\r\n");
    let ok = c.expect_ok("a").pop().expect("tagged line");
    appenduid(&ok)
}

/// The UID in `TAG OK [APPENDUID validity uid] …`.
fn appenduid(tagged: &str) -> u32 {
    let code = tagged
        .split_once("[APPENDUID ")
        .unwrap_or_else(|| panic!("no APPENDUID in {tagged:?}"))
        .1;
    code.split([' ', ']'])
        .nth(1)
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("bad APPENDUID in {tagged:?}"))
}

/// `UID FETCH uid BODY.PEEK[]`: the literal's bytes.
fn fetch_body(c: &mut Client, tag: &str, uid: u32) -> Vec<u8> {
    c.send(&format!("{tag} UID FETCH {uid} BODY.PEEK[]\r\n"));
    let (lines, mut literals, tagged) = read_raw(c, tag);
    assert!(
        tagged.starts_with(&format!("{tag} OK")),
        "{tagged} after {lines:?}"
    );
    assert_eq!(literals.len(), 1, "one literal expected: {lines:?}");
    literals.pop().expect("one literal")
}

// ---------------------------------------------------------------------------------------
// Done when 1

#[test]
fn fetch_of_a_30_mb_message_is_byte_identical() {
    let dovecot = Dovecot::start();
    let msg = message("fetch-30mb", BIG);
    let uid = append_direct(&dovecot, "alice", "wonderland", &msg);
    let gw = gateway(&dovecot, &[]);

    let mut c = selected(gw.port(), "alice", "wonderland");
    c.set_timeout(SLOW);
    let started = Instant::now();
    let got = fetch_body(&mut c, "f", uid);
    let took = started.elapsed();
    assert_same(&got, &msg, "FETCH BODY[] through the gateway");
    eprintln!("30 MB FETCH through the (debug) gateway: {took:?}");

    // A second FETCH on the same session (buffers released and regrown) and a partial one.
    let got = fetch_body(&mut c, "g", uid);
    assert_same(&got, &msg, "second FETCH");
    c.send(&format!(
        "p UID FETCH {uid} BODY.PEEK[]<1000000.5000000>\r\n"
    ));
    let (_, literals, tagged) = read_raw(&mut c, "p");
    assert!(tagged.starts_with("p OK"), "{tagged}");
    assert_same(&literals[0], &msg[1_000_000..6_000_000], "partial FETCH");
    c.send("z LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("z");
}

#[test]
fn append_of_a_30_mb_literal_sync_and_non_sync() {
    let dovecot = Dovecot::start();
    let gw = gateway(&dovecot, &[]);

    let mut c = Client::connect(gw.port());
    c.set_timeout(SLOW);
    c.greeting();
    c.send("l LOGIN alice wonderland\r\n");
    let login = c.expect_ok("l").pop().expect("tagged line");
    // Dovecot offers LITERAL+ after login and the gateway passes it on.
    assert!(login.contains(" LITERAL+"), "{login}");

    // Synchronizing: the client waits for Dovecot's `+`, relayed.
    let sync = message("append-sync", BIG);
    c.send(&format!("a APPEND INBOX (\\Seen) {{{}}}\r\n", sync.len()));
    let cont = c.line();
    assert!(cont.starts_with("+"), "continuation expected, got {cont:?}");
    c.send_bytes(&sync);
    c.send("\r\n");
    let sync_uid = appenduid(&c.expect_ok("a").pop().expect("tagged"));

    // Non-synchronizing: everything in one go, no `+`.
    let nonsync = message("append-nonsync", BIG - 12345);
    let mut cmd = format!("b APPEND INBOX {{{}+}}\r\n", nonsync.len()).into_bytes();
    cmd.extend_from_slice(&nonsync);
    cmd.extend_from_slice(b"\r\n");
    c.send_bytes(&cmd);
    let (lines, tagged) = c.expect_tagged("b");
    assert!(tagged.starts_with("b OK"), "{tagged} after {lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with('+')),
        "no continuation for {{n+}}: {lines:?}"
    );
    let nonsync_uid = appenduid(&tagged);
    c.send("z LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("z");

    // What Dovecot stored, read directly.
    let mut d = selected(dovecot.port(), "alice", "wonderland");
    d.set_timeout(SLOW);
    assert_same(&fetch_body(&mut d, "f", sync_uid), &sync, "{n} APPEND");
    assert_same(
        &fetch_body(&mut d, "g", nonsync_uid),
        &nonsync,
        "{n+} APPEND",
    );
}

/// One mixed session: its own message in, searched, fetched, flagged, IDLE, LOGOUT.
fn mixed_session(port: u16, user: &str, i: usize) -> Result<(), String> {
    let check = |cond: bool, what: &str| {
        if cond {
            Ok(())
        } else {
            Err(format!("session {i}: {what}"))
        }
    };
    let mut c = Client::connect(port);
    c.set_timeout(Duration::from_secs(60));
    c.greeting();
    c.send(&format!("l LOGIN {user} secret\r\n"));
    c.expect_ok("l");
    c.send("s SELECT INBOX\r\n");
    c.expect_ok("s");
    let seed = format!("mixed-{i}");
    let msg = message(&seed, 2000 + i * 97);
    c.send(&format!("a APPEND INBOX {{{}+}}\r\n", msg.len()));
    c.send_bytes(&msg);
    c.send("\r\n");
    let uid = appenduid(&c.expect_ok("a").pop().expect("tagged"));
    c.send("n NOOP\r\n");
    c.expect_ok("n");
    c.send(&format!(
        "q UID SEARCH HEADER Message-ID \"<{seed}@imapgate.test>\"\r\n"
    ));
    let found = c.expect_ok("q");
    let hits: Vec<u32> = found
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().filter_map(|u| u.parse().ok()))
        .collect();
    check(
        hits == vec![uid],
        &format!("SEARCH found {hits:?}, want [{uid}]"),
    )?;
    let body = fetch_body(&mut c, "f", uid);
    check(
        body == msg,
        "FETCH BODY[] differs from the APPENDed message",
    )?;
    c.send(&format!("t UID STORE {uid} +FLAGS (\\Flagged)\r\n"));
    let stored = c.expect_ok("t");
    check(
        stored
            .iter()
            .any(|l| l.contains(&format!("UID {uid}")) && l.contains("\\Flagged")),
        &format!("STORE answer {stored:?}"),
    )?;
    c.send("i IDLE\r\n");
    let (_, cont) = c.expect_response(|r| r.starts_with('+'));
    check(cont.starts_with("+ idling") || cont.starts_with('+'), &cont)?;
    c.send("DONE\r\n");
    c.expect_ok("i");
    c.send(&format!("g UID FETCH {uid} (FLAGS)\r\n"));
    let flags = c.expect_ok("g");
    check(
        flags.iter().any(|l| l.contains("\\Flagged")),
        &format!("FLAGS after STORE: {flags:?}"),
    )?;
    c.send("z LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("z");
    c.expect_eof();
    Ok(())
}

#[test]
fn two_hundred_concurrent_mixed_sessions_all_finish() {
    const SESSIONS: usize = 200;
    const USERS: usize = 20;
    let mut builder = Dovecot::builder();
    for u in 0..USERS {
        builder = builder.user(&format!("mix{u:02}"), "secret");
    }
    let dovecot = builder.start();
    let gw = gateway(&dovecot, &[]);
    let port = gw.port();

    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    for i in 0..SESSIONS {
        let tx = tx.clone();
        thread::Builder::new()
            .name(format!("mixed-{i}"))
            .spawn(move || {
                let user = format!("mix{:02}", i % USERS);
                let r = std::panic::catch_unwind(|| mixed_session(port, &user, i)).unwrap_or_else(
                    |p| {
                        Err(format!(
                            "session {i} panicked: {}",
                            p.downcast_ref::<String>()
                                .map(String::as_str)
                                .or_else(|| p.downcast_ref::<&str>().copied())
                                .unwrap_or("?")
                        ))
                    },
                );
                let _ = tx.send(r);
            })
            .expect("spawn a session thread");
    }
    drop(tx);
    let deadline = started + Duration::from_secs(90);
    let mut failures = Vec::new();
    for done in 0..SESSIONS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(_) => panic!(
                "only {done} of {SESSIONS} sessions finished within 90 s; failures: {failures:?}"
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    eprintln!("{SESSIONS} mixed sessions in {:?}", started.elapsed());

    // Every message landed once, in its user's INBOX.
    for u in 0..USERS {
        let mut d = selected(dovecot.port(), &format!("mix{u:02}"), "secret");
        d.send("c SEARCH FLAGGED\r\n");
        let lines = d.expect_ok("c");
        let n = lines
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .map(|l| l.split_whitespace().count())
            .sum::<usize>();
        assert_eq!(n, SESSIONS / USERS, "mix{u:02}: {lines:?}");
    }
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
}

// ---------------------------------------------------------------------------------------
// Done when 5

/// The gateway's resident set size, from /proc/PID/status, in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

#[test]
fn clients_that_stop_reading_do_not_grow_gateway_memory() {
    const SESSIONS: usize = 20;
    // The bound, from src/relay/pump.rs: a direction stops reading once HIGH_WATER (64 KiB)
    // waits for the client and one read adds at most SCRATCH (32 KiB); `flush` keeps the
    // already-sent prefix no larger than what is left, so a session's client-bound buffer
    // holds under 2 × (64 + 32) KiB, in a Vec of at most 256 KiB capacity
    // (src/relay/pump/buffer_tests.rs); the partial-line buffer stays empty in a literal.
    // Hence 256 KiB per session; 8 MiB of slack covers the per-thread scratch buffers and
    // allocator arenas of tokio's workers touched for the first time.  Without
    // backpressure the gateway would buffer all it could read of 20 × 30 MB, far above it.
    const PER_SESSION_KIB: u64 = 256;
    const SLACK_KIB: u64 = 8 * 1024;
    let bound = SESSIONS as u64 * PER_SESSION_KIB + SLACK_KIB;
    // Read slowly (16 KiB every 2 ms or slower), then at full speed.
    const SLOW_OCTETS: usize = 6 * 1024 * 1024;

    let dovecot = Dovecot::start();
    let msg = message("stalled-30mb", BIG);
    let uid = append_direct(&dovecot, "alice", "wonderland", &msg);
    let gw = gateway(&dovecot, &[]);

    let mut clients: Vec<Client> = (0..SESSIONS)
        .map(|_| {
            let mut c = selected(gw.port(), "alice", "wonderland");
            c.set_timeout(SLOW);
            c
        })
        .collect();
    // Warm up: one full FETCH through the gateway, so buffers and code paths the relay
    // uses have been touched once before the baseline.
    assert_same(
        &fetch_body(&mut clients[0], "w", uid),
        &msg,
        "warm-up FETCH",
    );
    let before = vm_rss_kib(gw.pid());

    // Ask for the message on every session and read nothing.
    for c in &mut clients {
        c.send(&format!("f UID FETCH {uid} BODY.PEEK[]\r\n"));
    }
    let mut peak = before;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        peak = peak.max(vm_rss_kib(gw.pid()));
        thread::sleep(Duration::from_millis(100));
    }
    let growth = peak.saturating_sub(before);
    eprintln!(
        "gateway VmRSS {before} KiB before, peak {peak} KiB while {SESSIONS} clients stall \
         (growth {growth} KiB, bound {bound} KiB)"
    );
    assert!(
        growth < bound,
        "gateway memory grew {growth} KiB while {SESSIONS} clients did not read \
         (bound {bound} KiB = {SESSIONS} × {PER_SESSION_KIB} KiB + {SLACK_KIB} KiB)"
    );

    // Now read, slowly at first (a client on a slow link: the gateway's writes to it are
    // partial, the backend keeps offering more), then at full speed.  The same bound holds
    // throughout, and every session gets the whole message, intact.
    let msg = std::sync::Arc::new(msg);
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let msg = msg.clone();
            thread::spawn(move || {
                let line = c.line();
                let n =
                    literal_len(line.as_bytes()).unwrap_or_else(|| panic!("session {i}: {line}"));
                let mut got = Vec::with_capacity(n);
                while got.len() < SLOW_OCTETS.min(n) {
                    got.extend(c.read_exact(16 * 1024));
                    thread::sleep(Duration::from_millis(2));
                }
                got.extend(c.read_exact(n - got.len()));
                let (lines, _, tagged) = read_raw(&mut c, "f");
                assert!(
                    tagged.starts_with("f OK"),
                    "session {i}: {tagged} after {lines:?}"
                );
                assert_same(&got, &msg, &format!("session {i} after the stall"));
            })
        })
        .collect();
    let mut peak = before;
    while readers.iter().any(|r| !r.is_finished()) {
        peak = peak.max(vm_rss_kib(gw.pid()));
        thread::sleep(Duration::from_millis(50));
    }
    for r in readers {
        r.join().expect("reader thread");
    }
    let growth = peak.saturating_sub(before);
    eprintln!("gateway VmRSS peak {peak} KiB while the clients read (growth {growth} KiB)");
    assert!(
        growth < bound,
        "gateway memory grew {growth} KiB while {SESSIONS} clients read slowly (bound {bound} KiB)"
    );
}
