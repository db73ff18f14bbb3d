//! A scripted IMAP backend that misbehaves on purpose (issue 11): for what a real server
//! will not do on demand — garbage, truncated lines, a PREAUTH greeting, a close in the
//! middle of a literal, a stall halfway through a response, a missing STARTTLS.
//!
//! Each accepted connection runs the test's script (a closure over a [`Peer`]) on its own
//! thread. Everything the gateway sends on a connection is recorded, so a test can prove
//! what never reached the backend (credentials sent in clear, say).
//!
//! Invariants:
//! - std only, like the rest of the harness: a hung script fails a read timeout, never a
//!   runtime.
//! - Every read times out ([`PEER_TIMEOUT`]) and every wait polls the stop flag, so script
//!   threads end soon after the [`EvilBackend`] is dropped, whatever the gateway does.
//! - Listens on 127.0.0.1 only.

use super::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How long a script waits for one line from the gateway.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The capabilities a well-behaved greeting advertises (`greet`).
pub const CAPS: &str = "IMAP4rev1 ID LITERAL+ SASL-IR IDLE";

/// One connection from the gateway, as the script sees it.
pub struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Everything read from the gateway on this connection.
    received: Received,
    stop: Arc<AtomicBool>,
    /// 0 for the first connection the backend accepted, and so on.
    pub index: usize,
}

impl Peer {
    /// Send `s` as is (the script writes the CRLFs). Errors are ignored: the gateway may
    /// have hung up, which is what some scripts are about.
    pub fn send(&mut self, s: &str) {
        self.send_bytes(s.as_bytes());
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        let _ = self.writer.write_all(b);
        let _ = self.writer.flush();
    }

    /// One line from the gateway with its line ending; None on EOF, error or timeout.
    pub fn line(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                self.received
                    .lock()
                    .expect("received lock")
                    .extend_from_slice(&buf);
                Some(buf)
            }
        }
    }

    /// Exactly `n` bytes; None if the gateway closes first.
    pub fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).ok()?;
        self.received
            .lock()
            .expect("received lock")
            .extend_from_slice(&buf);
        Some(buf)
    }

    /// One whole command: its lines with any literals inline. A synchronizing literal is
    /// accepted with `+` first. Returns it lossily decoded; None on EOF or timeout.
    pub fn command(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            let line = self.line()?;
            out.extend_from_slice(&line);
            let Some((n, sync)) = literal_at_end(&line) else {
                return Some(String::from_utf8_lossy(&out).into_owned());
            };
            if sync {
                self.send("+ go ahead\r\n");
            }
            out.extend_from_slice(&self.bytes(n)?);
        }
    }

    /// Send the usual greeting: `* OK [CAPABILITY CAPS] evil ready`.
    pub fn greet(&mut self) {
        self.send(&format!("* OK [CAPABILITY {CAPS}] evil ready\r\n"));
    }

    /// Greet, then answer the gateway's opening (ID, LOGIN or AUTHENTICATE) with OK, the
    /// way a backend that accepts everyone would. Returns the login command, or None if
    /// the gateway hung up.
    pub fn greet_and_accept_login(&mut self) -> Option<String> {
        self.greet();
        loop {
            let cmd = self.command()?;
            let tag = cmd.split(' ').next().unwrap_or("").to_string();
            let verb = cmd
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .trim_end()
                .to_ascii_uppercase();
            match verb.as_str() {
                "ID" => {
                    self.send("* ID (\"name\" \"evil\")\r\n");
                    self.send(&format!("{tag} OK ID completed\r\n"));
                }
                "CAPABILITY" => {
                    self.send(&format!("* CAPABILITY {CAPS}\r\n"));
                    self.send(&format!("{tag} OK CAPABILITY completed\r\n"));
                }
                "LOGIN" | "AUTHENTICATE" => {
                    self.send(&format!(
                        "{tag} OK [CAPABILITY {CAPS}] Logged in as the user\r\n"
                    ));
                    return Some(cmd);
                }
                _ => self.send(&format!("{tag} BAD unexpected before login\r\n")),
            }
        }
    }

    /// After login: answer commands like a tiny server (NOOP, SELECT, LOGOUT, anything
    /// else OK) until `until` says a command is the one the script wants; return it.
    /// None if the gateway hung up first.
    pub fn serve_until(&mut self, until: impl Fn(&str) -> bool) -> Option<String> {
        loop {
            let cmd = self.command()?;
            if until(&cmd) {
                return Some(cmd);
            }
            let tag = cmd.split(' ').next().unwrap_or("").to_string();
            let verb = cmd
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .trim_end()
                .to_ascii_uppercase();
            match verb.as_str() {
                "SELECT" | "EXAMINE" => {
                    self.send("* 1 EXISTS\r\n* FLAGS (\\Seen)\r\n");
                    self.send(&format!("{tag} OK [READ-WRITE] SELECT completed\r\n"));
                }
                "LOGOUT" => {
                    self.send("* BYE logging out\r\n");
                    self.send(&format!("{tag} OK LOGOUT completed\r\n"));
                    return None;
                }
                _ => self.send(&format!("{tag} OK {verb} completed\r\n")),
            }
        }
    }

    /// Keep the connection open without sending, until the gateway closes it, `max`
    /// passes, or the backend is dropped. Returns true if the gateway closed it.
    pub fn hold(&mut self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let _ = self
            .writer
            .set_read_timeout(Some(Duration::from_millis(100)));
        let mut closed = false;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) {
            match self.reader.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self
                    .received
                    .lock()
                    .expect("received lock")
                    .extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let _ = self.writer.set_read_timeout(Some(PEER_TIMEOUT));
        closed
    }

    /// Close the connection now (both directions).
    pub fn close(self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
    }
}

/// `(n, sync)` when `line` ends in a literal announcement `{n}`, `{n+}` or `~{n}`.
fn literal_at_end(line: &[u8]) -> Option<(usize, bool)> {
    let body = line.strip_suffix(b"\n")?;
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let body = body.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&c| c == b'{')?;
    let inner = &body[open + 1..];
    let (digits, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

type Script = dyn Fn(Peer) + Send + Sync + 'static;

/// What the gateway sent on one connection.
type Received = Arc<Mutex<Vec<u8>>>;

/// The scripted backend: a loopback listener whose every connection runs the script.
pub struct EvilBackend {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    /// Bytes received, per connection in accept order.
    received: Arc<Mutex<Vec<Received>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl EvilBackend {
    /// Listen on a free loopback port; run `script` for each connection.
    pub fn start(script: impl Fn(Peer) + Send + Sync + 'static) -> EvilBackend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind evil backend");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let acceptor = {
            let (stop, accepted, received) = (stop.clone(), accepted.clone(), received.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let index = accepted.fetch_add(1, Ordering::SeqCst);
                    let log = Arc::new(Mutex::new(Vec::new()));
                    received.lock().expect("received lock").push(log.clone());
                    let _ = stream.set_read_timeout(Some(PEER_TIMEOUT));
                    let _ = stream.set_nodelay(true);
                    let Ok(writer) = stream.try_clone() else {
                        continue;
                    };
                    let peer = Peer {
                        reader: BufReader::new(stream),
                        writer,
                        received: log,
                        stop: stop.clone(),
                        index,
                    };
                    let script = script.clone();
                    thread::spawn(move || script(peer));
                }
            })
        };
        EvilBackend {
            port,
            stop,
            accepted,
            received,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Everything the gateway sent on connection `i` so far, lossily decoded.
    pub fn received(&self, i: usize) -> String {
        let all = self.received.lock().expect("received lock");
        all.get(i)
            .map(|r| String::from_utf8_lossy(&r.lock().expect("received lock")).into_owned())
            .unwrap_or_default()
    }

    /// Everything the gateway sent on all connections, lossily decoded.
    pub fn received_all(&self) -> String {
        (0..self.connections()).map(|i| self.received(i)).collect()
    }
}

impl Drop for EvilBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the acceptor blocked in accept().
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            Duration::from_secs(1),
        );
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}
