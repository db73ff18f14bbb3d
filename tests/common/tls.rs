//! Harness additions for the TLS tests (issue 5): a throwaway PKI made with rcgen (nothing
//! downloaded, nothing from the system), a Dovecot with TLS on (STARTTLS on its IMAP port,
//! implicit TLS on a second one), and a std-only IMAP client that starts plain or with TLS
//! and can upgrade with STARTTLS, built on rustls' blocking API.
//!
//! The client never reads ahead across a STARTTLS switch: `starttls` refuses to upgrade
//! while plaintext bytes are buffered, so a test sees any response the server sent after its
//! tagged OK in plaintext.

use super::*;

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------
// PKI

/// A CA and the certificates it issued, as PEM files in a tempdir.
pub struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Base64 lines of every private key written, to check logs never show them.
    key_lines: Vec<String>,
}

impl Pki {
    /// A new CA named `name` (written to `ca.pem`).
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let dir = tempdir("imapgate-pki-");
        fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        Pki {
            dir,
            ca,
            key_lines: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses; the first is the CN),
    /// written to `FILE.pem` and `FILE.key`; returns (cert, key) paths.
    pub fn server(&mut self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(file));
        for n in names {
            params.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("DNS name")),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params)
    }

    /// A client certificate with subject CN `cn` and SAN e-mail `email`.
    pub fn client(&mut self, file: &str, cn: &str, email: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .subject_alt_names
            .push(SanType::Rfc822Name(email.try_into().expect("e-mail")));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params)
    }

    fn issue(&mut self, file: &str, params: CertificateParams) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let (cert_path, key_path) = (
            self.dir().join(format!("{file}.pem")),
            self.dir().join(format!("{file}.key")),
        );
        fs::write(&cert_path, cert.pem()).expect("write cert");
        let key_pem = key.serialize_pem();
        self.key_lines.extend(
            key_pem
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned),
        );
        fs::write(&key_path, key_pem).expect("write key");
        (cert_path, key_path)
    }

    /// Panic if `text` contains any line of any private key this PKI made, or a PEM key
    /// header.
    pub fn assert_no_key_material(&self, what: &str, text: &str) {
        assert!(
            !text.contains("PRIVATE KEY"),
            "{what} contains a PEM private key header"
        );
        for l in &self.key_lines {
            assert!(
                !text.contains(l.as_str()),
                "{what} contains private key material"
            );
        }
    }

    /// A rustls client config trusting this CA, optionally with a client certificate.
    pub fn client_config(&self, client_cert: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("CA usable as a root");
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        Arc::new(match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                use rustls::pki_types::pem::PemObject;
                let chain = CertificateDer::pem_file_iter(cert)
                    .expect("client cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert PEM");
                let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client cert and key")
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Dovecot with TLS

/// A sandbox Dovecot with `ssl = yes`: STARTTLS on `port()`, implicit TLS on `imaps_port`.
pub struct TlsDovecot {
    pub dovecot: Dovecot,
    pub imaps_port: u16,
}

impl TlsDovecot {
    /// Start with the given server certificate and key (PEM files).
    pub fn start(cert: &Path, key: &Path) -> TlsDovecot {
        let dir = tempdir("imapgate-dovecot-tls-");
        let mut users = String::new();
        for (u, p) in USERS {
            writeln!(users, "{u}:{{PLAIN}}{p}").expect("write to String");
        }
        fs::write(dir.path().join("users"), users).expect("write users file");
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let (port, imaps_port) = (free_port(), free_port());
            let out = File::create(dir.path().join("sandbox.out")).expect("create sandbox.out");
            let mut cmd = Command::new("bash");
            cmd.arg(repo().join("scripts/dovecot-sandbox"))
                .arg("--dir")
                .arg(dir.path())
                .arg("--port")
                .arg(port.to_string())
                .arg("--users")
                .arg(dir.path().join("users"))
                .arg("--ssl-cert")
                .arg(cert)
                .arg("--ssl-key")
                .arg(key)
                .arg("--imaps-port")
                .arg(imaps_port.to_string())
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup"))
                .stderr(out);
            let mut proc = ProcessGroup::spawn("dovecot", &mut cmd).expect("spawn dovecot-sandbox");
            let started = wait_greeting(&mut proc, port).and_then(|()| {
                if wait_port(imaps_port, START_TIMEOUT) {
                    Ok(())
                } else {
                    Err(format!("imaps port {imaps_port} not listening"))
                }
            });
            match started {
                Ok(()) => {
                    return TlsDovecot {
                        dovecot: Dovecot {
                            proc,
                            port,
                            haproxy_port: None,
                            dir,
                        },
                        imaps_port,
                    }
                }
                Err(e) => {
                    proc.stop();
                    let log = read_lossy(&dir.path().join("dovecot.log"));
                    let out = read_lossy(&dir.path().join("sandbox.out"));
                    last_err =
                        format!("{e}\n--- sandbox output ---\n{out}\n--- dovecot.log ---\n{log}");
                    if !(log + &out).contains("Address already in use") {
                        break;
                    }
                    let _ = fs::remove_file(dir.path().join("dovecot.log"));
                }
            }
        }
        panic!("Dovecot with TLS did not start: {last_err}");
    }
}

// ---------------------------------------------------------------------------------------
// Client

enum Io {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Io {
    fn socket(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

/// An IMAP client that is plain, TLS from the start, or upgraded with STARTTLS.  Reads
/// time out after `LINE_TIMEOUT` and panic.
pub struct TlsClient {
    io: Option<Io>,
    buf: Vec<u8>,
    port: u16,
}

/// Handshake `tcp` as a TLS client; Err on any handshake failure.
fn handshake(
    mut tcp: TcpStream,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

fn connect_tcp(port: u16) -> TcpStream {
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    tcp.set_read_timeout(Some(LINE_TIMEOUT))
        .expect("set timeout");
    tcp
}

impl TlsClient {
    /// Plain TCP (for STARTTLS).
    pub fn plain(port: u16) -> TlsClient {
        TlsClient {
            io: Some(Io::Plain(connect_tcp(port))),
            buf: Vec::new(),
            port,
        }
    }

    /// Implicit TLS; `server_name` goes into SNI (none for an IP address) and is verified.
    pub fn tls(port: u16, config: Arc<ClientConfig>, server_name: &str) -> TlsClient {
        Self::try_tls(port, config, server_name)
            .unwrap_or_else(|e| panic!("TLS handshake with 127.0.0.1:{port}: {e}"))
    }

    pub fn try_tls(
        port: u16,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> io::Result<TlsClient> {
        let stream = handshake(connect_tcp(port), config, server_name)?;
        Ok(TlsClient {
            io: Some(Io::Tls(Box::new(stream))),
            buf: Vec::new(),
            port,
        })
    }

    fn io(&mut self) -> &mut Io {
        self.io.as_mut().expect("connection in use")
    }

    /// Upgrade after the server's STARTTLS OK.  Panics if plaintext bytes are buffered (the
    /// server must send nothing between its OK and the handshake).
    pub fn starttls(&mut self, config: Arc<ClientConfig>, server_name: &str) {
        assert!(
            self.buf.is_empty(),
            "plaintext buffered across the STARTTLS switch: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let Some(Io::Plain(tcp)) = self.io.take() else {
            panic!("STARTTLS on a connection that is not plain");
        };
        let stream = handshake(tcp, config, server_name)
            .unwrap_or_else(|e| panic!("STARTTLS handshake with {}: {e}", self.port));
        self.io = Some(Io::Tls(Box::new(stream)));
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Some(Io::Tls(_)))
    }

    /// The server's end-entity certificate (TLS only).
    pub fn peer_certificate(&self) -> CertificateDer<'static> {
        match &self.io {
            Some(Io::Tls(s)) => s.conn.peer_certificates().expect("server certificates")[0].clone(),
            _ => panic!("not TLS"),
        }
    }

    /// Negotiated protocol version, e.g. `TLSv1_3`.
    pub fn protocol_version(&self) -> String {
        match &self.io {
            Some(Io::Tls(s)) => format!("{:?}", s.conn.protocol_version().expect("version")),
            _ => panic!("not TLS"),
        }
    }

    pub fn send(&mut self, s: &str) {
        let port = self.port;
        let io = self.io();
        io.write_all(s.as_bytes())
            .and_then(|()| io.flush())
            .unwrap_or_else(|e| panic!("send to {port}: {e}"));
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.io().read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// One line without CRLF.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                return line.trim_end_matches(['\r', '\n']).to_owned();
            }
            match self.fill() {
                Ok(0) => panic!(
                    "connection to {} closed; expected a line (have {:?})",
                    self.port,
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "reading a line from {}: {e} (have {:?})",
                    self.port,
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// One response: a line plus any literal it announces and the rest of the response.
    pub fn response(&mut self) -> String {
        let mut out = self.line();
        let status = super::is_status_response(&out);
        while let Some(n) = literal_len(&out).filter(|_| !status) {
            while self.buf.len() < n {
                match self.fill() {
                    Ok(0) | Err(_) => panic!("connection to {} ended in a literal", self.port),
                    Ok(_) => {}
                }
            }
            let lit: Vec<u8> = self.buf.drain(..n).collect();
            out.push_str("\r\n");
            out.push_str(&String::from_utf8_lossy(&lit));
            out.push_str(&self.line());
        }
        out
    }

    pub fn greeting(&mut self) -> String {
        let line = self.line();
        assert!(line.starts_with("* OK"), "greeting: {line:?}");
        line
    }

    /// Responses up to the one tagged `tag`: (the others, the tagged one).
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

    /// Like `expect_tagged`, asserting `TAG OK`; returns everything read, tagged last.
    pub fn expect_ok(&mut self, tag: &str) -> Vec<String> {
        let (mut lines, tagged) = self.expect_tagged(tag);
        assert!(
            tagged.starts_with(&format!("{tag} OK")),
            "expected {tag} OK, got {tagged:?} after {lines:?}"
        );
        lines.push(tagged);
        lines
    }

    /// `CAPABILITY` and its list (upper case, without the leading `* CAPABILITY`).
    pub fn capabilities(&mut self, tag: &str) -> Vec<String> {
        self.send(&format!("{tag} CAPABILITY\r\n"));
        let lines = self.expect_ok(tag);
        let line = lines
            .iter()
            .find_map(|l| l.strip_prefix("* CAPABILITY "))
            .unwrap_or_else(|| panic!("no CAPABILITY in {lines:?}"));
        line.split(' ').map(|c| c.to_ascii_uppercase()).collect()
    }

    /// Whether no byte arrives within `wait` (nothing buffered either).  Plain only: it
    /// peeks at the socket, so nothing is consumed.
    pub fn quiet_for(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let sock = self.io().socket().try_clone().expect("dup socket");
        sock.set_read_timeout(Some(wait)).expect("set timeout");
        let mut b = [0u8; 1];
        let quiet = match sock.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        sock.set_read_timeout(Some(LINE_TIMEOUT))
            .expect("set timeout");
        quiet
    }

    /// Read until the server closes; what arrived meanwhile (lossy).
    pub fn read_to_close(&mut self) -> String {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("connection to {} still open", self.port)
                }
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

/// `GET /metrics` from the admin listener on `port`.
pub fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("connect admin 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(LINE_TIMEOUT)).expect("set timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read response");
    body
}

/// The value of the sample `name{labels}` (labels in the order the exposition prints them),
/// 0 when absent.
pub fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}
