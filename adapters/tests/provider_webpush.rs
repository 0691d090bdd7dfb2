//! The Web Push provider on the wire, through the real service and SQLite, against the local
//! mock push service that decrypts every message and verifies its VAPID authorization.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use clarion_adapters::config::{AppConfig, Config, Secret, WebPushConfig};
use clarion_domain::device::Device;
use clarion_domain::message::{DeliveryState, Message, MessageState};
use clarion_domain::payload::webpush::LIMIT;
use clarion_domain::retry::RetryPolicy;
use clarion_domain::service::Dispatch;
use clarion_domain::token::Platform;
use clarion_testkit::{
    CannedResponse, MockWebPush, TestSubscription, VapidTestKey, WebPushMockConfig,
};
use serde_json::{Value, json};
use support::{Harness, temp_dir, to_user, write_file};

const APP: &str = "shop";

/// A mock push service that expects `key`, and the key.
async fn mock() -> (MockWebPush, VapidTestKey) {
    let key = VapidTestKey::generate().unwrap();
    let mock = MockWebPush::start(WebPushMockConfig {
        expected_vapid_public_key: Some(key.public_key_b64url.clone()),
    })
    .await
    .unwrap();
    (mock, key)
}

struct Setup {
    private_key: String,
    allow_private_endpoints: bool,
    timeout_secs: u64,
}

fn config(ca_file: &Path, setup: Setup) -> Config {
    let mut config = Config::default();
    config.apps.clear();
    config.tls.extra_ca_certs = vec![ca_file.to_path_buf()];
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            retry: RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            },
            webpush: Some(WebPushConfig {
                vapid_private_key: Secret::Inline(setup.private_key),
                subject: "mailto:ops@example.com".to_owned(),
                allow_private_endpoints: setup.allow_private_endpoints,
                timeout_secs: Some(setup.timeout_secs),
                connections: None,
                max_in_flight: None,
            }),
            ..AppConfig::default()
        },
    );
    config
}

/// The service over a fresh database, its Web Push app allowed to reach the local mock.
async fn harness(mock: &MockWebPush, key: &VapidTestKey, timeout_secs: u64) -> Harness {
    let dir = temp_dir();
    let ca = write_file(&dir, "ca.pem", mock.ca_pem());
    let config = config(
        &ca,
        Setup {
            private_key: key.private_key_b64url.clone(),
            allow_private_endpoints: true,
            timeout_secs,
        },
    );
    Harness::new(&config, dir).await
}

async fn register(harness: &Harness, subscription: &TestSubscription, user: &str) -> Device {
    harness
        .register(
            APP,
            Platform::Webpush,
            &subscription.endpoint,
            Some((&subscription.p256dh, &subscription.auth)),
            user,
        )
        .await
}

/// Sends a message to `alice`, who has one subscription on the mock.
async fn send_to_alice(harness: &Harness, mock: &MockWebPush) -> (Message, Device) {
    let subscription = mock.new_subscription();
    let device = register(harness, &subscription, "alice").await;
    let message = harness
        .send(APP, to_user("alice", "Order shipped", "On its way"))
        .await;
    (message, device)
}

fn only_delivery_error(message: &Message) -> (DeliveryState, Option<&str>, Option<&str>) {
    assert_eq!(message.deliveries.len(), 1, "{message:?}");
    let delivery = &message.deliveries[0];
    (
        delivery.state(),
        delivery.error_code(),
        delivery.error_text(),
    )
}

#[tokio::test]
async fn a_message_reaches_the_push_service_encrypted_and_signed_for_its_origin() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;

    let (message, _) = send_to_alice(&harness, &mock).await;

    assert_eq!(message.state(), MessageState::Sent, "{message:?}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert!(request.problems.is_empty(), "{:?}", request.problems);
    assert_eq!(request.status, 201);
    let plaintext: Value =
        serde_json::from_slice(request.view.plaintext.as_ref().unwrap()).unwrap();
    assert_eq!(
        plaintext,
        json!({"title": "Order shipped", "body": "On its way"})
    );
    let claims = request.view.vapid_claims.as_ref().unwrap();
    assert_eq!(claims["aud"], json!(mock.origin()));
    assert!(
        mock.origin()
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<u16>()
            .is_ok()
    );
    assert_eq!(claims["sub"], json!("mailto:ops@example.com"));
    assert_eq!(request.view.content_encoding.as_deref(), Some("aes128gcm"));
    assert_eq!(request.view.ttl.as_deref(), Some("86400"));
    assert_eq!(request.view.urgency.as_deref(), Some("high"));
    assert_eq!(
        request.header("content-type"),
        Some("application/octet-stream")
    );
    let stored = harness.message(APP, &message).await;
    let delivery = &stored.deliveries[0];
    assert_eq!(delivery.state(), DeliveryState::Accepted);
    assert!(
        delivery
            .provider_id()
            .is_some_and(|id| id.starts_with(&format!("{}/message/", mock.origin()))),
        "{delivery:?}"
    );
}

#[tokio::test]
async fn a_pem_vapid_key_signs_as_well_as_a_raw_one_and_the_jwt_is_reused() {
    let (mock, key) = mock().await;
    let dir = temp_dir();
    let ca = write_file(&dir, "ca.pem", mock.ca_pem());
    let config = config(
        &ca,
        Setup {
            private_key: key.private_key_pem.clone(),
            allow_private_endpoints: true,
            timeout_secs: 5,
        },
    );
    let harness = Harness::new(&config, dir).await;
    let first = mock.new_subscription();
    let second = mock.new_subscription();
    register(&harness, &first, "alice").await;
    register(&harness, &second, "alice").await;

    let message = harness
        .send(APP, to_user("alice", "Hello", "Two devices"))
        .await;

    assert_eq!(message.state(), MessageState::Sent, "{message:?}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert!(request.problems.is_empty(), "{:?}", request.problems);
    }
    assert_eq!(requests[0].view.vapid_jwt, requests[1].view.vapid_jwt);
}

#[tokio::test]
async fn a_topic_and_a_time_to_live_become_headers() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    register(&harness, &mock.new_subscription(), "alice").await;
    let mut request = to_user("alice", "Score", "2:1");
    request.options.collapse_key = Some("match-7".to_owned());
    request.options.time_to_live = Some(120);
    request.priority = clarion_domain::message::Priority::Normal;

    let message = harness.send(APP, request).await;

    assert_eq!(message.state(), MessageState::Sent, "{message:?}");
    let seen = &mock.requests()[0];
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_eq!(seen.view.topic.as_deref(), Some("match-7"));
    assert_eq!(seen.view.ttl.as_deref(), Some("120"));
    assert_eq!(seen.view.urgency.as_deref(), Some("normal"));
}

#[tokio::test]
async fn a_404_or_410_deactivates_the_device_with_the_reason() {
    for status in [404, 410] {
        let (mock, key) = mock().await;
        let harness = harness(&mock, &key, 5).await;
        mock.enqueue_status(status);

        let (message, device) = send_to_alice(&harness, &mock).await;

        assert_eq!(
            message.state(),
            MessageState::Error,
            "{status}: {message:?}"
        );
        let (state, _, text) = only_delivery_error(&message);
        assert_eq!(state, DeliveryState::DeadToken, "{status}");
        assert!(text.unwrap().contains(&status.to_string()), "{text:?}");
        let device = harness.device(APP, &device).await;
        assert!(!device.active, "{status}");
        let reason = device.deactivation_reason.unwrap();
        assert!(reason.contains("expired or was unsubscribed"), "{reason}");
    }
}

#[tokio::test]
async fn an_unsubscribed_endpoint_answers_gone_and_the_device_is_deactivated() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    let subscription = mock.new_subscription();
    let device = register(&harness, &subscription, "alice").await;
    mock.unsubscribe(&subscription);

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::Error);
    assert_eq!(only_delivery_error(&message).1, Some("gone"));
    assert!(!harness.device(APP, &device).await.active);
    assert!(mock.requests()[0].problems.is_empty());
}

#[tokio::test]
async fn a_413_fails_the_message_for_good() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    mock.enqueue_status(413);

    let (message, device) = send_to_alice(&harness, &mock).await;

    assert_eq!(message.state(), MessageState::Error, "{message:?}");
    let (state, code, _) = only_delivery_error(&message);
    assert_eq!(state, DeliveryState::Failed);
    assert_eq!(code, Some("payload_too_large"));
    assert!(harness.device(APP, &device).await.active);
}

#[tokio::test]
async fn a_p256dh_off_the_curve_fails_the_delivery_before_anything_is_sent() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    let mut subscription = mock.new_subscription();
    let mut point = URL_SAFE_NO_PAD.decode(&subscription.p256dh).unwrap();
    point[64] ^= 1;
    subscription.p256dh = URL_SAFE_NO_PAD.encode(&point);
    register(&harness, &subscription, "alice").await;

    let message = harness
        .send(APP, to_user("alice", "Order shipped", "On its way"))
        .await;

    assert_eq!(message.state(), MessageState::Error, "{message:?}");
    let (state, code, text) = only_delivery_error(&message);
    assert_eq!(state, DeliveryState::Failed);
    assert_eq!(code, Some("invalid_subscription"));
    assert!(text.is_some_and(|text| text.contains("p256dh")), "{text:?}");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_nul_in_the_push_services_answer_is_recorded_as_a_replacement_character() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    // A client chooses its endpoint, so any server may answer anything; PostgreSQL could not
    // store the reason with the NUL in it.
    mock.enqueue(CannedResponse {
        status: 400,
        headers: Vec::new(),
        body: b"bad\0request".to_vec(),
    });

    let (message, _) = send_to_alice(&harness, &mock).await;

    let (state, code, text) = only_delivery_error(&message);
    assert_eq!((state, code), (DeliveryState::Failed, Some("bad_request")));
    let text = text.unwrap_or_default();
    assert!(text.ends_with(": bad\u{fffd}request"), "{text:?}");
}

#[tokio::test]
async fn a_rejected_vapid_key_is_a_configuration_error() {
    let (mock, _) = mock().await;
    let other_key = VapidTestKey::generate().unwrap();
    let harness = harness(&mock, &other_key, 5).await;

    let (message, device) = send_to_alice(&harness, &mock).await;

    assert_eq!(message.state(), MessageState::Error, "{message:?}");
    let (state, code, text) = only_delivery_error(&message);
    assert_eq!(state, DeliveryState::Failed);
    assert_eq!(code, Some("vapid_rejected"));
    assert!(text.unwrap().contains("VAPID"), "{text:?}");
    assert_eq!(mock.requests()[0].status, 403);
    assert!(harness.device(APP, &device).await.active);
}

#[tokio::test]
async fn a_503_is_retried_and_the_message_is_sent_when_the_batch_runs_later() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    mock.enqueue_status(503);

    let (message, _) = send_to_alice(&harness, &mock).await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:?}");
    assert_eq!(only_delivery_error(&message).1, Some("server_error"));
    let due = message.next_attempt_at().unwrap();
    assert_eq!(harness.batch().await.processed, 0, "not due yet");
    harness.clock.set(due);
    harness.batch().await;
    let message = harness.message(APP, &message).await;
    assert_eq!(message.state(), MessageState::Sent, "{message:?}");
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn retry_after_on_a_429_delays_the_next_attempt() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    mock.enqueue(CannedResponse::empty(429).with_retry_after(1800));
    let before = clarion_domain::ports::Clock::now(harness.clock.as_ref());

    let (message, _) = send_to_alice(&harness, &mock).await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:?}");
    assert_eq!(only_delivery_error(&message).1, Some("rate_limited"));
    let due = message.next_attempt_at().unwrap();
    assert!(
        due >= before + Duration::from_secs(1800),
        "{due} vs {before}"
    );
    harness.clock.set(due - Duration::from_secs(1));
    harness.batch().await;
    assert_eq!(mock.request_count(), 1, "not sent before Retry-After");
    harness.clock.set(due);
    harness.batch().await;
    let message = harness.message(APP, &message).await;
    assert_eq!(message.state(), MessageState::Sent, "{message:?}");
}

#[tokio::test]
async fn a_push_service_slower_than_the_timeout_is_retried_later() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 1).await;
    mock.set_delay(Duration::from_secs(3));

    let (message, _) = send_to_alice(&harness, &mock).await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:?}");
    let (state, code, _) = only_delivery_error(&message);
    assert_eq!(state, DeliveryState::Retrying);
    assert_eq!(code, Some("timeout"));
}

#[tokio::test]
async fn a_refused_connection_is_retried_later() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    let subscription = mock.new_subscription();
    register(&harness, &subscription, "alice").await;
    drop(mock);

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:?}");
    assert_eq!(only_delivery_error(&message).1, Some("connection"));
}

#[tokio::test]
async fn a_payload_over_the_limit_is_refused_before_anything_is_sent() {
    let (mock, key) = mock().await;
    let harness = harness(&mock, &key, 5).await;
    register(&harness, &mock.new_subscription(), "alice").await;

    let error = harness
        .service
        .send(
            APP,
            to_user("alice", "Big", &"x".repeat(LIMIT)),
            Dispatch::Now,
        )
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("Web Push"), "{error}");
    assert!(
        error.contains(&format!("limit of {LIMIT} bytes")),
        "{error}"
    );
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn endpoints_on_private_addresses_are_refused_at_send_time_without_the_setting() {
    // The devices are registered while the application allows private endpoints; then the
    // same application, over the same database, runs without the setting.
    let (mock, key) = mock().await;
    let registering = harness(&mock, &key, 5).await;
    let literal = mock.new_subscription();
    let named = mock.new_subscription();
    let named_endpoint = named.endpoint.replace("127.0.0.1", "localhost");
    register(&registering, &literal, "alice").await;
    registering
        .register(
            APP,
            Platform::Webpush,
            &named_endpoint,
            Some((&named.p256dh, &named.auth)),
            "alice",
        )
        .await;
    let Harness { dir, .. } = registering;
    let ca = dir.path().join("ca.pem");
    let strict = config(
        &ca,
        Setup {
            private_key: key.private_key_b64url.clone(),
            allow_private_endpoints: false,
            timeout_secs: 5,
        },
    );
    let harness = Harness::new(&strict, dir).await;

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::Error, "{message:?}");
    assert_eq!(message.deliveries.len(), 2);
    let mut hosts = Vec::new();
    for delivery in &message.deliveries {
        assert_eq!(delivery.state(), DeliveryState::Failed, "{delivery:?}");
        assert_eq!(delivery.error_code(), Some("endpoint_not_public"));
        hosts.push(delivery.error_text().map(str::to_owned).unwrap());
    }
    assert!(
        hosts.iter().any(|text| text.contains("host 127.0.0.1")),
        "{hosts:?}"
    );
    assert!(
        hosts.iter().any(|text| text.contains("host localhost")),
        "{hosts:?}"
    );
    assert_eq!(mock.request_count(), 0);
}
