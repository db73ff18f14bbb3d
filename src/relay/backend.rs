//! The backend leg's opening: connect, read the greeting, learn the
//! capabilities, tell the backend who the client is (ID), and log in for
//! the user.  Only after this succeeds does the relay start.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::imap::encode::{self, LiteralMode};
use crate::imap::response::{classify, Code, Response, Status, Untagged};
use crate::imap::{Frame, Framer, Limits, Secret};
use crate::route::Backend;

/// A logged-in backend connection, ready to relay.
#[derive(Debug)]
pub struct BackendConn {
    /// The backend's name (metric label).
    pub name: String,
    pub stream: TcpStream,
    /// The backend's capabilities after login.
    pub capabilities: Vec<String>,
    /// Bytes the backend sent after its LOGIN answer; relay them first.
    pub leftover: Vec<u8>,
}

/// Why the backend leg could not be opened.  `Connect`, `Timeout` and
/// `Greeting` mean "try the next backend"; `Rejected` is the backend's own
/// answer to the user's credentials and is passed to the client.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("unusable greeting: {0}")]
    Greeting(String),
    #[error("login rejected by backend")]
    Rejected { code: Option<String>, text: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
}

impl BackendError {
    /// Whether another backend may do better (the user is not at fault).
    pub fn try_next(&self) -> bool {
        matches!(
            self,
            BackendError::Connect(_) | BackendError::Timeout(_) | BackendError::Greeting(_)
        )
    }

    /// Stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Connect(_) => "connect",
            BackendError::Timeout(_) => "timeout",
            BackendError::Greeting(_) => "greeting",
            BackendError::Rejected { .. } => "rejected",
            BackendError::Protocol(_) => "protocol",
            BackendError::Io(_) => "io",
        }
    }
}

/// Who the client is, for the ID command (Dovecot's `x-originating-*`
/// fields; honoured from `login_trusted_networks`).
#[derive(Debug, Clone)]
pub struct ClientMeta {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub session_id: String,
}

/// Timeouts for the two phases.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub login: Duration,
}

/// Connect to `backend`, read its greeting and log in as `user`.
pub async fn open(
    backend: &Backend,
    user: &str,
    password: &Secret<Vec<u8>>,
    meta: &ClientMeta,
    timeouts: Timeouts,
) -> Result<BackendConn, BackendError> {
    let started = std::time::Instant::now();
    let (stream, greeting_caps, reader) = tokio::time::timeout(timeouts.connect, greet(backend))
        .await
        .map_err(|_| BackendError::Timeout("connecting or waiting for the greeting"))??;
    crate::metrics::get()
        .backend_connect_duration
        .with_label_values(&[&backend.name])
        .observe(started.elapsed().as_secs_f64());
    tokio::time::timeout(
        timeouts.login,
        login(stream, reader, greeting_caps, backend, user, password, meta),
    )
    .await
    .map_err(|_| BackendError::Timeout("waiting for the login answer"))?
}

async fn greet(
    backend: &Backend,
) -> Result<(TcpStream, Option<Vec<String>>, LineReader), BackendError> {
    let mut stream = TcpStream::connect((backend.host.as_str(), backend.port))
        .await
        .map_err(BackendError::Connect)?;
    stream.set_nodelay(true)?;
    let mut reader = LineReader::new();
    let line = reader.line(&mut stream).await?;
    let caps = match classify(&line).map_err(|e| BackendError::Greeting(e.to_string()))? {
        Response::Untagged(Untagged::Status(Status::Ok, text)) => match text.code {
            Some(Code::Capability(caps)) => Some(caps),
            _ => None,
        },
        // A PREAUTH greeting would bind the client to whatever user the
        // backend chose; never accept it (RFC 9051 §7.1.4).
        Response::Untagged(Untagged::Preauth(_)) => {
            return Err(BackendError::Greeting(
                "backend greeted PREAUTH; refusing to use it".into(),
            ))
        }
        Response::Untagged(Untagged::Bye(text)) => {
            return Err(BackendError::Greeting(format!(
                "backend refused the connection: {}",
                String::from_utf8_lossy(text.text)
            )))
        }
        _ => return Err(BackendError::Greeting(printable(&line))),
    };
    Ok((stream, caps, reader))
}

async fn login(
    mut stream: TcpStream,
    mut reader: LineReader,
    greeting_caps: Option<Vec<String>>,
    backend: &Backend,
    user: &str,
    password: &Secret<Vec<u8>>,
    meta: &ClientMeta,
) -> Result<BackendConn, BackendError> {
    let caps = match greeting_caps {
        Some(c) => c,
        None => capability(&mut stream, &mut reader, "G0").await?,
    };
    let has = |name: &str| caps.iter().any(|c| c.eq_ignore_ascii_case(name));
    if has("LOGINDISABLED") {
        // Never send credentials in clear to a backend that asks for TLS.
        return Err(BackendError::Greeting(
            "backend advertises LOGINDISABLED (TLS required)".into(),
        ));
    }
    let mut first = Vec::new();
    let id_sent = backend.forward_client_id && has("ID");
    if id_sent {
        let peer_ip = meta.peer.ip().to_string();
        let peer_port = meta.peer.port().to_string();
        let local_ip = meta.local.ip().to_string();
        let local_port = meta.local.port().to_string();
        let fields: [(&[u8], Option<&[u8]>); 5] = [
            (b"x-originating-ip", Some(peer_ip.as_bytes())),
            (b"x-originating-port", Some(peer_port.as_bytes())),
            (b"x-connected-ip", Some(local_ip.as_bytes())),
            (b"x-connected-port", Some(local_port.as_bytes())),
            (b"x-session-ext-id", Some(meta.session_id.as_bytes())),
        ];
        first.extend(encode::id_command("G1", fields.into_iter()));
    }
    let small = user.len() <= 4096 && password.expose().len() <= 4096;
    let mode = if has("LITERAL+") || (has("LITERAL-") && small) {
        LiteralMode::NonSync
    } else {
        LiteralMode::Sync
    };
    let cmd = encode::login("G2", user.as_bytes(), password.expose(), mode);
    let mut parts = cmd.parts.into_iter();
    // The ID command and the first LOGIN part go out in one write.
    first.extend(parts.next().unwrap_or_default());
    stream.write_all(&first).await?;
    for part in parts {
        wait_continuation(&mut stream, &mut reader).await?;
        stream.write_all(&part).await?;
    }
    let mut login_caps = None;
    loop {
        let line = reader.line(&mut stream).await?;
        match classify(&line).map_err(|e| BackendError::Protocol(e.to_string()))? {
            Response::Tagged { tag: "G1", .. } => {}
            Response::Tagged {
                tag: "G2",
                status,
                text,
            } => {
                if status != Status::Ok {
                    return Err(BackendError::Rejected {
                        code: text
                            .raw_code
                            .map(|c| String::from_utf8_lossy(c).into_owned()),
                        text: String::from_utf8_lossy(text.text).into_owned(),
                    });
                }
                if let Some(Code::Capability(c)) = text.code {
                    login_caps = Some(c);
                }
                break;
            }
            Response::Untagged(Untagged::Capability(c)) => login_caps = Some(c),
            Response::Untagged(Untagged::Bye(text)) => {
                return Err(BackendError::Greeting(format!(
                    "backend closed during login: {}",
                    String::from_utf8_lossy(text.text)
                )))
            }
            _ => {}
        }
    }
    let capabilities = match login_caps {
        Some(c) => c,
        // Capabilities may change at login (RFC 9051 §6.2.3); ask again.
        None => capability(&mut stream, &mut reader, "G3").await?,
    };
    Ok(BackendConn {
        name: backend.name.clone(),
        stream,
        capabilities,
        leftover: reader.into_leftover(),
    })
}

async fn capability(
    stream: &mut TcpStream,
    reader: &mut LineReader,
    tag: &str,
) -> Result<Vec<String>, BackendError> {
    stream
        .write_all(format!("{tag} CAPABILITY\r\n").as_bytes())
        .await?;
    let mut caps = Vec::new();
    loop {
        let line = reader.line(stream).await?;
        match classify(&line).map_err(|e| BackendError::Protocol(e.to_string()))? {
            Response::Untagged(Untagged::Capability(c)) => caps = c,
            Response::Tagged { tag: t, status, .. } if t == tag => {
                if status != Status::Ok {
                    return Err(BackendError::Protocol("CAPABILITY failed".into()));
                }
                return Ok(caps);
            }
            _ => {}
        }
    }
}

async fn wait_continuation(
    stream: &mut TcpStream,
    reader: &mut LineReader,
) -> Result<(), BackendError> {
    loop {
        let line = reader.line(stream).await?;
        match classify(&line).map_err(|e| BackendError::Protocol(e.to_string()))? {
            Response::Continuation(_) => return Ok(()),
            Response::Tagged { status, text, .. } if status != Status::Ok => {
                return Err(BackendError::Rejected {
                    code: text
                        .raw_code
                        .map(|c| String::from_utf8_lossy(c).into_owned()),
                    text: String::from_utf8_lossy(text.text).into_owned(),
                })
            }
            Response::Untagged(_) | Response::Tagged { .. } => {}
        }
    }
}

/// Reads whole response lines during the opening.  Literals are not
/// expected before login; one is a protocol error.
struct LineReader {
    buf: Vec<u8>,
    framer: Framer,
}

impl LineReader {
    fn new() -> LineReader {
        LineReader {
            buf: Vec::with_capacity(1024),
            framer: Framer::new(Limits {
                max_line: 64 * 1024,
                max_literal: 0,
                max_literals_per_unit: 0,
            }),
        }
    }

    async fn line(&mut self, stream: &mut TcpStream) -> Result<Vec<u8>, BackendError> {
        loop {
            match self.framer.next(&self.buf) {
                Ok(Some(Frame::Line { len, .. })) => return Ok(self.buf.drain(..len).collect()),
                Ok(Some(Frame::Literal { .. })) => {
                    return Err(BackendError::Protocol(
                        "unexpected literal before login".into(),
                    ))
                }
                Ok(None) => {}
                Err(e) => return Err(BackendError::Protocol(e.to_string())),
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(BackendError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn into_leftover(self) -> Vec<u8> {
        self.buf
    }
}

/// A peer's line made safe for a log message.
pub fn printable(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let s = s.trim_end_matches(['\r', '\n']);
    s.chars().take(200).flat_map(char::escape_default).collect()
}
