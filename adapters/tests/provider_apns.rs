//! The APNs provider on the wire: the real service over SQLite sends through the provider to
//! the testkit's TLS HTTP/2 mock APNs, which checks the provider token, every header and the
//! body.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clarion_adapters::config::{ApnsConfig, ApnsEnvironment, AppConfig, Config, Secret};
use clarion_domain::device::Device;
use clarion_domain::message::{DeliveryState, Message, MessageState, PushOptions};
use clarion_domain::service::Dispatch;
use clarion_domain::token::Platform;
use clarion_testkit::tls::{ClientIdentity, TestClientCa};
use clarion_testkit::{ApnsMockConfig, CannedResponse, MockApns, apns_test_key};
use serde_json::json;
use support::{Harness, temp_dir, to_user, write_file};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};

const APP: &str = "shop";
const TEAM_ID: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.example.shop";
const USER: &str = "alice";

/// A 64-character hexadecimal device token, distinct for each `n`.
fn device_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

async fn start_mock(public_key_pem: &str) -> MockApns {
    MockApns::start(ApnsMockConfig {
        team_id: TEAM_ID.to_owned(),
        key_id: KEY_ID.to_owned(),
        public_key_pem: public_key_pem.to_owned(),
        topic: TOPIC.to_owned(),
    })
    .await
    .expect("start the APNs mock")
}

/// Token authentication against `endpoint` with the `.p8` key in a file.
fn token_auth(dir: &TempDir, endpoint: &str, p8: &str) -> ApnsConfig {
    ApnsConfig {
        team_id: Some(TEAM_ID.to_owned()),
        key_id: Some(KEY_ID.to_owned()),
        key: Some(Secret::File(write_file(dir, "AuthKey.p8", p8))),
        certificate: None,
        certificate_key: None,
        topic: TOPIC.to_owned(),
        environment: ApnsEnvironment::Sandbox,
        endpoint: Some(endpoint.to_owned()),
        timeout_secs: Some(5),
        connections: None,
        max_in_flight: None,
    }
}

/// A configuration with application `shop` using `apns` and trusting the mock's CA.
fn config_with(dir: &TempDir, ca_pem: &str, apns: ApnsConfig) -> Config {
    let mut config = Config::default();
    config.tls.extra_ca_certs = vec![write_file(dir, "mock-ca.pem", ca_pem)];
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            apns: Some(apns),
            ..AppConfig::default()
        },
    );
    config
}

struct Setup {
    harness: Harness,
    mock: MockApns,
}

/// The mock, and the service configured for it with token authentication, changed by `tweak`.
async fn setup(tweak: impl FnOnce(&mut ApnsConfig)) -> Setup {
    let (p8, public) = apns_test_key().expect("an APNs test key");
    let mock = start_mock(&public).await;
    let dir = temp_dir();
    let mut apns = token_auth(&dir, &mock.base_url(), &p8);
    tweak(&mut apns);
    let config = config_with(&dir, mock.ca_pem(), apns);
    let harness = Harness::new(&config, dir).await;
    Setup { harness, mock }
}

impl Setup {
    async fn device(&self, n: u8) -> Device {
        self.harness
            .register(APP, Platform::Apns, &device_token(n), None, USER)
            .await
    }

    async fn send(&self) -> Message {
        self.harness
            .send(APP, to_user(USER, "Your order", "has shipped"))
            .await
    }
}

fn only_delivery(message: &Message) -> &clarion_domain::message::Delivery {
    assert_eq!(message.deliveries.len(), 1, "{message:#?}");
    &message.deliveries[0]
}

#[tokio::test]
async fn a_notification_is_accepted_and_its_apns_id_recorded() {
    let setup = setup(|_| {}).await;
    let device = setup.device(1).await;
    let mut request = to_user(USER, "Your order", "has shipped");
    request.options = PushOptions {
        badge: Some(3),
        collapse_key: Some("order-42".to_owned()),
        time_to_live: Some(3600),
        ..PushOptions::default()
    };

    let message = setup.harness.send(APP, request).await;

    assert_eq!(message.state(), MessageState::Sent, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_eq!(delivery.state(), DeliveryState::Accepted);
    let requests = setup.mock.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert!(seen.is_http2(), "{}", seen.version);
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, format!("/3/device/{}", device.token.key()));
    assert_eq!(
        delivery.provider_id(),
        Some(seen.view.response_apns_id.as_str())
    );
    let sent_id = seen.header("apns-id").expect("an apns-id header");
    assert_eq!(uuid::Uuid::parse_str(sent_id).unwrap().get_version_num(), 4);
    assert_eq!(delivery.provider_id(), Some(sent_id));
    let claims = seen.view.jwt_claims.as_ref().expect("a verified JWT");
    assert_eq!(claims["iss"], TEAM_ID);
    assert_eq!(seen.header("apns-topic"), Some(TOPIC));
    assert_eq!(seen.header("apns-push-type"), Some("alert"));
    assert_eq!(seen.header("apns-priority"), Some("10"));
    assert_eq!(seen.header("apns-collapse-id"), Some("order-42"));
    assert!(seen.header("apns-expiration").is_some());
    assert_eq!(seen.header("content-type"), Some("application/json"));
    let payload = seen.view.payload.as_ref().expect("a JSON body");
    assert_eq!(
        payload["aps"]["alert"],
        json!({"title": "Your order", "body": "has shipped"})
    );
    assert_eq!(payload["aps"]["badge"], 3);
}

#[tokio::test]
async fn an_unregistered_token_deactivates_the_device_with_the_reason() {
    let setup = setup(|_| {}).await;
    let device = setup.device(1).await;
    setup.mock.enqueue_error(410, "Unregistered");

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::Error, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_eq!(delivery.state(), DeliveryState::DeadToken);
    assert_eq!(delivery.error_code(), Some("Unregistered"));
    let device = setup.harness.device(APP, &device).await;
    assert!(!device.active);
    let reason = device.deactivation_reason.unwrap_or_default();
    assert!(reason.contains("Unregistered"), "{reason}");
}

#[tokio::test]
async fn a_permanent_error_fails_the_message_and_keeps_the_device() {
    let setup = setup(|_| {}).await;
    let device = setup.device(1).await;
    setup.mock.enqueue_error(400, "BadCollapseId");

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::Error, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_eq!(delivery.state(), DeliveryState::Failed);
    assert_eq!(delivery.error_code(), Some("BadCollapseId"));
    assert_eq!(
        delivery.details().map(|d| d["reason"].clone()),
        Some(json!("BadCollapseId"))
    );
    assert!(setup.harness.device(APP, &device).await.active);
}

#[tokio::test]
async fn a_transient_error_is_retried_by_the_batch_after_next_attempt_at() {
    let setup = setup(|_| {}).await;
    setup.device(1).await;
    setup.mock.enqueue_error(503, "ServiceUnavailable");

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:#?}");
    assert_eq!(
        only_delivery(&message).error_code(),
        Some("ServiceUnavailable")
    );
    let next = message.next_attempt_at().expect("a next attempt");
    let wait = next - message.created_at + time::Duration::seconds(1);
    setup.harness.clock.advance(wait.unsigned_abs());

    let report = setup.harness.batch().await;

    assert_eq!(report.sent, 1, "{report:?}");
    let message = setup.harness.message(APP, &message).await;
    assert_eq!(message.state(), MessageState::Sent, "{message:#?}");
    assert_eq!(only_delivery(&message).state(), DeliveryState::Accepted);
    let requests = setup.mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.problems.is_empty()));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let setup = setup(|_| {}).await;
    setup.device(1).await;
    setup.mock.enqueue(
        CannedResponse::json(429, &json!({"reason": "TooManyRequests"})).with_retry_after(1800),
    );

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:#?}");
    let next = message.next_attempt_at().expect("a next attempt");
    assert!(
        next >= message.created_at + time::Duration::seconds(1800),
        "next attempt {next} is sooner than 1800 s after {}",
        message.created_at
    );
}

#[tokio::test]
async fn a_timeout_is_a_transient_failure() {
    let setup = setup(|apns| apns.timeout_secs = Some(1)).await;
    setup.device(1).await;
    setup.mock.set_delay(Duration::from_secs(5));

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_eq!(delivery.state(), DeliveryState::Retrying);
    assert_eq!(delivery.error_code(), Some("timeout"));
}

#[tokio::test]
async fn a_refused_connection_is_a_transient_failure() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let setup = setup(|apns| apns.endpoint = Some(format!("https://{closed}"))).await;
    setup.device(1).await;

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_eq!(delivery.error_code(), Some("connection"));
    assert!(
        delivery.error_text().is_some_and(|t| t.contains("APNs")),
        "{delivery:?}"
    );
    assert_eq!(setup.mock.request_count(), 0);
}

#[tokio::test]
async fn a_payload_over_the_limit_is_refused_before_anything_is_sent() {
    let setup = setup(|_| {}).await;
    setup.device(1).await;
    let request = to_user(USER, "Too long", &"x".repeat(5000));

    let error = setup
        .harness
        .service
        .send(APP, request, Dispatch::Now)
        .await
        .expect_err("an oversized payload is refused")
        .to_string();

    assert!(error.contains("APNs") && error.contains("4096"), "{error}");
    assert_eq!(setup.mock.request_count(), 0);
}

#[tokio::test]
async fn the_provider_token_is_signed_once_and_reused() {
    let setup = setup(|_| {}).await;
    setup.device(1).await;

    for _ in 0..3 {
        let message = setup.send().await;
        assert_eq!(message.state(), MessageState::Sent, "{message:#?}");
    }

    assert_eq!(setup.mock.request_count(), 3);
    assert_eq!(setup.mock.distinct_jwt_count(), 1);
}

#[tokio::test]
async fn an_expired_provider_token_is_renewed_and_the_request_retried_once() {
    let setup = setup(|_| {}).await;
    setup.device(1).await;
    setup.mock.enqueue_error(403, "ExpiredProviderToken");

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::Sent, "{message:#?}");
    assert_eq!(only_delivery(&message).attempts(), 1);
    let requests = setup.mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, 403);
    assert_eq!(requests[1].status, 200);
    assert_ne!(requests[0].view.jwt, requests[1].view.jwt);
    assert_eq!(setup.mock.distinct_jwt_count(), 2);
    // The renewed token is kept for the next notification.
    setup.send().await;
    assert_eq!(setup.mock.distinct_jwt_count(), 2);
}

#[tokio::test]
async fn a_provider_token_expired_again_after_renewal_is_a_configuration_error() {
    let setup = setup(|_| {}).await;
    setup.device(1).await;
    setup.mock.enqueue_error(403, "ExpiredProviderToken");
    setup.mock.enqueue_error(403, "ExpiredProviderToken");

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::Error, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_eq!(delivery.error_code(), Some("ExpiredProviderToken"));
    assert!(
        delivery.error_text().is_some_and(|t| t.contains("clock")),
        "{delivery:?}"
    );
    assert_eq!(setup.mock.request_count(), 2);
}

#[tokio::test]
async fn a_key_apns_does_not_know_is_a_configuration_error_naming_the_settings() {
    // The mock knows another public key than the one Clarion signs with.
    let (p8, _) = apns_test_key().unwrap();
    let (_, other_public) = apns_test_key().unwrap();
    let mock = start_mock(&other_public).await;
    let dir = temp_dir();
    let apns = token_auth(&dir, &mock.base_url(), &p8);
    let harness = Harness::new(&config_with(&dir, mock.ca_pem(), apns), dir).await;
    harness
        .register(APP, Platform::Apns, &device_token(1), None, USER)
        .await;

    let message = harness.send(APP, to_user(USER, "Hi", "there")).await;

    assert_eq!(message.state(), MessageState::Error, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_eq!(delivery.error_code(), Some("InvalidProviderToken"));
    let text = delivery.error_text().unwrap_or_default();
    assert!(
        text.contains("apns.key_id") && text.contains("apns.key"),
        "{text}"
    );
}

/// Certificate authentication against `endpoint` with `identity`'s certificate and key in files.
fn certificate_auth(dir: &TempDir, endpoint: &str, identity: &ClientIdentity) -> ApnsConfig {
    ApnsConfig {
        team_id: None,
        key_id: None,
        key: None,
        certificate: Some(Secret::File(write_file(
            dir,
            "apns-cert.pem",
            &identity.cert_pem,
        ))),
        certificate_key: Some(Secret::File(write_file(
            dir,
            "apns-key.pem",
            &identity.key_pem,
        ))),
        ..token_auth(dir, endpoint, "")
    }
}

/// A mock APNs that verifies client certificates against `client_ca`, and the service
/// configured for it with certificate authentication as `identity`, with one device.
async fn certificate_setup(client_ca: &TestClientCa, identity: &ClientIdentity) -> Setup {
    let (_, public) = apns_test_key().unwrap();
    let mock = MockApns::start_with_client_ca(
        ApnsMockConfig {
            team_id: TEAM_ID.to_owned(),
            key_id: KEY_ID.to_owned(),
            public_key_pem: public,
            topic: TOPIC.to_owned(),
        },
        client_ca,
    )
    .await
    .expect("start the APNs mock with a client CA");
    let dir = temp_dir();
    let apns = certificate_auth(&dir, &mock.base_url(), identity);
    let harness = Harness::new(&config_with(&dir, mock.ca_pem(), apns), dir).await;
    let setup = Setup { harness, mock };
    setup.device(1).await;
    setup
}

#[tokio::test]
async fn certificate_authentication_presents_the_client_certificate_and_sends_no_provider_token() {
    let client_ca = TestClientCa::new().unwrap();
    let identity = client_ca.issue_push_certificate(TOPIC).unwrap();
    let setup = certificate_setup(&client_ca, &identity).await;

    let message = setup.send().await;

    assert_eq!(message.state(), MessageState::Sent, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_eq!(delivery.state(), DeliveryState::Accepted);
    let requests = setup.mock.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert!(seen.is_http2());
    assert_eq!(
        seen.view.client_certificate_cn.as_deref(),
        Some(format!("Apple Push Services: {TOPIC}").as_str())
    );
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.view.jwt, None);
    assert_eq!(seen.header("apns-topic"), Some(TOPIC));
    assert_eq!(
        delivery.provider_id(),
        Some(seen.view.response_apns_id.as_str())
    );
}

#[tokio::test]
async fn a_client_certificate_apns_does_not_trust_fails_the_delivery_before_any_request() {
    let trusted = TestClientCa::new().unwrap();
    let stranger = TestClientCa::new()
        .unwrap()
        .issue_push_certificate(TOPIC)
        .unwrap();
    let setup = certificate_setup(&trusted, &stranger).await;

    let message = setup.send().await;

    assert_ne!(message.state(), MessageState::Sent, "{message:#?}");
    let delivery = only_delivery(&message);
    assert_ne!(delivery.state(), DeliveryState::Accepted, "{delivery:?}");
    // TLS 1.3 clients finish the handshake before the server checks their certificate, so
    // Clarion learns of the refusal from the server's alert, as a transient network failure.
    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:#?}");
    assert_eq!(delivery.state(), DeliveryState::Retrying);
    assert!(
        matches!(delivery.error_code(), Some("transport" | "connection")),
        "{delivery:?}"
    );
    assert!(
        delivery
            .error_text()
            .is_some_and(|t| t.contains("APNs") && t.contains("alert")),
        "{delivery:?}"
    );
    assert_eq!(setup.mock.request_count(), 0);
    // The mock hears of the refused handshake after Clarion does, so wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let failures = loop {
        let failures = setup.mock.handshake_failures();
        if !failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        failures
            .iter()
            .any(|f| f.contains("invalid peer certificate")),
        "{failures:?}"
    );
}

/// A TCP relay to `target` that counts the connections made through it.
async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_devices_are_sent_at_once_over_one_connection_at_most_the_configured_concurrency() {
    let (p8, public) = apns_test_key().unwrap();
    let mock = start_mock(&public).await;
    let (relay, connections) = counting_relay(mock.addr()).await;
    let dir = temp_dir();
    let mut apns = token_auth(&dir, &format!("https://{relay}"), &p8);
    apns.max_in_flight = Some(4);
    let harness = Harness::new(&config_with(&dir, mock.ca_pem(), apns), dir).await;
    for n in 0..20 {
        harness
            .register(APP, Platform::Apns, &device_token(n), None, USER)
            .await;
    }
    let delay = Duration::from_millis(200);
    mock.set_delay(delay);
    let started = Instant::now();

    let message = harness.send(APP, to_user(USER, "Sale", "today")).await;

    let elapsed = started.elapsed();
    assert_eq!(message.state(), MessageState::Sent, "{message:#?}");
    assert_eq!(message.deliveries.len(), 20);
    assert!(
        message
            .deliveries
            .iter()
            .all(|d| d.state() == DeliveryState::Accepted)
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 20);
    assert!(
        requests
            .iter()
            .all(|r| r.is_http2() && r.problems.is_empty())
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one HTTP/2 connection"
    );
    // 20 requests, 4 at a time, each answered after `delay`: at least 5 rounds.
    assert!(
        elapsed >= delay * 5,
        "20 requests took {elapsed:?}: more than 4 were in flight at once"
    );
    assert_eq!(mock.distinct_jwt_count(), 1);
}
