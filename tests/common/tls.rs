//! TLS for the tests: a certificate authority and server certificates made by the test
//! itself (rcgen), written to a temporary directory, and clients that trust that
//! authority and report which certificate the server showed them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hubcast::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;

use super::within;

/// A WebSocket over TLS.
pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A test CA, and the server certificate and key files in a directory of their own.
pub struct TestCerts {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    serial: AtomicUsize,
}

/// One issued server certificate: its PEM files' contents and its DER (what a client
/// sees as the peer certificate).
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCerts {
    pub fn new() -> Self {
        static DIRS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hubcast-tls-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "hubcast test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("CA certificate");
        TestCerts {
            dir,
            ca,
            serial: AtomicUsize::new(1),
        }
    }

    /// A new server certificate for `localhost` and 127.0.0.1, its common name numbered.
    pub fn issue(&self) -> Issued {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("hubcast test server {n}"));
        params.serial_number = Some(rcgen::SerialNumber::from(n as u64));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("server.crt"),
            key: self.dir.join("server.key"),
        }
    }

    /// Writes `issued` as the server's certificate and key files.
    pub fn install(&self, issued: &Issued) {
        let files = self.files();
        std::fs::write(&files.cert, &issued.cert_pem).expect("write cert");
        std::fs::write(&files.key, &issued.key_pem).expect("write key");
    }

    /// Issues a certificate and installs it.
    pub fn install_new(&self) -> Issued {
        let issued = self.issue();
        self.install(&issued);
        issued
    }

    /// The CA certificate as a PEM file (for clients outside this process).
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.join("ca.crt");
        std::fs::write(&path, self.ca.pem()).expect("write CA");
        path
    }

    /// A server configuration serving `issued` (for an app doing TLS itself).
    pub fn server_config(&self, issued: &Issued) -> Arc<rustls::ServerConfig> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("cert");
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
        Arc::new(config)
    }

    /// A client configuration trusting this CA only. It never resumes a session: a
    /// resumed handshake shows no certificate (the client would report the one of the
    /// session it resumed), and the tests check which certificate each handshake got.
    pub fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA as root");
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut config = config;
        config.resumption = rustls::client::Resumption::disabled();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS connection to `addr` (as `localhost`), handshake done.
pub async fn tls_connect(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    within(async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake")
    })
    .await
}

/// The certificate the server presented on `stream` (DER).
pub fn served_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .to_vec()
}

/// A `wss://` client on `/ws{query}`.
pub async fn wss_connect(addr: SocketAddr, query: &str, connector: &TlsConnector) -> Wss {
    let tls = tls_connect(addr, connector).await;
    let url = format!("wss://localhost:{}/ws{query}", addr.port());
    let (ws, resp) = within(tokio_tungstenite::client_async(url, tls))
        .await
        .expect("upgrade over TLS");
    assert_eq!(resp.status(), 101);
    ws
}

/// An HTTPS request (connection closed after): status and body.
pub async fn https(addr: SocketAddr, connector: &TlsConnector, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(addr, connector).await;
    within(async {
        tls.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        // A server that closes without close_notify ends the read with an error; what
        // was read until then is the response.
        let _ = tls.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (super::status_of(&text), body)
    })
    .await
}
