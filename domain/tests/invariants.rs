//! The domain's invariants, tried from outside the crate as a reuser would: every way around
//! a parser or the state machine that issue 14 found is refused.

use clarion_domain::serde_json;
use clarion_domain::token::{DeviceToken, EndpointPolicy, WebPushSubscription};

const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

#[test]
fn a_subscription_with_an_http_endpoint_and_garbage_keys_does_not_deserialize() {
    // Arrange: the bypass of issue 14, flat as the type serializes and nested as a browser's
    // `PushSubscription.toJSON()` gives it.
    let flat = r#"{"endpoint":"http://127.0.0.1/x","p256dh":"garbage","auth":"garbage"}"#;
    let nested =
        r#"{"endpoint":"http://127.0.0.1/x","keys":{"p256dh":"garbage","auth":"garbage"}}"#;

    // Act and assert.
    for json in [flat, nested] {
        let read = serde_json::from_str::<WebPushSubscription>(json);
        assert!(read.is_err(), "{json} was read as {read:?}");
    }
}

#[test]
fn each_part_of_a_deserialized_subscription_is_checked_by_the_parser() {
    let json = |endpoint: &str, p256dh: &str, auth: &str| {
        format!(r#"{{"endpoint":"{endpoint}","p256dh":"{p256dh}","auth":"{auth}"}}"#)
    };
    for (endpoint, p256dh, auth) in [
        ("http://push.example.com/x", P256DH, AUTH),
        ("https://user:pw@push.example.com/x", P256DH, AUTH),
        ("https://push.example.com/x", "garbage", AUTH),
        ("https://push.example.com/x", P256DH, "garbage"),
    ] {
        let text = json(endpoint, p256dh, auth);
        let read = serde_json::from_str::<WebPushSubscription>(&text);
        assert!(read.is_err(), "{text} was read as {read:?}");
    }
}

#[test]
fn a_web_push_device_token_with_garbage_keys_does_not_deserialize() {
    let json = r#"{"platform":"webpush","subscription":
        {"endpoint":"http://127.0.0.1/x","p256dh":"garbage","auth":"garbage"}}"#;

    let read = serde_json::from_str::<DeviceToken>(json);

    assert!(read.is_err(), "read as {read:?}");
}

#[test]
fn deserializing_a_subscription_allows_private_endpoints_as_a_stored_one_needs() {
    // Serde cannot know the registering application's endpoint policy, so it applies the
    // lenient one: a subscription that was stored under `AllowPrivate` must load again. The
    // public-only rule is applied where the application is known, by `parse`.
    let json =
        format!(r#"{{"endpoint":"https://10.0.0.1/x","p256dh":"{P256DH}","auth":"{AUTH}"}}"#);

    let read = serde_json::from_str::<WebPushSubscription>(&json).expect("a valid subscription");

    let parsed = WebPushSubscription::parse(
        "https://10.0.0.1/x",
        P256DH,
        AUTH,
        EndpointPolicy::AllowPrivate,
    );
    assert_eq!(Ok(read), parsed);
    assert!(
        WebPushSubscription::parse(
            "https://10.0.0.1/x",
            P256DH,
            AUTH,
            EndpointPolicy::PublicOnly
        )
        .is_err()
    );
}

#[test]
fn a_serialized_token_reads_back_as_the_same_token() {
    let token = DeviceToken::parse(
        "webpush".parse().expect("a platform"),
        "https://push.example.com/x",
        Some(P256DH),
        Some(AUTH),
        EndpointPolicy::PublicOnly,
    )
    .expect("a valid subscription");

    let text = serde_json::to_string(&token).expect("serializes");
    let read = serde_json::from_str::<DeviceToken>(&text).expect("reads back");

    assert_eq!(read, token);
}
