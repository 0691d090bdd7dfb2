//! Several providers in one process: a user whose devices are on APNs, FCM and Web Push gets
//! one delivery per device, each with its own outcome and retried on its own; and applications
//! with different senders, side by side in one configuration, each reach their own provider.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod support;

use std::time::Duration;

use clarion_adapters::config::{
    ApnsConfig, ApnsEnvironment, AppConfig, Config, FcmConfig, OneSignalConfig, Secret,
    WebPushConfig,
};
use clarion_domain::app::SenderKind;
use clarion_domain::device::Device;
use clarion_domain::message::{Channel, Delivery, DeliveryState, Message, MessageState};
use clarion_domain::token::Platform;
use clarion_testkit::{
    ApnsMockConfig, MockApns, MockFcm, MockOneSignal, MockWebPush, OneSignalMockConfig,
    VapidTestKey, WebPushMockConfig, apns_test_key,
};
use support::{Harness, temp_dir, to_user, write_file};
use tempfile::TempDir;

const APP: &str = "shop";
const NEWS: &str = "news";
const USER: &str = "alice";
const TEAM_ID: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.example.shop";
const PROJECT: &str = "clarion-test";
const FCM_TOKEN: &str = "dGVzdC1mY20tdG9rZW4:APA91bH-test-registration-token";
const APNS_TOKEN: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const ONESIGNAL_APP_ID: &str = "b2f7f966-d8cc-11e4-bed1-df8f05be55ba";
const ONESIGNAL_API_KEY: &str = "os_v2_app_test-rest-api-key";

/// The three direct-provider mocks, with the keys the application signs with.
struct Mocks {
    apns: MockApns,
    apns_p8: String,
    fcm: MockFcm,
    webpush: MockWebPush,
    vapid: VapidTestKey,
}

async fn start_mocks() -> Mocks {
    let (apns_p8, apns_public) = apns_test_key().expect("an APNs test key");
    let apns = MockApns::start(ApnsMockConfig {
        team_id: TEAM_ID.to_owned(),
        key_id: KEY_ID.to_owned(),
        public_key_pem: apns_public,
        topic: TOPIC.to_owned(),
    })
    .await
    .expect("start the APNs mock");
    let fcm = MockFcm::start(PROJECT).await.expect("start the FCM mock");
    let vapid = VapidTestKey::generate().expect("a VAPID test key");
    let webpush = MockWebPush::start(WebPushMockConfig {
        expected_vapid_public_key: Some(vapid.public_key_b64url.clone()),
    })
    .await
    .expect("start the Web Push mock");
    Mocks {
        apns,
        apns_p8,
        fcm,
        webpush,
        vapid,
    }
}

/// APNs token authentication against the mock, the `.p8` key in a file.
fn apns_config(dir: &TempDir, mocks: &Mocks) -> ApnsConfig {
    ApnsConfig {
        team_id: Some(TEAM_ID.to_owned()),
        key_id: Some(KEY_ID.to_owned()),
        key: Some(Secret::File(write_file(dir, "AuthKey.p8", &mocks.apns_p8))),
        certificate: None,
        certificate_key: None,
        topic: TOPIC.to_owned(),
        environment: ApnsEnvironment::Sandbox,
        endpoint: Some(mocks.apns.base_url()),
        timeout_secs: Some(5),
        connections: None,
        max_in_flight: None,
    }
}

/// FCM with the mock's service account in a file; its `token_uri` points at the mock.
fn fcm_config(dir: &TempDir, fcm: &MockFcm) -> FcmConfig {
    FcmConfig {
        service_account: Secret::File(write_file(
            dir,
            "service-account.json",
            &fcm.service_account().json,
        )),
        endpoint: Some(fcm.base_url()),
        timeout_secs: Some(5),
        connections: None,
        max_in_flight: None,
    }
}

/// Web Push signing with the key the mock expects, allowed to reach the mock on 127.0.0.1.
fn webpush_config(mocks: &Mocks) -> WebPushConfig {
    WebPushConfig {
        vapid_private_key: Secret::Inline(mocks.vapid.private_key_b64url.clone()),
        subject: "mailto:ops@example.com".to_owned(),
        allow_private_endpoints: true,
        timeout_secs: Some(5),
        connections: None,
        max_in_flight: None,
    }
}

/// One application `shop` configured for APNs, FCM and Web Push at once, trusting the CAs of
/// the two TLS mocks.
fn all_providers_config(dir: &TempDir, mocks: &Mocks) -> Config {
    let mut config = Config::default();
    config.apps.clear();
    config.tls.extra_ca_certs = vec![
        write_file(dir, "apns-ca.pem", mocks.apns.ca_pem()),
        write_file(dir, "webpush-ca.pem", mocks.webpush.ca_pem()),
    ];
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            sender: SenderKind::Direct,
            apns: Some(apns_config(dir, mocks)),
            fcm: Some(fcm_config(dir, &mocks.fcm)),
            webpush: Some(webpush_config(mocks)),
            ..AppConfig::default()
        },
    );
    config
}

/// The delivery of `message` to `device`.
fn delivery_to<'a>(message: &'a Message, device: &Device) -> &'a Delivery {
    message
        .deliveries
        .iter()
        .find(|d| d.device_id == Some(device.id))
        .unwrap_or_else(|| panic!("no delivery to device {}: {message:#?}", device.id))
}

/// Every request each mock recorded (FCM's token requests included) was as the real service
/// wants it.
fn assert_no_problems(mocks: &Mocks) {
    for request in mocks.apns.requests() {
        assert!(request.problems.is_empty(), "APNs: {:?}", request.problems);
    }
    for request in mocks.fcm.requests() {
        assert!(request.problems.is_empty(), "FCM: {:?}", request.problems);
    }
    for request in mocks.fcm.token_requests() {
        assert!(
            request.problems.is_empty(),
            "FCM token: {:?}",
            request.problems
        );
    }
    for request in mocks.webpush.requests() {
        assert!(
            request.problems.is_empty(),
            "Web Push: {:?}",
            request.problems
        );
    }
}

#[tokio::test]
async fn a_user_with_devices_on_three_platforms_gets_one_delivery_per_device_each_with_its_own_outcome()
 {
    let mocks = start_mocks().await;
    let dir = temp_dir();
    let config = all_providers_config(&dir, &mocks);
    let harness = Harness::new(&config, dir).await;
    let iphone = harness
        .register(APP, Platform::Apns, APNS_TOKEN, None, USER)
        .await;
    let android = harness
        .register(APP, Platform::Fcm, FCM_TOKEN, None, USER)
        .await;
    let subscription = mocks.webpush.new_subscription();
    let browser = harness
        .register(
            APP,
            Platform::Webpush,
            &subscription.endpoint,
            Some((&subscription.p256dh, &subscription.auth)),
            USER,
        )
        .await;
    mocks.fcm.enqueue_unregistered();
    mocks.webpush.enqueue_status(503);

    let message = harness
        .send(APP, to_user(USER, "Your order", "has shipped"))
        .await;

    assert_eq!(message.state(), MessageState::ErrorRetry, "{message:#?}");
    assert_eq!(message.deliveries.len(), 3, "{message:#?}");
    let apns = delivery_to(&message, &iphone);
    assert_eq!(apns.channel, Channel::Apns);
    assert_eq!(apns.state(), DeliveryState::Accepted);
    let apns_requests = mocks.apns.requests();
    assert_eq!(apns_requests.len(), 1);
    assert_eq!(
        apns.provider_id(),
        Some(apns_requests[0].view.response_apns_id.as_str())
    );
    let fcm = delivery_to(&message, &android);
    assert_eq!(fcm.channel, Channel::Fcm);
    assert_eq!(fcm.state(), DeliveryState::DeadToken);
    assert_eq!(fcm.error_code(), Some("UNREGISTERED"));
    let deactivated = harness.device(APP, &android).await;
    assert!(!deactivated.active);
    let reason = deactivated.deactivation_reason.unwrap_or_default();
    assert!(reason.contains("UNREGISTERED"), "{reason}");
    let webpush = delivery_to(&message, &browser);
    assert_eq!(webpush.channel, Channel::Webpush);
    assert_eq!(webpush.state(), DeliveryState::Retrying);
    assert_eq!(webpush.error_code(), Some("server_error"));
    assert!(harness.device(APP, &iphone).await.active);
    assert!(harness.device(APP, &browser).await.active);

    let due = message.next_attempt_at().expect("a next attempt");
    harness.clock.set(due + Duration::from_secs(1));
    let report = harness.batch().await;

    assert_eq!(report.sent, 1, "{report:?}");
    let message = harness.message(APP, &message).await;
    assert_eq!(message.state(), MessageState::Sent, "{message:#?}");
    let apns = delivery_to(&message, &iphone);
    assert_eq!(
        (apns.state(), apns.attempts()),
        (DeliveryState::Accepted, 1)
    );
    let fcm = delivery_to(&message, &android);
    assert_eq!((fcm.state(), fcm.attempts()), (DeliveryState::DeadToken, 1));
    let webpush = delivery_to(&message, &browser);
    assert_eq!(
        (webpush.state(), webpush.attempts()),
        (DeliveryState::Accepted, 2)
    );
    assert!(
        webpush
            .provider_id()
            .is_some_and(|id| id.starts_with(&mocks.webpush.origin())),
        "{webpush:?}"
    );
    assert_eq!(mocks.apns.request_count(), 1);
    assert_eq!(mocks.fcm.request_count(), 1);
    assert_eq!(mocks.webpush.request_count(), 2);
    let statuses: Vec<u16> = mocks.webpush.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 201]);
    assert_no_problems(&mocks);
}

#[tokio::test]
async fn a_onesignal_application_and_a_direct_application_in_one_configuration_each_use_their_own_provider()
 {
    let fcm = MockFcm::start(PROJECT).await.expect("start the FCM mock");
    let onesignal = MockOneSignal::start(OneSignalMockConfig {
        app_id: ONESIGNAL_APP_ID.to_owned(),
        api_key: ONESIGNAL_API_KEY.to_owned(),
    })
    .await
    .expect("start the OneSignal mock");
    let dir = temp_dir();
    let mut config = Config::default();
    config.apps.clear();
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            sender: SenderKind::Direct,
            fcm: Some(fcm_config(&dir, &fcm)),
            ..AppConfig::default()
        },
    );
    config.apps.insert(
        NEWS.to_owned(),
        AppConfig {
            sender: SenderKind::Onesignal,
            onesignal: Some(OneSignalConfig {
                app_id: ONESIGNAL_APP_ID.to_owned(),
                api_key: Secret::Inline(ONESIGNAL_API_KEY.to_owned()),
                language: "en".to_owned(),
                endpoint: Some(onesignal.base_url()),
                timeout_secs: Some(5),
            }),
            ..AppConfig::default()
        },
    );
    let harness = Harness::new(&config, dir).await;
    harness
        .register(APP, Platform::Fcm, FCM_TOKEN, None, USER)
        .await;

    let shop_message = harness
        .send(APP, to_user(USER, "Your order", "has shipped"))
        .await;
    let news_message = harness
        .send(NEWS, to_user(USER, "Headlines", "Today's news"))
        .await;

    assert_eq!(
        shop_message.state(),
        MessageState::Sent,
        "{shop_message:#?}"
    );
    assert_eq!(shop_message.deliveries.len(), 1);
    let shop_delivery = &shop_message.deliveries[0];
    assert_eq!(shop_delivery.channel, Channel::Fcm);
    let fcm_requests = fcm.requests();
    assert_eq!(fcm_requests.len(), 1);
    assert_eq!(
        fcm_requests[0].view.target,
        Some(("token".to_owned(), FCM_TOKEN.to_owned()))
    );
    assert_eq!(
        shop_delivery.provider_id(),
        fcm_requests[0].view.name.as_deref(),
        "the FCM message name"
    );
    assert_eq!(
        news_message.state(),
        MessageState::Sent,
        "{news_message:#?}"
    );
    assert_eq!(news_message.deliveries.len(), 1);
    let news_delivery = &news_message.deliveries[0];
    assert_eq!(news_delivery.channel, Channel::Onesignal);
    assert_eq!(news_delivery.device_id, None);
    let onesignal_requests = onesignal.requests();
    assert_eq!(onesignal_requests.len(), 1);
    let seen = &onesignal_requests[0];
    assert_eq!(seen.view.external_ids, [USER]);
    assert_eq!(
        seen.view.body.as_ref().map(|b| b["headings"]["en"].clone()),
        Some(serde_json::json!("Headlines"))
    );
    assert_eq!(
        news_delivery.provider_id(),
        seen.view.notification_id.as_deref()
    );
    for problems in fcm_requests
        .iter()
        .map(|r| &r.problems)
        .chain(fcm.token_requests().iter().map(|r| &r.problems))
        .chain(onesignal_requests.iter().map(|r| &r.problems))
    {
        assert!(problems.is_empty(), "{problems:?}");
    }
}
