//! A few seconds of the load tool against the real gateway in front of the
//! tool's own stub backend: checks that every scenario runs and that its
//! JSON line is well-formed and error-free.  The race itself
//! (`scripts/bench`) never runs in CI.

mod common;

use std::process::Command;

use common::tls::Pki;
use common::{free_port, gateway_config, wait_port, Gateway, ProcessGroup, START_TIMEOUT};

const BENCH: &str = env!("CARGO_BIN_EXE_imapgate-bench");

fn bench(args: &[&str]) -> String {
    let out = Command::new(BENCH)
        .args(args)
        .output()
        .expect("run imapgate-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "imapgate-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The value of `"key":number` in the scenario's JSON line.
fn field(output: &str, key: &str) -> f64 {
    let json = output
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} missing in {json}"))
        + pat.len();
    json[at..]
        .split([',', '}'])
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} not a number in {json}"))
}

#[test]
fn scenarios_run_through_the_gateway_against_the_stub() {
    let stub_port = free_port();
    let _stub = ProcessGroup::spawn(
        "stub-backend",
        Command::new(BENCH).args([
            "stub-backend",
            "--listen",
            &format!("127.0.0.1:{stub_port}"),
        ]),
    )
    .expect("start stub backend");
    assert!(
        wait_port(stub_port, START_TIMEOUT),
        "stub backend did not listen"
    );

    let gw_port = free_port();
    let tls_port = free_port();
    let users = common::repo().join("config/users");
    // A second, implicit-TLS listener: the tool's `--tls-ca` client leg.
    let mut pki = Pki::new("bench smoke CA");
    let (cert, key) = pki.server("gateway", &["127.0.0.1"]);
    let mut config = gateway_config(gw_port, stub_port, &users);
    config.push_str(&common::implicit_tls_listener(
        "imaps", tls_port, &cert, &key,
    ));
    let gateway = Gateway::start(&config);
    let target = format!("127.0.0.1:{gw_port}");
    let tls_target = format!("127.0.0.1:{tls_port}");
    let ca = pki.ca_file();
    let ca = ca.to_str().expect("utf-8 path");

    let out = bench(&[
        "login",
        "--target",
        &target,
        "--seconds",
        "1",
        "--concurrency",
        "2",
    ]);
    assert!(field(&out, "sessions_per_sec") > 0.0, "{out}");
    assert_eq!(field(&out, "errors"), 0.0, "{out}");

    let out = bench(&[
        "noop",
        "--target",
        &target,
        "--seconds",
        "1",
        "--sessions",
        "2",
    ]);
    assert!(field(&out, "ops_per_sec") > 0.0, "{out}");
    assert!(field(&out, "p50_us") <= field(&out, "p99_us"), "{out}");

    let pid = gateway.pid().to_string();
    let out = bench(&[
        "idle",
        "--target",
        &target,
        "--sessions",
        "20",
        "--procs",
        "2",
        "--pid",
        &pid,
        "--hold",
        "0.2",
    ]);
    assert_eq!(field(&out, "sessions"), 20.0, "{out}");

    // The same over implicit TLS, the certificate checked against the CA.
    let out = bench(&[
        "idle",
        "--target",
        &tls_target,
        "--tls-ca",
        ca,
        "--sessions",
        "10",
        "--procs",
        "2",
        "--pid",
        &pid,
        "--hold",
        "0.2",
    ]);
    assert_eq!(field(&out, "sessions"), 10.0, "{out}");
    let out = bench(&[
        "login",
        "--target",
        &tls_target,
        "--tls-ca",
        ca,
        "--seconds",
        "0.5",
    ]);
    assert!(field(&out, "sessions_per_sec") > 0.0, "{out}");
    assert_eq!(field(&out, "errors"), 0.0, "{out}");
    // A CA that did not sign the gateway's certificate: every login fails.
    let other = Pki::new("another CA");
    let other_ca = other.ca_file();
    let out = bench(&[
        "login",
        "--target",
        &tls_target,
        "--tls-ca",
        other_ca.to_str().expect("utf-8 path"),
        "--seconds",
        "0.3",
    ]);
    assert!(field(&out, "errors") > 0.0, "{out}");
    assert_eq!(field(&out, "sessions_per_sec"), 0.0, "{out}");

    // A wrong password is an error the tool must count, not hide.
    let out = bench(&[
        "login",
        "--target",
        &target,
        "--seconds",
        "0.5",
        "--pass",
        "wrong",
    ]);
    assert!(field(&out, "errors") > 0.0, "{out}");
}
