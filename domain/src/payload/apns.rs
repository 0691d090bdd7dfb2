//! APNs payloads: the `aps` dictionary, custom data and the request headers.

use time::OffsetDateTime;

use crate::app::Application;
use crate::message::MessageSpec;
use crate::payload::PayloadError;
use crate::token::ApnsToken;

/// The APNs payload limit in bytes.
pub const LIMIT: usize = 4096;
/// The APNs payload limit for VoIP pushes in bytes.
pub const VOIP_LIMIT: usize = 5120;

/// The `apns-push-type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsPushType {
    Alert,
    Background,
}

impl ApnsPushType {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ApnsPushType::Alert => "alert",
            ApnsPushType::Background => "background",
        }
    }
}

/// The request headers Clarion sets (besides `authorization` and `apns-id`, which the adapter
/// sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsHeaders {
    pub topic: String,
    pub push_type: ApnsPushType,
    /// 10 (send at once) or 5 (consider power).
    pub priority: u8,
    /// `apns-expiration` as a UNIX time in seconds; `None` leaves the header out.
    pub expiration: Option<i64>,
    pub collapse_id: Option<String>,
}

/// One APNs request: `POST /3/device/{device_token}` with these headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsRequest {
    pub device_token: String,
    pub headers: ApnsHeaders,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Builds the APNs request for one device.
///
/// # Errors
/// [`PayloadError::MissingSetting`] without `apns.topic`, [`PayloadError::TooLarge`] over the
/// limit.
pub fn build(
    _app: &Application,
    _spec: &MessageSpec,
    _token: &ApnsToken,
    _now: OffsetDateTime,
) -> Result<ApnsRequest, PayloadError> {
    Err(PayloadError::MissingSetting {
        app: String::new(),
        provider: "APNs",
        setting: "(payload builder not written yet)",
    })
}
