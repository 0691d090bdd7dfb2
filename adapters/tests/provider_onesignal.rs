//! The OneSignal sender on the wire, through the real service and SQLite, against the local
//! mock OneSignal API that checks the authorization and the body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use clarion_adapters::config::{AppConfig, Config, OneSignalConfig, Secret};
use clarion_domain::app::SenderKind;
use clarion_domain::message::{DeliveryState, Message, MessageState};
use clarion_domain::ports::Clock as _;
use clarion_domain::retry::RetryPolicy;
use clarion_testkit::{MockOneSignal, OneSignalMockConfig};
use serde_json::json;
use support::{Harness, temp_dir, to_user};

const APP: &str = "news";
const ONESIGNAL_APP_ID: &str = "b2f7f966-d8cc-11e4-bed1-df8f05be55ba";
const API_KEY: &str = "os_v2_app_test-rest-api-key";

async fn mock() -> MockOneSignal {
    MockOneSignal::start(OneSignalMockConfig {
        app_id: ONESIGNAL_APP_ID.to_owned(),
        api_key: API_KEY.to_owned(),
    })
    .await
    .unwrap()
}

fn config(endpoint: String, api_key: &str, timeout_secs: u64) -> Config {
    let mut config = Config::default();
    config.apps.clear();
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            sender: SenderKind::Onesignal,
            retry: RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            },
            onesignal: Some(OneSignalConfig {
                app_id: ONESIGNAL_APP_ID.to_owned(),
                api_key: Secret::Inline(api_key.to_owned()),
                language: "cs".to_owned(),
                endpoint: Some(endpoint),
                timeout_secs: Some(timeout_secs),
            }),
            ..AppConfig::default()
        },
    );
    config
}

async fn harness(mock: &MockOneSignal) -> Harness {
    Harness::new(&config(mock.base_url(), API_KEY, 5), temp_dir()).await
}

fn only_delivery(message: &Message) -> (DeliveryState, Option<&str>, Option<&str>) {
    assert_eq!(message.deliveries.len(), 1, "{message:?}");
    let delivery = &message.deliveries[0];
    (
        delivery.state(),
        delivery.error_code(),
        delivery.error_text(),
    )
}

#[tokio::test]
async fn a_message_to_a_user_is_created_on_onesignal_and_its_response_is_kept() {
    let mock = mock().await;
    let harness = harness(&mock).await;
    let mut request = to_user("alice", "Objednávka", "Balík je na cestě");
    request.content.url = Some("https://example.com/orders/42".to_owned());
    request.content.extra_data = json!({"order": 42}).as_object().cloned();

    let message = harness.send(APP, request).await;

    assert_eq!(message.state(), MessageState::Sent, "{message:?}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_eq!(
        seen.header("authorization"),
        Some(&*format!("Key {API_KEY}"))
    );
    assert_eq!(seen.view.external_ids, ["alice"]);
    let body = seen.view.body.as_ref().unwrap();
    assert_eq!(
        body["contents"],
        json!({"cs": "Balík je na cestě", "en": "Balík je na cestě"})
    );
    assert_eq!(body["headings"]["cs"], json!("Objednávka"));
    assert_eq!(body["url"], json!("https://example.com/orders/42"));
    assert_eq!(body["data"], json!({"order": 42}));
    let id = seen.view.notification_id.clone().unwrap();
    let stored = harness.message(APP, &message).await;
    assert_eq!(stored.deliveries[0].provider_id(), Some(&*id));
    assert_eq!(
        stored.extra_sender_data,
        Some(json!({"id": id, "external_id": null}))
    );
}

#[tokio::test]
async fn a_200_that_carries_errors_fails_the_message_and_records_them() {
    let mock = mock().await;
    let harness = harness(&mock).await;
    mock.enqueue_invalid_aliases(&["alice"]);

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::Error, "{message:?}");
    let (state, code, text) = only_delivery(&message);
    assert_eq!(state, DeliveryState::Failed);
    assert_eq!(code, Some("onesignal_errors"));
    assert!(text.unwrap().contains("invalid_aliases"), "{text:?}");
    let stored = harness.message(APP, &message).await;
    assert_eq!(
        stored.deliveries[0].details().cloned(),
        Some(json!({"id": "", "errors": {"invalid_aliases": {"external_id": ["alice"]}}}))
    );
}

#[tokio::test]
async fn a_400_fails_the_message_with_onesignal_s_errors() {
    let mock = mock().await;
    let harness = harness(&mock).await;
    mock.enqueue_bad_request(&["Segment not found"]);

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::Error, "{message:?}");
    let (state, code, text) = only_delivery(&message);
    assert_eq!(state, DeliveryState::Failed);
    assert_eq!(code, Some("bad_request"));
    assert!(text.unwrap().contains("Segment not found"), "{text:?}");
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_retry_after() {
    let mock = mock().await;
    let harness = harness(&mock).await;
    mock.enqueue_rate_limited(1200);
    let before = harness.clock.now();

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:?}");
    assert_eq!(only_delivery(&message).1, Some("rate_limited"));
    let due = message.next_attempt_at().unwrap();
    assert!(
        due >= before + Duration::from_secs(1200),
        "{due} vs {before}"
    );
    harness.clock.set(due - Duration::from_secs(1));
    harness.batch().await;
    assert_eq!(mock.request_count(), 1, "not sent before Retry-After");
    harness.clock.set(due);
    harness.batch().await;
    let message = harness.message(APP, &message).await;
    assert_eq!(message.state(), MessageState::Sent, "{message:?}");
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn a_500_is_retried_and_the_message_is_sent_when_the_batch_runs_later() {
    let mock = mock().await;
    let harness = harness(&mock).await;
    mock.enqueue_server_error();

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:?}");
    assert_eq!(only_delivery(&message).1, Some("server_error"));
    harness.clock.set(message.next_attempt_at().unwrap());
    harness.batch().await;
    let message = harness.message(APP, &message).await;
    assert_eq!(message.state(), MessageState::Sent, "{message:?}");
    assert!(message.extra_sender_data.is_some());
}

#[tokio::test]
async fn a_refused_api_key_is_a_configuration_error_that_does_not_show_the_key() {
    let mock = mock().await;
    let wrong_key = "os_v2_app_wrong-key";
    let harness = Harness::new(&config(mock.base_url(), wrong_key, 5), temp_dir()).await;

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::Error, "{message:?}");
    let (state, code, text) = only_delivery(&message);
    assert_eq!(state, DeliveryState::Failed);
    assert_eq!(code, Some("onesignal_unauthorized"));
    let text = text.unwrap();
    assert!(text.contains("apps.news.onesignal.api_key"), "{text}");
    assert!(!text.contains(wrong_key), "{text}");
    assert!(!format!("{message:?}").contains(wrong_key));
}

#[tokio::test]
async fn a_slow_onesignal_is_a_timeout_retried_later() {
    let mock = mock().await;
    let harness = Harness::new(&config(mock.base_url(), API_KEY, 1), temp_dir()).await;
    mock.set_delay(Duration::from_secs(3));

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:?}");
    let (state, code, _) = only_delivery(&message);
    assert_eq!(state, DeliveryState::Retrying);
    assert_eq!(code, Some("timeout"));
}

#[tokio::test]
async fn a_refused_connection_is_retried_later() {
    let mock = mock().await;
    let endpoint = mock.base_url();
    drop(mock);
    let harness = Harness::new(&config(endpoint, API_KEY, 5), temp_dir()).await;

    let message = harness.send(APP, to_user("alice", "Hi", "There")).await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:?}");
    assert_eq!(only_delivery(&message).1, Some("connection"));
}

#[tokio::test]
async fn an_empty_api_key_is_refused_when_the_providers_are_built() {
    let config = config("http://127.0.0.1:9".to_owned(), " ", 5);

    let error = clarion_adapters::providers::build(&config)
        .unwrap_err()
        .to_string();

    assert!(error.contains("apps.news.onesignal.api_key"), "{error}");
}
