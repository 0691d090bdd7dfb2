//! The FCM HTTP v1 provider: `POST {endpoint}/v1/projects/{project_id}/messages:send` with an
//! OAuth 2.0 access token bought with the application's service account.
//!
//! The access token is cached per application until shortly before it expires. When FCM
//! answers 401 to it anyway (revoked, or the clocks disagree), the token is dropped, a new one
//! is fetched and the send is tried once more; a second 401 is a configuration error.
//!
//! The sends go through the application's HTTP/2 connection pool (`fcm.connections`,
//! `fcm.max_in_flight`; ADR 4); the token requests, few, through reqwest. A plain `http`
//! endpoint (a local mock) is spoken to in HTTP/2 with prior knowledge.

pub mod auth;
pub mod response;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_trait::async_trait;
use clarion_domain::ids::AppId;
use clarion_domain::message::SendOutcome;
use clarion_domain::payload::{FcmRequest, Payload};
use clarion_domain::ports::PushProvider;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use crate::config::{Config, FcmConfig};
use crate::providers::fcm::auth::{AccessToken, TokenSource};
use crate::providers::fcm::response::FcmError;
use crate::providers::http;
use crate::providers::pool::{self, Origin, Pool, PoolSettings};

pub use crate::providers::fcm::auth::{ServiceAccount, load_credentials};

/// The FCM endpoint used when an application sets none.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
/// How outcomes name this provider.
const PROVIDER: &str = "FCM";

/// Sends to FCM for every application that configures it.
#[derive(Debug)]
pub struct FcmProvider {
    apps: HashMap<AppId, FcmApp>,
}

/// One application's FCM client.
#[derive(Debug)]
struct FcmApp {
    pool: Pool,
    /// `/v1/projects/{project_id}/messages:send` under the endpoint's path.
    send_path: String,
    tokens: TokenSource,
}

impl FcmProvider {
    /// The provider for the applications that configure FCM, or `None` when none does.
    ///
    /// # Errors
    /// When a credential cannot be loaded or a client cannot be built; the error names the
    /// application and setting.
    pub fn from_config(config: &Config, roots: &http::Roots) -> anyhow::Result<Option<Self>> {
        let mut apps = HashMap::new();
        for (id, app) in &config.apps {
            let Some(fcm) = &app.fcm else {
                continue;
            };
            let app_id = AppId::parse(id).with_context(|| format!("apps.{id}"))?;
            apps.insert(app_id, FcmApp::new(id, fcm, roots)?);
        }
        Ok((!apps.is_empty()).then_some(Self { apps }))
    }
}

impl FcmApp {
    fn new(id: &str, cfg: &FcmConfig, roots: &http::Roots) -> anyhow::Result<Self> {
        let account = load_credentials(id, cfg)?;
        let endpoint = cfg.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let url = match url::Url::parse(endpoint) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => url,
            _ => anyhow::bail!("apps.{id}.fcm.endpoint {endpoint:?} is not an http(s) URL"),
        };
        let origin =
            Origin::of(&url).map_err(|why| anyhow::anyhow!("apps.{id}.fcm.endpoint: {why}"))?;
        let (connections, max_in_flight) = pool::limits(
            &format!("apps.{id}.fcm"),
            pool::DEFAULT_FCM_CONNECTIONS,
            cfg.connections,
            cfg.max_in_flight,
        )?;
        let send_path = format!(
            "{}/v1/projects/{}/messages:send",
            url.path().trim_end_matches('/'),
            account.project_id()
        );
        let timeout = http::timeout(cfg.timeout_secs);
        let client = http::client_builder(&roots.reqwest, timeout)
            .build()
            .with_context(|| format!("apps.{id}.fcm: failed to build the HTTP client"))?;
        let tls = pool::connect::tls_config(&roots.der, None)
            .with_context(|| format!("apps.{id}.fcm: failed to set up TLS"))?;
        let settings = PoolSettings {
            connections,
            connect_timeout: timeout,
            request_timeout: timeout,
            keep_alive: pool::KEEP_ALIVE_INTERVAL,
            tls,
            guard: pool::AddressGuard::Any,
        };
        Ok(Self {
            tokens: TokenSource::new(account, client),
            pool: Pool::new(
                origin,
                settings,
                Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            ),
            send_path,
        })
    }

    async fn send(&self, request: &FcmRequest) -> SendOutcome {
        let token = match self.tokens.token().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let (error, retry_after) = match self.post(&token, request).await {
            Ok(accepted) => return accepted,
            Err(Failure::Outcome(outcome)) => return outcome,
            Err(Failure::Fcm(error, retry_after)) => (error, retry_after),
        };
        if !error.is_expired_access_token() {
            return error.outcome(retry_after);
        }
        tracing::info!(
            project_id = self.tokens.account().project_id(),
            "FCM refused the cached access token; fetching a new one and sending once more"
        );
        self.tokens.invalidate(&token).await;
        let token = match self.tokens.token().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        match self.post(&token, request).await {
            Ok(outcome) | Err(Failure::Outcome(outcome)) => outcome,
            Err(Failure::Fcm(error, retry_after)) => error.outcome(retry_after),
        }
    }

    /// One request: the accepted outcome, or why not.
    async fn post(
        &self,
        token: &AccessToken,
        request: &FcmRequest,
    ) -> Result<SendOutcome, Failure> {
        let Ok(mut authorization) = HeaderValue::from_str(&format!("Bearer {}", token.secret()))
        else {
            return Err(Failure::Outcome(SendOutcome::Misconfigured {
                code: "oauth_response".to_owned(),
                reason: "the FCM OAuth token endpoint issued an access token that is not a valid HTTP header value".to_owned(),
            }));
        };
        // Keeps the token out of any debug output of the request.
        authorization.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        let response = self
            .pool
            .send(&pool::Request {
                method: ::http::Method::POST,
                path_and_query: self.send_path.clone(),
                headers,
                body: bytes::Bytes::from(request.body.clone()),
            })
            .await
            .map_err(|e| Failure::Outcome(e.outcome(PROVIDER)))?;
        let status = response.status;
        let retry_after = http::retry_after(&response.headers, SystemTime::now());
        let body = response.body;
        if status.is_success() {
            return Ok(SendOutcome::Accepted {
                provider_id: response::message_name(&body),
                details: None,
            });
        }
        Err(Failure::Fcm(
            FcmError::parse(status.as_u16(), &body),
            retry_after,
        ))
    }
}

/// Why one request was not accepted.
enum Failure {
    /// No answer worth reading (a timeout, a dropped connection).
    Outcome(SendOutcome),
    /// FCM's error answer, with its `Retry-After`.
    Fcm(FcmError, Option<Duration>),
}

#[async_trait]
impl PushProvider for FcmProvider {
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome {
        let Payload::Fcm(request) = payload else {
            return SendOutcome::Permanent {
                code: "wrong_payload".to_owned(),
                reason: "the FCM provider was handed a payload for another provider".to_owned(),
                details: None,
            };
        };
        let Some(fcm) = self.apps.get(app) else {
            return SendOutcome::Misconfigured {
                code: "not_configured".to_owned(),
                reason: format!("application {app} has no [apps.{app}.fcm] section"),
            };
        };
        fcm.send(request).await
    }
}
