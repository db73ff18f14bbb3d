//! Checks the test harness itself against a real Dovecot, without imapgate: the sandbox
//! starts, authenticates and logs the way the end-to-end tests assume, and every process is
//! gone after a test, even one that panics.

mod common;

use std::net::{Ipv4Addr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use common::{eventually, gateway_config, listener_ports, python3, Client, Dovecot};

#[test]
fn sandbox_serves_seeded_mail_to_the_raw_client() {
    let dovecot = Dovecot::start();
    dovecot.seed("alice", 3, 1);

    let mut c = Client::connect(dovecot.port());
    c.greeting();
    c.send("a LOGIN alice wonderland\r\n");
    c.expect_ok("a");
    c.send("b SELECT INBOX\r\n");
    let lines = c.expect_ok("b");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
    c.send("c UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])\r\n");
    let lines = c.expect_ok("c");
    for i in 1..=3 {
        let mid = format!("<seed-{i}.alice@imapgate.test>");
        assert!(lines.iter().any(|l| l.contains(&mid)), "{mid} in {lines:?}");
    }
    c.send("d LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("d");
    c.expect_eof();
}

#[test]
fn sandbox_logs_every_auth_attempt() {
    let dovecot = Dovecot::builder().user("carol", "secret").start();

    let mut c = Client::connect(dovecot.port());
    c.greeting();
    c.send("a LOGIN carol wrong\r\n");
    let no = c.expect_no("a");
    assert!(no.starts_with("a NO [AUTHENTICATIONFAILED]"), "{no}");
    c.send("b LOGIN carol secret\r\n");
    c.expect_ok("b");

    // What the gateway tests rely on: a refused attempt that reaches Dovecot is logged
    // (auth_verbose), and so is every successful login.
    assert!(
        eventually(Duration::from_secs(5), || {
            let log = dovecot.log();
            log.contains("passwd-file(carol,") && log.contains("Login: user=<carol>")
        }),
        "{}",
        dovecot.log()
    );
}

#[test]
fn sandbox_master_user_logs_in_as_another_user() {
    let dovecot = Dovecot::builder().master_user("admin", "s3cret").start();
    let mut c = Client::connect(dovecot.port());
    c.greeting();
    c.send("a LOGIN alice*admin s3cret\r\n");
    c.expect_ok("a");
    c.send("b LOGIN bob*admin wrong\r\n");
    // Already authenticated: Dovecot refuses a second LOGIN.
    let (_, tagged) = c.expect_tagged("b");
    assert!(
        tagged.starts_with("b BAD") || tagged.starts_with("b NO"),
        "{tagged}"
    );
}

#[test]
fn python_client_roundtrips_against_dovecot() {
    let dovecot = Dovecot::start();
    let port = dovecot.port().to_string();
    let out = python3(
        "imaplib_session.py",
        &["roundtrip", &port, "bob", "builder"],
    );
    assert!(out.starts_with("roundtrip ok"), "{out}");
    let out = python3("imaplib_session.py", &["badlogin", &port, "bob", "nope"]);
    assert!(out.starts_with("badlogin ok"), "{out}");
}

#[test]
fn everything_stops_when_a_test_panics() {
    let mut port = 0;
    let mut dir = std::path::PathBuf::new();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let dovecot = Dovecot::start();
        port = dovecot.port();
        dir = dovecot.dir().to_path_buf();
        let mut c = Client::connect(port);
        c.greeting();
        c.send("a LOGIN alice wonderland\r\n");
        c.expect_ok("a");
        panic!("deliberate");
    }));
    assert!(result.is_err());
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
        "port {port} still open"
    );
    assert!(!dir.exists(), "{} not removed", dir.display());
    let leftover = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(format!("imapgate-sandbox-{port}/"))
        .output()
        .expect("pgrep");
    assert!(
        leftover.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

#[test]
fn gateway_config_names_its_listener() {
    let config = gateway_config(1143, 10143, std::path::Path::new("users"));
    assert_eq!(listener_ports(&config), vec![1143]);
    assert!(config.contains("address = \"127.0.0.1:10143\""), "{config}");
}
