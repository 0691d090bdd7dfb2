//! The domain's invariants, tried from outside the crate as a reuser would: every way around
//! a parser or the state machine that issue 14 found is refused.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

use clarion_domain::app::{Application, SenderKind};
use clarion_domain::ids::{AppId, DeliveryId, DeviceId, MessageId, UserId};
use clarion_domain::message::{
    Channel, Content, Delivery, DeliveryProgress, DeliveryState, ImpossibleRecord, Message,
    MessageSpec, MessageState, OptionError, Progress, PushOptions, SendOutcome, Target,
};
use clarion_domain::payload::{self, PayloadError, PayloadTarget};
use clarion_domain::serde_json;
use clarion_domain::time::OffsetDateTime;
use clarion_domain::time::macros::datetime;
use clarion_domain::token::{DeviceToken, EndpointPolicy, Platform, WebPushSubscription};

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

fn spec() -> MessageSpec {
    let target = Target::User {
        user_id: UserId::parse("u1").expect("a user id"),
    };
    let content = Content {
        body: "Hello".to_owned(),
        ..Content::default()
    };
    MessageSpec::new(AppId::parse("shop").expect("an app id"), target, content)
}

const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

fn progress(state: MessageState, attempts: u32, sent: bool, next: bool) -> Progress {
    Progress {
        state,
        error: None,
        number_of_send_attempts: attempts,
        next_attempt_at: next.then_some(NOW),
        sent_at: sent.then_some(NOW),
        queued_at: NOW,
    }
}

fn stored(progress: Progress) -> Result<Message, ImpossibleRecord> {
    Message::from_storage(MessageId(1), spec(), SenderKind::Direct, progress, NOW, NOW)
}

#[test]
fn a_stored_message_in_a_state_the_state_machine_cannot_reach_is_refused() {
    use MessageState::{Debug, Error, ErrorRetry, Sent, Waiting};
    // (state, attempts, sent_at, next_attempt_at, what is wrong)
    let cases = [
        (Sent, 0, false, false, "must have sent_at"),
        (Sent, 2, false, false, "must have sent_at"),
        (Debug, 1, false, false, "must have sent_at"),
        (Waiting, 0, true, false, "cannot have sent_at"),
        (Error, 1, true, false, "cannot have sent_at"),
        (ErrorRetry, 1, true, true, "cannot have sent_at"),
        (Waiting, 0, false, true, "cannot have next_attempt_at"),
        (Sent, 1, true, true, "cannot have next_attempt_at"),
        (ErrorRetry, 0, false, true, "must have made a send attempt"),
        (Debug, 0, true, false, "must have made a send attempt"),
    ];
    for (state, attempts, sent, next, problem) in cases {
        let read = stored(progress(state, attempts, sent, next));

        assert_eq!(
            read.err(),
            Some(ImpossibleRecord::Message { state, problem }),
            "{state} with {attempts} attempts, sent_at {sent}, next_attempt_at {next}"
        );
    }
}

#[test]
fn a_stored_message_in_a_state_the_state_machine_reaches_is_rebuilt() {
    use MessageState::{Debug, Error, ErrorRetry, Sent, Waiting};
    let cases = [
        (Waiting, 0, false, false),
        (Error, 0, false, false),
        (Error, 4, false, false),
        (ErrorRetry, 1, false, true),
        (Sent, 2, true, false),
        // An interrupted first attempt whose message expired: SENT without a counted attempt.
        (Sent, 0, true, false),
        (Debug, 1, true, false),
    ];
    for (state, attempts, sent, next) in cases {
        let read = stored(progress(state, attempts, sent, next));

        let message = read.expect("a reachable progress");
        assert_eq!(message.state(), state);
        assert_eq!(message.number_of_send_attempts(), attempts);
    }
}

fn delivery_progress(state: DeliveryState, attempts: u32, code: Option<&str>) -> DeliveryProgress {
    DeliveryProgress {
        state,
        attempts,
        provider_id: None,
        error_code: code.map(ToOwned::to_owned),
        error_text: None,
        details: None,
        updated_at: NOW,
    }
}

fn stored_delivery(progress: DeliveryProgress) -> Result<Delivery, ImpossibleRecord> {
    Delivery::from_storage(
        DeliveryId(1),
        MessageId(1),
        Some(DeviceId(1)),
        Channel::Apns,
        progress,
    )
}

#[test]
fn a_stored_delivery_that_recording_outcomes_cannot_reach_is_refused() {
    use DeliveryState::{Accepted, DeadToken, Debug, Failed, Retrying};
    let cases = [
        (Accepted, 0, None, "must have had an attempt"),
        (Debug, 0, None, "must have had an attempt"),
        (
            Retrying,
            0,
            Some("server_error"),
            "must have had an attempt",
        ),
        (
            DeadToken,
            0,
            Some("Unregistered"),
            "must have had an attempt",
        ),
        (
            Accepted,
            1,
            Some("BadDeviceToken"),
            "cannot have an error code",
        ),
        (Retrying, 1, None, "must have an error code"),
        (DeadToken, 1, None, "must have an error code"),
        (Failed, 0, None, "must have an error code"),
    ];
    for (state, attempts, code, problem) in cases {
        let read = stored_delivery(delivery_progress(state, attempts, code));

        assert_eq!(
            read.err(),
            Some(ImpossibleRecord::Delivery { state, problem }),
            "{state} with {attempts} attempts and code {code:?}"
        );
    }
}

#[test]
fn a_stored_delivery_that_recording_outcomes_reaches_is_rebuilt() {
    use DeliveryState::{Accepted, DeadToken, Debug, Failed, Pending, Retrying};
    let cases = [
        (Pending, 0, None),
        // Re-queued by an operator: it keeps its attempts and its last error.
        (Pending, 2, Some("server_error")),
        (Accepted, 1, None),
        (Debug, 1, None),
        (Retrying, 1, Some("server_error")),
        (DeadToken, 1, Some("Unregistered")),
        // Given up before its first attempt, as an expired or cancelled message's are.
        (Failed, 0, Some("cancelled")),
    ];
    for (state, attempts, code) in cases {
        let read = stored_delivery(delivery_progress(state, attempts, code));

        assert!(read.is_ok(), "{state} with {attempts} attempts: {read:?}");
    }
}

#[test]
fn an_accepted_delivery_stays_accepted_whatever_is_recorded_later() {
    // Arrange: the state is private (issue 14 set it back to pending from outside), so the
    // only way to change it is to record an outcome.
    let mut delivery = Delivery::pending(
        DeliveryId(1),
        MessageId(1),
        Some(DeviceId(1)),
        Channel::Apns,
        NOW,
    );
    let accepted = SendOutcome::Accepted {
        provider_id: Some("apns-id".to_owned()),
        details: None,
    };
    delivery.record(&accepted, NOW);

    // Act.
    let failure = SendOutcome::Permanent {
        code: "BadDeviceToken".to_owned(),
        reason: "late report".to_owned(),
        details: None,
    };
    delivery.record(&failure, NOW);

    // Assert.
    assert_eq!(delivery.state(), DeliveryState::Accepted);
    assert_eq!(delivery.attempts(), 1);
    assert_eq!(delivery.provider_id(), Some("apns-id"));
    assert_eq!(delivery.error_code(), None);
    assert_eq!(delivery.progress().check(), Ok(()));
}

#[test]
fn every_payload_builder_refuses_the_options_the_service_refuses() {
    // Arrange: a 100-byte collapse key and a time-to-live of u32::MAX, which built fine when
    // only the service checked them; one target per provider.
    let app = Application::new(AppId::parse("shop").expect("an app id"), SenderKind::Direct);
    let apns = DeviceToken::parse(
        Platform::Apns,
        &"ab".repeat(32),
        None,
        None,
        EndpointPolicy::PublicOnly,
    )
    .expect("an APNs token");
    let fcm = DeviceToken::parse(
        Platform::Fcm,
        "fcm-1",
        None,
        None,
        EndpointPolicy::PublicOnly,
    )
    .expect("an FCM token");
    let webpush = DeviceToken::parse(
        Platform::Webpush,
        "https://push.example.com/x",
        Some(P256DH),
        Some(AUTH),
        EndpointPolicy::PublicOnly,
    )
    .expect("a subscription");
    let user = UserId::parse("u1").expect("a user id");
    let targets = [
        PayloadTarget::Device(&apns),
        PayloadTarget::Device(&fcm),
        PayloadTarget::Device(&webpush),
        PayloadTarget::ExternalUser(&user),
    ];
    let long_key = PushOptions {
        collapse_key: Some("k".repeat(100)),
        ..PushOptions::default()
    };
    let endless = PushOptions {
        time_to_live: Some(u32::MAX),
        ..PushOptions::default()
    };

    for (options, refused) in [
        (long_key, OptionError::CollapseKeyTooLong(100)),
        (endless, OptionError::TimeToLive(u32::MAX)),
    ] {
        let spec = spec().with_options(options.clone());
        // The service refuses them with this error.
        assert_eq!(options.validate(), Err(refused.clone()));
        for target in targets {
            // Act.
            let built = payload::build(&app, &spec, target, NOW);

            // Assert.
            assert_eq!(
                built,
                Err(PayloadError::Invalid(refused.clone())),
                "{target:?}"
            );
        }
    }
}
