//! How a pool reaches its origin: the TLS settings (the platform's roots plus
//! `tls.extra_ca_certs`, ALPN `h2` only, an optional client identity), name resolution with
//! the optional public-address guard, and the TCP connection to exactly the addresses
//! resolved.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use clarion_domain::token::is_public_ip;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// A client certificate and its private key, for APNs certificate authentication.
pub struct ClientIdentity {
    certificates: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

// The key is a secret.
impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            certificates: self.certificates.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientIdentity {
    /// Reads a PEM certificate chain and a PEM private key, and checks that the key can sign.
    ///
    /// # Errors
    /// A short reason that quotes neither input: no certificate, no key, or a key of a kind
    /// TLS cannot sign with.
    pub fn from_pem(certificate: &str, key: &str) -> Result<Self, &'static str> {
        let certificates = CertificateDer::pem_slice_iter(certificate.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "the certificate is not valid PEM")?;
        if certificates.is_empty() {
            return Err("no PEM certificate found");
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|_| "no usable PEM private key found")?;
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
            .map_err(|_| "the private key is not of a kind TLS can sign with")?;
        Ok(Self { certificates, key })
    }
}

/// Reads the certificates of one PEM bundle.
///
/// # Errors
/// When the text is not a PEM bundle.
pub fn pem_certificates(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("not a PEM certificate bundle")
}

/// The TLS settings of provider connections: the platform's trusted roots (as reqwest uses
/// them, through rustls-platform-verifier) plus `extra_roots`, HTTP/2 only in ALPN, and the
/// client identity when there is one. Certificate verification is always on: the verifier is
/// the platform's, and no setting replaces it.
///
/// # Errors
/// When the platform's roots cannot be loaded, or the identity is refused by rustls.
pub fn tls_config(
    extra_roots: &[CertificateDer<'static>],
    identity: Option<&ClientIdentity>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra_roots.iter().cloned(),
            Arc::clone(&provider),
        )
    }
    .context(
        "failed to load the trusted root certificates (the platform's and tls.extra_ca_certs)",
    )?;
    // `dangerous()` is only rustls's name for choosing the verifier: it is the platform's,
    // which verifies every certificate.
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("failed to set up TLS")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.certificates.clone(), identity.key.clone_key())
            .context("the client certificate and its key do not fit together")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Where a pool connects: scheme, host and port of one origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    tls: bool,
    host: url::Host<String>,
    port: u16,
    /// `host[:port]` as the `:authority` of requests.
    authority: String,
}

impl Origin {
    /// The origin of an `https` or `http` URL.
    ///
    /// # Errors
    /// When the URL has another scheme or no host; the reason quotes neither.
    pub fn of(url: &url::Url) -> Result<Self, &'static str> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err("not an http or https URL"),
        };
        let host = url.host().ok_or("the URL has no host")?.to_owned();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let host_text = url.host_str().ok_or("the URL has no host")?;
        let authority = match url.port() {
            Some(port) => format!("{host_text}:{port}"),
            None => host_text.to_owned(),
        };
        Ok(Self {
            tls,
            host,
            port,
            authority,
        })
    }

    /// `https` or `http`.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `host[:port]`, the port only when it is not the scheme's default.
    #[must_use]
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The host as it is named, for messages.
    #[must_use]
    pub fn host(&self) -> String {
        self.host.to_string()
    }

    pub(super) fn host_ref(&self) -> &url::Host<String> {
        &self.host
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn is_tls(&self) -> bool {
        self.tls
    }

    pub(super) fn server_name(&self) -> Result<ServerName<'static>, &'static str> {
        match &self.host {
            url::Host::Domain(name) => {
                ServerName::try_from(name.clone()).map_err(|_| "the host is not a valid TLS name")
            }
            url::Host::Ipv4(ip) => Ok(ServerName::IpAddress(IpAddr::V4(*ip).into())),
            url::Host::Ipv6(ip) => Ok(ServerName::IpAddress(IpAddr::V6(*ip).into())),
        }
    }
}

/// Which addresses a pool may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressGuard {
    /// Any address (provider hosts from the configuration).
    Any,
    /// Public addresses only: a Web Push endpoint is chosen by a client, which must not make
    /// Clarion reach its private network (unless `webpush.allow_private_endpoints`).
    PublicOnly,
}

/// The guard's refusal of a host with a non-public address.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{host} resolves to the non-public address {ip}")]
pub struct NotPublic {
    /// The host as named in the URL.
    pub host: String,
    /// The first non-public address found.
    pub ip: IpAddr,
}

/// Why no connection could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The guard refused the host.
    #[error(transparent)]
    NotPublic(NotPublic),
    /// Resolution, TCP, TLS or the HTTP/2 setup failed.
    #[error("{0}")]
    Failed(String),
    /// The provider closed the new connection cleanly (a `GOAWAY` without an error) before
    /// it was ready: it is going away, and another connection may well succeed.
    #[error("the provider closed the new connection before it was ready")]
    WentAway,
}

/// The addresses of `host`, all public when the guard says so; an IP literal is its own
/// address. The pool connects to exactly these addresses, so that a name whose answer changes
/// between the check and the connection (DNS rebinding) cannot slip through.
///
/// # Errors
/// When the name does not resolve, or the guard refuses one of its addresses.
pub async fn resolve(
    host: &url::Host<String>,
    port: u16,
    guard: AddressGuard,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let addrs: Vec<SocketAddr> = match host {
        url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
        url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
        url::Host::Domain(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|error| ConnectError::Failed(format!("could not resolve {name}: {error}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(ConnectError::Failed(format!("{host} has no address")));
    }
    if guard == AddressGuard::PublicOnly
        && let Some(addr) = addrs.iter().find(|addr| !is_public_ip(addr.ip()))
    {
        return Err(ConnectError::NotPublic(NotPublic {
            host: host.to_string(),
            ip: addr.ip(),
        }));
    }
    Ok(addrs)
}

/// A TCP connection to the first of `addrs` that answers.
pub(super) async fn tcp(addrs: &[SocketAddr]) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Small requests and answers: send each frame at once.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(ConnectError::Failed(match last {
        Some(error) => format!("could not connect: {error}"),
        None => "no address to connect to".to_owned(),
    }))
}
