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

use crate::config::Config;
use crate::debug::DebugSender;

/// Builds the providers of every configured application. With `debug = true` the debug sender
/// serves every channel, so nothing leaves the process whatever a message targets.
///
/// # Errors
/// When a credential cannot be loaded or a client cannot be built; the error names the
/// application and the setting.
pub fn build(config: &Config) -> anyhow::Result<Providers> {
    let debug: Arc<dyn PushProvider> = Arc::new(DebugSender);
    let mut providers = Providers::default().with(Channel::Debug, debug.clone());
    if config.debug {
        for channel in [
            Channel::Apns,
            Channel::Fcm,
            Channel::Webpush,
            Channel::Onesignal,
        ] {
            providers = providers.with(channel, debug.clone());
        }
        return Ok(providers);
    }
    let roots = http::extra_roots(&config.tls)?;
    if let Some(apns) = apns::ApnsProvider::from_config(config, &roots)? {
        providers = providers.with(Channel::Apns, Arc::new(apns));
    }
    if let Some(fcm) = fcm::FcmProvider::from_config(config, &roots)? {
        providers = providers.with(Channel::Fcm, Arc::new(fcm));
    }
    if let Some(webpush) = webpush::WebPushProvider::from_config(config, &roots)? {
        providers = providers.with(Channel::Webpush, Arc::new(webpush));
    }
    if let Some(onesignal) = onesignal::OneSignalProvider::from_config(config, &roots)? {
        providers = providers.with(Channel::Onesignal, Arc::new(onesignal));
    }
    Ok(providers)
}
