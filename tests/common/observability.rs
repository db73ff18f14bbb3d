//! Helpers for the observability tests: a gateway config with the admin
//! listener (and API token) on, a std-only HTTP/1.1 client for the admin
//! endpoints and Prometheus' API, and a reader for the Prometheus text
//! format.  Included by `tests/observability.rs` with `#[path]`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::common::gateway_config;

/// The token the tests configure.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A gateway config with one listener, the given backends (name, port),
/// the admin listener on `admin_port` with [`TOKEN`], and active health
/// checks every second.
pub fn config_with_admin(
    listen_port: u16,
    backends: &[(&str, u16)],
    users_file: &Path,
    admin_port: u16,
) -> String {
    let base = gateway_config(listen_port, backends[0].1, users_file);
    // gateway_config names its backend "dovecot"; rename and add others.
    let mut config = base.replacen(
        "name = \"dovecot\"",
        &format!("name = \"{}\"", backends[0].0),
        1,
    );
    let mut extra = String::new();
    for (name, port) in &backends[1..] {
        extra.push_str(&format!(
            "\n[[backend]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n"
        ));
    }
    // Tables after the [[backend]] array: append at the end.
    config.push_str(&extra);
    config.push_str(&format!(
        "\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\napi_token = \"{TOKEN}\"\n\n[health]\ninterval_secs = 1\nfall = 1\nrise = 1\n"
    ));
    config
}

/// A response: status code and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (Connection: close).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// GET /metrics.
pub fn scrape(admin_port: u16) -> String {
    let r = http(admin_port, "GET", "/metrics", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Sum of every sample of `name` whose labels include all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Every sample name in an exposition (histograms give `_bucket`, `_sum`,
/// `_count`).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

/// Every family declared by `# TYPE name kind`, with its kind.
pub fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (n, k) = l.split_once(' ')?;
            Some((n.to_owned(), k.to_owned()))
        })
        .collect()
}

/// The sessions the admin API lists.
pub fn sessions(admin_port: u16) -> Vec<Value> {
    let r = http(admin_port, "GET", "/api/sessions", Some(TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["sessions"]
        .as_array()
        .expect("sessions array")
        .clone()
}

/// `N` distinct free loopback ports (bound together, then released, so the
/// kernel cannot hand out the same one twice as back-to-back
/// `free_port()` calls can).
pub fn ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}
