//! A throwaway certificate authority and the TLS server settings the HTTPS mocks use.

use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test certificate authority and a leaf certificate it signed for `localhost` and
/// `127.0.0.1`. Clients trust `ca_pem` through their configuration.
#[derive(Clone)]
pub struct TestCa {
    /// The CA certificate in PEM, for a client's extra trusted roots.
    pub ca_pem: String,
    /// The leaf (server) certificate in PEM.
    pub leaf_cert_pem: String,
    leaf_cert_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// Makes a fresh CA and a leaf certificate for `localhost` and `127.0.0.1`.
    ///
    /// # Errors
    /// When rcgen fails to generate a key or sign a certificate.
    pub fn new() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate().context("failed to generate the test CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .context("failed to build the test CA parameters")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Clarion testkit throwaway CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("failed to self-sign the test CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().context("failed to generate the test leaf key")?;
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .context("failed to build the test leaf parameters")?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .context("failed to sign the test leaf certificate")?;

        Ok(Self {
            ca_pem: ca_cert.pem(),
            leaf_cert_pem: leaf_cert.pem(),
            leaf_cert_der: leaf_cert.der().to_vec(),
            leaf_key_der: leaf_key.serialize_der(),
        })
    }

    /// TLS server settings serving the leaf certificate with ALPN `h2` and `http/1.1`.
    ///
    /// # Errors
    /// When rustls refuses the key or the protocol versions.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        install_default_crypto_provider();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("failed to choose TLS versions for the mock server")?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.leaf_cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone())),
            )
            .context("failed to load the test certificate into rustls")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Installs aws-lc-rs as the process's default rustls and jsonwebtoken crypto providers, unless
/// some other code installed one already (that is not an error: any provider will do).
pub fn install_default_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
