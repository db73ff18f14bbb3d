//! Issue 5, "Done when": TLS on both sides, through the built `imapgate` and a real Dovecot.
//!
//! Certificates come from a PKI the tests make with rcgen (`common::tls::Pki`); nothing is
//! downloaded and the system trust store is never used.  Clients: Python's ssl + imaplib,
//! `openssl s_client`, and a rustls-based raw client (`common::tls::TlsClient`) for
//! byte-level checks.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::{metrics, sample, Pki, TlsClient, TlsDovecot};
use common::{eventually, free_port, python3, run, toml_str, Dovecot, Gateway};

/// `path` as a TOML string.
fn p(path: &Path) -> String {
    toml_str(path.to_str().expect("UTF-8 path"))
}

/// A gateway config: the given `[[listener]]`/`[[backend]]` tables, a passwd-file passdb,
/// debug logging, and `extra` tables at the end.
fn config(tables: &str, users: &Path, extra: &str) -> String {
    format!(
        r#"{tables}

[[passdb]]
type = "passwd-file"
path = {users}

[log]
level = "debug"
format = "text"
{extra}"#,
        users = p(users)
    )
}

fn plain_backend(name: &str, port: u16) -> String {
    format!("[[backend]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n")
}

/// A CA and a gateway certificate for `localhost` and 127.0.0.1.
fn gateway_pki() -> (Pki, std::path::PathBuf, std::path::PathBuf) {
    let mut pki = Pki::new("imapgate test CA");
    let (cert, key) = pki.server("gateway", &["localhost", "127.0.0.1"]);
    (pki, cert, key)
}

fn admin(port: u16) -> String {
    format!("\n[admin]\naddress = \"127.0.0.1:{port}\"\n")
}

/// Done when 1: implicit TLS with Python's ssl + imaplib.IMAP4_SSL, end to end; handshakes
/// are counted by listener, result and version.
#[test]
fn implicit_tls_with_python_imaplib() {
    let dovecot = Dovecot::start();
    let (pki, cert, key) = gateway_pki();
    let (port, admin_port) = (free_port(), free_port());
    let gw = Gateway::start(&config(
        &format!(
            "[[listener]]\nname = \"imaps\"\naddress = \"127.0.0.1:{port}\"\ntls = \"implicit\"\n\
             certificates = [{{ cert = {}, key = {} }}]\n\n{}",
            p(&cert),
            p(&key),
            plain_backend("dovecot", dovecot.port())
        ),
        &dovecot.users_file(),
        &admin(admin_port),
    ));
    let ca = pki.ca_file();
    let out = python3(
        "imaplib_tls.py",
        &[
            "implicit",
            &port.to_string(),
            ca.to_str().unwrap(),
            "localhost",
            "alice",
            "wonderland",
        ],
    );
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(out.contains("roundtrip ok"), "{out}");

    let m = metrics(admin_port);
    assert!(
        sample(
            &m,
            r#"imapgate_tls_handshakes_total{listener="imaps",result="ok",version="tls1.3"}"#
        ) >= 1.0,
        "{m}"
    );
    let log = gw.log();
    assert!(
        log.contains("tls=\"tls1.3\""),
        "session span has no tls field:\n{log}"
    );
    pki.assert_no_key_material("gateway log", &log);
}

/// Done when 1 and 3: STARTTLS with imaplib.starttls() on a listener that refuses
/// cleartext logins (trusted_networks = []): LOGINDISABLED and NO [PRIVACYREQUIRED] before,
/// fresh capabilities and a working login after.
#[test]
fn starttls_with_python_imaplib_and_privacy_required() {
    let dovecot = Dovecot::start();
    let (pki, cert, key) = gateway_pki();
    let port = free_port();
    let gw = Gateway::start(&config(
        &format!(
            "[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:{port}\"\ntls = \"starttls\"\n\
             trusted_networks = []\ncertificates = [{{ cert = {}, key = {} }}]\n\n{}",
            p(&cert),
            p(&key),
            plain_backend("dovecot", dovecot.port())
        ),
        &dovecot.users_file(),
        "",
    ));
    let ca = pki.ca_file();
    let out = python3(
        "imaplib_tls.py",
        &[
            "starttls",
            &port.to_string(),
            ca.to_str().unwrap(),
            "localhost",
            "bob",
            "builder",
        ],
    );
    assert!(out.contains("plaintext login refused"), "{out}");
    assert!(out.contains("roundtrip ok"), "{out}");

    // The same, byte by byte, with AUTHENTICATE too and STARTTLS where it is not allowed.
    let mut c = TlsClient::plain(port);
    let greeting = c.greeting();
    assert!(greeting.contains("LOGINDISABLED"), "{greeting}");
    let caps = c.capabilities("a");
    assert!(caps.contains(&"STARTTLS".into()), "{caps:?}");
    assert!(caps.contains(&"LOGINDISABLED".into()), "{caps:?}");
    assert!(!caps.iter().any(|c| c.starts_with("AUTH=")), "{caps:?}");
    c.send("b LOGIN alice wonderland\r\n");
    let (_, tagged) = c.expect_tagged("b");
    assert!(tagged.starts_with("b NO [PRIVACYREQUIRED]"), "{tagged}");
    c.send("c AUTHENTICATE PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\n");
    let (_, tagged) = c.expect_tagged("c");
    assert!(tagged.starts_with("c NO [PRIVACYREQUIRED]"), "{tagged}");
    c.send("d STARTTLS\r\n");
    c.expect_ok("d");
    c.starttls(pki.client_config(None), "localhost");
    let caps = c.capabilities("e");
    assert!(!caps.contains(&"STARTTLS".into()), "{caps:?}");
    assert!(!caps.contains(&"LOGINDISABLED".into()), "{caps:?}");
    assert!(caps.contains(&"AUTH=PLAIN".into()), "{caps:?}");
    // STARTTLS on a TLS connection: BAD.
    c.send("f STARTTLS\r\n");
    let (_, tagged) = c.expect_tagged("f");
    assert!(tagged.starts_with("f BAD"), "{tagged}");
    c.send("g AUTHENTICATE PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\n");
    c.expect_ok("g");
    // STARTTLS after login: BAD, from the gateway, and the session goes on.
    c.send("h STARTTLS\r\n");
    let (_, tagged) = c.expect_tagged("h");
    assert!(tagged.starts_with("h BAD"), "{tagged}");
    c.send("i SELECT INBOX\r\n");
    c.expect_ok("i");
    c.send("j LOGOUT\r\n");
    c.expect_ok("j");
    pki.assert_no_key_material("gateway log", &gw.log());
}

/// Done when 2: `a STARTTLS\r\nb CAPABILITY\r\n` in one write: `b` is never answered, before
/// or after the handshake.  Also with a pipelined LOGIN, which must not be executed with
/// the TLS connection's privileges.
#[test]
fn starttls_command_injection_is_discarded() {
    let dovecot = Dovecot::start();
    let (pki, cert, key) = gateway_pki();
    let port = free_port();
    let gw = Gateway::start(&config(
        &format!(
            "[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:{port}\"\ntls = \"starttls\"\n\
             trusted_networks = []\ncertificates = [{{ cert = {}, key = {} }}]\n\n{}",
            p(&cert),
            p(&key),
            plain_backend("dovecot", dovecot.port())
        ),
        &dovecot.users_file(),
        "",
    ));

    let mut c = TlsClient::plain(port);
    c.greeting();
    c.send("a STARTTLS\r\nb CAPABILITY\r\n");
    let ok = c.line();
    assert!(ok.starts_with("a OK"), "{ok}");
    // Nothing more in plaintext (TlsClient::starttls also refuses buffered bytes).
    assert!(
        c.quiet_for(Duration::from_millis(500)),
        "plaintext after STARTTLS OK"
    );
    c.starttls(pki.client_config(None), "localhost");
    c.send("c NOOP\r\n");
    let (before, tagged) = c.expect_tagged("c");
    assert!(tagged.starts_with("c OK"), "{tagged}");
    assert!(
        before.is_empty(),
        "responses before c's (b was answered?): {before:?}"
    );
    c.send("d LOGOUT\r\n");
    let rest = c.read_to_close();
    assert!(!rest.contains("b "), "{rest}");
    assert!(rest.contains("d OK"), "{rest}");

    // Injected LOGIN: never executed, neither in plaintext (PRIVACYREQUIRED) nor over TLS.
    let mut c = TlsClient::plain(port);
    c.greeting();
    c.send("a STARTTLS\r\nb LOGIN alice wonderland\r\n");
    let ok = c.line();
    assert!(ok.starts_with("a OK"), "{ok}");
    c.starttls(pki.client_config(None), "localhost");
    c.send("c NOOP\r\n");
    let (before, tagged) = c.expect_tagged("c");
    assert!(
        tagged.starts_with("c OK") && before.is_empty(),
        "{before:?} {tagged}"
    );
    // Still not authenticated: SELECT is refused by the gateway.
    c.send("d SELECT INBOX\r\n");
    let (_, tagged) = c.expect_tagged("d");
    assert!(tagged.starts_with("d BAD"), "{tagged}");
    c.send("e LOGOUT\r\n");
    c.read_to_close();
    assert!(
        !dovecot.log().contains("Login: user=<alice>"),
        "the injected LOGIN reached Dovecot:\n{}",
        dovecot.log()
    );
    let log = gw.log();
    assert!(
        log.contains("discarded plaintext sent after STARTTLS"),
        "{log}"
    );
}

/// `subject=` of the certificate `openssl s_client` got, and whether it verified.
fn s_client(args: &[&str], ca: &Path) -> (String, bool) {
    let out = run(
        Command::new("openssl")
            .arg("s_client")
            .args(args)
            .arg("-CAfile")
            .arg(ca)
            .arg("-verify_return_error"),
        Duration::from_secs(30),
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    let subject = text
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no subject= in s_client output:\n{text}"))
        .to_owned();
    (subject, text.contains("Verify return code: 0 (ok)"))
}

/// Done when 1: `openssl s_client -starttls imap -servername X` shows the certificate
/// configured for X; no SNI or an unknown name gets the default (first) certificate.
#[test]
fn sni_selects_certificates_with_openssl_s_client() {
    let dovecot = Dovecot::start();
    let mut pki = Pki::new("imapgate test CA");
    let (d_cert, d_key) = pki.server("default", &["mail.example.test", "127.0.0.1"]);
    let (o_cert, o_key) = pki.server("other", &["imap.other.test", "x.wild.test"]);
    let (port, tls_port) = (free_port(), free_port());
    let certs = format!(
        "certificates = [\n  {{ cert = {}, key = {} }},\n  {{ cert = {}, key = {}, sni = [\"imap.other.test\", \"*.wild.test\"] }},\n]",
        p(&d_cert),
        p(&d_key),
        p(&o_cert),
        p(&o_key)
    );
    let gw = Gateway::start(&config(
        &format!(
            "[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:{port}\"\ntls = \"starttls\"\n{certs}\n\n\
             [[listener]]\nname = \"imaps\"\naddress = \"127.0.0.1:{tls_port}\"\ntls = \"implicit\"\n{certs}\n\n{}",
            plain_backend("dovecot", dovecot.port())
        ),
        &dovecot.users_file(),
        "",
    ));
    let ca = pki.ca_file();
    let starttls = port.to_string();
    let connect = format!("127.0.0.1:{starttls}");
    for (sni, want, verifies) in [
        (Some("imap.other.test"), "imap.other.test", true),
        (Some("IMAP.Other.Test"), "imap.other.test", true),
        (Some("x.wild.test"), "imap.other.test", true),
        (Some("mail.example.test"), "mail.example.test", true),
        (Some("unknown.example.test"), "mail.example.test", true),
        (None, "mail.example.test", true),
    ] {
        let mut args = vec!["-starttls", "imap", "-connect", &connect];
        match sni {
            Some(name) => args.extend(["-servername", name]),
            None => args.push("-noservername"),
        }
        let (subject, ok) = s_client(&args, &ca);
        assert!(
            subject.contains(want),
            "SNI {sni:?}: got {subject}, want {want}"
        );
        assert_eq!(ok, verifies, "SNI {sni:?}: chain verification");
    }
    let connect = format!("127.0.0.1:{tls_port}");
    let (subject, ok) = s_client(
        &["-connect", &connect, "-servername", "imap.other.test"],
        &ca,
    );
    assert!(subject.contains("imap.other.test") && ok, "{subject}");
    let (subject, _) = s_client(&["-connect", &connect, "-noservername"], &ca);
    assert!(subject.contains("mail.example.test"), "{subject}");
    pki.assert_no_key_material("gateway log", &gw.log());
}

/// Done when 4: the gateway logs in to Dovecot over implicit TLS and over STARTTLS (Dovecot
/// with a test CA); Dovecot sees TLS logins.  The active health checks use TLS too.
#[test]
fn backend_over_implicit_tls_and_starttls() {
    let mut pki = Pki::new("backend test CA");
    let (cert, key) = pki.server("dovecot", &["localhost", "127.0.0.1"]);
    let tls = TlsDovecot::start(&cert, &key);
    let users = tls.dovecot.users_file();
    let ca = p(&pki.ca_file());

    for (mode, backend) in [
        (
            "implicit",
            // Verified against the address' host, 127.0.0.1 (an IP SAN).
            format!(
                "[[backend]]\nname = \"dovecot-tls\"\naddress = \"127.0.0.1:{}\"\ntls = \"implicit\"\nca_file = {ca}\n",
                tls.imaps_port
            ),
        ),
        (
            "starttls",
            format!(
                "[[backend]]\nname = \"dovecot-starttls\"\naddress = \"127.0.0.1:{}\"\ntls = \"starttls\"\nca_file = {ca}\nserver_name = \"localhost\"\n",
                tls.dovecot.port()
            ),
        ),
    ] {
        let port = free_port();
        let gw = Gateway::start(&config(
            &format!("[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:{port}\"\n\n{backend}"),
            &users,
            "\n[health]\ninterval_secs = 1\nfall = 1\nrise = 1\n",
        ));
        let out = python3(
            "imaplib_session.py",
            &["roundtrip", &port.to_string(), "alice", "wonderland"],
        );
        assert!(out.contains("roundtrip ok"), "{mode}: {out}");
        // A couple of health-check rounds over TLS, none failing.
        std::thread::sleep(Duration::from_millis(2500));
        let log = gw.log();
        assert!(!log.contains("backend down"), "{mode}:\n{log}");
        assert!(!log.contains("backend unusable"), "{mode}:\n{log}");
        pki.assert_no_key_material("gateway log", &log);
    }
    let dlog = tls.dovecot.log();
    let logins: Vec<&str> = dlog
        .lines()
        .filter(|l| l.contains("Login: user=<alice>"))
        .collect();
    assert_eq!(logins.len(), 2, "{dlog}");
    for l in logins {
        assert!(l.contains(", TLS"), "login without TLS: {l}");
    }
}

/// Done when 4: a backend whose certificate does not verify (another CA) is refused with a
/// clear log line, and so is a `starttls` backend that does not offer STARTTLS; no
/// credentials reach either; the client gets NO [UNAVAILABLE].
#[test]
fn unverifiable_or_cleartext_backends_are_refused() {
    let mut pki = Pki::new("backend test CA");
    let (cert, key) = pki.server("dovecot", &["localhost", "127.0.0.1"]);
    let tls = TlsDovecot::start(&cert, &key);
    let plain = Dovecot::start();
    // Same subject name as the real CA, different key: the signature does not verify.
    let wrong = Pki::new("backend test CA");
    let port = free_port();
    let gw = Gateway::start(&config(
        &format!(
            "[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:{port}\"\n\n\
             [[backend]]\nname = \"wrong-ca\"\naddress = \"127.0.0.1:{}\"\ntls = \"implicit\"\nca_file = {}\n\n\
             [[backend]]\nname = \"no-starttls\"\naddress = \"127.0.0.1:{}\"\ntls = \"starttls\"\nca_file = {}\n",
            tls.imaps_port,
            p(&wrong.ca_file()),
            plain.port(),
            p(&pki.ca_file()),
        ),
        &tls.dovecot.users_file(),
        // Passive marking only: the login itself meets both backends.
        "\n[health]\ninterval_secs = 0\n",
    ));
    let mut c = TlsClient::plain(port);
    c.greeting();
    c.send("a LOGIN alice wonderland\r\n");
    let (_, tagged) = c.expect_tagged("a");
    assert!(tagged.starts_with("a NO [UNAVAILABLE]"), "{tagged}");
    let log = gw.log();
    assert!(
        log.contains("backend certificate verification failed"),
        "no clear line for the wrong CA:\n{log}"
    );
    assert!(
        log.contains("does not offer STARTTLS"),
        "no clear line for the missing STARTTLS:\n{log}"
    );
    for (what, dlog) in [("TLS", tls.dovecot.log()), ("plain", plain.log())] {
        assert!(
            !dlog.contains("user=<alice>"),
            "credentials reached the {what} Dovecot:\n{dlog}"
        );
    }
}

/// Client certificates: the verified identity is logged; a client without a certificate is
/// refused by a `required` listener; handshake failures are counted by reason and a flood
/// of them makes few log lines; a silent client is cut off by the handshake timeout.
#[test]
fn client_certificates_and_handshake_failures() {
    let dovecot = Dovecot::start();
    let (mut pki, cert, key) = gateway_pki();
    let (alice_cert, alice_key) = pki.client("alice", "Alice Liddell", "alice@example.org");
    let (port, open_port, admin_port) = (free_port(), free_port(), free_port());
    let gw = Gateway::start(&config(
        &format!(
            "[[listener]]\nname = \"mtls\"\naddress = \"127.0.0.1:{port}\"\ntls = \"implicit\"\n\
             certificates = [{{ cert = {c}, key = {k} }}]\nclient_auth = \"required\"\nclient_ca = {ca}\n\n\
             [[listener]]\nname = \"imaps\"\naddress = \"127.0.0.1:{open_port}\"\ntls = \"implicit\"\n\
             certificates = [{{ cert = {c}, key = {k} }}]\ntls_handshake_timeout_secs = 1\n\n{}",
            plain_backend("dovecot", dovecot.port()),
            c = p(&cert),
            k = p(&key),
            ca = p(&pki.ca_file()),
        ),
        &dovecot.users_file(),
        &admin(admin_port),
    ));

    let mut c = TlsClient::tls(
        port,
        pki.client_config(Some((&alice_cert, &alice_key))),
        "localhost",
    );
    c.greeting();
    c.send("a LOGIN alice wonderland\r\n");
    c.expect_ok("a");
    c.send("b LOGOUT\r\n");
    c.read_to_close();
    assert!(
        eventually(Duration::from_secs(5), || gw
            .log()
            .contains("client_cert=cn=Alice Liddell, email=alice@example.org")),
        "client identity not logged:\n{}",
        gw.log()
    );

    // No client certificate: no greeting.
    if let Ok(mut c) = TlsClient::try_tls(port, pki.client_config(None), "localhost") {
        let rest = c.read_to_close();
        assert!(
            !rest.contains("* OK"),
            "served without a client certificate: {rest}"
        );
    }

    // Plaintext to the TLS port, many times: counted, summarised in the log.
    for _ in 0..40 {
        let mut raw = TlsClient::plain(open_port);
        raw.send("a LOGIN alice wonderland\r\n");
        let _ = raw.read_to_close();
    }
    // Say nothing: cut off after the 1 s handshake timeout.
    let started = Instant::now();
    let mut silent = TlsClient::plain(open_port);
    let _ = silent.read_to_close();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    let m = metrics(admin_port);
    let count = |listener: &str, result: &str| {
        sample(
            &m,
            &format!(
                "imapgate_tls_handshakes_total{{listener=\"{listener}\",result=\"{result}\",version=\"none\"}}"
            ),
        )
    };
    assert_eq!(count("mtls", "bad_certificate"), 1.0, "{m}");
    assert_eq!(count("imaps", "invalid_message"), 40.0, "{m}");
    assert_eq!(count("imaps", "handshake_timeout"), 1.0, "{m}");
    let log = gw.log();
    let summaries = log
        .lines()
        .filter(|l| l.contains("TLS handshakes failed (summary"))
        .count();
    assert!(
        (1..=3).contains(&summaries),
        "{summaries} summary lines for 40+ failures:\n{log}"
    );
    pki.assert_no_key_material("gateway log", &log);
}

/// Certificates are re-read on reload (SIGHUP): new connections get the new certificate,
/// a live session keeps going; a reload with a broken key changes nothing and its error
/// names the key without showing key material.
#[test]
fn certificates_reload_without_touching_live_sessions() {
    let dovecot = Dovecot::start();
    let (mut pki, cert, key) = gateway_pki();
    let port = free_port();
    let gw = Gateway::start(&config(
        &format!(
            "[[listener]]\nname = \"imaps\"\naddress = \"127.0.0.1:{port}\"\ntls = \"implicit\"\n\
             certificates = [{{ cert = {}, key = {} }}]\n\n{}",
            p(&cert),
            p(&key),
            plain_backend("dovecot", dovecot.port())
        ),
        &dovecot.users_file(),
        "",
    ));
    let config = pki.client_config(None);
    let mut live = TlsClient::tls(port, config.clone(), "localhost");
    let first = live.peer_certificate();
    live.greeting();
    live.send("a LOGIN alice wonderland\r\n");
    live.expect_ok("a");
    live.send("b SELECT INBOX\r\n");
    live.expect_ok("b");

    // Renew: a new certificate and key at the same paths.
    let (new_cert, new_key) = pki.server("renewed", &["localhost", "127.0.0.1"]);
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || gw
            .log()
            .contains("config reloaded")),
        "{}",
        gw.log()
    );
    let fresh = TlsClient::tls(port, config.clone(), "localhost");
    assert_ne!(
        fresh.peer_certificate(),
        first,
        "new connection got the old certificate"
    );
    live.send("c NOOP\r\n");
    live.expect_ok("c");

    // A key that does not match: the reload fails, the renewed certificate stays.
    let (other_cert, _) = pki.server("stray", &["localhost"]);
    std::fs::copy(&other_cert, &cert).unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || gw
            .log()
            .contains("config reload failed")),
        "{}",
        gw.log()
    );
    let after = TlsClient::tls(port, config, "localhost");
    assert_eq!(after.peer_certificate(), fresh.peer_certificate());
    let log = gw.log();
    assert!(log.contains("listener.certificates.key"), "{log}");
    pki.assert_no_key_material("gateway log", &log);
    live.send("d LOGOUT\r\n");
    live.read_to_close();
}

/// A TLS listener whose files are missing or do not match is a config error that names the
/// key (exit 64), found by --check-config; the message shows no key material.
#[test]
fn check_config_names_tls_keys() {
    let (mut pki, cert, _key) = gateway_pki();
    let (_, other_key) = pki.server("other", &["localhost"]);
    let dir = common::tempdir("imapgate-test-");
    std::fs::write(dir.path().join("users"), "alice:{PLAIN}wonderland\n").unwrap();
    for (certificates, want) in [
        (
            format!("{{ cert = {}, key = {} }}", p(&cert), p(&other_key)),
            "listener.certificates.key",
        ),
        (
            format!("{{ cert = \"missing.pem\", key = {} }}", p(&other_key)),
            "listener.certificates.cert",
        ),
    ] {
        let file = dir.path().join("imapgate.toml");
        std::fs::write(
            &file,
            config(
                &format!(
                    "[[listener]]\nname = \"imaps\"\naddress = \"127.0.0.1:{}\"\ntls = \"implicit\"\n\
                     certificates = [{certificates}]\n\n{}",
                    free_port(),
                    plain_backend("dovecot", free_port())
                ),
                Path::new("users"),
                "",
            ),
        )
        .unwrap();
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_imapgate"))
                .arg("--check-config")
                .arg(&file),
            Duration::from_secs(30),
        );
        let text = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}");
        assert!(text.contains(want), "{text}");
        pki.assert_no_key_material("--check-config output", &text);
    }
}
