//! The backend leg's opening: connect, read the greeting, learn the
//! capabilities, tell the backend who the client is (ID), and log in for
//! the user.  Only after this succeeds does the relay start.
//!
//! TLS (per backend `tls`): `implicit` handshakes right after connect;
//! `starttls` reads the greeting, requires the STARTTLS capability (never
//! falls back to cleartext), upgrades, and asks for the capabilities again
//! (RFC 3501 §6.2.1: the pre-TLS list is void).  A certificate that does not
//! verify counts as the backend being down.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::MasterMethod;
use crate::config::TlsMode;
use crate::imap::command::IdParams;
use crate::imap::encode::{self, LiteralMode};
use crate::imap::response::{classify, Code, Response, Status, Untagged};
use crate::imap::{Frame, Framer, Limits, Secret};
use crate::limits::proxy_protocol;
use crate::route::{Backend, MasterCredentials};
use crate::tls::{self, BackendStream, BackendTls, HandshakeError, Stream};

/// A logged-in backend connection, ready to relay.
#[derive(Debug)]
pub struct BackendConn {
    /// The backend's name (metric label).
    pub name: String,
    /// The session's place in its user's count (`max_sessions_per_user`),
    /// held as long as the backend leg.
    pub user_permit: Option<crate::limits::UserPermit>,
    /// The session's place in `imapgate_backend_sessions`, which the
    /// backend's `max_connections` is checked against.  Taken at the
    /// backend's OK, before the client hears its own: a client that logs in
    /// again the moment it is told (on another worker thread) must already
    /// find this session counted.
    pub counted: crate::metrics::BackendGauge,
    pub stream: BackendStream,
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
    /// The TLS handshake failed; a certificate that does not verify says
    /// so in the message operators grep for.
    #[error("{}", tls_message(.0))]
    Tls(HandshakeError),
    /// `tls = "starttls"` but the backend does not offer it (or refused
    /// it): credentials are never sent in clear instead.
    #[error("backend does not offer STARTTLS; refusing to send credentials in clear: {0}")]
    NoStartTls(String),
}

fn tls_message(e: &HandshakeError) -> String {
    if e.is_certificate_error() {
        format!("backend certificate verification failed: {e}")
    } else {
        format!("TLS handshake with backend failed: {e}")
    }
}

impl BackendError {
    /// Whether another backend may do better (the user is not at fault).
    pub fn try_next(&self) -> bool {
        matches!(
            self,
            BackendError::Connect(_)
                | BackendError::Timeout(_)
                | BackendError::Greeting(_)
                | BackendError::Tls(_)
                | BackendError::NoStartTls(_)
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
            BackendError::Tls(e) if e.is_certificate_error() => "tls_certificate",
            BackendError::Tls(_) => "tls_handshake",
            BackendError::NoStartTls(_) => "starttls_unavailable",
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
    /// Proxies this session may still cross; the backend gets one less
    /// (`x-proxy-ttl`).  See [`proxy_ttl`].
    pub proxy_ttl: u32,
    /// The client's own ID fields to pass on (see [`forwardable_id_fields`]);
    /// sent only to backends with `forward_client_id_fields`.
    pub client_fields: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The hops left for a session: ours (`limits.proxy_ttl`), or the
/// `x-proxy-ttl` a proxy in front of us sent in its ID if that is lower.
/// Taken from anyone: a client can only lower its own budget.  0 means the
/// session went round a loop of proxies (Dovecot refuses it the same way).
pub fn proxy_ttl(client_id: &IdParams, ours: u32) -> u32 {
    client_id
        .iter()
        .flatten()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"x-proxy-ttl"))
        .filter_map(|(_, value)| std::str::from_utf8(value.as_deref()?).ok()?.parse().ok())
        .fold(ours, u32::min)
}

/// RFC 2971 §3.3: at most 30 field-value pairs, names of at most 30 octets,
/// values of at most 1024.
const ID_MAX_FIELDS: usize = 30;
const ID_MAX_NAME: usize = 30;
const ID_MAX_VALUE: usize = 1024;
/// The fields the gateway itself sends (see `login`).
const ID_OWN_FIELDS: usize = 6;

/// The client's ID fields that may go on to a backend: never `x-*` (the
/// gateway's own, which the backend trusts), and within RFC 2971's limits
/// together with the gateway's fields.
pub fn forwardable_id_fields(client_id: &IdParams) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    client_id
        .iter()
        .flatten()
        .filter(|(name, value)| {
            !name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case(b"x-"))
                && name.len() <= ID_MAX_NAME
                && value.as_ref().is_none_or(|v| v.len() <= ID_MAX_VALUE)
        })
        .take(ID_MAX_FIELDS - ID_OWN_FIELDS)
        .cloned()
        .collect()
}

/// Timeouts for the two phases.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub login: Duration,
}

/// Connect to `backend` (over TLS when `tls` says so), read its greeting
/// and log in as `user`.  The TLS handshake counts against the connect
/// timeout.
/// Whose credentials the gateway logs in with.
#[derive(Debug, Clone, Copy)]
pub enum BackendAuth<'a> {
    /// The client's own user and password.
    Client {
        user: &'a str,
        password: &'a Secret<Vec<u8>>,
    },
    /// The backend's master user, acting for `user`.
    Master {
        user: &'a str,
        master: &'a MasterCredentials,
    },
}

impl BackendAuth<'_> {
    /// The login command for a backend with these capabilities.
    fn command(&self, has: impl Fn(&str) -> bool) -> encode::Outgoing {
        let mode = |len: usize| {
            if has("LITERAL+") || (has("LITERAL-") && len <= 4096) {
                LiteralMode::NonSync
            } else {
                LiteralMode::Sync
            }
        };
        match *self {
            BackendAuth::Client { user, password } => {
                let longest = user.len().max(password.expose().len());
                encode::login("G2", user.as_bytes(), password.expose(), mode(longest))
            }
            BackendAuth::Master { user, master } => match master.method {
                // RFC 4616: authzid = the user, authcid = the master.
                MasterMethod::Authzid => encode::authenticate_plain(
                    "G2",
                    user.as_bytes(),
                    master.user.as_bytes(),
                    master.password.expose(),
                    has("SASL-IR"),
                ),
                // Dovecot: LOGIN "user*master" password.
                MasterMethod::Separator => {
                    let login = format!("{user}{}{}", master.separator, master.user);
                    let longest = login.len().max(master.password.expose().len());
                    encode::login(
                        "G2",
                        login.as_bytes(),
                        master.password.expose(),
                        mode(longest),
                    )
                }
            },
        }
    }
}

pub async fn open(
    backend: &Backend,
    tls: Option<&BackendTls>,
    auth: BackendAuth<'_>,
    meta: &ClientMeta,
    timeouts: Timeouts,
) -> Result<BackendConn, BackendError> {
    let started = std::time::Instant::now();
    let (stream, greeting_caps, reader) =
        tokio::time::timeout(timeouts.connect, greet(backend, tls, Some(meta)))
            .await
            .map_err(|_| BackendError::Timeout("connecting or waiting for the greeting"))??;
    crate::metrics::get()
        .backend_connect_duration
        .with_label_values(&[&backend.name])
        .observe(started.elapsed().as_secs_f64());
    tokio::time::timeout(
        timeouts.login,
        login(stream, reader, greeting_caps, backend, auth, meta),
    )
    .await
    .map_err(|_| BackendError::Timeout("waiting for the login answer"))?
}

/// Active health check ([`crate::route::health`]): connect, TLS or
/// STARTTLS as configured, read the greeting, say LOGOUT, all within
/// `timeout`.  No credentials are sent.
pub async fn probe(
    backend: std::sync::Arc<Backend>,
    tls: Option<BackendTls>,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, greet(&backend, tls.as_ref(), None)).await {
        Err(_) => Err("timed out connecting or waiting for the greeting".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((mut stream, _, _))) => {
            // Politeness only; the greeting already answered the question.
            let _ = tokio::time::timeout(timeout, send(&mut stream, b"P LOGOUT\r\n")).await;
            Ok(())
        }
    }
}

/// Connect, send the PROXY v2 header if the backend wants one (the
/// client's addresses, or LOCAL for the gateway's own probes), set up TLS
/// as configured, and read the greeting.
async fn greet(
    backend: &Backend,
    tls: Option<&BackendTls>,
    client: Option<&ClientMeta>,
) -> Result<(BackendStream, Option<Vec<String>>, LineReader), BackendError> {
    let mut tcp = TcpStream::connect((backend.host.as_str(), backend.port))
        .await
        .map_err(BackendError::Connect)?;
    tcp.set_nodelay(true)?;
    if backend.send_proxy_protocol {
        let header = match client {
            Some(meta) => proxy_protocol::encode_v2(meta.peer, meta.local),
            None => proxy_protocol::encode_v2_local(),
        };
        tcp.write_all(&header).await?;
    }
    let mut stream = match tls {
        Some(t) if t.mode == TlsMode::Implicit => {
            tls::connect(t, tcp).await.map_err(BackendError::Tls)?
        }
        _ => Stream::Plain(tcp),
    };
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
    match tls {
        Some(t) if t.mode == TlsMode::Starttls => {
            let stream = starttls(stream, &mut reader, caps, t).await?;
            // The capabilities from before TLS are void (RFC 3501 §6.2.1);
            // login() asks again.
            Ok((stream, None, reader))
        }
        _ => Ok((stream, caps, reader)),
    }
}

/// Upgrade a plain backend connection with STARTTLS (RFC 2595 §3.1).
async fn starttls(
    mut stream: BackendStream,
    reader: &mut LineReader,
    greeting_caps: Option<Vec<String>>,
    tls: &BackendTls,
) -> Result<BackendStream, BackendError> {
    let caps = match greeting_caps {
        Some(c) => c,
        None => capability(&mut stream, reader, "G0").await?,
    };
    if !caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
        return Err(BackendError::NoStartTls(
            "STARTTLS not in its capabilities".into(),
        ));
    }
    send(&mut stream, b"GS STARTTLS\r\n").await?;
    loop {
        let line = reader.line(&mut stream).await?;
        match classify(&line).map_err(|e| BackendError::Protocol(e.to_string()))? {
            Response::Tagged {
                tag: "GS",
                status: Status::Ok,
                ..
            } => break,
            Response::Tagged { tag: "GS", .. } => {
                return Err(BackendError::NoStartTls(format!(
                    "STARTTLS refused: {}",
                    printable(&line)
                )))
            }
            _ => {}
        }
    }
    // Whatever followed the tagged OK in plaintext was not protected by TLS
    // (response injection, the backend side of CVE-2011-0411): refuse.
    if reader.has_buffered() {
        return Err(BackendError::Greeting(
            "backend sent data after its STARTTLS OK, before the TLS handshake".into(),
        ));
    }
    reader.reset();
    let tcp = stream
        .take_plain()
        .expect("the backend stream is plain before STARTTLS");
    tls::connect(tls, tcp).await.map_err(BackendError::Tls)
}

/// Write and flush (TLS buffers records until flushed).
async fn send(stream: &mut BackendStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn login(
    mut stream: BackendStream,
    mut reader: LineReader,
    greeting_caps: Option<Vec<String>>,
    backend: &Backend,
    auth: BackendAuth<'_>,
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
        let ttl = meta.proxy_ttl.saturating_sub(1).to_string();
        let own: [(&[u8], Option<&[u8]>); ID_OWN_FIELDS] = [
            (b"x-originating-ip", Some(peer_ip.as_bytes())),
            (b"x-originating-port", Some(peer_port.as_bytes())),
            (b"x-connected-ip", Some(local_ip.as_bytes())),
            (b"x-connected-port", Some(local_port.as_bytes())),
            (b"x-session-ext-id", Some(meta.session_id.as_bytes())),
            (b"x-proxy-ttl", Some(ttl.as_bytes())),
        ];
        let client = meta
            .client_fields
            .iter()
            .filter(|_| backend.forward_client_id_fields)
            .map(|(k, v)| (k.as_slice(), v.as_deref()));
        first.extend(encode::id_command("G1", own.into_iter().chain(client)));
    }
    let cmd = auth.command(has);
    let mut parts = cmd.parts.into_iter();
    // The ID command and the first LOGIN part go out in one write.
    first.extend(parts.next().unwrap_or_default());
    send(&mut stream, &first).await?;
    for part in parts {
        wait_continuation(&mut stream, &mut reader).await?;
        send(&mut stream, &part).await?;
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
        user_permit: None,
        counted: crate::metrics::BackendGauge::new(&backend.name),
        stream,
        capabilities,
        leftover: reader.into_leftover(),
    })
}

async fn capability(
    stream: &mut BackendStream,
    reader: &mut LineReader,
    tag: &str,
) -> Result<Vec<String>, BackendError> {
    send(stream, format!("{tag} CAPABILITY\r\n").as_bytes()).await?;
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
    stream: &mut BackendStream,
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
            // Responses: a greeting or status text ending in `{5}` is text.
            framer: Framer::for_responses(Limits {
                max_line: 64 * 1024,
                max_literal: 0,
                max_literals_per_unit: 0,
            }),
        }
    }

    async fn line<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Vec<u8>, BackendError> {
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
            // Into the buffer's spare room: no zeroed scratch array.
            self.buf.reserve(4096);
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(BackendError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Bytes read but not yet returned as lines.
    fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Forget any partial line (after STARTTLS nothing is buffered).
    fn reset(&mut self) {
        self.buf.clear();
        self.framer.reset();
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

#[cfg(test)]
mod tests {
    use super::{forwardable_id_fields, proxy_ttl};

    fn id(fields: &[(&str, Option<&str>)]) -> crate::imap::command::IdParams {
        Some(
            fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                .collect(),
        )
    }

    #[test]
    fn a_client_can_only_lower_the_ttl() {
        assert_eq!(proxy_ttl(&None, 5), 5);
        assert_eq!(proxy_ttl(&id(&[("X-Proxy-TTL", Some("2"))]), 5), 2);
        assert_eq!(proxy_ttl(&id(&[("x-proxy-ttl", Some("9"))]), 5), 5);
        assert_eq!(proxy_ttl(&id(&[("x-proxy-ttl", Some("0"))]), 5), 0);
        // Not a number, or no value: ignored.
        assert_eq!(proxy_ttl(&id(&[("x-proxy-ttl", Some("-1"))]), 5), 5);
        assert_eq!(proxy_ttl(&id(&[("x-proxy-ttl", None)]), 5), 5);
    }

    #[test]
    fn forwarded_fields_skip_x_fields_and_keep_rfc_2971_limits() {
        let long_name = "n".repeat(31);
        let long_value = "v".repeat(1025);
        let fields = forwardable_id_fields(&id(&[
            ("name", Some("mutt")),
            ("X-Originating-IP", Some("192.0.2.1")),
            ("x-proxy-ttl", Some("9")),
            (&long_name, Some("x")),
            ("os", Some(&long_value)),
            ("version", None),
        ]));
        let names: Vec<&[u8]> = fields.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(names, [&b"name"[..], b"version"]);

        let many: Vec<(String, Option<&str>)> =
            (0..40).map(|i| (format!("f{i}"), Some("v"))).collect();
        let many: Vec<(&str, Option<&str>)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        // With the gateway's 6 fields: 30 in all.
        assert_eq!(forwardable_id_fields(&id(&many)).len(), 24);
    }
}
