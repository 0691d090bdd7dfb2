//! The `[apps.<id>]` sections: one application (tenant) with its sender, retry policy,
//! provider credentials and client-token settings.

use clarion_domain::app::SenderKind;
use clarion_domain::retry::RetryPolicy;
use serde::{Deserialize, Serialize};

use crate::config::secret::Secret;

/// One application (tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub sender: SenderKind,
    pub retry: RetryPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webpush: Option<WebPushConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onesignal: Option<OneSignalConfig>,
    /// The HS256 secret of the client tokens (JWT) of this application's apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token_secret: Option<Secret>,
    /// The longest a client token may live: `exp - iat`, or `exp` minus the time it is
    /// presented when it has no `iat`.
    pub client_token_max_lifetime_secs: u64,
}

/// The default of `client_token_max_lifetime_secs`: 30 days.
pub const CLIENT_TOKEN_MAX_LIFETIME_SECS: u64 = 30 * 24 * 3600;

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            sender: SenderKind::Direct,
            retry: RetryPolicy::default(),
            apns: None,
            fcm: None,
            webpush: None,
            onesignal: None,
            client_token_secret: None,
            client_token_max_lifetime_secs: CLIENT_TOKEN_MAX_LIFETIME_SECS,
        }
    }
}

/// Apple Push Notification service credentials: token auth (`team_id`, `key_id`, `key`) or
/// certificate auth (`certificate`, `certificate_key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The `.p8` signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// The client certificate, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Secret>,
    /// The client certificate's private key, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_key: Option<Secret>,
    /// The bundle id.
    pub topic: String,
    #[serde(default)]
    pub environment: ApnsEnvironment,
    /// Overrides the APNs host (tests, proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// HTTP/2 connections to APNs for this application; 4 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// The most requests in flight at once for this application, over all its connections
    /// (the memory bound); 4000 when unset. `concurrency` is the old name.
    #[serde(
        default,
        alias = "concurrency",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_in_flight: Option<usize>,
}

/// Which APNs host serves an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    #[default]
    Production,
    Sandbox,
}

/// Firebase Cloud Messaging (HTTP v1) credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON (its `project_id`, `client_email`, `private_key` and
    /// `token_uri` are used).
    pub service_account: Secret,
    /// Overrides the FCM endpoint (tests, proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// HTTP/2 connections for this application; 16 when unset (FCM allows 100 requests at once
    /// on a connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// The most requests in flight at once for this application, over all its connections (the memory bound);
    /// 4000 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

/// Web Push (VAPID) credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    pub vapid_private_key: Secret,
    /// `mailto:` or `https:` contact of the sender.
    pub subject: String,
    /// Accepts subscription endpoints on private addresses (tests only).
    #[serde(default)]
    pub allow_private_endpoints: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// HTTP/2 connections for this application per push-service origin; 4 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// The most requests in flight at once for this application, over all push services (the memory bound);
    /// 4000 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

/// OneSignal credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneSignalConfig {
    pub app_id: String,
    /// The REST API key.
    pub api_key: Secret,
    /// The language key of `contents` and `headings`.
    #[serde(default = "default_language")]
    pub language: String,
    /// Overrides the OneSignal endpoint (tests, proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

fn default_language() -> String {
    "en".to_owned()
}

impl AppConfig {
    /// Every secret of this application with its dotted key.
    pub(crate) fn secrets(&self, id: &str) -> Vec<(String, &Secret)> {
        let apns = self.apns.as_ref();
        let candidates: [(&str, Option<&Secret>); 7] = [
            ("apns.key", apns.and_then(|apns| apns.key.as_ref())),
            (
                "apns.certificate",
                apns.and_then(|apns| apns.certificate.as_ref()),
            ),
            (
                "apns.certificate_key",
                apns.and_then(|apns| apns.certificate_key.as_ref()),
            ),
            (
                "fcm.service_account",
                self.fcm.as_ref().map(|fcm| &fcm.service_account),
            ),
            (
                "webpush.vapid_private_key",
                self.webpush
                    .as_ref()
                    .map(|webpush| &webpush.vapid_private_key),
            ),
            (
                "onesignal.api_key",
                self.onesignal.as_ref().map(|onesignal| &onesignal.api_key),
            ),
            ("client_token_secret", self.client_token_secret.as_ref()),
        ];
        candidates
            .into_iter()
            .filter_map(|(key, secret)| Some((format!("apps.{id}.{key}"), secret?)))
            .collect()
    }
}
