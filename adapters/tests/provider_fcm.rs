//! The FCM HTTP v1 provider on the wire: the real service over SQLite, sending through a local
//! mock of FCM and of Google's OAuth token endpoint that checks every request.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod support;

use std::net::TcpListener;
use std::time::Duration;

use clarion_adapters::config::{AppConfig, Config, FcmConfig, Secret};
use clarion_adapters::providers;
use clarion_domain::message::{DeliveryState, MessageState};
use clarion_domain::payload::PayloadError;
use clarion_domain::ports::Clock as _;
use clarion_domain::service::{Dispatch, SendError};
use clarion_domain::token::Platform;
use clarion_testkit::{CannedResponse, MockFcm};
use serde_json::{Value, json};
use tempfile::TempDir;

use support::{Harness, temp_dir, to_user, write_file};

const APP: &str = "shop";
const PROJECT: &str = "clarion-test";
const USER: &str = "alice";
const TOKEN: &str = "dGVzdC1mY20tdG9rZW4:APA91bH-test-registration-token";

/// A configuration whose application `shop` sends to `mock`, with the service account in a
/// file, as operators configure it.
fn config_for(mock: &MockFcm, dir: &TempDir, timeout_secs: Option<u64>) -> Config {
    config_with(
        &mock.service_account().json,
        &mock.base_url(),
        dir,
        timeout_secs,
    )
}

fn config_with(
    service_account: &str,
    endpoint: &str,
    dir: &TempDir,
    timeout_secs: Option<u64>,
) -> Config {
    let path = write_file(dir, "service-account.json", service_account);
    let mut config = Config::default();
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            fcm: Some(FcmConfig {
                service_account: Secret::File(path),
                endpoint: Some(endpoint.to_owned()),
                timeout_secs,
                connections: None,
                max_in_flight: None,
            }),
            ..AppConfig::default()
        },
    );
    config
}

async fn start() -> (MockFcm, Harness) {
    let mock = MockFcm::start(PROJECT).await.expect("start the FCM mock");
    let dir = temp_dir();
    let harness = Harness::new(&config_for(&mock, &dir, None), dir).await;
    (mock, harness)
}

/// Every request the mock received, to FCM and to the token endpoint, was as Google wants it.
fn assert_no_problems(mock: &MockFcm) {
    for request in mock.requests() {
        assert!(
            request.problems.is_empty(),
            "send request problems: {:?}",
            request.problems
        );
    }
    for request in mock.token_requests() {
        assert!(
            request.problems.is_empty(),
            "token request problems: {:?}",
            request.problems
        );
    }
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("its address").port()
}

#[tokio::test]
async fn a_message_to_an_fcm_device_is_accepted_and_its_message_name_recorded() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::Sent);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.status, 200);
    assert_eq!(request.view.project_id.as_deref(), Some(PROJECT));
    assert_eq!(
        request.view.target,
        Some(("token".to_owned(), TOKEN.to_owned()))
    );
    assert_eq!(
        request.view.message.as_ref().map(|m| &m["notification"]),
        Some(&json!({ "title": "Hello", "body": "World" }))
    );
    let name = request
        .view
        .name
        .clone()
        .expect("the mock named the message");
    assert!(
        name.starts_with("projects/clarion-test/messages/"),
        "{name}"
    );
    let stored = harness.message(APP, &message).await;
    assert_eq!(stored.deliveries[0].state(), DeliveryState::Accepted);
    assert_eq!(stored.deliveries[0].provider_id(), Some(name.as_str()));
    let tokens = mock.token_requests();
    assert_eq!(tokens.len(), 1);
    assert!(
        tokens[0].view.claims.is_some(),
        "the mock verified the RS256 assertion"
    );
    assert_eq!(
        request.view.access_token,
        tokens[0].view.issued_access_token
    );
    assert_no_problems(&mock);
}

#[tokio::test]
async fn the_access_token_is_fetched_once_for_several_sends() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;

    for n in 0..3 {
        let message = harness
            .send(APP, to_user(USER, "Hello", &format!("number {n}")))
            .await;
        assert_eq!(message.state(), MessageState::Sent);
    }

    assert_eq!(mock.request_count(), 3);
    assert_eq!(mock.token_request_count(), 1);
    assert_no_problems(&mock);
}

#[tokio::test]
async fn concurrent_sends_share_one_token_refresh() {
    let (mock, harness) = start().await;
    mock.set_token_delay(Duration::from_millis(300));
    for n in 0..5 {
        harness
            .register(APP, Platform::Fcm, &format!("{TOKEN}-{n}"), None, USER)
            .await;
    }

    let message = harness.send(APP, to_user(USER, "Hello", "everyone")).await;

    assert_eq!(message.state(), MessageState::Sent);
    assert_eq!(mock.request_count(), 5);
    assert_eq!(mock.token_request_count(), 1);
    assert_no_problems(&mock);
}

#[tokio::test]
async fn a_401_fetches_a_new_access_token_once_and_the_send_succeeds() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    let first = harness.send(APP, to_user(USER, "Hello", "first")).await;
    assert_eq!(first.state(), MessageState::Sent);
    mock.enqueue_unauthenticated();

    let second = harness.send(APP, to_user(USER, "Hello", "second")).await;

    assert_eq!(second.state(), MessageState::Sent);
    assert_eq!(mock.token_request_count(), 2);
    let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 200]);
    assert_no_problems(&mock);
}

#[tokio::test]
async fn a_revoked_access_token_is_replaced_and_the_send_succeeds() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    harness.send(APP, to_user(USER, "Hello", "first")).await;
    mock.revoke_access_tokens();

    let second = harness.send(APP, to_user(USER, "Hello", "second")).await;

    assert_eq!(second.state(), MessageState::Sent);
    assert_eq!(mock.token_request_count(), 2);
    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    assert_ne!(requests[1].view.access_token, requests[2].view.access_token);
    assert_no_problems(&mock);
}

#[tokio::test]
async fn a_second_401_is_a_configuration_error_and_not_a_loop() {
    let (mock, harness) = start().await;
    let device = harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    mock.enqueue_unauthenticated();
    mock.enqueue_unauthenticated();

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::Error);
    let delivery = &harness.message(APP, &message).await.deliveries[0];
    assert_eq!(delivery.state(), DeliveryState::Failed);
    assert_eq!(delivery.error_code(), Some("UNAUTHENTICATED"));
    assert_eq!(mock.request_count(), 2);
    assert_eq!(mock.token_request_count(), 2);
    assert!(harness.device(APP, &device).await.active);
}

#[tokio::test]
async fn an_unregistered_token_deactivates_the_device_with_its_reason() {
    let (mock, harness) = start().await;
    let device = harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    mock.enqueue_unregistered();

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::Error);
    let delivery = &harness.message(APP, &message).await.deliveries[0];
    assert_eq!(delivery.state(), DeliveryState::DeadToken);
    assert_eq!(delivery.error_code(), Some("UNREGISTERED"));
    let device = harness.device(APP, &device).await;
    assert!(!device.active);
    let reason = device.deactivation_reason.unwrap_or_default();
    assert!(reason.contains("UNREGISTERED"), "{reason}");
    assert_no_problems(&mock);
}

#[tokio::test]
async fn invalid_argument_fails_the_message_and_keeps_the_device_active() {
    let (mock, harness) = start().await;
    let device = harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    mock.enqueue_invalid_argument("The registration token is not a valid FCM registration token");

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::Error);
    let delivery = &harness.message(APP, &message).await.deliveries[0];
    assert_eq!(delivery.state(), DeliveryState::Failed);
    assert_eq!(delivery.error_code(), Some("INVALID_ARGUMENT"));
    let text = delivery.error_text().map(str::to_owned).unwrap_or_default();
    assert!(
        text.contains("not a valid FCM registration token"),
        "{text}"
    );
    assert_eq!(
        delivery
            .details()
            .as_ref()
            .and_then(|d| d.pointer("/error/status")),
        Some(&json!("INVALID_ARGUMENT"))
    );
    assert!(harness.device(APP, &device).await.active);
    assert_no_problems(&mock);
}

#[tokio::test]
async fn an_unavailable_fcm_is_retried_and_the_batch_sends_once_due() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    mock.enqueue_unavailable();

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry);
    assert_eq!(message.deliveries[0].error_code(), Some("UNAVAILABLE"));
    let due = message.next_attempt_at().expect("a next attempt");
    harness
        .clock
        .advance((due - harness.clock.now()).unsigned_abs() + Duration::from_secs(1));
    let report = harness.batch().await;
    assert_eq!(report.sent, 1);
    let message = harness.message(APP, &message).await;
    assert_eq!(message.state(), MessageState::Sent);
    assert_eq!(message.deliveries[0].state(), DeliveryState::Accepted);
    assert_eq!(mock.request_count(), 2);
    assert_no_problems(&mock);
}

#[tokio::test]
async fn an_internal_error_is_transient() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    mock.enqueue_internal();

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry);
    assert_eq!(message.deliveries[0].error_code(), Some("INTERNAL"));
}

#[tokio::test]
async fn quota_exceeded_waits_at_least_the_retry_after() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    mock.enqueue_quota_exceeded(120);

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry);
    assert_eq!(message.deliveries[0].error_code(), Some("QUOTA_EXCEEDED"));
    let due = message.next_attempt_at().expect("a next attempt");
    assert!(
        due >= harness.clock.now() + Duration::from_secs(120),
        "next attempt at {due}, now {}",
        harness.clock.now()
    );
    assert_no_problems(&mock);
}

#[tokio::test]
async fn a_send_slower_than_the_timeout_is_retried_later() {
    let mock = MockFcm::start(PROJECT).await.expect("start the FCM mock");
    let dir = temp_dir();
    let harness = Harness::new(&config_for(&mock, &dir, Some(1)), dir).await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    mock.set_delay(Duration::from_secs(3));

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry);
    assert_eq!(message.deliveries[0].error_code(), Some("timeout"));
}

#[tokio::test]
async fn a_refused_connection_is_retried_later() {
    let mock = MockFcm::start(PROJECT).await.expect("start the FCM mock");
    let dir = temp_dir();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let config = config_with(&mock.service_account().json, &endpoint, &dir, Some(2));
    let harness = Harness::new(&config, dir).await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry);
    assert_eq!(message.deliveries[0].error_code(), Some("connection"));
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_retried_later() {
    let mock = MockFcm::start(PROJECT).await.expect("start the FCM mock");
    let dir = temp_dir();
    let token_uri = format!("http://127.0.0.1:{}/token", closed_port());
    let account = clarion_testkit::fcm_test_service_account(&token_uri, PROJECT);
    let config = config_with(&account.json, &mock.base_url(), &dir, Some(2));
    let harness = Harness::new(&config, dir).await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry);
    assert_eq!(message.deliveries[0].error_code(), Some("connection"));
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn a_refused_service_account_is_a_configuration_error_that_shows_no_secret() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    mock.enqueue_token_response(CannedResponse::json(
        400,
        &json!({ "error": "invalid_grant", "error_description": "Invalid JWT Signature." }),
    ));

    let message = harness.send(APP, to_user(USER, "Hello", "World")).await;

    assert_eq!(message.state(), MessageState::Error);
    let delivery = &harness.message(APP, &message).await.deliveries[0];
    assert_eq!(delivery.error_code(), Some("oauth_invalid_grant"));
    let text = delivery.error_text().map(str::to_owned).unwrap_or_default();
    assert!(text.contains("Invalid JWT Signature."), "{text}");
    assert!(
        text.contains(&mock.service_account().client_email),
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let assertion = mock.token_requests()[0]
        .view
        .assertion
        .clone()
        .unwrap_or_default();
    assert!(!text.contains(&assertion), "{text}");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn a_payload_over_the_limit_is_refused_before_anything_is_sent() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    let request = to_user(USER, "Hello", &"x".repeat(5000));

    let result = harness.service.send(APP, request, Dispatch::Now).await;

    assert!(
        matches!(
            result,
            Err(SendError::Payload(PayloadError::TooLarge {
                provider: "FCM",
                limit: 4096,
                ..
            }))
        ),
        "{result:?}"
    );
    assert_eq!(mock.request_count(), 0);
    assert_eq!(mock.token_request_count(), 0);
}

#[tokio::test]
async fn fcm_data_values_are_all_strings_on_the_wire() {
    let (mock, harness) = start().await;
    harness
        .register(APP, Platform::Fcm, TOKEN, None, USER)
        .await;
    let mut request = to_user(USER, "Hello", "World");
    request.content.extra_data = json!({
        "order": "A-17",
        "count": 5,
        "flag": true,
        "nested": { "a": 1, "b": [1, 2] },
    })
    .as_object()
    .cloned();

    let message = harness.send(APP, request).await;

    assert_eq!(message.state(), MessageState::Sent);
    let requests = mock.requests();
    let data = requests[0]
        .view
        .message
        .as_ref()
        .and_then(|m| m.get("data"))
        .and_then(Value::as_object)
        .cloned()
        .expect("the message has data");
    assert!(data.values().all(Value::is_string), "{data:?}");
    assert_eq!(data["order"], "A-17");
    assert_eq!(data["count"], "5");
    assert_eq!(data["flag"], "true");
    let nested: Value =
        serde_json::from_str(data["nested"].as_str().unwrap_or_default()).expect("JSON text");
    assert_eq!(nested, json!({ "a": 1, "b": [1, 2] }));
    assert_no_problems(&mock);
}

#[test]
fn a_malformed_service_account_is_refused_at_startup_naming_the_app_and_field() {
    let dir = temp_dir();
    let account = clarion_testkit::fcm_test_service_account("http://127.0.0.1:9/token", PROJECT);
    let mut json: Value = serde_json::from_str(&account.json).expect("JSON");
    json["private_key"] =
        json!("-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LXNlY3JldA==\n-----END PRIVATE KEY-----\n");
    let config = config_with(&json.to_string(), "http://127.0.0.1:9", &dir, None);
    clarion_testkit::install_default_crypto_provider();

    let error = providers::build(&config)
        .map(|_| ())
        .expect_err("the key is not an RSA key");

    let error = format!("{error:#}");
    assert!(error.contains("apps.shop.fcm.service_account"), "{error}");
    assert!(error.contains("private_key"), "{error}");
    assert!(!error.contains("bm90LWEta2V5"), "{error}");
}
