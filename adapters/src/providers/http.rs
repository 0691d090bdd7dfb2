//! What every provider's HTTP client shares: trusted roots, timeouts, the mapping of transport
//! failures to outcomes, and `Retry-After`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clarion_domain::message::SendOutcome;
use clarion_domain::text::lossy;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::{CheckItem, TlsConfig};

/// The request timeout of a provider whose configuration sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The timeout a provider section asks for, or the default.
#[must_use]
pub fn timeout(timeout_secs: Option<u64>) -> Duration {
    timeout_secs.map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// The extra trusted root certificates of `tls.extra_ca_certs`, for reqwest (OneSignal, the
/// FCM token endpoint) and for the HTTP/2 pool (DER).
#[derive(Debug, Clone, Default)]
pub struct Roots {
    pub reqwest: Vec<reqwest::Certificate>,
    pub der: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// Reads the extra trusted root certificates named by `tls.extra_ca_certs`.
///
/// # Errors
/// When a file cannot be read or holds no PEM certificate; the error names the file.
pub fn extra_roots(tls: &TlsConfig) -> anyhow::Result<Roots> {
    let mut roots = Roots::default();
    for path in &tls.extra_ca_certs {
        roots.reqwest.extend(read_roots(path)?);
        let pem = std::fs::read(path).with_context(|| {
            format!("failed to read tls.extra_ca_certs file {}", path.display())
        })?;
        roots.der.extend(
            crate::providers::pool::connect::pem_certificates(&pem)
                .with_context(|| format!("tls.extra_ca_certs file {}", path.display()))?,
        );
    }
    Ok(roots)
}

/// Reads one PEM bundle of trusted root certificates.
///
/// # Errors
/// When the file cannot be read or holds no PEM certificate; the error names the file.
pub fn read_roots(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("failed to read tls.extra_ca_certs file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
        format!(
            "tls.extra_ca_certs file {} is not a PEM certificate bundle",
            path.display()
        )
    })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "tls.extra_ca_certs file {} holds no certificate",
        path.display()
    );
    Ok(certs)
}

/// Reads each file of `tls.extra_ca_certs`, for `clarion config check`: one line a file.
#[must_use]
pub fn check_extra_roots(tls: &TlsConfig) -> Vec<CheckItem> {
    let check = |(index, path): (usize, &std::path::PathBuf)| {
        let subject = format!("tls.extra_ca_certs[{index}]");
        match read_roots(path) {
            Ok(certs) => CheckItem::ok(
                subject,
                format!("{} holds {} certificate(s)", path.display(), certs.len()),
            ),
            Err(error) => CheckItem::failed(subject, format!("{error:#}")),
        }
    };
    tls.extra_ca_certs.iter().enumerate().map(check).collect()
}

/// A client builder with the common settings: the extra roots on top of the platform's, the
/// timeout, and no redirects (a push endpoint that redirects is misbehaving). Certificate
/// verification is always on; no setting turns it off.
pub fn client_builder(roots: &[reqwest::Certificate], timeout: Duration) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("clarion/", env!("CARGO_PKG_VERSION")));
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
}

/// The outcome of a request that got no HTTP response: timeouts and connection failures are
/// transient; anything else (a malformed request) is permanent.
#[must_use]
pub fn transport_failure(provider: &str, err: &reqwest::Error) -> SendOutcome {
    let (code, what) = if err.is_timeout() {
        ("timeout", "timed out")
    } else if err.is_connect() {
        ("connection", "could not connect")
    } else if err.is_request() || err.is_body() || err.is_decode() {
        ("transport", "failed in transit")
    } else {
        return SendOutcome::Permanent {
            code: "request".to_owned(),
            reason: format!(
                "{provider} request could not be built: {}",
                error_chain(err)
            ),
            details: None,
        };
    };
    SendOutcome::Transient {
        code: code.to_owned(),
        reason: format!("{provider} request {what}: {}", error_chain(err)),
        retry_after: None,
    }
}

/// The error and its sources on one line, without the URL (which may hold a device token).
#[must_use]
pub fn error_chain(err: &reqwest::Error) -> String {
    let mut text = match err.url() {
        Some(url) => err.to_string().replace(url.as_str(), "<endpoint>"),
        None => err.to_string(),
    };
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The most of a provider's response body Clarion reads; a longer body is cut, so a broken or
/// hostile endpoint cannot make it buffer without bound.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Reads a response body up to [`BODY_LIMIT`] bytes.
///
/// # Errors
/// The transport error when the body cannot be read.
pub async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() >= BODY_LIMIT {
            body.truncate(BODY_LIMIT);
            break;
        }
    }
    Ok(body)
}

/// The start of a body as `: text` for an error reason, or nothing when it is empty. Any
/// server can answer anything (a Web Push endpoint is chosen by a client): the text is made
/// storable, so that the reason can be recorded on every store.
#[must_use]
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = lossy(text.trim()).chars().take(200).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// The `Retry-After` header as a wait: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
#[must_use]
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 01 Mar 2026 10:00:00 GMT").unwrap();
        assert_eq!(
            retry_after(&headers("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(&headers("Sun, 01 Mar 2026 10:05:00 GMT"), now),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            retry_after(&headers("Sun, 01 Mar 2026 09:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_body_snippet_holds_no_nul_character_whatever_the_server_answered() {
        assert_eq!(snippet(b"  bad\0request \n"), ": bad\u{fffd}request");
        assert_eq!(snippet(b"\0"), ": \u{fffd}");
        assert_eq!(snippet(b"   "), "");
    }

    #[test]
    fn an_unset_timeout_falls_back_to_the_default() {
        assert_eq!(timeout(None), DEFAULT_TIMEOUT);
        assert_eq!(timeout(Some(3)), Duration::from_secs(3));
    }
}
