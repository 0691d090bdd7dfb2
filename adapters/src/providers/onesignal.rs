//! The OneSignal provider: "Create notification" (`POST {endpoint}/notifications`) with the
//! current `Authorization: Key <REST API key>` scheme, one request per external user id.

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use anyhow::Context as _;
use async_trait::async_trait;
use clarion_domain::ids::AppId;
use clarion_domain::message::SendOutcome;
use clarion_domain::payload::{OneSignalRequest, Payload};
use clarion_domain::ports::PushProvider;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use crate::config::{Config, OneSignalConfig};
use crate::providers::http;

const PROVIDER: &str = "OneSignal";

/// The OneSignal API when the configuration names no other endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://api.onesignal.com";

/// An application's OneSignal app id and REST API key, checked.
pub struct OneSignalCredentials {
    app_id: String,
    /// `Key <api key>`, marked sensitive.
    authorization: HeaderValue,
}

impl fmt::Debug for OneSignalCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneSignalCredentials")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl OneSignalCredentials {
    /// The OneSignal app id.
    #[must_use]
    pub fn app_id(&self) -> &str {
        &self.app_id
    }
}

/// Loads and checks an application's OneSignal credentials: the REST API key is readable, not
/// empty and fits an HTTP header; the app id is not empty.
///
/// # Errors
/// The error names the application and the setting, never the key.
pub fn load_credentials(app: &str, cfg: &OneSignalConfig) -> anyhow::Result<OneSignalCredentials> {
    let setting = format!("apps.{app}.onesignal.api_key");
    let key = cfg
        .api_key
        .expose()
        .with_context(|| format!("failed to read {setting}"))?;
    let key = key.trim();
    anyhow::ensure!(
        !key.is_empty(),
        "{setting} ({}) is empty",
        cfg.api_key.origin()
    );
    let mut authorization = HeaderValue::from_str(&format!("Key {key}")).map_err(|_| {
        anyhow::anyhow!(
            "{setting} ({}) holds characters an HTTP header cannot carry",
            cfg.api_key.origin()
        )
    })?;
    authorization.set_sensitive(true);
    anyhow::ensure!(
        !cfg.app_id.trim().is_empty(),
        "apps.{app}.onesignal.app_id is empty"
    );
    Ok(OneSignalCredentials {
        app_id: cfg.app_id.trim().to_owned(),
        authorization,
    })
}

/// The `notifications` URL under an endpoint (`https://api.onesignal.com` by default).
///
/// # Errors
/// When the endpoint is not an `http` or `https` URL.
fn notifications_url(app: &str, endpoint: Option<&str>) -> anyhow::Result<reqwest::Url> {
    let base = endpoint
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim()
        .trim_end_matches('/');
    let url = reqwest::Url::parse(&format!("{base}/notifications"))
        .with_context(|| format!("apps.{app}.onesignal.endpoint {base:?} is not a URL"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "https" | "http") && url.host().is_some(),
        "apps.{app}.onesignal.endpoint {base:?} is not an http or https URL"
    );
    Ok(url)
}

/// Sends to OneSignal for every application that configures it.
#[derive(Debug)]
pub struct OneSignalProvider {
    apps: HashMap<AppId, AppClient>,
}

#[derive(Debug)]
struct AppClient {
    credentials: OneSignalCredentials,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl OneSignalProvider {
    /// The provider for the applications that configure OneSignal, or `None` when none does.
    ///
    /// # Errors
    /// When a credential cannot be loaded; the error names the application and setting.
    pub fn from_config(
        config: &Config,
        roots: &[reqwest::Certificate],
    ) -> anyhow::Result<Option<Self>> {
        let mut apps = HashMap::new();
        for (id, app) in &config.apps {
            let Some(cfg) = &app.onesignal else {
                continue;
            };
            let app_id =
                AppId::parse(id).with_context(|| format!("invalid application id {id:?}"))?;
            let credentials = load_credentials(id, cfg)?;
            let url = notifications_url(id, cfg.endpoint.as_deref())?;
            let client = http::client_builder(roots, http::timeout(cfg.timeout_secs))
                .build()
                .with_context(|| {
                    format!("failed to build the OneSignal HTTP client of application {id}")
                })?;
            apps.insert(
                app_id,
                AppClient {
                    credentials,
                    url,
                    client,
                },
            );
        }
        Ok((!apps.is_empty()).then_some(Self { apps }))
    }
}

#[async_trait]
impl PushProvider for OneSignalProvider {
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome {
        let Some(client) = self.apps.get(app) else {
            return SendOutcome::Misconfigured {
                code: "onesignal_not_configured".to_owned(),
                reason: format!("application {app} has no [apps.{app}.onesignal] section"),
            };
        };
        let Payload::Onesignal(request) = payload else {
            return SendOutcome::Permanent {
                code: "wrong_payload".to_owned(),
                reason: "the OneSignal provider was handed another provider's payload".to_owned(),
                details: None,
            };
        };
        let outcome = client.send(app, request).await;
        tracing::debug!(%app, ?outcome, "OneSignal send");
        outcome
    }
}

impl AppClient {
    async fn send(&self, app: &AppId, request: &OneSignalRequest) -> SendOutcome {
        let sent = self
            .client
            .post(self.url.clone())
            .header(AUTHORIZATION, self.credentials.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(request.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return http::transport_failure(PROVIDER, &error),
        };
        let status = response.status();
        let retry_after = http::retry_after(response.headers(), SystemTime::now());
        let body = match http::read_body(response).await {
            Ok(body) => body,
            Err(error) => return http::transport_failure(PROVIDER, &error),
        };
        outcome_of(app, status, retry_after, &body)
    }
}

fn outcome_of(
    app: &AppId,
    status: StatusCode,
    retry_after: Option<std::time::Duration>,
    body: &[u8],
) -> SendOutcome {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let errors = json.as_ref().and_then(errors_of);
    let said = match (&errors, &json) {
        (Some(errors), _) => format!(": {errors}"),
        (None, Some(_)) => String::new(),
        (None, None) => http::snippet(body),
    };
    if status.is_success() {
        let id = json
            .as_ref()
            .and_then(|json| json.get("id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        return match (id, errors) {
            (Some(id), None) => SendOutcome::Accepted {
                provider_id: Some(id),
                details: json,
            },
            (_, Some(_)) => SendOutcome::Permanent {
                code: "onesignal_errors".to_owned(),
                reason: format!("OneSignal created no notification{said}"),
                details: json,
            },
            (None, None) => SendOutcome::Permanent {
                code: "onesignal_errors".to_owned(),
                reason: format!("OneSignal answered {status} without a notification id{said}"),
                details: json,
            },
        };
    }
    let answered = format!("OneSignal answered {status}{said}");
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => SendOutcome::Misconfigured {
            code: "onesignal_unauthorized".to_owned(),
            reason: format!(
                "{answered}; the REST API key was refused: check apps.{app}.onesignal.api_key \
                 and app_id"
            ),
        },
        StatusCode::NOT_FOUND => SendOutcome::Misconfigured {
            code: "onesignal_not_found".to_owned(),
            reason: format!("{answered}; check apps.{app}.onesignal.endpoint and app_id"),
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
        StatusCode::BAD_REQUEST => SendOutcome::Permanent {
            code: "bad_request".to_owned(),
            reason: answered,
            details: json,
        },
        _ => SendOutcome::Permanent {
            code: format!("http_{}", status.as_u16()),
            reason: answered,
            details: json,
        },
    }
}

/// The response's `errors` as compact JSON, when it has any (an empty list or object is none).
fn errors_of(json: &Value) -> Option<String> {
    let errors = json.get("errors")?;
    let empty = match errors {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::String(text) => text.is_empty(),
        _ => false,
    };
    (!empty).then(|| errors.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Secret;

    fn config(app_id: &str, key: &str) -> OneSignalConfig {
        OneSignalConfig {
            app_id: app_id.to_owned(),
            api_key: Secret::Inline(key.to_owned()),
            language: "en".to_owned(),
            endpoint: None,
            timeout_secs: None,
        }
    }

    fn shop() -> AppId {
        AppId::parse("shop").unwrap()
    }

    #[test]
    fn credentials_need_an_app_id_and_a_key_and_never_show_the_key() {
        assert!(load_credentials("shop", &config("app", "secret-key")).is_ok());
        let no_key = load_credentials("shop", &config("app", "  ")).unwrap_err();
        let no_app = load_credentials("shop", &config("", "secret-key")).unwrap_err();
        let bad_key = load_credentials("shop", &config("app", "secret\nkey")).unwrap_err();

        assert!(no_key.to_string().contains("apps.shop.onesignal.api_key"));
        assert!(no_app.to_string().contains("apps.shop.onesignal.app_id"));
        assert!(!bad_key.to_string().contains("secret"), "{bad_key}");
        let shown = format!(
            "{:?}",
            load_credentials("shop", &config("app", "secret-key"))
        );
        assert!(!shown.contains("secret-key"), "{shown}");
    }

    #[test]
    fn the_endpoint_defaults_to_the_onesignal_api_and_may_end_with_a_slash() {
        assert_eq!(
            notifications_url("shop", None).unwrap().as_str(),
            "https://api.onesignal.com/notifications"
        );
        assert_eq!(
            notifications_url("shop", Some("http://127.0.0.1:9/"))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/notifications"
        );
        assert!(notifications_url("shop", Some("ftp://x")).is_err());
    }

    #[test]
    fn responses_map_to_outcomes() {
        let body = |value: Value| value.to_string().into_bytes();
        let cases = [
            (200, json!({"id": "n-1", "external_id": null}), "accepted"),
            (200, json!({"id": "n-1", "errors": []}), "accepted"),
            (
                200,
                json!({"id": "", "errors": {"invalid_aliases": {"external_id": ["bob"]}}}),
                "onesignal_errors",
            ),
            (200, json!({"id": ""}), "onesignal_errors"),
            (400, json!({"errors": ["bad"]}), "bad_request"),
            (
                403,
                json!({"errors": ["Access denied"]}),
                "onesignal_unauthorized",
            ),
            (429, json!({"errors": ["rate"]}), "rate_limited"),
            (502, json!({}), "server_error"),
        ];
        for (status, response, expected) in cases {
            let outcome = outcome_of(
                &shop(),
                StatusCode::from_u16(status).unwrap(),
                None,
                &body(response.clone()),
            );
            let code = match &outcome {
                SendOutcome::Accepted { .. } => "accepted",
                SendOutcome::Permanent { code, .. }
                | SendOutcome::Misconfigured { code, .. }
                | SendOutcome::Transient { code, .. }
                | SendOutcome::DeadToken { code, .. } => code,
                SendOutcome::Debug => "debug",
            };
            assert_eq!(code, expected, "{status} {response}: {outcome:?}");
        }
    }
}
