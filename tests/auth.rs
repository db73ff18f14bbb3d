//! Issue 6, "Done when": edge authentication with the built `imapgate` before a real
//! Dovecot.
//!
//! 1. Every password scheme, with hashes made by Dovecot's own `doveadm pw` at test time.
//! 2. The `http` passdb against a real HTTP server process playing an nginx `auth_http`
//!    service (tests/clients/nginx_auth_http.py): routing by Auth-Server/Auth-Port,
//!    Auth-User/Auth-Pass for the backend, Auth-Wait, timeouts, 5xx, percent-encoding.
//! 3. Brute force: growing delays, then refusals, per client address.
//! 4. No password in any gateway log line (checked at the end of every test here, with the
//!    gateway logging at `trace`).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{eventually, free_port, gateway_config, run, tempdir, Dovecot, Gateway, ProcessGroup};

/// A minimal IMAP client that can pick its source address (127.0.0.x), to play several
/// clients from one machine.
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Imap {
    fn connect_from(source: Ipv4Addr, port: u16) -> Imap {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("tokio runtime");
        let stream = rt
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
                socket
                    .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                    .await
            })
            .unwrap_or_else(|e| panic!("connect from {source} to {port}: {e}"));
        let stream = stream.into_std().expect("std stream");
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let writer = stream.try_clone().expect("dup");
        let mut c = Imap {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = c.line().expect("greeting");
        assert!(greeting.starts_with("* OK"), "{greeting:?}");
        c
    }

    fn connect(port: u16) -> Imap {
        Imap::connect_from(Ipv4Addr::LOCALHOST, port)
    }

    /// One line, or None at EOF.
    fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => Some(String::from_utf8_lossy(&buf).trim_end().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    fn tagged(&mut self, tag: &str) -> String {
        loop {
            let line = self
                .line()
                .unwrap_or_else(|| panic!("EOF waiting for {tag}"));
            if line.starts_with(&format!("{tag} ")) {
                return line;
            }
        }
    }

    fn send(&mut self, s: &str) {
        self.writer.write_all(s.as_bytes()).expect("send");
    }

    /// AUTHENTICATE PLAIN with an initial response (RFC 4959): any bytes go.  Returns
    /// the tagged answer and how long it took.
    fn auth_plain(&mut self, tag: &str, user: &str, pass: &str) -> (String, Duration) {
        let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        SENT.lock().unwrap().push(ir.clone());
        let started = Instant::now();
        self.send(&format!("{tag} AUTHENTICATE PLAIN {ir}\r\n"));
        let answer = self.tagged(tag);
        (answer, started.elapsed())
    }

    fn expect_eof(&mut self) {
        assert_eq!(self.line(), None, "expected the connection to close");
    }
}

/// Every SASL initial response sent (base64 of the credentials): none may be logged.
static SENT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The same reply for a wrong password and an unknown user (RFC 5530).
const FAILED: &str = "NO [AUTHENTICATIONFAILED] Authentication failed";

fn assert_failed(tag: &str, answer: &str) {
    assert_eq!(answer, format!("{tag} {FAILED}"));
}

fn scrape(admin_port: u16) -> String {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, admin_port)).expect("admin");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Check 4: not one log line of the gateway holds a password (raw, base64 as in SASL,
/// or percent-encoded as sent to an auth service).
fn assert_no_secret_in_log(gw: &Gateway, secrets: &[&str]) {
    let log = gw.log();
    // Even a gateway that served one refused login has written its listener,
    // the connection, the command and the audit line.
    assert!(log.lines().count() >= 5, "suspiciously short log:\n{log}");
    assert!(log.contains(" auth"), "no audit line in the log:\n{log}");
    for ir in SENT.lock().unwrap().iter() {
        assert!(
            !log.contains(ir.as_str()),
            "a SASL response is in the log: {ir}"
        );
    }
    for secret in secrets {
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let escaped = secret.replace('%', "%25").replace(' ', "%20");
        for (i, line) in log.lines().enumerate() {
            for needle in [secret.to_string(), escaped.clone(), b64.clone()] {
                assert!(
                    !line.contains(&needle),
                    "log line {} holds a password ({needle:?}): {line}",
                    i + 1
                );
            }
            // Debug-escaped forms too (non-ASCII as \u{..}).
            assert!(!line.contains(&format!("{secret:?}").trim_matches('"').to_string()));
        }
    }
}

fn with_trace_log(config: String) -> String {
    config.replace("level = \"debug\"", "level = \"trace\"")
}

// ---------------------------------------------------------------------------------------
// 1. Schemes, from doveadm

const SCHEMES: &[&str] = &[
    "ARGON2ID",
    "ARGON2I",
    "BLF-CRYPT",
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "SSHA512",
    "SSHA256",
    "PLAIN",
    "CLEARTEXT",
];

/// `doveadm pw -s SCHEME -p PASS`, e.g. `{SSHA512}…`.
fn doveadm_pw(scheme: &str, password: &str) -> String {
    let out = run(
        Command::new("doveadm").args(["pw", "-s", scheme, "-p", password]),
        Duration::from_secs(60),
    );
    out.assert_success("doveadm pw");
    let hash = out.stdout.trim().to_owned();
    assert!(hash.starts_with(&format!("{{{scheme}}}")), "{hash}");
    hash
}

#[test]
fn every_scheme_verifies_doveadm_hashes() {
    // Space, % and non-ASCII; no ':' (the passwd-file field separator, also for PLAIN).
    let password = "S3cret pä%ss";
    let user = |s: &str| format!("u_{}", s.to_ascii_lowercase().replace('-', "_"));
    let mut dovecot = Dovecot::builder();
    let mut users = String::new();
    for scheme in SCHEMES {
        users.push_str(&format!(
            "{}:{}\n",
            user(scheme),
            doveadm_pw(scheme, password)
        ));
        dovecot = dovecot.user(&user(scheme), password);
    }
    // No prefix: default_scheme applies.
    let bare = doveadm_pw("SHA512-CRYPT", password);
    users.push_str(&format!(
        "u_default:{}\n",
        bare.trim_start_matches("{SHA512-CRYPT}")
    ));
    dovecot = dovecot.user("u_default", password);
    let dovecot = dovecot.start();
    let dir = tempdir("imapgate-auth-schemes-");
    let users_file = dir.path().join("users");
    fs::write(&users_file, users).unwrap();
    let config = gateway_config(free_port(), dovecot.port(), &users_file).replace(
        "default_scheme = \"PLAIN\"",
        "default_scheme = \"SHA512-CRYPT\"",
    ) + "\n[auth.brute_force]\nenabled = false\n[auth.cache]\nsize = 0\n";
    let gw = Gateway::start(&with_trace_log(config));

    let mut c = Imap::connect(gw.port());
    for (i, name) in SCHEMES
        .iter()
        .map(|s| user(s))
        .chain(["u_default".to_owned()])
        .enumerate()
    {
        let (answer, took) = c.auth_plain(&format!("w{i}"), &name, "S3cret pä%sS");
        assert_failed(&format!("w{i}"), &answer);
        let mut ok = Imap::connect(gw.port());
        let (answer, _) = ok.auth_plain("a", &name, password);
        assert!(answer.starts_with("a OK"), "{name}: {answer}");
        eprintln!("{name}: wrong password refused in {took:?}");
        ok.send("b LOGOUT\r\n");
        ok.tagged("b");
    }
    // An unknown user: the same answer as a wrong password.
    let (answer, _) = c.auth_plain("u", "nobody", password);
    assert_failed("u", &answer);
    assert_no_secret_in_log(&gw, &[password, "S3cret pä%sS"]);
}

// ---------------------------------------------------------------------------------------
// 2. http passdb against a Python nginx auth service

/// The auth service process, logging each request it gets as a JSON line.
struct AuthService {
    _proc: ProcessGroup,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl AuthService {
    fn start(backend_port: u16, users: &str) -> AuthService {
        AuthService::start_with(backend_port, users, None)
    }

    /// `tls`: serve https with this certificate and key.
    fn start_with(
        backend_port: u16,
        users: &str,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> AuthService {
        let dir = tempdir("imapgate-authsvc-");
        let port_file = dir.path().join("port");
        let log = dir.path().join("requests.jsonl");
        let out = fs::File::create(dir.path().join("out")).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(common::repo().join("tests/clients/nginx_auth_http.py"))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .arg("--backend-port")
            .arg(backend_port.to_string())
            .arg("--users")
            .arg(users);
        if let Some((cert, key)) = tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let proc = ProcessGroup::spawn(
            "nginx_auth_http.py",
            cmd.env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        )
        .expect("spawn the auth service");
        assert!(
            eventually(Duration::from_secs(10), || port_file.exists()),
            "auth service did not start: {}",
            fs::read_to_string(dir.path().join("out")).unwrap_or_default()
        );
        let port = fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        AuthService {
            _proc: proc,
            port,
            log,
            _dir: dir,
        }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

/// A gateway whose passdb is the `http` one with `passdb_keys` (url, timeout…) and whose
/// only configured backend is dead, so a login can only work if the service routes it;
/// brute-force protection off, logging at trace; `tables` go before the log table.
fn http_passdb_config(passdb_keys: &str, tables: &str) -> String {
    format!(
        r#"[[listener]]
name = "imap"
address = "127.0.0.1:{listen}"

[[backend]]
name = "unused"
address = "127.0.0.1:{dead}"

[[passdb]]
type = "http"
{passdb_keys}

[auth.brute_force]
enabled = false

{tables}

[log]
level = "trace"
"#,
        listen = free_port(),
        dead = free_port(),
    )
}

#[test]
fn http_passdb_speaks_nginx_auth_http() {
    let dovecot = Dovecot::start();
    // The client's credentials are not the backend's: the service maps them.
    let user = "al ice%:ä€";
    let password = "p %:ä€\"x";
    let users = serde_json::json!({
        user: {"password": password, "backend_user": "alice", "backend_pass": "wonderland"},
    })
    .to_string();
    let svc = AuthService::start(dovecot.port(), &users);
    let admin_port = free_port();
    let config = http_passdb_config(
        &format!(
            "url = \"http://127.0.0.1:{}/auth/imap\"\ntimeout_ms = 1500\n\
             headers = {{ X-Auth-Key = \"k3y-static\" }}",
            svc.port
        ),
        &format!("[admin]\naddress = \"127.0.0.1:{admin_port}\""),
    );
    let gw = Gateway::start(&config);

    // Success: routed by Auth-Server/Auth-Port, logged in to Dovecot with Auth-User/Pass.
    let mut c = Imap::connect(gw.port());
    let (answer, _) = c.auth_plain("a", user, "wrong pass");
    assert!(
        answer.starts_with("a NO [AUTHENTICATIONFAILED]"),
        "{answer}"
    );
    let (answer, _) = c.auth_plain("b", user, password);
    assert!(answer.starts_with("b OK"), "{answer}");
    c.send("c SELECT INBOX\r\n");
    let selected = c.tagged("c");
    assert!(selected.starts_with("c OK"), "{selected}");
    let reqs = svc.requests();
    let r = reqs.last().expect("a request");
    assert_eq!(r["user"], user);
    assert_eq!(r["password"], password);
    let raw_user = r["raw_user"].as_str().unwrap();
    assert!(raw_user.starts_with("al%20ice%25:"), "{raw_user}");
    assert!(r["raw_pass"].as_str().unwrap().starts_with("p%20%25:"));
    assert_eq!(r["Auth-Method"], "plain");
    assert_eq!(r["Auth-Protocol"], "imap");
    assert_eq!(r["Auth-Login-Attempt"], "2");
    assert_eq!(r["Client-IP"], "127.0.0.1");
    assert_eq!(r["X-Auth-Key"], "k3y-static");
    assert_eq!(r["Host"], "127.0.0.1");
    assert_eq!(r["path"], "/auth/imap");
    assert_eq!(r["request_version"], "HTTP/1.1");
    assert_eq!(reqs[0]["Auth-Login-Attempt"], "1");
    let names: Vec<&str> = r["header_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        &names[..7],
        [
            "Host",
            "Auth-Method",
            "Auth-User",
            "Auth-Pass",
            "Auth-Protocol",
            "Auth-Login-Attempt",
            "Client-IP"
        ],
        "nginx's header order and spelling"
    );
    assert!(
        dovecot.log().contains("alice"),
        "Dovecot saw the mapped user"
    );

    // Failure with Auth-Wait: 2 → the answer comes after 2 s; the session stays open.
    let mut c = Imap::connect(gw.port());
    let (answer, took) = c.auth_plain("a", user, "also wrong");
    assert_failed("a", &answer);
    assert!(
        took >= Duration::from_millis(1950) && took < Duration::from_secs(4),
        "Auth-Wait 2 s, answered after {took:?}"
    );
    c.send("b NOOP\r\n");
    assert!(c.tagged("b").starts_with("b OK"));

    // Failure without Auth-Wait: answered, then the connection is closed (as nginx).
    let (answer, took) = c.auth_plain("c", "nowait", "x");
    assert_failed("c", &answer);
    assert!(took < Duration::from_secs(1), "{took:?}");
    c.expect_eof();

    // Timeout and 5xx: temporary failures, never "wrong password".
    let mut c = Imap::connect(gw.port());
    let (answer, took) = c.auth_plain("a", "slow", "x");
    assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{answer}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "timeout_ms 1500, answered after {took:?}"
    );
    let (answer, _) = c.auth_plain("b", "error", "x");
    assert!(answer.starts_with("b NO [UNAVAILABLE]"), "{answer}");

    let metrics = scrape(admin_port);
    assert_eq!(
        metric(
            &metrics,
            "imapgate_auth_attempts_total{mechanism=\"PLAIN\",passdb=\"http\",result=\"tempfail\"}"
        ),
        2.0
    );
    assert!(metric(&metrics, "imapgate_auth_delays_total{scope=\"passdb\"}") >= 1.0);
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains(" auth") && l.contains("auth service timed out")),
        "audit line for the timeout:\n{log}"
    );
    assert_no_secret_in_log(&gw, &[password, "wrong pass", "also wrong", "wonderland"]);
}

// ---------------------------------------------------------------------------------------
// 3. Brute force

/// The `http` passdb over https: the service's certificate is verified against
/// `ca_file` (a login works and the request arrived intact); with the system roots
/// instead, the handshake fails and the login gets `NO [UNAVAILABLE]`, never a
/// password verdict.
#[test]
fn http_passdb_over_https_verifies_the_service() {
    let dovecot = Dovecot::start();
    let mut pki = common::tls::Pki::new("authsvc");
    let (cert, key) = pki.server("authsvc", &["127.0.0.1"]);
    let users = serde_json::json!({
        "carol": {"password": "c4rol pw", "backend_user": "alice", "backend_pass": "wonderland"},
    })
    .to_string();
    let svc = AuthService::start_with(dovecot.port(), &users, Some((&cert, &key)));
    let ca = common::toml_str(pki.ca_file().to_str().expect("UTF-8 path"));
    for (ca_line, works) in [(format!("ca_file = {ca}"), true), (String::new(), false)] {
        let config = http_passdb_config(
            &format!(
                "url = \"https://127.0.0.1:{}/auth/imap\"\ntimeout_ms = 3000\n{ca_line}",
                svc.port
            ),
            "",
        );
        let gw = Gateway::start(&config);
        let before = svc.requests().len();
        let mut c = Imap::connect(gw.port());
        let (answer, _) = c.auth_plain("a", "carol", "c4rol pw");
        if works {
            assert!(answer.starts_with("a OK"), "{answer}\n{}", gw.log());
            c.send("s SELECT INBOX\r\n");
            let selected = c.tagged("s");
            assert!(selected.starts_with("s OK"), "{selected}");
            let reqs = svc.requests();
            assert_eq!(reqs.len(), before + 1);
            assert_eq!(reqs[before]["password"], "c4rol pw");
        } else {
            assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{answer}");
            assert_eq!(svc.requests().len(), before, "a request got through");
        }
        assert_no_secret_in_log(&gw, &["c4rol pw", "c4rol%20pw", "wonderland"]);
    }
}

#[test]
fn brute_force_delays_then_refuses_per_address() {
    let dovecot = Dovecot::start();
    let admin_port = free_port();
    let config = gateway_config(free_port(), dovecot.port(), &dovecot.users_file())
        + &format!(
            r#"
[auth.brute_force]
window_secs = 600
delay_after = 2
delay_initial_ms = 300
delay_max_ms = 1200
ip_refuse_after = 8
user_refuse_after = 50

[admin]
address = "127.0.0.1:{admin_port}"
"#
        );
    let gw = Gateway::start(&with_trace_log(config));
    let attacker = Ipv4Addr::new(127, 0, 0, 1);

    let mut took = Vec::new();
    let mut answers = Vec::new();
    for i in 0..20 {
        let mut c = Imap::connect_from(attacker, gw.port());
        let (answer, t) = c.auth_plain("a", "alice", &format!("guess-{i}"));
        took.push(t.as_secs_f64());
        answers.push(answer);
    }
    eprintln!("attempt durations (s): {took:.3?}");
    for (i, a) in answers.iter().enumerate() {
        if i < 8 {
            assert_failed("a", a);
        } else {
            assert_eq!(
                a,
                "a NO [UNAVAILABLE] Too many failed logins; try again later"
            );
        }
    }
    // Two free failures, then 300, 600, 1200 ms, capped at 1200 ms; refusals are
    // immediate.  (Bounds leave room for a loaded machine.)
    let within = |t: f64, lo: f64, hi: f64| t >= lo && t < hi;
    assert!(took[..2].iter().all(|&t| t < 0.25), "{took:?}");
    assert!(within(took[2], 0.3, 0.55), "{took:?}");
    assert!(within(took[3], 0.6, 0.95), "{took:?}");
    assert!(took[4..8].iter().all(|&t| within(t, 1.2, 1.6)), "{took:?}");
    assert!(took[2] < took[3] && took[3] < took[4], "growing: {took:?}");
    assert!(took[8..].iter().all(|&t| t < 0.25), "{took:?}");
    // Refused even with the right password while the window lasts.
    let (answer, _) =
        Imap::connect_from(attacker, gw.port()).auth_plain("a", "alice", "wonderland");
    assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{answer}");

    // Another address is unaffected: no delay, no refusal.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let mut c = Imap::connect_from(other, gw.port());
    let (answer, t) = c.auth_plain("a", "bob", "nope");
    assert_failed("a", &answer);
    assert!(t < Duration::from_millis(250), "{t:?}");
    let (answer, _) = c.auth_plain("b", "bob", "builder");
    assert!(answer.starts_with("b OK"), "{answer}");

    // A correct login afterwards from a fresh address works.
    let fresh = Ipv4Addr::new(127, 0, 0, 3);
    let (answer, t) = Imap::connect_from(fresh, gw.port()).auth_plain("a", "alice", "wonderland");
    assert!(answer.starts_with("a OK"), "{answer}");
    assert!(t < Duration::from_secs(2), "{t:?}");

    let metrics = scrape(admin_port);
    assert_eq!(
        metric(&metrics, "imapgate_auth_delays_total{scope=\"ip\"}"),
        6.0
    );
    assert_eq!(
        metric(&metrics, "imapgate_auth_refusals_total{scope=\"ip\"}"),
        13.0
    );
    assert!(metric(&metrics, "imapgate_auth_cache_total{result=\"miss\"}") >= 10.0);
    let log = gw.log();
    let refused = log
        .lines()
        .filter(|l| l.contains(" auth") && l.contains("result=\"refused\""))
        .count();
    assert_eq!(refused, 13, "one audit line per refusal:\n{log}");
    let audit = log
        .lines()
        .find(|l| {
            l.contains("guess-") || (l.contains(" auth") && l.contains("client_ip=127.0.0.2"))
        })
        .expect("an audit line for 127.0.0.2");
    assert!(!audit.contains("guess-"), "{audit}");
    let secrets: Vec<String> = (0..20).map(|i| format!("guess-{i}")).collect();
    let mut secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    secrets.extend(["wonderland", "builder", "nope"]);
    assert_no_secret_in_log(&gw, &secrets);
}

// ---------------------------------------------------------------------------------------
// Cache and reload

#[test]
fn cache_hits_and_reload_empties_it() {
    let dovecot = Dovecot::start();
    let admin_port = free_port();
    let dir = tempdir("imapgate-auth-cache-");
    let users = dir.path().join("users");
    fs::write(
        &users,
        format!("alice:{}\n", doveadm_pw("SHA256-CRYPT", "wonderland")),
    )
    .unwrap();
    let config = gateway_config(free_port(), dovecot.port(), &users)
        + &format!("\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\n");
    let gw = Gateway::start(&config);
    let login = |tag: &str| {
        let mut c = Imap::connect(gw.port());
        let (answer, _) = c.auth_plain(tag, "alice", "wonderland");
        assert!(answer.starts_with(&format!("{tag} OK")), "{answer}");
    };
    login("a");
    login("b");
    login("c");
    let m = scrape(admin_port);
    assert_eq!(
        metric(&m, "imapgate_auth_cache_total{result=\"miss\"}"),
        1.0
    );
    assert_eq!(metric(&m, "imapgate_auth_cache_total{result=\"hit\"}"), 2.0);
    gw.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || {
        metric(
            &scrape(admin_port),
            "imapgate_config_reloads_total{result=\"ok\"}",
        ) >= 1.0
    }));
    login("d");
    let m = scrape(admin_port);
    assert_eq!(
        metric(&m, "imapgate_auth_cache_total{result=\"miss\"}"),
        2.0,
        "empty after reload"
    );
    assert_no_secret_in_log(&gw, &["wonderland"]);
}

// ---------------------------------------------------------------------------------------
// Hashing pool

#[test]
fn full_hashing_queue_answers_unavailable() {
    let dovecot = Dovecot::start();
    let dir = tempdir("imapgate-auth-pool-");
    let users = dir.path().join("users");
    fs::write(
        &users,
        format!("alice:{}\n", doveadm_pw("ARGON2ID", "wonderland")),
    )
    .unwrap();
    // One hash at a time, nobody waiting: a second concurrent login is turned away.
    let config = gateway_config(free_port(), dovecot.port(), &users)
        + "\n[auth]\nhash_concurrency = 1\nhash_queue = 0\n[auth.cache]\nsize = 0\n";
    let gw = Gateway::start(&config);
    let mut first = Imap::connect(gw.port());
    let mut second = Imap::connect_from(Ipv4Addr::new(127, 0, 0, 2), gw.port());
    let ir = base64::engine::general_purpose::STANDARD.encode("\0alice\0wonderland");
    SENT.lock().unwrap().push(ir.clone());
    first.send(&format!("a AUTHENTICATE PLAIN {ir}\r\n"));
    // Let the first login take the only slot (argon2id with Dovecot's defaults takes far
    // longer than this).
    std::thread::sleep(Duration::from_millis(50));
    let (answer, took) = second.auth_plain("b", "alice", "wonderland");
    assert_eq!(
        answer,
        "b NO [UNAVAILABLE] Authentication service unavailable; try again later"
    );
    assert!(
        took < Duration::from_millis(500),
        "refused at once: {took:?}"
    );
    assert!(first.tagged("a").starts_with("a OK"));
    // Once the slot is free, the second client gets in.
    let (answer, _) = second.auth_plain("c", "alice", "wonderland");
    assert!(answer.starts_with("c OK"), "{answer}");
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains(" auth") && l.contains("password hashing queue is full")),
        "{log}"
    );
    assert_no_secret_in_log(&gw, &["wonderland"]);
}
