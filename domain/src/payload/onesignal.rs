//! OneSignal payloads: a notification to one external user id.

use crate::app::Application;
use crate::ids::UserId;
use crate::message::MessageSpec;
use crate::payload::PayloadError;

/// The OneSignal payload limit in bytes.
pub const LIMIT: usize = 4096;

/// One OneSignal request: the JSON body of `POST {endpoint}/notifications`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneSignalRequest {
    pub body: Vec<u8>,
}

/// Builds the OneSignal request for one external user id.
///
/// # Errors
/// [`PayloadError::MissingSetting`] without OneSignal settings, [`PayloadError::TooLarge`] over
/// the limit.
pub fn build(
    _app: &Application,
    _spec: &MessageSpec,
    _user: &UserId,
) -> Result<OneSignalRequest, PayloadError> {
    Err(PayloadError::TooLarge {
        provider: "OneSignal",
        limit: LIMIT,
        size: 0,
    })
}
