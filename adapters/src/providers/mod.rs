//! The push providers: APNs over HTTP/2, FCM HTTP v1, Web Push and OneSignal, each behind the
//! domain's [`PushProvider`] port, plus the debug sender. Every endpoint comes from the
//! configuration, with the real hosts as defaults.

pub mod apns;
pub mod fcm;
pub mod http;
pub mod onesignal;
pub mod pool;
pub mod webpush;
pub mod webpush_ece;

use std::sync::Arc;

use clarion_domain::ids::AppId;
use clarion_domain::message::{Channel, SendOutcome};
use clarion_domain::payload::Payload;
use clarion_domain::ports::PushProvider;
use clarion_domain::service::Providers;

use crate::config::{AppConfig, CheckItem, Config};
use crate::debug::DebugSender;
use crate::metrics::InstrumentedProvider;

/// Builds the providers of every configured application. With `debug = true` the debug sender
/// serves every channel, so nothing leaves the process whatever a message targets.
///
/// # Errors
/// When a credential cannot be loaded or a client cannot be built; the error names the
/// application and the setting.
pub fn build(config: &Config) -> anyhow::Result<Providers> {
    // Every provider is timed (`clarion_provider_request_duration_seconds`).
    let with = |providers: Providers, channel: Channel, provider: Arc<dyn PushProvider>| {
        providers.with(channel, InstrumentedProvider::wrap(channel, provider))
    };
    let debug: Arc<dyn PushProvider> = Arc::new(DebugSender);
    let mut providers = with(Providers::default(), Channel::Debug, debug.clone());
    if config.debug {
        for channel in [
            Channel::Apns,
            Channel::Fcm,
            Channel::Webpush,
            Channel::Onesignal,
        ] {
            providers = with(providers, channel, debug.clone());
        }
        return Ok(providers);
    }
    let roots = http::extra_roots(&config.tls)?;
    if let Some(apns) = apns::ApnsProvider::from_config(config, &roots)? {
        providers = with(providers, Channel::Apns, OwnTasks::wrap(Arc::new(apns)));
    }
    if let Some(fcm) = fcm::FcmProvider::from_config(config, &roots)? {
        providers = with(providers, Channel::Fcm, OwnTasks::wrap(Arc::new(fcm)));
    }
    if let Some(webpush) = webpush::WebPushProvider::from_config(config, &roots)? {
        providers = with(
            providers,
            Channel::Webpush,
            OwnTasks::wrap(Arc::new(webpush)),
        );
    }
    if let Some(onesignal) = onesignal::OneSignalProvider::from_config(config, &roots.reqwest)? {
        providers = with(
            providers,
            Channel::Onesignal,
            OwnTasks::wrap(Arc::new(onesignal)),
        );
    }
    Ok(providers)
}

/// Runs each send of a provider on a Tokio task of its own. An attempt at a message awaits
/// all of its sends from one task; on their own tasks, the requests' work (TLS, HTTP/2
/// framing, reading the answers) spreads over every worker thread of the runtime instead of
/// sharing the attempt's. A send whose caller stops waiting (the attempt lost its lease) is
/// aborted, as it would be without the task.
struct OwnTasks {
    inner: Arc<dyn PushProvider>,
}

impl OwnTasks {
    fn wrap(inner: Arc<dyn PushProvider>) -> Arc<dyn PushProvider> {
        Arc::new(Self { inner })
    }
}

impl std::fmt::Debug for OwnTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnTasks").finish_non_exhaustive()
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<SendOutcome>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait::async_trait]
impl PushProvider for OwnTasks {
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome {
        let (inner, app, payload) = (Arc::clone(&self.inner), app.clone(), payload.clone());
        let mut task = AbortOnDrop(tokio::spawn(
            async move { inner.send(&app, &payload).await },
        ));
        match (&mut task.0).await {
            Ok(outcome) => outcome,
            Err(error) => SendOutcome::Transient {
                code: "internal".to_owned(),
                reason: format!("the send did not finish: {error}"),
                retry_after: None,
            },
        }
    }
}

/// Loads each credential an application configures (the APNs key or certificate, the FCM
/// service account, the VAPID key, the OneSignal key) and says which one is missing,
/// unreadable or malformed. Nothing secret is put in the details.
#[must_use]
pub fn check_credentials(id: &str, app: &AppConfig) -> Vec<CheckItem> {
    fn item<T>(subject: String, loaded: anyhow::Result<T>, what: &str) -> CheckItem {
        match loaded {
            Ok(_) => CheckItem::ok(subject, format!("{what} loaded")),
            Err(error) => CheckItem::failed(subject, format!("{error:#}")),
        }
    }
    let mut items = Vec::new();
    if let Some(apns) = &app.apns {
        items.push(item(
            format!("apps.{id}.apns (credentials)"),
            apns::load_credentials(id, apns),
            "the APNs signing key or client certificate",
        ));
    }
    if let Some(fcm) = &app.fcm {
        items.push(item(
            format!("apps.{id}.fcm (credentials)"),
            fcm::load_credentials(id, fcm),
            "the service account",
        ));
    }
    if let Some(webpush) = &app.webpush {
        items.push(item(
            format!("apps.{id}.webpush (credentials)"),
            webpush::load_credentials(id, webpush),
            "the VAPID key",
        ));
    }
    if let Some(onesignal) = &app.onesignal {
        items.push(item(
            format!("apps.{id}.onesignal (credentials)"),
            onesignal::load_credentials(id, onesignal),
            "the OneSignal REST API key",
        ));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, WebPushConfig};

    fn app_with_webpush(key: &str, subject: &str) -> AppConfig {
        let mut app: AppConfig = toml::from_str("sender = \"direct\"").unwrap();
        app.webpush = Some(WebPushConfig {
            vapid_private_key: Secret::Inline(key.to_owned()),
            subject: subject.to_owned(),
            allow_private_endpoints: false,
            timeout_secs: None,
            connections: None,
            max_in_flight: None,
        });
        app
    }

    /// Counts its sends as they finish, after a pause.
    #[derive(Debug, Default)]
    struct Slow {
        finished: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl PushProvider for Slow {
        async fn send(&self, _: &AppId, payload: &Payload) -> SendOutcome {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            self.finished
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Payload::Apns(request) = payload else {
                panic!("an APNs payload");
            };
            SendOutcome::Accepted {
                provider_id: Some(request.device_token.clone()),
                details: None,
            }
        }
    }

    fn apns_payload(token: &str) -> Payload {
        Payload::Apns(clarion_domain::payload::ApnsRequest {
            device_token: token.to_owned(),
            headers: clarion_domain::payload::ApnsHeaders {
                topic: None,
                push_type: clarion_domain::payload::ApnsPushType::Alert,
                priority: 10,
                expiration: None,
                collapse_id: None,
            },
            body: b"{}".as_slice().into(),
        })
    }

    #[tokio::test]
    async fn a_send_on_its_own_task_returns_the_providers_outcome() {
        let slow = Arc::new(Slow::default());
        let provider = OwnTasks::wrap(slow.clone());

        let outcome = provider
            .send(&AppId::parse("shop").unwrap(), &apns_payload("ab12"))
            .await;

        assert_eq!(
            outcome,
            SendOutcome::Accepted {
                provider_id: Some("ab12".to_owned()),
                details: None,
            }
        );
        assert_eq!(slow.finished.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_send_nobody_waits_for_any_more_is_aborted() {
        let slow = Arc::new(Slow::default());
        let provider = OwnTasks::wrap(slow.clone());
        let app = AppId::parse("shop").unwrap();
        let payload = apns_payload("ab12");

        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(5),
            provider.send(&app, &payload),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;

        assert!(gave_up.is_err());
        assert_eq!(slow.finished.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_malformed_vapid_key_is_named_without_its_value() {
        let items = check_credentials(
            "shop",
            &app_with_webpush("not-a-key-xyz", "mailto:ops@example.com"),
        );

        assert_eq!(items.len(), 1);
        assert_eq!(items[0].subject, "apps.shop.webpush (credentials)");
        assert!(!items[0].ok);
        assert!(
            items[0].detail.contains("vapid_private_key"),
            "{:?}",
            items[0]
        );
        assert!(!items[0].detail.contains("not-a-key-xyz"), "{:?}", items[0]);
    }

    #[test]
    fn a_valid_vapid_key_loads() {
        // A P-256 private scalar in base64url, as `web-push generate-vapid-keys` prints it.
        let key = "RS0WdYWWo1HajXg3NZR1olzCf31i-ZBGDkFyCs7j1jw";

        let items = check_credentials("shop", &app_with_webpush(key, "mailto:ops@example.com"));

        assert!(items[0].ok, "{:?}", items[0]);
    }

    #[test]
    fn an_application_without_providers_has_nothing_to_check() {
        let app: AppConfig = toml::from_str("sender = \"debug\"").unwrap();
        assert!(check_credentials("default", &app).is_empty());
    }
}
