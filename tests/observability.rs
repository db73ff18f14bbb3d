//! Issue 9, "Done when": the gateway's `/metrics` passes `promtool check
//! metrics`, a real Prometheus scrapes it, the dashboard uses only exported
//! names, the admin API (token, sessions, kick, reload, drain) works, and
//! metric values follow the scenarios (issue 4's state gauge at every
//! step, auth failures, arrows).  Backend health and readiness, and JSON
//! logs with the session span, are checked here too.

mod common;
#[path = "common/observability.rs"]
mod obs;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, free_port, repo, run, wait_port, Client, Dovecot, Gateway, ProcessGroup};
use obs::{config_with_admin, http, sample, scrape, sessions, HttpResponse, TOKEN};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// A gateway in front of `dovecot` with the admin listener on; returns it
/// and the admin port.
fn gateway(dovecot: &Dovecot, backends: &[&str]) -> (Gateway, u16) {
    let [listen, admin] = obs::ports();
    let named: Vec<(&str, u16)> = backends.iter().map(|n| (*n, dovecot.port())).collect();
    let gw = Gateway::start(&config_with_admin(
        listen,
        &named,
        &dovecot.users_file(),
        admin,
    ));
    assert!(wait_port(admin, Duration::from_secs(10)), "admin port");
    (gw, admin)
}

fn logged_in(port: u16, user: &str, password: &str) -> Client {
    let mut c = Client::connect(port);
    c.greeting();
    c.send(&format!("l LOGIN {user} {password}\r\n"));
    c.expect_ok("l");
    c
}

fn selected(port: u16, user: &str, password: &str) -> Client {
    let mut c = logged_in(port, user, password);
    c.send("s SELECT INBOX\r\n");
    c.expect_ok("s");
    c
}

fn sessions_by_state(text: &str) -> [f64; 5] {
    [
        "not_authenticated",
        "authenticated",
        "selected",
        "idle",
        "logout",
    ]
    .map(|s| sample(text, "imapgate_sessions", &[("state", s)]))
}

/// Wait until `imapgate_sessions` is `want` (na, auth, selected, idle, logout).
fn assert_sessions(admin: u16, want: [f64; 5], step: &str) {
    let mut last = [0.0; 5];
    let ok = eventually(WAIT, || {
        last = sessions_by_state(&scrape(admin));
        last == want
    });
    assert!(
        ok,
        "{step}: imapgate_sessions (na, auth, sel, idle, logout) = {last:?}, want {want:?}"
    );
}

/// Done when 1: promtool finds nothing to complain about after a scenario
/// that touches every kind of family.
#[test]
fn promtool_accepts_metrics_after_a_scenario() {
    let dovecot = Dovecot::start();
    dovecot.seed("alice", 2, 0);
    let (gw, admin) = gateway(&dovecot, &["dovecot"]);
    let mut bad = Client::connect(gw.port());
    bad.greeting();
    bad.send("a LOGIN alice wrong\r\n");
    bad.expect_no("a");
    bad.send("b FOO\r\n");
    bad.expect_tagged("b");
    let mut c = selected(gw.port(), "alice", "wonderland");
    c.send("f FETCH 1:* (FLAGS)\r\nz LOGOUT\r\n");
    c.expect_ok("f");
    c.expect_bye();
    c.expect_ok("z");
    let text = scrape(admin);
    let file = gw.dir().join("metrics.txt");
    fs::write(&file, &text).expect("write metrics");
    let out = run(
        Command::new("sh")
            .arg("-c")
            .arg("promtool check metrics < \"$1\"")
            .arg("sh")
            .arg(&file),
        Duration::from_secs(30),
    );
    out.assert_success("promtool check metrics");
    assert!(
        out.stdout.trim().is_empty() && out.stderr.trim().is_empty(),
        "promtool output:\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// Done when 2: a real Prometheus on loopback scrapes the gateway; its
/// API says the target is up and `imapgate_sessions` matches the sessions
/// this test holds open.
#[test]
fn prometheus_scrapes_the_gateway() {
    let dovecot = Dovecot::start();
    let (gw, admin) = gateway(&dovecot, &["dovecot"]);
    let _a = selected(gw.port(), "alice", "wonderland");
    let _b = selected(gw.port(), "bob", "builder");
    let _c = logged_in(gw.port(), "alice", "wonderland");
    let mut d = Client::connect(gw.port());
    d.greeting();

    let dir = common::tempdir("imapgate-prometheus-");
    let config = dir.path().join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: imapgate\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let port = free_port();
    let log = fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let _prom = ProcessGroup::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log),
    )
    .expect("spawn prometheus (Debian package `prometheus`)");
    let prom_log = || fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        wait_port(port, Duration::from_secs(30)),
        "prometheus did not listen:\n{}",
        prom_log()
    );

    let query = |q: &str| -> Option<f64> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let r = http(port, "GET", &path, None, None);
        if r.status != 200 {
            return None;
        }
        let v = r.json();
        let value = v["data"]["result"].get(0)?["value"][1].as_str()?.to_owned();
        value.parse().ok()
    };
    let mut last = (None, None, None);
    let ok = eventually(Duration::from_secs(30), || {
        last = (
            query("up{job=\"imapgate\"}"),
            query("sum(imapgate_sessions{job=\"imapgate\",state=\"selected\"})"),
            query("sum(imapgate_sessions{job=\"imapgate\"})"),
        );
        last == (Some(1.0), Some(2.0), Some(4.0))
    });
    assert!(
        ok,
        "(up, selected, all sessions) = {last:?}, want (1, 2, 4)\n{}",
        prom_log()
    );
    let by_state = [
        ("not_authenticated", 1.0),
        ("authenticated", 1.0),
        ("idle", 0.0),
    ];
    for (state, want) in by_state {
        let got = query(&format!(
            "sum(imapgate_sessions{{job=\"imapgate\",state=\"{state}\"}})"
        ));
        assert_eq!(got, Some(want), "{state}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every metric name in `text` that starts with `imapgate_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("imapgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Done when 3: every metric name in `dashboards/*.json` is exported, and
/// every panel queries the `${datasource}` variable.
#[test]
fn dashboards_use_only_exported_metrics() {
    let dovecot = Dovecot::start();
    // An implicit-TLS listener too, so the TLS families are there.
    let certs = common::tempdir("imapgate-certs-");
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert_file, key_file) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    fs::write(&cert_file, key.cert.pem()).expect("write cert");
    fs::write(&key_file, key.signing_key.serialize_pem()).expect("write key");
    let [listen, admin, tls_port] = obs::ports();
    let mut config = config_with_admin(
        listen,
        &[("dovecot", dovecot.port())],
        &dovecot.users_file(),
        admin,
    );
    config.push_str(&common::implicit_tls_listener(
        "imaps", tls_port, &cert_file, &key_file,
    ));
    let gw = Gateway::start(&config);
    assert!(wait_port(admin, Duration::from_secs(10)), "admin port");
    // A failed login, a refused command, a session through to LOGOUT.
    let mut bad = Client::connect(gw.port());
    bad.greeting();
    bad.send("a LOGIN alice wrong\r\nb SELECT INBOX\r\n");
    bad.expect_no("a");
    bad.expect_tagged("b");
    let mut c = selected(gw.port(), "alice", "wonderland");
    c.send("z LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("z");
    let text = scrape(admin);
    let samples = obs::sample_names(&text);
    let families = obs::families(&text);

    let mut checked = 0;
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    for file in files {
        let dash: Value = serde_json::from_str(&fs::read_to_string(&file).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let vars = dash["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{}: no prometheus datasource variable",
            file.display()
        );
        for p in dash["panels"].as_array().expect("panels") {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "panel {}",
                p["title"]
            );
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "panel {}",
                    p["title"]
                );
            }
        }
        let mut exprs = Vec::new();
        collect_exprs(&dash, &mut exprs);
        assert!(!exprs.is_empty());
        for expr in &exprs {
            for name in metric_names(expr) {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| {
                        families
                            .iter()
                            .any(|(f, kind)| f == base && kind == "histogram")
                    });
                assert!(
                    samples.contains(&name) || family.is_some(),
                    "{}: {name} (in {expr:?}) is not in /metrics",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} metric uses found");
}

/// Done when 4: the admin API needs the token, lists the sessions with
/// their state and user, kicks a session (the client reads `* BYE`) or a
/// user, reloads, and drains a backend so new users go elsewhere.
#[test]
fn admin_api_sessions_kick_reload_drain() {
    let dovecot = Dovecot::start();
    let (gw, admin) = gateway(&dovecot, &["one", "two"]);

    // Without the token, or with a wrong one: 401, before any routing.
    for token in [None, Some("wrong-token-0123456789")] {
        for (method, path) in [
            ("GET", "/api/sessions"),
            ("POST", "/api/reload"),
            ("POST", "/api/users/alice/kick"),
            ("GET", "/api/nonexistent"),
        ] {
            let r = http(admin, method, path, token, None);
            assert_eq!(r.status, 401, "{method} {path} with {token:?}: {}", r.body);
        }
    }
    // The public endpoints need none.
    assert_eq!(http(admin, "GET", "/live", None, None).status, 200);
    assert_eq!(http(admin, "GET", "/ready", None, None).status, 200);

    let mut a = selected(gw.port(), "alice", "wonderland");
    let mut b1 = logged_in(gw.port(), "bob", "builder");
    let mut b2 = selected(gw.port(), "bob", "builder");
    let mut pre = Client::connect(gw.port());
    pre.greeting();

    let list = sessions(admin);
    assert_eq!(list.len(), 4, "{list:#?}");
    let find = |list: &[Value], user: Option<&str>, state: &str| -> Vec<Value> {
        list.iter()
            .filter(|s| s["user"].as_str() == user && s["state"] == state)
            .cloned()
            .collect()
    };
    let alice = find(&list, Some("alice"), "selected");
    assert_eq!(alice.len(), 1, "{list:#?}");
    assert_eq!(
        find(&list, Some("bob"), "authenticated").len(),
        1,
        "{list:#?}"
    );
    assert_eq!(find(&list, Some("bob"), "selected").len(), 1, "{list:#?}");
    let pre_list = find(&list, None, "not_authenticated");
    assert_eq!(pre_list.len(), 1, "{list:#?}");
    for s in &list {
        assert_eq!(s["client_ip"], "127.0.0.1");
        assert_eq!(s["listener"], "imap");
        assert!(
            s["started"].as_u64().is_some_and(|t| t > 1_600_000_000),
            "{s}"
        );
        assert!(s["id"].as_u64().is_some());
    }
    assert!(alice[0]["backend"] == "one" || alice[0]["backend"] == "two");
    assert!(alice[0]["bytes_in"].as_u64().unwrap() > 0);
    assert!(alice[0]["bytes_out"].as_u64().unwrap() > 0);

    // Kick alice while she IDLEs: BYE with the reason, then EOF.
    a.send("i IDLE\r\n");
    let cont = a.line();
    assert!(cont.starts_with('+'), "{cont}");
    let id = alice[0]["id"].as_u64().unwrap();
    let r = http(
        admin,
        "POST",
        &format!("/api/sessions/{id}/kick"),
        Some(TOKEN),
        Some(r#"{"reason": "maintenance window"}"#),
    );
    assert_eq!(
        (r.status, r.json()["kicked"].as_u64()),
        (200, Some(1)),
        "{}",
        r.body
    );
    let bye = a.expect_bye();
    assert_eq!(bye, "* BYE [UNAVAILABLE] maintenance window");
    a.expect_eof();

    // Kick the one that has not logged in yet (default reason).
    let id = pre_list[0]["id"].as_u64().unwrap();
    let r = http(
        admin,
        "POST",
        &format!("/api/sessions/{id}/kick"),
        Some(TOKEN),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let bye = pre.expect_bye();
    assert!(bye.starts_with("* BYE [UNAVAILABLE] "), "{bye}");
    pre.expect_eof();
    // Unknown or gone sessions: 404.
    let r = http(
        admin,
        "POST",
        &format!("/api/sessions/{id}/kick"),
        Some(TOKEN),
        None,
    );
    assert!(r.status == 404 || r.status == 200, "{}", r.body);
    let r = http(
        admin,
        "POST",
        "/api/sessions/999999/kick",
        Some(TOKEN),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);

    // Kick by user: both of bob's sessions.
    let r = http(
        admin,
        "POST",
        "/api/users/bob/kick",
        Some(TOKEN),
        Some(r#"{"reason":"bye bob"}"#),
    );
    assert_eq!(
        (r.status, r.json()["kicked"].as_u64()),
        (200, Some(2)),
        "{}",
        r.body
    );
    for c in [&mut b1, &mut b2] {
        assert_eq!(c.expect_bye(), "* BYE [UNAVAILABLE] bye bob");
        c.expect_eof();
    }
    assert!(
        eventually(WAIT, || sessions(admin).is_empty()),
        "{:#?}",
        sessions(admin)
    );
    let text = scrape(admin);
    assert_eq!(
        sample(
            &text,
            "imapgate_sessions_closed_total",
            &[("reason", "kicked")]
        ),
        4.0
    );
    assert_eq!(sessions_by_state(&text), [0.0; 5]);

    // Drain: new logins of alice go to the other backend; the live one stays.
    let first = logged_in(gw.port(), "alice", "wonderland");
    let home = sessions(admin)[0]["backend"].as_str().unwrap().to_owned();
    let other = if home == "one" { "two" } else { "one" };
    let r = http(
        admin,
        "POST",
        &format!("/api/backends/{home}/drain"),
        Some(TOKEN),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["draining"], true);
    let backends = http(admin, "GET", "/api/backends", Some(TOKEN), None).json();
    let drained: Vec<&Value> = backends["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["draining"] == true)
        .collect();
    assert_eq!(drained.len(), 1, "{backends}");
    assert_eq!(drained[0]["name"], home.as_str());
    let mut second = logged_in(gw.port(), "alice", "wonderland");
    let list = sessions(admin);
    let backends_used: Vec<&str> = list
        .iter()
        .map(|s| s["backend"].as_str().unwrap())
        .collect();
    assert_eq!(backends_used, [home.as_str(), other], "{list:#?}");
    assert_eq!(
        sample(
            &scrape(admin),
            "imapgate_backend_draining",
            &[("backend", &home)]
        ),
        1.0
    );
    // Both drained: no usable backend, not ready, logins refused.
    let r = http(
        admin,
        "POST",
        &format!("/api/backends/{other}/drain"),
        Some(TOKEN),
        None,
    );
    assert_eq!(r.status, 200);
    let ready = http(admin, "GET", "/ready", None, None);
    assert_eq!(ready.status, 503, "{}", ready.body);
    let mut refused = Client::connect(gw.port());
    refused.greeting();
    refused.send("l LOGIN alice wonderland\r\n");
    let no = refused.expect_no("l");
    assert!(no.contains("[UNAVAILABLE]"), "{no}");
    for name in [home.as_str(), other] {
        let r = http(
            admin,
            "POST",
            &format!("/api/backends/{name}/undrain"),
            Some(TOKEN),
            None,
        );
        assert_eq!(
            (r.status, r.json()["draining"].as_bool()),
            (200, Some(false))
        );
    }
    assert_eq!(http(admin, "GET", "/ready", None, None).status, 200);
    let _third = logged_in(gw.port(), "alice", "wonderland");
    let list = sessions(admin);
    assert_eq!(list.last().unwrap()["backend"], home.as_str(), "{list:#?}");
    let r = http(admin, "POST", "/api/backends/nope/drain", Some(TOKEN), None);
    assert_eq!(r.status, 404);
    // The session on the drained backend kept working all along.
    second.send("n NOOP\r\n");
    second.expect_ok("n");
    drop(first);

    // Reload: ok; a broken file gives 500 with the error and changes nothing.
    let text = scrape(admin);
    let ok_before = sample(&text, "imapgate_config_reloads_total", &[("result", "ok")]);
    let failed_before = sample(
        &text,
        "imapgate_config_reloads_total",
        &[("result", "failed")],
    );
    let r = http(admin, "POST", "/api/reload", Some(TOKEN), None);
    assert_eq!(
        (r.status, r.json()["result"].as_str()),
        (200, Some("ok")),
        "{}",
        r.body
    );
    let good = fs::read_to_string(gw.config_path()).unwrap();
    fs::write(
        gw.config_path(),
        good.replace("[admin]", "[admin]\nbogus_key = 1"),
    )
    .unwrap();
    let r = http(admin, "POST", "/api/reload", Some(TOKEN), None);
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("bogus_key"),
        "{}",
        r.body
    );
    let text = scrape(admin);
    assert_eq!(
        sample(&text, "imapgate_config_reloads_total", &[("result", "ok")]),
        ok_before + 1.0
    );
    assert_eq!(
        sample(
            &text,
            "imapgate_config_reloads_total",
            &[("result", "failed")]
        ),
        failed_before + 1.0
    );
    // Drain state survives a reload.
    fs::write(gw.config_path(), &good).unwrap();
    http(
        admin,
        "POST",
        &format!("/api/backends/{other}/drain"),
        Some(TOKEN),
        None,
    );
    assert_eq!(
        http(admin, "POST", "/api/reload", Some(TOKEN), None).status,
        200
    );
    let backends = http(admin, "GET", "/api/backends", Some(TOKEN), None).json();
    assert!(
        backends["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == other && b["draining"] == true),
        "{backends}"
    );
    // The token follows reloads: without one the API is gone (404).
    let no_token: String = good
        .lines()
        .filter(|l| !l.starts_with("api_token"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(gw.config_path(), no_token).unwrap();
    assert_eq!(
        http(admin, "POST", "/api/reload", Some(TOKEN), None).status,
        200
    );
    let r = http(admin, "GET", "/api/sessions", Some(TOKEN), None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(http(admin, "GET", "/metrics", None, None).status, 200);
}

/// Issue 4, done when 4 (and issue 9's 5): the state gauge matches the
/// sessions at every step; a failed login counts as failed; a SELECT
/// counts arrow 5; LOGOUT counts arrow 7.
#[test]
fn metric_values_follow_the_sessions() {
    let dovecot = Dovecot::start();
    let (gw, admin) = gateway(&dovecot, &["dovecot"]);
    let port = gw.port();
    // Gateway::start's own probe connection must be gone from the baseline.
    assert_sessions(admin, [0.0; 5], "start");
    let before = scrape(admin);
    let arrow =
        |text: &str, n: &str| sample(text, "imapgate_state_transitions_total", &[("arrow", n)]);
    let failed = |text: &str| {
        sample(
            text,
            "imapgate_auth_attempts_total",
            &[("result", "failed")],
        )
    };
    let ok = |text: &str| sample(text, "imapgate_auth_attempts_total", &[("result", "ok")]);
    assert_sessions(admin, [0.0; 5], "start");

    let mut a = Client::connect(port);
    a.greeting();
    let mut b = Client::connect(port);
    b.greeting();
    assert_sessions(admin, [2.0, 0.0, 0.0, 0.0, 0.0], "two connected");

    b.send("x LOGIN alice nope\r\n");
    b.expect_no("x");
    let text = scrape(admin);
    assert_eq!(failed(&text), failed(&before) + 1.0, "failed login counted");
    assert_eq!(ok(&text), ok(&before));
    assert_sessions(admin, [2.0, 0.0, 0.0, 0.0, 0.0], "after a failed login");

    a.send("l LOGIN alice wonderland\r\n");
    a.expect_ok("l");
    assert_eq!(ok(&scrape(admin)), ok(&before) + 1.0);
    assert_eq!(arrow(&scrape(admin), "4"), arrow(&before, "4") + 1.0);
    assert_sessions(admin, [1.0, 1.0, 0.0, 0.0, 0.0], "a logged in");

    a.send("s SELECT INBOX\r\n");
    a.expect_ok("s");
    assert_eq!(
        arrow(&scrape(admin), "5"),
        arrow(&before, "5") + 1.0,
        "arrow 5"
    );
    assert_sessions(admin, [1.0, 0.0, 1.0, 0.0, 0.0], "a selected");

    a.send("i IDLE\r\n");
    let cont = a.line();
    assert!(cont.starts_with('+'), "{cont}");
    assert_sessions(admin, [1.0, 0.0, 0.0, 1.0, 0.0], "a idling");

    a.send("DONE\r\n");
    a.expect_ok("i");
    assert_sessions(admin, [1.0, 0.0, 1.0, 0.0, 0.0], "a done idling");

    a.send("c CLOSE\r\n");
    a.expect_ok("c");
    assert_eq!(
        arrow(&scrape(admin), "6"),
        arrow(&before, "6") + 1.0,
        "arrow 6"
    );
    assert_sessions(admin, [1.0, 1.0, 0.0, 0.0, 0.0], "a closed the mailbox");

    a.send("z LOGOUT\r\n");
    a.expect_bye();
    a.expect_ok("z");
    a.expect_eof();
    assert_sessions(admin, [1.0, 0.0, 0.0, 0.0, 0.0], "a logged out");
    b.send("z LOGOUT\r\n");
    b.expect_bye();
    b.expect_ok("z");
    assert_sessions(admin, [0.0; 5], "all gone");

    let text = scrape(admin);
    assert_eq!(
        arrow(&text, "7"),
        arrow(&before, "7") + 2.0,
        "arrow 7 per logout"
    );
    assert_eq!(
        arrow(&text, "1"),
        arrow(&before, "1") + 2.0,
        "arrow 1 per greeting"
    );
    let closed = |text: &str| {
        sample(
            text,
            "imapgate_sessions_closed_total",
            &[("reason", "logout")],
        )
    };
    assert_eq!(closed(&text), closed(&before) + 2.0);
    let accepted = |text: &str| {
        sample(
            text,
            "imapgate_connections_accepted_total",
            &[("listener", "imap")],
        )
    };
    assert_eq!(accepted(&text), accepted(&before) + 2.0);
    assert!(
        sample(
            &text,
            "imapgate_relayed_bytes_total",
            &[("direction", "backend_to_client")]
        ) > 0.0
    );
    assert_eq!(
        sample(
            &text,
            "imapgate_backend_sessions",
            &[("backend", "dovecot")]
        ),
        0.0
    );
}

/// `/ready` and `imapgate_backend_up` follow active checks; a backend
/// that refuses a login's connection is marked down passively.
#[test]
fn health_checks_and_readiness() {
    let dovecot = Dovecot::start();
    let [listen, admin, dead_port] = obs::ports();
    // A backend name alice prefers over "live" (rendezvous order), so her
    // login tries the dead one first.
    let dead = (0..64)
        .map(|i| format!("dead{i}"))
        .find(|name| prefers(name, "live", "alice"))
        .expect("some name wins for alice");
    let config = config_with_admin(
        listen,
        &[(&dead, dead_port), ("live", dovecot.port())],
        &dovecot.users_file(),
        admin,
    );
    // Passive marking first: no active checks.
    let passive = config.replace("interval_secs = 1", "interval_secs = 0");
    let gw = Gateway::start(&passive);
    assert!(wait_port(admin, Duration::from_secs(10)));
    let up = |name: &str| sample(&scrape(admin), "imapgate_backend_up", &[("backend", name)]);
    assert_eq!(
        (up(&dead), up("live")),
        (1.0, 1.0),
        "unchecked backends start up"
    );
    let _c = logged_in(gw.port(), "alice", "wonderland");
    assert_eq!(sessions(admin)[0]["backend"], "live");
    assert_eq!(
        up(&dead),
        0.0,
        "a refused connect marks the backend down at once"
    );
    let text = scrape(admin);
    assert_eq!(
        sample(
            &text,
            "imapgate_backend_connect_failures_total",
            &[("backend", &dead), ("kind", "connect")]
        ),
        1.0
    );
    // Down backends go last: the next login does not try it again.
    let _d = logged_in(gw.port(), "alice", "wonderland");
    let text = scrape(admin);
    assert_eq!(
        sample(
            &text,
            "imapgate_backend_connect_failures_total",
            &[("backend", &dead)]
        ),
        1.0
    );
    drop(gw);

    // Active checks: the dead one goes down, the live one stays up; ready.
    let gw = Gateway::start(&config);
    assert!(wait_port(admin, Duration::from_secs(10)));
    assert!(
        eventually(WAIT, || up(&dead) == 0.0 && up("live") == 1.0),
        "{}",
        scrape(admin)
    );
    let r = http(admin, "GET", "/ready", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    // Drain the live one: nothing usable is left.
    http(admin, "POST", "/api/backends/live/drain", Some(TOKEN), None);
    let r: HttpResponse = http(admin, "GET", "/ready", None, None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("no backend"), "{}", r.body);
    assert_eq!(http(admin, "GET", "/live", None, None).status, 200);
    drop(gw);
}

/// Whether `user` ranks backend `a` above `b` (rendezvous hashing, equal
/// weights), using the gateway's own router.
fn prefers(a: &str, b: &str, user: &str) -> bool {
    let config = format!(
        "[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:1\"\n\
         [[backend]]\nname = \"{a}\"\naddress = \"127.0.0.1:1\"\n\
         [[backend]]\nname = \"{b}\"\naddress = \"127.0.0.1:2\"\n\
         [[passdb]]\ntype = \"passwd-file\"\npath = \"users\"\n"
    );
    let config = imapgate::config::Config::parse(&config, PathBuf::from(".")).expect("config");
    let router = imapgate::route::Router::from_config(&config);
    let order = router.candidates(&imapgate::auth::UserInfo {
        user: user.into(),
        ..Default::default()
    });
    order[0].name == a
}

/// `[log] format = "json"`: every line is JSON, the session span's fields
/// ride along, and the close line has the summary.
#[test]
fn json_logs_carry_the_session_span() {
    let dovecot = Dovecot::start();
    let [listen, admin] = obs::ports();
    let config = config_with_admin(
        listen,
        &[("dovecot", dovecot.port())],
        &dovecot.users_file(),
        admin,
    )
    .replace("format = \"text\"", "format = \"json\"");
    let gw = Gateway::start(&config);
    let mut c = selected(gw.port(), "alice", "wonderland");
    c.send("z LOGOUT\r\n");
    c.expect_bye();
    c.expect_ok("z");
    c.expect_eof();
    let mut closed = None;
    let ok = eventually(WAIT, || {
        closed = gw
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                v["fields"]["message"] == "connection closed" && !v["span"]["user"].is_null()
            });
        closed.is_some()
    });
    assert!(ok, "no close line:\n{}", gw.log());
    for line in gw.log().lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let closed = closed.unwrap();
    let fields = &closed["fields"];
    for key in [
        "duration_ms",
        "bytes_from_client",
        "bytes_from_backend",
        "commands",
    ] {
        assert!(fields[key].as_u64().is_some(), "{key} in {closed}");
    }
    assert!(
        fields["bytes_from_client"].as_u64().unwrap() > 0,
        "{closed}"
    );
    assert_eq!(fields["state"], "logout", "{closed}");
    assert_eq!(fields["reason"], "logout", "{closed}");
    let span = &closed["span"];
    assert_eq!(span["name"], "session", "{closed}");
    for key in ["id", "peer", "listener", "user", "backend"] {
        assert!(!span[key].is_null(), "span field {key} in {closed}");
    }
    assert!(span["user"].as_str().unwrap().contains("alice"), "{closed}");
    assert_eq!(span["backend"], "dovecot", "{closed}");
    assert!(
        closed["spans"].as_array().is_some_and(|s| !s.is_empty()),
        "{closed}"
    );
}

/// A kick while a large response is in flight waits for the command to
/// finish: the client reads the whole FETCH (literal intact), its tagged
/// OK, then the BYE, then EOF.
#[test]
fn kick_lands_between_responses() {
    let dovecot = Dovecot::start();
    // Far more than the socket buffers hold, so the relay is mid-literal
    // (held back by the client not reading) when the kick arrives.
    const SIZE: usize = 40 * 1024 * 1024;
    run(
        Command::new("python3")
            .arg(repo().join("scripts/seed-maildir"))
            .arg(dovecot.maildir("alice"))
            .arg("1")
            .arg("--big")
            .arg("1")
            .arg("--big-size")
            .arg(SIZE.to_string()),
        Duration::from_secs(120),
    )
    .assert_success("seed-maildir");
    let (gw, admin) = gateway(&dovecot, &["dovecot"]);
    let mut c = selected(gw.port(), "alice", "wonderland");
    c.send("f FETCH 1 BODY.PEEK[]\r\n");
    // Let the relay fill the buffers and stall on the client.
    std::thread::sleep(Duration::from_millis(500));
    let r = http(
        admin,
        "POST",
        "/api/users/alice/kick",
        Some(TOKEN),
        Some(r#"{"reason":"mid-fetch"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let fetch = c.response();
    assert!(
        fetch.starts_with("* 1 FETCH ("),
        "{}",
        &fetch[..80.min(fetch.len())]
    );
    // response() read exactly the announced literal and the line after it.
    assert!(
        fetch.len() > SIZE / 2,
        "whole literal relayed: {}",
        fetch.len()
    );
    assert!(fetch.ends_with(')'), "response complete");
    // A kick lets the command in flight finish: its tagged answer, then
    // the BYE (the pump's unit tests cover `close_now`, which stops at the
    // end of the response instead).
    let ok = c.response();
    assert!(ok.starts_with("f OK"), "{ok}");
    let next = c.response();
    assert_eq!(next, "* BYE [UNAVAILABLE] mid-fetch");
    c.expect_eof();
    assert!(eventually(WAIT, || sample(
        &scrape(admin),
        "imapgate_sessions_closed_total",
        &[("reason", "kicked")]
    ) == 1.0));
}
