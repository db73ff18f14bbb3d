//! Issue 8, "Done when" 1–5: connection policy with the built `imapgate` before a real
//! Dovecot.
//!
//! 1. Every admission limit answers `* BYE [UNAVAILABLE]` before the greeting and counts
//!    `imapgate_connections_rejected_total{reason}`; the per-user session limit answers
//!    `NO [LIMIT]` at LOGIN and counts `imapgate_auth_attempts_total{result="limit"}`; a flood
//!    from one address leaves another address's logins alone.
//! 2. PREAUTH by client network and by TLS client certificate (Python's stock ssl + imaplib)
//!    reaches Dovecot as the mapped user through the master user; an untrusted address or an
//!    unmappable certificate gets `* OK`.
//! 3. PROXY protocol v1 and v2 from a trusted proxy set the client address (session span,
//!    policy, Dovecot's `rip=`); an untrusted sender, a missing or a late header is refused.
//! 4. 100 reloads, a third of them invalid, while 200 sessions run mixed commands: nothing
//!    dropped, no client error, every reload counted.
//! 5. SIGTERM: a 30 MB FETCH in flight completes byte for byte, then `* BYE`; idle and
//!    not-yet-logged-in sessions get `* BYE` at once, so do connections still in the accept
//!    queue; the process exits 0 within `shutdown_grace_secs`.  When the grace period runs
//!    out, a session with a command still in flight gets `* BYE` too; a second signal exits
//!    at once.
//!
//! Client addresses: 127.0.0.0/8 is all local on Linux, so binding a client to 127.0.0.2,
//! 127.0.0.3, … plays different clients with no setup.

mod common;
#[path = "common/observability.rs"]
mod obs;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::tls::Pki;
use common::{connect_from, eventually, run, toml_str, Client, Dovecot, Gateway};
use obs::{http, sample, scrape, TOKEN};

const WAIT: Duration = Duration::from_secs(15);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

// ---------------------------------------------------------------------------------------
// Config

/// The parts of a gateway config a test varies; `render` adds the backend, the passdb,
/// the admin listener (with the API token) and debug logging.
#[derive(Default)]
struct Conf {
    /// `[[listener]]` tables (see [`listener`]).
    listeners: String,
    /// Extra keys for the `[[backend]]` table (master user).
    backend: String,
    /// Keys of `[limits]`.
    limits: String,
    /// Whole tables after the passdb (`[[preauth]]` rules).
    tables: String,
}

impl Conf {
    fn render(&self, dovecot: &Dovecot, admin: u16) -> String {
        let users = toml_str(dovecot.users_file().to_str().expect("UTF-8 path"));
        format!(
            "{listeners}\n[[backend]]\nname = \"dovecot\"\naddress = \"127.0.0.1:{backend}\"\n{extra}\n\n\
             [[passdb]]\ntype = \"passwd-file\"\npath = {users}\n\n{tables}\n\n\
             [limits]\n{limits}\n\n\
             [admin]\naddress = \"127.0.0.1:{admin}\"\napi_token = \"{TOKEN}\"\n\n\
             [health]\ninterval_secs = 0\n\n\
             [log]\nlevel = \"debug\"\nformat = \"text\"\n",
            listeners = self.listeners,
            backend = dovecot.port(),
            extra = self.backend,
            tables = self.tables,
            limits = self.limits,
        )
    }
}

fn listener(name: &str, port: u16, extra: &str) -> String {
    format!("[[listener]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n{extra}\n")
}

const MASTER: (&str, &str) = ("gateway", "master-secret");

fn master_backend(method: &str) -> String {
    format!(
        "master_user = \"{}\"\nmaster_password = \"{}\"\nmaster_method = \"{method}\"\n",
        MASTER.0, MASTER.1
    )
}

/// Start a gateway and wait for its admin listener; returns it with its admin port.
fn start(conf: &Conf, dovecot: &Dovecot, admin: u16) -> Gateway {
    let gw = Gateway::start(&conf.render(dovecot, admin));
    assert!(
        common::wait_port(admin, Duration::from_secs(10)),
        "admin port"
    );
    gw
}

// ---------------------------------------------------------------------------------------
// Client helpers

/// The sum of `name` over the series with all of `labels`, scraped now.
fn metric(admin: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&scrape(admin), name, labels)
}

fn rejected(admin: u16, listener: &str, reason: &str) -> f64 {
    metric(
        admin,
        "imapgate_connections_rejected_total",
        &[("listener", listener), ("reason", reason)],
    )
}

/// Wait until the harness's readiness probe (one connection, closed at once, on a
/// one-listener gateway) has come and gone, so it holds no place under a limit.
fn settle(admin: u16) {
    assert!(
        eventually(WAIT, || metric(
            admin,
            "imapgate_sessions_closed_total",
            &[]
        ) >= 1.0
            && obs::sessions(admin).is_empty()),
        "sessions left: {:?}",
        obs::sessions(admin)
    );
}

fn greeted_from(source: Ipv4Addr, port: u16) -> Client {
    let mut c = Client::connect_from(source, port);
    c.greeting();
    c
}

/// Assert the connection is refused before the greeting: `* BYE [UNAVAILABLE] <text>…`,
/// then the server closes.
fn assert_refused(mut c: Client, text: &str) {
    let line = c.line();
    assert!(
        line.starts_with("* BYE [UNAVAILABLE] ") && line.contains(text),
        "expected a BYE greeting with {text:?}, got {line:?}"
    );
    c.expect_eof();
}

fn login(c: &mut Client, tag: &str, user: &str, password: &str) {
    c.send(&format!("{tag} LOGIN {user} {password}\r\n"));
    c.expect_ok(tag);
}

fn logout(mut c: Client) {
    c.send("zz LOGOUT\r\n");
    let (untagged, done) = c.expect_tagged("zz");
    assert!(done.starts_with("zz OK"), "{done:?}");
    assert!(
        untagged.iter().any(|l| l.starts_with("* BYE")),
        "{untagged:?}"
    );
}

/// The Message-IDs of every message in INBOX (SELECTs it).
fn message_ids(c: &mut Client) -> Vec<String> {
    c.send("s1 SELECT INBOX\r\n");
    c.expect_ok("s1");
    c.send("s2 FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])\r\n");
    let lines = c.expect_ok("s2");
    lines
        .iter()
        .filter_map(|l| {
            let start = l.find("<seed-")?;
            let end = l[start..].find('>')? + start;
            Some(l[start + 1..end].to_owned())
        })
        .collect()
}

/// Dovecot with alice (2 messages) and bob (3 messages) seeded, and a master user.
fn seeded_dovecot() -> Dovecot {
    let dovecot = Dovecot::builder().master_user(MASTER.0, MASTER.1).start();
    dovecot.seed("alice", 2, 0);
    dovecot.seed("bob", 3, 0);
    dovecot
}

fn bob_ids() -> Vec<String> {
    (1..=3)
        .map(|i| format!("seed-{i}.bob@imapgate.test"))
        .collect()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

// ---------------------------------------------------------------------------------------
// 1. Limits

#[test]
fn max_connections_and_overload_answer_bye_before_the_greeting() {
    let dovecot = Dovecot::start();

    // Hard cap: three connections, a fourth is turned away.
    let [port, admin] = obs::ports();
    let conf = Conf {
        listeners: listener("imap", port, ""),
        limits: "max_connections = 3".into(),
        ..Conf::default()
    };
    let gw = start(&conf, &dovecot, admin);
    settle(admin);
    let auth_before = metric(admin, "imapgate_auth_attempts_total", &[]);
    let mut held = vec![greeted_from(ip(1), port), greeted_from(ip(2), port)];
    let mut third = greeted_from(ip(3), port);
    login(&mut third, "a", "alice", "wonderland");
    held.push(third);
    for _ in 0..2 {
        assert_refused(
            Client::connect_from(ip(4), port),
            "Server busy; try again later",
        );
    }
    assert_eq!(rejected(admin, "imap", "max_connections"), 2.0);
    // The refusals never reached auth (nor, so, a backend).
    assert_eq!(
        metric(admin, "imapgate_auth_attempts_total", &[]),
        auth_before + 1.0
    );
    // Held sessions are unaffected; closing one frees its slot.
    held[2].send("n NOOP\r\n");
    held[2].expect_ok("n");
    logout(held.pop().expect("three held"));
    assert!(eventually(WAIT, || obs::sessions(admin).len() == 2));
    let mut again = greeted_from(ip(4), port);
    login(&mut again, "b", "bob", "builder");
    logout(again);
    drop(held);
    drop(gw);

    // Soft limit (overload shedding) below a high hard cap.
    let [port, admin] = obs::ports();
    let conf = Conf {
        listeners: listener("imap", port, ""),
        limits: "max_connections = 100\nsoft_max_sessions = 2".into(),
        ..Conf::default()
    };
    let _gw = start(&conf, &dovecot, admin);
    settle(admin);
    let mut a = greeted_from(ip(2), port);
    login(&mut a, "a", "alice", "wonderland");
    let b = greeted_from(ip(3), port);
    assert_refused(Client::connect_from(ip(4), port), "Server busy");
    assert_eq!(rejected(admin, "imap", "overload"), 1.0);
    assert_eq!(rejected(admin, "imap", "max_connections"), 0.0);
    drop(b);
    assert!(eventually(WAIT, || obs::sessions(admin).len() == 1));
    let c = greeted_from(ip(4), port);
    logout(c);
    logout(a);
}

#[test]
fn per_ip_connection_cap_and_rate() {
    let dovecot = Dovecot::start();

    // At most two live connections per address.
    let [port, admin] = obs::ports();
    let conf = Conf {
        listeners: listener("imap", port, ""),
        limits: "max_connections_per_ip = 2".into(),
        ..Conf::default()
    };
    let gw = start(&conf, &dovecot, admin);
    settle(admin);
    let mut first = greeted_from(ip(2), port);
    login(&mut first, "a", "alice", "wonderland");
    let second = greeted_from(ip(2), port);
    assert_refused(
        Client::connect_from(ip(2), port),
        "Too many connections from your address",
    );
    // Another address is not affected.
    let mut other = greeted_from(ip(3), port);
    login(&mut other, "b", "bob", "builder");
    let other2 = greeted_from(ip(3), port);
    assert_eq!(rejected(admin, "imap", "per_ip_connections"), 1.0);
    drop(second);
    assert!(eventually(WAIT, || obs::sessions(admin).len() == 3));
    logout(greeted_from(ip(2), port));
    drop((first, other, other2));
    drop(gw);

    // Token bucket: a burst of 3, then one new connection per second.
    let [port, admin] = obs::ports();
    let conf = Conf {
        listeners: listener("imap", port, ""),
        limits: "connection_rate_per_ip = 1.0\nconnection_burst_per_ip = 3\n\
                 exempt_networks = [\"127.0.0.6/32\"]"
            .into(),
        ..Conf::default()
    };
    let _gw = start(&conf, &dovecot, admin);
    for _ in 0..3 {
        logout(greeted_from(ip(4), port));
    }
    let refused_at = Instant::now();
    assert_refused(
        Client::connect_from(ip(4), port),
        "Connecting too fast; slow down",
    );
    assert_eq!(rejected(admin, "imap", "per_ip_rate"), 1.0);
    // Closing connections returns no tokens; other addresses have their own bucket.
    let mut c = greeted_from(ip(5), port);
    login(&mut c, "a", "alice", "wonderland");
    logout(c);
    // Exempt networks have no bucket.
    for _ in 0..10 {
        logout(greeted_from(ip(6), port));
    }
    // One token a second.
    thread::sleep(Duration::from_millis(1100).saturating_sub(refused_at.elapsed()));
    logout(greeted_from(ip(4), port));
    assert_eq!(rejected(admin, "imap", "per_ip_rate"), 1.0);
}

#[test]
fn flood_from_one_address_leaves_another_alone() {
    let dovecot = Dovecot::start();
    let [port, admin] = obs::ports();
    let conf = Conf {
        listeners: listener("imap", port, ""),
        limits:
            "max_connections_per_ip = 8\nconnection_rate_per_ip = 5.0\nconnection_burst_per_ip = 5"
                .into(),
        ..Conf::default()
    };
    let _gw = start(&conf, &dovecot, admin);
    settle(admin);

    // 127.0.0.2 floods: connect, read the first line, close, as fast as 16 tasks can.
    let stop = Arc::new(AtomicBool::new(false));
    let byes = Arc::new(AtomicU64::new(0));
    let oks = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, byes, oks) = (stop.clone(), byes.clone(), oks.clone());
        thread::spawn(move || flood(ip(2), port, 16, &stop, &byes, &oks))
    };
    let flood_started = Instant::now();
    thread::sleep(Duration::from_millis(300));
    // Meanwhile 127.0.0.3 logs in and works, again and again, within its own limits.
    for _ in 0..5 {
        let mut c = greeted_from(ip(3), port);
        login(&mut c, "a", "alice", "wonderland");
        c.send("s SELECT INBOX\r\n");
        c.expect_ok("s");
        logout(c);
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let flood_errors = flood.join().expect("flood thread");
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let (byes, oks) = (byes.load(Ordering::Relaxed), oks.load(Ordering::Relaxed));
    eprintln!("flood: {byes} BYE, {oks} OK, {flood_errors} errors in {flood_secs:.1} s");
    assert!(
        byes > 100,
        "the flood was not refused: {byes} BYE, {oks} OK"
    );
    // The flood got its burst and its rate (5 + 5/s), nothing more.
    assert!(
        oks as f64 <= 5.0 + 5.0 * flood_secs.ceil(),
        "{oks} flood connections admitted in {flood_secs:.1} s"
    );
    // Every refusal the flood saw was counted, as a rate refusal (or, for connections
    // still open when the next came, a per-address one).
    let counted =
        rejected(admin, "imap", "per_ip_rate") + rejected(admin, "imap", "per_ip_connections");
    assert!(
        counted >= byes as f64 && counted <= (byes + flood_errors) as f64,
        "counted {counted}, seen {byes} (+{flood_errors} unread)"
    );
}

/// Connect from `source` with `tasks` concurrent tasks until `stop`; count BYE and OK
/// greetings; returns the connections that ended without a greeting.
fn flood(
    source: Ipv4Addr,
    port: u16,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    byes: &Arc<AtomicU64>,
    oks: &Arc<AtomicU64>,
) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let errors = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (stop, byes, oks, errors) =
                (stop.clone(), byes.clone(), oks.clone(), errors.clone());
            handles.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                    socket
                        .bind(SocketAddr::from((source, 0)))
                        .expect("bind source");
                    let Ok(mut s) = socket
                        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                        .await
                    else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                    match read {
                        Ok(Ok(n)) if buf[..n].starts_with(b"* BYE [UNAVAILABLE]") => {
                            byes.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(Ok(n)) if buf[..n].starts_with(b"* OK") => {
                            oks.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for h in handles {
            h.await.expect("flood task");
        }
    });
    errors.load(Ordering::Relaxed)
}

#[test]
fn per_user_session_limit_answers_no_limit_at_login() {
    let dovecot = Dovecot::start();
    let [port, admin] = obs::ports();
    let conf = Conf {
        listeners: listener("imap", port, ""),
        limits: "max_sessions_per_user = 2".into(),
        ..Conf::default()
    };
    let _gw = start(&conf, &dovecot, admin);
    let logins_before = count(&dovecot.log(), "Login: user=<alice>");
    let mut one = greeted_from(ip(2), port);
    login(&mut one, "a", "alice", "wonderland");
    let mut two = greeted_from(ip(3), port);
    login(&mut two, "a", "alice", "wonderland");
    // A third, from any address, is refused at LOGIN; the connection stays usable.
    let mut three = greeted_from(ip(4), port);
    three.send("a LOGIN alice wonderland\r\n");
    let no = three.expect_no("a");
    assert!(no.starts_with("a NO [LIMIT] "), "{no:?}");
    assert_eq!(
        metric(
            admin,
            "imapgate_auth_attempts_total",
            &[("result", "limit")]
        ),
        1.0
    );
    // Other users are not limited by alice's sessions.
    login(&mut three, "b", "bob", "builder");
    logout(three);
    // The refused login never reached Dovecot: bob's, after it, is logged, alice's
    // are the two admitted ones.
    assert!(eventually(WAIT, || dovecot
        .log()
        .contains("Login: user=<bob>")));
    assert_eq!(
        count(&dovecot.log(), "Login: user=<alice>") - logins_before,
        2
    );
    // A session ending frees its place.
    logout(one);
    let mut again = greeted_from(ip(4), port);
    assert!(eventually(WAIT, || {
        again.send("c LOGIN alice wonderland\r\n");
        let (_, tagged) = again.expect_tagged("c");
        tagged.starts_with("c OK")
    }));
    logout(again);
    logout(two);
}

// ---------------------------------------------------------------------------------------
// 2. PREAUTH

#[test]
fn preauth_by_network_logs_in_as_the_rule_user_via_the_master_user() {
    let dovecot = seeded_dovecot();
    for method in ["authzid", "separator"] {
        let [port, admin] = obs::ports();
        let conf = Conf {
            listeners: listener("imap", port, ""),
            backend: master_backend(method),
            tables: "[[preauth]]\nnetworks = [\"127.0.0.2/32\"]\nuser = \"bob\"\n".into(),
            ..Conf::default()
        };
        let gw = start(&conf, &dovecot, admin);
        let masters_before = count(&dovecot.log(), "Master user logging in as bob");

        let mut c = Client::connect_from(ip(2), port);
        let greeting = c.line();
        assert!(
            greeting.starts_with("* PREAUTH [CAPABILITY IMAP4rev1"),
            "{method}: {greeting:?}"
        );
        assert!(greeting.ends_with("Logged in as bob"), "{greeting:?}");
        // bob's mailbox, not anybody else's.
        assert_eq!(message_ids(&mut c), bob_ids(), "{method}");
        // Already authenticated: LOGIN is refused by the gateway.
        c.send("l LOGIN alice wonderland\r\n");
        let (_, refused) = c.expect_tagged("l");
        assert!(refused.starts_with("l BAD"), "{refused:?}");
        logout(c);
        assert!(
            eventually(WAIT, || count(
                &dovecot.log(),
                "Master user logging in as bob"
            ) == masters_before + 1),
            "{method}: {}",
            dovecot.log()
        );
        assert!(gw.log().contains("mechanism=\"PREAUTH\""), "{}", gw.log());

        // The same client from an untrusted address, or another one: the OK greeting.
        for source in [ip(1), ip(3)] {
            let mut c = Client::connect_from(source, port);
            c.greeting();
            login(&mut c, "a", "alice", "wonderland");
            assert_eq!(message_ids(&mut c).len(), 2);
            logout(c);
        }
    }
}

#[test]
fn preauth_by_client_certificate_maps_the_email_to_the_user() {
    let dovecot = seeded_dovecot();
    let mut pki = Pki::new("imapgate policy test CA");
    let (cert, key) = pki.server("server", &["imap.test", "127.0.0.1"]);
    let bob = pki.client("bob", "Bob the Builder", "bob@example.com");
    let carol = pki.client("carol", "Carol", "carol@elsewhere.test");
    let [optional, required, admin] = obs::ports();
    let tls = |client_auth: &str| {
        format!(
            "tls = \"implicit\"\ncertificates = [{{ cert = {}, key = {} }}]\nclient_auth = \"{client_auth}\"\nclient_ca = {}\n",
            toml_str(cert.to_str().expect("UTF-8")),
            toml_str(key.to_str().expect("UTF-8")),
            toml_str(pki.ca_file().to_str().expect("UTF-8")),
        )
    };
    let conf = Conf {
        listeners: listener("imaps-optional", optional, &tls("optional"))
            + &listener("imaps-required", required, &tls("required")),
        backend: master_backend("authzid"),
        tables: "[[preauth]]\ncertificate = \"email\"\ndomain = \"example.com\"\n".into(),
        ..Conf::default()
    };
    let _gw = start(&conf, &dovecot, admin);
    let ca = pki.ca_file();
    let python =
        |port: u16, source: Ipv4Addr, cert: Option<&(std::path::PathBuf, std::path::PathBuf)>| {
            let mut cmd = Command::new("python3");
            cmd.arg(common::repo().join("tests/clients/preauth_tls.py"))
                .arg(port.to_string())
                .arg(&ca)
                .arg("imap.test")
                .arg(source.to_string())
                .env("PYTHONDONTWRITEBYTECODE", "1");
            if let Some((c, k)) = cert {
                cmd.arg(c).arg(k);
            }
            run(&mut cmd, Duration::from_secs(60))
        };
    let masters_before = count(&dovecot.log(), "Master user logging in as bob");
    // bob@example.com → bob, on both listeners, from any address.
    for (port, source) in [(optional, ip(1)), (required, ip(3))] {
        let out = python(port, source, Some(&bob));
        out.assert_success("preauth_tls.py with bob's certificate");
        assert!(
            out.stdout
                .contains("greeting * PREAUTH [CAPABILITY IMAP4rev1")
                && out.stdout.contains("Logged in as bob")
                && out.stdout.contains("state AUTH"),
            "{}",
            out.stdout
        );
        let ids: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("message-id "))
            .collect();
        assert_eq!(ids, bob_ids(), "{}", out.stdout);
    }
    assert!(
        eventually(WAIT, || count(
            &dovecot.log(),
            "Master user logging in as bob"
        ) == masters_before + 2),
        "{}",
        dovecot.log()
    );
    // A certificate outside the domain cannot be mapped: the OK greeting.
    let out = python(optional, ip(1), Some(&carol));
    out.assert_success("preauth_tls.py with carol's certificate");
    assert!(
        out.stdout.contains("greeting * OK") && out.stdout.contains("state NONAUTH"),
        "{}",
        out.stdout
    );
    // No certificate where it is optional: the OK greeting; where required: no handshake.
    let out = python(optional, ip(1), None);
    out.assert_success("preauth_tls.py without a certificate");
    assert!(out.stdout.contains("state NONAUTH"), "{}", out.stdout);
    let out = python(required, ip(1), None);
    assert!(!out.success(), "{}", out.stdout);
    assert!(!out.stdout.contains("greeting"), "{}", out.stdout);
}

// ---------------------------------------------------------------------------------------
// 3. PROXY protocol

/// A PROXY protocol v2 header for TCP over IPv4 (§2.2), written out byte by byte.
fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

#[test]
fn proxy_protocol_from_trusted_proxies_sets_the_client_address() {
    let dovecot = seeded_dovecot();
    let [port, admin] = obs::ports();
    let conf = Conf {
        // The clients behind the proxy: two networks may send cleartext passwords.
        listeners: listener(
            "proxied",
            port,
            "proxy_protocol = \"required\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
             proxy_protocol_timeout_secs = 1\n\
             trusted_networks = [\"203.0.113.0/24\", \"198.51.100.0/24\"]\n",
        ),
        backend: master_backend("authzid"),
        tables: "[[preauth]]\nnetworks = [\"192.0.2.55/32\"]\nuser = \"bob\"\n".into(),
        ..Conf::default()
    };
    let gw = start(&conf, &dovecot, admin);
    let gw_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    // The harness's readiness probe connected and closed without a header: refused too.
    assert!(eventually(WAIT, || rejected(
        admin,
        "proxied",
        "proxy_protocol"
    ) >= 1.0));
    let refused_before = rejected(admin, "proxied", "proxy_protocol");

    // v2 from the trusted proxy (127.0.0.1): the header's address is the client's.
    let mut tcp = connect_from(ip(1), port).expect("connect");
    tcp.write_all(&proxy_v2(
        "203.0.113.7:40001".parse().expect("addr"),
        gw_addr,
    ))
    .expect("send header");
    let mut c = Client::from_stream(tcp, port);
    c.greeting();
    login(&mut c, "a", "alice", "wonderland");
    assert_eq!(message_ids(&mut c).len(), 2);
    logout(c);

    // v1, written in two pieces (the header is read without reading past it).
    let mut tcp = connect_from(ip(1), port).expect("connect");
    tcp.write_all(b"PROXY TCP4 198.51.100.9 127.0.0.1 ")
        .expect("send");
    thread::sleep(Duration::from_millis(50));
    tcp.write_all(format!("40002 {port}\r\n").as_bytes())
        .expect("send");
    let mut c = Client::from_stream(tcp, port);
    c.greeting();
    login(&mut c, "a", "alice", "wonderland");
    logout(c);

    // Seen by Dovecot (ID x-originating-ip, trusted from loopback) and in the gateway's
    // session span.  (Dovecot's log process may write a moment after the login.)
    for rip in ["rip=203.0.113.7", "rip=198.51.100.9"] {
        assert!(
            eventually(WAIT, || dovecot
                .log()
                .lines()
                .any(|l| l.contains("Login: user=<alice>") && l.contains(rip))),
            "no login with {rip} in dovecot.log:\n{}",
            dovecot.log()
        );
    }
    let gw_log = gw.log();
    for peer in ["peer=203.0.113.7:40001", "peer=198.51.100.9:40002"] {
        assert!(
            gw_log
                .lines()
                .any(|l| l.contains(peer) && l.contains("connection opened")),
            "no session span with {peer}:\n{gw_log}"
        );
    }

    // Policy follows the header's address too: a client outside trusted_networks may not
    // send a cleartext password, and 192.0.2.55 is pre-authenticated as bob.
    let mut tcp = connect_from(ip(1), port).expect("connect");
    tcp.write_all(&proxy_v2(
        "192.0.2.200:40003".parse().expect("addr"),
        gw_addr,
    ))
    .expect("send header");
    let mut c = Client::from_stream(tcp, port);
    c.greeting();
    c.send("c CAPABILITY\r\n");
    let caps = c.expect_ok("c");
    assert!(caps[0].contains("LOGINDISABLED"), "{caps:?}");
    logout(c);
    let mut tcp = connect_from(ip(1), port).expect("connect");
    tcp.write_all(&proxy_v2(
        "192.0.2.55:40004".parse().expect("addr"),
        gw_addr,
    ))
    .expect("send header");
    let mut c = Client::from_stream(tcp, port);
    let greeting = c.line();
    assert!(greeting.starts_with("* PREAUTH "), "{greeting:?}");
    assert_eq!(message_ids(&mut c), bob_ids());
    logout(c);

    // Refused: a header from an untrusted address, no header, a header too late.
    let mut tcp = connect_from(ip(2), port).expect("connect");
    tcp.write_all(&proxy_v2(
        "203.0.113.8:40005".parse().expect("addr"),
        gw_addr,
    ))
    .expect("send header");
    assert_refused(
        Client::from_stream(tcp, port),
        "PROXY protocol header required",
    );
    let mut tcp = connect_from(ip(1), port).expect("connect");
    tcp.write_all(b"a1 LOGIN alice wonderland\r\n")
        .expect("send");
    assert_refused(
        Client::from_stream(tcp, port),
        "PROXY protocol header required",
    );
    let started = Instant::now();
    let tcp = connect_from(ip(1), port).expect("connect");
    assert_refused(
        Client::from_stream(tcp, port),
        "PROXY protocol header required",
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "refused after {waited:?} (timeout 1 s)"
    );
    assert_eq!(
        rejected(admin, "proxied", "proxy_protocol") - refused_before,
        3.0
    );
    assert!(!dovecot.log().contains("203.0.113.8"));
}

// ---------------------------------------------------------------------------------------
// 4. Reloads under load

const SESSIONS: usize = 200;

/// Listeners follow reloads: a removed address stops accepting while its session goes on,
/// a new one serves at once, and an address that cannot be bound fails the whole reload
/// (counted, nothing changed).
#[test]
fn listeners_follow_reloads() {
    let dovecot = Dovecot::start();
    let [a, b, c, admin] = obs::ports();
    let conf = |listeners: String| Conf {
        listeners,
        ..Conf::default()
    };
    let gw = start(&conf(listener("first", a, "")), &dovecot, admin);
    let reload = |listeners: String| {
        fs::write(gw.config_path(), conf(listeners).render(&dovecot, admin)).expect("write");
        http(admin, "POST", "/api/reload", Some(TOKEN), None)
    };
    let log_in = |port: u16| {
        let mut s = Client::connect(port);
        assert!(s.greeting().starts_with("* OK"));
        s.send("l LOGIN alice wonderland\r\n");
        s.expect_ok("l");
        s
    };
    let mut on_a = log_in(a);
    on_a.send("s SELECT INBOX\r\n");
    on_a.expect_ok("s");

    // `first` (a) removed, `second` (b) added.
    let r = reload(listener("second", b, ""));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(("127.0.0.1", a))
            .is_err()),
        "port {a} still accepts after its listener was removed"
    );
    let mut on_b = log_in(b);
    on_b.send("n NOOP\r\n");
    on_b.expect_ok("n");
    // The session on the removed listener goes on.
    on_a.send("n NOOP\r\n");
    on_a.expect_ok("n");
    assert!(
        metric(
            admin,
            "imapgate_connections_accepted_total",
            &[("listener", "second")]
        ) >= 1.0
    );

    // c is taken by someone else: the reload fails whole, b keeps serving, c is not ours.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", c)).expect("bind c");
    let r = reload(listener("second", b, "") + &listener("third", c, ""));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("cannot bind"), "{}", r.body);
    assert_eq!(
        metric(
            admin,
            "imapgate_config_reloads_total",
            &[("result", "failed")]
        ),
        1.0
    );
    drop(squatter);
    log_in(b);
    assert!(std::net::TcpStream::connect(("127.0.0.1", c)).is_err());

    // Now it can be bound: both serve.
    let r = reload(listener("second", b, "") + &listener("third", c, ""));
    assert_eq!(r.status, 200, "{}", r.body);
    log_in(c);
    log_in(b);
    on_a.send("z LOGOUT\r\n");
    on_a.expect_bye();
    on_b.send("z LOGOUT\r\n");
    on_b.expect_bye();
}

#[test]
fn reloads_under_load_drop_no_session() {
    const USERS: usize = 20;
    const RELOADS: usize = 100;
    let mut builder = Dovecot::builder();
    for u in 0..USERS {
        builder = builder.user(&format!("load{u}"), "pw");
    }
    let dovecot = builder.start();
    let [port, admin] = obs::ports();
    // Valid configs alternate the SASL mechanisms offered, so a fresh connection shows
    // which config is in force.
    let conf = |mechanisms: &str| Conf {
        listeners: listener("imap", port, &format!("mechanisms = [{mechanisms}]")),
        // The machine is shared: 200 logins may find Dovecot slow to greet.
        limits: "backend_connect_timeout_secs = 30".into(),
        ..Conf::default()
    };
    let with_plain = conf("\"PLAIN\", \"LOGIN\"").render(&dovecot, admin);
    let without_plain = conf("\"LOGIN\"").render(&dovecot, admin);
    let mut gw = start(&conf("\"PLAIN\", \"LOGIN\""), &dovecot, admin);
    let path = gw.config_path();
    settle(admin);
    let closed_before = metric(admin, "imapgate_sessions_closed_total", &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let logged_in = Arc::new(AtomicU64::new(0));
    let commands = Arc::new(AtomicU64::new(0));
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (stop, logged_in, commands) = (stop.clone(), logged_in.clone(), commands.clone());
            thread::Builder::new()
                .name(format!("session-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || mixed_session(port, i, USERS, &stop, &logged_in, &commands))
                .expect("spawn session thread")
        })
        .collect();
    // Wait until every session is logged in and working.
    assert!(
        eventually(Duration::from_secs(60), || logged_in
            .load(Ordering::Relaxed)
            == SESSIONS as u64),
        "only {} sessions logged in",
        logged_in.load(Ordering::Relaxed)
    );

    let invalid = [
        // Not TOML.
        "[[listener]\nname = \"imap\"\n".to_owned(),
        // An unknown key.
        with_plain.replace("[limits]\n", "[limits]\nmax_conections = 5\n"),
        // A value validate() refuses.
        with_plain.replace("[limits]\n", "[limits]\nidle_timeout_secs = 10\n"),
        // Valid config, but its passdb file is missing (fails while building).
        with_plain.replace(
            dovecot.users_file().to_str().expect("UTF-8"),
            "/nonexistent/users",
        ),
    ];
    let reloads = |admin| {
        metric(admin, "imapgate_config_reloads_total", &[("result", "ok")])
            + metric(
                admin,
                "imapgate_config_reloads_total",
                &[("result", "failed")],
            )
    };
    let base = reloads(admin);
    let mut plain_offered = true;
    let (mut ok, mut failed) = (0, 0);
    let started = Instant::now();
    for k in 0..RELOADS {
        let bad = k % 3 == 2;
        let text = if bad {
            &invalid[(k / 3) % invalid.len()]
        } else if plain_offered {
            &without_plain
        } else {
            &with_plain
        };
        // Replace the file in one step: the gateway never reads half of it.
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).expect("write config");
        fs::rename(&tmp, &path).expect("replace config");
        if k % 2 == 0 {
            let r = http(admin, "POST", "/api/reload", Some(TOKEN), None);
            assert_eq!(
                r.status,
                if bad { 500 } else { 200 },
                "reload {k}: {}",
                r.body
            );
        } else {
            // Signals do not queue: wait for each SIGHUP to be counted.
            gw.signal("HUP");
            assert!(
                eventually(WAIT, || reloads(admin) == base + (k + 1) as f64),
                "SIGHUP {k} not counted"
            );
        }
        if bad {
            failed += 1;
        } else {
            ok += 1;
            plain_offered = !plain_offered;
        }
        // New sessions get the config in force (a failed reload keeps the last good one).
        let mut probe = Client::connect(port);
        probe.greeting();
        probe.send("c CAPABILITY\r\n");
        let caps = probe.expect_ok("c");
        assert_eq!(
            caps[0].contains("AUTH=PLAIN"),
            plain_offered,
            "after reload {k}: {caps:?}"
        );
        logout(probe);
    }
    let reload_time = started.elapsed();
    // Let the sessions run on the last config a moment, then end them.
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for (i, s) in sessions.into_iter().enumerate() {
        if let Err(e) = s.join() {
            failures.push(format!(
                "session {i}: {}",
                e.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("panic")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} sessions failed: {failures:#?}",
        failures.len()
    );
    eprintln!(
        "{RELOADS} reloads ({ok} ok, {failed} failed) in {reload_time:?}; {} commands in {SESSIONS} sessions",
        commands.load(Ordering::Relaxed)
    );
    assert_eq!(reloads(admin) - base, RELOADS as f64);
    assert_eq!(
        metric(
            admin,
            "imapgate_config_reloads_total",
            &[("result", "failed")]
        ),
        failed as f64
    );
    // Every session ended by its own LOGOUT (the probes too).
    assert!(eventually(WAIT, || obs::sessions(admin).is_empty()));
    let text = scrape(admin);
    let closed = sample(&text, "imapgate_sessions_closed_total", &[]) - closed_before;
    let logouts = sample(
        &text,
        "imapgate_sessions_closed_total",
        &[("reason", "logout")],
    );
    assert_eq!(closed, (SESSIONS + RELOADS) as f64, "{text}");
    assert!(logouts >= (SESSIONS + RELOADS) as f64, "{text}");
    assert!(gw.is_running());
}

/// One logged-in session looping SELECT, APPEND, FETCH, SEARCH, NOOP until `stop`, then
/// LOGOUT.  Panics on any unexpected answer.
fn mixed_session(
    port: u16,
    i: usize,
    users: usize,
    stop: &AtomicBool,
    logged_in: &AtomicU64,
    commands: &AtomicU64,
) {
    // Ramp up over 3 s: the sandbox Dovecot runs at most 100 login processes at once.
    thread::sleep(Duration::from_millis(15 * i as u64));
    let mut c = Client::connect(port);
    // The machine is shared and busy: generous, but still bounded.
    c.set_timeout(Duration::from_secs(30));
    c.greeting();
    login(&mut c, "l", &format!("load{}", i % users), "pw");
    logged_in.fetch_add(1, Ordering::Relaxed);
    // Work starts once every session is in: logins do not queue behind the load.
    while logged_in.load(Ordering::Relaxed) < SESSIONS as u64 {
        thread::sleep(Duration::from_millis(20));
    }
    let message = format!(
        "From: load@imapgate.test\r\nSubject: session {i}\r\nMessage-ID: <load-{i}@imapgate.test>\r\n\r\nhello from session {i}\r\n"
    );
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        c.send(&format!(
            "a{n} APPEND INBOX {{{}+}}\r\n{message}\r\n",
            message.len()
        ));
        c.expect_ok(&format!("a{n}"));
        c.send(&format!("s{n} SELECT INBOX\r\n"));
        c.expect_ok(&format!("s{n}"));
        c.send(&format!(
            "f{n} FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
        ));
        c.expect_ok(&format!("f{n}"));
        c.send(&format!("q{n} SEARCH SUBJECT \"session {i}\"\r\n"));
        let lines = c.expect_ok(&format!("q{n}"));
        assert!(lines[0].starts_with("* SEARCH "), "{lines:?}");
        c.send(&format!("n{n} NOOP\r\n"));
        c.expect_ok(&format!("n{n}"));
        commands.fetch_add(5, Ordering::Relaxed);
        // About 2,000 commands a second in all: load, not a benchmark.
        thread::sleep(Duration::from_millis(400));
    }
    logout(c);
}

// ---------------------------------------------------------------------------------------
// 5. Graceful shutdown

#[test]
fn sigterm_finishes_the_fetch_in_flight_then_byes_everyone_and_exits_0() {
    const SIZE: usize = 30 * 1024 * 1024;
    const GRACE: u64 = 10;
    let dovecot = Dovecot::start();
    run(
        Command::new("python3")
            .arg(common::repo().join("scripts/seed-maildir"))
            .arg(dovecot.maildir("alice"))
            .args(["1", "--big", "1", "--big-size", &SIZE.to_string()]),
        Duration::from_secs(120),
    )
    .assert_success("seed-maildir");
    let message = only_file(&dovecot.maildir("alice").join("new"));
    assert!(message.len() >= SIZE - 100, "{} bytes", message.len());
    let [port, admin] = obs::ports();
    let conf = Conf {
        listeners: listener("imap", port, ""),
        limits: format!("shutdown_grace_secs = {GRACE}"),
        ..Conf::default()
    };
    let mut gw = start(&conf, &dovecot, admin);

    let mut idle = greeted_from(ip(2), port);
    login(&mut idle, "a", "alice", "wonderland");
    idle.send("s SELECT INBOX\r\n");
    idle.expect_ok("s");
    let mut unauthenticated = greeted_from(ip(3), port);
    let mut fetch = greeted_from(ip(4), port);
    login(&mut fetch, "a", "alice", "wonderland");
    fetch.send("s SELECT INBOX\r\n");
    fetch.expect_ok("s");
    fetch.send("f FETCH 1 BODY.PEEK[]\r\n");
    let head = fetch.line();
    assert_eq!(head, format!("* 1 FETCH (BODY[] {{{}}}", message.len()));
    // The FETCH is in flight: the client reads nothing more, so the gateway's buffers fill
    // and the rest waits in Dovecot.
    let term = Instant::now();
    gw.signal("TERM");
    // Idle and unauthenticated sessions are told at once.
    for (what, c) in [
        ("idle", &mut idle),
        ("unauthenticated", &mut unauthenticated),
    ] {
        let bye = c.line();
        assert!(
            bye.starts_with("* BYE [UNAVAILABLE] ") && bye.contains("shutting down"),
            "{what}: {bye:?}"
        );
        c.expect_eof();
        assert!(
            term.elapsed() < Duration::from_secs(2),
            "{what}: BYE after {:?}",
            term.elapsed()
        );
    }
    // New connections are no longer accepted.
    assert!(eventually(WAIT, || connect_from(ip(5), port).is_err()));
    thread::sleep(Duration::from_millis(300));
    assert!(gw.is_running(), "exited with the FETCH in flight");
    // The FETCH completes byte for byte, then BYE.
    fetch.set_timeout(Duration::from_secs(30));
    let body = fetch.read_exact(message.len());
    assert!(body == message, "FETCH body differs from the message file");
    assert_eq!(fetch.line(), ")");
    let done = fetch.line();
    assert!(done.starts_with("f OK"), "{done:?}");
    let bye = fetch.line();
    assert!(
        bye.starts_with("* BYE [UNAVAILABLE] ") && bye.contains("shutting down"),
        "{bye:?}"
    );
    fetch.expect_eof();
    let status = gw
        .wait_exit(Duration::from_secs(GRACE))
        .expect("imapgate did not exit within the grace period");
    assert!(status.success(), "exit status {status}");
    assert!(
        term.elapsed() < Duration::from_secs(GRACE),
        "exited {:?} after SIGTERM",
        term.elapsed()
    );
    let log = gw.log();
    assert!(log.contains("all sessions ended; exiting"), "{log}");
}

#[test]
fn sigterm_answers_connections_waiting_in_the_accept_queue() {
    const QUEUED: usize = 100;
    const GRACE: u64 = 20;
    let dovecot = Dovecot::start();
    let [port, admin] = obs::ports();
    let conf = Conf {
        listeners: listener("imap", port, ""),
        limits: format!("shutdown_grace_secs = {GRACE}"),
        ..Conf::default()
    };
    let mut gw = start(&conf, &dovecot, admin);
    settle(admin);
    // Stopped, the gateway accepts nothing; the kernel completes the handshakes and queues
    // the connections.  SIGTERM is then pending when it resumes.
    gw.signal("STOP");
    let queued: Vec<Client> = (0..QUEUED)
        .map(|i| {
            let mut c = Client::connect_from(ip(2 + (i % 4) as u8), port);
            c.set_timeout(Duration::from_secs(10));
            c
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let term = Instant::now();
    gw.signal("TERM");
    gw.signal("CONT");
    // Each gets a BYE: as its greeting if the accept loop had stopped, or right after an OK
    // greeting if it was accepted just before.
    let mut greeted_bye = 0;
    for (i, mut c) in queued.into_iter().enumerate() {
        let mut line = c.line();
        if line.starts_with("* OK") {
            line = c.line();
        } else {
            greeted_bye += 1;
        }
        assert!(
            line.starts_with("* BYE [UNAVAILABLE] ") && line.contains("shutting down"),
            "queued connection {i}: {line:?}"
        );
        c.expect_eof();
    }
    let status = gw
        .wait_exit(Duration::from_secs(GRACE))
        .expect("imapgate did not exit");
    assert!(status.success(), "exit status {status}");
    assert!(
        term.elapsed() < Duration::from_secs(5),
        "exit took {:?}: a queued connection waited for the grace period",
        term.elapsed()
    );
    eprintln!("{greeted_bye} of {QUEUED} queued connections greeted with BYE");
}

/// A logged-in session with an APPEND stuck halfway through its literal: a command in
/// flight that never finishes by itself.
fn stuck_append(port: u16) -> Client {
    let mut c = greeted_from(ip(2), port);
    login(&mut c, "a", "alice", "wonderland");
    c.send("p APPEND INBOX {100}\r\n");
    let go = c.line();
    assert!(go.starts_with('+'), "{go:?}");
    c.send("Subject: half a message\r\n");
    c
}

#[test]
fn sigterm_grace_period_ends_stuck_commands_and_a_second_signal_exits_at_once() {
    const GRACE: u64 = 2;
    let dovecot = Dovecot::start();
    let conf = |port| Conf {
        listeners: listener("imap", port, ""),
        limits: format!("shutdown_grace_secs = {GRACE}"),
        ..Conf::default()
    };

    // The grace period runs out: the stuck session is told, the process exits 0.
    let [port, admin] = obs::ports();
    let mut gw = start(&conf(port), &dovecot, admin);
    let mut stuck = stuck_append(port);
    stuck.set_timeout(Duration::from_secs(GRACE + 5));
    let term = Instant::now();
    gw.signal("TERM");
    let bye = stuck.line();
    let waited = term.elapsed();
    assert!(
        bye.starts_with("* BYE [UNAVAILABLE] ") && bye.contains("shutting down"),
        "{bye:?}"
    );
    assert!(
        waited >= Duration::from_millis(GRACE * 1000 - 100),
        "BYE after {waited:?}, before the grace period ended"
    );
    stuck.expect_eof();
    let status = gw
        .wait_exit(Duration::from_secs(3))
        .expect("imapgate did not exit after the grace period");
    assert!(status.success(), "exit status {status}");
    assert!(gw.log().contains("grace period over"), "{}", gw.log());

    // A second signal does not wait for the grace period.
    let [port, admin] = obs::ports();
    let mut gw = start(&conf(port), &dovecot, admin);
    let _stuck = stuck_append(port);
    gw.signal("TERM");
    thread::sleep(Duration::from_millis(300));
    assert!(gw.is_running(), "exited with a command in flight");
    let again = Instant::now();
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(GRACE))
        .expect("imapgate did not exit on the second signal");
    assert!(
        again.elapsed() < Duration::from_secs(1),
        "exit took {:?}",
        again.elapsed()
    );
    assert!(!status.success(), "exit status {status}");
    assert!(
        gw.log().contains("second signal: exiting now"),
        "{}",
        gw.log()
    );
}

/// The bytes of the only file in `dir`.
fn only_file(dir: &Path) -> Vec<u8> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read maildir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut f = fs::File::open(entries.pop().expect("one")).expect("open message");
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).expect("read message");
    bytes
}
