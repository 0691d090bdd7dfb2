//! FCM HTTP v1 payloads.

use crate::message::MessageSpec;
use crate::payload::PayloadError;
use crate::token::FcmToken;

/// The FCM payload limit in bytes.
pub const LIMIT: usize = 4096;

/// One FCM request: the JSON body of `POST /v1/projects/{project_id}/messages:send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmRequest {
    pub token: String,
    /// `{"message": {...}}`.
    pub body: Vec<u8>,
}

/// Builds the FCM request for one device.
///
/// # Errors
/// [`PayloadError::TooLarge`] over the limit.
pub fn build(_spec: &MessageSpec, _token: &FcmToken) -> Result<FcmRequest, PayloadError> {
    Err(PayloadError::TooLarge {
        provider: "FCM",
        limit: LIMIT,
        size: 0,
    })
}
