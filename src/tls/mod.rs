//! TLS on both legs: rustls server configs per listener (certificates by
//! SNI, optional client certificates), client configs per backend (CA
//! bundle or system roots, server name, optional client certificate), the
//! handshakes with their timeouts, and the failure labels metrics and logs
//! use.
//!
//! Invariants:
//! - TLS 1.2 and 1.3 only, rustls' default cipher suites and groups, the
//!   `ring` provider, never a process-global provider.
//! - Certificates and keys are read only by [`TlsSet::from_config`], which
//!   `Runtime::build` calls at startup and on every reload: a reload picks
//!   up new certificates for new connections, live sessions keep theirs.
//!   Parsing the config never touches these files.
//! - Private key material never reaches an error message or a log line:
//!   key file errors are described in our own words, not by echoing the
//!   PEM parser.
//! - The STARTTLS switch itself (discarding pipelined plaintext, RFC 2595
//!   §3.1, RFC 3501 §6.2.1, CVE-2011-0411) lives in the relay; this module
//!   only performs handshakes.

pub mod identity;
pub mod stream;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{BackendConfig, ClientAuth, Config, ListenerConfig, TlsMode};
pub use identity::CertIdentity;
pub use stream::{BackendStream, ClientStream, Stream};

/// ALPN protocol id for IMAP (RFC 9051 §11.1; registered for ALPACA
/// mitigation): a client offering only other protocols is refused.
pub const ALPN_IMAP: &[u8] = b"imap";

/// TLS versions offered on both legs.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS setting that cannot be used: the key at fault and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsConfigError {
    pub key: String,
    pub message: String,
}

fn cfg_err(key: &str, message: String) -> TlsConfigError {
    TlsConfigError {
        key: key.to_owned(),
        message,
    }
}

/// A listener's TLS: how it is used and the acceptor for its handshakes.
#[derive(Clone)]
pub struct ListenerTls {
    pub mode: TlsMode,
    pub handshake_timeout: Duration,
    acceptor: TlsAcceptor,
}

/// A backend's TLS: how it is used, the connector, the name to verify.
#[derive(Clone)]
pub struct BackendTls {
    pub mode: TlsMode,
    pub server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("mode", &self.mode)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Every TLS config of one runtime snapshot.
#[derive(Debug, Default)]
pub struct TlsSet {
    listeners: HashMap<String, ListenerTls>,
    backends: HashMap<String, BackendTls>,
    /// The first configured backend's TLS, used for backends a passdb
    /// names by host (verified against that host name).
    first_backend: Option<BackendTls>,
}

impl TlsSet {
    /// Read every certificate, key and CA bundle the config names and build
    /// the rustls configs.  Relative paths resolve against the config file.
    pub fn from_config(config: &Config) -> Result<TlsSet, TlsConfigError> {
        let provider = provider();
        let mut set = TlsSet::default();
        for l in &config.listeners {
            if l.tls == TlsMode::None {
                continue;
            }
            let server = server_config(config, l, &provider)?;
            set.listeners.insert(
                l.name.clone(),
                ListenerTls {
                    mode: l.tls,
                    handshake_timeout: l.tls_handshake_timeout(),
                    acceptor: TlsAcceptor::from(server),
                },
            );
        }
        let mut system_roots = None;
        for (i, b) in config.backends.iter().enumerate() {
            if b.tls == TlsMode::None {
                continue;
            }
            let client = client_config(config, b, &provider, &mut system_roots)?;
            let server_name =
                ServerName::try_from(b.tls_server_name().to_owned()).map_err(|e| {
                    cfg_err("backend.server_name", format!("backend {:?}: {e}", b.name))
                })?;
            let tls = BackendTls {
                mode: b.tls,
                server_name,
                connector: TlsConnector::from(client),
            };
            if i == 0 {
                set.first_backend = Some(tls.clone());
            }
            set.backends.insert(b.name.clone(), tls);
        }
        Ok(set)
    }

    /// The listener's TLS, `None` for `tls = "none"`.
    pub fn listener(&self, name: &str) -> Option<&ListenerTls> {
        self.listeners.get(name)
    }

    /// TLS for a backend: its own by name; for a backend a passdb named by
    /// `host` (not configured), the first backend's settings verified
    /// against `host`.  `None`: plain.
    pub fn backend(&self, name: &str, host: &str) -> Option<BackendTls> {
        if let Some(b) = self.backends.get(name) {
            return Some(b.clone());
        }
        let first = self.first_backend.as_ref()?;
        let server_name = ServerName::try_from(host.to_owned()).ok()?;
        Some(BackendTls {
            server_name,
            ..first.clone()
        })
    }
}

// ---------------------------------------------------------------- building

fn server_config(
    config: &Config,
    l: &ListenerConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let who = format!("listener {:?}", l.name);
    let mut resolver = SniResolver::default();
    for (i, c) in l.certificates.iter().enumerate() {
        let key = load_certified_key(&config.resolve(&c.cert), &config.resolve(&c.key), provider)
            .map_err(|(file, m)| {
            let key = if file == "cert" {
                "listener.certificates.cert"
            } else {
                "listener.certificates.key"
            };
            cfg_err(key, format!("{who}: certificate {}: {m}", i + 1))
        })?;
        let key = Arc::new(key);
        if i == 0 {
            resolver.default = Some(key.clone());
        }
        for name in &c.sni {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => resolver.wildcards.insert(parent.to_owned(), key.clone()),
                None => resolver.names.insert(name, key.clone()),
            };
        }
    }
    let verifier = match l.client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        mode => {
            let path = l
                .client_ca
                .as_ref()
                .ok_or_else(|| cfg_err("listener.client_ca", format!("{who}: missing")))?;
            let roots = load_roots(&config.resolve(path))
                .map_err(|m| cfg_err("listener.client_ca", format!("{who}: {m}")))?;
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if mode == ClientAuth::Optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| cfg_err("listener.client_ca", format!("{who}: {e}")))?
        }
    };
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| cfg_err("listener.tls", format!("{who}: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![ALPN_IMAP.to_vec()];
    Ok(Arc::new(server))
}

fn client_config(
    config: &Config,
    b: &BackendConfig,
    provider: &Arc<CryptoProvider>,
    system_roots: &mut Option<Arc<RootCertStore>>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let who = format!("backend {:?}", b.name);
    let roots = match &b.ca_file {
        Some(path) => Arc::new(
            load_roots(&config.resolve(path))
                .map_err(|m| cfg_err("backend.ca_file", format!("{who}: {m}")))?,
        ),
        None => match system_roots {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(load_system_roots().map_err(|m| {
                    cfg_err("backend.ca_file", format!("{who}: no ca_file and {m}"))
                })?);
                *system_roots = Some(r.clone());
                r
            }
        },
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| cfg_err("backend.tls", format!("{who}: {e}")))?
        .with_root_certificates(roots);
    let client = match (&b.client_cert, &b.client_key) {
        (Some(cert), Some(key)) => {
            let ck = load_certified_key(&config.resolve(cert), &config.resolve(key), provider)
                .map_err(|(file, m)| {
                    let key = if file == "cert" {
                        "backend.client_cert"
                    } else {
                        "backend.client_key"
                    };
                    cfg_err(key, format!("{who}: {m}"))
                })?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(ck)))
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(client))
}

/// Certificate chain and private key from PEM files, checked to belong
/// together.  Errors: (`"cert"` or `"key"`, message).
fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, (&'static str, String)> {
    let chain = load_certs(cert).map_err(|m| ("cert", m))?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| ("key", key_error(key, e)))?;
    let signer = provider.key_provider.load_private_key(der).map_err(|_| {
        (
            "key",
            format!(
                "{}: unsupported private key (RSA, ECDSA P-256/P-384 or Ed25519 expected)",
                key.display()
            ),
        )
    })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err((
            "key",
            format!(
                "{} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ),
        )),
        _ => Ok(certified),
    }
}

/// All certificates in a PEM file; at least one.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found", path.display()));
    }
    Ok(certs)
}

/// The CA certificates in a PEM file, as a trust store (also used by the
/// load tool to trust a gateway's certificate).
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn load_system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(match found.errors.first() {
            Some(e) => format!("the system CA certificates could not be loaded: {e}"),
            None => "no system CA certificates found (install ca-certificates)".into(),
        });
    }
    Ok(roots)
}

/// A PEM error for a certificate file (no secrets in these).
fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(e) => e.to_string(),
        E::NoItemsFound => "no PEM blocks found".into(),
        other => format!("not valid PEM ({other})"),
    }
}

/// A PEM error for a key file, in our words: the parser's own messages may
/// quote lines of the file.
fn key_error(path: &Path, e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    let why = match e {
        E::Io(e) => e.to_string(),
        E::NoItemsFound => "no PRIVATE KEY block found".into(),
        _ => "not a valid PEM private key".into(),
    };
    format!("{}: {why}", path.display())
}

/// Chooses the certificate by SNI: exact name, then `*.parent`, then the
/// default (first) certificate, also when the client sends no SNI.
#[derive(Debug, Default)]
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    names: HashMap<String, Arc<CertifiedKey>>,
    wildcards: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            // rustls hands over a validated DNS name; matching is
            // case-insensitive (RFC 6066 §3).
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.names.get(&name) {
                return Some(k.clone());
            }
            if let Some(k) = name
                .split_once('.')
                .and_then(|(_, parent)| self.wildcards.get(parent))
            {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

// --------------------------------------------------------------- handshakes

/// A failed handshake, by cause.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("peer closed the connection during the TLS handshake")]
    Eof,
    #[error("{0}")]
    Tls(rustls::Error),
    #[error("I/O error during the TLS handshake: {0}")]
    Io(io::Error),
}

/// Every value [`HandshakeError::kind`] returns, for metric set-up.
pub const HANDSHAKE_FAILURE_KINDS: &[&str] = &[
    "handshake_timeout",
    "eof",
    "protocol_version",
    "bad_certificate",
    "incompatible",
    "invalid_message",
    "alpn",
    "other",
];

impl HandshakeError {
    fn from_io(e: io::Error) -> HandshakeError {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return HandshakeError::Tls(tls.clone());
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => HandshakeError::Eof,
            _ => HandshakeError::Io(e),
        }
    }

    /// Bounded label for metrics and logs (see [`HANDSHAKE_FAILURE_KINDS`]).
    pub fn kind(&self) -> &'static str {
        use rustls::{AlertDescription as A, Error as E, PeerIncompatible as P};
        match self {
            HandshakeError::Timeout => "handshake_timeout",
            HandshakeError::Eof => "eof",
            HandshakeError::Io(_) => "other",
            HandshakeError::Tls(e) => match e {
                E::PeerIncompatible(
                    P::ServerDoesNotSupportTls12Or13
                    | P::SupportedVersionsExtensionRequired
                    | P::Tls12NotOffered
                    | P::Tls12NotOfferedOrEnabled
                    | P::ServerTlsVersionIsDisabledByOurConfig,
                )
                | E::AlertReceived(A::ProtocolVersion) => "protocol_version",
                E::PeerIncompatible(_) | E::AlertReceived(A::HandshakeFailure | A::InsufficientSecurity) => {
                    "incompatible"
                }
                E::InvalidCertificate(_)
                | E::NoCertificatesPresented
                | E::AlertReceived(
                    A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::CertificateRequired
                    | A::AccessDenied
                    // What a peer sends when a chain's signature does not
                    // verify (e.g. a same-named but different CA).
                    | A::DecryptError,
                ) => "bad_certificate",
                E::NoApplicationProtocol | E::AlertReceived(A::NoApplicationProtocol) => "alpn",
                E::InvalidMessage(_)
                | E::InappropriateMessage { .. }
                | E::InappropriateHandshakeMessage { .. } => "invalid_message",
                _ => "other",
            },
        }
    }

    /// Whether this side refused the peer's certificate (backend legs: the
    /// backend's certificate did not verify).
    pub fn is_certificate_error(&self) -> bool {
        matches!(
            self,
            HandshakeError::Tls(rustls::Error::InvalidCertificate(_))
        )
    }
}

/// Accept a TLS client on `tcp` within the listener's handshake timeout.
pub async fn accept(tls: &ListenerTls, tcp: TcpStream) -> Result<ClientStream, HandshakeError> {
    match tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(tcp)).await {
        Err(_) => Err(HandshakeError::Timeout),
        Ok(Err(e)) => Err(HandshakeError::from_io(e)),
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
    }
}

/// Start TLS to a backend on `tcp`.  The caller's connect timeout bounds it.
pub async fn connect(tls: &BackendTls, tcp: TcpStream) -> Result<BackendStream, HandshakeError> {
    match tls.connector.connect(tls.server_name.clone(), tcp).await {
        Err(e) => Err(HandshakeError::from_io(e)),
        Ok(s) => Ok(Stream::Tls(Box::new(s))),
    }
}

/// What a completed server-side handshake negotiated, for logs and (the
/// client identity) PREAUTH rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `tls1.2` or `tls1.3`; the metric label.
    pub version: &'static str,
    pub cipher: &'static str,
    /// The SNI name the client sent.
    pub sni: Option<String>,
    /// The verified client certificate's names, if one was presented.
    pub client: Option<CertIdentity>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        TlsInfo {
            version: version_label(conn.protocol_version()),
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
            sni: conn.server_name().map(str::to_owned),
            client: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| CertIdentity::from_der(c)),
        }
    }
}

/// Bounded label for a negotiated protocol version.
pub fn version_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "tls1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "tls1.2",
        _ => "other",
    }
}

// ----------------------------------------------------------------- logging

/// Failed handshakes are logged at debug one by one, and at info at most
/// once per [`SUMMARY_EVERY`] as a count by kind, so a scanner or a broken
/// client cannot flood the log.  Metrics count every one.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

struct Summary {
    since: Option<Instant>,
    counts: [u64; HANDSHAKE_FAILURE_KINDS.len()],
}

static SUMMARY: Mutex<Summary> = Mutex::new(Summary {
    since: None,
    counts: [0; HANDSHAKE_FAILURE_KINDS.len()],
});

/// Log a failed client handshake (debug always, info summarised).
pub fn log_handshake_failure(listener: &str, error: &HandshakeError) {
    let kind = error.kind();
    tracing::debug!(listener, kind, error = %error, "TLS handshake failed");
    let report = {
        let mut s = SUMMARY.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = HANDSHAKE_FAILURE_KINDS.iter().position(|k| *k == kind) {
            s.counts[i] += 1;
        }
        let due = s.since.is_none_or(|t| t.elapsed() >= SUMMARY_EVERY);
        due.then(|| {
            s.since = Some(Instant::now());
            let counts = std::mem::take(&mut s.counts);
            HANDSHAKE_FAILURE_KINDS
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    if let Some(counts) = report {
        tracing::info!(
            listener,
            last_error = %error,
            counts = %counts,
            "TLS handshakes failed (summary; at most one line per {}s, details at debug)",
            SUMMARY_EVERY.as_secs()
        );
    }
}

#[cfg(test)]
mod tests;
