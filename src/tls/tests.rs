//! TLS set-up against certificates made here (rcgen): SNI selection,
//! client certificates, config errors, handshake failure labels.  Real
//! loopback sockets, rustls on both ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::Config;

struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "imapgate test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A leaf signed by the CA, written to NAME.pem / NAME.key.
    fn leaf(
        &self,
        name: &str,
        dns: &[&str],
        cn: &str,
        email: Option<&str>,
    ) -> CertificateDer<'static> {
        let mut params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(e) = email {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name(e.try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    fn client_config(&self, client: Option<&str>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let certs = load_certs(&self.path(&format!("{name}.pem"))).unwrap();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

const TAIL: &str = r#"
[[backend]]
name = "b1"
address = "127.0.0.1:10143"

[[passdb]]
type = "passwd-file"
path = "users"
"#;

fn config(dir: &Path, listener: &str) -> Config {
    let text =
        format!("[[listener]]\nname = \"imaps\"\naddress = \"127.0.0.1:1993\"\n{listener}\n{TAIL}");
    Config::parse(&text, dir.to_owned()).unwrap()
}

/// Serve one handshake on a loopback port; returns the port and the
/// server's result.
async fn serve_one(
    tls: ListenerTls,
) -> (
    u16,
    tokio::task::JoinHandle<Result<Option<TlsInfo>, HandshakeError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let stream = accept(&tls, tcp).await?;
        Ok(stream.tls_connection().map(TlsInfo::of))
    });
    (port, task)
}

async fn client_handshake(
    port: u16,
    config: Arc<ClientConfig>,
    name: &str,
) -> Result<CertificateDer<'static>, io::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = TlsConnector::from(config);
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let stream = connector.connect(server_name, tcp).await?;
    Ok(stream.get_ref().1.peer_certificates().unwrap()[0].clone())
}

#[tokio::test]
async fn certificate_chosen_by_sni_with_default() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.example", "127.0.0.1"], "a", None);
    let b = pki.leaf("b", &["b.example", "x.wild.example"], "b", None);
    let c = config(
        pki.dir.path(),
        r#"tls = "implicit"
certificates = [
  { cert = "a.pem", key = "a.key" },
  { cert = "b.pem", key = "b.key", sni = ["B.example", "*.wild.example"] },
]"#,
    );
    let set = TlsSet::from_config(&c).unwrap();
    let tls = set.listener("imaps").unwrap().clone();
    for (name, want) in [
        ("b.example", &b),
        ("x.wild.example", &b),
        ("a.example", &a),
        // No SNI is sent for an IP address: the default.
        ("127.0.0.1", &a),
    ] {
        let (port, server) = serve_one(tls.clone()).await;
        let got = client_handshake(port, pki.client_config(None, &[]), name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&got, want, "certificate for {name}");
        let info = server.await.unwrap().unwrap().unwrap();
        assert_eq!(info.version, "tls1.3");
        assert_eq!(info.client, None);
    }
    // An unknown name gets the default, which does not cover it: the
    // client refuses, the server sees a certificate alert.
    let (port, server) = serve_one(tls.clone()).await;
    let e = client_handshake(port, pki.client_config(None, &[]), "unknown.example")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    assert_eq!(server.await.unwrap().unwrap_err().kind(), "bad_certificate");
}

#[tokio::test]
async fn client_certificates_required_and_optional() {
    let pki = Pki::new();
    pki.leaf("server", &["imap.example"], "imap.example", None);
    pki.leaf("alice", &[], "Alice", Some("alice@example.org"));
    let required = config(
        pki.dir.path(),
        r#"tls = "implicit"
certificates = [{ cert = "server.pem", key = "server.key" }]
client_auth = "required"
client_ca = "ca.pem""#,
    );
    let tls = TlsSet::from_config(&required)
        .unwrap()
        .listener("imaps")
        .unwrap()
        .clone();

    let (port, server) = serve_one(tls.clone()).await;
    client_handshake(port, pki.client_config(Some("alice"), &[]), "imap.example")
        .await
        .unwrap();
    let info = server.await.unwrap().unwrap().unwrap();
    let id = info.client.expect("client identity");
    assert_eq!(id.common_name.as_deref(), Some("Alice"));
    assert_eq!(id.emails, vec!["alice@example.org"]);

    // Without a certificate: refused.  (In TLS 1.3 the client learns only
    // on its first read, so only the server's verdict is checked.)
    let (port, server) = serve_one(tls.clone()).await;
    let _ = client_handshake(port, pki.client_config(None, &[]), "imap.example").await;
    assert_eq!(server.await.unwrap().unwrap_err().kind(), "bad_certificate");

    let optional = config(
        pki.dir.path(),
        r#"tls = "implicit"
certificates = [{ cert = "server.pem", key = "server.key" }]
client_auth = "optional"
client_ca = "ca.pem""#,
    );
    let tls = TlsSet::from_config(&optional)
        .unwrap()
        .listener("imaps")
        .unwrap()
        .clone();
    let (port, server) = serve_one(tls).await;
    client_handshake(port, pki.client_config(None, &[]), "imap.example")
        .await
        .unwrap();
    assert_eq!(server.await.unwrap().unwrap().unwrap().client, None);
}

#[tokio::test]
async fn failure_kinds() {
    let pki = Pki::new();
    pki.leaf("server", &["imap.example"], "imap.example", None);
    let c = config(
        pki.dir.path(),
        r#"tls = "implicit"
certificates = [{ cert = "server.pem", key = "server.key" }]
tls_handshake_timeout_secs = 1"#,
    );
    let tls = TlsSet::from_config(&c)
        .unwrap()
        .listener("imaps")
        .unwrap()
        .clone();

    // Plain IMAP spoken to a TLS port.
    let (port, server) = serve_one(tls.clone()).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"a LOGIN alice wonderland\r\n")
        .await
        .unwrap();
    assert_eq!(server.await.unwrap().unwrap_err().kind(), "invalid_message");

    // Connect and say nothing.
    let (port, server) = serve_one(tls.clone()).await;
    let _idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(
        server.await.unwrap().unwrap_err().kind(),
        "handshake_timeout"
    );

    // Connect and hang up.
    let (port, server) = serve_one(tls.clone()).await;
    drop(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    assert_eq!(server.await.unwrap().unwrap_err().kind(), "eof");

    // ALPN for another protocol (ALPACA): refused.
    let (port, server) = serve_one(tls.clone()).await;
    let _ = client_handshake(
        port,
        pki.client_config(None, &[b"http/1.1"]),
        "imap.example",
    )
    .await;
    assert_eq!(server.await.unwrap().unwrap_err().kind(), "alpn");
    // ALPN "imap" is fine.
    let (port, server) = serve_one(tls.clone()).await;
    client_handshake(port, pki.client_config(None, &[b"imap"]), "imap.example")
        .await
        .unwrap();
    server.await.unwrap().unwrap();

    // TLS 1.2 only client: served, labelled.
    let (port, server) = serve_one(tls.clone()).await;
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let tls12 = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_handshake(port, Arc::new(tls12), "imap.example")
        .await
        .unwrap();
    assert_eq!(server.await.unwrap().unwrap().unwrap().version, "tls1.2");

    for kind in HANDSHAKE_FAILURE_KINDS {
        assert!(!kind.is_empty());
    }
}

#[tokio::test]
async fn backend_verification_failure_is_a_certificate_error() {
    let pki = Pki::new();
    pki.leaf("server", &["imap.example"], "imap.example", None);
    let listener = config(
        pki.dir.path(),
        r#"tls = "implicit"
certificates = [{ cert = "server.pem", key = "server.key" }]"#,
    );
    let tls = TlsSet::from_config(&listener)
        .unwrap()
        .listener("imaps")
        .unwrap()
        .clone();
    // A backend that trusts another CA.
    let other = Pki::new();
    fs::copy(other.path("ca.pem"), pki.path("other-ca.pem")).unwrap();
    let text = "[[listener]]\nname = \"imap\"\naddress = \"127.0.0.1:1143\"\n\
         [[backend]]\nname = \"b1\"\naddress = \"127.0.0.1:1\"\ntls = \"implicit\"\n\
         ca_file = \"other-ca.pem\"\nserver_name = \"imap.example\"\n\
         [[passdb]]\ntype = \"passwd-file\"\npath = \"users\"\n";
    let c = Config::parse(text, pki.dir.path().to_owned()).unwrap();
    let set = TlsSet::from_config(&c).unwrap();
    let backend = set.backend("b1", "127.0.0.1").unwrap();
    let (port, server) = serve_one(tls).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let e = connect(&backend, tcp).await.unwrap_err();
    assert!(e.is_certificate_error(), "{e:?}");
    assert_eq!(e.kind(), "bad_certificate");
    let se = server.await.unwrap().unwrap_err();
    assert_eq!(se.kind(), "bad_certificate", "{se:?}");

    // A backend a passdb names by host: the first backend's settings,
    // verified against that host.
    let adhoc = set.backend("10.0.0.9:993", "mail.example").unwrap();
    assert_eq!(adhoc.mode, TlsMode::Implicit);
    assert_eq!(
        adhoc.server_name,
        ServerName::try_from("mail.example").unwrap()
    );
}

#[test]
fn config_errors_name_the_key_and_never_show_key_material() {
    let pki = Pki::new();
    pki.leaf("a", &["a.example"], "a", None);
    pki.leaf("b", &["b.example"], "b", None);
    let key_pem = fs::read_to_string(pki.path("b.key")).unwrap();
    let body = key_pem
        .lines()
        .nth(1)
        .expect("a base64 line of the key")
        .to_owned();

    let cases = [
        (
            r#"tls = "implicit"
certificates = [{ cert = "a.pem", key = "b.key" }]"#,
            "listener.certificates.key",
            "does not belong",
        ),
        (
            r#"tls = "starttls"
certificates = [{ cert = "missing.pem", key = "a.key" }]"#,
            "listener.certificates.cert",
            "missing.pem",
        ),
        (
            r#"tls = "starttls"
certificates = [{ cert = "a.pem", key = "a.pem" }]"#,
            "listener.certificates.key",
            "no PRIVATE KEY",
        ),
        (
            r#"tls = "implicit"
certificates = [{ cert = "b.key", key = "b.key" }]"#,
            "listener.certificates.cert",
            "no CERTIFICATE",
        ),
    ];
    for (listener, key, text) in cases {
        let e = TlsSet::from_config(&config(pki.dir.path(), listener))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(key), "{listener}: {e}");
        assert!(e.contains(text), "{listener}: {e}");
        assert!(!e.contains(&body), "key material in error: {e}");
    }
}
