//! APNs payloads: the `aps` dictionary, custom data and the request headers.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::app::Application;
use crate::message::{MessageSpec, Priority};
use crate::payload::PayloadError;
use crate::token::ApnsToken;

/// The APNs payload limit in bytes.
pub const LIMIT: usize = 4096;
/// The APNs payload limit for VoIP pushes in bytes.
pub const VOIP_LIMIT: usize = 5120;

const PROVIDER: &str = "APNs";

/// The `apns-push-type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApnsPushType {
    /// A notification the user notices: an alert, a badge or a sound.
    Alert,
    /// A silent push that only wakes the app (`content-available` and nothing the user notices);
    /// Apple requires priority 5 for it.
    Background,
}

impl ApnsPushType {
    /// The header's value: `alert` or `background`.
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
    /// The bundle id. Required with token authentication; with certificate authentication
    /// APNs takes the certificate's topic when it is absent. The debug sender needs none.
    pub topic: Option<String>,
    /// The `apns-push-type` header, which Apple requires to match the payload.
    pub push_type: ApnsPushType,
    /// 10 (send at once) or 5 (consider power).
    pub priority: u8,
    /// `apns-expiration` as a UNIX time in seconds; `None` leaves the header out.
    pub expiration: Option<i64>,
    /// `apns-collapse-id`: a notification replaces the one on the device with the same id (the
    /// message's collapse key, at most 64 bytes).
    pub collapse_id: Option<String>,
}

/// One APNs request: `POST /3/device/{device_token}` with these headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsRequest {
    /// The device token (64 to 200 lower-case hexadecimal characters), the last segment of the
    /// request's path.
    pub device_token: String,
    /// The headers that shape the delivery.
    pub headers: ApnsHeaders,
    /// The JSON body, shared by the requests of a fan-out (it does not depend on the device).
    pub body: Arc<[u8]>,
}

/// Builds the APNs request for one device.
///
/// The body is `{"aps": {...}, <custom data>}`: the message's `extra_data` keys sit at the top
/// level next to `aps`, and the message's `url` is added as the custom key `url` unless
/// `extra_data` already has one.
///
/// A message with `content_available` and nothing the user would notice (no heading, body,
/// badge or sound) is a background push: no `alert`, push type `background` and priority 5,
/// which Apple requires for background pushes. Every other message is an `alert` push.
///
/// # Errors
/// [`PayloadError::Invalid`] when an option is refused, [`PayloadError::TooLarge`] over the
/// limit.
pub fn build(
    app: &Application,
    spec: &MessageSpec,
    token: &ApnsToken,
    now: OffsetDateTime,
) -> Result<ApnsRequest, PayloadError> {
    spec.options.validate()?;
    let topic = app
        .apns
        .as_ref()
        .map(|s| s.topic.clone())
        .filter(|t| !t.is_empty());

    let content = &spec.content;
    let options = &spec.options;
    let heading = content.heading.as_deref().filter(|h| !h.is_empty());
    let has_alert = heading.is_some() || !content.body.is_empty();
    // Apple's `background` push type is for pushes that only wake the app; a badge or a sound
    // is user-visible and needs the `alert` push type.
    let background = options.content_available
        && !has_alert
        && options.badge.is_none()
        && options.sound.is_none();

    let mut aps = Map::new();
    if has_alert {
        let mut alert = Map::new();
        if let Some(heading) = heading {
            alert.insert("title".into(), json!(heading));
        }
        if !content.body.is_empty() {
            alert.insert("body".into(), json!(content.body));
        }
        aps.insert("alert".into(), Value::Object(alert));
    }
    if let Some(badge) = options.badge {
        aps.insert("badge".into(), json!(badge));
    }
    if let Some(sound) = &options.sound {
        aps.insert("sound".into(), json!(sound));
    }
    if let Some(thread_id) = &options.thread_id {
        aps.insert("thread-id".into(), json!(thread_id));
    }
    if let Some(category) = &options.category {
        aps.insert("category".into(), json!(category));
    }
    if options.content_available {
        aps.insert("content-available".into(), json!(1));
    }
    if options.mutable_content {
        aps.insert("mutable-content".into(), json!(1));
    }

    let mut root = Map::new();
    if let Some(extra) = &content.extra_data {
        // Apple reserves `aps` for its own dictionary, so a custom `aps` key can never reach
        // the app; it is left out rather than allowed to replace the real one.
        for (key, value) in extra.iter().filter(|(key, _)| key.as_str() != "aps") {
            root.insert(key.clone(), value.clone());
        }
    }
    if let Some(url) = &content.url
        && !root.contains_key("url")
    {
        root.insert("url".into(), json!(url));
    }
    root.insert("aps".into(), Value::Object(aps));

    let body = Value::Object(root).to_string().into_bytes();
    if body.len() > LIMIT {
        return Err(PayloadError::TooLarge {
            provider: PROVIDER,
            limit: LIMIT,
            size: body.len(),
        });
    }

    let (push_type, priority) = if background {
        (ApnsPushType::Background, 5)
    } else {
        let priority = match spec.priority {
            Priority::High => 10,
            Priority::Normal => 5,
        };
        (ApnsPushType::Alert, priority)
    };
    // An expiration of 0 tells APNs to try once and not store the notification.
    let expiration = options.time_to_live.map(|ttl| match ttl {
        0 => 0,
        ttl => now.unix_timestamp() + i64::from(ttl),
    });

    Ok(ApnsRequest {
        device_token: token.as_str().to_owned(),
        headers: ApnsHeaders {
            topic,
            push_type,
            priority,
            expiration,
            collapse_id: options.collapse_key.clone(),
        },
        body: body.into(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};
    use time::OffsetDateTime;

    use super::*;
    use crate::app::{ApnsSettings, Application, SenderKind};
    use crate::ids::{AppId, UserId};
    use crate::message::{Content, MessageSpec, Priority, PushOptions, Target};
    use crate::token::ApnsToken;

    fn app() -> Application {
        let mut app = Application::new(AppId::parse("shop").unwrap(), SenderKind::Direct);
        app.apns = Some(ApnsSettings {
            topic: "com.example.shop".into(),
        });
        app
    }

    fn token() -> ApnsToken {
        ApnsToken::parse(&"ab".repeat(32)).unwrap()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
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

    fn text(body: &str) -> Content {
        Content {
            body: body.into(),
            ..Content::default()
        }
    }

    fn body_json(request: &ApnsRequest) -> Value {
        serde_json::from_slice(&request.body).expect("the body is JSON")
    }

    #[test]
    fn a_full_message_fills_aps_custom_data_and_headers() {
        let extra = json!({"order": 42, "nested": {"a": [1, 2]}});
        let content = Content {
            heading: Some("Order shipped".into()),
            body: "Your parcel is on its way".into(),
            url: Some("https://example.com/orders/42".into()),
            extra_data: extra.as_object().cloned(),
        };
        let options = PushOptions {
            badge: Some(3),
            sound: Some("default".into()),
            thread_id: Some("orders".into()),
            category: Some("ORDER".into()),
            collapse_key: Some("order-42".into()),
            time_to_live: Some(3600),
            content_available: true,
            mutable_content: true,
        };

        let request = build(&app(), &spec(content, options), &token(), now()).unwrap();

        assert_eq!(
            body_json(&request),
            json!({
                "aps": {
                    "alert": {"title": "Order shipped", "body": "Your parcel is on its way"},
                    "badge": 3,
                    "sound": "default",
                    "thread-id": "orders",
                    "category": "ORDER",
                    "content-available": 1,
                    "mutable-content": 1,
                },
                "order": 42,
                "nested": {"a": [1, 2]},
                "url": "https://example.com/orders/42",
            })
        );
        assert_eq!(request.device_token, "ab".repeat(32));
        assert_eq!(
            request.headers,
            ApnsHeaders {
                topic: Some("com.example.shop".into()),
                push_type: ApnsPushType::Alert,
                priority: 10,
                expiration: Some(1_700_003_600),
                collapse_id: Some("order-42".into()),
            }
        );
    }

    #[test]
    fn a_request_retargeted_to_another_device_equals_one_built_for_it() {
        let options = PushOptions {
            badge: Some(1),
            time_to_live: Some(60),
            ..PushOptions::default()
        };
        let spec = spec(text("Hello"), options);
        let other = ApnsToken::parse(&"cd".repeat(32)).unwrap();
        let first = crate::payload::Payload::Apns(build(&app(), &spec, &token(), now()).unwrap());

        let retargeted = first
            .for_device(&crate::token::DeviceToken::Apns {
                token: other.clone(),
            })
            .expect("an APNs request can be retargeted");

        assert_eq!(
            retargeted,
            crate::payload::Payload::Apns(build(&app(), &spec, &other, now()).unwrap())
        );
        let fcm = crate::token::DeviceToken::Fcm {
            token: crate::token::FcmToken::parse(&"f".repeat(140)).unwrap(),
        };
        assert_eq!(first.for_device(&fcm), None, "not across platforms");
    }

    #[test]
    fn a_minimal_message_has_only_the_alert_body() {
        let request = build(
            &app(),
            &spec(text("Hello"), PushOptions::default()),
            &token(),
            now(),
        )
        .unwrap();

        assert_eq!(
            body_json(&request),
            json!({"aps": {"alert": {"body": "Hello"}}})
        );
        assert_eq!(
            request.headers,
            ApnsHeaders {
                topic: Some("com.example.shop".into()),
                push_type: ApnsPushType::Alert,
                priority: 10,
                expiration: None,
                collapse_id: None,
            }
        );
    }

    #[test]
    fn normal_priority_becomes_apns_priority_five() {
        let mut spec = spec(text("Hello"), PushOptions::default());
        spec.priority = Priority::Normal;

        let request = build(&app(), &spec, &token(), now()).unwrap();

        assert_eq!(request.headers.priority, 5);
        assert_eq!(request.headers.push_type, ApnsPushType::Alert);
    }

    #[test]
    fn a_content_available_message_without_text_is_a_background_push_at_priority_five() {
        let options = PushOptions {
            content_available: true,
            ..PushOptions::default()
        };
        let content = Content {
            extra_data: json!({"sync": true}).as_object().cloned(),
            ..Content::default()
        };

        let request = build(&app(), &spec(content, options), &token(), now()).unwrap();

        assert_eq!(
            body_json(&request),
            json!({"aps": {"content-available": 1}, "sync": true})
        );
        assert_eq!(request.headers.push_type, ApnsPushType::Background);
        assert_eq!(request.headers.priority, 5);
    }

    #[test]
    fn a_content_available_message_with_a_badge_is_an_alert_push() {
        let options = PushOptions {
            content_available: true,
            badge: Some(0),
            ..PushOptions::default()
        };

        let request = build(&app(), &spec(text(""), options), &token(), now()).unwrap();

        assert_eq!(
            body_json(&request),
            json!({"aps": {"badge": 0, "content-available": 1}})
        );
        assert_eq!(request.headers.push_type, ApnsPushType::Alert);
    }

    #[test]
    fn a_time_to_live_of_zero_becomes_expiration_zero() {
        let options = PushOptions {
            time_to_live: Some(0),
            ..PushOptions::default()
        };

        let request = build(&app(), &spec(text("Hi"), options), &token(), now()).unwrap();

        assert_eq!(request.headers.expiration, Some(0));
    }

    #[test]
    fn custom_data_cannot_replace_aps_or_a_custom_url() {
        let content = Content {
            body: "Hi".into(),
            url: Some("https://example.com/ignored".into()),
            extra_data: json!({"aps": {"badge": 99}, "url": "app://mine"})
                .as_object()
                .cloned(),
            ..Content::default()
        };

        let request = build(
            &app(),
            &spec(content, PushOptions::default()),
            &token(),
            now(),
        )
        .unwrap();

        assert_eq!(
            body_json(&request),
            json!({"aps": {"alert": {"body": "Hi"}}, "url": "app://mine"})
        );
    }

    #[test]
    fn an_application_without_a_topic_leaves_the_header_out() {
        let mut app = app();
        app.apns = None;

        let result = build(
            &app,
            &spec(text("Hi"), PushOptions::default()),
            &token(),
            now(),
        );

        assert_eq!(result.map(|r| r.headers.topic), Ok(None));
    }

    #[test]
    fn the_too_large_error_names_provider_limit_and_size() {
        let error = PayloadError::TooLarge {
            provider: PROVIDER,
            limit: LIMIT,
            size: 4100,
        };

        assert_eq!(
            error.to_string(),
            "APNs payload is 4100 bytes, over the APNs limit of 4096 bytes"
        );
    }

    /// A message whose body is padded with ASCII letters so that the payload is `target` bytes
    /// long. The rest of the body is `prefix`, whose JSON encoding may be longer than its UTF-8
    /// bytes; the padding adds exactly one byte per letter.
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
        let overhead = build(&app(), &base, &token(), now()).unwrap().body.len();
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

            let ok = build(&app(), &at_limit, &token(), now());
            let too_large = build(&app(), &over, &token(), now());

            prop_assert_eq!(ok.map(|r| r.body.len()), Ok(LIMIT));
            prop_assert_eq!(too_large, Err(PayloadError::TooLarge {
                provider: "APNs",
                limit: LIMIT,
                size: LIMIT + 1,
            }));
        }
    }
}
