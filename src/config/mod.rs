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
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// The admin HTTP listener (`/metrics`, `/live`, `/ready`).  Absent:
    /// no HTTP listener at all.  Restart-only.
    pub admin: Option<AdminConfig>,
    /// Directory the config file lives in; relative paths resolve here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// One client-facing listener.  Restart-only: changing listeners needs a
/// restart (see README).
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
    /// SASL mechanisms offered in AUTHENTICATE.
    #[serde(default = "default_mechanisms")]
    pub mechanisms: Vec<String>,
}

fn default_trusted_networks() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|n| n.parse().expect("literal network"))
        .collect()
}

fn default_mechanisms() -> Vec<String> {
    vec!["PLAIN".into(), "LOGIN".into()]
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
}

fn default_scheme() -> String {
    "PLAIN".into()
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
    /// Concurrent client connections, all listeners together.
    pub max_connections: usize,
    /// Time allowed to connect to a backend and read its greeting.
    pub backend_connect_timeout_secs: u64,
    /// Time allowed for the backend to answer LOGIN.
    pub backend_login_timeout_secs: u64,
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
            backend_connect_timeout_secs: 10,
            backend_login_timeout_secs: 30,
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
            for m in &l.mechanisms {
                if !matches!(m.to_ascii_uppercase().as_str(), "PLAIN" | "LOGIN") {
                    return Err(invalid(
                        "listener.mechanisms",
                        format!("listener {:?}: unsupported SASL mechanism {m:?} (supported: PLAIN, LOGIN)", l.name),
                    ));
                }
            }
        }
        for b in &self.backends {
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
            }
        }
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
        assert_eq!(c.listeners[0].mechanisms, vec!["PLAIN", "LOGIN"]);
        match &c.passdbs[0] {
            PassDbConfig::PasswdFile { path, .. } => {
                assert_eq!(c.resolve(path), PathBuf::from("/etc/imapgate/users"))
            }
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
