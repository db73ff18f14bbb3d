//! Integration-test harness: a private Dovecot (`scripts/dovecot-sandbox`), the built
//! `imapgate` binary, and a small line-oriented IMAP client, all on free loopback ports.
//!
//! Invariants:
//! - Every child process runs in its own process group and is killed with its whole group
//!   (SIGTERM, then SIGKILL) when its guard drops, including while a test panics.
//! - A watchdog shell in each child's group kills the group if the test process itself dies
//!   without unwinding (e.g. nextest's timeout kills it), so no Dovecot outlives a test run.
//! - Everything a test writes lives in a tempdir removed on drop; set `IMAPGATE_KEEP_TEMP=1`
//!   to keep them for a post-mortem. When a test panics, the tail of each log is printed.
//!
//! std only (plus `tempfile`): no tokio here, so a hung test fails on a timeout instead of
//! wedging a runtime.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod evil_backend;
pub mod procstat;
pub mod session;
pub mod tls;

/// Demo users, the same as `config/users`.
pub const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

/// How long a `Client` waits for one line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Dovecot or imapgate may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port nothing listens on right now (bind port 0, read it, close).
///
/// Racy by nature; `Dovecot::start` retries on a port clash.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A blocking TCP connection to 127.0.0.1:`port` from the loopback address `source`
/// (127.0.0.0/8 is all local on Linux: each address plays another client).
pub fn connect_from(source: Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Whether 127.0.0.1:`port` accepts a TCP connection within `timeout`.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Poll `f` every 50 ms until it holds or `timeout` passes; whether it held.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn tempdir(prefix: &str) -> TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create tempdir");
    if std::env::var_os("IMAPGATE_KEEP_TEMP").is_some_and(|v| !v.is_empty() && v != "0") {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Quote `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                write!(out, "\\u{:04X}", c as u32).expect("write to String");
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------
// Process groups

/// A child running in its own process group, with a watchdog in that group; dropping it
/// terminates the whole group and reaps both.
pub struct ProcessGroup {
    name: &'static str,
    child: Child,
    watchdog: Option<Child>,
}

impl ProcessGroup {
    /// Spawn `cmd` as the leader of a new process group.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> io::Result<Self> {
        let child = cmd.process_group(0).spawn()?;
        let pgid = child.id();
        // Kills the group if this test process disappears without running Drop. It is
        // itself in the group, so the normal Drop path takes it down too.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; \
                 kill -TERM -\"$2\" 2>/dev/null; sleep 5; kill -KILL -\"$2\" 2>/dev/null",
            )
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(pgid.to_string())
            .process_group(pgid as i32)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Ok(Self {
            name,
            child,
            watchdog,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the leader has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waitpid")
    }

    /// Send `signal` (e.g. "TERM", "HUP") to the leader only.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Wait up to `timeout` for the leader to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(format!("-{}", self.pid()))
            .stderr(Stdio::null())
            .status();
    }

    /// Whether any live (non-zombie) process is left in the group. Reads /proc because
    /// orphaned zombies still count for `kill -0` until init reaps them.
    fn group_alive(&self) -> bool {
        let pgid = self.pid().to_string();
        let Ok(entries) = fs::read_dir("/proc") else {
            return false;
        };
        entries.flatten().any(|e| {
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...; comm may contain anything but ends at the
            // last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1);
            pgrp == Some(pgid.as_str()) && state != Some("Z")
        })
    }

    /// Terminate the whole group: SIGTERM, up to 5 s grace, then SIGKILL; reap the leader
    /// and the watchdog.
    pub fn stop(&mut self) {
        self.kill_group("TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let _ = self.child.try_wait();
            if let Some(w) = self.watchdog.as_mut() {
                let _ = w.try_wait();
            }
            if !self.group_alive() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "{}: group {} ignored SIGTERM, killing",
                    self.name,
                    self.pid()
                );
                self.kill_group("KILL");
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Dovecot

/// A private Dovecot instance from `scripts/dovecot-sandbox`, listening on 127.0.0.1.
pub struct Dovecot {
    proc: ProcessGroup,
    port: u16,
    /// The PROXY-protocol listener's port (`DovecotBuilder::haproxy`).
    haproxy_port: Option<u16>,
    dir: TempDir,
}

/// Configures a `Dovecot` before it starts.
#[derive(Default)]
pub struct DovecotBuilder {
    users: Vec<(String, String)>,
    master: Option<(String, String)>,
    port: Option<u16>,
    /// `--rawlog`: see `session::DovecotBuilder::rawlog`.
    rawlog: bool,
    /// `--haproxy-port`: see `DovecotBuilder::haproxy`.
    haproxy: bool,
}

impl DovecotBuilder {
    /// Add a user besides alice and bob.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Add a master user (log in as `user*master` with the master's password).
    pub fn master_user(mut self, name: &str, password: &str) -> Self {
        self.master = Some((name.into(), password.into()));
        self
    }

    /// Listen on `port` instead of a free one (no retry if it is taken).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Also listen on a second port that requires a PROXY protocol header (Dovecot's
    /// `haproxy = yes`, trusted from loopback); see [`Dovecot::haproxy_port`].
    pub fn haproxy(mut self) -> Self {
        self.haproxy = true;
        self
    }

    pub fn start(self) -> Dovecot {
        let dir = tempdir("imapgate-dovecot-");
        let mut users = String::new();
        for (u, p) in USERS
            .iter()
            .map(|&(u, p)| (u.to_string(), p.to_string()))
            .chain(self.users.iter().cloned())
        {
            writeln!(users, "{u}:{{PLAIN}}{p}").expect("write to String");
        }
        fs::write(dir.path().join("users"), users).expect("write users file");

        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = self.port.unwrap_or_else(free_port);
            let haproxy_port = self.haproxy.then(free_port);
            let out = File::create(dir.path().join("sandbox.out")).expect("create sandbox.out");
            let mut cmd = Command::new("bash");
            cmd.arg(repo().join("scripts/dovecot-sandbox"))
                .arg("--dir")
                .arg(dir.path())
                .arg("--port")
                .arg(port.to_string())
                .arg("--users")
                .arg(dir.path().join("users"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup"))
                .stderr(out);
            if let Some((name, pass)) = &self.master {
                cmd.arg("--master-user").arg(format!("{name}:{pass}"));
            }
            if self.rawlog {
                cmd.arg("--rawlog");
            }
            if let Some(p) = haproxy_port {
                cmd.arg("--haproxy-port").arg(p.to_string());
            }
            let mut proc = ProcessGroup::spawn("dovecot", &mut cmd).expect("spawn dovecot-sandbox");
            match wait_greeting(&mut proc, port) {
                Ok(()) => {
                    return Dovecot {
                        proc,
                        port,
                        haproxy_port,
                        dir,
                    }
                }
                Err(e) => {
                    proc.stop();
                    let log = read_lossy(&dir.path().join("dovecot.log"));
                    let out = read_lossy(&dir.path().join("sandbox.out"));
                    last_err =
                        format!("{e}\n--- sandbox output ---\n{out}\n--- dovecot.log ---\n{log}");
                    // A port clash with another test is worth another try; nothing else is.
                    if self.port.is_some() || !(log + &out).contains("Address already in use") {
                        break;
                    }
                    let _ = fs::remove_file(dir.path().join("dovecot.log"));
                }
            }
        }
        panic!("Dovecot did not start: {last_err}");
    }
}

/// Wait until `port` greets with `* OK`, failing early if the sandbox exits.
fn wait_greeting(proc: &mut ProcessGroup, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = proc.try_wait() {
            return Err(format!("dovecot-sandbox exited early: {status}"));
        }
        if let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            stream
                .set_read_timeout(Some(LINE_TIMEOUT))
                .expect("set timeout");
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            return if line.starts_with("* OK") {
                Ok(())
            } else {
                Err(format!("unexpected greeting on port {port}: {line:?}"))
            };
        }
        if Instant::now() >= deadline {
            return Err(format!("port {port} not listening after {START_TIMEOUT:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

impl Dovecot {
    /// Dovecot with users alice/wonderland and bob/builder.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn builder() -> DovecotBuilder {
        DovecotBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listener that requires a PROXY protocol header (started with `haproxy()`).
    pub fn haproxy_port(&self) -> u16 {
        self.haproxy_port
            .expect("Dovecot started without DovecotBuilder::haproxy")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The passwd-file Dovecot authenticates against (`user:{PLAIN}secret` lines); give the
    /// same file to the gateway.
    pub fn users_file(&self) -> PathBuf {
        self.dir().join("users")
    }

    /// `user`'s Maildir (may not exist before the first login or `seed`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir().join("mail").join(user).join("Maildir")
    }

    /// Contents of dovecot.log (`auth_verbose`: every auth attempt is logged).
    pub fn log(&self) -> String {
        read_lossy(&self.dir().join("dovecot.log"))
    }

    /// Drop `n` messages (`big` of them over 1 MB) into `user`'s INBOX with
    /// `scripts/seed-maildir`. Message-IDs are `<seed-I.USER@imapgate.test>`, I from 1.
    pub fn seed(&self, user: &str, n: usize, big: usize) {
        let out = run(
            Command::new("python3")
                .arg(repo().join("scripts/seed-maildir"))
                .arg(self.maildir(user))
                .arg(n.to_string())
                .arg("--big")
                .arg(big.to_string()),
            Duration::from_secs(120),
        );
        out.assert_success("seed-maildir");
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.proc.stop();
        if thread::panicking() {
            eprintln!(
                "--- dovecot.log ({}) ---\n{}",
                self.dir().display(),
                tail(&self.log(), 40)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Gateway

/// The `imapgate` binary under test, started with a config written to a tempdir.
pub struct Gateway {
    proc: ProcessGroup,
    ports: Vec<u16>,
    dir: TempDir,
}

/// A config with one plain listener on `listen_port`, one backend on `backend_port` and a
/// passwd-file passdb at `users_file`, in the documented format.
pub fn gateway_config(listen_port: u16, backend_port: u16, users_file: &Path) -> String {
    let users = toml_str(users_file.to_str().expect("users file path is UTF-8"));
    format!(
        r#"[[listener]]
name = "imap"
address = "127.0.0.1:{listen_port}"

[[backend]]
name = "dovecot"
address = "127.0.0.1:{backend_port}"

[[passdb]]
type = "passwd-file"
path = {users}
default_scheme = "PLAIN"

[limits]
login_timeout_secs = 60

[log]
level = "debug"
format = "text"
"#
    )
}

/// A `[[listener]]` table for implicit TLS on `port` with one certificate,
/// to append to a config.
pub fn implicit_tls_listener(name: &str, port: u16, cert: &Path, key: &Path) -> String {
    format!(
        "\n[[listener]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\ntls = \"implicit\"\n\
         certificates = [{{ cert = {}, key = {} }}]\n",
        toml_str(cert.to_str().expect("utf-8 path")),
        toml_str(key.to_str().expect("utf-8 path")),
    )
}

/// The ports of every `address = "HOST:PORT"` inside `[[listener]]` tables.
pub fn listener_ports(config: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut in_listener = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_listener = line == "[[listener]]";
        } else if in_listener {
            if let Some(value) = line.strip_prefix("address") {
                let value = value.trim_start().trim_start_matches('=').trim();
                let value = value
                    .split('#')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches('"');
                if let Some(port) = value.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

impl Gateway {
    /// Write `config_toml` to `imapgate.toml` in a tempdir, run `imapgate --config` on it
    /// (output to `imapgate.log` there) and wait until every listener accepts connections.
    pub fn start(config_toml: &str) -> Self {
        let dir = tempdir("imapgate-gw-");
        let config = dir.path().join("imapgate.toml");
        fs::write(&config, config_toml).expect("write config");
        let log = File::create(dir.path().join("imapgate.log")).expect("create imapgate.log");
        let proc = ProcessGroup::spawn(
            "imapgate",
            Command::new(env!("CARGO_BIN_EXE_imapgate"))
                .arg("--config")
                .arg(&config)
                .current_dir(dir.path())
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log),
        )
        .expect("spawn imapgate");
        let ports = listener_ports(config_toml);
        assert!(
            !ports.is_empty(),
            "no [[listener]] address in config:\n{config_toml}"
        );
        let mut gw = Gateway { proc, ports, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        for port in gw.ports.clone() {
            loop {
                if let Some(status) = gw.proc.try_wait() {
                    panic!("imapgate exited early: {status}\n{}", gw.log());
                }
                if wait_port(port, Duration::from_millis(100)) {
                    break;
                }
                if Instant::now() >= deadline {
                    panic!("imapgate not listening on {port}\n{}", gw.log());
                }
            }
        }
        gw
    }

    /// The first listener's port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("imapgate.toml")
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.try_wait().is_none()
    }

    /// Send a signal (e.g. "HUP", "TERM") to imapgate.
    pub fn signal(&self, signal: &str) {
        self.proc.signal(signal);
    }

    /// Wait up to `timeout` for imapgate to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_timeout(timeout)
    }

    /// Everything imapgate wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.dir().join("imapgate.log"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.proc.stop();
        if thread::panicking() {
            eprintln!(
                "--- imapgate.log ({}) ---\n{}",
                self.dir().display(),
                tail(&self.log(), 60)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw IMAP client

/// A tiny line-oriented IMAP client for byte-level assertions. Every read times out
/// (`LINE_TIMEOUT` by default) and panics rather than hanging.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    port: u16,
}

impl Client {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        stream
            .set_read_timeout(Some(LINE_TIMEOUT))
            .expect("set timeout");
        let writer = stream.try_clone().expect("dup socket");
        Client {
            reader: BufReader::new(stream),
            writer,
            port,
        }
    }

    /// Connect to 127.0.0.1:`port` from `source`, another loopback address (127.0.0.2,
    /// 127.0.0.3, …: distinct client IPs with no setup on Linux). std cannot bind before
    /// connecting, so the socket is made with tokio and handed back as a blocking one.
    pub fn connect_from(source: Ipv4Addr, port: u16) -> Self {
        let stream = connect_from(source, port)
            .unwrap_or_else(|e| panic!("connect from {source} to 127.0.0.1:{port}: {e}"));
        Self::from_stream(stream, port)
    }

    /// Wrap a connected stream (e.g. after writing a PROXY protocol header to it).
    pub fn from_stream(stream: TcpStream, port: u16) -> Self {
        stream
            .set_read_timeout(Some(LINE_TIMEOUT))
            .expect("set timeout");
        let writer = stream.try_clone().expect("dup socket");
        Client {
            reader: BufReader::new(stream),
            writer,
            port,
        }
    }

    /// Change the per-read timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.writer
            .set_read_timeout(Some(timeout))
            .expect("set timeout");
    }

    /// Read the greeting and assert it is `* OK`.
    pub fn greeting(&mut self) -> String {
        let line = self.line();
        assert!(
            line.starts_with("* OK"),
            "greeting on {}: {line:?}",
            self.port
        );
        line
    }

    /// Send `s` as is (the caller writes the CRLF).
    pub fn send(&mut self, s: &str) {
        self.send_bytes(s.as_bytes());
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.writer
            .write_all(b)
            .unwrap_or_else(|e| panic!("send to {}: {e}", self.port));
    }

    /// One line without its CRLF; panics on timeout, EOF, or a line not ending in CRLF.
    pub fn line(&mut self) -> String {
        let raw = self.line_bytes();
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// One line as bytes, without its CRLF.
    pub fn line_bytes(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("connection to {} closed; expected a line", self.port),
            Ok(_) => {}
            Err(e) => panic!(
                "reading a line from {}: {e} (got so far: {:?})",
                self.port,
                String::from_utf8_lossy(&buf)
            ),
        }
        assert!(
            buf.ends_with(b"\r\n"),
            "line from {} not CRLF-terminated: {:?}",
            self.port,
            String::from_utf8_lossy(&buf)
        );
        buf.truncate(buf.len() - 2);
        buf
    }

    /// Exactly `n` bytes (a literal's contents).
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("reading {n} bytes from {}: {e}", self.port));
        buf
    }

    /// One whole response: a line, and when it ends in a literal `{n}` the literal and the
    /// rest of the response, joined (literal bytes decoded lossily).
    pub fn response(&mut self) -> String {
        let mut out = self.line();
        let status = is_status_response(&out);
        while let Some(n) = literal_len(&out).filter(|_| !status) {
            let lit = self.read_exact(n);
            out.push_str("\r\n");
            out.push_str(&String::from_utf8_lossy(&lit));
            out.push_str(&self.line());
        }
        out
    }

    /// Read responses up to the one tagged `tag`: (untagged and continuation responses,
    /// the tagged response).
    pub fn expect_tagged(&mut self, tag: &str) -> (Vec<String>, String) {
        let prefix = format!("{tag} ");
        let mut untagged = Vec::new();
        loop {
            let r = self.response();
            if r.starts_with(&prefix) {
                return (untagged, r);
            }
            untagged.push(r);
        }
    }

    /// Read up to the tagged response for `tag`, assert `TAG OK`, return every response
    /// read (the tagged one last).
    pub fn expect_ok(&mut self, tag: &str) -> Vec<String> {
        let (mut lines, tagged) = self.expect_tagged(tag);
        assert!(
            tagged.starts_with(&format!("{tag} OK")),
            "expected {tag} OK, got {tagged:?} after {lines:?}"
        );
        lines.push(tagged);
        lines
    }

    /// Read up to the tagged response for `tag`, assert `TAG NO`, return it.
    pub fn expect_no(&mut self, tag: &str) -> String {
        let (lines, tagged) = self.expect_tagged(tag);
        assert!(
            tagged.starts_with(&format!("{tag} NO")),
            "expected {tag} NO, got {tagged:?} after {lines:?}"
        );
        tagged
    }

    /// Read responses until `* BYE`; return it.
    pub fn expect_bye(&mut self) -> String {
        loop {
            let r = self.response();
            if r.starts_with("* BYE") {
                return r;
            }
        }
    }

    /// Assert the server closes the connection (after reading and discarding nothing).
    pub fn expect_eof(&mut self) {
        let mut buf = [0u8; 256];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected EOF from {}, got {:?}",
                self.port,
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected EOF from {}: {e}", self.port),
        }
    }
}

/// `n` when `line` ends with a literal announcement `{n}`, `{n+}` or `~{n}`.
/// Whether a response's first line is a status response or a continuation
/// request, which carry no literal (RFC 9051 §9) even when their text ends in
/// `{n}` — the gateway's own framer makes the same distinction.
pub fn is_status_response(line: &str) -> bool {
    use imapgate::imap::response::{classify, Response, Untagged};
    matches!(
        classify(line.as_bytes()),
        Ok(Response::Tagged { .. }
            | Response::Continuation(_)
            | Response::Untagged(Untagged::Status(..) | Untagged::Bye(_) | Untagged::Preauth(_)))
    )
}

fn literal_len(line: &str) -> Option<usize> {
    let body = line.strip_suffix('}')?;
    let open = body.rfind('{')?;
    body[open + 1..].trim_end_matches('+').parse().ok()
}

// ---------------------------------------------------------------------------------------
// External programs

/// What a finished program printed.
pub struct Output {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panic with the program's output unless it exited 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Run `cmd` to completion (stdin closed, output captured) in its own process group, which
/// is killed if it takes longer than `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("tempfile");
    let mut err = tempfile::tempfile().expect("tempfile");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"));
    let mut proc =
        ProcessGroup::spawn("command", cmd).unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let status = proc.wait_timeout(timeout);
    drop(proc);
    let read = |f: &mut File| {
        let mut s = Vec::new();
        io::Seek::rewind(f).expect("rewind");
        f.read_to_end(&mut s).expect("read output");
        String::from_utf8_lossy(&s).into_owned()
    };
    let stdout = read(&mut out);
    let stderr = read(&mut err);
    let Some(status) = status else {
        panic!("{what} timed out after {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    };
    Output {
        what,
        status,
        stdout,
        stderr,
    }
}

/// Run `python3 tests/clients/<script> ARGS...`, assert it exits 0, return its stdout.
pub fn python3(script: &str, args: &[&str]) -> String {
    let out = run(
        Command::new("python3")
            .arg(repo().join("tests/clients").join(script))
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(120),
    );
    out.assert_success(script);
    out.stdout
}
