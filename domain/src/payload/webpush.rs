//! Web Push payloads: the JSON plaintext and the RFC 8030 headers.

use crate::message::MessageSpec;
use crate::payload::PayloadError;
use crate::token::WebPushSubscription;

/// The largest plaintext that fits one 4096-byte aes128gcm record (RFC 8291): 4096 minus the
/// 86-byte header, the 16-byte tag and the 1-byte padding delimiter.
pub const LIMIT: usize = 3993;

/// The RFC 8030 `Urgency` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// One Web Push request before encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPushRequest {
    pub subscription: WebPushSubscription,
    /// The JSON plaintext the service worker receives.
    pub plaintext: Vec<u8>,
    /// The `TTL` header in seconds.
    pub ttl: u32,
    pub urgency: Urgency,
    /// The `Topic` header.
    pub topic: Option<String>,
}

/// Builds the Web Push request for one subscription.
///
/// # Errors
/// [`PayloadError::TooLarge`] over the limit.
pub fn build(
    _spec: &MessageSpec,
    _subscription: &WebPushSubscription,
) -> Result<WebPushRequest, PayloadError> {
    Err(PayloadError::TooLarge {
        provider: "Web Push",
        limit: LIMIT,
        size: 0,
    })
}
