//! Throwaway certificate authorities and the TLS server settings the HTTPS mocks use: one CA
//! for the mocks' server certificates, and client CAs for providers that authenticate with a
//! TLS client certificate (APNs certificate-based authentication).

use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256, RsaKeySize,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

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
        self.server_config_with(WebPkiClientVerifier::no_client_auth())
    }

    /// Like [`TestCa::server_config`], but the server asks every client for a certificate and
    /// verifies one that is presented against `client_ca`. A client that presents none still
    /// connects (so that the mock can answer it as the real service would); a client whose
    /// certificate `client_ca` did not sign fails the handshake.
    ///
    /// # Errors
    /// When rustls refuses the key, the protocol versions or the client CA.
    pub fn server_config_with_client_auth(
        &self,
        client_ca: &TestClientCa,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.server_config_with(client_ca.verifier()?)
    }

    fn server_config_with(
        &self,
        client_verifier: Arc<dyn ClientCertVerifier>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        install_default_crypto_provider();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("failed to choose TLS versions for the mock server")?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                vec![CertificateDer::from(self.leaf_cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone())),
            )
            .context("failed to load the test certificate into rustls")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A throwaway CA for TLS client certificates, in the role Apple's "Worldwide Developer
/// Relations" CA plays for push certificates: a mock trusts it, and it issues the certificates
/// the client under test presents.
#[derive(Clone)]
pub struct TestClientCa {
    /// The CA certificate in PEM.
    pub ca_pem: String,
    ca_cert_der: Vec<u8>,
    issuer: Arc<Issuer<'static, KeyPair>>,
}

impl std::fmt::Debug for TestClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClientCa")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// A client certificate and its private key, both in PEM, as a provider's configuration takes
/// them (Apple's push certificate exported from Keychain Access and converted to PEM).
#[derive(Clone)]
pub struct ClientIdentity {
    /// The client certificate in PEM.
    pub cert_pem: String,
    /// The certificate's private key in PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl TestClientCa {
    /// Makes a fresh client CA.
    ///
    /// # Errors
    /// When rcgen fails to generate the key or sign the certificate.
    pub fn new() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate().context("failed to generate the test client CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .context("failed to build the test client CA parameters")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own, so that a certificate from another client CA is refused as one
        // from an unknown issuer rather than as a bad signature by this one.
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!(
                "Clarion testkit throwaway client CA {}",
                uuid::Uuid::new_v4()
            ),
        );
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("failed to self-sign the test client CA")?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_cert_der: ca_cert.der().to_vec(),
            issuer: Arc::new(Issuer::new(ca_params, ca_key)),
        })
    }

    /// Issues a TLS client certificate whose subject CN is `common_name`, with a fresh
    /// RSA 2048 key as Apple's push certificates have.
    ///
    /// # Errors
    /// When rcgen fails to generate the key or sign the certificate.
    pub fn issue(&self, common_name: &str) -> anyhow::Result<ClientIdentity> {
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
            .context("failed to generate an RSA key for a test client certificate")?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .context("failed to build the test client certificate parameters")?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("failed to sign a test client certificate")?;
        Ok(ClientIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a push certificate for the app `topic` (its bundle id) as Apple names them:
    /// subject CN `Apple Push Services: <topic>`.
    ///
    /// # Errors
    /// When rcgen fails to generate the key or sign the certificate.
    pub fn issue_push_certificate(&self, topic: &str) -> anyhow::Result<ClientIdentity> {
        self.issue(&format!("{PUSH_CERTIFICATE_CN_PREFIX}{topic}"))
    }

    /// A rustls verifier that requests a client certificate, accepts a client that sends
    /// none, and fails the handshake of one whose certificate this CA did not sign.
    fn verifier(&self) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
        install_default_crypto_provider();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca_cert_der.clone()))
            .context("failed to add the test client CA to a root store")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .context("failed to build the client certificate verifier")
    }
}

/// How Apple's production push certificates name their subject: this prefix, then the topic.
pub const PUSH_CERTIFICATE_CN_PREFIX: &str = "Apple Push Services: ";

/// The subject common name (OID 2.5.4.3) of a DER certificate, when it has one in a string
/// type. A small DER walk, because the testkit has no X.509 parser and needs only this.
pub(crate) fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let (certificate, _) = der_element(cert_der, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    // version [0] EXPLICIT, optional.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for tag in [0x02, 0x30, 0x30, 0x30] {
        tbs = der_element(tbs, tag)?.1;
    }
    let (mut names, _) = der_element(tbs, 0x30)?;
    while !names.is_empty() {
        let (mut set, rest) = der_element(names, 0x31)?;
        names = rest;
        while !set.is_empty() {
            let (attribute, rest) = der_element(set, 0x30)?;
            set = rest;
            let (oid, value) = der_element(attribute, 0x06)?;
            if oid != COMMON_NAME {
                continue;
            }
            let (&tag, _) = value.split_first()?;
            // UTF8String, PrintableString, IA5String or TeletexString.
            if !matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
                return None;
            }
            let (text, _) = der_element(value, tag)?;
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}

/// Splits `input` into the contents of its first DER element, which must have tag `tag`, and
/// what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Installs aws-lc-rs as the process's default rustls and jsonwebtoken crypto providers, unless
/// some other code installed one already (that is not an error: any provider will do).
pub fn install_default_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_common_name_of_an_issued_certificate_is_read_back() {
        let ca = TestClientCa::new().unwrap();
        let identity = ca.issue_push_certificate("com.example.shop").unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(identity.cert_pem.as_bytes())
            .map(|c: CertificateDer<'static>| c.to_vec())
            .unwrap();

        let cn = subject_common_name(&der);

        assert_eq!(cn.as_deref(), Some("Apple Push Services: com.example.shop"));
        assert!(identity.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn a_common_name_is_read_from_a_whole_certificate_only() {
        let ca = TestCa::new().unwrap();
        let der = ca.leaf_cert_der;

        assert_eq!(subject_common_name(&der).as_deref(), Some("localhost"));
        assert_eq!(subject_common_name(&der[..40]), None);
    }
}
