//! Application (tenant) settings that the domain needs: which sender an application uses and
//! the non-secret provider settings that shape payloads. Credentials stay in the adapters.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::AppId;
use crate::retry::RetryPolicy;
use crate::token::EndpointPolicy;

/// How an application's messages leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    /// To the application's registered devices, through APNs, FCM or Web Push.
    Direct,
    /// Through OneSignal, by external user id.
    Onesignal,
    /// Nowhere: messages end in state DEBUG.
    Debug,
}

impl SenderKind {
    /// The name the configuration, the API and the store use: `direct`, `onesignal` or `debug`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SenderKind::Direct => "direct",
            SenderKind::Onesignal => "onesignal",
            SenderKind::Debug => "debug",
        }
    }
}

impl fmt::Display for SenderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown sender name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sender {0:?}: expected direct, onesignal or debug")]
pub struct UnknownSender(pub String);

impl FromStr for SenderKind {
    type Err = UnknownSender;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "direct" => Ok(SenderKind::Direct),
            "onesignal" => Ok(SenderKind::Onesignal),
            "debug" => Ok(SenderKind::Debug),
            other => Err(UnknownSender(other.to_owned())),
        }
    }
}

/// The APNs settings that shape a request: the topic (bundle id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApnsSettings {
    /// The app's bundle id, sent as the `apns-topic` header; an empty topic sends no header.
    pub topic: String,
}

/// The OneSignal settings that shape a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneSignalSettings {
    /// The OneSignal app the notifications are created in (`app_id` in the request body); the
    /// `onesignal` sender refuses to build a request without it.
    pub app_id: String,
    /// The language key of `contents` and `headings`, such as `en`.
    pub language: String,
}

/// One application as the domain sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    /// The id requests, API keys and stored rows name the application by.
    pub id: AppId,
    /// How the application's messages leave the process.
    pub sender: SenderKind,
    /// Whether Web Push endpoints on non-public addresses may be registered for this application
    /// (`webpush.allow_private_endpoints`).
    pub endpoint_policy: EndpointPolicy,
    /// When and how often the application's messages that failed for a transient reason are sent
    /// again, and when they are given up.
    pub retry: RetryPolicy,
    /// The APNs settings its payloads need; `None` sends APNs requests without a topic.
    pub apns: Option<ApnsSettings>,
    /// The OneSignal settings; the `onesignal` sender cannot build a request without them.
    pub onesignal: Option<OneSignalSettings>,
}

impl Application {
    /// An application with the given sender, default retry policy and no provider settings.
    #[must_use]
    pub fn new(id: AppId, sender: SenderKind) -> Self {
        Self {
            id,
            sender,
            endpoint_policy: EndpointPolicy::PublicOnly,
            retry: RetryPolicy::default(),
            apns: None,
            onesignal: None,
        }
    }
}

/// The applications this process serves, by id.
#[derive(Debug, Clone, Default)]
pub struct Applications {
    by_id: BTreeMap<AppId, Application>,
}

/// An application id that is not configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown application {0:?}")]
pub struct UnknownApplication(pub String);

impl Applications {
    /// The given applications, by id; of two with the same id, the last one is kept.
    #[must_use]
    pub fn new(apps: impl IntoIterator<Item = Application>) -> Self {
        Self {
            by_id: apps.into_iter().map(|a| (a.id.clone(), a)).collect(),
        }
    }

    /// Looks an application up by its raw id.
    ///
    /// # Errors
    /// [`UnknownApplication`] when no application has that id.
    pub fn get(&self, id: &str) -> Result<&Application, UnknownApplication> {
        AppId::parse(id)
            .ok()
            .and_then(|id| self.by_id.get(&id))
            .ok_or_else(|| UnknownApplication(id.to_owned()))
    }

    /// Every application, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Application> {
        self.by_id.values()
    }
}
