//! Fuzzes the domain's payload builders for APNs, FCM, Web Push and OneSignal with arbitrary
//! message content and options (valid or not: the builders must not rely on the checks that
//! run before them).
//!
//! It asserts that a build either fails with an error that tells the truth (a `TooLarge`
//! names a size over its limit, a `ReservedKey` a key FCM reserves) or returns a payload that
//! is valid JSON, within the provider's limit, addressed to the right device or user and
//! carrying the message's text; and that an APNs fan-out (`Payload::for_device`) gives what
//! building for that device gives.

#![no_main]

use arbitrary::Arbitrary;
use clarion_domain::app::{ApnsSettings, Application, OneSignalSettings, SenderKind};
use clarion_domain::ids::{AppId, UserId};
use clarion_domain::message::{Content, MessageSpec, Priority, PushOptions, Target};
use clarion_domain::payload::{self, Payload, PayloadError, PayloadTarget};
use clarion_domain::token::{
    ApnsToken, DeviceToken, EndpointPolicy, FcmToken, WebPushSubscription,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

#[derive(Debug, Arbitrary)]
struct Input {
    heading: Option<String>,
    body: String,
    /// How many times the body is repeated, to reach the size limits with short inputs.
    repeat: u8,
    url: Option<String>,
    extra_data: Option<Vec<(String, Leaf)>>,
    high_priority: bool,
    badge: Option<u32>,
    sound: Option<String>,
    thread_id: Option<String>,
    category: Option<String>,
    collapse_key: Option<String>,
    time_to_live: Option<u32>,
    content_available: bool,
    mutable_content: bool,
    apns_topic: Option<String>,
    onesignal: Option<(String, String)>,
    user: String,
    fcm_token: String,
    /// Seconds from 2026-01-01.
    now: i32,
}

/// A value of the custom data.
#[derive(Debug, Arbitrary)]
enum Leaf {
    Null,
    Bool(bool),
    Int(i64),
    /// In 64ths, so that the value reads back exactly: serde_json's default float parser may
    /// be one unit in the last place off, which is not the builders' concern.
    Float(i32),
    Text(String),
    List(Vec<String>),
    Object(Vec<(String, String)>),
}

impl Leaf {
    fn into_json(self) -> Value {
        match self {
            Leaf::Null => Value::Null,
            Leaf::Bool(b) => json!(b),
            Leaf::Int(i) => json!(i),
            Leaf::Float(sixty_fourths) => json!(f64::from(sixty_fourths) / 64.0),
            Leaf::Text(text) => json!(text),
            Leaf::List(items) => json!(items),
            Leaf::Object(pairs) => Value::Object(
                pairs
                    .into_iter()
                    .map(|(key, value)| (key, Value::String(value)))
                    .collect(),
            ),
        }
    }
}

const APNS_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER_APNS_TOKEN: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

fuzz_target!(|input: Input| {
    let Ok(app_id) = AppId::parse("shop") else {
        return;
    };
    let Ok(user) = UserId::parse(&input.user) else {
        return;
    };
    let mut app = Application::new(app_id.clone(), SenderKind::Direct);
    app.apns = input.apns_topic.map(|topic| ApnsSettings { topic });
    app.onesignal = input
        .onesignal
        .map(|(app_id, language)| OneSignalSettings { app_id, language });
    let extra_data = input.extra_data.map(|pairs| {
        pairs
            .into_iter()
            .map(|(key, leaf)| (key, leaf.into_json()))
            .collect::<Map<String, Value>>()
    });
    let spec = MessageSpec {
        app: app_id,
        target: Target::User {
            user_id: user.clone(),
        },
        content: Content {
            heading: input.heading,
            body: input.body.repeat(usize::from(input.repeat).max(1)),
            url: input.url,
            extra_data,
        },
        template_slug: None,
        tag: None,
        priority: if input.high_priority {
            Priority::High
        } else {
            Priority::Normal
        },
        options: PushOptions {
            badge: input.badge,
            sound: input.sound,
            thread_id: input.thread_id,
            category: input.category,
            collapse_key: input.collapse_key,
            time_to_live: input.time_to_live,
            content_available: input.content_available,
            mutable_content: input.mutable_content,
        },
        related_objects: Vec::new(),
        retry_sending: true,
    };
    let now =
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_767_225_600 + i64::from(input.now));

    let apns_token = parse(ApnsToken::parse(APNS_TOKEN));
    let apns = DeviceToken::Apns { token: apns_token };
    check_apns(&app, &spec, &apns, now);

    if let Ok(token) = FcmToken::parse(&input.fcm_token) {
        check_fcm(&app, &spec, &DeviceToken::Fcm { token }, now);
    }

    let subscription = parse(WebPushSubscription::parse(
        "https://push.example.com/send/1",
        P256DH,
        AUTH,
        EndpointPolicy::PublicOnly,
    ));
    check_webpush(&app, &spec, &DeviceToken::Webpush { subscription }, now);

    check_onesignal(&app, &spec, &user, now);
});

fn check_apns(app: &Application, spec: &MessageSpec, device: &DeviceToken, now: OffsetDateTime) {
    let Some(Payload::Apns(request)) = built(app, spec, PayloadTarget::Device(device), now) else {
        return;
    };
    assert!(request.body.len() <= payload::apns::LIMIT);
    assert_eq!(request.device_token, device.key());
    assert!(matches!(request.headers.priority, 5 | 10));
    let body = object(&request.body);
    assert!(
        body.get("aps").is_some_and(Value::is_object),
        "APNs body without aps: {body:?}"
    );
    if let Some(extra) = &spec.content.extra_data {
        for (key, value) in extra.iter().filter(|(key, _)| key.as_str() != "aps") {
            assert_eq!(body.get(key), Some(value), "custom data key {key:?}");
        }
    }
    // A fan-out reuses the body for another device: the same as building for that device.
    let other = DeviceToken::Apns {
        token: parse(ApnsToken::parse(OTHER_APNS_TOKEN)),
    };
    let reused = Payload::Apns(request).for_device(&other);
    let rebuilt = payload::build(app, spec, PayloadTarget::Device(&other), now).ok();
    assert_eq!(reused, rebuilt);
}

fn check_fcm(app: &Application, spec: &MessageSpec, device: &DeviceToken, now: OffsetDateTime) {
    let Some(Payload::Fcm(request)) = built(app, spec, PayloadTarget::Device(device), now) else {
        return;
    };
    assert_eq!(request.token, device.key());
    let body = object(&request.body);
    let Some(Value::Object(message)) = body.get("message") else {
        panic!("FCM body without a message object: {body:?}");
    };
    assert_eq!(message.get("token"), Some(&json!(device.key())));
    // What FCM delivers to the app is within the limit.
    let delivered: Map<String, Value> = message
        .iter()
        .filter(|(key, _)| matches!(key.as_str(), "notification" | "data"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    assert!(Value::Object(delivered).to_string().len() <= payload::fcm::LIMIT);
    if let Some(Value::Object(data)) = message.get("data") {
        assert!(
            data.values().all(Value::is_string),
            "FCM data values are strings: {data:?}"
        );
    }
}

fn check_webpush(app: &Application, spec: &MessageSpec, device: &DeviceToken, now: OffsetDateTime) {
    let Some(Payload::Webpush(request)) = built(app, spec, PayloadTarget::Device(device), now)
    else {
        return;
    };
    assert!(request.plaintext.len() <= payload::webpush::LIMIT);
    assert_eq!(request.subscription.endpoint(), device.key());
    let plaintext = object(&request.plaintext);
    assert_eq!(plaintext.get("body"), Some(&json!(spec.content.body)));
}

fn check_onesignal(app: &Application, spec: &MessageSpec, user: &UserId, now: OffsetDateTime) {
    let Some(Payload::Onesignal(request)) =
        built(app, spec, PayloadTarget::ExternalUser(user), now)
    else {
        return;
    };
    assert!(request.body.len() <= payload::onesignal::LIMIT);
    let body = object(&request.body);
    assert_eq!(
        body.get("include_aliases"),
        Some(&json!({ "external_id": [user.as_str()] }))
    );
}

/// Builds a payload; an error must tell the truth, and then there is nothing more to check.
fn built(
    app: &Application,
    spec: &MessageSpec,
    target: PayloadTarget<'_>,
    now: OffsetDateTime,
) -> Option<Payload> {
    match payload::build(app, spec, target, now) {
        Ok(payload) => Some(payload),
        Err(PayloadError::TooLarge { size, limit, .. }) => {
            assert!(
                size > limit,
                "TooLarge with {size} bytes under the limit of {limit}"
            );
            None
        }
        Err(PayloadError::ReservedKey { provider, key }) => {
            assert_eq!(provider, "FCM");
            assert!(
                ["from", "notification", "message_type"].contains(&key.as_str())
                    || key.starts_with("google.")
                    || key.starts_with("gcm."),
                "{key:?} is not reserved"
            );
            None
        }
        Err(PayloadError::MissingSetting { .. }) => {
            assert!(app.onesignal.as_ref().is_none_or(|s| s.app_id.is_empty()));
            None
        }
        Err(PayloadError::Invalid(error)) => {
            assert_eq!(
                spec.options.validate().err(),
                Some(error),
                "a payload refused for options that validate"
            );
            None
        }
    }
}

/// The payload bytes as a JSON object.
fn object(bytes: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => map,
        other => panic!("a payload that is not a JSON object: {other:?}"),
    }
}

fn parse<T, E: std::fmt::Debug>(parsed: Result<T, E>) -> T {
    match parsed {
        Ok(value) => value,
        Err(error) => panic!("a constant of the fuzz target is refused: {error:?}"),
    }
}
