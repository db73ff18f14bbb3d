//! Issue 2, "Done when": the built `imapgate` in front of a real Dovecot, driven by real
//! clients (Python's imaplib, curl, isync's mbsync) and the raw client from `common`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{eventually, free_port, gateway_config, python3, run, Client, Dovecot, Gateway};

/// Dovecot plus a gateway in front of it, sharing Dovecot's passwd-file.
fn gateway_before(dovecot: &Dovecot) -> Gateway {
    Gateway::start(&gateway_config(
        free_port(),
        dovecot.port(),
        &dovecot.users_file(),
    ))
}

#[test]
fn gateway_answers_capability_noop_logout_itself() {
    let dovecot = Dovecot::start();
    let gw = gateway_before(&dovecot);

    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send("a CAPABILITY\r\n");
    let lines = c.expect_ok("a");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("* CAPABILITY ") && l.contains(" IMAP4rev1")),
        "{lines:?}"
    );
    c.send("b NOOP\r\n");
    c.expect_ok("b");
    c.send("c LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("c");
    c.expect_eof();
}

/// Done when 2: imaplib logs in, SELECTs, APPENDs, FETCHes byte-identical, LOGOUTs; a wrong
/// password gets NO [AUTHENTICATIONFAILED] and never reaches Dovecot.
#[test]
fn imaplib_roundtrip_and_wrong_password_refused_at_the_edge() {
    // carol is used only for the refused login, so any trace of her in dovecot.log would
    // mean the gateway passed the attempt on.
    let dovecot = Dovecot::builder().user("carol", "secret").start();
    let gw = gateway_before(&dovecot);
    let port = gw.port().to_string();

    let out = python3("imaplib_session.py", &["badlogin", &port, "carol", "wrong"]);
    assert!(out.starts_with("badlogin ok"), "{out}");
    // An unknown user is refused the same way.
    let out = python3("imaplib_session.py", &["badlogin", &port, "mallory", "x"]);
    assert!(out.starts_with("badlogin ok"), "{out}");

    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send("a LOGIN carol wrong\r\n");
    let no = c.expect_no("a");
    assert!(no.starts_with("a NO [AUTHENTICATIONFAILED]"), "{no}");

    let out = python3(
        "imaplib_session.py",
        &["roundtrip", &port, "alice", "wonderland"],
    );
    assert!(out.starts_with("roundtrip ok"), "{out}");

    // Dovecot logs the good login (auth_verbose); it is written by the time LOGIN is
    // answered but the log process may lag a little.
    assert!(
        eventually(Duration::from_secs(5), || dovecot
            .log()
            .contains("Login: user=<alice>")),
        "no login for alice in dovecot.log:\n{}",
        dovecot.log()
    );
    let log = dovecot.log();
    for who in ["carol", "mallory"] {
        assert!(
            !log.contains(who),
            "dovecot.log shows an attempt for {who}; the gateway must refuse it itself:\n{log}"
        );
    }
}

/// Done when 3: curl fetches a message by UID through the gateway.
#[test]
fn curl_fetches_a_message_by_uid() {
    let dovecot = Dovecot::start();
    // One message, so it is UID 1.
    dovecot.seed("alice", 1, 0);
    let gw = gateway_before(&dovecot);

    let fetch = |port: u16| {
        let out = run(
            Command::new("curl")
                .arg("--silent")
                .arg("--show-error")
                .arg("--max-time")
                .arg("30")
                .arg(format!(
                    "imap://alice:wonderland@127.0.0.1:{port}/INBOX;UID=1"
                )),
            Duration::from_secs(60),
        );
        out.assert_success("curl");
        out.stdout.clone()
    };
    let through_gateway = fetch(gw.port());
    assert!(
        through_gateway.contains("Message-ID: <seed-1.alice@imapgate.test>"),
        "{through_gateway}"
    );
    assert_eq!(through_gateway, fetch(dovecot.port()));
}

/// A maildir's messages, keyed by Message-ID (all seeded messages have one).
fn maildir_messages(maildir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["cur", "new"] {
        let Ok(entries) = fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read maildir entry").path();
            let data = fs::read(&path).expect("read message");
            // Headers come first; Message-ID is well inside the first 8 KiB.
            let head = String::from_utf8_lossy(&data[..data.len().min(8192)]);
            let mid = head
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .unwrap_or_else(|| panic!("no Message-ID in {}", path.display()))
                .trim()
                .to_string();
            assert!(
                out.insert(mid.clone(), data).is_none(),
                "duplicate {mid} in {}",
                maildir.display()
            );
        }
    }
    out
}

/// `message` (as mbsync stored it) without the one header mbsync adds: the
/// `X-TUID: <12 base64 chars>` line it writes as the last header of every message it
/// stores, to recognise it after an interruption. Panics if that line is not there exactly
/// once, so nothing else can be normalised away.
fn strip_mbsync_tuid(message: &[u8]) -> Vec<u8> {
    let header_len = message
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(message.len(), |i| i + 1);
    let header = &message[..header_len];
    let mut found = Vec::new();
    let mut start = 0;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if let Some(tuid) = line.strip_prefix(b"X-TUID: ") {
            let tuid = tuid.strip_suffix(b"\n").unwrap_or(tuid);
            assert!(
                tuid.len() == 12
                    && tuid
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/'),
                "unexpected X-TUID header {:?}",
                String::from_utf8_lossy(line)
            );
            found.push(start..start + line.len());
        }
        start += line.len();
    }
    assert_eq!(
        found.len(),
        1,
        "expected exactly one X-TUID header from mbsync in:\n{}",
        String::from_utf8_lossy(header)
    );
    let mut out = message[..found[0].start].to_vec();
    out.extend_from_slice(&message[found[0].end..]);
    out
}

/// Pull INBOX from 127.0.0.1:`port` into DIR/`name`/INBOX with mbsync.
fn mbsync(dir: &Path, name: &str, port: u16) -> std::path::PathBuf {
    let near = dir.join(name);
    fs::create_dir_all(&near).expect("create near store");
    let rc = dir.join(format!("{name}.mbsyncrc"));
    fs::write(
        &rc,
        format!(
            "IMAPAccount {name}\n\
             Host 127.0.0.1\n\
             Port {port}\n\
             User alice\n\
             Pass wonderland\n\
             SSLType None\n\
             AuthMechs LOGIN\n\
             \n\
             IMAPStore {name}-far\n\
             Account {name}\n\
             \n\
             MaildirStore {name}-near\n\
             Path {near}/\n\
             Inbox {near}/INBOX\n\
             SubFolders Verbatim\n\
             \n\
             Channel {name}\n\
             Far :{name}-far:\n\
             Near :{name}-near:\n\
             Patterns *\n\
             Create Near\n\
             Sync Pull\n\
             SyncState *\n",
            near = near.display()
        ),
    )
    .expect("write mbsyncrc");
    let out = run(
        // mbsync insists on $HOME; keep it away from the real one.
        Command::new("mbsync")
            .arg("-c")
            .arg(&rc)
            .arg("-a")
            .env("HOME", dir),
        Duration::from_secs(300),
    );
    out.assert_success("mbsync");
    near.join("INBOX")
}

/// Done when 4: mbsync through the gateway gives the same messages as directly from Dovecot.
#[test]
fn mbsync_through_gateway_matches_direct() {
    const MESSAGES: usize = 500;
    const BIG: usize = 5; // 1.5 MiB each

    let dovecot = Dovecot::start();
    dovecot.seed("alice", MESSAGES, BIG);
    let gw = gateway_before(&dovecot);
    let work = common::tempdir("imapgate-test-");

    let synced = |name: &str, port: u16| -> BTreeMap<String, Vec<u8>> {
        maildir_messages(&mbsync(work.path(), name, port))
            .into_iter()
            .map(|(mid, m)| (mid, strip_mbsync_tuid(&m)))
            .collect()
    };
    let direct = synced("direct", dovecot.port());
    let through = synced("gateway", gw.port());

    assert_eq!(direct.len(), MESSAGES, "direct sync is incomplete");
    let big = through.values().filter(|m| m.len() > 1024 * 1024).count();
    assert_eq!(big, BIG, "large messages through the gateway");
    let missing: Vec<_> = direct
        .keys()
        .filter(|k| !through.contains_key(*k))
        .collect();
    let extra: Vec<_> = through
        .keys()
        .filter(|k| !direct.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "through the gateway: {} messages, missing {missing:?}, extra {extra:?}",
        through.len()
    );
    // Apart from its X-TUID line (stripped above) mbsync stores what it fetched, with LF
    // line endings, so the contents compare exactly.
    let differ: Vec<_> = direct
        .iter()
        .filter(|(k, v)| through[*k] != **v)
        .map(|(k, v)| format!("{k} ({} vs {} octets)", v.len(), through[k].len()))
        .collect();
    assert!(
        differ.is_empty(),
        "{} messages differ, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );

    // And both are what was seeded, modulo mbsync's CRLF -> LF.
    let seeded = maildir_messages(&dovecot.maildir("alice"));
    for (mid, original) in &seeded {
        let lf = String::from_utf8_lossy(original).replace("\r\n", "\n");
        assert_eq!(
            lf.as_bytes(),
            &direct[mid][..],
            "{mid} as synced differs from what was seeded"
        );
    }
}

fn check_config(config: &str) -> common::Output {
    let dir = common::tempdir("imapgate-test-");
    let file = dir.path().join("imapgate.toml");
    fs::write(&file, config).expect("write config");
    fs::write(dir.path().join("users"), "alice:{PLAIN}wonderland\n").expect("write users");
    run(
        Command::new(env!("CARGO_BIN_EXE_imapgate"))
            .arg("--check-config")
            .arg(&file),
        Duration::from_secs(30),
    )
}

/// Done when 5, first half: a bad config is a clear error and a non-zero exit.
#[test]
fn bad_config_is_rejected_naming_the_key() {
    let good = gateway_config(free_port(), free_port(), Path::new("users"));
    let out = check_config(&good);
    assert!(
        out.success(),
        "valid config rejected:\n{good}\n{}{}",
        out.stdout,
        out.stderr
    );

    let bad = good.replace("login_timeout_secs", "login_timeout_sec");
    let out = check_config(&bad);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "--check-config exit status; output:\n{text}"
    );
    assert!(
        text.contains("login_timeout_sec"),
        "message does not name the key:\n{text}"
    );

    // --config with the same file refuses to start rather than serving.
    let dir = common::tempdir("imapgate-test-");
    let file = dir.path().join("imapgate.toml");
    fs::write(&file, &bad).expect("write config");
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_imapgate"))
            .arg("--config")
            .arg(&file),
        Duration::from_secs(30),
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(!out.success(), "--config accepted a bad config:\n{text}");
    assert!(
        text.contains("login_timeout_sec"),
        "message does not name the key:\n{text}"
    );

    // A missing file is an error too.
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_imapgate"))
            .arg("--config")
            .arg(dir.path().join("missing.toml")),
        Duration::from_secs(30),
    );
    assert!(!out.success(), "--config with a missing file succeeded");
}

/// Done when 5, second half: a backend that is down gives NO [UNAVAILABLE], and the gateway
/// keeps serving.
#[test]
fn backend_down_gives_unavailable_and_gateway_keeps_serving() {
    let users = common::tempdir("imapgate-test-");
    let users_file = users.path().join("users");
    fs::write(&users_file, "alice:{PLAIN}wonderland\nbob:{PLAIN}builder\n").expect("write users");
    let backend_port = free_port();
    let gw = Gateway::start(&gateway_config(free_port(), backend_port, &users_file));

    let mut c = Client::connect(gw.port());
    c.greeting();
    c.send("a LOGIN alice wonderland\r\n");
    let no = c.expect_no("a");
    assert!(no.starts_with("a NO [UNAVAILABLE]"), "{no}");
    // The edge check still runs first: a wrong password is an auth failure, not UNAVAILABLE.
    c.send("b LOGIN alice wrong\r\n");
    let no = c.expect_no("b");
    assert!(no.starts_with("b NO [AUTHENTICATIONFAILED]"), "{no}");
    c.send("c LOGIN bob builder\r\n");
    let no = c.expect_no("c");
    assert!(no.starts_with("c NO [UNAVAILABLE]"), "{no}");
    c.send("d LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("d");

    // Other clients are still served.
    let mut c2 = Client::connect(gw.port());
    c2.greeting();
    c2.send("a CAPABILITY\r\n");
    c2.expect_ok("a");

    // Once the backend is up, new logins get through without restarting the gateway.
    let dovecot = Dovecot::builder().port(backend_port).start();
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(15), || {
        let mut c = Client::connect(gw.port());
        c.greeting();
        c.send("a LOGIN alice wonderland\r\n");
        let (_, tagged) = c.expect_tagged("a");
        last = tagged;
        last.starts_with("a OK")
    });
    assert!(
        ok,
        "login after the backend came up: {last}\n{}",
        dovecot.log()
    );
}
