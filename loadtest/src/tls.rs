//! TLS for `wss://` targets: the client configuration and its certificate checks.
//!
//! The handshake runs on tokio-rustls; once the WebSocket handshake is done the
//! connection's socket and rustls session are taken apart and driven by [`crate::conn`]
//! directly (non-blocking reads and writes, like a plain socket), so that a TLS run
//! measures the same client loop as a plain one, plus the crypto.
//!
//! The server is checked against a CA file (`--ca-file`), or not at all
//! (`--insecure-skip-verify`, for loopback benchmarks against a self-signed
//! certificate: the handshake signature is still verified, the chain and name are not).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The client configuration for `wss://` targets: trusting the CAs of `ca_file`, or,
/// with `insecure`, any certificate.
pub fn client_config(ca_file: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let config = match (ca_file, insecure) {
        (Some(_), true) => bail!("--ca-file and --insecure-skip-verify exclude each other"),
        (Some(path), false) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading the CA file {}", path.display()))?
            {
                let cert = cert.with_context(|| format!("a certificate in {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("a CA certificate in {}", path.display()))?;
            }
            if roots.is_empty() {
                bail!("{}: no CERTIFICATE in it", path.display());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        (None, false) => bail!(
            "wss:// targets need --ca-file FILE (the CA that signed the server's certificate) \
             or --insecure-skip-verify"
        ),
    };
    Ok(Arc::new(config))
}

/// The name the server's certificate is checked against: the URL's host.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).with_context(|| format!("{host}: not a TLS server name"))
}

/// `--insecure-skip-verify`: any certificate is accepted; the handshake's signature is
/// still checked (it proves nothing without the chain, but keeps the crypto work the
/// same as a verified connection's).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
