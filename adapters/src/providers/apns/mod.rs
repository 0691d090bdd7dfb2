//! The APNs provider: Clarion's own HTTP/2 client (see `docs/adr/0001-apns-http2-client.md`
//! and `docs/adr/0004-provider-http2-connection-pool.md`). Each application has a pool of up
//! to `apns.connections` HTTP/2 connections to its APNs host, each carrying as many requests
//! as APNs allows on it, at most `apns.max_in_flight` in all; authentication is a cached
//! ES256 provider token or a client certificate.

mod reason;
mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use anyhow::Context as _;
use async_trait::async_trait;
use clarion_domain::ids::AppId;
use clarion_domain::message::SendOutcome;
use clarion_domain::payload::{ApnsRequest, Payload};
use clarion_domain::ports::PushProvider;
use jsonwebtoken::EncodingKey;
use p256::pkcs8::DecodePrivateKey as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use self::token::ProviderTokens;
use crate::config::{ApnsConfig, ApnsEnvironment, Config};
use crate::providers::http;
use crate::providers::pool::{self, ClientIdentity, Origin, Pool, PoolSettings};

/// The production APNs host.
pub const PRODUCTION_ENDPOINT: &str = "https://api.push.apple.com";
/// The development (sandbox) APNs host.
pub const SANDBOX_ENDPOINT: &str = "https://api.sandbox.push.apple.com";

const PROVIDER: &str = "APNs";

const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// How an application authenticates to APNs, loaded and checked.
pub enum ApnsCredentials {
    /// Token authentication: the ES256 `.p8` key, its key id and the team id.
    Token {
        team_id: String,
        key_id: String,
        key: EncodingKey,
    },
    /// Certificate authentication: the client certificate and its key.
    Certificate { identity: ClientIdentity },
}

// Keys are secrets.
impl fmt::Debug for ApnsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApnsCredentials::Token {
                team_id, key_id, ..
            } => f
                .debug_struct("Token")
                .field("team_id", team_id)
                .field("key_id", key_id)
                .finish_non_exhaustive(),
            ApnsCredentials::Certificate { .. } => {
                f.debug_struct("Certificate").finish_non_exhaustive()
            }
        }
    }
}

impl ApnsCredentials {
    /// `token` or `certificate`, for messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            ApnsCredentials::Token { .. } => "token",
            ApnsCredentials::Certificate { .. } => "certificate",
        }
    }
}

/// Loads and checks the APNs credentials of application `app`: token authentication
/// (`team_id`, `key_id` and `key`, a PKCS#8 P-256 key as in Apple's `.p8` files) or
/// certificate authentication (`certificate` and `certificate_key`, PEM).
///
/// # Errors
/// When a setting is missing, unreadable or malformed, or both kinds are configured; the
/// message names the application and the setting, never the key material.
pub fn load_credentials(app: &str, cfg: &ApnsConfig) -> anyhow::Result<ApnsCredentials> {
    let setting = |name: &str| format!("apps.{app}.apns.{name}");
    let wants_token = cfg.team_id.is_some() || cfg.key_id.is_some() || cfg.key.is_some();
    let wants_certificate = cfg.certificate.is_some() || cfg.certificate_key.is_some();
    if wants_token && wants_certificate {
        anyhow::bail!(
            "apps.{app}.apns: both token (team_id, key_id, key) and certificate \
             (certificate, certificate_key) settings are given; keep one"
        );
    }
    if wants_certificate {
        let read = |name: &str, secret: Option<&crate::config::Secret>| {
            let secret =
                secret.with_context(|| format!("{}: missing (certificate authentication needs certificate and certificate_key)", setting(name)))?;
            secret.expose().with_context(|| setting(name))
        };
        let certificate = read("certificate", cfg.certificate.as_ref())?;
        let key = read("certificate_key", cfg.certificate_key.as_ref())?;
        anyhow::ensure!(
            certificate.contains("-----BEGIN CERTIFICATE-----"),
            "{}: not a PEM certificate",
            setting("certificate")
        );
        anyhow::ensure!(
            key.contains("PRIVATE KEY-----"),
            "{}: not a PEM private key",
            setting("certificate_key")
        );
        let identity = ClientIdentity::from_pem(&certificate, &key).map_err(|why| {
            anyhow::anyhow!(
                "{} and {}: not a usable PEM certificate and private key ({why})",
                setting("certificate"),
                setting("certificate_key")
            )
        })?;
        return Ok(ApnsCredentials::Certificate { identity });
    }
    let non_empty = |name: &str, value: Option<&String>| -> anyhow::Result<String> {
        let value = value.map(|v| v.trim()).unwrap_or_default();
        anyhow::ensure!(
            !value.is_empty(),
            "{}: missing (token authentication needs team_id, key_id and key; \
             or give certificate and certificate_key)",
            setting(name)
        );
        Ok(value.to_owned())
    };
    let team_id = non_empty("team_id", cfg.team_id.as_ref())?;
    let key_id = non_empty("key_id", cfg.key_id.as_ref())?;
    let key = cfg
        .key
        .as_ref()
        .with_context(|| format!("{}: missing (the .p8 signing key)", setting("key")))?
        .expose()
        .with_context(|| setting("key"))?;
    // Parse with p256 first: it checks the curve, and its errors never quote the key.
    if p256::SecretKey::from_pkcs8_pem(key.trim()).is_err() {
        anyhow::bail!(
            "{}: not a PKCS#8 EC P-256 private key (an Apple .p8 file)",
            setting("key")
        );
    }
    let key = EncodingKey::from_ec_pem(key.trim().as_bytes()).map_err(|_| {
        anyhow::anyhow!(
            "{}: not a PKCS#8 EC P-256 private key (an Apple .p8 file)",
            setting("key")
        )
    })?;
    Ok(ApnsCredentials::Token {
        team_id,
        key_id,
        key,
    })
}

/// Sends to APNs for every application that configures it.
#[derive(Debug)]
pub struct ApnsProvider {
    apps: BTreeMap<String, AppClient>,
}

/// One application's connections to APNs.
struct AppClient {
    app: String,
    /// The connections to the APNs host, at most `apns.max_in_flight` requests in flight.
    pool: Pool,
    /// The endpoint's path without its trailing `/` (empty for APNs itself).
    base_path: String,
    auth: Auth,
    /// The `authorization` header of the last provider token sent, and that token.
    bearer: Mutex<Option<(Arc<str>, HeaderValue)>>,
}

enum Auth {
    Token(ProviderTokens),
    Certificate,
}

impl fmt::Debug for AppClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppClient")
            .field("app", &self.app)
            .field("origin", &self.pool.origin().authority())
            .field(
                "auth",
                &match &self.auth {
                    Auth::Token(tokens) => format!("{tokens:?}"),
                    Auth::Certificate => "certificate".to_owned(),
                },
            )
            .finish_non_exhaustive()
    }
}

impl ApnsProvider {
    /// The provider for the applications that configure APNs, or `None` when none does.
    ///
    /// # Errors
    /// When a credential cannot be loaded or a client cannot be built; the error names the
    /// application and setting.
    pub fn from_config(config: &Config, roots: &http::Roots) -> anyhow::Result<Option<Self>> {
        let mut apps = BTreeMap::new();
        for (id, app) in &config.apps {
            if let Some(apns) = &app.apns {
                apps.insert(id.clone(), AppClient::new(id, apns, roots)?);
            }
        }
        if apps.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self { apps }))
    }
}

impl AppClient {
    fn new(app: &str, cfg: &ApnsConfig, roots: &http::Roots) -> anyhow::Result<Self> {
        let credentials = load_credentials(app, cfg)?;
        let endpoint = endpoint(app, cfg)?;
        let (connections, max_in_flight) = pool::limits(
            &format!("apps.{app}.apns"),
            pool::DEFAULT_CONNECTIONS,
            cfg.connections,
            cfg.max_in_flight,
        )?;
        let timeout = http::timeout(cfg.timeout_secs);
        let base_url = url::Url::parse(&endpoint)
            .with_context(|| format!("apps.{app}.apns.endpoint: {endpoint:?} is not a URL"))?;
        let origin = Origin::of(&base_url)
            .map_err(|why| anyhow::anyhow!("apps.{app}.apns.endpoint: {why}"))?;
        let (auth, identity) = match credentials {
            ApnsCredentials::Token {
                team_id,
                key_id,
                key,
            } => (Auth::Token(ProviderTokens::new(team_id, key_id, key)), None),
            ApnsCredentials::Certificate { identity } => (Auth::Certificate, Some(identity)),
        };
        // HTTP/2 only: ALPN offers just `h2`, so that a server that cannot speak HTTP/2
        // fails the handshake instead of getting HTTP/1.1 requests.
        let tls = pool::connect::tls_config(&roots.der, identity.as_ref()).with_context(|| {
            format!("failed to set up TLS for the APNs client of application {app}")
        })?;
        let settings = PoolSettings {
            connections,
            connect_timeout: timeout,
            request_timeout: timeout,
            keep_alive: pool::KEEP_ALIVE_INTERVAL,
            tls,
            guard: pool::AddressGuard::Any,
        };
        Ok(Self {
            app: app.to_owned(),
            pool: Pool::new(origin, settings, Arc::new(Semaphore::new(max_in_flight))),
            base_path: base_url.path().trim_end_matches('/').to_owned(),
            auth,
            bearer: Mutex::new(None),
        })
    }

    async fn send(&self, request: &ApnsRequest) -> SendOutcome {
        let Some(topic) = request.headers.topic.as_deref().filter(|t| !t.is_empty()) else {
            if matches!(self.auth, Auth::Token(_)) {
                return SendOutcome::Misconfigured {
                    code: "missing_topic".to_owned(),
                    reason: format!(
                        "apps.{}.apns.topic is empty: APNs token authentication needs the \
                         app's bundle id as topic",
                        self.app
                    ),
                };
            }
            return self.send_with(request, None).await;
        };
        self.send_with(request, Some(topic)).await
    }

    async fn send_with(&self, request: &ApnsRequest, topic: Option<&str>) -> SendOutcome {
        let apns_id = uuid::Uuid::new_v4().to_string();
        let mut token = match self.token(None) {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let mut renewed = false;
        loop {
            let response = match self.post(request, topic, &apns_id, token.as_ref()).await {
                Ok(response) => response,
                Err(err) => return err.outcome(PROVIDER),
            };
            let status = response.status.as_u16();
            if status == 200 {
                return accepted(&response.headers, &apns_id);
            }
            let body = ErrorBody::parse(&response.body);
            if status == 403
                && body.reason.as_deref() == Some("ExpiredProviderToken")
                && !renewed
                && let Some(rejected) = token.as_deref()
            {
                tracing::debug!(app = %self.app, "APNs said the provider token expired; renewing it");
                token = match self.token(Some(rejected)) {
                    Ok(token) => token,
                    Err(outcome) => return outcome,
                };
                renewed = true;
                continue;
            }
            tracing::debug!(
                app = %self.app,
                status,
                reason = body.reason.as_deref().unwrap_or(""),
                "APNs refused a notification"
            );
            return reason::outcome(
                status,
                body.reason.as_deref(),
                body.timestamp.as_ref(),
                http::retry_after(&response.headers, SystemTime::now()),
            );
        }
    }

    /// The provider token to send, `None` with certificate authentication. With `rejected`,
    /// a token renewed after APNs refused that one as expired.
    fn token(&self, rejected: Option<&str>) -> Result<Option<std::sync::Arc<str>>, SendOutcome> {
        let Auth::Token(tokens) = &self.auth else {
            return Ok(None);
        };
        let signed = match rejected {
            Some(rejected) => tokens.renew_after_rejection(rejected),
            None => tokens.current(),
        };
        signed.map(Some).map_err(|_| SendOutcome::Misconfigured {
            code: "provider_token".to_owned(),
            reason: format!(
                "could not sign an APNs provider token with apps.{}.apns.key (is it an ES256 .p8 key?)",
                self.app
            ),
        })
    }

    /// The `authorization` header of provider token `token`, made once per token: a fan-out
    /// sends the same one with every request.
    fn bearer(&self, token: &Arc<str>) -> Option<HeaderValue> {
        let mut cached = self.bearer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((signed, value)) = cached.as_ref()
            && Arc::ptr_eq(signed, token)
        {
            return Some(value.clone());
        }
        let mut value = HeaderValue::from_str(&format!("bearer {token}")).ok()?;
        value.set_sensitive(true);
        *cached = Some((Arc::clone(token), value.clone()));
        Some(value)
    }

    async fn post(
        &self,
        request: &ApnsRequest,
        topic: Option<&str>,
        apns_id: &str,
        token: Option<&Arc<str>>,
    ) -> Result<pool::Response, pool::PoolError> {
        let headers = &request.headers;
        let mut map = HeaderMap::with_capacity(8);
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        map.insert(
            APNS_PUSH_TYPE,
            HeaderValue::from_static(headers.push_type.as_str()),
        );
        map.insert(APNS_PRIORITY, priority(headers.priority));
        let mut set = |name: HeaderName, value: &str| {
            // Every value comes from a validated payload; one that is no header value is left
            // out, and APNs answers for what is missing.
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(name, value);
            }
        };
        set(APNS_ID, apns_id);
        if let Some(topic) = topic {
            set(APNS_TOPIC, topic);
        }
        if let Some(expiration) = headers.expiration {
            set(APNS_EXPIRATION, &expiration.to_string());
        }
        if let Some(collapse_id) = &headers.collapse_id {
            set(APNS_COLLAPSE_ID, collapse_id);
        }
        if let Some(value) = token.and_then(|token| self.bearer(token)) {
            map.insert(AUTHORIZATION, value);
        }
        self.pool
            .send(&pool::Request {
                method: ::http::Method::POST,
                path_and_query: format!("{}/3/device/{}", self.base_path, request.device_token),
                headers: map,
                body: bytes::Bytes::from_owner(Arc::clone(&request.body)),
            })
            .await
    }
}

/// The `apns-priority` header: 10 and 5 as constants, any other value written out.
fn priority(priority: u8) -> HeaderValue {
    match priority {
        10 => HeaderValue::from_static("10"),
        5 => HeaderValue::from_static("5"),
        other => HeaderValue::from(u16::from(other)),
    }
}

/// APNs's error body: `{"reason": "...", "timestamp": <ms>}` (the timestamp with 410 only).
#[derive(Default)]
struct ErrorBody {
    reason: Option<String>,
    timestamp: Option<Value>,
}

impl ErrorBody {
    fn parse(body: &[u8]) -> Self {
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        Self {
            reason: map
                .remove("reason")
                .and_then(|r| r.as_str().map(str::to_owned)),
            timestamp: map.remove("timestamp"),
        }
    }
}

/// A 200: the provider id is APNs's `apns-id` (ours echoed back), and the sandbox's
/// `apns-unique-id` goes into the details when present.
fn accepted(headers: &HeaderMap, sent_id: &str) -> SendOutcome {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    SendOutcome::Accepted {
        provider_id: Some(header("apns-id").unwrap_or_else(|| sent_id.to_owned())),
        details: header("apns-unique-id").map(|id| json!({ "apns_unique_id": id })),
    }
}

/// The application's APNs base URL: `apns.endpoint`, else the environment's host.
fn endpoint(app: &str, cfg: &ApnsConfig) -> anyhow::Result<String> {
    let raw = match (&cfg.endpoint, cfg.environment) {
        (Some(endpoint), _) => endpoint.trim(),
        (None, ApnsEnvironment::Production) => PRODUCTION_ENDPOINT,
        (None, ApnsEnvironment::Sandbox) => SANDBOX_ENDPOINT,
    };
    let url = url::Url::parse(raw)
        .map_err(|e| anyhow::anyhow!("apps.{app}.apns.endpoint: {raw:?} is not a URL: {e}"))?;
    anyhow::ensure!(
        url.scheme() == "https",
        "apps.{app}.apns.endpoint: {raw:?} must be an https URL (APNs needs TLS)"
    );
    Ok(raw.trim_end_matches('/').to_owned())
}

#[async_trait]
impl PushProvider for ApnsProvider {
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome {
        let Payload::Apns(request) = payload else {
            return SendOutcome::Permanent {
                code: "wrong_payload".to_owned(),
                reason: "the APNs provider was given a payload for another provider".to_owned(),
                details: None,
            };
        };
        let Some(client) = self.apps.get(app.as_str()) else {
            return SendOutcome::Misconfigured {
                code: "apns_not_configured".to_owned(),
                reason: format!("application {app} has no apns section (apps.{app}.apns)"),
            };
        };
        client.send(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const P8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdzc7YRhvN+kVa1ZG
r4DSJjoUBy6lCzJQl09PK1l1wMWhRANCAASPIlazjl4XpQPSrbQO/GenEOe4Jwig
Q5n4YyY4JX6xoEFt926/Q+WJbWM4WEs0ibLRAr7Pzd+eNnbp8b3WOMan
-----END PRIVATE KEY-----";

    fn token_config(key: &str) -> ApnsConfig {
        ApnsConfig {
            team_id: Some("TEAM123456".to_owned()),
            key_id: Some("KEY1234567".to_owned()),
            key: Some(Secret::Inline(key.to_owned())),
            certificate: None,
            certificate_key: None,
            topic: "com.example.shop".to_owned(),
            environment: ApnsEnvironment::Production,
            endpoint: None,
            timeout_secs: None,
            connections: None,
            max_in_flight: None,
        }
    }

    #[test]
    fn a_p8_key_loads_as_token_credentials() {
        let credentials = load_credentials("shop", &token_config(P8)).unwrap();

        assert_eq!(credentials.kind(), "token");
        assert!(!format!("{credentials:?}").contains("MIGHAgEA"));
    }

    #[test]
    fn a_malformed_key_is_named_without_its_content() {
        let error = load_credentials("shop", &token_config("not-a-key-s3cr3t"))
            .unwrap_err()
            .to_string();

        assert_eq!(
            error,
            "apps.shop.apns.key: not a PKCS#8 EC P-256 private key (an Apple .p8 file)"
        );
    }

    #[test]
    fn missing_settings_are_named() {
        let mut no_team = token_config(P8);
        no_team.team_id = None;
        let mut half_certificate = token_config(P8);
        half_certificate.team_id = None;
        half_certificate.key_id = None;
        half_certificate.key = None;
        half_certificate.certificate = Some(Secret::Inline("x".to_owned()));
        let mut nothing = half_certificate.clone();
        nothing.certificate = None;
        let mut both = token_config(P8);
        both.certificate = Some(Secret::Inline("x".to_owned()));
        let mut unset_env = token_config(P8);
        unset_env.key = Some(Secret::Env("CLARION_TEST_NO_SUCH_KEY".to_owned()));

        let cases = [
            (no_team, "apps.shop.apns.team_id: missing"),
            (half_certificate, "apps.shop.apns.certificate_key: missing"),
            (nothing, "apps.shop.apns.team_id: missing"),
            (both, "keep one"),
            (unset_env, "apps.shop.apns.key"),
        ];
        for (config, expected) in cases {
            let error = format!("{:#}", load_credentials("shop", &config).unwrap_err());
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn the_endpoint_follows_the_environment_unless_overridden() {
        let mut config = token_config(P8);
        assert_eq!(endpoint("shop", &config).unwrap(), PRODUCTION_ENDPOINT);
        config.environment = ApnsEnvironment::Sandbox;
        assert_eq!(endpoint("shop", &config).unwrap(), SANDBOX_ENDPOINT);
        config.endpoint = Some("https://127.0.0.1:8443/".to_owned());
        assert_eq!(endpoint("shop", &config).unwrap(), "https://127.0.0.1:8443");
        config.endpoint = Some("http://127.0.0.1:8443".to_owned());
        assert!(
            endpoint("shop", &config)
                .unwrap_err()
                .to_string()
                .contains("apps.shop.apns.endpoint")
        );
    }
}
