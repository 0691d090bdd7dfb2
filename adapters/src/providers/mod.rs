//! The push providers: APNs over HTTP/2, FCM HTTP v1, Web Push and OneSignal, each behind the
//! domain's [`PushProvider`] port, plus the debug sender. Every endpoint comes from the
//! configuration, with the real hosts as defaults.

pub mod apns;
pub mod fcm;
pub mod http;
pub mod onesignal;
pub mod webpush;

use std::sync::Arc;

use clarion_domain::message::Channel;
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
        providers = with(providers, Channel::Apns, Arc::new(apns));
    }
    if let Some(fcm) = fcm::FcmProvider::from_config(config, &roots)? {
        providers = with(providers, Channel::Fcm, Arc::new(fcm));
    }
    if let Some(webpush) = webpush::WebPushProvider::from_config(config, &roots)? {
        providers = with(providers, Channel::Webpush, Arc::new(webpush));
    }
    if let Some(onesignal) = onesignal::OneSignalProvider::from_config(config, &roots)? {
        providers = with(providers, Channel::Onesignal, Arc::new(onesignal));
    }
    Ok(providers)
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
        });
        app
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
