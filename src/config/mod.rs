//! Configuration: serde types for the TOML file, `validate()` turning them
//! into checked runtime settings, and loading with errors that name the key.
//!
//! Every section rejects unknown keys, so a typo is an error at startup (and
//! on reload) rather than a silently ignored setting.  Relative paths are
//! resolved against the directory of the config file, so the example config
//! works from any working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::imap::{Mechanism, Secret};

/// The file as written.  See `config/imapgate.toml` for a commented example
/// and README.md for the reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(rename = "backend")]
    pub backends: Vec<BackendConfig>,
    #[serde(rename = "passdb")]
    pub passdbs: Vec<PassDbConfig>,
    /// Edge authentication around the passdbs: cache, brute-force
    /// protection, hashing pool.
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// PREAUTH rules, first match wins (see `auth::preauth`).
    #[serde(default, rename = "preauth")]
    pub preauth: Vec<crate::auth::preauth::PreauthRule>,
    /// The admin HTTP listener (`/metrics`, `/live`, `/ready`, and the
    /// `/api/` endpoints when a token is set).  Absent: no HTTP listener at
    /// all.  The address is restart-only; the token follows reloads.
    pub admin: Option<AdminConfig>,
    /// Active backend health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// Directory the config file lives in; relative paths resolve here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// One client-facing listener, identified by its address across reloads
/// (see `crate::listeners`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Label used in logs and metrics.
    pub name: String,
    /// Address and port to listen on.
    pub address: SocketAddr,
    /// Networks whose clients may authenticate without TLS (RFC 8314 §4:
    /// cleartext is refused otherwise).  Default: loopback only.  Set to
    /// `[]` to refuse cleartext logins from everyone.
    #[serde(default = "default_trusted_networks")]
    pub trusted_networks: Vec<IpNet>,
    /// SASL mechanisms offered in AUTHENTICATE (PLAIN, LOGIN; any case).
    #[serde(default = "default_mechanisms")]
    pub mechanisms: Vec<Mechanism>,
    /// `none` (plain IMAP), `starttls` (plain, upgraded by STARTTLS, RFC
    /// 3501 §6.2.1), or `implicit` (TLS from the first byte, RFC 8314).
    #[serde(default)]
    pub tls: TlsMode,
    /// Certificate chains and keys; the first is the default when the
    /// client sends no SNI or an unknown name.  Read by `Runtime::build`
    /// (startup and reload), never at parse time.
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
    /// Ask for a client certificate: `none`, `optional`, `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// PEM bundle of the CAs client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Time allowed for a TLS handshake (implicit or after STARTTLS).
    #[serde(default = "default_tls_handshake_timeout_secs")]
    pub tls_handshake_timeout_secs: u64,
    /// `required`: every connection starts with a PROXY protocol v1/v2
    /// header from one of `trusted_proxies`; its client address is used
    /// everywhere.  `off`: no header is read.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Load balancers allowed to send PROXY headers.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Time allowed for the PROXY header to arrive.
    #[serde(default = "default_proxy_protocol_timeout_secs")]
    pub proxy_protocol_timeout_secs: u64,
}

/// PROXY protocol on a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    #[default]
    Off,
    Required,
}

fn default_proxy_protocol_timeout_secs() -> u64 {
    5
}

impl ListenerConfig {
    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs)
    }
}

fn default_tls_handshake_timeout_secs() -> u64 {
    10
}

/// How a leg uses TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP; no STARTTLS offered.
    #[default]
    None,
    /// Plain TCP, upgraded with STARTTLS before credentials are sent.
    Starttls,
    /// TLS from the first byte (port 993 style, RFC 8314 §3.3).
    Implicit,
}

impl TlsMode {
    /// Label for logs and config messages.
    pub fn label(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
}

/// Whether a TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    /// Asked for; a client without one is still served, one with a
    /// certificate that does not verify is refused.
    Optional,
    /// A verified client certificate is needed to complete the handshake.
    Required,
}

/// One certificate chain with its key, served for the listed SNI names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file: the leaf certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Server names (SNI) this certificate answers; `*.example.com`
    /// matches one label.  May be empty for the first (default) entry.
    #[serde(default)]
    pub sni: Vec<String>,
}

fn default_trusted_networks() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|n| n.parse().expect("literal network"))
        .collect()
}

fn default_mechanisms() -> Vec<Mechanism> {
    vec![Mechanism::Plain, Mechanism::Login]
}

/// One backend IMAP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    /// `host:port`; host names are resolved at connect time.
    pub address: String,
    /// Relative weight in user-affinity (rendezvous) routing.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Send the client's address to the backend in an ID command before
    /// LOGIN (Dovecot trusts it from `login_trusted_networks`).
    #[serde(default = "default_true")]
    pub forward_client_id: bool,
    /// With `forward_client_id`: also pass on the fields of the client's
    /// own ID command (name, version, os…; Dovecot's `imap_id_retain`),
    /// never its `x-*` fields, which only the gateway sets.
    #[serde(default)]
    pub forward_client_id_fields: bool,
    /// Start each backend connection with a PROXY protocol v2 header
    /// carrying the client's address (Dovecot: `haproxy = yes` on the
    /// imap listener and the gateway in `haproxy_trusted_networks`).
    #[serde(default)]
    pub send_proxy_protocol: bool,
    /// Most sessions relayed to this backend at once; a full backend is
    /// skipped like a down one (its users go to their next choice).
    /// 0 = unlimited.
    #[serde(default)]
    pub max_connections: u32,
    /// TLS to the backend: `none`, `starttls` or `implicit`.
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM bundle of CAs to verify the backend with; the system roots
    /// when absent.
    pub ca_file: Option<PathBuf>,
    /// Name the backend's certificate must carry (DNS name or IP
    /// address); default: the host part of `address`.
    pub server_name: Option<String>,
    /// How the gateway logs in here: with the client's own credentials
    /// (`client`), or as a master user for the client's user (`master`).
    /// PREAUTH sessions always use the master user.
    #[serde(default)]
    pub login: BackendLogin,
    /// Master user name and password (Dovecot `master=yes` passdb).
    pub master_user: Option<String>,
    pub master_password: Option<String>,
    /// `authzid`: AUTHENTICATE PLAIN with authzid = user (RFC 4616);
    /// `separator`: LOGIN `user<separator>master` (Dovecot's
    /// `auth_master_user_separator`).
    #[serde(default)]
    pub master_method: MasterMethod,
    #[serde(default = "default_master_separator")]
    pub master_separator: String,
    /// Client certificate chain (PEM) to present to the backend.
    pub client_cert: Option<PathBuf>,
    /// Key for `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
}

impl BackendConfig {
    /// The name the backend's certificate is verified against.
    pub fn tls_server_name(&self) -> &str {
        match &self.server_name {
            Some(n) => n,
            // validate() checked the address form.
            None => split_host_port(&self.address).map_or("", |(h, _)| h),
        }
    }
}

/// How the gateway authenticates to a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendLogin {
    #[default]
    Client,
    Master,
}

/// How a master-user login is expressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MasterMethod {
    #[default]
    Authzid,
    Separator,
}

fn default_master_separator() -> String {
    "*".into()
}

fn default_weight() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

/// A password database.  Several are tried in order; the first that knows
/// the user answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PassDbConfig {
    /// Dovecot's passwd-file format: `user:{SCHEME}secret[:uid:gid::home::extra]`.
    PasswdFile {
        path: PathBuf,
        /// Scheme for entries without a `{SCHEME}` prefix.
        #[serde(default = "default_scheme")]
        default_scheme: String,
    },
    /// nginx's `auth_http` protocol (see `auth::http`).
    Http(HttpPassDbConfig),
}

fn default_scheme() -> String {
    "PLAIN".into()
}

/// passdb `http`: an nginx `auth_http` service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPassDbConfig {
    /// `http://host[:port]/path` or `https://…`.
    pub url: String,
    /// Whole request, connect to last header (nginx `auth_http_timeout`).
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    /// HTTP/1.1 with persistent connections; false sends HTTP/1.0 and one
    /// connection per request, exactly as nginx.
    #[serde(default = "default_true")]
    pub keepalive: bool,
    /// Idle persistent connections kept.
    #[serde(default = "default_http_max_idle")]
    pub max_idle_connections: usize,
    /// Static headers added to each request (nginx `auth_http_header`),
    /// e.g. a shared secret; values are never logged.
    #[serde(default, deserialize_with = "secret_headers")]
    pub headers: Vec<(String, Secret<String>)>,
    /// Send the client certificate in `Auth-SSL-Cert` (nginx
    /// `auth_http_pass_client_cert`).
    #[serde(default)]
    pub pass_client_cert: bool,
    /// PEM CA bundle for an `https://` url (default: the system's CAs).
    pub ca_file: Option<PathBuf>,
}

fn default_http_timeout_ms() -> u64 {
    5000
}

fn default_http_max_idle() -> usize {
    8
}

fn secret_headers<'de, D>(d: D) -> Result<Vec<(String, Secret<String>)>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(
        std::collections::BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect(),
    )
}

/// `[auth]`: what happens around the passdbs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Password hashes verified at once (on blocking threads, never on
    /// the async workers).  Default: the number of CPUs.
    pub hash_concurrency: usize,
    /// Logins waiting for a hashing slot; beyond that new logins get
    /// `NO [UNAVAILABLE]` at once.
    pub hash_queue: usize,
    pub cache: AuthCacheConfig,
    pub brute_force: BruteForceConfig,
    /// Users (canonical passdb names) who may log in for another user with
    /// AUTHENTICATE PLAIN's authorization identity (RFC 4616 §2), e.g. a
    /// support or migration account.  The session is then the other
    /// user's, and the gateway logs in to the backend for it as the
    /// backend's master user.  Anyone else asking gets
    /// `NO [AUTHORIZATIONFAILED]`.
    pub master_users: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_queue: 64,
            cache: AuthCacheConfig::default(),
            brute_force: BruteForceConfig::default(),
            master_users: Vec::new(),
        }
    }
}

/// `[auth.cache]`: recent passdb answers, keyed by user and an HMAC of the
/// password; emptied on reload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthCacheConfig {
    /// Entries kept (oldest evicted); 0 turns the cache off.
    pub size: usize,
    /// Lifetime of an accepted login (0: not cached).
    pub positive_ttl_secs: u64,
    /// Lifetime of a rejected one (0: not cached).
    pub negative_ttl_secs: u64,
}

impl Default for AuthCacheConfig {
    fn default() -> Self {
        AuthCacheConfig {
            size: 10_000,
            positive_ttl_secs: 60,
            negative_ttl_secs: 30,
        }
    }
}

/// `[auth.brute_force]`: failures per client network and per user (see
/// `auth::bruteforce`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForceConfig {
    pub enabled: bool,
    /// Failures count for this long from the first one.
    pub window_secs: u64,
    /// Failures answered without delay; later ones wait.
    pub delay_after: u32,
    /// First delay; doubles per further failure.
    pub delay_initial_ms: u64,
    pub delay_max_ms: u64,
    /// Failures from one network before its logins are refused until the
    /// window ends (0: never).
    pub ip_refuse_after: u32,
    /// The same per user name (0: never).
    pub user_refuse_after: u32,
    /// Prefix lengths that make one "network".
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Entries per table (networks, users); the oldest are evicted.
    pub max_entries: usize,
    /// Clients never counted nor limited.
    pub trusted_networks: Vec<IpNet>,
}

impl Default for BruteForceConfig {
    fn default() -> Self {
        BruteForceConfig {
            enabled: true,
            window_secs: 600,
            delay_after: 3,
            delay_initial_ms: 500,
            delay_max_ms: 8000,
            ip_refuse_after: 20,
            user_refuse_after: 100,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_entries: 100_000,
            trusted_networks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest command or response line, in octets.
    pub max_line_length: usize,
    /// Largest literal accepted before login (LOGIN/AUTHENTICATE arguments).
    pub max_literal_size_preauth: u64,
    /// Largest literal accepted after login (APPEND, FETCH responses).
    pub max_literal_size: u64,
    /// Most literals in one command.
    pub max_literals_per_command: u32,
    /// Absolute time allowed to log in, from connect (RFC 9051 §5.4 allows
    /// an autologout; trickled bytes do not extend it).
    pub login_timeout_secs: u64,
    /// Inactivity allowed in authenticated/selected state.  RFC 9051 §5.4:
    /// at least 30 minutes.
    pub idle_timeout_secs: u64,
    /// Longest a single IDLE command may last (clients re-issue IDLE every
    /// 29 minutes, RFC 2177).
    pub max_idle_secs: u64,
    /// Invalid commands tolerated before login; the next one ends the
    /// connection with `* BYE`.
    pub max_bad_commands: u32,
    /// Concurrent client connections, all listeners together (hard cap).
    pub max_connections: usize,
    /// Above this many live connections new ones get `* BYE [UNAVAILABLE]`
    /// (overload shedding before the hard cap); 0 = off.
    pub soft_max_sessions: usize,
    /// Concurrent connections from one client address; 0 = unlimited.
    pub max_connections_per_ip: u32,
    /// New connections per second from one client address (token bucket
    /// refill rate); 0 = unlimited.
    pub connection_rate_per_ip: f64,
    /// Token bucket size: connections one address may open at once.
    pub connection_burst_per_ip: u32,
    /// Client networks the per-IP limits do not apply to.
    pub exempt_networks: Vec<IpNet>,
    /// On SIGTERM, how long sessions may go on finishing their commands
    /// before the rest are closed with `* BYE`.
    pub shutdown_grace_secs: u64,
    /// Concurrent sessions per user after login; more get `NO [LIMIT]`.
    /// 0 = unlimited.
    pub max_sessions_per_user: u32,
    /// Time allowed to connect to a backend and read its greeting.
    pub backend_connect_timeout_secs: u64,
    /// Time allowed for the backend to answer LOGIN.
    pub backend_login_timeout_secs: u64,
    /// Proxies a session may still cross (Dovecot's loop guard): the
    /// backend's ID gets `x-proxy-ttl` one less than this, or than the
    /// client's own `x-proxy-ttl` when that is lower (a proxy in front of
    /// us); a session that arrives with 0 is refused as a proxy loop.
    pub proxy_ttl: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_line_length: 64 * 1024,
            max_literal_size_preauth: 8 * 1024,
            max_literal_size: 64 * 1024 * 1024,
            max_literals_per_command: 1024,
            login_timeout_secs: 60,
            idle_timeout_secs: 30 * 60,
            max_idle_secs: 60 * 60,
            max_bad_commands: 10,
            max_connections: 10_000,
            soft_max_sessions: 0,
            max_connections_per_ip: 0,
            connection_rate_per_ip: 0.0,
            connection_burst_per_ip: 20,
            exempt_networks: Vec::new(),
            max_sessions_per_user: 0,
            shutdown_grace_secs: 30,
            backend_connect_timeout_secs: 10,
            backend_login_timeout_secs: 30,
            // Dovecot's own starting value.
            proxy_ttl: 5,
        }
    }
}

impl LimitsConfig {
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn max_idle(&self) -> Duration {
        Duration::from_secs(self.max_idle_secs)
    }
    pub fn backend_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.backend_connect_timeout_secs)
    }
    pub fn backend_login_timeout(&self) -> Duration {
        Duration::from_secs(self.backend_login_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where to serve HTTP; keep it on loopback or a management network.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// Bearer token for the `/api/` endpoints (sessions, kick, reload,
    /// drain).  Absent: the API is off and `/api/` answers 404.
    #[serde(default, deserialize_with = "secret_string")]
    pub api_token: Option<Secret<String>>,
}

/// Shortest accepted `api_token`: the API can end sessions and reload.
pub const MIN_API_TOKEN_LEN: usize = 16;

fn secret_string<'de, D>(d: D) -> Result<Option<Secret<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

/// Active health checks: every `interval_secs`, connect to each backend
/// and read its greeting (within `limits.backend_connect_timeout_secs`).
/// `fall` failures in a row mark a backend down, `rise` successes up.
/// Independently, a failed connect or greeting during a login marks it
/// down at once, and a completed backend login marks it up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between check rounds; 0 turns active checks off (passive
    /// marking only).
    pub interval_secs: u64,
    pub fall: u32,
    pub rise: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_secs: 10,
            fall: 2,
            rise: 2,
        }
    }
}

impl HealthConfig {
    /// None when active checks are off.
    pub fn interval(&self) -> Option<Duration> {
        (self.interval_secs > 0).then(|| Duration::from_secs(self.interval_secs))
    }
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9143))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `imapgate=debug`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A config that cannot be used, with the key (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, base_dir).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            },
            other => other,
        })
    }

    /// Parse and validate config text; relative paths resolve to `base_dir`.
    pub fn parse(text: &str, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            // toml's message names the key and shows the line and column.
            message: e.to_string(),
        })?;
        config.base_dir = base_dir;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: PathBuf::new(),
            key: key.to_owned(),
            message,
        };
        if self.listeners.is_empty() {
            return Err(invalid(
                "listener",
                "at least one [[listener]] is required".into(),
            ));
        }
        if self.backends.is_empty() {
            return Err(invalid(
                "backend",
                "at least one [[backend]] is required".into(),
            ));
        }
        if self.passdbs.is_empty() {
            return Err(invalid(
                "passdb",
                "at least one [[passdb]] is required".into(),
            ));
        }
        unique_names("listener", self.listeners.iter().map(|l| l.name.as_str()))
            .map_err(|m| invalid("listener.name", m))?;
        unique_names("backend", self.backends.iter().map(|b| b.name.as_str()))
            .map_err(|m| invalid("backend.name", m))?;
        for l in &self.listeners {
            l.validate_tls().map_err(|(k, m)| invalid(k, m))?;
        }
        for l in &self.listeners {
            if l.proxy_protocol == ProxyProtocol::Required && l.trusted_proxies.is_empty() {
                return Err(invalid(
                    "listener.trusted_proxies",
                    format!(
                        "listener {:?}: proxy_protocol = \"required\" needs trusted_proxies",
                        l.name
                    ),
                ));
            }
        }
        for (i, rule) in self.preauth.iter().enumerate() {
            rule.validate()
                .map_err(|m| invalid("preauth", format!("rule {}: {m}", i + 1)))?;
        }
        for b in &self.backends {
            b.validate_tls().map_err(|(k, m)| invalid(k, m))?;
        }
        for b in &self.backends {
            let has_master = b.master_user.is_some() && b.master_password.is_some();
            if b.master_user.is_some() != b.master_password.is_some() {
                return Err(invalid(
                    "backend.master_password",
                    format!(
                        "backend {:?}: master_user and master_password go together",
                        b.name
                    ),
                ));
            }
            if b.login == BackendLogin::Master && !has_master {
                return Err(invalid(
                    "backend.login",
                    format!(
                        "backend {:?}: login = \"master\" needs master_user and master_password",
                        b.name
                    ),
                ));
            }
            // Sessions without the user's own password (PREAUTH, a master
            // user acting for another) are logged in as the backend's master.
            let without_password = [
                (!self.preauth.is_empty(), "[[preauth]] rules"),
                (!self.auth.master_users.is_empty(), "auth.master_users"),
            ];
            if let Some((_, what)) = without_password.iter().find(|(used, _)| *used) {
                if !has_master {
                    return Err(invalid(
                        "backend.master_user",
                        format!(
                            "backend {:?}: {what} need a master user on every backend",
                            b.name
                        ),
                    ));
                }
            }
            if split_host_port(&b.address).is_none() {
                return Err(invalid(
                    "backend.address",
                    format!(
                        "backend {:?}: expected host:port, got {:?}",
                        b.name, b.address
                    ),
                ));
            }
            if b.weight == 0 {
                return Err(invalid(
                    "backend.weight",
                    format!("backend {:?}: weight must be at least 1", b.name),
                ));
            }
        }
        if let Some(token) = self.admin.as_ref().and_then(|a| a.api_token.as_ref()) {
            let t = token.expose();
            if t.len() < MIN_API_TOKEN_LEN || t.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    "admin.api_token",
                    format!("must be at least {MIN_API_TOKEN_LEN} characters without spaces (e.g. `openssl rand -hex 24`)"),
                ));
            }
        }
        if self.health.fall == 0 || self.health.rise == 0 {
            return Err(invalid("health", "fall and rise must be at least 1".into()));
        }
        for p in &self.passdbs {
            match p {
                PassDbConfig::PasswdFile { default_scheme, .. } => {
                    if !crate::auth::scheme_supported(default_scheme) {
                        return Err(invalid(
                            "passdb.default_scheme",
                            format!("unsupported scheme {default_scheme:?}"),
                        ));
                    }
                }
                PassDbConfig::Http(h) => h.validate().map_err(|(k, m)| invalid(k, m))?,
            }
        }
        self.auth.validate().map_err(|(k, m)| invalid(k, m))?;
        let l = &self.limits;
        if l.max_line_length < 1024 {
            return Err(invalid(
                "limits.max_line_length",
                "must be at least 1024".into(),
            ));
        }
        if l.max_literal_size_preauth < 4096 {
            return Err(invalid(
                "limits.max_literal_size_preauth",
                "must be at least 4096 (LITERAL-, RFC 7888)".into(),
            ));
        }
        if l.idle_timeout_secs < 30 * 60 {
            return Err(invalid(
                "limits.idle_timeout_secs",
                "RFC 9051 §5.4 requires at least 1800 seconds".into(),
            ));
        }
        if l.login_timeout_secs == 0
            || l.backend_connect_timeout_secs == 0
            || l.backend_login_timeout_secs == 0
        {
            return Err(invalid(
                "limits",
                "timeouts must be at least 1 second".into(),
            ));
        }
        if l.max_connections == 0 {
            return Err(invalid(
                "limits.max_connections",
                "must be at least 1".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("not a valid filter: {e}")))?;
        Ok(())
    }

    /// Resolve a path from the file against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }
}

impl HttpPassDbConfig {
    /// `(key, message)` on error.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = crate::auth::http::parse_url(&self.url)
            .map_err(|m| ("passdb.url", format!("{:?}: {m}", self.url)))?;
        if self.timeout_ms == 0 {
            return Err(("passdb.timeout_ms", "must be at least 1".into()));
        }
        if self.ca_file.is_some() && !url.https {
            return Err(("passdb.ca_file", "only for an https:// url".into()));
        }
        for (name, value) in &self.headers {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(("passdb.headers", format!("{name:?} is not a header name")));
            }
            if value.expose().chars().any(|c| c.is_control() && c != '\t') {
                return Err((
                    "passdb.headers",
                    format!("{name}: control characters in the value"),
                ));
            }
        }
        Ok(())
    }
}

impl AuthConfig {
    /// `(key, message)` on error.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.hash_concurrency == 0 {
            return Err(("auth.hash_concurrency", "must be at least 1".into()));
        }
        let b = &self.brute_force;
        if b.ipv4_prefix > 32 || b.ipv6_prefix > 128 {
            return Err((
                "auth.brute_force",
                "ipv4_prefix is at most 32, ipv6_prefix at most 128".into(),
            ));
        }
        if b.delay_initial_ms > b.delay_max_ms {
            return Err((
                "auth.brute_force.delay_initial_ms",
                "must not exceed delay_max_ms".into(),
            ));
        }
        if b.enabled && (b.window_secs == 0 || b.max_entries == 0) {
            return Err((
                "auth.brute_force",
                "window_secs and max_entries must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl ListenerConfig {
    /// TLS settings that belong together; `(key, message)` on error.
    fn validate_tls(&self) -> Result<(), (&'static str, String)> {
        let name = &self.name;
        match self.tls {
            TlsMode::None => {
                if !self.certificates.is_empty() {
                    return Err((
                        "listener.certificates",
                        format!("listener {name:?}: certificates given but tls = \"none\" (set tls = \"starttls\" or \"implicit\")"),
                    ));
                }
                if self.client_auth != ClientAuth::None || self.client_ca.is_some() {
                    return Err((
                        "listener.client_auth",
                        format!("listener {name:?}: client certificates need tls = \"starttls\" or \"implicit\""),
                    ));
                }
            }
            TlsMode::Starttls | TlsMode::Implicit => {
                if self.certificates.is_empty() {
                    return Err((
                        "listener.certificates",
                        format!(
                            "listener {name:?}: tls = \"{}\" needs at least one certificate ({{ cert = \"...\", key = \"...\" }})",
                            self.tls.label()
                        ),
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.certificates.iter().enumerate() {
            if i > 0 && c.sni.is_empty() {
                return Err((
                    "listener.certificates.sni",
                    format!("listener {name:?}: certificate {} ({}) has no sni names; only the first (default) may omit them", i + 1, c.cert.display()),
                ));
            }
            for n in &c.sni {
                let host = n.strip_prefix("*.").unwrap_or(n);
                if rustls_pki_types::DnsName::try_from(host).is_err() || host.contains('*') {
                    return Err((
                        "listener.certificates.sni",
                        format!("listener {name:?}: {n:?} is not a DNS name (or *.name)"),
                    ));
                }
                if !seen.insert(n.to_ascii_lowercase()) {
                    return Err((
                        "listener.certificates.sni",
                        format!("listener {name:?}: sni name {n:?} is listed twice"),
                    ));
                }
            }
        }
        match (self.client_auth, &self.client_ca) {
            (ClientAuth::Optional | ClientAuth::Required, None) => {
                return Err((
                    "listener.client_ca",
                    format!("listener {name:?}: client_auth = \"optional\"/\"required\" needs client_ca (PEM bundle of CAs)"),
                ))
            }
            (ClientAuth::None, Some(_)) => {
                return Err((
                    "listener.client_ca",
                    format!("listener {name:?}: client_ca is set but client_auth = \"none\""),
                ))
            }
            _ => {}
        }
        if self.tls_handshake_timeout_secs == 0 {
            return Err((
                "listener.tls_handshake_timeout_secs",
                format!("listener {name:?}: must be at least 1"),
            ));
        }
        Ok(())
    }
}

impl BackendConfig {
    /// TLS settings that belong together; `(key, message)` on error.
    fn validate_tls(&self) -> Result<(), (&'static str, String)> {
        let name = &self.name;
        if self.tls == TlsMode::None {
            for (key, set) in [
                ("backend.ca_file", self.ca_file.is_some()),
                ("backend.server_name", self.server_name.is_some()),
                ("backend.client_cert", self.client_cert.is_some()),
                ("backend.client_key", self.client_key.is_some()),
            ] {
                if set {
                    return Err((
                        key,
                        format!("backend {name:?}: set, but tls = \"none\" (set tls = \"starttls\" or \"implicit\")"),
                    ));
                }
            }
            return Ok(());
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err((
                    "backend.client_key",
                    format!("backend {name:?}: client_cert needs client_key"),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "backend.client_cert",
                    format!("backend {name:?}: client_key needs client_cert"),
                ))
            }
            _ => {}
        }
        if let Some((host, _)) = split_host_port(&self.address) {
            let server_name = self.server_name.as_deref().unwrap_or(host);
            if rustls_pki_types::ServerName::try_from(server_name).is_err() {
                let key = if self.server_name.is_some() {
                    "backend.server_name"
                } else {
                    "backend.address"
                };
                return Err((
                    key,
                    format!(
                        "backend {name:?}: {server_name:?} is neither a DNS name nor an IP address"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn unique_names<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if n.is_empty() {
            return Err(format!("every {what} needs a non-empty name"));
        }
        if !seen.insert(n) {
            return Err(format!("duplicate {what} name {n:?}"));
        }
    }
    Ok(())
}

/// Split `host:port` (IPv6 hosts in brackets).
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[listener]]
name = "imap"
address = "127.0.0.1:1143"

[[backend]]
name = "b1"
address = "127.0.0.1:10143"

[[passdb]]
type = "passwd-file"
path = "users"
"#;

    #[test]
    fn minimal_parses_with_defaults() {
        let c = Config::parse(MINIMAL, PathBuf::from("/etc/imapgate")).unwrap();
        assert_eq!(c.limits.login_timeout_secs, 60);
        assert_eq!(
            c.listeners[0].mechanisms,
            vec![Mechanism::Plain, Mechanism::Login]
        );
        match &c.passdbs[0] {
            PassDbConfig::PasswdFile { path, .. } => {
                assert_eq!(c.resolve(path), PathBuf::from("/etc/imapgate/users"))
            }
            PassDbConfig::Http(_) => panic!("passwd-file expected"),
        }
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let text = MINIMAL.replace("name = \"b1\"", "name = \"b1\"\nadress = \"x\"");
        let e = Config::parse(&text, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("adress"), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn sasl_mechanisms_are_typed_and_checked_when_read() {
        let with = |m: &str| {
            MINIMAL.replacen(
                "[[listener]]\n",
                &format!("[[listener]]\nmechanisms = {m}\n"),
                1,
            )
        };
        let c = Config::parse(&with("[\"login\"]"), PathBuf::new()).unwrap();
        assert_eq!(c.listeners[0].mechanisms, vec![Mechanism::Login]);
        let e = Config::parse(&with("[\"PLAIN\", \"CRAM-MD5\"]"), PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported SASL mechanism \"CRAM-MD5\""), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn invalid_values_named() {
        let text = MINIMAL.replace("127.0.0.1:10143", "nohost");
        let e = Config::parse(&text, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.address"), "{e}");
        let text = format!("{MINIMAL}\n[limits]\nidle_timeout_secs = 10\n");
        let e = Config::parse(&text, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.idle_timeout_secs"), "{e}");
    }

    #[test]
    fn logins_without_the_users_password_need_backend_masters() {
        let text = format!("{MINIMAL}\n[auth]\nmaster_users = [\"support\"]\n");
        let e = Config::parse(&text, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("backend.master_user"), "{e}");
        assert!(e.contains("auth.master_users"), "{e}");
        let text = text.replace(
            "name = \"b1\"",
            "name = \"b1\"\nmaster_user = \"gw\"\nmaster_password = \"s\"",
        );
        let c = Config::parse(&text, PathBuf::new()).unwrap();
        assert_eq!(c.auth.master_users, ["support"]);
    }

    #[test]
    fn tls_settings_validated_naming_the_key() {
        let listener = |extra: &str| {
            MINIMAL.replace(
                "address = \"127.0.0.1:1143\"",
                &format!("address = \"127.0.0.1:1143\"\n{extra}"),
            )
        };
        let backend = |extra: &str| {
            MINIMAL.replace(
                "address = \"127.0.0.1:10143\"",
                &format!("address = \"127.0.0.1:10143\"\n{extra}"),
            )
        };
        let ok = Config::parse(
            &listener(
                r#"tls = "starttls"
certificates = [{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key", sni = ["b.example", "*.b.example"] }]
client_auth = "optional"
client_ca = "ca.pem""#,
            ),
            PathBuf::new(),
        )
        .unwrap();
        let l = &ok.listeners[0];
        assert_eq!(l.tls, TlsMode::Starttls);
        assert_eq!(l.tls_handshake_timeout_secs, 10);
        assert_eq!(ok.backends[0].tls, TlsMode::None);
        assert_eq!(ok.backends[0].tls_server_name(), "127.0.0.1");
        // Files are not read at parse time: none of these exist.
        Config::parse(
            &backend(
                r#"tls = "implicit"
ca_file = "ca.pem"
server_name = "imap.example"
client_cert = "c.pem"
client_key = "c.key""#,
            ),
            PathBuf::new(),
        )
        .unwrap();

        for (text, key) in [
            (listener(r#"tls = "implicit""#), "listener.certificates"),
            (
                listener(r#"certificates = [{ cert = "a.pem", key = "a.key" }]"#),
                "listener.certificates",
            ),
            (
                listener(
                    r#"tls = "implicit"
certificates = [{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" }]"#,
                ),
                "listener.certificates.sni",
            ),
            (
                listener(
                    r#"tls = "implicit"
certificates = [{ cert = "a.pem", key = "a.key", sni = ["bad name"] }]"#,
                ),
                "listener.certificates.sni",
            ),
            (
                listener(
                    r#"tls = "implicit"
certificates = [{ cert = "a.pem", key = "a.key" }]
client_auth = "required""#,
                ),
                "listener.client_ca",
            ),
            (
                listener(r#"client_auth = "optional""#),
                "listener.client_auth",
            ),
            (
                listener(
                    r#"tls = "implicit"
certificates = [{ cert = "a.pem", key = "a.key" }]
tls_handshake_timeout_secs = 0"#,
                ),
                "listener.tls_handshake_timeout_secs",
            ),
            (listener(r#"tls = "sometimes""#), "tls"),
            (
                listener(
                    r#"tls = "implicit"
certificates = [{ cert = "a.pem", kee = "a.key" }]"#,
                ),
                "kee",
            ),
            (backend(r#"ca_file = "ca.pem""#), "backend.ca_file"),
            (
                backend(
                    r#"tls = "starttls"
client_cert = "c.pem""#,
                ),
                "backend.client_key",
            ),
            (
                backend(
                    r#"tls = "starttls"
server_name = "not a name""#,
                ),
                "backend.server_name",
            ),
        ] {
            let e = Config::parse(&text, PathBuf::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "expected {key} in: {e}\n{text}");
        }
    }

    #[test]
    fn health_and_admin_token() {
        let c = Config::parse(MINIMAL, PathBuf::new()).unwrap();
        assert_eq!(
            (c.health.interval(), c.health.fall, c.health.rise),
            (Some(Duration::from_secs(10)), 2, 2)
        );
        assert!(c.admin.is_none());
        let text = format!(
            "{MINIMAL}\n[health]\ninterval_secs = 0\n[admin]\napi_token = \"0123456789abcdef\"\n"
        );
        let c = Config::parse(&text, PathBuf::new()).unwrap();
        assert_eq!(c.health.interval(), None);
        let admin = c.admin.expect("admin section");
        assert_eq!(admin.address, default_admin_address());
        let token = admin.api_token.expect("token");
        assert!(token.ct_eq(b"0123456789abcdef"));
        assert!(!format!("{admin:?}", admin = token).contains("0123"));
        for bad in ["short", "has a space in it 0123456789"] {
            let text = format!("{MINIMAL}\n[admin]\napi_token = \"{bad}\"\n");
            let e = Config::parse(&text, PathBuf::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains("admin.api_token"), "{e}");
        }
        let text = format!("{MINIMAL}\n[health]\nfall = 0\n");
        let e = Config::parse(&text, PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("health"), "{e}");
    }

    #[test]
    fn auth_section_and_http_passdb() {
        let c = Config::parse(MINIMAL, PathBuf::new()).unwrap();
        assert_eq!(c.auth.cache.size, 10_000);
        assert_eq!(c.auth.brute_force.ipv6_prefix, 64);
        assert!(c.auth.hash_concurrency >= 1);
        let text = format!(
            r#"{MINIMAL}
[[passdb]]
type = "http"
url = "http://127.0.0.1:9000/auth"
headers = {{ X-Auth-Key = "s3cret" }}

[auth]
hash_concurrency = 2
hash_queue = 8
[auth.cache]
size = 0
[auth.brute_force]
trusted_networks = ["10.0.0.0/8"]
ip_refuse_after = 5
"#
        );
        let c = Config::parse(&text, PathBuf::new()).unwrap();
        let PassDbConfig::Http(h) = &c.passdbs[1] else {
            panic!("http passdb expected")
        };
        assert_eq!((h.timeout_ms, h.keepalive), (5000, true));
        assert_eq!(h.headers[0].0, "X-Auth-Key");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!((c.auth.hash_queue, c.auth.cache.size), (8, 0));
        assert_eq!(c.auth.brute_force.ip_refuse_after, 5);
        for (bad, key) in [
            ("url = \"ftp://x/\"", "passdb.url"),
            (
                "url = \"http://x/\"\nca_file = \"ca.pem\"",
                "passdb.ca_file",
            ),
            (
                "url = \"http://x/\"\nheaders = { \"a b\" = \"1\" }",
                "passdb.headers",
            ),
            ("url = \"http://x/\"\ntimeout = 1", "timeout"),
        ] {
            let text = format!("{MINIMAL}\n[[passdb]]\ntype = \"http\"\n{bad}\n");
            let e = Config::parse(&text, PathBuf::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "expected {key} in: {e}");
        }
        for (bad, key) in [
            ("[auth]\nhash_concurrency = 0", "auth.hash_concurrency"),
            ("[auth.brute_force]\nipv6_prefix = 129", "auth.brute_force"),
            (
                "[auth.brute_force]\ndelay_initial_ms = 9000\ndelay_max_ms = 10",
                "delay_initial_ms",
            ),
            ("[auth.cache]\nttl = 1", "ttl"),
        ] {
            let e = Config::parse(&format!("{MINIMAL}\n{bad}\n"), PathBuf::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "expected {key} in: {e}");
        }
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/imapgate.toml");
        Config::load(&path).unwrap();
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("[::1]:143"), Some(("::1", 143)));
        assert_eq!(
            split_host_port("mail.example:993"),
            Some(("mail.example", 993))
        );
        assert_eq!(split_host_port(":143"), None);
    }
}
