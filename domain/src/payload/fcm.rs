//! FCM HTTP v1 payloads.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::message::{MessageSpec, Priority};
use crate::payload::PayloadError;
use crate::token::FcmToken;

/// The FCM payload limit in bytes.
pub const LIMIT: usize = 4096;

const PROVIDER: &str = "FCM";

/// Custom data keys FCM reserves for itself.
const RESERVED_KEYS: [&str; 3] = ["from", "notification", "message_type"];
/// Prefixes of custom data keys FCM reserves for itself.
const RESERVED_PREFIXES: [&str; 2] = ["google.", "gcm."];

/// One FCM request: the JSON body of `POST /v1/projects/{project_id}/messages:send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmRequest {
    /// The registration token the body addresses, kept beside the body so that a fan-out can copy
    /// the request for another device ([`FcmRequest::for_token`]).
    pub token: String,
    /// `{"message": {...}}`.
    pub body: Vec<u8>,
}

/// Builds the FCM request for one device.
///
/// The message carries a `notification` (title and body) unless it is silent
/// (`content_available` without heading or body), `data` with the custom data, an `android`
/// block (priority, TTL, collapse key, sound) and an `apns` block (headers and the `aps`
/// options) for iOS devices.
///
/// FCM v1 `data` values must be strings: string values of `extra_data` are kept as they are and
/// every other value is replaced by its JSON text (`5` becomes `"5"`, `{"a":1}` becomes
/// `"{\"a\":1}"`). The message's `url` is added as `data.url` unless `extra_data` has a `url`.
///
/// The size checked against [`LIMIT`] is the byte length of the serialised JSON object
/// `{"notification": ..., "data": ...}` holding only those of the two keys the message has:
/// the part FCM delivers to the app. The token and the platform blocks are not counted.
///
/// With a time-to-live, the `apns` block carries `apns-expiration` as `now` plus the
/// time-to-live in UNIX seconds (0 stays 0: "deliver once, do not store"), as FCM forwards it
/// to APNs unchanged.
///
/// # Errors
/// [`PayloadError::Invalid`] when an option is refused,
/// [`PayloadError::ReservedKey`] when `extra_data` uses a key FCM reserves (`from`,
/// `notification`, `message_type`, or one starting with `google.` or `gcm.`),
/// [`PayloadError::TooLarge`] over the limit.
pub fn build(
    spec: &MessageSpec,
    token: &FcmToken,
    now: OffsetDateTime,
) -> Result<FcmRequest, PayloadError> {
    spec.options.validate()?;
    let content = &spec.content;
    let options = &spec.options;
    let heading = content.heading.as_deref().filter(|h| !h.is_empty());
    let has_notification = heading.is_some() || !content.body.is_empty();

    let mut delivered = Map::new();
    if has_notification {
        let mut notification = Map::new();
        if let Some(heading) = heading {
            notification.insert("title".into(), json!(heading));
        }
        if !content.body.is_empty() {
            notification.insert("body".into(), json!(content.body));
        }
        delivered.insert("notification".into(), Value::Object(notification));
    }
    let data = data(spec)?;
    if !data.is_empty() {
        delivered.insert("data".into(), Value::Object(data));
    }

    let size = Value::Object(delivered.clone()).to_string().len();
    if size > LIMIT {
        return Err(PayloadError::TooLarge {
            provider: PROVIDER,
            limit: LIMIT,
            size,
        });
    }

    let mut android = Map::new();
    let android_priority = match spec.priority {
        Priority::High => "HIGH",
        Priority::Normal => "NORMAL",
    };
    android.insert("priority".into(), json!(android_priority));
    if let Some(ttl) = options.time_to_live {
        android.insert("ttl".into(), json!(format!("{ttl}s")));
    }
    if let Some(key) = &options.collapse_key {
        android.insert("collapse_key".into(), json!(key));
    }
    if has_notification && let Some(sound) = &options.sound {
        android.insert("notification".into(), json!({ "sound": sound }));
    }

    let mut message = Map::new();
    message.extend(delivered);
    message.insert("android".into(), Value::Object(android));
    message.insert("apns".into(), apns_config(spec, has_notification, now));

    // The token goes first, so that the same message for another device is this body with
    // the token replaced (`FcmRequest::for_token`). `android` is always there: the rest of
    // the message is never empty.
    let rest = Value::Object(message).to_string();
    let rest = rest.strip_prefix('{').unwrap_or(&rest);
    let mut body = token_head(token.as_str()).into_bytes();
    body.extend_from_slice(rest.as_bytes());
    body.push(b'}');
    Ok(FcmRequest {
        token: token.as_str().to_owned(),
        body,
    })
}

/// The start of a body for `token`: `{"message":{"token":"<token>",`.
fn token_head(token: &str) -> String {
    format!(
        "{{\"message\":{{\"token\":{},",
        Value::String(token.to_owned())
    )
}

impl FcmRequest {
    /// The same request for the device of `token`: a copy of the body with the token replaced,
    /// since nothing else in it depends on the device. `None` when the body does not start
    /// with its token as [`build`] writes it.
    #[must_use]
    pub fn for_token(&self, token: &FcmToken) -> Option<FcmRequest> {
        let rest = self.body.strip_prefix(token_head(&self.token).as_bytes())?;
        let mut body = token_head(token.as_str()).into_bytes();
        body.extend_from_slice(rest);
        Some(FcmRequest {
            token: token.as_str().to_owned(),
            body,
        })
    }
}

/// The `data` map: custom data with every value as a string, plus the message's `url`.
fn data(spec: &MessageSpec) -> Result<Map<String, Value>, PayloadError> {
    let mut data = Map::new();
    if let Some(extra) = &spec.content.extra_data {
        for (key, value) in extra {
            if RESERVED_KEYS.contains(&key.as_str())
                || RESERVED_PREFIXES.iter().any(|p| key.starts_with(p))
            {
                return Err(PayloadError::ReservedKey {
                    provider: PROVIDER,
                    key: key.clone(),
                });
            }
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            data.insert(key.clone(), Value::String(text));
        }
    }
    if let Some(url) = &spec.content.url
        && !data.contains_key("url")
    {
        data.insert("url".into(), json!(url));
    }
    Ok(data)
}

/// The `apns` block: the headers FCM forwards to APNs and the `aps` options it cannot derive
/// from `notification`.
fn apns_config(spec: &MessageSpec, has_notification: bool, now: OffsetDateTime) -> Value {
    let options = &spec.options;
    // As for direct APNs pushes: a silent push that shows nothing is a background push, which
    // Apple requires at priority 5.
    let background = options.content_available
        && !has_notification
        && options.badge.is_none()
        && options.sound.is_none();
    let priority = match (background, spec.priority) {
        (false, Priority::High) => "10",
        _ => "5",
    };

    let mut headers = Map::new();
    headers.insert("apns-priority".into(), json!(priority));
    if background {
        headers.insert("apns-push-type".into(), json!("background"));
    }
    match options.time_to_live {
        Some(0) => {
            headers.insert("apns-expiration".into(), json!("0"));
        }
        Some(ttl) => {
            let at = now.unix_timestamp() + i64::from(ttl);
            headers.insert("apns-expiration".into(), json!(at.to_string()));
        }
        None => {}
    }
    if let Some(key) = &options.collapse_key {
        headers.insert("apns-collapse-id".into(), json!(key));
    }

    let mut aps = Map::new();
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

    let mut config = Map::new();
    config.insert("headers".into(), Value::Object(headers));
    if !aps.is_empty() {
        config.insert("payload".into(), json!({ "aps": aps }));
    }
    Value::Object(config)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::ids::{AppId, UserId};
    use crate::message::{Content, MessageSpec, Priority, PushOptions, Target};
    use crate::token::FcmToken;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-03-01 10:00 UTC);

    fn token() -> FcmToken {
        FcmToken::parse("fcm-token:APA91b").unwrap()
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

    #[test]
    fn the_request_for_another_token_is_the_one_built_for_it() {
        let options = PushOptions {
            collapse_key: Some("orders".into()),
            time_to_live: Some(3600),
            ..PushOptions::default()
        };
        let spec = spec(
            Content {
                heading: Some("Order \"shipped\"".into()),
                body: "Your parcel: fcm-token:APA91b".into(),
                url: Some("app://orders/1".into()),
                extra_data: Some(Map::from_iter([("n".to_owned(), json!(5))])),
            },
            options,
        );
        let first = build(&spec, &token(), NOW).unwrap();
        let other = FcmToken::parse("other\\token\"x").unwrap();

        let copied = first.for_token(&other).expect("a copy for the other token");

        assert_eq!(copied, build(&spec, &other, NOW).unwrap());
        assert_eq!(body_json(&copied)["message"]["token"], "other\\token\"x");
    }

    fn body_json(request: &FcmRequest) -> Value {
        serde_json::from_slice(&request.body).expect("the body is JSON")
    }

    fn with_extra(extra: Value) -> Content {
        Content {
            body: "Hi".into(),
            extra_data: extra.as_object().cloned(),
            ..Content::default()
        }
    }

    #[test]
    fn a_full_message_fills_notification_data_android_and_apns() {
        let content = Content {
            heading: Some("Order shipped".into()),
            body: "Your parcel is on its way".into(),
            url: Some("https://example.com/orders/42".into()),
            extra_data: json!({"order": "42"}).as_object().cloned(),
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

        let request = build(&spec(content, options), &token(), NOW).unwrap();

        assert_eq!(request.token, "fcm-token:APA91b");
        assert_eq!(
            body_json(&request),
            json!({"message": {
                "token": "fcm-token:APA91b",
                "notification": {"title": "Order shipped", "body": "Your parcel is on its way"},
                "data": {"order": "42", "url": "https://example.com/orders/42"},
                "android": {
                    "priority": "HIGH",
                    "ttl": "3600s",
                    "collapse_key": "order-42",
                    "notification": {"sound": "default"},
                },
                "apns": {
                    "headers": {
                        "apns-priority": "10",
                        "apns-collapse-id": "order-42",
                        "apns-expiration": "1772362800",
                    },
                    "payload": {"aps": {
                        "badge": 3,
                        "sound": "default",
                        "thread-id": "orders",
                        "category": "ORDER",
                        "content-available": 1,
                        "mutable-content": 1,
                    }},
                },
            }})
        );
    }

    #[test]
    fn a_minimal_message_has_a_notification_and_default_platform_blocks() {
        let request = build(&spec(text("Hello"), PushOptions::default()), &token(), NOW).unwrap();

        assert_eq!(
            body_json(&request),
            json!({"message": {
                "token": "fcm-token:APA91b",
                "notification": {"body": "Hello"},
                "android": {"priority": "HIGH"},
                "apns": {"headers": {"apns-priority": "10"}},
            }})
        );
    }

    #[test]
    fn normal_priority_maps_to_android_normal_and_apns_five() {
        let mut spec = spec(text("Hello"), PushOptions::default());
        spec.priority = Priority::Normal;

        let body = body_json(&build(&spec, &token(), NOW).unwrap());

        assert_eq!(body["message"]["android"]["priority"], "NORMAL");
        assert_eq!(body["message"]["apns"]["headers"]["apns-priority"], "5");
    }

    #[test]
    fn a_silent_message_has_no_notification_and_is_a_background_push_on_ios() {
        let options = PushOptions {
            content_available: true,
            time_to_live: Some(0),
            ..PushOptions::default()
        };
        let content = Content {
            extra_data: json!({"sync": true}).as_object().cloned(),
            ..Content::default()
        };

        let request = build(&spec(content, options), &token(), NOW).unwrap();

        assert_eq!(
            body_json(&request),
            json!({"message": {
                "token": "fcm-token:APA91b",
                "data": {"sync": "true"},
                "android": {"priority": "HIGH", "ttl": "0s"},
                "apns": {
                    "headers": {
                        "apns-priority": "5",
                        "apns-push-type": "background",
                        "apns-expiration": "0",
                    },
                    "payload": {"aps": {"content-available": 1}},
                },
            }})
        );
    }

    #[test]
    fn every_data_value_is_sent_as_a_string() {
        let content = with_extra(json!({
            "text": "plain",
            "number": 5,
            "float": 1.5,
            "flag": false,
            "nothing": null,
            "object": {"a": 1},
            "list": [1, "two"],
        }));

        let body =
            body_json(&build(&spec(content, PushOptions::default()), &token(), NOW).unwrap());

        assert_eq!(
            body["message"]["data"],
            json!({
                "text": "plain",
                "number": "5",
                "float": "1.5",
                "flag": "false",
                "nothing": "null",
                "object": "{\"a\":1}",
                "list": "[1,\"two\"]",
            })
        );
    }

    #[test]
    fn a_custom_url_in_the_data_wins_over_the_message_url() {
        let mut content = with_extra(json!({"url": "app://mine"}));
        content.url = Some("https://example.com/ignored".into());

        let body =
            body_json(&build(&spec(content, PushOptions::default()), &token(), NOW).unwrap());

        assert_eq!(body["message"]["data"], json!({"url": "app://mine"}));
    }

    #[test]
    fn reserved_data_keys_are_refused() {
        for key in [
            "from",
            "notification",
            "message_type",
            "google.c.a",
            "gcm.n.e",
        ] {
            let content = with_extra(json!({ key: "x" }));

            let result = build(&spec(content, PushOptions::default()), &token(), NOW);

            assert_eq!(
                result,
                Err(PayloadError::ReservedKey {
                    provider: "FCM",
                    key: key.into(),
                }),
                "{key} should be refused"
            );
        }
    }

    #[test]
    fn keys_that_only_look_reserved_are_allowed() {
        let content = with_extra(json!({"google": "x", "from_user": "y", "gcm": "z"}));

        assert!(build(&spec(content, PushOptions::default()), &token(), NOW).is_ok());
    }

    /// The size FCM's limit applies to, as documented on [`build`].
    fn delivered_size(request: &FcmRequest) -> usize {
        let body = body_json(request);
        let mut delivered = Map::new();
        for key in ["notification", "data"] {
            if let Some(value) = body["message"].get(key) {
                delivered.insert(key.into(), value.clone());
            }
        }
        serde_json::to_vec(&delivered).unwrap().len()
    }

    /// A message whose body is padded with ASCII letters so that the delivered part is `target`
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
        let overhead = delivered_size(&build(&base, &token(), NOW).unwrap());
        let body = format!("{prefix}{}", "x".repeat(target - overhead));
        spec(content(body), PushOptions::default())
    }

    fn extra_data() -> impl Strategy<Value = Map<String, Value>> {
        let value = prop_oneof![
            "\\PC{0,20}".prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ];
        proptest::collection::btree_map("[a-z]{1,8}", value, 0..5)
            .prop_map(|m| m.into_iter().filter(|(k, _)| k != "from").collect())
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

            let ok = build(&at_limit, &token(), NOW);
            let too_large = build(&over, &token(), NOW);

            prop_assert_eq!(ok.as_ref().map(delivered_size), Ok(LIMIT));
            prop_assert_eq!(too_large, Err(PayloadError::TooLarge {
                provider: "FCM",
                limit: LIMIT,
                size: LIMIT + 1,
            }));
        }

        #[test]
        fn data_values_are_always_strings(extra in extra_data()) {
            let content = Content { body: "Hi".into(), extra_data: Some(extra.clone()), ..Content::default() };

            let body = body_json(&build(&spec(content, PushOptions::default()), &token(), NOW).unwrap());

            let data = body["message"]["data"].as_object().cloned().unwrap_or_default();
            prop_assert_eq!(data.len(), extra.len());
            prop_assert!(data.values().all(Value::is_string));
        }
    }
}
