//! passdb `http`: nginx's `auth_http` protocol, so an authentication
//! service written for nginx's mail proxy works unchanged
//! (`ngx_mail_auth_http_module`; shared/rfc/nginx-mail-auth-http.xml).
//!
//! Request, header for header in nginx's order and spelling:
//!
//! ```text
//! GET /auth HTTP/1.0            (HTTP/1.1 with keepalive = true)
//! Host: auth.example            (the URL's host, without port, as nginx)
//! Auth-Method: plain            (nginx says plain for LOGIN, PLAIN and AUTH=LOGIN)
//! Auth-User: user%20name        (percent-encoded: see escape())
//! Auth-Pass: pass%25word
//! Auth-Protocol: imap
//! Auth-Login-Attempt: 1         (per connection)
//! Client-IP: 192.0.2.42
//! Auth-SSL: on                  (TLS clients only, then:)
//! Auth-SSL-Protocol: TLSv1.3
//! Auth-SSL-Cipher: TLS13_AES_256_GCM_SHA384
//! Auth-SSL-Verify: SUCCESS      (listeners asking for client certificates)
//! Auth-SSL-Fingerprint: 29d6…   (SHA-1 of the client certificate)
//! Auth-SSL-Cert: -----BEGIN…    (pass_client_cert = true, percent-encoded PEM)
//! X-Auth-Key: secret            (the configured static headers)
//! ```
//!
//! Response headers read (the body is ignored, as nginx does):
//! `Auth-Status` (`OK`, `WAIT`, or the failure text), `Auth-Server` and
//! `Auth-Port` (route the user there), `Auth-User` and `Auth-Pass` (log in
//! to the backend with these, taken verbatim as nginx does), `Auth-Wait`
//! (seconds to wait before answering a failure; a failure without it
//! closes the connection after the answer, as nginx does).
//!
//! Where imapgate differs from nginx, on purpose:
//! - A 5xx status, a timeout, or an unusable answer is a temporary failure:
//!   `NO [UNAVAILABLE]`, never "wrong password".  (nginx ignores the
//!   status line and answers an internal error.)
//! - The failure text of `Auth-Status` goes to the audit log, not to the
//!   client, who always reads `NO [AUTHENTICATIONFAILED] Authentication
//!   failed` (wrong password and unknown user must look alike).
//! - `Auth-Server` may be a host name as well as an address; an `OK`
//!   without `Auth-Server` routes the user with the configured backends.
//! - `Client-Host` is not sent: imapgate does no reverse DNS (nginx also
//!   omits it for IMAP).  `Auth-SSL-Subject`/`-Issuer`/`-Serial` are not
//!   sent (no X.509 name formatting here).  DEL (0x7F) is percent-encoded
//!   too, since it is not valid in an HTTP header value.
//! - Optional HTTP/1.1 keep-alive with a small idle pool, and `https://`.
//!
//! The client is hand-written over tokio's `TcpStream` rather than hyper's:
//! it adds no dependency (hyper's client pulls six crates), sends the exact
//! bytes nginx sends (hyper would lower- or title-case `Auth-SSL`), and the
//! exchange is one GET with a body that is thrown away.  It handles
//! `Content-Length`, chunked and close-delimited bodies, caps what it
//! reads, and retries once on a fresh connection when a pooled one turns
//! out to be closed before any response byte.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Answer, BoxFuture, ClientFacts, Credentials, PassDb, Rejection, UserInfo};
use crate::config::{Config, HttpPassDbConfig};
use crate::imap::Secret;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Parse the passdb's `url` (no user info, no fragment).
pub fn parse_url(url: &str) -> Result<Url, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') || path.contains('#') {
        return Err("user info and fragments are not supported".into());
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("the path must not contain spaces or control characters".into());
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port")?,
            None if after.is_empty() => default_port,
            None => return Err("garbage after ]".into()),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| "bad port")?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err("a host and a port (1-65535) are needed".into());
    }
    Ok(Url {
        https,
        host,
        port,
        path: path.to_owned(),
    })
}

/// nginx's `NGX_ESCAPE_MAIL_AUTH`: `%XX` for bytes below 0x20, space and
/// `%` (plus DEL, see the module docs); everything else, `:` and
/// non-ASCII UTF-8 included, goes as is.
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b <= b' ' || b == b'%' || b == 0x7f {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = BufReader<Box<dyn Io>>;

/// Most bytes of a response head, and of a body read to keep a connection.
const MAX_HEAD: u64 = 16 * 1024;
const MAX_BODY: u64 = 64 * 1024;
/// Pooled connections older than this are not reused.
const IDLE_MAX: Duration = Duration::from_secs(30);
/// `Auth-Status: WAIT` rounds before giving up.
const MAX_WAIT_ROUNDS: u32 = 3;
/// Longest `Auth-Wait` honoured.
const MAX_AUTH_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// I/O failed; `fresh` is false when no response byte was read (a
    /// pooled connection the server had closed).
    #[error("{0}")]
    Io(std::io::Error, bool),
    #[error("invalid response: {0}")]
    Protocol(&'static str),
}

pub struct HttpPassDb {
    url: Url,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    timeout: Duration,
    keepalive: bool,
    max_idle: usize,
    headers: Vec<(String, Secret<String>)>,
    pass_client_cert: bool,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl HttpPassDb {
    pub fn from_config(c: &HttpPassDbConfig, config: &Config) -> anyhow::Result<HttpPassDb> {
        let url = parse_url(&c.url).map_err(|e| anyhow::anyhow!("passdb http: url: {e}"))?;
        let tls = if url.https {
            let roots = match &c.ca_file {
                Some(path) => load_roots(&config.resolve(path))?,
                None => system_roots(),
            };
            let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|_| {
                anyhow::anyhow!("passdb http: {:?} is not a valid TLS name", url.host)
            })?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(tls_config)), name))
        } else {
            None
        };
        Ok(HttpPassDb {
            url,
            tls,
            timeout: Duration::from_millis(c.timeout_ms),
            keepalive: c.keepalive,
            max_idle: c.max_idle_connections,
            headers: c.headers.clone(),
            pass_client_cert: c.pass_client_cert,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The request bytes (they hold the password: never logged).
    fn request(&self, creds: &Credentials, client: &ClientFacts) -> Secret<Vec<u8>> {
        let mut r = Vec::with_capacity(512);
        let version = if self.keepalive {
            "HTTP/1.1"
        } else {
            "HTTP/1.0"
        };
        r.extend_from_slice(format!("GET {} {version}\r\n", self.url.path).as_bytes());
        if self.url.host.contains(':') {
            // An IPv6 literal goes in brackets (RFC 9110 §7.2).
            r.extend_from_slice(format!("Host: [{}]\r\n", self.url.host).as_bytes());
        } else {
            r.extend_from_slice(format!("Host: {}\r\n", self.url.host).as_bytes());
        }
        r.extend_from_slice(b"Auth-Method: plain\r\nAuth-User: ");
        r.extend(escape(creds.username.as_bytes()));
        r.extend_from_slice(b"\r\nAuth-Pass: ");
        r.extend(escape(creds.password.expose()));
        let ip = match client.ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client.ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let mut h = String::new();
        let _ = write!(
            h,
            "\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: {}\r\nClient-IP: {ip}\r\n",
            client.attempt
        );
        if let Some(tls) = &client.tls {
            let _ = write!(
                h,
                "Auth-SSL: on\r\nAuth-SSL-Protocol: {}\r\nAuth-SSL-Cipher: {}\r\n",
                tls.protocol, tls.cipher
            );
            if let Some(v) = tls.verify {
                let _ = write!(h, "Auth-SSL-Verify: {v}\r\n");
            }
            if let Some(der) = &tls.client_cert {
                let fp = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
                h.push_str("Auth-SSL-Fingerprint: ");
                for b in fp.as_ref() {
                    let _ = write!(h, "{b:02x}");
                }
                h.push_str("\r\n");
                if self.pass_client_cert {
                    h.push_str("Auth-SSL-Cert: ");
                    h.push_str(&String::from_utf8_lossy(&escape(pem(der).as_bytes())));
                    h.push_str("\r\n");
                }
            }
        }
        for (name, value) in &self.headers {
            let _ = write!(h, "{name}: {}\r\n", value.expose());
        }
        h.push_str("\r\n");
        r.extend_from_slice(h.as_bytes());
        Secret::new(r)
    }

    async fn connect(&self) -> Result<Conn, HttpError> {
        let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(HttpError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(HttpError::Tls)?,
            ),
            None => Box::new(tcp),
        };
        Ok(BufReader::new(io))
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_MAX {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push((conn, Instant::now()));
            }
        }
    }

    /// One request/response, on a pooled connection if there is one (and
    /// again on a fresh one if that was closed under us).
    async fn roundtrip(&self, request: &[u8]) -> Result<Response, HttpError> {
        if let Some(mut conn) = self.take_idle() {
            match exchange(&mut conn, request, self.keepalive).await {
                Ok((response, reusable)) => {
                    if reusable {
                        self.put_idle(conn);
                    }
                    return Ok(response);
                }
                Err(HttpError::Io(_, false)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.connect().await?;
        let (response, reusable) = exchange(&mut conn, request, self.keepalive).await?;
        if reusable {
            self.put_idle(conn);
        }
        Ok(response)
    }

    async fn ask(&self, creds: &Credentials, client: &ClientFacts) -> Answer {
        let request = self.request(creds, client);
        for _ in 0..=MAX_WAIT_ROUNDS {
            let response =
                match tokio::time::timeout(self.timeout, self.roundtrip(request.expose())).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => return Answer::TempFail(format!("auth service: {e}")),
                    Err(_) => return Answer::TempFail("auth service timed out".into()),
                };
            match interpret(&response, &creds.username) {
                Interpreted::Answer(a) => return a,
                // nginx: ask again after Auth-Wait seconds.
                Interpreted::Wait(d) => tokio::time::sleep(d).await,
            }
        }
        Answer::TempFail("auth service kept answering WAIT".into())
    }
}

impl PassDb for HttpPassDb {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn verify<'a>(
        &'a self,
        creds: &'a Credentials,
        client: &'a ClientFacts,
    ) -> BoxFuture<'a, Answer> {
        Box::pin(self.ask(creds, client))
    }
}

enum Interpreted {
    Answer(Answer),
    Wait(Duration),
}

/// A response's meaning (module docs).
fn interpret(r: &Response, username: &str) -> Interpreted {
    let temp = |why: &str| Interpreted::Answer(Answer::TempFail(format!("auth service: {why}")));
    if r.status >= 500 {
        return temp(&format!("HTTP status {}", r.status));
    }
    let Some(status) = r.header("Auth-Status") else {
        return temp("no Auth-Status header");
    };
    // ngx_atoi: digits only; anything else is ignored.
    let wait = r
        .header("Auth-Wait")
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_AUTH_WAIT))
        .filter(|d| !d.is_zero());
    match status {
        b"OK" => {
            let text = |name: &str| -> Result<Option<String>, String> {
                r.header(name)
                    .map(|v| {
                        String::from_utf8(v.to_vec()).map_err(|_| format!("{name} is not UTF-8"))
                    })
                    .transpose()
            };
            let host = match text("Auth-Server") {
                Ok(h) => h.filter(|h| !h.is_empty()),
                Err(e) => return temp(&e),
            };
            let port = match r.header("Auth-Port") {
                None => None,
                Some(p) => match std::str::from_utf8(p)
                    .ok()
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    Some(p) if p > 0 => Some(p),
                    _ => return temp("invalid Auth-Port"),
                },
            };
            if port.is_some() && host.is_none() {
                return temp("Auth-Port without Auth-Server");
            }
            if host
                .as_deref()
                .is_some_and(|h| h.contains(char::is_whitespace))
            {
                return temp("invalid Auth-Server");
            }
            let backend_user = match text("Auth-User") {
                Ok(u) => u,
                Err(e) => return temp(&e),
            };
            Interpreted::Answer(Answer::Accept(UserInfo {
                user: username.to_owned(),
                host: host.map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned()),
                port,
                backend_user,
                backend_password: r.header("Auth-Pass").map(|p| Secret::new(p.to_vec())),
                nologin: None,
            }))
        }
        b"WAIT" => Interpreted::Wait(wait.unwrap_or(Duration::from_secs(1))),
        text => {
            let text: String = String::from_utf8_lossy(text).chars().take(200).collect();
            Interpreted::Answer(Answer::Reject(Rejection {
                reason: format!("auth service: {text:?}").into(),
                close: wait.is_none(),
                wait,
            }))
        }
    }
}

/// Write `request`, read the response head, and read (to throw away) the
/// body when that lets the connection be reused.  Returns the response
/// and whether the connection can take another request.
async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    keepalive: bool,
) -> Result<(Response, bool), HttpError> {
    conn.get_mut()
        .write_all(request)
        .await
        .map_err(|e| HttpError::Io(e, false))?;
    conn.get_mut()
        .flush()
        .await
        .map_err(|e| HttpError::Io(e, false))?;
    let mut head_budget = MAX_HEAD;
    let mut first = true;
    let (version_11, status) = loop {
        let line = read_line(conn, &mut head_budget, first).await?;
        first = false;
        let line = String::from_utf8_lossy(&line);
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(HttpError::Protocol("bad status line"))?;
        if !version.starts_with("HTTP/1.") {
            return Err(HttpError::Protocol("not HTTP/1.x"));
        }
        if (100..200).contains(&status) {
            // An interim response: skip its headers, read the real one.
            while !read_line(conn, &mut head_budget, false).await?.is_empty() {}
            continue;
        }
        break (version == "HTTP/1.1", status);
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(conn, &mut head_budget, false).await?;
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::Protocol("header line without a colon"))?;
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
        let value = line[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
        if headers.len() > 100 {
            return Err(HttpError::Protocol("too many headers"));
        }
    }
    let response = Response { status, headers };
    let has = |name: &str, token: &str| {
        response.header(name).is_some_and(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    let persistent = keepalive
        && if version_11 {
            !has("Connection", "close")
        } else {
            has("Connection", "keep-alive")
        };
    let body_done = if status == 204 || status == 304 {
        true
    } else if has("Transfer-Encoding", "chunked") {
        persistent && read_chunked(conn).await?
    } else if let Some(len) = response.header("Content-Length") {
        let len: u64 = std::str::from_utf8(len)
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or(HttpError::Protocol("bad Content-Length"))?;
        persistent && len <= MAX_BODY && discard(conn, len).await?
    } else {
        // Delimited by the close: nothing to reuse.
        false
    };
    Ok((response, persistent && body_done))
}

/// One line without its line end (LF or CRLF), charged to `budget`.
/// `first`: no response byte read yet (an error then means a stale
/// pooled connection).
async fn read_line(conn: &mut Conn, budget: &mut u64, first: bool) -> Result<Vec<u8>, HttpError> {
    let mut line = Vec::new();
    let n = (&mut *conn)
        .take(*budget)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| HttpError::Io(e, !first))?;
    if n == 0 && first {
        return Err(HttpError::Io(
            std::io::ErrorKind::UnexpectedEof.into(),
            false,
        ));
    }
    *budget -= n as u64;
    if !line.ends_with(b"\n") {
        return Err(if *budget == 0 {
            HttpError::Protocol("response head too large")
        } else {
            HttpError::Io(std::io::ErrorKind::UnexpectedEof.into(), true)
        });
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    Ok(line)
}

async fn discard(conn: &mut Conn, len: u64) -> Result<bool, HttpError> {
    let copied = tokio::io::copy(&mut (&mut *conn).take(len), &mut tokio::io::sink())
        .await
        .map_err(|e| HttpError::Io(e, true))?;
    Ok(copied == len)
}

/// Read a chunked body to its end; false when it is too large to bother
/// (the connection is then dropped instead of reused).
async fn read_chunked(conn: &mut Conn) -> Result<bool, HttpError> {
    let mut total = 0u64;
    loop {
        let mut budget = 1024;
        let line = read_line(conn, &mut budget, false).await?;
        let size = String::from_utf8_lossy(&line);
        let size = size.split(';').next().unwrap_or("").trim();
        let size =
            u64::from_str_radix(size, 16).map_err(|_| HttpError::Protocol("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            let mut budget = MAX_HEAD;
            while !read_line(conn, &mut budget, false).await?.is_empty() {}
            return Ok(true);
        }
        total += size;
        if total > MAX_BODY {
            return Ok(false);
        }
        if !discard(conn, size).await? {
            return Err(HttpError::Protocol("truncated chunk"));
        }
        let mut budget = 2;
        if !read_line(conn, &mut budget, false).await?.is_empty() {
            return Err(HttpError::Protocol("chunk not followed by CRLF"));
        }
    }
}

/// PEM text of a DER certificate (what nginx passes in `Auth-SSL-Cert`).
fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn load_roots(path: &std::path::Path) -> anyhow::Result<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("passdb http: ca_file {}: {e}", path.display()))?
    {
        let cert =
            cert.map_err(|e| anyhow::anyhow!("passdb http: ca_file {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("passdb http: ca_file {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("passdb http: ca_file {}: no certificates", path.display());
    }
    Ok(roots)
}

fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/auth?x=1"),
            Ok(Url {
                https: false,
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/auth?x=1".into()
            })
        );
        let u = parse_url("https://[::1]").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "::1", 443, "/")
        );
        for bad in [
            "ftp://x/",
            "http://:80/",
            "http://u@h/",
            "http://h:0/",
            "http://h/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escapes_like_nginx() {
        assert_eq!(
            escape("a b%c:d\r\nä\x7f".as_bytes()),
            "a%20b%25c:d%0D%0Aä%7F".as_bytes()
        );
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn answer(r: &Response) -> Answer {
        match interpret(r, "alice") {
            Interpreted::Answer(a) => a,
            Interpreted::Wait(d) => panic!("wait {d:?}"),
        }
    }

    #[test]
    fn responses_interpreted() {
        match answer(&resp(
            200,
            &[
                ("auth-status", "OK"),
                ("Auth-Server", "mail.internal"),
                ("Auth-Port", "10143"),
                ("Auth-User", "alice@x"),
                ("Auth-Pass", "p%20w"),
            ],
        )) {
            Answer::Accept(i) => {
                assert_eq!(i.user, "alice");
                assert_eq!(
                    (i.host.as_deref(), i.port),
                    (Some("mail.internal"), Some(10143))
                );
                assert_eq!(i.backend_user.as_deref(), Some("alice@x"));
                assert!(i.backend_password.unwrap().ct_eq(b"p%20w"));
            }
            a => panic!("{a:?}"),
        }
        assert_eq!(
            answer(&resp(
                200,
                &[("Auth-Status", "Invalid login"), ("Auth-Wait", "3")]
            )),
            Answer::Reject(Rejection {
                reason: "auth service: \"Invalid login\"".into(),
                wait: Some(Duration::from_secs(3)),
                close: false
            })
        );
        assert!(matches!(
            answer(&resp(200, &[("Auth-Status", "no"), ("Auth-Wait", "x")])),
            Answer::Reject(Rejection {
                wait: None,
                close: true,
                ..
            })
        ));
        for r in [
            resp(503, &[("Auth-Status", "OK")]),
            resp(200, &[]),
            resp(
                200,
                &[
                    ("Auth-Status", "OK"),
                    ("Auth-Port", "99999"),
                    ("Auth-Server", "h"),
                ],
            ),
            resp(200, &[("Auth-Status", "OK"), ("Auth-Port", "143")]),
        ] {
            assert!(matches!(answer(&r), Answer::TempFail(_)), "{r:?}");
        }
        assert!(matches!(
            interpret(&resp(200, &[("Auth-Status", "WAIT"), ("Auth-Wait", "2")]), "a"),
            Interpreted::Wait(d) if d == Duration::from_secs(2)
        ));
    }

    /// A scripted server: answers each request on a connection with the
    /// next canned response; records the requests.
    async fn server(
        responses: Vec<&'static str>,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut responses = responses.into_iter();
            while let Ok((sock, _)) = listener.accept().await {
                let mut sock = BufReader::new(sock);
                loop {
                    let mut req = String::new();
                    loop {
                        let mut line = String::new();
                        if sock.read_line(&mut line).await.unwrap_or(0) == 0 {
                            break;
                        }
                        req.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if req.is_empty() {
                        break;
                    }
                    let _ = tx.send(req);
                    let Some(r) = responses.next() else { return };
                    if r == "CLOSE" {
                        break;
                    }
                    sock.get_mut().write_all(r.as_bytes()).await.unwrap();
                    if r.contains("Connection: close") {
                        break;
                    }
                }
            }
        });
        (port, rx)
    }

    fn db(port: u16, keepalive: bool) -> HttpPassDb {
        let text = format!(
            "[[listener]]\nname = \"i\"\naddress = \"127.0.0.1:1\"\n[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n[[passdb]]\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/auth\"\nkeepalive = {keepalive}\ntimeout_ms = 2000\nheaders = {{ X-Auth-Key = \"k3y\" }}\n"
        );
        let config = Config::parse(&text, "/".into()).unwrap();
        let crate::config::PassDbConfig::Http(c) = &config.passdbs[0] else {
            panic!()
        };
        HttpPassDb::from_config(c, &config).unwrap()
    }

    fn creds() -> (Credentials, ClientFacts) {
        (
            Credentials {
                username: "al ice".into(),
                password: Secret::new("p%ss:wörd".as_bytes().to_vec()),
            },
            ClientFacts {
                ip: "::ffff:192.0.2.42".parse().unwrap(),
                attempt: 2,
                tls: Some(super::super::TlsFacts {
                    protocol: "TLSv1.3",
                    cipher: "TLS13_AES_128_GCM_SHA256",
                    verify: Some("NONE"),
                    client_cert: None,
                }),
            },
        )
    }

    #[tokio::test]
    async fn exact_request_keepalive_chunked_and_stale_retry() {
        let (port, mut requests) = server(vec![
            "HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nAuth-Status: Invalid login\r\nAuth-Wait: 1\r\nContent-Length: 2\r\n\r\nno",
            // The server drops the idle connection without answering: the
            // client retries on a new one.
            "CLOSE",
            "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 143\r\n\r\n",
        ])
        .await;
        let db = db(port, true);
        let (c, f) = creds();
        assert!(matches!(db.verify(&c, &f).await, Answer::Accept(_)));
        let req = requests.recv().await.unwrap();
        assert_eq!(
            req,
            "GET /auth HTTP/1.1\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: al%20ice\r\nAuth-Pass: p%25ss:wörd\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 2\r\nClient-IP: 192.0.2.42\r\nAuth-SSL: on\r\nAuth-SSL-Protocol: TLSv1.3\r\nAuth-SSL-Cipher: TLS13_AES_128_GCM_SHA256\r\nAuth-SSL-Verify: NONE\r\nX-Auth-Key: k3y\r\n\r\n"
        );
        assert!(matches!(db.verify(&c, &f).await, Answer::Reject(_)));
        assert_eq!(db.idle.lock().unwrap().len(), 1, "kept alive");
        match db.verify(&c, &f).await {
            Answer::Accept(i) => assert_eq!(i.port, Some(143)),
            a => panic!("{a:?}"),
        }
        // HTTP/1.0 without keep-alive: not pooled.
        assert_eq!(db.idle.lock().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn timeout_and_refused_are_temporary() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts, never answers.
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut db = db(port, false);
        db.timeout = Duration::from_millis(200);
        let (c, f) = creds();
        assert_eq!(
            db.verify(&c, &f).await,
            Answer::TempFail("auth service timed out".into())
        );
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let db = self::db(port, false);
        assert!(
            matches!(db.verify(&c, &f).await, Answer::TempFail(m) if m.starts_with("auth service: connect"))
        );
    }
}
