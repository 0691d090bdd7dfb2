//! Provider payloads, built from a message before anything is sent, with the providers' size
//! limits checked here. The adapters add only transport concerns (authentication, encryption,
//! HTTP).

pub mod apns;
pub mod fcm;
pub mod onesignal;
pub mod webpush;

use time::OffsetDateTime;

use crate::app::Application;
use crate::ids::UserId;
use crate::message::{MessageSpec, OptionError};
use crate::token::DeviceToken;

pub use apns::{ApnsHeaders, ApnsPushType, ApnsRequest};
pub use fcm::FcmRequest;
pub use onesignal::OneSignalRequest;
pub use webpush::{Urgency, WebPushRequest};

/// One provider request, ready for the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A request to APNs: the device token, the headers and the JSON body.
    Apns(ApnsRequest),
    /// The JSON body of an FCM HTTP v1 `messages:send` request.
    Fcm(FcmRequest),
    /// A Web Push plaintext with its RFC 8030 headers; the adapter encrypts it for the
    /// subscription (RFC 8291).
    Webpush(WebPushRequest),
    /// The JSON body of a OneSignal "Create notification" request for one external user id.
    Onesignal(OneSignalRequest),
}

impl Payload {
    /// The same notification for another device of the same platform, when only the token
    /// differs: an APNs request carries the token only in its path, and an FCM message in
    /// its body beside a part that does not depend on the device, so a fan-out builds and
    /// checks the payload once and copies it. `None` otherwise: Web Push encrypts for each
    /// subscription, so its payloads are built for each device.
    #[must_use]
    pub fn for_device(&self, token: &DeviceToken) -> Option<Payload> {
        match (self, token) {
            (Payload::Apns(request), DeviceToken::Apns { token }) => {
                Some(Payload::Apns(ApnsRequest {
                    device_token: token.as_str().to_owned(),
                    headers: request.headers.clone(),
                    body: request.body.clone(),
                }))
            }
            (Payload::Fcm(request), DeviceToken::Fcm { token }) => {
                request.for_token(token).map(Payload::Fcm)
            }
            _ => None,
        }
    }
}

/// Who one payload is for.
#[derive(Debug, Clone, Copy)]
pub enum PayloadTarget<'a> {
    /// A registered device: the payload follows its platform.
    Device(&'a DeviceToken),
    /// A OneSignal external user id.
    ExternalUser(&'a UserId),
}

/// Why a payload could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The payload is over the provider's limit.
    #[error("{provider} payload is {size} bytes, over the {provider} limit of {limit} bytes")]
    TooLarge {
        /// The provider whose limit it is: `APNs`, `FCM`, `Web Push` or `OneSignal`.
        provider: &'static str,
        /// The provider's limit, in bytes.
        limit: usize,
        /// The payload's size in bytes, measured as the provider measures it (see each builder).
        size: usize,
    },
    /// The message's custom data uses a key the provider reserves for itself.
    #[error("{provider} reserves the custom data key {key:?}; rename it in extra_data")]
    ReservedKey {
        /// The provider that reserves the key.
        provider: &'static str,
        /// The key of the message's `extra_data` that the provider reserves.
        key: String,
    },
    /// An option of the message is refused, with the error
    /// [`PushOptions::validate`](crate::message::PushOptions::validate) gives (and
    /// the service returns as [`SendError::Invalid`](crate::service::SendError::Invalid)):
    /// every builder checks the options itself, so that a payload built outside the service
    /// keeps the providers' limits too.
    #[error(transparent)]
    Invalid(#[from] OptionError),
    /// The application lacks a setting the provider needs.
    #[error("application {app} has no {setting} setting, which {provider} needs")]
    MissingSetting {
        /// The id of the application that lacks the setting.
        app: String,
        /// The provider that needs the setting.
        provider: &'static str,
        /// The missing setting, as the configuration names it (`onesignal.app_id`).
        setting: &'static str,
    },
}

/// Builds the payload for one target of a message.
///
/// # Errors
/// [`PayloadError::Invalid`] when an option is refused, [`PayloadError::TooLarge`] when the payload is over the provider's limit, or
/// [`PayloadError::MissingSetting`] when the application lacks the provider's settings, or
/// [`PayloadError::ReservedKey`] when the custom data uses a key the provider reserves.
pub fn build(
    app: &Application,
    spec: &MessageSpec,
    target: PayloadTarget<'_>,
    now: OffsetDateTime,
) -> Result<Payload, PayloadError> {
    match target {
        PayloadTarget::Device(DeviceToken::Apns { token }) => {
            apns::build(app, spec, token, now).map(Payload::Apns)
        }
        PayloadTarget::Device(DeviceToken::Fcm { token }) => {
            fcm::build(spec, token, now).map(Payload::Fcm)
        }
        PayloadTarget::Device(DeviceToken::Webpush { subscription }) => {
            webpush::build(spec, subscription).map(Payload::Webpush)
        }
        PayloadTarget::ExternalUser(user) => {
            onesignal::build(app, spec, user).map(Payload::Onesignal)
        }
    }
}
