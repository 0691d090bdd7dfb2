//! Each mock answers a hand-built correct request with success and no problems, and a broken
//! one with the service's error and a recorded problem.

// The helpers below are test code too; clippy's allow-in-tests only covers `#[test]` bodies.
#![allow(
    clippy::unwrap_used,
    reason = "a failing test helper is a failing test"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clarion_testkit::tls::{ClientIdentity, TestClientCa};
use clarion_testkit::webpush::encrypt_aes128gcm;
use clarion_testkit::{
    ApnsMockConfig, CannedResponse, MockApns, MockFcm, MockOneSignal, MockWebPush,
    OneSignalMockConfig, TestSubscription, VapidTestKey, WebPushMockConfig, apns_test_key,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    clarion_testkit::install_default_crypto_provider();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

struct Apns {
    mock: MockApns,
    private_pem: String,
}

async fn apns() -> Apns {
    let (private_pem, public_key_pem) = apns_test_key().unwrap();
    let mock = MockApns::start(ApnsMockConfig {
        team_id: "TEAM123456".into(),
        key_id: "KEY1234567".into(),
        public_key_pem,
        topic: "com.example.app".into(),
    })
    .await
    .unwrap();
    Apns { mock, private_pem }
}

fn provider_token(private_pem: &str, kid: &str, iat: i64) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &json!({ "iss": "TEAM123456", "iat": iat }),
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn apns_request(client: &reqwest::Client, base: &str, jwt: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/3/device/{TOKEN}"))
        .header("authorization", format!("bearer {jwt}"))
        .header("apns-topic", "com.example.app")
        .header("apns-push-type", "alert")
        .header("apns-priority", "10")
        .header("apns-expiration", "0")
        .header("apns-id", "123e4567-e89b-12d3-a456-426655440000")
        .body(json!({ "aps": { "alert": { "title": "Hi", "body": "There" } } }).to_string())
}

#[tokio::test]
async fn apns_accepts_a_correct_request_over_http2() {
    let apns = apns().await;
    let client = https_client(apns.mock.ca_pem());
    let jwt = provider_token(&apns.private_pem, "KEY1234567", now());

    let response = apns_request(&client, &apns.mock.base_url(), &jwt)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        response.headers()["apns-id"],
        "123e4567-e89b-12d3-a456-426655440000"
    );
    let requests = apns.mock.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].problems.is_empty(),
        "{:?}",
        requests[0].problems
    );
    assert!(requests[0].is_http2());
    assert_eq!(requests[0].view.device_token.as_deref(), Some(TOKEN));
    assert_eq!(apns.mock.distinct_jwt_count(), 1);
}

#[tokio::test]
async fn apns_refuses_a_token_signed_by_another_key() {
    let apns = apns().await;
    let client = https_client(apns.mock.ca_pem());
    let (other_key, _) = apns_test_key().unwrap();
    let jwt = provider_token(&other_key, "KEY1234567", now());

    let response = apns_request(&client, &apns.mock.base_url(), &jwt)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
    assert!(response.headers().contains_key("apns-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "InvalidProviderToken");
    assert!(!apns.mock.requests()[0].problems.is_empty());
}

#[tokio::test]
async fn apns_refuses_an_old_token_a_bad_topic_and_http1() {
    let apns = apns().await;
    let client = https_client(apns.mock.ca_pem());
    let base = apns.mock.base_url();

    let old = provider_token(&apns.private_pem, "KEY1234567", now() - 3700);
    let response = apns_request(&client, &base, &old).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["reason"],
        "ExpiredProviderToken"
    );

    let jwt = provider_token(&apns.private_pem, "KEY1234567", now());
    let mut request = apns_request(&client, &base, &jwt).build().unwrap();
    request
        .headers_mut()
        .insert("apns-topic", "com.example.other".parse().unwrap());
    let response = client.execute(request).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["reason"],
        "BadTopic"
    );

    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(apns.mock.ca_pem().as_bytes()).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let response = apns_request(&http1, &base, &jwt).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let last = apns.mock.requests().pop().unwrap();
    assert!(
        last.problems.iter().any(|p| p.contains("HTTP/2")),
        "{:?}",
        last.problems
    );
}

#[tokio::test]
async fn apns_answers_scripted_errors_in_order_then_succeeds() {
    let apns = apns().await;
    let client = https_client(apns.mock.ca_pem());
    let jwt = provider_token(&apns.private_pem, "KEY1234567", now());
    apns.mock.enqueue_error(410, "Unregistered");

    let first = apns_request(&client, &apns.mock.base_url(), &jwt)
        .send()
        .await
        .unwrap();
    let second = apns_request(&client, &apns.mock.base_url(), &jwt)
        .send()
        .await
        .unwrap();

    assert_eq!(first.status(), 410);
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["reason"], "Unregistered");
    assert!(body["timestamp"].is_u64());
    assert_eq!(second.status(), 200);
    assert!(apns.mock.requests().iter().all(|r| r.problems.is_empty()));
}

#[tokio::test]
async fn apns_delay_provokes_client_timeouts() {
    let apns = apns().await;
    let client = https_client(apns.mock.ca_pem());
    let jwt = provider_token(&apns.private_pem, "KEY1234567", now());
    apns.mock.set_delay(Duration::from_secs(5));

    let result = apns_request(&client, &apns.mock.base_url(), &jwt)
        .timeout(Duration::from_millis(200))
        .send()
        .await;

    assert!(result.unwrap_err().is_timeout());
    assert_eq!(apns.mock.request_count(), 1);
}

const CERT_TOPIC: &str = "com.example.app";

/// A mock that accepts certificate-based connections, and the client CA it trusts.
async fn apns_with_client_ca() -> (Apns, TestClientCa) {
    let (private_pem, public_key_pem) = apns_test_key().unwrap();
    let client_ca = TestClientCa::new().unwrap();
    let mock = MockApns::start_with_client_ca(
        ApnsMockConfig {
            team_id: "TEAM123456".into(),
            key_id: "KEY1234567".into(),
            public_key_pem,
            topic: CERT_TOPIC.into(),
        },
        &client_ca,
    )
    .await
    .unwrap();
    (Apns { mock, private_pem }, client_ca)
}

/// An HTTP/2 client that trusts `ca_pem` and presents `identity` as its client certificate.
fn certificate_client(ca_pem: &str, identity: &ClientIdentity) -> reqwest::Client {
    clarion_testkit::install_default_crypto_provider();
    let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// A request as a certificate-authenticated provider sends it: no `authorization`, and no
/// `apns-topic` (APNs takes the certificate's).
fn certificate_request(client: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/3/device/{TOKEN}"))
        .header("apns-push-type", "alert")
        .body(json!({ "aps": { "alert": { "title": "Hi", "body": "There" } } }).to_string())
}

#[tokio::test]
async fn apns_accepts_a_certificate_authenticated_request_without_token_or_topic() {
    let (apns, client_ca) = apns_with_client_ca().await;
    let identity = client_ca.issue_push_certificate(CERT_TOPIC).unwrap();
    let client = certificate_client(apns.mock.ca_pem(), &identity);

    let response = certificate_request(&client, &apns.mock.base_url())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let requests = apns.mock.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    assert_eq!(
        seen.view.client_certificate_cn.as_deref(),
        Some("Apple Push Services: com.example.app")
    );
    assert_eq!(seen.view.jwt, None);
    assert_eq!(apns.mock.distinct_jwt_count(), 0);
}

#[tokio::test]
async fn apns_with_a_client_ca_still_checks_tokens_sent_with_or_without_a_certificate() {
    let (apns, client_ca) = apns_with_client_ca().await;
    let base = apns.mock.base_url();
    let jwt = provider_token(&apns.private_pem, "KEY1234567", now());
    let tokens_only = https_client(apns.mock.ca_pem());
    let identity = client_ca.issue_push_certificate(CERT_TOPIC).unwrap();
    let certified = certificate_client(apns.mock.ca_pem(), &identity);
    let (other_key, _) = apns_test_key().unwrap();
    let bad_jwt = provider_token(&other_key, "KEY1234567", now());

    let with_token = apns_request(&tokens_only, &base, &jwt)
        .send()
        .await
        .unwrap();
    let without_either = certificate_request(&tokens_only, &base)
        .header("apns-topic", CERT_TOPIC)
        .send()
        .await
        .unwrap();
    let certified_bad_token = apns_request(&certified, &base, &bad_jwt)
        .send()
        .await
        .unwrap();

    assert_eq!(with_token.status(), 200);
    assert_eq!(without_either.status(), 403);
    assert_eq!(
        without_either.json::<serde_json::Value>().await.unwrap()["reason"],
        "MissingProviderToken"
    );
    assert_eq!(certified_bad_token.status(), 403);
    assert_eq!(
        certified_bad_token
            .json::<serde_json::Value>()
            .await
            .unwrap()["reason"],
        "InvalidProviderToken"
    );
    let requests = apns.mock.requests();
    assert_eq!(requests[0].view.client_certificate_cn, None);
    assert!(
        requests[0].problems.is_empty(),
        "{:?}",
        requests[0].problems
    );
    assert!(requests[2].view.client_certificate_cn.is_some());
}

#[tokio::test]
async fn apns_refuses_a_topic_the_certificate_does_not_allow_and_a_certificate_naming_none() {
    let (apns, client_ca) = apns_with_client_ca().await;
    let base = apns.mock.base_url();
    let identity = client_ca.issue_push_certificate(CERT_TOPIC).unwrap();
    let client = certificate_client(apns.mock.ca_pem(), &identity);
    let not_apple = client_ca.issue("Some TLS client").unwrap();
    let not_apple_client = certificate_client(apns.mock.ca_pem(), &not_apple);

    let other_topic = certificate_request(&client, &base)
        .header("apns-topic", "com.example.other")
        .send()
        .await
        .unwrap();
    let voip_topic = client
        .post(format!("{base}/3/device/{TOKEN}"))
        .header("apns-push-type", "voip")
        .header("apns-topic", "com.example.app.voip")
        .body(json!({ "aps": {}, "call": "42" }).to_string())
        .send()
        .await
        .unwrap();
    let no_topic_in_cn = certificate_request(&not_apple_client, &base)
        .send()
        .await
        .unwrap();

    assert_eq!(other_topic.status(), 400);
    assert_eq!(
        other_topic.json::<serde_json::Value>().await.unwrap()["reason"],
        "TopicDisallowed"
    );
    assert_eq!(voip_topic.status(), 200);
    assert_eq!(no_topic_in_cn.status(), 403);
    assert_eq!(
        no_topic_in_cn.json::<serde_json::Value>().await.unwrap()["reason"],
        "BadCertificate"
    );
}

#[tokio::test]
async fn apns_refuses_the_handshake_of_a_certificate_its_client_ca_did_not_sign() {
    let (apns, _) = apns_with_client_ca().await;
    let stranger = TestClientCa::new()
        .unwrap()
        .issue_push_certificate(CERT_TOPIC)
        .unwrap();
    let client = certificate_client(apns.mock.ca_pem(), &stranger);

    let result = certificate_request(&client, &apns.mock.base_url())
        .send()
        .await;

    assert!(result.is_err(), "{result:?}");
    assert_eq!(apns.mock.request_count(), 0);
    // The mock hears of the failed handshake after the client, so wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let failures = loop {
        let failures = apns.mock.handshake_failures();
        if !failures.is_empty() || std::time::Instant::now() > deadline {
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

fn assertion(account: &clarion_testkit::FcmServiceAccount, aud: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(account.private_key_id.clone());
    let now = now();
    jsonwebtoken::encode(
        &header,
        &json!({
            "iss": account.client_email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": aud,
            "iat": now,
            "exp": now + 3600,
        }),
        &EncodingKey::from_rsa_pem(account.private_key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn fetch_token(
    client: &reqwest::Client,
    mock: &MockFcm,
    assertion: &str,
) -> reqwest::Response {
    client
        .post(mock.token_uri())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        ))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn fcm_issues_a_token_and_accepts_a_correct_message() {
    let mock = MockFcm::start("demo-project").await.unwrap();
    let account = mock.service_account();
    let client = reqwest::Client::new();
    let parsed: serde_json::Value = serde_json::from_str(&account.json).unwrap();
    assert_eq!(parsed["token_uri"], mock.token_uri());

    let token = fetch_token(&client, &mock, &assertion(&account, &mock.token_uri())).await;
    assert_eq!(token.status(), 200);
    let token: serde_json::Value = token.json().await.unwrap();
    let access_token = token["access_token"].as_str().unwrap();
    let response = client
        .post(mock.send_url())
        .bearer_auth(access_token)
        .json(&json!({ "message": {
            "token": "fcm-token-1",
            "notification": { "title": "Hi", "body": "There" },
            "data": { "k": "v" },
            "android": { "priority": "HIGH", "ttl": "3600s" },
            "apns": { "headers": { "apns-priority": "10" } }
        }}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["name"]
            .as_str()
            .unwrap()
            .starts_with("projects/demo-project/messages/")
    );
    assert_eq!(mock.token_request_count(), 1);
    assert!(
        mock.token_requests()[0].problems.is_empty(),
        "{:?}",
        mock.token_requests()[0].problems
    );
    assert!(
        mock.requests()[0].problems.is_empty(),
        "{:?}",
        mock.requests()[0].problems
    );
}

#[tokio::test]
async fn fcm_refuses_a_bad_audience_non_string_data_and_revoked_tokens() {
    let mock = MockFcm::start("demo-project").await.unwrap();
    let account = mock.service_account();
    let client = reqwest::Client::new();

    let refused = fetch_token(
        &client,
        &mock,
        &assertion(&account, "https://oauth2.googleapis.com/token"),
    )
    .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert!(!mock.token_requests()[0].problems.is_empty());

    let token: serde_json::Value =
        fetch_token(&client, &mock, &assertion(&account, &mock.token_uri()))
            .await
            .json()
            .await
            .unwrap();
    let access_token = token["access_token"].as_str().unwrap().to_owned();
    let response = client
        .post(mock.send_url())
        .bearer_auth(&access_token)
        .json(&json!({ "message": { "token": "t", "data": { "count": 3 } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["details"][0]["errorCode"], "INVALID_ARGUMENT");
    assert!(!mock.requests()[0].problems.is_empty());

    mock.revoke_access_tokens();
    let response = client
        .post(mock.send_url())
        .bearer_auth(&access_token)
        .json(&json!({ "message": { "token": "t" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(mock.requests()[1].problems.is_empty());
}

#[tokio::test]
async fn fcm_scripted_errors_carry_google_error_codes() {
    let mock = MockFcm::start("demo-project").await.unwrap();
    let account = mock.service_account();
    let client = reqwest::Client::new();
    let token: serde_json::Value =
        fetch_token(&client, &mock, &assertion(&account, &mock.token_uri()))
            .await
            .json()
            .await
            .unwrap();
    mock.enqueue_unregistered();
    mock.enqueue_quota_exceeded(7);

    let send = || {
        client
            .post(mock.send_url())
            .bearer_auth(token["access_token"].as_str().unwrap())
            .json(&json!({ "message": { "token": "t" } }))
            .send()
    };
    let first = send().await.unwrap();
    let second = send().await.unwrap();

    assert_eq!(first.status(), 404);
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["error"]["details"][0]["errorCode"], "UNREGISTERED");
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "7");
    assert_eq!(send().await.unwrap().status(), 200);
}

fn push(
    client: &reqwest::Client,
    subscription: &TestSubscription,
    authorization: &str,
    plaintext: &[u8],
) -> reqwest::RequestBuilder {
    let sender = VapidTestKey::generate().unwrap();
    let body = encrypt_aes128gcm(
        plaintext,
        &URL_SAFE_NO_PAD.decode(&subscription.p256dh).unwrap(),
        &URL_SAFE_NO_PAD.decode(&subscription.auth).unwrap(),
        &URL_SAFE_NO_PAD.decode(&sender.private_key_b64url).unwrap(),
        [7; 16],
        4096,
    )
    .unwrap();
    client
        .post(&subscription.endpoint)
        .header("ttl", "60")
        .header("urgency", "high")
        .header("topic", "news")
        .header("content-encoding", "aes128gcm")
        .header("authorization", authorization)
        .body(body)
}

#[tokio::test]
async fn web_push_decrypts_a_correct_push_and_verifies_vapid() {
    let vapid = VapidTestKey::generate().unwrap();
    let mock = MockWebPush::start(WebPushMockConfig {
        expected_vapid_public_key: Some(vapid.public_key_b64url.clone()),
    })
    .await
    .unwrap();
    let subscription = mock.new_subscription();
    let client = https_client(mock.ca_pem());
    let auth = vapid
        .authorization(&mock.origin(), "mailto:ops@example.com", now() + 3600)
        .unwrap();

    let response = push(&client, &subscription, &auth, b"{\"title\":\"Hi\"}")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("location"));
    let request = &mock.requests()[0];
    assert!(request.problems.is_empty(), "{:?}", request.problems);
    assert_eq!(request.view.plaintext_str(), Some("{\"title\":\"Hi\"}"));
}

#[tokio::test]
async fn web_push_refuses_an_audience_without_the_port() {
    let vapid = VapidTestKey::generate().unwrap();
    let mock = MockWebPush::start(WebPushMockConfig::default())
        .await
        .unwrap();
    let subscription = mock.new_subscription();
    let client = https_client(mock.ca_pem());
    let auth = vapid
        .authorization("https://127.0.0.1", "mailto:ops@example.com", now() + 3600)
        .unwrap();

    let response = push(&client, &subscription, &auth, b"hello")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    let request = &mock.requests()[0];
    assert!(
        request.problems.iter().any(|p| p.contains("aud")),
        "{:?}",
        request.problems
    );
}

#[tokio::test]
async fn web_push_refuses_a_body_it_cannot_decrypt_and_scripts_gone() {
    let vapid = VapidTestKey::generate().unwrap();
    let mock = MockWebPush::start(WebPushMockConfig::default())
        .await
        .unwrap();
    let subscription = mock.new_subscription();
    let other = mock.new_subscription();
    let client = https_client(mock.ca_pem());
    let auth = vapid
        .authorization(&mock.origin(), "https://example.com/contact", now() + 3600)
        .unwrap();

    // Encrypted for another subscription's keys.
    let wrong = push(&client, &other, &auth, b"hello")
        .build()
        .unwrap()
        .body()
        .unwrap()
        .as_bytes()
        .unwrap()
        .to_vec();
    let response = push(&client, &subscription, &auth, b"x")
        .body(wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        mock.requests()[0]
            .problems
            .iter()
            .any(|p| p.contains("decrypt"))
    );

    mock.enqueue(CannedResponse::empty(429).with_retry_after(3));
    let response = push(&client, &subscription, &auth, b"x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");

    mock.unsubscribe(&subscription);
    let response = push(&client, &subscription, &auth, b"x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 410);
    assert!(mock.requests()[2].problems.is_empty());
}

#[tokio::test]
async fn one_signal_accepts_a_correct_notification_and_refuses_a_wrong_key() {
    let mock = MockOneSignal::start(OneSignalMockConfig {
        app_id: "5eb5a37e-b458-11e3-ac11-000c2940e62c".into(),
        api_key: "os_v2_app_test".into(),
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let body = json!({
        "app_id": "5eb5a37e-b458-11e3-ac11-000c2940e62c",
        "target_channel": "push",
        "include_aliases": { "external_id": ["user-1"] },
        "contents": { "en": "Hello" },
        "headings": { "en": "Hi" },
        "data": { "k": 1 }
    });

    let ok = client
        .post(mock.notifications_url())
        .header("authorization", "Key os_v2_app_test")
        .json(&body)
        .send()
        .await
        .unwrap();
    let denied = client
        .post(mock.notifications_url())
        .header("authorization", "Key wrong")
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(ok.status(), 200);
    let ok: serde_json::Value = ok.json().await.unwrap();
    assert!(!ok["id"].as_str().unwrap().is_empty());
    assert_eq!(denied.status(), 403);
    let requests = mock.requests();
    assert!(
        requests[0].problems.is_empty(),
        "{:?}",
        requests[0].problems
    );
    assert_eq!(requests[0].view.external_ids, ["user-1"]);
    assert!(!requests[1].problems.is_empty());
}

#[tokio::test]
async fn one_signal_requires_english_contents_and_scripts_invalid_aliases() {
    let mock = MockOneSignal::start(OneSignalMockConfig {
        app_id: "app".into(),
        api_key: "key".into(),
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let send = |contents: serde_json::Value| {
        client
            .post(mock.notifications_url())
            .header("authorization", "Key key")
            .json(&json!({
                "app_id": "app",
                "target_channel": "push",
                "include_aliases": { "external_id": ["u"] },
                "contents": contents
            }))
            .send()
    };

    let refused = send(json!({ "de": "Hallo" })).await.unwrap();
    mock.enqueue_invalid_aliases(&["u"]);
    let invalid = send(json!({ "en": "Hello" })).await.unwrap();

    assert_eq!(refused.status(), 400);
    assert!(!mock.requests()[0].problems.is_empty());
    assert_eq!(invalid.status(), 200);
    let body: serde_json::Value = invalid.json().await.unwrap();
    assert_eq!(body["errors"]["invalid_aliases"]["external_id"][0], "u");
}

#[tokio::test]
async fn apns_advertises_its_stream_limit_so_one_connection_serves_that_many_at_once() {
    let apns = apns().await;
    apns.mock.connections().set_max_concurrent_streams(5);
    apns.mock.set_delay(Duration::from_millis(200));
    let client = https_client(apns.mock.ca_pem());
    let jwt = provider_token(&apns.private_pem, "KEY1234567", now());
    let base = apns.mock.base_url();
    // One request first, so that the others find the connection open and share it.
    let first = apns_request(&client, &base, &jwt).send().await.unwrap();
    assert_eq!(first.status(), 200);

    let started = std::time::Instant::now();
    let sends = (0..20).map(|_| apns_request(&client, &base, &jwt).send());
    let responses = futures_join_all(sends).await;

    // 20 requests, at most 5 at a time, 200 ms each: at least four rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(780),
        "{:?}",
        started.elapsed()
    );
    assert!(
        responses
            .iter()
            .all(|r| r.as_ref().unwrap().status() == 200)
    );
    assert_eq!(apns.mock.connections().connections_accepted(), 1);
}

#[tokio::test]
async fn apns_delay_jitter_spreads_the_answers() {
    let apns = apns().await;
    apns.mock.set_delay(Duration::from_millis(20));
    apns.mock.set_jitter(Duration::from_millis(60));
    let client = https_client(apns.mock.ca_pem());
    let jwt = provider_token(&apns.private_pem, "KEY1234567", now());
    let base = apns.mock.base_url();

    let mut times = Vec::new();
    for _ in 0..12 {
        let started = std::time::Instant::now();
        let response = apns_request(&client, &base, &jwt).send().await.unwrap();
        assert_eq!(response.status(), 200);
        times.push(started.elapsed());
    }

    assert!(
        times.iter().all(|t| *t >= Duration::from_millis(20)),
        "{times:?}"
    );
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(spread >= Duration::from_millis(10), "{times:?}");
}

#[tokio::test]
async fn apns_goes_away_gracefully_and_answers_what_it_accepted() {
    let apns = apns().await;
    apns.mock.set_delay(Duration::from_millis(100));
    apns.mock.connections().go_away_at_request(3);
    let client = https_client(apns.mock.ca_pem());
    let jwt = provider_token(&apns.private_pem, "KEY1234567", now());
    let base = apns.mock.base_url();
    // One request first, so that the others find the connection open and share it.
    let first = apns_request(&client, &base, &jwt).send().await.unwrap();
    assert_eq!(first.status(), 200);

    let responses =
        futures_join_all((0..10).map(|_| apns_request(&client, &base, &jwt).send())).await;
    let after = apns_request(&client, &base, &jwt).send().await.unwrap();

    assert!(
        responses
            .iter()
            .all(|r| r.as_ref().unwrap().status() == 200)
    );
    assert_eq!(after.status(), 200);
    assert_eq!(apns.mock.connections().goaways_sent(), 1);
    assert_eq!(apns.mock.request_count(), 12);
    // The connection that went away was replaced.
    assert!(apns.mock.connections().connections_accepted() >= 2);
}

/// Runs every future on a task of its own, at once, and returns their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
