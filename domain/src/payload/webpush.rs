//! Web Push payloads: the JSON plaintext and the RFC 8030 headers.

use serde_json::{Map, Value, json};

use crate::message::{MessageSpec, Priority};
use crate::payload::PayloadError;
use crate::token::WebPushSubscription;

/// The largest plaintext that fits one 4096-byte aes128gcm record (RFC 8291): 4096 minus the
/// 86-byte header, the 16-byte tag and the 1-byte padding delimiter.
pub const LIMIT: usize = 3993;

/// The `TTL` header when the message sets no time-to-live: one day. Push services may keep a
/// message up to four weeks, but a notification that old is rarely still worth showing.
pub const DEFAULT_TTL: u32 = 86_400;

const PROVIDER: &str = "Web Push";

/// The RFC 8030 `Urgency` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// `very-low`: deliver only while the device is on power and Wi-Fi.
    VeryLow,
    /// `low`: deliver on power or Wi-Fi.
    Low,
    /// `normal`: deliver unless the battery is low; what a message of
    /// [`Priority::Normal`] gets.
    Normal,
    /// `high`: deliver at once, even on a low battery; what a message of
    /// [`Priority::High`] gets.
    High,
}

impl Urgency {
    /// The header's value, such as `very-low`.
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
    /// The subscription the adapter encrypts the plaintext for and posts it to.
    pub subscription: WebPushSubscription,
    /// The JSON plaintext the service worker receives.
    pub plaintext: Vec<u8>,
    /// The `TTL` header in seconds.
    pub ttl: u32,
    /// The `Urgency` header, from the message's priority.
    pub urgency: Urgency,
    /// The `Topic` header.
    pub topic: Option<String>,
}

/// Builds the Web Push request for one subscription.
///
/// Web Push has no notification format of its own: the service worker receives the plaintext
/// and shows it. Clarion sends a JSON object that maps onto `showNotification(title, options)`:
///
/// ```json
/// {"title": "...", "body": "...", "url": "...", "data": {...}, "badge": 3, "tag": "..."}
/// ```
///
/// `body` is always present; `title` (the heading), `url`, `data` (the message's `extra_data`,
/// as given), `badge` and `tag` (the collapse key) only when the message has them. The `TTL`
/// header is the time-to-live or [`DEFAULT_TTL`], `Urgency` follows the priority and `Topic`
/// is the collapse key.
///
/// # Errors
/// [`PayloadError::Invalid`] when an option is refused, [`PayloadError::TooLarge`] when the
/// plaintext is over [`LIMIT`].
pub fn build(
    spec: &MessageSpec,
    subscription: &WebPushSubscription,
) -> Result<WebPushRequest, PayloadError> {
    spec.options.validate()?;
    let content = &spec.content;
    let options = &spec.options;

    let mut plaintext = Map::new();
    if let Some(heading) = content.heading.as_deref().filter(|h| !h.is_empty()) {
        plaintext.insert("title".into(), json!(heading));
    }
    plaintext.insert("body".into(), json!(content.body));
    if let Some(url) = &content.url {
        plaintext.insert("url".into(), json!(url));
    }
    if let Some(extra) = content.extra_data.as_ref().filter(|e| !e.is_empty()) {
        plaintext.insert("data".into(), Value::Object(extra.clone()));
    }
    if let Some(badge) = options.badge {
        plaintext.insert("badge".into(), json!(badge));
    }
    if let Some(key) = &options.collapse_key {
        plaintext.insert("tag".into(), json!(key));
    }

    let plaintext = Value::Object(plaintext).to_string().into_bytes();
    if plaintext.len() > LIMIT {
        return Err(PayloadError::TooLarge {
            provider: PROVIDER,
            limit: LIMIT,
            size: plaintext.len(),
        });
    }

    let urgency = match spec.priority {
        Priority::High => Urgency::High,
        Priority::Normal => Urgency::Normal,
    };
    Ok(WebPushRequest {
        subscription: subscription.clone(),
        plaintext,
        ttl: options.time_to_live.unwrap_or(DEFAULT_TTL),
        urgency,
        topic: options.collapse_key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::ids::{AppId, UserId};
    use crate::message::{Content, MessageSpec, Priority, PushOptions, Target};
    use crate::token::{EndpointPolicy, WebPushSubscription};

    fn subscription() -> WebPushSubscription {
        WebPushSubscription::parse(
            "https://push.example.com/s/1",
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
            EndpointPolicy::PublicOnly,
        )
        .unwrap()
    }

    fn spec(content: Content, options: PushOptions) -> MessageSpec {
        MessageSpec {
            app: AppId::parse("shop").unwrap(),
            target: Target::User {
                user_id: UserId::parse("alice").unwrap(),
            },
            content,
            template_slug: None,
            tag: None,
            priority: Priority::High,
            options,
            related_objects: Vec::new(),
            retry_sending: true,
        }
    }

    fn plaintext_json(request: &WebPushRequest) -> Value {
        serde_json::from_slice(&request.plaintext).expect("the plaintext is JSON")
    }

    #[test]
    fn a_full_message_fills_the_plaintext_and_headers() {
        let content = Content {
            heading: Some("Order shipped".into()),
            body: "Your parcel is on its way".into(),
            url: Some("https://example.com/orders/42".into()),
            extra_data: json!({"order": 42}).as_object().cloned(),
        };
        let options = PushOptions {
            badge: Some(3),
            collapse_key: Some("order-42".into()),
            time_to_live: Some(600),
            ..PushOptions::default()
        };

        let request = build(&spec(content, options), &subscription()).unwrap();

        assert_eq!(
            plaintext_json(&request),
            json!({
                "title": "Order shipped",
                "body": "Your parcel is on its way",
                "url": "https://example.com/orders/42",
                "data": {"order": 42},
                "badge": 3,
                "tag": "order-42",
            })
        );
        assert_eq!(request.subscription, subscription());
        assert_eq!(request.ttl, 600);
        assert_eq!(request.urgency, Urgency::High);
        assert_eq!(request.topic.as_deref(), Some("order-42"));
    }

    #[test]
    fn a_minimal_message_has_only_a_body_and_the_default_ttl() {
        let mut spec = spec(
            Content {
                body: "Hello".into(),
                ..Content::default()
            },
            PushOptions::default(),
        );
        spec.priority = Priority::Normal;

        let request = build(&spec, &subscription()).unwrap();

        assert_eq!(plaintext_json(&request), json!({"body": "Hello"}));
        assert_eq!(request.ttl, DEFAULT_TTL);
        assert_eq!(request.urgency, Urgency::Normal);
        assert_eq!(request.topic, None);
    }

    /// A message whose body is padded with ASCII letters so that the plaintext is `target`
    /// bytes long; each letter adds exactly one byte.
    fn padded_spec(
        heading: Option<String>,
        prefix: &str,
        extra: Map<String, Value>,
        target: usize,
    ) -> MessageSpec {
        let content = |body: String| Content {
            heading: heading.clone(),
            body,
            url: Some("https://example.com/x".into()),
            extra_data: Some(extra.clone()),
        };
        let base = spec(content(prefix.to_owned()), PushOptions::default());
        let overhead = build(&base, &subscription()).unwrap().plaintext.len();
        let body = format!("{prefix}{}", "x".repeat(target - overhead));
        spec(content(body), PushOptions::default())
    }

    fn extra_data() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map("[a-z]{1,8}", "\\PC{0,20}", 0..5)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    }

    proptest! {
        #[test]
        fn a_payload_at_the_limit_passes_and_one_byte_over_fails(
            heading in proptest::option::of("\\PC{1,40}"),
            prefix in "\\PC{1,40}",
            extra in extra_data(),
        ) {
            let at_limit = padded_spec(heading.clone(), &prefix, extra.clone(), LIMIT);
            let over = padded_spec(heading, &prefix, extra, LIMIT + 1);

            let ok = build(&at_limit, &subscription());
            let too_large = build(&over, &subscription());

            prop_assert_eq!(ok.map(|r| r.plaintext.len()), Ok(LIMIT));
            prop_assert_eq!(too_large, Err(PayloadError::TooLarge {
                provider: "Web Push",
                limit: LIMIT,
                size: LIMIT + 1,
            }));
        }
    }
}
