//! The Web Push provider: RFC 8030 push requests with RFC 8291 (`aes128gcm`) encryption and
//! RFC 8292 VAPID authorization. Each push-service origin gets its own HTTP/2 connection pool
//! (`webpush.connections` each, `webpush.max_in_flight` requests over all of them, at most
//! [`MAX_ORIGINS`] origins, the least recently used closed first; ADR 4), which resolves the
//! host itself and refuses non-public addresses unless `webpush.allow_private_endpoints`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use clarion_domain::ids::AppId;
use clarion_domain::message::SendOutcome;
use clarion_domain::payload::{Payload, WebPushRequest};
use clarion_domain::ports::PushProvider;
use clarion_domain::token::is_public_ip;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::SecretKey;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use reqwest::StatusCode;
use reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION,
};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::{Config, WebPushConfig};
use crate::providers::http;
use crate::providers::pool::{self, AddressGuard, Origin, Pool, PoolSettings};

const PROVIDER: &str = "Web Push";

/// How long a VAPID JWT is valid; RFC 8292 §2 allows at most 24 hours.
const JWT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A cached JWT is replaced once it has less than this left, so that a push service whose
/// clock runs ahead never sees an expired one.
const JWT_RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// The most origins whose JWT one application keeps; push services are few, so more means
/// many custom endpoints and the stale entries are dropped.
const JWT_CACHE_LIMIT: usize = 256;

/// The most push-service origins whose connections one application keeps open; beyond, the
/// least recently used origin's pool is closed.
pub const MAX_ORIGINS: usize = 256;

/// An origin's pool unused for this long is closed.
const ORIGIN_IDLE: Duration = Duration::from_secs(300);

/// An application server's VAPID key pair and contact, ready to sign.
pub struct VapidCredentials {
    key: EncodingKey,
    /// The uncompressed public point in base64url: the `k` parameter.
    public_key: String,
    subject: String,
}

impl fmt::Debug for VapidCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidCredentials")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl VapidCredentials {
    /// The base64url uncompressed public key, as browsers take it for `applicationServerKey`.
    #[must_use]
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `sub` claim.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

#[derive(Serialize)]
struct VapidClaims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

/// Loads and checks an application's VAPID key and subject.
///
/// The key is the raw 32-byte private scalar in base64url (what `web-push
/// generate-vapid-keys` prints) or a PEM: SEC1 (`EC PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`).
/// The subject must be a `mailto:` or `https:` URI (RFC 8292 §2.1).
///
/// # Errors
/// When the key cannot be read or is not a P-256 private key, or the subject is not a
/// `mailto:` or `https:` URI. The error names the application and the setting, never the key.
pub fn load_credentials(app: &str, cfg: &WebPushConfig) -> anyhow::Result<VapidCredentials> {
    let setting = format!("apps.{app}.webpush.vapid_private_key");
    let text = cfg
        .vapid_private_key
        .expose()
        .with_context(|| format!("failed to read {setting}"))?;
    let secret = parse_private_key(text.trim()).map_err(|expected| {
        anyhow::anyhow!(
            "{setting} ({}) is not a P-256 private key: expected {expected}",
            cfg.vapid_private_key.origin()
        )
    })?;
    check_subject(&cfg.subject).map_err(|problem| {
        anyhow::anyhow!(
            "apps.{app}.webpush.subject {problem}; got {:?}",
            cfg.subject
        )
    })?;
    let der = secret
        .to_pkcs8_der()
        .map_err(|_| anyhow::anyhow!("{setting} cannot be encoded as PKCS#8"))?;
    let public_key = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
    Ok(VapidCredentials {
        key: EncodingKey::from_ec_der(der.as_bytes()),
        public_key,
        subject: cfg.subject.clone(),
    })
}

/// The private key in one of the accepted forms; the error says what was expected and never
/// quotes the input.
fn parse_private_key(text: &str) -> Result<SecretKey, &'static str> {
    if text.starts_with("-----BEGIN EC PRIVATE KEY-----") {
        return SecretKey::from_sec1_pem(text).map_err(|_| "a valid SEC1 \"EC PRIVATE KEY\" PEM");
    }
    if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        return SecretKey::from_pkcs8_pem(text)
            .map_err(|_| "a valid PKCS#8 \"PRIVATE KEY\" PEM of a P-256 key");
    }
    if text.starts_with("-----BEGIN") {
        return Err("an \"EC PRIVATE KEY\" or \"PRIVATE KEY\" PEM, not another PEM type");
    }
    const RAW: &str = "the 32-byte private key in base64url, or an EC PRIVATE KEY or PKCS#8 PEM";
    let bytes = if text.ends_with('=') {
        URL_SAFE.decode(text)
    } else {
        URL_SAFE_NO_PAD.decode(text)
    }
    .map_err(|_| RAW)?;
    if bytes.len() != 32 {
        return Err(RAW);
    }
    SecretKey::from_slice(&bytes).map_err(|_| "a scalar within the P-256 group order")
}

fn check_subject(subject: &str) -> Result<(), &'static str> {
    if let Some(address) = subject.strip_prefix("mailto:") {
        if address.contains('@') {
            return Ok(());
        }
        return Err("must hold an e-mail address after mailto:");
    }
    if subject.starts_with("https:") {
        return match url::Url::parse(subject) {
            Ok(url) if url.host().is_some() => Ok(()),
            _ => Err("must be a valid https: URL"),
        };
    }
    Err("must be a mailto: or https: URI (RFC 8292)")
}

/// Sends to Web Push for every application that configures it.
#[derive(Debug)]
pub struct WebPushProvider {
    apps: HashMap<AppId, AppSender>,
}

#[derive(Debug)]
struct AppSender {
    credentials: VapidCredentials,
    allow_private: bool,
    /// The settings of each origin's pool.
    settings: PoolSettings,
    /// `webpush.max_in_flight`, shared by the application's pools.
    in_flight: Arc<Semaphore>,
    /// The pool of each push-service origin.
    pools: Mutex<Origins>,
    /// The signed JWT and its expiry per endpoint origin.
    tokens: Mutex<HashMap<String, CachedJwt>>,
}

/// The pools of an application's push-service origins, at most [`MAX_ORIGINS`].
#[derive(Debug, Default)]
struct Origins {
    pools: HashMap<Origin, (Arc<Pool>, Instant)>,
    /// When pools idle for [`ORIGIN_IDLE`] were last closed.
    swept: Option<Instant>,
}

impl Origins {
    /// The pool of `origin`, made when there is none; marks it used.
    fn get(&mut self, origin: &Origin, make: impl FnOnce() -> Pool) -> Arc<Pool> {
        let now = Instant::now();
        if self
            .swept
            .is_none_or(|at| now.duration_since(at) > ORIGIN_IDLE / 10)
        {
            // A pool is dropped here, and its connections closed, once no send holds it.
            self.pools
                .retain(|_, (_, used)| now.duration_since(*used) < ORIGIN_IDLE);
            self.swept = Some(now);
        }
        if let Some((pool, used)) = self.pools.get_mut(origin) {
            *used = now;
            return Arc::clone(pool);
        }
        if self.pools.len() >= MAX_ORIGINS
            && let Some(oldest) = self
                .pools
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(origin, _)| origin.clone())
        {
            self.pools.remove(&oldest);
        }
        let pool = Arc::new(make());
        self.pools.insert(origin.clone(), (Arc::clone(&pool), now));
        pool
    }
}

#[derive(Clone)]
struct CachedJwt {
    token: String,
    expires_at: SystemTime,
}

// A signed JWT authorizes pushes for hours: keep it out of debug output.
impl fmt::Debug for CachedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedJwt")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl WebPushProvider {
    /// The provider for the applications that configure Web Push, or `None` when none does.
    ///
    /// # Errors
    /// When a credential cannot be loaded; the error names the application and setting.
    pub fn from_config(config: &Config, roots: &http::Roots) -> anyhow::Result<Option<Self>> {
        let mut apps = HashMap::new();
        for (id, app) in &config.apps {
            let Some(cfg) = &app.webpush else {
                continue;
            };
            let app_id =
                AppId::parse(id).with_context(|| format!("invalid application id {id:?}"))?;
            let credentials = load_credentials(id, cfg)?;
            let (connections, max_in_flight) = pool::limits(
                &format!("apps.{id}.webpush"),
                pool::DEFAULT_CONNECTIONS,
                cfg.connections,
                cfg.max_in_flight,
            )?;
            let timeout = http::timeout(cfg.timeout_secs);
            let tls = pool::connect::tls_config(&roots.der, None).with_context(|| {
                format!("failed to set up TLS for the Web Push client of application {id}")
            })?;
            let settings = PoolSettings {
                connections,
                connect_timeout: timeout,
                request_timeout: timeout,
                keep_alive: pool::KEEP_ALIVE_INTERVAL,
                tls,
                // No proxy either: it would resolve the endpoint itself, past the check.
                guard: if cfg.allow_private_endpoints {
                    AddressGuard::Any
                } else {
                    AddressGuard::PublicOnly
                },
            };
            apps.insert(
                app_id,
                AppSender {
                    credentials,
                    allow_private: cfg.allow_private_endpoints,
                    settings,
                    in_flight: Arc::new(Semaphore::new(max_in_flight)),
                    pools: Mutex::new(Origins::default()),
                    tokens: Mutex::new(HashMap::new()),
                },
            );
        }
        Ok((!apps.is_empty()).then_some(Self { apps }))
    }
}

#[async_trait]
impl PushProvider for WebPushProvider {
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome {
        let Some(sender) = self.apps.get(app) else {
            return SendOutcome::Misconfigured {
                code: "webpush_not_configured".to_owned(),
                reason: format!("application {app} has no [apps.{app}.webpush] section"),
            };
        };
        let Payload::Webpush(request) = payload else {
            return SendOutcome::Permanent {
                code: "wrong_payload".to_owned(),
                reason: "the Web Push provider was handed another provider's payload".to_owned(),
                details: None,
            };
        };
        let outcome = sender.send(app, request).await;
        tracing::debug!(%app, ?outcome, "Web Push send");
        outcome
    }
}

impl AppSender {
    async fn send(&self, app: &AppId, request: &WebPushRequest) -> SendOutcome {
        let endpoint = match url::Url::parse(request.subscription.endpoint()) {
            Ok(url) => url,
            Err(error) => {
                return permanent(
                    "invalid_endpoint",
                    format!("the subscription endpoint is not a URL: {error}"),
                );
            }
        };
        let host = endpoint.host_str().unwrap_or_default().to_owned();
        if !self.allow_private
            && let Some(ip) = literal_ip(&endpoint)
            && !is_public_ip(ip)
        {
            return not_public(&host, ip);
        }
        let body = match encrypt(request) {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let origin = endpoint.origin().ascii_serialization();
        let authorization = match self.authorization(&origin) {
            Ok(value) => value,
            Err(reason) => {
                return SendOutcome::Misconfigured {
                    code: "vapid_signing".to_owned(),
                    reason: format!("application {app}: {reason}"),
                };
            }
        };
        let pool_origin = match Origin::of(&endpoint) {
            Ok(origin) => origin,
            Err(why) => {
                return permanent(
                    "invalid_endpoint",
                    format!("the subscription endpoint is not usable: {why}"),
                );
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(TTL, HeaderValue::from(request.ttl));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(URGENCY, HeaderValue::from_static(request.urgency.as_str()));
        headers.insert(AUTHORIZATION, authorization);
        if let Some(topic) = &request.topic {
            let Ok(topic) = HeaderValue::from_str(topic) else {
                return permanent(
                    "request",
                    "the Web Push topic is not a valid header value".to_owned(),
                );
            };
            headers.insert(TOPIC, topic);
        }
        let path_and_query = match endpoint.query() {
            Some(query) => format!("{}?{query}", endpoint.path()),
            None => endpoint.path().to_owned(),
        };
        let pool = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&pool_origin, || {
                Pool::new(
                    pool_origin.clone(),
                    self.settings.clone(),
                    Arc::clone(&self.in_flight),
                )
            });
        let sent = pool
            .send(&pool::Request {
                method: ::http::Method::POST,
                path_and_query,
                headers,
                body: bytes::Bytes::from(body),
            })
            .await;
        match sent {
            Ok(response) => outcome_of(app, &host, response),
            Err(error) => match error.not_public() {
                Some(refused) => not_public(&refused.host, refused.ip),
                None => error.outcome(PROVIDER),
            },
        }
    }

    /// The `Authorization` header for an endpoint origin, from the cache while it is fresh.
    fn authorization(&self, origin: &str) -> Result<HeaderValue, String> {
        let now = SystemTime::now();
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = |jwt: &CachedJwt| {
            jwt.expires_at
                .duration_since(now)
                .is_ok_and(|left| left > JWT_RENEW_BEFORE)
        };
        let token = match tokens.get(origin).filter(|jwt| fresh(jwt)) {
            Some(jwt) => jwt.token.clone(),
            None => {
                let jwt = self.sign(origin, now)?;
                if tokens.len() >= JWT_CACHE_LIMIT {
                    tokens.retain(|_, jwt| fresh(jwt));
                }
                if tokens.len() >= JWT_CACHE_LIMIT {
                    tokens.clear();
                }
                tokens.insert(origin.to_owned(), jwt.clone());
                jwt.token
            }
        };
        let mut value = HeaderValue::from_str(&format!(
            "vapid t={token}, k={}",
            self.credentials.public_key
        ))
        .map_err(|_| "the VAPID authorization is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn sign(&self, origin: &str, now: SystemTime) -> Result<CachedJwt, String> {
        let expires_at = now + JWT_LIFETIME;
        let exp = expires_at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_owned())?
            .as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".to_owned());
        let claims = VapidClaims {
            aud: origin,
            exp,
            sub: &self.credentials.subject,
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.credentials.key)
            .map_err(|error| format!("failed to sign the VAPID JWT: {error}"))?;
        Ok(CachedJwt { token, expires_at })
    }
}

/// The endpoint's host when it is an IP literal (which no resolver sees).
fn literal_ip(endpoint: &url::Url) -> Option<IpAddr> {
    match endpoint.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Encrypts the plaintext for the subscription as one RFC 8291 `aes128gcm` record.
fn encrypt(request: &WebPushRequest) -> Result<Vec<u8>, SendOutcome> {
    let subscription = &request.subscription;
    let invalid = |what: &str| {
        permanent(
            "invalid_subscription",
            format!("the subscription's {what} is not usable"),
        )
    };
    let p256dh = decode_base64url(subscription.p256dh()).ok_or_else(|| invalid("p256dh"))?;
    let auth: [u8; 16] = decode_base64url(subscription.auth())
        .and_then(|auth| auth.try_into().ok())
        .ok_or_else(|| invalid("auth secret"))?;
    crate::providers::webpush_ece::encrypt(&request.plaintext, &p256dh, &auth).map_err(|error| {
        match error {
            crate::providers::webpush_ece::EncryptError::PublicKey => {
                invalid("p256dh (not a P-256 point)")
            }
            error => permanent(
                "encryption",
                format!("the payload could not be encrypted: {error}"),
            ),
        }
    })
}

fn decode_base64url(raw: &str) -> Option<Vec<u8>> {
    if raw.ends_with('=') {
        URL_SAFE.decode(raw).ok()
    } else {
        URL_SAFE_NO_PAD.decode(raw).ok()
    }
}

const TTL: HeaderName = HeaderName::from_static("ttl");
const URGENCY: HeaderName = HeaderName::from_static("urgency");
const TOPIC: HeaderName = HeaderName::from_static("topic");

fn outcome_of(app: &AppId, host: &str, response: pool::Response) -> SendOutcome {
    let status = response.status;
    if status.is_success() {
        let provider_id = response
            .headers
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        return SendOutcome::Accepted {
            provider_id,
            details: None,
        };
    }
    let retry_after = http::retry_after(&response.headers, SystemTime::now());
    let said = http::snippet(&response.body);
    let answered = format!("the push service at {host} answered {status}{said}");
    match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => SendOutcome::DeadToken {
            code: if status == StatusCode::GONE {
                "gone"
            } else {
                "not_found"
            }
            .to_owned(),
            reason: format!("{answered}: the subscription has expired or was unsubscribed"),
        },
        StatusCode::PAYLOAD_TOO_LARGE => permanent(
            "payload_too_large",
            format!("{answered}: the encrypted payload is too large"),
        ),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => SendOutcome::Misconfigured {
            code: "vapid_rejected".to_owned(),
            reason: format!(
                "{answered}: it rejected the VAPID authorization; check \
                 apps.{app}.webpush.vapid_private_key and subject, and that the subscription \
                 was made with this application's public key"
            ),
        },
        StatusCode::TOO_MANY_REQUESTS => SendOutcome::Transient {
            code: "rate_limited".to_owned(),
            reason: answered,
            retry_after,
        },
        _ if status.is_server_error() => SendOutcome::Transient {
            code: "server_error".to_owned(),
            reason: answered,
            retry_after,
        },
        StatusCode::BAD_REQUEST => permanent("bad_request", answered),
        _ => permanent(&format!("http_{}", status.as_u16()), answered),
    }
}

fn permanent(code: &str, reason: String) -> SendOutcome {
    SendOutcome::Permanent {
        code: code.to_owned(),
        reason,
        details: None,
    }
}

fn not_public(host: &str, ip: IpAddr) -> SendOutcome {
    permanent(
        "endpoint_not_public",
        format!(
            "the Web Push endpoint host {host} is the non-public address {ip}; refused \
             (webpush.allow_private_endpoints is off)"
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config(key: &str, subject: &str) -> WebPushConfig {
        WebPushConfig {
            vapid_private_key: Secret::Inline(key.to_owned()),
            subject: subject.to_owned(),
            allow_private_endpoints: false,
            timeout_secs: None,
            connections: None,
            max_in_flight: None,
        }
    }

    // RFC 8291 Appendix A's application server key.
    const RAW_KEY: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const PUBLIC_KEY: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";

    #[test]
    fn a_raw_base64url_key_loads_and_gives_its_public_key() {
        let credentials =
            load_credentials("shop", &config(RAW_KEY, "mailto:ops@example.com")).unwrap();

        assert_eq!(credentials.public_key(), PUBLIC_KEY);
    }

    #[test]
    fn sec1_and_pkcs8_pems_load_to_the_same_public_key() {
        use p256::pkcs8::LineEnding;
        let secret = SecretKey::from_slice(&URL_SAFE_NO_PAD.decode(RAW_KEY).unwrap()).unwrap();
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).unwrap();

        for pem in [sec1.as_str(), pkcs8.as_str()] {
            let credentials =
                load_credentials("shop", &config(pem, "https://example.com/contact")).unwrap();
            assert_eq!(credentials.public_key(), PUBLIC_KEY);
        }
    }

    #[test]
    fn a_malformed_key_is_refused_naming_the_setting_but_not_the_key() {
        for bad in ["not-a-key", "c2hvcnQ", "-----BEGIN CERTIFICATE-----\nabc\n"] {
            let error = load_credentials("shop", &config(bad, "mailto:ops@example.com"))
                .unwrap_err()
                .to_string();

            assert!(
                error.contains("apps.shop.webpush.vapid_private_key"),
                "{error}"
            );
            assert!(!error.contains(bad.trim()), "{error}");
        }
    }

    #[test]
    fn a_subject_that_is_neither_mailto_nor_https_is_refused() {
        for bad in [
            "ops@example.com",
            "http://example.com",
            "mailto:",
            "https://",
        ] {
            let error = load_credentials("shop", &config(RAW_KEY, bad))
                .unwrap_err()
                .to_string();

            assert!(
                error.contains("apps.shop.webpush.subject"),
                "{bad}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn the_address_guard_refuses_a_name_that_resolves_to_loopback() {
        let host = url::Host::Domain("localhost".to_owned());

        let error = pool::connect::resolve(&host, 443, AddressGuard::PublicOnly)
            .await
            .unwrap_err();

        let pool::ConnectError::NotPublic(refused) = error else {
            panic!("a NotPublic error, got {error:?}");
        };
        assert_eq!(refused.host, "localhost");
        assert!(!is_public_ip(refused.ip));
    }

    #[test]
    fn ip_literal_hosts_are_found_for_the_direct_check() {
        let v4 = url::Url::parse("https://127.0.0.1:8443/push/1").unwrap();
        let v6 = url::Url::parse("https://[::1]/push/1").unwrap();
        let name = url::Url::parse("https://push.example.com/push/1").unwrap();

        assert_eq!(literal_ip(&v4), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(literal_ip(&v6), Some("::1".parse().unwrap()));
        assert_eq!(literal_ip(&name), None);
    }

    #[test]
    fn the_least_recently_used_origin_is_closed_beyond_the_limit() {
        let settings = PoolSettings {
            connections: 1,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            keep_alive: pool::KEEP_ALIVE_INTERVAL,
            tls: pool::connect::tls_config(&[], None).unwrap(),
            guard: AddressGuard::PublicOnly,
        };
        let in_flight = Arc::new(Semaphore::new(1));
        let origin = |n: usize| {
            Origin::of(&url::Url::parse(&format!("https://push{n}.example.com/")).unwrap()).unwrap()
        };
        let mut origins = Origins::default();
        let make = |n: usize| {
            let (settings, in_flight) = (settings.clone(), Arc::clone(&in_flight));
            move || Pool::new(origin(n), settings, in_flight)
        };

        let first = origins.get(&origin(0), make(0));
        for n in 1..MAX_ORIGINS {
            origins.get(&origin(n), make(n));
        }
        let again = origins.get(&origin(0), make(0));
        origins.get(&origin(MAX_ORIGINS), make(MAX_ORIGINS));

        assert!(
            Arc::ptr_eq(&first, &again),
            "a known origin reuses its pool"
        );
        assert_eq!(origins.pools.len(), MAX_ORIGINS);
        assert!(
            origins.pools.contains_key(&origin(0)),
            "origin 0 was used last but one"
        );
        assert!(
            !origins.pools.contains_key(&origin(1)),
            "origin 1 was the least recent"
        );
    }

    #[test]
    fn a_cached_jwt_is_reused_per_origin_until_close_to_its_expiry() {
        let sender = AppSender {
            credentials: load_credentials("shop", &config(RAW_KEY, "mailto:ops@example.com"))
                .unwrap(),
            allow_private: false,
            settings: PoolSettings {
                connections: 1,
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(1),
                keep_alive: pool::KEEP_ALIVE_INTERVAL,
                tls: pool::connect::tls_config(&[], None).unwrap(),
                guard: AddressGuard::PublicOnly,
            },
            in_flight: Arc::new(Semaphore::new(1)),
            pools: Mutex::new(Origins::default()),
            tokens: Mutex::new(HashMap::new()),
        };

        let first = sender.authorization("https://push.example.com").unwrap();
        let again = sender.authorization("https://push.example.com").unwrap();
        let other = sender
            .authorization("https://push.example.com:8443")
            .unwrap();
        sender
            .tokens
            .lock()
            .unwrap()
            .get_mut("https://push.example.com")
            .unwrap()
            .expires_at = SystemTime::now() + Duration::from_secs(600);
        let renewed = sender.authorization("https://push.example.com").unwrap();

        assert_eq!(first, again);
        assert_ne!(first, other);
        assert_ne!(first, renewed);
    }
}
